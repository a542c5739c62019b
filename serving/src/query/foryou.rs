//! `for_you` (SPEC §12): what this user should see, in what order.
//!
//! The user's preference vector `p_u` is the join of their pulls (published by their owner
//! worker, [`UserView::pulls`]) with the items' embeddings as of the same version. The
//! candidates are the union of four sources, each already filtered (hidden, blocked, seen
//! unless `filter=all`, and the request's category / creator / tag / exclude): the
//! `candidates` items nearest to `p_u`, the top `candidates` of the popularity source (`hot`
//! over the request's blend), the followed creators' newest `candidates` items and the
//! fresh items (a `created_at` within `personalization.fresh_window`, newest `candidates`). Each is scored
//! `w_sim · cos + w_pop · pop / max pop + w_aff · aff / max aff` (maxima over the candidates;
//! each term first through the profile's transform, `linear` by default: `max f(pop)` then
//! divides `f(pop)`); a user without a vector is ranked by `pop / max pop` alone. The order is score desc, then
//! id asc; `max_per_creator` is applied as the list is filled, and the exploration slots
//! (positions `p` with `⌊(p+1)·x⌋ > ⌊p·x⌋`, `x` the exploration share) take the best cold fresh
//! items not listed yet.

use std::collections::{BinaryHeap, HashMap};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use tidal_core::Config;
use tidal_core::features::{TOTAL_LANE, weight_float};
use tidal_core::flow::{ItemKey, id_hash};
use tidal_core::user::{UserView, cosine};
use tidal_sinks::{ItemEntry, TextStats, View};

use super::params::{Base, RankParams};
use super::personal::{Context, shard_of_key};
use super::ranking_order as order;
use super::score::Scorer;
use super::topk::{self, Diversity, Filters, Hit};

/// The candidate sources, in the order of [`Candidate::ranks`], and their names.
const SOURCES: [&str; 4] = ["nearest", "popular", "followed", "fresh"];
const NEAREST: usize = 0;
const POPULAR: usize = 1;
const FOLLOWED: usize = 2;
const FRESH: usize = 3;

/// One candidate with everything its score needs, found on the process that owns the item
/// ([`gather`]) and ranked where the request arrived ([`select`]): one process gathers from
/// all its shards, a cluster from every process, and the selection is the same.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    /// Item id.
    pub id: String,
    /// Item key.
    pub key: ItemKey,
    /// Creator (for `max_per_creator` and `explain`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creator: Option<String>,
    /// Category (for `explain`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// Its order in each source whose best `candidates` it is among where it was gathered
    /// (nearest: the cosine; popular: the popularity score; followed: its `following`
    /// score; fresh: `created_at`); `None` where it is not.
    pub ranks: [Option<f64>; 4],
    /// `cos(p_u, e_i)`.
    pub sim: f64,
    /// The popularity term, raw.
    pub pop: f64,
    /// The user's affinity with its creator.
    pub aff: f64,
    /// Its signals of every type (counted by weight): cold below `cold_signals`.
    pub signals: f64,
    /// With a text query in a cluster: its BM25 if it matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bm25: Option<f64>,
}

/// A selected candidate: its score, sources (bits in [`SOURCES`] order) and slot.
#[derive(Clone, Debug)]
pub(crate) struct Picked {
    pub(crate) c: Candidate,
    pub(crate) score: f64,
    sources: u8,
    cold: bool,
    explored: bool,
}

/// A `for_you` ranking: the first `need` items, and what `explain` says of each.
pub(crate) struct ForYou {
    pub(crate) items: Vec<Picked>,
    /// Whether the user has a preference vector.
    has_vector: bool,
    max_pop: f64,
    max_aff: f64,
}

/// The user's preference vector as of `view` (SPEC §12), if any pull reaches an embedded item.
pub fn preference(view: &View, user: &UserView, config: &Config) -> Option<Vec<f64>> {
    preference_with(view.clock_ms(), user, config, |item| {
        let key = ItemKey::from(item);
        shard_of_key(view, key)?.entry(key)?.embedding()
    })
}

/// [`preference`] at clock `clock` with the embeddings `embedding` gives (a cluster's
/// gathered from every process).
pub fn preference_with<'e>(
    clock: u64,
    user: &UserView,
    config: &Config,
    embedding: impl FnMut(u32) -> Option<&'e [f32]>,
) -> Option<Vec<f64>> {
    let p = &config.personalization;
    user.preference(clock, p.half_life.ms(), p.horizon.ms(), embedding)
        .filter(|v| v.iter().any(|x| *x != 0.0))
}

