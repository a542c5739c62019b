//! The engine of every materializer: keyed running sums of fixed-point diffs, fed by a
//! temporal filter. Each [`SignalEv`] arrives at the worker owning its item (the entities
//! stage runs there) and is expanded into compact `(time, update, diff)` values: its insertion
//! at its commit time and its retractions at the future logical times where windows close or
//! epochs expire. Updates wait per time, each distinct time holding one capability. Updates
//! due later than the event that made them are consolidated as they accumulate, so
//! pending state is bounded by (a small multiple of) keys × distinct future times, not by
//! events. Once the input
//! frontier passes a time, its updates are applied to the per-key sums ([`DenseSums`], arrays
//! indexed by the dense item key) and every key that changed emits `(key, old) −1,
//! (key, new) +1` at that time: the output is the differential collection of current sums,
//! consolidated per time.
//!
//! This is what `explode` + `count_total` computes, without their costs: differential's merge
//! batcher re-reads every update it holds at each seal (future retractions would be re-read
//! at every step), and an arrangement sorts, merges and seeks where one array update per key
//! and time suffices for a sum over a totally ordered time. Cost per event: one exchange, a
//! push per update (found through a small cache of recent times), a share of the
//! consolidation of future times, and one array update per update when its time completes.

use std::collections::BTreeMap;

use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::{Capability, InputCapability};

use differential_dataflow::consolidation::consolidate;
use differential_dataflow::difference::{IsZero, Semigroup};
use differential_dataflow::{AsCollection, VecCollection};

use tidal_core::flow::ItemKey;
use tidal_core::time::Time;

use crate::SignalEv;
use crate::dense::DenseSums;

/// How a materializer turns one event into updates of its sums.
pub(crate) trait Expander: 'static {
    /// The key of a sum in the output.
    type Key: Clone + 'static;
    /// The sum.
    type Sum: Clone + Default + PartialEq + IsZero + 'static;
    /// What tells apart the sums of one (item, slot).
    type Extra: Copy + Eq + 'static;
    /// An update as held while it waits (compact; ordered for consolidation).
    type Pending: Ord + Clone + 'static;
    /// An update's diff as held while it waits.
    type Diff: Semigroup + 'static;

    /// Number of slots per item (see [`DenseSums`]).
    fn slots(&self) -> usize;

    /// Pushes the updates of `ev`, committed at `time` with multiplicity `mult`, each at a
    /// time at or after `time`.
    fn expand(&self, ev: &SignalEv, time: Time, mult: isize, out: &mut Vec<(Time, Self::Pending, Self::Diff)>);

    /// The sum a waiting update changes: its item, slot (below [`Expander::slots`]) and extra.
    fn locate(&self, pending: &Self::Pending) -> (ItemKey, usize, Self::Extra);

    /// Adds a waiting update to its sum.
    fn add(&self, sum: &mut Self::Sum, pending: &Self::Pending, diff: &Self::Diff);

    /// The output key of the sum at (`item`, `slot`, `extra`).
    fn key(&self, item: ItemKey, slot: usize, extra: Self::Extra) -> Self::Key;
}

/// Updates due at one time, with the capability to emit their effect then.
struct Due<P, D> {
    cap: Capability<Time>,
    updates: Vec<(P, D)>,
    /// Length at which to consolidate next: a multiple of the length after the last one.
    next_consolidation: usize,
}

/// Fewest updates a bucket holds before it is consolidated.
const MIN_CONSOLIDATION: usize = 4096;
/// Recent times looked up, to skip the ordered map for most pushes.
const CACHE: usize = 32;
/// Update vectors kept for reuse.
const SPARE: usize = 16;
/// Longest update vector kept for reuse.
const SPARE_MAX_LEN: usize = 1 << 18;

/// The waiting updates, per time.
struct Pending<P, D> {
    /// Time -> index in `slots`.
    order: BTreeMap<Time, usize>,
    slots: Vec<Option<Due<P, D>>>,
    free: Vec<usize>,
    /// Recently used (time, index) pairs, replaced round robin.
    cache: [(Time, usize); CACHE],
    cache_next: usize,
    spare: Vec<Vec<(P, D)>>,
}

impl<P: Ord, D: Semigroup> Pending<P, D> {
    fn new() -> Self {
        Pending {
            order: BTreeMap::new(),
            slots: Vec::new(),
            free: Vec::new(),
            cache: [(Time::MAX, usize::MAX); CACHE],
            cache_next: 0,
            spare: Vec::new(),
        }
    }

