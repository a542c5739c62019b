//! The hand-off point between the dataflow and the readers: every worker publishes its own
//! share of the serving state (a [`Shard`]), as a short ring of recent versions cut at the
//! source's marks. A reader takes a [`View`]: the newest mark that every shard has, and each
//! shard's version at it — one consistent state across shards, without locks, never waiting
//! for the dataflow and never blocking it.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use tidal_core::Config;
use tidal_core::flow::{Partition, owner};
use tidal_core::record::Position;
use tidal_core::time::{Time, clock_at_frontier};

use crate::ann::Ann;
use crate::snapshot::{CLOSED, Snapshot};
use crate::text::TextIndex;

/// Versions a shard keeps at most: enough for a reader to find a mark common to shards that
/// are a few marks apart (and for a cluster peer to answer a share at the frontier another
/// process asks for). Each version keeps the persistent-map nodes its successors replaced
/// alive, so the ring's length is memory: with a million users' cohort lanes changing under
/// full ingest, 64 versions held 3.5× the memory of 4 (measured with `tidal bench`, 100k
/// users).
pub const RING: usize = 16;
/// Versions a shard keeps at least, however large their changes: the newest and the one
/// before it (a reader may have taken the ring just before a version was published); in a
/// cluster [`RING_MIN_CLUSTER`], for the peers that ask for a share at a frontier of theirs.
/// A version the slowest local shard has not gone past is always kept (readers find their
/// common mark among them).
pub const RING_MIN: usize = 2;
/// [`RING_MIN`] in a process of a cluster.
pub const RING_MIN_CLUSTER: usize = 4;
/// Keys changed (items, users, cohort lanes) by the versions after the oldest one kept,
/// beyond which older versions leave the ring (down to the minimum): a dataflow working off
/// a backlog cuts versions of a hundred thousand changes each, and each kept one holds the
/// persistent-map nodes its successors replaced. A million posted signals on a million
/// items and users peaked at 7.5 GB with sixteen versions, 5.6 GB with four, 4.9 GB with two.
pub const RING_CHANGES: usize = 1 << 17;
/// The longest a reader waits for shards to share a mark before taking the nearest versions.
const COMMON_WAIT: Duration = Duration::from_millis(200);

/// One worker's published versions, oldest first, each at a mark.
#[derive(Debug)]
struct Ring {
    versions: VecDeque<Arc<Snapshot>>,
}

/// One worker's share of the serving state.
#[derive(Debug)]
pub struct Shard {
    ring: ArcSwap<Ring>,
    /// The process's text index, which the shard's sink feeds.
    text: Arc<TextIndex>,
    /// The shard's nearest-item index, shared by its versions.
    ann: Arc<Ann>,
    /// Per local shard, the frontier of its newest version (this one's at `index`).
    newest: Arc<[AtomicU64]>,
    index: usize,
    /// Versions kept at least ([`RING_MIN`] or [`RING_MIN_CLUSTER`]).
    min: usize,
    /// Steps its sink's operator has handed to the sink's thread and the thread has not
    /// applied yet.
    pending: AtomicU64,
}

impl Shard {
    fn new(config: &Config, text: Arc<TextIndex>, newest: Arc<[AtomicU64]>, index: usize, min: usize) -> Shard {
        let mut versions = VecDeque::new();
        let ann = Arc::new(Ann::default());
        versions.push_back(Arc::new(Snapshot::empty(config).sharing(ann.clone())));
        Shard {
            ring: ArcSwap::from_pointee(Ring { versions }),
            text,
            ann,
            newest,
            index,
            min,
            pending: AtomicU64::new(0),
        }
    }

    /// A step was handed to the sink's thread.
    pub(crate) fn step_sent(&self) {
        self.pending.fetch_add(1, Ordering::AcqRel);
    }

    /// The sink's thread applied `n` steps (and published the versions it cut).
    pub(crate) fn steps_applied(&self, n: u64) {
        self.pending.fetch_sub(n, Ordering::AcqRel);
    }

