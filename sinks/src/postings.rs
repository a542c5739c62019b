//! Posting lists: for every `category`, `creator` and `tag` value, the keys of the listable
//! items that carry it, as a roaring bitmap. A filter that matches few items is answered by
//! scoring its posting list instead of walking an ordered index that holds every item
//! (see `tidal_serving::query`).
//!
//! The maps are persistent and their bitmaps shared between versions; a version that changes
//! an item's metadata copies the bitmaps of the values it touches (copy-on-write), which is
//! O(that bitmap's compressed size) — metadata changes are rare next to signals.

use std::sync::Arc;

use roaring::RoaringTreemap;

use crate::entry::ItemEntry;
use crate::snapshot::Map;
use tidal_core::flow::ItemKey;

/// The metadata fields with posting lists.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Field {
    /// `category`.
    Category,
    /// `creator`.
    Creator,
    /// Each of `tags`.
    Tag,
}

/// One change of a posting list: `insert` (or remove) `key` under (`field`, `value`).
pub(crate) type PostingChange = (Field, Arc<str>, ItemKey, bool);

/// The posting lists of one version.
#[derive(Clone, Debug, Default)]
pub struct Postings {
    category: Map<Arc<str>, Arc<RoaringTreemap>>,
    creator: Map<Arc<str>, Arc<RoaringTreemap>>,
    tag: Map<Arc<str>, Arc<RoaringTreemap>>,
}

impl Postings {
    fn map(&self, field: Field) -> &Map<Arc<str>, Arc<RoaringTreemap>> {
        match field {
            Field::Category => &self.category,
            Field::Creator => &self.creator,
            Field::Tag => &self.tag,
        }
    }

    fn map_mut(&mut self, field: Field) -> &mut Map<Arc<str>, Arc<RoaringTreemap>> {
        match field {
            Field::Category => &mut self.category,
            Field::Creator => &mut self.creator,
            Field::Tag => &mut self.tag,
        }
    }

    /// The keys of the listable items whose `field` is (or, for tags, includes) `value`;
    /// `None` when there are none.
    pub fn get(&self, field: Field, value: &str) -> Option<&RoaringTreemap> {
        self.map(field).get(value).map(|b| &**b)
    }

    /// Every value of `field` with at least one listable item.
    pub fn values_of(&self, field: Field) -> impl Iterator<Item = &str> {
        self.map(field).keys().map(|k| &**k)
    }

    /// The values of `field` with at least one listable item.
    pub fn values(&self, field: Field) -> usize {
        self.map(field).len()
    }

    /// The terms an entry is listed under: none unless it is listable.
    pub(crate) fn terms(entry: &ItemEntry, out: &mut Vec<(Field, Arc<str>)>) {
        out.clear();
        if !entry.is_listable() {
            return;
        }
        let Some(meta) = entry.meta() else { return };
        if let Some(c) = &meta.category {
            out.push((Field::Category, Arc::from(c.as_str())));
        }
        if let Some(c) = &meta.creator {
            out.push((Field::Creator, Arc::from(c.as_str())));
        }
        for t in &meta.tags {
            out.push((Field::Tag, Arc::from(t.as_str())));
        }
        out.sort_unstable();
        out.dedup();
    }

    /// Queues the changes that move `key` from the terms `before` to the terms `after`.
    pub(crate) fn diff(
        key: ItemKey,
        before: &[(Field, Arc<str>)],
        after: &[(Field, Arc<str>)],
        out: &mut Vec<PostingChange>,
    ) {
        for (f, v) in before {
            if after.binary_search(&(*f, v.clone())).is_err() {
                out.push((*f, v.clone(), key, false));
            }
        }
        for (f, v) in after {
            if before.binary_search(&(*f, v.clone())).is_err() {
                out.push((*f, v.clone(), key, true));
            }
        }
    }

    /// Applies changes; a bitmap shared with an older version is copied first, and an emptied
    /// one is dropped.
    pub(crate) fn apply(&mut self, changes: &[PostingChange]) {
        for (field, value, key, insert) in changes {
            let map = self.map_mut(*field);
            if *insert {
                let bits = map.entry(value.clone()).or_default();
                Arc::make_mut(bits).insert(*key);
            } else if let Some(bits) = map.get_mut(&**value) {
                Arc::make_mut(bits).remove(*key);
                if bits.is_empty() {
                    map.remove(&**value);
                }
            }
        }
    }
}