/// Ranks the first `need` `for_you` items of `view` for the user of `ctx`.
pub(crate) fn for_you(view: &View, params: &RankParams, ctx: &Context, config: &Config, need: usize) -> ForYou {
    let state = ctx.user.as_ref().and_then(|u| u.state.clone());
    let vector = state.as_deref().and_then(|u| preference(view, u, config));
    let found = gather(view, params, ctx, config, vector.as_deref(), None);
    select(found, params, config, vector.is_some(), need)
}

/// The candidates of `view`'s shards for the user of `ctx` with preference vector `vector`:
/// each source's best `candidates` here, with their terms. With `text` (a query and the
/// cluster's statistics), the BM25 of those that match it.
pub(crate) fn gather(
    view: &View,
    params: &RankParams,
    ctx: &Context,
    config: &Config,
    vector: Option<&[f64]>,
    text: Option<(&str, &TextStats)>,
) -> Vec<Candidate> {
    let clock = view.clock_ms();
    let k = params.personal.candidates;
    let mut found: HashMap<ItemKey, [Option<f64>; 4]> = HashMap::new();
    let mut add = |hit: &Hit<'_>, source: usize| found.entry(hit.key).or_default()[source] = Some(hit.score);
    if let Some(p) = vector {
        for hit in nearest(view, params, ctx, p, k, config.personalization.exact_search) {
            add(&hit, NEAREST);
        }
    }
    let mut popular = params.clone();
    popular.base = Base::Hot;
    popular.max_per_creator = None;
    let pop_scorer = Scorer::new(clock, &popular);
    if !pop_scorer.lists.is_empty() {
        for hit in topk::top(view, &pop_scorer, &popular, k, ctx) {
            add(&hit, POPULAR);
        }
    }
    // The followed creators' newest items.
    let mut followed = topk::followed(view, params, ctx);
    followed.sort_unstable();
    for hit in followed.iter().take(k) {
        add(hit, FOLLOWED);
    }
    // The newest items, those within the fresh window: the newest fresh items (every fresh
    // item is newer than every other).
    let mut newest = popular.clone();
    newest.base = Base::New;
    newest.terms.clear();
    let new_scorer = Scorer::new(clock, &newest);
    let fresh_from = clock.saturating_sub(config.personalization.fresh_window.ms());
    for hit in topk::top(view, &new_scorer, &newest, k, ctx) {
        if hit.entry.created_at().is_some_and(|c| c >= fresh_from) {
            add(&hit, FRESH);
        }
    }
    let aff_h = config.personalization.affinity_half_life.ms();
    let state = ctx.user.as_ref().and_then(|u| u.state.as_deref());
    let mut out: Vec<Candidate> = found
        .into_iter()
        .filter_map(|(key, ranks)| {
            let hit = topk::rebind(view, key, 0.0)?;
            let entry = hit.entry;
            let meta = entry.meta();
            Some(Candidate {
                id: hit.id.to_string(),
                key,
                creator: meta.and_then(|m| m.creator.clone()),
                category: meta.and_then(|m| m.category.clone()),
                ranks,
                sim: match (vector, entry.embedding()) {
                    (Some(p), Some(e)) => cosine(p, e),
                    _ => 0.0,
                },
                pop: pop_scorer.score(entry),
                aff: match (state, entry.creator()) {
                    // + 0.0: no negative zero in explain.
                    (Some(u), Some(c)) => u.affinity_at(id_hash(c), aff_h, clock) + 0.0,
                    _ => 0.0,
                },
                signals: signals(entry),
                bm25: None,
            })
        })
        .collect();
    if let (Some((q, stats)), Some(index)) = (text, view.text.as_deref()) {
        let ids: Vec<&str> = out.iter().map(|c| c.id.as_str()).collect();
        let bm25: HashMap<String, f32> = index.score(q, &ids, Some(stats)).into_iter().collect();
        for c in &mut out {
            c.bm25 = bm25.get(&c.id).map(|b| f64::from(*b));
        }
    }
    out
}

