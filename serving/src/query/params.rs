//! `GET /v1/rankings` parameters, parsed and resolved against the schema once, so the
//! ranking itself cannot fail on a bad name: [`RankParams::parse`] turns the URL's query
//! pairs into a profile base, per-signal-type score [`Term`]s (type, weight, window or
//! half-life index), filters, diversity and paging — or a [`QueryError`] naming the
//! parameter.

use std::collections::{BTreeSet, HashMap};

use tidal_core::flow::{HalfLifeIdx, KindIdx};
use tidal_core::{Config, Dur};

use super::blend::Personal;
use super::error::{QueryError, QueryErrorKind, invalid};

mod terms;
use terms::{profile, terms, weights};

/// Items per page when `limit` is left out.
pub const DEFAULT_LIMIT: usize = 20;
/// The largest `limit`.
pub const MAX_LIMIT: usize = 1000;
/// The deepest page a cursor may point at (items skipped).
pub const MAX_OFFSET: usize = 100_000;

/// The built-in rankings every profile is based on.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Base {
    /// Σ weight × velocity over a window.
    Trending,
    /// Σ weight × acceleration over a window.
    Rising,
    /// Σ weight × decayed sum at a half-life.
    Hot,
    /// Σ weight × all-time total.
    Top,
    /// `created_at`, newest first.
    New,
    /// Items of the creators the user follows, newest first (or by `hot` at a given
    /// half-life).
    Following,
    /// Personalised (SPEC §12): candidates from the user's preference vector, popularity
    /// (`hot`), followed creators and fresh items, scored by a blend.
    ForYou,
}

impl Base {
    fn parse(s: &str) -> Option<Base> {
        Some(match s {
            "trending" => Base::Trending,
            "rising" => Base::Rising,
            "hot" => Base::Hot,
            "top" => Base::Top,
            "new" => Base::New,
            "following" => Base::Following,
            "for_you" => Base::ForYou,
            _ => return None,
        })
    }

    /// The built-in's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Base::Trending => "trending",
            Base::Rising => "rising",
            Base::Hot => "hot",
            Base::Top => "top",
            Base::New => "new",
            Base::Following => "following",
            Base::ForYou => "for_you",
        }
    }
}

/// Which feature of a signal type a term reads.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Feature {
    /// Window `index` (of size `size`): velocity for trending, acceleration for rising.
    Window {
        /// Index in the type's `windows`.
        index: usize,
        /// The window size.
        size: Dur,
    },
    /// Half-life `index` (of length `size`): the decayed sum.
    HalfLife {
        /// Index in the type's `half_lives`.
        index: HalfLifeIdx,
        /// The half-life.
        size: Dur,
    },
    /// The all-time total.
    Total,
}

/// One summand of a score: `weight × feature(kind)`.
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct Term {
    /// Signal type index.
    pub kind: KindIdx,
    /// Its weight (> 0).
    pub weight: f64,
    /// The feature read.
    pub feature: Feature,
}

/// A parsed ranking request.
#[derive(Clone, Debug, PartialEq)]
pub struct RankParams {
    /// The profile name as asked (built-in or declared).
    pub profile: String,
    /// The built-in ranking it uses.
    pub base: Base,
    /// Score terms, sorted by signal type; empty for `new`. Types weighted 0 are left out.
    pub terms: Vec<Term>,
    /// Only items of this category.
    pub category: Option<String>,
    /// Only items of this creator.
    pub creator: Option<String>,
    /// Only items with this tag.
    pub tag: Option<String>,
    /// Items never listed.
    pub exclude: BTreeSet<String>,
    /// At most this many items per creator (items without a creator are not capped).
    pub max_per_creator: Option<usize>,
    /// Page size.
    pub limit: usize,
    /// Items skipped (from the cursor).
    pub offset: usize,
    /// Add per-item features and score terms.
    pub explain: bool,
    /// Read-your-writes: the LSN the answer must include (waited for by the HTTP layer).
    pub min_lsn: Option<u64>,
    /// In a cluster, the process whose WAL `min_lsn` is in (`min_lsn=P:N`); `None`: this
    /// process's.
    pub min_lsn_process: Option<usize>,
    /// Count only signals of users in this cohort: `(dimension, value)` pairs, sorted by
    /// dimension, each dimension declared.
    pub cohort: Option<Vec<(String, String)>>,
    /// The user asking: their hidden items and blocked creators are never listed.
    pub user: Option<String>,
    /// `filter=unseen`: the user's seen items are not listed either (`for_you`'s default;
    /// `filter=all` lists them).
    pub unseen: bool,
    /// `for_you`'s blend, candidate sizes and exploration share.
    pub personal: Personal,
    /// `q=`: text to match in the items' title and text (every term).
    pub q: Option<String>,
    /// Whether `profile=` was given (`q=` alone ranks by BM25 alone).
    pub profile_given: bool,
}

