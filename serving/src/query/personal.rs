//! What a ranking depends on besides the items: the cohort it counts in and the user asking.
//!
//! [`Context::new`] resolves both once per request against a [`View`]: `cohort=` becomes the
//! key of a single-dimension cohort, of a declared composite with exactly those values, or —
//! for a composite never declared — the keys of its dimensions, estimated under independence
//! (`Π count_dim / count_global^(k−1)` per signal type and lane, SPEC §4); `user=` becomes the
//! item keys the user must not see (hidden, and seen with `filter=unseen`) and the creators
//! they block or follow, read from the user's owner shard.

use std::collections::BTreeSet;
use std::sync::Arc;

use roaring::RoaringBitmap;
use serde_json::{Value, json};

use tidal_core::Config;
use tidal_core::features::{LANES, Lanes, weight_float};
use tidal_core::flow::{CohortId, ItemKey, KindIdx, cohort_named, cohort_value, id_hash};
use tidal_core::user::{Edges, HIDDEN, SEEN, UserView};
use tidal_sinks::{Snapshot, View};

use super::error::{QueryError, QueryErrorKind};
use super::params::RankParams;

/// The cohort a ranking counts in.
#[derive(Clone, Debug)]
pub struct CohortSel {
    /// As asked: `dimension:value,...`, or the declared cohort's name.
    pub name: String,
    /// Estimated under independence (a composite never declared).
    pub estimated: bool,
    /// The cohort's key (exact), or the keys of its dimensions (estimated).
    pub ids: Vec<CohortId>,
}

/// The user a ranking is for.
#[derive(Clone, Debug, Default)]
pub struct UserFilter {
    /// Item keys never listed for the user.
    pub exclude: RoaringBitmap,
    /// The user's state (edges, affinity, pulls), if the owner shard has one.
    pub state: Option<Arc<UserView>>,
}

/// A request's cohort and user, resolved against one view.
#[derive(Clone, Debug, Default)]
pub struct Context {
    /// The cohort counted in, if any.
    pub cohort: Option<CohortSel>,
    /// The user asking, if any.
    pub user: Option<UserFilter>,
}

impl Context {
    /// Resolves `params`' cohort and user against `view`. A user whose owner is not a local
    /// shard (another process of a cluster) is refused.
    pub fn new(view: &View, params: &RankParams) -> Result<Context, QueryError> {
        let cohort = params.cohort.as_ref().map(|pairs| select(view, pairs)).transpose()?;
        let user = match &params.user {
            None => None,
            Some(id) => {
                let shard = view.shard_of(id).ok_or_else(|| {
                    QueryError::new(
                        QueryErrorKind::UnsupportedParameter,
                        "user",
                        "user: per-user rankings are answered by the process that owns the user; \
                         in a multi-process cluster this version does not forward them yet",
                    )
                })?;
                Some(UserFilter::of(shard.user(id_hash(id)), params.unseen))
            }
        };
        Ok(Context { cohort, user })
    }

    /// [`new`](Self::new) with the user's state given rather than read from a local shard:
    /// in a cluster, the state its owner process answered (`None`: the user has none).
    pub fn with_user(view: &View, params: &RankParams, state: Option<Arc<UserView>>) -> Result<Context, QueryError> {
        let cohort = params.cohort.as_ref().map(|pairs| select(view, pairs)).transpose()?;
        let user = params
            .user
            .as_ref()
            .map(|_| UserFilter::of(state.as_ref(), params.unseen));
        Ok(Context { cohort, user })
    }
}

impl UserFilter {
    fn of(view: Option<&Arc<UserView>>, unseen: bool) -> UserFilter {
        let Some(v) = view else { return UserFilter::default() };
        let exclude = v.set(if unseen { HIDDEN | SEEN } else { HIDDEN });
        UserFilter {
            exclude,
            state: Some(v.clone()),
        }
    }

    fn edges(&self) -> Option<&Edges> {
        self.state.as_ref().and_then(|s| s.edges.as_deref())
    }

    /// Creators the user follows, if any.
    pub fn follows(&self) -> Option<&BTreeSet<String>> {
        self.edges().map(|e| &e.follows)
    }

    /// Whether item `key` by `creator` may be listed for the user.
    pub fn allows(&self, key: ItemKey, creator: Option<&str>) -> bool {
        let excluded = u32::try_from(key).is_ok_and(|k| self.exclude.contains(k));
        let blocked = || creator.is_some_and(|c| self.edges().is_some_and(|e| e.blocks.contains(c)));
        !excluded && !blocked()
    }
}

