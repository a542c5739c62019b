//! What the facade takes and answers: signals to write, acknowledgements, ranking queries.

use serde::{Deserialize, Serialize};

use super::error::{Error, Result};
use crate::query::QueryError;

/// A signal to write (SPEC §5's signal object). `type` and `item` are required; a missing
/// `weight` is the type's `default_weight`, a missing `ts` the commit clock.
///
/// ```
/// let s = tidal_serving::NewSignal::new("like", "m42").user("u7").ts(1_700_000_000_000);
/// assert_eq!(s.kind, "like");
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSignal {
    /// The signal type.
    #[serde(rename = "type")]
    pub kind: String,
    /// The item id.
    pub item: String,
    /// The user id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The weight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<f64>,
    /// Event time, ms since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ts: Option<u64>,
    /// Idempotency key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

impl NewSignal {
    /// A signal of type `kind` on `item`.
    pub fn new(kind: impl Into<String>, item: impl Into<String>) -> NewSignal {
        NewSignal {
            kind: kind.into(),
            item: item.into(),
            user: None,
            weight: None,
            ts: None,
            id: None,
        }
    }

    /// Sets the user.
    #[must_use]
    pub fn user(mut self, user: impl Into<String>) -> NewSignal {
        self.user = Some(user.into());
        self
    }

    /// Sets the weight.
    #[must_use]
    pub fn weight(mut self, weight: f64) -> NewSignal {
        self.weight = Some(weight);
        self
    }

    /// Sets the event time (ms since the epoch).
    #[must_use]
    pub fn ts(mut self, ts: u64) -> NewSignal {
        self.ts = Some(ts);
        self
    }

    /// Sets the idempotency key.
    #[must_use]
    pub fn id(mut self, id: impl Into<String>) -> NewSignal {
        self.id = Some(id.into());
        self
    }
}

/// In a cluster, what a read on any process passes as `min_lsn` to see a write: the
/// process that wrote it and the LSN in that process's WAL, written `P:LSN`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Token {
    /// The process whose WAL holds the write.
    pub process: usize,
    /// Its LSN there.
    pub lsn: u64,
}

impl std::fmt::Display for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.process, self.lsn)
    }
}

impl Serialize for Token {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Token {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Token, D::Error> {
        let s = String::deserialize(d)?;
        match crate::query::parse_min_lsn(&s) {
            Ok((Some(process), lsn)) => Ok(Token { process, lsn }),
            _ => Err(serde::de::Error::custom(format!("expected PROCESS:LSN, got {s:?}"))),
        }
    }
}

/// The answer to a write of signals, once durable.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SignalsAck {
    /// Signals written.
    pub accepted: usize,
    /// Signals dropped as duplicates.
    pub duplicates: usize,
    /// The LSN of the record written (the last LSN of the log when every signal was a
    /// duplicate); a read with `min_lsn` of it sees the signals.
    pub lsn: u64,
    /// `T_commit` of the batch, ms.
    pub clock: u64,
    /// In a cluster: what a read on any process passes as `min_lsn` to see the signals.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, example = "1:2040")]
    pub token: Option<Token>,
}

/// The answer to any other write, once durable.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WriteAck {
    /// The LSN of the record written; a read with `min_lsn` of it sees the write.
    pub lsn: u64,
    /// `T_commit` of the batch, ms.
    pub clock: u64,
    /// In a cluster: what a read on any process passes as `min_lsn` to see the write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, example = "1:2040")]
    pub token: Option<Token>,
}

/// A ranking request: the parameters of `GET /v1/rankings`, built in code or parsed from a
/// query string. It is checked against the schema when ranked, by the same decoder the HTTP
/// API uses, so a query means the same in both.
///
/// ```
/// use tidal_serving::RankQuery;
/// let q = RankQuery::new().profile("hot").signals(&[("view", 1.0), ("like", 3.0)]).half_life("24h").limit(10);
/// assert_eq!(q, RankQuery::parse("profile=hot&signals=view:1,like:3&half_life=24h&limit=10").unwrap());
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RankQuery {
    pairs: Vec<(String, String)>,
}

impl RankQuery {
    /// The default ranking (`trending` over the schema's blend).
    pub fn new() -> RankQuery {
        RankQuery::default()
    }

    /// From decoded `(name, value)` pairs; a repeated name: the last one counts.
    pub fn from_pairs(pairs: Vec<(String, String)>) -> RankQuery {
        let mut q = RankQuery::new();
        for (k, v) in pairs {
            q = q.param(&k, v);
        }
        q
    }

