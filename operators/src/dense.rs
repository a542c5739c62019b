//! The running sums of one worker, indexed by dense item key. Item keys are assigned densely
//! by the source in log order and every materializer routes item `i` to worker `i % peers`
//! ([`crate::shard`]), so a worker's items map one to one onto the local indexes `i / peers`.
//! The arrays grow to the largest key seen, so keys must stay dense: a key far beyond those
//! assigned would allocate up to it. Each item has a fixed number of *slots* (a signal type,
//! or a signal type and half-life); a slot holds a short linked list of sums told apart by an
//! *extra* value (`()` for windows, the epoch for decay). A lookup is two array reads instead
//! of hashing and probing a table of every key.
//!
//! Changes are applied in *rounds*, one per logical time: the first change of a sum in a
//! round records its old value, and [`DenseSums::finish`] reports every sum whose value
//! changed, then frees the sums that became zero. The report is the same whatever the order
//! of the changes within the round (integer sums), so nothing needs sorting.

use std::sync::Arc;

use differential_dataflow::difference::IsZero;

use tidal_core::codec::{Codec, Cursor, DecodeError, put_u64, put_varint};

use tidal_core::flow::ItemKey;

/// No node.
const NIL: u32 = u32::MAX;

/// One sum: its value, what tells it apart within its slot, the next sum of the slot, and the
/// round in which it last changed.
#[derive(Clone)]
struct Node<X, S> {
    sum: S,
    extra: X,
    next: u32,
    stamp: u32,
}

/// A sum changed in the current round, with its value before the round.
struct Touched<S> {
    item: ItemKey,
    slot: u32,
    node: u32,
    old: S,
}

/// How many encoded bytes a checkpoint writer holds before handing them on.
pub(crate) const SPILL: usize = 1 << 20;

/// Sums per (item, slot, extra) for the items one worker owns.
pub(crate) struct DenseSums<X, S> {
    peers: u64,
    /// This worker's index: item keys are `local · peers + owner`.
    owner: u64,
    slots: usize,
    /// Per local item and slot, the first node of the slot's list, or [`NIL`].
    heads: Chunked<u32>,
    nodes: Chunked<Node<X, S>>,
    free: Vec<u32>,
    round: u32,
    touched: Vec<Touched<S>>,
    /// Sums read by [`load`](Self::load) in this round, as `(head index, node)`: their value
    /// before the round is zero, so they need no copy of it (a `Touched` per loaded sum was
    /// ~90 bytes each, a quarter of a gigabyte at a restart of 2M signals).
    loaded: Vec<(usize, u32)>,
}

/// Entries per chunk of [`Chunked`] (as a power of two).
const CHUNK_BITS: u32 = 16;

/// A vector kept in shared chunks of `2^CHUNK_BITS`: growing it never moves what it holds,
/// and a copy ([`Clone`]) shares every chunk, which a write then copies first if a copy still
/// holds it. The nodes of a million cohort sums are a hundred megabytes; grown by doubling,
/// each step copied them all into fresh pages on the worker, a stall of its own under ingest;
/// and a checkpoint takes the sums as such a copy in microseconds and encodes them on another
/// thread while the worker goes on.
struct Chunked<T> {
    chunks: Vec<Arc<Vec<T>>>,
    len: usize,
}

impl<T> Default for Chunked<T> {
    fn default() -> Self {
        Chunked {
            chunks: Vec::new(),
            len: 0,
        }
    }
}

impl<T> Clone for Chunked<T> {
    fn clone(&self) -> Self {
        Chunked {
            chunks: self.chunks.clone(),
            len: self.len,
        }
    }
}

impl<T: Clone> Chunked<T> {
    fn len(&self) -> usize {
        self.len
    }

