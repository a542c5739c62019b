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

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use timely::dataflow::Scope;
use timely::dataflow::channels::pushers::Output;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;

use differential_dataflow::{AsCollection, VecCollection};

use tidal_core::config::Config;
use tidal_core::features::weight_fixed;
use tidal_core::record::{CommittedBatch, ItemMeta, Record, Signal};
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
    /// One element: the last LSN applied.
    pub lsn: VecCollection<'s, Time, u64, isize>,
}

type SignalUpdate = (SignalEv, Time, isize);
type ItemUpdate = ((ItemKey, ItemState), Time, isize);
type LsnUpdate = (u64, Time, isize);

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
    items: HashMap<String, ItemSlot>,
    users: HashMap<String, u64>,
    next_item: ItemKey,
    last_lsn: Option<u64>,
}

impl LogState {
    fn new(config: &Config) -> LogState {
        LogState {
            kinds: config.signals.iter().map(|s| s.name.clone()).collect(),
            items: HashMap::new(),
            users: HashMap::new(),
            next_item: 0,
            last_lsn: None,
        }
    }

    fn kind(&self, name: &str) -> Option<KindIdx> {
        // A handful of types: a scan beats hashing the name; the length and last byte rule
        // out most candidates before a full comparison.
        let (len, last) = (name.len(), name.as_bytes().last());
        self.kinds
            .iter()
            .position(|k| k.len() == len && k.as_bytes().last() == last && k == name)
            .and_then(|i| KindIdx::try_from(i).ok())
    }

    /// Applies one committed batch at logical time `time`.
    fn apply(&mut self, batch: &CommittedBatch, time: Time, bufs: &mut Buffers, outs: &mut Outputs<'_>) {
        for logged in &batch.records {
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
            if let Some(old) = self.last_lsn {
                bufs.lsn.push((old, time, -1));
            }
            bufs.lsn.push((lsn, time, 1));
            self.last_lsn = Some(lsn);
        }
    }

    fn signal(&mut self, signal: &Signal, clock_ms: u64, time: Time, bufs: &mut Buffers) {
        let Some(kind) = self.kind(&signal.kind) else { return };
        let item = match self.items.get(signal.item.as_str()) {
            Some(ItemSlot { key: Some(key), .. }) => *key,
            _ => self.fresh_key(&signal.item, None, time, bufs),
        };
        let user = match &signal.user {
            None => 0,
            Some(u) => match self.users.get(u.as_str()) {
                Some(idx) => *idx,
                None => {
                    let idx = self.users.len() as u64 + 1;
                    self.users.insert(u.clone(), idx);
                    idx
                }
            },
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
        let was_deleted = self.items.contains_key(id);
        let slot = ItemSlot {
            key: Some(key),
            deleted: meta.is_none() && was_deleted,
            meta: meta.cloned().map(Box::new),
        };
        bufs.items.push(((key, slot.state(id)), time, 1));
        self.items.insert(id.to_owned(), slot);
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
                    id.to_owned(),
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
