//! Scores of SPEC §3/§5 over a snapshot's features, two ways that agree bit for bit: from
//! an index entry's ordered value (walking a list) and from an item's features (random
//! access). Each term is `factor × x` with `factor = weight`, a score sums its terms in
//! signal-type order and divides the sum once by the window in hours (trending and rising,
//! whose terms share one window; 1 otherwise) — so a term is monotone in its index value,
//! and a sum of per-list bounds, divided alike, bounds every unseen score. Two items whose
//! weighted counts sum to the same number (258 views and likes over 30 days, however
//! split) score exactly the same, and their tie is broken by id.
//!
//! - trending: `Σ weight × count_W / W_h` (velocity);
//! - rising: `Σ weight × (count_W − (count_2W − count_W)) / W_h` (acceleration);
//! - hot: `Σ weight × decay_h(T)`, `T` the snapshot clock;
//! - top: `Σ weight × total`;
//! - new: `created_at`.

use serde_json::{Value, json};

use tidal_core::Config;
use tidal_core::features::{TOTAL_LANE, decay_sum, hot_value, weight_float};
use tidal_sinks::index::{from_order_f64, from_order_i64};
use tidal_sinks::{IndexEntry, IndexKind, ItemEntry};

use super::params::{Base, Feature, RankParams, Term};
use super::personal::Counts;

/// One list of the ranking: an index and how to turn its values into score terms.
#[derive(Clone, Debug)]
pub(crate) struct List {
    pub(crate) term: Option<Term>,
    pub(crate) index: IndexKind,
    factor: f64,
    /// Half-life in ms (hot only).
    h_ms: u64,
}

/// Computes the scores of one request over one snapshot.
#[derive(Clone, Debug)]
pub(crate) struct Scorer {
    pub(crate) base: Base,
    pub(crate) lists: Vec<List>,
    clock: u64,
    /// What the sum of the terms is divided by: the window in hours when every term is a
    /// window count of the same window, else 1 (each window term's factor then divides).
    divisor: f64,
}

impl Scorer {
    pub(crate) fn new(clock: u64, params: &RankParams) -> Scorer {
        // The one window every term counts over, if there is one.
        let mut windows = params.terms.iter().map(|t| match t.feature {
            Feature::Window { size, .. } => Some(size),
            _ => None,
        });
        let shared = match (params.base, windows.next()) {
            (Base::Trending | Base::Rising, Some(Some(first))) => windows.all(|w| w == Some(first)).then_some(first),
            _ => None,
        };
        let divisor = shared.map_or(1.0, |w| w.hours());
        // A window term's factor: its weight, divided by its own window's hours only when
        // the sum is not divided once by a shared one.
        let per_window = |weight: f64, size: tidal_core::duration::Dur| match shared {
            Some(_) => weight,
            None => weight / size.hours(),
        };
        let lists = if params.base == Base::New {
            vec![List {
                term: None,
                index: IndexKind::New,
                factor: 1.0,
                h_ms: 0,
            }]
        } else {
            params
                .terms
                .iter()
                .map(|t| {
                    let (index, factor, h_ms) = match (params.base, t.feature) {
                        (Base::Trending, Feature::Window { index, size }) => (
                            IndexKind::Trending {
                                kind: t.kind,
                                window: index,
                            },
                            per_window(t.weight, size),
                            0,
                        ),
                        (Base::Rising, Feature::Window { index, size }) => (
                            IndexKind::Rising {
                                kind: t.kind,
                                window: index,
                            },
                            per_window(t.weight, size),
                            0,
                        ),
                        (_, Feature::HalfLife { index, size }) => (
                            IndexKind::Hot {
                                kind: t.kind,
                                half_life: index,
                            },
                            t.weight,
                            size.ms(),
                        ),
                        _ => (IndexKind::Top { kind: t.kind }, t.weight, 0),
                    };
                    List {
                        term: Some(*t),
                        index,
                        factor,
                        h_ms,
                    }
                })
                .collect()
        };
        Scorer {
            base: params.base,
            lists,
            clock,
            divisor,
        }
    }

    /// A score from the sum of its terms (or a bound from the sum of the lists' bounds).
    pub(crate) fn finish(&self, sum: f64) -> f64 {
        sum / self.divisor
    }

    /// List `i`'s term for the item an entry of its index points at.
    pub(crate) fn list_value(&self, i: usize, e: &IndexEntry) -> f64 {
        let l = &self.lists[i];
        match l.index {
            IndexKind::New => e.order as f64,
            IndexKind::Hot { .. } => l.factor * hot_value(from_order_f64(e.order), l.h_ms, self.clock),
            _ => l.factor * weight_float(from_order_i64(e.order)),
        }
    }

