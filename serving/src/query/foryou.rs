//! `for_you` (SPEC §12): what this user should see, in what order.
//!
//! The user's preference vector `p_u` is the join of their pulls (published by their owner
//! worker, [`UserView::pulls`]) with the items' embeddings as of the same version. The
//! candidates are the union of four sources, each already filtered (hidden, blocked, seen
//! unless `filter=all`, and the request's category / creator / tag / exclude): the
//! `candidates` items nearest to `p_u`, the top `candidates` of the popularity source (`hot`
//! over the request's blend), the followed creators' newest `candidates` items and the
//! fresh items (a `created_at` within `personalization.fresh_window`, newest `candidates`). Each is scored
//! `w_sim · cos + w_pop · pop / max pop + w_aff · aff / max aff` (maxima over the candidates);
//! a user without a vector is ranked by `pop / max pop` alone. The order is score desc, then
//! id asc; `max_per_creator` is applied as the list is filled, and the exploration slots
//! (positions `p` with `⌊(p+1)·x⌋ > ⌊p·x⌋`, `x` the exploration share) take the best cold fresh
//! items not listed yet.

use std::collections::{BinaryHeap, HashMap};

use serde_json::{Value, json};

use tidal_core::Config;
use tidal_core::features::{TOTAL_LANE, weight_float};
use tidal_core::flow::{ItemKey, id_hash};
use tidal_core::user::{UserView, cosine};
use tidal_sinks::{ItemEntry, View};

use super::params::{Base, RankParams};
use super::personal::{Context, shard_of_key};
use super::score::{Scorer, ratio};
use super::topk::{self, Diversity, Filters, Hit};

/// Where a candidate came from (bits).
const NEAREST: u8 = 1;
const POPULAR: u8 = 2;
const FOLLOWED: u8 = 4;
const FRESH: u8 = 8;

/// A scored candidate and its terms.
pub(crate) struct Scored<'s> {
    pub(crate) hit: Hit<'s>,
    sim: f64,
    pop: f64,
    aff: f64,
    sources: u8,
    cold: bool,
    explored: bool,
}

/// A `for_you` ranking: the first `need` items, and what `explain` says of each.
pub(crate) struct ForYou<'s> {
    pub(crate) items: Vec<Scored<'s>>,
    /// Whether the user has a preference vector.
    has_vector: bool,
    max_pop: f64,
    max_aff: f64,
}

/// The user's preference vector as of `view` (SPEC §12), if any pull reaches an embedded item.
pub fn preference(view: &View, user: &UserView, config: &Config) -> Option<Vec<f64>> {
    let p = &config.personalization;
    user.preference(view.clock_ms(), p.half_life.ms(), p.horizon.ms(), |item| {
        let key = ItemKey::from(item);
        shard_of_key(view, key)?.entry(key)?.embedding()
    })
    .filter(|v| v.iter().any(|x| *x != 0.0))
}

