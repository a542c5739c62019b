//! tidal's vocabulary: durations, logical time and clocks, the schema/configuration, the
//! records the WAL stores, the exact fixed-point feature arithmetic, and errors. Every other
//! crate of tidal depends on this one; it depends on none of them.

#![cfg_attr(not(test), deny(clippy::unwrap_used))]
#![deny(missing_docs)]

pub mod codec;
pub mod config;
pub mod duration;
pub mod error;
pub mod features;
pub mod flow;
pub mod ids;
pub mod priority;
pub mod record;
pub mod stats;
pub mod time;
pub mod user;

pub use config::{Config, SignalType};
pub use duration::Dur;
pub use error::{Error, Result};
pub use record::{CommittedBatch, ItemMeta, Lsn, Position, Record, RelKind, Signal};
pub use time::{ClockMode, Durability, Time};
