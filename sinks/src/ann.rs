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

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tidal_core::flow::ItemKey;
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
pub type EmbeddingChanges = Vec<(ItemKey, Option<Vec<f32>>)>;

/// One version's embedding changes.
type Batch = (Time, EmbeddingChanges);

/// A shard's nearest-item index (see the module docs).
#[derive(Default)]
pub struct Ann {
    inner: Arc<Inner>,
    /// The applier thread's inbox, started with the first batch.
    tx: Mutex<Option<Sender<Batch>>>,
}

#[derive(Default)]
struct Inner {
    /// Created at the first embedding (its length fixes the dimension). usearch's own
    /// thread contexts are sized at `reserve`: calls are serialised here rather than
    /// relying on that count matching the readers.
    index: Mutex<Option<Index>>,
    /// The frontier of the last version handed over, and of the last one applied.
    queued: AtomicU64,
    applied: AtomicU64,
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
        if changes.is_empty() {
            return;
        }
        self.inner.queued.fetch_max(frontier, Ordering::SeqCst);
        let Ok(mut tx) = self.tx.lock() else { return };
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
        if let Some(sender) = tx.as_ref()
            && sender.send((frontier, changes)).is_err()
        {
            tracing::warn!("the nearest-item index thread stopped");
        }
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

    /// Up to `count` item keys nearest to `query` among those `admit` accepts, nearest first.
    pub fn search(&self, query: &[f32], count: usize, admit: impl Fn(ItemKey) -> bool) -> Vec<ItemKey> {
        let Ok(guard) = self.inner.index.lock() else {
            return Vec::new();
        };
        let Some(index) = guard.as_ref() else { return Vec::new() };
        if query.len() != index.dimensions() || count == 0 {
            return Vec::new();
        }
        match index.filtered_search(query, count, admit) {
            Ok(m) => m.keys,
            Err(e) => {
                tracing::warn!(error = %e, "nearest-item search failed");
                Vec::new()
            }
        }
    }

    /// Items indexed.
    pub fn len(&self) -> usize {
        self.inner
            .index
            .lock()
            .ok()
            .and_then(|g| g.as_ref().map(Index::size))
            .unwrap_or(0)
    }

    /// Whether no item is indexed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The applier thread: inserts each batch a chunk per lock hold, until the sender goes.
fn applier(inner: &Inner, inbox: &Receiver<Batch>) {
    while let Ok((frontier, changes)) = inbox.recv() {
        for chunk in changes.chunks(CHUNK) {
            inner.insert(chunk);
        }
        inner.applied.fetch_max(frontier, Ordering::SeqCst);
    }
}

impl Inner {
    fn insert(&self, changes: &[(ItemKey, Option<Vec<f32>>)]) {
        let Ok(mut guard) = self.index.lock() else { return };
        if guard.is_none() {
            let Some(dim) = changes.iter().find_map(|(_, e)| e.as_ref().map(Vec::len)) else {
                return;
            };
            let options = IndexOptions {
                dimensions: dim,
                metric: MetricKind::Cos,
                quantization: ScalarKind::BF16,
                expansion_add: EXPANSION_ADD,
                ..IndexOptions::default()
            };
            match Index::new(&options) {
                Ok(index) => *guard = Some(index),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot create the nearest-item index; for_you uses its other sources");
                    return;
                }
            }
        }
        let Some(index) = guard.as_ref() else { return };
        for (key, embedding) in changes {
            if index.contains(*key) {
                let _ = index.remove(*key);
            }
            let Some(e) = embedding else { continue };
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
            if let Err(e) = index.add(*key, e) {
                tracing::warn!(error = %e, key, "cannot add an item to the nearest-item index");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

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
        ann.apply(1, vectors.clone());
        assert!(ann.wait_for(1, Duration::from_secs(60)), "applied in time");
        assert_eq!(ann.len(), 3000);
        // Recall@20 against an exact scan, over odd keys only.
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
            let got = ann.search(&q, 20, |k| k % 2 == 1);
            assert!(got.iter().all(|k| k % 2 == 1), "the filter holds");
            found += got.iter().filter(|k| want.contains(k)).count();
        }
        assert!(found >= 20 * 20 * 9 / 10, "recall@20 {found}/400");
        // Removed and replaced items follow.
        let target: Vec<f32> = vec![1.0; 16];
        ann.apply(2, vec![(5, Some(target.clone())), (7, None)]);
        assert!(ann.wait_for(2, Duration::from_secs(10)));
        assert_eq!(ann.len(), 2999);
        assert_eq!(ann.search(&target, 1, |_| true), vec![5]);
        assert!(!ann.search(&target, 3000, |_| true).contains(&7));
    }
}
