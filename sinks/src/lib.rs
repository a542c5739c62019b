//! Arrangement sinks: the dataflow's outputs published into the serving layer.
//!
//! [`publish`] is the timely sink operator: it gathers the window, decay, item and LSN
//! collections on worker 0 and publishes, per frontier, an immutable [`Snapshot`] through a
//! [`Publisher`]. A snapshot holds every item's features and the ordered indexes that make
//! top-k queries a short walk (see [`index`]). Item metadata is also kept in a fjall entity
//! store ([`store`]).
//!
//! The contract with `tidal-dataflows` (types of the collections it hands to [`publish`]) is
//! in [`contract`].

#![cfg_attr(not(test), deny(clippy::unwrap_used))]
#![deny(missing_docs)]

pub mod contract;
pub mod entry;
pub mod index;
mod publish;
pub mod publisher;
pub mod snapshot;
pub mod store;

pub use entry::ItemEntry;
pub use index::{IndexEntry, IndexKind, Layout};
pub use publish::publish;
pub use publisher::Publisher;
pub use snapshot::{ItemChange, Snapshot, SnapshotBuilder, Update};
pub use store::StoreError;
