//! Top-k without scanning every item.
//!
//! With one list (a single signal type, or `new`) the index order *is* the ranking order, so
//! the answer is a walk down one ordered index, filtering as it goes, until `k` items are
//! accepted. With several signal types it is Fagin's threshold algorithm: the per-type
//! indexes are read round-robin, every newly seen item is scored by random access to its
//! features and filtered, and the walk stops once the `k`-th accepted item's score is
//! strictly above the threshold — the sum of the lists' current values, which bounds the
//! score of every item not yet seen. (A tie at the threshold keeps the walk going, so ties
//! still break by id exactly.) Diversity (`max_per_creator`) is applied in ranking order
//! over the candidates, which keeps the stopping rule sound: an unseen item ranks after the
//! `k`-th accepted one and cannot change which items before it are accepted.
//!
//! A `category`, `creator` or `tag` filter that matches few items is answered from its
//! posting list instead: walking an index until `k` matching items turn up costs about
//! `k · N / n` entries for `n` matches among `N` indexed items, scoring the `n` matches costs
//! `n`; the cheaper is taken (`n² ≤ k · N` with a margin), so a filter matching 0.1% of a
//! million items scores a thousand items instead of walking the whole index.

use std::cmp::Ordering;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use roaring::RoaringTreemap;

use tidal_sinks::contract::ItemKey;
use tidal_sinks::{Field, ItemEntry, Snapshot};

use super::params::{Base, RankParams};
use super::score::Scorer;

/// A ranked item: score desc, then id asc (byte order), then key.
#[derive(Clone, Debug)]
pub(crate) struct Hit<'s> {
    pub(crate) score: f64,
    pub(crate) id: Arc<str>,
    pub(crate) key: ItemKey,
    pub(crate) entry: &'s ItemEntry,
}

impl Ord for Hit<'_> {
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .score
            .total_cmp(&self.score)
            .then_with(|| self.id.as_bytes().cmp(other.id.as_bytes()))
            .then_with(|| self.key.cmp(&other.key))
    }
}
impl PartialOrd for Hit<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl PartialEq for Hit<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Hit<'_> {}

/// The request's item filters.
struct Filters<'p> {
    params: &'p RankParams,
}

impl Filters<'_> {
    fn needs_meta(&self) -> bool {
        let p = self.params;
        p.category.is_some() || p.creator.is_some() || p.tag.is_some() || p.max_per_creator.is_some()
    }

    fn passes(&self, id: &str, item: &ItemEntry) -> bool {
        let p = self.params;
        if p.exclude.contains(id) || !item.is_listable() {
            return false;
        }
        if !self.needs_meta() {
            return true;
        }
        let meta = item.meta();
        let field = |want: &Option<String>, have: Option<&String>| want.as_ref().is_none_or(|w| have == Some(w));
        field(&p.category, meta.and_then(|m| m.category.as_ref()))
            && field(&p.creator, meta.and_then(|m| m.creator.as_ref()))
            && p.tag.as_ref().is_none_or(|t| meta.is_some_and(|m| m.tags.contains(t)))
    }
}

/// Per-creator counting for `max_per_creator`.
struct Diversity<'s> {
    cap: Option<usize>,
    seen: HashMap<&'s str, usize>,
}

impl<'s> Diversity<'s> {
    fn new(cap: Option<usize>) -> Self {
        Diversity {
            cap,
            seen: HashMap::new(),
        }
    }

    /// Whether the next item in ranking order is accepted (and counts it).
    fn accept(&mut self, item: &'s ItemEntry) -> bool {
        let Some(cap) = self.cap else { return true };
        let Some(creator) = item.meta().and_then(|m| m.creator.as_deref()) else {
            return true;
        };
        let n = self.seen.entry(creator).or_insert(0);
        if *n >= cap {
            return false;
        }
        *n += 1;
        true
    }
}

/// How much cheaper than an index step scoring one posting-list entry must be counted.
const POSTING_COST: u64 = 4;

/// The first `need` items of the ranking, in order, after filters and diversity.
pub(crate) fn top<'s>(snapshot: &'s Snapshot, scorer: &Scorer, params: &RankParams, need: usize) -> Vec<Hit<'s>> {
    let filters = Filters { params };
    if let Some(matches) = filter_matches(snapshot, params) {
        let n = matches.len();
        let indexed = scorer
            .lists
            .iter()
            .filter_map(|l| snapshot.index(l.index))
            .map(|ix| ix.len() as u64)
            .max()
            .unwrap_or(0);
        if n.saturating_mul(n).saturating_mul(POSTING_COST) <= (need as u64).saturating_mul(indexed) {
            return score_matches(snapshot, scorer, &filters, &matches, need);
        }
    }
    if scorer.lists.len() == 1 {
        walk_one(snapshot, scorer, &filters, need)
    } else {
        threshold(snapshot, scorer, &filters, need)
    }
}

