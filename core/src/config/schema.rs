//! The schema's declarations: signal types with their windows and marks, composite
//! cohorts, and ranking profiles with their score transforms (SPEC §7, §12).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::duration::Dur;

/// A declared signal type.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignalType {
    /// Its name, as in `{"type": "like"}`.
    pub name: String,
    /// Half-lives of its decayed scores.
    #[serde(default)]
    pub half_lives: Vec<Dur>,
    /// Sliding windows.
    #[serde(default)]
    pub windows: Vec<WindowDef>,
    /// Smallest accepted weight.
    #[serde(default = "default_min_weight")]
    pub min_weight: f64,
    /// Largest accepted weight.
    #[serde(default = "default_max_weight")]
    pub max_weight: f64,
    /// Weight of a signal that gives none.
    #[serde(default = "one")]
    pub default_weight: f64,
    /// Weight of this type in the default ranking blend (`signals=` left out).
    #[serde(default)]
    pub rank_weight: f64,
    /// Sign and size of this type's pull on preference vectors.
    #[serde(default = "one")]
    pub polarity: f64,
    /// Added to the user–creator relationship weight per unit of signal weight.
    #[serde(default)]
    pub relationship_delta: f64,
    /// User-state sets this type marks: `seen`, `liked`, `hidden`.
    #[serde(default)]
    pub marks: Vec<Mark>,
}

/// A sliding window: its size and the granularity of its retractions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowDef {
    /// The window size `W`.
    pub size: Dur,
    /// Bucket width `g`; defaults to `W/60`, at least 1s. `W` must be a multiple of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub granularity: Option<Dur>,
}

/// The user-state sets a signal can mark.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mark {
    /// The user has seen the item.
    Seen,
    /// The user liked the item.
    Liked,
    /// The user hid the item.
    Hidden,
}

/// A declared composite cohort.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CohortDef {
    /// Its name.
    pub name: String,
    /// Attribute values a user must have.
    #[serde(rename = "where")]
    pub where_: BTreeMap<String, String>,
}

/// A named ranking profile: a built-in ranking with preset parameters.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileDef {
    /// The name used in `profile=`.
    pub name: String,
    /// The built-in it is based on: trending, rising, hot, top or new.
    pub base: String,
    /// Signal weights (`{view = 1, like = 3}`); defaults to the schema's rank weights.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub signals: BTreeMap<String, f64>,
    /// The window for trending / rising.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<Dur>,
    /// The half-life for hot (for `for_you`: of its popularity term).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub half_life: Option<Dur>,
    /// At most this many items per creator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_per_creator: Option<usize>,
    /// `for_you`: the weight of `cos(p_u, ê_i)` (default 0.5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub w_sim: Option<f64>,
    /// `for_you`: the weight of the normalised popularity (default 0.5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub w_pop: Option<f64>,
    /// `for_you`: the weight of the normalised user–creator affinity (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub w_aff: Option<f64>,
    /// `for_you`: items taken from each candidate source (default 500).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidates: Option<usize>,
    /// `for_you`: the share of slots given to cold fresh items (default 0.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exploration: Option<f64>,
    /// With `q=`: the weight of the text's BM25 (normalised by its maximum; default 0.5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub w_text: Option<f64>,
    /// With `q=`: the weight of the profile's score (normalised by its maximum; default 0.5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub w_profile: Option<f64>,
    /// Filters: only items of this category (a query's `category=` replaces it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// Only items by this creator (a query's `creator=` replaces it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creator: Option<String>,
    /// Only items with this tag (a query's `tag=` replaces it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// Items never listed (a query's `exclude=` adds to them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
    /// The cohort counted in, `dimension:value[,...]` or a declared cohort's name (trending
    /// and rising; a query's `cohort=` replaces it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cohort: Option<String>,
    /// What `user=` filters out besides hidden items: `unseen` (also seen items) or `all`
    /// (nothing more); a query's `filter=` replaces it. Default: `unseen` for `for_you`,
    /// else `all`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    /// Transforms of score terms before they are weighted (and normalised by their maximum):
    /// term (`sim`, `pop`, `aff` of `for_you`; `text`, `profile` of `q=`) → `linear`
    /// (the default), `log1p` or `sqrt` (see [`Transform`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub transforms: BTreeMap<String, String>,
}

/// The score terms a profile may transform, and the ones only `for_you` has.
pub const TRANSFORM_TERMS: [&str; 5] = ["sim", "pop", "aff", "text", "profile"];
/// The score terms of `for_you` alone.
pub const FOR_YOU_TERMS: [&str; 3] = ["sim", "pop", "aff"];

/// How a score term's raw value `x` is transformed before it is weighted; a normalised
/// term divides by the maximum of the transformed values. Each is odd and increasing, so
/// order and sign are kept and `0` stays `0`: `log1p` is `sign(x)·ln(1 + |x|)` (a count
/// that grows by orders of magnitude then weighs by its order), `sqrt` is `sign(x)·√|x|`.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub enum Transform {
    /// `x`.
    #[default]
    Linear,
    /// `sign(x)·ln(1 + |x|)`.
    Log1p,
    /// `sign(x)·√|x|`.
    Sqrt,
}

impl Transform {
    /// The transform named `name` (`linear`, `log1p`, `sqrt`).
    pub fn parse(name: &str) -> Option<Transform> {
        match name {
            "linear" => Some(Transform::Linear),
            "log1p" => Some(Transform::Log1p),
            "sqrt" => Some(Transform::Sqrt),
            _ => None,
        }
    }

    /// Its name in the schema.
    pub fn name(self) -> &'static str {
        match self {
            Transform::Linear => "linear",
            Transform::Log1p => "log1p",
            Transform::Sqrt => "sqrt",
        }
    }

    /// `f(x)`.
    pub fn apply(self, x: f64) -> f64 {
        match self {
            Transform::Linear => x,
            Transform::Log1p => x.signum() * x.abs().ln_1p(),
            Transform::Sqrt => x.signum() * x.abs().sqrt(),
        }
    }

    /// A normalised term: `f(x) / f(max)`, 0 when `f(max)` is not positive. `f` is increasing
    /// with `f(0) = 0`, so `f(max)` is the largest transformed value when `max` is the
    /// largest raw one.
    pub fn normalised(self, x: f64, max: f64) -> f64 {
        let m = self.apply(max);
        if m > 0.0 { self.apply(x) / m } else { 0.0 }
    }
}

/// The largest `candidates` a `for_you` profile may take per source.
pub const MAX_CANDIDATES: usize = 10_000;

fn one() -> f64 {
    1.0
}
fn default_min_weight() -> f64 {
    -1000.0
}
fn default_max_weight() -> f64 {
    1000.0
}
