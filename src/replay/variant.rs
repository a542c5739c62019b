//! One configuration under replay: its own feed, dataflow engine and serving shards — the same
//! pieces `tidal serve` runs, with the WAL reader as the producer instead of the WAL writer.
//! Every variant receives the same committed batches; each evaluates queries on its own
//! published snapshots.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use tidal_core::config::Config;
use tidal_core::record::SharedBatch;
use tidal_core::time::{Time, time_at};
use tidal_serving::Pipeline;
use tidal_serving::query::{Base, RankParams, Ranking, rank};
use tidal_sinks::{Shards, View};
use tidal_sources::feed::Feed;

use super::ReplayError;

/// How often a waiting reader looks at the published frontier.
const POLL: Duration = Duration::from_micros(200);

/// A configuration to replay under, with its name.
#[derive(Clone, Debug)]
pub struct VariantSpec {
    /// The name reports use.
    pub name: String,
    /// The configuration.
    pub config: Config,
    /// Where it came from (a file path, or "WAL" for the log's own configuration).
    pub origin: String,
}

/// The engine thread's outcome, set once the engine has stopped.
type Outcome = Arc<Mutex<Option<Result<(), String>>>>;

/// A running variant.
pub(crate) struct Variant {
    pub name: String,
    pub config: Arc<Config>,
    /// The parsed queries, in `--query` order (a query this variant's schema cannot
    /// answer: why, for every row of it).
    pub queries: Vec<Result<RankParams, String>>,
    feed: Arc<Feed>,
    /// Taken by `finish`, which frees it off the caller's thread.
    shards: Option<Arc<Shards>>,
    stopped: Arc<AtomicBool>,
    outcome: Outcome,
    watcher: Option<JoinHandle<()>>,
    abort: tidal_dataflows::AbortHandle,
}

impl Variant {
    /// Starts the dataflow for `spec` with `workers` threads; `queries` are its parsed queries.
    pub fn start(
        spec: &VariantSpec,
        queries: Vec<Result<RankParams, String>>,
        workers: usize,
    ) -> Result<Variant, ReplayError> {
        let mut config = spec.config.clone();
        config.engine.workers = workers;
        let config = Arc::new(config);
        // The same pipeline `tidal serve` runs behind its WAL.
        let pipeline = Pipeline::start(config.clone(), None).map_err(|e| ReplayError::Engine {
            variant: spec.name.clone(),
            message: e.to_string(),
        })?;
        let feed = pipeline.feed().clone();
        // The log is read as fast as possible; only the evaluation times are observed (each
        // one seals the feed, which flushes).
        feed.catch_up(true);
        let shards = pipeline.shards().clone();
        // The nearest-item index is only searched by `for_you` without an exact scan: when
        // no query of this variant asks it, it is not built (a core's worth of inserts
        // beside the dataflow).
        let searched = !config.personalization.exact_search && queries.iter().flatten().any(|q| q.base == Base::ForYou);
        if !searched {
            shards.switch_off_anns();
        }
        let stopped = Arc::new(AtomicBool::new(false));
        let outcome: Outcome = Arc::new(Mutex::new(None));
        let abort = pipeline.abort_handle();
        // The watcher owns the engine: when it stops (normally only after `finish` closes the
        // feed) it records why and closes the feed, so a reader waiting on a full queue of a
        // failed dataflow wakes up.
        let watcher = {
            let (feed, stopped, outcome) = (feed.clone(), stopped.clone(), outcome.clone());
            std::thread::Builder::new()
                .name(format!("tidal-replay-{}", spec.name))
                .spawn(move || {
                    let result = pipeline.join().map_err(|e| e.to_string());
                    *outcome.lock().unwrap_or_else(|p| p.into_inner()) = Some(result);
                    stopped.store(true, Ordering::Release);
                    feed.close();
                })
                .map_err(|e| ReplayError::Engine {
                    variant: spec.name.clone(),
                    message: format!("cannot start a thread: {e}"),
                })?
        };
        Ok(Variant {
            name: spec.name.clone(),
            config,
            queries,
            feed,
            shards: Some(shards),
            stopped,
            outcome,
            watcher: Some(watcher),
            abort,
        })
    }

