//! Wiring tidal's dataflow from the schema ([`graph`]) and running it on timely workers
//! ([`Engine`]). The engine builds its own `timely::Config` (threads in this process, or a
//! multi-process cluster), runs every worker in the background until the feed is closed and
//! the dataflow has drained, and publishes each worker's shard through
//! `tidal_sinks::shard_sink`.

#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod agree;
pub mod graph;

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use timely::WorkerConfig;
use timely::worker::ProgressMode;

use tidal_core::config::Config;
use tidal_core::flow::Persist;
use tidal_core::stats::EngineStats;
use tidal_core::time::Time;
use tidal_sinks::{EntityStore, Shards, StoreShard, shard_sink};
use tidal_sources::feed::Feed;
use tidal_sources::source::SourceOptions;

pub use agree::Agreement;
pub use graph::{Outputs, build};
pub use timely::CommunicationConfig;

/// How long an idle worker parks before looking again (wake-ups from the feed and from other
/// workers cut it short).
const PARK: Duration = Duration::from_millis(20);
/// How long an idle worker polls before it parks: not at all. Timely's default (10 us)
/// spares a worker the wake-up when a peer's message is microseconds away; here a worker
/// goes idle after every commit's wake-up and every round, thousands of times a second
/// under single-signal writes, and its polls took the cores the writes are answered on.
const IDLE_SPIN: Duration = Duration::ZERO;
/// Merge effort a trace spends per scheduling on a merge already under way.
const IDLE_MERGE_EFFORT: usize = 1_000;

/// Why the engine could not start or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// Zero workers were asked for.
    #[error("the engine needs at least one worker")]
    NoWorkers,
    /// The thread running the workers could not be started.
    #[error("cannot start the dataflow thread: {0}")]
    Spawn(#[source] std::io::Error),
    /// timely refused the configuration or could not connect the workers.
    #[error("timely could not start the workers: {0}")]
    Timely(String),
    /// A worker failed.
    #[error("a dataflow worker failed: {0}")]
    Worker(String),
    /// The dataflow thread panicked.
    #[error("the dataflow thread panicked")]
    Panicked,
}

/// Stops an [`Engine`]'s workers from any thread, without applying what is pending.
#[derive(Clone)]
pub struct AbortHandle {
    stop: Arc<std::sync::atomic::AtomicBool>,
    feed: Arc<Feed>,
    cluster: bool,
}

impl AbortHandle {
    /// Asks the workers to stop; they do within a park interval. In one process the feed is
    /// stopped, not closed (a closed input would have the dataflow apply every future time —
    /// each window's retractions, each user's expiries — in the step before the workers look
    /// at the flag) and the workers drop the dataflow. A cluster's dataflow spans the other
    /// processes: its input is closed and the workers are left to end with the process.
    pub fn abort(&self) {
        self.stop.store(true, std::sync::atomic::Ordering::Release);
        if self.cluster {
            self.feed.close();
        } else {
            self.feed.stop();
        }
    }
}

/// How the workers are laid out, and how their state is persisted.
#[derive(Clone, Debug)]
pub struct EngineOptions {
    /// Worker threads in this process (in a cluster: in each process).
    pub workers: usize,
    /// Checkpoint writing and restoring.
    pub persist: Persist,
    /// A checkpoint is asked for after every this many signals (0: only when requested).
    pub checkpoint_every: u64,
    /// A multi-process cluster (`CommunicationConfig::Cluster`); `None` runs `workers` threads
    /// in this process.
    pub communication: Option<CommunicationConfig>,
    /// In a cluster: the agreement on the checkpoint every process restores (it replaces
    /// `persist.restore`, which the agreement hands the workers).
    pub agreement: Option<Arc<Agreement>>,
    /// In a cluster: where the source records this process's log position at each run.
    pub run_log: Option<Arc<tidal_sources::source::RunLog>>,
}

impl EngineOptions {
    /// `workers` threads in this process.
    pub fn threads(workers: usize) -> EngineOptions {
        EngineOptions {
            workers,
            persist: Persist::default(),
            checkpoint_every: 0,
            communication: None,
            agreement: None,
            run_log: None,
        }
    }

    /// Processes in the cluster.
    pub fn processes(&self) -> usize {
        match &self.communication {
            Some(CommunicationConfig::Cluster { addresses, .. }) => addresses.len().max(1),
            _ => 1,
        }
    }

