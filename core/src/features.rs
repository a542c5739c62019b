//! The numbers every materializer keeps, as exact integers: window counts in 64-bit fixed
//! point ([`Lanes`]) and decayed sums as epoch-anchored 128-bit fixed point. Integer sums
//! cancel exactly on retraction and do not depend on the order of addition, so results are
//! the same for any number of workers. The formulas are SPEC §3's.

use serde::{Deserialize, Serialize};

use differential_dataflow::difference::{Abelian, IsZero, Monoid, Multiply, Semigroup};

use crate::config::{MAX_WINDOWS, SignalType};

/// Weights are kept as multiples of `2^-WEIGHT_BITS`.
pub const WEIGHT_BITS: u32 = 20;
/// Number of lanes in [`Lanes`]: `count_W` and `count_2W` per window, then `total`.
pub const LANES: usize = 2 * MAX_WINDOWS + 1;
/// The lane holding the all-time total.
pub const TOTAL_LANE: usize = 2 * MAX_WINDOWS;

/// A weight in fixed point.
pub fn weight_fixed(w: f64) -> i64 {
    (w * (1u64 << WEIGHT_BITS) as f64).round() as i64
}

/// A fixed-point weight sum as a float.
pub fn weight_float(v: i64) -> f64 {
    v as f64 / (1u64 << WEIGHT_BITS) as f64
}

/// Window counts of one (item, signal type): lane `2j` is `count_W` of window `j`, lane
/// `2j+1` is `count_2W`, lane [`TOTAL_LANE`] is `total`. Fixed-point weights.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Lanes(pub [i64; LANES]);

impl Lanes {
    /// `count_W` of window `j`, as a float.
    pub fn count(&self, j: usize) -> f64 {
        weight_float(self.0[2 * j])
    }
    /// `count_2W` of window `j`, as a float.
    pub fn count2(&self, j: usize) -> f64 {
        weight_float(self.0[2 * j + 1])
    }
    /// The all-time total, as a float.
    pub fn total(&self) -> f64 {
        weight_float(self.0[TOTAL_LANE])
    }
    /// `count_W − (count_2W − count_W)` in fixed point: the acceleration numerator (in
    /// that order: `2 · count_W` alone could pass the range the counts themselves keep to).
    pub fn rise_fixed(&self, j: usize) -> i64 {
        let (w, w2) = (self.0[2 * j], self.0[2 * j + 1]);
        w - (w2 - w)
    }
    /// A lane set with `v` in the lanes `mask` selects.
    pub fn with(mask: impl IntoIterator<Item = usize>, v: i64) -> Lanes {
        let mut l = Lanes::default();
        for i in mask {
            l.0[i] = v;
        }
        l
    }
}

impl IsZero for Lanes {
    fn is_zero(&self) -> bool {
        self.0.iter().all(|x| *x == 0)
    }
}
impl Semigroup for Lanes {
    fn plus_equals(&mut self, rhs: &Self) {
        for (a, b) in self.0.iter_mut().zip(rhs.0.iter()) {
            *a = a.wrapping_add(*b);
        }
    }
}
impl Monoid for Lanes {
    fn zero() -> Self {
        Lanes::default()
    }
}
impl Abelian for Lanes {
    fn negate(&mut self) {
        for a in self.0.iter_mut() {
            *a = a.wrapping_neg();
        }
    }
}
impl Multiply<isize> for Lanes {
    type Output = Lanes;
    fn multiply(mut self, r: &isize) -> Lanes {
        for a in self.0.iter_mut() {
            *a = a.wrapping_mul(*r as i64);
        }
        self
    }
}

/// Per window: `(size W, granularity g)` in ms.
pub fn window_specs(st: &SignalType) -> Vec<(u64, u64)> {
    st.windows
        .iter()
        .map(|w| {
            let g = w.granularity.map_or((w.size.ms() / 60).max(1000), |g| g.ms());
            (w.size.ms(), g)
        })
        .collect()
}

/// The clock (ms) at which a signal with effective time `ts_eff` leaves a window of size
/// `size` and granularity `g`: `floor(ts_eff/g)·g + size`.
pub fn window_end(ts_eff: u64, size: u64, g: u64) -> u64 {
    (ts_eff / g) * g + size
}

