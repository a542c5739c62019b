//! [`PMap`]: a persistent map from `u64` keys to shared values, for what a version changes
//! a little at a time: the users' views (keyed by the ids' 64-bit hashes) and each cohort's
//! lanes (keyed by item and signal type). A version clones it in O(1); changing a key copies
//! the path to its leaf — small nodes (16 children, leaves of at most [`SPLIT`] entries), so
//! a change copies and later frees a few hundred bytes and takes a reference to a few dozen
//! values. `imbl::OrdMap`'s nodes hold 64 keys and 65 children: with a million users in
//! random order every user a version changed copied a node of each and referenced its 64
//! values again, each reference a cache miss, and the freeing thread dropped them all again.
//! The key's bits are taken highest first, so a walk visits the keys in order.
//!
//! A branch keeps a [`Summarize::Sum`] of each child's entries beside it (the cohorts' lanes:
//! bounds on their counts, so a ranking descends only into the children that can hold a
//! better item; the users' views: nothing). A change recomputes the sums on its path from
//! the nodes it has just copied.

use std::sync::Arc;

/// What a branch keeps of the entries under each of its children.
pub(crate) trait Summarize: Clone {
    /// The summary; the default is that of no entries.
    type Sum: Copy + Default + PartialEq + std::fmt::Debug;
    /// The summary of a leaf's entries.
    fn leaf(entries: &[(u64, Self)]) -> Self::Sum;
    /// Takes the entries `other` summarises into `sum`.
    fn merge(sum: &mut Self::Sum, other: &Self::Sum);
}

/// Children per branch (the key's bits are taken four at a time, highest first).
const FAN: usize = 16;
const BITS: u32 = 4;
/// A leaf with more entries than this becomes a branch (while key bits are left).
const SPLIT: usize = 32;
/// Branch depths: 64 bits, four at a time.
const DEPTHS: u32 = u64::BITS / BITS;

enum Node<V: Summarize> {
    /// Entries sorted by key.
    Leaf(Arc<[(u64, V)]>),
    Branch(Arc<Branch<V>>),
}

impl<V: Summarize> Clone for Node<V> {
    fn clone(&self) -> Self {
        match self {
            Node::Leaf(entries) => Node::Leaf(entries.clone()),
            Node::Branch(branch) => Node::Branch(branch.clone()),
        }
    }
}

/// A branch: its children by digit, and the summary of each one's entries.
struct Branch<V: Summarize> {
    children: [Option<Node<V>>; FAN],
    sums: [V::Sum; FAN],
}

impl<V: Summarize> Clone for Branch<V> {
    fn clone(&self) -> Self {
        Branch {
            children: self.children.clone(),
            sums: self.sums,
        }
    }
}

impl<V: Summarize> Branch<V> {
    /// A branch of `children`, their sums taken.
    fn of(children: [Option<Node<V>>; FAN]) -> Branch<V> {
        let mut sums = [V::Sum::default(); FAN];
        for (sum, child) in sums.iter_mut().zip(&children) {
            *sum = sum_of(child);
        }
        Branch { children, sums }
    }
}

/// The summary of the entries under `node`.
fn sum_of<V: Summarize>(node: &Option<Node<V>>) -> V::Sum {
    match node {
        None => V::Sum::default(),
        Some(Node::Leaf(entries)) => V::leaf(entries),
        Some(Node::Branch(branch)) => {
            let mut sum = V::Sum::default();
            for s in &branch.sums {
                V::merge(&mut sum, s);
            }
            sum
        }
    }
}

/// A persistent map from `u64` keys to `V` (see the module docs).
#[derive(Clone)]
pub(crate) struct PMap<V: Summarize> {
    root: Option<Node<V>>,
    len: usize,
}

/// A node of a [`PMap`] as its readers see it: a leaf's entries, or a branch's children
/// with their summaries.
pub(crate) struct Part<'a, V: Summarize> {
    node: &'a Node<V>,
    depth: u32,
}

impl<V: Summarize> Clone for Part<'_, V> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<V: Summarize> Copy for Part<'_, V> {}

