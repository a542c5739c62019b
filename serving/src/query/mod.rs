//! The ranking engine over a published [`View`]: parse a request ([`RankParams`]),
//! rank ([`rank`]) and describe one item ([`item_view`]).
//!
//! Rankings never scan all items: a single-signal ranking walks one ordered index, a blend
//! of several signal types runs the threshold algorithm over the per-type indexes. Scores and ties follow SPEC §3: score descending, then id ascending; only
//! items scoring above 0 are listed (for `new`: items with a `created_at`); deleted items
//! never are. Paging is by an opaque cursor (an offset into the ranking of the snapshot the
//! next request reads).

mod blend;
pub mod cluster;
mod cohort;
mod error;
pub mod foryou;
mod item;
mod params;
pub mod personal;
mod score;
mod search;
mod topk;
mod user;

use serde::Serialize;
use serde_json::Value;

use tidal_core::Config;
use tidal_sinks::View;

pub use blend::{Personal, Transforms};
pub use error::{QueryError, QueryErrorKind, repeated};
pub use foryou::preference;
pub use item::{CohortFeatures, CohortSignal, ItemView, SignalFeatures, item_view, item_view_in};
pub use params::{
    Base, DEFAULT_LIMIT, Feature, MAX_LIMIT, MAX_OFFSET, RankParams, Term, encode_cursor, parse_cohort, parse_flag,
    parse_min_lsn,
};
pub use user::{CreatorAffinity, UserInfo, creator_names, user_view};

use score::Scorer;

/// One ranked item.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct RankedItem {
    /// Item id.
    pub id: String,
    /// Its score (for `new`: `created_at` in ms).
    pub score: f64,
    /// 1-based position in the whole ranking.
    pub rank: usize,
    /// With `explain=1`: the item's features and score terms.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub features: Option<Value>,
}

/// The state a ranking was computed from.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct AsOf {
    /// The serving clock (ms).
    pub clock: u64,
    /// The last LSN applied.
    pub lsn: u64,
}

/// A page of a ranking, in SPEC §5's response shape.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Ranking {
    /// The items of this page.
    pub items: Vec<RankedItem>,
    /// The cursor of the next page; `null` on the last one.
    pub next_cursor: Option<String>,
    /// The snapshot answered from.
    pub as_of: AsOf,
    /// `true` when the cohort asked for is a composite never declared: its counts are
    /// estimated under independence.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub estimated: Option<bool>,
    /// For a ranking scoped to a cohort: where its cohort counts stand, when they are behind
    /// `as_of` (while the counts of a cohort just declared are built, the rest of the state
    /// goes on without them; a read with `min_lsn` waits for both).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cohorts_as_of: Option<AsOf>,
}

/// Where the cohort counts of `view` stand, if a ranking by `params` reads them and they are
/// behind the rest of the state.
pub fn cohorts_as_of(view: &View, params: &RankParams) -> Option<AsOf> {
    let at = view.cohort_frontier();
    (params.cohort.is_some() && at < view.frontier).then(|| AsOf {
        clock: view.cohort_clock_ms(),
        lsn: view.cohort_lsn(),
    })
}

/// Ranks the items of every shard of `view` as `params` asks.
///
/// `config` must be the schema `params` was parsed with; it names the signal types in
/// `explain` output. Currently every parsed request can be answered, so this returns `Ok`;
/// the `Result` leaves room for requests that need state a snapshot may lack.
pub fn rank(view: &View, config: &Config, params: &RankParams) -> Result<Ranking, QueryError> {
    let mut r = rank_items(view, config, params)?;
    r.cohorts_as_of = cohorts_as_of(view, params);
    Ok(r)
}

