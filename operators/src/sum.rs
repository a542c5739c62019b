//! The engine of every materializer: keyed running sums of fixed-point diffs, fed by a
//! temporal filter. Each [`SignalEv`] is routed once to the worker owning its item
//! ([`shard`]) and expanded there into compact `(time, key, diff)` updates: its insertion at
//! its commit time and its retractions at the future logical times where windows close or
//! epochs expire. Updates wait per time, each distinct time holding one capability, and are
//! consolidated as they accumulate (so pending state is bounded by keys × distinct future
//! times, not by events). Once the input frontier passes a time, its updates are applied to
//! the per-key sums and every key that changed emits `(key, old) −1, (key, new) +1` at that
//! time: the output is the differential collection of current sums, consolidated per time.
//!
//! This is what `explode` + `count_total` computes, without their costs: differential's merge
//! batcher re-reads every update it holds at each seal (future retractions would be re-read
//! at every step), and an arrangement sorts, merges and seeks where one hash-map update per
//! key and time suffices for a sum over a totally ordered time. Cost per event: one exchange,
//! a push per update, a share of one sort per time, and one hash-map update per changed key.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};

use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::Operator;

use differential_dataflow::consolidation::consolidate;
use differential_dataflow::difference::{IsZero, Semigroup};
use differential_dataflow::{AsCollection, VecCollection};

use tidal_core::time::Time;

use crate::{SignalEv, shard};

/// How a materializer turns one event into updates of its sums.
pub(crate) trait Expander: 'static {
    /// The key of a sum in the output.
    type Key: Clone + Eq + std::hash::Hash + 'static;
    /// The sum.
    type Sum: Clone + Semigroup + 'static;
    /// An update's key as held while it waits (compact; ordered for consolidation). Values
    /// that inflate to the same key must be adjacent in this order.
    type Pending: Ord + Clone + 'static;
    /// An update's diff as held while it waits.
    type Diff: Semigroup + 'static;

    /// Pushes the updates of `ev`, committed at `time` with multiplicity `mult`, each at a
    /// time at or after `time`.
    fn expand(&self, ev: &SignalEv, time: Time, mult: isize, out: &mut Vec<(Time, Self::Pending, Self::Diff)>);

    /// The key and sum change of a waiting update due at `time`.
    fn inflate(&self, time: Time, pending: Self::Pending, diff: Self::Diff) -> (Self::Key, Self::Sum);
}

/// A fast hasher for the sums' keys: small tuples of integers the dataflow assigned itself
/// (dense item keys in log order, type and half-life indexes, epoch starts), never strings a
/// client chose, so a multiplicative hash is safe here and several times cheaper than SipHash.
#[derive(Default, Clone, Copy)]
pub(crate) struct IntHasher(u64);

impl std::hash::Hasher for IntHasher {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(u64::from(*b));
        }
    }
    fn write_u8(&mut self, x: u8) {
        self.write_u64(u64::from(x));
    }
    fn write_u16(&mut self, x: u16) {
        self.write_u64(u64::from(x));
    }
    fn write_u32(&mut self, x: u32) {
        self.write_u64(u64::from(x));
    }
    fn write_u64(&mut self, x: u64) {
        self.0 = (self.0.rotate_left(5) ^ x).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn write_usize(&mut self, x: usize) {
        self.write_u64(x as u64);
    }
    fn finish(&self) -> u64 {
        // The multiplication mixes upwards; fold the high bits into the low (bucket) bits.
        self.0 ^ (self.0 >> 29)
    }
}

type IntBuildHasher = std::hash::BuildHasherDefault<IntHasher>;

/// Updates due at one time, with the capability to emit their effect then.
struct Due<P, D> {
    cap: Capability<Time>,
    updates: Vec<(P, D)>,
    /// Length after the last consolidation; the next one happens at twice this.
    consolidated: usize,
}

/// The current sum per key of everything `expander` makes of `signals`, as a collection.
pub(crate) fn keyed_sums<'s, E: Expander>(
    signals: VecCollection<'s, Time, SignalEv, isize>,
    name: &str,
    expander: E,
) -> VecCollection<'s, Time, (E::Key, E::Sum), isize> {
    type Out<K, S> = Vec<((K, S), Time, isize)>;
    let route = Exchange::new(|update: &(SignalEv, Time, isize)| shard(update.0.item));
    signals
        .inner
        .unary_frontier::<CapacityContainerBuilder<Out<E::Key, E::Sum>>, _, _, _>(route, name, |_cap, _info| {
            let mut scratch = Vec::new();
            let mut due: BTreeMap<Time, Due<E::Pending, E::Diff>> = BTreeMap::new();
            let mut sums: HashMap<E::Key, E::Sum, IntBuildHasher> = HashMap::default();
            move |(input, frontier), output| {
                input.for_each(|cap, data| {
                    for (ev, time, mult) in data.iter() {
                        expander.expand(ev, *time, *mult, &mut scratch);
                        for (at, key, diff) in scratch.drain(..) {
                            let slot = due.entry(at).or_insert_with(|| Due {
                                cap: cap.delayed(&at, 0),
                                updates: Vec::new(),
                                consolidated: 0,
                            });
                            slot.updates.push((key, diff));
                            if slot.updates.len() >= 2 * slot.consolidated + 4096 {
                                consolidate(&mut slot.updates);
                                slot.consolidated = slot.updates.len();
                            }
                        }
                    }
                });
                // Apply every time the input frontier has passed, in time order.
                while let Some(entry) = due.first_entry() {
                    if frontier.frontier().iter().any(|f| f <= entry.key()) {
                        break;
                    }
                    let at = *entry.key();
                    let Due { cap, mut updates, .. } = entry.remove();
                    consolidate(&mut updates);
                    let mut session = output.session(&cap);
                    let mut apply = |key: E::Key, change: E::Sum| match sums.entry(key) {
                        _ if change.is_zero() => {}
                        Entry::Occupied(mut slot) => {
                            session.give(((slot.key().clone(), slot.get().clone()), at, -1));
                            slot.get_mut().plus_equals(&change);
                            if slot.get().is_zero() {
                                slot.remove();
                            } else {
                                session.give(((slot.key().clone(), slot.get().clone()), at, 1));
                            }
                        }
                        Entry::Vacant(slot) => {
                            session.give(((slot.key().clone(), change.clone()), at, 1));
                            slot.insert(change);
                        }
                    };
                    // One change per key: merge the (adjacent) updates that inflate to it.
                    let mut current: Option<(E::Key, E::Sum)> = None;
                    for (pending, diff) in updates {
                        let (key, change) = expander.inflate(at, pending, diff);
                        match &mut current {
                            Some((k, sum)) if *k == key => sum.plus_equals(&change),
                            _ => {
                                if let Some((k, sum)) = current.replace((key, change)) {
                                    apply(k, sum);
                                }
                            }
                        }
                    }
                    if let Some((k, sum)) = current {
                        apply(k, sum);
                    }
                }
            }
        })
        .as_collection()
}
