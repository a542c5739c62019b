//! [`Pending`]: the updates a keyed sum holds for future times — per time, its updates (kept
//! consolidated as they accumulate), the clears of a slot and extra, and the retires — each
//! time with the one capability that emits its effect.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use rayon::slice::ParallelSliceMut;
use timely::dataflow::operators::Capability;

use differential_dataflow::difference::Semigroup;

use tidal_core::codec::{Codec, Cursor, DecodeError, put_u64};
use tidal_core::flow::ItemKey;
use tidal_core::time::Time;

use crate::dense::SPILL;

/// Updates, clears and retires due at one time, with the capability to emit their effect.
pub(crate) struct Due<P, D, X> {
    pub(crate) cap: Capability<Time>,
    /// The updates the worker adds to.
    pub(crate) updates: Vec<(P, D)>,
    /// Updates handed to a checkpoint's snapshot, to be encoded off the worker: they are
    /// frozen (new ones go to `updates`) and folded back into `updates` at a consolidation
    /// once the snapshot has let them go. Usually empty.
    pub(crate) frozen: Vec<Arc<Vec<(P, D)>>>,
    pub(crate) clears: Vec<(usize, X)>,
    pub(crate) retires: Vec<(ItemKey, u64)>,
    /// Length at which to consolidate next: a multiple of the length after the last one.
    next_consolidation: usize,
    /// How many of `updates`, from the first, are consolidated already.
    sorted: usize,
}

impl<P: Packed + Clone, D: Semigroup + Send, X> Due<P, D, X> {
    /// Consolidates the updates (sorting only those added since the last time).
    pub(crate) fn consolidate(&mut self) {
        consolidate_after(&mut self.updates, self.sorted);
        self.sorted = self.updates.len();
    }
}

/// Fewest updates sorted on every core rather than on the worker alone: a catch-up's times
/// (a restart's tail, a replay's rounds) hold millions, while the other core waits for the
/// worker; a live time's hold far fewer, and its sorts stay on the worker.
const PARALLEL_SORT: usize = 1 << 18;
/// Fewest updates a bucket holds before it is consolidated.
const MIN_CONSOLIDATION: usize = 4096;
/// Recent times looked up, to skip the ordered map for most pushes.
const CACHE: usize = 32;
/// Update vectors kept for reuse (the largest are kept: a catch-up's run fills one bucket
/// with millions of updates, and a vector freed back to the kernel is paid for again, page by
/// zeroed page, by the next run).
const SPARE: usize = 8;

/// An update's order as integers: sorting by [`Packed::packed`] sorts as `Ord` does (the key
/// is ordered as the update and equal only for equal updates), with one or two integer
/// comparisons instead of one per field. A catch-up's consolidations sort millions of
/// updates; by field, they took a fifth of a restart's worker time.
pub(crate) trait Packed: Send {
    /// The key.
    type Key: Ord + Copy + Send;
    /// This update's key.
    fn packed(&self) -> Self::Key;
}

/// A windowed sum's update: (item, signal type, lanes).
impl Packed for (u64, u16, u16) {
    type Key = u128;
    fn packed(&self) -> u128 {
        (u128::from(self.0) << 32) | (u128::from(self.1) << 16) | u128::from(self.2)
    }
}

/// A cohort sum's update: ((item, signal type, lanes), cohort).
impl Packed for ((u64, u16, u16), u64) {
    type Key = (u128, u32);
    fn packed(&self) -> (u128, u32) {
        let ((item, kind, mask), cohort) = *self;
        let high =
            (u128::from(item) << 64) | (u128::from(kind) << 48) | (u128::from(mask) << 32) | u128::from(cohort >> 32);
        (high, cohort as u32)
    }
}

