//! The entities materializer: each worker takes from the broadcast [`Control`] stream the
//! records of the items it owns (see `tidal_core::flow::owner`), interns their ids to dense
//! keys, keeps each item's current [`ItemState`] and emits two collections: the signals of its
//! items as [`SignalEv`]s, and the state of every item key (upserts: `(key, old) −1,
//! (key, new) +1`). Interning happens in log order at the owner, so the keys of a log are the
//! same in every run with the same number of workers.
//!
//! A delete retires the item's key: the item's state is retracted, a retire event zeroes its
//! features in every materializer, and the id is remembered as a *tombstone* until its
//! signals have left every window (twice the longest window): signals for it meanwhile are
//! not counted, and a put starts it afresh under a new key. After that the tombstone and the
//! key are forgotten (the key is given to a later item), so a deleted item leaves nothing
//! behind.
//!
//! Cost per signal on every worker: one ownership hash of the item id; on its owner, one
//! interning lookup and one push.

use std::collections::VecDeque;
use std::sync::Arc;

use differential_dataflow::{AsCollection, VecCollection};
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::channels::pushers::Output;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;

use tidal_core::config::Config;
use tidal_core::features::weight_fixed;
use tidal_core::flow::{
    CHECKPOINT, Control, ItemKey, ItemState, KindIdx, Partition, Persist, RETIRE, SignalEv, UserSig, id_hash,
};
use tidal_core::record::{CommittedBatch, ItemMeta, Record, Signal};
use tidal_core::stats::{Stage, StateStats};
use tidal_core::time::Time;

use crate::background::decoding;
use crate::idmap::IdMap;

mod checkpoint;

/// Updates per output container.
const CHUNK: usize = 1024;

/// The collections the entities materializer emits.
pub struct EntityOutputs<'s> {
    /// One [`SignalEv`] per signal of a declared type on an item this worker owns.
    pub signals: VecCollection<'s, Time, SignalEv, isize>,
    /// The current state of every item key this worker owns.
    pub items: VecCollection<'s, Time, (ItemKey, ItemState), isize>,
    /// The signals with a user on this worker's items, for the user's owner.
    pub user_signals: StreamVec<'s, Time, UserSig>,
}

type SignalUpdate = (SignalEv, Time, isize);
type ItemUpdate = ((ItemKey, ItemState), Time, isize);

