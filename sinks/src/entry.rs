//! One item's serving state: its [`ItemState`] (id, metadata, deleted flag), its window
//! [`Lanes`] per signal type and its anchored decay sums per (type, half-life, epoch).
//!
//! An entry is small and flat (two vectors and a shared state), so the copy-on-write update
//! of one item in a persistent map costs a couple of allocations, whatever the number of
//! items. The entry also derives the item's values in every ordered index
//! ([`ItemEntry::index_values`]); the snapshot builder diffs them before and after a change.

use std::sync::Arc;

use tidal_core::features::{Lanes, TOTAL_LANE, decay_sum, hot_key};
use tidal_core::record::ItemMeta;

use crate::ann::Embedded;
use crate::index::{IndexKind, Layout, OrderKey, order_f64, order_i64};
use tidal_core::flow::{HalfLifeIdx, ItemState, KindIdx};

/// The features and state of one item key.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ItemEntry {
    state: Option<Arc<ItemState>>,
    id: Option<Arc<str>>,
    /// Window lanes per signal type, sorted by type.
    windows: Vec<(KindIdx, Lanes)>,
    /// Anchored decay sums, sorted by (type, half-life, epoch start).
    decay: Vec<DecaySum>,
}

impl ItemEntry {
    /// The item's state, once the dataflow has published one.
    pub fn state(&self) -> Option<&ItemState> {
        self.state.as_deref()
    }

    /// The item's id, shared with the index entries.
    pub fn id(&self) -> Option<&Arc<str>> {
        self.id.as_ref()
    }

    /// The item's metadata, if put.
    pub fn meta(&self) -> Option<&ItemMeta> {
        self.state.as_ref().and_then(|s| s.meta.as_deref())
    }

    /// The item's embedding as the nearest-item index takes it: its metadata, shared (the
    /// same items as [`embedding`](Self::embedding)).
    pub fn embedded(&self) -> Option<Embedded> {
        self.state
            .as_ref()
            .filter(|s| !s.deleted)
            .and_then(|s| s.meta.as_ref())
            .and_then(Embedded::of)
    }

    /// The item's creator, if its metadata names one.
    pub fn creator(&self) -> Option<&str> {
        self.meta().and_then(|m| m.creator.as_deref())
    }

    /// The item's `created_at` (ms), if put.
    pub fn created_at(&self) -> Option<u64> {
        self.meta().and_then(|m| m.created_at)
    }

    /// The item's embedding, if it is listable and has one.
    pub fn embedding(&self) -> Option<&[f32]> {
        self.state
            .as_ref()
            .filter(|s| !s.deleted)
            .and_then(|s| s.meta.as_ref()?.embedding.as_ref())
            .map(|e| e.0.as_slice())
    }

    /// Whether rankings may list the item: it has a state and is not deleted.
    pub fn is_listable(&self) -> bool {
        self.state.as_ref().is_some_and(|s| !s.deleted)
    }

    /// Whether nothing is known about this key any more.
    pub fn is_empty(&self) -> bool {
        self.state.is_none() && self.windows.is_empty() && self.decay.is_empty()
    }

    /// The window lanes of signal type `kind`.
    pub fn lanes(&self, kind: KindIdx) -> Option<&Lanes> {
        self.windows
            .binary_search_by_key(&kind, |(k, _)| *k)
            .ok()
            .map(|i| &self.windows[i].1)
    }

    /// Every signal type with window lanes.
    pub fn all_lanes(&self) -> impl Iterator<Item = (KindIdx, &Lanes)> {
        self.windows.iter().map(|(k, l)| (*k, l))
    }

