//! `GET /v1/users/{id}`: a user's attributes, cohorts, state counts, edges and top creators,
//! as of the view's clock.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use tidal_core::Config;
use tidal_core::flow::id_hash;
use tidal_core::user::{HIDDEN, LIKED, SEEN};
use tidal_sinks::{Field, View};

use super::AsOf;

/// A creator and the user's affinity with it.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct CreatorAffinity {
    /// Creator id.
    pub creator: String,
    /// `affinity_h(u, c, T)` at `personalization.affinity_half_life`.
    pub affinity: f64,
}

/// A user as `GET /v1/users/{id}` shows it.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct UserInfo {
    /// User id.
    pub id: String,
    /// The attributes last put (empty if never put).
    pub attributes: BTreeMap<String, String>,
    /// The cohorts the user belongs to: `dimension:value` per declared dimension it has a
    /// value for, then the declared cohorts it matches.
    pub cohorts: Vec<String>,
    /// Items seen within the state horizon.
    pub seen: u64,
    /// Items liked within the state horizon.
    pub liked: u64,
    /// Items hidden within the state horizon.
    pub hidden: u64,
    /// Creators followed.
    pub follows: Vec<String>,
    /// Creators blocked.
    pub blocks: Vec<String>,
    /// The creators with the highest affinity (at most 10, positive only).
    pub top_creators: Vec<CreatorAffinity>,
    /// With `?vector=1`: the preference vector `p_u` as of the state read (SPEC §12), `null`
    /// when no signal within the horizon is on an embedded item.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vector: Option<Option<Vec<f64>>>,
    /// Signals pulling on the preference vector (within `personalization.horizon`).
    pub pulls: usize,
    /// The state read.
    pub as_of: AsOf,
    /// Creators with a positive affinity whose names no local shard knows (by id hash): in a
    /// cluster their items live on other processes, which name them.
    #[serde(skip)]
    #[schema(ignore)]
    pub unnamed: Vec<(u64, f64)>,
}

impl UserInfo {
    /// Adds creators other processes named (`hash → name`) to `top_creators`, keeping the
    /// best ten by affinity, then name.
    pub fn name_creators(&mut self, names: &HashMap<u64, String>) {
        for (hash, affinity) in std::mem::take(&mut self.unnamed) {
            if let Some(creator) = names.get(&hash) {
                self.top_creators.push(CreatorAffinity {
                    creator: creator.clone(),
                    affinity,
                });
            }
        }
        best_creators(&mut self.top_creators);
    }
}

/// Keeps the best [`TOP_CREATORS`] of `creators`, by affinity, then name.
fn best_creators(creators: &mut Vec<CreatorAffinity>) {
    creators.sort_by(|a, b| {
        b.affinity
            .total_cmp(&a.affinity)
            .then_with(|| a.creator.cmp(&b.creator))
    });
    creators.truncate(TOP_CREATORS);
}

/// The names of those of `hashes` (creator id hashes) that the local shards of `view` know.
pub fn creator_names(view: &View, hashes: &[u64]) -> HashMap<u64, String> {
    let wanted: std::collections::HashSet<u64> = hashes.iter().copied().collect();
    let mut out = HashMap::new();
    for s in &view.shards {
        for c in s.postings().values_of(Field::Creator) {
            let h = id_hash(c);
            if wanted.contains(&h) {
                out.entry(h).or_insert_with(|| c.to_string());
            }
        }
    }
    out
}

/// Creators listed in `top_creators`.
const TOP_CREATORS: usize = 10;

/// The view of user `id` (with its preference vector when `vector`); `None` when it has no
/// state (never put, no signal within the horizon, no edge) or its owner is not a local shard.
pub fn user_view(view: &View, config: &Config, id: &str, vector: bool) -> Option<UserInfo> {
    let shard = view.shard_of(id)?;
    let u = shard.user(id_hash(id))?;
    let attributes = u.attribute_map();
    let mut cohorts: Vec<String> = config
        .cohort_dimensions
        .iter()
        .filter_map(|d| attributes.get(d).map(|v| format!("{d}:{v}")))
        .collect();
    for (name, rule) in shard.cohort_defs().iter() {
        if u.matches(rule) {
            cohorts.push(name.clone());
        }
    }
    let clock = view.clock_ms();
    let h = config.personalization.affinity_half_life.ms();
    let ranked: Vec<(u64, f64)> = u
        .creators()
        .map(|c| (c, u.affinity_at(c, h, clock)))
        .filter(|(_, a)| *a > 0.0)
        .collect();
    // Creator ids from their hashes: every creator with a listable item is in a posting list.
    let hashes: Vec<u64> = ranked.iter().map(|(c, _)| *c).collect();
    let named = creator_names(view, &hashes);
    let (mut top_creators, mut unnamed) = (Vec::new(), Vec::new());
    for (hash, affinity) in ranked {
        match named.get(&hash) {
            Some(creator) => top_creators.push(CreatorAffinity {
                creator: creator.clone(),
                affinity,
            }),
            None => unnamed.push((hash, affinity)),
        }
    }
    best_creators(&mut top_creators);
    Some(UserInfo {
        id: id.to_string(),
        attributes,
        cohorts,
        seen: u.count(SEEN),
        liked: u.count(LIKED),
        hidden: u.count(HIDDEN),
        follows: u.follows().cloned().collect(),
        blocks: u.blocks().cloned().collect(),
        top_creators,
        vector: vector.then(|| super::foryou::preference(view, u, config)),
        pulls: {
            let p = &config.personalization;
            u.pulls
                .iter()
                .filter(|x| x.factor(clock, p.half_life.ms(), p.horizon.ms()).is_some())
                .count()
        },
        as_of: AsOf { clock, lsn: view.lsn() },
        unnamed,
    })
}