    /// This process's index in the cluster.
    pub fn process(&self) -> usize {
        match &self.communication {
            Some(CommunicationConfig::Cluster { process, .. }) => *process,
            _ => 0,
        }
    }

    /// Workers in the whole cluster.
    pub fn peers(&self) -> usize {
        self.workers.max(1) * self.processes()
    }

    /// The global index of this process's first worker.
    pub fn first_worker(&self) -> usize {
        self.workers.max(1) * self.process()
    }

    /// The timely configuration: threads or cluster, demand-driven progress, idle merging.
    pub fn timely_config(&self) -> Result<timely::Config, EngineError> {
        let communication = match &self.communication {
            Some(c) => c.clone(),
            None if self.workers == 0 => return Err(EngineError::NoWorkers),
            None if self.workers == 1 => CommunicationConfig::Thread,
            None => CommunicationConfig::Process(self.workers),
        };
        let mut config = timely::Config {
            communication,
            worker: WorkerConfig::default()
                .progress_mode(ProgressMode::Demand)
                .idle_spin(IDLE_SPIN),
        };
        // Traces finish the merges their insertions started while the worker is idle, but
        // start none only to end up as one batch: differential's idle merging does, so a
        // large arrangement that takes a few updates at every mark (the retained signals,
        // millions) was rewritten whole, again and again, for as long as updates came (the
        // worker saturated at 8k signals/s).
        config.worker.set::<differential_dataflow::trace::ExertionLogic>(
            "differential/default_exert_logic".to_string(),
            Arc::new(|levels: &[(usize, usize, usize)]| {
                levels
                    .iter()
                    .any(|&(_, batches, _)| batches > 1)
                    .then_some(IDLE_MERGE_EFFORT)
            }),
        );
        Ok(config)
    }
}

/// The running dataflow.
pub struct Engine {
    feed: Arc<Feed>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    /// Local workers running (in a cluster: once every process is connected).
    running: Arc<std::sync::atomic::AtomicUsize>,
    workers: usize,
    stats: Arc<EngineStats>,
    thread: Option<JoinHandle<Result<(), EngineError>>>,
    /// The workers are part of a multi-process cluster.
    cluster: bool,
}

