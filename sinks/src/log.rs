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

/// Items from which a log (a restore's, a catch-up's) is built and applied on two threads,
/// its parts that touch different structures side by side. Debug builds (the tests) take
/// that path for all but the smallest logs, so that both paths are checked.
pub(crate) const BULK: usize = if cfg!(debug_assertions) { 8 } else { 1 << 16 };

/// An item whose state changed in a log: its key, its entry before and after.
type StateChange = (ItemKey, Option<Arc<ItemEntry>>, Option<Arc<ItemEntry>>);

/// Vectors a [`Log`] is built in, kept from one version to the next.
#[derive(Clone, Debug, Default)]
pub(crate) struct Buffers {
    /// Per index slot, its changes.
    queues: Vec<Vec<Change>>,
    /// New entries by key: the log's list.
    entries: Vec<(ItemKey, Option<Arc<ItemEntry>>)>,
}

/// What a share of a log's changed items makes: per index slot its changes, sorted (the
/// no-op pairs are cancelled once the shares are merged); the new entries and the state
/// changes, each in key order; and how many items became listable and unlistable.
struct Part {
    queues: Vec<Vec<Change>>,
    entries: Vec<(ItemKey, Option<Arc<ItemEntry>>)>,
    state_changed: Vec<StateChange>,
    listed: (usize, usize),
}

impl Part {
    /// The share made of `items` (each with its entry in `last`), its vectors taken from
    /// `queues` and `entries`.
    fn new(
        last: &Snapshot,
        items: impl Iterator<Item = (ItemKey, (Option<Arc<ItemEntry>>, ItemEntry))>,
        mut queues: Vec<Vec<Change>>,
        mut entries: Vec<(ItemKey, Option<Arc<ItemEntry>>)>,
    ) -> Part {
        let layout = &last.layout;
        let empty = ItemEntry::default();
        queues.resize_with(layout.slots(), Vec::new);
        // A restore's or a catch-up's version changes millions of items: room for them at
        // once rather than vector after doubled vector.
        entries.reserve(items.size_hint().0);
        // Keys whose item state changed, with their entries before and after (not looked up
        // again).
        let mut state_changed: Vec<StateChange> = Vec::new();
        let mut listed = (0, 0);
        let (mut before, mut after) = (Vec::new(), Vec::new());
        for (key, (shared, new)) in items {
            let old = shared.as_deref().unwrap_or(&empty);
            if *old == new {
                continue;
            }
            ItemEntry::changed_index_values(old, &new, layout, (&mut before, &mut after));
            diff_indexes(&mut queues, key, (old, &before), (&new, &after));
            listed.0 += usize::from(new.is_listable());
            listed.1 += usize::from(old.is_listable());
            let changed = old.state() != new.state();
            let new = (!new.is_empty()).then(|| Arc::new(new));
            if changed {
                state_changed.push((key, shared, new.clone()));
            }
            entries.push((key, new));
        }
        for q in &mut queues {
            Prepared::sort(q);
        }
        // In key order: the persistent map takes them along one path at a time, and the
        // store's writes look them up.
        entries.sort_unstable_by_key(|e| e.0);
        state_changed.sort_unstable_by_key(|c| c.0);
        Part {
            queues,
            entries,
            state_changed,
            listed,
        }
    }

    /// One share made of two (of different items).
    fn merge(a: Part, b: Part) -> Part {
        let (queues, (entries, state_changed)) = side_by_side(
            true,
            || {
                a.queues
                    .into_iter()
                    .zip(b.queues)
                    .map(|(x, y)| merge_sorted(x, y, |x, y| Prepared::order(x, y).is_le()))
                    .collect()
            },
            || {
                (
                    merge_sorted(a.entries, b.entries, |x, y| x.0 <= y.0),
                    merge_sorted(a.state_changed, b.state_changed, |x, y| x.0 <= y.0),
                )
            },
        );
        Part {
            queues,
            entries,
            state_changed,
            listed: (a.listed.0 + b.listed.0, a.listed.1 + b.listed.1),
        }
    }
}