fn rank_items(view: &View, config: &Config, params: &RankParams) -> Result<Ranking, QueryError> {
    let as_of = AsOf {
        clock: view.clock_ms(),
        lsn: view.lsn(),
    };
    let ctx = personal::Context::new(view, params)?;
    let need = params.offset + params.limit + 1;
    if params.q.is_some() {
        let found = search::search(view, params, &ctx, config, need, None);
        let mut r = page(
            &found.items,
            params,
            as_of,
            |f| (&f.id, f.score),
            |i| found.explain(i, params),
        );
        r.estimated = ctx.cohort.as_ref().is_some_and(|c| c.estimated).then_some(true);
        return Ok(r);
    }
    if params.base == Base::ForYou {
        let ranked = foryou::for_you(view, params, &ctx, config, need);
        return Ok(page(
            &ranked.items,
            params,
            as_of,
            |s| (&s.c.id, s.score),
            |i| ranked.explain(i, params),
        ));
    }
    let scorer = Scorer::new(view.clock_ms(), params);
    if scorer.lists.is_empty() && params.base != Base::Following {
        // Every weight is 0: every score is 0, and only positive scores are listed.
        return Ok(Ranking {
            items: Vec::new(),
            next_cursor: None,
            as_of,
            estimated: None,
            cohorts_as_of: None,
        });
    }
    let page_end = params.offset + params.limit;
    let hits = topk::top(view, &scorer, params, page_end + 1, &ctx);
    let next_cursor = (hits.len() > page_end).then(|| encode_cursor(page_end));
    let items = hits
        .into_iter()
        .enumerate()
        .skip(params.offset)
        .take(params.limit)
        .map(|(i, h)| RankedItem {
            id: h.id.to_string(),
            score: h.score,
            rank: i + 1,
            features: params.explain.then(|| explain(view, &ctx, &scorer, &h, params, config)),
        })
        .collect();
    Ok(Ranking {
        items,
        next_cursor,
        as_of,
        estimated: ctx.cohort.as_ref().is_some_and(|c| c.estimated).then_some(true),
        cohorts_as_of: None,
    })
}

/// A ranking's order (SPEC §3) of two items given as (score, id): score descending, then id
/// ascending.
pub(crate) fn ranking_order(a: (f64, &str), b: (f64, &str)) -> std::cmp::Ordering {
    b.0.total_cmp(&a.0).then_with(|| a.1.as_bytes().cmp(b.1.as_bytes()))
}

/// The page `params` asks for of `ranked` (the ranking's first items, one past the page if
/// there are more): each item's id and score by `id_score`, its `explain` by `explain`.
pub(crate) fn page<'a, T>(
    ranked: &'a [T],
    params: &RankParams,
    as_of: AsOf,
    id_score: impl Fn(&'a T) -> (&'a String, f64),
    explain: impl Fn(usize) -> Value,
) -> Ranking {
    let page_end = params.offset + params.limit;
    let next_cursor = (ranked.len() > page_end).then(|| encode_cursor(page_end));
    let items = ranked
        .iter()
        .enumerate()
        .skip(params.offset)
        .take(params.limit)
        .map(|(i, t)| {
            let (id, score) = id_score(t);
            RankedItem {
                id: id.clone(),
                score,
                rank: i + 1,
                features: params.explain.then(|| explain(i)),
            }
        })
        .collect();
    Ranking {
        items,
        next_cursor,
        as_of,
        estimated: None,
        cohorts_as_of: None,
    }
}

/// `explain=1` of one hit: its features and terms, and its counts in the cohort if any.
fn explain(
    view: &View,
    ctx: &personal::Context,
    scorer: &Scorer,
    hit: &topk::Hit<'_>,
    params: &RankParams,
    config: &Config,
) -> Value {
    let mut v = scorer.explain(hit.entry, config);
    if let (Some(sel), Some(shard)) = (&ctx.cohort, personal::shard_of_key(view, hit.key))
        && let Some(obj) = v.as_object_mut()
    {
        obj.insert(
            "cohort".into(),
            personal::explain_cohort(shard, sel, hit.key, params, config),
        );
    }
    v
}
