//! The windows materializer: per (item, signal type) it maintains one [`Lanes`] value holding
//! `count_W` and `count_2W` for every declared window and the all-time `total` (SPEC §3:
//! `count_W(T)` sums the weights of signals with `T_commit ≤ T` and
//! `floor(ts_eff/g)·g + W > T`). It is a temporal filter: an event adds its weight to every
//! lane still open at its commit time and schedules, at the logical time where a window closes
//! (`time_at(window_end)`), the retraction of the lanes that close then; lanes closing at the
//! same time share one update. Cost per event: one exchange of the event, at most
//! `1 + 2·windows` updates (fewer for late events, whose past retractions are folded into the
//! insertion), each an O(1) array change of one running sum when its time completes. Pending
//! state is bounded by keys × distinct bucket ends, since closes are rounded to granularity `g`.

use std::num::Wrapping;

use std::sync::Arc;

use differential_dataflow::VecCollection;
use timely::dataflow::StreamVec;

use tidal_core::config::{Config, MAX_WINDOWS};
use tidal_core::features::{Lanes, TOTAL_LANE, window_end};
use tidal_core::flow::{Control, ItemKey, KindIdx, Persist};
use tidal_core::stats::{Stage, StateStats};
use tidal_core::time::{Time, clock_of, time_at};

use crate::sum::{Expander, keyed_sums};
use crate::{KindSpec, SignalEv, kind_specs};

/// The current window lanes of every (item, signal type) with a non-zero lane: `+1` for its
/// new value, `-1` for the old one, at each logical time it changes.
pub fn windows<'s>(
    signals: VecCollection<'s, Time, SignalEv, isize>,
    control: StreamVec<'s, Time, Control>,
    config: &Config,
    stats: Arc<StateStats>,
    persist: Persist,
) -> VecCollection<'s, Time, ((ItemKey, KindIdx), Lanes), isize> {
    let specs = kind_specs(config);
    let span = retraction_span(&specs);
    let expander = WindowExpander { specs, span };
    keyed_sums(signals, control, "Windows", "windows", expander, persist, move |s| {
        StateStats::set(&stats.window_sums, s.sums);
        StateStats::set(&stats.window_pending, s.pending);
        StateStats::set(&stats.window_retired, s.retired);
        stats.busy(Stage::Windows, s.started);
    })
}

/// A waiting window update: the key and the lanes it changes (bit `i` = lane `i`); its diff
/// is the weight added to each of them.
type LaneUpdate = (ItemKey, KindIdx, u16);

struct WindowExpander {
    specs: Vec<KindSpec>,
    /// The longest `2W` of any type, ms.
    span: u64,
}

impl Expander for WindowExpander {
    type Key = (ItemKey, KindIdx);
    type Sum = Lanes;
    type Extra = ();
    type Pending = LaneUpdate;
    type Diff = Wrapping<i64>;

    fn slots(&self) -> usize {
        self.specs.len()
    }

    fn expand(
        &self,
        ev: &SignalEv,
        time: Time,
        mult: isize,
        out: &mut Vec<(Time, LaneUpdate, Wrapping<i64>)>,
        _clears: &mut Vec<(Time, usize, ())>,
    ) {
        if let Some(spec) = self.specs.get(usize::from(ev.kind)) {
            expand_event(spec, ev, time, mult, out);
        }
    }

    fn retired_until(&self, clock_ms: u64) -> Option<Time> {
        // Every retraction of a signal with ts_eff <= clock comes due by clock + 2W.
        Some(time_at(clock_ms.saturating_add(self.span)))
    }

    fn follow_up(
        &self,
        at: Time,
        &(item, kind, mask): &LaneUpdate,
        diff: &Wrapping<i64>,
        out: &mut Vec<(Time, LaneUpdate, Wrapping<i64>)>,
    ) {
        if let Some(spec) = self.specs.get(usize::from(kind)) {
            chained_follow_up(spec, at, mask, |t, m| out.push((t, (item, kind, m), *diff)));
        }
    }

    fn locate(&self, &(item, kind, _): &LaneUpdate) -> (ItemKey, usize, ()) {
        (item, usize::from(kind), ())
    }

    fn add(&self, lanes: &mut Lanes, &(_, _, mask): &LaneUpdate, diff: &Wrapping<i64>) {
        add_masked(lanes, mask, diff.0);
    }

    fn key(&self, item: ItemKey, slot: usize, _: ()) -> (ItemKey, KindIdx) {
        // Slots are signal types, fewer than the configuration's limit on them.
        (item, slot as KindIdx)
    }
}

/// How long after an event its last window retraction may come due: twice the longest
/// window (a retired item's pending retractions are ignored for that long).
pub(crate) fn retraction_span(specs: &[KindSpec]) -> u64 {
    specs
        .iter()
        .flat_map(|s| s.windows().iter().map(|(w, _)| 2 * w))
        .max()
        .unwrap_or(0)
}

