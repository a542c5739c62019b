//! Cohort rollups: the window counts of every (item, signal type) restricted to the signals
//! whose user belongs to a cohort as of `T` (SPEC §4), built with differential's own
//! operators.
//!
//! The signals with a user arrive from their items' owners as [`UserSig`]s. Each is kept in
//! an arrangement keyed by user for as long as any of its windows (including the `2W` lanes
//! of acceleration) is open: `+w` at its commit time, `−w` at the time its last lane closes
//! (the temporal-filter pattern; a signal whose lanes are all closed when it commits is never
//! kept). Differential's join (`join_traces`, the cursor join `join_core` wraps) with the
//! arranged memberships `(user, cohort)` of the users materializer gives
//! `(item, type, ts_eff, cohort)` with difference `±w`: a new signal of a member, a user
//! joining or leaving a cohort (an attribute change, a cohort declared or dropped, a user
//! deleted) — each at its own logical time, so an attribute change moves
//! exactly the user's in-window signals from one cohort to the other, and a cohort declared at
//! run time counts at once every signal still inside a window. The joined signals go back to
//! the items' owners and through the same window expansion as the global counts, one sum of
//! lanes per (item, type, cohort) (no `total` lane: cohort counts are window counts).

use std::num::Wrapping;
use std::sync::Arc;

use differential_dataflow::{AsCollection, VecCollection};
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::Exchange;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::vec::Map;

use differential_dataflow::batcher::merge::vec::VecMerger;
use differential_dataflow::batcher::merge::{Extractor, MergeBatcher, Merger};
use differential_dataflow::consolidation::ConsolidatingContainerBuilder;
use differential_dataflow::difference::Semigroup;
use differential_dataflow::operators::arrange::{Arranged, TraceAgent};
use differential_dataflow::operators::join::join_traces;
use differential_dataflow::trace::cursor::{Cursor as _, CursorList, cursor_list};
use differential_dataflow::trace::implementations::ValSpine;
use differential_dataflow::trace::implementations::{ContainerChunker, ValBuilder};
use differential_dataflow::trace::{Navigable, TraceReader};
use timely::PartialOrder;
use timely::container::PushInto;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::vec::Filter;
use timely::progress::frontier::{Antichain, AntichainRef};

use tidal_core::codec::{Cursor, DecodeError, put_u64, put_varint, put_zigzag};
use tidal_core::config::Config;
use tidal_core::features::{Lanes, window_end};
use tidal_core::flow::CHECKPOINT;
use tidal_core::flow::{CohortId, Control, ItemKey, KindIdx, Persist, UserKey, UserSig};
use tidal_core::record::Position;
use tidal_core::stats::{Stage, StateStats};
use tidal_core::time::{Time, time_at};

use crate::dense::SPILL;
use crate::sum::{Expander, keyed_sums};
use crate::windows::{add_masked, chained_follow_up, expand_lanes, retraction_span};
use crate::{KindSpec, SignalEv, Slices, kind_specs};

/// The key of one cohort's window lanes.
pub type CohortKey = (ItemKey, KindIdx, CohortId);

