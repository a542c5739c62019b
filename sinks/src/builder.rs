//! [`SnapshotBuilder`]: the sink's working copy of the serving state.
//!
//! Changes arrive in batches of complete times ([`SnapshotBuilder::apply`]). A batch is
//! consolidated per entry slot and time and applied at once to mutable working copies of
//! the items it touches, which are only marked dirty: no index, map or store is touched
//! yet. Cutting a version ([`SnapshotBuilder::version`]) then settles every dirty item once,
//! however many batches changed it since the last version: its old and new index values are
//! diffed into a [`Log`], whose index changes are applied to each ordered index in one
//! sorted pass, the persistent maps take the new entries, and the entity-store writes of the
//! items whose state changed are gathered ([`SnapshotBuilder::take_item_changes`]).

use std::collections::HashMap;
use std::sync::Arc;

use foldhash::fast::RandomState;

use tidal_core::Config;
use tidal_core::record::Position;
use tidal_core::time::Time;

use crate::ann::Ann;
use crate::delta::Delta;
use crate::entry::ItemEntry;
use crate::log::{Buffers, KEEP, Log, side_by_side};
use crate::side::SideBuilder;
use crate::snapshot::{CohortCut, ItemChange, Snapshot, Update};
use tidal_core::flow::ItemKey;

/// Changed items from which a version's per-user and per-cohort part is cut on a thread
/// beside the one applying its index changes: a live version of a few thousand items takes
/// tens of milliseconds, against ~50 µs to start the thread.
const SIDE_BESIDE: usize = if cfg!(debug_assertions) { 8 } else { 1 << 10 };

/// Runs longer than this are consolidated by sorting rather than pairwise.
const PAIRWISE_MAX: usize = 16;

/// Where a delta sorts while a batch is applied: (item key, slot, time, vector, position).
type Order = (ItemKey, u128, Time, u32, u32);

/// Owns the working copy of the serving state and cuts immutable versions of it.
///
/// A version is a copy-on-write clone of the last one with the [`Log`] of the changes since
/// applied: it shares every node the changes do not touch.
#[derive(Debug)]
pub struct SnapshotBuilder {
    /// The last version cut.
    last: Arc<Snapshot>,
    /// The log position of the next version.
    position: Position,
    /// Items changed since the last version: their entry in the last version (looked up
    /// once, when the item first changed) and their current features.
    dirty: HashMap<ItemKey, (Option<Arc<ItemEntry>>, ItemEntry), RandomState>,
    /// Entity-store writes of the versions cut since the last `take_item_changes`.
    item_changes: Vec<ItemChange>,
    /// Reused buffers: the batch sort order; the vectors logs are built in.
    order: Vec<Order>,
    bufs: Buffers,
    /// The working copy of the per-user and per-cohort state.
    pub(crate) side: SideBuilder,
    /// Where the cohort part of the next version stands (`None`: with the rest of it).
    cohorts: Option<CohortCut>,
}

impl SnapshotBuilder {
    /// An empty builder for a schema.
    pub fn new(config: &Config) -> SnapshotBuilder {
        SnapshotBuilder::sharing(config, Arc::new(Ann::default()))
    }

    /// An empty builder whose versions share the nearest-item index `ann` (its shard's).
    pub fn sharing(config: &Config, ann: Arc<Ann>) -> SnapshotBuilder {
        SnapshotBuilder {
            last: Arc::new(Snapshot::empty(config).sharing(ann)),
            position: Position::default(),
            dirty: HashMap::default(),
            item_changes: Vec::new(),
            order: Vec::new(),
            bufs: Buffers::default(),
            side: SideBuilder::default(),
            cohorts: None,
        }
    }

    /// The last version cut (its `frontier` is that version's); changes applied since are
    /// not in it.
    pub fn current(&self) -> &Snapshot {
        &self.last
    }

    /// Whether changes were applied since the last version.
    pub fn has_changes(&self) -> bool {
        !self.dirty.is_empty() || self.position.lsn != self.last.lsn
    }

    /// Applies a batch of changes whose times are all complete. The batch is consolidated
    /// first; per value, `−1` removes it (if it is the current value) before `+1` sets the
    /// new one. The changes show in the next [`snapshot`](Self::snapshot).
    pub fn apply(&mut self, updates: Vec<(Update, isize)>) {
        let batch: Vec<(Delta, Time, isize)> = updates.into_iter().map(|(u, d)| (Delta::from(u), 0, d)).collect();
        self.apply_deltas(&[batch]);
    }

