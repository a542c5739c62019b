//! The facade's side of a cluster (SPEC §11): which process owns an item, the state at a
//! frontier a peer asks for, this process's share of a ranking, and a ranking scattered to
//! every process and merged.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tidal_core::user::UserView;
use tidal_sinks::{AtFrontier, TextStats, View};

use super::error::{Error, Result};
use super::{CLUSTER_ATTEMPTS, Tidal};

/// How long a peer's request for a state at one frontier waits for the local shards to reach
/// it.
const PEER_FRONTIER_WAIT: Duration = Duration::from_secs(1);
use crate::cluster::{Answer, Peers};
use crate::query::cluster::{Share, ShareRequest, UserState};
use crate::query::foryou::Candidate as ForYouCandidate;
use crate::query::{self, Base, RankParams, Ranking};

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

    /// The state at exactly `frontier`, its cohort part at `cohorts` or later, as a peer asks
    /// for it (waits up to a second for the local shards to reach it; `None` when they no
    /// longer hold it).
    pub fn view_at(&self, frontier: tidal_core::Time, cohorts: tidal_core::Time) -> Option<View> {
        self.shards.view_at(frontier, cohorts, PEER_FRONTIER_WAIT)
    }

    /// [`view_at`](Self::view_at) without blocking a thread.
    pub async fn view_at_async(&self, frontier: tidal_core::Time, cohorts: tidal_core::Time) -> Option<View> {
        let deadline = std::time::Instant::now() + PEER_FRONTIER_WAIT;
        loop {
            match self.shards.try_view_at(frontier, cohorts) {
                AtFrontier::Held(view) => return Some(view),
                AtFrontier::Gone => return None,
                AtFrontier::Ahead if std::time::Instant::now() >= deadline => return None,
                AtFrontier::Ahead => tokio::time::sleep(super::POLL).await,
            }
        }
    }

    /// Ranks as `params` asks on `view` (a state that holds its `min_lsn`, if any): in a
    /// cluster over every process's shares, with blocking requests to the others.
    pub fn rank_from(&self, view: View, params: &RankParams, pairs: &[(String, String)]) -> Result<Ranking> {
        match &self.peers {
            None => self.rank_on(&view, params),
            Some(peers) => self.rank_cluster(peers, view, params, pairs),
        }
    }

    /// This process's share of a ranking at `view` (what a peer asks for at
    /// `POST /v1/internal/share`): its first `need` items.
    pub fn share_on(&self, view: &View, params: &RankParams, req: &ShareRequest) -> Result<Share> {
        self.share_for(view, params, req, req.user.as_ref().map(|u| Arc::new(u.view())))
    }

    /// [`share_on`](Self::share_on) for the user whose state is `user`.
    fn share_for(
        &self,
        view: &View,
        params: &RankParams,
        req: &ShareRequest,
        user: Option<Arc<UserView>>,
    ) -> Result<Share> {
        Ok(query::cluster::candidates(
            view,
            &self.config,
            params,
            req.need,
            user,
            req.text.as_ref(),
        )?)
    }

    /// This process's `for_you` candidates at `view` (`POST /v1/internal/for_you`).
    pub fn for_you_on(&self, view: &View, params: &RankParams, req: &ShareRequest) -> Result<Vec<ForYouCandidate>> {
        self.for_you_for(view, params, req, req.user.as_ref().map(|u| Arc::new(u.view())))
    }

    /// [`for_you_on`](Self::for_you_on) for the user whose state is `user`.
    fn for_you_for(
        &self,
        view: &View,
        params: &RankParams,
        req: &ShareRequest,
        user: Option<Arc<UserView>>,
    ) -> Result<Vec<ForYouCandidate>> {
        Ok(query::cluster::gather(
            view,
            &self.config,
            params,
            user,
            req.vector.as_deref(),
            req.text.as_ref(),
        )?)
    }

    /// User `id`'s state at `view` if this process owns it (`POST /v1/internal/user`).
    pub fn user_state_on(&self, view: &View, id: &str) -> Option<UserState> {
        let shard = view.shard_of(id)?;
        shard.user(tidal_core::flow::id_hash(id)).map(|u| UserState::of(u))
    }

    /// The embeddings of those of `keys` this process's shards hold at `view`, as `f32` bits
    /// (`POST /v1/internal/embeddings`).
    pub fn embeddings_on(&self, view: &View, keys: &[u32]) -> crate::cluster::Embeddings {
        keys.iter()
            .filter_map(|&k| {
                let key = tidal_core::flow::ItemKey::from(k);
                let e = query::personal::shard_of_key(view, key)?.entry(key)?.embedding()?;
                Some((k, e.iter().map(|x| x.to_bits()).collect()))
            })
            .collect()
    }

    /// This process's text statistics of `q`'s terms (`POST /v1/internal/text_stats`);
    /// `now` commits what is pending first.
    pub fn text_stats(&self, q: &str, now: bool) -> TextStats {
        let view = self.view();
        match view.text.as_deref() {
            Some(text) => {
                text.refresh(now);
                text.stats(q)
            }
            None => TextStats::default(),
        }
    }

    /// Scatters the ranking to every process at the frontier of `view` and merges the answers.
    pub(super) fn rank_cluster(
        &self,
        peers: &Peers,
        view: View,
        params: &RankParams,
        pairs: &[(String, String)],
    ) -> Result<Ranking> {
        // Text statistics do not depend on the frontier: the indexes are not versioned.
        let text = match params.q.as_deref() {
            Some(q) => {
                let now = params.min_lsn.is_some();
                let mut stats = self.text_stats(q, now);
                for p in peers.others() {
                    stats.add(&peers.text_stats(p, q, now)?);
                }
                Some(stats)
            }
            None => None,
        };
        self.at_common_state(peers, view, |view| {
            self.rank_cluster_at(peers, view, params, pairs, text.as_ref())
        })
    }

    /// `f` on `view`, or on a newer state while `f` finds that a process no longer holds the
    /// one it was given (`None`); a newer state still holds whatever a read waited for.
    pub(super) fn at_common_state<T>(
        &self,
        peers: &Peers,
        mut view: View,
        mut f: impl FnMut(&View) -> Result<Option<T>>,
    ) -> Result<T> {
        for _ in 0..CLUSTER_ATTEMPTS {
            if let Some(found) = f(&view)? {
                return Ok(found);
            }
            view = self.view();
        }
        Err(Error::Peer {
            process: peers.process(),
            message: "the processes found no common serving state".into(),
        })
    }

    /// [`rank_cluster`](Self::rank_cluster) at the frontier of `view`; `None` when a process
    /// no longer holds it.
    fn rank_cluster_at(
        &self,
        peers: &Peers,
        view: &View,
        params: &RankParams,
        pairs: &[(String, String)],
        text: Option<&TextStats>,
    ) -> Result<Option<Ranking>> {
        let as_of = query::AsOf {
            clock: view.clock_ms(),
            lsn: view.lsn(),
        };
        let estimated = params
            .cohort
            .as_ref()
            .and_then(|pairs| query::personal::select(view, pairs).ok())
            .is_some_and(|c| c.estimated)
            .then_some(true);
        // The user's state, from its owner: as this process reads it, and as the others get it.
        let (user, wire): (Option<Arc<UserView>>, Option<UserState>) = match params.user.as_deref() {
            None => (None, None),
            Some(id) => match self.owner_process(id) {
                Some(owner) if owner != peers.process() => match peers.user_state(owner, view.frontier, id)? {
                    Answer::At(state) => (state.as_ref().map(|s| Arc::new(s.view())), state),
                    Answer::Gone => return Ok(None),
                },
                _ => {
                    let local = view
                        .shard_of(id)
                        .and_then(|s| s.user(tidal_core::flow::id_hash(id)))
                        .cloned();
                    let wire = local.as_deref().map(UserState::of);
                    (local, wire)
                }
            },
        };
        let mut req = ShareRequest {
            frontier: view.frontier,
            cohorts: view.cohort_frontier(),
            need: params.offset + params.limit + 1,
            pairs: pairs.iter().filter(|(k, _)| k != "min_lsn").cloned().collect(),
            user: wire,
            text: text.cloned(),
            vector: None,
        };
        if params.base == Base::ForYou {
            let Some(vector) = self.preference_cluster(peers, view, user.as_deref())? else {
                return Ok(None);
            };
            req.vector = vector;
            let mut found = self.for_you_for(view, params, &req, user)?;
            for p in peers.others() {
                match peers.for_you(p, &req)? {
                    Answer::At(c) => found.extend(c),
                    Answer::Gone => return Ok(None),
                }
            }
            let has_vector = req.vector.is_some();
            return Ok(Some(query::cluster::select_for_you(
                found,
                params,
                &self.config,
                has_vector,
                as_of,
            )));
        }
        // Process `p`'s share.
        let share = |p: usize, req: &ShareRequest| -> Result<Option<Share>> {
            if p == peers.process() {
                return Ok(Some(self.share_for(view, params, req, user.clone())?));
            }
            Ok(match peers.share(p, req)? {
                Answer::At(s) => Some(s),
                Answer::Gone => None,
            })
        };
        let mut shares = Vec::with_capacity(peers.len());
        let mut needs = vec![req.need; peers.len()];
        for p in 0..peers.len() {
            match share(p, &req)? {
                Some(s) => shares.push(s),
                None => return Ok(None),
            }
        }
        let mut r = if params.q.is_some() && params.profile_given {
            query::cluster::select_search(shares, params, as_of)
        } else {
            loop {
                match query::cluster::merge(&shares, params, as_of) {
                    Ok(mut r) => {
                        if params.q.is_some() {
                            query::cluster::fix_max_bm25(&mut r, &shares);
                        }
                        break r;
                    }
                    Err(p) => {
                        // Share `p` was cut and used up: fetch it longer.
                        needs[p] = needs[p].saturating_mul(4);
                        req.need = needs[p];
                        match share(p, &req)? {
                            Some(s) => shares[p] = s,
                            None => return Ok(None),
                        }
                    }
                }
            }
        };
        r.estimated = estimated;
        r.cohorts_as_of = query::cohorts_as_of(view, params);
        Ok(Some(r))
    }

    /// The preference vector of `user` at `view`, its pulls joined with the embeddings of
    /// every process (`Some(None)`: no vector; `None`: a process no longer holds the
    /// frontier).
    pub(super) fn preference_cluster(
        &self,
        peers: &Peers,
        view: &View,
        user: Option<&UserView>,
    ) -> Result<Option<Option<Vec<f64>>>> {
        let Some(user) = user else { return Ok(Some(None)) };
        let mut keys: Vec<u32> = user.pulls.iter().map(|p| p.item).collect();
        keys.sort_unstable();
        keys.dedup();
        let mut embeddings: HashMap<u32, Vec<f32>> = self
            .embeddings_on(view, &keys)
            .into_iter()
            .map(|(k, bits)| (k, bits.into_iter().map(f32::from_bits).collect()))
            .collect();
        let foreign: Vec<u32> = keys.into_iter().filter(|k| !embeddings.contains_key(k)).collect();
        if !foreign.is_empty() {
            for p in peers.others() {
                match peers.embeddings(p, view.frontier, &foreign)? {
                    Answer::At(found) => {
                        for (k, bits) in found {
                            embeddings.insert(k, bits.into_iter().map(f32::from_bits).collect());
                        }
                    }
                    Answer::Gone => return Ok(None),
                }
            }
        }
        Ok(Some(query::foryou::preference_with(
            view.clock_ms(),
            user,
            &self.config,
            |k| embeddings.get(&k).map(Vec::as_slice),
        )))
    }
}
