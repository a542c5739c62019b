//! The entity store: item metadata by id in a fjall keyspace (partition `items`, value =
//! [`ItemMeta`] in the checkpoints' binary form after a marker byte; a store written before
//! holds JSON, which is still read). The serving sink writes it once per published version,
//! as one batch, without fsync: the WAL is the source of truth and a replay rewrites the store.
//!
//! Each batch also records, in partition `written`, the LSN of the version it brings the
//! shard's items to, and the worker layout that wrote it. Writes are absolute (an id's
//! metadata, or its removal) and a batch is atomic, so the store always holds the shard's
//! items as of some LSN at least the one recorded: a start that rebuilds the serving state
//! from a checkpoint skips the versions up to that LSN instead of rewriting a million items
//! (and growing the LSM tree by as much) at every restart. A start from a checkpoint the
//! store holds (its LSN at least the checkpoint's) whose log goes on past the store's
//! ([`StoreShard::restored_at`], after a kill -9) writes only the items that log changed,
//! and removes those it deleted. A store behind the checkpoint (the process killed after a
//! checkpoint was complete but before the store's thread had committed its version: in
//! practice the store is milliseconds behind and a checkpoint takes seconds to write) gets
//! every restored item again, but keeps an item deleted between the two until it is put or
//! deleted again. A different layout (shard count or process) finds no valid record and
//! writes everything; its first batch invalidates the records of the layout before it.
//!
//! The batches are committed on a thread of the store's own, in the order they were handed
//! over, so that the worker does not wait for them (a catch-up's version puts a million
//! items in one batch: seconds of the worker). What the store reads waits for the batches
//! handed over before.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};

use fjall::{Keyspace, PartitionCreateOptions, PartitionHandle};

use tidal_core::codec::{Cursor, decode_meta, encode_meta};
use tidal_core::record::ItemMeta;

use crate::snapshot::ItemChange;

/// The entity store could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot open the entity store at {}: {source}", path.display())]
pub struct StoreError {
    /// The keyspace directory.
    pub path: PathBuf,
    /// fjall's error.
    #[source]
    pub source: fjall::Error,
}

/// A fjall keyspace with the `items` partition.
pub struct EntityStore {
    partitions: Partitions,
    /// The thread that commits the batches, and the way to it (`None` where it could not
    /// be started: the batches are then committed by the caller).
    writer: Option<(mpsc::Sender<Job>, std::thread::JoinHandle<()>)>,
}

/// What the store's thread is asked to do.
enum Job {
    /// Commit a batch.
    Write(Vec<ItemChange>, Option<(StoreShard, u64)>),
    /// Answer once every batch before is committed.
    Flush(mpsc::SyncSender<()>),
}

/// The keyspace and the partitions a batch goes to.
#[derive(Clone)]
struct Partitions {
    keyspace: Keyspace,
    items: PartitionHandle,
    written: PartitionHandle,
    /// Item writes and removals committed since the store was opened.
    committed: Arc<AtomicU64>,
}

impl Partitions {
    /// Commits one batch; failures are logged, never fatal (the WAL replays).
    fn commit(&self, changes: &[ItemChange], shard: Option<&(StoreShard, u64)>) {
        let mut batch = self.keyspace.batch();
        if let Some((shard, lsn)) = shard {
            batch.insert(&self.written, LAYOUT, shard.layout.as_slice());
            batch.insert(&self.written, shard.key.as_slice(), lsn.to_le_bytes());
        }
        for c in changes {
            match c.meta() {
                Some(meta) => batch.insert(&self.items, c.id.as_bytes(), encode(meta)),
                None => batch.remove(&self.items, c.id.as_bytes()),
            }
        }
        match batch.commit() {
            Ok(()) => {
                self.committed.fetch_add(changes.len() as u64, Ordering::Relaxed);
            }
            Err(e) => tracing::warn!(error = %e, items = changes.len(), "entity store write failed"),
        }
    }
}

/// Where one shard writes in the store: its record's key and its layout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreShard {
    key: Vec<u8>,
    layout: Vec<u8>,
    /// The LSN of the checkpoint the shard's state is restored from, if any.
    restored: Option<u64>,
}

impl StoreShard {
    /// Shard `shard` (global worker index) of `shards`, in process `process` of `processes`.
    pub fn new(shard: usize, shards: usize, process: usize, processes: usize) -> StoreShard {
        StoreShard {
            key: format!("shard/{shard}").into_bytes(),
            layout: format!("{shards} shards, process {process} of {processes}").into_bytes(),
            restored: None,
        }
    }