/// A decayed sum's update: (item, signal type, half-life, epoch).
impl Packed for (u64, u16, u8, u64) {
    type Key = (u128, u32);
    fn packed(&self) -> (u128, u32) {
        let (item, kind, half_life, epoch) = *self;
        let high = (u128::from(item) << 64)
            | (u128::from(kind) << 48)
            | (u128::from(half_life) << 40)
            | u128::from(epoch >> 24);
        (high, (epoch & 0xff_ffff) as u32)
    }
}

/// (item, slot): the tests' update.
#[cfg(test)]
impl Packed for (u64, u16) {
    type Key = u128;
    fn packed(&self) -> u128 {
        (u128::from(self.0) << 16) | u128::from(self.1)
    }
}

/// Sorts `updates` (unstably: equal updates are summed, so their order does not matter) and
/// sums the diffs of equal updates, dropping those that sum to zero. differential's
/// `consolidate` sorts stably, which on millions of updates takes half again as long.
pub(crate) fn consolidate_unstable<P: Packed, D: Semigroup + Send>(updates: &mut Vec<(P, D)>) {
    let kept = consolidate_slice(updates);
    updates.truncate(kept);
}

/// [`consolidate_unstable`] for `updates` whose first `sorted` are consolidated already (by
/// an earlier call): only the rest is sorted, then merged with them, from the back and in
/// place, through a copy of the rest. A bucket consolidated at every doubling so sorts each
/// update about once rather than at every consolidation.
pub(crate) fn consolidate_after<P: Packed + Clone, D: Semigroup + Send>(updates: &mut Vec<(P, D)>, sorted: usize) {
    if sorted == 0 || sorted > updates.len() {
        consolidate_unstable(updates);
        return;
    }
    let m = consolidate_slice(&mut updates[sorted..]);
    updates.truncate(sorted + m);
    let scratch = updates[sorted..].to_vec();
    // `updates[..i]` are the consolidated ones not merged yet, `scratch[..j]` the rest's, and
    // `updates[w..]` the merged ones; the slots between hold spent copies (w >= i + j).
    let (mut i, mut j, mut w) = (sorted, m, sorted + m);
    while j > 0 {
        let b = &scratch[j - 1];
        let order = match i {
            0 => std::cmp::Ordering::Less,
            _ => updates[i - 1].0.packed().cmp(&b.0.packed()),
        };
        if order.is_gt() {
            w -= 1;
            updates.swap(i - 1, w);
            i -= 1;
        } else if order.is_eq() {
            updates[i - 1].1.plus_equals(&b.1);
            j -= 1;
            if !updates[i - 1].1.is_zero() {
                w -= 1;
                updates.swap(i - 1, w);
            }
            i -= 1;
        } else {
            w -= 1;
            updates[w] = b.clone();
            j -= 1;
        }
    }
    updates.drain(i..w);
}

/// Sorts `updates` and sums equal ones into the first of them, moving the nonzero sums to
/// the front: how many there are.
fn consolidate_slice<P: Packed, D: Semigroup + Send>(updates: &mut [(P, D)]) -> usize {
    if updates.len() < 2 {
        return match updates.first() {
            Some((_, d)) if !d.is_zero() => 1,
            _ => 0,
        };
    }
    if updates.len() >= PARALLEL_SORT {
        updates.par_sort_unstable_by_key(|u| u.0.packed());
    } else {
        updates.sort_unstable_by_key(|u| u.0.packed());
    }
    let mut kept = 0;
    for i in 0..updates.len() {
        if kept > 0 && updates[kept - 1].0.packed() == updates[i].0.packed() {
            let (left, right) = updates.split_at_mut(i);
            left[kept - 1].1.plus_equals(&right[0].1);
        } else {
            if kept > 0 && updates[kept - 1].1.is_zero() {
                kept -= 1;
            }
            updates.swap(kept, i);
            kept += 1;
        }
    }
    if kept > 0 && updates[kept - 1].1.is_zero() {
        kept -= 1;
    }
    kept
}

