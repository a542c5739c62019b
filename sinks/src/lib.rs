//! Arrangement sinks: the dataflow's outputs published into the serving layer.
//!
//! [`shard_sink`] is the timely sink operator: on every worker it applies that worker's own
//! window, decay and item collections to its [`Shard`] of the serving state and publishes an
//! immutable [`Snapshot`] at each mark of the source; [`Shards`] gives readers a [`View`]:
//! every shard's version at one common frontier. A snapshot holds its items' features and the
//! ordered indexes that make top-k queries a short walk (see [`index`], [`ordindex`]) and
//! posting lists for filters ([`postings`]). Item metadata is also kept in a fjall entity
//! store ([`store`]).

#![cfg_attr(not(test), deny(clippy::unwrap_used))]
#![deny(missing_docs)]

pub mod ann;
mod builder;
mod delta;
pub mod entry;
pub mod index;
mod log;
pub mod ordindex;
mod pmap;
pub mod postings;
pub mod shards;
mod side;
mod sink;
pub mod snapshot;
pub mod store;
pub mod text;

pub use ann::Ann;
pub use builder::SnapshotBuilder;
pub use entry::ItemEntry;
pub use index::{IndexEntry, IndexKind, Layout};
pub use ordindex::OrdIndex;
pub use postings::{Field, Postings};
pub use shards::{AtFrontier, Shard, Shards, View, free_later};
pub use side::{CohortKey, CohortLanes, LaneBounds};
pub use sink::{Place, SinkInputs, shard_sink};
pub use snapshot::{CohortCut, ItemChange, Snapshot, Update};
pub use store::{EntityStore, StoreError, StoreShard};
pub use text::{TextIndex, TextStats};