    fn push(&mut self, value: T) {
        let at = self.len & ((1 << CHUNK_BITS) - 1);
        if at == 0 {
            // The first chunk grows by doubling (small sums stay small); the others are
            // made whole at once.
            let room = if self.chunks.is_empty() { 0 } else { 1 << CHUNK_BITS };
            self.chunks.push(Arc::new(Vec::with_capacity(room)));
        }
        if let Some(chunk) = self.chunks.last_mut() {
            Arc::make_mut(chunk).push(value);
            self.len += 1;
        }
    }

    /// Appends copies of `value` until it holds `len` entries.
    fn grow_to(&mut self, len: usize, value: T) {
        while self.len < len {
            self.push(value.clone());
        }
    }

    fn get(&self, i: usize) -> Option<&T> {
        self.chunks.get(i >> CHUNK_BITS)?.get(i & ((1 << CHUNK_BITS) - 1))
    }

    fn iter(&self) -> impl Iterator<Item = &T> {
        self.chunks.iter().flat_map(|c| c.iter())
    }

    fn iter_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.chunks.iter_mut().flat_map(|c| Arc::make_mut(c).iter_mut())
    }
}

impl<T> std::ops::Index<usize> for Chunked<T> {
    type Output = T;
    #[inline]
    fn index(&self, i: usize) -> &T {
        &self.chunks[i >> CHUNK_BITS][i & ((1 << CHUNK_BITS) - 1)]
    }
}

impl<T: Clone> std::ops::IndexMut<usize> for Chunked<T> {
    #[inline]
    fn index_mut(&mut self, i: usize) -> &mut T {
        &mut Arc::make_mut(&mut self.chunks[i >> CHUNK_BITS])[i & ((1 << CHUNK_BITS) - 1)]
    }
}

/// Entries the per-round buffers keep room for between rounds; a catch-up's or a restore's
/// large round gives the rest back.
const KEEP_TOUCHED: usize = 1 << 14;

impl<X: Copy + Eq, S: Clone + Default + PartialEq + IsZero> DenseSums<X, S> {
    /// Sums for the items of worker `owner` of `peers`, `slots` slots per item.
    pub(crate) fn new(peers: usize, owner: usize, slots: usize) -> Self {
        DenseSums {
            peers: (peers as u64).max(1),
            owner: owner as u64,
            slots: slots.max(1),
            heads: Chunked::default(),
            nodes: Chunked::default(),
            free: Vec::new(),
            round: 1,
            touched: Vec::new(),
            loaded: Vec::new(),
        }
    }

    /// Number of non-zero sums held (between rounds).
    pub(crate) fn len(&self) -> usize {
        self.nodes.len() - self.free.len()
    }

    /// Records node `n`'s value before this round, on its first change in the round; the node
    /// to change (taken once: a write to a chunk a snapshot shares copies it first).
    fn touch(&mut self, item: ItemKey, slot: usize, n: u32) -> &mut Node<X, S> {
        let node = &mut self.nodes[n as usize];
        if node.stamp != self.round {
            node.stamp = self.round;
            self.touched.push(Touched {
                item,
                slot: slot as u32,
                node: n,
                old: node.sum.clone(),
            });
        }
        node
    }

    /// Sets every sum of `item` to zero (in this round).
    pub(crate) fn clear_item(&mut self, item: ItemKey) {
        let base = (item / self.peers) as usize * self.slots;
        for slot in 0..self.slots {
            let Some(&head) = self.heads.get(base + slot) else {
                return;
            };
            let mut n = head;
            while n != NIL {
                let node = self.touch(item, slot, n);
                node.sum = S::default();
                n = node.next;
            }
        }
    }

    /// Sets to zero, for every item, the sum of `slot` told apart by `extra` (in this round).
    /// A scan of the slot over every item: O(items).
    pub(crate) fn clear_extra(&mut self, slot: usize, extra: X) {
        let items = self.heads.len() / self.slots;
        for local in 0..items {
            let mut n = self.heads[local * self.slots + slot];
            while n != NIL {
                let (next, hit) = {
                    let node = &self.nodes[n as usize];
                    (node.next, node.extra == extra)
                };
                if hit {
                    let item = local as u64 * self.peers + self.owner;
                    self.touch(item, slot, n).sum = S::default();
                }
                n = next;
            }
        }
    }