/// Parses an on/off parameter: `1` or `true`, `0` or `false` (absent: off).
pub fn parse_flag(param: &str, v: Option<&str>) -> Result<bool, QueryError> {
    match v {
        None | Some("0") | Some("false") => Ok(false),
        Some("1") | Some("true") => Ok(true),
        Some(v) => Err(invalid(
            param,
            format!("{param}: expected 1 or 0 (or true or false), got {v:?}"),
        )),
    }
}

/// Parses `min_lsn`: `N` (an LSN of this process's WAL) or `P:N` (of process `P`'s, as a
/// write in a cluster answers it in `token`).
pub fn parse_min_lsn(v: &str) -> Result<(Option<usize>, u64), QueryError> {
    let bad = || {
        super::error::invalid(
            "min_lsn",
            format!("min_lsn: expected a non-negative integer or PROCESS:LSN, got {v:?}"),
        )
    };
    match v.split_once(':') {
        Some((p, n)) => Ok((
            Some(p.parse::<usize>().map_err(|_| bad())?),
            n.parse::<u64>().map_err(|_| bad())?,
        )),
        None => Ok((None, v.parse::<u64>().map_err(|_| bad())?)),
    }
}

/// Parameters of features this version does not serve, with the reason.
const UNSUPPORTED: [(&str, &str); 0] = [];

/// The longest `q=` accepted (bytes).
pub const MAX_Q_BYTES: usize = tidal_sinks::text::MAX_QUERY_BYTES;

const KNOWN: [&str; 18] = [
    "q",
    "cohort",
    "user",
    "filter",
    "profile",
    "signal",
    "signals",
    "window",
    "half_life",
    "category",
    "creator",
    "tag",
    "exclude",
    "max_per_creator",
    "limit",
    "cursor",
    "explain",
    "min_lsn",
];

impl RankParams {
    /// Parses query pairs; a parameter given twice is refused.
    pub fn parse<K: AsRef<str>, V: AsRef<str>>(pairs: &[(K, V)], config: &Config) -> Result<RankParams, QueryError> {
        let mut map: HashMap<&str, &str> = HashMap::new();
        for (k, v) in pairs {
            if map.insert(k.as_ref(), v.as_ref()).is_some() {
                return Err(QueryError::repeated(k.as_ref()));
            }
        }
        Self::parse_map(&map, config)
    }

    /// Parses a parameter map.
    pub fn from_map(map: &HashMap<String, String>, config: &Config) -> Result<RankParams, QueryError> {
        let map: HashMap<&str, &str> = map.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        Self::parse_map(&map, config)
    }

