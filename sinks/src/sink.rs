//! The serving sink: a timely operator on every worker that applies the worker's own
//! materialized outputs (its items' window lanes, decay sums and states — no exchange, they
//! were computed here) to its [`Shard`] of the serving state, cutting one version at each
//! publishing mark of the source.
//!
//! Updates are buffered by time. Once the data frontier reaches a mark `m`, the updates at
//! times before `m` are consolidated and applied to the builder's working copy together; if
//! the mark publishes, the version at `m` is cut: it holds every time before `m` and none
//! after, and every shard cuts at the same marks, so a reader finds one frontier common to
//! all. The marks inside a catch-up do not publish: their updates only reach the working
//! copies, and the catch-up's last mark settles every item it changed in one version. When
//! the inputs close, the final version (frontier [`CLOSED`]) is published.
//!
//! The operator itself only takes its inputs and frontiers and hands them, as one step per
//! activation, to the sink's own thread (`tidal-sink`), which applies the steps in order
//! and cuts the versions: settling the serving indexes, most of a live round's work, runs
//! beside the worker while it computes the next rounds. A shard alone in its cluster also
//! leaves out the versions a newer one already replaces: the steps queued behind one are
//! applied with it and cut once (shards beside others cut at every publishing mark, so
//! that readers find each frontier on all of them).

use std::collections::BTreeMap;
use std::sync::Arc;

use differential_dataflow::VecCollection;
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;

use tidal_core::Config;
use tidal_core::features::Lanes;
use tidal_core::flow::{Control, DecayKey, ItemKey, ItemState, KindIdx};
use tidal_core::record::Position;
use tidal_core::stats::{Stage, StateStats};
use tidal_core::time::Time;

use crate::builder::SnapshotBuilder;
use crate::delta::Delta;
use crate::shards::Shard;
use crate::side::CohortKey;
use crate::snapshot::{CLOSED, CohortCut, ItemChange, Snapshot};
use crate::store::{EntityStore, StoreShard};
use tidal_core::user::SideUpdate;

/// The collections a shard is built from (each functional: a change is `−1` for the old
/// value and `+1` for the new).
pub struct SinkInputs<'s> {
    /// Current window lanes per (item, signal type index).
    pub windows: VecCollection<'s, Time, ((ItemKey, KindIdx), Lanes), isize>,
    /// Current anchored decay sum per (item, type, half-life index, epoch start ms).
    pub decay: VecCollection<'s, Time, (DecayKey, i128), isize>,
    /// Current [`ItemState`] per key.
    pub items: VecCollection<'s, Time, (ItemKey, ItemState), isize>,
    /// Current cohort window lanes per (item, signal type, cohort).
    pub cohorts: VecCollection<'s, Time, (CohortKey, Lanes), isize>,
    /// The views of the users this worker owns, and the declared cohorts.
    pub side: StreamVec<'s, Time, SideUpdate>,
}

/// Where a shard sits in the cluster: its process and how many there are.
#[derive(Copy, Clone, Debug)]
pub struct Place {
    /// This process's index.
    pub process: usize,
    /// Processes in the cluster.
    pub processes: usize,
}

impl Default for Place {
    fn default() -> Place {
        Place {
            process: 0,
            processes: 1,
        }
    }
}

