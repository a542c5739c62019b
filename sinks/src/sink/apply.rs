//! What the sink's thread does with the steps the operator hands it ([`Step`]): it keeps
//! the updates, user changes and marks by time and, once a step's frontiers pass a mark,
//! applies everything before it to the [`SnapshotBuilder`] and, at a publishing mark, cuts
//! the version and publishes it into the shard ([`SinkCore::step`]). The cohort part follows
//! its own frontier ([`CohortPart`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use tidal_core::Config;
use tidal_core::features::Lanes;
use tidal_core::flow::Control;
use tidal_core::record::Position;
use tidal_core::stats::{Stage, StateStats};
use tidal_core::time::Time;
use tidal_core::user::SideUpdate;

use super::Place;
use crate::builder::SnapshotBuilder;
use crate::delta::Delta;
use crate::shards::Shard;
use crate::side::CohortKey;
use crate::snapshot::{CLOSED, CohortCut, ItemChange, Snapshot};
use crate::store::{EntityStore, StoreShard};

/// What one activation of the sink operator took from its inputs, and where its input
/// frontiers stood then: the sink's thread applies steps in the order they were taken.
#[derive(Default)]
pub(super) struct Step {
    pub(super) data: Vec<Batch>,
    pub(super) cohorts: Vec<CohortUpdates>,
    pub(super) side: Vec<(Time, Vec<SideUpdate>)>,
    pub(super) marks: Vec<Control>,
    /// The frontier of every input but the cohort sums.
    pub(super) reached: Time,
    /// The cohort sums' frontier.
    pub(super) cohorts_reached: Time,
    /// The marks' frontier: no mark to come is earlier.
    pub(super) marks_reached: Time,
    /// Every input is closed.
    pub(super) closed: bool,
}

impl Step {
    /// Appends the step taken after this one.
    pub(super) fn merge(&mut self, next: Step) {
        self.data.extend(next.data);
        self.cohorts.extend(next.cohorts);
        self.side.extend(next.side);
        self.marks.extend(next.marks);
        (self.reached, self.cohorts_reached, self.marks_reached, self.closed) =
            (next.reached, next.cohorts_reached, next.marks_reached, next.closed);
    }

    /// Leaves out the versions nobody will read: of the publishing marks the frontier has
    /// passed, only the newest still publishes (the others' changes go into its version).
    pub(super) fn newest_publishes(&mut self) {
        let newest = self
            .marks
            .iter()
            .filter_map(|c| match c {
                Control::Mark {
                    time, publish: true, ..
                } if *time <= self.reached => Some(*time),
                _ => None,
            })
            .max();
        if let Some(newest) = newest {
            for c in &mut self.marks {
                if let Control::Mark { time, publish, .. } = c
                    && *time < newest
                {
                    *publish = false;
                }
            }
        }
    }
}

/// The sink's state: the working copy of the shard, the updates, marks and user changes
/// received and not yet cut, and where the versions stand.
pub(super) struct SinkCore {
    pub(super) shard: Arc<Shard>,
    store: Option<(Arc<EntityStore>, StoreShard)>,
    stats: Arc<StateStats>,
    place: Place,
    builder: SnapshotBuilder,
    /// User state changes by time, applied at the cuts; the cohort part's own changes, cuts
    /// and positions.
    side_later: BTreeMap<Time, Vec<SideUpdate>>,
    cohorts: CohortPart,
    /// The LSN the store holds this shard's items as of, from the run before.
    stored: Option<u64>,
    /// Until the first version after a start from a checkpoint the store already holds
    /// (it was written up to the checkpoint's LSN or later): the ids whose state the log
    /// after the checkpoint changed, each with whether it had metadata before a change.
    /// That version writes only them, not every restored item again (a million, after a
    /// kill -9, and the LSM tree compacting them for a minute beside the queries), and
    /// removes those whose metadata the log took away (the version, compared with no
    /// version before it, would not).
    tail_ids: Option<HashMap<String, bool>>,
    /// Containers received since the last cut, and containers with updates at times not yet
    /// cut, by their earliest such time.
    fresh: Vec<Batch>,
    later: BTreeMap<Time, Vec<Batch>>,
    /// Marks received and not yet applied: whether one of them publishes, and the log
    /// position each stands for, per origin.
    marks: BTreeMap<Time, MarksAt>,
    cut: Time,
    /// The frontier of the last version published.
    last_version: Time,
    /// Per process, the position of its newest mark cut so far.
    positions: Vec<Position>,
    /// The newest position any mark carried, per process (the final version's).
    newest: Vec<Position>,
}

