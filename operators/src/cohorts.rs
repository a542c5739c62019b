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

use differential_dataflow::batcher::merge::MergeBatcher;
use differential_dataflow::consolidation::ConsolidatingContainerBuilder;
use differential_dataflow::operators::arrange::TraceAgent;
use differential_dataflow::operators::join::join_traces;
use differential_dataflow::trace::implementations::ord_neu::OrdValBatch;
use differential_dataflow::trace::implementations::spine_fueled::Spine;
use differential_dataflow::trace::implementations::{ContainerChunker, ValBuilder, ValSpine, Vector};
use timely::container::PushInto;
use timely::dataflow::operators::vec::Filter;

use tidal_core::config::Config;
use tidal_core::features::{Lanes, window_end};
use tidal_core::flow::CHECKPOINT;
use tidal_core::flow::{CohortId, Control, ItemKey, KindIdx, Persist, UserKey, UserSig};
use tidal_core::stats::{Stage, StateStats};
use tidal_core::time::{Time, time_at};

use crate::merger::RunMerger;
use crate::sum::{Expander, keyed_sums};
use crate::windows::{add_masked, chained_follow_up, expand_lanes, retraction_span};
use crate::{KindSpec, SignalEv, kind_specs};

mod checkpoint;
mod shared;

use checkpoint::{load_retained, save_retained};
use shared::Shared;

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
        memberships.arrange_named::<MembershipBatcher, ValSpine<UserKey, CohortId, Time, i64>>(
            "Memberships",
            MergeBatcher::new,
        ),
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

/// The retained signals' batcher: differential's own, but for chains laid end to end when
/// their updates do not overlap ([`RunMerger`]).
type RetainedBatcher = MergeBatcher<
    ContainerChunker<Vec<(Retained, Time, i64)>>,
    RunMerger<Retained, Time, i64>,
    ValBuilder<UserKey, (ItemKey, KindIdx, u64), Time, i64>,
>;

/// The memberships' batcher: differential's own, but for chains laid end to end when their
/// updates do not overlap ([`RunMerger`]). A restore hands it every user's memberships at
/// time 0 in key order (sorted on the users' decoding thread): merged update by update, the
/// million users' memberships took the worker ~1 s of a restart.
type MembershipBatcher = MergeBatcher<
    ContainerChunker<Vec<((UserKey, CohortId), Time, i64)>>,
    RunMerger<(UserKey, CohortId), Time, i64>,
    ValBuilder<UserKey, CohortId, Time, i64>,
>;

/// A signal joined with one of its user's cohorts: item, type, `ts_eff`, cohort.
type Joined = (ItemKey, KindIdx, u64, CohortId);

/// The arrangement of the retained signals by user: differential's value spine, its batches
/// shared across threads ([`Shared`]) for a checkpoint to encode them off the worker.
type RetainedTrace = TraceAgent<Spine<Shared<OrdValBatch<Vector<(Retained, Time, i64)>>>>>;

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