/// Builds the entities materializer over the broadcast control stream. In a `cluster`
/// (several sources feed the stream) messages are held until the input frontier passes
/// their time and applied in time order, since an item's state changes must follow the
/// log's logical time, not the order of arrival, and the processes' [`Control::Finished`]
/// are noted in the table; with one source they arrive in time order and are applied at
/// once.
pub fn entities<'s>(
    control: StreamVec<'s, Time, Control>,
    config: Arc<Config>,
    stats: Arc<StateStats>,
    persist: Persist,
    cluster: Option<Arc<tidal_core::flow::ClusterFinished>>,
) -> EntityOutputs<'s> {
    let reorder = cluster.is_some();
    let scope = control.scope();
    let partition = Partition::new(scope.index(), scope.peers());
    let mut builder = OperatorBuilder::new("Entities".to_owned(), scope);
    let woken = scope
        .worker()
        .sync_activator_for(builder.operator_info().address.to_vec());
    let mut input = builder.new_input(control, Pipeline);
    let (mut signal_out, signals) = builder.new_output::<Vec<SignalUpdate>>();
    let (mut item_out, items) = builder.new_output::<Vec<ItemUpdate>>();
    let (mut user_out, user_signals) = builder.new_output::<Vec<UserSig>>();
    builder.build(move |capabilities| {
        let mut log = Interner::new(&config, partition);
        let mut bufs = Buffers::default();
        // A restored part decodes on a thread of its own (taken at the first activation).
        let decode = {
            let config = config.clone();
            move |bytes: Vec<u8>| {
                let (mut log, mut bufs) = (Interner::new(&config, partition), Buffers::default());
                if let Err(e) = log.load(&bytes, &mut bufs) {
                    // A checked checkpoint (checksum, format version) does not fail to
                    // decode; were it to, the state would be wrong: stop here rather than
                    // serve it.
                    panic!(
                        "checkpoint part entities of worker {} does not decode: {e}",
                        partition.index
                    );
                }
                (log, bufs)
            }
        };
        let mut restoring = decoding(&persist, partition.index, "entities", woken, decode);
        let mut initial = Some(capabilities);
        // With `reorder`: messages by time, with the capabilities to emit at that time; the
        // checkpoints apart, by frontier (see below).
        let mut waiting: std::collections::BTreeMap<Time, ([Capability<Time>; 3], Vec<Control>)> =
            std::collections::BTreeMap::new();
        let mut checkpoints: std::collections::BTreeMap<Time, ([Capability<Time>; 3], Vec<Control>)> =
            std::collections::BTreeMap::new();
        // The frontier of the last checkpoint taken: another asked at it (two processes of a
        // cluster, or a periodic one and a shutdown's) is the same state, taken once (the
        // stages after this one write one part per frontier, so a second set of parts would
        // never be whole).
        let mut taken: Option<Time> = None;
        move |frontiers| {
            // A restored part not decoded yet: the other operators run meanwhile (its thread
            // activates this one when it is ready).
            if restoring.as_mut().is_some_and(|r| !r.ready()) {
                return;
            }
            let started = std::time::Instant::now();
            // The restored items go out at time 0, with the initial capabilities.
            if let Some(caps) = initial.take()
                && let [c0, c1, c2] = &caps[..]
            {
                if let Some(r) = restoring.take() {
                    (log, bufs) = r.take();
                }
                let caps = [c0.clone(), c1.clone(), c2.clone()];
                let mut outs = Outputs {
                    signals: &mut signal_out,
                    items: &mut item_out,
                    users: &mut user_out,
                    caps: &caps,
                };
                outs.flush(&mut bufs);
            }
            let mut apply = |caps: [Capability<Time>; 3], msgs: &mut Vec<Control>| {
                let time = *caps[0].time();
                let mut outs = Outputs {
                    signals: &mut signal_out,
                    items: &mut item_out,
                    users: &mut user_out,
                    caps: &caps,
                };
                // A checkpoint at frontier `f` holds the runs at times before `f`, none at or
                // after it (as the other stages and the run log count). Every message here is at
                // time `time`: a run is at `time`, so a checkpoint at a frontier after it goes
                // after the runs (the source sends its own that way), and one at `time` itself
                // (another process's, in a cluster, whose runs share no order with ours) before.
                msgs.sort_by_key(|m| match m {
                    Control::Checkpoint { time: f, .. } if *f <= time => 0,
                    Control::Checkpoint { .. } => 2,
                    _ => 1,
                });
                for msg in msgs.drain(..) {
                    match msg {
                        Control::Run(run) => {
                            for batch in &run.batches {
                                log.apply(batch, time, &mut bufs, &mut outs);
                            }
                        }
                        Control::Checkpoint {
                            time: frontier,
                            position,
                        } => {
                            if taken.is_some_and(|t| t >= frontier) {
                                continue;
                            }
                            taken = Some(frontier);
                            // Every run before the checkpoint is applied, none after it. The
                            // worker keeps a snapshot; its metadata is encoded on another thread.
                            if persist.writes() {
                                let began = std::time::Instant::now();
                                let saved = log.snapshot();
                                tracing::debug!(ms = began.elapsed().as_secs_f64() * 1e3, "entities snapshot taken");
                                persist.write_later(
                                    partition.index,
                                    "entities",
                                    frontier,
                                    position,
                                    Box::new(move |w| saved.write_into(w)),
                                );
                            }
                            // The materializers after this one checkpoint at the same place
                            // of their input: the marker travels with the signals.
                            let marker = SignalEv {
                                item: position.lsn,
                                kind: CHECKPOINT,
                                ts_eff: frontier,
                                weight: 0,
                                user: position.signals,
                            };
                            bufs.signals.push((marker, time, 1));
                        }
                        Control::Mark { .. } | Control::Finished { .. } => {}
                    }
                }
                outs.flush(&mut bufs);
            };
            input.for_each(|cap, data| {
                // Messages under no capability make no claims; the source always sends with one.
                let (Some(c0), Some(c1), Some(c2)) = (cap.retain_least(0), cap.retain_least(1), cap.retain_least(2))
                else {
                    return;
                };
                if let Some(table) = &cluster {
                    for msg in data.iter() {
                        if let Control::Finished { origin, frontier } = msg {
                            table.note(*origin, *frontier);
                        }
                    }
                }
                if reorder {
                    // A checkpoint at frontier `f` is sent at its asker's time, which may be
                    // below `f`: the runs between (another process's, or this one's, sent
                    // after the asker's) must be in its state, and in the log position this
                    // process's part names. It waits until every time before `f` is complete,
                    // and goes at `f`, before the runs there.
                    let now = *c0.time();
                    for msg in data.drain(..) {
                        let (map, at) = match &msg {
                            Control::Checkpoint { time: f, .. } => (&mut checkpoints, now.max(*f)),
                            _ => (&mut waiting, now),
                        };
                        let held = map
                            .entry(at)
                            .or_insert_with(|| ([c0.delayed(&at), c1.delayed(&at), c2.delayed(&at)], Vec::new()));
                        held.1.push(msg);
                    }
                } else {
                    apply([c0, c1, c2], data);
                }
            });
            if reorder {
                // In time order: a time's runs once the input has passed it (a cluster's runs
                // of one time come from every process), a checkpoint at `f` once it has reached
                // `f` (an idle event-clock cluster's sources stop at the frontier asked for),
                // before the runs at `f`.
                let frontier = &frontiers[0];
                loop {
                    let checkpoint = checkpoints
                        .first_key_value()
                        .map(|(t, _)| *t)
                        .filter(|t| !frontier.less_than(t));
                    let run = waiting
                        .first_key_value()
                        .map(|(t, _)| *t)
                        .filter(|t| !frontier.less_equal(t));
                    let next = match (checkpoint, run) {
                        (Some(c), Some(r)) if c <= r => checkpoints.pop_first(),
                        (Some(_), None) => checkpoints.pop_first(),
                        (_, Some(_)) => waiting.pop_first(),
                        (None, None) => break,
                    };
                    if let Some((_, (caps, mut msgs))) = next {
                        apply(caps, &mut msgs);
                    }
                }
            }
            StateStats::set(&stats.items, log.live);
            StateStats::set(&stats.tombstones, log.tombstones.len());
            StateStats::set(&stats.free_keys, log.free.len());
            stats.busy(Stage::Entities, started);
        }
    });
    EntityOutputs {
        signals: signals.as_collection(),
        items: items.as_collection(),
        user_signals,
    }
}

