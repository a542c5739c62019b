//! One shard's approximate nearest-item index: usearch (HNSW, cosine) over the embeddings of
//! the shard's listable items, keyed by item key.
//!
//! The index is not versioned: every version of a shard shares it. The sink hands it the
//! embeddings that changed as it cuts each version ([`Ann::apply`]), and a thread of its own
//! inserts them, a few at a time, so neither the dataflow (a million inserts take minutes)
//! nor the readers (each search takes the index's lock) wait for a large batch. A reader may
//! thus be offered an item embedded after the version it reads, or miss one embedded just
//! before: it checks every key against its version and scores candidates by that version's
//! embeddings, so only the candidate set is approximate, never a score; a read with
//! `min_lsn` waits (bounded) until the index has caught up with its version
//! ([`Ann::wait_for`]).
//!
//! A checkpoint keeps the index ([`Ann::save`], with a hash of each item's embedding), and a
//! start loads it ([`Ann::restore`]): the embeddings the restored state hands over again are
//! inserted only where their hash differs, so a restart does not rebuild the graph, and the
//! items the restored state does not hand over are taken out once it has
//! ([`Ann::forget_unconfirmed`]). So a checkpoint's copy may lag its state (by the changes
//! still waiting when it was saved, or by those after an older copy a checkpoint kept instead
//! of saving the index again, [`Ann::changes`]): a restart brings it up to date.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tidal_core::flow::ItemKey;
use tidal_core::record::{Embedding, ItemMeta};
use tidal_core::time::Time;
use usearch::{Index, IndexOptions, MetricKind, ScalarKind};

/// The index grows by at least this many slots at a time.
const GROW: usize = 1024;
/// Inserts per hold of the index's lock.
const CHUNK: usize = 32;
/// Candidates examined per insert (usearch's default is 128: twice as slow to build, for a
/// recall that re-scored candidates do not need).
const EXPANSION_ADD: usize = 64;

/// Embedding changes: per item key, `Some(e)` puts (or replaces), `None` takes out.
pub type EmbeddingChanges = Vec<(ItemKey, Option<Embedded>)>;

/// An embedding handed to the index: the item's metadata that holds it, shared with the
/// versions, not copied (the index may be minutes behind a million puts, and the copies
/// waited in its inbox meanwhile).
#[derive(Clone, Debug)]
pub struct Embedded(Arc<ItemMeta>);

impl Embedded {
    /// The embedding of `meta`, if it has one.
    pub fn of(meta: &Arc<ItemMeta>) -> Option<Embedded> {
        meta.embedding.is_some().then(|| Embedded(meta.clone()))
    }

    fn vector(&self) -> &[f32] {
        self.0.embedding.as_ref().map_or(&[], |e| e.0.as_slice())
    }
}

impl From<Vec<f32>> for Embedded {
    /// An embedding alone (metadata with nothing else).
    fn from(v: Vec<f32>) -> Embedded {
        Embedded(Arc::new(ItemMeta {
            embedding: Some(Embedding(v)),
            ..ItemMeta::default()
        }))
    }
}

/// What the applier thread is handed.
enum Job {
    /// One version's embedding changes.
    Apply(Time, EmbeddingChanges),
    /// Take out the items of a restored index that no change has named since.
    Forget,
}

/// A shard's nearest-item index (see the module docs).
#[derive(Default)]
pub struct Ann {
    inner: Arc<Inner>,
    /// The applier thread's inbox, started with the first batch.
    tx: Mutex<Option<Sender<Job>>>,
    /// Switched off: nothing is applied (no reader will search it).
    off: AtomicBool,
}

