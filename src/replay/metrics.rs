//! How far apart two rankings are: the measures `tidal replay` reports for every variant
//! against the baseline, at one clock and for one query. Both inputs are top-k lists of
//! item ids, best first, without repeats (rankings never list an item twice).
//!
//! - **overlap@k** = |A ∩ B| / k with k = max(|A|, |B|): the share of the deeper list that
//!   both lists hold, order ignored. 1 for equal sets, 0 for disjoint ones.
//! - **Kendall τ-b over the union**: every item of A ∪ B gets its position in each list; an
//!   item a list does not hold is placed after that list's last item, all such items tied.
//!   τ-b = (C − D) / √((n₀ − n₁)(n₀ − n₂)) over all pairs, C concordant, D discordant, n₁ and
//!   n₂ the pairs tied in A and in B. 1 for identical lists, −1 for the same items in reverse
//!   order, −2k / (3k − 1) for two disjoint lists of k items; undefined (`None`) when either
//!   list ties every pair (e.g. an empty list against a non-empty one).
//! - **rank-biased overlap**, extrapolated (RBO_ext, Webber, Moffat & Zobel 2010, eq. 32,
//!   with its extension to lists of different lengths), persistence p = 0.9: a weighted
//!   average of the overlap at every depth, depth d weighted by p^(d−1), so the top of the
//!   lists counts most (with p = 0.9 the first 10 ranks carry about 86 % of the weight).
//!   1 for identical lists, 0 for disjoint ones.
//! - **entering** / **leaving**: the items of B that A lacks, and of A that B lacks, each in
//!   its own list's order.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

/// The persistence of rank-biased overlap.
pub const RBO_P: f64 = 0.9;

/// The measures of one ranking against the baseline's.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Comparison {
    /// The depth compared: the longer list's length.
    pub k: usize,
    /// |A ∩ B| / k.
    pub overlap_at_k: f64,
    /// Kendall τ-b over the union (missing items tied last); `None` when undefined.
    pub kendall_tau: Option<f64>,
    /// Extrapolated rank-biased overlap, p = [`RBO_P`].
    pub rbo: f64,
}

impl Comparison {
    /// Compares `b` (a variant's ranking) with `a` (the baseline's).
    pub fn between<S: AsRef<str>>(a: &[S], b: &[S]) -> Comparison {
        Comparison {
            k: a.len().max(b.len()),
            overlap_at_k: overlap_at_k(a, b),
            kendall_tau: kendall_tau(a, b),
            rbo: rbo_ext(a, b, RBO_P),
        }
    }
}

/// |A ∩ B| / max(|A|, |B|); 1 when both are empty.
pub fn overlap_at_k<S: AsRef<str>>(a: &[S], b: &[S]) -> f64 {
    let k = a.len().max(b.len());
    if k == 0 {
        return 1.0;
    }
    let set: HashSet<&str> = a.iter().map(AsRef::as_ref).collect();
    let common = b.iter().filter(|x| set.contains(x.as_ref())).count();
    common as f64 / k as f64
}

/// Kendall τ-b over A ∪ B, items missing from a list tied after its last item.
pub fn kendall_tau<S: AsRef<str>>(a: &[S], b: &[S]) -> Option<f64> {
    if a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.as_ref() == y.as_ref()) {
        return Some(1.0);
    }
    let pos_a: HashMap<&str, usize> = a.iter().enumerate().map(|(i, x)| (x.as_ref(), i)).collect();
    let pos_b: HashMap<&str, usize> = b.iter().enumerate().map(|(i, x)| (x.as_ref(), i)).collect();
    let mut union: Vec<&str> = a.iter().map(AsRef::as_ref).collect();
    union.extend(b.iter().map(AsRef::as_ref).filter(|x| !pos_a.contains_key(x)));
    let ranks: Vec<(usize, usize)> = union
        .iter()
        .map(|x| {
            (
                pos_a.get(x).copied().unwrap_or(a.len()),
                pos_b.get(x).copied().unwrap_or(b.len()),
            )
        })
        .collect();
    let (mut concordant, mut discordant, mut tied_a, mut tied_b) = (0u64, 0u64, 0u64, 0u64);
    for (i, &(ai, bi)) in ranks.iter().enumerate() {
        for &(aj, bj) in &ranks[i + 1..] {
            match (ai == aj, bi == bj) {
                (true, true) => {
                    tied_a += 1;
                    tied_b += 1;
                }
                (true, false) => tied_a += 1,
                (false, true) => tied_b += 1,
                (false, false) if (ai < aj) == (bi < bj) => concordant += 1,
                (false, false) => discordant += 1,
            }
        }
    }
    let n = ranks.len() as u64;
    let pairs = n * n.saturating_sub(1) / 2;
    let denominator = ((pairs - tied_a) as f64 * (pairs - tied_b) as f64).sqrt();
    if denominator == 0.0 {
        return None;
    }
    Some((concordant as f64 - discordant as f64) / denominator)
}

