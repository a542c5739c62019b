//! Rankings in a cluster: every process ranks its own shards ([`candidates`]) as of one
//! common frontier, and the process that was asked merges the lists ([`merge`]) exactly as
//! [`rank`](super::rank) merges the shards of one process — score descending, then id; ties
//! and `max_per_creator` applied to the merged order.
//!
//! A process applies `max_per_creator` to its own list too: an item its own items push out is
//! pushed out of the merged ranking as well, so nothing the merge needs is lost. A list that
//! was cut at the length asked for may hold more; when the merge uses all of it before the
//! page is full, [`merge`] says which list must be fetched longer.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use tidal_core::Config;
use tidal_core::time::Time;
use tidal_core::user::{Edges, HIDDEN, LIKED, Pull, SEEN, UserView};
use tidal_sinks::{TextStats, View};

use super::error::QueryError;
use super::foryou;
use super::params::{Base, RankParams, encode_cursor};
use super::personal::Context;
use super::score::Scorer;
use super::search::{self, Row};
use super::{AsOf, RankedItem, Ranking, page, ranking_order, topk};

/// What the process a ranking was asked of sends the others (`POST /v1/internal/share` and
/// `/v1/internal/for_you`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ShareRequest {
    /// The common frontier (a mark every process cuts) to answer at.
    pub frontier: Time,
    /// The mark the asking process's cohort counts are cut at: the share's must have reached
    /// it (they lag `frontier` while a broad cohort just declared is counted).
    #[serde(default)]
    pub cohorts: Time,
    /// How many items.
    pub need: usize,
    /// The ranking's query parameters.
    pub pairs: Vec<(String, String)>,
    /// With `user=`: the user's state as its owner process answered (`None`: it has none).
    #[serde(default)]
    pub user: Option<UserState>,
    /// With `q=`: the text statistics of every process, summed.
    #[serde(default)]
    pub text: Option<TextStats>,
    /// `for_you`: the user's preference vector.
    #[serde(default)]
    pub vector: Option<Vec<f64>>,
}

/// A user's state as it crosses between processes: what rankings read of the owner's
/// [`UserView`] (the sets as sorted item keys, affinity sums and pulls exactly).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct UserState {
    /// Seen item keys.
    pub seen: Vec<u32>,
    /// Liked item keys.
    pub liked: Vec<u32>,
    /// Hidden item keys.
    pub hidden: Vec<u32>,
    /// Followed and blocked creators, if the user has edges.
    pub edges: Option<(Vec<String>, Vec<String>)>,
    /// Anchored affinity sums `(creator hash, epoch, sum)`.
    pub affinity: Vec<(u64, u64, i128)>,
    /// Pulls `(ts_eff, item key, pull)`.
    pub pulls: Vec<(u64, u32, f64)>,
}

impl UserState {
    /// The wire form of `view`.
    pub fn of(view: &UserView) -> UserState {
        UserState {
            seen: view.keys(SEEN).collect(),
            liked: view.keys(LIKED).collect(),
            hidden: view.keys(HIDDEN).collect(),
            edges: view
                .edges
                .as_deref()
                .map(|e| (e.follows.iter().cloned().collect(), e.blocks.iter().cloned().collect())),
            affinity: view.affinity.to_vec(),
            pulls: view.pulls.iter().map(|p| (p.ts, p.item, p.pull)).collect(),
        }
    }

    /// The view it describes (without attributes: no ranking reads them).
    pub fn view(&self) -> UserView {
        let marks = [(SEEN, &self.seen), (LIKED, &self.liked), (HIDDEN, &self.hidden)]
            .into_iter()
            .flat_map(|(bit, keys)| keys.iter().map(move |k| (*k, bit)))
            .collect();
        UserView {
            attributes: None,
            marks: UserView::marks_of(marks),
            edges: self.edges.as_ref().map(|(f, b)| {
                Arc::new(Edges {
                    follows: f.iter().cloned().collect::<BTreeSet<_>>(),
                    blocks: b.iter().cloned().collect::<BTreeSet<_>>(),
                })
            }),
            affinity: self.affinity.clone().into(),
            pulls: self
                .pulls
                .iter()
                .map(|&(ts, item, pull)| Pull { ts, item, pull })
                .collect(),
        }
    }
}

/// One item of a process's share of a ranking.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    /// Item id.
    pub id: String,
    /// Its score.
    pub score: f64,
    /// Its creator (for `max_per_creator`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creator: Option<String>,
    /// Its category (for a text search's `explain`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// With `q=` and a profile: its BM25 if it matches the text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bm25: Option<f64>,
    /// With `explain`: its features and score terms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub features: Option<Value>,
}

/// A process's share: its first items in ranking order, and whether that is all it has.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Share {
    /// The items, best first.
    pub items: Vec<Candidate>,
    /// Whether the list holds every item of the process's ranking (it was not cut).
    pub complete: bool,
}