/// The waiting updates, per time.
pub(crate) struct Pending<P, D, X> {
    /// Time -> index in `slots`.
    order: BTreeMap<Time, usize>,
    slots: Vec<Option<Due<P, D, X>>>,
    free: Vec<usize>,
    /// Recently used (time, index) pairs, replaced round robin.
    cache: [(Time, usize); CACHE],
    cache_next: usize,
    spare: Vec<Vec<(P, D)>>,
    /// Clears already scheduled (each is scheduled once, however many events ask), and the
    /// last one asked for per slot (most events ask for the same one as the event before).
    scheduled: HashSet<(Time, usize, X)>,
    last_clear: Vec<Option<(Time, X)>>,
    /// Updates held.
    pub(crate) held: usize,
}

impl<P: Packed + Clone + Codec, D: Semigroup + Codec + Send, X: Copy + Eq + std::hash::Hash + Codec> Pending<P, D, X> {
    pub(crate) fn new() -> Self {
        Pending {
            order: BTreeMap::new(),
            slots: Vec::new(),
            free: Vec::new(),
            cache: [(Time::MAX, usize::MAX); CACHE],
            cache_next: 0,
            spare: Vec::new(),
            scheduled: HashSet::new(),
            last_clear: Vec::new(),
            held: 0,
        }
    }

    /// The bucket at `at`, made with a capability from `cap` if new.
    fn bucket(&mut self, at: Time, cap: &Capability<Time>) -> &mut Due<P, D, X> {
        let i = match self.cache.iter().find(|(t, _)| *t == at) {
            Some(&(_, i)) => i,
            None => {
                let i = match self.order.get(&at) {
                    Some(&i) => i,
                    None => {
                        let due = Due {
                            cap: cap.delayed(&at),
                            updates: self.take_spare(),
                            frozen: Vec::new(),
                            clears: Vec::new(),
                            retires: Vec::new(),
                            next_consolidation: MIN_CONSOLIDATION,
                            sorted: 0,
                        };
                        let i = match self.free.pop() {
                            Some(i) => {
                                self.slots[i] = Some(due);
                                i
                            }
                            None => {
                                self.slots.push(Some(due));
                                self.slots.len() - 1
                            }
                        };
                        self.order.insert(at, i);
                        i
                    }
                };
                self.cache[self.cache_next] = (at, i);
                self.cache_next = (self.cache_next + 1) % CACHE;
                i
            }
        };
        // A bucket is only freed after its entry leaves `order` and `cache`.
        match self.slots[i].as_mut() {
            Some(due) => due,
            None => unreachable_bucket(),
        }
    }

    /// The largest spare vector, or a new one.
    fn take_spare(&mut self) -> Vec<(P, D)> {
        let largest = self
            .spare
            .iter()
            .enumerate()
            .max_by_key(|(_, v)| v.capacity())
            .map(|(i, _)| i);
        largest.map(|i| self.spare.swap_remove(i)).unwrap_or_default()
    }

    /// Adds an update due at `at`; `now` is the time of the event that made it.
    pub(crate) fn push(&mut self, at: Time, now: Time, update: P, diff: D, cap: &Capability<Time>) {
        let due = self.bucket(at, cap);
        let updates = &mut due.updates;
        updates.push((update, diff));
        let mut held = 1isize;
        // Updates at their event's own time are applied soon: only later ones are consolidated.
        if at > now && updates.len() >= due.next_consolidation {
            // Frozen updates no snapshot holds any more are consolidated with the others.
            for frozen in std::mem::take(&mut due.frozen) {
                match Arc::try_unwrap(frozen) {
                    Ok(v) => updates.extend(v),
                    Err(still_held) => due.frozen.push(still_held),
                }
            }
            let before = due.updates.len();
            due.consolidate();
            let after = due.updates.len();
            held -= (before - after) as isize;
            // Held at most 2x (4x when consolidating saves little) its distinct updates.
            let factor = if after * 4 <= before * 3 { 2 } else { 4 };
            due.next_consolidation = factor * after + MIN_CONSOLIDATION;
        }
        self.held = self.held.saturating_add_signed(held);
    }

