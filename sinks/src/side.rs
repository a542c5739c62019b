//! The per-user and per-cohort part of a shard: cohort window lanes of the shard's items,
//! the views of the users its worker owns, and the declared cohorts. Kept in persistent maps
//! (a version clones them in O(1)). Changes arrive in time order at the sink's cuts and are
//! gathered in plain hash maps — the last value of each key — and settled into the persistent
//! maps once per version, so a catch-up that changes a key at many marks writes it once.

use std::collections::HashMap;
use std::sync::Arc;

use foldhash::fast::RandomState;
use rayon::iter::{IntoParallelRefMutIterator, ParallelIterator};

use tidal_core::config::{MAX_SIGNAL_TYPES, MAX_WINDOWS};
use tidal_core::features::{Lanes, WEIGHT_BITS};
use tidal_core::flow::{CohortId, ItemKey, KindIdx, UserKey};
use tidal_core::user::{CohortDefs, SideUpdate, UserView};

use crate::pmap::{PMap, Part, Summarize};
use crate::snapshot::Map;

/// One cohort's window lanes: per (item, signal type) of the shard's items, in key order. A
/// persistent trie of small nodes ([`PMap`]) keyed by `item << 16 | type` (item keys are
/// dense, far below 2^48); the lanes sit behind an `Arc` so that its leaves stay small:
/// every version copies the nodes its changes touch.
#[derive(Clone, Debug, Default)]
pub struct CohortLanes(PMap<Cell>);

/// One (item, type)'s lanes in a cohort's map, with their bounds per window (see
/// [`LaneBounds`]) worked out once, when the value is made: a leaf's summary is then the
/// largest of its entries' bounds, read from the leaf itself.
#[derive(Clone, Debug)]
struct Cell {
    lanes: Arc<Lanes>,
    bounds: [u8; MAX_WINDOWS],
}

impl Cell {
    fn new(lanes: Lanes) -> Cell {
        let mut bounds = [0; MAX_WINDOWS];
        for (w, b) in bounds.iter_mut().enumerate() {
            // What a ranking reads: `count_W` and `Lanes::rise_fixed`.
            let most = lanes.0[2 * w].unsigned_abs().max(lanes.rise_fixed(w).unsigned_abs());
            if most != 0 {
                // Exact division by a power of two: at least each magnitude as `Lanes` reads it.
                *b = LaneBounds::encode(most as f64 / (1u64 << WEIGHT_BITS) as f64);
            }
        }
        Cell {
            lanes: Arc::new(lanes),
            bounds,
        }
    }
}

impl CohortLanes {
    fn key((item, kind): (ItemKey, KindIdx)) -> u64 {
        // 2^48 items would take petabytes: the keys interned in log order never get there.
        debug_assert!(item < 1 << 48, "item key {item} beyond 48 bits");
        (item << 16) | u64::from(kind)
    }

    /// The lanes of `(item, type)`.
    pub fn get(&self, key: &(ItemKey, KindIdx)) -> Option<&Arc<Lanes>> {
        self.0.get(&Self::key(*key)).map(|c| &c.lanes)
    }

    /// Number of (item, type) with lanes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no (item, type) has lanes.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Every (item, type) with its lanes, in (item, type) order: one item's types adjacent.
    pub fn iter(&self) -> impl Iterator<Item = ((ItemKey, KindIdx), &Arc<Lanes>)> {
        self.0
            .iter()
            .map(|(k, c)| ((k >> 16, (k & 0xffff) as KindIdx), &c.lanes))
    }

    /// Every (item, type) with lanes, in order.
    pub fn keys(&self) -> impl Iterator<Item = (ItemKey, KindIdx)> {
        self.iter().map(|(k, _)| k)
    }

