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
use tidal_core::flow::ItemKey;
use tidal_sinks::View;

use super::foryou;
use super::params::{Base, RankParams};
use super::personal::Context;
use super::score::{Scorer, ratio};
use super::topk::{self, Diversity, Hit};

/// The deepest the BM25-alone ranking asks the index for.
const MAX_DEPTH: usize = 100_000;

/// A text-ranked item: the hit (its score the fused one) and its terms.
pub(crate) struct Found<'s> {
    pub(crate) hit: Hit<'s>,
    bm25: f64,
    /// The profile's score (`None`: BM25 alone).
    profile: Option<f64>,
}

/// A text ranking's first `need` items and the maxima `explain` reports.
pub(crate) struct Search<'s> {
    pub(crate) items: Vec<Found<'s>>,
    max_bm25: f64,
    max_score: f64,
}

/// Ranks `params.q` over `view` (see the module docs).
pub(crate) fn search<'s>(
    view: &'s View,
    params: &'s RankParams,
    ctx: &'s Context,
    config: &Config,
    need: usize,
) -> Search<'s> {
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
            let hits = text.search(q, depth);
            let exhausted = hits.len() < depth;
            let mut found: Vec<Hit<'s>> = hits
                .iter()
                .filter_map(|(id, bm25)| topk::admit_id(view, params, ctx, id, f64::from(*bm25)))
                .collect();
            found.sort_unstable();
            let max_bm25 = found.first().map_or(0.0, |h| h.score);
            let mut diversity = Diversity::new(params.max_per_creator);
            let items: Vec<Found<'s>> = found
                .into_iter()
                .filter(|h| diversity.accept(h.entry))
                .take(need)
                .map(|hit| Found {
                    bm25: hit.score,
                    hit,
                    profile: None,
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
    let n = params.personal.candidates;
    let mut p = params.clone();
    p.max_per_creator = None;
    // (Ranked with a local copy of the parameters: taken back to the view's lifetime.)
    let ranked: Vec<(ItemKey, f64)> = if params.base == Base::ForYou {
        let ranked = foryou::for_you(view, &p, ctx, config, n);
        ranked.items.iter().map(|s| (s.hit.key, s.hit.score)).collect()
    } else {
        let scorer = Scorer::new(view.clock_ms(), params);
        let top = topk::top(view, &scorer, &p, n, ctx);
        top.iter().map(|h| (h.key, h.score)).collect()
    };
    let candidates: Vec<Hit<'s>> = ranked
        .iter()
        .filter_map(|(key, score)| topk::rebind(view, *key, *score))
        .collect();
    let ids: Vec<&str> = candidates.iter().map(|h| &*h.id).collect();
    let bm25: HashMap<String, f32> = text.score(q, &ids).into_iter().collect();
    let mut matched: Vec<(Hit<'s>, f64)> = candidates
        .into_iter()
        .filter_map(|h| {
            let b = f64::from(*bm25.get(&*h.id)?);
            Some((h, b))
        })
        .collect();
    let max_bm25 = matched.iter().map(|m| m.1).fold(0.0, f64::max);
    let max_score = matched.iter().map(|m| m.0.score).fold(0.0, f64::max);
    let w = params.personal;
    let mut fused: Vec<Found<'s>> = matched
        .drain(..)
        .map(|(mut hit, b)| {
            let profile = hit.score;
            hit.score = w.w_text * ratio(b, max_bm25) + w.w_profile * ratio(profile, max_score);
            Found {
                hit,
                bm25: b,
                profile: Some(profile),
            }
        })
        .collect();
    fused.sort_unstable_by(|a, b| a.hit.cmp(&b.hit));
    let mut diversity = Diversity::new(params.max_per_creator);
    let items = fused
        .into_iter()
        .filter(|f| diversity.accept(f.hit.entry))
        .take(need)
        .collect();
    Search {
        items,
        max_bm25,
        max_score,
    }
}

impl Search<'_> {
    /// `explain=1` of item `i`'s text terms.
    pub(crate) fn explain(&self, i: usize, params: &RankParams) -> Value {
        let Some(f) = self.items.get(i) else { return Value::Null };
        let meta = f.hit.entry.meta();
        let mut v = json!({
            "profile": if params.profile_given { params.profile.as_str() } else { "bm25" },
            "creator": meta.and_then(|m| m.creator.clone()),
            "category": meta.and_then(|m| m.category.clone()),
            "q": params.q,
            "bm25": f.bm25,
            "max_bm25": self.max_bm25,
        });
        if let (Some(score), Some(obj)) = (f.profile, v.as_object_mut()) {
            let w = params.personal;
            obj.insert("profile_score".into(), json!(score));
            obj.insert("max_profile_score".into(), json!(self.max_score));
            obj.insert(
                "terms".into(),
                json!({
                    "text": w.w_text * ratio(f.bm25, self.max_bm25),
                    "profile": w.w_profile * ratio(score, self.max_score),
                }),
            );
            obj.insert("weights".into(), json!({"text": w.w_text, "profile": w.w_profile}));
        }
        v
    }
}