/// Extrapolated rank-biased overlap with persistence `p` (0 < p < 1), for lists of any
/// lengths: Webber et al.'s RBO_ext, the short list assumed to continue with items as
/// agreeing as its last seen depth. 1 when both are empty, 0 when exactly one is.
pub fn rbo_ext<S: AsRef<str>>(a: &[S], b: &[S], p: f64) -> f64 {
    let (short, long) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    let (s, l) = (short.len(), long.len());
    if l == 0 {
        return 1.0;
    }
    if s == 0 {
        return 0.0;
    }
    // X_d: |short[..min(d, s)] ∩ long[..d]| for d = 1..=l.
    let mut seen_short: HashSet<&str> = HashSet::new();
    let mut seen_long: HashSet<&str> = HashSet::new();
    let mut overlap = 0usize;
    let mut sum = 0.0;
    let mut weight = 1.0; // p^d, updated before use
    let mut x_s = 0usize;
    for d in 1..=l {
        weight *= p;
        let y = long[d - 1].as_ref();
        if seen_short.contains(y) {
            overlap += 1;
        }
        seen_long.insert(y);
        if d <= s {
            let x = short[d - 1].as_ref();
            if seen_long.contains(x) {
                overlap += 1;
            }
            seen_short.insert(x);
            // An item equal in both lists at depth d was counted once above: by `x`
            // (`y` was not yet in `seen_short`).
        }
        if d == s {
            x_s = overlap;
        }
        let (x_d, d_f) = (overlap as f64, d as f64);
        sum += x_d / d_f * weight;
        if d > s {
            sum += x_s as f64 * (d - s) as f64 / (s as f64 * d_f) * weight;
        }
    }
    let x_l = overlap as f64;
    let tail = ((x_l - x_s as f64) / l as f64 + x_s as f64 / s as f64) * weight;
    (1.0 - p) / p * sum + tail
}