    /// The cohort's items scoring above 0, best first: `score(lanes)` scores an item from
    /// its lanes per signal type, and `bound(b)` must be at least
    /// the score of any item whose lanes `b` bounds ([`LaneBounds::get`]). Only the parts of
    /// the map that can hold an item as good as the next one are read, so the first few of a
    /// large cohort cost a few thousand lanes, not all of them. Items of equal score come in
    /// no particular order; every item scoring `s` comes before any scoring less.
    pub fn ranked<'a>(
        &'a self,
        bound: impl Fn(&LaneBounds) -> f64 + 'a,
        score: impl FnMut(&[(KindIdx, &Lanes)]) -> f64 + 'a,
    ) -> impl Iterator<Item = (f64, ItemKey)> + 'a {
        let mut ranked = Ranked {
            map: self,
            heap: std::collections::BinaryHeap::new(),
            bound,
            score,
            deep: Vec::new(),
            lanes: Vec::new(),
        };
        if let Some(root) = self.0.root() {
            ranked.heap.push(Next::part(f64::INFINITY, root));
        }
        std::iter::from_fn(move || ranked.next())
    }
}

/// Slots of signal types in [`LaneBounds`]: the types from the last slot on share it.
const BOUND_SLOTS: usize = 8;

/// Upper bounds on the lanes of a part of a cohort's map: per signal type (types past the
/// first seven share a slot) and window, the largest `|count_W|` and `|rise|` (`count_W −
/// (count_2W − count_W)`), rounded up to a quarter of a power of two and kept in a byte:
/// the bounds are read only to leave parts out, and a branch keeps one per child.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct LaneBounds([u8; BOUND_SLOTS * MAX_WINDOWS]);

/// A bound's code for `2^0`: codes step by a quarter power of two, from `2^−20` (code 1, the
/// smallest non-zero weight) to past `2^43` (the largest an `i64` of weights holds).
const CODE_ONE: i64 = 81;

/// Every code's bound, increasing.
static CODES: std::sync::LazyLock<[f64; 256]> = std::sync::LazyLock::new(|| {
    std::array::from_fn(|c| match c {
        0 => 0.0,
        255 => f64::INFINITY,
        c => ((c as i64 - CODE_ONE) as f64 / 4.0).exp2(),
    })
});

impl LaneBounds {
    /// At least `|count(window)|` and `|rise(window)|` of every (item, `kind`) under this
    /// part, as the floats [`Lanes::count`] gives.
    pub fn get(&self, kind: KindIdx, window: usize) -> f64 {
        let slot = usize::from(kind).min(BOUND_SLOTS - 1);
        self.0
            .get(slot * MAX_WINDOWS + window)
            .map_or(f64::INFINITY, |&c| Self::decode(c))
    }

    /// The bound code `c` stands for (code 0: nothing; the largest: no bound).
    fn decode(c: u8) -> f64 {
        CODES[usize::from(c)]
    }

    /// The smallest code whose bound is at least `x` (≥ 0). Codes order as their bounds, so
    /// the larger of two bounds is the larger code.
    fn encode(x: f64) -> u8 {
        CODES.partition_point(|&b| b < x) as u8
    }

    /// The bounds of a leaf's entries: per slot and window, the largest of theirs.
    fn of_leaf(entries: &[(u64, Cell)]) -> LaneBounds {
        let mut b = LaneBounds::default();
        for (key, cell) in entries {
            let slot = ((key & 0xffff) as usize).min(BOUND_SLOTS - 1);
            for (out, c) in b.0[slot * MAX_WINDOWS..][..MAX_WINDOWS].iter_mut().zip(cell.bounds) {
                *out = (*out).max(c);
            }
        }
        b
    }

    fn merge(&mut self, other: &LaneBounds) {
        for (a, b) in self.0.iter_mut().zip(&other.0) {
            *a = (*a).max(*b);
        }
    }
}

impl Summarize for Cell {
    type Sum = LaneBounds;
    fn leaf(entries: &[(u64, Self)]) -> LaneBounds {
        LaneBounds::of_leaf(entries)
    }
    fn merge(sum: &mut LaneBounds, other: &LaneBounds) {
        sum.merge(other);
    }
}

