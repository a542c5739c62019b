//! Reads: the published state, waiting for an LSN to be visible, items and rankings.

use std::time::{Duration, Instant};

use tidal_sinks::View;

use super::{Error, POLL, RankQuery, Reads, Result, Tidal};
use crate::query::{self, ItemView, RankParams, Ranking};

/// The last LSN of process `of`'s WAL (`None`: this process's) that the parts `reads` names
/// of `view` hold.
pub(super) fn held_lsn(view: &View, of: Option<usize>, reads: Reads) -> u64 {
    let lsn = of.map_or_else(|| view.lsn(), |p| view.lsn_of(p));
    match reads {
        Reads::NoCohorts => lsn,
        Reads::Everything => lsn.min(of.map_or_else(|| view.cohort_lsn(), |p| view.cohort_lsn_of(p))),
    }
}

impl Tidal {
    /// The latest published state: every shard's version at one common frontier.
    pub fn view(&self) -> View {
        self.shards.view()
    }

    /// Waits until the published state includes `lsn`, at most
    /// `server.read_your_writes_timeout_ms`.
    pub fn wait_visible(&self, lsn: u64) -> Result<View> {
        self.wait_visible_from(None, lsn)
    }

    /// [`wait_visible`](Self::wait_visible) without blocking a thread.
    pub async fn wait_visible_async(&self, lsn: u64) -> Result<View> {
        self.wait_visible_from_async(None, lsn).await
    }

    /// Waits until the published state includes LSN `lsn` of process `process`'s WAL (in a
    /// cluster; `None` or this process: [`wait_visible`](Self::wait_visible)) — all of it,
    /// the cohort counts too.
    pub fn wait_visible_from(&self, process: Option<usize>, lsn: u64) -> Result<View> {
        self.wait_visible_for(process, lsn, Reads::Everything)
    }

    /// [`wait_visible_from`](Self::wait_visible_from) for a read of the parts `reads` names:
    /// a read that counts no cohort does not wait for the cohort counts, which lag while a
    /// broad cohort just declared is being counted.
    pub fn wait_visible_for(&self, process: Option<usize>, lsn: u64, reads: Reads) -> Result<View> {
        let (of, deadline) = self.visible_target(process, lsn)?;
        loop {
            if let Some(view) = self.visible(of, lsn, deadline, reads)? {
                return Ok(view);
            }
            std::thread::sleep(POLL);
        }
    }

    /// [`wait_visible_from`](Self::wait_visible_from) without blocking a thread.
    pub async fn wait_visible_from_async(&self, process: Option<usize>, lsn: u64) -> Result<View> {
        self.wait_visible_for_async(process, lsn, Reads::Everything).await
    }

    /// [`wait_visible_for`](Self::wait_visible_for) without blocking a thread.
    pub async fn wait_visible_for_async(&self, process: Option<usize>, lsn: u64, reads: Reads) -> Result<View> {
        let (of, deadline) = self.visible_target(process, lsn)?;
        loop {
            if let Some(view) = self.visible(of, lsn, deadline, reads)? {
                return Ok(view);
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Whose WAL `lsn` is in (`None`: this process's, checked to be written) and until when
    /// it is waited for.
    fn visible_target(&self, process: Option<usize>, lsn: u64) -> Result<(Option<usize>, Instant)> {
        let of = self.foreign(process)?;
        if of.is_none() {
            let last = self.wal.last_lsn();
            if lsn > last {
                return Err(Error::LsnNotWritten { lsn, last });
            }
        }
        Ok((of, Instant::now() + self.read_timeout()))
    }

    /// The latest state if it includes `lsn` (of process `of`'s WAL, or this one's); an
    /// error once `deadline` has passed.
    fn visible(&self, of: Option<usize>, lsn: u64, deadline: Instant, reads: Reads) -> Result<Option<View>> {
        let snap = self.view();
        let seen = held_lsn(&snap, of, reads);
        if seen >= lsn {
            return Ok(Some(snap));
        }
        self.check_visible_deadline(lsn, seen, deadline)?;
        Ok(None)
    }

    fn read_timeout(&self) -> Duration {
        Duration::from_millis(self.config.server.read_your_writes_timeout_ms)
    }

    fn check_visible_deadline(&self, lsn: u64, seen: u64, deadline: Instant) -> Result<()> {
        if Instant::now() < deadline {
            return Ok(());
        }
        if let Some(stopped) = self.dataflow_problem() {
            return Err(Error::DataflowStopped(stopped));
        }
        Err(Error::NotVisible {
            lsn,
            visible: seen,
            waited: Duration::from_millis(self.config.server.read_your_writes_timeout_ms),
        })
    }

    /// An item's metadata and every feature, as of now. In a cluster this process answers
    /// for the items it owns ([`owner_process`](Self::owner_process)); the HTTP API asks the
    /// owner for the others.
    pub fn item(&self, id: &str) -> Result<Option<ItemView>> {
        self.check_item_id(id)?;
        Ok(query::item_view(&self.view(), &self.config, id))
    }

    /// An item's metadata and every feature, from a state that includes `min_lsn`.
    pub fn item_after(&self, id: &str, min_lsn: u64) -> Result<Option<ItemView>> {
        self.check_item_id(id)?;
        let snap = self.wait_visible(min_lsn)?;
        Ok(query::item_view(&snap, &self.config, id))
    }

    /// The item's view on a given state.
    pub fn item_on(&self, snapshot: &View, id: &str) -> Result<Option<ItemView>> {
        self.check_item_id(id)?;
        Ok(query::item_view(snapshot, &self.config, id))
    }

    /// The item's view on a given state, with its counts in `cohort` (as
    /// [`parse_cohort`](crate::query::parse_cohort) gives it).
    pub fn item_in_cohort(
        &self,
        snapshot: &View,
        id: &str,
        cohort: Option<&[(String, String)]>,
    ) -> Result<Option<ItemView>> {
        self.check_item_id(id)?;
        Ok(query::item_view_in(snapshot, &self.config, id, cohort)?)
    }

    /// Checks a ranking request against the schema.
    pub fn parse_query(&self, q: &RankQuery) -> Result<RankParams> {
        Ok(RankParams::parse(q.pairs(), &self.config)?)
    }

    /// Ranks as `q` asks, waiting (bounded) for its `min_lsn` if it has one. In a cluster the
    /// ranking covers every process's shards.
    pub fn rank(&self, q: &RankQuery) -> Result<Ranking> {
        let params = self.parse_query(q)?;
        let snap = match params.min_lsn {
            Some(lsn) => self.wait_visible_for(params.min_lsn_process, lsn, Reads::of(&params))?,
            None => self.view(),
        };
        self.rank_from(snap, &params, q.pairs())
    }

    /// Ranks on a given state (which the caller got from [`view`](Self::view) or
    /// [`wait_visible`](Self::wait_visible)); `min_lsn` is not waited for. In a cluster the
    /// state is only this process's share: use [`rank`](Self::rank).
    pub fn rank_on(&self, snapshot: &View, params: &RankParams) -> Result<Ranking> {
        Ok(query::rank(snapshot, &self.config, params)?)
    }
}