    /// Why the engine stopped early.
    fn failure(&self) -> ReplayError {
        let message = match &*self.outcome.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(Err(e)) => e.clone(),
            _ => "the dataflow stopped before the end of the replay".to_string(),
        };
        ReplayError::Engine {
            variant: self.name.clone(),
            message,
        }
    }

    /// Hands a batch to the dataflow (waits while its queue is full).
    pub fn push(&self, batch: SharedBatch) -> Result<(), ReplayError> {
        if self.stopped.load(Ordering::Acquire) {
            return Err(self.failure());
        }
        self.feed.push(batch);
        Ok(())
    }

    /// Promises that no batch with a clock at or below `clock_ms` is still to come.
    pub fn seal_through(&self, clock_ms: u64) {
        self.feed.seal(time_at(clock_ms.saturating_add(1)));
    }

    /// Waits until the published state is complete through clock `clock_ms` (frontier at
    /// `time_at(clock_ms + 1)`, the cohort counts too), and returns that snapshot: it answers
    /// as of `clock_ms`.
    pub fn snapshot_through(&self, clock_ms: u64) -> Result<View, ReplayError> {
        let target: Time = time_at(clock_ms.saturating_add(1));
        let Some(shards) = &self.shards else {
            return Err(self.failure());
        };
        loop {
            let snap = shards.view();
            if snap.cohort_frontier() >= target {
                // The text index holds the state as of this snapshot (nothing later was fed):
                // what it has taken is made searchable now, not within its refresh interval.
                if let Some(text) = &snap.text {
                    text.refresh(true);
                }
                return Ok(snap);
            }
            if self.stopped.load(Ordering::Acquire) {
                // A last look: the final snapshot may have landed as the engine stopped.
                let snap = shards.view();
                if snap.cohort_frontier() >= target {
                    return Ok(snap);
                }
                return Err(self.failure());
            }
            std::thread::sleep(POLL);
        }
    }

    /// Answers query `index` on `snapshot`: the ranking, or why the query cannot be answered
    /// as of this state (a declared cohort it names is not declared yet, say).
    pub fn rank(&self, snapshot: &View, index: usize) -> Result<Result<Ranking, String>, ReplayError> {
        let params = self
            .queries
            .get(index)
            .ok_or_else(|| ReplayError::Internal(format!("variant {}: no query {index}", self.name)))?;
        Ok(match params {
            Ok(params) => rank(snapshot, &self.config, params).map_err(|e| e.to_string()),
            Err(message) => Err(message.clone()),
        })
    }

    /// Closes the feed and waits until the dataflow has drained and stopped.
    pub fn finish(mut self) -> Result<(), ReplayError> {
        // Every evaluation is done: what the dataflow still holds is never observed.
        self.abort.abort();
        if let Some(w) = self.watcher.take()
            && w.join().is_err()
        {
            return Err(ReplayError::Engine {
                variant: self.name.clone(),
                message: "the dataflow watcher panicked".into(),
            });
        }
        // The last published state can take seconds to free (millions of small
        // allocations): the freeing thread frees it while the report is written.
        if let Some(shards) = self.shards.take() {
            tidal_sinks::free_later(Box::new(shards));
        }
        match self.outcome.lock().unwrap_or_else(|p| p.into_inner()).take() {
            Some(Ok(())) => Ok(()),
            Some(Err(message)) => Err(ReplayError::Engine {
                variant: self.name.clone(),
                message,
            }),
            None => Err(self.failure()),
        }
    }
}

impl Drop for Variant {
    /// On an early return the dataflow is told to stop; it drains in the background.
    fn drop(&mut self) {
        self.feed.close();
    }
}
