//! The parts of a checkpoint the serving side adds to the workers' (written by the
//! checkpointer, read back by `restore.rs`): the WAL's dedup window, and the serving indexes,
//! so that a restart does not rebuild them.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use tidal_sinks::Shards;
use tidal_sources::checkpoint::{Extra, ExtraFill, ExtraParts, Kept};
use tidal_sources::wal::WalHandle;

/// The checkpoint part holding the WAL's dedup window.
pub(super) const DEDUP_PART: &str = "dedup";
/// The checkpoint part of the process's text index.
pub(super) const TEXT_PART: &str = "text";

/// The checkpoint part of the nearest-item index of global worker `index`.
pub(super) fn ann_part(index: usize) -> String {
    format!("ann-{index}")
}

/// A checkpoint keeps the copy of a serving index (nearest-item, text) the one before holds,
/// rather than writing the index again, while the index has changed in at most one item in
/// this many since that copy: a restart then puts those items in again.
const INDEX_KEEP_SLACK: usize = 64;

/// [`Extra::Keep`] for the index part `name` whose index has taken `changes` changes and
/// holds `len` items, when the newest checkpoint's copy of it lags by at most one change in
/// [`INDEX_KEEP_SLACK`] items.
fn keep_index(kept: &Kept, name: &str, changes: u64, len: usize) -> Option<Extra> {
    let lag = changes.checked_sub(kept.changes(name)?)?;
    (lag <= (len / INDEX_KEEP_SLACK) as u64).then_some(Extra::Keep)
}

/// The producer of the extra parts of every checkpoint of a process with this WAL and these
/// shards. The nearest-item indexes are streamed (a graph is hundreds of megabytes). A restart
/// brings an index's copy up to date with the restored state, so one that lags by a little is
/// kept from the checkpoint before instead of written again.
pub(super) fn checkpoint_extras(wal: WalHandle, shards: Arc<Shards>) -> ExtraParts {
    Box::new(move |kept: &Kept| {
        let bytes = |b: Vec<u8>| -> ExtraFill { Box::new(move |_: &Path, w: &mut dyn Write| w.write_all(&b)) };
        let mut extra = vec![(
            DEDUP_PART.to_string(),
            Extra::Write {
                fill: bytes(wal.dedup_snapshot()),
                changes: None,
            },
        )];
        for (index, shard) in shards.local() {
            let (ann, name) = (shard.ann(), ann_part(index));
            let changes = ann.changes();
            if let Some(keep) = keep_index(kept, &name, changes, ann.len()) {
                extra.push((name, keep));
            } else if !ann.is_empty() {
                let shard = shard.clone();
                let fill: ExtraFill =
                    Box::new(move |scratch: &Path, w: &mut dyn Write| shard.ann().save_into(scratch, w).map(|_| ()));
                let changes = Some(changes);
                extra.push((name, Extra::Write { fill, changes }));
            }
        }
        let text = shards.text();
        let changes = text.changes();
        if let Some(keep) = keep_index(kept, TEXT_PART, changes, text.len() as usize) {
            extra.push((TEXT_PART.to_string(), keep));
        } else if let Some(saved) = text.save() {
            let part = Extra::Write {
                fill: bytes(saved),
                changes: Some(changes),
            };
            extra.push((TEXT_PART.to_string(), part));
        }
        extra
    })
}