    /// Waits until the sink's thread has applied every step its operator handed over, so
    /// that the versions are those of everything the worker has run so far (or `timeout`
    /// has passed); whether it has. For a caller that steps a worker itself, as tests do.
    pub fn settle(&self, timeout: std::time::Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        while self.pending.load(Ordering::Acquire) > 0 {
            if std::time::Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
        true
    }

    /// The shard's nearest-item index (what its sink's versions share).
    pub fn ann(&self) -> &Arc<Ann> {
        &self.ann
    }

    /// Whether this is its process's only shard.
    pub(crate) fn alone(&self) -> bool {
        self.newest.len() == 1
    }

    /// The process's text index.
    pub fn text(&self) -> &TextIndex {
        &self.text
    }

    /// Publishes a version: its frontier must be above the last one's, or the same (the last
    /// version again with its cohort part further on), which replaces it.
    ///
    /// The versions that leave the ring are freed on a thread of their own: freeing one (the
    /// persistent-map nodes only it held) took a sixth of the worker under steady ingest.
    pub fn publish(&self, version: Arc<Snapshot>) {
        let old = self.ring.load_full();
        let mut versions = old.versions.clone();
        let mut leaving = Vec::new();
        if versions.back().is_some_and(|v| v.frontier == version.frontier) {
            leaving.extend(versions.pop_back());
        }
        let frontier = version.frontier;
        versions.push_back(version);
        if let Some(mine) = self.newest.get(self.index) {
            mine.store(frontier, Ordering::Release);
        }
        let slowest = self
            .newest
            .iter()
            .map(|f| f.load(Ordering::Acquire))
            .min()
            .unwrap_or(frontier);
        let held = |versions: &VecDeque<Arc<Snapshot>>| versions.iter().skip(1).map(|v| v.changed).sum::<usize>();
        // The oldest may go when the next one is at or below the slowest shard's newest.
        let spare = |versions: &VecDeque<Arc<Snapshot>>| {
            versions.len() > self.min
                && versions.get(1).is_some_and(|v| v.frontier <= slowest)
                && held(versions) > RING_CHANGES
        };
        while versions.len() > RING || spare(&versions) {
            leaving.extend(versions.pop_front());
        }
        self.ring.store(Arc::new(Ring { versions }));
        // The old ring goes with them (a reader may still hold it: then the last of them
        // frees it).
        free_later(Box::new((old, leaving)));
    }

    /// The newest version.
    pub fn latest(&self) -> Option<Arc<Snapshot>> {
        self.ring.load().versions.back().cloned()
    }
}

/// Something to free.
pub type Garbage = Box<dyn Send>;

/// Hands `garbage` to the process's freeing thread (started with the first); freed here if
/// that thread cannot be had. A process that exits first leaves what is queued to the
/// kernel.
pub fn free_later(garbage: Garbage) {
    static FREER: std::sync::OnceLock<Option<std::sync::mpsc::Sender<Garbage>>> = std::sync::OnceLock::new();
    let freer = FREER.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<Garbage>();
        std::thread::Builder::new()
            .name("tidal-free".into())
            .spawn(move || rx.into_iter().for_each(drop))
            .ok()
            .map(|_| tx)
    });
    if let Some(tx) = freer {
        // A failed send hands the garbage back, to be freed here.
        let _ = tx.send(garbage);
    }
}

/// The shards of this process, one per local worker.
#[derive(Debug)]
pub struct Shards {
    config: Arc<Config>,
    /// Workers in the whole cluster.
    peers: usize,
    /// The global index of this process's first worker.
    first: usize,
    shards: Vec<Arc<Shard>>,
    text: Arc<TextIndex>,
}

/// What the local shards hold of one frontier ([`Shards::try_view_at`]).
pub enum AtFrontier {
    /// The state at that frontier.
    Held(View),
    /// The frontier is ahead of a shard: it may still reach it.
    Ahead,
    /// A shard has passed it and kept newer versions only.
    Gone,
}

/// A consistent state: every local shard's version at one common frontier.
#[derive(Clone, Debug)]
pub struct View {
    /// The common frontier: every update before it is applied, none at or after it.
    pub frontier: Time,
    /// The log position it reflects.
    pub position: Position,
    /// Workers in the cluster (the ownership modulus).
    pub peers: usize,
    /// The global index of the first local shard.
    pub first: usize,
    /// The local shards' versions, by local worker index.
    pub shards: Vec<Arc<Snapshot>>,
    /// In a cluster: per process, the last LSN of its WAL the state holds (empty alone).
    pub lsns: Arc<[u64]>,
    /// The process's text index (not versioned: check its hits against the shards).
    pub text: Option<Arc<TextIndex>>,
}

impl View {
    /// The clock (ms) the state is answered as of.
    pub fn clock_ms(&self) -> u64 {
        clock_at_frontier(self.frontier)
    }