impl Summarize for Arc<UserView> {
    type Sum = ();
    fn leaf(_: &[(u64, Self)]) {}
    fn merge(_: &mut (), _: &()) {}
}

/// What a ranking of a cohort reads next: a part of the map bounded at a value, or an item
/// scoring it. The larger first; at one value a part before an item, so that every item of a
/// score is found before the first of them is given; of items, the smaller key first. The
/// order is two integers, compared without looking at the part.
struct Next<'a> {
    /// The value's bits, ordered as [`f64::total_cmp`] orders the values.
    value: u64,
    /// `u64::MAX` for a part; `u64::MAX − 1 − key` for an item.
    tie: u64,
    part: Option<Part<'a, Cell>>,
}

impl<'a> Next<'a> {
    fn ordered(v: f64) -> u64 {
        let bits = v.to_bits();
        if bits >> 63 == 1 { !bits } else { bits | 1 << 63 }
    }

    fn part(bound: f64, part: Part<'a, Cell>) -> Next<'a> {
        Next {
            value: Self::ordered(bound),
            tie: u64::MAX,
            part: Some(part),
        }
    }

    fn item(score: f64, key: ItemKey) -> Next<'a> {
        Next {
            value: Self::ordered(score),
            tie: u64::MAX - 1 - key,
            part: None,
        }
    }

    fn score(&self) -> f64 {
        let bits = if self.value >> 63 == 1 {
            self.value & !(1 << 63)
        } else {
            !self.value
        };
        f64::from_bits(bits)
    }
}

impl PartialEq for Next<'_> {
    fn eq(&self, other: &Self) -> bool {
        (self.value, self.tie) == (other.value, other.tie)
    }
}
impl Eq for Next<'_> {}
impl PartialOrd for Next<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Next<'_> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.value, self.tie).cmp(&(other.value, other.tie))
    }
}

/// [`CohortLanes::ranked`]'s walk.
struct Ranked<'a, B, S> {
    map: &'a CohortLanes,
    heap: std::collections::BinaryHeap<Next<'a>>,
    bound: B,
    score: S,
    /// Items whose lanes fill leaves of their own (more types than a leaf holds), scored
    /// once from every leaf they span.
    deep: Vec<ItemKey>,
    lanes: Vec<(KindIdx, &'a Lanes)>,
}

impl<'a, B, S> Ranked<'a, B, S>
where
    B: Fn(&LaneBounds) -> f64,
    S: FnMut(&[(KindIdx, &Lanes)]) -> f64,
{
    fn next(&mut self) -> Option<(f64, ItemKey)> {
        loop {
            let next = self.heap.pop()?;
            let Some(part) = next.part else {
                return Some((next.score(), u64::MAX - 1 - next.tie));
            };
            match part.entries() {
                Some(entries) => self.score_leaf(part, entries),
                None => {
                    for (child, sum) in part.children() {
                        let b = (self.bound)(sum);
                        // Nothing under a part bounded at 0 scores above it.
                        if b > 0.0 {
                            self.heap.push(Next::part(b, child));
                        }
                    }
                }
            }
        }
    }

    /// Scores the items of a leaf (one item's types are adjacent).
    fn score_leaf(&mut self, part: Part<'a, Cell>, entries: &'a [(u64, Cell)]) {
        // A leaf below the item bits holds only some of one item's types: the item's lanes
        // are looked up, once.
        if part.prefix_bits() > 48 {
            let Some(&(k, _)) = entries.first() else { return };
            let item = k >> 16;
            if self.deep.contains(&item) {
                return;
            }
            self.deep.push(item);
            let lanes: Vec<(KindIdx, &Lanes)> = (0..MAX_SIGNAL_TYPES as KindIdx)
                .filter_map(|kind| self.map.get(&(item, kind)).map(|l| (kind, &**l)))
                .collect();
            self.push_scored(item, &lanes);
            return;
        }
        let mut lanes = std::mem::take(&mut self.lanes);
        let mut rest = entries;
        while let Some(&(first, _)) = rest.first() {
            let item = first >> 16;
            let n = rest.iter().take_while(|e| e.0 >> 16 == item).count();
            lanes.clear();
            lanes.extend(rest[..n].iter().map(|(k, c)| ((k & 0xffff) as KindIdx, &*c.lanes)));
            self.push_scored(item, &lanes);
            rest = &rest[n..];
        }
        self.lanes = lanes;
    }

    fn push_scored(&mut self, item: ItemKey, lanes: &[(KindIdx, &Lanes)]) {
        let s = (self.score)(lanes);
        if s > 0.0 {
            self.heap.push(Next::item(s, item));
        }
    }
}

