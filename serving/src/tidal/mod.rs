//! [`Tidal`]: the engine as a library — open a data directory, write signals and items, read
//! features, rank — with no HTTP in between. The HTTP API ([`crate::http`]) is a thin layer
//! over it, and replay runs the same [`Pipeline`].
//!
//! Writes are durable when they return (their WAL batch is synced per `engine.durability`)
//! and answer the LSN and clock of what they wrote; a read asking for that LSN (`min_lsn`)
//! sees it. Reads come from the latest published snapshot and never wait for the dataflow
//! unless asked to. Every method takes `&self`: share one `Tidal` behind an `Arc` among any
//! number of threads. The `*_async` methods are the same operations for async callers (they
//! need a tokio runtime and never block a thread): a full queue or a dataflow too far behind
//! is refused with [`Error::Overloaded`] instead of waited out.

mod addresses;
mod cluster;
mod error;
mod extras;
mod last_config;
mod pipeline;
mod read;
mod recovering;
mod restore;
mod types;
mod users;
mod write;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tidal_core::config::Config;
use tidal_core::flow::Persist;
use tidal_core::record::{Position, Record};
use tidal_core::time::ClockMode;
use tidal_dataflows::{Agreement, CommunicationConfig, EngineOptions};
use tidal_sinks::Shards;
use tidal_sources::checkpoint::{self, Checkpointer, Layout, Manifest, schema_fingerprint};
use tidal_sources::source::RunLog;
use tidal_sources::wal::{Resume, Wal, WalHandle, WalOptions};

use crate::cluster::Peers;
use read::held_lsn;
use restore::{Restored, restore_indexes, restore_of, wait_for_agreement};

pub(crate) use error::known_code;
pub use error::{Error, Overload, Result};
pub use pipeline::Pipeline;
pub use types::{NewSignal, RankQuery, Reads, SignalsAck, Token, WriteAck};

/// How often a reader waiting for an LSN looks again.
const POLL: Duration = Duration::from_micros(250);
/// Checkpoint parts each worker writes (entities, windows, decay, users, cohorts, retained,
/// and the waiting updates of windows, decay and cohorts).
const PARTS_PER_WORKER: usize = 9;
/// How often a cluster ranking starts over at a newer frontier when a peer no longer holds
/// the one asked for.
const CLUSTER_ATTEMPTS: usize = 5;
/// How long a checkpoint may take before [`Tidal::checkpoint`] gives up waiting.
const CHECKPOINT_WAIT: Duration = Duration::from_secs(120);
/// How long a cluster process stopping waits for its workers (they end only when every
/// process stops).
const CLUSTER_STOP_WAIT: Duration = Duration::from_secs(2);
/// How often a wait for a checkpoint checks that the dataflow still runs.
const CHECKPOINT_POLL: Duration = Duration::from_millis(200);

/// A running tidal engine over one data directory: WAL, dataflow and serving state.
///
/// ```
/// # fn main() -> Result<(), tidal_serving::Error> {
/// use tidal_serving::{NewSignal, RankQuery, Tidal};
/// let dir = tempfile::tempdir().unwrap();
/// let mut config = tidal_core::Config::default_filled();
/// config.engine.data_dir = dir.path().display().to_string();
/// let tidal = Tidal::open(config)?;
/// let ack = tidal.signals(vec![NewSignal::new("like", "m1").user("u1"), NewSignal::new("view", "m2")])?;
/// let top = tidal.rank(&RankQuery::new().profile("top").min_lsn(ack.lsn))?;
/// assert_eq!(top.items[0].id, "m1");
/// tidal.shutdown()?;
/// # Ok(()) }
/// ```
pub struct Tidal {
    config: Arc<Config>,
    wal: WalHandle,
    pipeline: Mutex<Option<Pipeline>>,
    shards: Arc<Shards>,
    checkpointer: Arc<Checkpointer>,
    recovered_records: u64,
    /// The LSN of the checkpoint this start restored (0: none).
    restored_lsn: u64,
    peers: Option<Arc<Peers>>,
    /// In an event-clock cluster just started: the recovered logs not yet visible.
    recovering: Option<recovering::Recovering>,
    /// The embedding dimension (SPEC §12).
    dimension: Mutex<write::Dimension>,
    _lock: File,
}

impl std::fmt::Debug for Tidal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tidal")
            .field("data_dir", &self.config.engine.data_dir)
            .field("wal", &self.wal)
            .finish_non_exhaustive()
    }
}

