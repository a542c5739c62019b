//! [`Log`]: the changes that turn one version of the serving state into the next.
//!
//! A log is computed from the items changed since the last version (their new entries
//! against the last version's): the new entries, the sorted index changes, the id map
//! updates, the listed count and the LSN. Applied to a copy-on-write clone of the last
//! version, it makes the next one.

use std::collections::HashMap;
use std::sync::Arc;

use foldhash::fast::RandomState;

use tidal_core::record::Position;

use crate::ann::EmbeddingChanges;
use crate::entry::ItemEntry;
use crate::index::IndexEntry;
use crate::ordindex::{Change, Prepared};
use crate::postings::{PostingChange, Postings};
use crate::snapshot::{IdKeys, ItemChange, Snapshot};
use tidal_core::flow::ItemKey;

/// Entries each buffer a version is built in (the log's, the builder's delta order and dirty
/// items) keeps room for between versions: live versions change a few thousand, a restore
/// or a catch-up millions.
pub(crate) const KEEP: usize = 1 << 14;

/// Vectors a [`Log`] is built in, kept from one version to the next.
#[derive(Clone, Debug, Default)]
pub(crate) struct Buffers {
    /// Per index slot, its changes.
    queues: Vec<Vec<Change>>,
    /// New entries by key, as a map and as the log's list.
    updated: HashMap<ItemKey, Option<Arc<ItemEntry>>, RandomState>,
    entries: Vec<(ItemKey, Option<Arc<ItemEntry>>)>,
}

/// The changes from one version to the next.
#[derive(Clone, Debug, Default)]
pub(crate) struct Log {
    /// New entries by key (`None`: the key is gone).
    entries: Vec<(ItemKey, Option<Arc<ItemEntry>>)>,
    /// Per index slot with changes, the changes.
    indexes: Vec<(usize, Prepared)>,
    /// New keys per item id (`None`: the id is gone).
    ids: Vec<(Arc<str>, Option<IdKeys>)>,
    /// Posting-list changes.
    postings: Vec<PostingChange>,
    listed: usize,
    lsn: Position,
}

impl Log {
    /// The log that takes `last` to the state where the keys of `dirty` hold their new
    /// entries and the LSN is `lsn`; the entity-store writes it implies go to `writes`,
    /// and the items whose embedding changed (with the new one) to `embedded`.
    /// `bufs` lends the vectors the log is built in ([`recycle`](Self::recycle) returns
    /// them), so that large buffers are not allocated and freed for every version.
    pub(crate) fn new(
        last: &Snapshot,
        dirty: impl Iterator<Item = (ItemKey, ItemEntry)>,
        lsn: Position,
        (writes, embedded): (&mut Vec<ItemChange>, &mut EmbeddingChanges),
        bufs: &mut Buffers,
    ) -> Log {
        let layout = &last.layout;
        let empty = ItemEntry::default();
        let queues = &mut bufs.queues;
        queues.resize_with(layout.slots(), Vec::new);
        let updated = &mut bufs.updated;
        updated.clear();
        // A restore's or a catch-up's version changes millions of items: room for them at
        // once rather than table after doubled table.
        updated.reserve(dirty.size_hint().0);
        // Keys whose item state changed, with their new entries (not looked up again).
        let mut state_changed: Vec<(ItemKey, Option<Arc<ItemEntry>>)> = Vec::with_capacity(dirty.size_hint().0);
        let mut listed = last.listed;
        let (mut before, mut after) = (Vec::new(), Vec::new());
        for (key, new) in dirty {
            let old = last.entries.get(&key).map_or(&empty, |e| &**e);
            if *old == new {
                continue;
            }
            old.index_values_into(layout, &mut before);
            new.index_values_into(layout, &mut after);
            diff_indexes(queues, key, (old, &before), (&new, &after));
            listed = listed + usize::from(new.is_listable()) - usize::from(old.is_listable());
            let changed = old.state() != new.state();
            let new = (!new.is_empty()).then(|| Arc::new(new));
            if changed {
                state_changed.push((key, new.clone()));
            }
            updated.insert(key, new);
        }
        let indexes = queues
            .iter_mut()
            .enumerate()
            .filter(|(_, q)| !q.is_empty())
            .map(|(slot, q)| (slot, Prepared::new(std::mem::take(q))))
            .collect();
        // Id map: the keys of every id whose state changed somewhere.
        let mut ids: HashMap<Arc<str>, Option<IdKeys>, RandomState> =
            HashMap::with_capacity_and_hasher(state_changed.len(), RandomState::default());
        let mut postings = Vec::new();
        let (mut terms_before, mut terms_after) = (Vec::new(), Vec::new());
        state_changed.sort_unstable_by_key(|c| c.0);
        for (key, new) in &state_changed {
            let key = *key;
            let old = last.entries.get(&key).map(|e| &**e);
            let new = new.as_deref();
            let embedding = new.and_then(ItemEntry::embedding);
            if old.and_then(ItemEntry::embedding) != embedding {
                embedded.push((key, new.and_then(ItemEntry::embedded)));
            }
            Postings::terms(old.unwrap_or(&empty), &mut terms_before);
            Postings::terms(new.unwrap_or(&empty), &mut terms_after);
            Postings::diff(key, &terms_before, &terms_after, &mut postings);
            let Some(id) = new.and_then(|e| e.id()).or(old.and_then(|e| e.id())) else {
                continue;
            };
            let keys = ids
                .entry(id.clone())
                .or_insert_with(|| Some(last.ids.get(id).cloned().unwrap_or_default()));
            let k = keys.get_or_insert_with(IdKeys::default);
            if new.and_then(|e| e.state()).is_some() {
                k.insert(key);
            } else {
                k.remove(key);
            }
            if k.latest().is_none() {
                *keys = None;
            }
        }
        let mut ids: Vec<(Arc<str>, Option<IdKeys>)> = ids.into_iter().collect();
        ids.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        // The shared entry of a key as of this log (no copy of its metadata).
        let shared = |k: ItemKey| match updated.get(&k) {
            Some(e) => e.clone(),
            None => last.entries.get(&k).cloned(),
        };
        for (id, keys) in &ids {
            let latest = keys.as_ref().and_then(IdKeys::latest).and_then(shared);
            let meta = latest
                .as_deref()
                .and_then(|e| e.state())
                .filter(|s| !s.deleted)
                .and_then(|s| s.meta.as_ref());
            let before = last
                .ids
                .get(&**id)
                .and_then(IdKeys::latest)
                .and_then(|k| last.entries.get(&k))
                .and_then(|e| e.state())
                .filter(|s| !s.deleted)
                .and_then(|s| s.meta.as_ref());
            // The store holds metadata: an item known from signals alone is not written.
            if meta != before {
                writes.push(match (meta.is_some(), latest) {
                    (true, Some(e)) => ItemChange::stored(id.clone(), e),
                    _ => ItemChange::remove(id),
                });
            }
        }
        Log {
            entries: {
                // In key order: the persistent map takes them along one path at a time.
                let mut entries = std::mem::take(&mut bufs.entries);
                entries.extend(bufs.updated.drain());
                entries.sort_unstable_by_key(|e| e.0);
                entries
            },
            indexes,
            ids,
            postings,
            listed,
            lsn,
        }
    }