impl Engine {
    /// Starts the workers running the dataflow over `feed`, each publishing its shard into
    /// `shards` (and item metadata into `store`).
    pub fn start(
        config: Arc<Config>,
        options: EngineOptions,
        feed: Arc<Feed>,
        shards: Arc<Shards>,
        store: Option<Arc<EntityStore>>,
    ) -> Result<Engine, EngineError> {
        let schema = config.clone();
        let place = tidal_sinks::Place {
            process: options.process(),
            processes: options.processes(),
        };
        let peers = options.peers();
        Engine::start_with(config, options, feed, move |out: Outputs<'_>, index: usize| {
            if let Some(shard) = shards.shard(index) {
                let at = StoreShard::new(index, peers, place.process, place.processes).restored_at(out.restored_lsn);
                shard_sink(
                    out.sink_inputs(),
                    out.control.clone(),
                    shard.clone(),
                    store.clone().map(|s| (s, at)),
                    &schema,
                    out.stats.clone(),
                    place,
                );
            }
        })
    }

    /// Starts the dataflow with any worker layout and any sink: `sink` is called once per
    /// worker with that worker's [`Outputs`] and global index.
    pub fn start_with<S>(
        config: Arc<Config>,
        options: EngineOptions,
        feed: Arc<Feed>,
        sink: S,
    ) -> Result<Engine, EngineError>
    where
        S: for<'s> Fn(Outputs<'s>, usize) + Send + Sync + 'static,
    {
        let timely_config = options.timely_config()?;
        let worker_feed = feed.clone();
        let per_process = options.workers.max(1);
        let origin = options.process();
        let sources = options.processes();
        let persist = options.persist.clone();
        let agreement = options.agreement.clone();
        let run_log = options.run_log.clone();
        // What every process's checkpoint writer has finished with, shared by this process's
        // workers (a cluster's only: alone, the source reads its own writer's).
        let cluster_finished = (sources > 1).then(|| Arc::new(tidal_core::flow::ClusterFinished::new(sources)));
        let checkpoint_every = options.checkpoint_every;
        let stats = Arc::new(EngineStats::new(per_process));
        let worker_stats = stats.clone();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let worker_stop = stop.clone();
        let cluster = options.communication.is_some();
        let running = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let worker_running = running.clone();
        let thread = std::thread::Builder::new()
            .name("tidal-dataflow".into())
            .spawn(move || {
                let worker_stop = worker_stop.clone();
                let guards = timely::execute(timely_config, move |worker| {
                    worker_running.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
                    let (feed, config) = (worker_feed.clone(), config.clone());
                    let index = worker.index();
                    let persist = match &agreement {
                        Some(a) => Persist {
                            parts: persist.parts.clone(),
                            finished: persist.finished.clone(),
                            restore: agree::agree(
                                worker,
                                a,
                                (index % per_process == 0).then_some(index / per_process),
                                sources,
                            ),
                        },
                        None => persist.clone(),
                    };
                    let start = persist.restore.as_ref().map(|r| (r.frontier, r.position));
                    let source = SourceOptions {
                        reader: index % per_process == 0,
                        checkpoint_every,
                        checkpoints_finished: persist.parts.as_ref().map(|_| persist.finished.clone()),
                        start,
                        origin,
                        sources,
                        run_log: run_log.clone(),
                        cluster_finished: cluster_finished.clone(),
                    };
                    let stats = worker_stats.workers[index % per_process].clone();
                    worker.dataflow::<Time, _, _>(|scope| {
                        sink(build(scope, feed, config, source, stats, persist), index)
                    });
                    while !worker_stop.load(std::sync::atomic::Ordering::Acquire) && worker.step_or_park(Some(PARK)) {}
                    if !cluster && worker_stop.load(std::sync::atomic::Ordering::Acquire) {
                        // Stopped, not drained: timely would step the dataflow until it
                        // completes, which its open input never lets it do.
                        for id in worker.installed_dataflows() {
                            worker.drop_dataflow(id);
                        }
                    }
                })
                .map_err(EngineError::Timely)?;
                guards
                    .join()
                    .into_iter()
                    .collect::<Result<Vec<()>, String>>()
                    .map(|_| ())
                    .map_err(EngineError::Worker)
            })
            .map_err(EngineError::Spawn)?;
        Ok(Engine {
            feed,
            stop,
            running,
            workers: per_process,
            stats,
            thread: Some(thread),
            cluster,
        })
    }

    /// Whether every local worker is running (in a cluster, timely starts the workers once
    /// every process is connected).
    pub fn is_running(&self) -> bool {
        self.running.load(std::sync::atomic::Ordering::Acquire) >= self.workers
    }

    /// The sizes of the local workers' state.
    pub fn stats(&self) -> &Arc<EngineStats> {
        &self.stats
    }

    /// Whether every worker has finished (the feed was closed and everything drained, or a
    /// worker failed).
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Waits for the workers; they finish once the feed is closed and drained.
    pub fn join(mut self) -> Result<(), EngineError> {
        match self.thread.take() {
            Some(t) => t.join().map_err(|_| EngineError::Panicked)?,
            None => Ok(()),
        }
    }

    /// Closes the feed and waits for the workers.
    pub fn shutdown(self) -> Result<(), EngineError> {
        self.feed.close();
        self.join()
    }

    /// A handle that stops the workers from another thread (see [`abort`](Self::abort)).
    pub fn abort_handle(&self) -> AbortHandle {
        AbortHandle {
            stop: self.stop.clone(),
            feed: self.feed.clone(),
            cluster: self.cluster,
        }
    }

    /// [`abort`](Self::abort), waiting at most `wait` for the workers: a cluster's workers
    /// finish only once every process has stopped (timely's connections close together), so
    /// a process that stops alone leaves its workers behind as it exits, as the others
    /// would see it go after `kill -9`. Whether they finished.
    pub fn abort_within(mut self, wait: Duration) -> Result<bool, EngineError> {
        self.abort_handle().abort();
        let started = std::time::Instant::now();
        while !self.is_finished() {
            if started.elapsed() >= wait {
                // Detached: the threads end with the process.
                drop(self.thread.take());
                return Ok(false);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.join().map(|()| true)
    }

    /// Stops the workers without applying what is still pending (the final state, every
    /// future retraction applied, is of no use to a server going down): quick whatever the
    /// state's size.
    pub fn abort(self) -> Result<(), EngineError> {
        self.abort_handle().abort();
        self.join()
    }
}
