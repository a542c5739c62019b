//! The decay materializer: per (item, signal type, half-life, epoch) it maintains the exact
//! anchored sum `Σ round(w · 2^((ts_eff − E)/h) · 2^DECAY_BITS)` as an `i128`, from which a
//! reader gets `decay_h(T) = Σ_E sum_E · 2^(−(T − E)/h)` (`features::decay_sum`). Epochs
//! span `EPOCH_HALF_LIVES` half-lives, so every anchored term stays below `w · 2^16`. An
//! epoch's sums are dropped whole at `epoch_expiry`, when its weight has fallen below
//! `2^-64`: one *clear* of that (type, half-life, epoch) for every item at once, so no
//! per-item retraction waits — a deleted item leaves nothing behind, and pending state is one
//! entry per live epoch. Integer sums cancel exactly and do not depend on the order of
//! addition, so the result is the same for any number of workers. Cost per event: per
//! half-life, one O(1) array change of one running sum; per epoch expiry, one scan of that
//! slot over the worker's items (every `EPOCH_HALF_LIVES` half-lives).

use std::sync::Arc;

use differential_dataflow::VecCollection;
use timely::dataflow::StreamVec;

use tidal_core::config::Config;
use tidal_core::features::{decay_fixed, epoch_expiry, epoch_of, weight_float};
use tidal_core::flow::{Control, HalfLifeIdx, ItemKey, KindIdx, Persist};
use tidal_core::stats::{Stage, StateStats};
use tidal_core::time::{Time, time_at};

use crate::sum::{Expander, keyed_sums};
use crate::{KindSpec, SignalEv, kind_specs};

pub use tidal_core::flow::DecayKey;

/// The current non-zero anchored decay sums: `+1` for a key's new sum, `-1` for its old one,
/// at each logical time it changes.
pub fn decay<'s>(
    signals: VecCollection<'s, Time, SignalEv, isize>,
    control: StreamVec<'s, Time, Control>,
    config: &Config,
    stats: Arc<StateStats>,
    persist: Persist,
) -> VecCollection<'s, Time, (DecayKey, i128), isize> {
    keyed_sums(
        signals,
        control,
        "Decay",
        "decay",
        DecayExpander::new(kind_specs(config)),
        persist,
        move |s| {
            StateStats::set(&stats.decay_sums, s.sums);
            StateStats::set(&stats.decay_times, s.times);
            stats.busy(Stage::Decay, s.started);
        },
    )
}

struct DecayExpander {
    specs: Vec<KindSpec>,
    /// The most half-lives of any signal type: slots per signal type.
    per_kind: usize,
}

impl DecayExpander {
    fn new(specs: Vec<KindSpec>) -> DecayExpander {
        let per_kind = specs.iter().map(|s| s.n_half_lives).max().unwrap_or(0).max(1);
        DecayExpander { specs, per_kind }
    }
}

impl Expander for DecayExpander {
    type Key = DecayKey;
    type Sum = i128;
    type Extra = u64;
    type Pending = DecayKey;
    type Diff = i128;

    fn slots(&self) -> usize {
        self.specs.len() * self.per_kind
    }

    fn expand(
        &self,
        ev: &SignalEv,
        time: Time,
        mult: isize,
        out: &mut Vec<(Time, DecayKey, i128)>,
        clears: &mut Vec<(Time, usize, u64)>,
    ) {
        let Some(spec) = self.specs.get(usize::from(ev.kind)) else {
            return;
        };
        if ev.weight == 0 || mult == 0 {
            return;
        }
        let w = weight_float(ev.weight);
        for (hi, &h) in spec.half_lives().iter().enumerate() {
            let epoch = epoch_of(ev.ts_eff, h);
            let expiry = time_at(epoch_expiry(epoch, h));
            if expiry <= time {
                continue;
            }
            let v = decay_fixed(w, ev.ts_eff, epoch, h).wrapping_mul(mult as i128);
            if v == 0 {
                continue;
            }
            // At most MAX_HALF_LIVES (4) half-lives: the index fits.
            out.push((time, (ev.item, ev.kind, hi as HalfLifeIdx, epoch), v));
            clears.push((expiry, usize::from(ev.kind) * self.per_kind + hi, epoch));
        }
    }

    fn locate(&self, &(item, kind, hi, epoch): &DecayKey) -> (ItemKey, usize, u64) {
        (item, usize::from(kind) * self.per_kind + usize::from(hi), epoch)
    }

    fn add(&self, sum: &mut i128, _: &DecayKey, diff: &i128) {
        *sum = sum.wrapping_add(*diff);
    }

    fn key(&self, item: ItemKey, slot: usize, epoch: u64) -> DecayKey {
        // Slots come from `locate`: the quotient is a signal type, the remainder a half-life
        // index, both within the configuration's limits.
        let (kind, hi) = (slot / self.per_kind, slot % self.per_kind);
        (item, kind as KindIdx, hi as HalfLifeIdx, epoch)
    }

    fn retired_until(&self, _clock_ms: u64) -> Option<Time> {
        // Nothing per item waits: a retired item's sums are zeroed and that is all.
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidal_core::features::{EPOCH_HALF_LIVES, EXPIRY_HALF_LIVES, weight_fixed};

    #[test]
    fn expired_epochs_are_skipped_and_live_ones_cleared_once() {
        let mut spec = KindSpec::default();
        spec.half_lives[0] = 1_000;
        spec.half_lives[1] = 100_000;
        spec.n_half_lives = 2;
        let ev = SignalEv {
            item: 3,
            kind: 0,
            ts_eff: 0,
            weight: weight_fixed(1.5),
            user: 0,
        };
        let late = (EPOCH_HALF_LIVES + EXPIRY_HALF_LIVES) * 1_000;
        let (mut out, mut clears) = (Vec::new(), Vec::new());
        DecayExpander::new(vec![spec]).expand(&ev, time_at(late), 1, &mut out, &mut clears);
        assert_eq!(out.len(), 1, "only the 100s half-life is still live");
        assert_eq!(out[0].1, (3, 0, 1, 0));
        assert_eq!(clears, vec![(time_at(late * 100), 1, 0)]);
    }
}