/// A healthy engine's position, as `GET /healthz` reports it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Health {
    /// The LSN visible to queries.
    pub lsn: u64,
    /// The serving clock, ms.
    pub clock: u64,
}

/// Counters for monitoring (`GET /metrics`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// The last LSN written.
    pub wal_lsn: u64,
    /// The LSN visible to queries.
    pub visible_lsn: u64,
    /// Signals in the log.
    pub signals_written: u64,
    /// Signals visible to queries.
    pub signals_visible: u64,
    /// Write requests waiting for the WAL writer.
    pub wal_queue: usize,
    /// The commit clock, ms.
    pub clock: u64,
    /// The serving clock, ms.
    pub serving_clock: u64,
    /// Whether the engine runs on the event clock (else the wall clock).
    pub event_clock: bool,
    /// Keys in the dedup window.
    pub dedup_entries: u64,
    /// Dedup keys forgotten early (`engine.dedup_max_entries`).
    pub dedup_evicted: u64,
    /// The sizes of the materializers' state.
    pub state: tidal_core::stats::StateCounts,
    /// Item keys in the serving state.
    pub serving_keys: usize,
    /// Embedding changes waiting for the nearest-item index.
    pub nearest_waiting: u64,
    /// The LSN the newest complete checkpoint covers (0: none yet).
    pub checkpoint_lsn: u64,
    /// WAL records replayed at the last start (those after the checkpoint it loaded).
    pub recovered_records: u64,
    /// The LSN of the checkpoint the last start restored (0: none, the whole WAL replayed).
    pub restored_lsn: u64,
    /// Item metadata writes and removals the entity store committed since the start.
    pub store_items_committed: u64,
}

/// `<data-dir>/wal`: where the WAL of a data directory lives.
pub fn wal_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("wal")
}

