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
use crate::background::decoding;
use crate::dense::{DenseSums, SPILL, SumsSnapshot};
use crate::pending::{self, Pending};

/// How a materializer turns one event into updates of its sums.
pub(crate) trait Expander: 'static {
    /// The key of a sum in the output.
    type Key: Clone + 'static;
    /// The sum.
    type Sum: Clone + Default + PartialEq + IsZero + Codec + Send + Sync + 'static;
    /// What tells apart the sums of one (item, slot).
    type Extra: Copy + Eq + std::hash::Hash + Codec + Send + Sync + 'static;
    /// An update as held while it waits (compact; ordered for consolidation).
    type Pending: pending::Packed + Clone + Codec + Send + Sync + 'static;
    /// An update's diff as held while it waits.
    type Diff: Semigroup + Codec + Send + Sync + 'static;

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

    /// What a waiting update due at `at` schedules once applied, each at a time after `at`
    /// (a window's `count_2W` retraction after its `count_W` one); nothing by default.
    fn follow_up(
        &self,
        _at: Time,
        _pending: &Self::Pending,
        _diff: &Self::Diff,
        _out: &mut Vec<(Time, Self::Pending, Self::Diff)>,
    ) {
    }

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

/// A keyed sum's sums and retired items as of a checkpoint's frontier, written into its
/// checkpoint part through `w`, a buffer of [`SPILL`] bytes at a time (the part is never held
/// whole in memory), on the checkpointer's thread. The updates waiting for later times go
/// into a part of their own ([`pending_part`]).
fn save_sums<X: Codec + Clone, S: Codec + Clone>(
    sums: &SumsSnapshot<X, S>,
    dead: &[(ItemKey, Time)],
    w: &mut dyn std::io::Write,
) -> std::io::Result<()> {
    spilled(w, |out, spill| {
        sums.save(out, spill)?;
        put_u64(out, dead.len() as u64);
        for (k, until) in dead {
            put_u64(out, *k);
            put_u64(out, *until);
        }
        Ok(())
    })
}

/// Runs `encode` with a buffer it hands to `spill` whenever it holds [`SPILL`] bytes, which
/// writes them into `w`; what is left is written at the end.
fn spilled(
    w: &mut dyn std::io::Write,
    encode: impl FnOnce(&mut Vec<u8>, &mut dyn FnMut(&mut Vec<u8>) -> std::io::Result<()>) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let mut out = Vec::with_capacity(SPILL + 4096);
    let mut spill = |out: &mut Vec<u8>| -> std::io::Result<()> {
        w.write_all(out)?;
        out.clear();
        Ok(())
    };
    encode(&mut out, &mut spill)?;
    spill(&mut out)
}

/// The name of the part holding a keyed sum's waiting updates.
fn pending_part(what: &str) -> String {
    format!("{what}-pending")
}

/// What a keyed sum's sums part holds: the sums and the retired items.
type RestoredSums<E> = (
    DenseSums<<E as Expander>::Extra, <E as Expander>::Sum>,
    Vec<(ItemKey, Time)>,
);

/// Reads back the sums part into `sums`.
fn load_sums<E: Expander>(bytes: &[u8], mut sums: DenseSums<E::Extra, E::Sum>) -> Result<RestoredSums<E>, DecodeError> {
    let mut c = Cursor::new(bytes);
    sums.load(&mut c)?;
    let mut dead = Vec::new();
    for _ in 0..c.u64("retired")? {
        dead.push((c.u64("item")?, c.u64("until")?));
    }
    c.finish()?;
    Ok((sums, dead))
}

/// A keyed sum's waiting updates read back, before they have capabilities.
type DecodedOf<E> = pending::Decoded<<E as Expander>::Pending, <E as Expander>::Diff, <E as Expander>::Extra>;

/// Reads back the sums part and the waiting updates' part (which must be there with it), off
/// the worker.
fn load_restored<E: Expander>(
    sums: &[u8],
    waiting: &[u8],
    empty: DenseSums<E::Extra, E::Sum>,
) -> Result<(RestoredSums<E>, DecodedOf<E>), DecodeError> {
    let restored = load_sums::<E>(sums, empty)?;
    let mut c = Cursor::new(waiting);
    let decoded = pending::decode(&mut c)?;
    c.finish()?;
    Ok((restored, decoded))
}