/// The cohort `pairs` name, as of `view` (a declared composite, or an estimate); `("", NAME)`
/// is the declared cohort `NAME` (a 400 when it is not declared).
pub fn select(view: &View, pairs: &[(String, String)]) -> Result<CohortSel, QueryError> {
    let defs = view.shards.first().map(|s| s.cohort_defs().clone()).unwrap_or_default();
    if let [(d, name)] = pairs
        && d.is_empty()
    {
        if !defs.contains_key(name) {
            let declared: Vec<&str> = defs.keys().map(String::as_str).collect();
            return Err(QueryError::new(
                QueryErrorKind::InvalidParameter,
                "cohort",
                format!(
                    "cohort: no declared cohort {name:?} (declared: {}); a cohort is dimension:value[,dimension:value] or a declared name",
                    if declared.is_empty() {
                        "none".to_string()
                    } else {
                        declared.join(", ")
                    }
                ),
            ));
        }
        return Ok(CohortSel {
            name: name.clone(),
            estimated: false,
            ids: vec![cohort_named(name)],
        });
    }
    let name = pairs
        .iter()
        .map(|(d, v)| format!("{d}:{v}"))
        .collect::<Vec<_>>()
        .join(",");
    if let [(d, v)] = pairs {
        return Ok(CohortSel {
            name,
            estimated: false,
            ids: vec![cohort_value(d, v)],
        });
    }
    let declared = defs
        .iter()
        .find(|(_, rule)| rule.len() == pairs.len() && pairs.iter().all(|(d, v)| rule.get(d) == Some(v)));
    Ok(match declared {
        Some((n, _)) => CohortSel {
            name: n.clone(),
            estimated: false,
            ids: vec![cohort_named(n)],
        },
        None => CohortSel {
            name,
            estimated: true,
            ids: pairs.iter().map(|(d, v)| cohort_value(d, v)).collect(),
        },
    })
}

/// One (item, signal type)'s window counts in a cohort.
#[derive(Copy, Clone, Debug, PartialEq)]
pub enum Counts {
    /// Exact fixed-point lanes.
    Exact(Lanes),
    /// Estimated lanes (`count_W`, `count_2W` per window, as floats).
    Estimated([f64; LANES]),
}

impl Counts {
    /// `count_W` of window `j`.
    pub fn count(&self, j: usize) -> f64 {
        match self {
            Counts::Exact(l) => l.count(j),
            Counts::Estimated(e) => e[2 * j],
        }
    }

    /// `count_2W` of window `j`.
    pub fn count2(&self, j: usize) -> f64 {
        match self {
            Counts::Exact(l) => l.count2(j),
            Counts::Estimated(e) => e[2 * j + 1],
        }
    }

    /// `count_W − (count_2W − count_W)` of window `j`.
    pub fn rise(&self, j: usize) -> f64 {
        match self {
            Counts::Exact(l) => weight_float(l.rise_fixed(j)),
            Counts::Estimated(e) => 2.0 * e[2 * j] - e[2 * j + 1],
        }
    }
}

/// Item `key`'s counts of signal type `kind` in `sel` on `snapshot` (its owner's shard).
pub fn counts(snapshot: &Snapshot, sel: &CohortSel, key: ItemKey, kind: KindIdx) -> Option<Counts> {
    if !sel.estimated {
        return snapshot.cohort_lanes(sel.ids[0], key, kind).map(|l| Counts::Exact(*l));
    }
    let global = snapshot.entry(key)?.lanes(kind)?;
    let k = sel.ids.len() as i32;
    let mut est = [0.0; LANES];
    for (lane, out) in est.iter_mut().enumerate().take(LANES - 1) {
        let g = weight_float(global.0[lane]);
        if g <= 0.0 {
            continue;
        }
        let mut product = 1.0;
        for id in &sel.ids {
            let c = snapshot
                .cohort_lanes(*id, key, kind)
                .map_or(0.0, |l| weight_float(l.0[lane]));
            product *= c;
        }
        *out = product / g.powi(k - 1);
    }
    Some(Counts::Estimated(est))
}

/// The item keys of a shard that have counts in `sel` (for an estimate: in its smallest
/// dimension, since an item absent from any dimension is estimated 0), in key order.
pub fn cohort_items(snapshot: &Snapshot, sel: &CohortSel) -> Vec<ItemKey> {
    let smallest = sel
        .ids
        .iter()
        .map(|id| snapshot.cohort(*id))
        .min_by_key(|m| m.map_or(0, |m| m.len()));
    let Some(Some(map)) = smallest else { return Vec::new() };
    let mut keys: Vec<ItemKey> = map.keys().map(|(k, _)| k).collect();
    keys.dedup();
    keys
}

/// `explain` of a cohort ranking's terms for one item.
pub fn explain_cohort(
    snapshot: &Snapshot,
    sel: &CohortSel,
    key: ItemKey,
    params: &RankParams,
    config: &Config,
) -> Value {
    let mut terms = Vec::new();
    for t in &params.terms {
        let name = config.signals.get(usize::from(t.kind)).map_or("", |s| s.name.as_str());
        let c = counts(snapshot, sel, key, t.kind);
        if let super::params::Feature::Window { index, size } = t.feature {
            let count = c.map_or(0.0, |c| c.count(index));
            let count2 = c.map_or(0.0, |c| c.count2(index));
            terms.push(json!({
                "signal": name, "weight": t.weight, "window": size.to_string(),
                "count": count, "count_2w": count2,
                "velocity": count / size.hours(),
                "acceleration": c.map_or(0.0, |c| c.rise(index)) / size.hours(),
            }));
        }
    }
    json!({"cohort": sel.name, "estimated": sel.estimated, "terms": terms})
}

/// The shard of `view` holding item `key`, if local.
pub fn shard_of_key(view: &View, key: ItemKey) -> Option<&Arc<Snapshot>> {
    let owner = (key % view.peers.max(1) as u64) as usize;
    owner.checked_sub(view.first).and_then(|i| view.shards.get(i))
}
