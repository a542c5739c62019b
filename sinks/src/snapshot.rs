//! The serving snapshot: an immutable, consistent version of everything the dataflow has
//! published, as of one frontier. Readers hold an `Arc<Snapshot>` and never wait.
//!
//! All maps and ordered indexes are persistent (`imbl` maps, [`OrdIndex`]): cloning a
//! snapshot to publish it costs O(number of indexes), and a version's changes cost
//! O(changes · log n), never O(n). [`SnapshotBuilder`](crate::SnapshotBuilder) owns the
//! working copy on the sink's worker and cuts new versions.

use std::sync::Arc;

use foldhash::fast::RandomState;
use serde::{Deserialize, Serialize};

use tidal_core::Config;
use tidal_core::features::Lanes;
use tidal_core::record::ItemMeta;
use tidal_core::time::{Time, clock_at_frontier};

use crate::ann::Ann;
use crate::entry::ItemEntry;
use crate::index::{IndexKind, Layout};
use crate::ordindex::OrdIndex;
use crate::postings::Postings;
use crate::side::{CohortLanes, Side};
use tidal_core::flow::{CohortId, HalfLifeIdx, ItemKey, ItemState, KindIdx, UserKey};
use tidal_core::user::{CohortDefs, UserView};

/// A persistent hash map with a fast hasher (keys are dense integers and item ids).
pub(crate) type Map<K, V> = imbl::GenericHashMap<K, V, RandomState, imbl::shared_ptr::DefaultSharedPtr>;

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
}

/// What the entity store and the text index must do for an item id after a batch: store
/// its metadata, or forget the id (deleted, or no metadata any more). The metadata is the
/// version's own entry, shared, not a copy (a start hands over a million of them).
#[derive(Clone, Debug, PartialEq)]
pub struct ItemChange {
    /// Item id.
    pub id: Arc<str>,
    /// The entry whose live metadata to store; `None` = remove the id.
    entry: Option<Arc<ItemEntry>>,
}

impl ItemChange {
    /// Store the metadata of `entry` (an entry with live metadata) under `id`.
    pub(crate) fn stored(id: Arc<str>, entry: Arc<ItemEntry>) -> ItemChange {
        ItemChange { id, entry: Some(entry) }
    }

    /// Store `meta` under `id`.
    pub fn put(id: &str, meta: ItemMeta) -> ItemChange {
        let mut entry = ItemEntry::default();
        entry.set_state(ItemState {
            id: id.to_string(),
            meta: Some(Arc::new(meta)),
            deleted: false,
        });
        ItemChange {
            id: id.into(),
            entry: Some(Arc::new(entry)),
        }
    }

    /// Forget `id`.
    pub fn remove(id: &str) -> ItemChange {
        ItemChange {
            id: id.into(),
            entry: None,
        }
    }

    /// The metadata to store (`None`: remove the id).
    pub fn meta(&self) -> Option<&ItemMeta> {
        self.shared_meta().map(|m| &**m)
    }

    /// [`meta`](Self::meta) as the version shares it.
    pub fn shared_meta(&self) -> Option<&Arc<ItemMeta>> {
        self.entry
            .as_deref()?
            .state()
            .filter(|s| !s.deleted)
            .and_then(|s| s.meta.as_ref())
    }
}

/// The mark a version's cohort part is complete up to, and the log positions it holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CohortCut {
    /// Every cohort change before it is applied, none at or after it.
    pub frontier: Time,
    /// The last LSN of this process's WAL the cohort part holds.
    pub lsn: u64,
    /// In a cluster: per process, the last LSN of its WAL the cohort part holds.
    pub lsns: Arc<[u64]>,
}

impl CohortCut {
    /// The last LSN of process `process`'s WAL the cohort part holds.
    pub fn lsn_of(&self, process: usize) -> u64 {
        lsn_of(&self.lsns, self.lsn, process)
    }
}

/// The last LSN of process `process`'s WAL in per-process `lsns` (empty alone: `own` is
/// process 0's).
pub(crate) fn lsn_of(lsns: &[u64], own: u64, process: usize) -> u64 {
    lsns.get(process).copied().unwrap_or(if process == 0 { own } else { 0 })
}

