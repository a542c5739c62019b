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
use tidal_core::time::{Time, time_at};

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

/// The lane updates of one event committed at `time`, as `(time, lane mask, weight)`: `+w`
/// now in every lane still open (the `total` lane too, with `total`), `-w` at each later time
/// where lanes close (lanes closing together share one update).
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
    // (close time, lane), at most two per window.
    let mut closes = [(0 as Time, 0usize); 2 * MAX_WINDOWS];
    let mut n = 0;
    for (j, &(size, g)) in spec.windows().iter().enumerate() {
        for (lane, span) in [(2 * j, size), (2 * j + 1, size.saturating_mul(2))] {
            let end = time_at(window_end(ev.ts_eff, span, g));
            // A window already closed at `time` would retract at `time` itself: leave it out.
            if end > time {
                open |= 1 << lane;
                closes[n] = (end, lane);
                n += 1;
            }
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
        let mut mask = 0u16;
        while i < closes.len() && closes[i].0 == at {
            mask |= 1 << closes[i].1;
            i += 1;
        }
        push(at, mask, w.wrapping_neg());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidal_core::features::weight_fixed;

    #[test]
    fn coinciding_closes_share_one_update() {
        // Windows 10s and 20s with g = 10s: count_2W of the first closes with count_W of the
        // second.
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
        let mut out = Vec::new();
        expand_event(&spec, &ev, time_at(5_000), 1, &mut out);
        let times: Vec<Time> = out.iter().map(|(t, _, _)| *t).collect();
        assert_eq!(
            times,
            vec![time_at(5_000), time_at(10_000), time_at(20_000), time_at(40_000)]
        );
        assert_eq!(out[0].1.2, 0b1_0000_1111, "all four lanes and the total open");
        assert_eq!(out[2].1.2, 0b110, "lanes 1 and 2 close together");
        assert_eq!(out[2].2.0, -ev.weight);
        let expander = WindowExpander {
            specs: vec![spec],
            span: 40_000,
        };
        let mut lanes = Lanes::default();
        expander.add(&mut lanes, &out[2].1, &out[2].2);
        assert_eq!(lanes.0[..4], [0, -ev.weight, -ev.weight, 0]);
        // Late event: the 10s window is already closed at its commit time.
        out.clear();
        expand_event(&spec, &ev, time_at(12_000) + 3, 1, &mut out);
        let mut now = Lanes::default();
        expander.add(&mut now, &out[0].1, &out[0].2);
        assert_eq!(now.0[0], 0);
        assert_eq!(now.0[1], ev.weight);
        assert_eq!(now.0[TOTAL_LANE], ev.weight);
        assert_eq!(out.len(), 3);
    }
}
