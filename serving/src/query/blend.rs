//! How a profile blends its score terms (SPEC §12): `for_you`'s weights, candidate sizes and
//! exploration share, the text/profile weights of `q=`, and each term's transform — from the
//! profile's declaration or the defaults.

use tidal_core::config::{ProfileDef, Transform};

/// `for_you`'s parameters (SPEC §12), from its profile declaration or the defaults.
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct Personal {
    /// Weight of `cos(p_u, ê_i)`.
    pub w_sim: f64,
    /// Weight of `pop_i / max pop`.
    pub w_pop: f64,
    /// Weight of `aff(u, creator_i) / max aff`.
    pub w_aff: f64,
    /// Items taken from each candidate source.
    pub candidates: usize,
    /// The share of slots given to cold fresh items.
    pub exploration: f64,
    /// With `q=` and a profile: the weight of `bm25 / max bm25`.
    pub w_text: f64,
    /// With `q=` and a profile: the weight of `score / max score`.
    pub w_profile: f64,
    /// The transforms of the terms before they are weighted and normalised.
    pub transforms: Transforms,
}

/// Each score term's transform (`linear` unless the profile declares another).
#[derive(Copy, Clone, Debug, Default, PartialEq)]
pub struct Transforms {
    /// Of `cos(p_u, ê_i)`.
    pub sim: Transform,
    /// Of the popularity term.
    pub pop: Transform,
    /// Of the user–creator affinity.
    pub aff: Transform,
    /// Of the BM25 score (`q=`).
    pub text: Transform,
    /// Of the profile's score (`q=` with a profile).
    pub profile: Transform,
}

impl Transforms {
    fn of(def: &ProfileDef) -> Transforms {
        let t = |term: &str| {
            def.transforms
                .get(term)
                .and_then(|name| Transform::parse(name))
                .unwrap_or_default()
        };
        Transforms {
            sim: t("sim"),
            pop: t("pop"),
            aff: t("aff"),
            text: t("text"),
            profile: t("profile"),
        }
    }
}

impl Default for Personal {
    fn default() -> Self {
        Personal {
            w_sim: 0.5,
            w_pop: 0.5,
            w_aff: 0.0,
            candidates: 500,
            exploration: 0.1,
            w_text: 0.5,
            w_profile: 0.5,
            transforms: Transforms::default(),
        }
    }
}

impl Personal {
    pub(crate) fn of(def: Option<&ProfileDef>) -> Personal {
        let d = Personal::default();
        let Some(p) = def else { return d };
        Personal {
            w_sim: p.w_sim.unwrap_or(d.w_sim),
            w_pop: p.w_pop.unwrap_or(d.w_pop),
            w_aff: p.w_aff.unwrap_or(d.w_aff),
            candidates: p.candidates.unwrap_or(d.candidates),
            exploration: p.exploration.unwrap_or(d.exploration),
            w_text: p.w_text.unwrap_or(d.w_text),
            w_profile: p.w_profile.unwrap_or(d.w_profile),
            transforms: Transforms::of(p),
        }
    }
}
