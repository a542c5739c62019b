//! The other processes of a cluster, reached over their HTTP listeners (SPEC §11). The
//! dataflow itself spans the cluster through timely's network; what crosses here is what a
//! query needs from other processes' serving shards, the owner of an item, and the event
//! clock, which `POST /v1/clock` on any process moves on every one.
//!
//! A ranking is scattered as `POST /v1/internal/share` (a [`ShareRequest`]: frontier `F`, `need`
//! `N`, the query): each process answers its own shards' first `N` items as of frontier `F` —
//! a mark every shard of the cluster cuts — and the asking process merges them
//! ([`crate::query::cluster::merge`]). A ranking for a user first asks the user's owner for
//! its state at `F` (`/v1/internal/user`), a text query every process for its statistics of
//! the query's terms (`/v1/internal/text_stats`), and `for_you` the owners of the items the
//! user pulled for their embeddings (`/v1/internal/embeddings`) before every process gathers
//! its candidates (`/v1/internal/for_you`).

use std::collections::HashMap;
use std::time::Duration;

use tidal_core::config::ClusterConfig;
use tidal_core::time::Time;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::query::cluster::{Share, ShareRequest, UserState};
use crate::query::foryou::Candidate as ForYouCandidate;
use crate::tidal::{Error, Result};
use tidal_sinks::TextStats;

/// Marks a request as coming from a peer (it is not forwarded again).
pub const PEER_HEADER: &str = "x-tidal-peer";
/// How long a request to a peer may take.
const PEER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long telling a peer of a commit may take (every acknowledgement of an event-clock
/// cluster waits for it).
const FLOOR_TIMEOUT: Duration = Duration::from_secs(1);

/// A body another process answered with 200, JSON checked but kept as its text, so that a
/// read it owns is answered here byte for byte as there.
#[derive(Clone, Debug)]
pub struct OwnerJson(pub String);

/// The HTTP side of the other processes.
#[derive(Debug)]
pub struct Peers {
    process: usize,
    http: Vec<String>,
    agent: ureq::Agent,
    /// The same with [`FLOOR_TIMEOUT`].
    quick: ureq::Agent,
    token: Option<String>,
}

/// What a peer answered.
#[derive(Debug)]
pub enum Answer<T> {
    /// Its answer at the frontier asked for.
    At(T),
    /// It no longer holds the frontier (it kept newer versions only): ask again at a newer one.
    Gone,
}

/// Embeddings by item key, each as its `f32` bits (exact through JSON).
pub type Embeddings = Vec<(u32, Vec<u32>)>;

/// A batch another process of an event-clock cluster committed (`POST /v1/internal/floor`).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct FloorRequest {
    /// Its logical time.
    pub time: Time,
    /// The process that committed it.
    #[serde(default)]
    pub process: Option<usize>,
}

/// Creator ids by their hashes at a frontier, asked of every process (each names those its
/// items have).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct CreatorsRequest {
    /// The frontier: the asker's state names creators of items put before it.
    pub frontier: Time,
    /// The hashes.
    pub hashes: Vec<u64>,
}

/// A user's state at a frontier, asked of its owner.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct UserRequest {
    /// The frontier.
    pub frontier: Time,
    /// The user id.
    pub id: String,
}

/// Embeddings of item keys at a frontier, asked of every process (each answers its own).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct EmbeddingsRequest {
    /// The frontier.
    pub frontier: Time,
    /// Item keys.
    pub keys: Vec<u32>,
}

/// A process's text statistics for a query.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct TextStatsRequest {
    /// The query text.
    pub q: String,
    /// Commit what is pending first (a read with `min_lsn`).
    pub now: bool,
}

impl Peers {
    /// The peers of a cluster configuration (`None` for a single process).
    pub fn new(cluster: &ClusterConfig, token: Option<String>) -> Option<Peers> {
        if cluster.is_single() {
            return None;
        }
        let http = cluster
            .processes
            .iter()
            .map(|p| {
                if p.http.starts_with("http://") || p.http.starts_with("https://") {
                    p.http.trim_end_matches('/').to_string()
                } else {
                    format!("http://{}", p.http)
                }
            })
            .collect();
        Some(Peers {
            process: cluster.process_id,
            http,
            agent: ureq::AgentBuilder::new().timeout(PEER_TIMEOUT).build(),
            quick: ureq::AgentBuilder::new().timeout(FLOOR_TIMEOUT).build(),
            token,
        })
    }

    /// This process's index.
    pub fn process(&self) -> usize {
        self.process
    }

    /// Processes in the cluster.
    pub fn len(&self) -> usize {
        self.http.len()
    }

    /// Whether the cluster lists no process (never, for a built cluster).
    pub fn is_empty(&self) -> bool {
        self.http.is_empty()
    }