    /// Schedules a clear of (`slot`, `extra`) at `at`, once.
    pub(crate) fn clear(&mut self, at: Time, slot: usize, extra: X, cap: &Capability<Time>) {
        if self.last_clear.get(slot).copied().flatten() == Some((at, extra)) {
            return;
        }
        if slot >= self.last_clear.len() {
            self.last_clear.resize(slot + 1, None);
        }
        self.last_clear[slot] = Some((at, extra));
        if self.scheduled.insert((at, slot, extra)) {
            self.bucket(at, cap).clears.push((slot, extra));
        }
    }

    /// Schedules the retirement of `item` (deleted at clock `clock_ms`) at `at`.
    pub(crate) fn retire(&mut self, at: Time, item: ItemKey, clock_ms: u64, cap: &Capability<Time>) {
        self.bucket(at, cap).retires.push((item, clock_ms));
    }

    /// Distinct times with something waiting.
    pub(crate) fn times(&self) -> usize {
        self.order.len()
    }

    /// The earliest time waiting, if any.
    pub(crate) fn first(&self) -> Option<Time> {
        self.order.keys().next().copied()
    }

    /// Removes the bucket at the earliest time.
    pub(crate) fn pop_first(&mut self) -> Option<(Time, Due<P, D, X>)> {
        let (at, i) = self.order.pop_first()?;
        self.free.push(i);
        self.cache
            .iter_mut()
            .filter(|(t, _)| *t == at)
            .for_each(|c| *c = (Time::MAX, usize::MAX));
        let due = self.slots[i].take()?;
        self.held = self
            .held
            .saturating_sub(due.updates.len() + due.frozen.iter().map(|f| f.len()).sum::<usize>());
        for (slot, extra) in &due.clears {
            self.scheduled.remove(&(at, *slot, *extra));
            if self.last_clear.get(*slot).copied().flatten() == Some((at, *extra)) {
                self.last_clear[*slot] = None;
            }
        }
        Some((at, due))
    }

    /// Every waiting update, clear and retire, by time, as they are now: what a checkpoint
    /// encodes off the worker ([`PendingSnapshot::save`]). The updates are not copied: each
    /// bucket's are frozen and shared with the snapshot, and the worker's new ones go to a
    /// fresh vector.
    pub(crate) fn snapshot(&mut self) -> PendingSnapshot<P, D, X> {
        let mut buckets = Vec::with_capacity(self.order.len());
        for (&at, &i) in &self.order {
            let Some(due) = self.slots[i].as_mut() else { continue };
            if !due.updates.is_empty() {
                due.frozen.push(Arc::new(std::mem::take(&mut due.updates)));
            }
            due.sorted = 0;
            buckets.push((at, due.frozen.clone(), due.clears.clone(), due.retires.clone()));
        }
        PendingSnapshot { buckets }
    }

    /// Takes what [`decode`] read back from a checkpoint, under capabilities from `cap`: each
    /// bucket's updates (consolidated by the decoder) as they are, its clears and retires
    /// scheduled.
    pub(crate) fn adopt(&mut self, decoded: Decoded<P, D, X>, cap: &Capability<Time>) -> Result<(), DecodeError> {
        for (at, updates, clears, retires) in decoded.buckets {
            if at < *cap.time() {
                return Err(DecodeError::OutOfRange {
                    what: "time",
                    value: at,
                });
            }
            let n = updates.len();
            let due = self.bucket(at, cap);
            if due.updates.is_empty() && due.frozen.is_empty() {
                due.updates = updates;
                due.sorted = n;
            } else {
                // A time seen twice (not what a checkpoint writes): consolidated later.
                due.updates.extend(updates);
                due.sorted = 0;
            }
            due.next_consolidation = 2 * due.updates.len() + MIN_CONSOLIDATION;
            self.held = self.held.saturating_add(n);
            for (slot, extra) in clears {
                self.clear(at, slot, extra, cap);
            }
            for (item, clock) in retires {
                self.retire(at, item, clock, cap);
            }
        }
        Ok(())
    }