/// The current window lanes per (item, signal type, cohort) of this worker's items.
///
/// `sigs` are the signals with a user of this worker's items (as the entities stage emits
/// them), `memberships` the users materializer's output, `items` the entities stage's
/// signal collection (its retire events and checkpoint markers are what this takes from it).
pub fn cohort_rollups<'s>(
    sigs: StreamVec<'s, Time, UserSig>,
    memberships: VecCollection<'s, Time, (UserKey, CohortId), i64>,
    items: VecCollection<'s, Time, SignalEv, isize>,
    control: StreamVec<'s, Time, Control>,
    config: &Config,
    stats: Arc<StateStats>,
    persist: Persist,
) -> VecCollection<'s, Time, (CohortKey, Lanes), isize> {
    let specs = kind_specs(config);
    // The time a retained signal's last lane closes.
    let closes = {
        let specs = specs.clone();
        move |kind: KindIdx, ts_eff: u64| {
            time_at(specs.get(usize::from(kind)).map_or(0, |spec| last_close(spec, ts_eff)))
        }
    };
    let index = sigs.scope().index();
    // Each signal with a user, kept while one of its lanes is open. The retraction waits
    // here, under a capability for its time, until the input reaches that time: given to
    // the arrangement at once, it would sit in the arrangement's batcher for days, which
    // walks everything it holds at every mark (a fifth of a worker at 2M retained signals).
    let mut restored = persist.take_restored(index, "retained");
    let retained = sigs
        .unary_frontier::<timely::container::CapacityContainerBuilder<Vec<_>>, _, _, _>(
            Pipeline,
            "Retain",
            move |initial, _| {
                let mut initial = Some(initial);
                let mut waiting = Retractions::default();
                move |(input, frontier), output| {
                    if let Some(cap) = initial.take()
                        && let Some(bytes) = restored.take()
                    {
                        // The signals a checkpoint kept, at time 0 (their retractions wait);
                        // the part's bytes are let go once read.
                        let mut session = output.session(&cap);
                        if let Err(e) = load_retained(&bytes, |user, item, kind, ts_eff, w| {
                            let v = (user, (item, kind, ts_eff));
                            session.give((v, 0, w));
                            waiting.push(&cap, closes(kind, ts_eff).max(1), v, -w);
                        }) {
                            panic!("checkpoint part retained of worker {index} does not decode: {e}");
                        }
                    }
                    input.for_each(|cap, data| {
                        let Some(cap) = cap.retain_least(0) else { return };
                        let t = *cap.time();
                        let mut session = output.session(&cap);
                        for s in data.drain(..) {
                            let end = closes(s.kind, s.ts_eff);
                            if end > t {
                                let v = (s.user, (s.item, s.kind, s.ts_eff));
                                session.give((v, t, s.weight));
                                waiting.push(&cap, end, v, -s.weight);
                            }
                        }
                    });
                    // What the input has reached goes on (nothing before its time can come).
                    while let Some(entry) = waiting.by_time.first_entry() {
                        if frontier.frontier().iter().any(|f| f < entry.key()) {
                            break;
                        }
                        let (cap, updates) = entry.remove();
                        let t = *cap.time();
                        output
                            .session(&cap)
                            .give_iterator(updates.into_iter().map(|(v, w)| (v, t, w)));
                    }
                }
            },
        )
        .as_collection();
    let arranged = retained.arrange_named::<RetainedBatcher, _>("RetainedByUser", MergeBatcher::new);
    save_retained(
        arranged.clone(),
        items.inner.clone().filter(|(ev, _, _)| ev.kind == CHECKPOINT),
        persist.clone(),
    );
    // Differential's join (the cursor join `join_core` runs), with the time of each pair at
    // hand: what a restored checkpoint holds already (both sides are restored before its
    // frontier, at time 0) is counted there, so those pairs are never built — a restart at
    // 10M signals built and consolidated every (signal, cohort) pair only to drop it.
    let restored_before = persist.restore.as_ref().map_or(0, |r| r.frontier);
    let joined = join_traces::<_, _, _, _, ConsolidatingContainerBuilder<Vec<(Joined, Time, i64)>>>(
        arranged,
        memberships.arrange_by_key_named("Memberships"),
        "CohortJoin",
        move |_user: &UserKey,
              &(item, kind, ts_eff): &(ItemKey, KindIdx, u64),
              &cohort: &CohortId,
              t: Time,
              w1: &i64,
              w2: &i64,
              out: &mut ConsolidatingContainerBuilder<_>| {
            if t >= restored_before {
                out.push_into(((item, kind, ts_eff, cohort), t, w1 * w2));
            }
        },
    );
    let events = joined
        .map(|((item, kind, ts_eff, cohort), t, w): (Joined, Time, i64)| {
            let ev = SignalEv {
                item,
                kind,
                ts_eff,
                weight: w,
                user: cohort,
            };
            (ev, t, 1isize)
        })
        .exchange(|(ev, _, _): &(SignalEv, Time, isize)| ev.item)
        .as_collection()
        .concat(items.filter(|ev| ev.kind >= tidal_core::flow::CHECKPOINT));
    let span = retraction_span(&specs);
    let expander = CohortExpander { specs, span };
    keyed_sums(events, control, "Cohorts", "cohorts", expander, persist, move |s| {
        StateStats::set(&stats.cohort_sums, s.sums);
        StateStats::set(&stats.cohort_pending, s.pending);
        stats.busy(Stage::Cohorts, s.started);
    })
}