    /// The other processes' indexes.
    pub fn others(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.http.len()).filter(move |p| *p != self.process)
    }

    fn unavailable(&self, process: usize, message: impl std::fmt::Display) -> Error {
        Error::Peer {
            process,
            message: message.to_string(),
        }
    }

    fn get(&self, process: usize, path_and_query: &str) -> ureq::Request {
        let url = format!("{}{}", self.http[process], path_and_query);
        self.agent.get(&url).set(PEER_HEADER, "1")
    }

    /// `POST path` with `body` to process `process`, as a peer: its JSON answer, or
    /// [`Answer::Gone`] when it no longer holds the frontier asked for (409).
    fn post<B: Serialize, T: DeserializeOwned>(&self, process: usize, path: &str, body: &B) -> Result<Answer<T>> {
        self.post_with(&self.agent, process, path, body)
    }

    /// [`post`](Self::post) with `agent`.
    fn post_with<B: Serialize, T: DeserializeOwned>(
        &self,
        agent: &ureq::Agent,
        process: usize,
        path: &str,
        body: &B,
    ) -> Result<Answer<T>> {
        let url = format!("{}{}", self.http[process], path);
        let mut req = agent
            .post(&url)
            .set(PEER_HEADER, "1")
            .set("Content-Type", "application/json");
        if let Some(t) = &self.token {
            req = req.set("Authorization", &format!("Bearer {t}"));
        }
        let body = serde_json::to_string(body).map_err(|e| self.unavailable(process, e))?;
        // Every internal request reads, or raises a floor to a maximum: sent again once when
        // the connection failed (a kept-alive one the other process closed as it was reused).
        let sent = match req.clone().send_string(&body) {
            Err(ureq::Error::Transport(e)) if closed_under(&e) => {
                tracing::debug!(process, error = %e, "a request to another process is sent again");
                req.send_string(&body)
            }
            other => other,
        };
        match sent {
            Ok(resp) => {
                let text = resp.into_string().map_err(|e| self.unavailable(process, e))?;
                Ok(Answer::At(
                    serde_json::from_str(&text).map_err(|e| self.unavailable(process, e))?,
                ))
            }
            Err(ureq::Error::Status(409, _)) => Ok(Answer::Gone),
            Err(ureq::Error::Status(code, resp)) => {
                let body = resp.into_string().unwrap_or_default();
                Err(self.unavailable(process, format!("answered {code}: {body}")))
            }
            Err(e) => Err(self.unavailable(process, e)),
        }
    }

    /// Process `process`'s share of a ranking.
    pub fn share(&self, process: usize, req: &ShareRequest) -> Result<Answer<Share>> {
        self.post(process, "/v1/internal/share", req)
    }

    /// Process `process`'s `for_you` candidates.
    pub fn for_you(&self, process: usize, req: &ShareRequest) -> Result<Answer<Vec<ForYouCandidate>>> {
        self.post(process, "/v1/internal/for_you", req)
    }

    /// User `id`'s state at `frontier` from its owner process `process` (`None`: it has none).
    pub fn user_state(&self, process: usize, frontier: Time, id: &str) -> Result<Answer<Option<UserState>>> {
        let req = UserRequest {
            frontier,
            id: id.to_string(),
        };
        self.post(process, "/v1/internal/user", &req)
    }

    /// The embeddings of those of `keys` process `process` owns, at `frontier`.
    pub fn embeddings(&self, process: usize, frontier: Time, keys: &[u32]) -> Result<Answer<Embeddings>> {
        let req = EmbeddingsRequest {
            frontier,
            keys: keys.to_vec(),
        };
        self.post(process, "/v1/internal/embeddings", &req)
    }

    /// Process `process`'s text statistics of `q`'s terms.
    pub fn text_stats(&self, process: usize, q: &str, now: bool) -> Result<TextStats> {
        let req = TextStatsRequest { q: q.to_string(), now };
        match self.post(process, "/v1/internal/text_stats", &req)? {
            Answer::At(s) => Ok(s),
            Answer::Gone => Err(self.unavailable(process, "no text statistics")),
        }
    }

    /// An item's view from the process that owns it (`None`: unknown there), the owner's
    /// JSON as it answered it (its fields in its order).
    pub fn item(&self, process: usize, id: &str, query: &[(String, String)]) -> Result<Option<OwnerJson>> {
        self.entity(process, &format!("/v1/items/{}", urlencode(id)), query)
    }

    /// `GET /v1/users/{id}` on process `process` (its owner); `None` on 404.
    pub fn user(&self, process: usize, id: &str, query: &[(String, String)]) -> Result<Option<OwnerJson>> {
        self.entity(process, &format!("/v1/users/{}", urlencode(id)), query)
    }

    /// `GET path?query` on process `process`; `None` on 404. A bare `min_lsn` is an LSN of
    /// this process's log, so it goes as `P:LSN`.
    fn entity(&self, process: usize, path: &str, query: &[(String, String)]) -> Result<Option<OwnerJson>> {
        let mut path = path.to_string();
        for (i, (k, v)) in query.iter().enumerate() {
            path.push(if i == 0 { '?' } else { '&' });
            let v = if k == "min_lsn" && !v.contains(':') {
                format!("{}:{v}", self.process)
            } else {
                v.clone()
            };
            path.push_str(&format!("{}={}", urlencode(k), urlencode(&v)));
        }
        match self.get(process, &path).call() {
            Ok(resp) => {
                let text = resp.into_string().map_err(|e| self.unavailable(process, e))?;
                // Checked, not rebuilt: a body that is not JSON is the peer's failure.
                serde_json::from_str::<serde::de::IgnoredAny>(&text).map_err(|e| self.unavailable(process, e))?;
                Ok(Some(OwnerJson(text)))
            }
            Err(ureq::Error::Status(404, _)) => Ok(None),
            Err(ureq::Error::Status(status, resp)) => {
                let body = resp.into_string().unwrap_or_default();
                // The request's own error (a bad parameter, a token not written or not yet
                // visible) is answered as the owner answered it; anything else is the peer's.
                let error: Option<(String, String)> =
                    serde_json::from_str::<serde_json::Value>(&body).ok().and_then(|v| {
                        Some((
                            v["error"]["code"].as_str()?.into(),
                            v["error"]["message"].as_str()?.into(),
                        ))
                    });
                match error {
                    // 400 and 503 are about the request; an owner's 401 or 405 is about the
                    // cluster (a token or a version it does not share), answered as the peer's.
                    Some((code, message)) if status == 400 || status == 503 => Err(Error::Owner {
                        status,
                        code: crate::tidal::known_code(&code),
                        message,
                    }),
                    _ => Err(self.unavailable(process, format!("answered {status}: {body}"))),
                }
            }
            Err(e) => Err(self.unavailable(process, e)),
        }
    }

    /// Tells every other process that this one committed a batch at logical time `time`
    /// (event clock): their next batches are ordered after it, and their part of the
    /// frontier passes it.
    pub fn push_floor(&self, time: Time) -> Result<()> {
        // Every process is told, even past one that cannot be; the first failure is answered.
        let mut failed = None;
        for p in self.others() {
            let told: Result<Answer<serde_json::Value>> = self.post_with(
                &self.quick,
                p,
                "/v1/internal/floor",
                &FloorRequest {
                    time,
                    process: Some(self.process),
                },
            );
            if let Err(e) = told {
                failed.get_or_insert(e);
            }
        }
        failed.map_or(Ok(()), Err)
    }

    /// The names process `process` knows at `frontier` of the creators hashed `hashes`.
    pub fn creator_names(
        &self,
        process: usize,
        frontier: Time,
        hashes: &[u64],
    ) -> Result<Answer<HashMap<u64, String>>> {
        let req = CreatorsRequest {
            frontier,
            hashes: hashes.to_vec(),
        };
        self.post(process, "/v1/internal/creators", &req)
    }

    /// Moves the event clock of every other process to `ms`.
    pub fn advance_clock(&self, ms: u64) -> Result<()> {
        for p in self.others() {
            let url = format!("{}/v1/clock", self.http[p]);
            let mut req = self.agent.post(&url).set(PEER_HEADER, "1");
            if let Some(t) = &self.token {
                req = req.set("Authorization", &format!("Bearer {t}"));
            }
            req.set("Content-Type", "application/json")
                .send_string(&format!("{{\"advance_to\": {ms}}}"))
                .map_err(|e| self.unavailable(p, e))?;
        }
        Ok(())
    }
}

/// Percent-encodes `s` for a path segment or a query value.
fn urlencode(s: &str) -> String {
    serde_urlencoded::to_string([("", s)])
        .map(|e| e.trim_start_matches('=').replace('+', "%20"))
        .unwrap_or_default()
}

/// Whether a request failed because the connection was closed under it (not a timeout, not a
/// refused connection).
fn closed_under(e: &ureq::Transport) -> bool {
    use std::error::Error as _;
    use std::io::ErrorKind;
    e.source()
        .and_then(|s| s.downcast_ref::<std::io::Error>())
        .is_some_and(|io| {
            matches!(
                io.kind(),
                ErrorKind::ConnectionReset
                    | ErrorKind::BrokenPipe
                    | ErrorKind::UnexpectedEof
                    | ErrorKind::ConnectionAborted
            )
        })
}