    /// Keeps an emptied update vector for a later bucket (the largest few).
    pub(crate) fn recycle(&mut self, mut updates: Vec<(P, D)>) {
        updates.clear();
        if self.spare.len() < SPARE {
            self.spare.push(updates);
        } else if let Some(smallest) = self.spare.iter_mut().min_by_key(|v| v.capacity())
            && smallest.capacity() < updates.capacity()
        {
            *smallest = updates;
        }
    }
}

/// A [`Pending`]'s checkpoint part read back ([`decode`]), before it has capabilities: per
/// time, its consolidated updates, its clears and its retires.
pub(crate) struct Decoded<P, D, X> {
    buckets: Vec<DecodedBucket<P, D, X>>,
}

/// One bucket of [`Decoded`]: its time, updates, clears and retires.
type DecodedBucket<P, D, X> = (Time, Vec<(P, D)>, Vec<(usize, X)>, Vec<(ItemKey, u64)>);

/// Reads back what [`PendingSnapshot::save`] wrote, each time's updates consolidated: off the
/// worker (it needs no capability), which then only takes the buckets ([`Pending::adopt`]).
/// Read on the worker, update by update, the 10M-signal state's waiting updates held it ~3 s
/// of a restart.
pub(crate) fn decode<P: Packed + Clone + Codec, D: Semigroup + Codec + Send, X: Codec>(
    c: &mut Cursor<'_>,
) -> Result<Decoded<P, D, X>, DecodeError> {
    let count = c.u64("buckets")?;
    // A bucket takes at least four bytes.
    let mut buckets = Vec::with_capacity(c.room_for(count, 4));
    for _ in 0..count {
        let at = c.u64("time")?;
        let n = c.u64("updates")?;
        // An update takes two bytes at least.
        let mut updates = Vec::with_capacity(c.room_for(n, 2));
        for _ in 0..n {
            updates.push((P::get(c)?, D::get(c)?));
        }
        consolidate_unstable(&mut updates);
        let mut clears = Vec::new();
        for _ in 0..c.u64("clears")? {
            let slot = c.u64("slot")? as usize;
            clears.push((slot, X::get(c)?));
        }
        let mut retires = Vec::new();
        for _ in 0..c.u64("retires")? {
            retires.push((c.u64("item")?, c.u64("clock")?));
        }
        buckets.push((at, updates, clears, retires));
    }
    Ok(Decoded { buckets })
}

/// One bucket of a [`PendingSnapshot`]: its time, updates, clears and retires.
type SnapshotBucket<P, D, X> = (Time, Vec<Arc<Vec<(P, D)>>>, Vec<(usize, X)>, Vec<(ItemKey, u64)>);

/// What a checkpoint keeps of [`Pending`] (see [`Pending::snapshot`]).
pub(crate) struct PendingSnapshot<P, D, X> {
    buckets: Vec<SnapshotBucket<P, D, X>>,
}

impl<P: Codec, D: Codec, X: Codec> PendingSnapshot<P, D, X> {
    /// Appends every waiting update, clear and retire, by time (a checkpoint), handing
    /// `out` to `spill` whenever it holds [`SPILL`] bytes; each bucket's updates are let go
    /// once written (the worker then folds them back at its next consolidation).
    pub(crate) fn save(
        self,
        out: &mut Vec<u8>,
        spill: &mut dyn FnMut(&mut Vec<u8>) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        put_u64(out, self.buckets.len() as u64);
        for (at, updates, clears, retires) in self.buckets {
            put_u64(out, at);
            put_u64(out, updates.iter().map(|u| u.len()).sum::<usize>() as u64);
            for (p, d) in updates.iter().flat_map(|u| u.iter()) {
                p.put(out);
                d.put(out);
                if out.len() >= SPILL {
                    spill(out)?;
                }
            }
            drop(updates);
            put_u64(out, clears.len() as u64);
            for (slot, extra) in &clears {
                put_u64(out, *slot as u64);
                extra.put(out);
            }
            put_u64(out, retires.len() as u64);
            for (item, clock) in &retires {
                put_u64(out, *item);
                put_u64(out, *clock);
            }
        }
        Ok(())
    }
}

