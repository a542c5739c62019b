//! Cohort rankings on one shard: an exact cohort's read best first from its map's bounds, an
//! estimated composite's scored over its smallest dimension.

use tidal_core::flow::ItemKey;
use tidal_sinks::Snapshot;

use super::personal::{CohortSel, Counts, cohort_items, counts};
use super::score::Scorer;
use super::topk::{Filters, Hit};

/// An estimated cohort's ranking on one shard, its first `need` items (and every item tying
/// the last): every item with counts in the cohort's smallest dimension is scored, then only
/// the best are looked up and filtered, best first.
pub(super) fn estimated_hits<'s>(
    snapshot: &'s Snapshot,
    scorer: &Scorer,
    filters: &Filters<'_>,
    sel: &CohortSel,
    need: usize,
) -> Vec<Hit<'s>> {
    let mut scored: Vec<(f64, ItemKey)> = Vec::new();
    for key in cohort_items(snapshot, sel) {
        let score = scorer.cohort_score(|kind| counts(snapshot, sel, key, kind));
        if score > 0.0 {
            scored.push((score, key));
        }
    }
    scored.sort_unstable_by(|a, b| b.0.total_cmp(&a.0));
    let mut hits = Vec::new();
    for (score, key) in scored {
        // Past `need` accepted items, only those tying the last one can still rank ahead
        // of it (by id).
        if hits.len() >= need && hits.last().is_some_and(|h: &Hit<'_>| score < h.score) {
            break;
        }
        hits.extend(filters.hit(snapshot, key, |_| score));
    }
    hits.sort_unstable();
    hits
}

/// An exact cohort's ranking on one shard, best first, read lazily from the cohort's map
/// ([`CohortLanes::ranked`](tidal_sinks::CohortLanes::ranked): only the parts whose bounds
/// reach the next item). Each run of equal scores is gathered, filtered and put in hit order
/// before its first is given.
pub(super) struct CohortWalk<'s> {
    ranked: Box<dyn Iterator<Item = (f64, ItemKey)> + 's>,
    snapshot: &'s Snapshot,
    filters: Filters<'s>,
    /// The first item of the next run.
    peeked: Option<(f64, ItemKey)>,
    run: std::vec::IntoIter<Hit<'s>>,
}

impl<'s> CohortWalk<'s> {
    pub(super) fn new(
        snapshot: &'s Snapshot,
        scorer: &'s Scorer,
        filters: Filters<'s>,
        sel: &CohortSel,
    ) -> CohortWalk<'s> {
        let ranked: Box<dyn Iterator<Item = (f64, ItemKey)> + 's> = match snapshot.cohort(sel.ids[0]) {
            Some(map) => Box::new(map.ranked(
                |b| scorer.cohort_bound(b),
                |lanes| {
                    scorer.cohort_score(|kind| lanes.iter().find(|(k, _)| *k == kind).map(|(_, l)| Counts::Exact(**l)))
                },
            )),
            None => Box::new(std::iter::empty()),
        };
        CohortWalk {
            ranked,
            snapshot,
            filters,
            peeked: None,
            run: Vec::new().into_iter(),
        }
    }

    pub(super) fn next(&mut self) -> Option<Hit<'s>> {
        loop {
            if let Some(hit) = self.run.next() {
                return Some(hit);
            }
            let (score, first) = self.peeked.take().or_else(|| self.ranked.next())?;
            let mut keys = vec![first];
            for (s, key) in self.ranked.by_ref() {
                if s != score {
                    self.peeked = Some((s, key));
                    break;
                }
                keys.push(key);
            }
            let mut run: Vec<Hit<'s>> = keys
                .into_iter()
                .filter_map(|key| self.filters.hit(self.snapshot, key, |_| score))
                .collect();
            run.sort_unstable();
            self.run = run.into_iter();
        }
    }
}