    /// The epoch sums `(epoch start, fixed-point sum)` of (type, half-life), by epoch.
    pub fn epochs(&self, kind: KindIdx, hl: HalfLifeIdx) -> impl Iterator<Item = (u64, i128)> + Clone + '_ {
        let lo = self.decay.partition_point(|(k, h, _, _)| (*k, *h) < (kind, hl));
        let hi = self.decay.partition_point(|(k, h, _, _)| (*k, *h) <= (kind, hl));
        self.decay[lo..hi].iter().map(|(_, _, e, v)| (*e, *v))
    }

    /// The time-independent hot key of (type, half-life `h_ms`); `None` when not positive.
    pub fn hot_key(&self, kind: KindIdx, hl: HalfLifeIdx, h_ms: u64) -> Option<f64> {
        hot_key(self.epochs(kind, hl), h_ms)
    }

    /// `decay_h` at clock `t_ms`, summed over the epochs.
    pub fn decay(&self, kind: KindIdx, hl: HalfLifeIdx, h_ms: u64, t_ms: u64) -> f64 {
        decay_sum(self.epochs(kind, hl), h_ms, t_ms)
    }

    /// Sets the state; keeps the shared id when it is unchanged.
    pub(crate) fn set_state(&mut self, state: ItemState) {
        if self.id.as_deref() != Some(state.id.as_str()) {
            self.id = Some(Arc::from(state.id.as_str()));
        }
        self.state = Some(Arc::new(state));
    }

    /// Removes the state if it equals `state`.
    pub(crate) fn remove_state(&mut self, state: &ItemState) {
        if self.state.as_deref() == Some(state) {
            self.state = None;
        }
    }

    /// Sets the lanes of a signal type (zero lanes remove it).
    pub(crate) fn set_lanes(&mut self, kind: KindIdx, lanes: Lanes) {
        match self.windows.binary_search_by_key(&kind, |(k, _)| *k) {
            Ok(i) => self.windows[i].1 = lanes,
            Err(i) => self.windows.insert(i, (kind, lanes)),
        }
    }

    /// Removes the lanes of a signal type if they equal `lanes`.
    pub(crate) fn remove_lanes(&mut self, kind: KindIdx, lanes: &Lanes) {
        if let Ok(i) = self.windows.binary_search_by_key(&kind, |(k, _)| *k)
            && &self.windows[i].1 == lanes
        {
            self.windows.remove(i);
        }
    }

    /// Sets one epoch sum.
    pub(crate) fn set_epoch(&mut self, kind: KindIdx, hl: HalfLifeIdx, epoch: u64, sum: i128) {
        match self
            .decay
            .binary_search_by_key(&(kind, hl, epoch), |(k, h, e, _)| (*k, *h, *e))
        {
            Ok(i) => self.decay[i].3 = sum,
            Err(i) => self.decay.insert(i, (kind, hl, epoch, sum)),
        }
    }

    /// Removes one epoch sum if it equals `sum`.
    pub(crate) fn remove_epoch(&mut self, kind: KindIdx, hl: HalfLifeIdx, epoch: u64, sum: i128) {
        if let Ok(i) = self
            .decay
            .binary_search_by_key(&(kind, hl, epoch), |(k, h, e, _)| (*k, *h, *e))
            && self.decay[i].3 == sum
        {
            self.decay.remove(i);
        }
    }

    /// The item's value in every index it belongs to, as `(slot, order key)` sorted by
    /// slot. Empty when the item is not listable.
    pub fn index_values(&self, layout: &Layout) -> IndexValues {
        let mut out = Vec::new();
        self.index_values_into(layout, &mut out);
        out
    }

    /// [`index_values`](Self::index_values) into a reused vector (cleared first).
    pub fn index_values_into(&self, layout: &Layout, out: &mut IndexValues) {
        out.clear();
        if !self.is_listable() {
            return;
        }
        for (kind, lanes) in &self.windows {
            lane_values(layout, *kind, lanes, out);
        }
        for ((kind, hl), run) in self.decay_runs() {
            hot_value(layout, (kind, hl), run, out);
        }
        created_value(layout, self.created_at(), out);
        out.sort_unstable();
    }

    /// The index values of `old` and `new` (into `before` and `after`, each cleared, then
    /// sorted by slot) that may differ: all of them when the item's id or its listability
    /// changed; else only those of the signal types whose window lanes, of the (type,
    /// half-life) pairs whose epoch sums, and of the creation time that differ. The values
    /// left out are the same on both sides, where a diff of the two drops them anyway: a
    /// live version's items change in a type or two of the dozen whose values they hold.
    pub fn changed_index_values(
        old: &ItemEntry,
        new: &ItemEntry,
        layout: &Layout,
        (before, after): (&mut IndexValues, &mut IndexValues),
    ) {
        if old.id != new.id || !old.is_listable() || !new.is_listable() {
            old.index_values_into(layout, before);
            new.index_values_into(layout, after);
            return;
        }
        before.clear();
        after.clear();
        let (was, is) = (old.windows.iter(), new.windows.iter());
        differing(was.map(|(k, l)| (*k, l)), is.map(|(k, l)| (*k, l)), |kind, was, is| {
            if let Some(lanes) = was {
                lane_values(layout, kind, lanes, before);
            }
            if let Some(lanes) = is {
                lane_values(layout, kind, lanes, after);
            }
        });
        differing(old.decay_runs(), new.decay_runs(), |group, was, is| {
            if let Some(run) = was {
                hot_value(layout, group, run, before);
            }
            if let Some(run) = is {
                hot_value(layout, group, run, after);
            }
        });
        if old.created_at() != new.created_at() {
            created_value(layout, old.created_at(), before);
            created_value(layout, new.created_at(), after);
        }
        before.sort_unstable();
        after.sort_unstable();
    }

    /// The epoch sums by (type, half-life): each pair with its run of `decay`.
    fn decay_runs(&self) -> impl Iterator<Item = ((KindIdx, HalfLifeIdx), &[DecaySum])> {
        self.decay
            .chunk_by(|a, b| (a.0, a.1) == (b.0, b.1))
            .map(|run| ((run[0].0, run[0].1), run))
    }
}