/// Updates due at one time from which on they are consolidated before they are applied.
const CONSOLIDATE_BEFORE_APPLY: usize = 1 << 14;

/// Events waiting for their time to complete, with a capability for that time.
type Held = (Capability<Time>, Vec<(SignalEv, isize)>);

/// Events applied per activation at most: a large time's (a catch-up's) go a slice at a
/// time, and the worker runs the other operators in between (the users' views of it,
/// applied beside the worker, reach the sink meanwhile). Debug builds (the tests) yield after
/// a few dozen, so that the path is checked.
const FUEL: usize = if cfg!(debug_assertions) { 40 } else { 1 << 17 };

/// A keyed sum's state between activations: the sums, the updates waiting for their times,
/// the marks that delimit rounds and the retired items.
struct State<E: Expander> {
    expander: E,
    sums: DenseSums<E::Extra, E::Sum>,
    pending: Pending<E::Pending, E::Diff, E::Extra>,
    marks: BTreeSet<Time>,
    /// Retired items: key -> the last time their pending updates are ignored.
    dead: HashMap<ItemKey, Time>,
    dead_until: BTreeMap<Time, Vec<ItemKey>>,
    scratch: Vec<(Time, E::Pending, E::Diff)>,
    clears: Vec<(Time, usize, E::Extra)>,
}

impl<E: Expander> State<E> {
    /// Expands one event committed at `cap`'s time into waiting updates.
    fn apply(&mut self, cap: &Capability<Time>, ev: &SignalEv, mult: isize) {
        let time = *cap.time();
        if ev.kind == RETIRE {
            self.pending.retire(time, ev.item, ev.ts_eff, cap);
            return;
        }
        self.expander
            .expand(ev, time, mult, &mut self.scratch, &mut self.clears);
        for (at, update, diff) in self.scratch.drain(..) {
            self.pending.push(at, time, update, diff, cap);
        }
        for (at, slot, extra) in self.clears.drain(..) {
            self.pending.clear(at, slot, extra, cap);
        }
    }

    /// Applies every waiting update due before `bound`, one round per stretch between marks,
    /// and hands each round's capability and changed sums to `emit`.
    fn rounds(&mut self, bound: Time, emit: &mut impl FnMut(&Capability<Time>, &E, &mut DenseSums<E::Extra, E::Sum>)) {
        while let Some(first) = self.pending.first().filter(|t| *t < bound) {
            // The round spans every waiting time up to the next mark.
            let end = self
                .marks
                .range(first + 1..)
                .next()
                .copied()
                .unwrap_or(Time::MAX)
                .min(bound);
            let mut last_cap: Option<Capability<Time>> = None;
            while let Some(at) = self.pending.first().filter(|t| *t < end) {
                let Some((_, mut due)) = self.pending.pop_first() else {
                    break;
                };
                while let Some((&until, _)) = self.dead_until.first_key_value() {
                    if until >= at {
                        break;
                    }
                    for key in self.dead_until.pop_first().map(|(_, k)| k).unwrap_or_default() {
                        if self.dead.get(&key) == Some(&until) {
                            self.dead.remove(&key);
                        }
                    }
                }
                // A large time (a catch-up's run) is consolidated first: the updates of one
                // sum fold into one, and the rest reach the sums in key order.
                if due.updates.len() >= CONSOLIDATE_BEFORE_APPLY {
                    due.consolidate();
                }
                // Read in place (a checkpoint's snapshot may still hold the frozen ones).
                for (update, diff) in due.updates.iter().chain(due.frozen.iter().flat_map(|f| f.iter())) {
                    let (item, slot, extra) = self.expander.locate(update);
                    if !self.dead.is_empty() && self.dead.contains_key(&item) {
                        continue;
                    }
                    let expander = &self.expander;
                    expander.follow_up(at, update, diff, &mut self.scratch);
                    self.sums
                        .update(item, slot, extra, |sum| expander.add(sum, update, diff));
                }
                // What they schedule waits for its own time (later than this one: a round
                // reaching it applies it in order).
                for (later, update, diff) in self.scratch.drain(..) {
                    self.pending.push(later, at, update, diff, &due.cap);
                }
                for (slot, extra) in due.clears.drain(..) {
                    self.sums.clear_extra(slot, extra);
                }
                // A retired item is zeroed after every update of its time (its key is never
                // reused within the time that retired it).
                for (item, clock_ms) in due.retires.drain(..) {
                    self.sums.clear_item(item);
                    if let Some(until) = self.expander.retired_until(clock_ms) {
                        self.dead.insert(item, until);
                        self.dead_until.entry(until).or_default().push(item);
                    }
                }
                self.pending.recycle(due.updates);
                last_cap = Some(due.cap);
            }
            let Some(cap) = last_cap else { break };
            emit(&cap, &self.expander, &mut self.sums);
        }
    }
}