/// Decayed sums are kept as multiples of `2^-DECAY_BITS`.
pub const DECAY_BITS: i32 = 48;
/// An epoch spans this many half-lives.
pub const EPOCH_HALF_LIVES: u64 = 16;
/// An epoch is retracted this many half-lives after it ends (its weight is then < 2^-64).
pub const EXPIRY_HALF_LIVES: u64 = 64;

/// The epoch anchor `E = floor(ts / R)·R` for half-life `h` (ms).
pub fn epoch_of(ts: u64, h: u64) -> u64 {
    let r = EPOCH_HALF_LIVES * h;
    (ts / r) * r
}

/// The clock (ms) at which epoch `e` of half-life `h` is retracted.
pub fn epoch_expiry(e: u64, h: u64) -> u64 {
    e + (EPOCH_HALF_LIVES + EXPIRY_HALF_LIVES) * h
}

/// `round(w · 2^((ts − E)/h) · 2^DECAY_BITS)`: one signal's anchored decay contribution.
pub fn decay_fixed(w: f64, ts: u64, e: u64, h: u64) -> i128 {
    let x = w * ((ts - e.min(ts)) as f64 / h as f64).exp2();
    (x * (DECAY_BITS as f64).exp2()).round() as i128
}

/// The value at clock `t` of an epoch sum `v` anchored at `e`: `v · 2^(−(t − E)/h)`.
pub fn decay_at(v: i128, e: u64, h: u64, t: u64) -> f64 {
    let dt = t as f64 - e as f64;
    (v as f64) * (-(dt / h as f64) - DECAY_BITS as f64).exp2()
}

/// `decay_h(t)` from all epoch sums of one (item, type, h).
pub fn decay_sum(epochs: impl IntoIterator<Item = (u64, i128)>, h: u64, t: u64) -> f64 {
    epochs.into_iter().map(|(e, v)| decay_at(v, e, h, t)).sum()
}

/// A key whose order is the order of `decay_h(t)` for every `t`: `log2(decay_h(t)) + t/h`.
/// `None` when the sum is not positive (such items are not listed by `hot`).
pub fn hot_key(epochs: impl IntoIterator<Item = (u64, i128)> + Clone, h: u64) -> Option<f64> {
    let top = epochs
        .clone()
        .into_iter()
        .filter(|(_, v)| *v != 0)
        .map(|(e, _)| e)
        .max()?;
    // Σ v·2^((E − top)/h), every factor ≤ 1.
    let s: f64 = epochs
        .into_iter()
        .map(|(e, v)| v as f64 * ((e as f64 - top as f64) / h as f64).exp2())
        .sum();
    if s > 0.0 {
        Some(s.log2() - DECAY_BITS as f64 + top as f64 / h as f64)
    } else {
        None
    }
}

/// `decay_h(t)` from a [`hot_key`].
pub fn hot_value(key: f64, h: u64, t: u64) -> f64 {
    (key - t as f64 / h as f64).exp2()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decay_matches_formula() {
        let h = 3_600_000;
        let t = 1_700_000_000_000u64;
        let sigs = [(1.0, t - 10_000), (2.5, t - 7_200_000), (0.3, t - 100_000_000)];
        let exact: f64 = sigs
            .iter()
            .map(|(w, ts)| w * (-((t - ts) as f64) / h as f64).exp2())
            .sum();
        let mut epochs: std::collections::BTreeMap<u64, i128> = Default::default();
        for (w, ts) in sigs {
            let e = epoch_of(ts, h);
            *epochs.entry(e).or_default() += decay_fixed(w, ts, e, h);
        }
        let got = decay_sum(epochs.iter().map(|(e, v)| (*e, *v)), h, t);
        assert!((got - exact).abs() <= 1e-9 * exact, "{got} vs {exact}");
        let key = hot_key(epochs.iter().map(|(e, v)| (*e, *v)), h).expect("positive");
        let via_key = hot_value(key, h, t);
        assert!((via_key - exact).abs() <= 1e-9 * exact, "{via_key} vs {exact}");
    }

    #[test]
    fn lanes_cancel_exactly() {
        let mut a = Lanes::with([0, 1, TOTAL_LANE], weight_fixed(0.1));
        let mut b = a;
        b.negate();
        a.plus_equals(&b);
        assert!(a.is_zero());
    }
}
