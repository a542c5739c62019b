//! The serving snapshot: an immutable, consistent version of everything the dataflow has
//! published, as of one frontier. Readers hold an `Arc<Snapshot>` and never wait.
//!
//! All maps and ordered indexes are persistent (`imbl`): cloning a snapshot to publish it
//! costs O(number of indexes), and applying a batch of changes costs O(changes · log n),
//! never O(n). [`SnapshotBuilder`] owns the working copy on the sink's worker, applies the
//! consolidated changes of every completed time ([`SnapshotBuilder::apply`]) and cuts a new
//! version per frontier ([`SnapshotBuilder::snapshot`]).

use std::sync::Arc;

use imbl::{HashMap, OrdSet};
use serde::{Deserialize, Serialize};

use tidal_core::Config;
use tidal_core::features::Lanes;
use tidal_core::record::ItemMeta;
use tidal_core::time::{Time, clock_at_frontier};

use crate::contract::{HalfLifeIdx, ItemKey, ItemState, KindIdx};
use crate::entry::ItemEntry;
use crate::index::{IndexEntry, IndexKind, Layout};

/// The frontier of a snapshot whose inputs are closed: every time is complete.
pub const CLOSED: Time = Time::MAX;

/// One change the sink applies, with a difference of `+1` (the value now holds) or `−1`
/// (the value no longer holds). The variants mirror the four collections of [`publish`].
///
/// [`publish`]: crate::publish
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Update {
    /// The window lanes of (item, signal type).
    Window {
        /// Item key.
        key: ItemKey,
        /// Signal type.
        kind: KindIdx,
        /// Current lanes.
        lanes: Lanes,
    },
    /// One anchored decay sum of (item, type, half-life, epoch).
    Decay {
        /// Item key.
        key: ItemKey,
        /// Signal type.
        kind: KindIdx,
        /// Half-life index.
        hl: HalfLifeIdx,
        /// Epoch start, ms.
        epoch: u64,
        /// Fixed-point anchored sum.
        sum: i128,
    },
    /// The item's state.
    Item {
        /// Item key.
        key: ItemKey,
        /// Current state.
        state: ItemState,
    },
    /// The last LSN applied.
    Lsn(u64),
}

impl Update {
    fn key(&self) -> Option<ItemKey> {
        match self {
            Update::Window { key, .. } | Update::Decay { key, .. } | Update::Item { key, .. } => Some(*key),
            Update::Lsn(_) => None,
        }
    }
}

/// What the entity store must do for an item id after a batch: store the metadata, or
/// forget the id (deleted, or no metadata any more).
#[derive(Clone, Debug, PartialEq)]
pub struct ItemChange {
    /// Item id.
    pub id: String,
    /// `Some` = store this metadata; `None` = remove the id.
    pub meta: Option<ItemMeta>,
}

/// A consistent, immutable version of the serving state.
#[derive(Clone)]
pub struct Snapshot {
    /// The dataflow frontier this version is complete up to: every update at a time before
    /// it is applied, none at or after it. [`CLOSED`] once the inputs are closed.
    pub frontier: Time,
    /// The last LSN applied.
    pub lsn: u64,
    layout: Arc<Layout>,
    entries: HashMap<ItemKey, Arc<ItemEntry>>,
    ids: HashMap<Arc<str>, IdKeys>,
    indexes: Vec<OrdSet<IndexEntry>>,
    listed: usize,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("frontier", &self.frontier)
            .field("lsn", &self.lsn)
            .field("keys", &self.entries.len())
            .field("listed", &self.listed)
            .finish()
    }
}

impl Snapshot {
    /// An empty snapshot at frontier 0 for a schema's index layout.
    pub fn empty(config: &Config) -> Snapshot {
        Snapshot::with_layout(Arc::new(Layout::from_config(config)))
    }

    fn with_layout(layout: Arc<Layout>) -> Snapshot {
        Snapshot {
            frontier: 0,
            lsn: 0,
            indexes: vec![OrdSet::new(); layout.slots()],
            layout,
            entries: HashMap::new(),
            ids: HashMap::new(),
            listed: 0,
        }
    }

    /// The clock (ms) the state is answered as of: the clock of the last complete time.
    pub fn clock_ms(&self) -> u64 {
        clock_at_frontier(self.frontier)
    }