/// The context of a request on this process: the user's state as given (its owner's).
fn context(view: &View, params: &RankParams, user: Option<Arc<UserView>>) -> Result<Context, QueryError> {
    if params.user.is_some() {
        Context::with_user(view, params, user)
    } else {
        Context::new(view, params)
    }
}

/// The first `need` items of the ranking over the local shards of `view`; `user` is the
/// user's state (with `user=`), `text` the cluster's text statistics (with `q=`). With
/// `q=` and a profile: every one of the profile's `candidates` here, with its BM25.
pub fn candidates(
    view: &View,
    config: &Config,
    params: &RankParams,
    need: usize,
    user: Option<Arc<UserView>>,
    text: Option<&TextStats>,
) -> Result<Share, QueryError> {
    let ctx = context(view, params, user)?;
    if let (Some(q), Some(stats)) = (params.q.as_deref(), text) {
        if params.profile_given {
            let mut rows = search::profile_rows(view, params, &ctx);
            if let Some(index) = view.text.as_deref() {
                index.refresh(params.min_lsn.is_some());
                search::score_rows(index, q, &mut rows, Some(stats));
            }
            let items = rows
                .into_iter()
                .map(|r| Candidate {
                    id: r.id,
                    score: r.score,
                    creator: r.creator,
                    category: r.category,
                    bm25: r.bm25,
                    features: None,
                })
                .collect();
            return Ok(Share { items, complete: true });
        }
        let found = search::search(view, params, &ctx, config, need, Some(stats));
        let complete = found.items.len() < need;
        let items = (0..found.items.len())
            .map(|i| {
                let f = &found.items[i];
                Candidate {
                    id: f.id.clone(),
                    score: f.score,
                    creator: f.creator.clone(),
                    category: None,
                    bm25: None,
                    features: params.explain.then(|| found.explain(i, params)),
                }
            })
            .collect();
        return Ok(Share { items, complete });
    }
    let scorer = Scorer::new(view.clock_ms(), params);
    if scorer.lists.is_empty() && params.base != Base::Following {
        return Ok(Share {
            items: Vec::new(),
            complete: true,
        });
    }
    let hits = topk::top(view, &scorer, params, need, &ctx);
    let complete = hits.len() < need;
    let items = hits
        .into_iter()
        .map(|h| Candidate {
            id: h.id.to_string(),
            score: h.score,
            creator: h.entry.meta().and_then(|m| m.creator.clone()),
            category: None,
            bm25: None,
            features: params
                .explain
                .then(|| super::explain(view, &ctx, &scorer, &h, params, config)),
        })
        .collect();
    Ok(Share { items, complete })
}

/// This process's `for_you` candidates for the user of `user` with preference vector
/// `vector` (and with `q=`, their BM25 under the cluster's statistics `text`).
pub fn gather(
    view: &View,
    config: &Config,
    params: &RankParams,
    user: Option<Arc<UserView>>,
    vector: Option<&[f64]>,
    text: Option<&TextStats>,
) -> Result<Vec<foryou::Candidate>, QueryError> {
    let ctx = context(view, params, user)?;
    if let Some(index) = view.text.as_deref() {
        index.refresh(params.min_lsn.is_some());
    }
    let text = params.q.as_deref().zip(text);
    Ok(foryou::gather(view, params, &ctx, config, vector, text))
}

/// The page of a `for_you` ranking from every process's gathered candidates (with `q=`:
/// the search within its first `candidates`).
pub fn select_for_you(
    found: Vec<foryou::Candidate>,
    params: &RankParams,
    config: &Config,
    has_vector: bool,
    as_of: AsOf,
) -> Ranking {
    let need = params.offset + params.limit + 1;
    if params.q.is_some() {
        let mut p = params.clone();
        p.max_per_creator = None;
        let ranked = foryou::select(found, &p, config, has_vector, params.personal.candidates);
        let rows = ranked.items.into_iter().map(Row::from).collect();
        let found = search::fuse(rows, params, need);
        return page(
            &found.items,
            params,
            as_of,
            |f| (&f.id, f.score),
            |i| found.explain(i, params),
        );
    }
    let ranked = foryou::select(found, params, config, has_vector, need);
    page(
        &ranked.items,
        params,
        as_of,
        |s| (&s.c.id, s.score),
        |i| ranked.explain(i, params),
    )
}

/// The page of a search within a profile from every process's candidates (each process's
/// first `candidates` of the profile with their BM25): the profile's first `candidates` of
/// all, fused.
pub fn select_search(shares: Vec<Share>, params: &RankParams, as_of: AsOf) -> Ranking {
    let mut all: Vec<Candidate> = shares.into_iter().flat_map(|s| s.items).collect();
    all.sort_unstable_by(|a, b| ranking_order((a.score, &a.id), (b.score, &b.id)));
    let rows = all
        .into_iter()
        .take(params.personal.candidates)
        .map(|c| Row {
            id: c.id,
            score: c.score,
            creator: c.creator,
            category: c.category,
            bm25: c.bm25,
        })
        .collect();
    let found = search::fuse(rows, params, params.offset + params.limit + 1);
    page(
        &found.items,
        params,
        as_of,
        |f| (&f.id, f.score),
        |i| found.explain(i, params),
    )
}