    /// Changes the sum of (`item`, `slot`, `extra`) with `change`, recording its old value
    /// on its first change in this round. `slot` must be below the slot count.
    #[inline]
    pub(crate) fn update(&mut self, item: ItemKey, slot: usize, extra: X, change: impl FnOnce(&mut S)) {
        debug_assert!(slot < self.slots);
        let (_, n, _) = self.find_or_alloc(item, slot, extra);
        change(&mut self.touch(item, slot, n).sum);
    }

    /// The head index of (`item`, `slot`) and the node of its sum told apart by `extra`,
    /// allocated (zero) if absent; whether it was.
    #[inline]
    fn find_or_alloc(&mut self, item: ItemKey, slot: usize, extra: X) -> (usize, u32, bool) {
        let at = (item / self.peers) as usize * self.slots + slot;
        if at >= self.heads.len() {
            // Keys are dense: grow by whole items, geometrically.
            let want = (at + 1).max(self.heads.len() * 2).next_multiple_of(self.slots);
            self.heads.grow_to(want, NIL);
        }
        let mut n = self.heads[at];
        while n != NIL && self.nodes[n as usize].extra != extra {
            n = self.nodes[n as usize].next;
        }
        if n != NIL {
            return (at, n, false);
        }
        n = self.alloc(extra, self.heads[at]);
        self.heads[at] = n;
        (at, n, true)
    }

    fn alloc(&mut self, extra: X, next: u32) -> u32 {
        let node = Node {
            sum: S::default(),
            extra,
            next,
            stamp: 0,
        };
        match self.free.pop() {
            Some(n) => {
                self.nodes[n as usize] = node;
                n
            }
            None => {
                self.nodes.push(node);
                (self.nodes.len() - 1) as u32
            }
        }
    }

    /// Ends the round: `emit(item, slot, extra, value, diff)` retracts the old value (`-1`)
    /// and inserts the new one (`+1`) of every sum this round changed (zero values are
    /// absent from the collection, so neither retracted nor inserted); sums now zero are freed.
    pub(crate) fn finish(&mut self, mut emit: impl FnMut(ItemKey, usize, X, &S, isize)) {
        for (at, n) in std::mem::take(&mut self.loaded) {
            let node = &self.nodes[n as usize];
            let item = (at / self.slots) as u64 * self.peers + self.owner;
            if node.sum.is_zero() {
                self.release(at, n);
            } else {
                emit(item, at % self.slots, node.extra, &node.sum, 1);
            }
        }
        let mut touched = std::mem::take(&mut self.touched);
        for t in touched.drain(..) {
            let node = &self.nodes[t.node as usize];
            let (slot, extra) = (t.slot as usize, node.extra);
            if node.sum != t.old {
                if !t.old.is_zero() {
                    emit(t.item, slot, extra, &t.old, -1);
                }
                if !node.sum.is_zero() {
                    emit(t.item, slot, extra, &node.sum, 1);
                }
            }
            if node.sum.is_zero() {
                self.release((t.item / self.peers) as usize * self.slots + slot, t.node);
            }
        }
        touched.shrink_to(KEEP_TOUCHED);
        self.touched = touched;
        self.free.shrink_to(self.free.len().max(KEEP_TOUCHED));
        self.round = self.round.wrapping_add(1);
        if self.round == 0 {
            // Stamps from 2^32 rounds ago must not look current.
            for node in self.nodes.iter_mut() {
                node.stamp = 0;
            }
            self.round = 1;
        }
    }

    /// The sums as they are now, for a checkpoint: a copy sharing every chunk (the worker's
    /// next write to a chunk copies it first while the snapshot holds it).
    pub(crate) fn snapshot(&self) -> SumsSnapshot<X, S> {
        SumsSnapshot {
            slots: self.slots,
            len: self.len(),
            heads: self.heads.clone(),
            nodes: self.nodes.clone(),
        }
    }