/// Update buffers, shipped in chunks of [`CHUNK`].
#[derive(Default)]
struct Buffers {
    signals: Vec<SignalUpdate>,
    items: Vec<ItemUpdate>,
    users: Vec<UserSig>,
}

/// The operator's outputs and their capabilities (one per output, same time).
struct Outputs<'a> {
    signals: &'a mut Output<Time, Vec<SignalUpdate>>,
    items: &'a mut Output<Time, Vec<ItemUpdate>>,
    users: &'a mut Output<Time, Vec<UserSig>>,
    caps: &'a [Capability<Time>; 3],
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
        if bufs.users.len() >= CHUNK {
            self.users.activate().give(&self.caps[2], &mut bufs.users);
            bufs.users.clear();
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
        if !bufs.users.is_empty() {
            self.users.activate().give(&self.caps[2], &mut bufs.users);
            bufs.users.clear();
        }
    }
}

/// An item id's key and state (the id is the map key), or its tombstone: `key` is `None`
/// once a delete retired it, until clock `until`. Kept small: most items never get metadata.
#[derive(Clone)]
struct ItemSlot {
    key: Option<ItemKey>,
    until: u64,
    meta: Option<Arc<ItemMeta>>,
}

impl ItemSlot {
    fn state(&self, id: &str) -> ItemState {
        ItemState {
            id: id.to_owned(),
            meta: self.meta.clone(),
            deleted: false,
        }
    }
}