#[cold]
fn unreachable_bucket() -> ! {
    // `bucket` only hands out indexes of live slots.
    panic!("a pending bucket index points at a freed slot")
}

#[cfg(test)]
mod tests {
    use super::{PARALLEL_SORT, Packed, Pending, consolidate_after, consolidate_unstable, decode};
    use differential_dataflow::consolidation::consolidate;
    use proptest::prelude::*;
    use tidal_core::codec::Cursor;
    use tidal_core::time::Time;

    /// Every bucket of `pending`, in time order: its updates (consolidated, frozen ones too),
    /// clears (sorted) and retires.
    type Drained = Vec<(Time, Vec<((u64, u16), i64)>, Vec<(usize, u64)>, Vec<(u64, u64)>)>;

    fn drain(pending: &mut Pending<(u64, u16), i64, u64>) -> Drained {
        let mut all = Vec::new();
        while let Some((at, due)) = pending.pop_first() {
            let mut updates = due.updates.clone();
            updates.extend(due.frozen.iter().flat_map(|f| f.iter().cloned()));
            consolidate(&mut updates);
            let mut clears = due.clears.clone();
            clears.sort_unstable();
            all.push((at, updates, clears, due.retires.clone()));
        }
        all
    }

    /// A checkpoint's waiting updates read back off the worker (`decode`) and taken under a
    /// capability (`adopt`) hold what was saved: the same times, updates (consolidated),
    /// clears and retires, with a snapshot taken while updates came.
    #[test]
    fn decoded_and_adopted_pending_holds_what_was_saved() {
        timely::execute_directly(|worker| {
            worker.dataflow::<Time, _, _>(|scope| {
                timely::dataflow::operators::generic::operator::source::<
                    _,
                    timely::container::CapacityContainerBuilder<Vec<u64>>,
                    _,
                    _,
                >(scope, "PendingRoundTrip", |cap, _| {
                    let mut next = crate::xorshift(0x9e37_79b9_7f4a_7c15u64);
                    let mut pending: Pending<(u64, u16), i64, u64> = Pending::new();
                    let mut held = None;
                    for i in 0..40_000u64 {
                        let at = 1 + next() % 12;
                        match next() % 50 {
                            0 => pending.clear(at, (next() % 4) as usize, next() % 3, &cap),
                            1 => pending.retire(at, next() % 100, next() % 1000, &cap),
                            _ => {
                                let d = (next() % 5) as i64 - 2;
                                pending.push(at, 0, (next() % 300, (next() % 3) as u16), d, &cap);
                            }
                        }
                        if i == 20_000 {
                            held = Some(pending.snapshot());
                        }
                    }
                    let mut bytes = Vec::new();
                    let mut out = Vec::new();
                    let snapshot = pending.snapshot();
                    snapshot
                        .save(&mut out, &mut |b| {
                            bytes.extend_from_slice(b);
                            b.clear();
                            Ok(())
                        })
                        .expect("saved");
                    bytes.extend_from_slice(&out);
                    drop(held);
                    let mut c = Cursor::new(&bytes);
                    let decoded = decode::<(u64, u16), i64, u64>(&mut c).expect("decoded");
                    c.finish().expect("all read");
                    let mut restored: Pending<(u64, u16), i64, u64> = Pending::new();
                    restored.adopt(decoded, &cap).expect("adopted");
                    let held = restored.held;
                    let want = drain(&mut pending);
                    assert!(want.len() >= 10, "the test spreads over the times");
                    assert_eq!(drain(&mut restored), want);
                    // What it holds is counted once, consolidated.
                    assert_eq!(held, want.iter().map(|b| b.1.len()).sum::<usize>());
                    move |_output| {}
                });
            });
        });
    }