/// Writes the retained signals (their weight summed over the times before the checkpoint's
/// frontier) into checkpoint part `retained` at every checkpoint marker, reading the
/// arrangement's trace once it is complete up to the frontier. The retraction times are not
/// saved: they follow from each signal's type and `ts_eff`.
///
/// The worker does not stand still for it: it takes the trace's batches as they are at the
/// frontier (immutable; merges make new ones) and encodes a slice of them per activation,
/// a slice of its time each ([`Slices`]), handing the bytes to the checkpointer's thread as they
/// are made, until all are written. Once its inputs are done (the dataflow ends) it writes
/// the rest at once.
fn save_retained<'s>(
    arranged: Arranged<'s, RetainedTrace>,
    markers: StreamVec<'s, Time, (SignalEv, Time, isize)>,
    persist: Persist,
) {
    let scope = markers.scope();
    let index = scope.index();
    let mut trace = arranged.trace;
    let mut op = OperatorBuilder::new("SaveRetained".to_owned(), scope);
    let activator = scope.activator_for(op.operator_info().address);
    let mut batches = op.new_input(arranged.stream, Pipeline);
    let mut marks = op.new_input(markers, Pipeline);
    let mut pending: std::collections::VecDeque<(Time, Position)> = std::collections::VecDeque::new();
    let mut compacted: Time = 0;
    let mut streaming: Option<RetainedStream> = None;
    // Incomplete while a part is being written (the dataflow is not dropped under it).
    op.build_reschedule(move |_| {
        move |frontiers| {
            batches.for_each(|_, _| {});
            marks.for_each(|_, data| {
                for (ev, _, _) in data.iter() {
                    pending.push_back((
                        ev.ts_eff,
                        Position {
                            lsn: ev.item,
                            signals: ev.user,
                        },
                    ));
                }
            });
            let front = |i: usize| frontiers[i].frontier().iter().min().copied().unwrap_or(Time::MAX);
            let (arranged_to, marks_to) = (front(0), front(1));
            // With both inputs done the dataflow is about to end: no slice waits for later.
            let ending = arranged_to == Time::MAX && marks_to == Time::MAX;
            loop {
                if let Some(s) = streaming.as_mut() {
                    let until = (!ending).then(|| s.slices.until());
                    let done = s.step(until);
                    s.slices.ended();
                    if !done {
                        activator.activate();
                        break;
                    }
                    tracing::debug!(
                        worker = index,
                        signals = s.kept,
                        slices = s.slices.count,
                        ms = s.slices.spent.as_secs_f64() * 1e3,
                        "retained signals checkpointed"
                    );
                    streaming = None;
                }
                let Some(&(frontier, position)) = pending.front() else {
                    break;
                };
                if arranged_to < frontier {
                    break;
                }
                pending.pop_front();
                if !persist.writes() {
                    continue;
                }
                let batches = trace
                    .batches_through(timely::progress::frontier::AntichainRef::new(&[]))
                    .unwrap_or_default();
                let (cursor, storage) = cursor_list(batches);
                let (tx, rx) = std::sync::mpsc::channel::<Piece>();
                let fill = move |w: &mut dyn std::io::Write| {
                    for piece in rx {
                        match piece {
                            Piece::Bytes(bytes) => w.write_all(&bytes)?,
                            Piece::End => return Ok(()),
                        }
                    }
                    Err(std::io::Error::other("the retained signals stopped before their end"))
                };
                persist.write_later(index, "retained", frontier, position, Box::new(fill));
                streaming = Some(RetainedStream {
                    cursor,
                    storage,
                    frontier,
                    tx,
                    buf: Vec::with_capacity(SPILL + 64),
                    last_ts: 0,
                    kept: 0,
                    slices: Slices::new(),
                });
            }
            // What is compacted: the times before the arrangement's and the markers'
            // frontiers, never up to a checkpoint still to be read. Compaction to `c` shows an
            // earlier time as `c`, so for the times before a frontier `F` to stay before it,
            // `c < F`; a marker not received yet has `F` at or after the markers' frontier
            // (a marker may be sent at its own frontier). A part being written reads batches
            // taken before: compaction makes new ones and leaves those as they are.
            let to = arranged_to
                .min(marks_to)
                .min(pending.front().map_or(Time::MAX, |p| p.0))
                .saturating_sub(1);
            if to > compacted {
                compacted = to;
                let f = [to];
                trace.set_logical_compaction(timely::progress::frontier::AntichainRef::new(&f));
                trace.set_physical_compaction(timely::progress::frontier::AntichainRef::new(&f));
            }
            streaming.is_some()
        }
    });
}