    /// Item keys whose entry the log changes.
    pub(crate) fn changed(&self) -> usize {
        self.entries.len()
    }

    /// Hands the log's change vectors back to `bufs`, emptied.
    /// A version after a restore or a catch-up changes every item: what the buffers grew to
    /// for it is given back, keeping room for this many entries each.
    fn recycle(self, bufs: &mut Buffers) {
        bufs.entries = emptied(self.entries);
        bufs.updated.shrink_to(KEEP);
        for (slot, changes) in self.indexes {
            if let Some(q) = bufs.queues.get_mut(slot) {
                *q = emptied(changes.into_inner());
            }
        }
    }

    /// Applies the log to a copy of the version it was computed from, and hands its change
    /// vectors back to `bufs` ([`recycle`](Self::recycle)): each index's changes as soon as
    /// they are applied (a restore's are hundreds of megabytes).
    pub(crate) fn apply_to(mut self, s: &mut Snapshot, bufs: &mut Buffers) {
        // Index changes first: the old entries give the ids of the entries indexed.
        let entries = &s.entries;
        let id_of = |k: ItemKey| entries.get(&k).and_then(|e| e.id()).map(|id| &**id);
        for (slot, changes) in std::mem::take(&mut self.indexes) {
            if let Some(index) = s.indexes.get_mut(slot) {
                index.apply(&changes, &id_of);
            }
            if let Some(q) = bufs.queues.get_mut(slot) {
                *q = emptied(changes.into_inner());
            }
        }
        for (key, entry) in &self.entries {
            match entry {
                Some(e) => {
                    s.entries.insert(*key, e.clone());
                }
                None => {
                    s.entries.remove(key);
                }
            }
        }
        for (id, keys) in &self.ids {
            match keys {
                Some(k) => {
                    s.ids.insert(id.clone(), k.clone());
                }
                None => {
                    s.ids.remove(id);
                }
            }
        }
        s.postings.apply(&self.postings);
        s.listed = self.listed;
        s.lsn = self.lsn.lsn;
        s.signals = self.lsn.signals;
        self.recycle(bufs);
    }
}

/// `v` cleared, keeping room for [`KEEP`] elements at most.
fn emptied<T>(mut v: Vec<T>) -> Vec<T> {
    v.clear();
    v.shrink_to(KEEP);
    v
}

/// Queues the index changes that move `key` from its old values to its new ones (each
/// entry with its sorted `(slot, order)` values).
fn diff_indexes(
    queues: &mut [Vec<Change>],
    key: ItemKey,
    (old, before): (&ItemEntry, &[(usize, u64)]),
    (new, after): (&ItemEntry, &[(usize, u64)]),
) {
    let same_id = old.id() == new.id();
    let mut push = |e: &ItemEntry, slot: usize, order, insert| {
        if let (Some(id), Some(q)) = (e.id(), queues.get_mut(slot)) {
            q.push(Change {
                entry: IndexEntry::new(order, id, key),
                id: id.clone(),
                insert,
            });
        }
    };
    for &(slot, order) in before {
        if !same_id || after.binary_search(&(slot, order)).is_err() {
            push(old, slot, order, false);
        }
    }
    for &(slot, order) in after {
        if !same_id || before.binary_search(&(slot, order)).is_err() {
            push(new, slot, order, true);
        }
    }
}
