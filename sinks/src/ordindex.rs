//! [`OrdIndex`]: the persistent ordered set behind every ranking index.
//!
//! A three-level tree of shared (`Arc`) nodes: a root list of *mids*, each a list of up to
//! [`MID_MAX`] leaves, each a sorted run of up to [`LEAF_MAX`] [`IndexEntry`]s. Entries are
//! small and `Copy` (no reference counts), so copying a leaf is one short `memcpy`. Cloning
//! an index shares everything (O(1)); a published snapshot keeps its version while the
//! builder moves on.
//!
//! Changes are applied in sorted batches ([`OrdIndex::apply`]) and merged into the tree in
//! one left-to-right pass: every leaf and mid a batch lands in is rebuilt once (a sequential
//! read and write, which the memory system streams), however many changes land in it, and
//! the untouched ones are shared. Leaves and mids that grow past their maximum are split,
//! and ones under a quarter full join a neighbour, so the tree stays balanced under any mix
//! of inserts and removes.
//!
//! Entries order by value descending, then item id ascending, then key (see
//! [`IndexEntry`]). An entry carries a digest of its id that settles almost every tie; the
//! rare comparison that needs more asks for the full ids (a change carries its own, the
//! entries already in the index are looked up by key).

use std::cmp::Ordering;
use std::sync::Arc;

use crate::index::IndexEntry;
use tidal_core::flow::ItemKey;

/// Most entries in a leaf; a longer run is split.
pub const LEAF_MAX: usize = 128;
/// Most leaves in a mid; a longer list is split.
pub const MID_MAX: usize = 64;

/// One insertion or removal of an entry, with the item's full id for tie-breaking.
#[derive(Clone, Debug)]
pub struct Change {
    /// The entry.
    pub entry: IndexEntry,
    /// The item's full id (the entry holds only a digest). A removal's must be the id the
    /// entry's key is indexed under.
    pub id: Arc<str>,
    /// `true` inserts the entry, `false` removes it.
    pub insert: bool,
}

impl Change {
    fn cmp(&self, other: &Change) -> Ordering {
        self.entry
            .cmp_with(&other.entry, || &*self.id, || &*other.id)
            .then(self.insert.cmp(&other.insert))
    }
}

/// A batch of changes sorted into index order, with each removal that is immediately
/// re-inserted (same entry, same id) dropped. It can be applied to several copies of an
/// index that hold the same entries.
#[derive(Clone, Debug, Default)]
pub struct Prepared(Vec<Change>);

impl Prepared {
    /// Sorts `changes` and cancels the no-op pairs.
    pub fn new(mut changes: Vec<Change>) -> Prepared {
        Prepared::sort(&mut changes);
        Prepared::cancelled(changes)
    }

    /// Sorts changes in the order [`Prepared`] holds them.
    pub(crate) fn sort(changes: &mut [Change]) {
        changes.sort_unstable_by(Change::cmp);
    }

    /// The order of two changes in a [`Prepared`].
    pub(crate) fn order(a: &Change, b: &Change) -> Ordering {
        a.cmp(b)
    }

    /// Sorted `changes` with the no-op pairs cancelled.
    pub(crate) fn cancelled(mut changes: Vec<Change>) -> Prepared {
        let mut out = 0;
        let mut i = 0;
        while i < changes.len() {
            if i + 1 < changes.len() {
                let (a, b) = (&changes[i], &changes[i + 1]);
                if !a.insert && b.insert && a.entry == b.entry && a.id == b.id {
                    i += 2;
                    continue;
                }
            }
            changes.swap(out, i);
            out += 1;
            i += 1;
        }
        changes.truncate(out);
        Prepared(changes)
    }

    /// Whether there is nothing to apply.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The sorted changes, to reuse the vector.
    pub fn into_inner(self) -> Vec<Change> {
        self.0
    }
}

/// A child of a node: its first entry (for routing without touching the child), the number
/// of entries under it and the shared child.
#[derive(Debug)]
struct Node<T> {
    first: IndexEntry,
    len: usize,
    child: Arc<Vec<T>>,
}

type Leaf = Node<IndexEntry>;
type Mid = Node<Leaf>;

/// What a node needs of its children.
trait Child: Clone {
    fn first_entry(&self) -> IndexEntry;
    fn entries(&self) -> usize;
}

impl Child for IndexEntry {
    fn first_entry(&self) -> IndexEntry {
        *self
    }
    fn entries(&self) -> usize {
        1
    }
}

impl<T> Clone for Node<T> {
    fn clone(&self) -> Self {
        Node {
            first: self.first,
            len: self.len,
            child: self.child.clone(),
        }
    }
}