impl<'a, V: Summarize> Part<'a, V> {
    /// A leaf's entries, in key order (`None`: a branch).
    pub(crate) fn entries(self) -> Option<&'a [(u64, V)]> {
        match self.node {
            Node::Leaf(entries) => Some(entries),
            Node::Branch(_) => None,
        }
    }

    /// A branch's children in key order, each with the summary of its entries (none for a
    /// leaf).
    pub(crate) fn children(self) -> impl Iterator<Item = (Part<'a, V>, &'a V::Sum)> {
        let branch = match self.node {
            Node::Branch(branch) => Some(&**branch),
            Node::Leaf(_) => None,
        };
        let depth = self.depth + 1;
        branch.into_iter().flat_map(move |b| {
            b.children.iter().zip(&b.sums).filter_map(move |(c, s)| {
                Some((
                    Part {
                        node: c.as_ref()?,
                        depth,
                    },
                    s,
                ))
            })
        })
    }

    /// How many of the keys' high bits every key under this node shares.
    pub(crate) fn prefix_bits(self) -> u32 {
        (BITS * self.depth).min(u64::BITS)
    }
}

impl<V: Summarize> Default for PMap<V> {
    fn default() -> Self {
        PMap { root: None, len: 0 }
    }
}

impl<V: Summarize> std::fmt::Debug for PMap<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PMap").field("len", &self.len).finish()
    }
}

/// The child of a branch at `depth` that `key` goes to.
fn digit(key: u64, depth: u32) -> usize {
    ((key >> (u64::BITS - BITS * (depth + 1))) as usize) & (FAN - 1)
}

impl<V: Summarize> PMap<V> {
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every key with its value, in key order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u64, &V)> {
        let mut stack: Vec<&Node<V>> = self.root.iter().collect();
        let empty: &[(u64, V)] = &[];
        let mut leaf = empty.iter();
        std::iter::from_fn(move || {
            loop {
                if let Some((k, v)) = leaf.next() {
                    return Some((*k, v));
                }
                match stack.pop()? {
                    Node::Leaf(entries) => leaf = entries.iter(),
                    Node::Branch(branch) => stack.extend(branch.children.iter().rev().flatten()),
                }
            }
        })
    }

    /// The root, for a walk of the nodes (`None`: the map is empty).
    pub(crate) fn root(&self) -> Option<Part<'_, V>> {
        Some(Part {
            node: self.root.as_ref()?,
            depth: 0,
        })
    }

    pub(crate) fn get(&self, key: &u64) -> Option<&V> {
        let mut node = self.root.as_ref()?;
        let mut depth = 0;
        loop {
            match node {
                Node::Leaf(entries) => {
                    return entries.binary_search_by_key(key, |e| e.0).ok().map(|i| &entries[i].1);
                }
                Node::Branch(branch) => {
                    node = branch.children[digit(*key, depth)].as_ref()?;
                    depth += 1;
                }
            }
        }
    }

    /// Sets `key`'s value; the value it had.
    #[cfg(test)]
    pub(crate) fn insert(&mut self, key: u64, value: V) -> Option<V> {
        let old = self.get(&key).cloned();
        self.apply_sorted(vec![(key, Some(value))]);
        old
    }

    /// The map of `entries`, whose keys strictly increase, built at once: each node is made
    /// once, where inserting them one by one copies a leaf per key (a restore fills maps of
    /// millions of keys).
    pub(crate) fn from_sorted(entries: Vec<(u64, V)>) -> PMap<V> {
        debug_assert!(
            entries.windows(2).all(|w| w[0].0 < w[1].0),
            "keys not strictly increasing"
        );
        let keys: Vec<u64> = entries.iter().map(|e| e.0).collect();
        let len = entries.len();
        let mut values = entries.into_iter();
        PMap {
            root: build(&keys, 0, &mut values),
            len,
        }
    }

    /// Applies `changes`, whose keys strictly increase: `Some` sets a key's value, `None`
    /// removes the key. One walk of the trie copies each node on the changes' paths once,
    /// where a change at a time copies a path per key (a catch-up changes a large share of a
    /// map's keys before its one version).
    pub(crate) fn apply_sorted(&mut self, changes: Vec<(u64, Option<V>)>) {
        debug_assert!(
            changes.windows(2).all(|w| w[0].0 < w[1].0),
            "keys not strictly increasing"
        );
        let mut len = self.len as isize;
        let mut changes = changes.into_iter().peekable();
        apply_under(&mut self.root, 0, &mut changes, &mut len, None);
        self.len = len.max(0) as usize;
    }

    /// Removes `key`; the value it had.
    #[cfg(test)]
    pub(crate) fn remove(&mut self, key: &u64) -> Option<V> {
        let old = self.get(key).cloned();
        self.apply_sorted(vec![(*key, None)]);
        old
    }
}

