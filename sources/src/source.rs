//! The WAL source: a timely operator that turns committed batches from a [`Feed`] into the
//! dataflow's [`Control`] stream. One worker per process reads the feed (the others hold no
//! capability, so progress depends on the readers alone) and its output is broadcast: every
//! worker sees every record and takes the ids it owns (see `tidal_core::flow`), so no record
//! is copied or re-routed inside a process.
//!
//! **Catch-up.** Each activation takes every batch queued in the feed (up to
//! [`MAX_RUN_BATCHES`]) and emits them as one [`Run`] at the time of the last one: when behind
//! the WAL the times in between are never observed (the state as of `T` depends only on the
//! records committed at `≤ T` and on `T`), so the materializers do one round of work for many
//! batches and the window lanes already closed at the run's time are never opened at all.
//! While the producer says it is catching up (recovery, replay: [`Feed::catch_up`]), batches
//! are gathered into runs of about [`CATCH_UP_RUN_SIGNALS`] signals, cut early only when the
//! producer asks for the state to be visible (a flush). Each batch keeps its commit clock for
//! `ts_eff`. In a cluster a run keeps each batch at its own time: the other processes' logs
//! have records at the times in between, and the state as of those depends on which of this
//! log's records came before them (a delete of an item, then a signal for it written on
//! another process).
//!
//! **Marks.** After moving its capability the reader emits a [`Control::Mark`] for the new
//! frontier, at most one per [`MARK_INTERVAL`] (a deferred mark is emitted when the interval
//! is up, so a completed frontier is never left unmarked); while a mark waits, and live for
//! an interval after each mark, what arrives is left in the feed and drained when the next
//! mark is due, in one run with it (each run is a round of every operator, and live writes
//! of one signal each cost a round apiece, on the cores that answer the writes; a batch is
//! visible at the next mark either way). While more batches are queued
//! behind a run, no mark is made (at most one per [`MAX_MARK_GAP`]): the materializers apply
//! everything between two marks as one round. Every serving shard cuts its versions exactly
//! at the publishing marks, so readers find one frontier common to all shards; the marks made
//! inside a catch-up do not publish (nobody reads those times), so the serving indexes are
//! settled once, at the mark that ends it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::{Scope, StreamVec};
use timely::scheduling::Activator;

use tidal_core::flow::{Control, Run};
use tidal_core::record::Position;
use tidal_core::stats::{Stage, StateStats};
use tidal_core::time::Time;

use crate::feed::Feed;

/// Most batches taken from the feed in one activation; the operator re-activates itself when
/// it took that many, so other operators get to run between slices.
pub const MAX_RUN_BATCHES: usize = 1024;
/// While catching up, batches are gathered into runs of about this many signals.
pub const CATCH_UP_RUN_SIGNALS: u64 = 1 << 20;
/// The shortest time between two marks (and so the longest a completed frontier waits for
/// its mark once the source has caught up, and a live batch for its round). At 2 ms, single
/// signals posted one after the other against a million items and users were answered in
/// ~350 us (p50), at 5 ms in ~190 us, visible ~1.2 ms later than at 2 ms (BENCHMARKS.md).
pub const MARK_INTERVAL: Duration = Duration::from_millis(5);
/// While batches keep queuing up (recovery, replay, a backlog), marks are left out — nobody
/// waits for the times in between — but at least one is made per this interval.
pub const MAX_MARK_GAP: Duration = Duration::from_millis(250);
/// Poll interval in case a wake-up from the feed is missed.
const FALLBACK_POLL: Duration = Duration::from_millis(5);

/// How the source runs.
#[derive(Clone, Debug, Default)]
pub struct SourceOptions {
    /// Whether this worker reads the feed (one per process).
    pub reader: bool,
    /// A checkpoint is asked for after every this many signals (0: only when requested),
    /// once the source has caught up with the log.
    pub checkpoint_every: u64,
    /// The newest frontier whose checkpoint the writer has finished with: a periodic
    /// checkpoint waits until the one asked for before it is finished (`None`: no writer).
    pub checkpoints_finished: Option<Arc<std::sync::atomic::AtomicU64>>,
    /// Where a restored state left off: its frontier and log position.
    pub start: Option<(Time, Position)>,
    /// This process's index in the cluster (0 alone): marks name it as their origin.
    pub origin: usize,
    /// Processes whose sources feed the control stream (1 alone).
    pub sources: usize,
    /// In a cluster: where this process's log position is recorded at each run, so that a
    /// checkpoint at a frontier another process asked for names this process's position.
    pub run_log: Option<Arc<RunLog>>,
    /// In a cluster: what every process's checkpoint writer has finished with (the workers
    /// note the [`Control::Finished`] they receive). A periodic checkpoint waits until every
    /// process has finished with the last one this source asked for; this source tells the
    /// others when its own writer finishes one.
    pub cluster_finished: Option<Arc<tidal_core::flow::ClusterFinished>>,
}

