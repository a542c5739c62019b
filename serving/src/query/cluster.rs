//! Rankings in a cluster: every process ranks its own shards ([`candidates`]) as of one
//! common frontier, and the process that was asked merges the lists ([`merge`]) exactly as
//! [`rank`](super::rank) merges the shards of one process — score descending, then id; ties
//! and `max_per_creator` applied to the merged order.
//!
//! A process applies `max_per_creator` to its own list too: an item its own items push out is
//! pushed out of the merged ranking as well, so nothing the merge needs is lost. A list that
//! was cut at the length asked for may hold more; when the merge uses all of it before the
//! page is full, [`merge`] says which list must be fetched longer.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use tidal_core::Config;
use tidal_sinks::View;

use super::error::QueryError;
use super::params::{Base, RankParams, encode_cursor};
use super::personal::Context;
use super::score::Scorer;
use super::{AsOf, RankedItem, Ranking, topk};

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

/// The first `need` items of the ranking over the local shards of `view`.
pub fn candidates(view: &View, config: &Config, params: &RankParams, need: usize) -> Result<Share, QueryError> {
    let ctx = Context::new(view, params)?;
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
            features: params
                .explain
                .then(|| super::explain(view, &ctx, &scorer, &h, params, config)),
        })
        .collect();
    Ok(Share { items, complete })
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
            let better = best.is_none_or(|(_, b)| {
                c.score
                    .total_cmp(&b.score)
                    .reverse()
                    .then_with(|| c.id.as_bytes().cmp(b.id.as_bytes()))
                    .is_lt()
            });
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