    /// The last LSN applied.
    pub fn lsn(&self) -> u64 {
        self.position.lsn
    }

    /// The last LSN of process `process`'s WAL the state holds (alone: [`lsn`](Self::lsn)).
    pub fn lsn_of(&self, process: usize) -> u64 {
        crate::snapshot::lsn_of(&self.lsns, self.lsn(), process)
    }

    /// Whether the dataflow's inputs are closed (the final state).
    pub fn is_closed(&self) -> bool {
        self.frontier == CLOSED
    }

    /// The mark the cohort part (cohort counts and declared cohorts) is complete up to in
    /// every shard: [`frontier`](Self::frontier), or earlier while the cohort rollup builds
    /// the counts of a cohort just declared.
    pub fn cohort_frontier(&self) -> Time {
        self.shards
            .iter()
            .map(|s| s.cohorts.frontier)
            .min()
            .unwrap_or(self.frontier)
    }

    /// The clock (ms) the cohort part is answered as of.
    pub fn cohort_clock_ms(&self) -> u64 {
        clock_at_frontier(self.cohort_frontier())
    }

    /// The last LSN the cohort part of every shard holds.
    pub fn cohort_lsn(&self) -> u64 {
        self.shards
            .iter()
            .map(|s| s.cohorts.lsn)
            .min()
            .unwrap_or_else(|| self.lsn())
    }

    /// The last LSN of process `process`'s WAL the cohort part of every shard holds.
    pub fn cohort_lsn_of(&self, process: usize) -> u64 {
        self.shards
            .iter()
            .map(|s| s.cohorts.lsn_of(process))
            .min()
            .unwrap_or_else(|| self.lsn_of(process))
    }

    /// The local shard owning item `id`, if it is local.
    pub fn shard_of(&self, id: &str) -> Option<&Snapshot> {
        let w = owner(id, self.peers);
        w.checked_sub(self.first).and_then(|i| self.shards.get(i)).map(|s| &**s)
    }

    /// The dimension of an embedding some item holds, if any does.
    pub fn embedding_dimension(&self) -> Option<usize> {
        self.shards
            .iter()
            .flat_map(|s| s.entries())
            .find_map(|(_, e)| e.embedding().map(<[f32]>::len))
    }

    /// A view of one snapshot (tests and tools).
    pub fn single(snapshot: Arc<Snapshot>) -> View {
        View {
            frontier: snapshot.frontier,
            position: Position {
                lsn: snapshot.lsn,
                signals: snapshot.signals,
            },
            peers: 1,
            first: 0,
            lsns: snapshot.lsns.clone(),
            shards: vec![snapshot],
            text: None,
        }
    }
}

impl Shards {
    /// Empty shards for `local` workers, the first with global index `first` of `peers`.
    pub fn new(config: Arc<Config>, peers: usize, first: usize, local: usize) -> Shards {
        let text = Arc::new(TextIndex::new(
            Duration::from_millis(config.personalization.text_refresh.ms()),
            config.personalization.exact_search,
        ));
        let local = local.max(1);
        let newest: Arc<[AtomicU64]> = (0..local).map(|_| AtomicU64::new(0)).collect();
        let min = if peers > local { RING_MIN_CLUSTER } else { RING_MIN };
        let shards = (0..local)
            .map(|i| Arc::new(Shard::new(&config, text.clone(), newest.clone(), i, min)))
            .collect();
        Shards {
            config,
            peers: peers.max(1),
            first,
            shards,
            text,
        }
    }

    /// The process's text index.
    pub fn text(&self) -> &TextIndex {
        &self.text
    }

    /// Loads the text index a checkpoint kept, on a thread of its own
    /// ([`TextIndex::restore_later`]).
    pub fn restore_text(&self, bytes: Vec<u8>) {
        self.text.restore_later(bytes);
    }