    /// The same shard, its state restored from a checkpoint covering this process's WAL up
    /// to `lsn` (`None`: built from the log alone). Where the store already holds the items
    /// as of that LSN or later, the first version after the start writes only the items the
    /// log after the checkpoint changed, not every restored one again.
    #[must_use]
    pub fn restored_at(mut self, lsn: Option<u64>) -> StoreShard {
        self.restored = lsn;
        self
    }

    /// The restored checkpoint's LSN, if any.
    pub(crate) fn restored(&self) -> Option<u64> {
        self.restored
    }
}

/// The key of the layout that wrote last.
const LAYOUT: &[u8] = b"layout";

/// The first byte of a value in the binary form ([`encode_meta`]; a JSON value starts with
/// `{`). A change to that form takes a new marker. JSON formatted every embedding's floats
/// as decimal text: a million 64-dim items spent seconds of the sink's worker on it, and
/// the values were twice the size.
const BINARY: u8 = 0xB1;

/// An item's metadata as the store keeps it.
fn encode(meta: &ItemMeta) -> Vec<u8> {
    let dims = meta.embedding.as_ref().map_or(0, |e| e.0.len());
    let mut out = Vec::with_capacity(64 + 4 * dims);
    out.push(BINARY);
    encode_meta(&mut out, meta);
    out
}

/// Reads a stored value back: the binary form, or the JSON of a store written before it.
fn decode(bytes: &[u8]) -> Result<ItemMeta, String> {
    match bytes.split_first() {
        Some((&BINARY, rest)) => {
            let mut c = Cursor::new(rest);
            let meta = decode_meta(&mut c).map_err(|e| e.to_string())?;
            c.finish().map_err(|e| e.to_string())?;
            Ok(meta)
        }
        _ => serde_json::from_slice(bytes).map_err(|e| e.to_string()),
    }
}

impl std::fmt::Debug for EntityStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EntityStore").finish_non_exhaustive()
    }
}

impl EntityStore {
    /// Opens (or creates) the keyspace in directory `path`.
    pub fn open(path: &Path) -> Result<EntityStore, StoreError> {
        let err = |source| StoreError {
            path: path.to_path_buf(),
            source,
        };
        let keyspace = fjall::Config::new(path).open().map_err(err)?;
        let items = keyspace
            .open_partition("items", PartitionCreateOptions::default())
            .map_err(err)?;
        let written = keyspace
            .open_partition("written", PartitionCreateOptions::default())
            .map_err(err)?;
        let partitions = Partitions {
            keyspace,
            items,
            written,
            committed: Arc::new(AtomicU64::new(0)),
        };
        let (tx, rx) = mpsc::channel::<Job>();
        let on_thread = partitions.clone();
        let writer = std::thread::Builder::new()
            .name("tidal-store".into())
            .spawn(move || {
                for job in rx {
                    match job {
                        Job::Write(changes, shard) => on_thread.commit(&changes, shard.as_ref()),
                        Job::Flush(done) => {
                            let _ = done.send(());
                        }
                    }
                }
            })
            .map_err(|e| tracing::warn!(error = %e, "the entity store commits on the worker: no thread"))
            .ok()
            .map(|thread| (tx, thread));
        Ok(EntityStore { partitions, writer })
    }

    /// Waits until every batch handed over before is committed.
    pub fn flush(&self) {
        if let Some((tx, _)) = &self.writer {
            let (done, wait) = mpsc::sync_channel(1);
            if tx.send(Job::Flush(done)).is_ok() {
                let _ = wait.recv();
            }
        }
    }

    /// Item writes and removals committed since the store was opened (those handed over
    /// and not committed yet are not counted).
    pub fn items_committed(&self) -> u64 {
        self.partitions.committed.load(Ordering::Relaxed)
    }

    /// The LSN `shard`'s items are stored as of (at least), if its layout wrote last.
    pub fn written(&self, shard: &StoreShard) -> Option<u64> {
        self.flush();
        let layout = self.partitions.written.get(LAYOUT).ok().flatten()?;
        if *layout != *shard.layout {
            return None;
        }
        let lsn = self.partitions.written.get(&shard.key).ok().flatten()?;
        Some(u64::from_le_bytes(lsn.as_ref().try_into().ok()?))
    }

