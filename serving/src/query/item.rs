//! `GET /v1/items/{id}`: an item's metadata and every feature of every signal type, as of
//! the snapshot's clock.

use std::collections::BTreeMap;

use serde::Serialize;

use tidal_core::Config;
use tidal_core::features::{decay_sum, weight_float};
use tidal_core::flow::{HalfLifeIdx, KindIdx};
use tidal_core::record::ItemMeta;
use tidal_sinks::View;

use super::AsOf;
use super::personal::{counts, select};

/// One signal type's features of an item; maps are keyed by duration strings (`"24h"`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SignalFeatures {
    /// All-time Σ weight.
    pub total: f64,
    /// `count_W` per window.
    pub counts: BTreeMap<String, f64>,
    /// `velocity_W = count_W / W_h` per window.
    pub velocity: BTreeMap<String, f64>,
    /// `acceleration_W` per window.
    pub acceleration: BTreeMap<String, f64>,
    /// `decay_h` per half-life.
    pub decay: BTreeMap<String, f64>,
}

/// An item as `GET /v1/items/{id}` shows it: its id, its metadata (when put), every
/// feature of every signal type, and the state it was read from.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ItemView {
    /// The item id.
    pub id: String,
    /// Its metadata; `None` for an item known only from signals.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub meta: Option<ItemMeta>,
    /// Features per signal type.
    pub signals: BTreeMap<String, SignalFeatures>,
    /// With `cohort=`: the item's window counts among that cohort's users.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cohort: Option<CohortFeatures>,
    /// The state the view was read from.
    pub as_of: AsOf,
}

/// An item's window counts in one cohort.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CohortFeatures {
    /// The cohort (`dimension:value,...` or a declared name).
    pub name: String,
    /// Estimated under independence (a composite never declared).
    pub estimated: bool,
    /// Per signal type: `counts`, `velocity`, `acceleration` per window.
    pub signals: BTreeMap<String, CohortSignal>,
}

/// One signal type's window features in a cohort.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CohortSignal {
    /// `count_W` per window.
    pub counts: BTreeMap<String, f64>,
    /// `count_W / W_h` per window.
    pub velocity: BTreeMap<String, f64>,
    /// `acceleration_W` per window.
    pub acceleration: BTreeMap<String, f64>,
}

/// The view of item `id`; `None` for an unknown or deleted id.
pub fn item_view(view: &View, config: &Config, id: &str) -> Option<ItemView> {
    item_view_with(view, config, id, None)
}

/// The view of item `id` with its counts in `cohort` (`dimension:value` pairs, as
/// [`parse_cohort`](super::params::parse_cohort) gives them).
///
/// `Err` when the cohort names a declared cohort that is not declared.
pub fn item_view_in(
    view: &View,
    config: &Config,
    id: &str,
    cohort: Option<&[(String, String)]>,
) -> Result<Option<ItemView>, super::QueryError> {
    let sel = cohort.map(|pairs| select(view, pairs)).transpose()?;
    Ok(item_view_with(view, config, id, sel.as_ref()))
}

fn item_view_with(
    view: &View,
    config: &Config,
    id: &str,
    sel: Option<&super::personal::CohortSel>,
) -> Option<ItemView> {
    let shard = view.shard_of(id)?;
    let (key, entry) = shard.item(id)?;
    let state = entry.state()?;
    if state.deleted {
        return None;
    }
    let clock = view.clock_ms();
    let mut signals = BTreeMap::new();
    for (k, st) in config.signals.iter().enumerate() {
        let kind = k as KindIdx;
        let lanes = entry.lanes(kind).copied().unwrap_or_default();
        let mut f = SignalFeatures {
            total: lanes.total(),
            counts: BTreeMap::new(),
            velocity: BTreeMap::new(),
            acceleration: BTreeMap::new(),
            decay: BTreeMap::new(),
        };
        for (j, w) in st.windows.iter().enumerate() {
            let key = w.size.to_string();
            f.counts.insert(key.clone(), lanes.count(j));
            f.velocity.insert(key.clone(), lanes.count(j) / w.size.hours());
            f.acceleration
                .insert(key, weight_float(lanes.rise_fixed(j)) / w.size.hours());
        }
        for (h, hl) in st.half_lives.iter().enumerate() {
            let value = decay_sum(entry.epochs(kind, h as HalfLifeIdx), hl.ms(), clock);
            // `+ 0.0` turns an empty sum's -0.0 into 0.0.
            f.decay.insert(hl.to_string(), value + 0.0);
        }
        signals.insert(st.name.clone(), f);
    }
    let cohort = sel.map(|sel| {
        let mut signals = BTreeMap::new();
        for (k, st) in config.signals.iter().enumerate() {
            let c = counts(shard, sel, key, k as KindIdx);
            let mut f = CohortSignal {
                counts: BTreeMap::new(),
                velocity: BTreeMap::new(),
                acceleration: BTreeMap::new(),
            };
            for (j, w) in st.windows.iter().enumerate() {
                let key = w.size.to_string();
                let n = c.map_or(0.0, |c| c.count(j));
                f.counts.insert(key.clone(), n);
                f.velocity.insert(key.clone(), n / w.size.hours());
                f.acceleration
                    .insert(key, c.map_or(0.0, |c| c.rise(j)) / w.size.hours());
            }
            signals.insert(st.name.clone(), f);
        }
        CohortFeatures {
            name: sel.name.clone(),
            estimated: sel.estimated,
            signals,
        }
    });
    Some(ItemView {
        id: state.id.clone(),
        meta: state.meta.as_deref().cloned(),
        signals,
        cohort,
        as_of: AsOf { clock, lsn: view.lsn() },
    })
}
