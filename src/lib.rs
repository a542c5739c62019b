//! tidal: a streaming ranking engine for content feeds, on timely and differential dataflow.
//!
//! Signals (views, likes, shares...) go into a write-ahead log; every ranking feature —
//! sliding-window counts, velocity, acceleration, exactly decayed scores — is maintained
//! incrementally; rankings (`trending`, `rising`, `hot`, `top`, `new` and profiles declared in
//! the schema) are answered from ordered indexes in microseconds. Embed it as a library with
//! [`Tidal`], or run `tidal serve` for the HTTP API over the same engine.
//!
//! ```
//! use tidal::{Config, ItemMeta, NewSignal, RankQuery, Tidal};
//!
//! # fn main() -> Result<(), tidal::Error> {
//! # let dir = tempfile::tempdir().unwrap();
//! // The embedded default schema (signal types view, like, share, skip, completion, hide);
//! // a data directory of its own.
//! let mut config = Config::default_filled();
//! config.engine.data_dir = dir.path().join("feed").display().to_string();
//! let tidal = Tidal::open(config.clone())?;
//!
//! // Writes are durable when they return.
//! tidal.put_item("piano-101", ItemMeta { creator: Some("ann".into()), category: Some("music".into()), ..Default::default() })?;
//! let ack = tidal.signals(vec![
//!     NewSignal::new("view", "piano-101").user("u1"),
//!     NewSignal::new("like", "piano-101").user("u1"),
//!     NewSignal::new("view", "guitar-7").user("u2"),
//! ])?;
//! assert_eq!(ack.accepted, 3);
//!
//! // Read your writes: a ranking as of a state that includes the write.
//! let query = RankQuery::new().profile("trending").signals(&[("view", 1.0), ("like", 3.0)]).window("1h").min_lsn(ack.lsn);
//! let ranking = tidal.rank(&query)?;
//! let ids: Vec<&str> = ranking.items.iter().map(|i| i.id.as_str()).collect();
//! assert_eq!(ids, ["piano-101", "guitar-7"]);
//!
//! // Every feature of an item.
//! let item = tidal.item("piano-101")?.expect("the item exists");
//! assert_eq!(item.signals["like"].counts["1h"], 1.0);
//!
//! // A clean shutdown; reopening recovers the same state from the log.
//! tidal.shutdown()?;
//! drop(tidal);
//! let tidal = Tidal::open(config)?;
//! assert_eq!(tidal.rank(&query)?.items, ranking.items);
//! # Ok(()) }
//! ```
//!
//! The engine lives in the workspace crates, in data-flow order: `tidal-core` (vocabulary,
//! schema, records) → `tidal-sources` (the WAL and the timely source) → `tidal-operators`
//! (the materializers) → `tidal-dataflows` (the graph) → `tidal-sinks` (serving snapshots) →
//! `tidal-serving` (the facade, queries, HTTP). This crate re-exports the facade and adds the
//! `tidal` command line: [`server`] and what-if [`replay`]s of a recorded log.

#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod checkpoint;
pub mod replay;
pub mod server;

pub use tidal_core::record::{Embedding, ItemMeta, RelKind};
pub use tidal_core::{ClockMode, Config, Dur, Durability};
pub use tidal_serving::query::{
    AsOf, CohortFeatures, CohortSignal, CreatorAffinity, ItemView, RankedItem, Ranking, SignalFeatures, UserInfo,
};
pub use tidal_serving::{
    Error, Health, NewSignal, Overload, RankQuery, Reads, Result, SignalsAck, Stats, Tidal, WriteAck,
};
