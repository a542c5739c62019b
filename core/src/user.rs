//! What the serving layer knows of a user: [`UserView`], published by the user's owner
//! worker, and the declared cohorts ([`CohortRule`]s) every worker keeps alike.
//!
//! A view is built for a million users and more, so it is small: attributes are shared
//! strings (a dimension's values repeat across users), the seen / liked / hidden sets are
//! one sorted slice of `(item key, sets)` (most users have a few items: three roaring
//! bitmaps cost ~300 bytes a user where the slice costs a few words), and the edges and
//! affinity sums are absent for most users.

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
    /// The item keys the user has a `seen`, `liked` or `hidden` signal on within the state
    /// horizon, sorted by key, each with its sets (bit [`SEEN`], [`LIKED`], [`HIDDEN`]).
    pub marks: Arc<[(u32, u8)]>,
    /// Follow and block edges, if any.
    pub edges: Option<Arc<Edges>>,
    /// Anchored affinity sums `(creator owner hash, epoch, sum)` (see
    /// [`crate::features::decay_fixed`]) at the schema's affinity half-life, sorted.
    pub affinity: Arc<[(u64, u64, i128)]>,
    /// The user's pulls on their preference vector, in the order they were applied: one per signal with a
    /// non-zero `polarity · weight` within `personalization.horizon` (SPEC §12). The vector
    /// itself is the join of these with the items' embeddings as of the version read
    /// ([`preference`](Self::preference)).
    pub pulls: Arc<[Pull]>,
}

/// The fixed point a preference vector is summed in: 2^-60 (a component up to ~10^20).
const PREFERENCE_SCALE: f64 = (1u128 << 60) as f64;

/// One signal's pull on its user's preference vector.
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct Pull {
    /// The signal's `ts_eff` (ms).
    pub ts: u64,
    /// The item key.
    pub item: u32,
    /// `polarity(type) · weight`.
    pub pull: f64,
}

impl Pull {
    /// The pull's factor at clock `t` with half-life `h` and horizon `horizon` (ms): `pull ·
    /// 2^(−(t − ts)/h)`, or `None` when the signal is no longer within the horizon.
    pub fn factor(&self, t: u64, h: u64, horizon: u64) -> Option<f64> {
        let age = t.saturating_sub(self.ts);
        (age < horizon).then(|| self.pull * (-(age as f64) / h as f64).exp2())
    }
}

/// The bit of the `seen` set in [`UserView::marks`].
pub const SEEN: u8 = 1;
/// The bit of the `liked` set.
pub const LIKED: u8 = 2;
/// The bit of the `hidden` set.
pub const HIDDEN: u8 = 4;

impl UserView {
    /// [`marks`](Self::marks) from `(item key, bits)` pairs in any order, one per item with
    /// its bits merged.
    pub fn marks_of(mut marks: Vec<(u32, u8)>) -> Arc<[(u32, u8)]> {
        marks.sort_unstable();
        marks.dedup_by(|next, kept| {
            let same = next.0 == kept.0;
            if same {
                kept.1 |= next.1;
            }
            same
        });
        marks.into()
    }

    /// The item keys in any of the sets `mask` names (bits [`SEEN`], [`LIKED`], [`HIDDEN`]).
    pub fn set(&self, mask: u8) -> RoaringBitmap {
        self.keys(mask).collect()
    }

    /// The item keys in any of the sets `mask` names, in key order.
    pub fn keys(&self, mask: u8) -> impl Iterator<Item = u32> + '_ {
        self.marks.iter().filter(move |(_, m)| m & mask != 0).map(|(k, _)| *k)
    }

    /// How many items are in any of the sets `mask` names.
    pub fn count(&self, mask: u8) -> u64 {
        self.keys(mask).count() as u64
    }

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

    /// The user's preference vector at clock `t` (SPEC §12): `Σ pull · 2^(−(t − ts)/h) · ê_i`
    /// over the pulls within `horizon`, where `embedding(item)` gives item `i`'s embedding as
    /// of the same version (`None`: the item has none; it pulls nothing), scaled here to unit
    /// length. `None` when no pull reaches an embedded item.
    pub fn preference<'e>(
        &self,
        t: u64,
        h: u64,
        horizon: u64,
        mut embedding: impl FnMut(u32) -> Option<&'e [f32]>,
    ) -> Option<Vec<f64>> {
        // Each term is rounded to fixed point and the terms added as integers, so the sum
        // does not depend on the order of the pulls (which follows the order signals were
        // applied in, different for another layout of workers and processes).
        let mut p: Option<Vec<i128>> = None;
        for pull in self.pulls.iter() {
            let Some(f) = pull.factor(t, h, horizon) else { continue };
            let Some(e) = embedding(pull.item) else { continue };
            let norm = norm(e);
            if norm == 0.0 {
                continue;
            }
            let acc = p.get_or_insert_with(|| vec![0; e.len()]);
            if acc.len() != e.len() {
                continue;
            }
            let f = f / norm;
            for (a, x) in acc.iter_mut().zip(e) {
                *a = a.saturating_add((f * f64::from(*x) * PREFERENCE_SCALE).round() as i128);
            }
        }
        p.map(|v| v.into_iter().map(|a| a as f64 / PREFERENCE_SCALE).collect())
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

/// The Euclidean length of `v`.
pub fn norm(v: &[f32]) -> f64 {
    v.iter().map(|x| f64::from(*x) * f64::from(*x)).sum::<f64>().sqrt()
}

/// `cos(p, e)`: 0 when either is zero.
pub fn cosine(p: &[f64], e: &[f32]) -> f64 {
    if p.len() != e.len() {
        return 0.0;
    }
    let (mut dot, mut pp, mut ee) = (0.0, 0.0, 0.0);
    for (a, b) in p.iter().zip(e) {
        let b = f64::from(*b);
        dot += a * b;
        pp += a * a;
        ee += b * b;
    }
    if pp == 0.0 || ee == 0.0 {
        0.0
    } else {
        dot / (pp.sqrt() * ee.sqrt())
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
