//! The per-user and per-cohort part of a shard: cohort window lanes of the shard's items,
//! the views of the users its worker owns, and the declared cohorts. Kept in persistent maps
//! (a version clones them in O(1)). Changes arrive in time order at the sink's cuts and are
//! gathered in plain hash maps — the last value of each key — and settled into the persistent
//! maps once per version, so a catch-up that changes a key at many marks writes it once.

use std::collections::HashMap;
use std::sync::Arc;

use foldhash::fast::RandomState;

use tidal_core::features::Lanes;
use tidal_core::flow::{CohortId, ItemKey, KindIdx, UserKey};
use tidal_core::user::{CohortDefs, SideUpdate, UserView};

use crate::snapshot::Map;

/// One cohort's window lanes: per (item, signal type) of the shard's items. The lanes sit
/// behind an `Arc` so that the map's nodes stay small: every version copies the nodes its
/// changes touch, and with the lanes inline a node was ~6 KB (64 entries of 88 bytes).
pub type CohortLanes = imbl::OrdMap<(ItemKey, KindIdx), Arc<Lanes>>;

/// The key of a cohort sum as the dataflow emits it.
pub type CohortKey = (ItemKey, KindIdx, CohortId);

/// Gathered changes settled into the persistent maps before a version is cut, at most.
const SETTLE_AT: usize = 1 << 20;

/// One change of a cohort's lanes: (item, signal type) and the value now (`None`: gone).
type LaneChange = ((ItemKey, KindIdx), Option<Lanes>);

/// Gathered changes keep at most this much room between versions (a catch-up grows them to
/// `SETTLE_AT`; live versions need a few thousand).
const KEEP_ROOM: usize = 1 << 12;

/// The per-user and per-cohort state of a version: persistent maps, cloned in O(1).
#[derive(Clone, Debug, Default)]
pub(crate) struct Side {
    pub(crate) cohorts: Map<CohortId, CohortLanes>,
    /// By user key, in a B-tree (full nodes: a hash trie of a million users spent most of
    /// its memory on mostly empty nodes).
    pub(crate) users: imbl::OrdMap<UserKey, Arc<UserView>>,
    pub(crate) defs: Arc<CohortDefs>,
}

/// The builder's working copy: the last settled [`Side`] and the changes since, a key's
/// value now (`None`: gone). The gathered changes are not part of a version: cloning a hash
/// map copies its whole table, empty or not.
#[derive(Debug, Default)]
pub(crate) struct SideBuilder {
    side: Side,
    lanes_now: HashMap<CohortKey, Option<Lanes>, RandomState>,
    users_now: HashMap<UserKey, Option<Arc<UserView>>, RandomState>,
}

impl SideBuilder {
    /// Settles the gathered changes and gives the state a version publishes.
    pub(crate) fn version(&mut self) -> Side {
        self.settle();
        self.side.clone()
    }

    /// Applies one time's cohort sum changes (`−1` the old value, `+1` the new). The sums
    /// arrive consolidated and in time order, so a removal always names the current value.
    pub(crate) fn apply_cohorts(&mut self, updates: &mut [(CohortKey, Lanes, isize)]) {
        // Removals first, so a key's new value is not removed by its old one.
        updates.sort_unstable_by_key(|u| u.2);
        for &(key, lanes, diff) in updates.iter() {
            if diff < 0 {
                self.lanes_now.insert(key, None);
            } else if diff > 0 {
                self.lanes_now.insert(key, Some(lanes));
            }
        }
        // A long catch-up changes most sums before its one version: settle now and then, so
        // the gathered changes never hold a second copy of everything.
        if self.lanes_now.len() + self.users_now.len() > SETTLE_AT {
            self.settle();
        }
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
        let mut by_cohort: HashMap<CohortId, Vec<LaneChange>, RandomState> = HashMap::default();
        for ((item, kind, cohort), v) in self.lanes_now.drain() {
            by_cohort.entry(cohort).or_default().push(((item, kind), v));
        }
        for (cohort, mut changes) in by_cohort {
            changes.sort_unstable_by_key(|c| c.0);
            let map = self.side.cohorts.entry(cohort).or_default();
            for (k, v) in changes {
                match v {
                    Some(l) => {
                        map.insert(k, Arc::new(l));
                    }
                    None => {
                        map.remove(&k);
                    }
                }
            }
            if map.is_empty() {
                self.side.cohorts.remove(&cohort);
            }
        }
        for (key, view) in self.users_now.drain() {
            match view {
                Some(v) => {
                    self.side.users.insert(key, v);
                }
                None => {
                    self.side.users.remove(&key);
                }
            }
        }
        // After a catch-up the tables are large and empty: give the room back.
        self.lanes_now.shrink_to(KEEP_ROOM);
        self.users_now.shrink_to(KEEP_ROOM);
    }
}
