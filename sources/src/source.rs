//! The WAL source: a timely operator that turns committed batches from a [`Feed`] into the
//! dataflow's three input collections — signals, items and the last applied LSN — each
//! update at its batch's logical time. Worker 0 reads the feed; the other workers drop their
//! capabilities at once, so progress depends on worker 0 alone. Item and user ids are
//! interned there, in log order, which makes the keys the same for every run of the same log
//! and every worker count. Items follow upsert semantics: the source keeps each key's current
//! [`ItemState`] and emits `(key, old) −1, (key, new) +1` on a change. A delete retires the
//! item's key: its next signal or put gets a fresh key, so features gathered before the
//! delete are never listed again, and a signal arriving first keeps the item unlisted
//! (`deleted: true`) until it is put again.
//!
//! Interning is the source's main cost, and the source runs on one worker, so ids live in an
//! [`IdMap`]: a table hashed with a randomly seeded foldhash (fast on short strings, yet a
//! client cannot aim ids at one bucket without the seed) whose entries hold ids of up to
//! [`INLINE_ID`] bytes in place, so a lookup compares fixed-size arrays in the entry it probed
//! instead of following a pointer to the stored string.

use std::sync::Arc;
use std::time::{Duration, Instant};

use timely::dataflow::Scope;
use timely::dataflow::channels::pushers::Output;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;

use differential_dataflow::{AsCollection, VecCollection};
use foldhash::fast::RandomState;
use hashbrown::HashTable;

use tidal_core::config::Config;
use tidal_core::features::weight_fixed;
use tidal_core::record::{CommittedBatch, ItemMeta, Position, Record, Signal};
use tidal_core::time::Time;
use tidal_operators::SignalEv;
use tidal_sinks::contract::{ItemKey, ItemState, KindIdx};

use crate::feed::Feed;

/// Most batches taken from the feed in one activation; the operator re-activates itself when
/// it took that many, so other operators get to run between slices of a long replay.
pub const MAX_BATCHES_PER_ACTIVATION: usize = 64;
/// Updates per output container.
const CHUNK: usize = 1024;
/// Poll interval in case a wake-up from the feed is missed.
const FALLBACK_POLL: Duration = Duration::from_millis(5);

/// The collections the source feeds the dataflow.
pub struct SourceOutputs<'s> {
    /// One [`SignalEv`] per signal of a declared type (`+1` at its batch's time).
    pub signals: VecCollection<'s, Time, SignalEv, isize>,
    /// The current state of every item key.
    pub items: VecCollection<'s, Time, (ItemKey, ItemState), isize>,
    /// One element: the log position applied (last LSN, signals up to it).
    pub lsn: VecCollection<'s, Time, Position, isize>,
}

type SignalUpdate = (SignalEv, Time, isize);
type ItemUpdate = ((ItemKey, ItemState), Time, isize);
type LsnUpdate = (Position, Time, isize);

/// Builds the source operator in `scope`. Worker 0 registers a wake-up with `feed` and drains
/// it; every batch's updates carry `batch.time`. The capability follows the last batch and
/// the feed's seal, and is dropped once the feed is closed and drained.
pub fn wal_source<'s>(scope: Scope<'s, Time>, feed: Arc<Feed>, config: Arc<Config>) -> SourceOutputs<'s> {
    let mut builder = OperatorBuilder::new("WalSource".to_owned(), scope);
    let info = builder.operator_info();
    let (mut signal_out, signals) = builder.new_output::<Vec<SignalUpdate>>();
    let (mut item_out, items) = builder.new_output::<Vec<ItemUpdate>>();
    let (mut lsn_out, lsn) = builder.new_output::<Vec<LsnUpdate>>();

    let reader = scope.index() == 0;
    let activator = scope.activator_for(info.address.clone());
    if reader {
        feed.register(scope.worker().sync_activator_for(info.address.to_vec()));
    }

    builder.build(move |capabilities| {
        let mut caps: Option<Vec<Capability<Time>>> = reader.then_some(capabilities);
        let mut log = LogState::new(&config);
        let mut bufs = Buffers::default();
        let mut next_poll: Option<Instant> = None;
        move |_frontiers| {
            let Some(held) = caps.as_mut() else { return };
            let drained = feed.drain(MAX_BATCHES_PER_ACTIVATION);
            let lower = *held[0].time();
            let mut upper = lower;
            {
                let mut outs = Outputs {
                    signals: &mut signal_out,
                    items: &mut item_out,
                    lsn: &mut lsn_out,
                    caps: held,
                };
                for batch in &drained.batches {
                    let time = if batch.time < lower {
                        tracing::error!(
                            batch = batch.time,
                            lower,
                            "a batch arrived below the feed's seal; applied at the seal"
                        );
                        lower
                    } else {
                        batch.time
                    };
                    log.apply(batch, time, &mut bufs, &mut outs);
                    upper = upper.max(time.saturating_add(1));
                }
                outs.flush(&mut bufs);
            }
            if drained.closed {
                caps = None;
                return;
            }
            let upper = upper.max(drained.sealed);
            if upper > lower {
                for cap in held.iter_mut() {
                    cap.downgrade(&upper);
                }
            }
            if drained.batches.len() == MAX_BATCHES_PER_ACTIVATION {
                activator.activate();
            } else {
                let now = Instant::now();
                if next_poll.is_none_or(|t| t <= now) {
                    next_poll = Some(now + FALLBACK_POLL);
                    activator.activate_after(FALLBACK_POLL);
                }
            }
        }
    });

    SourceOutputs {
        signals: signals.as_collection(),
        items: items.as_collection(),
        lsn: lsn.as_collection(),
    }
}