impl Tidal {
    /// Opens (creating if needed) the data directory `config.engine.data_dir`: verifies and
    /// recovers the WAL into a new dataflow, and returns once everything recovered is visible
    /// to queries. A torn tail is truncated (with a warning); damage elsewhere fails with an
    /// error naming file and offset. Only one process may open a data directory at a time.
    pub fn open(config: Config) -> Result<Tidal> {
        config.validate()?;
        let config = Arc::new(config);
        let data_dir = PathBuf::from(&config.engine.data_dir);
        std::fs::create_dir_all(&data_dir).map_err(|source| Error::Io {
            path: data_dir.clone(),
            source,
        })?;
        let lock = lock_dir(&data_dir)?;
        let started = Instant::now();
        let mut peers = Peers::new(&config.cluster, config.server.auth_token.clone()).map(Arc::new);
        let mut options = EngineOptions::threads(config.engine.workers);
        if peers.is_some() {
            options.communication = Some(CommunicationConfig::Cluster {
                threads: config.engine.workers.max(1),
                process: config.cluster.process_id,
                addresses: config.cluster.processes.iter().map(|p| p.timely.clone()).collect(),
                report: false,
                zerocopy: false,
            });
        }
        let layout = Layout {
            schema: schema_fingerprint(&config),
            peers: options.peers(),
            first: options.first_worker(),
            workers: options.workers,
        };
        // The newest whole checkpoint for this schema and layout, if any: restart replays
        // only the WAL after it. In a cluster every process must restore the same frontier:
        // each offers the checkpoints it holds and the workers agree on the newest common one
        // once the cluster has formed (below).
        let ckpt_dir = checkpoint::dir_of(&data_dir);
        let (loaded, agreement, run_log) = match peers {
            None => (checkpoint::load_latest(&ckpt_dir, &layout), None, None),
            Some(_) => (
                None,
                Some(Agreement::new(
                    checkpoint::verified(&ckpt_dir, &layout),
                    addresses::told_http(&config)?,
                )),
                Some(Arc::new(RunLog::default())),
            ),
        };
        let checkpointer = Arc::new(
            Checkpointer::start(
                ckpt_dir.clone(),
                layout.clone(),
                options.workers * PARTS_PER_WORKER,
                loaded.as_ref().map(|l| l.manifest.clone()),
            )
            .map_err(|source| Error::Io {
                path: ckpt_dir.clone(),
                source,
            })?,
        );
        let Restored {
            mut restore,
            mut dedup,
            mut indexes,
        } = restore_of(loaded);
        let parts = checkpointer.clone();
        let options = EngineOptions {
            persist: Persist {
                parts: Some(match &run_log {
                    None => {
                        Arc::new(move |frontier, position, name, fill| parts.part_with(frontier, position, name, fill))
                    }
                    // In a cluster the frontier may have been asked for by another process:
                    // this process's checkpoint covers its own log up to that frontier.
                    Some(log) => {
                        let log = log.clone();
                        let finished = checkpointer.finished();
                        Arc::new(move |frontier, _asker: Position, name, fill| {
                            log.forget_before(finished.load(std::sync::atomic::Ordering::Acquire));
                            match log.at(frontier) {
                                Some(position) => parts.part_with(frontier, position, name, fill),
                                // Too old to tell: the part fails, and the checkpoint with it.
                                None => parts.part_unknown(
                                    frontier,
                                    name,
                                    "this process's log position at the frontier is no longer known",
                                ),
                            }
                        })
                    }
                }),
                restore: restore.clone(),
                finished: checkpointer.finished(),
            },
            checkpoint_every: config.engine.checkpoint_every,
            agreement: agreement.clone(),
            run_log: run_log.clone(),
            ..options
        };
        let pipeline = Pipeline::start_prepared(config.clone(), options, Some(&data_dir.join("entities")), |shards| {
            restore_indexes(shards, std::mem::take(&mut indexes))
        })?;
        if let (Some(agreement), Some(log)) = (&agreement, &run_log) {
            let loaded = match wait_for_agreement(agreement, &pipeline)? {
                Some(frontier) => Some(checkpoint::load_at(&ckpt_dir, &layout, frontier).map_err(|e| {
                    Error::DataflowStopped(format!(
                        "the cluster agreed on the checkpoint at frontier {frontier}, which this process cannot load: {e}"
                    ))
                })?),
                None => None,
            };
            if let Some(m) = loaded.as_ref().map(|l| &l.manifest) {
                checkpointer.set_latest(m.clone());
            }
            // The HTTP addresses the host file left out, as each process told its own.
            if let Some(cluster) = addresses::learned(&config.cluster, &agreement.addresses())? {
                peers = Peers::new(&cluster, config.server.auth_token.clone()).map(Arc::new);
            }
            let indexes;
            Restored {
                restore,
                dedup,
                indexes,
            } = restore_of(loaded);
            if let Some(r) = &restore {
                log.record(r.frontier.saturating_sub(1), r.position);
            }
            // Before the workers build their graph (they wait for the restore).
            restore_indexes(pipeline.shards(), indexes);
            agreement.set_restore(restore.clone());
        }
        let restored_lsn = restore.as_ref().map_or(0, |r| r.position.lsn);
        if let Some(r) = &restore {
            tracing::info!(
                lsn = r.position.lsn,
                signals = r.position.signals,
                "restoring a checkpoint"
            );
        }

        let mut recovered_records = 0u64;
        let mut recovered_config: Option<(u64, String)> = None;
        let feed = pipeline.feed().clone();
        // Nobody reads until the log is recovered: the dataflow may take it in large runs,
        // and the nearest-item indexes wait (they fill once the process serves).
        feed.catch_up(true);
        pipeline.shards().hold_anns(true);
        let mut wal_options = WalOptions::from_config(&config, wal_dir(&data_dir));
        wal_options.resume = restore.as_ref().map(|r| Resume {
            lsn: r.position.lsn,
            signals: r.position.signals,
            dedup,
            frontier: r.frontier,
        });
        let wal = Wal::open(wal_options, pipeline.feed().clone(), |batch| {
            recovered_records += batch.records.len() as u64;
            for r in &batch.records {
                if let Record::Config { toml } = &r.record {
                    recovered_config = Some((r.lsn, toml.clone()));
                }
            }
            feed.push(Arc::new(batch));
        })?;
        pipeline.feed().catch_up(false);
        checkpointer.set_extra(extras::checkpoint_extras(wal.clone(), pipeline.shards().clone()));
        if peers.is_some() {
            // Serve once the cluster has formed: writes acknowledged before would wait,
            // unseen, for the other processes.
            let mut waited = Instant::now();
            while !pipeline.is_running() {
                if pipeline.is_finished() {
                    return Err(Error::DataflowStopped("the cluster could not be formed".into()));
                }
                if waited.elapsed() >= Duration::from_secs(10) {
                    tracing::info!("waiting for the other processes of the cluster");
                    waited = Instant::now();
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        let target = wal.last_lsn();
        let shards = pipeline.shards().clone();
        // In a cluster on the event clock the frontier also waits for the other processes'
        // clocks, which only `POST /v1/clock` moves: serve at once.
        let wait = peers.is_none() || config.engine.clock == ClockMode::Wall;
        while wait && held_lsn(&shards.view(), None, Reads::Everything) < target {
            std::thread::sleep(Duration::from_millis(2));
            if pipeline.is_finished() {
                return Err(Error::DataflowStopped("the dataflow stopped during recovery".into()));
            }
        }
        tracing::info!(
            records = recovered_records,
            lsn = target,
            seconds = started.elapsed().as_secs_f64(),
            busy = pipeline.state().busy_summary(),
            "recovered the WAL"
        );
        shards.hold_anns(false);
        // What was recovered is searchable at once (without what a restored text index held
        // and the recovery did not put again). The nearest-item indexes take out what the
        // restored state did not name once it has been handed over: not when serving began
        // without waiting for it (a cluster on the event clock), where it would take out
        // everything the restored copy held and put it all in again.
        if wait {
            shards.forget_unconfirmed();
        } else {
            shards.text().forget_unconfirmed();
        }
        let dimension = match config.personalization.dimension {
            0 => shards.view().embedding_dimension().unwrap_or(0),
            d => d,
        };
        let recovering = match &peers {
            Some(p) if !wait => Some(recovering::Recovering::new(
                target,
                p.len(),
                p.process(),
                wal.last_time(),
            )),
            _ => None,
        };
        let tidal = Tidal {
            config,
            wal,
            pipeline: Mutex::new(Some(pipeline)),
            shards,
            checkpointer,
            recovered_records,
            restored_lsn,
            recovering,
            peers,
            dimension: Mutex::new(write::Dimension::fixed_at(dimension)),
            _lock: lock,
        };
        last_config::record(&tidal, &data_dir, recovered_config, wait)?;
        Ok(tidal)
    }

    /// The configuration in force (the schema and every setting).
    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }

    /// The schema as `GET /v1/schema` answers it (no secrets).
    pub fn schema(&self) -> serde_json::Value {
        let mut schema = self.config.schema_json();
        // The cohorts declared as of now: the configuration's and those put since.
        schema["cohorts"] = serde_json::Value::Array(self.cohort_list_on(&self.view()));
        schema
    }

    /// Records recovered from the WAL when opened.
    pub fn recovered_records(&self) -> u64 {
        self.recovered_records
    }

    /// Whether writes and reads are served: [`Error::Poisoned`] after a failed WAL sync,
    /// [`Error::DataflowStopped`] once the dataflow has stopped.
    pub fn health(&self) -> Result<Health> {
        if let Some(e) = self.wal.poison_error() {
            return Err(e.into());
        }
        if let Some(problem) = self.dataflow_problem() {
            return Err(Error::DataflowStopped(problem));
        }
        let snap = self.view();
        Ok(Health {
            lsn: snap.lsn(),
            clock: snap.clock_ms(),
        })
    }

    fn dataflow_problem(&self) -> Option<String> {
        let guard = self.pipeline.lock().unwrap_or_else(|p| p.into_inner());
        match guard.as_ref() {
            None => Some("the engine is shut down".into()),
            Some(p) if p.is_finished() => Some("the dataflow has stopped".into()),
            Some(_) => None,
        }
    }

    /// Counters for monitoring.
    pub fn stats(&self) -> Stats {
        let snap = self.view();
        let (dedup_entries, dedup_evicted) = self.wal.dedup_stats();
        let (state, store_items_committed) = match &*self.pipeline.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(p) => (p.state(), p.store_items_committed()),
            None => Default::default(),
        };
        Stats {
            wal_lsn: self.wal.last_lsn(),
            visible_lsn: snap.lsn(),
            signals_written: self.wal.signals_written(),
            signals_visible: snap.position.signals,
            wal_queue: self.wal.queued(),
            clock: self.wal.clock_ms(),
            serving_clock: snap.clock_ms(),
            event_clock: self.config.engine.clock == ClockMode::Event,
            dedup_entries,
            dedup_evicted,
            state,
            store_items_committed,
            serving_keys: snap.shards.iter().map(|s| s.key_count()).sum(),
            nearest_waiting: snap.shards.iter().map(|s| s.ann().waiting()).sum(),
            checkpoint_lsn: self.checkpointer.latest().map_or(0, |m| m.position.lsn),
            recovered_records: self.recovered_records,
            restored_lsn: self.restored_lsn,
        }
    }

    /// The commit clock (ms) and its mode.
    pub fn clock(&self) -> (u64, ClockMode) {
        (self.wal.clock_ms(), self.config.engine.clock)
    }

    /// Fault-injection for tests: while held, the dataflow takes nothing new from the WAL,
    /// as if it had fallen far behind (writes stay durable; reads see the state before).
    #[doc(hidden)]
    pub fn hold_dataflow_for_tests(&self, held: bool) {
        if let Some(p) = self.pipeline.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            p.feed().hold(held);
        }
    }