#[derive(Default)]
struct Inner {
    /// Inserts and loads write; searches and saves read, so a checkpoint's save (a copy of
    /// the whole graph, hundreds of milliseconds at a million items) does not hold searches
    /// back.
    index: RwLock<Indexed>,
    /// usearch's own thread contexts are sized at `reserve`: searches are serialised here
    /// rather than relying on that count matching the readers.
    searching: Mutex<()>,
    /// The frontier of the last version handed over, and of the last one applied.
    queued: AtomicU64,
    applied: AtomicU64,
    /// Items inserted into the graph (not counting those a restored index already held).
    inserted: AtomicU64,
    /// Items put into or taken out of the graph since it was created (a restored index's own
    /// not counted): it only grows.
    changes: AtomicU64,
    /// Embedding changes handed over and not applied yet (what a restart would insert again
    /// were the index saved now).
    waiting: AtomicU64,
    /// While set, the applier inserts nothing (a recovery keeps both cores for the dataflow).
    held: AtomicBool,
}

/// The index and what it holds.
#[derive(Default)]
struct Indexed {
    /// Created at the first embedding (its length fixes the dimension).
    index: Option<Index>,
    /// Per item key in the index, a hash of the embedding it was inserted with.
    hashes: HashMap<ItemKey, u64>,
    /// The keys of a restored index that no change has named since it was loaded.
    unconfirmed: HashSet<ItemKey>,
}

/// The first bytes of a saved index.
const MAGIC: &[u8; 8] = b"tidalann";

/// A hash of an embedding's bits.
fn embedding_hash(e: &[f32]) -> u64 {
    let mut h = blake3::Hasher::new();
    for x in e {
        h.update(&x.to_bits().to_le_bytes());
    }
    let mut out = [0u8; 8];
    out.copy_from_slice(&h.finalize().as_bytes()[..8]);
    u64::from_le_bytes(out)
}

fn options(dimensions: usize) -> IndexOptions {
    IndexOptions {
        dimensions,
        metric: MetricKind::Cos,
        quantization: ScalarKind::BF16,
        expansion_add: EXPANSION_ADD,
        ..IndexOptions::default()
    }
}

impl std::fmt::Debug for Ann {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ann").field("len", &self.len()).finish()
    }
}

