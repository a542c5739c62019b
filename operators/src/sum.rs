//! The engine of every materializer: keyed running sums of fixed-point diffs, fed by a
//! temporal filter. Each [`SignalEv`] arrives at the worker owning its item (the entities
//! stage runs there) and is expanded into compact `(time, update, diff)` values: its insertion
//! at its commit time and its retractions at the future logical times where windows close.
//! Updates wait per time, each distinct time holding one capability; those due later than the
//! event that made them are consolidated as they accumulate, so pending state is bounded by
//! (a small multiple of) keys × distinct future times, not by events. An expander may also
//! schedule *clears*: at a time, the sum of one slot and extra is set to zero for every item
//! (decay expires a whole epoch so, with no per-item pending state at all).
//!
//! Once the input frontier passes some times, their updates are applied to the per-key sums
//! ([`DenseSums`], arrays indexed by the dense item key) and every key that changed emits
//! `(key, old) −1, (key, new) +1`: the output is the differential collection of current sums.
//! Only the source's marks are observed (the serving shards cut versions there), so every
//! time between two marks is applied as one round and emitted at the latest of those times:
//! a catch-up over a long log does one round per mark, not one per retraction time.
//!
//! A retire event (kind [`RETIRE`]) zeroes every sum of its item at the end of its round and,
//! when the expander says so, ignores the item's pending updates until they have all come due
//! (the item's key may then be given to a new item).
//!
//! This is what `explode` + `count_total` computes, without their costs: differential's merge
//! batcher re-reads every update it holds at each seal (future retractions would be re-read
//! at every step), and an arrangement sorts, merges and seeks where one array update per key
//! and time suffices for a sum over a totally ordered time.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use timely::container::CapacityContainerBuilder;
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::Operator;

use differential_dataflow::difference::{IsZero, Semigroup};
use differential_dataflow::{AsCollection, VecCollection};

use tidal_core::codec::{Codec, Cursor, DecodeError, put_u64};
use tidal_core::flow::{CHECKPOINT, Control, ItemKey, Persist, RETIRE};
use tidal_core::record::Position;
use tidal_core::time::Time;

use crate::SignalEv;
use crate::dense::{DenseSums, SPILL};
use crate::pending::Pending;

/// How a materializer turns one event into updates of its sums.
pub(crate) trait Expander: 'static {
    /// The key of a sum in the output.
    type Key: Clone + 'static;
    /// The sum.
    type Sum: Clone + Default + PartialEq + IsZero + Codec + 'static;
    /// What tells apart the sums of one (item, slot).
    type Extra: Copy + Eq + std::hash::Hash + Codec + 'static;
    /// An update as held while it waits (compact; ordered for consolidation).
    type Pending: Ord + Clone + Codec + 'static;
    /// An update's diff as held while it waits.
    type Diff: Semigroup + Codec + 'static;

    /// Number of slots per item (see [`DenseSums`]).
    fn slots(&self) -> usize;

    /// Pushes the updates of `ev`, committed at `time` with multiplicity `mult`, each at a
    /// time at or after `time`, and the clears `(time, slot, extra)` it needs.
    fn expand(
        &self,
        ev: &SignalEv,
        time: Time,
        mult: isize,
        out: &mut Vec<(Time, Self::Pending, Self::Diff)>,
        clears: &mut Vec<(Time, usize, Self::Extra)>,
    );

    /// The sum a waiting update changes: its item, slot (below [`Expander::slots`]) and extra.
    fn locate(&self, pending: &Self::Pending) -> (ItemKey, usize, Self::Extra);

    /// Adds a waiting update to its sum.
    fn add(&self, sum: &mut Self::Sum, pending: &Self::Pending, diff: &Self::Diff);

    /// The output key of the sum at (`item`, `slot`, `extra`).
    fn key(&self, item: ItemKey, slot: usize, extra: Self::Extra) -> Self::Key;

    /// For an item retired at clock `clock_ms`: the last time at which an update it scheduled
    /// may still come due (to be ignored), or `None` if it schedules none.
    fn retired_until(&self, clock_ms: u64) -> Option<Time>;
}

