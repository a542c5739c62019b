//! tidal: a streaming ranking engine for content feeds on timely and differential dataflow.
//!
//! This crate is the `tidal` binary's library: the server wiring ([`server`]), what-if
//! replays of a recorded log ([`replay`]) and the benchmark ([`bench`]). The engine itself
//! lives in the workspace crates, in data-flow order: `tidal-core` → `tidal-sources` →
//! `tidal-operators` → `tidal-dataflows` → `tidal-sinks` → `tidal-serving`.

#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod bench;
pub mod replay;
pub mod server;