    fn parse_map(map: &HashMap<&str, &str>, config: &Config) -> Result<RankParams, QueryError> {
        let mut keys: Vec<&str> = map.keys().copied().collect();
        keys.sort_unstable();
        for k in keys {
            if let Some((_, why)) = UNSUPPORTED.iter().find(|(p, _)| *p == k) {
                return Err(QueryError::new(
                    QueryErrorKind::UnsupportedParameter,
                    k,
                    format!("{k}: {why}"),
                ));
            }
            if !KNOWN.contains(&k) {
                return Err(QueryError::new(
                    QueryErrorKind::UnknownParameter,
                    k,
                    format!("unknown parameter {k:?}; known parameters: {}", KNOWN.join(", ")),
                ));
            }
        }
        let get = |k: &str| map.get(k).copied();
        let (profile, base, def) = profile(get("profile"), config)?;
        let weights = weights(get("signal"), get("signals"), def, config)?;
        let window = duration("window", get("window"))?.or(def.and_then(|d| d.window));
        let half_life = duration("half_life", get("half_life"))?.or(def.and_then(|d| d.half_life));
        // `q=` alone ranks by BM25 alone: what only a profile reads would be ignored.
        if get("q").is_some() && get("profile").is_none() {
            for param in ["cohort", "window", "half_life", "signal", "signals"] {
                if get(param).is_some() {
                    return Err(invalid(
                        param,
                        format!(
                            "{param}: q= without profile= ranks by BM25 alone; add profile= (e.g. profile=trending) to search within a profile's ranking"
                        ),
                    ));
                }
            }
        }
        inapplicable(base, &profile, half_life.is_some(), get)?;
        let terms = terms(base, &weights, window, half_life, config)?;
        let max_per_creator = match get("max_per_creator") {
            Some(v) => Some(positive("max_per_creator", v)?),
            None => def.and_then(|d| d.max_per_creator),
        };
        let limit = match get("limit") {
            None => DEFAULT_LIMIT,
            Some(v) => {
                let n = positive("limit", v)?;
                if n > MAX_LIMIT {
                    return Err(QueryError::new(
                        QueryErrorKind::LimitTooLarge,
                        "limit",
                        format!("limit: {n} is above the maximum of {MAX_LIMIT}"),
                    ));
                }
                n
            }
        };
        let offset = get("cursor").map(decode_cursor).transpose()?.unwrap_or(0);
        let explain = parse_flag("explain", get("explain"))?;
        let (min_lsn_process, min_lsn) = match get("min_lsn").map(parse_min_lsn).transpose()? {
            Some((p, n)) => (p, Some(n)),
            None => (None, None),
        };
        let user = text("user", get("user"))?;
        if let Some(u) = &user {
            tidal_core::ids::check_id("user", u, config.server.max_id_bytes).map_err(|m| invalid("user", m))?;
        }
        // A profile's declared filters are the defaults of the query's own.
        let unseen = match get("filter") {
            None => match def.and_then(|d| d.filter.as_deref()) {
                Some("unseen") => user.is_some(),
                Some(_) => false,
                None => base == Base::ForYou,
            },
            Some("all") => false,
            Some("unseen") if user.is_some() => true,
            Some("unseen") => return Err(invalid("filter", "filter=unseen needs user=")),
            Some(v) => {
                return Err(invalid(
                    "filter",
                    format!("filter: unknown filter {v:?}; known: unseen, all"),
                ));
            }
        };
        if matches!(base, Base::Following | Base::ForYou) && user.is_none() {
            let what = if profile == base.as_str() {
                format!("profile={profile}")
            } else {
                format!("profile={profile} (a {} profile)", base.as_str())
            };
            return Err(invalid("user", format!("{what} needs user=")));
        }
        let cohort = get("cohort")
            .or(def.and_then(|d| d.cohort.as_deref()))
            .map(|v| parse_cohort(v, config))
            .transpose()?;
        let q = match get("q").map(str::trim) {
            None => None,
            Some("") => return Err(invalid("q", "q: must not be empty")),
            Some(v) if v.len() > MAX_Q_BYTES => {
                return Err(invalid("q", format!("q: at most {MAX_Q_BYTES} bytes")));
            }
            Some(v) if tidal_sinks::text::nesting(v) > tidal_sinks::text::MAX_NESTING => {
                return Err(invalid(
                    "q",
                    format!(
                        "q: nested deeper than {} (parentheses and NOTs)",
                        tidal_sinks::text::MAX_NESTING
                    ),
                ));
            }
            Some(v) => Some(v.to_string()),
        };
        if q.is_some() && base == Base::Following {
            return Err(invalid(
                "q",
                "q: text search ranks candidates by a score; following has none (use a ranking profile)",
            ));
        }
        if cohort.is_some() && !matches!(base, Base::Trending | Base::Rising) {
            return Err(invalid(
                "cohort",
                format!(
                    "cohort: cohort counts are window counts; profile {:?} ({}) has none — use trending or rising",
                    profile,
                    base.as_str()
                ),
            ));
        }
        let mut exclude: BTreeSet<String> = def.map(|d| d.exclude.iter().cloned().collect()).unwrap_or_default();
        exclude.extend(
            get("exclude")
                .into_iter()
                .flat_map(|v| v.split(','))
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from),
        );
        Ok(RankParams {
            profile,
            base,
            terms,
            category: text("category", get("category"))?.or_else(|| def.and_then(|d| d.category.clone())),
            creator: text("creator", get("creator"))?.or_else(|| def.and_then(|d| d.creator.clone())),
            tag: text("tag", get("tag"))?.or_else(|| def.and_then(|d| d.tag.clone())),
            exclude,
            max_per_creator,
            limit,
            offset,
            explain,
            min_lsn,
            min_lsn_process,
            cohort,
            user,
            unseen,
            personal: Personal::of(def),
            q,
            profile_given: get("profile").is_some(),
        })
    }
}