/// Adds `w` to the lanes `mask` selects (bit `i` = lane `i`).
pub(crate) fn add_masked(lanes: &mut Lanes, mask: u16, w: i64) {
    for (i, lane) in lanes.0.iter_mut().enumerate() {
        if mask & (1 << i) != 0 {
            *lane = lane.wrapping_add(w);
        }
    }
}

/// Pushes the updates of one event committed at `time`: `+w` now in every lane still open,
/// `-w` at each later time where lanes close (lanes closing together share one update).
fn expand_event(
    spec: &KindSpec,
    ev: &SignalEv,
    time: Time,
    mult: isize,
    out: &mut Vec<(Time, LaneUpdate, Wrapping<i64>)>,
) {
    expand_lanes(spec, ev, time, mult, true, |at, mask, w| {
        out.push((at, (ev.item, ev.kind, mask), Wrapping(w)))
    });
}

/// A retraction's mask bit saying it is *chained*: each window's `count_W` lane (even,
/// `2j`) it closes is followed, when it comes due, by the retraction of that window's
/// `count_2W` lane (`2j + 1`) `W` later ([`chained_follow_up`]). One waiting update per
/// window instead of two while an event is inside its window: the cohort rollup held ~6 per
/// (event, cohort) for three windows, most of its memory and of its checkpoint part.
pub(crate) const CHAINED: u16 = 1 << 15;
const _: () = assert!(TOTAL_LANE < 15, "the chained bit is above every lane");

/// The lane updates of one event committed at `time`, as `(time, lane mask, weight)`: `+w`
/// now in every lane still open (the `total` lane too, with `total`), `-w` at each later time
/// where lanes close (lanes closing together share one update). A window whose `count_W` lane
/// is open closes it with a [`CHAINED`] update, which schedules its `count_2W` retraction
/// when it comes due; a late event whose `count_W` already closed retracts `count_2W` directly.
pub(crate) fn expand_lanes(
    spec: &KindSpec,
    ev: &SignalEv,
    time: Time,
    mult: isize,
    total: bool,
    mut push: impl FnMut(Time, u16, i64),
) {
    let w = ev.weight.wrapping_mul(mult as i64);
    if w == 0 {
        return;
    }
    let mut open = if total { 1u16 << TOTAL_LANE } else { 0 };
    // (close time, lane, chained), at most one per window.
    let mut closes = [(0 as Time, 0usize, false); MAX_WINDOWS];
    let mut n = 0;
    for (j, &(size, g)) in spec.windows().iter().enumerate() {
        let end_w = time_at(window_end(ev.ts_eff, size, g));
        let end_2w = time_at(window_end(ev.ts_eff, size.saturating_mul(2), g));
        // A window already closed at `time` would retract at `time` itself: leave it out.
        if end_w > time {
            open |= 0b11 << (2 * j);
            closes[n] = (end_w, 2 * j, true);
            n += 1;
        } else if end_2w > time {
            open |= 1 << (2 * j + 1);
            closes[n] = (end_2w, 2 * j + 1, false);
            n += 1;
        }
    }
    if open == 0 {
        return;
    }
    push(time, open, w);
    let closes = &mut closes[..n];
    closes.sort_unstable();
    let mut i = 0;
    while i < closes.len() {
        let at = closes[i].0;
        // Closes at one time share an update; chained and direct ones are kept apart.
        for chained in [false, true] {
            let mask = closes[i..]
                .iter()
                .take_while(|c| c.0 == at)
                .filter(|c| c.2 == chained)
                .fold(0u16, |m, c| m | 1 << c.1);
            if mask != 0 {
                push(at, if chained { mask | CHAINED } else { mask }, w.wrapping_neg());
            }
        }
        while i < closes.len() && closes[i].0 == at {
            i += 1;
        }
    }
}