/// This process's log position after each run its source emitted, by the run's time: the
/// position a checkpoint at frontier `F` covers is the one after the last run before `F`.
#[derive(Debug, Default)]
pub struct RunLog {
    runs: std::sync::Mutex<Runs>,
}

#[derive(Debug, Default)]
struct Runs {
    runs: std::collections::VecDeque<(Time, Position)>,
    /// Whether runs were dropped (for room, or forgotten): a frontier before the oldest kept
    /// one is unknown.
    dropped: bool,
}

/// Runs a [`RunLog`] remembers at most (checkpoints are asked for at frontiers seconds old,
/// never this many runs back).
const RUN_LOG_MAX: usize = 1 << 20;

impl RunLog {
    /// A log starting at `start` (a restored checkpoint's frontier and position).
    pub fn new(start: Option<(Time, Position)>) -> RunLog {
        let log = RunLog::default();
        if let Some((t, p)) = start {
            log.record(t.saturating_sub(1), p);
        }
        log
    }

    /// Records the position after a run at `time`.
    pub fn record(&self, time: Time, position: Position) {
        let mut log = self.runs.lock().unwrap_or_else(|p| p.into_inner());
        log.runs.push_back((time, position));
        if log.runs.len() > RUN_LOG_MAX {
            log.runs.pop_front();
            log.dropped = true;
        }
    }

    /// The position after the last run before `frontier`; `None` when the log no longer
    /// (or never) held a run before it.
    ///
    /// The workers of a process write their parts of checkpoints at different frontiers
    /// in no common order, so a lookup forgets nothing: see [`forget_before`](Self::forget_before).
    pub fn at(&self, frontier: Time) -> Option<Position> {
        let log = self.runs.lock().unwrap_or_else(|p| p.into_inner());
        let n = log.runs.partition_point(|(t, _)| *t < frontier);
        match n.checked_sub(1) {
            Some(last) => Some(log.runs[last].1),
            // No run before it: the log's start, unless runs were dropped.
            None => (!log.dropped).then(Position::default),
        }
    }

    /// Forgets the runs no checkpoint will ask about: those before the last run before
    /// `frontier`, the newest frontier whose checkpoint this process has finished with (every
    /// part at an older frontier was written before its parts).
    pub fn forget_before(&self, frontier: Time) {
        let mut log = self.runs.lock().unwrap_or_else(|p| p.into_inner());
        let n = log.runs.partition_point(|(t, _)| *t < frontier);
        if n >= 2 {
            log.runs.drain(..n - 1);
            log.dropped = true;
        }
    }
}

