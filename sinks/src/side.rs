//! The per-user and per-cohort part of a shard: cohort window lanes of the shard's items,
//! the views of the users its worker owns, and the declared cohorts. Kept in persistent maps
//! (a version clones them in O(1)) and changed in time order at the sink's cuts.

use std::sync::Arc;

use tidal_core::features::Lanes;
use tidal_core::flow::{CohortId, ItemKey, KindIdx, UserKey};
use tidal_core::user::{CohortDefs, SideUpdate, UserView};

use crate::snapshot::Map;

/// One cohort's window lanes: per (item, signal type) of the shard's items.
pub type CohortLanes = imbl::OrdMap<(ItemKey, KindIdx), Lanes>;

/// The key of a cohort sum as the dataflow emits it.
pub type CohortKey = (ItemKey, KindIdx, CohortId);

/// The per-user and per-cohort state of a shard.
#[derive(Clone, Debug, Default)]
pub(crate) struct Side {
    pub(crate) cohorts: Map<CohortId, CohortLanes>,
    pub(crate) users: Map<UserKey, Arc<UserView>>,
    pub(crate) defs: Arc<CohortDefs>,
}

impl Side {
    /// Applies one time's cohort sum changes (`−1` the old value, `+1` the new).
    pub(crate) fn apply_cohorts(&mut self, updates: &mut [(CohortKey, Lanes, isize)]) {
        // Removals first, so a key's new value is not removed by its old one.
        updates.sort_unstable_by_key(|u| u.2);
        for &((item, kind, cohort), lanes, diff) in updates.iter() {
            if diff < 0 {
                if let Some(map) = self.cohorts.get_mut(&cohort)
                    && map.get(&(item, kind)) == Some(&lanes)
                {
                    map.remove(&(item, kind));
                    if map.is_empty() {
                        self.cohorts.remove(&cohort);
                    }
                }
            } else if diff > 0 {
                self.cohorts.entry(cohort).or_default().insert((item, kind), lanes);
            }
        }
    }

    /// Applies one user-state change.
    pub(crate) fn apply(&mut self, update: SideUpdate) {
        match update {
            SideUpdate::User(key, Some(view)) => {
                self.users.insert(key, view);
            }
            SideUpdate::User(key, None) => {
                self.users.remove(&key);
            }
            SideUpdate::Cohorts(defs) => self.defs = defs,
        }
    }
}