    /// Whether the dataflow's inputs are closed (the final version).
    pub fn is_closed(&self) -> bool {
        self.frontier == CLOSED
    }

    /// The index layout of the schema this snapshot was built for.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Number of item keys with any state or feature.
    pub fn key_count(&self) -> usize {
        self.entries.len()
    }

    /// Number of listable (known and not deleted) items.
    pub fn listed(&self) -> usize {
        self.listed
    }

    /// The current key of an item id: its latest key that has a state.
    pub fn key_of(&self, id: &str) -> Option<ItemKey> {
        self.ids.get(id).and_then(IdKeys::latest)
    }

    /// Random access to an item key's state and features.
    pub fn entry(&self, key: ItemKey) -> Option<&ItemEntry> {
        self.entries.get(&key).map(|e| &**e)
    }

    /// The current entry of an item id.
    pub fn item(&self, id: &str) -> Option<(ItemKey, &ItemEntry)> {
        let key = self.key_of(id)?;
        Some((key, self.entry(key)?))
    }

    /// An ordered index, best entry first; `None` if the schema has no such index.
    pub fn index(&self, index: IndexKind) -> Option<&OrdSet<IndexEntry>> {
        self.indexes.get(self.layout.slot(index)?)
    }

    /// Every item key with its entry, in no particular order (tests and diagnostics; O(n)).
    pub fn entries(&self) -> impl Iterator<Item = (ItemKey, &ItemEntry)> {
        self.entries.iter().map(|(k, e)| (*k, &**e))
    }
}

/// Owns the working copy of the serving state and applies batches of changes to it.
#[derive(Clone, Debug)]
pub struct SnapshotBuilder {
    snap: Snapshot,
}

impl SnapshotBuilder {
    /// An empty builder for a schema.
    pub fn new(config: &Config) -> SnapshotBuilder {
        SnapshotBuilder {
            snap: Snapshot::empty(config),
        }
    }

    /// The working state (its `frontier` is that of the last [`snapshot`](Self::snapshot)).
    pub fn current(&self) -> &Snapshot {
        &self.snap
    }

    /// A new immutable version at `frontier` (O(number of indexes)).
    pub fn snapshot(&mut self, frontier: Time) -> Snapshot {
        self.snap.frontier = frontier;
        self.snap.clone()
    }

    /// Applies a batch of changes whose times are all complete. The batch is consolidated
    /// first; per value, `−1` removes it (if it is the current value) before `+1` sets the
    /// new one. Returns what the entity store must write for the ids whose state changed.
    pub fn apply(&mut self, mut updates: Vec<(Update, isize)>) -> Vec<ItemChange> {
        differential_dataflow::consolidation::consolidate(&mut updates);
        // Group by item key (stable: the consolidated order within a key is kept).
        updates.sort_by_key(|(u, _)| u.key());
        let mut changes = Vec::new();
        let mut rest = &updates[..];
        while let Some((first, _)) = rest.first() {
            let key = first.key();
            let run = rest.iter().take_while(|(u, _)| u.key() == key).count();
            let (group, tail) = rest.split_at(run);
            rest = tail;
            match key {
                None => self.apply_lsn(group),
                Some(key) => self.apply_key(key, group, &mut changes),
            }
        }
        changes
    }

    fn apply_lsn(&mut self, group: &[(Update, isize)]) {
        let newest = group
            .iter()
            .filter_map(|(u, d)| match u {
                Update::Lsn(l) if *d > 0 => Some(*l),
                _ => None,
            })
            .max();
        if let Some(l) = newest {
            self.snap.lsn = l;
        }
    }