/// Builds the source operator in `scope`. When `reader` is set this worker drains `feed`;
/// every batch's records go out at its run's time. The capability follows the runs and the
/// feed's seal, and is dropped once the feed is closed and drained. The output is meant to be
/// broadcast.
pub fn wal_source<'s>(
    scope: Scope<'s, Time>,
    feed: Arc<Feed>,
    options: SourceOptions,
    stats: Arc<StateStats>,
) -> StreamVec<'s, Time, Control> {
    let reader = options.reader;
    let origin = options.origin;
    let mut builder = OperatorBuilder::new("WalSource".to_owned(), scope);
    let info = builder.operator_info();
    let (mut output, stream) = builder.new_output::<Vec<Control>>();
    let activator = scope.activator_for(info.address.clone());
    if reader {
        feed.register(scope.worker().sync_activator_for(info.address.to_vec()));
    }

    builder.build(move |mut capabilities| {
        let mut cap = if reader { capabilities.pop() } else { None };
        let (start_at, mut position) = options.start.unwrap_or_default();
        let mut since_checkpoint = 0u64;
        let mut checkpoints = 0u64;
        // The frontier of the last checkpoint this source asked for.
        let mut asked_at: Time = 0;
        // The newest frontier this process's writer finished at that the others were told of.
        let mut told_finished: Time = 0;
        // Batches gathered while catching up, their signals, and the flushes seen.
        let mut gathered: Vec<Arc<tidal_core::record::CommittedBatch>> = Vec::new();
        let mut gathered_signals = 0u64;
        let mut flushes = 0u64;
        let mut marked: Time = 0;
        // The last publishing mark (marks inside a catch-up do not publish).
        let mut published: Time = 0;
        let mut publish_owed = false;
        // A flush was asked for (a replay's evaluation, the end of a recovery) and its mark is
        // still to make: someone waits for it, so it does not wait for the mark interval.
        let mut flush_waits = false;
        let mut last_mark: Option<Instant> = None;
        let mut mark_due: Option<Instant> = None;
        // Whether the wake-up for `mark_due` is asked for.
        let mut wake_asked = false;
        let mut next_poll: Option<Instant> = None;
        move |_frontiers| {
            let started = Instant::now();
            let Some(held) = cap.as_mut() else { return };
            // A mark waits for its interval: what comes meanwhile is drained when it is due, in
            // the same run (see the module's documentation). One wake-up is asked for it (each
            // commit wakes this operator meanwhile).
            if let Some(wait) = mark_due.and_then(|due| due.checked_duration_since(started))
                && !wait.is_zero()
            {
                if !wake_asked {
                    drain_at(&activator, &feed, started, started + wait);
                    wake_asked = true;
                }
                return;
            }
            let mut drained = feed.drain(MAX_RUN_BATCHES);
            let lower = *held.time();
            let mut upper = lower;
            let full = drained.batches.len() == MAX_RUN_BATCHES;
            gathered_signals += drained
                .batches
                .iter()
                .flat_map(|b| &b.records)
                .map(|r| r.record.signal_count() as u64)
                .sum::<u64>();
            gathered.append(&mut drained.batches);
            let asked = drained.checkpoints != checkpoints;
            let flush = drained.flushes != flushes || drained.closed || !drained.catching_up || asked;
            flush_waits |= drained.flushes != flushes;
            flushes = drained.flushes;
            if !flush
                && !gathered.is_empty()
                && gathered_signals < CATCH_UP_RUN_SIGNALS
                && gathered.len() < 64 * MAX_RUN_BATCHES
            {
                // Keep gathering: nobody observes the times of a catch-up before its flush.
                if full {
                    activator.activate();
                } else {
                    activator.activate_after(FALLBACK_POLL);
                }
                stats.busy(Stage::Source, started);
                return;
            }
            drained.batches = std::mem::take(&mut gathered);
            gathered_signals = 0;
            if let Some(last) = drained.batches.last() {
                if last.time < lower {
                    tracing::error!(batch = last.time, lower, "a batch arrived below the feed's seal");
                }
                // Alone, the whole run is applied at its last batch's time (never below the
                // seal). In a cluster each batch keeps its own time: a run moved past
                // another process's batches would reorder this log's records against
                // theirs (a delete and a put of an item against a signal for it written
                // between them elsewhere).
                let runs = if options.sources > 1 {
                    split_by_time(drained.batches, lower)
                } else {
                    let time = last.time.max(lower);
                    vec![(time, drained.batches)]
                };
                for (time, batches) in runs {
                    for b in &batches {
                        let lsn = b.last_lsn();
                        if lsn > position.lsn {
                            position.lsn = lsn;
                        }
                        let n = b.records.iter().map(|r| r.record.signal_count() as u64).sum::<u64>();
                        position.signals += n;
                        since_checkpoint += n;
                    }
                    held.downgrade(&time);
                    if let Some(log) = &options.run_log {
                        log.record(time, position);
                    }
                    let run = Run { batches, position };
                    output.activate().give(&*held, &mut vec![Control::Run(Arc::new(run))]);
                    upper = time.saturating_add(1);
                }
            }
            if drained.closed {
                // The frontier reached (sealed) before closing is observable: mark it, then
                // the final state, which every shard cuts when the frontier empties.
                let upper = upper.max(drained.sealed);
                if upper > *held.time() {
                    held.downgrade(&upper);
                }
                if *held.time() > marked {
                    let time = *held.time();
                    output.activate().give(&*held, &mut mark(time, position, origin, true));
                }
                output
                    .activate()
                    .give(&*held, &mut mark(Time::MAX, position, origin, true));
                cap = None;
                return;
            }
            let upper = upper.max(drained.sealed).max(start_at);
            // A checkpoint of the state before the new frontier: asked for, or due. A due one
            // waits for the end of a catch-up (nobody restarts from a state the catch-up is
            // about to pass; its encoding would take the core the catch-up runs on) and for
            // the writer to finish the one before (checkpoints never queue up behind a slow
            // disk, each holding its snapshot).
            let finished = options
                .checkpoints_finished
                .as_ref()
                .map(|f| f.load(std::sync::atomic::Ordering::Acquire));
            if let Some(f) = finished.filter(|f| *f > told_finished)
                && options.cluster_finished.is_some()
            {
                told_finished = f;
                output
                    .activate()
                    .give(&*held, &mut vec![Control::Finished { origin, frontier: f }]);
            }
            let due = options.checkpoint_every > 0
                && since_checkpoint >= options.checkpoint_every
                && !drained.catching_up
                && finished.is_none_or(|f| f >= asked_at)
                && options.cluster_finished.as_ref().is_none_or(|c| c.least() >= asked_at);
            if asked || due {
                asked_at = upper;
                output
                    .activate()
                    .give(&*held, &mut vec![Control::Checkpoint { time: upper, position }]);
                since_checkpoint = 0;
                checkpoints = drained.checkpoints;
            }
            if upper > *held.time() {
                held.downgrade(&upper);
            }
            let now = Instant::now();
            // A mark is owed for a new frontier; after a flush (or live, where every mark
            // publishes) the next mark publishes, even at a frontier only a non-publishing
            // mark was made for.
            publish_owed |= flush;
            if *held.time() > marked || (publish_owed && published < *held.time()) {
                let since = last_mark.map_or(Duration::MAX, |t| now.duration_since(t));
                let behind = drained.remaining > 0;
                if ((since >= MARK_INTERVAL || flush_waits) && !behind) || since >= MAX_MARK_GAP {
                    let time = *held.time();
                    // Inside a catch-up (no flush asked for) nobody reads this time.
                    let publish = publish_owed;
                    output
                        .activate()
                        .give(&*held, &mut mark(time, position, origin, publish));
                    marked = time;
                    if publish {
                        published = time;
                        publish_owed = false;
                    }
                    last_mark = Some(now);
                    flush_waits = false;
                    // Live, the next mark is due an interval after this one: what comes before
                    // it waits in the feed and is drained with it, in one run (drained at once,
                    // the first batch after a mark took a run of its own, a round of every
                    // operator, and was visible no sooner). A backlog or a catch-up drains on.
                    mark_due = (!behind && !full && !drained.catching_up).then(|| now + MARK_INTERVAL);
                    wake_asked = false;
                } else if !behind && mark_due.is_none_or(|d| d <= now) {
                    let due = now + MARK_INTERVAL.saturating_sub(since);
                    drain_at(&activator, &feed, now, due);
                    mark_due = Some(due);
                    wake_asked = true;
                }
            }
            if full {
                activator.activate();
            } else if next_poll.is_none_or(|t| t <= now) {
                next_poll = Some(now + FALLBACK_POLL);
                activator.activate_after(FALLBACK_POLL);
            }
            stats.busy(Stage::Source, started);
        }
    });
    stream
}