/// Users encoded between two looks at the clock.
const USERS_PER_LOOK: u32 = if cfg!(debug_assertions) { 1 } else { 256 };

/// What the worker hands the checkpointer's thread for the retained part.
enum Piece {
    Bytes(Vec<u8>),
    /// Everything is sent (without it the part is incomplete and fails).
    End,
}

type RetainedBatch = <RetainedTrace as TraceReader>::Batch;

/// The retained part of one checkpoint being encoded, a slice at a time.
struct RetainedStream {
    cursor: CursorList<<RetainedBatch as Navigable>::Cursor>,
    storage: Vec<RetainedBatch>,
    frontier: Time,
    tx: std::sync::mpsc::Sender<Piece>,
    buf: Vec<u8>,
    last_ts: u64,
    kept: u64,
    slices: Slices,
}

impl RetainedStream {
    /// Encodes users' signals until `until` (or all of them): a record per signal behind a
    /// tag byte (1: the previous record's user; 2: a new user, its key follows), then a 0.
    /// Item and type are varints, `ts_eff` the difference from the previous record's, the
    /// weight a zigzag varint. True once everything is handed over (or the checkpointer no
    /// longer takes it).
    fn step(&mut self, until: Option<std::time::Instant>) -> bool {
        let (cursor, storage, frontier) = (&mut self.cursor, &self.storage, self.frontier);
        let mut users = 0u32;
        while cursor.key_valid(storage) {
            let user = *cursor.key(storage);
            let mut named = false;
            while cursor.val_valid(storage) {
                let (item, kind, ts_eff) = *cursor.val(storage);
                let mut w = 0i64;
                cursor.map_times(storage, |t, d| {
                    if *t < frontier {
                        w = w.wrapping_add(*d);
                    }
                });
                if w != 0 {
                    if named {
                        self.buf.push(1);
                    } else {
                        self.buf.push(2);
                        put_u64(&mut self.buf, user);
                        named = true;
                    }
                    put_varint(&mut self.buf, item);
                    put_varint(&mut self.buf, u64::from(kind));
                    put_zigzag(&mut self.buf, ts_eff.wrapping_sub(self.last_ts) as i64);
                    self.last_ts = ts_eff;
                    put_zigzag(&mut self.buf, w);
                    self.kept += 1;
                }
                cursor.step_val(storage);
            }
            cursor.step_key(storage);
            if self.buf.len() >= SPILL {
                let full = std::mem::replace(&mut self.buf, Vec::with_capacity(SPILL + 64));
                if self.tx.send(Piece::Bytes(full)).is_err() {
                    return true;
                }
            }
            users += 1;
            if users.is_multiple_of(USERS_PER_LOOK) && until.is_some_and(|u| std::time::Instant::now() >= u) {
                return false;
            }
        }
        self.buf.push(0);
        let last = std::mem::take(&mut self.buf);
        let _ = self.tx.send(Piece::Bytes(last)).and_then(|()| self.tx.send(Piece::End));
        true
    }
}

