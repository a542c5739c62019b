//! [`Pipeline`]: the engine without its WAL — a feed of committed batches, the dataflow that
//! materializes them and the published serving snapshots. [`Tidal`](super::Tidal) puts a WAL
//! writer in front of it; replay feeds it batches read from WAL files.

use std::path::Path;
use std::sync::Arc;

use tidal_core::config::Config;
use tidal_core::record::SharedBatch;
use tidal_dataflows::{Engine, EngineError};
use tidal_sinks::{Publisher, Snapshot};
use tidal_sources::feed::Feed;

use super::error::{Error, Result};

/// Committed batches the feed holds before its producer waits.
const FEED_BATCHES: usize = 1024;

/// A running dataflow fed by committed batches.
pub struct Pipeline {
    feed: Arc<Feed>,
    publisher: Arc<Publisher>,
    engine: Engine,
}

impl Pipeline {
    /// Starts `config.engine.workers` workers; with `store`, item metadata is also kept in a
    /// fjall entity store there.
    pub fn start(config: Arc<Config>, store: Option<&Path>) -> Result<Pipeline> {
        let feed = Arc::new(Feed::new(FEED_BATCHES));
        let publisher = Arc::new(match store {
            Some(path) => Publisher::with_store(config.clone(), path)?,
            None => Publisher::new(config.clone()),
        });
        let engine = Engine::start(config.clone(), config.engine.workers, feed.clone(), publisher.clone())?;
        Ok(Pipeline {
            feed,
            publisher,
            engine,
        })
    }

    /// The feed the dataflow reads.
    pub fn feed(&self) -> &Arc<Feed> {
        &self.feed
    }

    /// Where the snapshots are published.
    pub fn publisher(&self) -> &Arc<Publisher> {
        &self.publisher
    }

    /// The latest snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.publisher.load()
    }

    /// Hands a committed batch to the dataflow (waits while the feed is full).
    pub fn push(&self, batch: SharedBatch) {
        self.feed.push(batch);
    }

    /// Whether the workers have stopped (the feed was closed and drained, or one failed).
    pub fn is_finished(&self) -> bool {
        self.engine.is_finished()
    }

    /// Closes the feed, lets the dataflow apply what it holds and joins the workers.
    pub fn shutdown(self) -> Result<()> {
        self.engine.shutdown().map_err(engine_error)
    }

    /// Waits for the workers to stop (after the feed was closed elsewhere).
    pub fn join(self) -> Result<()> {
        self.engine.join().map_err(engine_error)
    }
}

fn engine_error(e: EngineError) -> Error {
    Error::Engine(e)
}