    /// A catch-up's consolidation, sorted on every core, leaves what differential's leaves.
    #[test]
    fn a_consolidation_sorted_in_parallel_leaves_what_differential_does() {
        let mut next = crate::xorshift(0x2545_f491_4f6c_dd1du64);
        type CohortUpdate = ((u64, u16, u16), u64);
        let updates: Vec<(CohortUpdate, i64)> = (0..PARALLEL_SORT + 4321)
            .map(|_| {
                let cohort = (next() % 7).wrapping_mul(0x9e37_79b9_7f4a_7c15);
                (
                    ((next() % 5000, (next() % 3) as u16, 1 << (next() % 4)), cohort),
                    (next() % 5) as i64 - 2,
                )
            })
            .collect();
        let mut ours = updates.clone();
        consolidate_unstable(&mut ours);
        let mut theirs = updates;
        consolidate(&mut theirs);
        assert!(ours.len() > 10_000, "many distinct updates are left");
        assert_eq!(ours, theirs);
    }

    proptest! {
        /// Each update's packed key orders as the update does, and is equal only for equal
        /// updates, over the whole range of every field.
        #[test]
        fn packed_keys_order_as_the_updates(
            a in any::<(u64, u16, u16)>(), b in any::<(u64, u16, u16)>(),
            ca in any::<u64>(), cb in any::<u64>(),
            da in any::<(u64, u16, u8, u64)>(), db in any::<(u64, u16, u8, u64)>(),
            same in any::<bool>(),
        ) {
            let (b, cb, db) = if same { (a, ca, da) } else { (b, cb, db) };
            prop_assert_eq!(a.packed().cmp(&b.packed()), a.cmp(&b));
            prop_assert_eq!((a, ca).packed().cmp(&(b, cb).packed()), (a, ca).cmp(&(b, cb)));
            // Equal in every field but the cohort's low bits.
            let near = (a, ca ^ 1);
            prop_assert_eq!((a, ca).packed().cmp(&near.packed()), (a, ca).cmp(&near));
            prop_assert_eq!(da.packed().cmp(&db.packed()), da.cmp(&db));
            let (i, k, h, e) = da;
            let near = (i, k, h, e ^ (1 << 23));
            prop_assert_eq!(da.packed().cmp(&near.packed()), da.cmp(&near));
            prop_assert_eq!((a.0, a.1).packed().cmp(&(b.0, b.1).packed()), (a.0, a.1).cmp(&(b.0, b.1)));
        }

        /// The unstable consolidation leaves exactly what differential's own does.
        #[test]
        fn consolidates_as_differential_does(
            updates in proptest::collection::vec(((0u64..20, 0u16..3), -3i64..4), 0..300)
        ) {
            let mut ours = updates.clone();
            consolidate_unstable(&mut ours);
            let mut theirs = updates;
            consolidate(&mut theirs);
            prop_assert_eq!(ours, theirs);
        }

        /// Merging more updates into consolidated ones leaves what consolidating them all
        /// at once does, wherever the consolidated ones end.
        #[test]
        fn consolidates_after_a_consolidated_prefix_alike(
            first in proptest::collection::vec(((0u64..20, 0u16..3), -3i64..4), 0..300),
            rest in proptest::collection::vec(((0u64..20, 0u16..3), -3i64..4), 0..300),
        ) {
            let mut ours = first.clone();
            consolidate_unstable(&mut ours);
            let sorted = ours.len();
            ours.extend(rest.iter().cloned());
            consolidate_after(&mut ours, sorted);
            let mut theirs = first;
            theirs.extend(rest);
            consolidate(&mut theirs);
            prop_assert_eq!(ours, theirs);
        }
    }
}