/// One worker's share of the items: interned ids and item states.
struct Interner {
    partition: Partition,
    kinds: Vec<String>,
    /// Per signal type, its name packed as [`pack_kind`] does, when 15 bytes or shorter.
    packed_kinds: Vec<Option<u128>>,
    items: IdMap<ItemSlot>,
    next_local: u64,
    /// How long a deleted item's id is kept: twice the longest window, ms.
    retention: u64,
    /// How long a deleted item's key is not given to another item: its id's retention, and
    /// at least the user-state horizon (users' seen sets hold keys until then), ms.
    key_retention: u64,
    /// Tombstones by the clock they end at, oldest first.
    tombstones: VecDeque<(u64, String)>,
    /// Retired keys, the clock after which they may be given to a new item, and the logical
    /// time that retired them (never reused within it: the materializers zero a retired key at
    /// the end of its time).
    free: VecDeque<(u64, Time, ItemKey)>,
    /// Ids with a live key.
    live: usize,
}

impl Interner {
    fn new(config: &Config, partition: Partition) -> Interner {
        Interner {
            partition,
            kinds: config.signals.iter().map(|s| s.name.clone()).collect(),
            packed_kinds: config.signals.iter().map(|s| pack_kind(&s.name)).collect(),
            items: IdMap::new(),
            next_local: 0,
            retention: config
                .signals
                .iter()
                .flat_map(|s| s.windows.iter().map(|w| 2 * w.size.ms()))
                .max()
                .unwrap_or(0),
            key_retention: 0,
            tombstones: VecDeque::new(),
            free: VecDeque::new(),
            live: 0,
        }
        .with_key_retention(config)
    }

    fn with_key_retention(mut self, config: &Config) -> Interner {
        let horizon = config.personalization.state_horizon.ms();
        // A user-state bucket ends up to one granularity (horizon / 90, at least 1 s) later.
        self.key_retention = self.retention.max(horizon + (horizon / 90).max(1000));
        self
    }

    fn kind(&self, name: &str) -> Option<KindIdx> {
        // A handful of types: a scan beats hashing the name. Short names compare as integers.
        let i = match pack_kind(name) {
            Some(packed) => self.packed_kinds.iter().position(|k| *k == Some(packed)),
            None => self.kinds.iter().position(|k| k == name),
        }?;
        KindIdx::try_from(i).ok()
    }

    /// Applies the records of one committed batch that this worker owns, at logical `time`.
    fn apply(&mut self, batch: &CommittedBatch, time: Time, bufs: &mut Buffers, outs: &mut Outputs<'_>) {
        let clock = batch.clock_ms;
        self.expire(clock);
        for logged in &batch.records {
            match &logged.record {
                Record::Signals(signals) => {
                    for signal in signals {
                        if self.partition.owns(&signal.item) {
                            self.signal(signal, logged.lsn, clock, time, bufs);
                        }
                    }
                }
                Record::ItemPut { id, meta } if self.partition.owns(id) => self.put(id, meta, clock, time, bufs),
                Record::ItemDelete { id } if self.partition.owns(id) => self.delete(id, clock, time, bufs),
                // The commit clock already moved the batch's time; configuration changes are
                // not applied by this dataflow.
                _ => {}
            }
            outs.ship_full(bufs);
        }
    }

    /// Forgets the tombstones that ended before `clock`.
    fn expire(&mut self, clock: u64) {
        while self.tombstones.front().is_some_and(|(until, _)| *until < clock) {
            let Some((until, id)) = self.tombstones.pop_front() else {
                break;
            };
            // Only if still that tombstone (a put may have revived the id since).
            if let Some(slot) = self.items.get(&id)
                && slot.key.is_none()
                && slot.until == until
            {
                self.items.remove(&id);
            }
        }
    }