/// Sinks this worker's outputs into `shard`, cutting versions at the marks of `control`
/// (the broadcast control stream, which carries the marks of every process's source). A
/// version's position is this process's WAL position; in a cluster it also records, per
/// process, the last LSN of that process's WAL it holds. Item metadata also goes to `store`,
/// if any, as this shard writes it there.
pub fn shard_sink<'s>(
    inputs: SinkInputs<'s>,
    control: StreamVec<'s, Time, Control>,
    shard: Arc<Shard>,
    store: Option<(Arc<EntityStore>, StoreShard)>,
    config: &Config,
    stats: Arc<StateStats>,
    place: Place,
) {
    let windows = inputs
        .windows
        .map(|((key, kind), lanes)| Delta::Window { key, kind, lanes });
    let decay = inputs.decay.map(|((key, kind, hl, epoch), sum)| Delta::Decay {
        key,
        kind,
        hl,
        epoch,
        sum,
    });
    let items = inputs.items.map(|(key, state)| Delta::Item {
        key,
        state: Box::new(state),
    });
    let all = windows.concatenate([decay, items]);

    let scope = all.inner.scope();
    let mut op = OperatorBuilder::new("ServingSink".to_owned(), scope);
    let mut data = op.new_input(all.inner, Pipeline);
    let mut marks_in = op.new_input(control, Pipeline);
    let mut cohorts_in = op.new_input(inputs.cohorts.inner, Pipeline);
    let mut side_in = op.new_input(inputs.side, Pipeline);

    // Alone, the shard may leave out the versions a newer one already replaces; beside
    // others (local or in other processes) every shard cuts at every publishing mark, so
    // that readers find each frontier on all of them.
    let coalesce = shard.alone() && place.processes == 1;
    let core = SinkCore::new(shard.clone(), store, config, stats, place);
    let mut thread = SinkThread::start(core, coalesce);
    // What the operator took and has not handed over yet, the frontiers it last handed
    // over, and the newest mark it has seen: updates wait here until a mark needs them,
    // so that the thread is woken per mark rather than per activation.
    let mut held = Step::default();
    let mut sent: Option<(Time, Time, bool)> = None;
    let mut newest_mark: Time = 0;
    op.build(move |_capabilities| {
        move |frontiers| {
            data.for_each(|_cap, d| held.data.push(std::mem::take(d)));
            cohorts_in.for_each(|_cap, d| held.cohorts.push(std::mem::take(d)));
            side_in.for_each(|cap, d| {
                if let Some(t) = cap.least().copied() {
                    held.side.push((t, std::mem::take(d)));
                }
            });
            let mut marked = false;
            marks_in.for_each(|_cap, d| {
                for c in d.iter() {
                    if let Control::Mark { time, .. } = c {
                        newest_mark = newest_mark.max(*time);
                        marked = true;
                    }
                }
                held.marks.append(d);
            });
            // Times are totally ordered: a frontier is one time, or empty once closed. The
            // cohort input has a frontier of its own: everything else is cut without it.
            let at = |i: usize| frontiers[i].frontier().iter().min().copied().unwrap_or(CLOSED);
            held.reached = at(0).min(at(3));
            held.cohorts_reached = at(2);
            held.closed =
                held.reached == CLOSED && held.cohorts_reached == CLOSED && frontiers[1].frontier().is_empty();
            let now = (held.reached, held.cohorts_reached, held.closed);
            // A new mark, or frontiers that moved while a mark is still open (for everything
            // else or for the cohort part), or the end: the thread has work.
            let open = sent.is_none_or(|(r, c, _)| newest_mark > r.min(c));
            let due = marked || now.2 || (sent != Some(now) && open);
            if !due {
                return;
            }
            sent = Some(now);
            thread.send(std::mem::take(&mut held), &shard);
        }
    });
}

/// What one activation of the sink operator took from its inputs, and where its input
/// frontiers stood then: the sink's thread applies steps in the order they were taken.
#[derive(Default)]
struct Step {
    data: Vec<Batch>,
    cohorts: Vec<CohortUpdates>,
    side: Vec<(Time, Vec<SideUpdate>)>,
    marks: Vec<Control>,
    /// The frontier of every input but the cohort sums.
    reached: Time,
    /// The cohort sums' frontier.
    cohorts_reached: Time,
    /// Every input is closed.
    closed: bool,
}

impl Step {
    /// Appends the step taken after this one.
    fn merge(&mut self, next: Step) {
        self.data.extend(next.data);
        self.cohorts.extend(next.cohorts);
        self.side.extend(next.side);
        self.marks.extend(next.marks);
        (self.reached, self.cohorts_reached, self.closed) = (next.reached, next.cohorts_reached, next.closed);
    }