/// The elements of two sorted vectors in one sorted vector (`le`: whether the first goes
/// first).
fn merge_sorted<T>(a: Vec<T>, b: Vec<T>, le: impl Fn(&T, &T) -> bool) -> Vec<T> {
    if a.is_empty() {
        return b;
    }
    if b.is_empty() {
        return a;
    }
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut a, mut b) = (a.into_iter().peekable(), b.into_iter().peekable());
    loop {
        let next = match (a.peek(), b.peek()) {
            (Some(x), Some(y)) => {
                if le(x, y) {
                    a.next()
                } else {
                    b.next()
                }
            }
            (Some(_), None) => a.next(),
            (None, Some(_)) => b.next(),
            (None, None) => break,
        };
        out.extend(next);
    }
    out
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
    /// entries (each given with its entry in `last`) and the LSN is `lsn`; the entity-store
    /// writes it implies go to `writes`, and the items whose embedding changed (with the new
    /// one) to `embedded`.
    /// `bufs` lends the vectors the log is built in ([`recycle`](Self::recycle) returns
    /// them), so that large buffers are not allocated and freed for every version.
    pub(crate) fn new(
        last: &Snapshot,
        dirty: impl Iterator<Item = (ItemKey, (Option<Arc<ItemEntry>>, ItemEntry))>,
        lsn: Position,
        (writes, embedded): (&mut Vec<ItemChange>, &mut EmbeddingChanges),
        bufs: &mut Buffers,
    ) -> Log {
        let queues = std::mem::take(&mut bufs.queues);
        let entries = std::mem::take(&mut bufs.entries);
        // A restore's or a catch-up's log (a million items) is made in two halves side by
        // side, then merged.
        let part = if dirty.size_hint().0 >= BULK {
            let mut first: Vec<_> = dirty.collect();
            let second = first.split_off(first.len() / 2);
            let (a, b) = side_by_side(
                true,
                || Part::new(last, second.into_iter(), Vec::new(), Vec::new()),
                || Part::new(last, first.into_iter(), queues, entries),
            );
            Part::merge(a, b)
        } else {
            Part::new(last, dirty, queues, entries)
        };
        let Part {
            queues,
            entries,
            state_changed,
            listed,
        } = part;
        // The slots' vectors come back to `bufs` once applied (`recycle`, `apply_to`).
        bufs.queues.resize_with(queues.len(), Vec::new);
        let indexes = queues
            .into_iter()
            .enumerate()
            .filter(|(_, q)| !q.is_empty())
            .map(|(slot, q)| (slot, Prepared::cancelled(q)))
            .collect();
        // Postings and embeddings, and the id map with the store's writes, touch different
        // structures: a restore's or a catch-up's log builds them side by side.
        let mut postings = Vec::new();
        let (_, ids) = side_by_side(
            state_changed.len() >= BULK,
            || terms_and_embeddings(&state_changed, &mut postings, embedded),
            || {
                let ids = id_keys(last, &state_changed);
                store_writes(last, &entries, &ids, writes);
                ids
            },
        );
        Log {
            entries,
            indexes,
            ids,
            postings,
            listed: last.listed + listed.0 - listed.1,
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
        // The indexes take their changes against the old entries (which give the ids of the
        // entries indexed): a copy of the map's root (its nodes shared), let go once they
        // are applied, while the entries change beside them in a bulk log.
        let old = s.entries.clone();
        let changes = std::mem::take(&mut self.indexes);
        let Snapshot {
            entries,
            ids,
            indexes,
            postings,
            ..
        } = s;
        let queues = &mut bufs.queues;
        let apply_indexes = |entries: &imbl::OrdMap<ItemKey, Arc<ItemEntry>>| {
            let id_of = |k: ItemKey| entries.get(&k).and_then(|e| e.id()).map(|id| &**id);
            for (slot, changes) in changes {
                if let Some(index) = indexes.get_mut(slot) {
                    index.apply(&changes, &id_of);
                }
                if let Some(q) = queues.get_mut(slot) {
                    *q = emptied(changes.into_inner());
                }
            }
            postings.apply(&self.postings);
        };
        let mut apply_maps = |entries: &mut imbl::OrdMap<ItemKey, Arc<ItemEntry>>| {
            for (id, keys) in &self.ids {
                match keys {
                    Some(k) => {
                        ids.insert(id.clone(), k.clone());
                    }
                    None => {
                        ids.remove(id);
                    }
                }
            }
            for (key, entry) in &self.entries {
                match entry {
                    Some(e) => {
                        entries.insert(*key, e.clone());
                    }
                    None => {
                        entries.remove(key);
                    }
                }
            }
        };
        // The indexes with the posting lists, and the maps, side by side in a bulk log.
        side_by_side(
            self.entries.len() >= BULK,
            move || apply_indexes(&old),
            || apply_maps(entries),
        );
        s.listed = self.listed;
        s.lsn = self.lsn.lsn;
        s.signals = self.lsn.signals;
        self.recycle(bufs);
    }
}