/// Sorted changes, taken from the front.
type Changes<V> = std::iter::Peekable<std::vec::IntoIter<(u64, Option<V>)>>;

/// Applies to the node under `slot` (at `depth`) the changes at the front of `changes` that
/// lie under it — whose key shifted right by `within.0` is `within.1`, the node's prefix
/// (`None` at the root) — and counts the keys added and removed into `len`.
fn apply_under<V: Summarize>(
    slot: &mut Option<Node<V>>,
    depth: u32,
    changes: &mut Changes<V>,
    len: &mut isize,
    within: Option<(u32, u64)>,
) {
    let below = |k: u64| within.is_none_or(|(shift, prefix)| k >> shift == prefix);
    match slot {
        Some(Node::Branch(branch)) => {
            let branch = Arc::make_mut(branch);
            let shift = u64::BITS - BITS * (depth + 1);
            while let Some(&(k, _)) = changes.peek() {
                if !below(k) {
                    break;
                }
                let d = digit(k, depth);
                apply_under(
                    &mut branch.children[d],
                    depth + 1,
                    changes,
                    len,
                    Some((shift, k >> shift)),
                );
                branch.sums[d] = sum_of(&branch.children[d]);
            }
            if branch.children.iter().all(Option::is_none) {
                *slot = None;
            }
        }
        _ => {
            let old: &[(u64, V)] = match slot {
                Some(Node::Leaf(entries)) => entries,
                _ => &[],
            };
            let mut merged: Vec<(u64, V)> = Vec::with_capacity(old.len() + 4);
            let mut i = 0;
            while let Some(&(k, _)) = changes.peek() {
                if !below(k) {
                    break;
                }
                let Some((k, v)) = changes.next() else { break };
                while i < old.len() && old[i].0 < k {
                    merged.push(old[i].clone());
                    i += 1;
                }
                let had = i < old.len() && old[i].0 == k;
                if had {
                    i += 1;
                }
                match v {
                    Some(v) => {
                        if !had {
                            *len += 1;
                        }
                        merged.push((k, v));
                    }
                    None if had => *len -= 1,
                    None => {}
                }
            }
            merged.extend_from_slice(&old[i..]);
            *slot = if merged.len() > SPLIT && depth < DEPTHS {
                let keys: Vec<u64> = merged.iter().map(|e| e.0).collect();
                build(&keys, depth, &mut merged.into_iter())
            } else if merged.is_empty() {
                None
            } else {
                Some(Node::Leaf(Arc::from(merged)))
            };
        }
    }
}