/// Update buffers, shipped in chunks of [`CHUNK`].
#[derive(Default)]
struct Buffers {
    signals: Vec<SignalUpdate>,
    items: Vec<ItemUpdate>,
    lsn: Vec<LsnUpdate>,
}

/// The operator's outputs and their capabilities (one per output, same time).
struct Outputs<'a> {
    signals: &'a mut Output<Time, Vec<SignalUpdate>>,
    items: &'a mut Output<Time, Vec<ItemUpdate>>,
    lsn: &'a mut Output<Time, Vec<LsnUpdate>>,
    caps: &'a [Capability<Time>],
}

impl Outputs<'_> {
    fn ship_full(&mut self, bufs: &mut Buffers) {
        if bufs.signals.len() >= CHUNK {
            self.signals.activate().give(&self.caps[0], &mut bufs.signals);
            bufs.signals.clear();
        }
        if bufs.items.len() >= CHUNK {
            self.items.activate().give(&self.caps[1], &mut bufs.items);
            bufs.items.clear();
        }
    }

    fn flush(&mut self, bufs: &mut Buffers) {
        if !bufs.signals.is_empty() {
            self.signals.activate().give(&self.caps[0], &mut bufs.signals);
            bufs.signals.clear();
        }
        if !bufs.items.is_empty() {
            self.items.activate().give(&self.caps[1], &mut bufs.items);
            bufs.items.clear();
        }
        if !bufs.lsn.is_empty() {
            self.lsn.activate().give(&self.caps[2], &mut bufs.lsn);
            bufs.lsn.clear();
        }
    }
}

/// Longest id kept inside its table entry.
pub const INLINE_ID: usize = 38;

/// An id as stored in an [`IdMap`]: short ids in place (zero-padded, so equal ids have equal
/// arrays), long ones on the heap.
#[derive(Clone, Debug, PartialEq, Eq)]
enum StoredId {
    Inline { len: u8, bytes: [u8; INLINE_ID] },
    Heap(Box<str>),
}

impl StoredId {
    /// The in-place form of `id`, if it is short enough.
    fn inline(id: &str) -> Option<StoredId> {
        let src = id.as_bytes();
        let len = u8::try_from(src.len()).ok().filter(|l| usize::from(*l) <= INLINE_ID)?;
        let mut bytes = [0u8; INLINE_ID];
        bytes[..src.len()].copy_from_slice(src);
        Some(StoredId::Inline { len, bytes })
    }

    fn new(id: &str) -> StoredId {
        StoredId::inline(id).unwrap_or_else(|| StoredId::Heap(id.into()))
    }

    fn as_bytes(&self) -> &[u8] {
        match self {
            StoredId::Inline { len, bytes } => &bytes[..usize::from(*len)],
            StoredId::Heap(s) => s.as_bytes(),
        }
    }
}

/// A map from id strings to `V`, built for the source's hot path (see the module docs).
struct IdMap<V> {
    table: HashTable<(StoredId, V)>,
    hasher: RandomState,
}

impl<V> IdMap<V> {
    fn new() -> IdMap<V> {
        IdMap {
            table: HashTable::new(),
            hasher: RandomState::default(),
        }
    }

    fn hash(hasher: &RandomState, id: &[u8]) -> u64 {
        use std::hash::BuildHasher;
        hasher.hash_one(id)
    }

    fn len(&self) -> usize {
        self.table.len()
    }

    /// The value of `id`, if any, and `id`'s hash.
    fn find_mut(&mut self, id: &str) -> (Option<&mut V>, u64) {
        let hash = Self::hash(&self.hasher, id.as_bytes());
        let found = match StoredId::inline(id) {
            Some(probe) => self.table.find_mut(hash, |(k, _)| *k == probe),
            None => self
                .table
                .find_mut(hash, |(k, _)| matches!(k, StoredId::Heap(s) if **s == *id)),
        };
        (found.map(|(_, v)| v), hash)
    }