    fn signal(&mut self, signal: &Signal, lsn: u64, clock_ms: u64, time: Time, bufs: &mut Buffers) {
        let Some(kind) = self.kind(&signal.kind) else { return };
        let (item, creator) = match self.items.get(&signal.item) {
            // The creator's hash is only wanted by a signal with a user.
            Some(ItemSlot {
                key: Some(key), meta, ..
            }) => (
                *key,
                match signal.user {
                    Some(_) => meta.as_ref().and_then(|m| m.creator.as_deref()).map_or(0, id_hash),
                    None => 0,
                },
            ),
            // Deleted: not counted until it is put again.
            Some(_) => return,
            None => (self.fresh_key(&signal.item, None, clock_ms, time, bufs), 0),
        };
        if let Some(user) = &signal.user {
            bufs.users.push(UserSig {
                user: id_hash(user),
                item,
                kind,
                ts_eff: signal.ts_eff(clock_ms),
                weight: weight_fixed(signal.weight),
                creator,
                lsn,
            });
        }
        let ev = SignalEv {
            item,
            kind,
            ts_eff: signal.ts_eff(clock_ms),
            weight: weight_fixed(signal.weight),
            user: 0,
        };
        bufs.signals.push((ev, time, 1));
    }

    /// Gives `id` a key (a retired one whose time is up, or a new one) and makes it listed.
    fn fresh_key(
        &mut self,
        id: &str,
        meta: Option<&ItemMeta>,
        clock_ms: u64,
        time: Time,
        bufs: &mut Buffers,
    ) -> ItemKey {
        let key = match self.free.front() {
            Some(&(after, retired, key)) if after < clock_ms && retired < time => {
                self.free.pop_front();
                key
            }
            _ => {
                self.next_local += 1;
                self.partition.key(self.next_local - 1)
            }
        };
        let slot = ItemSlot {
            key: Some(key),
            until: 0,
            meta: meta.cloned().map(Arc::new),
        };
        bufs.items.push(((key, slot.state(id)), time, 1));
        self.items.insert(id, slot);
        self.live += 1;
        key
    }

    fn put(&mut self, id: &str, meta: &ItemMeta, clock_ms: u64, time: Time, bufs: &mut Buffers) {
        match self.items.get_mut(id).and_then(|slot| Some((slot.key?, slot))) {
            Some((key, slot)) => {
                if slot.meta.as_deref() != Some(meta) {
                    bufs.items.push(((key, slot.state(id)), time, -1));
                    slot.meta = Some(Arc::new(meta.clone()));
                    bufs.items.push(((key, slot.state(id)), time, 1));
                }
            }
            None => {
                self.fresh_key(id, Some(meta), clock_ms, time, bufs);
            }
        }
    }

    fn delete(&mut self, id: &str, clock_ms: u64, time: Time, bufs: &mut Buffers) {
        let until = clock_ms.saturating_add(self.retention);
        let key_free = clock_ms.saturating_add(self.key_retention);
        match self.items.get_mut(id) {
            Some(slot) => {
                if let Some(key) = slot.key.take() {
                    bufs.items.push(((key, slot.state(id)), time, -1));
                    let retire = SignalEv {
                        item: key,
                        kind: RETIRE,
                        ts_eff: clock_ms,
                        weight: 0,
                        user: 0,
                    };
                    bufs.signals.push((retire, time, 1));
                    slot.meta = None;
                    slot.until = until;
                    self.live -= 1;
                    self.free.push_back((key_free, time, key));
                    self.tombstones.push_back((until, id.to_owned()));
                }
            }
            None => {
                // Never seen: remember the delete, so that stray signals are not counted.
                self.items.insert(
                    id,
                    ItemSlot {
                        key: None,
                        until,
                        meta: None,
                    },
                );
                self.tombstones.push_back((until, id.to_owned()));
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
        let log = Interner::new(&config, Partition::new(0, 1));
        assert_eq!(log.kind(&config.signals[0].name), Some(0));
        assert_eq!(log.kind("a-signal-type-longer-than-fifteen"), Some(1));
        assert_eq!(log.kind("a-signal-type-longer-than-fifteeN"), None);
        assert_eq!(log.kind(&format!("{}\0", config.signals[0].name)), None);
    }
}
