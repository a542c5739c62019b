//! Types that cross from the dataflow into the sinks.

use serde::{Deserialize, Serialize};

use tidal_core::record::ItemMeta;

/// An item's dense key, assigned by the source in log order. A delete retires the key; the
/// item id then gets a fresh key, so a deleted item's old features never reach a ranking.
pub type ItemKey = u64;
/// Index of a signal type in the schema.
pub type KindIdx = u16;
/// Index of a half-life in its signal type's `half_lives`.
pub type HalfLifeIdx = u8;

/// An item as the serving layer knows it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ItemState {
    /// The client's id.
    pub id: String,
    /// Metadata, once put.
    pub meta: Option<ItemMeta>,
    /// Deleted and not put again: never listed.
    pub deleted: bool,
}
