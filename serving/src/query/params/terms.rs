//! A ranking's profile resolved against the schema: its base (built-in or declared) and
//! the score terms it weighs, one per signal type with the window or half-life it reads.

use tidal_core::config::ProfileDef;
use tidal_core::flow::{HalfLifeIdx, KindIdx};
use tidal_core::{Config, Dur};

use super::{Base, Feature, Term};
use crate::query::error::{QueryError, QueryErrorKind, invalid};

pub(super) fn profile<'c>(
    v: Option<&str>,
    config: &'c Config,
) -> Result<(String, Base, Option<&'c ProfileDef>), QueryError> {
    let name = v.unwrap_or("trending");
    if let Some(base) = Base::parse(name) {
        return Ok((name.into(), base, None));
    }
    if let Some(def) = config.profile(name) {
        let base = Base::parse(&def.base).ok_or_else(|| {
            invalid(
                "profile",
                format!("profile: {name:?} is declared on an unknown base {:?}", def.base),
            )
        })?;
        return Ok((name.into(), base, Some(def)));
    }
    let declared: Vec<&str> = config.profiles.iter().map(|p| p.name.as_str()).collect();
    Err(QueryError::new(
        QueryErrorKind::UnknownProfile,
        "profile",
        format!(
            "profile: unknown profile {name:?}; available: trending, rising, hot, top, new, following, for_you{}{}",
            if declared.is_empty() { "" } else { ", " },
            declared.join(", ")
        ),
    ))
}

/// `(type index, weight)` for every used type, sorted by type; zero weights dropped.
pub(super) fn weights(
    signal: Option<&str>,
    signals: Option<&str>,
    def: Option<&ProfileDef>,
    config: &Config,
) -> Result<Vec<(KindIdx, f64)>, QueryError> {
    let kind = |param: &str, name: &str| {
        config.signal_index(name).map(|i| i as KindIdx).ok_or_else(|| {
            let known: Vec<&str> = config.signals.iter().map(|s| s.name.as_str()).collect();
            QueryError::new(
                QueryErrorKind::UnknownSignal,
                param,
                format!("{param}: unknown signal type {name:?}; declared: {}", known.join(", ")),
            )
        })
    };
    let mut out: Vec<(KindIdx, f64)> = match (signal, signals) {
        (Some(_), Some(_)) => return Err(invalid("signals", "give either signal= or signals=, not both")),
        (Some(name), None) => vec![(kind("signal", name.trim())?, 1.0)],
        (None, Some(list)) => {
            let mut v: Vec<(KindIdx, f64)> = Vec::new();
            for part in list.split(',').map(str::trim) {
                if part.is_empty() {
                    return Err(invalid(
                        "signals",
                        format!("signals: empty entry in {list:?}; expected type:weight,type:weight"),
                    ));
                }
                let (name, w) = match part.split_once(':') {
                    Some((n, w)) => {
                        let w: f64 = w.trim().parse().map_err(|_| {
                            invalid(
                                "signals",
                                format!("signals: the weight of {n:?} is not a number: {w:?}"),
                            )
                        })?;
                        (n.trim(), w)
                    }
                    None => (part, 1.0),
                };
                if !tidal_core::config::is_rank_weight(w) {
                    return Err(invalid(
                        "signals",
                        format!(
                            "signals: the weight of {name:?} must be a number within 0..={}, got {w}",
                            tidal_core::config::MAX_RANK_WEIGHT
                        ),
                    ));
                }
                let k = kind("signals", name)?;
                if v.iter().any(|(x, _)| *x == k) {
                    return Err(invalid("signals", format!("signals: {name:?} is listed twice")));
                }
                v.push((k, w));
            }
            v
        }
        (None, None) => match def.filter(|d| !d.signals.is_empty()) {
            Some(d) => d
                .signals
                .iter()
                .map(|(n, w)| Ok((kind("profile", n)?, *w)))
                .collect::<Result<_, QueryError>>()?,
            None => config
                .signals
                .iter()
                .enumerate()
                .map(|(i, s)| (i as KindIdx, s.rank_weight))
                .collect(),
        },
    };
    out.retain(|(_, w)| *w > 0.0);
    out.sort_by_key(|(k, _)| *k);
    Ok(out)
}

pub(super) fn terms(
    base: Base,
    weights: &[(KindIdx, f64)],
    window: Option<Dur>,
    half_life: Option<Dur>,
    config: &Config,
) -> Result<Vec<Term>, QueryError> {
    let mut out = Vec::with_capacity(weights.len());
    for &(kind, weight) in weights {
        let Some(st) = config.signals.get(kind as usize) else {
            continue;
        };
        let feature = match base {
            Base::New => continue,
            // `following` orders by its score when given a half-life (hot), else newest first.
            Base::Following if half_life.is_none() => continue,
            Base::Top => Feature::Total,
            Base::Trending | Base::Rising => {
                let index = match window {
                    Some(w) => st.windows.iter().position(|d| d.size == w),
                    None => (!st.windows.is_empty()).then_some(0),
                };
                let Some(index) = index else {
                    let declared: Vec<String> = st.windows.iter().map(|d| d.size.to_string()).collect();
                    return Err(QueryError::new(
                        QueryErrorKind::UndeclaredWindow,
                        "window",
                        format!(
                            "window: signal type {:?} declares no window {} (declared: {})",
                            st.name,
                            window.map_or("at all".into(), |w| w.to_string()),
                            declared.join(", ")
                        ),
                    ));
                };
                Feature::Window {
                    index,
                    size: st.windows[index].size,
                }
            }
            Base::Hot | Base::ForYou | Base::Following => {
                let index = match half_life {
                    Some(h) => st.half_lives.iter().position(|d| *d == h),
                    // for_you's popularity decays at the longest declared half-life.
                    None if base == Base::ForYou => st
                        .half_lives
                        .iter()
                        .enumerate()
                        .max_by_key(|(_, d)| **d)
                        .map(|(i, _)| i),
                    None => (!st.half_lives.is_empty()).then_some(0),
                };
                let Some(index) = index else {
                    let declared: Vec<String> = st.half_lives.iter().map(|d| d.to_string()).collect();
                    return Err(QueryError::new(
                        QueryErrorKind::UndeclaredHalfLife,
                        "half_life",
                        format!(
                            "half_life: signal type {:?} declares no half-life {} (declared: {})",
                            st.name,
                            half_life.map_or("at all".into(), |h| h.to_string()),
                            declared.join(", ")
                        ),
                    ));
                };
                Feature::HalfLife {
                    index: index as HalfLifeIdx,
                    size: st.half_lives[index],
                }
            }
        };
        out.push(Term { kind, weight, feature });
    }
    Ok(out)
}