    /// Leaves out the versions nobody will read: of the publishing marks the frontier has
    /// passed, only the newest still publishes (the others' changes go into its version).
    fn newest_publishes(&mut self) {
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

/// The sink thread's niceness (Linux): queries, the worker and the write path come first
/// when they wait for a core, and the versions take what is left (measured in BENCHMARKS.md,
/// "The serving sink on a thread of its own": at 0, cohort trending's p99 under ingest rose
/// from 18 to 30 ms; at 19 it stayed at 18 ms, and live ingest was as fast).
#[cfg(target_os = "linux")]
const SINK_NICE: i32 = 19;

/// Steps waiting for the sink's thread before the worker waits for it: enough to ride out
/// one long version while the worker computes the next rounds, few enough that a backlog
/// of raw updates does not pile up in memory.
const STEPS_QUEUED: usize = 64;

/// The sink's own thread: it applies the steps the operator hands it and cuts the versions,
/// so that settling the serving indexes (most of a live round's work) runs beside the
/// worker instead of on it. Dropping it (with the operator) waits for every step sent.
struct SinkThread {
    tx: Option<std::sync::mpsc::SyncSender<Step>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SinkThread {
    /// With `coalesce`, the steps queued behind one are applied with it as one step, their
    /// version cut once (see [`Step::newest_publishes`]).
    fn start(mut core: SinkCore, coalesce: bool) -> SinkThread {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Step>(STEPS_QUEUED);
        let spawned = std::thread::Builder::new().name("tidal-sink".into()).spawn(move || {
            // Below the query threads: a query that wakes takes the core from it rather
            // than wait behind a version (SPEC §9: reads keep their latency under writes).
            #[cfg(target_os = "linux")]
            if let Err(e) = rustix::process::setpriority_process(Some(rustix::thread::gettid()), SINK_NICE) {
                tracing::debug!(error = %e, "the serving sink's thread keeps its priority");
            }
            while let Ok(mut step) = rx.recv() {
                let mut steps = 1;
                if coalesce {
                    while let Ok(next) = rx.try_recv() {
                        step.merge(next);
                        steps += 1;
                    }
                    step.newest_publishes();
                }
                core.step(step);
                for _ in 0..steps {
                    core.shard.step_applied();
                }
            }
        });
        match spawned {
            Ok(thread) => SinkThread {
                tx: Some(tx),
                thread: Some(thread),
            },
            Err(e) => panic!("the serving sink's thread could not start: {e}"),
        }
    }

    fn send(&mut self, step: Step, shard: &Shard) {
        shard.step_sent();
        let sent = self.tx.as_ref().map(|tx| tx.send(step));
        if !matches!(sent, Some(Ok(()))) {
            // Its thread panicked (the panic is on stderr); the worker stops too.
            panic!("the serving sink's thread stopped");
        }
    }
}

impl Drop for SinkThread {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(t) = self.thread.take()
            && t.join().is_err()
            && !std::thread::panicking()
        {
            tracing::error!("the serving sink's thread panicked");
        }
    }
}

/// The sink's state: the working copy of the shard, the updates, marks and user changes
/// received and not yet cut, and where the versions stand.
struct SinkCore {
    shard: Arc<Shard>,
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
    fn new(
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
    fn step(&mut self, step: Step) {
        let started = std::time::Instant::now();
        let Step {
            data,
            cohorts: cohort_containers,
            side,
            marks,
            reached,
            cohorts_reached,
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
            let mut ready = Vec::new();
            let rest = self.later.split_off(&m);
            for batch in std::mem::replace(&mut self.later, rest)
                .into_values()
                .flatten()
                .chain(self.fresh.drain(..))
            {
                sort_out(batch, m, &mut ready, &mut self.later);
            }
            let builder = &mut self.builder;
            if !ready.is_empty() {
                builder.apply_deltas(&ready);
            }
            // A restore's or a catch-up's batches are millions of deltas: gone before
            // the version is cut.
            drop(ready);
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
            if let Some((store, at)) = &self.store {
                // A version the store already holds (a start rebuilding the state it
                // wrote before) is not written again.
                if self.stored.is_none_or(|lsn| own.lsn > lsn) {
                    self.stored = None;
                    store.write(changes, Some((at, own.lsn)));
                }
            }
        }
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
type CohortUpdates = Vec<((CohortKey, Lanes), Time, isize)>;

/// Cohort sum changes of one time, as one container brought them.
type CohortChunk = Vec<(CohortKey, Lanes, isize)>;

/// The marks received for one time: whether one of them publishes, and the position each
/// stands for, by origin process.
type MarksAt = (bool, Vec<(usize, Position)>);

/// Updates as the sink receives them.
type Batch = Vec<(Delta, Time, isize)>;

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
