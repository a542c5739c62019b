//! What the serving layer knows of a user: [`UserView`], published by the user's owner
//! worker, and the declared cohorts ([`CohortRule`]s) every worker keeps alike.
//!
//! A view is built for a million users and more, so it is small: attributes are shared
//! strings (a dimension's values repeat across users), the seen / liked / hidden sets are
//! 32-bit roaring bitmaps of item keys, and the edges and affinity sums are absent for most
//! users.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use roaring::RoaringBitmap;

use crate::features::decay_sum;
use crate::flow::UserKey;

/// A declared cohort's rule: the attribute values a member has (dimension → value).
pub type CohortRule = BTreeMap<String, String>;

/// The declared cohorts by name.
pub type CohortDefs = BTreeMap<String, CohortRule>;

/// A user's attributes, sorted by name; the strings are shared among users.
pub type Attributes = Arc<[(Arc<str>, Arc<str>)]>;

/// A user's follow and block edges.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Edges {
    /// Creators the user follows.
    pub follows: BTreeSet<String>,
    /// Creators the user blocks.
    pub blocks: BTreeSet<String>,
}

/// One user's state as of a serving version.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct UserView {
    /// The attributes last put; `None` when never put (the user only sent signals).
    pub attributes: Option<Attributes>,
    /// Item keys the user has a `seen` signal on within the state horizon.
    pub seen: RoaringBitmap,
    /// Item keys with a `liked` signal within the horizon.
    pub liked: RoaringBitmap,
    /// Item keys with a `hidden` signal within the horizon.
    pub hidden: RoaringBitmap,
    /// Follow and block edges, if any.
    pub edges: Option<Arc<Edges>>,
    /// Anchored affinity sums `(creator owner hash, epoch, sum)` (see
    /// [`crate::features::decay_fixed`]) at the schema's affinity half-life, sorted.
    pub affinity: Arc<[(u64, u64, i128)]>,
}

impl UserView {
    /// The user's affinity with creator `creator` (owner hash) at clock `t`.
    pub fn affinity_at(&self, creator: u64, h: u64, t: u64) -> f64 {
        decay_sum(
            self.affinity
                .iter()
                .filter(|(c, _, _)| *c == creator)
                .map(|(_, e, v)| (*e, *v)),
            h,
            t,
        )
    }

    /// The creators the user has an affinity sum with.
    pub fn creators(&self) -> impl Iterator<Item = u64> + '_ {
        let mut last = None;
        self.affinity.iter().filter_map(move |(c, _, _)| {
            let new = last != Some(*c);
            last = Some(*c);
            new.then_some(*c)
        })
    }

    /// The value of attribute `name`.
    pub fn attribute(&self, name: &str) -> Option<&str> {
        attribute(self.attributes.as_deref(), name)
    }

    /// The attributes as a map.
    pub fn attribute_map(&self) -> BTreeMap<String, String> {
        self.attributes
            .iter()
            .flat_map(|a| a.iter())
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// Whether the user's attributes match `rule`.
    pub fn matches(&self, rule: &CohortRule) -> bool {
        matches(self.attributes.as_deref(), rule)
    }

    /// Creators the user follows.
    pub fn follows(&self) -> impl Iterator<Item = &String> {
        self.edges.iter().flat_map(|e| e.follows.iter())
    }

    /// Creators the user blocks.
    pub fn blocks(&self) -> impl Iterator<Item = &String> {
        self.edges.iter().flat_map(|e| e.blocks.iter())
    }
}

/// The value of attribute `name` in sorted `attributes`.
pub fn attribute<'a>(attributes: Option<&'a [(Arc<str>, Arc<str>)]>, name: &str) -> Option<&'a str> {
    let a = attributes?;
    a.binary_search_by(|(k, _)| (**k).cmp(name)).ok().map(|i| &*a[i].1)
}

/// Whether `attributes` hold every value `rule` asks for.
pub fn matches(attributes: Option<&[(Arc<str>, Arc<str>)]>, rule: &CohortRule) -> bool {
    attributes.is_some() && rule.iter().all(|(k, v)| attribute(attributes, k) == Some(v.as_str()))
}

/// A change of the per-user serving state, from the user's owner to its sink.
#[derive(Clone, Debug)]
pub enum SideUpdate {
    /// The user's state is now this (`None`: forgotten).
    User(UserKey, Option<Arc<UserView>>),
    /// The declared cohorts are now these.
    Cohorts(Arc<CohortDefs>),
}
