//! [`PMap`]: a persistent map from `u64` keys to shared values, for what a version changes
//! a little at a time: the users' views (keyed by the ids' 64-bit hashes) and each cohort's
//! lanes (keyed by item and signal type). A version clones it in O(1); changing a key copies
//! the path to its leaf — small nodes (16 children, leaves of at most [`SPLIT`] entries), so
//! a change copies and later frees a few hundred bytes and takes a reference to a few dozen
//! values. `imbl::OrdMap`'s nodes hold 64 keys and 65 children: with a million users in
//! random order every user a version changed copied a node of each and referenced its 64
//! values again, each reference a cache miss, and the freeing thread dropped them all again.
//! The key's bits are taken highest first, so a walk visits the keys in order.

use std::sync::Arc;

/// Children per branch (the key's bits are taken four at a time, highest first).
const FAN: usize = 16;
const BITS: u32 = 4;
/// A leaf with more entries than this becomes a branch (while key bits are left).
const SPLIT: usize = 32;
/// Branch depths: 64 bits, four at a time.
const DEPTHS: u32 = u64::BITS / BITS;

#[derive(Clone)]
enum Node<V> {
    /// Entries sorted by key.
    Leaf(Arc<[(u64, V)]>),
    Branch(Arc<[Option<Node<V>>; FAN]>),
}

/// A persistent map from `u64` keys to `V` (see the module docs).
#[derive(Clone)]
pub(crate) struct PMap<V> {
    root: Option<Node<V>>,
    len: usize,
}

impl<V> Default for PMap<V> {
    fn default() -> Self {
        PMap { root: None, len: 0 }
    }
}

impl<V> std::fmt::Debug for PMap<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PMap").field("len", &self.len).finish()
    }
}

/// The child of a branch at `depth` that `key` goes to.
fn digit(key: u64, depth: u32) -> usize {
    ((key >> (u64::BITS - BITS * (depth + 1))) as usize) & (FAN - 1)
}

impl<V: Clone> PMap<V> {
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
                    Node::Branch(children) => stack.extend(children.iter().rev().flatten()),
                }
            }
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
                Node::Branch(children) => {
                    node = children[digit(*key, depth)].as_ref()?;
                    depth += 1;
                }
            }
        }
    }

    /// Sets `key`'s value; the value it had.
    pub(crate) fn insert(&mut self, key: u64, value: V) -> Option<V> {
        let old = insert_at(&mut self.root, key, value, 0);
        if old.is_none() {
            self.len += 1;
        }
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

    /// Removes `key`; the value it had.
    pub(crate) fn remove(&mut self, key: &u64) -> Option<V> {
        // Only a present key's path is copied.
        self.get(key)?;
        let old = remove_at(&mut self.root, *key, 0);
        if old.is_some() {
            self.len -= 1;
        }
        old
    }
}

fn insert_at<V: Clone>(slot: &mut Option<Node<V>>, key: u64, value: V, depth: u32) -> Option<V> {
    let Some(node) = slot else {
        *slot = Some(Node::Leaf(Arc::from([(key, value)])));
        return None;
    };
    match node {
        Node::Branch(children) => {
            let children = Arc::make_mut(children);
            insert_at(&mut children[digit(key, depth)], key, value, depth + 1)
        }
        Node::Leaf(entries) => match entries.binary_search_by_key(&key, |e| e.0) {
            Ok(i) => Some(std::mem::replace(&mut Arc::make_mut(entries)[i].1, value)),
            Err(i) => {
                let mut grown = Vec::with_capacity(entries.len() + 1);
                grown.extend_from_slice(&entries[..i]);
                grown.push((key, value));
                grown.extend_from_slice(&entries[i..]);
                *node = if grown.len() > SPLIT && depth < DEPTHS {
                    split(grown, depth)
                } else {
                    Node::Leaf(Arc::from(grown))
                };
                None
            }
        },
    }
}

/// The node at `depth` of the sorted `keys`, taking their entries from `entries` in order:
/// a leaf while they fit one (or no key bits are left), else a branch of their digits.
fn build<V>(keys: &[u64], depth: u32, entries: &mut std::vec::IntoIter<(u64, V)>) -> Option<Node<V>> {
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
    Some(Node::Branch(Arc::new(children)))
}

/// A branch at `depth` holding `entries` (sorted by key: those of one child are adjacent).
fn split<V: Clone>(entries: Vec<(u64, V)>, depth: u32) -> Node<V> {
    let mut children: [Option<Node<V>>; FAN] = Default::default();
    let mut rest = entries.as_slice();
    while let Some(first) = rest.first() {
        let d = digit(first.0, depth);
        let n = rest.iter().take_while(|e| digit(e.0, depth) == d).count();
        children[d] = Some(Node::Leaf(Arc::from(&rest[..n])));
        rest = &rest[n..];
    }
    Node::Branch(Arc::new(children))
}

/// Removes `key`, which is present under `slot`.
fn remove_at<V: Clone>(slot: &mut Option<Node<V>>, key: u64, depth: u32) -> Option<V> {
    let node = slot.as_mut()?;
    match node {
        Node::Branch(children) => {
            let children = Arc::make_mut(children);
            let old = remove_at(&mut children[digit(key, depth)], key, depth + 1);
            if children.iter().all(Option::is_none) {
                *slot = None;
            }
            old
        }
        Node::Leaf(entries) => {
            let i = entries.binary_search_by_key(&key, |e| e.0).ok()?;
            let old = entries[i].1.clone();
            if entries.len() == 1 {
                *slot = None;
            } else {
                let mut kept = Vec::with_capacity(entries.len() - 1);
                kept.extend_from_slice(&entries[..i]);
                kept.extend_from_slice(&entries[i + 1..]);
                *entries = Arc::from(kept);
            }
            Some(old)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

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
        }
    }
}