/// The first `need` items of the `for_you` ranking of `found` (every process's gathered
/// candidates): each source's best `candidates`, scored `w_sim · f(cos) + w_pop · f(pop) /
/// max f(pop) + w_aff · f(aff) / max f(aff)` with each term's transform `f` (`f(pop) / max
/// f(pop)` alone without a vector), filled in order with `max_per_creator` and the
/// exploration slots.
pub(crate) fn select(
    found: Vec<Candidate>,
    params: &RankParams,
    config: &Config,
    has_vector: bool,
    need: usize,
) -> ForYou {
    let personal = params.personal;
    let mut sources = vec![0u8; found.len()];
    for (s, _) in SOURCES.iter().enumerate() {
        let mut by: Vec<(usize, f64)> = found
            .iter()
            .enumerate()
            .filter_map(|(i, c)| Some((i, c.ranks[s]?)))
            .collect();
        by.sort_unstable_by(|a, b| order((a.1, &found[a.0].id), (b.1, &found[b.0].id)));
        for (i, _) in by.into_iter().take(personal.candidates) {
            sources[i] |= 1 << s;
        }
    }
    let mut scored: Vec<Picked> = found
        .into_iter()
        .zip(sources)
        .filter(|(_, s)| *s != 0)
        .map(|(c, sources)| Picked {
            cold: sources & (1 << FRESH) != 0 && c.signals < config.personalization.cold_signals,
            c,
            score: 0.0,
            sources,
            explored: false,
        })
        .collect();
    let t = personal.transforms;
    let max_pop = scored.iter().map(|s| s.c.pop).fold(0.0, f64::max);
    let max_aff = scored.iter().map(|s| s.c.aff).fold(0.0, f64::max);
    for s in &mut scored {
        let pop = t.pop.normalised(s.c.pop, max_pop);
        s.score = if has_vector {
            personal.w_sim * t.sim.apply(s.c.sim)
                + personal.w_pop * pop
                + personal.w_aff * t.aff.normalised(s.c.aff, max_aff)
        } else {
            pop
        };
    }
    scored.sort_unstable_by(|a, b| order((a.score, &a.c.id), (b.score, &b.c.id)));

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
                !std::mem::replace(&mut used[i], true) && diversity.accept_creator(scored[i].c.creator.as_deref())
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
    let mut slots: Vec<Option<Picked>> = scored.into_iter().map(Some).collect();
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

impl ForYou {
    /// `explain=1` of item `i`: every term raw and weighted, its sources and slot kind.
    pub(crate) fn explain(&self, i: usize, params: &RankParams) -> Value {
        let Some(s) = self.items.get(i) else { return Value::Null };
        let w = params.personal;
        let t = w.transforms;
        let sources: Vec<&str> = SOURCES
            .iter()
            .enumerate()
            .filter(|(bit, _)| s.sources & (1 << bit) != 0)
            .map(|(_, name)| *name)
            .collect();
        let (sim_w, pop_w, aff_w) = if self.has_vector {
            (w.w_sim, w.w_pop, w.w_aff)
        } else {
            (0.0, 1.0, 0.0)
        };
        json!({
            "profile": params.profile,
            "creator": s.c.creator,
            "category": s.c.category,
            "vector": self.has_vector,
            "sim": s.c.sim,
            "pop": s.c.pop,
            "aff": s.c.aff,
            "max_pop": self.max_pop,
            "max_aff": self.max_aff,
            "terms": {
                "sim": sim_w * t.sim.apply(s.c.sim),
                "pop": pop_w * t.pop.normalised(s.c.pop, self.max_pop),
                "aff": aff_w * t.aff.normalised(s.c.aff, self.max_aff),
            },
            "weights": {"sim": sim_w, "pop": pop_w, "aff": aff_w},
            "transforms": {"sim": t.sim.name(), "pop": t.pop.name(), "aff": t.aff.name()},
            "sources": sources,
            "cold": s.cold,
            "exploration": s.explored,
            "score": s.score,
        })
    }
}

/// The item's signals of every type (counted by weight).
fn signals(entry: &ItemEntry) -> f64 {
    entry.all_lanes().map(|(_, l)| weight_float(l.0[TOTAL_LANE])).sum()
}

/// Nearest items asked for beyond those a user's filter is known to leave out: deleted
/// items not yet out of the index, blocked creators' items.
const NEAREST_SLACK: usize = 16;

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
        // The user's seen and hidden items are the ones likely near their vector.
        let slack = ctx.user.as_ref().map_or(0, |u| u.exclude.len() as usize) + NEAREST_SLACK;
        for key in snapshot.ann().search(&query, k, slack, admit) {
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