/// The key of a cohort sum as the dataflow emits it.
pub type CohortKey = (ItemKey, KindIdx, CohortId);

/// At least this many users settled at once into an empty map (a restore's) are built into
/// it in bulk; debug builds take the bulk path from a few, so the tests' restarts check it.
const BULK_USERS: usize = if cfg!(debug_assertions) { 4 } else { 64 };

/// Gathered changes settled into the persistent maps before a version is cut, at most.
const SETTLE_AT: usize = 1 << 20;

/// One update of a cohort's lanes: its key in the cohort's map, the lanes, `−1` or `+1`.
type CohortChange = (u64, Lanes, isize);

/// One change of a cohort's lanes: (item, signal type) and the value now (`None`: gone).
type LaneChange = ((ItemKey, KindIdx), Option<Lanes>);

/// A time's cohort changes at least this many go straight into the persistent maps (a
/// restore's or a catch-up's: gathering them first held a hash table of a million sums and a
/// copy grouped by cohort, ~250 MB at a restart's peak).
const DIRECT_AT: usize = 1 << 14;

/// Cohort sum changes of one time from which the cohorts' maps are changed on every core (a
/// restore's, a catch-up's; a live mark's stay on the sink's thread). Debug builds (the
/// tests) take that path for all but the smallest times, so that both paths are checked.
const PARALLEL_AT: usize = if cfg!(debug_assertions) { 8 } else { 1 << 18 };

/// Gathered changes keep at most this much room between versions (a catch-up grows them to
/// `SETTLE_AT`; live versions need a few thousand).
const KEEP_ROOM: usize = 1 << 12;

/// The per-user and per-cohort state of a version: persistent maps, cloned in O(1).
#[derive(Clone, Debug, Default)]
pub(crate) struct Side {
    pub(crate) cohorts: Map<CohortId, CohortLanes>,
    /// By user key, in a trie of small nodes ([`PMap`]: a version copies a few hundred
    /// bytes per user it changes).
    pub(crate) users: PMap<Arc<UserView>>,
    pub(crate) defs: Arc<CohortDefs>,
}

/// The builder's working copy: the last settled [`Side`] and the changes since, a key's
/// value now (`None`: gone). The gathered changes are not part of a version: cloning a hash
/// map copies its whole table, empty or not.
#[derive(Debug)]
pub(crate) struct SideBuilder {
    side: Side,
    lanes_now: HashMap<CohortKey, Option<Lanes>, RandomState>,
    users_now: HashMap<UserKey, Option<Arc<UserView>>, RandomState>,
    /// [`DIRECT_AT`], or what a test sets.
    direct_at: usize,
    /// Keys (users, cohort lanes) changed in the persistent maps since the last version.
    changed: usize,
}

impl Default for SideBuilder {
    fn default() -> SideBuilder {
        SideBuilder {
            side: Side::default(),
            lanes_now: HashMap::default(),
            users_now: HashMap::default(),
            changed: 0,
            direct_at: DIRECT_AT,
        }
    }
}

impl SideBuilder {
    /// Settles the gathered changes and gives the state a version publishes.
    /// The side as of now, and the keys changed since the last version.
    pub(crate) fn version(&mut self) -> (Side, usize) {
        self.settle();
        (self.side.clone(), std::mem::take(&mut self.changed))
    }