    /// From a URL query string (`profile=hot&limit=10`, `%XX` escapes and `+` decoded, a
    /// leading `?` allowed); a parameter given twice is refused.
    pub fn parse(query: &str) -> Result<RankQuery> {
        let query = query.trim();
        let query = query.strip_prefix('?').unwrap_or(query);
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).map_err(|e| {
            Error::Query(QueryError::new(
                crate::query::QueryErrorKind::InvalidParameter,
                "query",
                format!("the query string {query:?} does not decode: {e}"),
            ))
        })?;
        if let Some(name) = crate::query::repeated(pairs.iter().map(|(k, _)| k.as_str())) {
            return Err(Error::Query(QueryError::repeated(name)));
        }
        Ok(RankQuery::from_pairs(pairs))
    }

    /// Sets any parameter (replacing an earlier value).
    #[must_use]
    pub fn param(mut self, name: &str, value: impl Into<String>) -> RankQuery {
        self.pairs.retain(|(k, _)| k != name);
        self.pairs.push((name.to_string(), value.into()));
        self
    }

    /// The decoded parameters.
    pub fn pairs(&self) -> &[(String, String)] {
        &self.pairs
    }

    /// The value of a parameter.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// `profile=`: a built-in (`trending`, `rising`, `hot`, `top`, `new`) or a declared one.
    #[must_use]
    pub fn profile(self, name: &str) -> RankQuery {
        self.param("profile", name)
    }

    /// `signal=`: rank by one signal type.
    #[must_use]
    pub fn signal(self, kind: &str) -> RankQuery {
        self.param("signal", kind)
    }

    /// `signals=`: a weighted blend of signal types.
    #[must_use]
    pub fn signals(self, weights: &[(&str, f64)]) -> RankQuery {
        let v: Vec<String> = weights.iter().map(|(k, w)| format!("{k}:{w}")).collect();
        self.param("signals", v.join(","))
    }

    /// `window=` (`1h`, `24h`, ...).
    #[must_use]
    pub fn window(self, window: &str) -> RankQuery {
        self.param("window", window)
    }

    /// `half_life=` (`1h`, `7d`, ...).
    #[must_use]
    pub fn half_life(self, half_life: &str) -> RankQuery {
        self.param("half_life", half_life)
    }

    /// `category=`.
    #[must_use]
    pub fn category(self, category: &str) -> RankQuery {
        self.param("category", category)
    }

    /// `creator=`.
    #[must_use]
    pub fn creator(self, creator: &str) -> RankQuery {
        self.param("creator", creator)
    }

    /// `tag=`.
    #[must_use]
    pub fn tag(self, tag: &str) -> RankQuery {
        self.param("tag", tag)
    }

    /// `exclude=`: items never listed.
    #[must_use]
    pub fn exclude(self, ids: &[&str]) -> RankQuery {
        self.param("exclude", ids.join(","))
    }

    /// `max_per_creator=`.
    #[must_use]
    pub fn max_per_creator(self, k: usize) -> RankQuery {
        self.param("max_per_creator", k.to_string())
    }

    /// `limit=` (default 20, at most 1000).
    #[must_use]
    pub fn limit(self, n: usize) -> RankQuery {
        self.param("limit", n.to_string())
    }

    /// `cursor=`: the `next_cursor` of the previous page.
    #[must_use]
    pub fn cursor(self, cursor: &str) -> RankQuery {
        self.param("cursor", cursor)
    }

    /// `explain=1`: per-item features and score terms.
    #[must_use]
    pub fn explain(self, on: bool) -> RankQuery {
        self.param("explain", if on { "1" } else { "0" })
    }

    /// `min_lsn=`: answer from a state that includes this LSN (waiting, bounded).
    #[must_use]
    pub fn min_lsn(self, lsn: u64) -> RankQuery {
        self.param("min_lsn", lsn.to_string())
    }
}

/// What a read with `min_lsn` waits for: the whole state, or all of it but the cohort counts
/// and declarations (which lag while the counts of a broad cohort just declared are built).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Reads {
    /// Every part, the cohort counts too.
    Everything,
    /// Items, their features and users; no cohort count.
    NoCohorts,
}

impl Reads {
    /// What a ranking reads: the cohort counts only when it is scoped to a cohort.
    pub fn of(params: &crate::query::RankParams) -> Reads {
        Reads::counting_cohort(params.cohort.is_some())
    }

    /// What a read that counts a cohort, or none, reads.
    pub fn counting_cohort(cohort: bool) -> Reads {
        if cohort { Reads::Everything } else { Reads::NoCohorts }
    }
}