/// The current sum per key of everything `expander` makes of `signals`, as a collection.
/// `control` is the broadcast control stream (its marks delimit the rounds); `stats` is told
/// the state's size after every activation. With `persist`, the state is restored from a
/// checkpoint part named `what` and written into one at every checkpoint marker.
///
/// Events are applied in time order, each time once it is complete: a round emitted at a time
/// is never followed by one at an earlier time (the sink applies each time's changes as a
/// replacement of the values before it), and a checkpoint at frontier `f` is written exactly
/// between the times before `f` and those after, whatever order its marker and the events
/// around it arrive in.
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
            move |initial, info| {
                let slots = expander.slots();
                let mut state = State {
                    expander,
                    sums: DenseSums::new(peers, index, slots),
                    pending: Pending::new(),
                    marks: BTreeSet::new(),
                    dead: HashMap::new(),
                    dead_until: BTreeMap::new(),
                    scratch: Vec::new(),
                    clears: Vec::new(),
                };
                // Events by time, each time with a capability for it, until the time is
                // complete; checkpoints asked for (frontier -> position) and not written yet.
                let mut held: BTreeMap<Time, Held> = BTreeMap::new();
                let mut checkpoints: BTreeMap<Time, Position> = BTreeMap::new();
                // A restored sums part and its waiting updates decode on a thread of their
                // own; they are taken in the first activation after, the waiting updates put
                // under the initial capability and the sums emitted (at time 0).
                let woken = scope.worker().sync_activator_for(info.address.to_vec());
                // To come back to a large time's events after letting the others run.
                let again = scope.activator_for(info.address.clone());
                // How many of the first held time's events are applied already.
                let mut applied = 0usize;
                // A sums part without its waiting updates fails to decode (below).
                let waiting = persist.take_restored(index, &pending_part(what)).unwrap_or_default();
                let decode =
                    move |bytes: Vec<u8>| load_restored::<E>(&bytes, &waiting, DenseSums::new(peers, index, slots));
                let mut restoring = decoding(&persist, index, what, woken, decode);
                let mut initial = Some(initial);
                move |(input, input_frontier), (control, control_frontier), output| {
                    // A restored part not decoded yet: the other operators run meanwhile (its
                    // thread activates this one when it is ready).
                    if restoring.as_mut().is_some_and(|r| !r.ready()) {
                        return;
                    }
                    let started = std::time::Instant::now();
                    let mut emit = |cap: &Capability<Time>, expander: &E, sums: &mut DenseSums<E::Extra, E::Sum>| {
                        let at = *cap.time();
                        let mut session = output.session(cap);
                        sums.finish(|item, slot, extra, sum, diff| {
                            session.give(((expander.key(item, slot, extra), sum.clone()), at, diff));
                        });
                    };
                    if let Some(cap) = initial.take()
                        && let Some(restored) = restoring.take()
                    {
                        let mut pending = Pending::new();
                        match restored
                            .take()
                            .and_then(|((s, d), p)| pending.adopt(p, &cap).map(|()| (s, d)))
                        {
                            Ok((s, d)) => {
                                (state.sums, state.pending) = (s, pending);
                                for (k, until) in d {
                                    state.dead.insert(k, until);
                                    state.dead_until.entry(until).or_default().push(k);
                                }
                            }
                            Err(e) => {
                                // A checked checkpoint does not fail to decode; were it to,
                                // the state would be wrong: stop here rather than serve it.
                                panic!("checkpoint part {what} of worker {index} does not decode: {e}");
                            }
                        }
                        emit(&cap, &state.expander, &mut state.sums);
                    }
                    input.for_each(|cap, data| {
                        let Some(first) = cap.retain_least(0) else { return };
                        let at_cap = *first.time();
                        for (ev, t, mult) in data.drain(..) {
                            // An update's own time, which may be after its container's (a join
                            // emits a membership change's moves at the change's time under an
                            // earlier capability): lanes closed by then are not opened, and
                            // rounds see it when it happens.
                            let t = t.max(at_cap);
                            if ev.kind == CHECKPOINT {
                                // The state before its frontier: no event at or after it is
                                // applied (each waits for its time to complete, and the marker
                                // comes at or before its frontier) until the part is written.
                                let (frontier, position) = checkpoint_of(&ev);
                                checkpoints.insert(frontier, position);
                                continue;
                            }
                            held.entry(t)
                                .or_insert_with(|| (first.delayed(&t), Vec::new()))
                                .1
                                .push((ev, mult));
                        }
                    });
                    control.for_each(|_cap, data| {
                        for c in data.iter() {
                            if let Control::Mark { time, .. } = c {
                                state.marks.insert(*time);
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
                    // Writes the checkpoints at frontiers up to `upto`: each once every time
                    // before its frontier is applied (the events before `upto` are).
                    let write =
                        |state: &mut State<E>, checkpoints: &mut BTreeMap<Time, Position>, upto: Time, emit: &mut _| {
                            while let Some(entry) = checkpoints.first_entry() {
                                let frontier = *entry.key();
                                if frontier > upto {
                                    break;
                                }
                                let position = entry.remove();
                                state.rounds(frontier, emit);
                                if !persist.writes() {
                                    continue;
                                }
                                // The worker only takes snapshots (the sums' chunks and the
                                // waiting updates' vectors shared, not copied); the parts are
                                // encoded from them on the checkpointer's thread.
                                let sums = state.sums.snapshot();
                                let dead: Vec<(ItemKey, Time)> = state.dead.iter().map(|(k, t)| (*k, *t)).collect();
                                let fill = move |w: &mut dyn std::io::Write| save_sums(&sums, &dead, w);
                                persist.write_later(index, what, frontier, position, Box::new(fill));
                                let snapshot = state.pending.snapshot();
                                let fill = move |w: &mut dyn std::io::Write| {
                                    spilled(w, |out, spill| snapshot.save(out, spill))
                                };
                                persist.write_later(index, &pending_part(what), frontier, position, Box::new(fill));
                            }
                        };
                    // A large time's events are applied a slice per activation, so that the
                    // worker runs the other operators in between (the users' views of a
                    // catch-up, applied beside the worker, go to the sink meanwhile).
                    let mut fuel = FUEL;
                    let mut yielded = false;
                    while let Some(mut entry) = held.first_entry() {
                        let t = *entry.key();
                        if t >= reached {
                            break;
                        }
                        if fuel == 0 {
                            again.activate();
                            yielded = true;
                            break;
                        }
                        if applied == 0 {
                            write(&mut state, &mut checkpoints, t, &mut emit);
                        }
                        let (cap, events) = entry.get_mut();
                        let end = events.len().min(applied + fuel);
                        for (ev, mult) in &events[applied..end] {
                            state.apply(cap, ev, *mult);
                        }
                        fuel -= end - applied;
                        if end < events.len() {
                            applied = end;
                            continue;
                        }
                        applied = 0;
                        entry.remove();
                    }
                    // Every event before `reached` is applied (unless the worker was let go
                    // first): what comes due before it too, with the checkpoints it reaches
                    // written on the way.
                    if !yielded {
                        write(&mut state, &mut checkpoints, reached, &mut emit);
                        let bound = checkpoints
                            .first_key_value()
                            .map_or(reached, |(f, _)| (*f).min(reached));
                        state.rounds(bound, &mut emit);
                        state.marks = state.marks.split_off(&reached);
                    }
                    stats(SumStats {
                        sums: state.sums.len(),
                        pending: state.pending.held,
                        times: state.pending.times(),
                        retired: state.dead.len(),
                        started,
                    });
                }
            },
        )
        .as_collection()
}