/// The size of a keyed sum's state, for monitoring.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct SumStats {
    /// Non-zero sums held.
    pub sums: usize,
    /// Updates waiting for a future time.
    pub pending: usize,
    /// Distinct future times waited for.
    pub times: usize,
    /// Retired items whose pending updates are still ignored.
    pub retired: usize,
    /// When the activation that measured these began.
    pub started: std::time::Instant,
}

/// The frontier and log position a checkpoint marker carries.
fn checkpoint_of(ev: &SignalEv) -> (Time, Position) {
    (
        ev.ts_eff,
        Position {
            lsn: ev.item,
            signals: ev.user,
        },
    )
}

/// Everything a keyed sum holds, written into a checkpoint part through `w`, a buffer of
/// [`SPILL`] bytes at a time (the part is never held whole in memory).
fn save_state<E: Expander>(
    sums: &DenseSums<E::Extra, E::Sum>,
    pending: &Pending<E::Pending, E::Diff, E::Extra>,
    dead: &HashMap<ItemKey, Time>,
    w: &mut dyn std::io::Write,
) -> std::io::Result<()> {
    let mut out = Vec::with_capacity(SPILL + 4096);
    let mut spill = |out: &mut Vec<u8>| -> std::io::Result<()> {
        w.write_all(out)?;
        out.clear();
        Ok(())
    };
    sums.save(&mut out, &mut spill)?;
    pending.save(&mut out, &mut spill)?;
    put_u64(&mut out, dead.len() as u64);
    for (k, until) in dead {
        put_u64(&mut out, *k);
        put_u64(&mut out, *until);
    }
    spill(&mut out)
}

/// The state a keyed sum restores from a checkpoint part.
type Restored<E> = (
    DenseSums<<E as Expander>::Extra, <E as Expander>::Sum>,
    Pending<<E as Expander>::Pending, <E as Expander>::Diff, <E as Expander>::Extra>,
    Vec<(ItemKey, Time)>,
);

fn load_state<E: Expander>(
    bytes: &[u8],
    sums: DenseSums<E::Extra, E::Sum>,
    cap: &Capability<Time>,
) -> Result<Restored<E>, DecodeError> {
    let mut sums = sums;
    let mut pending = Pending::new();
    let mut c = Cursor::new(bytes);
    sums.load(&mut c)?;
    pending.load(&mut c, cap)?;
    let mut dead = Vec::new();
    for _ in 0..c.u64("retired")? {
        dead.push((c.u64("item")?, c.u64("until")?));
    }
    c.finish()?;
    Ok((sums, pending, dead))
}

