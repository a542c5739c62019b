//! The serving layer: the embedded engine ([`Tidal`]: open a data directory, write, read,
//! rank), the query engine over published snapshots ([`query`]) and the HTTP API ([`http`]),
//! a thin layer over [`Tidal`].

#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod cluster;
pub mod http;
pub mod metrics;
pub mod query;
pub mod tidal;

pub use tidal::{
    Error, Health, NewSignal, Overload, Pipeline, RankQuery, Reads, Result, SignalsAck, Stats, Tidal, WriteAck, wal_dir,
};