    /// Applies one time's cohort sum changes (`−1` the old value, `+1` the new), in the
    /// containers they came in. The sums arrive consolidated and in time order, so a removal
    /// always names the current value.
    pub(crate) fn apply_cohorts(&mut self, updates: Vec<Vec<(CohortKey, Lanes, isize)>>) {
        let total: usize = updates.iter().map(Vec::len).sum();
        if total >= self.direct_at {
            self.apply_cohorts_directly(updates, total);
            return;
        }
        // Removals first, so a key's new value is not removed by its old one.
        for removals in [true, false] {
            for &(key, lanes, diff) in updates.iter().flatten() {
                if removals && diff < 0 {
                    self.lanes_now.insert(key, None);
                } else if !removals && diff > 0 {
                    self.lanes_now.insert(key, Some(lanes));
                }
            }
        }
        // A long catch-up changes most sums before its one version: settle now and then, so
        // the gathered changes never hold a second copy of everything.
        if self.lanes_now.len() + self.users_now.len() > SETTLE_AT {
            self.settle();
        }
    }

    /// [`apply_cohorts`](Self::apply_cohorts) for a large time (a restore's, a catch-up's):
    /// after what was gathered before it, per cohort in key order, a key's removal before its
    /// new value. Each cohort's changes are counted, then moved into a vector of their own as
    /// the containers are let go; they come mostly in key order already (a restore's sums
    /// in (item, type) order), and a cohort with no lanes yet is built at once.
    fn apply_cohorts_directly(&mut self, updates: Vec<Vec<(CohortKey, Lanes, isize)>>, total: usize) {
        let started = std::time::Instant::now();
        self.settle();
        self.changed += total;
        let mut counts: HashMap<CohortId, usize, RandomState> = HashMap::default();
        for u in updates.iter().flatten() {
            *counts.entry(u.0.2).or_default() += 1;
        }
        let mut by_cohort: HashMap<CohortId, Vec<CohortChange>, RandomState> =
            counts.into_iter().map(|(c, n)| (c, Vec::with_capacity(n))).collect();
        for chunk in updates {
            for ((item, kind, cohort), lanes, diff) in chunk {
                if let Some(run) = by_cohort.get_mut(&cohort) {
                    run.push((CohortLanes::key((item, kind)), lanes, diff));
                }
            }
        }
        // The cohorts' maps are apart: a large time's are changed on every core.
        let mut work: Vec<(CohortId, Vec<CohortChange>, CohortLanes)> = by_cohort
            .into_iter()
            .map(|(cohort, run)| {
                let map = self.side.cohorts.remove(&cohort).unwrap_or_default();
                (cohort, run, map)
            })
            .collect();
        if total >= PARALLEL_AT {
            work.par_iter_mut()
                .for_each(|(_, run, map)| apply_run(map, std::mem::take(run)));
        } else {
            work.iter_mut()
                .for_each(|(_, run, map)| apply_run(map, std::mem::take(run)));
        }
        for (cohort, _, map) in work {
            if !map.is_empty() {
                self.side.cohorts.insert(cohort, map);
            }
        }
        tracing::trace!(
            changes = total,
            cohorts = self.side.cohorts.len(),
            ms = started.elapsed().as_secs_f64() * 1e3,
            "cohort sums applied"
        );
    }

    /// Applies one user-state change.
    pub(crate) fn apply(&mut self, update: SideUpdate) {
        match update {
            SideUpdate::User(key, view) => {
                self.users_now.insert(key, view);
                if self.users_now.len() > SETTLE_AT {
                    self.settle();
                }
            }
            SideUpdate::Cohorts(defs) => self.side.defs = defs,
        }
    }