impl Ann {
    /// Hands over the embedding changes of the version at `frontier`: `Some(e)` puts (or
    /// replaces) an item's embedding, `None` takes it out. Embeddings of another dimension
    /// than the index's are left out (the write path refuses them).
    pub fn apply(&self, frontier: Time, changes: EmbeddingChanges) {
        if changes.is_empty() || self.off.load(Ordering::Relaxed) {
            return;
        }
        self.inner.queued.fetch_max(frontier, Ordering::SeqCst);
        let Ok(mut tx) = self.tx.lock() else { return };
        let count = changes.len() as u64;
        if tx.is_none() {
            let (sender, receiver) = channel();
            let inner = self.inner.clone();
            let spawned = std::thread::Builder::new()
                .name("tidal-ann".into())
                .spawn(move || applier(&inner, &receiver));
            match spawned {
                Ok(_) => *tx = Some(sender),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot start the nearest-item index thread; applying inline");
                    self.inner.insert(&changes);
                    self.inner.applied.fetch_max(frontier, Ordering::SeqCst);
                    return;
                }
            }
        }
        if let Some(sender) = tx.as_ref() {
            self.inner.waiting.fetch_add(count, Ordering::Relaxed);
            if sender.send(Job::Apply(frontier, changes)).is_err() {
                self.inner.waiting.fetch_sub(count, Ordering::Relaxed);
                tracing::warn!("the nearest-item index thread stopped");
            }
        }
    }

    /// Holds the inserts back (`true`) until released (`false`): what is handed over
    /// meanwhile waits in the inbox. A recovery holds them, so that the dataflow has the
    /// cores to itself until it serves.
    pub fn hold(&self, held: bool) {
        self.inner.held.store(held, Ordering::Release);
    }

    /// Switches the index off for good: changes handed over are dropped, searches find
    /// nothing (a replay whose queries never ask it does not spend a core building it).
    pub fn switch_off(&self) {
        self.off.store(true, Ordering::Relaxed);
    }

    /// Waits up to `wait` until every change of the versions up to `frontier` handed over is
    /// in the index; whether it is.
    pub fn wait_for(&self, frontier: Time, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        loop {
            let applied = self.inner.applied.load(Ordering::SeqCst);
            let queued = self.inner.queued.load(Ordering::SeqCst);
            if applied >= queued.min(frontier) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    /// What [`save_into`](Self::save_into) writes, in memory whole (`None`: empty): what
    /// the tests compare a checkpoint's save with.
    #[cfg(test)]
    fn save(&self) -> Option<Vec<u8>> {
        let guard = self.inner.index.read().ok()?;
        let index = guard.index.as_ref().filter(|i| i.size() > 0)?;
        let len = index.serialized_length();
        let mut out = Vec::with_capacity(MAGIC.len() + 24 + 16 * guard.hashes.len() + len);
        write_head(&guard, index, len as u64, &mut out).ok()?;
        let at = out.len();
        out.resize(at + len, 0);
        if let Err(e) = index.save_to_buffer(&mut out[at..]) {
            tracing::warn!(error = %e, "cannot save the nearest-item index; a restart rebuilds it");
            return None;
        }
        Some(out)
    }

    /// The index as a checkpoint keeps it: what the applier has inserted so far, each item
    /// with its embedding's hash (what it has not inserted yet is inserted after a restart,
    /// like any embedding the index lacks), written into `w` without holding it in memory:
    /// the graph goes through the file `scratch` (removed afterwards). A checkpoint's copy of a
    /// million 64-dim items is ~300 MB: allocated, faulted in and freed at once, it held the
    /// process's other threads (a single-signal POST waited up to ~200 ms). Whether anything
    /// was written (not when the index is empty).
    pub fn save_into(&self, scratch: &std::path::Path, w: &mut dyn std::io::Write) -> std::io::Result<bool> {
        let Ok(guard) = self.inner.index.read() else {
            return Ok(false);
        };
        let Some(index) = guard.index.as_ref().filter(|i| i.size() > 0) else {
            return Ok(false);
        };
        let path = scratch
            .to_str()
            .ok_or_else(|| std::io::Error::other("a scratch path that is not UTF-8"))?;
        let saved = index
            .save(path)
            .map_err(|e| std::io::Error::other(format!("cannot save the nearest-item index: {e}")));
        let copied = saved.and_then(|()| {
            let mut file = std::fs::File::open(scratch)?;
            let len = file.metadata()?.len();
            write_head(&guard, index, len, w)?;
            let copied = std::io::copy(&mut file, w)?;
            if copied == len {
                Ok(())
            } else {
                Err(std::io::Error::other(
                    "the saved nearest-item index changed while it was copied",
                ))
            }
        });
        let _ = std::fs::remove_file(scratch);
        let waiting = self.waiting();
        if copied.is_ok() && waiting > 0 {
            tracing::info!(
                waiting,
                "the nearest-item index is saved without the embedding changes still waiting; a restart from this checkpoint inserts them"
            );
        }
        copied.map(|()| true)
    }

    /// Loads an index [`save_into`](Self::save_into) wrote for a checkpoint, before anything is applied.
    /// A damaged one is left out with a warning (the restored embeddings rebuild it). A
    /// start uses [`restore_later`](Self::restore_later).
    #[cfg(test)]
    fn restore(&self, bytes: &[u8]) {
        if let Ok(mut guard) = self.inner.index.write() {
            load_into(&mut guard, bytes);
        }
    }

    /// [`restore`](Self::restore) on a thread of its own, so that a start goes on loading the
    /// rest of its checkpoint meanwhile. That thread holds the index's lock from before this
    /// returns until the index is in: inserts (the embeddings handed over meantime are
    /// checked against the loaded index), saves and searches wait for it.
    pub fn restore_later(&self, bytes: Vec<u8>) {
        let inner = self.inner.clone();
        let (locked, wait) = channel();
        let spawned = std::thread::Builder::new()
            .name("tidal-ann-load".into())
            .spawn(move || {
                let mut guard = inner.index.write().unwrap_or_else(|p| p.into_inner());
                let _ = locked.send(());
                load_into(&mut guard, &bytes);
            });
        match spawned {
            Ok(_) => {
                let _ = wait.recv();
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot start a thread to load the nearest-item index; it is rebuilt")
            }
        }
    }

    /// Up to `count` item keys nearest to `query` among those `admit` accepts, nearest first;
    /// `slack`: how many of the nearest `admit` is expected to refuse (see below).
    pub fn search(&self, query: &[f32], count: usize, slack: usize, admit: impl Fn(ItemKey) -> bool) -> Vec<ItemKey> {
        let Ok(_searching) = self.inner.searching.lock() else {
            return Vec::new();
        };
        let Ok(guard) = self.inner.index.read() else {
            return Vec::new();
        };
        let Some(index) = guard.index.as_ref() else {
            return Vec::new();
        };
        if query.len() != index.dimensions() || count == 0 {
            return Vec::new();
        }
        // Most keys near a query are admitted (a user has seen or hidden a few items): a
        // search without the filter, for `slack` more, is filtered afterwards, so the filter
        // reads `count + slack` items instead of every node the graph search visits (each a
        // lookup in the version). Only when too few pass is the graph searched with it, and
        // at once when more are expected to fail than are asked for.
        let want = count.saturating_add(slack);
        if slack <= count
            && let Ok(m) = index.search(query, want)
        {
            let found = m.keys.len();
            let admitted: Vec<ItemKey> = m.keys.into_iter().filter(|k| admit(*k)).take(count).collect();
            if admitted.len() == count || found < want {
                return admitted;
            }
        }
        match index.filtered_search(query, count, admit) {
            Ok(m) => m.keys,
            Err(e) => {
                tracing::warn!(error = %e, "nearest-item search failed");
                Vec::new()
            }
        }
    }

    /// Embedding changes handed over and not in the index yet (inserts wait while a
    /// recovery runs, and a million of them take minutes).
    pub fn waiting(&self) -> u64 {
        self.inner.waiting.load(Ordering::Relaxed)
    }

    /// Items this index inserted since it was created or restored (those a restored index
    /// held with the same embedding are not inserted again).
    pub fn inserted(&self) -> u64 {
        self.inner.inserted.load(Ordering::Relaxed)
    }

    /// Items put into or taken out of the graph since it was created (a restored index's own
    /// not counted): how far the index has moved from a copy saved when the count was lower.
    pub fn changes(&self) -> u64 {
        self.inner.changes.load(Ordering::Relaxed)
    }

    /// Takes out the items of a restored index that no change has named since it was
    /// loaded (items deleted after the copy was saved), after the changes handed over so far:
    /// called once a start has handed over its restored state.
    pub fn forget_unconfirmed(&self) {
        if self.off.load(Ordering::Relaxed) {
            return;
        }
        let Ok(tx) = self.tx.lock() else { return };
        match tx.as_ref() {
            Some(sender) if sender.send(Job::Forget).is_ok() => {}
            _ => self.inner.forget(),
        }
    }

    /// Items indexed.
    pub fn len(&self) -> usize {
        self.inner
            .index
            .read()
            .ok()
            .and_then(|g| g.index.as_ref().map(Index::size))
            .unwrap_or(0)
    }

    /// Whether no item is indexed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What precedes a saved graph of `len` bytes: the magic, the dimension, and each item with
/// its embedding's hash (in key order).
fn write_head(indexed: &Indexed, index: &Index, len: u64, w: &mut dyn std::io::Write) -> std::io::Result<()> {
    let mut out = Vec::with_capacity(MAGIC.len() + 24 + 16 * indexed.hashes.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(index.dimensions() as u64).to_le_bytes());
    out.extend_from_slice(&(indexed.hashes.len() as u64).to_le_bytes());
    let mut hashes: Vec<(&ItemKey, &u64)> = indexed.hashes.iter().collect();
    hashes.sort_unstable();
    for (k, h) in hashes {
        out.extend_from_slice(&k.to_le_bytes());
        out.extend_from_slice(&h.to_le_bytes());
    }
    out.extend_from_slice(&len.to_le_bytes());
    w.write_all(&out)
}

/// A saved index read back into `indexed`; a damaged one is left out with a warning.
fn load_into(indexed: &mut Indexed, bytes: &[u8]) {
    match parse(bytes) {
        Ok(loaded) => *indexed = loaded,
        Err(e) => tracing::warn!(error = %e, "the checkpoint's nearest-item index is left out; it is rebuilt"),
    }
}

/// A saved index read back.
fn parse(bytes: &[u8]) -> Result<Indexed, String> {
    struct Reader<'b>(&'b [u8]);
    impl<'b> Reader<'b> {
        fn take(&mut self, n: usize) -> Result<&'b [u8], String> {
            if self.0.len() < n {
                return Err("the saved index is cut short".into());
            }
            let (head, rest) = self.0.split_at(n);
            self.0 = rest;
            Ok(head)
        }
        fn u64(&mut self) -> Result<u64, String> {
            let mut b = [0u8; 8];
            b.copy_from_slice(self.take(8)?);
            Ok(u64::from_le_bytes(b))
        }
        fn usize(&mut self) -> Result<usize, String> {
            usize::try_from(self.u64()?).map_err(|e| e.to_string())
        }
    }
    let mut r = Reader(bytes);
    if r.take(MAGIC.len())? != MAGIC {
        return Err("not a saved nearest-item index".into());
    }
    let dims = r.usize()?;
    let n = r.u64()?;
    let mut hashes = HashMap::new();
    for _ in 0..n {
        let k = r.u64()?;
        hashes.insert(k, r.u64()?);
    }
    let len = r.usize()?;
    let body = r.take(len)?;
    let index = Index::new(&options(dims)).map_err(|e| e.to_string())?;
    index.load_from_buffer(body).map_err(|e| e.to_string())?;
    if index.size() != hashes.len() {
        return Err(format!("{} items, {} hashes", index.size(), hashes.len()));
    }
    let unconfirmed = hashes.keys().copied().collect();
    Ok(Indexed {
        index: Some(index),
        hashes,
        unconfirmed,
    })
}