/// An item's values in the ordered indexes: `(slot, order key)`.
pub type IndexValues = Vec<(usize, OrderKey)>;

/// One anchored decay sum of an entry: (type, half-life, epoch start, fixed-point sum).
type DecaySum = (KindIdx, HalfLifeIdx, u64, i128);

/// The values of signal type `kind`'s lanes in its trending, rising and top indexes.
fn lane_values(layout: &Layout, kind: KindIdx, lanes: &Lanes, out: &mut IndexValues) {
    let Some(kl) = layout.kind(kind) else { return };
    for window in 0..kl.windows.len() {
        let count = lanes.0[2 * window];
        if count > 0
            && let Some(slot) = layout.slot(IndexKind::Trending { kind, window })
        {
            out.push((slot, order_i64(count)));
        }
        let rise = lanes.rise_fixed(window);
        if rise > 0
            && let Some(slot) = layout.slot(IndexKind::Rising { kind, window })
        {
            out.push((slot, order_i64(rise)));
        }
    }
    let total = lanes.0[TOTAL_LANE];
    if total > 0
        && let Some(slot) = layout.slot(IndexKind::Top { kind })
    {
        out.push((slot, order_i64(total)));
    }
}

/// The value of a (type, half-life) pair's epoch sums `run` in its hot index.
fn hot_value(layout: &Layout, (kind, hl): (KindIdx, HalfLifeIdx), run: &[DecaySum], out: &mut IndexValues) {
    if let (Some(h_ms), Some(slot)) = (
        layout.half_life_ms(kind, hl),
        layout.slot(IndexKind::Hot { kind, half_life: hl }),
    ) && let Some(key) = hot_key(run.iter().map(|(_, _, e, v)| (*e, *v)), h_ms)
    {
        out.push((slot, order_f64(key)));
    }
}

/// The value of a creation time in the index of the newest items.
fn created_value(layout: &Layout, created: Option<u64>, out: &mut IndexValues) {
    if let (Some(created), Some(slot)) = (created, layout.slot(IndexKind::New)) {
        out.push((slot, created));
    }
}