    /// Settles the changes into the persistent maps (before a version is cut).
    fn settle(&mut self) {
        self.changed += self.lanes_now.len() + self.users_now.len();
        let mut by_cohort: HashMap<CohortId, Vec<LaneChange>, RandomState> = HashMap::default();
        for ((item, kind, cohort), v) in self.lanes_now.drain() {
            by_cohort.entry(cohort).or_default().push(((item, kind), v));
        }
        for (cohort, mut changes) in by_cohort {
            changes.sort_unstable_by_key(|c| c.0);
            let map = self.side.cohorts.entry(cohort).or_default();
            map.0.apply_sorted(
                changes
                    .into_iter()
                    .map(|(k, v)| (CohortLanes::key(k), v.map(Cell::new)))
                    .collect(),
            );
            if map.is_empty() {
                self.side.cohorts.remove(&cohort);
            }
        }
        // In key order: the persistent map takes them along one path at a time (a restore
        // settles a million users).
        let mut users: Vec<_> = self.users_now.drain().collect();
        users.sort_unstable_by_key(|u| u.0);
        if self.side.users.is_empty() && users.len() >= BULK_USERS {
            // Nobody yet (a restore): the trie is built at once.
            self.side.users = PMap::from_sorted(users.into_iter().filter_map(|(k, v)| Some((k, v?))).collect());
            users = Vec::new();
        }
        self.side.users.apply_sorted(users);
        // After a catch-up the tables are large and empty: give the room back.
        self.lanes_now.shrink_to(KEEP_ROOM);
        self.users_now.shrink_to(KEEP_ROOM);
    }
}