    /// [`apply`](Self::apply) for the sink's own form of the changes, at several complete
    /// times, in any number of vectors: per entry slot, the times are applied in order,
    /// each consolidated.
    pub(crate) fn apply_deltas(&mut self, batches: &[Vec<(Delta, Time, isize)>]) {
        let mut order = std::mem::take(&mut self.order);
        order.clear();
        // A restore's or a catch-up's millions: room for them at once, not doubling after
        // doubling (each a fresh block, its pages faulted in, and the last one copied in).
        order.reserve(batches.iter().map(Vec::len).sum());
        for (b, batch) in batches.iter().enumerate() {
            for (i, (u, t, _)) in batch.iter().enumerate() {
                let (key, slot) = u.slot();
                order.push((key, slot, *t, b as u32, i as u32));
            }
        }
        order.sort_unstable();
        // A restore's or a catch-up's batch dirties a million items: room for them at once
        // (each doubling of the table moved every entry so far).
        let items = order.chunk_by(|a, b| a.0 == b.0).count();
        self.dirty.reserve(items);
        let at = |r: &Order| &batches[r.3 as usize][r.4 as usize];
        let mut net: Vec<(&Order, isize)> = Vec::new();
        let mut rest = &order[..];
        while let Some(&(key, slot, _, _, _)) = rest.first() {
            let run = rest.iter().take_while(|r| (r.0, r.1) == (key, slot)).count();
            let (group, tail) = rest.split_at(run);
            rest = tail;
            let last = &self.last;
            let (_, entry) = self.dirty.entry(key).or_insert_with(|| {
                let old = last.entries.get(&key).cloned();
                let current = old.as_deref().cloned().unwrap_or_default();
                (old, current)
            });
            let mut times = group;
            while let Some(first) = times.first() {
                let n = times.iter().take_while(|r| r.2 == first.2).count();
                let (now, later) = times.split_at(n);
                times = later;
                consolidate(now, &at, &mut net);
                for &(r, d) in net.iter().filter(|n| n.1 < 0) {
                    if d != -1 {
                        tracing::debug!(key, diff = d, "unexpected multiplicity in the serving sink");
                    }
                    apply_one(entry, &at(r).0, false);
                }
                for &(r, _) in net.iter().filter(|n| n.1 > 0) {
                    apply_one(entry, &at(r).0, true);
                }
            }
        }
        // A restore's or a catch-up's deltas grow it to millions: give that back.
        order.clear();
        order.shrink_to(KEEP);
        self.order = order;
    }

    /// A new version at `frontier`, with every change applied so far, at the position last
    /// set (see [`version`]).
    ///
    /// [`version`]: Self::version
    pub fn snapshot(&mut self, frontier: Time) -> Snapshot {
        (*self.version(frontier, self.position)).clone()
    }

    /// Sets the log position of the next version.
    pub fn set_position(&mut self, position: Position) {
        self.position = position;
    }

    /// Sets where the cohort part of the next versions stands: the cohort changes applied so
    /// far are those before `cut.frontier` (the sink's, when its cohort input lags).
    pub(crate) fn set_cohort_cut(&mut self, cut: CohortCut) {
        self.cohorts = Some(cut);
    }

    /// A new shared version at `frontier` and log `position`, with every change applied so far.
    pub fn version(&mut self, frontier: Time, position: Position) -> Arc<Snapshot> {
        self.version_in_cluster(frontier, position, Arc::from(Vec::new()))
    }

    /// [`version`](Self::version) in a cluster: `lsns` is, per process, the last LSN of its
    /// WAL the version holds.
    pub fn version_in_cluster(&mut self, frontier: Time, position: Position, lsns: Arc<[u64]>) -> Arc<Snapshot> {
        self.version_beside(frontier, position, lsns, |_| {})
    }