    /// The schema the shards are built for.
    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }

    /// The local shards with their global worker indexes.
    pub fn local(&self) -> impl Iterator<Item = (usize, &Arc<Shard>)> {
        self.shards.iter().enumerate().map(|(i, s)| (self.first + i, s))
    }

    /// Holds back (or releases) the inserts of this process's nearest-item indexes
    /// ([`Ann::hold`]).
    pub fn hold_anns(&self, held: bool) {
        self.shards.iter().for_each(|s| s.ann.hold(held));
    }

    /// Once a start has handed over its restored state: takes out of the indexes a
    /// checkpoint restored what that state did not name again (the text index's documents,
    /// [`TextIndex::forget_unconfirmed`], which also makes everything searchable; the
    /// nearest-item indexes' items, [`Ann::forget_unconfirmed`]).
    pub fn forget_unconfirmed(&self) {
        self.text().forget_unconfirmed();
        self.shards.iter().for_each(|s| s.ann.forget_unconfirmed());
    }

    /// Switches this process's nearest-item indexes off ([`Ann::switch_off`]).
    pub fn switch_off_anns(&self) {
        self.shards.iter().for_each(|s| s.ann.switch_off());
    }

    /// The shard of global worker `index`, if local.
    pub fn shard(&self, index: usize) -> Option<&Arc<Shard>> {
        index.checked_sub(self.first).and_then(|i| self.shards.get(i))
    }

    /// The partition of global worker `index`.
    pub fn partition(&self, index: usize) -> Partition {
        Partition::new(index, self.peers)
    }

    /// The newest state common to every local shard.
    pub fn view(&self) -> View {
        let deadline = Instant::now() + COMMON_WAIT;
        loop {
            let rings: Vec<_> = self.shards.iter().map(|s| s.ring.load_full()).collect();
            match common(&rings) {
                Some(view) => return self.view_of(view),
                None if Instant::now() < deadline => std::thread::sleep(Duration::from_micros(50)),
                None => {
                    // Shards more than a ring apart: the versions nearest the slowest one.
                    tracing::warn!("serving shards share no recent version; answering from the nearest ones");
                    let m = rings
                        .iter()
                        .filter_map(|r| r.versions.back().map(|v| v.frontier))
                        .min()
                        .unwrap_or(0);
                    let shards = rings
                        .iter()
                        .map(|r| {
                            r.versions
                                .iter()
                                .rev()
                                .find(|v| v.frontier <= m)
                                .or(r.versions.front())
                                .cloned()
                                .unwrap_or_else(|| Arc::new(Snapshot::empty(&self.config)))
                        })
                        .collect();
                    return self.view_of(shards);
                }
            }
        }
    }

    /// The state at exactly `frontier` (a mark), its cohort part cut at `cohorts` or later,
    /// waiting up to `wait` for every local shard to reach it. `None` when a shard has it no
    /// longer (it kept newer versions only) or has not reached it in time.
    pub fn view_at(&self, frontier: Time, cohorts: Time, wait: Duration) -> Option<View> {
        let deadline = Instant::now() + wait;
        loop {
            match self.try_view_at(frontier, cohorts) {
                AtFrontier::Held(view) => return Some(view),
                AtFrontier::Gone => return None,
                AtFrontier::Ahead if Instant::now() >= deadline => return None,
                AtFrontier::Ahead => std::thread::sleep(Duration::from_micros(200)),
            }
        }
    }

    /// [`view_at`](Self::view_at) without waiting: the state, or whether a shard has yet to
    /// reach it or holds it no longer.
    pub fn try_view_at(&self, frontier: Time, cohorts: Time) -> AtFrontier {
        let wanted = |v: &Snapshot| v.frontier == frontier && v.cohorts.frontier >= cohorts.min(frontier);
        let rings: Vec<_> = self.shards.iter().map(|s| s.ring.load_full()).collect();
        let found: Option<Vec<_>> = rings
            .iter()
            .map(|r| r.versions.iter().rev().find(|v| wanted(v)).cloned())
            .collect();
        if let Some(shards) = found {
            return AtFrontier::Held(self.view_of(shards));
        }
        // A shard short of the frontier, or at it with its cohort part short (the version is
        // published again as the cohort part goes on).
        let behind = rings.iter().any(|r| {
            r.versions
                .back()
                .is_none_or(|v| v.frontier < frontier || (v.frontier == frontier && !wanted(v)))
        });
        if behind { AtFrontier::Ahead } else { AtFrontier::Gone }
    }

    fn view_of(&self, shards: Vec<Arc<Snapshot>>) -> View {
        let first = shards.first();
        View {
            lsns: first.map_or_else(|| Arc::from(Vec::new()), |s| s.lsns.clone()),
            frontier: first.map_or(0, |s| s.frontier),
            position: first.map_or(Position::default(), |s| Position {
                lsn: s.lsn,
                signals: s.signals,
            }),
            peers: self.peers,
            first: self.first,
            shards,
            text: Some(self.text.clone()),
        }
    }
}