/// The applier thread: inserts each batch a chunk per lock hold, until the sender goes.
fn applier(inner: &Inner, inbox: &Receiver<Job>) {
    while let Ok(job) = inbox.recv() {
        let (frontier, changes) = match job {
            Job::Apply(frontier, changes) => (frontier, changes),
            Job::Forget => {
                inner.forget();
                continue;
            }
        };
        for chunk in changes.chunks(CHUNK) {
            while inner.held.load(Ordering::Acquire) {
                std::thread::sleep(Duration::from_millis(10));
            }
            inner.insert(chunk);
            inner.waiting.fetch_sub(chunk.len() as u64, Ordering::Relaxed);
        }
        inner.applied.fetch_max(frontier, Ordering::SeqCst);
    }
}

impl Inner {
    /// See [`Ann::forget_unconfirmed`].
    fn forget(&self) {
        let Ok(mut guard) = self.index.write() else { return };
        let indexed = &mut *guard;
        let stale = std::mem::take(&mut indexed.unconfirmed);
        let Some(index) = indexed.index.as_ref() else { return };
        for key in &stale {
            indexed.hashes.remove(key);
            if index.remove(*key).is_ok() {
                self.changes.fetch_add(1, Ordering::Relaxed);
            }
        }
        if !stale.is_empty() {
            tracing::info!(
                items = stale.len(),
                "items the restored nearest-item index held and the restored state did not are taken out"
            );
        }
    }