/// Refuses a query's `window`, `half_life`, `signal` or `signals` that its profile's base
/// does not read: ignored, it would answer a ranking other than the one asked for without
/// saying so. (A declared profile's own fields are checked at start.)
fn inapplicable<'a>(
    base: Base,
    profile: &str,
    half_life: bool,
    get: impl Fn(&str) -> Option<&'a str>,
) -> Result<(), QueryError> {
    let reads = |param: &str| match param {
        "window" => tidal_core::config::base_reads_window(base.as_str()),
        "half_life" => tidal_core::config::base_reads_half_life(base.as_str()),
        _ => base != Base::New && (base != Base::Following || half_life),
    };
    for param in ["window", "half_life", "signal", "signals"] {
        if get(param).is_some() && !reads(param) {
            let what = match base {
                Base::Trending | Base::Rising => "counts over a window (window=), not a half-life",
                Base::Hot => "decayed scores at a half-life (half_life=), not a window",
                Base::ForYou => "a popularity term decayed at a half-life (half_life=), not a window",
                Base::Following if param == "window" => {
                    "the followed creators' items newest first, or by their decayed score with half_life="
                }
                Base::Following => "the followed creators' items newest first; signal weights apply with half_life=",
                Base::Top => "all-time totals, with neither a window nor a half-life",
                Base::New => "creation time, with no signal, window or half-life",
            };
            return Err(invalid(
                param,
                format!("{param}: profile {profile:?} ({}) ranks by {what}", base.as_str()),
            ));
        }
    }
    Ok(())
}

/// Parses `cohort=dimension:value,dimension:value` (each dimension declared, at most once),
/// sorted by dimension; or `cohort=NAME`, a declared cohort by its name (returned as the one
/// pair `("", NAME)`, resolved when ranked).
pub fn parse_cohort(v: &str, config: &Config) -> Result<Vec<(String, String)>, QueryError> {
    if !v.contains(':') && tidal_core::config::valid_name(v) {
        return Ok(vec![(String::new(), v.to_string())]);
    }
    let mut out: Vec<(String, String)> = Vec::new();
    for part in v.split(',') {
        let Some((d, val)) = part.split_once(':') else {
            return Err(invalid(
                "cohort",
                format!("cohort: expected dimension:value[,dimension:value...], got {part:?}"),
            ));
        };
        if !config.cohort_dimensions.iter().any(|x| x == d) {
            return Err(QueryError::new(
                QueryErrorKind::UnknownDimension,
                "cohort",
                format!(
                    "cohort: {d:?} is not a declared cohort dimension (declared: {})",
                    config.cohort_dimensions.join(", ")
                ),
            ));
        }
        if val.is_empty() {
            return Err(invalid("cohort", format!("cohort: empty value for {d:?}")));
        }
        if out.iter().any(|(x, _)| x == d) {
            return Err(invalid("cohort", format!("cohort: {d:?} is given twice")));
        }
        out.push((d.to_string(), val.to_string()));
    }
    out.sort();
    Ok(out)
}

/// The cursor of the page starting after `offset` items.
pub fn encode_cursor(offset: usize) -> String {
    format!("p{offset:x}")
}

fn decode_cursor(v: &str) -> Result<usize, QueryError> {
    let bad = || {
        QueryError::new(
            QueryErrorKind::InvalidCursor,
            "cursor",
            format!("cursor: {v:?} is not a cursor this server handed out"),
        )
    };
    let hex = v.strip_prefix('p').ok_or_else(bad)?;
    if hex.is_empty() || hex.len() > 8 || !hex.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()) {
        return Err(bad());
    }
    let offset = usize::from_str_radix(hex, 16).map_err(|_| bad())?;
    if offset > MAX_OFFSET {
        return Err(QueryError::new(
            QueryErrorKind::InvalidCursor,
            "cursor",
            format!("cursor: pages deeper than {MAX_OFFSET} items are not served"),
        ));
    }
    Ok(offset)
}

fn duration(param: &str, v: Option<&str>) -> Result<Option<Dur>, QueryError> {
    v.map(|s| s.parse::<Dur>().map_err(|e| invalid(param, format!("{param}: {e}"))))
        .transpose()
}

fn positive(param: &str, v: &str) -> Result<usize, QueryError> {
    match v.trim().parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(invalid(
            param,
            format!("{param}: expected a positive integer, got {v:?}"),
        )),
    }
}

fn text(param: &str, v: Option<&str>) -> Result<Option<String>, QueryError> {
    match v {
        Some("") => Err(invalid(param, format!("{param}: must not be empty"))),
        other => Ok(other.map(String::from)),
    }
}