impl SinkCore {
    pub(super) fn new(
        shard: Arc<Shard>,
        store: Option<(Arc<EntityStore>, StoreShard)>,
        config: &Config,
        stats: Arc<StateStats>,
        place: Place,
    ) -> SinkCore {
        let mut builder = SnapshotBuilder::sharing(config, shard.ann().clone());
        // Nothing of the cohort part is applied yet: the versions say so until it is.
        builder.set_cohort_cut(CohortCut::default());
        let stored = store.as_ref().and_then(|(s, at)| s.written(at));
        let restored = store.as_ref().and_then(|(_, at)| at.restored());
        let tail_ids = stored
            .zip(restored)
            .is_some_and(|(stored, restored)| stored >= restored)
            .then(HashMap::new);
        let positions = vec![Position::default(); place.processes.max(1)];
        SinkCore {
            shard,
            store,
            stats,
            place,
            builder,
            side_later: BTreeMap::new(),
            cohorts: CohortPart::new(place),
            stored,
            tail_ids,
            fresh: Vec::new(),
            later: BTreeMap::new(),
            marks: BTreeMap::new(),
            cut: 0,
            last_version: 0,
            newest: positions.clone(),
            positions,
        }
    }

    /// Takes a step's updates and marks, then applies every mark its frontiers complete and
    /// cuts the versions they publish.
    pub(super) fn step(&mut self, step: Step) {
        let started = std::time::Instant::now();
        let Step {
            data,
            cohorts: cohort_containers,
            side,
            marks,
            reached,
            cohorts_reached,
            marks_reached,
            closed,
        } = step;
        self.fresh.extend(data);
        let cohorts = &mut self.cohorts;
        for mut d in cohort_containers {
            // Kept in the containers they came in: a restore's time is every cohort sum,
            // and one vector grown to hold them copied itself over and over.
            let mut run: Option<(Time, Vec<_>)> = None;
            let n = d.len();
            for ((key, lanes), t, diff) in d.drain(..) {
                if let Some((at, chunk)) = run.take_if(|(at, _)| *at != t) {
                    cohorts.later.entry(at).or_default().push(chunk);
                }
                run.get_or_insert_with(|| (t, Vec::with_capacity(n)))
                    .1
                    .push((key, lanes, diff));
            }
            if let Some((at, chunk)) = run {
                cohorts.later.entry(at).or_default().push(chunk);
            }
        }
        for (t, updates) in side {
            for u in updates {
                match u {
                    SideUpdate::Cohorts(_) => cohorts.defs.entry(t).or_default().push(u),
                    SideUpdate::User(..) => self.side_later.entry(t).or_default().push(u),
                }
            }
        }
        for c in marks {
            if let Control::Mark {
                time,
                position: p,
                origin,
                publish,
            } = c
            {
                let Some(n) = self.newest.get_mut(origin) else {
                    tracing::error!(origin, "a mark from a process outside the cluster");
                    continue;
                };
                *n = (*n).max(p);
                // A publishing mark at the time already applied (a catch-up ended
                // there) still cuts the version the non-publishing one did not.
                if time > self.cut || (publish && time == self.cut && self.last_version < self.cut) {
                    let m = self.marks.entry(time).or_default();
                    m.0 |= publish;
                    m.1.push((origin, p));
                } else if let Some(q) = self.positions.get_mut(origin) {
                    // A mark from a process whose clock is behind another's arrives
                    // below what is applied already: what it says of its process's
                    // log holds for the state, and the next version says it.
                    *q = (*q).max(p);
                    cohorts.late_mark(time, self.cut, origin, p);
                }
            }
        }
        if self.cut == CLOSED {
            self.stats.busy(Stage::Sink, started);
            return;
        }
        let mut due: Vec<(Time, MarksAt)> = Vec::new();
        while let Some(entry) = self.marks.first_entry() {
            if *entry.key() > reached {
                break;
            }
            due.push(entry.remove_entry());
        }
        if closed && due.last().is_none_or(|(m, _)| *m != CLOSED) {
            due.push((CLOSED, (true, self.newest.iter().copied().enumerate().collect())));
        }
        let mut published = false;
        for (m, (publish, ps)) in due {
            // A restore's or a catch-up's batches are millions of deltas: gone before
            // the version is cut.
            let ready = self.take_before(m);
            self.apply(ready);
            let builder = &mut self.builder;
            apply_before(m, &mut self.side_later, |u| builder.side.apply(u));
            for &(o, p) in &ps {
                if let Some(q) = self.positions.get_mut(o) {
                    *q = (*q).max(p);
                }
            }
            self.cohorts.marks.entry(m).or_default().extend(ps);
            self.cut = m;
            // The cohort part follows as far as its input allows, up to this mark.
            self.cohorts.advance(builder, cohorts_reached.min(m));
            if !publish {
                // Applied to the working copies; the version comes at a publishing mark.
                continue;
            }
            // The text index has a version's changes before readers see the version.
            let text = self.shard.text();
            let (version, own) = cut_version(builder, m, &self.positions, self.place, |c| text.apply(c));
            let changes = builder.take_item_changes();
            self.shard.publish(version);
            self.last_version = m;
            published = true;
            let tail_ids = self.tail_ids.take();
            if let Some((store, at)) = &self.store {
                // A version the store already holds (a start rebuilding the state it
                // wrote before) is not written again; the first one after a start from a
                // checkpoint it holds, only for the items changed after the checkpoint.
                if self.stored.is_none_or(|lsn| own.lsn > lsn) {
                    self.stored = None;
                    let changes = match tail_ids {
                        Some(ids) => tail_writes(changes, &ids),
                        None => changes,
                    };
                    store.write(changes, Some((at, own.lsn)));
                }
            }
        }
        self.apply_early(reached, marks_reached);
        // The cohort input caught up with marks already cut: the last version again, at
        // the same frontier, with the cohort part as far as it now reaches.
        let cut = self.cut;
        if !published
            && self.last_version == cut
            && cut > 0
            && self.cohorts.advance(&mut self.builder, cohorts_reached.min(cut))
        {
            let version = cut_version(&mut self.builder, cut, &self.positions, self.place, |_| {}).0;
            self.shard.publish(version);
        }
        self.stats.busy(Stage::Sink, started);
    }