/// Applies one cohort's changes of a large time to its map: per key in key order, its
/// removal before its new value; a cohort with no lanes yet is built at once.
fn apply_run(map: &mut CohortLanes, mut run: Vec<CohortChange>) {
    if !run.is_sorted_by_key(|u| (u.0, u.2)) {
        run.sort_unstable_by_key(|u| (u.0, u.2));
    }
    if map.is_empty() && run.iter().all(|u| u.2 > 0) && run.windows(2).all(|w| w[0].0 < w[1].0) {
        *map = CohortLanes(PMap::from_sorted(
            run.into_iter().map(|(k, lanes, _)| (k, Cell::new(lanes))).collect(),
        ));
        return;
    }
    // Per key its new value (after its old one's removal) or its removal, applied in one
    // walk of the map.
    let mut changes: Vec<(u64, Option<Cell>)> = Vec::with_capacity(run.len());
    for (k, lanes, diff) in run {
        match changes.last_mut() {
            Some(last) if last.0 == k => {
                if diff > 0 {
                    last.1 = Some(Cell::new(lanes));
                }
            }
            _ => changes.push((k, (diff > 0).then(|| Cell::new(lanes)))),
        }
    }
    map.0.apply_sorted(changes);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The cohort lanes of a side, as plain values.
    fn lanes_of(side: &Side) -> Vec<(CohortId, (ItemKey, KindIdx), Lanes)> {
        let mut out: Vec<_> = side
            .cohorts
            .iter()
            .flat_map(|(c, m)| m.iter().map(move |(k, l)| (*c, k, **l)))
            .collect();
        out.sort_unstable_by_key(|x| (x.0, x.1));
        out
    }

    /// A bound's code stands for at least its value and is the smallest that does, and
    /// codes order as values, over the whole range of fixed-point weights.
    #[test]
    fn bound_codes_round_up_and_keep_order() {
        use rand::rngs::StdRng;
        use rand::{Rng, SeedableRng};
        let mut rng = StdRng::seed_from_u64(3);
        let mut xs: Vec<f64> = (0..20_000)
            .map(|_| {
                let top = i64::MAX as u64 >> rng.gen_range(0..63);
                rng.gen_range(1u64..=top) as f64 / (1u64 << WEIGHT_BITS) as f64
            })
            .collect();
        xs.extend([
            0.0,
            1.0 / (1u64 << WEIGHT_BITS) as f64,
            1.0,
            0.75,
            i64::MAX as f64 / (1u64 << WEIGHT_BITS) as f64,
        ]);
        xs.sort_by(f64::total_cmp);
        let mut last = 0;
        for x in xs {
            let c = LaneBounds::encode(x);
            assert!(LaneBounds::decode(c) >= x, "{x} coded {c}");
            assert!(
                c == 0 || LaneBounds::decode(c - 1) < x,
                "{x} coded {c}, not the smallest"
            );
            assert!(c < u8::MAX, "{x} past the codes");
            assert!(c >= last, "codes out of order at {x}");
            last = c;
        }
    }

    /// A ranking's score of one item: per (type, window, rising) term a factor.
    type Terms = Vec<(KindIdx, usize, bool, f64)>;

    fn term_score(terms: &Terms, lanes: &[(KindIdx, &Lanes)]) -> f64 {
        let mut s = 0.0;
        for &(kind, w, rising, f) in terms {
            let v = lanes.iter().find(|(k, _)| *k == kind).map_or(0.0, |(_, l)| {
                if rising {
                    f * tidal_core::features::weight_float(l.rise_fixed(w))
                } else {
                    f * l.count(w)
                }
            });
            s += v;
        }
        s
    }

    fn term_bound(terms: &Terms, b: &LaneBounds) -> f64 {
        let mut s = 0.0;
        for &(kind, w, _, f) in terms {
            s += f.abs() * b.get(kind, w);
        }
        s
    }

    /// A cohort ranked through its map's bounds gives exactly the items a scan of every
    /// item scores above 0, best first, while scoring few of them: on random maps (types
    /// past the bounds' shared slot, an item with more types than a leaf holds, negative
    /// lanes and factors) changed in batches, with copies that keep their moment.
    #[test]
    fn ranked_by_bounds_matches_a_scan() {
        use rand::rngs::StdRng;
        use rand::{Rng, SeedableRng};
        for seed in 0..12u64 {
            let mut rng = StdRng::seed_from_u64(seed);
            let items = [20u64, 300, 3000][seed as usize % 3];
            let kinds: KindIdx = [3, 12, 40][seed as usize % 3];
            let mut map = CohortLanes::default();
            let mut copies = Vec::new();
            for batch in 0..4 {
                let mut changes: std::collections::BTreeMap<u64, Option<Cell>> = Default::default();
                for _ in 0..items * 2 {
                    // Popularity falls steeply with the item key's hash: a few items lead.
                    let item = rng.gen_range(0..items);
                    let kind = if item == 7 {
                        rng.gen_range(0..kinds)
                    } else {
                        rng.gen_range(0..kinds.min(6))
                    };
                    let scale = 1i64 << rng.gen_range(0..(30 + (item.wrapping_mul(0x9e37_79b9) % 14) as i64));
                    let mut lanes = Lanes::default();
                    for l in lanes.0.iter_mut() {
                        *l = rng.gen_range(-scale / 8..scale);
                    }
                    let value = (rng.gen_range(0..6) != 0).then(|| Cell::new(lanes));
                    changes.insert(CohortLanes::key((item, kind)), value);
                }
                map.0.apply_sorted(changes.into_iter().collect());
                if batch % 2 == 1 {
                    copies.push(map.clone());
                }
            }
            // Every type of item 7 (with 40 types, more than a leaf holds).
            if kinds == 40 {
                let changes =
                    (0..40).map(|k| (CohortLanes::key((7, k)), Some(Cell::new(Lanes::with([0, 2], 1 << 40)))));
                map.0.apply_sorted(changes.collect());
            }
            copies.push(map);
            for map in &copies {
                for _ in 0..6 {
                    let terms: Terms = (0..rng.gen_range(1..5))
                        .map(|_| {
                            let f = if rng.gen_range(0..4) == 0 {
                                -rng.gen_range(0.0..2.0)
                            } else {
                                rng.gen_range(0.0..5.0)
                            };
                            (
                                rng.gen_range(0..kinds),
                                rng.gen_range(0..3),
                                rng.gen_range(0..3) == 0,
                                f,
                            )
                        })
                        .collect();
                    // The scan: every item's lanes gathered.
                    let mut by_item: std::collections::BTreeMap<ItemKey, Vec<(KindIdx, &Lanes)>> = Default::default();
                    for ((item, kind), l) in map.iter() {
                        by_item.entry(item).or_default().push((kind, &**l));
                    }
                    let mut want: Vec<(f64, ItemKey)> = by_item
                        .iter()
                        .map(|(item, lanes)| (term_score(&terms, lanes), *item))
                        .filter(|x| x.0 > 0.0)
                        .collect();
                    want.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
                    let scored = std::cell::Cell::new(0usize);
                    let ranked = || {
                        map.ranked(
                            |b| term_bound(&terms, b),
                            |lanes| {
                                scored.set(scored.get() + 1);
                                term_score(&terms, lanes)
                            },
                        )
                    };
                    let got: Vec<(f64, ItemKey)> = ranked().collect();
                    for w in got.windows(2) {
                        assert!(w[0].0 >= w[1].0, "seed {seed}: not best first: {w:?}");
                    }
                    let mut sorted = got.clone();
                    sorted.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
                    assert_eq!(sorted, want, "seed {seed}, terms {terms:?}");
                    // The first ten read a small part of a large cohort.
                    scored.set(0);
                    let first: Vec<(f64, ItemKey)> = ranked().take(10).collect();
                    assert_eq!(first[..], want[..want.len().min(10)], "seed {seed}");
                    if items == 3000 && terms.iter().all(|t| t.3 > 0.0 && !t.2) {
                        assert!(
                            scored.get() * 4 < by_item.len(),
                            "seed {seed}: the first ten scored {} of {} items",
                            scored.get(),
                            by_item.len()
                        );
                    }
                }
            }
        }
    }

    proptest! {
        /// Applied directly or gathered first, the same times of cohort changes (functional:
        /// per key a removal of its current value and a new one) settle to the same lanes.
        #[test]
        fn direct_and_gathered_agree(times in prop::collection::vec(
            prop::collection::vec((0u64..40, 0u16..2, 0u64..3, prop::option::of(1u64..5)), 0..60),
            1..8,
        )) {
            let (mut gathered, mut direct) = (SideBuilder::default(), SideBuilder::default());
            gathered.direct_at = usize::MAX;
            direct.direct_at = 1;
            let mut current: HashMap<CohortKey, Lanes> = HashMap::new();
            // Keys touched since the last version: what a version reports it changed.
            let mut touched = std::collections::HashSet::new();
            for (t, changes) in times.iter().enumerate() {
                let mut batch = Vec::new();
                let mut seen = std::collections::HashSet::new();
                for &(item, kind, cohort, value) in changes {
                    let key = (item, kind, cohort);
                    if !seen.insert(key) {
                        continue;
                    }
                    if let Some(old) = current.remove(&key) {
                        batch.push((key, old, -1isize));
                        touched.insert(key);
                    }
                    if let Some(v) = value {
                        let mut lanes = Lanes::default();
                        lanes.0[0] = v as i64 + t as i64;
                        current.insert(key, lanes);
                        batch.push((key, lanes, 1));
                        touched.insert(key);
                    }
                }
                // One builder sees a time large, the other gathers it; now and then a version.
                // In containers of a few, as the dataflow hands them over.
                let chunks: Vec<Vec<_>> = batch.chunks(7).map(<[_]>::to_vec).collect();
                gathered.apply_cohorts(chunks.clone());
                direct.apply_cohorts(chunks);
                if t % 3 == 2 {
                    let ((g, g_changed), (d, d_changed)) = (gathered.version(), direct.version());
                    prop_assert_eq!(lanes_of(&g), lanes_of(&d));
                    // Gathered, each key once; applied directly, each update.
                    prop_assert_eq!(g_changed, touched.len());
                    prop_assert!(d_changed >= touched.len());
                    touched.clear();
                }
            }
            let (g, d) = (lanes_of(&gathered.version().0), lanes_of(&direct.version().0));
            prop_assert_eq!(&g, &d);
            let mut want: Vec<_> = current.iter().map(|(&(i, k, c), l)| (c, (i, k), *l)).collect();
            want.sort_unstable_by_key(|x| (x.0, x.1));
            prop_assert_eq!(g, want);
        }
    }
}