/// Each ring's version at the newest frontier every ring has.
fn common(rings: &[Arc<Ring>]) -> Option<Vec<Arc<Snapshot>>> {
    let newest = rings
        .iter()
        .filter_map(|r| r.versions.back().map(|v| v.frontier))
        .min()?;
    // Try the candidates of the first ring from the newest down.
    let first = rings.first()?;
    for candidate in first.versions.iter().rev().map(|v| v.frontier).filter(|f| *f <= newest) {
        let found: Option<Vec<_>> = rings
            .iter()
            .map(|r| r.versions.iter().rev().find(|v| v.frontier == candidate).cloned())
            .collect();
        if found.is_some() {
            return found;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept(shard: &Shard) -> Vec<Time> {
        shard.ring.load().versions.iter().map(|v| v.frontier).collect()
    }

    fn version(shard: &Shard, frontier: Time, changed: usize) -> Arc<Snapshot> {
        let mut v = (*shard.ring.load().versions.back().cloned().expect("a version")).clone();
        v.frontier = frontier;
        v.changed = changed;
        Arc::new(v)
    }

    #[test]
    fn the_ring_keeps_as_many_versions_as_their_changes_allow() {
        let config = Config::default_filled();
        let shards = Shards::new(Arc::new(config), 1, 0, 1);
        let shard = shards.shard(0).expect("one shard");
        // Small versions: the ring keeps RING of them.
        for f in 1..=40 {
            shard.publish(version(shard, f, 10));
        }
        assert_eq!(kept(shard), (41 - RING as Time..=40).collect::<Vec<_>>());
        // Large ones push the older ones out: two after the oldest pass the budget, and all
        // of them do down to the minimum.
        for f in 41..=45 {
            shard.publish(version(shard, f, RING_CHANGES / 2));
        }
        assert_eq!(kept(shard), (43..=45).collect::<Vec<_>>());
        shard.publish(version(shard, 46, RING_CHANGES * 2));
        assert_eq!(kept(shard), vec![45, 46]);
        assert_eq!(RING_MIN, 2);
        // Small ones again: the ring grows back as the large ones age out of the budget.
        for f in 47..=49 {
            shard.publish(version(shard, f, 10));
        }
        assert_eq!(
            kept(shard),
            (46..=49).collect::<Vec<_>>(),
            "the large one is the oldest"
        );
        // As the oldest, a large version holds only what its successors replaced: it stays.
        shard.publish(version(shard, 50, 10));
        assert_eq!(kept(shard), (46..=50).collect::<Vec<_>>());
        for f in 51..=80 {
            shard.publish(version(shard, f, 10));
        }
        assert_eq!(kept(shard).len(), RING);
        // A version at the last one's frontier replaces it.
        shard.publish(version(shard, 80, 10));
        assert_eq!(kept(shard).last(), Some(&80));
        assert_eq!(kept(shard).len(), RING);
    }

    #[test]
    fn large_versions_stay_until_the_slowest_shard_has_passed_them() {
        let shards = Shards::new(Arc::new(Config::default_filled()), 2, 0, 2);
        let (a, b) = (shards.shard(0).expect("a"), shards.shard(1).expect("b"));
        for f in 1..=3 {
            a.publish(version(a, f, 10));
            b.publish(version(b, f, 10));
        }
        // Shard a runs ahead with large versions: it keeps the one b is at.
        for f in 4..=9 {
            a.publish(version(a, f, RING_CHANGES));
        }
        assert_eq!(kept(a).first(), Some(&3), "b's newest stays in a's ring");
        assert_eq!(shards.view().frontier, 3, "a common version");
        // b catches up: a's older versions may go, down to the minimum.
        b.publish(version(b, 9, 10));
        a.publish(version(a, 10, RING_CHANGES));
        assert_eq!(kept(a), vec![9, 10]);
        assert_eq!(shards.view().frontier, 9);
        // In a cluster (more workers than local shards) the minimum is larger.
        let cluster = Shards::new(Arc::new(Config::default_filled()), 4, 0, 1);
        let c = cluster.shard(0).expect("c");
        for f in 1..=10 {
            c.publish(version(c, f, RING_CHANGES));
        }
        assert_eq!(kept(c).len(), RING_MIN_CLUSTER);
    }
}
