//! [`Pipeline`]: the engine without its WAL — a feed of committed batches, the dataflow that
//! materializes them and the serving shards it publishes. [`Tidal`](super::Tidal) puts a WAL
//! writer in front of it; replay feeds it batches read from WAL files.

use std::path::Path;
use std::sync::Arc;

use tidal_core::config::Config;
use tidal_core::record::SharedBatch;
use tidal_dataflows::{Engine, EngineOptions};
use tidal_sinks::{EntityStore, Shards, View};
use tidal_sources::feed::Feed;

use super::error::{Error, Result};

/// Committed batches the feed holds before its producer waits.
const FEED_BATCHES: usize = 1024;

/// A running dataflow fed by committed batches.
pub struct Pipeline {
    feed: Arc<Feed>,
    shards: Arc<Shards>,
    engine: Engine,
    store: Option<Arc<EntityStore>>,
}

impl Pipeline {
    /// Starts `config.engine.workers` workers; with `store`, item metadata is also kept in a
    /// fjall entity store there.
    pub fn start(config: Arc<Config>, store: Option<&Path>) -> Result<Pipeline> {
        Pipeline::start_with(config.clone(), EngineOptions::threads(config.engine.workers), store)
    }

    /// Starts the dataflow with a worker layout of its own (threads or a cluster).
    pub fn start_with(config: Arc<Config>, options: EngineOptions, store: Option<&Path>) -> Result<Pipeline> {
        Pipeline::start_prepared(config, options, store, |_| {})
    }

    /// [`start_with`](Self::start_with), `prepare` given the shards before the workers start
    /// (to load what a checkpoint keeps of them).
    pub fn start_prepared(
        config: Arc<Config>,
        options: EngineOptions,
        store: Option<&Path>,
        prepare: impl FnOnce(&Shards),
    ) -> Result<Pipeline> {
        let feed = Arc::new(Feed::new(FEED_BATCHES));
        let store = match store {
            Some(path) => Some(Arc::new(EntityStore::open(path)?)),
            None => None,
        };
        let shards = Arc::new(Shards::new(
            config.clone(),
            options.peers(),
            options.first_worker(),
            options.workers,
        ));
        prepare(&shards);
        let engine = Engine::start(config, options, feed.clone(), shards.clone(), store.clone())?;
        Ok(Pipeline {
            feed,
            shards,
            engine,
            store,
        })
    }

    /// Item writes and removals the entity store committed since the start (0 without one).
    pub fn store_items_committed(&self) -> u64 {
        self.store.as_ref().map_or(0, |s| s.items_committed())
    }

    /// The feed the dataflow reads.
    pub fn feed(&self) -> &Arc<Feed> {
        &self.feed
    }

    /// The serving shards.
    pub fn shards(&self) -> &Arc<Shards> {
        &self.shards
    }

    /// The sizes of the workers' state.
    pub fn state(&self) -> tidal_core::stats::StateCounts {
        self.engine.stats().total()
    }

    /// The latest state common to every shard.
    pub fn view(&self) -> View {
        self.shards.view()
    }

    /// Hands a committed batch to the dataflow (waits while the feed is full).
    pub fn push(&self, batch: SharedBatch) {
        self.feed.push(batch);
    }

    /// Whether every local worker is running (in a cluster: every process is connected).
    pub fn is_running(&self) -> bool {
        self.engine.is_running()
    }

    /// Whether the workers have stopped (the feed was closed and drained, or one failed).
    pub fn is_finished(&self) -> bool {
        self.engine.is_finished()
    }

    /// Stops the workers at once, without applying what is pending (the state is in the WAL
    /// and, where there is one, the checkpoint).
    pub fn shutdown(self) -> Result<()> {
        self.engine.abort().map_err(Error::Engine)
    }

    /// Stops the workers at once, waiting at most `wait` for them (see
    /// [`Engine::abort_within`](tidal_dataflows::Engine::abort_within)); whether they finished.
    pub fn shutdown_within(self, wait: std::time::Duration) -> Result<bool> {
        self.engine.abort_within(wait).map_err(Error::Engine)
    }

    /// Closes the feed, lets the dataflow apply everything (to the end of time) and joins the
    /// workers.
    pub fn drain(self) -> Result<()> {
        self.engine.shutdown().map_err(Error::Engine)
    }

    /// A handle that stops the workers from another thread.
    pub fn abort_handle(&self) -> tidal_dataflows::AbortHandle {
        self.engine.abort_handle()
    }

    /// Waits for the workers to stop (after the feed was closed elsewhere).
    pub fn join(self) -> Result<()> {
        self.engine.join().map_err(Error::Engine)
    }
}