impl<T> Child for Node<T> {
    fn first_entry(&self) -> IndexEntry {
        self.first
    }
    fn entries(&self) -> usize {
        self.len
    }
}

impl<T: Child> Node<T> {
    /// A node over `items`; `None` if there are none.
    fn new(items: Vec<T>) -> Option<Node<T>> {
        let first = items.first()?.first_entry();
        Some(Node {
            first,
            len: items.iter().map(Child::entries).sum(),
            child: Arc::new(items),
        })
    }
}

/// A persistent ordered set of [`IndexEntry`], best first.
#[derive(Clone, Debug, Default)]
pub struct OrdIndex {
    root: Arc<Vec<Mid>>,
    len: usize,
}

impl OrdIndex {
    /// An empty index.
    pub fn new() -> OrdIndex {
        OrdIndex::default()
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the index is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The entries, best first.
    pub fn iter(&self) -> impl Iterator<Item = &IndexEntry> + Clone + '_ {
        self.root
            .iter()
            .flat_map(|mid| mid.child.iter().flat_map(|leaf| leaf.child.iter()))
    }

    /// Applies a batch of changes. `id_of` gives the id of an item key already in the index
    /// (consulted only when two entries tie on value and id digest). A removal of an entry
    /// that is not there and an insertion of one that is are ignored.
    ///
    /// The leaves and mids the changes land in are rebuilt (each once); the others are
    /// shared with the index as it was.
    pub fn apply<'a>(&mut self, changes: &Prepared, id_of: &dyn Fn(ItemKey) -> Option<&'a str>) {
        let changes = &changes.0[..];
        if changes.is_empty() {
            return;
        }
        let ctx = Merge { id_of };
        let old = &self.root[..];
        let mut root: Vec<Mid> = Vec::with_capacity(old.len() + 1);
        let mut pending: Vec<Leaf> = Vec::new();
        if old.is_empty() {
            let entries: Vec<IndexEntry> = changes.iter().filter(|c| c.insert).map(|c| c.entry).collect();
            if let Some(leaf) = Node::new(entries) {
                push_leaf(&mut pending, leaf);
            }
        } else {
            let mut rest = changes;
            for (m, mid) in old.iter().enumerate() {
                let take = old.get(m + 1).map_or(rest.len(), |next| ctx.before(rest, &next.first));
                let (here, tail) = rest.split_at(take);
                rest = tail;
                if here.is_empty() && pending.is_empty() {
                    push_node(&mut root, mid.clone(), MID_MAX);
                } else {
                    ctx.merge_mid(mid, here, &mut pending, &mut root);
                }
            }
        }
        flush_leaves(&mut pending, &mut root);
        self.len = root.iter().map(|m| m.len).sum();
        self.root = Arc::new(root);
    }
}

struct Merge<'f, 'a> {
    id_of: &'f dyn Fn(ItemKey) -> Option<&'a str>,
}

impl Merge<'_, '_> {
    /// An entry already in the index against a change.
    fn cmp(&self, e: &IndexEntry, c: &Change) -> Ordering {
        // A removal carries the id its key is indexed under: no need to look it up.
        let e_id = || match e.key == c.entry.key && !c.insert {
            true => &*c.id,
            false => (self.id_of)(e.key).unwrap_or(""),
        };
        e.cmp_with(&c.entry, e_id, || &*c.id)
    }

    /// How many of the sorted `changes` order before the existing entry `bound`: an
    /// exponential search from the front, as the answer is usually small.
    fn before(&self, changes: &[Change], bound: &IndexEntry) -> usize {
        let below = |c: &Change| self.cmp(bound, c) == Ordering::Greater;
        let mut hi = 1;
        while hi < changes.len() && below(&changes[hi]) {
            hi *= 2;
        }
        let lo = hi / 2;
        let hi = hi.min(changes.len());
        lo + changes[lo..hi].partition_point(below)
    }

    /// Rebuilds one mid with its changes; its leaves go through `pending` (carried over to
    /// the next mid when too few to make one).
    fn merge_mid(&self, mid: &Mid, changes: &[Change], pending: &mut Vec<Leaf>, root: &mut Vec<Mid>) {
        let leaves = &mid.child[..];
        let mut rest = changes;
        for (l, leaf) in leaves.iter().enumerate() {
            let take = leaves
                .get(l + 1)
                .map_or(rest.len(), |next| self.before(rest, &next.first));
            let (here, tail) = rest.split_at(take);
            rest = tail;
            if here.is_empty() {
                push_node(pending, leaf.clone(), LEAF_MAX);
                continue;
            }
            let mut merged = Vec::with_capacity(leaf.len + here.len());
            self.merge_leaf(&leaf.child, here, &mut merged);
            if let Some(leaf) = Node::new(merged) {
                push_leaf(pending, leaf);
            }
        }
        if pending.len() >= MID_MAX / 4 {
            flush_leaves(pending, root);
        }
    }

