//! The facade's side of a cluster (SPEC §11): which process owns an item, the state at a
//! frontier a peer asks for, this process's share of a ranking, and a ranking scattered to
//! every process and merged.

use std::sync::Arc;
use std::time::Duration;

use tidal_sinks::View;

use super::error::{Error, Result};
use super::{CLUSTER_ATTEMPTS, Tidal};
use crate::cluster::{Answer, Peers};
use crate::query::{self, RankParams, Ranking};

impl Tidal {
    /// `Some(p)` when `process` names another process of the cluster.
    pub(super) fn foreign(&self, process: Option<usize>) -> Result<Option<usize>> {
        let Some(p) = process else { return Ok(None) };
        let cluster = &self.config.cluster;
        if p >= cluster.len() {
            return Err(Error::Query(crate::query::QueryError::new(
                crate::query::QueryErrorKind::InvalidParameter,
                "min_lsn",
                format!("min_lsn: process {p} is not in the cluster of {}", cluster.len()),
            )));
        }
        Ok((p != cluster.process_id).then_some(p))
    }

    /// In a cluster, the process whose worker owns item `id` (answers its `GET`).
    pub fn owner_process(&self, id: &str) -> Option<usize> {
        let peers = self.peers.as_ref()?;
        let workers = self.config.engine.workers.max(1);
        Some(tidal_core::flow::owner(id, workers * peers.len()) / workers)
    }

    /// The other processes of the cluster, if this process is part of one.
    pub fn peers(&self) -> Option<&Arc<Peers>> {
        self.peers.as_ref()
    }

    /// The state at exactly `frontier`, as a peer asks for it (waits up to a second for the
    /// local shards to reach it; `None` when they no longer hold it).
    pub fn view_at(&self, frontier: tidal_core::Time) -> Option<View> {
        self.shards.view_at(frontier, Duration::from_secs(1))
    }

    /// This process's share of a ranking at `view`: its first `need` items (what a peer
    /// asks for at `GET /v1/internal/share`).
    pub fn share_on(&self, view: &View, params: &RankParams, need: usize) -> Result<query::cluster::Share> {
        Ok(query::cluster::candidates(view, &self.config, params, need)?)
    }

    /// Scatters the ranking to every process at the frontier of `view` and merges the shares.
    pub(super) fn rank_cluster(
        &self,
        peers: &Peers,
        mut view: View,
        params: &RankParams,
        pairs: &[(String, String)],
    ) -> Result<Ranking> {
        if params.user.is_some() {
            return Err(Error::Unsupported {
                what: "per-user rankings (user=) are not available in a multi-process cluster in this version: \
                       the user's state lives on its owner process only",
            });
        }
        if params.q.is_some() {
            return Err(Error::Unsupported {
                what: "text search (q=) is not available in a multi-process cluster in this version: \
                       each process indexes the text of its own items only",
            });
        }
        // Process `p`'s first `need` items at the frontier of `view` (`None`: it no longer
        // holds that frontier).
        let share = |view: &View, p: usize, need: usize| -> Result<Option<query::cluster::Share>> {
            if p == peers.process() {
                return Ok(Some(self.share_on(view, params, need)?));
            }
            Ok(match peers.share(p, view.frontier, need, pairs)? {
                Answer::Share(s) => Some(s),
                Answer::Gone => None,
            })
        };
        'attempt: for _ in 0..CLUSTER_ATTEMPTS {
            let mut needs = vec![params.offset + params.limit + 1; peers.len()];
            let mut shares = Vec::with_capacity(peers.len());
            for (p, need) in needs.iter().enumerate() {
                match share(&view, p, *need)? {
                    Some(s) => shares.push(s),
                    None => {
                        view = self.view();
                        continue 'attempt;
                    }
                }
            }
            let as_of = query::AsOf {
                clock: view.clock_ms(),
                lsn: view.lsn(),
            };
            loop {
                match query::cluster::merge(&shares, params, as_of) {
                    Ok(mut r) => {
                        r.estimated = params
                            .cohort
                            .as_ref()
                            .and_then(|pairs| query::personal::select(&view, pairs).ok())
                            .is_some_and(|c| c.estimated)
                            .then_some(true);
                        return Ok(r);
                    }
                    Err(p) => {
                        // Share `p` was cut and used up: fetch it longer.
                        needs[p] = needs[p].saturating_mul(4);
                        match share(&view, p, needs[p])? {
                            Some(s) => shares[p] = s,
                            None => {
                                view = self.view();
                                continue 'attempt;
                            }
                        }
                    }
                }
            }
        }
        Err(Error::Peer {
            process: peers.process(),
            message: "the processes found no common serving state".into(),
        })
    }
}