/// Calls `f` for each key of two sequences of groups sorted by key whose groups differ, with
/// its group in `old` and in `new` (`None` where that side has none).
fn differing<K: Ord + Copy, V: PartialEq>(
    old: impl IntoIterator<Item = (K, V)>,
    new: impl IntoIterator<Item = (K, V)>,
    mut f: impl FnMut(K, Option<V>, Option<V>),
) {
    use std::cmp::Ordering;
    let (mut a, mut b) = (old.into_iter().peekable(), new.into_iter().peekable());
    loop {
        let order = match (a.peek(), b.peek()) {
            (None, None) => return,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some(x), Some(y)) => x.0.cmp(&y.0),
        };
        match order {
            Ordering::Less => {
                if let Some((k, v)) = a.next() {
                    f(k, Some(v), None);
                }
            }
            Ordering::Greater => {
                if let Some((k, v)) = b.next() {
                    f(k, None, Some(v));
                }
            }
            Ordering::Equal => {
                if let (Some((k, x)), Some((_, y))) = (a.next(), b.next())
                    && x != y
                {
                    f(k, Some(x), Some(y));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use tidal_core::Config;
    use tidal_core::features::weight_fixed;

    #[test]
    fn epochs_are_grouped_by_type_and_half_life() {
        let mut e = ItemEntry::default();
        e.set_epoch(1, 0, 100, 5);
        e.set_epoch(0, 1, 50, 7);
        e.set_epoch(1, 0, 10, 3);
        e.set_epoch(0, 1, 50, 9);
        assert_eq!(e.epochs(1, 0).collect::<Vec<_>>(), vec![(10, 3), (100, 5)]);
        assert_eq!(e.epochs(0, 1).collect::<Vec<_>>(), vec![(50, 9)]);
        assert_eq!(e.epochs(0, 0).count(), 0);
        e.remove_epoch(0, 1, 50, 7);
        assert_eq!(
            e.epochs(0, 1).count(),
            1,
            "a stale retraction does not remove the current value"
        );
        e.remove_epoch(0, 1, 50, 9);
        assert_eq!(e.epochs(0, 1).count(), 0);
    }

    #[test]
    fn deleted_items_have_no_index_values() {
        let layout = Layout::from_config(&Config::default_filled());
        let mut e = ItemEntry::default();
        e.set_lanes(0, Lanes::with([0, 1, TOTAL_LANE], weight_fixed(2.0)));
        assert!(e.index_values(&layout).is_empty(), "no state yet");
        e.set_state(ItemState {
            id: "a".into(),
            meta: None,
            deleted: false,
        });
        let vals = e.index_values(&layout);
        // trending w0, rising w0 (2·2 − 2 > 0), top
        assert_eq!(vals.len(), 3);
        e.set_state(ItemState {
            id: "a".into(),
            meta: None,
            deleted: true,
        });
        assert!(e.index_values(&layout).is_empty());
    }

    /// A random entry: some types' lanes, some (type, half-life) pairs' epoch sums, and a
    /// state (none, listed with or without a creation time, deleted).
    fn random_entry(rng: &mut StdRng, kinds: u16) -> ItemEntry {
        let mut e = ItemEntry::default();
        for kind in 0..kinds {
            if rng.gen_bool(0.6) {
                e.set_lanes(kind, random_lanes(rng));
            }
            for hl in 0..2 {
                for _ in 0..rng.gen_range(0..3) {
                    e.set_epoch(kind, hl, rng.gen_range(0..4) * 1000, rng.gen_range(-2..6) << 40);
                }
            }
        }
        let state = rng.gen_range(0..4);
        if state > 0 {
            e.set_state(random_state(rng, state == 3));
        }
        e
    }

    fn random_lanes(rng: &mut StdRng) -> Lanes {
        let mut l = Lanes::default();
        for v in &mut l.0 {
            *v = rng.gen_range(-1..4) << 30;
        }
        l
    }

    fn random_state(rng: &mut StdRng, deleted: bool) -> ItemState {
        let meta = rng.gen_bool(0.5).then(|| {
            Arc::new(ItemMeta {
                created_at: Some(rng.gen_range(0..3)),
                ..Default::default()
            })
        });
        ItemState {
            id: format!("i{}", rng.gen_range(0..2)),
            meta,
            deleted,
        }
    }

    /// An entry changed at random in a few of its parts, as a version changes an item.
    fn changed(rng: &mut StdRng, e: &ItemEntry, kinds: u16) -> ItemEntry {
        let mut e = e.clone();
        for _ in 0..rng.gen_range(1..4) {
            let kind = rng.gen_range(0..kinds);
            match rng.gen_range(0..6) {
                0 => e.set_lanes(kind, random_lanes(rng)),
                1 => {
                    if let Some(l) = e.lanes(kind).cloned() {
                        e.remove_lanes(kind, &l);
                    }
                }
                2 => {
                    let (hl, epoch, sum) = (
                        rng.gen_range(0..2),
                        rng.gen_range(0..4) * 1000,
                        rng.gen_range(-2..6) << 40,
                    );
                    e.set_epoch(kind, hl, epoch, sum);
                }
                3 => {
                    let hl = rng.gen_range(0..2);
                    let first = e.epochs(kind, hl).next();
                    if let Some((epoch, sum)) = first {
                        e.remove_epoch(kind, hl, epoch, sum);
                    }
                }
                4 => {
                    let deleted = rng.gen_bool(0.2);
                    e.set_state(random_state(rng, deleted));
                }
                _ => e.state = None,
            }
        }
        e
    }

    /// What a diff of two value lists keeps: the values of `a` not in `b`.
    fn only_in(a: &[(usize, OrderKey)], b: &[(usize, OrderKey)]) -> Vec<(usize, OrderKey)> {
        a.iter().filter(|v| !b.contains(v)).copied().collect()
    }

    #[test]
    fn changed_index_values_differ_from_all_values_only_where_both_sides_agree() {
        let layout = Layout::from_config(&Config::default_filled());
        let kinds = layout.kinds().len() as u16;
        let mut rng = StdRng::seed_from_u64(5);
        let (mut before, mut after) = (Vec::new(), Vec::new());
        let mut narrowed = 0;
        for _ in 0..5000 {
            let old = random_entry(&mut rng, kinds);
            let new = changed(&mut rng, &old, kinds);
            let (all_before, all_after) = (old.index_values(&layout), new.index_values(&layout));
            ItemEntry::changed_index_values(&old, &new, &layout, (&mut before, &mut after));
            assert!(before.is_sorted() && after.is_sorted());
            if old.id() != new.id() {
                assert_eq!((&before, &after), (&all_before, &all_after), "another id: all values");
                continue;
            }
            // Every value of the two is one of the entry's, and the values only one side has
            // are the same.
            assert!(before.iter().all(|v| all_before.contains(v)));
            assert!(after.iter().all(|v| all_after.contains(v)));
            assert_eq!(
                only_in(&before, &after),
                only_in(&all_before, &all_after),
                "{old:?} -> {new:?}"
            );
            assert_eq!(
                only_in(&after, &before),
                only_in(&all_after, &all_before),
                "{old:?} -> {new:?}"
            );
            narrowed += usize::from(before.len() + after.len() < all_before.len() + all_after.len());
        }
        assert!(narrowed > 1000, "the unchanged types are left out ({narrowed} of 5000)");
    }
}