/// The current sum per key of everything `expander` makes of `signals`, as a collection.
/// `control` is the broadcast control stream (its marks delimit the rounds); `stats` is told
/// the state's size after every activation. With `persist`, the state is restored from a
/// checkpoint part named `what` and written into one at every checkpoint marker.
#[allow(clippy::too_many_arguments)]
pub(crate) fn keyed_sums<'s, E: Expander>(
    signals: VecCollection<'s, Time, SignalEv, isize>,
    control: StreamVec<'s, Time, Control>,
    name: &str,
    what: &'static str,
    expander: E,
    persist: Persist,
    stats: impl Fn(SumStats) + 'static,
) -> VecCollection<'s, Time, (E::Key, E::Sum), isize> {
    type Out<K, S> = Vec<((K, S), Time, isize)>;
    let scope = signals.inner.scope();
    let (peers, index) = (scope.peers(), scope.index());
    signals
        .inner
        .binary_frontier::<_, CapacityContainerBuilder<Out<E::Key, E::Sum>>, _, _, _, _>(
            control,
            Pipeline,
            Pipeline,
            name,
            move |initial, _info| {
                let mut scratch = Vec::new();
                let mut clears = Vec::new();
                let mut pending: Pending<E::Pending, E::Diff, E::Extra> = Pending::new();
                let mut sums: DenseSums<E::Extra, E::Sum> = DenseSums::new(peers, index, expander.slots());
                let mut marks: BTreeSet<Time> = BTreeSet::new();
                // Retired items: key -> the last time their pending updates are ignored.
                let mut dead: HashMap<ItemKey, Time> = HashMap::new();
                let mut dead_until: BTreeMap<Time, Vec<ItemKey>> = BTreeMap::new();
                // A checkpoint asked for (its frontier and position), and the input at or
                // after its frontier held back until the state before it is written.
                let mut checkpoint: Option<(Time, Position)> = None;
                let mut stash: Vec<(Capability<Time>, SignalEv, isize)> = Vec::new();
                // The restored state is emitted (at time 0) in the first activation.
                let mut restored = false;
                if let Some(bytes) = persist.take_restored(index, what) {
                    match load_state::<E>(&bytes, sums, &initial) {
                        Ok((s, p, d)) => {
                            (sums, pending) = (s, p);
                            for (k, until) in d {
                                dead.insert(k, until);
                                dead_until.entry(until).or_default().push(k);
                            }
                            restored = true;
                        }
                        Err(e) => {
                            // A checked checkpoint does not fail to decode; were it to, the
                            // state would be wrong: stop here rather than serve it.
                            panic!("checkpoint part {what} of worker {index} does not decode: {e}");
                        }
                    }
                }
                let mut initial = Some(initial);
                move |(input, input_frontier), (control, control_frontier), output| {
                    let started = std::time::Instant::now();
                    if let Some(cap) = initial.take()
                        && restored
                    {
                        let mut session = output.session(&cap);
                        sums.finish(|item, slot, extra, sum, diff| {
                            session.give(((expander.key(item, slot, extra), sum.clone()), 0, diff));
                        });
                    }
                    let mut apply =
                        |cap: &Capability<Time>, ev: &SignalEv, mult: isize, pending: &mut Pending<_, _, _>| {
                            let time = *cap.time();
                            if ev.kind == RETIRE {
                                pending.retire(time, ev.item, ev.ts_eff, cap);
                                return;
                            }
                            expander.expand(ev, time, mult, &mut scratch, &mut clears);
                            for (at, update, diff) in scratch.drain(..) {
                                pending.push(at, time, update, diff, cap);
                            }
                            for (at, slot, extra) in clears.drain(..) {
                                pending.clear(at, slot, extra, cap);
                            }
                        };
                    input.for_each(|cap, data| {
                        let Some(first) = cap.retain_least(0) else { return };
                        let at_cap = *first.time();
                        for (ev, t, mult) in data.iter() {
                            // An update's own time, which may be after its container's (a
                            // join emits a membership change's moves at the change's time
                            // under an earlier capability): lanes closed by then are not
                            // opened, and rounds see it when it happens.
                            let later;
                            let (cap, time) = if *t > at_cap {
                                later = first.delayed(t);
                                (&later, *t)
                            } else {
                                (&first, at_cap)
                            };
                            if ev.kind == CHECKPOINT {
                                if checkpoint.is_some() {
                                    // One checkpoint at a time: this one waits its turn, with
                                    // what follows it.
                                    stash.push((cap.clone(), *ev, *mult));
                                    continue;
                                }
                                checkpoint = Some(checkpoint_of(ev));
                                // Rounds never span the checkpoint's frontier.
                                marks.insert(ev.ts_eff);
                                continue;
                            }
                            if checkpoint.is_some_and(|(f, _)| time >= f) {
                                stash.push((cap.clone(), *ev, *mult));
                                continue;
                            }
                            apply(cap, ev, *mult, &mut pending);
                        }
                    });
                    control.for_each(|_cap, data| {
                        for c in data.iter() {
                            if let Control::Mark { time, .. } = c {
                                marks.insert(*time);
                            }
                        }
                    });
                    // Every time before both frontiers is complete, and every mark before them
                    // has arrived (a mark is sent at or before its time).
                    let reached = [input_frontier, control_frontier]
                        .iter()
                        .map(|f| f.frontier().iter().min().copied().unwrap_or(Time::MAX))
                        .min()
                        .unwrap_or(Time::MAX);
                    loop {
                        while let Some(first) = pending.first().filter(|t| *t < reached) {
                            // The round spans every waiting time up to the next mark.
                            let bound = marks
                                .range(first + 1..)
                                .next()
                                .copied()
                                .unwrap_or(Time::MAX)
                                .min(reached);
                            let mut last_cap: Option<Capability<Time>> = None;
                            while let Some(at) = pending.first().filter(|t| *t < bound) {
                                let Some((_, mut due)) = pending.pop_first() else { break };
                                while let Some((&until, _)) = dead_until.first_key_value() {
                                    if until >= at {
                                        break;
                                    }
                                    for key in dead_until.pop_first().map(|(_, k)| k).unwrap_or_default() {
                                        if dead.get(&key) == Some(&until) {
                                            dead.remove(&key);
                                        }
                                    }
                                }
                                for (update, diff) in due.updates.drain(..) {
                                    let (item, slot, extra) = expander.locate(&update);
                                    if !dead.is_empty() && dead.contains_key(&item) {
                                        continue;
                                    }
                                    sums.update(item, slot, extra, |sum| expander.add(sum, &update, &diff));
                                }
                                for (slot, extra) in due.clears.drain(..) {
                                    sums.clear_extra(slot, extra);
                                }
                                // A retired item is zeroed after every update of its time (its key
                                // is never reused within the time that retired it).
                                for (item, clock_ms) in due.retires.drain(..) {
                                    sums.clear_item(item);
                                    if let Some(until) = expander.retired_until(clock_ms) {
                                        dead.insert(item, until);
                                        dead_until.entry(until).or_default().push(item);
                                    }
                                }
                                pending.recycle(due.updates);
                                last_cap = Some(due.cap);
                            }
                            let Some(cap) = last_cap else { break };
                            let at = *cap.time();
                            let mut session = output.session(&cap);
                            sums.finish(|item, slot, extra, sum, diff| {
                                session.give(((expander.key(item, slot, extra), sum.clone()), at, diff));
                            });
                        }
                        if let Some((frontier, position)) = checkpoint
                            && reached >= frontier
                            && pending.first().is_none_or(|t| t >= frontier)
                        {
                            // Every time before the frontier is applied, nothing after it is.
                            // The worker stands still while it streams the part out.
                            let began = std::time::Instant::now();
                            persist.write_with(index, what, frontier, position, &mut |w| {
                                save_state::<E>(&sums, &pending, &dead, w)
                            });
                            tracing::debug!(
                                worker = index,
                                part = what,
                                ms = began.elapsed().as_secs_f64() * 1e3,
                                "checkpoint part written"
                            );
                            checkpoint = None;
                            // What was held back goes in, in order, up to the next checkpoint
                            // held back (which holds back what follows it in turn).
                            for (cap, ev, mult) in std::mem::take(&mut stash) {
                                if ev.kind == CHECKPOINT && checkpoint.is_none() {
                                    checkpoint = Some(checkpoint_of(&ev));
                                    marks.insert(ev.ts_eff);
                                } else if checkpoint.is_some_and(|(f, _)| *cap.time() >= f)
                                    || (ev.kind == CHECKPOINT && checkpoint.is_some())
                                {
                                    stash.push((cap, ev, mult));
                                } else {
                                    apply(&cap, &ev, mult, &mut pending);
                                }
                            }
                            // What was held back may be complete already.
                            continue;
                        }
                        break;
                    }
                    marks = marks.split_off(&reached);
                    stats(SumStats {
                        sums: sums.len(),
                        pending: pending.held,
                        times: pending.times(),
                        retired: dead.len(),
                        started,
                    });
                }
            },
        )
        .as_collection()
}
