//! The other processes of a cluster, reached over their HTTP listeners (SPEC §11). The
//! dataflow itself spans the cluster through timely's network; what crosses here is what a
//! query needs from other processes' serving shards, the owner of an item, and the event
//! clock, which `POST /v1/clock` on any process moves on every one.
//!
//! A ranking is scattered as `GET /v1/internal/share?frontier=F&need=N&...`: each process
//! answers its own shards' first `N` items as of frontier `F` — a mark every shard of the
//! cluster cuts — and the asking process merges them ([`crate::query::cluster::merge`]).

use std::time::Duration;

use tidal_core::config::ClusterConfig;
use tidal_core::time::Time;

use crate::query::cluster::Share;
use crate::tidal::{Error, Result};

/// Marks a request as coming from a peer (it is not forwarded again).
pub const PEER_HEADER: &str = "x-tidal-peer";
/// How long a request to a peer may take.
const PEER_TIMEOUT: Duration = Duration::from_secs(10);

/// The HTTP side of the other processes.
#[derive(Debug)]
pub struct Peers {
    process: usize,
    http: Vec<String>,
    agent: ureq::Agent,
    token: Option<String>,
}

/// What a peer answered for a share.
#[derive(Debug)]
pub enum Answer {
    /// Its share at the frontier asked for.
    Share(Share),
    /// It no longer holds the frontier (it kept newer versions only): ask again at a newer one.
    Gone,
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

    /// Process `process`'s share of the ranking `pairs`: its first `need` items as of
    /// `frontier`.
    pub fn share(&self, process: usize, frontier: Time, need: usize, pairs: &[(String, String)]) -> Result<Answer> {
        let mut query: Vec<(&str, String)> = vec![("frontier", frontier.to_string()), ("need", need.to_string())];
        query.extend(
            pairs
                .iter()
                .filter(|(k, _)| k != "min_lsn" && k != "frontier" && k != "need")
                .map(|(k, v)| (k.as_str(), v.clone())),
        );
        let qs = serde_urlencoded::to_string(&query).map_err(|e| self.unavailable(process, e))?;
        match self.get(process, &format!("/v1/internal/share?{qs}")).call() {
            Ok(resp) => {
                let text = resp.into_string().map_err(|e| self.unavailable(process, e))?;
                let share: Share = serde_json::from_str(&text).map_err(|e| self.unavailable(process, e))?;
                Ok(Answer::Share(share))
            }
            Err(ureq::Error::Status(409, _)) => Ok(Answer::Gone),
            Err(ureq::Error::Status(code, resp)) => {
                let body = resp.into_string().unwrap_or_default();
                Err(self.unavailable(process, format!("answered {code}: {body}")))
            }
            Err(e) => Err(self.unavailable(process, e)),
        }
    }

    /// An item's view from the process that owns it (`None`: unknown there), as JSON.
    pub fn item(&self, process: usize, id: &str, query: &[(String, String)]) -> Result<Option<serde_json::Value>> {
        self.entity(process, &format!("/v1/items/{}", urlencode(id)), query)
    }

    /// `GET /v1/users/{id}` on process `process` (its owner); `None` on 404.
    pub fn user(&self, process: usize, id: &str, query: &[(String, String)]) -> Result<Option<serde_json::Value>> {
        self.entity(process, &format!("/v1/users/{}", urlencode(id)), query)
    }

    /// `GET path?query` on process `process`; `None` on 404.
    fn entity(&self, process: usize, path: &str, query: &[(String, String)]) -> Result<Option<serde_json::Value>> {
        let mut path = path.to_string();
        for (i, (k, v)) in query.iter().enumerate() {
            path.push(if i == 0 { '?' } else { '&' });
            path.push_str(&format!("{}={}", urlencode(k), urlencode(v)));
        }
        match self.get(process, &path).call() {
            Ok(resp) => {
                let text = resp.into_string().map_err(|e| self.unavailable(process, e))?;
                Ok(Some(
                    serde_json::from_str(&text).map_err(|e| self.unavailable(process, e))?,
                ))
            }
            Err(ureq::Error::Status(404, _)) => Ok(None),
            Err(ureq::Error::Status(code, resp)) => {
                let body = resp.into_string().unwrap_or_default();
                Err(self.unavailable(process, format!("answered {code}: {body}")))
            }
            Err(e) => Err(self.unavailable(process, e)),
        }
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