    /// Writes a checkpoint of the state after every write acknowledged so far, and returns
    /// its manifest once it is durable. Restart loads the newest checkpoint and replays only
    /// the WAL after it.
    pub fn checkpoint(&self) -> Result<Manifest> {
        if !self.checkpoints_on_demand() {
            return Err(Error::Unsupported {
                what: "a checkpoint on demand is not taken in a cluster on the event clock (an idle process does not move past the frontier asked for): its processes checkpoint together every engine.checkpoint_every signals",
            });
        }
        let lsn = self.wal.last_lsn();
        if let Some(m) = self.checkpointer.latest().filter(|m| m.position.lsn >= lsn) {
            return Ok(m);
        }
        {
            let guard = self.pipeline.lock().unwrap_or_else(|p| p.into_inner());
            let Some(p) = guard.as_ref() else {
                return Err(Error::Closed);
            };
            p.feed().request_checkpoint();
        }
        // In a cluster every process writes its part at the frontier asked for (the request
        // goes out on the broadcast control stream), and the wall clock moves every process
        // past it; the wait ends early if the cluster breaks up meanwhile.
        let started = Instant::now();
        while started.elapsed() < CHECKPOINT_WAIT {
            if let Some(m) = self.checkpointer.wait_for(lsn, CHECKPOINT_POLL) {
                return Ok(m);
            }
            if let Some(problem) = self.dataflow_problem() {
                return Err(Error::DataflowStopped(problem));
            }
        }
        Err(Error::CheckpointTimeout {
            lsn,
            waited: CHECKPOINT_WAIT,
        })
    }