    /// List `i`'s term for an item, from its features. Items absent from the list's index
    /// get their true (≤ 0) term.
    pub(crate) fn term_value(&self, i: usize, item: &ItemEntry) -> f64 {
        let l = &self.lists[i];
        match l.index {
            IndexKind::New => item.created_at().map_or(0.0, |c| c as f64),
            IndexKind::Trending { kind, window } => {
                l.factor * weight_float(item.lanes(kind).map_or(0, |x| x.0[2 * window]))
            }
            IndexKind::Rising { kind, window } => {
                l.factor * weight_float(item.lanes(kind).map_or(0, |x| x.rise_fixed(window)))
            }
            IndexKind::Top { kind } => l.factor * weight_float(item.lanes(kind).map_or(0, |x| x.0[TOTAL_LANE])),
            IndexKind::Hot { kind, half_life } => match item.hot_key(kind, half_life, l.h_ms) {
                Some(key) => l.factor * hot_value(key, l.h_ms, self.clock),
                None => l.factor * item.decay(kind, half_life, l.h_ms, self.clock),
            },
        }
    }

    /// The item's score: its terms summed in list order.
    pub(crate) fn score(&self, item: &ItemEntry) -> f64 {
        self.finish((0..self.lists.len()).fold(0.0, |s, i| s + self.term_value(i, item)))
    }

    /// The item's score in a cohort: `counts(kind)` gives its counts there (trending and
    /// rising only; the same arithmetic as [`term_value`](Self::term_value)).
    pub(crate) fn cohort_score(&self, counts: impl Fn(tidal_core::flow::KindIdx) -> Option<Counts>) -> f64 {
        let mut s = 0.0;
        for l in &self.lists {
            let v = match l.index {
                IndexKind::Trending { kind, window } => counts(kind).map_or(0.0, |c| l.factor * c.count(window)),
                IndexKind::Rising { kind, window } => counts(kind).map_or(0.0, |c| l.factor * c.rise(window)),
                _ => 0.0,
            };
            s += v;
        }
        self.finish(s)
    }

    /// At least [`cohort_score`](Self::cohort_score) of any item whose lanes `b` bounds: the
    /// same sum, each term's count replaced by its bound and its factor by its size.
    pub(crate) fn cohort_bound(&self, b: &tidal_sinks::LaneBounds) -> f64 {
        let mut s = 0.0;
        for l in &self.lists {
            let v = match l.index {
                // A factor of 0 adds nothing, whatever the bound (an unbounded one is inf).
                IndexKind::Trending { kind, window } | IndexKind::Rising { kind, window } if l.factor != 0.0 => {
                    l.factor.abs() * b.get(kind, window)
                }
                _ => 0.0,
            };
            s += v;
        }
        self.finish(s)
    }

    /// The score from one list's bound per list, summed in the same order as [`score`]:
    /// an upper bound on the score of any item not yet seen.
    ///
    /// [`score`]: Self::score
    pub(crate) fn threshold(&self, bounds: &[f64]) -> f64 {
        self.finish(bounds.iter().fold(0.0, |s, b| s + b))
    }

    /// `explain=1`: the features and the score terms of one item.
    pub(crate) fn explain(&self, item: &ItemEntry, config: &Config) -> Value {
        let mut terms = Vec::with_capacity(self.lists.len());
        for (i, l) in self.lists.iter().enumerate() {
            let value = self.finish(self.term_value(i, item));
            let Some(t) = l.term else {
                terms.push(json!({"created_at": item.created_at(), "value": value}));
                continue;
            };
            let name = config.signals.get(t.kind as usize).map_or("", |s| s.name.as_str());
            let lanes = item.lanes(t.kind).copied().unwrap_or_default();
            let term = match (l.index, t.feature) {
                (IndexKind::Trending { window, .. }, Feature::Window { size, .. }) => json!({
                    "signal": name, "weight": t.weight, "window": size.to_string(),
                    "count": lanes.count(window), "velocity": lanes.count(window) / size.hours(), "value": value,
                }),
                (IndexKind::Rising { window, .. }, Feature::Window { size, .. }) => json!({
                    "signal": name, "weight": t.weight, "window": size.to_string(),
                    "count": lanes.count(window), "count_2w": lanes.count2(window),
                    "acceleration": weight_float(lanes.rise_fixed(window)) / size.hours(), "value": value,
                }),
                (IndexKind::Hot { kind, half_life }, Feature::HalfLife { size, .. }) => json!({
                    "signal": name, "weight": t.weight, "half_life": size.to_string(),
                    "decay": decay_sum(item.epochs(kind, half_life), size.ms(), self.clock), "value": value,
                }),
                _ => json!({"signal": name, "weight": t.weight, "total": lanes.total(), "value": value}),
            };
            terms.push(term);
        }
        let meta = item.meta();
        json!({
            "profile": self.base.as_str(),
            "creator": meta.and_then(|m| m.creator.clone()),
            "category": meta.and_then(|m| m.category.clone()),
            "terms": terms,
        })
    }
}