/// Reads what [`save_retained`] wrote: `(user, item, type, ts_eff, weight)` per signal.
fn load_retained(bytes: &[u8], mut each: impl FnMut(UserKey, ItemKey, KindIdx, u64, i64)) -> Result<(), DecodeError> {
    let mut c = Cursor::new(bytes);
    let (mut user, mut last_ts) = (None, 0u64);
    loop {
        match c.u8("retained")? {
            0 => break,
            1 => {}
            2 => user = Some(c.u64("user")?),
            tag => {
                return Err(DecodeError::OutOfRange {
                    what: "retained",
                    value: u64::from(tag),
                });
            }
        }
        let Some(user) = user else {
            return Err(DecodeError::OutOfRange {
                what: "retained user",
                value: 1,
            });
        };
        let item = c.varint("item")?;
        let kind = c.varint("kind")?;
        let kind = KindIdx::try_from(kind).map_err(|_| DecodeError::OutOfRange {
            what: "kind",
            value: kind,
        })?;
        let ts_eff = last_ts.wrapping_add(c.zigzag("ts_eff")? as u64);
        last_ts = ts_eff;
        let w = c.zigzag("weight")?;
        each(user, item, kind, ts_eff, w);
    }
    c.finish()
}

/// The retained signals' batcher: differential's own, but for chains laid end to end when
/// their updates do not overlap ([`RunMerger`]).
type RetainedBatcher = MergeBatcher<
    ContainerChunker<Vec<(Retained, Time, i64)>>,
    RunMerger<Retained, Time, i64>,
    ValBuilder<UserKey, (ItemKey, KindIdx, u64), Time, i64>,
>;

/// Differential's merger of vector chains, except that two chains whose updates do not
/// overlap are laid end to end instead of merged update by update, and a chunk whose updates
/// are all ready is handed on whole. A restore hands the arrangement its retained signals in
/// key order (the checkpoint walked the trace), at time 0: the batcher's geometric ladder
/// otherwise moved each of them about a dozen times, and its extraction once more (~3 s of
/// a restart at 10M signals).
struct RunMerger<D, T, R>(VecMerger<D, T, R>);

impl<D, T, R> Default for RunMerger<D, T, R> {
    fn default() -> Self {
        RunMerger(VecMerger::default())
    }
}

/// Whether every update of `before` comes strictly before every update of `after`.
fn ends_before<D: Ord, T: Ord, R>(before: &[Vec<(D, T, R)>], after: &[Vec<(D, T, R)>]) -> bool {
    let last = before.iter().rev().find_map(|c| c.last());
    let first = after.iter().find_map(|c| c.first());
    match (last, first) {
        (Some((d1, t1, _)), Some((d2, t2, _))) => (d1, t1) < (d2, t2),
        // An empty chain goes anywhere.
        _ => true,
    }
}

impl<D, T, R> Merger for RunMerger<D, T, R>
where
    D: Ord + Clone + 'static,
    T: Ord + Clone + PartialOrder + 'static,
    R: Semigroup + 'static,
{
    type Chunk = Vec<(D, T, R)>;

    fn merge(
        &mut self,
        list1: Vec<Self::Chunk>,
        list2: Vec<Self::Chunk>,
        output: &mut Vec<Self::Chunk>,
        stash: &mut Vec<Self::Chunk>,
    ) {
        if ends_before(&list1, &list2) {
            output.extend(list1.into_iter().filter(|c| !c.is_empty()));
            output.extend(list2.into_iter().filter(|c| !c.is_empty()));
        } else if ends_before(&list2, &list1) {
            output.extend(list2.into_iter().filter(|c| !c.is_empty()));
            output.extend(list1.into_iter().filter(|c| !c.is_empty()));
        } else {
            self.0.merge(list1, list2, output, stash);
        }
    }

    fn len(chunk: &Self::Chunk) -> usize {
        chunk.len()
    }
}