/// The posting-list changes (to `postings`) and the new embeddings (to `embedded`) of the
/// items whose state changed, in key order.
fn terms_and_embeddings(
    state_changed: &[StateChange],
    postings: &mut Vec<PostingChange>,
    embedded: &mut EmbeddingChanges,
) {
    let empty = ItemEntry::default();
    let (mut terms_before, mut terms_after) = (Vec::new(), Vec::new());
    for (key, old, new) in state_changed {
        let key = *key;
        let (old, new) = (old.as_deref(), new.as_deref());
        let embedding = new.and_then(ItemEntry::embedding);
        if old.and_then(ItemEntry::embedding) != embedding {
            embedded.push((key, new.and_then(ItemEntry::embedded)));
        }
        Postings::terms(old.unwrap_or(&empty), &mut terms_before);
        Postings::terms(new.unwrap_or(&empty), &mut terms_after);
        Postings::diff(key, &terms_before, &terms_after, postings);
    }
}

/// The new keys of every id whose state changed somewhere (`None`: the id is gone), in id
/// order.
fn id_keys(last: &Snapshot, state_changed: &[StateChange]) -> Vec<(Arc<str>, Option<IdKeys>)> {
    let mut ids: HashMap<Arc<str>, Option<IdKeys>, RandomState> =
        HashMap::with_capacity_and_hasher(state_changed.len(), RandomState::default());
    for (key, old, new) in state_changed {
        let key = *key;
        let (old, new) = (old.as_deref(), new.as_deref());
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
    ids
}

/// The entity-store writes the new keys of `ids` imply: per id whose live metadata changed,
/// its newest entry, or its removal. `updated` holds the log's new entries, in key order.
fn store_writes(
    last: &Snapshot,
    updated: &[(ItemKey, Option<Arc<ItemEntry>>)],
    ids: &[(Arc<str>, Option<IdKeys>)],
    writes: &mut Vec<ItemChange>,
) {
    // Per id, the shared entry of its latest key as of this log (no copy of its metadata):
    // the keys looked up in key order, in one walk of the log's entries (a restore's are a
    // million, and a search of each would miss the cache at every step).
    let mut wanted: Vec<(ItemKey, usize)> = ids
        .iter()
        .enumerate()
        .filter_map(|(i, (_, keys))| keys.as_ref().and_then(IdKeys::latest).map(|k| (k, i)))
        .collect();
    wanted.sort_unstable();
    let mut latest: Vec<Option<Arc<ItemEntry>>> = vec![None; ids.len()];
    let mut from = 0;
    for (k, i) in wanted {
        while updated.get(from).is_some_and(|e| e.0 < k) {
            from += 1;
        }
        latest[i] = match updated.get(from) {
            Some((key, entry)) if *key == k => entry.clone(),
            _ => last.entries.get(&k).cloned(),
        };
    }
    for ((id, _), latest) in ids.iter().zip(latest) {
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
}

/// Runs `a` and `b` and returns both results: on two threads when `bulk` (`a` on a thread of
/// its own, or here after `b` should none start), one after the other here otherwise.
pub(crate) fn side_by_side<A, B>(bulk: bool, a: impl FnOnce() -> A + Send, b: impl FnOnce() -> B) -> (A, B)
where
    A: Send,
{
    if !bulk {
        return (a(), b());
    }
    // `a` stays reachable here should its thread not start.
    let a = std::sync::Mutex::new(Some(a));
    std::thread::scope(|s| {
        let theirs = std::thread::Builder::new()
            .name("tidal-sink-bulk".into())
            .spawn_scoped(s, || a.lock().unwrap_or_else(|p| p.into_inner()).take().map(|a| a()));
        let rb = b();
        let ra = match theirs.map(|t| t.join()) {
            Ok(Ok(Some(ra))) => Some(ra),
            Ok(Err(panic)) => std::panic::resume_unwind(panic),
            Ok(Ok(None)) | Err(_) => None,
        };
        let ra = ra.or_else(|| a.lock().unwrap_or_else(|p| p.into_inner()).take().map(|a| a()));
        match ra {
            Some(ra) => (ra, rb),
            None => unreachable!("`a` ran on neither thread"),
        }
    })
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