    /// Merges sorted changes into a leaf's sorted entries.
    fn merge_leaf(&self, old: &[IndexEntry], changes: &[Change], out: &mut Vec<IndexEntry>) {
        let mut i = 0;
        for c in changes {
            while i < old.len() && self.cmp(&old[i], c) == Ordering::Less {
                out.push(old[i]);
                i += 1;
            }
            let present = i < old.len() && self.cmp(&old[i], c) == Ordering::Equal;
            match (c.insert, present) {
                (true, false) => out.push(c.entry),
                (false, true) => i += 1,
                (true, true) => tracing::debug!(key = c.entry.key, "index insert of a present entry"),
                (false, false) => tracing::debug!(key = c.entry.key, "index removal of an absent entry"),
            }
        }
        out.extend_from_slice(&old[i..]);
    }
}

/// Appends `node` to `dst`, merging it into the last node when either has under a quarter
/// of `max` children and both fit together.
fn push_node<T: Child>(dst: &mut Vec<Node<T>>, node: Node<T>, max: usize) {
    let n = node.child.len();
    if n == 0 {
        return;
    }
    if let Some(last) = dst.last_mut() {
        let l = last.child.len();
        if (l < max / 4 || n < max / 4) && l + n <= max {
            let items = Arc::make_mut(&mut last.child);
            match Arc::try_unwrap(node.child) {
                Ok(v) => items.extend(v),
                Err(shared) => items.extend_from_slice(&shared),
            }
            last.len += node.len;
            return;
        }
    }
    dst.push(node);
}

/// Appends a rebuilt leaf, split evenly when longer than [`LEAF_MAX`].
fn push_leaf(pending: &mut Vec<Leaf>, leaf: Leaf) {
    let n = leaf.child.len();
    if n <= LEAF_MAX {
        push_node(pending, leaf, LEAF_MAX);
        return;
    }
    let parts = n.div_ceil(LEAF_MAX / 2);
    for chunk in leaf.child.chunks(n.div_ceil(parts)) {
        if let Some(part) = Node::new(chunk.to_vec()) {
            push_node(pending, part, LEAF_MAX);
        }
    }
}

