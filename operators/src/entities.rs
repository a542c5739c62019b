//! The entities materializer: each worker takes from the broadcast [`Control`] stream the
//! records of the items it owns (see `tidal_core::flow::owner`), interns their ids to dense
//! keys, keeps each item's current [`ItemState`] and emits two collections: the signals of its
//! items as [`SignalEv`]s, and the state of every item key (upserts: `(key, old) −1,
//! (key, new) +1`). Interning happens in log order at the owner, so the keys of a log are the
//! same in every run with the same number of workers.
//!
//! A delete retires the item's key: its next signal or put gets a fresh key, so features
//! gathered before the delete are never listed again, and a signal arriving first keeps the
//! item unlisted (`deleted: true`) until it is put again.
//!
//! Cost per signal on every worker: one ownership hash of the item id; on its owner, one
//! interning lookup and one push.

use std::sync::Arc;

use differential_dataflow::{AsCollection, VecCollection};
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::channels::pushers::Output;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;

use tidal_core::config::Config;
use tidal_core::features::weight_fixed;
use tidal_core::flow::{Control, ItemKey, ItemState, KindIdx, Partition, SignalEv};
use tidal_core::record::{CommittedBatch, ItemMeta, Record, Signal};
use tidal_core::time::Time;

use crate::idmap::IdMap;

/// Updates per output container.
const CHUNK: usize = 1024;

/// The collections the entities materializer emits.
pub struct EntityOutputs<'s> {
    /// One [`SignalEv`] per signal of a declared type on an item this worker owns.
    pub signals: VecCollection<'s, Time, SignalEv, isize>,
    /// The current state of every item key this worker owns.
    pub items: VecCollection<'s, Time, (ItemKey, ItemState), isize>,
}

type SignalUpdate = (SignalEv, Time, isize);
type ItemUpdate = ((ItemKey, ItemState), Time, isize);

/// Builds the entities materializer over the broadcast control stream.
pub fn entities<'s>(control: StreamVec<'s, Time, Control>, config: Arc<Config>) -> EntityOutputs<'s> {
    let scope = control.scope();
    let partition = Partition::new(scope.index(), scope.peers());
    let mut builder = OperatorBuilder::new("Entities".to_owned(), scope);
    let mut input = builder.new_input(control, Pipeline);
    let (mut signal_out, signals) = builder.new_output::<Vec<SignalUpdate>>();
    let (mut item_out, items) = builder.new_output::<Vec<ItemUpdate>>();
    builder.build(move |_capabilities| {
        let mut log = Interner::new(&config, partition);
        let mut bufs = Buffers::default();
        move |_frontiers| {
            input.for_each(|cap, data| {
                // Messages under no capability make no claims; the source always sends with one.
                let (Some(c0), Some(c1)) = (cap.retain_least(0), cap.retain_least(1)) else {
                    return;
                };
                let caps = [c0, c1];
                let time = *caps[0].time();
                let mut outs = Outputs {
                    signals: &mut signal_out,
                    items: &mut item_out,
                    caps: &caps,
                };
                for msg in data.drain(..) {
                    if let Control::Run(run) = msg {
                        for batch in &run.batches {
                            log.apply(batch, time, &mut bufs, &mut outs);
                        }
                    }
                }
                outs.flush(&mut bufs);
            });
        }
    });
    EntityOutputs {
        signals: signals.as_collection(),
        items: items.as_collection(),
    }
}

/// Update buffers, shipped in chunks of [`CHUNK`].
#[derive(Default)]
struct Buffers {
    signals: Vec<SignalUpdate>,
    items: Vec<ItemUpdate>,
}

/// The operator's outputs and their capabilities (one per output, same time).
struct Outputs<'a> {
    signals: &'a mut Output<Time, Vec<SignalUpdate>>,
    items: &'a mut Output<Time, Vec<ItemUpdate>>,
    caps: &'a [Capability<Time>; 2],
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

/// One worker's share of the items: interned ids and item states.
struct Interner {
    partition: Partition,
    kinds: Vec<String>,
    /// Per signal type, its name packed as [`pack_kind`] does, when 15 bytes or shorter.
    packed_kinds: Vec<Option<u128>>,
    items: IdMap<ItemSlot>,
    next_local: u64,
}

impl Interner {
    fn new(config: &Config, partition: Partition) -> Interner {
        Interner {
            partition,
            kinds: config.signals.iter().map(|s| s.name.clone()).collect(),
            packed_kinds: config.signals.iter().map(|s| pack_kind(&s.name)).collect(),
            items: IdMap::new(),
            next_local: 0,
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

    /// Applies the records of one committed batch that this worker owns, at logical `time`.
    fn apply(&mut self, batch: &CommittedBatch, time: Time, bufs: &mut Buffers, outs: &mut Outputs<'_>) {
        for logged in &batch.records {
            match &logged.record {
                Record::Signals(signals) => {
                    for signal in signals {
                        if self.partition.owns(&signal.item) {
                            self.signal(signal, batch.clock_ms, time, bufs);
                        }
                    }
                }
                Record::ItemPut { id, meta } if self.partition.owns(id) => self.put(id, meta, time, bufs),
                Record::ItemDelete { id } if self.partition.owns(id) => self.delete(id, time, bufs),
                // The commit clock already moved the batch's time; configuration changes are
                // not applied by this dataflow.
                _ => {}
            }
            outs.ship_full(bufs);
        }
    }

    fn signal(&mut self, signal: &Signal, clock_ms: u64, time: Time, bufs: &mut Buffers) {
        let Some(kind) = self.kind(&signal.kind) else { return };
        let item = match self.items.get_mut(&signal.item) {
            Some(ItemSlot { key: Some(key), .. }) => *key,
            _ => self.fresh_key(&signal.item, None, time, bufs),
        };
        let ev = SignalEv {
            item,
            kind,
            ts_eff: signal.ts_eff(clock_ms),
            weight: weight_fixed(signal.weight),
            user: 0,
        };
        bufs.signals.push((ev, time, 1));
    }

    /// Gives `id` a new key. A put (`meta`) makes the item listed; a signal makes it listed
    /// unless the id was deleted before (an id with a slot but no live key was deleted).
    fn fresh_key(&mut self, id: &str, meta: Option<&ItemMeta>, time: Time, bufs: &mut Buffers) -> ItemKey {
        let key = self.partition.key(self.next_local);
        self.next_local += 1;
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