    /// Applies the updates held at times up to `reached` (the data frontier) to the working
    /// copy before their mark is cut, when no mark can fall among them: every mark still to
    /// cut, received (`self.marks`) or to come (`marks_reached`), is later than `reached`, so
    /// every version to come holds them. A restore's or a catch-up's run of updates is so
    /// applied while the worker still produces it, instead of all at once after it.
    ///
    /// The updates at `reached` itself may still grow: those here are applied now, the rest
    /// with a later step. Each producer changes a key at most once per time, as `−old, +new`,
    /// and a removal only removes the value it names, so applying a time's changes in the
    /// order they arrived, in two parts, leaves what applying them together does.
    fn apply_early(&mut self, reached: Time, marks_reached: Time) {
        let limit = self
            .marks
            .first_key_value()
            .map_or(marks_reached, |(m, _)| marks_reached.min(*m));
        let waiting = self.later.first_key_value().is_some_and(|(t, _)| *t <= reached);
        if reached >= limit || (self.fresh.is_empty() && !waiting) {
            return;
        }
        let ready = self.take_before(reached + 1);
        self.apply(ready);
    }

    /// Applies `ready` to the builder's working copy. Until the first version it notes the
    /// ids whose state the log after the restore changes (a restored state is emitted at
    /// time 0, the log after the checkpoint at the times of its batches).
    fn apply(&mut self, ready: Vec<Batch>) {
        if ready.is_empty() {
            return;
        }
        if let Some(ids) = &mut self.tail_ids {
            for (d, t, diff) in ready.iter().flatten() {
                if let Delta::Item { state, .. } = d
                    && *t > 0
                {
                    let had = *diff < 0 && !state.deleted && state.meta.is_some();
                    *ids.entry(state.id.clone()).or_default() |= had;
                }
            }
        }
        self.builder.apply_deltas(&ready);
    }