/// The batches of a run, in log order, grouped by their times (never below `lower`).
fn split_by_time(
    batches: Vec<Arc<tidal_core::record::CommittedBatch>>,
    lower: Time,
) -> Vec<(Time, Vec<Arc<tidal_core::record::CommittedBatch>>)> {
    let mut runs: Vec<(Time, Vec<_>)> = Vec::new();
    for b in batches {
        let time = b.time.max(lower);
        match runs.last_mut() {
            Some((t, group)) if *t >= time => group.push(b),
            _ => runs.push((time, vec![b])),
        }
    }
    runs
}

/// Asks for the source's wake-up at `at` (it is `now`), and tells the feed that the source
/// drains by then on its own, so that the batches pushed meanwhile do not wake it.
fn drain_at(activator: &Activator, feed: &Feed, now: Instant, at: Instant) {
    activator.activate_after(at.saturating_duration_since(now));
    feed.drains_by(at);
}

/// A mark to broadcast: the frontier `time`, the log position before it, whose log it is,
/// and whether the shards cut a version there.
fn mark(time: Time, position: Position, origin: usize, publish: bool) -> Vec<Control> {
    vec![Control::Mark {
        time,
        position,
        origin,
        publish,
    }]
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::rc::Rc;
    use std::sync::atomic::{AtomicU64, Ordering};

    use tidal_core::record::{CommittedBatch, LoggedRecord, Record, Signal};
    use timely::dataflow::operators::Inspect;

    use super::*;

    fn pos(lsn: u64) -> Position {
        Position { lsn, signals: lsn * 10 }
    }

    /// The workers of a process write their parts of two checkpoints in no common order: a
    /// part at the older frontier asked after one at the newer still names the position
    /// before the older frontier, until the newer checkpoint is finished with.
    #[test]
    fn run_log_lookups_out_of_order_name_each_frontier_s_position() {
        let log = RunLog::default();
        assert_eq!(log.at(5), Some(Position::default()), "no run yet: the log's start");
        for (t, lsn) in [(10, 1), (20, 2), (30, 3), (40, 4)] {
            log.record(t, pos(lsn));
        }
        assert_eq!(log.at(35), Some(pos(3)));
        assert_eq!(log.at(25), Some(pos(2)), "an older frontier after a newer one");
        assert_eq!(log.at(10), Some(Position::default()));
        assert_eq!(log.at(11), Some(pos(1)));
        assert_eq!(log.at(41), Some(pos(4)));
        // Finished with the checkpoint at 35: the runs it needs stay, those before go.
        log.forget_before(35);
        assert_eq!(log.at(35), Some(pos(3)));
        assert_eq!(log.at(50), Some(pos(4)));
        assert_eq!(log.at(25), None, "forgotten: unknown, not the log's start");
    }

    /// A frontier older than every run kept once runs were dropped for room is unknown,
    /// never the log's start (which would replay the log on top of the checkpoint).
    #[test]
    fn run_log_does_not_guess_below_what_it_dropped() {
        let log = RunLog::default();
        for i in 0..=RUN_LOG_MAX as u64 {
            log.record(10 + i, pos(i + 1));
        }
        assert_eq!(log.at(10), None);
        assert_eq!(log.at(12), Some(pos(2)));
    }

    fn batch(lsn: u64, signals: usize) -> Arc<CommittedBatch> {
        let signal = Signal {
            kind: "view".into(),
            item: "i".into(),
            user: None,
            weight: 1.0,
            ts: None,
            id: None,
        };
        Arc::new(CommittedBatch {
            time: lsn,
            clock_ms: lsn,
            records: vec![LoggedRecord {
                lsn,
                record: Record::Signals(vec![signal; signals]),
            }],
        })
    }

    /// Steps the worker for `ms` milliseconds (the source wakes itself on timers).
    fn run_for(worker: &mut timely::worker::Worker, ms: u64) {
        let until = Instant::now() + Duration::from_millis(ms);
        while Instant::now() < until {
            worker.step_or_park(Some(Duration::from_millis(1)));
        }
    }

    /// A periodic checkpoint is asked for once `checkpoint_every` signals have come, not in
    /// the middle of a catch-up, and not again until the writer has finished the one before;
    /// one asked for on demand does not wait.
    #[test]
    fn periodic_checkpoints_wait_for_the_catch_up_and_the_writer() {
        timely::execute_directly(|worker| {
            let feed = Arc::new(Feed::new(1 << 18));
            let finished = Arc::new(AtomicU64::new(0));
            let asked: Rc<RefCell<Vec<Time>>> = Rc::new(RefCell::new(Vec::new()));
            let options = SourceOptions {
                reader: true,
                checkpoint_every: 10,
                checkpoints_finished: Some(finished.clone()),
                ..Default::default()
            };
            let (seen, source_feed) = (asked.clone(), feed.clone());
            worker.dataflow::<Time, _, _>(|scope| {
                wal_source(scope, source_feed, options, Arc::new(StateStats::default())).inspect(move |c: &Control| {
                    if let Control::Checkpoint { time, .. } = c {
                        seen.borrow_mut().push(*time);
                    }
                });
            });
            // A catch-up long enough for several runs (a run ends at 64 × 1024 batches).
            feed.catch_up(true);
            let mut lsn = 0;
            for _ in 0..3 * 64 * MAX_RUN_BATCHES {
                lsn += 1;
                feed.push(batch(lsn, 1));
            }
            run_for(worker, 300);
            assert!(
                asked.borrow().is_empty(),
                "none inside the catch-up: {:?}",
                asked.borrow()
            );
            feed.catch_up(false);
            run_for(worker, 100);
            assert_eq!(asked.borrow().len(), 1, "one once caught up");
            let first = asked.borrow()[0];
            assert!(first > lsn, "it covers the whole catch-up");

            // Live: 50 more signals, but the writer has not finished the first one.
            for _ in 0..5 {
                lsn += 1;
                feed.push(batch(lsn, 10));
                run_for(worker, 20);
            }
            assert_eq!(asked.borrow().len(), 1, "none while the one before is written");
            // Asked for on demand: at once.
            feed.request_checkpoint();
            run_for(worker, 50);
            assert_eq!(asked.borrow().len(), 2, "one on demand does not wait");
            // The writer finishes the first: the due one still waits for the one asked for.
            finished.store(first, Ordering::Release);
            lsn += 1;
            feed.push(batch(lsn, 10));
            run_for(worker, 50);
            assert_eq!(asked.borrow().len(), 2);
            let second = asked.borrow()[1];
            finished.store(second, Ordering::Release);
            run_for(worker, 50);
            assert_eq!(asked.borrow().len(), 3, "due, and the writer is free");
            // Fewer than `checkpoint_every` signals since: none.
            finished.store(asked.borrow()[2], Ordering::Release);
            lsn += 1;
            feed.push(batch(lsn, 9));
            run_for(worker, 50);
            assert_eq!(asked.borrow().len(), 3);
            feed.close();
            run_for(worker, 50);
        });
    }

    /// In a cluster a periodic checkpoint also waits until every process has finished with
    /// the last one this source asked for, and the source tells the others when its own
    /// writer finishes one.
    #[test]
    fn a_clusters_periodic_checkpoint_waits_for_every_process() {
        timely::execute_directly(|worker| {
            let feed = Arc::new(Feed::new(1 << 10));
            let finished = Arc::new(AtomicU64::new(0));
            let cluster = Arc::new(tidal_core::flow::ClusterFinished::new(2));
            let asked: Rc<RefCell<Vec<Time>>> = Rc::new(RefCell::new(Vec::new()));
            let told: Rc<RefCell<Vec<(usize, Time)>>> = Rc::new(RefCell::new(Vec::new()));
            let options = SourceOptions {
                reader: true,
                checkpoint_every: 10,
                checkpoints_finished: Some(finished.clone()),
                origin: 1,
                sources: 2,
                cluster_finished: Some(cluster.clone()),
                ..Default::default()
            };
            let (seen, heard, source_feed) = (asked.clone(), told.clone(), feed.clone());
            worker.dataflow::<Time, _, _>(|scope| {
                wal_source(scope, source_feed, options, Arc::new(StateStats::default())).inspect(move |c: &Control| {
                    match c {
                        Control::Checkpoint { time, .. } => seen.borrow_mut().push(*time),
                        Control::Finished { origin, frontier } => heard.borrow_mut().push((*origin, *frontier)),
                        _ => {}
                    }
                });
            });
            let mut lsn = 0;
            let mut push = |n: usize| {
                lsn += 1;
                feed.push(batch(lsn, n));
            };
            push(10);
            run_for(worker, 50);
            assert_eq!(asked.borrow().len(), 1);
            let first = asked.borrow()[0];
            // This process's writer finishes it: the others are told, but process 0 has not.
            finished.store(first, Ordering::Release);
            push(10);
            run_for(worker, 50);
            assert_eq!(*told.borrow(), [(1, first)]);
            cluster.note(1, first);
            assert_eq!(asked.borrow().len(), 1, "process 0 is still writing it");
            cluster.note(0, first);
            push(1);
            run_for(worker, 50);
            assert_eq!(asked.borrow().len(), 2, "every process finished: due");
            feed.close();
            run_for(worker, 50);
        });
    }

    /// A reading source on a feed in `worker`, its output logged: `r` per run, `m` per mark.
    fn logged_source(worker: &mut timely::worker::Worker) -> (Arc<Feed>, Rc<RefCell<Vec<char>>>) {
        let feed = Arc::new(Feed::new(1 << 10));
        let seen: Rc<RefCell<Vec<char>>> = Rc::new(RefCell::new(Vec::new()));
        let options = SourceOptions {
            reader: true,
            ..Default::default()
        };
        let (log, source_feed) = (seen.clone(), feed.clone());
        worker.dataflow::<Time, _, _>(|scope| {
            wal_source(scope, source_feed, options, Arc::new(StateStats::default())).inspect(
                move |c: &Control| match c {
                    Control::Run(_) => log.borrow_mut().push('r'),
                    Control::Mark { .. } => log.borrow_mut().push('m'),
                    Control::Checkpoint { .. } | Control::Finished { .. } => {}
                },
            );
        });
        (feed, seen)
    }

    /// Live batches that arrive within a mark's interval are drained with the next mark, in
    /// one run: between two marks there is at most one run, however many batches came.
    #[test]
    fn live_batches_wait_for_the_mark_in_one_run() {
        timely::execute_directly(|worker| {
            let (feed, seen) = logged_source(worker);
            run_for(worker, 20);
            // Twenty single-signal batches, the worker stepped after each, as live writes come.
            for lsn in 1..=20 {
                feed.push(batch(lsn, 1));
                for _ in 0..3 {
                    worker.step_or_park(Some(Duration::ZERO));
                }
            }
            run_for(worker, 4 * MARK_INTERVAL.as_millis() as u64);
            let seen: String = seen.borrow().iter().collect();
            let runs = seen.matches('r').count();
            assert!(seen.ends_with('m'), "the last run marked: {seen}");
            assert!(
                seen.split('m').all(|between| between.len() <= 1),
                "at most one run between marks: {seen}"
            );
            assert!(runs <= 10, "twenty batches in a few runs: {seen}");
            feed.close();
            run_for(worker, 20);
        });
    }

    /// While the source waits for its next mark, with a wake-up of its own asked for, the
    /// batches pushed do not wake it; they are drained with the mark, in one run, and the
    /// first batch after that wakes it again.
    #[test]
    fn batches_pushed_while_a_mark_waits_do_not_wake_the_source() {
        timely::execute_directly(|worker| {
            let (feed, seen) = logged_source(worker);
            // A first batch, drained and marked at once (no mark came for an interval).
            run_for(worker, 2 * MARK_INTERVAL.as_millis() as u64);
            feed.push_quietly(batch(1, 1));
            assert!(feed.wake_for_batches(), "nothing waits: the source is woken");
            // The mark is cut after this instant: the next one is due an interval later.
            let before_mark = Instant::now();
            for _ in 0..3 {
                worker.step_or_park(Some(Duration::ZERO));
            }
            assert_eq!(seen.borrow().iter().collect::<String>(), "rm");
            // Within the interval after that mark: the first batch wakes the source, which
            // asks for its own wake-up at the next mark; the rest do not wake it (on a
            // machine so loaded that the interval is up before a push, that push may).
            feed.push_quietly(batch(2, 1));
            assert!(feed.wake_for_batches());
            worker.step_or_park(Some(Duration::ZERO));
            let woken: Vec<(bool, bool)> = (3..=10)
                .map(|lsn| {
                    feed.push_quietly(batch(lsn, 1));
                    let woke = feed.wake_for_batches();
                    let in_time = before_mark.elapsed() < MARK_INTERVAL;
                    worker.step_or_park(Some(Duration::ZERO));
                    (woke, in_time)
                })
                .collect();
            assert!(
                woken.iter().all(|&(woke, in_time)| !(woke && in_time)),
                "no wake-up while the mark waits: {woken:?}"
            );
            run_for(worker, 2 * MARK_INTERVAL.as_millis() as u64);
            if woken.iter().all(|&(_, in_time)| in_time) {
                assert_eq!(
                    seen.borrow().iter().collect::<String>(),
                    "rmrm",
                    "the nine batches drained with the next mark, in one run"
                );
            }
            // Drained: the next batch wakes it again.
            feed.push_quietly(batch(11, 1));
            assert!(feed.wake_for_batches());
            feed.close();
            run_for(worker, 20);
        });
    }
}