/// With `q=` alone, each process's `explain` names its own best BM25: the merged page names
/// the best of all.
pub fn fix_max_bm25(ranking: &mut Ranking, shares: &[Share]) {
    let best = shares
        .iter()
        .filter_map(|s| s.items.first())
        .map(|c| c.score)
        .fold(0.0, f64::max);
    for item in &mut ranking.items {
        if let Some(obj) = item.features.as_mut().and_then(Value::as_object_mut) {
            obj.insert("max_bm25".into(), serde_json::json!(best));
        }
    }
}

/// Merges every process's share into the page `params` asks for. `Err(i)`: share `i` was
/// used up before the page was full and may hold more — fetch it longer and merge again.
pub fn merge(shares: &[Share], params: &RankParams, as_of: AsOf) -> Result<Ranking, usize> {
    let page_end = params.offset + params.limit;
    let need = page_end + 1;
    let mut heads = vec![0usize; shares.len()];
    let mut per_creator: HashMap<&str, usize> = HashMap::new();
    let mut out: Vec<&Candidate> = Vec::with_capacity(need.min(1024));
    while out.len() < need {
        // The best head: score descending, then id ascending.
        let mut best: Option<(usize, &Candidate)> = None;
        for (i, share) in shares.iter().enumerate() {
            let Some(c) = share.items.get(heads[i]) else {
                if !share.complete {
                    return Err(i);
                }
                continue;
            };
            let better = best.is_none_or(|(_, b)| ranking_order((c.score, &c.id), (b.score, &b.id)).is_lt());
            if better {
                best = Some((i, c));
            }
        }
        let Some((i, c)) = best else { break };
        heads[i] += 1;
        if let (Some(cap), Some(creator)) = (params.max_per_creator, c.creator.as_deref()) {
            let n = per_creator.entry(creator).or_insert(0);
            if *n >= cap {
                continue;
            }
            *n += 1;
        }
        out.push(c);
    }
    let next_cursor = (out.len() > page_end).then(|| encode_cursor(page_end));
    let items = out
        .into_iter()
        .enumerate()
        .skip(params.offset)
        .take(params.limit)
        .map(|(i, c)| RankedItem {
            id: c.id.clone(),
            score: c.score,
            rank: i + 1,
            features: c.features.clone(),
        })
        .collect();
    Ok(Ranking {
        cohorts_as_of: None,
        items,
        next_cursor,
        as_of,
        estimated: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(id: &str, score: f64, creator: Option<&str>) -> Candidate {
        Candidate {
            id: id.into(),
            score,
            creator: creator.map(String::from),
            category: None,
            bm25: None,
            features: None,
        }
    }

    fn params(limit: usize, cap: Option<usize>) -> RankParams {
        let pairs: [(&str, &str); 0] = [];
        let mut p = RankParams::parse(&pairs, &Config::default_filled()).unwrap();
        p.limit = limit;
        p.max_per_creator = cap;
        p
    }

    const AS_OF: AsOf = AsOf { clock: 0, lsn: 0 };

    #[test]
    fn merges_by_score_then_id_and_caps_creators() {
        let a = Share {
            items: vec![c("a1", 9.0, Some("x")), c("a2", 5.0, Some("x")), c("a3", 1.0, None)],
            complete: true,
        };
        let b = Share {
            items: vec![c("b1", 9.0, Some("x")), c("b2", 4.0, Some("y"))],
            complete: true,
        };
        let r = merge(&[a, b], &params(10, Some(2)), AS_OF).unwrap();
        let ids: Vec<_> = r.items.iter().map(|i| i.id.as_str()).collect();
        // a1 and b1 tie at 9: by id. Creator x is capped at 2, so a2 is left out.
        assert_eq!(ids, ["a1", "b1", "b2", "a3"]);
        assert_eq!(r.items[2].rank, 3);
        assert_eq!(r.next_cursor, None);
    }

    #[test]
    fn a_cut_share_used_up_is_asked_for_again() {
        let a = Share {
            items: vec![c("a1", 9.0, None)],
            complete: false,
        };
        let b = Share {
            items: vec![c("b1", 1.0, None)],
            complete: true,
        };
        assert_eq!(merge(&[a.clone(), b.clone()], &params(2, None), AS_OF), Err(0));
        // A page that is full before the cut share runs out needs nothing more.
        let r = merge(&[a, b], &params(0, None), AS_OF);
        assert!(r.is_ok());
    }
}
