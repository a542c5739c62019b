//! The text index as a checkpoint keeps it: tantivy's committed files and, per document, its
//! item id and a hash of its title and text ([`TextIndex::save`]). A start loads it
//! ([`TextIndex::restore_later`]); the first put of each item keeps the restored document
//! when its title and text hash the same, and once the recovery is visible the documents no
//! put confirmed are deleted ([`TextIndex::forget_unconfirmed`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use foldhash::fast::RandomState;
use tantivy::directory::{Directory, OwnedBytes, RamDirectory};
use tantivy::{Index, Term};
use tidal_core::codec::{Cursor, DecodeError, put_str, put_u64};

use super::{Live, TextIndex, Writer, reader_of, schema, writer_of};

/// What a saved index starts with (its format's version in the last byte).
const MAGIC: &[u8] = b"tidal-text\x01";

/// A save is left out while more changes than this wait for a commit (a catch-up's): the
/// commit it needs would hold the sink's changes back until they are all indexed.
pub(super) const SAVE_PENDING_MAX: usize = 1 << 16;

/// Why a saved index is not used.
#[derive(Debug, thiserror::Error)]
enum RestoreError {
    #[error("not a saved text index")]
    Magic,
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("file {0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error(transparent)]
    Tantivy(#[from] tantivy::TantivyError),
    #[error("its schema differs")]
    Schema,
}

impl TextIndex {
    /// The index as a checkpoint keeps it (`None`: empty, it could not be read, or a
    /// catch-up's changes are waiting for a commit): its committed files (what was pending is
    /// committed first) and, per document, the item id and the hash of the title and text it
    /// was made from.
    pub fn save(&self) -> Option<Vec<u8>> {
        let (files, docs) = {
            let mut w = self.writer.lock().ok()?;
            let locked = std::time::Instant::now();
            // Taken under the writer's lock, which a restore holds while it replaces it.
            let live = self.live();
            if w.indexed.is_empty() {
                return None;
            }
            if w.pending > SAVE_PENDING_MAX {
                tracing::debug!(
                    pending = w.pending,
                    "the text index is not saved while a catch-up's changes wait"
                );
                return None;
            }
            self.commit(&mut w, &live);
            let files = match committed_files(&live) {
                Ok(f) => f,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot save the text index; a restart rebuilds it");
                    return None;
                }
            };
            // Encoded here, under the lock (ids and hashes only); a restore's documents not
            // confirmed yet are still in the files: kept with their hashes.
            let count = w.indexed.len() + w.saved.len();
            let mut docs = Vec::with_capacity(8 + count * 24);
            put_u64(&mut docs, count as u64);
            for (id, (_, hash)) in &w.indexed {
                put_str(&mut docs, id);
                put_u64(&mut docs, *hash);
            }
            for (id, hash) in &w.saved {
                put_str(&mut docs, id);
                put_u64(&mut docs, *hash);
            }
            tracing::debug!(
                ms = locked.elapsed().as_secs_f64() * 1e3,
                docs = count,
                "text index saved under the writer's lock"
            );
            (files, docs)
        };
        let mut out =
            Vec::with_capacity(MAGIC.len() + files.iter().map(|f| f.1.len() + 64).sum::<usize>() + docs.len());
        out.extend_from_slice(MAGIC);
        put_u64(&mut out, files.len() as u64);
        for (path, bytes) in &files {
            put_str(&mut out, &path.to_string_lossy());
            put_u64(&mut out, bytes.len() as u64);
            out.extend_from_slice(bytes.as_slice());
        }
        out.extend_from_slice(&docs);
        Some(out)
    }

    /// Replaces this (still empty) index with one [`save`](Self::save)d by a checkpoint, on a
    /// thread of its own: that thread holds the writer's lock from before this returns until
    /// the index is in, so the changes handed over meanwhile wait for it. A damaged or
    /// incompatible one is left out with a warning (the restored items index again).
    pub fn restore_later(self: &Arc<Self>, bytes: Vec<u8>) {
        let this = self.clone();
        let (locked, wait) = std::sync::mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("tidal-text-load".into())
            .spawn(move || {
                let mut guard = this.writer.lock().unwrap_or_else(|p| p.into_inner());
                let _ = locked.send(());
                if let Err(e) = this.restore_into(&mut guard, &bytes) {
                    tracing::warn!(error = %e, "the checkpoint's text index is not used; the items index again");
                }
            });
        match spawned {
            Ok(_) => {
                let _ = wait.recv();
            }
            Err(e) => tracing::warn!(error = %e, "cannot start a thread to load the text index; it is rebuilt"),
        }
    }

    fn restore_into(&self, w: &mut Writer, bytes: &[u8]) -> Result<(), RestoreError> {
        let mut c = Cursor::new(bytes);
        if c.take(MAGIC.len(), "magic")? != MAGIC {
            return Err(RestoreError::Magic);
        }
        let dir = RamDirectory::create();
        let mut segment_files = Vec::new();
        for _ in 0..c.u64("files")? {
            let path = PathBuf::from(c.string("file name")?);
            let len = c.u64("file length")?;
            let data = c.take(usize::try_from(len).unwrap_or(usize::MAX), "file")?;
            dir.atomic_write(&path, data)
                .map_err(|e| RestoreError::Io(path.clone(), e))?;
            if path != Path::new("meta.json") {
                segment_files.push(path);
            }
        }
        // The segments' files as tantivy's own: removed once merged away.
        let managed =
            serde_json::to_vec(&segment_files).map_err(|e| RestoreError::Io(".managed.json".into(), e.into()))?;
        dir.atomic_write(Path::new(".managed.json"), &managed)
            .map_err(|e| RestoreError::Io(".managed.json".into(), e))?;
        let docs = c.u64("documents")?;
        let mut saved: HashMap<Box<str>, u64, RandomState> =
            HashMap::with_capacity_and_hasher(c.room_for(docs, 9), RandomState::default());
        for _ in 0..docs {
            let id = c.string("document id")?;
            saved.insert(id.into_boxed_str(), c.u64("document hash")?);
        }
        c.finish()?;
        let index = Index::open(dir.clone())?;
        let (schema, ..) = schema();
        if index.schema() != schema {
            return Err(RestoreError::Schema);
        }
        let reader = reader_of(&index)?;
        let writer = writer_of(&index, self.exact)?;
        // Nothing was applied before the restore: the empty index is dropped.
        w.writer = Some(writer);
        w.saved = saved;
        w.indexed.clear();
        w.pending = 0;
        self.written.store(0, Ordering::Relaxed);
        *self.live.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(Live {
            index,
            files: dir,
            reader: Some(reader),
        });
        Ok(())
    }

    /// Deletes the documents of a restored index that no put confirmed (items deleted, or
    /// put after the checkpoint's frontier and not again), once a start has recovered, and
    /// makes everything searchable.
    pub fn forget_unconfirmed(&self) {
        let Ok(mut guard) = self.writer.lock() else { return };
        let live = self.live();
        let w = &mut *guard;
        let saved = std::mem::take(&mut w.saved);
        if let Some(writer) = w.writer.as_mut() {
            for id in saved.keys() {
                writer.delete_term(Term::from_field_text(self.id, id));
            }
            w.pending += saved.len();
            self.changes.fetch_add(saved.len() as u64, Ordering::Relaxed);
        }
        self.commit(w, &live);
    }
}

/// The files of `index`'s last commit, with their bytes: its `meta.json` and each segment's.
/// A merge in the background may remove a segment's files meanwhile: tried again then.
fn committed_files(live: &Live) -> tantivy::Result<Vec<(PathBuf, OwnedBytes)>> {
    let mut tries = 0;
    loop {
        match try_committed_files(live) {
            Err(e) if tries < 3 => {
                tries += 1;
                tracing::debug!(error = %e, "the text index changed while it was saved; trying again");
            }
            done => return done,
        }
    }
}

fn try_committed_files(live: &Live) -> tantivy::Result<Vec<(PathBuf, OwnedBytes)>> {
    let dir = &live.files;
    let metas = live.index.load_metas()?;
    let mut meta = serde_json::to_vec_pretty(&metas).map_err(|e| tantivy::TantivyError::SystemError(e.to_string()))?;
    meta.push(b'\n');
    let mut files = vec![(PathBuf::from("meta.json"), OwnedBytes::new(meta))];
    for segment in &metas.segments {
        let mut paths: Vec<PathBuf> = segment.list_files().into_iter().collect();
        paths.sort();
        for path in paths {
            // A segment lacks some of its possible files (no deletes, say).
            if !dir.exists(&path)? {
                continue;
            }
            // The file's bytes shared, not copied (the copy is made after the writer's lock
            // is let go; a merge removing the file meanwhile leaves these bytes alive).
            let bytes = dir.open_read(&path)?.read_bytes()?;
            files.push((path, bytes));
        }
    }
    Ok(files)
}