impl<D, T, R> Extractor for RunMerger<D, T, R>
where
    D: Ord + Clone + 'static,
    T: Ord + Clone + PartialOrder + 'static,
    R: Semigroup + 'static,
{
    type Time = T;

    fn extract(
        &mut self,
        merged: Vec<Self::Chunk>,
        upper: AntichainRef<T>,
        frontier: &mut Antichain<T>,
        readied: &mut Vec<Self::Chunk>,
        kept: &mut Vec<Self::Chunk>,
        stash: &mut Vec<Self::Chunk>,
    ) {
        // A chunk all of whose updates are ready goes as it is (a restore's are, at time 0);
        // the others are split update by update, in order.
        for chunk in merged {
            if chunk.iter().all(|(_, t, _)| !upper.less_equal(t)) {
                if !chunk.is_empty() {
                    readied.push(chunk);
                }
            } else {
                self.0.extract(vec![chunk], upper, frontier, readied, kept, stash);
            }
        }
    }
}

/// A signal joined with one of its user's cohorts: item, type, `ts_eff`, cohort.
type Joined = (ItemKey, KindIdx, u64, CohortId);

/// The arrangement of the retained signals by user.
type RetainedTrace = TraceAgent<ValSpine<UserKey, (ItemKey, KindIdx, u64), Time, i64>>;

/// A retained signal: its user, then item, type and `ts_eff`.
type Retained = (UserKey, (ItemKey, KindIdx, u64));

/// The retractions due at one time, under a capability for it.
type Due = (Capability<Time>, Vec<(Retained, i64)>);

/// Retractions of retained signals waiting for their time.
#[derive(Default)]
struct Retractions {
    by_time: std::collections::BTreeMap<Time, Due>,
}

impl Retractions {
    /// Holds `−w` of `v` for time `at` (at or after `cap`'s time).
    fn push(&mut self, cap: &Capability<Time>, at: Time, v: Retained, w: i64) {
        self.by_time
            .entry(at)
            .or_insert_with(|| (cap.delayed(&at), Vec::new()))
            .1
            .push((v, w));
    }
}

/// The clock (ms) at which the last lane of a signal of this type with `ts_eff` closes.
fn last_close(spec: &KindSpec, ts_eff: u64) -> u64 {
    spec.windows()
        .iter()
        .map(|&(size, g)| window_end(ts_eff, size.saturating_mul(2), g))
        .max()
        .unwrap_or(0)
}

/// A waiting cohort lane update: (item, type, lane mask) and the cohort.
type CohortUpdate = ((ItemKey, KindIdx, u16), CohortId);

struct CohortExpander {
    specs: Vec<KindSpec>,
    span: u64,
}

impl Expander for CohortExpander {
    type Key = CohortKey;
    type Sum = Lanes;
    type Extra = CohortId;
    type Pending = CohortUpdate;
    type Diff = Wrapping<i64>;

    fn slots(&self) -> usize {
        self.specs.len()
    }

    fn expand(
        &self,
        ev: &SignalEv,
        time: Time,
        mult: isize,
        out: &mut Vec<(Time, CohortUpdate, Wrapping<i64>)>,
        _clears: &mut Vec<(Time, usize, CohortId)>,
    ) {
        if let Some(spec) = self.specs.get(usize::from(ev.kind)) {
            expand_lanes(spec, ev, time, mult, false, |at, mask, w| {
                out.push((at, ((ev.item, ev.kind, mask), ev.user), Wrapping(w)))
            });
        }
    }