    /// Hands over a batch of item changes, committed on the store's thread after the ones
    /// before; failures are logged, never fatal (the WAL replays). With `shard`, records
    /// that its items are stored as of `lsn` (in the same batch).
    pub fn write(&self, changes: Vec<ItemChange>, shard: Option<(&StoreShard, u64)>) {
        if changes.is_empty() && shard.is_none() {
            return;
        }
        let job = Job::Write(changes, shard.map(|(s, lsn)| (s.clone(), lsn)));
        // Without a thread (or once it is gone), the caller commits.
        let job = match &self.writer {
            Some((tx, _)) => match tx.send(job) {
                Ok(()) => return,
                Err(mpsc::SendError(job)) => job,
            },
            None => job,
        };
        if let Job::Write(changes, shard) = job {
            self.partitions.commit(&changes, shard.as_ref());
        }
    }

    /// The stored metadata of an item id.
    pub fn get(&self, id: &str) -> Option<ItemMeta> {
        self.flush();
        match self.partitions.items.get(id.as_bytes()) {
            Ok(Some(bytes)) => match decode(&bytes) {
                Ok(meta) => Some(meta),
                Err(e) => {
                    tracing::warn!(id, error = %e, "undecodable item metadata in the entity store");
                    None
                }
            },
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(id, error = %e, "entity store read failed");
                None
            }
        }
    }
}

impl Drop for EntityStore {
    /// Every batch handed over is committed before the keyspace closes.
    fn drop(&mut self) {
        if let Some((tx, thread)) = self.writer.take() {
            drop(tx);
            if thread.join().is_err() {
                tracing::warn!("the entity store's thread panicked");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(id: &str, title: &str) -> ItemChange {
        ItemChange::put(
            id,
            ItemMeta {
                title: Some(title.into()),
                ..ItemMeta::default()
            },
        )
    }

    #[test]
    fn records_what_each_shard_wrote_for_its_layout_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (a0, a1) = (StoreShard::new(0, 2, 0, 1), StoreShard::new(1, 2, 0, 1));
        let b0 = StoreShard::new(0, 1, 0, 1);
        {
            let store = EntityStore::open(dir.path()).expect("open");
            assert_eq!(store.written(&a0), None, "nothing written yet");
            store.write(vec![put("x", "one")], Some((&a0, 7)));
            store.write(Vec::new(), Some((&a1, 9)));
            assert_eq!((store.written(&a0), store.written(&a1)), (Some(7), Some(9)));
            assert_eq!(store.written(&b0), None, "another layout has no record");
        }
        // Reopened: the records and the items are still there.
        let store = EntityStore::open(dir.path()).expect("reopen");
        assert_eq!(store.written(&a0), Some(7));
        assert_eq!(store.get("x").and_then(|m| m.title).as_deref(), Some("one"));
        // A batch of another layout makes the first layout's records invalid.
        store.write(vec![put("x", "two")], Some((&b0, 3)));
        assert_eq!(store.written(&b0), Some(3));
        assert_eq!((store.written(&a0), store.written(&a1)), (None, None));
        // Without a shard, nothing is recorded.
        store.write(vec![put("y", "three")], None);
        assert_eq!(store.written(&b0), Some(3));
        assert_eq!(store.get("y").and_then(|m| m.title).as_deref(), Some("three"));
    }

    #[test]
    fn metadata_is_read_back_whole_from_the_binary_form_and_from_a_json_value_written_before() {
        let dir = tempfile::tempdir().expect("tempdir");
        let meta = ItemMeta {
            creator: Some("ann".into()),
            title: Some("Piano \u{1F3B9} basics".into()),
            text: Some("scales, then chords".into()),
            category: Some("music".into()),
            tags: vec!["piano".into(), "beginner".into()],
            created_at: Some(1_700_000_000_123),
            embedding: Some(tidal_core::record::Embedding(vec![0.1, -2.5e-8, f32::MAX, 0.0])),
        };
        let store = EntityStore::open(dir.path()).expect("open");
        store.write(vec![ItemChange::put("m1", meta.clone())], None);
        store.flush();
        let stored = store.partitions.items.get(b"m1").expect("read").expect("present");
        assert_eq!(stored.first(), Some(&BINARY));
        assert_eq!(store.get("m1"), Some(meta.clone()));
        // A value as builds before the binary form wrote it.
        let json = serde_json::to_vec(&meta).expect("json");
        store.partitions.items.insert(b"old", json).expect("insert");
        assert_eq!(store.get("old"), Some(meta));
        // A damaged value is no metadata, not a panic.
        store
            .partitions
            .items
            .insert(b"bad", [BINARY, 0xFF, 0xFF])
            .expect("insert");
        assert_eq!(store.get("bad"), None);
    }
}
