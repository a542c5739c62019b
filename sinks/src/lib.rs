//! Arrangement sinks: the dataflow's outputs published into the serving layer.
//!
//! [`publish`] is the timely sink operator: it gathers the window, decay, item and LSN
//! collections on worker 0 and publishes immutable [`Snapshot`]s of whole times through a
//! [`Publisher`] (at most one per [`PUBLISH_INTERVAL`] under load, never later than that).
//! A snapshot holds every item's features and the ordered indexes that make top-k queries a
//! short walk (see [`index`], [`ordindex`]). Item metadata is also kept in a fjall entity
//! store ([`store`]).
//!
//! The contract with `tidal-dataflows` (types of the collections it hands to [`publish`]) is
//! in [`contract`].

#![cfg_attr(not(test), deny(clippy::unwrap_used))]
#![deny(missing_docs)]

mod builder;
pub mod contract;
mod delta;
pub mod entry;
pub mod index;
mod log;
pub mod ordindex;
pub mod postings;
mod publish;
pub mod publisher;
pub mod snapshot;
pub mod store;

pub use builder::SnapshotBuilder;
pub use entry::ItemEntry;
pub use index::{IndexEntry, IndexKind, Layout};
pub use ordindex::OrdIndex;
pub use postings::{Field, Postings};
pub use publish::{PUBLISH_INTERVAL, publish};
pub use publisher::Publisher;
pub use snapshot::{ItemChange, Snapshot, Update};
pub use store::StoreError;