/// Turns the gathered leaves into mids of at most [`MID_MAX`] leaves, appended to `root`.
fn flush_leaves(pending: &mut Vec<Leaf>, root: &mut Vec<Mid>) {
    if pending.is_empty() {
        return;
    }
    let leaves = std::mem::take(pending);
    if leaves.len() <= MID_MAX {
        if let Some(mid) = Node::new(leaves) {
            push_node(root, mid, MID_MAX);
        }
        return;
    }
    let parts = leaves.len().div_ceil(MID_MAX / 2);
    for chunk in leaves.chunks(leaves.len().div_ceil(parts)) {
        if let Some(mid) = Node::new(chunk.to_vec()) {
            push_node(root, mid, MID_MAX);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};
    use std::collections::BTreeMap;

    fn id_of(key: ItemKey) -> String {
        // Long shared prefixes, so ties on value often need the full id.
        format!("item-with-a-long-prefix-{}", key % 50)
    }

    /// Brute force: entries sorted by value desc, id asc, key asc.
    fn expected(model: &BTreeMap<ItemKey, u64>) -> Vec<(u64, ItemKey)> {
        let mut v: Vec<_> = model.iter().map(|(k, o)| (*o, *k)).collect();
        v.sort_by(|a, b| b.0.cmp(&a.0).then(id_of(a.1).cmp(&id_of(b.1))).then(a.1.cmp(&b.1)));
        v
    }

    fn check_shape(ix: &OrdIndex) {
        for mid in ix.root.iter() {
            assert!(mid.child.len() <= MID_MAX && !mid.child.is_empty());
            assert_eq!(mid.first, mid.child[0].first);
            assert_eq!(mid.len, mid.child.iter().map(|l| l.len).sum::<usize>());
            for leaf in mid.child.iter() {
                assert!(leaf.child.len() <= LEAF_MAX && !leaf.child.is_empty());
                assert_eq!(leaf.len, leaf.child.len());
                assert_eq!(leaf.first, leaf.child[0]);
            }
        }
        assert_eq!(ix.iter().count(), ix.len());
    }

    #[test]
    fn random_batches_match_a_sorted_model() {
        for seed in 0..6 {
            let mut rng = SmallRng::seed_from_u64(seed);
            let ids: Vec<Arc<str>> = (0..4000u64).map(|k| Arc::from(id_of(k))).collect();
            let mut model: BTreeMap<ItemKey, u64> = BTreeMap::new();
            let mut ix = OrdIndex::new();
            let mut versions = Vec::new();
            let mut changes = Vec::new();
            for round in 0..60 {
                let keys = if round % 10 == 0 { 3000 } else { rng.gen_range(0..300) };
                let mut next = model.clone();
                for _ in 0..keys {
                    let key = rng.gen_range(0..4000u64);
                    // Few distinct values: many ties on value.
                    let new = (!rng.gen_bool(0.3)).then(|| rng.gen_range(0..20u64));
                    match new {
                        Some(v) => next.insert(key, v),
                        None => next.remove(&key),
                    };
                }
                for (key, old) in &model {
                    if next.get(key) != Some(old) {
                        let entry = IndexEntry::new(*old, &ids[*key as usize], *key);
                        let id = ids[*key as usize].clone();
                        changes.push(Change {
                            entry,
                            id,
                            insert: false,
                        });
                    }
                }
                for (key, new) in &next {
                    if model.get(key) != Some(new) {
                        let entry = IndexEntry::new(*new, &ids[*key as usize], *key);
                        let id = ids[*key as usize].clone();
                        changes.push(Change {
                            entry,
                            id,
                            insert: true,
                        });
                    }
                }
                // A no-op pair and a stale removal are tolerated.
                if let Some((k, v)) = next.iter().next() {
                    let entry = IndexEntry::new(*v, &ids[*k as usize], *k);
                    let id = ids[*k as usize].clone();
                    changes.push(Change {
                        entry,
                        id: id.clone(),
                        insert: false,
                    });
                    changes.push(Change {
                        entry,
                        id,
                        insert: true,
                    });
                }
                let stale = IndexEntry::new(999, &ids[0], 0);
                let id = ids[0].clone();
                changes.push(Change {
                    entry: stale,
                    id,
                    insert: false,
                });
                let lookup = |k: ItemKey| ids.get(k as usize).map(|s| &**s);
                let batch = Prepared::new(std::mem::take(&mut changes));
                // The same batch applied to a clone gives the same entries.
                let mut twin = versions
                    .last()
                    .map_or_else(OrdIndex::new, |(v, _): &(OrdIndex, _)| v.clone());
                twin.apply(&batch, &lookup);
                ix.apply(&batch, &lookup);
                let twin: Vec<_> = twin.iter().map(|e| (e.order, e.key)).collect();
                assert_eq!(twin, ix.iter().map(|e| (e.order, e.key)).collect::<Vec<_>>());
                model = next;
                let got: Vec<_> = ix.iter().map(|e| (e.order, e.key)).collect();
                assert_eq!(got, expected(&model), "seed {seed} round {round}");
                check_shape(&ix);
                versions.push((ix.clone(), expected(&model)));
            }
            // Older versions are untouched by later batches.
            for (v, exp) in versions {
                let got: Vec<_> = v.iter().map(|e| (e.order, e.key)).collect();
                assert_eq!(got, exp);
            }
        }
    }

    #[test]
    fn draining_and_refilling_keeps_the_tree_compact() {
        let ids: Vec<Arc<str>> = (0..20_000u64).map(|k| Arc::from(format!("k{k:06}"))).collect();
        let lookup = |k: ItemKey| ids.get(k as usize).map(|s| &**s);
        let mut ix = OrdIndex::new();
        let change = |k: u64, insert| Change {
            entry: IndexEntry::new(k % 7, &ids[k as usize], k),
            id: ids[k as usize].clone(),
            insert,
        };
        let changes: Vec<Change> = (0..20_000).map(|k| change(k, true)).collect();
        ix.apply(&Prepared::new(changes), &lookup);
        assert_eq!(ix.len(), 20_000);
        check_shape(&ix);
        // Remove all but every 100th entry, a few at a time: small nodes merge.
        for start in (0..20_000u64).step_by(1000) {
            let changes: Vec<Change> = (start..start + 1000)
                .filter(|k| k % 100 != 0)
                .map(|k| change(k, false))
                .collect();
            ix.apply(&Prepared::new(changes), &lookup);
            check_shape(&ix);
        }
        assert_eq!(ix.len(), 200);
        // Removing leaves no run of small leaves behind: each is at least a quarter full
        // or could not join a neighbour.
        let leaves: usize = ix.root.iter().map(|m| m.child.len()).sum();
        assert!(leaves <= 200 / (LEAF_MAX / 4), "{leaves} leaves for 200 entries");
        assert_eq!(ix.root.len(), 1, "one mid");
    }
}
