//! `q=`: text search (SPEC §12) over the process's text index.
//!
//! Without `profile=`, items are ranked by BM25 alone: the index's best matches, each checked
//! against the view (listable, admitted by the filters), deeper until the page is full. With a
//! profile, the profile's top `candidates` (its own ranking, with `cohort=` and `user=`: "search
//! within cohort trending") that match the text are ranked by
//! `w_text · bm25 / max bm25 + w_profile · score / max score` (maxima over the matching
//! candidates; a maximum that is not positive makes its term 0). Every listed item matches
//! the text; `max_per_creator` is applied to the fused order.

use std::collections::HashMap;

use serde_json::{Value, json};

use tidal_core::Config;
use tidal_sinks::{TextStats, View};

use super::foryou;
use super::params::{Base, RankParams};
use super::personal::Context;
use super::score::Scorer;
use super::topk::{self, Diversity, Hit};

/// The deepest the BM25-alone ranking asks the index for.
const MAX_DEPTH: usize = 100_000;

/// A text-ranked item: its score (the fused one) and its terms.
pub(crate) struct Found {
    pub(crate) id: String,
    pub(crate) score: f64,
    pub(crate) creator: Option<String>,
    category: Option<String>,
    bm25: f64,
    /// The profile's score (`None`: BM25 alone).
    profile: Option<f64>,
}

/// A text ranking's first `need` items and the maxima `explain` reports.
pub(crate) struct Search {
    pub(crate) items: Vec<Found>,
    /// The best BM25 listed (BM25 alone) or among the matching candidates.
    pub(crate) max_bm25: f64,
    max_score: f64,
}

/// One of a profile's candidates, as the fusion takes it: in the profile's order.
pub(crate) struct Row {
    pub(crate) id: String,
    pub(crate) score: f64,
    pub(crate) creator: Option<String>,
    pub(crate) category: Option<String>,
    /// Its BM25 (`None`: it does not match the text).
    pub(crate) bm25: Option<f64>,
}

impl From<foryou::Picked> for Row {
    fn from(s: foryou::Picked) -> Row {
        Row {
            id: s.c.id,
            score: s.score,
            creator: s.c.creator,
            category: s.c.category,
            bm25: s.c.bm25,
        }
    }
}

impl Row {
    fn of(hit: &Hit<'_>) -> Row {
        let meta = hit.entry.meta();
        Row {
            id: hit.id.to_string(),
            score: hit.score,
            creator: meta.and_then(|m| m.creator.clone()),
            category: meta.and_then(|m| m.category.clone()),
            bm25: None,
        }
    }
}

/// Ranks `params.q` over `view` (see the module docs). `stats`: the corpus statistics of a
/// cluster (`None`: the process's own).
pub(crate) fn search(
    view: &View,
    params: &RankParams,
    ctx: &Context,
    config: &Config,
    need: usize,
    stats: Option<&TextStats>,
) -> Search {
    let empty = Search {
        items: Vec::new(),
        max_bm25: 0.0,
        max_score: 0.0,
    };
    let (Some(q), Some(text)) = (params.q.as_deref(), view.text.as_deref()) else {
        return empty;
    };
    text.refresh(params.min_lsn.is_some());
    if !params.profile_given {
        let mut depth = (2 * need).max(64);
        loop {
            let hits = text.search(q, depth, stats);
            let exhausted = hits.len() < depth;
            let mut found: Vec<Hit<'_>> = hits
                .iter()
                .filter_map(|(id, bm25)| topk::admit_id(view, params, ctx, id, f64::from(*bm25)))
                .collect();
            found.sort_unstable();
            let max_bm25 = found.first().map_or(0.0, |h| h.score);
            let mut diversity = Diversity::new(params.max_per_creator);
            let items: Vec<Found> = found
                .iter()
                .filter(|h| diversity.accept(h.entry))
                .take(need)
                .map(|hit| {
                    let row = Row::of(hit);
                    Found {
                        id: row.id,
                        score: hit.score,
                        creator: row.creator,
                        category: row.category,
                        bm25: hit.score,
                        profile: None,
                    }
                })
                .collect();
            if items.len() >= need || exhausted || depth >= MAX_DEPTH {
                return Search {
                    items,
                    max_bm25,
                    max_score: 0.0,
                };
            }
            depth = (depth * 4).min(MAX_DEPTH);
        }
    }
    // The profile's candidates, then their BM25.
    let mut rows = if params.base == Base::ForYou {
        let mut p = params.clone();
        p.max_per_creator = None;
        let ranked = foryou::for_you(view, &p, ctx, config, params.personal.candidates);
        ranked.items.into_iter().map(Row::from).collect()
    } else {
        profile_rows(view, params, ctx)
    };
    score_rows(text, q, &mut rows, stats);
    fuse(rows, params, need)
}