    fn retired_until(&self, clock_ms: u64) -> Option<Time> {
        Some(time_at(clock_ms.saturating_add(self.span)))
    }

    fn follow_up(
        &self,
        at: Time,
        &((item, kind, mask), cohort): &CohortUpdate,
        diff: &Wrapping<i64>,
        out: &mut Vec<(Time, CohortUpdate, Wrapping<i64>)>,
    ) {
        if let Some(spec) = self.specs.get(usize::from(kind)) {
            chained_follow_up(spec, at, mask, |t, m| out.push((t, ((item, kind, m), cohort), *diff)));
        }
    }

    fn locate(&self, &((item, kind, _), cohort): &CohortUpdate) -> (ItemKey, usize, CohortId) {
        (item, usize::from(kind), cohort)
    }

    fn add(&self, lanes: &mut Lanes, &((_, _, mask), _): &CohortUpdate, diff: &Wrapping<i64>) {
        add_masked(lanes, mask, diff.0);
    }

    fn key(&self, item: ItemKey, slot: usize, cohort: CohortId) -> CohortKey {
        (item, slot as KindIdx, cohort)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    type Update = (u64, u64, i64);
    /// An update as the batcher holds it.
    type Held = ((u64, ()), u64, i64);

    /// A sorted, consolidated chain of `updates` in chunks of `size`.
    fn chain(mut updates: Vec<Update>, size: usize) -> Vec<Vec<Held>> {
        updates.sort_unstable();
        updates.dedup_by(|b, a| {
            let same = (a.0, a.1) == (b.0, b.1);
            if same {
                a.2 += b.2;
            }
            same
        });
        updates.retain(|u| u.2 != 0);
        let all: Vec<_> = updates.into_iter().map(|(d, t, r)| ((d, ()), t, r)).collect();
        all.chunks(size.max(1)).map(<[_]>::to_vec).collect()
    }

    fn flat(chains: &[Vec<Held>]) -> Vec<Held> {
        chains.iter().flatten().copied().collect()
    }

    proptest! {
        /// Laid end to end or merged, and split whole or update by update, two chains give
        /// what differential's own merger gives: chains that do not overlap (a restore's, in
        /// key order) and chains that do.
        #[test]
        fn run_merger_agrees_with_differentials(
            a in prop::collection::vec((0u64..50, 0u64..4, -2i64..3), 0..40),
            b in prop::collection::vec((0u64..50, 0u64..4, -2i64..3), 0..40),
            apart in any::<bool>(),
            size in 1usize..6,
            upper in 0u64..5,
        ) {
            // Apart: every update of `b` after every one of `a`.
            let b: Vec<Update> = if apart { b.into_iter().map(|(d, t, r)| (d + 100, t, r)).collect() } else { b };
            let (ca, cb) = (chain(a, size), chain(b, size));
            let (mut ours, mut theirs) = (RunMerger::default(), VecMerger::default());
            let (mut out1, mut out2) = (Vec::new(), Vec::new());
            ours.merge(cb.clone(), ca.clone(), &mut out1, &mut Vec::new());
            theirs.merge(cb, ca, &mut out2, &mut Vec::new());
            prop_assert_eq!(flat(&out1), flat(&out2));
            let upper = Antichain::from_elem(upper);
            let mut got = (Antichain::new(), Vec::new(), Vec::new());
            let mut want = (Antichain::new(), Vec::new(), Vec::new());
            ours.extract(out1, upper.borrow(), &mut got.0, &mut got.1, &mut got.2, &mut Vec::new());
            theirs.extract(out2, upper.borrow(), &mut want.0, &mut want.1, &mut want.2, &mut Vec::new());
            prop_assert_eq!(got.0, want.0);
            prop_assert_eq!(flat(&got.1), flat(&want.1));
            prop_assert_eq!(flat(&got.2), flat(&want.2));
        }
    }
}
