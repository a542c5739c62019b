//! Top-k without scanning every item, over every shard of a [`View`].
//!
//! Each shard yields its own ranking lazily, best first ([`ShardStream`]), and a k-way merge
//! takes the best head until `k` items are accepted: ties (score desc, then id asc, then key)
//! and `max_per_creator` come out exactly as from one shard, since diversity is applied to the
//! merged order and every shard's stream is in that order.
//!
//! In a shard, with one list (a single signal type, or `new`) the index order *is* the
//! ranking order, so the stream is a walk down one ordered index, filtering as it goes. With
//! several signal types it is Fagin's threshold algorithm, run incrementally: the per-type
//! indexes are read round-robin, every newly seen item is scored by random access to its
//! features and filtered, and the best candidate is handed out once its score is strictly
//! above the threshold — the sum of the lists' current values, which bounds the score of
//! every item not yet seen. (A tie at the threshold keeps reading, so ties still break by id
//! exactly.)
//!
//! A `category`, `creator` or `tag` filter that matches few items is answered from its
//! posting list instead: walking an index until `k` matching items turn up costs about
//! `k · N / n` entries for `n` matches among `N` indexed items if they are spread evenly (and
//! up to `N` if they are not), scoring the `n` matches costs `n`: see [`prefer_postings`]. A
//! filter matching 0.1% of a million items scores a thousand items instead of walking the
//! whole index.

use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeSet, BinaryHeap, HashMap, HashSet};
use std::sync::Arc;

use roaring::RoaringTreemap;

use tidal_core::flow::ItemKey;
use tidal_sinks::index::IndexEntry;
use tidal_sinks::{Field, ItemEntry, Snapshot, View};

use super::cohort;
use super::params::{Base, RankParams};
use super::personal::{Context, UserFilter, shard_of_key};
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
pub(crate) struct Filters<'p> {
    params: &'p RankParams,
    user: Option<&'p UserFilter>,
}

