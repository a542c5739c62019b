//! The serving layer: the query engine over published snapshots ([`query`]) and the HTTP API
//! ([`http`]) that takes writes into the WAL and answers reads from the latest snapshot.

#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod http;
pub mod metrics;
pub mod query;