/// The keys every metadata filter of the request matches (their posting lists intersected);
/// `None` when the request has no such filter.
fn filter_matches(snapshot: &Snapshot, params: &RankParams) -> Option<RoaringTreemap> {
    let wanted = [
        (Field::Category, params.category.as_deref()),
        (Field::Creator, params.creator.as_deref()),
        (Field::Tag, params.tag.as_deref()),
    ];
    let mut lists = Vec::new();
    for (field, value) in wanted {
        if let Some(v) = value {
            match snapshot.postings().get(field, v) {
                Some(bits) => lists.push(bits),
                None => return Some(RoaringTreemap::new()),
            }
        }
    }
    lists.sort_by_key(|b| b.len());
    let (first, rest) = lists.split_first()?;
    let mut out = (*first).clone();
    for b in rest {
        out &= *b;
    }
    Some(out)
}

/// Ranks a filter's matches by scoring each (random access to its features).
fn score_matches<'s>(
    snapshot: &'s Snapshot,
    scorer: &Scorer,
    filters: &Filters<'_>,
    matches: &RoaringTreemap,
    need: usize,
) -> Vec<Hit<'s>> {
    let mut hits = Vec::new();
    for key in matches.iter() {
        let Some((item, id)) = snapshot.entry(key).and_then(|i| Some((i, i.id()?))) else {
            continue;
        };
        if !filters.passes(id, item) {
            continue;
        }
        let listed = match scorer.base {
            Base::New => item.meta().is_some_and(|m| m.created_at.is_some()),
            _ => true,
        };
        let score = scorer.score(item);
        if listed && (score > 0.0 || scorer.base == Base::New) {
            hits.push(Hit {
                score,
                id: id.clone(),
                key,
                entry: item,
            });
        }
    }
    hits.sort_unstable();
    let mut diversity = Diversity::new(filters.params.max_per_creator);
    hits.into_iter()
        .filter(|h| diversity.accept(h.entry))
        .take(need)
        .collect()
}

fn walk_one<'s>(snapshot: &'s Snapshot, scorer: &Scorer, filters: &Filters<'_>, need: usize) -> Vec<Hit<'s>> {
    let mut out = Vec::with_capacity(need.min(1024));
    let Some(index) = snapshot.index(scorer.lists[0].index) else {
        return out;
    };
    let mut diversity = Diversity::new(filters.params.max_per_creator);
    for e in index.iter() {
        if out.len() >= need {
            break;
        }
        let Some((item, id)) = snapshot.entry(e.key).and_then(|i| Some((i, i.id()?))) else {
            continue;
        };
        let score = scorer.list_value(0, e);
        if !(score > 0.0 || scorer.base == Base::New) || !filters.passes(id, item) || !diversity.accept(item) {
            continue;
        }
        out.push(Hit {
            score,
            id: id.clone(),
            key: e.key,
            entry: item,
        });
    }
    out
}

fn threshold<'s>(snapshot: &'s Snapshot, scorer: &Scorer, filters: &Filters<'_>, need: usize) -> Vec<Hit<'s>> {
    let lists = &scorer.lists;
    let mut iters: Vec<_> = lists
        .iter()
        .map(|l| snapshot.index(l.index).map(|s| s.iter()))
        .collect();
    let mut bounds = vec![f64::INFINITY; lists.len()];
    let mut seen: HashSet<ItemKey> = HashSet::new();
    let mut cands: BTreeSet<Hit<'s>> = BTreeSet::new();
    let capped = filters.params.max_per_creator.is_some();
    loop {
        let mut progressed = false;
        for (i, it) in iters.iter_mut().enumerate() {
            let Some(e) = it.as_mut().and_then(Iterator::next) else {
                // Exhausted: an unseen item is not in this index, so its term is ≤ 0.
                bounds[i] = 0.0;
                continue;
            };
            progressed = true;
            bounds[i] = scorer.list_value(i, e);
            if !seen.insert(e.key) {
                continue;
            }
            let Some((item, id)) = snapshot.entry(e.key).and_then(|i| Some((i, i.id()?))) else {
                continue;
            };
            if !filters.passes(id, item) {
                continue;
            }
            let score = scorer.score(item);
            if score > 0.0 {
                cands.insert(Hit {
                    score,
                    id: id.clone(),
                    key: e.key,
                    entry: item,
                });
                if !capped && cands.len() > need {
                    cands.pop_last();
                }
            }
        }
        if !progressed {
            break;
        }
        let tau = Scorer::threshold(&bounds);
        if kth_accepted(&cands, filters.params.max_per_creator, need).is_some_and(|s| s > tau) {
            break;
        }
    }
    let mut diversity = Diversity::new(filters.params.max_per_creator);
    cands
        .into_iter()
        .filter(|h| diversity.accept(h.entry))
        .take(need)
        .collect()
}

/// The score of the `need`-th candidate accepted by diversity, if there are that many.
fn kth_accepted(cands: &BTreeSet<Hit<'_>>, cap: Option<usize>, need: usize) -> Option<f64> {
    if need == 0 {
        return Some(f64::INFINITY);
    }
    if cap.is_none() {
        // Without a cap the candidates are trimmed to `need`: the last one is the k-th.
        return if cands.len() >= need {
            cands.last().map(|h| h.score)
        } else {
            None
        };
    }
    let mut diversity = Diversity::new(cap);
    cands
        .iter()
        .filter(|h| diversity.accept(h.entry))
        .nth(need - 1)
        .map(|h| h.score)
}