impl<'p> Filters<'p> {
    /// The filters of `params` for the user of `ctx`.
    pub(crate) fn new(params: &'p RankParams, ctx: &'p Context) -> Filters<'p> {
        Filters {
            params,
            user: ctx.user.as_ref(),
        }
    }

    fn needs_meta(&self) -> bool {
        let p = self.params;
        p.category.is_some() || p.creator.is_some() || p.tag.is_some()
    }

    /// Item `key` of `snapshot` as a hit scoring `score(its entry)`, if it exists and passes
    /// the filters.
    pub(crate) fn hit<'s>(
        &self,
        snapshot: &'s Snapshot,
        key: ItemKey,
        score: impl FnOnce(&'s ItemEntry) -> f64,
    ) -> Option<Hit<'s>> {
        let (entry, id) = snapshot.entry(key).and_then(|i| Some((i, i.id()?)))?;
        self.passes(key, id, entry).then(|| Hit {
            score: score(entry),
            id: id.clone(),
            key,
            entry,
        })
    }

    /// Whether item `key` (`id`, `item`) passes the filters.
    pub(crate) fn passes(&self, key: ItemKey, id: &str, item: &ItemEntry) -> bool {
        let p = self.params;
        if p.exclude.contains(id) || !item.is_listable() {
            return false;
        }
        if let Some(u) = self.user
            && !u.allows(key, item.creator())
        {
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
pub(crate) struct Diversity<'s> {
    cap: Option<usize>,
    seen: HashMap<&'s str, usize>,
}

impl<'s> Diversity<'s> {
    pub(crate) fn new(cap: Option<usize>) -> Self {
        Diversity {
            cap,
            seen: HashMap::new(),
        }
    }

    /// Whether the next item in ranking order is accepted (and counts it).
    pub(crate) fn accept(&mut self, item: &'s ItemEntry) -> bool {
        self.accept_creator(item.creator())
    }

    /// [`accept`](Self::accept) of an item by `creator`.
    pub(crate) fn accept_creator(&mut self, creator: Option<&'s str>) -> bool {
        let Some(cap) = self.cap else { return true };
        let Some(creator) = creator else {
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

/// The first `need` items of the ranking over every shard of `view`, in order, after
/// filters and diversity.
pub(crate) fn top<'s>(
    view: &'s View,
    scorer: &'s Scorer,
    params: &'s RankParams,
    need: usize,
    ctx: &'s Context,
) -> Vec<Hit<'s>> {
    let mut streams: Vec<ShardStream<'s>> = view
        .shards
        .iter()
        .map(|s| ShardStream::new(s, scorer, params, need, ctx))
        .collect();
    let mut heads: BinaryHeap<Reverse<(Hit<'s>, usize)>> = BinaryHeap::new();
    for (i, s) in streams.iter_mut().enumerate() {
        if let Some(h) = s.next() {
            heads.push(Reverse((h, i)));
        }
    }
    let mut diversity = Diversity::new(params.max_per_creator);
    let mut out = Vec::with_capacity(need.min(1024));
    while out.len() < need {
        let Some(Reverse((hit, i))) = heads.pop() else { break };
        if let Some(next) = streams[i].next() {
            heads.push(Reverse((next, i)));
        }
        if diversity.accept(hit.entry) {
            out.push(hit);
        }
    }
    out
}

/// Whether scoring the `matches` items of a filter's posting list beats walking an index of
/// `indexed` entries until `need` of them turn up. The walk's expected cost, `need · indexed /
/// matches` entries, holds only when the matches are spread evenly through the index; when
/// they are not (a category of unpopular items sits at the end of every index) the walk reads
/// the whole index. So the posting list is taken when it is cheaper than the expected walk
/// (with a wide margin), or cheaper than the whole walk: its cost is known, the walk's is not.
fn prefer_postings(matches: u64, need: u64, indexed: u64) -> bool {
    let scoring = matches.saturating_mul(POSTING_COST);
    let expected_walk = need.saturating_mul(indexed) / matches.max(1);
    scoring <= expected_walk || (scoring <= indexed && scoring <= expected_walk.saturating_mul(WALK_MARGIN))
}

/// How far above the expected walk the posting list's cost may be and still be taken
/// because the walk's cost is uncertain.
const WALK_MARGIN: u64 = 100;

/// One shard's ranking, best first, filtered (diversity is the merge's).
enum ShardStream<'s> {
    Walk(Walk<'s>),
    Threshold(Box<Threshold<'s>>),
    Cohort(Box<cohort::CohortWalk<'s>>),
    Sorted(std::vec::IntoIter<Hit<'s>>),
}

impl<'s> ShardStream<'s> {
    fn new(
        snapshot: &'s Snapshot,
        scorer: &'s Scorer,
        params: &'s RankParams,
        need: usize,
        ctx: &'s Context,
    ) -> ShardStream<'s> {
        let filters = Filters::new(params, ctx);
        if params.base == Base::Following {
            let follows = ctx.user.as_ref().and_then(UserFilter::follows);
            let by = (!scorer.lists.is_empty()).then_some(scorer);
            return ShardStream::Sorted(following(snapshot, &filters, follows, by).into_iter());
        }
        if let Some(sel) = &ctx.cohort {
            if !sel.estimated {
                return ShardStream::Cohort(Box::new(cohort::CohortWalk::new(snapshot, scorer, filters, sel)));
            }
            // Diversity is the merge's: with a cap per creator, any number may be passed over.
            let need = if params.max_per_creator.is_some() {
                usize::MAX
            } else {
                need
            };
            return ShardStream::Sorted(cohort::estimated_hits(snapshot, scorer, &filters, sel, need).into_iter());
        }
        if let Some(matches) = filter_matches(snapshot, params) {
            let n = matches.len();
            let indexed = scorer
                .lists
                .iter()
                .filter_map(|l| snapshot.index(l.index))
                .map(|ix| ix.len() as u64)
                .max()
                .unwrap_or(0);
            if prefer_postings(n, need as u64, indexed) {
                return ShardStream::Sorted(score_matches(snapshot, scorer, &filters, &matches).into_iter());
            }
        }
        if scorer.lists.len() == 1 {
            ShardStream::Walk(Walk {
                snapshot,
                scorer,
                filters,
                entries: snapshot
                    .index(scorer.lists[0].index)
                    .map(|ix| Box::new(ix.iter()) as Entries<'s>),
            })
        } else {
            ShardStream::Threshold(Box::new(Threshold::new(snapshot, scorer, filters)))
        }
    }
}

impl<'s> Iterator for ShardStream<'s> {
    type Item = Hit<'s>;
    fn next(&mut self) -> Option<Hit<'s>> {
        match self {
            ShardStream::Walk(w) => w.next(),
            ShardStream::Threshold(t) => t.next(),
            ShardStream::Cohort(c) => c.next(),
            ShardStream::Sorted(s) => s.next(),
        }
    }
}

type Entries<'s> = Box<dyn Iterator<Item = &'s IndexEntry> + 's>;

/// One index, walked in order.
struct Walk<'s> {
    snapshot: &'s Snapshot,
    scorer: &'s Scorer,
    filters: Filters<'s>,
    entries: Option<Entries<'s>>,
}

impl<'s> Walk<'s> {
    fn next(&mut self) -> Option<Hit<'s>> {
        let entries = self.entries.as_mut()?;
        for e in entries.by_ref() {
            let Some((item, id)) = self.snapshot.entry(e.key).and_then(|i| Some((i, i.id()?))) else {
                continue;
            };
            let score = self.scorer.finish(self.scorer.list_value(0, e));
            if !(score > 0.0 || self.scorer.base == Base::New) || !self.filters.passes(e.key, id, item) {
                continue;
            }
            return Some(Hit {
                score,
                id: id.clone(),
                key: e.key,
                entry: item,
            });
        }
        None
    }
}

/// The threshold algorithm over several indexes, handing out items in order.
struct Threshold<'s> {
    snapshot: &'s Snapshot,
    scorer: &'s Scorer,
    filters: Filters<'s>,
    lists: Vec<Option<Entries<'s>>>,
    bounds: Vec<f64>,
    seen: HashSet<ItemKey>,
    cands: BTreeSet<Hit<'s>>,
}

impl<'s> Threshold<'s> {
    fn new(snapshot: &'s Snapshot, scorer: &'s Scorer, filters: Filters<'s>) -> Threshold<'s> {
        let lists = scorer
            .lists
            .iter()
            .map(|l| snapshot.index(l.index).map(|ix| Box::new(ix.iter()) as Entries<'s>))
            .collect::<Vec<_>>();
        Threshold {
            snapshot,
            scorer,
            filters,
            bounds: vec![f64::INFINITY; lists.len()],
            lists,
            seen: HashSet::new(),
            cands: BTreeSet::new(),
        }
    }

    /// Reads one entry of every list; false when all are exhausted.
    fn round(&mut self) -> bool {
        let mut progressed = false;
        for i in 0..self.lists.len() {
            let Some(e) = self.lists[i].as_mut().and_then(Iterator::next) else {
                // Exhausted: an unseen item is not in this index, so its term is ≤ 0.
                self.lists[i] = None;
                self.bounds[i] = 0.0;
                continue;
            };
            progressed = true;
            self.bounds[i] = self.scorer.list_value(i, e);
            if !self.seen.insert(e.key) {
                continue;
            }
            let Some((item, id)) = self.snapshot.entry(e.key).and_then(|it| Some((it, it.id()?))) else {
                continue;
            };
            if !self.filters.passes(e.key, id, item) {
                continue;
            }
            let score = self.scorer.score(item);
            if score > 0.0 {
                self.cands.insert(Hit {
                    score,
                    id: id.clone(),
                    key: e.key,
                    entry: item,
                });
            }
        }
        progressed
    }

    fn next(&mut self) -> Option<Hit<'s>> {
        loop {
            let tau = self.scorer.threshold(&self.bounds);
            if self.cands.first().is_some_and(|h| h.score > tau) {
                return self.cands.pop_first();
            }
            if !self.round() {
                // Every list is exhausted: what is left is in order.
                return self.cands.pop_first();
            }
        }
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

/// A filter's matches, scored (random access to their features) and sorted.
fn score_matches<'s>(
    snapshot: &'s Snapshot,
    scorer: &Scorer,
    filters: &Filters<'_>,
    matches: &RoaringTreemap,
) -> Vec<Hit<'s>> {
    let mut hits = Vec::new();
    for key in matches.iter() {
        let Some(hit) = filters.hit(snapshot, key, |item| scorer.score(item)) else {
            continue;
        };
        let listed = match scorer.base {
            Base::New => hit.entry.meta().is_some_and(|m| m.created_at.is_some()),
            _ => true,
        };
        if listed && (hit.score > 0.0 || scorer.base == Base::New) {
            hits.push(hit);
        }
    }
    hits.sort_unstable();
    hits
}

/// Item `id` as a hit scoring `score`, if a local shard of `view` has it and the request's
/// filters admit it.
pub(crate) fn admit_id<'s>(
    view: &'s View,
    params: &RankParams,
    ctx: &Context,
    id: &str,
    score: f64,
) -> Option<Hit<'s>> {
    let filters = Filters::new(params, ctx);
    let snapshot = view.shard_of(id)?;
    let key = snapshot.key_of(id)?;
    filters.hit(snapshot, key, |_| score)
}

/// Item `key` of `view` as a hit scoring `score` (no filter: a hit another ranking of the
/// same view already admitted, taken to the view's lifetime).
pub(crate) fn rebind(view: &View, key: ItemKey, score: f64) -> Option<Hit<'_>> {
    let entry = shard_of_key(view, key)?.entry(key)?;
    Some(Hit {
        score,
        id: entry.id()?.clone(),
        key,
        entry,
    })
}

/// The followed creators' items on every shard, filtered (any order).
pub(crate) fn followed<'s>(view: &'s View, params: &'s RankParams, ctx: &'s Context) -> Vec<Hit<'s>> {
    let filters = Filters::new(params, ctx);
    let follows = ctx.user.as_ref().and_then(UserFilter::follows);
    view.shards
        .iter()
        .flat_map(|s| following(s, &filters, follows, None))
        .collect()
}

