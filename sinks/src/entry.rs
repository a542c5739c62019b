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
    decay: Vec<(KindIdx, HalfLifeIdx, u64, i128)>,
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
    pub fn index_values(&self, layout: &Layout) -> Vec<(usize, OrderKey)> {
        let mut out = Vec::new();
        self.index_values_into(layout, &mut out);
        out
    }

    /// [`index_values`](Self::index_values) into a reused vector (cleared first).
    pub fn index_values_into(&self, layout: &Layout, out: &mut Vec<(usize, OrderKey)>) {
        out.clear();
        if !self.is_listable() {
            return;
        }
        for (kind, lanes) in &self.windows {
            let Some(kl) = layout.kind(*kind) else { continue };
            for window in 0..kl.windows.len() {
                let count = lanes.0[2 * window];
                if count > 0
                    && let Some(slot) = layout.slot(IndexKind::Trending { kind: *kind, window })
                {
                    out.push((slot, order_i64(count)));
                }
                let rise = lanes.rise_fixed(window);
                if rise > 0
                    && let Some(slot) = layout.slot(IndexKind::Rising { kind: *kind, window })
                {
                    out.push((slot, order_i64(rise)));
                }
            }
            let total = lanes.0[TOTAL_LANE];
            if total > 0
                && let Some(slot) = layout.slot(IndexKind::Top { kind: *kind })
            {
                out.push((slot, order_i64(total)));
            }
        }
        let mut i = 0;
        while i < self.decay.len() {
            let (kind, hl, _, _) = self.decay[i];
            let run = self.decay[i..]
                .iter()
                .take_while(|(k, h, _, _)| (*k, *h) == (kind, hl))
                .count();
            if let (Some(h_ms), Some(slot)) = (
                layout.half_life_ms(kind, hl),
                layout.slot(IndexKind::Hot { kind, half_life: hl }),
            ) {
                let epochs = self.decay[i..i + run].iter().map(|(_, _, e, v)| (*e, *v));
                if let Some(key) = hot_key(epochs, h_ms) {
                    out.push((slot, order_f64(key)));
                }
            }
            i += run;
        }
        if let (Some(created), Some(slot)) = (self.created_at(), layout.slot(IndexKind::New)) {
            out.push((slot, created));
        }
        out.sort_unstable();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
}