    fn apply_key(&mut self, key: ItemKey, group: &[(Update, isize)], changes: &mut Vec<ItemChange>) {
        let old = self.snap.entries.get(&key).cloned();
        let mut new: ItemEntry = old.as_deref().cloned().unwrap_or_default();
        for (u, d) in group.iter().filter(|(_, d)| *d < 0) {
            if *d != -1 {
                tracing::debug!(key, diff = d, "unexpected multiplicity in the serving sink");
            }
            match u {
                Update::Window { kind, lanes, .. } => new.remove_lanes(*kind, lanes),
                Update::Decay {
                    kind, hl, epoch, sum, ..
                } => new.remove_epoch(*kind, *hl, *epoch, *sum),
                Update::Item { state, .. } => new.remove_state(state),
                Update::Lsn(_) => {}
            }
        }
        for (u, _) in group.iter().filter(|(_, d)| *d > 0) {
            match u {
                Update::Window { kind, lanes, .. } => new.set_lanes(*kind, *lanes),
                Update::Decay {
                    kind, hl, epoch, sum, ..
                } => new.set_epoch(*kind, *hl, *epoch, *sum),
                Update::Item { state, .. } => new.set_state(state.clone()),
                Update::Lsn(_) => {}
            }
        }
        let empty = ItemEntry::default();
        let old_ref = old.as_deref().unwrap_or(&empty);
        self.update_indexes(key, old_ref, &new);
        self.snap.listed = self.snap.listed + usize::from(new.is_listable()) - usize::from(old_ref.is_listable());
        let state_changed = old_ref.state() != new.state();
        let new = Arc::new(new);
        if new.is_empty() {
            self.snap.entries.remove(&key);
        } else {
            self.snap.entries.insert(key, new.clone());
        }
        if state_changed {
            self.update_id(key, old_ref, &new, changes);
        }
    }

    /// Moves the key's index entries from the old values to the new ones.
    fn update_indexes(&mut self, key: ItemKey, old: &ItemEntry, new: &ItemEntry) {
        let layout = self.snap.layout.clone();
        let before = old.index_values(&layout);
        let after = new.index_values(&layout);
        let same_id = old.id() == new.id();
        let entry = |e: &ItemEntry, order| {
            e.id().map(|id| IndexEntry {
                order,
                id: id.clone(),
                key,
            })
        };
        for (slot, order) in &before {
            if (!same_id || !after.contains(&(*slot, *order)))
                && let (Some(set), Some(e)) = (self.snap.indexes.get_mut(*slot), entry(old, *order))
            {
                set.remove(&e);
            }
        }
        for (slot, order) in &after {
            if (!same_id || !before.contains(&(*slot, *order)))
                && let (Some(set), Some(e)) = (self.snap.indexes.get_mut(*slot), entry(new, *order))
            {
                set.insert(e);
            }
        }
    }

    /// Keeps `id -> latest key with a state` and records what the entity store must write
    /// for the id (from its latest key's state).
    fn update_id(&mut self, key: ItemKey, old: &ItemEntry, new: &ItemEntry, changes: &mut Vec<ItemChange>) {
        let Some(id) = new.id().or(old.id()).cloned() else {
            return;
        };
        let mut keys = self.snap.ids.get(&id).cloned().unwrap_or_default();
        if new.state().is_some() {
            keys.insert(key)
        } else {
            keys.remove(key)
        }
        let latest = keys.latest();
        match latest {
            Some(_) => self.snap.ids.insert(id.clone(), keys),
            None => self.snap.ids.remove(&id),
        };
        let state = latest.and_then(|k| self.snap.entries.get(&k)).and_then(|e| e.state());
        let meta = state.filter(|s| !s.deleted).and_then(|s| s.meta.clone());
        changes.push(ItemChange {
            id: id.to_string(),
            meta,
        });
    }
}

/// The keys of one item id that have a state: the latest, and (rarely) older ones, so the
/// id still resolves if the latest key's state is retracted outright.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct IdKeys {
    latest: Option<ItemKey>,
    older: Vec<ItemKey>,
}

impl IdKeys {
    fn latest(&self) -> Option<ItemKey> {
        self.latest
    }

    fn insert(&mut self, key: ItemKey) {
        match self.latest {
            None => self.latest = Some(key),
            Some(l) if l == key => {}
            Some(l) => {
                let (keep, push) = if key > l { (key, l) } else { (l, key) };
                self.latest = Some(keep);
                if let Err(i) = self.older.binary_search(&push) {
                    self.older.insert(i, push);
                }
            }
        }
    }

    fn remove(&mut self, key: ItemKey) {
        if self.latest == Some(key) {
            self.latest = self.older.pop();
        } else if let Ok(i) = self.older.binary_search(&key) {
            self.older.remove(i);
        }
    }
}