    fn get_mut(&mut self, id: &str) -> Option<&mut V> {
        self.find_mut(id).0
    }

    fn contains(&mut self, id: &str) -> bool {
        self.find_mut(id).0.is_some()
    }

    /// Adds `id`, which must be absent and hash to `hash`.
    fn insert_new(&mut self, id: &str, hash: u64, value: V) -> &mut V {
        let hasher = &self.hasher;
        let entry = self.table.insert_unique(hash, (StoredId::new(id), value), |(k, _)| {
            Self::hash(hasher, k.as_bytes())
        });
        &mut entry.into_mut().1
    }

    /// Sets `id`'s value.
    fn insert(&mut self, id: &str, value: V) {
        match self.find_mut(id) {
            (Some(v), _) => *v = value,
            (None, hash) => {
                self.insert_new(id, hash, value);
            }
        }
    }
}

/// An item id's latest key and that key's state (the id is the map key). `key` is `None`
/// once a delete retired it. Kept small: most items never get metadata.
struct ItemSlot {
    key: Option<ItemKey>,
    deleted: bool,
    meta: Option<Box<ItemMeta>>,
}

impl ItemSlot {
    fn state(&self, id: &str) -> ItemState {
        ItemState {
            id: id.to_owned(),
            meta: self.meta.as_deref().cloned(),
            deleted: self.deleted,
        }
    }
}

/// What the source remembers of the log: interned ids, item states, the last LSN.
struct LogState {
    kinds: Vec<String>,
    /// Per signal type, its name packed as [`pack_kind`] does, when 15 bytes or shorter.
    packed_kinds: Vec<Option<u128>>,
    items: IdMap<ItemSlot>,
    users: IdMap<u64>,
    next_item: ItemKey,
    last_lsn: Option<u64>,
    /// Signals in the records applied.
    signals: u64,
}

impl LogState {
    fn new(config: &Config) -> LogState {
        LogState {
            kinds: config.signals.iter().map(|s| s.name.clone()).collect(),
            packed_kinds: config.signals.iter().map(|s| pack_kind(&s.name)).collect(),
            items: IdMap::new(),
            users: IdMap::new(),
            next_item: 0,
            last_lsn: None,
            signals: 0,
        }
    }

    fn kind(&self, name: &str) -> Option<KindIdx> {
        // A handful of types: a scan beats hashing the name. Short names compare as integers.
        let i = match pack_kind(name) {
            Some(packed) => self.packed_kinds.iter().position(|k| *k == Some(packed)),
            None => self.kinds.iter().position(|k| k == name),
        }?;
        KindIdx::try_from(i).ok()
    }

    /// Applies one committed batch at logical time `time`.
    fn apply(&mut self, batch: &CommittedBatch, time: Time, bufs: &mut Buffers, outs: &mut Outputs<'_>) {
        let before = Position {
            lsn: self.last_lsn.unwrap_or(0),
            signals: self.signals,
        };
        for logged in &batch.records {
            self.signals += logged.record.signal_count() as u64;
            match &logged.record {
                Record::Signals(signals) => {
                    for signal in signals {
                        self.signal(signal, batch.clock_ms, time, bufs);
                    }
                }
                Record::ItemPut { id, meta } => self.put(id, meta, time, bufs),
                Record::ItemDelete { id } => self.delete(id, time, bufs),
                // The commit clock already moved the batch's time; configuration changes are
                // not applied by this dataflow.
                Record::ClockAdvance { .. } | Record::Config { .. } => {}
            }
            outs.ship_full(bufs);
        }
        let lsn = batch.last_lsn();
        if lsn > 0 && self.last_lsn.is_none_or(|l| l < lsn) {
            if self.last_lsn.is_some() {
                bufs.lsn.push((before, time, -1));
            }
            self.last_lsn = Some(lsn);
            let now = Position {
                lsn,
                signals: self.signals,
            };
            bufs.lsn.push((now, time, 1));
        }
    }

    fn signal(&mut self, signal: &Signal, clock_ms: u64, time: Time, bufs: &mut Buffers) {
        let Some(kind) = self.kind(&signal.kind) else { return };
        let item = match self.items.get_mut(&signal.item) {
            Some(ItemSlot { key: Some(key), .. }) => *key,
            _ => self.fresh_key(&signal.item, None, time, bufs),
        };
        let user = match &signal.user {
            None => 0,
            Some(u) => {
                let next = self.users.len() as u64 + 1;
                match self.users.find_mut(u) {
                    (Some(idx), _) => *idx,
                    (None, hash) => *self.users.insert_new(u, hash, next),
                }
            }
        };
        let ev = SignalEv {
            item,
            kind,
            ts_eff: signal.ts_eff(clock_ms),
            weight: weight_fixed(signal.weight),
            user,
        };
        bufs.signals.push((ev, time, 1));
    }