/// A consistent, immutable version of the serving state.
#[derive(Clone)]
pub struct Snapshot {
    /// The dataflow frontier this version is complete up to: every update at a time before
    /// it is applied, none at or after it. [`CLOSED`] once the inputs are closed.
    pub frontier: Time,
    /// The last LSN applied.
    pub lsn: u64,
    /// Signals in the log up to `lsn`.
    pub signals: u64,
    /// In a cluster: per process, the last LSN of its WAL this version holds (at least).
    pub lsns: Arc<[u64]>,
    /// Where the cohort part (cohort window lanes and declared cohorts) stands: `frontier`
    /// itself, or an earlier mark while the cohort rollup catches up with a broad cohort just
    /// declared — the rest of the version does not wait for it.
    pub cohorts: CohortCut,
    pub(crate) layout: Arc<Layout>,
    /// By item key, in a B-tree: its nodes are full (a hash trie of a million keys spent
    /// ~900 bytes a key on mostly empty nodes) and it walks in key order.
    pub(crate) entries: imbl::OrdMap<ItemKey, Arc<ItemEntry>>,
    /// By item id, in a B-tree for the same reason (a hash trie spent ~640 bytes an id).
    pub(crate) ids: imbl::OrdMap<Arc<str>, IdKeys>,
    pub(crate) indexes: Vec<OrdIndex>,
    pub(crate) postings: Postings,
    pub(crate) listed: usize,
    pub(crate) side: Side,
    /// The shard's nearest-item index, shared by all its versions (see [`Ann`]).
    pub(crate) ann: Arc<Ann>,
    /// Keys (items, users, cohort lanes) this version changed from the one before it: what
    /// keeping that one alive beside this one costs, roughly (the persistent-map nodes
    /// replaced on their paths).
    pub(crate) changed: usize,
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

    /// The same snapshot with `ann` as its nearest-item index (a shard's, which every
    /// version shares).
    pub(crate) fn sharing(mut self, ann: Arc<Ann>) -> Snapshot {
        self.ann = ann;
        self
    }

    pub(crate) fn with_layout(layout: Arc<Layout>) -> Snapshot {
        Snapshot {
            frontier: 0,
            lsn: 0,
            signals: 0,
            lsns: Arc::from(Vec::new()),
            cohorts: CohortCut::default(),
            indexes: vec![OrdIndex::new(); layout.slots()],
            layout,
            entries: imbl::OrdMap::default(),
            ids: imbl::OrdMap::default(),
            postings: Postings::default(),
            listed: 0,
            side: Side::default(),
            ann: Arc::new(Ann::default()),
            changed: 0,
        }
    }

    /// The shard's nearest-item index (shared by its versions; may hold items newer than
    /// this version: check every key against it).
    pub fn ann(&self) -> &Ann {
        &self.ann
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

    /// An ordered index, best entry first; `None` if the schema has no such index. An
    /// entry's id is its item's ([`ItemEntry::id`] of [`entry`](Self::entry)).
    pub fn index(&self, index: IndexKind) -> Option<&OrdIndex> {
        self.indexes.get(self.layout.slot(index)?)
    }

    /// The posting lists of `category`, `creator` and `tag` values.
    pub fn postings(&self) -> &Postings {
        &self.postings
    }

    /// The window lanes of `cohort` per (item, signal type) of this shard's items.
    pub fn cohort(&self, cohort: CohortId) -> Option<&CohortLanes> {
        self.side.cohorts.get(&cohort)
    }

    /// The window lanes of (item `key`, signal type `kind`) in `cohort`.
    pub fn cohort_lanes(&self, cohort: CohortId, key: ItemKey, kind: KindIdx) -> Option<&Lanes> {
        self.side.cohorts.get(&cohort)?.get(&(key, kind)).map(|l| &**l)
    }

    /// The state of a user this shard's worker owns.
    pub fn user(&self, key: UserKey) -> Option<&Arc<UserView>> {
        self.side.users.get(&key)
    }

    /// Users with state in this shard.
    pub fn user_count(&self) -> usize {
        self.side.users.len()
    }

    /// The declared cohorts as of this version (the same in every shard).
    pub fn cohort_defs(&self) -> &Arc<CohortDefs> {
        &self.side.defs
    }

    /// Every item key with its entry, in key order (tests and diagnostics; O(n)).
    pub fn entries(&self) -> impl Iterator<Item = (ItemKey, &ItemEntry)> {
        self.entries.iter().map(|(k, e)| (*k, &**e))
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
    pub(crate) fn latest(&self) -> Option<ItemKey> {
        self.latest
    }

    pub(crate) fn insert(&mut self, key: ItemKey) {
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

    pub(crate) fn remove(&mut self, key: ItemKey) {
        if self.latest == Some(key) {
            self.latest = self.older.pop();
        } else if let Ok(i) = self.older.binary_search(&key) {
            self.older.remove(i);
        }
    }
}