    /// Appends every non-zero sum (a checkpoint); see [`SumsSnapshot::save`].
    #[cfg(test)]
    pub(crate) fn save(
        &self,
        out: &mut Vec<u8>,
        spill: &mut dyn FnMut(&mut Vec<u8>) -> std::io::Result<()>,
    ) -> std::io::Result<()>
    where
        X: Codec,
        S: Codec,
    {
        self.snapshot().save(out, spill)
    }

    /// Reads back what [`SumsSnapshot::save`] wrote; the sums read count as changed in this
    /// round, so the next [`finish`](Self::finish) emits them.
    pub(crate) fn load(&mut self, c: &mut Cursor<'_>) -> Result<(), DecodeError>
    where
        X: Codec,
        S: Codec,
    {
        let n = c.u64("sums")?;
        // Room for them all at once (every sum takes at least three bytes).
        let room = c.room_for(n, 3);
        self.loaded.reserve_exact(room);
        for _ in 0..n {
            let local = c.varint("item")?;
            let slot = c.varint("slot")? as usize;
            if slot >= self.slots {
                return Err(DecodeError::OutOfRange {
                    what: "slot",
                    value: slot as u64,
                });
            }
            let extra = X::get(c)?;
            let sum = S::get(c)?;
            let item = local * self.peers + self.owner;
            self.set_loaded(item, slot, extra, sum);
        }
        Ok(())
    }

    /// Sets a sum read from a checkpoint (counted as changed in this round, from zero).
    fn set_loaded(&mut self, item: ItemKey, slot: usize, extra: X, sum: S) {
        let (at, n, new) = self.find_or_alloc(item, slot, extra);
        if new {
            self.loaded.push((at, n));
        } else if self.nodes[n as usize].stamp != self.round {
            // Already held before this round (not read twice in one part): an update.
            self.touch(item, slot, n);
        }
        let node = &mut self.nodes[n as usize];
        node.stamp = self.round;
        node.sum = sum;
    }

    /// Unlinks node `n` from the list at `at` and frees it.
    fn release(&mut self, at: usize, n: u32) {
        let next = self.nodes[n as usize].next;
        if self.heads[at] == n {
            self.heads[at] = next;
        } else {
            let mut p = self.heads[at];
            while p != NIL {
                let pn = &mut self.nodes[p as usize];
                if pn.next == n {
                    pn.next = next;
                    break;
                }
                p = pn.next;
            }
        }
        self.nodes[n as usize].sum = S::default();
        self.free.push(n);
    }
}

/// [`DenseSums`] as of one moment between rounds, held apart from the worker's sums: what a
/// checkpoint encodes on its own thread.
pub(crate) struct SumsSnapshot<X, S> {
    slots: usize,
    /// Non-zero sums.
    len: usize,
    heads: Chunked<u32>,
    nodes: Chunked<Node<X, S>>,
}

impl<X: Codec + Clone, S: Codec + Clone> SumsSnapshot<X, S> {
    /// Appends every non-zero sum as `(local item, slot, extra, sum)`, handing `out` to
    /// `spill` whenever it holds [`SPILL`] bytes. [`DenseSums::load`] reads it back.
    pub(crate) fn save(
        &self,
        out: &mut Vec<u8>,
        spill: &mut dyn FnMut(&mut Vec<u8>) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        put_u64(out, self.len as u64);
        for (at, &head) in self.heads.iter().enumerate() {
            let mut n = head;
            while n != NIL {
                let node = &self.nodes[n as usize];
                put_varint(out, (at / self.slots) as u64);
                put_varint(out, (at % self.slots) as u64);
                node.extra.put(out);
                node.sum.put(out);
                n = node.next;
            }
            if out.len() >= SPILL {
                spill(out)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    /// Random rounds of changes against a `BTreeMap` of sums: the reported changes rebuild
    /// the map exactly and zero sums are freed.
    #[test]
    fn rounds_match_a_map() {
        let mut rng = StdRng::seed_from_u64(3);
        let (peers, worker) = (3u64, 1u64);
        let mut dense: DenseSums<u64, i64> = DenseSums::new(peers as usize, worker as usize, 4);
        let mut want: BTreeMap<(u64, usize, u64), i64> = BTreeMap::new();
        let mut got: BTreeMap<(u64, usize, u64), i64> = BTreeMap::new();
        for _ in 0..300 {
            let before = want.clone();
            for _ in 0..rng.gen_range(0..40) {
                let item = rng.gen_range(0..50u64) * peers + worker;
                let (slot, extra) = (rng.gen_range(0..4usize), rng.gen_range(0..3u64));
                let d = rng.gen_range(-2..3i64);
                *want.entry((item, slot, extra)).or_default() += d;
                dense.update(item, slot, extra, |s| *s += d);
            }
            // Now and then, clear an item, or one extra of a slot across items.
            match rng.gen_range(0..10) {
                0 => {
                    let item = rng.gen_range(0..50u64) * peers + worker;
                    want.retain(|k, _| k.0 != item);
                    dense.clear_item(item);
                }
                1 => {
                    let (slot, extra) = (rng.gen_range(0..4usize), rng.gen_range(0..3u64));
                    want.retain(|k, _| (k.1, k.2) != (slot, extra));
                    dense.clear_extra(slot, extra);
                }
                _ => {}
            }
            want.retain(|_, v| *v != 0);
            let mut changes = Vec::new();
            dense.finish(|item, slot, extra, v, diff| changes.push(((item, slot, extra), *v, diff)));
            for (k, v, diff) in changes {
                if diff < 0 {
                    assert_eq!(got.remove(&k), Some(v), "retracted a value not held");
                    assert_eq!(before.get(&k), Some(&v));
                } else {
                    assert!(got.insert(k, v).is_none(), "two values for one key");
                }
            }
            assert_eq!(got, want);
            assert_eq!(dense.len(), want.len());
        }
    }

    /// Sums saved and loaded into fresh sums are reported as inserted by the next round —
    /// with changes made in that same round on top — and later rounds go on from them.
    #[test]
    fn a_load_reports_the_saved_sums_and_rounds_go_on() {
        let mut rng = StdRng::seed_from_u64(7);
        let (peers, worker) = (2u64, 1u64);
        let item = |rng: &mut StdRng| rng.gen_range(0..40u64) * peers + worker;
        let mut dense: DenseSums<u64, i64> = DenseSums::new(peers as usize, worker as usize, 3);
        let mut want: BTreeMap<(u64, usize, u64), i64> = BTreeMap::new();
        for _ in 0..200 {
            let (i, slot, extra, d) = (
                item(&mut rng),
                rng.gen_range(0..3usize),
                rng.gen_range(0..4u64),
                rng.gen_range(-2..3i64),
            );
            *want.entry((i, slot, extra)).or_default() += d;
            dense.update(i, slot, extra, |s| *s += d);
        }
        dense.finish(|_, _, _, _, _| {});
        want.retain(|_, v| *v != 0);
        let mut bytes = Vec::new();
        dense.save(&mut bytes, &mut |_| Ok(())).expect("saved");

        let mut restored: DenseSums<u64, i64> = DenseSums::new(peers as usize, worker as usize, 3);
        restored.load(&mut Cursor::new(&bytes)).expect("loaded");
        for _ in 0..30 {
            let (i, slot, extra, d) = (
                item(&mut rng),
                rng.gen_range(0..3usize),
                rng.gen_range(0..4u64),
                rng.gen_range(-2..3i64),
            );
            *want.entry((i, slot, extra)).or_default() += d;
            restored.update(i, slot, extra, |s| *s += d);
        }
        want.retain(|_, v| *v != 0);
        let mut got: BTreeMap<(u64, usize, u64), i64> = BTreeMap::new();
        let mut round = Vec::new();
        restored.finish(|i, slot, extra, v, diff| round.push(((i, slot, extra), *v, diff)));
        for (k, v, diff) in round {
            assert_eq!(diff, 1, "nothing was held before the load");
            assert!(got.insert(k, v).is_none(), "two values for one key");
        }
        assert_eq!(got, want);
        assert_eq!(restored.len(), want.len());

        for _ in 0..50 {
            let before = want.clone();
            let mut round = Vec::new();
            for _ in 0..rng.gen_range(0..20) {
                let (i, slot, extra, d) = (
                    item(&mut rng),
                    rng.gen_range(0..3usize),
                    rng.gen_range(0..4u64),
                    rng.gen_range(-2..3i64),
                );
                *want.entry((i, slot, extra)).or_default() += d;
                restored.update(i, slot, extra, |s| *s += d);
            }
            want.retain(|_, v| *v != 0);
            restored.finish(|i, slot, extra, v, diff| round.push(((i, slot, extra), *v, diff)));
            for (k, v, diff) in round {
                if diff < 0 {
                    assert_eq!(got.remove(&k), Some(v));
                    assert_eq!(before.get(&k), Some(&v));
                } else {
                    assert!(got.insert(k, v).is_none());
                }
            }
            assert_eq!(got, want);
        }
    }

    /// A snapshot keeps the sums of its moment while the worker changes, frees, allocates
    /// and grows past it: it encodes what a save at that moment encoded, and the sums go on.
    #[test]
    fn a_snapshot_holds_its_moment() {
        let mut rng = StdRng::seed_from_u64(11);
        let (peers, worker) = (2u64, 0u64);
        let mut dense: DenseSums<u64, i64> = DenseSums::new(peers as usize, worker as usize, 2);
        let mut want: BTreeMap<(u64, usize, u64), i64> = BTreeMap::new();
        let change = |dense: &mut DenseSums<u64, i64>, want: &mut BTreeMap<_, i64>, rng: &mut StdRng, items: u64| {
            for _ in 0..2000 {
                let (i, slot, extra) = (
                    rng.gen_range(0..items) * peers + worker,
                    rng.gen_range(0..2usize),
                    rng.gen_range(0..3u64),
                );
                let d = rng.gen_range(-2..3i64);
                *want.entry((i, slot, extra)).or_default() += d;
                dense.update(i, slot, extra, |s| *s += d);
            }
            dense.finish(|_, _, _, _, _| {});
            want.retain(|_, v| *v != 0);
        };
        // Over a chunk of nodes, so writes after the snapshot copy shared chunks.
        for _ in 0..40 {
            change(&mut dense, &mut want, &mut rng, 40_000);
        }
        let mut then = Vec::new();
        dense.save(&mut then, &mut |_| Ok(())).expect("saved");
        let snapshot = dense.snapshot();
        let at_snapshot = want.clone();
        for round in 0..40 {
            // Later rounds reach items far past the snapshot's, growing heads and nodes.
            change(&mut dense, &mut want, &mut rng, 40_000 + 5_000 * round);
        }
        let mut later = Vec::new();
        snapshot.save(&mut later, &mut |_| Ok(())).expect("saved");
        assert_eq!(later, then, "the snapshot changed with the sums");
        // The sums a part holds, read back into fresh sums.
        let read_back = |bytes: &[u8]| {
            let mut restored: DenseSums<u64, i64> = DenseSums::new(peers as usize, worker as usize, 2);
            restored.load(&mut Cursor::new(bytes)).expect("loaded");
            let mut got = BTreeMap::new();
            restored.finish(|i, slot, extra, v, _| {
                got.insert((i, slot, extra), *v);
            });
            got
        };
        assert_eq!(read_back(&later), at_snapshot);
        // The live sums are the latest ones.
        let mut now = Vec::new();
        dense.save(&mut now, &mut |_| Ok(())).expect("saved");
        assert_eq!(read_back(&now), want);
    }
}
