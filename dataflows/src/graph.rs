//! The dataflow graph, built from the schema on every worker: the WAL source (read by one
//! worker per process) broadcasts its control stream; each worker's entities stage takes its
//! own items from it and feeds the windows and decay materializers; their outputs, the item
//! states and the marks are what the worker's sink publishes as its shard.

use std::sync::Arc;

use timely::dataflow::operators::vec::Broadcast;
use timely::dataflow::{Scope, StreamVec};

use differential_dataflow::VecCollection;

use tidal_core::config::Config;
use tidal_core::features::Lanes;
use tidal_core::flow::{Control, ItemKey, ItemState, KindIdx, Persist};
use tidal_core::stats::StateStats;
use tidal_core::time::Time;
use tidal_core::user::SideUpdate;
use tidal_operators::cohorts::CohortKey;
use tidal_operators::decay::DecayKey;
use tidal_sinks::SinkInputs;
use tidal_sources::feed::Feed;
use tidal_sources::source::{SourceOptions, wal_source};

/// What one worker's graph produces.
pub struct Outputs<'s> {
    /// The broadcast control stream (runs of batches and marks).
    pub control: StreamVec<'s, Time, Control>,
    /// Current window lanes per (item, signal type) of this worker's items.
    pub windows: VecCollection<'s, Time, ((ItemKey, KindIdx), Lanes), isize>,
    /// Current anchored decay sum per (item, signal type, half-life index, epoch start).
    pub decay: VecCollection<'s, Time, (DecayKey, i128), isize>,
    /// Current state per item key of this worker's items.
    pub items: VecCollection<'s, Time, (ItemKey, ItemState), isize>,
    /// Current cohort window lanes per (item, signal type, cohort) of this worker's items.
    pub cohorts: VecCollection<'s, Time, (CohortKey, Lanes), isize>,
    /// The views of the users this worker owns, and the declared cohorts.
    pub side: StreamVec<'s, Time, SideUpdate>,
    /// This worker's state counters.
    pub stats: Arc<StateStats>,
    /// The LSN of this process's WAL the restored checkpoint covers, if the state starts
    /// from one: the item states before it come from the checkpoint, those after from the log.
    pub restored_lsn: Option<u64>,
}

impl<'s> Outputs<'s> {
    /// The inputs of this worker's serving sink.
    pub fn sink_inputs(&self) -> SinkInputs<'s> {
        SinkInputs {
            windows: self.windows.clone(),
            decay: self.decay.clone(),
            items: self.items.clone(),
            cohorts: self.cohorts.clone(),
            side: self.side.clone(),
        }
    }
}

/// Builds the source and the materializers in `scope`; `source` says whether this worker
/// reads the feed (one per process) and when it asks for checkpoints, `persist` where the
/// stateful operators write them and what they restore from.
pub fn build<'s>(
    scope: Scope<'s, Time>,
    feed: Arc<Feed>,
    config: Arc<Config>,
    source: SourceOptions,
    stats: Arc<StateStats>,
    persist: Persist,
) -> Outputs<'s> {
    let cluster = source.cluster_finished.clone();
    let restored_lsn = persist.restore.as_ref().map(|r| r.position.lsn);
    let control = wal_source(scope, feed, source, stats.clone()).broadcast();
    let entities = tidal_operators::entities(control.clone(), config.clone(), stats.clone(), persist.clone(), cluster);
    let windows = tidal_operators::windows(
        entities.signals.clone(),
        control.clone(),
        &config,
        stats.clone(),
        persist.clone(),
    );
    let decay = tidal_operators::decay(
        entities.signals.clone(),
        control.clone(),
        &config,
        stats.clone(),
        persist.clone(),
    );
    let users = tidal_operators::users(
        control.clone(),
        entities.user_signals.clone(),
        config.clone(),
        stats.clone(),
        persist.clone(),
    );
    let cohorts = tidal_operators::cohort_rollups(
        entities.user_signals,
        users.memberships,
        entities.signals,
        control.clone(),
        &config,
        stats.clone(),
        persist,
    );
    Outputs {
        control,
        windows,
        decay,
        items: entities.items,
        cohorts,
        side: users.side,
        stats,
        restored_lsn,
    }
}