    fn insert(&self, changes: &[(ItemKey, Option<Embedded>)]) {
        let Ok(mut guard) = self.index.write() else { return };
        let Indexed {
            index,
            hashes,
            unconfirmed,
        } = &mut *guard;
        if index.is_none() {
            let Some(dim) = changes.iter().find_map(|(_, e)| e.as_ref().map(|e| e.vector().len())) else {
                return;
            };
            match Index::new(&options(dim)) {
                Ok(created) => *index = Some(created),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot create the nearest-item index; for_you uses its other sources");
                    return;
                }
            }
        }
        let Some(index) = index.as_ref() else { return };
        for (key, embedding) in changes {
            if !unconfirmed.is_empty() {
                unconfirmed.remove(key);
            }
            let embedding = embedding.as_ref().map(Embedded::vector);
            let hash = embedding.map(embedding_hash);
            if hash.is_some() && hashes.get(key) == hash.as_ref() {
                // Already in with this embedding (a restored index).
                continue;
            }
            if hashes.remove(key).is_some() || index.contains(*key) {
                let _ = index.remove(*key);
                self.changes.fetch_add(1, Ordering::Relaxed);
            }
            let (Some(e), Some(hash)) = (embedding, hash) else {
                continue;
            };
            if e.len() != index.dimensions() {
                continue;
            }
            if index.size() + 1 > index.capacity() {
                let want = (index.capacity() * 2).max(index.size() + GROW);
                if let Err(e) = index.reserve(want) {
                    tracing::warn!(error = %e, "cannot grow the nearest-item index");
                    return;
                }
            }
            match index.add(*key, e) {
                Ok(()) => {
                    hashes.insert(*key, hash);
                    self.inserted.fetch_add(1, Ordering::Relaxed);
                    self.changes.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => tracing::warn!(error = %e, key, "cannot add an item to the nearest-item index"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    pub(super) fn changes(vectors: &[(ItemKey, Option<Vec<f32>>)]) -> EmbeddingChanges {
        vectors
            .iter()
            .map(|(k, v)| (*k, v.clone().map(Embedded::from)))
            .collect()
    }

    fn cos(a: &[f32], b: &[f32]) -> f64 {
        let dot: f64 = a.iter().zip(b).map(|(x, y)| f64::from(*x) * f64::from(*y)).sum();
        let na: f64 = a.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
        let nb: f64 = b.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
        dot / (na * nb)
    }

    #[test]
    fn finds_most_true_neighbours_and_follows_changes() {
        let mut rng = StdRng::seed_from_u64(7);
        let ann = Ann::default();
        let vectors: Vec<(ItemKey, Option<Vec<f32>>)> = (0..3000u64)
            .map(|k| (k, Some((0..16).map(|_| rng.gen_range(-1.0f32..1.0)).collect())))
            .collect();
        ann.apply(1, changes(&vectors));
        assert!(ann.wait_for(1, Duration::from_secs(60)), "applied in time");
        assert_eq!(ann.len(), 3000);
        // Recall@20 against an exact scan, over odd keys only: searched with the filter
        // (no slack: half the nearest fail it), and without it for 40 more, then filtered.
        for slack in [0, 40] {
            let mut found = 0;
            for _ in 0..20 {
                let q: Vec<f32> = (0..16).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
                let mut exact: Vec<(f64, ItemKey)> = vectors
                    .iter()
                    .filter(|(k, _)| k % 2 == 1)
                    .map(|(k, v)| (cos(&q, v.as_deref().unwrap_or_default()), *k))
                    .collect();
                exact.sort_by(|a, b| b.0.total_cmp(&a.0));
                let want: Vec<ItemKey> = exact.iter().take(20).map(|e| e.1).collect();
                let got = ann.search(&q, 20, slack, |k| k % 2 == 1);
                assert!(got.iter().all(|k| k % 2 == 1), "the filter holds");
                assert_eq!(got.len(), 20);
                found += got.iter().filter(|k| want.contains(k)).count();
            }
            assert!(found >= 20 * 20 * 9 / 10, "slack {slack}: recall@20 {found}/400");
        }
        // Removed and replaced items follow.
        let target: Vec<f32> = vec![1.0; 16];
        ann.apply(2, vec![(5, Some(target.clone().into())), (7, None)]);
        assert!(ann.wait_for(2, Duration::from_secs(10)));
        assert_eq!(ann.len(), 2999);
        assert_eq!(ann.search(&target, 1, 0, |_| true), vec![5]);
        assert!(!ann.search(&target, 3000, 0, |_| true).contains(&7));

        // Saved and restored: the same answers, and handing the same embeddings over again
        // inserts nothing (a changed one is replaced).
        let saved = ann.save().expect("saved");
        // A checkpoint's save, through a scratch file, writes the same bytes.
        let dir = tempfile::tempdir().expect("tempdir");
        let scratch = dir.path().join("scratch");
        let mut streamed = Vec::new();
        assert!(ann.save_into(&scratch, &mut streamed).expect("streamed"));
        assert!(streamed == saved, "the streamed save differs");
        assert!(!scratch.exists(), "the scratch file is removed");
        assert!(!Ann::default().save_into(&scratch, &mut Vec::new()).expect("empty"));
        let restored = Ann::default();
        restored.restore(&saved);
        assert_eq!(restored.len(), 2999);
        let q: Vec<f32> = (0..16).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
        assert_eq!(restored.search(&q, 20, 0, |_| true), ann.search(&q, 20, 0, |_| true));
        let mut again = vectors.clone();
        again.retain(|(k, _)| *k != 7 && *k != 5);
        again.push((5, Some(target.clone())));
        let moved: Vec<f32> = vec![-1.0; 16];
        again.push((11, Some(moved.clone())));
        let started = Instant::now();
        restored.apply(3, changes(&again));
        assert!(restored.wait_for(3, Duration::from_secs(10)));
        assert_eq!(restored.len(), 2999);
        assert_eq!(
            restored.search(&moved, 1, 0, |_| true),
            vec![11],
            "the changed one moved"
        );
        assert_eq!(restored.search(&target, 1, 0, |_| true), vec![5]);
        assert!(started.elapsed() < Duration::from_secs(5), "nothing rebuilt");
        assert_eq!(restored.inserted(), 1, "only the changed one inserted");
        // Loaded on a thread of its own, with changes handed over at once: they wait for it.
        let later = Ann::default();
        later.restore_later(saved.clone());
        later.apply(3, changes(&again));
        assert!(later.wait_for(3, Duration::from_secs(10)));
        assert_eq!(later.len(), 2999);
        assert_eq!(later.inserted(), 1, "checked against the loaded index");
        assert_eq!(later.search(&moved, 1, 0, |_| true), vec![11]);
        assert_eq!(later.search(&q, 20, 0, |_| true), restored.search(&q, 20, 0, |_| true));
        // Saved while a load is under way: the loaded index is what is saved.
        let loading = Ann::default();
        loading.restore_later(saved.clone());
        let again_saved = loading.save().expect("saved after the load");
        let reloaded = Ann::default();
        reloaded.restore(&again_saved);
        assert_eq!(reloaded.len(), 2999);
        // A damaged save is left out.
        let broken = Ann::default();
        broken.restore(&saved[..saved.len() / 2]);
        assert!(broken.is_empty());
    }
}

#[cfg(test)]
mod control {
    use super::*;

    fn some(n: u64) -> EmbeddingChanges {
        (0..n)
            .map(|k| (k, Some(Embedded::from(vec![k as f32 + 1.0, 1.0, -(k as f32)]))))
            .collect()
    }

    #[test]
    fn a_held_index_inserts_nothing_until_released() {
        let ann = Ann::default();
        ann.hold(true);
        ann.apply(1, some(50));
        assert!(!ann.wait_for(1, Duration::from_millis(200)), "held: not applied");
        assert_eq!(ann.len(), 0);
        assert_eq!(ann.waiting(), 50, "every change handed over waits");
        ann.apply(2, some(20));
        assert_eq!(ann.waiting(), 70);
        ann.hold(false);
        assert!(ann.wait_for(2, Duration::from_secs(30)), "released: applied");
        assert_eq!(ann.len(), 50);
        assert_eq!(ann.waiting(), 0, "none left once applied");
    }

    /// A save reads the index as searches do: a search runs while a save holds the index
    /// (a checkpoint's copy of a large graph held for_you back for up to a second), and an
    /// insert waits for both.
    #[test]
    fn searches_go_on_while_a_save_holds_the_index() {
        let ann = Arc::new(Ann::default());
        ann.apply(1, some(50));
        assert!(ann.wait_for(1, Duration::from_secs(30)));
        let saving = ann.inner.index.read().expect("a save's hold");
        let (done, found) = channel();
        let searcher = ann.clone();
        std::thread::spawn(move || {
            let _ = done.send(searcher.search(&[1.0, 1.0, 0.0], 5, 0, |_| true).len());
        });
        assert_eq!(
            found.recv_timeout(Duration::from_secs(10)),
            Ok(5),
            "the search waited for the save"
        );
        ann.apply(2, some(60));
        assert!(
            !ann.wait_for(2, Duration::from_millis(200)),
            "an insert waits for the save"
        );
        drop(saving);
        assert!(ann.wait_for(2, Duration::from_secs(30)));
        assert_eq!(ann.len(), 60);
    }

    #[test]
    fn a_switched_off_index_takes_nothing_and_waits_for_nothing() {
        let ann = Ann::default();
        ann.switch_off();
        ann.apply(1, some(50));
        assert!(ann.wait_for(1, Duration::ZERO));
        assert_eq!(ann.len(), 0);
        assert!(ann.search(&[1.0, 1.0, 0.0], 5, 0, |_| true).is_empty());
    }

    #[test]
    fn an_embedding_is_shared_not_copied() {
        let meta = Arc::new(ItemMeta {
            embedding: Some(Embedding(vec![0.5, 0.5])),
            ..ItemMeta::default()
        });
        let e = Embedded::of(&meta).expect("has an embedding");
        assert!(std::ptr::eq(
            e.vector().as_ptr(),
            meta.embedding.as_ref().map_or(&[][..], |e| &e.0[..]).as_ptr()
        ));
        assert!(Embedded::of(&Arc::new(ItemMeta::default())).is_none());
    }
}

#[cfg(test)]
mod speed {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    #[test]
    #[ignore = "a measurement: cargo test --release -p tidal-sinks --lib speed -- --ignored --nocapture"]
    fn insert_rate() {
        let mut rng = StdRng::seed_from_u64(1);
        let n = 100_000u64;
        let vectors: Vec<(ItemKey, Option<Vec<f32>>)> = (0..n)
            .map(|k| (k, Some((0..64).map(|_| rng.gen_range(-1.0f32..1.0)).collect())))
            .collect();
        let ann = Ann::default();
        let t = Instant::now();
        ann.apply(1, super::tests::changes(&vectors));
        assert!(ann.wait_for(1, Duration::from_secs(600)));
        let secs = t.elapsed().as_secs_f64();
        println!("{n} inserts in {secs:.2} s: {:.0}/s", n as f64 / secs);
        // Recall@100 against an exact scan.
        let cos = |a: &[f32], b: &[f32]| -> f64 {
            let dot: f64 = a.iter().zip(b).map(|(x, y)| f64::from(*x) * f64::from(*y)).sum();
            let na: f64 = a.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
            let nb: f64 = b.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
            dot / (na * nb)
        };
        let mut rng = StdRng::seed_from_u64(1);
        let vectors: Vec<Vec<f32>> = (0..n)
            .map(|_| (0..64).map(|_| rng.gen_range(-1.0f32..1.0)).collect())
            .collect();
        let (mut found, queries, k) = (0, 20, 100);
        for _ in 0..queries {
            let q: Vec<f32> = (0..64).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
            let mut exact: Vec<(f64, u64)> = vectors
                .iter()
                .enumerate()
                .map(|(i, v)| (cos(&q, v), i as u64))
                .collect();
            exact.sort_by(|a, b| b.0.total_cmp(&a.0));
            let want: Vec<u64> = exact.iter().take(k).map(|e| e.1).collect();
            found += ann
                .search(&q, k, 0, |_| true)
                .iter()
                .filter(|k| want.contains(k))
                .count();
        }
        println!("recall@{k}: {:.3}", found as f64 / (queries * k) as f64);
    }
}