    /// [`version_in_cluster`](Self::version_in_cluster), handing the entity-store writes
    /// gathered so far (those [`take_item_changes`](Self::take_item_changes) returns next) to
    /// `beside` once the version's log is built: while the log is applied, on a thread of
    /// its own, when the log is a restore's or a catch-up's. The text index takes them so.
    pub(crate) fn version_beside(
        &mut self,
        frontier: Time,
        position: Position,
        lsns: Arc<[u64]>,
        beside: impl FnOnce(&[ItemChange]) + Send,
    ) -> Arc<Snapshot> {
        self.position = position;
        let began = std::time::Instant::now();
        let mut embedded = Vec::new();
        let log = Log::new(
            &self.last,
            self.dirty.drain(),
            position,
            (&mut self.item_changes, &mut embedded),
            &mut self.bufs,
        );
        // Embeddings that changed go to the nearest-item index as the version is cut.
        self.last.ann.apply(frontier, embedded);
        // A restore's table held a million entries: given back before the maps grow.
        self.dirty.shrink_to(KEEP);
        let mut next = (*self.last).clone();
        let items = log.changed();
        // The store's writes go to `beside` and the per-user and per-cohort part is cut
        // while the log is applied.
        let (changes, bufs, side) = (&self.item_changes, &mut self.bufs, &mut self.side);
        let logged = began.elapsed();
        let ((side, side_changed, side_took), applied_took) = side_by_side(
            items >= SIDE_BESIDE,
            || {
                let t = std::time::Instant::now();
                beside(changes);
                let (side, changed) = side.version();
                (side, changed, t.elapsed())
            },
            || {
                let t = std::time::Instant::now();
                log.apply_to(&mut next, bufs);
                t.elapsed()
            },
        );
        let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
        // Where a version's time goes (`TIDAL_LOG=tidal_sinks::builder=trace`): the items'
        // index diffs, the per-user and per-cohort part, the ordered indexes and maps.
        tracing::trace!(
            items,
            diffs_ms = ms(logged),
            side_ms = ms(side_took),
            indexes_ms = ms(applied_took),
            total_ms = ms(began.elapsed()),
            "version cut"
        );
        next.side = side;
        next.frontier = frontier;
        next.cohorts = match &self.cohorts {
            Some(cut) => cut.clone(),
            None => CohortCut {
                frontier,
                lsn: position.lsn,
                lsns: lsns.clone(),
            },
        };
        next.lsns = lsns;
        next.changed = items + side_changed;
        self.last = Arc::new(next);
        self.last.clone()
    }

    /// The entity-store writes of the versions cut since the last call: per item id whose
    /// state changed, its latest live metadata or `None` (forget the id).
    pub fn take_item_changes(&mut self) -> Vec<ItemChange> {
        std::mem::take(&mut self.item_changes)
    }
}

/// Sums the differences of equal values among updates to one slot at one time; `out` gets
/// the values whose sum is not zero.
fn consolidate<'o, 'a>(
    run: &'o [Order],
    at: &impl Fn(&Order) -> &'a (Delta, Time, isize),
    out: &mut Vec<(&'o Order, isize)>,
) {
    out.clear();
    if run.len() <= PAIRWISE_MAX {
        for r in run {
            let (u, _, d) = at(r);
            match out.iter_mut().find(|(o, _)| at(o).0 == *u) {
                Some(slot) => slot.1 += d,
                None => out.push((r, *d)),
            }
        }
    } else {
        let mut sorted: Vec<&Order> = run.iter().collect();
        sorted.sort_by(|x, y| at(x).0.cmp(&at(y).0));
        for r in sorted {
            let (u, _, d) = at(r);
            match out.last_mut() {
                Some(last) if at(last.0).0 == *u => last.1 += d,
                _ => out.push((r, *d)),
            }
        }
    }
    out.retain(|n| n.1 != 0);
}

/// Removes (`set == false`) or sets one value of an entry.
fn apply_one(entry: &mut ItemEntry, u: &Delta, set: bool) {
    match (u, set) {
        (Delta::Window { kind, lanes, .. }, false) => entry.remove_lanes(*kind, lanes),
        (Delta::Window { kind, lanes, .. }, true) => entry.set_lanes(*kind, *lanes),
        (
            Delta::Decay {
                kind, hl, epoch, sum, ..
            },
            false,
        ) => entry.remove_epoch(*kind, *hl, *epoch, *sum),
        (
            Delta::Decay {
                kind, hl, epoch, sum, ..
            },
            true,
        ) => entry.set_epoch(*kind, *hl, *epoch, *sum),
        (Delta::Item { state, .. }, false) => entry.remove_state(state),
        (Delta::Item { state, .. }, true) => entry.set_state((**state).clone()),
    }
}