    /// Whether this process is one of a cluster's (it has peers).
    pub(crate) fn in_cluster(&self) -> bool {
        self.peers.is_some()
    }

    /// Whether [`checkpoint`](Self::checkpoint) can be asked for: one process, or a cluster
    /// on the wall clock (whose ticks move every process past the frontier asked for).
    fn checkpoints_on_demand(&self) -> bool {
        self.peers.is_none() || self.config.engine.clock == ClockMode::Wall
    }

    /// The newest complete checkpoint (written, or loaded at open).
    pub fn latest_checkpoint(&self) -> Option<Manifest> {
        self.checkpointer.latest()
    }

    /// Writes a checkpoint (so that the next open replays next to nothing), makes what was
    /// written durable, and stops the workers. Later writes answer [`Error::Closed`].
    /// Idempotent.
    pub fn shutdown(&self) -> Result<()> {
        let running = self.pipeline.lock().unwrap_or_else(|p| p.into_inner()).is_some();
        if running
            && self.checkpoints_on_demand()
            && !self.wal.is_poisoned()
            && self.dataflow_problem().is_none()
            && let Err(e) = self.checkpoint()
        {
            tracing::warn!(error = %e, "no checkpoint at shutdown; the next start replays more of the WAL");
        }
        // One process: the dataflow takes nothing more, or the WAL closing its feed would have
        // it apply every future time (each window's retractions, each user's expiries) before
        // the workers stop. What it has not taken is in the WAL. (A cluster's workers are left
        // to end with the process.)
        if self.peers.is_none()
            && let Some(p) = self.pipeline.lock().unwrap_or_else(|p| p.into_inner()).as_ref()
        {
            p.feed().stop();
        }
        self.wal.shutdown();
        let pipeline = self.pipeline.lock().unwrap_or_else(|p| p.into_inner()).take();
        let result = match pipeline {
            // A cluster's workers stop only with every process: this one goes without them.
            Some(p) if self.peers.is_some() => p.shutdown_within(CLUSTER_STOP_WAIT).map(|finished| {
                if !finished {
                    tracing::info!("leaving the cluster's workers to end with the process");
                }
            }),
            Some(p) => p.shutdown(),
            None => Ok(()),
        };
        self.checkpointer.shutdown();
        result
    }
}

impl Drop for Tidal {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            tracing::error!(error = %e, "the engine stopped with an error");
        }
    }
}

/// Takes the data directory's lock file, so that two processes never write one WAL.
fn lock_dir(dir: &Path) -> Result<File> {
    let path = dir.join("LOCK");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::Locked {
            path: dir.to_path_buf(),
        }),
        Err(std::fs::TryLockError::Error(source)) => Err(Error::Io { path, source }),
    }
}