/// The node at `depth` of the sorted `keys`, taking their entries from `entries` in order:
/// a leaf while they fit one (or no key bits are left), else a branch of their digits.
fn build<V: Summarize>(keys: &[u64], depth: u32, entries: &mut std::vec::IntoIter<(u64, V)>) -> Option<Node<V>> {
    if keys.is_empty() {
        return None;
    }
    if keys.len() <= SPLIT || depth >= DEPTHS {
        return Some(Node::Leaf(entries.by_ref().take(keys.len()).collect()));
    }
    let mut children: [Option<Node<V>>; FAN] = Default::default();
    let mut rest = keys;
    while let Some(&first) = rest.first() {
        let d = digit(first, depth);
        let n = rest.partition_point(|&k| digit(k, depth) == d);
        children[d] = build(&rest[..n], depth + 1, entries);
        rest = &rest[n..];
    }
    Some(Node::Branch(Arc::new(Branch::of(children))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    /// The tests' values summarise as their maximum (0: none).
    impl Summarize for u64 {
        type Sum = u64;
        fn leaf(entries: &[(u64, u64)]) -> u64 {
            entries.iter().map(|e| e.1).max().unwrap_or(0)
        }
        fn merge(sum: &mut u64, other: &u64) {
            *sum = (*sum).max(*other);
        }
    }

    /// Every branch's sums are those of the entries under each child, recomputed from the
    /// leaves (not from the sums below); returns the maximum under `part`.
    fn check_sums(part: Part<'_, u64>) -> u64 {
        if let Some(entries) = part.entries() {
            return entries.iter().map(|e| e.1).max().unwrap_or(0);
        }
        let mut max = 0;
        for (child, sum) in part.children() {
            let under = check_sums(child);
            assert_eq!(*sum, under, "a branch's sum of a child at depth {}", part.depth);
            max = max.max(under);
        }
        max
    }

    fn checked(map: &PMap<u64>) {
        if let Some(root) = map.root() {
            check_sums(root);
        }
    }

    /// Random inserts, replacements and removes against a `BTreeMap`, with copies taken on
    /// the way that must keep the map of their moment; keys spread over all 64 bits (user
    /// hashes) and keys sharing their high bits (deep paths, leaves that cannot split).
    #[test]
    fn matches_a_btree_map_and_copies_keep_their_moment() {
        for (seed, narrow) in [(1u64, false), (2, true), (3, false)] {
            let mut rng = StdRng::seed_from_u64(seed);
            let key = |rng: &mut StdRng| {
                if narrow {
                    rng.gen_range(0..3000u64)
                } else {
                    (rng.r#gen::<u64>() % 20_000).wrapping_mul(0x9e37_79b9_7f4a_7c15)
                }
            };
            let mut map: PMap<u64> = PMap::default();
            let mut want: BTreeMap<u64, u64> = BTreeMap::new();
            let mut copies: Vec<(PMap<u64>, BTreeMap<u64, u64>)> = Vec::new();
            for step in 0..30_000u64 {
                let k = key(&mut rng);
                if rng.gen_range(0..4) == 0 {
                    assert_eq!(map.remove(&k), want.remove(&k));
                } else {
                    assert_eq!(map.insert(k, step), want.insert(k, step));
                }
                assert_eq!(map.len(), want.len());
                if step % 3001 == 0 {
                    copies.push((map.clone(), want.clone()));
                }
            }
            for (k, v) in &want {
                assert_eq!(map.get(k), Some(v));
            }
            let walked: Vec<(u64, u64)> = map.iter().map(|(k, v)| (k, *v)).collect();
            let wanted: Vec<(u64, u64)> = want.iter().map(|(k, v)| (*k, *v)).collect();
            assert_eq!(walked, wanted, "a walk visits the keys in order");
            checked(&map);
            for _ in 0..2000 {
                let k = key(&mut rng);
                assert_eq!(map.get(&k), want.get(&k));
            }
            for (copy, then) in &copies {
                assert_eq!(copy.len(), then.len());
                for (k, v) in then {
                    assert_eq!(copy.get(k), Some(v), "a copy changed");
                }
                assert_eq!(copy.iter().count(), then.len());
                checked(copy);
            }
            // Emptied, the map holds nothing.
            for k in want.keys().copied().collect::<Vec<_>>() {
                assert!(map.remove(&k).is_some());
            }
            assert_eq!(map.len(), 0);
            assert!(map.root.is_none() && map.is_empty());
        }
    }

    /// A map built at once from sorted keys holds what inserting them one by one holds, and
    /// takes later inserts and removes the same way.
    #[test]
    fn built_from_sorted_keys_matches_inserts() {
        for (seed, narrow, n) in [(4u64, false, 0usize), (5, false, 1), (6, false, 5000), (7, true, 3000)] {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut want: BTreeMap<u64, u64> = BTreeMap::new();
            while want.len() < n {
                let k = if narrow {
                    rng.gen_range(0..4000u64)
                } else {
                    rng.r#gen::<u64>()
                };
                want.insert(k, rng.r#gen());
            }
            let mut map = PMap::from_sorted(want.iter().map(|(k, v)| (*k, *v)).collect());
            assert_eq!(map.len(), want.len());
            checked(&map);
            let walked: Vec<(u64, u64)> = map.iter().map(|(k, v)| (k, *v)).collect();
            assert_eq!(walked, want.iter().map(|(k, v)| (*k, *v)).collect::<Vec<_>>());
            for (k, v) in &want {
                assert_eq!(map.get(k), Some(v));
            }
            for step in 0..5000u64 {
                let k = if narrow {
                    rng.gen_range(0..4000u64)
                } else if step % 2 == 0 {
                    rng.r#gen::<u64>()
                } else {
                    want.keys()
                        .nth(rng.gen_range(0..want.len().max(1)))
                        .copied()
                        .unwrap_or(0)
                };
                if rng.gen_range(0..3) == 0 {
                    assert_eq!(map.remove(&k), want.remove(&k));
                } else {
                    assert_eq!(map.insert(k, step), want.insert(k, step));
                }
                assert_eq!(map.len(), want.len());
            }
            let walked: Vec<(u64, u64)> = map.iter().map(|(k, v)| (k, *v)).collect();
            assert_eq!(walked, want.iter().map(|(k, v)| (*k, *v)).collect::<Vec<_>>());
            checked(&map);
        }
    }

    /// Batches of sorted changes (sets of new and present keys, removals of present and
    /// absent ones) applied in one walk each leave what a `BTreeMap` holds, and copies taken
    /// between batches keep theirs.
    #[test]
    fn sorted_batches_match_a_btree_map() {
        for (seed, narrow) in [(8u64, false), (9, true), (10, false)] {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut map: PMap<u64> = PMap::default();
            let mut want: BTreeMap<u64, u64> = BTreeMap::new();
            let mut copies: Vec<(PMap<u64>, BTreeMap<u64, u64>)> = Vec::new();
            for batch in 0..300u64 {
                let size = [1usize, 5, 40, 400, 3000][rng.gen_range(0..5)];
                let mut changes: BTreeMap<u64, Option<u64>> = BTreeMap::new();
                for _ in 0..size {
                    let k = if narrow {
                        rng.gen_range(0..5000u64)
                    } else {
                        (rng.r#gen::<u64>() % 30_000).wrapping_mul(0x9e37_79b9_7f4a_7c15)
                    };
                    let v = (rng.gen_range(0..3) != 0).then(|| batch * 10_000 + rng.gen_range(0..10_000));
                    changes.insert(k, v);
                }
                for (k, v) in &changes {
                    match v {
                        Some(v) => want.insert(*k, *v),
                        None => want.remove(k),
                    };
                }
                map.apply_sorted(changes.into_iter().collect());
                assert_eq!(map.len(), want.len());
                checked(&map);
                if batch % 37 == 0 {
                    copies.push((map.clone(), want.clone()));
                }
            }
            let walked: Vec<(u64, u64)> = map.iter().map(|(k, v)| (k, *v)).collect();
            assert_eq!(walked, want.iter().map(|(k, v)| (*k, *v)).collect::<Vec<_>>());
            for (copy, then) in &copies {
                let walked: Vec<(u64, u64)> = copy.iter().map(|(k, v)| (k, *v)).collect();
                assert_eq!(
                    walked,
                    then.iter().map(|(k, v)| (*k, *v)).collect::<Vec<_>>(),
                    "a copy changed"
                );
                checked(copy);
            }
            // Emptied in one batch, the map holds nothing.
            map.apply_sorted(want.keys().map(|k| (*k, None)).collect());
            assert!(map.root.is_none() && map.is_empty());
        }
    }
}