    /// The index of the bucket at `at`, made with a capability from `cap` if new.
    fn bucket(&mut self, at: Time, cap: &InputCapability<Time>) -> usize {
        if let Some(&(_, i)) = self.cache.iter().find(|(t, _)| *t == at) {
            return i;
        }
        let i = match self.order.get(&at) {
            Some(&i) => i,
            None => {
                let due = Due {
                    cap: cap.delayed(&at, 0),
                    updates: self.spare.pop().unwrap_or_default(),
                    next_consolidation: MIN_CONSOLIDATION,
                };
                let i = match self.free.pop() {
                    Some(i) => {
                        self.slots[i] = Some(due);
                        i
                    }
                    None => {
                        self.slots.push(Some(due));
                        self.slots.len() - 1
                    }
                };
                self.order.insert(at, i);
                i
            }
        };
        self.cache[self.cache_next] = (at, i);
        self.cache_next = (self.cache_next + 1) % CACHE;
        i
    }

    /// Adds an update due at `at`; `now` is the time of the event that made it.
    fn push(&mut self, at: Time, now: Time, update: P, diff: D, cap: &InputCapability<Time>) {
        let i = self.bucket(at, cap);
        let Some(due) = self.slots[i].as_mut() else { return };
        due.updates.push((update, diff));
        // Updates at their event's own time are applied soon: only later ones are consolidated.
        if at > now && due.updates.len() >= due.next_consolidation {
            let before = due.updates.len();
            consolidate(&mut due.updates);
            let after = due.updates.len();
            // Held at most 2x (4x when consolidating saves little) its distinct updates.
            let factor = if after * 4 <= before * 3 { 2 } else { 4 };
            due.next_consolidation = factor * after + MIN_CONSOLIDATION;
        }
    }

    /// Removes the earliest bucket if `ready` says its time is complete.
    fn pop_ready(&mut self, ready: impl Fn(Time) -> bool) -> Option<(Time, Due<P, D>)> {
        let entry = self.order.first_entry()?;
        let at = *entry.key();
        if !ready(at) {
            return None;
        }
        let i = entry.remove();
        self.free.push(i);
        self.cache
            .iter_mut()
            .filter(|(t, _)| *t == at)
            .for_each(|c| *c = (Time::MAX, usize::MAX));
        self.slots[i].take().map(|due| (at, due))
    }

    /// Keeps an emptied update vector for a later bucket.
    fn recycle(&mut self, mut updates: Vec<(P, D)>) {
        if self.spare.len() < SPARE && updates.capacity() <= SPARE_MAX_LEN {
            updates.clear();
            self.spare.push(updates);
        }
    }
}

/// The current sum per key of everything `expander` makes of `signals`, as a collection.
pub(crate) fn keyed_sums<'s, E: Expander>(
    signals: VecCollection<'s, Time, SignalEv, isize>,
    name: &str,
    expander: E,
) -> VecCollection<'s, Time, (E::Key, E::Sum), isize> {
    type Out<K, S> = Vec<((K, S), Time, isize)>;
    let peers = signals.inner.scope().peers();
    signals
        .inner
        .unary_frontier::<CapacityContainerBuilder<Out<E::Key, E::Sum>>, _, _, _>(Pipeline, name, move |_cap, _info| {
            let mut scratch = Vec::new();
            let mut pending: Pending<E::Pending, E::Diff> = Pending::new();
            let mut sums: DenseSums<E::Extra, E::Sum> = DenseSums::new(peers, expander.slots());
            move |(input, frontier), output| {
                input.for_each(|cap, data| {
                    for (ev, time, mult) in data.iter() {
                        expander.expand(ev, *time, *mult, &mut scratch);
                        for (at, update, diff) in scratch.drain(..) {
                            pending.push(at, *time, update, diff, &cap);
                        }
                    }
                });
                // Apply every time the input frontier has passed, in time order.
                let ready = |t: Time| !frontier.frontier().iter().any(|f| *f <= t);
                while let Some((at, mut due)) = pending.pop_ready(ready) {
                    for (update, diff) in due.updates.drain(..) {
                        let (item, slot, extra) = expander.locate(&update);
                        sums.update(item, slot, extra, |sum| expander.add(sum, &update, &diff));
                    }
                    pending.recycle(due.updates);
                    let mut session = output.session(&due.cap);
                    sums.finish(|item, slot, extra, sum, diff| {
                        session.give(((expander.key(item, slot, extra), sum.clone()), at, diff));
                    });
                }
            }
        })
        .as_collection()
}