    /// The updates held at times before `now`, in containers; the rest stay, filed under
    /// `later` by their earliest time.
    fn take_before(&mut self, now: Time) -> Vec<Batch> {
        let mut ready = Vec::new();
        let rest = self.later.split_off(&now);
        for batch in std::mem::replace(&mut self.later, rest)
            .into_values()
            .flatten()
            .chain(self.fresh.drain(..))
        {
            sort_out(batch, now, &mut ready, &mut self.later);
        }
        ready
    }
}

/// A version at mark `m` of everything applied, at the positions the marks carried (the
/// entity-store writes gathered so far handed to `beside` meanwhile); and this process's
/// position.
fn cut_version(
    builder: &mut SnapshotBuilder,
    m: Time,
    positions: &[Position],
    place: Place,
    beside: impl FnOnce(&[ItemChange]) + Send,
) -> (Arc<Snapshot>, Position) {
    let own = positions.get(place.process).copied().unwrap_or_default();
    let lsns = if place.processes > 1 {
        positions.iter().map(|p| p.lsn).collect()
    } else {
        Arc::from(Vec::new())
    };
    (builder.version_beside(m, own, lsns, beside), own)
}

/// The cohort part of a shard as the sink builds it: its changes (sums and declarations) by
/// time, the marks applied to everything else and not yet to it (the cohort rollup lags while
/// it builds the counts of a broad cohort just declared), the mark it is cut at, and per
/// process the position of the newest mark it holds.
struct CohortPart {
    later: BTreeMap<Time, Vec<CohortChunk>>,
    defs: BTreeMap<Time, Vec<SideUpdate>>,
    marks: BTreeMap<Time, Vec<(usize, Position)>>,
    cut: Time,
    positions: Vec<Position>,
    place: Place,
}

impl CohortPart {
    fn new(place: Place) -> CohortPart {
        CohortPart {
            later: BTreeMap::new(),
            defs: BTreeMap::new(),
            marks: BTreeMap::new(),
            cut: 0,
            positions: vec![Position::default(); place.processes.max(1)],
            place,
        }
    }

    /// A mark at `time`, below the cut `cut` of everything else: the cohort part holds what
    /// it says of process `origin`'s log once it is cut there too.
    fn late_mark(&mut self, time: Time, cut: Time, origin: usize, p: Position) {
        if time <= self.cut
            && let Some(q) = self.positions.get_mut(origin)
        {
            *q = (*q).max(p);
        } else {
            self.marks.entry(cut).or_default().push((origin, p));
        }
    }

    /// Applies the changes of the marks up to `limit` (in time order) to `builder`, and
    /// moves the cut of its next versions there. Whether a mark was applied.
    fn advance(&mut self, builder: &mut SnapshotBuilder, limit: Time) -> bool {
        let mut applied = false;
        while let Some(entry) = self.marks.first_entry() {
            let m = *entry.key();
            if m > limit {
                break;
            }
            for (o, p) in entry.remove() {
                if let Some(q) = self.positions.get_mut(o) {
                    *q = (*q).max(p);
                }
            }
            // One time's sums together: the removals of a time go before its additions.
            while let Some(at) = self.later.first_entry() {
                if *at.key() >= m {
                    break;
                }
                builder.side.apply_cohorts(at.remove());
            }
            apply_before(m, &mut self.defs, |u| builder.side.apply(u));
            self.cut = m;
            applied = true;
        }
        if !applied {
            return false;
        }
        let own = self.positions.get(self.place.process).copied().unwrap_or_default();
        builder.set_cohort_cut(CohortCut {
            frontier: self.cut,
            lsn: own.lsn,
            lsns: if self.place.processes > 1 {
                self.positions.iter().map(|p| p.lsn).collect()
            } else {
                Arc::from(Vec::new())
            },
        });
        true
    }
}