/// What a [`CHAINED`] retraction due at `at` schedules: for each `count_W` lane it closes,
/// the `count_2W` lane of the same window at `at + W`, as `(time, lane mask)`. A mask
/// without the bit schedules nothing.
pub(crate) fn chained_follow_up(spec: &KindSpec, at: Time, mask: u16, mut push: impl FnMut(Time, u16)) {
    if mask & CHAINED == 0 {
        return;
    }
    for (j, &(size, _)) in spec.windows().iter().enumerate() {
        if mask & (1 << (2 * j)) != 0 {
            push(time_at(clock_of(at).saturating_add(size)), 1 << (2 * j + 1));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidal_core::features::weight_fixed;

    /// Every update of `ev` committed at `time`, follow-ups included, in time order, as
    /// `(time, mask, weight)`.
    fn timeline(spec: &KindSpec, ev: &SignalEv, time: Time) -> Vec<(Time, u16, i64)> {
        let mut out = Vec::new();
        expand_lanes(spec, ev, time, 1, true, |at, mask, w| out.push((at, mask, w)));
        let mut i = 0;
        while i < out.len() {
            let (at, mask, w) = out[i];
            chained_follow_up(spec, at, mask, |t, m| {
                assert!(t > at, "a follow-up comes later");
                out.push((t, m, w));
            });
            i += 1;
        }
        out.sort_by_key(|u| u.0);
        out
    }

    #[test]
    fn coinciding_closes_and_chained_retractions() {
        // Windows 10s and 20s with g = 10s.
        let mut spec = KindSpec::default();
        spec.windows[0] = (10_000, 10_000);
        spec.windows[1] = (20_000, 10_000);
        spec.n_windows = 2;
        let ev = SignalEv {
            item: 1,
            kind: 0,
            ts_eff: 5_000,
            weight: weight_fixed(2.0),
            user: 0,
        };
        let w = ev.weight;
        let mut out = Vec::new();
        expand_event(&spec, &ev, time_at(5_000), 1, &mut out);
        let got: Vec<(Time, u16, i64)> = out.iter().map(|(t, u, d)| (*t, u.2, d.0)).collect();
        // Each window's count_W closes with a chained update; count_2W is not waiting yet.
        assert_eq!(
            got,
            vec![
                (time_at(5_000), 0b1_0000_1111, w),
                (time_at(10_000), 0b1 | CHAINED, -w),
                (time_at(20_000), 0b100 | CHAINED, -w),
            ]
        );
        // When they come due, each schedules its window's count_2W W later.
        let mut follow = Vec::new();
        let expander = WindowExpander {
            specs: vec![spec],
            span: 40_000,
        };
        for (at, u, d) in &out[1..] {
            expander.follow_up(*at, u, d, &mut follow);
        }
        let follow: Vec<(Time, u16)> = follow.iter().map(|(t, u, _)| (*t, u.2)).collect();
        assert_eq!(follow, vec![(time_at(20_000), 0b10), (time_at(40_000), 0b1000)]);
        let mut lanes = Lanes::default();
        expander.add(&mut lanes, &out[1].1, &out[1].2);
        assert_eq!(lanes.0[..4], [-w, 0, 0, 0], "the chained bit is no lane");
        // Late event: the 10s window is already closed at its commit time, so its count_2W
        // closes directly, apart from the second window's chained count_W at the same time.
        out.clear();
        expand_event(&spec, &ev, time_at(12_000) + 3, 1, &mut out);
        let got: Vec<(Time, u16)> = out.iter().map(|(t, u, _)| (*t, u.2)).collect();
        assert_eq!(
            got,
            vec![
                (time_at(12_000) + 3, 0b1_0000_1110),
                (time_at(20_000), 0b10),
                (time_at(20_000), 0b100 | CHAINED),
            ]
        );
    }

    /// At every time, the lanes an event's updates (follow-ups included) have added up to
    /// are SPEC's: `w` in `count_W` until `window_end(ts, W, g)`, in `count_2W` until
    /// `window_end(ts, 2W, g)`, always in `total`, for windows, granularities, event times
    /// and commit times drawn at random (late events included).
    #[test]
    fn chained_lanes_equal_the_window_formula() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..2000 {
            let mut spec = KindSpec {
                n_windows: rng.gen_range(1..=MAX_WINDOWS),
                ..KindSpec::default()
            };
            for j in 0..spec.n_windows {
                let g = rng.gen_range(1..=5u64) * 1000;
                spec.windows[j] = (g * rng.gen_range(1..=6u64), g);
            }
            let ts = rng.gen_range(0..60_000u64);
            let commit = ts + rng.gen_range(0..40_000u64);
            let ev = SignalEv {
                item: 1,
                kind: 0,
                ts_eff: ts,
                weight: 3,
                user: 0,
            };
            let updates = timeline(&spec, &ev, time_at(commit));
            for probe in (commit..commit + 200_000).step_by(500) {
                let mut lanes = Lanes::default();
                for (at, mask, w) in &updates {
                    if *at <= time_at(probe) {
                        add_masked(&mut lanes, mask & !CHAINED, *w);
                    }
                }
                for (j, &(size, g)) in spec.windows().iter().enumerate() {
                    let in_w = probe < window_end(ts, size, g);
                    let in_2w = probe < window_end(ts, 2 * size, g);
                    assert_eq!(
                        lanes.0[2 * j],
                        if in_w { 3 } else { 0 },
                        "{spec:?} ts {ts} commit {commit} at {probe}"
                    );
                    assert_eq!(
                        lanes.0[2 * j + 1],
                        if in_2w { 3 } else { 0 },
                        "{spec:?} ts {ts} commit {commit} at {probe}"
                    );
                }
                assert_eq!(lanes.0[TOTAL_LANE], 3);
            }
        }
    }
}