/// Ranks the first `need` `for_you` items of `view` for the user of `ctx`.
pub(crate) fn for_you<'s>(
    view: &'s View,
    params: &'s RankParams,
    ctx: &'s Context,
    config: &Config,
    need: usize,
) -> ForYou<'s> {
    let clock = view.clock_ms();
    let personal = params.personal;
    let state = ctx.user.as_ref().and_then(|u| u.state.clone());
    let vector = state.as_deref().and_then(|u| preference(view, u, config));
    let mut found: HashMap<ItemKey, u8> = HashMap::new();
    let mut add = |key: ItemKey, source: u8| *found.entry(key).or_insert(0) |= source;
    if let Some(p) = &vector {
        let exact = config.personalization.exact_search;
        for hit in nearest(view, params, ctx, p, personal.candidates, exact) {
            add(hit.key, NEAREST);
        }
    }
    let mut popular = params.clone();
    popular.base = Base::Hot;
    popular.max_per_creator = None;
    let pop_scorer = Scorer::new(clock, &popular);
    if !pop_scorer.lists.is_empty() {
        for hit in topk::top(view, &pop_scorer, &popular, personal.candidates, ctx) {
            add(hit.key, POPULAR);
        }
    }
    // The followed creators' newest items.
    let mut followed = topk::followed(view, params, ctx);
    followed.sort_unstable();
    for hit in followed.into_iter().take(personal.candidates) {
        add(hit.key, FOLLOWED);
    }
    let mut newest = popular.clone();
    newest.base = Base::New;
    newest.terms.clear();
    let new_scorer = Scorer::new(clock, &newest);
    let fresh_from = clock.saturating_sub(config.personalization.fresh_window.ms());
    for hit in topk::top(view, &new_scorer, &newest, personal.candidates, ctx) {
        if hit.entry.created_at().is_some_and(|c| c >= fresh_from) {
            add(hit.key, FRESH);
        }
    }
    // The terms, and their maxima over the candidates.
    let aff_h = config.personalization.affinity_half_life.ms();
    let mut scored: Vec<Scored<'s>> = found
        .into_iter()
        .filter_map(|(key, sources)| Some((topk::rebind(view, key, 0.0)?, sources)))
        .map(|(hit, sources)| {
            let sim = match (&vector, hit.entry.embedding()) {
                (Some(p), Some(e)) => cosine(p, e),
                _ => 0.0,
            };
            let pop = pop_scorer.score(hit.entry);
            let aff = match (&state, hit.entry.creator()) {
                // + 0.0: no negative zero in explain.
                (Some(u), Some(c)) => u.affinity_at(id_hash(c), aff_h, clock) + 0.0,
                _ => 0.0,
            };
            let cold = sources & FRESH != 0 && signals(hit.entry) < config.personalization.cold_signals;
            Scored {
                hit,
                sim,
                pop,
                aff,
                sources,
                cold,
                explored: false,
            }
        })
        .collect();
    let max_pop = scored.iter().map(|s| s.pop).fold(0.0, f64::max);
    let max_aff = scored.iter().map(|s| s.aff).fold(0.0, f64::max);
    let has_vector = vector.is_some();
    for s in &mut scored {
        s.hit.score = if has_vector {
            personal.w_sim * s.sim + personal.w_pop * ratio(s.pop, max_pop) + personal.w_aff * ratio(s.aff, max_aff)
        } else {
            ratio(s.pop, max_pop)
        };
    }
    scored.sort_unstable_by(|a, b| a.hit.cmp(&b.hit));

    // Fill the list: exploration slots take the best cold item left, the others the best
    // item left; max_per_creator counts both (an item it passes over is not offered again).
    let share = personal.exploration;
    let cold: Vec<usize> = (0..scored.len()).filter(|i| scored[*i].cold).collect();
    let (mut regular, mut cold) = (0..scored.len(), cold.into_iter());
    let mut used = vec![false; scored.len()];
    let mut diversity = Diversity::new(params.max_per_creator);
    let mut order: Vec<(usize, bool)> = Vec::new();
    while order.len() < need {
        let p = order.len() as f64;
        let explore = share > 0.0 && ((p + 1.0) * share).floor() > (p * share).floor();
        let mut take = |mut from: &mut dyn Iterator<Item = usize>| {
            Iterator::find(&mut from, |&i| {
                !std::mem::replace(&mut used[i], true) && diversity.accept(scored[i].hit.entry)
            })
        };
        let mut picked = if explore {
            take(&mut cold).map(|i| (i, true))
        } else {
            None
        };
        if picked.is_none() {
            picked = take(&mut regular).map(|i| (i, false));
        }
        match picked {
            Some(p) => order.push(p),
            None => break,
        }
    }
    let mut slots: Vec<Option<Scored<'s>>> = scored.into_iter().map(Some).collect();
    let items = order
        .into_iter()
        .filter_map(|(i, explored)| {
            let mut s = slots[i].take()?;
            s.explored = explored;
            Some(s)
        })
        .collect();
    ForYou {
        items,
        has_vector,
        max_pop,
        max_aff,
    }
}