/// `following` on one shard: the items of the followed creators, newest `created_at` first
/// (its score; items without one score 0 and come last, by id), or by `by`'s score.
fn following<'s>(
    snapshot: &'s Snapshot,
    filters: &Filters<'_>,
    follows: Option<&BTreeSet<String>>,
    by: Option<&Scorer>,
) -> Vec<Hit<'s>> {
    let mut keys = RoaringTreemap::new();
    for c in follows.into_iter().flatten() {
        if let Some(bits) = snapshot.postings().get(Field::Creator, c) {
            keys |= bits;
        }
    }
    let mut hits = Vec::new();
    for key in keys.iter() {
        let score = |item: &ItemEntry| match by {
            Some(scorer) => scorer.score(item),
            None => item.created_at().map_or(0.0, |c| c as f64),
        };
        hits.extend(filters.hit(snapshot, key, score));
    }
    hits.sort_unstable();
    hits
}

#[cfg(test)]
mod tests {
    use super::prefer_postings;

    #[test]
    fn postings_are_taken_when_few_items_match() {
        // 0.1% of a million indexed items: scoring a thousand beats any walk.
        assert!(prefer_postings(1_000, 50, 1_000_000));
        // A thousand matches in a short index (a one-hour window holds 60k items): the
        // matches may all sit at its end, and scoring them costs less than the whole walk.
        assert!(prefer_postings(1_000, 50, 60_000));
        assert!(prefer_postings(0, 50, 10));
    }

    #[test]
    fn a_broad_filter_walks_the_index() {
        // Half of the items match: 50 of them turn up within ~100 entries.
        assert!(!prefer_postings(500_000, 50, 1_000_000));
        // 10% match: ~500 entries expected against scoring 100k items.
        assert!(!prefer_postings(100_000, 50, 1_000_000));
        // More matches than the index is long: walking is never worse.
        assert!(!prefer_postings(20_000, 50, 10_000));
    }
}