/// The items of `b` that `a` lacks, in `b`'s order.
pub fn entering<S: AsRef<str>>(a: &[S], b: &[S]) -> Vec<String> {
    let set: HashSet<&str> = a.iter().map(AsRef::as_ref).collect();
    b.iter()
        .map(AsRef::as_ref)
        .filter(|x| !set.contains(x))
        .map(String::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    /// RBO straight from its definition for equal-length lists, summed to depth k and
    /// extrapolated: (1−p)/p · Σ_{d≤k} A_d p^d + A_k p^k, A_d = |a[..d] ∩ b[..d]| / d.
    fn rbo_reference(a: &[String], b: &[String], p: f64) -> f64 {
        let k = a.len();
        let agreement = |d: usize| {
            let sa: HashSet<&String> = a[..d].iter().collect();
            b[..d].iter().filter(|x| sa.contains(x)).count() as f64 / d as f64
        };
        let sum: f64 = (1..=k).map(|d| agreement(d) * p.powi(d as i32)).sum();
        (1.0 - p) / p * sum + agreement(k) * p.powi(k as i32)
    }

    /// τ-b by brute force from rank vectors.
    fn tau_reference(a: &[String], b: &[String]) -> Option<f64> {
        let mut union: Vec<&String> = a.iter().collect();
        union.extend(b.iter().filter(|x| !a.contains(x)));
        let rank = |l: &[String], x: &String| l.iter().position(|y| y == x).unwrap_or(l.len()) as i64;
        let (mut num, mut n1, mut n2, mut n0) = (0i64, 0i64, 0i64, 0i64);
        for i in 0..union.len() {
            for j in i + 1..union.len() {
                n0 += 1;
                let da = (rank(a, union[i]) - rank(a, union[j])).signum();
                let db = (rank(b, union[i]) - rank(b, union[j])).signum();
                num += da * db;
                n1 += i64::from(da == 0);
                n2 += i64::from(db == 0);
            }
        }
        let den = (((n0 - n1) * (n0 - n2)) as f64).sqrt();
        (den > 0.0).then(|| num as f64 / den)
    }

    #[test]
    fn identical_lists_score_one() {
        let a = ids("a b c d e");
        let c = Comparison::between(&a, &a);
        assert_eq!(c.k, 5);
        assert!(close(c.overlap_at_k, 1.0));
        assert_eq!(c.kendall_tau, Some(1.0));
        assert!(close(c.rbo, 1.0), "{}", c.rbo);
        assert!(entering(&a, &a).is_empty());
    }

    #[test]
    fn reversed_lists_have_tau_minus_one() {
        let a = ids("a b c d e");
        let b = ids("e d c b a");
        let c = Comparison::between(&a, &b);
        assert!(close(c.overlap_at_k, 1.0));
        assert!(close(c.kendall_tau.unwrap(), -1.0));
        assert!(c.rbo < 1.0 && c.rbo > 0.0);
        assert!(close(c.rbo, rbo_reference(&a, &b, RBO_P)));
    }

    #[test]
    fn disjoint_lists_have_no_overlap() {
        let a = ids("a b c");
        let b = ids("x y z");
        let c = Comparison::between(&a, &b);
        assert!(close(c.overlap_at_k, 0.0));
        assert!(close(c.rbo, 0.0));
        // C = 0, D = 9, n0 = 15, n1 = n2 = 3: −9 / 12 = −2k / (3k − 1) with k = 3.
        assert!(close(c.kendall_tau.unwrap(), -0.75));
        assert_eq!(entering(&a, &b), ids("x y z"));
        assert_eq!(entering(&b, &a), ids("a b c"));
    }

    #[test]
    fn empty_lists() {
        let e: Vec<String> = Vec::new();
        let a = ids("a b");
        assert!(close(overlap_at_k(&e, &e), 1.0));
        assert!(close(rbo_ext(&e, &e, RBO_P), 1.0));
        assert_eq!(kendall_tau(&e, &e), Some(1.0));
        assert!(close(overlap_at_k(&a, &e), 0.0));
        assert!(close(rbo_ext(&a, &e, RBO_P), 0.0));
        assert_eq!(kendall_tau(&a, &e), None);
    }

    #[test]
    fn one_swap_by_hand() {
        // a b c vs b a c: one discordant pair of three, τ = (2 − 1) / 3.
        let a = ids("a b c");
        let b = ids("b a c");
        assert!(close(kendall_tau(&a, &b).unwrap(), 1.0 / 3.0));
        // A_1 = 0, A_2 = 1, A_3 = 1: (0.1/0.9)(0 + 0.81 + 0.729) + 0.729.
        let expected = (0.1 / 0.9) * (0.81 + 0.729) + 0.729;
        assert!(close(rbo_ext(&a, &b, RBO_P), expected));
    }

    #[test]
    fn uneven_lengths_follow_the_paper() {
        // Webber et al. eq. 32 by hand: S = [a], L = [a, x], s = 1, l = 2.
        // X_1 = 1, X_2 = 1. Σ_{d=1..2} X_d/d p^d = 0.9 + 0.405;
        // Σ_{d=2..2} X_s (d − s)/(s d) p^d = 1 · 1/2 · 0.81 = 0.405;
        // tail ((X_l − X_s)/l + X_s/s) p^l = 0.81.
        let s = ids("a");
        let l = ids("a x");
        let expected = (0.1 / 0.9) * (0.9 + 0.405 + 0.405) + 0.81;
        assert!(close(rbo_ext(&s, &l, RBO_P), expected));
        assert!(close(rbo_ext(&l, &s, RBO_P), expected));
        // A prefix of a list agrees with it fully where it is defined: RBO_ext = 1.
        let long = ids("a b c d");
        assert!(close(rbo_ext(&ids("a b"), &long, RBO_P), 1.0));
        assert!(close(overlap_at_k(&ids("a b"), &long), 0.5));
    }

    #[test]
    fn matches_reference_on_permutations_and_partial_overlaps() {
        let base = ids("a b c d e f");
        let cases = [
            "a c b d f e",
            "f e d c b a",
            "a b x c y d",
            "x y z a b c",
            "b a d c f e",
        ];
        for case in cases {
            let b = ids(case);
            let tau = kendall_tau(&base, &b);
            let reference = tau_reference(&base, &b);
            assert!(
                close(tau.unwrap(), reference.unwrap()),
                "{case}: {tau:?} vs {reference:?}"
            );
            assert!(
                close(rbo_ext(&base, &b, RBO_P), rbo_reference(&base, &b, RBO_P)),
                "{case}"
            );
            let r = rbo_ext(&base, &b, RBO_P);
            assert!((0.0..=1.0 + 1e-12).contains(&r));
        }
    }
}