/// Hands `f` what `later` holds at times before `m`, in time order, and drops it.
fn apply_before<T, I: IntoIterator<Item = T>>(m: Time, later: &mut BTreeMap<Time, I>, mut f: impl FnMut(T)) {
    while let Some(entry) = later.first_entry() {
        if *entry.key() >= m {
            break;
        }
        entry.remove().into_iter().for_each(&mut f);
    }
}

/// Cohort sum changes as the sink's cohort input brings them.
pub(super) type CohortUpdates = Vec<((CohortKey, Lanes), Time, isize)>;

/// Cohort sum changes of one time, as one container brought them.
type CohortChunk = Vec<(CohortKey, Lanes, isize)>;

/// The marks received for one time: whether one of them publishes, and the position each
/// stands for, by origin process.
type MarksAt = (bool, Vec<(usize, Position)>);

/// Updates as the sink receives them.
pub(super) type Batch = Vec<(Delta, Time, isize)>;

/// The store writes of the first version after a start from a checkpoint the store holds:
/// the changes of the items the log after the checkpoint changed (`ids`), and the removal
/// of those that had metadata and have none now.
fn tail_writes(changes: Vec<ItemChange>, ids: &HashMap<String, bool>) -> Vec<ItemChange> {
    let mut writes: Vec<ItemChange> = changes.into_iter().filter(|c| ids.contains_key(&*c.id)).collect();
    let written: std::collections::HashSet<&str> = writes.iter().map(|c| &*c.id).collect();
    let gone: Vec<ItemChange> = ids
        .iter()
        .filter(|(id, had)| **had && !written.contains(id.as_str()))
        .map(|(id, _)| ItemChange::remove(id))
        .collect();
    writes.extend(gone);
    writes
}

/// Files a container under `ready` if all its times are before `now`, under `later` (by its
/// earliest time) if none is, or splits it.
fn sort_out(batch: Batch, now: Time, ready: &mut Vec<Batch>, later: &mut BTreeMap<Time, Vec<Batch>>) {
    let Some(min) = batch.iter().map(|u| u.1).min() else {
        return;
    };
    let max = batch.iter().map(|u| u.1).max().unwrap_or(min);
    if max < now {
        ready.push(batch);
    } else if min >= now {
        later.entry(min).or_default().push(batch);
    } else {
        let (done, open): (Batch, Batch) = batch.into_iter().partition(|u| u.1 < now);
        ready.push(done);
        sort_out(open, now, ready, later);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mark(time: Time, publish: bool) -> Control {
        Control::Mark {
            time,
            position: Position {
                lsn: time,
                signals: time,
            },
            origin: 0,
            publish,
        }
    }

    fn publishing(step: &Step) -> Vec<(Time, bool)> {
        step.marks
            .iter()
            .filter_map(|c| match c {
                Control::Mark { time, publish, .. } => Some((*time, *publish)),
                _ => None,
            })
            .collect()
    }

    /// Steps queued behind one merge in order, and of the publishing marks the frontier has
    /// passed only the newest still publishes; a mark the frontier has not reached keeps its
    /// own, and the frontiers are the newest step's.
    #[test]
    fn merged_steps_publish_their_newest_passed_mark_only() {
        let step = |marks: Vec<Control>, reached: Time| Step {
            marks,
            reached,
            cohorts_reached: reached,
            ..Step::default()
        };
        let mut s = step(vec![mark(2, true)], 3);
        s.merge(step(vec![mark(3, false), mark(4, true)], 5));
        s.merge(step(vec![mark(6, true), mark(9, true)], 7));
        s.newest_publishes();
        assert_eq!(
            publishing(&s),
            vec![(2, false), (3, false), (4, false), (6, true), (9, true)]
        );
        assert_eq!((s.reached, s.cohorts_reached, s.closed), (7, 7, false));

        // Nothing passed yet: every mark keeps what it said.
        let mut s = step(vec![mark(8, true)], 5);
        s.merge(step(vec![mark(9, true)], 6));
        s.newest_publishes();
        assert_eq!(publishing(&s), vec![(8, true), (9, true)]);
    }
}