/// The profile's first `candidates` items of `view` (its own ranking, with `cohort=` and
/// `user=`; no `max_per_creator`).
pub(crate) fn profile_rows(view: &View, params: &RankParams, ctx: &Context) -> Vec<Row> {
    let mut p = params.clone();
    p.max_per_creator = None;
    let scorer = Scorer::new(view.clock_ms(), params);
    topk::top(view, &scorer, &p, params.personal.candidates, ctx)
        .iter()
        .map(Row::of)
        .collect()
}

/// Sets each row's BM25 for `q` (`None`: no match).
pub(crate) fn score_rows(text: &tidal_sinks::TextIndex, q: &str, rows: &mut [Row], stats: Option<&TextStats>) {
    let ids: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
    let bm25: HashMap<String, f32> = text.score(q, &ids, stats).into_iter().collect();
    for r in rows.iter_mut() {
        r.bm25 = bm25.get(&r.id).map(|b| f64::from(*b));
    }
}

/// The first `need` of the profile's candidates `rows` that match the text, ranked by
/// `w_text · f(bm25) / max f(bm25) + w_profile · g(score) / max g(score)` (maxima over the
/// matching ones; `f`, `g` the profile's transforms of `text` and `profile`, `linear` by
/// default), `max_per_creator` applied to the fused order.
pub(crate) fn fuse(rows: Vec<Row>, params: &RankParams, need: usize) -> Search {
    let matched: Vec<(Row, f64)> = rows
        .into_iter()
        .filter_map(|r| {
            let b = r.bm25?;
            Some((r, b))
        })
        .collect();
    let w = params.personal;
    let t = w.transforms;
    let max_bm25 = matched.iter().map(|m| m.1).fold(0.0, f64::max);
    let max_score = matched.iter().map(|m| m.0.score).fold(0.0, f64::max);
    let mut fused: Vec<Found> = matched
        .into_iter()
        .map(|(r, b)| Found {
            score: w.w_text * t.text.normalised(b, max_bm25) + w.w_profile * t.profile.normalised(r.score, max_score),
            id: r.id,
            creator: r.creator,
            category: r.category,
            bm25: b,
            profile: Some(r.score),
        })
        .collect();
    fused.sort_unstable_by(|a, b| super::ranking_order((a.score, &a.id), (b.score, &b.id)));
    let keep: Vec<bool> = {
        let mut diversity = Diversity::new(params.max_per_creator);
        fused
            .iter()
            .map(|f| diversity.accept_creator(f.creator.as_deref()))
            .collect()
    };
    let items = fused
        .into_iter()
        .zip(keep)
        .filter_map(|(f, keep)| keep.then_some(f))
        .take(need)
        .collect();
    Search {
        items,
        max_bm25,
        max_score,
    }
}

impl Search {
    /// `explain=1` of item `i`'s text terms.
    pub(crate) fn explain(&self, i: usize, params: &RankParams) -> Value {
        let Some(f) = self.items.get(i) else { return Value::Null };
        let mut v = json!({
            "profile": if params.profile_given { params.profile.as_str() } else { "bm25" },
            "creator": f.creator,
            "category": f.category,
            "q": params.q,
            "bm25": f.bm25,
            "max_bm25": self.max_bm25,
        });
        if let (Some(score), Some(obj)) = (f.profile, v.as_object_mut()) {
            let w = params.personal;
            let t = w.transforms;
            obj.insert("profile_score".into(), json!(score));
            obj.insert("max_profile_score".into(), json!(self.max_score));
            obj.insert(
                "terms".into(),
                json!({
                    "text": w.w_text * t.text.normalised(f.bm25, self.max_bm25),
                    "profile": w.w_profile * t.profile.normalised(score, self.max_score),
                }),
            );
            obj.insert("weights".into(), json!({"text": w.w_text, "profile": w.w_profile}));
            obj.insert(
                "transforms".into(),
                json!({"text": t.text.name(), "profile": t.profile.name()}),
            );
        }
        v
    }
}
