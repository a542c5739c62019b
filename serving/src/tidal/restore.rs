//! What a start restores from a checkpoint: the workers' parts, the WAL's dedup window, the
//! shards' nearest-item indexes and the text index; in a cluster, once the processes agreed
//! on which.

use std::sync::Arc;
use std::time::Duration;

use tidal_core::flow::Restore;
use tidal_core::time::Time;
use tidal_dataflows::Agreement;
use tidal_sinks::Shards;
use tidal_sources::checkpoint;

use super::error::{Error, Result};
use super::extras::{DEDUP_PART, TEXT_PART};
use super::pipeline::Pipeline;

/// What a loaded checkpoint restores: the workers' state, the WAL's dedup window and the
/// serving indexes.
#[derive(Default)]
pub(super) struct Restored {
    pub(super) restore: Option<Arc<Restore>>,
    pub(super) dedup: Option<Vec<u8>>,
    pub(super) indexes: SavedIndexes,
}

/// The serving indexes a checkpoint kept: the shards' nearest-item indexes (by global worker
/// index) and the process's text index.
#[derive(Default)]
pub(super) struct SavedIndexes {
    anns: Vec<(usize, Vec<u8>)>,
    text: Option<Vec<u8>>,
}

pub(super) fn restore_of(loaded: Option<checkpoint::Loaded>) -> Restored {
    let Some(mut l) = loaded else {
        return Restored::default();
    };
    let dedup = l.parts.remove(DEDUP_PART);
    let text = l.parts.remove(TEXT_PART);
    let ann_names: Vec<String> = l.parts.keys().filter(|n| n.starts_with("ann-")).cloned().collect();
    let anns = ann_names
        .into_iter()
        .filter_map(|n| {
            let index = n.strip_prefix("ann-")?.parse().ok()?;
            Some((index, l.parts.remove(&n)?))
        })
        .collect();
    let restore = Arc::new(Restore {
        frontier: l.manifest.frontier,
        position: l.manifest.position,
        parts: std::sync::Mutex::new(l.parts),
    });
    Restored {
        restore: Some(restore),
        dedup,
        indexes: SavedIndexes { anns, text },
    }
}

/// Loads the indexes a checkpoint kept into the local shards, each on a thread of its own
/// while the start goes on ([`tidal_sinks::Ann::restore_later`],
/// [`tidal_sinks::TextIndex::restore_later`]).
pub(super) fn restore_indexes(shards: &Shards, saved: SavedIndexes) {
    for (index, bytes) in saved.anns {
        if let Some(shard) = shards.shard(index) {
            shard.ann().restore_later(bytes);
        }
    }
    if let Some(bytes) = saved.text {
        shards.restore_text(bytes);
    }
}

/// Waits until the processes of the cluster agree on the checkpoint to restore (they agree
/// once every process has started).
pub(super) fn wait_for_agreement(agreement: &Agreement, pipeline: &Pipeline) -> Result<Option<Time>> {
    loop {
        if let Some(chosen) = agreement.chosen(Duration::from_secs(10)) {
            return Ok(chosen);
        }
        if pipeline.is_finished() {
            return Err(Error::DataflowStopped("the cluster could not be formed".into()));
        }
        tracing::info!("waiting for the other processes of the cluster");
    }
}