    /// Gives `id` a new key. A put (`meta`) makes the item listed; a signal makes it listed
    /// unless the id was deleted before (an id with a slot but no live key was deleted).
    fn fresh_key(&mut self, id: &str, meta: Option<&ItemMeta>, time: Time, bufs: &mut Buffers) -> ItemKey {
        let key = self.next_item;
        self.next_item += 1;
        let was_deleted = self.items.contains(id);
        let slot = ItemSlot {
            key: Some(key),
            deleted: meta.is_none() && was_deleted,
            meta: meta.cloned().map(Box::new),
        };
        bufs.items.push(((key, slot.state(id)), time, 1));
        self.items.insert(id, slot);
        key
    }

    fn put(&mut self, id: &str, meta: &ItemMeta, time: Time, bufs: &mut Buffers) {
        match self.items.get_mut(id).and_then(|slot| Some((slot.key?, slot))) {
            Some((key, slot)) => {
                if slot.deleted || slot.meta.as_deref() != Some(meta) {
                    bufs.items.push(((key, slot.state(id)), time, -1));
                    slot.deleted = false;
                    slot.meta = Some(Box::new(meta.clone()));
                    bufs.items.push(((key, slot.state(id)), time, 1));
                }
            }
            None => {
                self.fresh_key(id, Some(meta), time, bufs);
            }
        }
    }

    fn delete(&mut self, id: &str, time: Time, bufs: &mut Buffers) {
        match self.items.get_mut(id) {
            Some(slot) => {
                if let Some(key) = slot.key.take()
                    && !slot.deleted
                {
                    bufs.items.push(((key, slot.state(id)), time, -1));
                    slot.deleted = true;
                    bufs.items.push(((key, slot.state(id)), time, 1));
                }
            }
            None => {
                // Never seen: remember the delete, so a later signal keeps the item unlisted.
                self.items.insert(
                    id,
                    ItemSlot {
                        key: None,
                        deleted: true,
                        meta: None,
                    },
                );
            }
        }
    }
}

/// A signal type name of at most 15 bytes as an integer: the bytes zero-padded, the length
/// in the last byte, so two names pack equal exactly when they are equal.
fn pack_kind(name: &str) -> Option<u128> {
    let src = name.as_bytes();
    let len = u8::try_from(src.len()).ok().filter(|l| *l < 16)?;
    let mut bytes = [0u8; 16];
    bytes[..src.len()].copy_from_slice(src);
    bytes[15] = len;
    Some(u128::from_le_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::collections::HashMap;

    /// Random ids on both sides of the in-place limit, against a std map.
    #[test]
    fn id_map_matches_a_hash_map() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut ids: IdMap<u64> = IdMap::new();
        let mut want: HashMap<String, u64> = HashMap::new();
        for i in 0..20_000u64 {
            let len = (next() % 60) as usize;
            // Few distinct ids per length, so that most operations hit an existing one; a
            // trailing NUL must not make an id equal to a shorter one.
            let id: String = (0..len)
                .map(|j| {
                    if j + 1 == len && next() % 4 == 0 {
                        '\0'
                    } else {
                        char::from(b'a' + (next() % 2) as u8)
                    }
                })
                .collect();
            match next() % 3 {
                0 => {
                    ids.insert(&id, i);
                    want.insert(id, i);
                }
                1 => assert_eq!(ids.get_mut(&id).copied(), want.get(&id).copied(), "{id:?}"),
                _ => {
                    let (found, hash) = ids.find_mut(&id);
                    match found {
                        Some(v) => *v += 1,
                        None => {
                            ids.insert_new(&id, hash, i);
                        }
                    }
                    want.entry(id).and_modify(|v| *v += 1).or_insert(i);
                }
            }
        }
        assert_eq!(ids.len(), want.len());
        for (id, v) in &want {
            assert_eq!(ids.get_mut(id), Some(&mut v.clone()), "{id:?}");
            assert!(ids.contains(id));
        }
    }

    #[test]
    fn kinds_pack_exactly() {
        assert_eq!(pack_kind("view"), pack_kind("view"));
        assert_ne!(pack_kind("view"), pack_kind("view\0"));
        assert_ne!(pack_kind(""), pack_kind("\0"));
        assert!(pack_kind("a-name-of-15-by").is_some());
        assert!(pack_kind("a-name-of-16-byt").is_none());
        let mut config = Config::default();
        config.signals.truncate(2);
        config.signals[1].name = "a-signal-type-longer-than-fifteen".into();
        let log = LogState::new(&config);
        assert_eq!(log.kind(&config.signals[0].name), Some(0));
        assert_eq!(log.kind("a-signal-type-longer-than-fifteen"), Some(1));
        assert_eq!(log.kind("a-signal-type-longer-than-fifteeN"), None);
        assert_eq!(log.kind(&format!("{}\0", config.signals[0].name)), None);
    }
}