impl ForYou<'_> {
    /// `explain=1` of item `i`: every term raw and weighted, its sources and slot kind.
    pub(crate) fn explain(&self, i: usize, params: &RankParams) -> Value {
        let Some(s) = self.items.get(i) else { return Value::Null };
        let w = params.personal;
        let sources: Vec<&str> = [
            (NEAREST, "nearest"),
            (POPULAR, "popular"),
            (FOLLOWED, "followed"),
            (FRESH, "fresh"),
        ]
        .iter()
        .filter(|(bit, _)| s.sources & bit != 0)
        .map(|(_, name)| *name)
        .collect();
        let meta = s.hit.entry.meta();
        let (sim_w, pop_w, aff_w) = if self.has_vector {
            (w.w_sim, w.w_pop, w.w_aff)
        } else {
            (0.0, 1.0, 0.0)
        };
        json!({
            "profile": params.profile,
            "creator": meta.and_then(|m| m.creator.clone()),
            "category": meta.and_then(|m| m.category.clone()),
            "vector": self.has_vector,
            "sim": s.sim,
            "pop": s.pop,
            "aff": s.aff,
            "max_pop": self.max_pop,
            "max_aff": self.max_aff,
            "terms": {
                "sim": sim_w * s.sim,
                "pop": pop_w * ratio(s.pop, self.max_pop),
                "aff": aff_w * ratio(s.aff, self.max_aff),
            },
            "weights": {"sim": sim_w, "pop": pop_w, "aff": aff_w},
            "sources": sources,
            "cold": s.cold,
            "exploration": s.explored,
            "score": s.hit.score,
        })
    }
}

/// The item's signals of every type (counted by weight).
fn signals(entry: &ItemEntry) -> f64 {
    entry.all_lanes().map(|(_, l)| weight_float(l.0[TOTAL_LANE])).sum()
}

/// The `k` embedded items nearest to `p` by cosine over every shard, filtered, best first
/// (score = the cosine as of the view; ties by id): an exact scan of the embedded items when
/// `exact`, else each shard's nearest-item index asked for its `k` nearest admitted items.
fn nearest<'s>(
    view: &'s View,
    params: &'s RankParams,
    ctx: &'s Context,
    p: &[f64],
    k: usize,
    exact: bool,
) -> Vec<Hit<'s>> {
    let filters = Filters::new(params, ctx);
    let mut best: BinaryHeap<Hit<'s>> = BinaryHeap::new();
    let offer = |hit: Hit<'s>, best: &mut BinaryHeap<Hit<'s>>| {
        best.push(hit);
        if best.len() > k {
            best.pop();
        }
    };
    let query: Vec<f32> = p.iter().map(|x| *x as f32).collect();
    for snapshot in &view.shards {
        if exact {
            for (key, item) in snapshot.entries() {
                let Some(e) = item.embedding() else { continue };
                let Some(id) = item.id() else { continue };
                let hit = Hit {
                    score: tidal_core::user::cosine(p, e),
                    id: id.clone(),
                    key,
                    entry: item,
                };
                // The heap's top is the worst kept (Hit orders best first).
                if best.len() >= k && best.peek().is_some_and(|worst| hit >= *worst) {
                    continue;
                }
                if filters.passes(key, id, item) {
                    offer(hit, &mut best);
                }
            }
            continue;
        }
        // A read that waited for its writes also waits (bounded) for the index to have
        // them. Only keys this version has embedded and the filters admit.
        if params.min_lsn.is_some() {
            snapshot
                .ann()
                .wait_for(snapshot.frontier, std::time::Duration::from_secs(1));
        }
        let admit = |key: ItemKey| {
            snapshot
                .entry(key)
                .and_then(|i| Some((i, i.embedding()?, i.id()?)))
                .is_some_and(|(i, _, id)| filters.passes(key, id, i))
        };
        for key in snapshot.ann().search(&query, k, admit) {
            let Some((item, e, id)) = snapshot.entry(key).and_then(|i| Some((i, i.embedding()?, i.id()?))) else {
                continue;
            };
            let hit = Hit {
                score: tidal_core::user::cosine(p, e),
                id: id.clone(),
                key,
                entry: item,
            };
            offer(hit, &mut best);
        }
    }
    best.into_sorted_vec()
}
