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
//! The operator itself only takes its inputs and frontiers and hands them, one step per
//! mark (or per frontier move an open mark waits for), to the sink's own thread
//! (`tidal-sink`), which applies the steps in order and cuts the versions ([`apply`]):
//! settling the serving indexes, most of a live round's work, runs beside the worker while
//! it computes the next rounds. A shard alone in its cluster also
//! leaves out the versions a newer one already replaces: the steps queued behind one are
//! applied with it and cut once (shards beside others cut at every publishing mark, so
//! that readers find each frontier on all of them).

use std::sync::Arc;

use differential_dataflow::VecCollection;
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;

use tidal_core::Config;
use tidal_core::features::Lanes;
use tidal_core::flow::{Control, DecayKey, ItemKey, ItemState, KindIdx};
use tidal_core::stats::StateStats;
use tidal_core::time::Time;

use crate::delta::Delta;
use crate::shards::Shard;
use crate::side::CohortKey;
use crate::snapshot::CLOSED;
use crate::store::{EntityStore, StoreShard};
use tidal_core::user::SideUpdate;

mod apply;

use apply::{SinkCore, Step};

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
    let mut held_updates = 0usize;
    op.build(move |_capabilities| {
        move |frontiers| {
            data.for_each(|_cap, d| {
                held_updates += d.len();
                held.data.push(std::mem::take(d))
            });
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
            held.marks_reached = at(1);
            held.closed =
                held.reached == CLOSED && held.cohorts_reached == CLOSED && frontiers[1].frontier().is_empty();
            let now = (held.reached, held.cohorts_reached, held.closed);
            // A new mark, or frontiers that moved while a mark is still open (for everything
            // else or for the cohort part), or the end: the thread has work.
            let open = sent.is_none_or(|(r, c, _)| newest_mark > r.min(c));
            // A restore's or a catch-up's run of updates goes over while it grows, so that
            // the thread applies what no mark can fall among while the worker computes the
            // rest (`SinkCore::apply_early`).
            let due = marked || now.2 || (sent != Some(now) && open) || held_updates >= EARLY_UPDATES;
            if !due {
                return;
            }
            sent = Some(now);
            held_updates = 0;
            thread.send(std::mem::take(&mut held), &shard);
        }
    });
}

/// Updates held before they go to the thread without waiting for a mark: a live round
/// holds far fewer, a restore's or a catch-up's run millions. Debug builds (the tests) send
/// them early from a few dozen, so that both paths are checked.
const EARLY_UPDATES: usize = if cfg!(debug_assertions) { 64 } else { 1 << 18 };

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
            if let Err(e) = tidal_core::priority::run_in_background() {
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
                core.shard.steps_applied(steps);
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
        let sent = self.tx.as_ref().is_some_and(|tx| tx.send(step).is_ok());
        if !sent {
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
