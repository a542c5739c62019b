//! What the serving layer knows of a user: [`UserView`], published by the user's owner
//! worker, and the declared cohorts ([`CohortRule`]s) every worker keeps alike.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use roaring::RoaringTreemap;

use crate::features::decay_sum;
use crate::flow::UserKey;

/// A declared cohort's rule: the attribute values a member has (dimension → value).
pub type CohortRule = BTreeMap<String, String>;

/// The declared cohorts by name.
pub type CohortDefs = BTreeMap<String, CohortRule>;

/// One user's state as of a serving version.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct UserView {
    /// The user's id.
    pub id: String,
    /// The attributes last put; `None` when never put (the user only sent signals).
    pub attributes: Option<BTreeMap<String, String>>,
    /// Item keys the user has a `seen` signal on within the state horizon.
    pub seen: RoaringTreemap,
    /// Item keys with a `liked` signal within the horizon.
    pub liked: RoaringTreemap,
    /// Item keys with a `hidden` signal within the horizon.
    pub hidden: RoaringTreemap,
    /// Creators the user follows.
    pub follows: BTreeSet<String>,
    /// Creators the user blocks.
    pub blocks: BTreeSet<String>,
    /// Per creator (its owner hash), the anchored affinity sums by epoch (see
    /// [`crate::features::decay_fixed`]) at the schema's affinity half-life.
    pub affinity: HashMap<u64, Vec<(u64, i128)>>,
}

impl UserView {
    /// The user's affinity with creator `creator` (owner hash) at clock `t`.
    pub fn affinity_at(&self, creator: u64, h: u64, t: u64) -> f64 {
        self.affinity
            .get(&creator)
            .map_or(0.0, |epochs| decay_sum(epochs.iter().copied(), h, t))
    }

    /// The attribute values of the user that match `rule`.
    pub fn matches(&self, rule: &CohortRule) -> bool {
        matches(self.attributes.as_ref(), rule)
    }
}

/// Whether `attributes` hold every value `rule` asks for.
pub fn matches(attributes: Option<&BTreeMap<String, String>>, rule: &CohortRule) -> bool {
    attributes.is_some_and(|a| rule.iter().all(|(k, v)| a.get(k) == Some(v)))
}

/// A change of the per-user serving state, from the user's owner to its sink.
#[derive(Clone, Debug)]
pub enum SideUpdate {
    /// The user's state is now this (`None`: forgotten).
    User(UserKey, Option<Arc<UserView>>),
    /// The declared cohorts are now these.
    Cohorts(Arc<CohortDefs>),
}
