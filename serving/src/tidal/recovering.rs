//! After an event-clock cluster's start: reads without `min_lsn` wait until the logs every
//! process recovered are visible. A process serves before the others have told it of their
//! last recovered batches (they can only once it serves), and only that moves the frontier
//! past what they recovered.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tidal_core::Time;
use tidal_sinks::View;

use super::read::held_lsn;
use super::{Reads, Tidal};

/// How long reads wait for an event-clock cluster's recovered logs at most.
const RECOVERY_GRACE: Duration = Duration::from_secs(10);

/// What a process recovered, until its state holds it and what the others recovered.
#[derive(Debug)]
pub(super) struct Recovering {
    /// The last LSN of the recovered log.
    target: u64,
    /// The newest batch time each process told of since this start (this one's: its last).
    heard: Mutex<Vec<Option<Time>>>,
    /// After this the reads go on regardless (a process that never tells).
    until: Instant,
    done: AtomicBool,
}

impl Recovering {
    /// Process `process` of `processes` recovered its log up to `target`, its last batch at
    /// `last_time`.
    pub(super) fn new(target: u64, processes: usize, process: usize, last_time: Time) -> Recovering {
        Recovering {
            target,
            heard: Mutex::new((0..processes).map(|p| (p == process).then_some(last_time)).collect()),
            until: Instant::now() + RECOVERY_GRACE,
            done: AtomicBool::new(false),
        }
    }

    fn heard_from(&self, process: usize, time: Time) {
        let mut heard = self.heard.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(slot) = heard.get_mut(process) {
            *slot = Some(slot.map_or(time, |t| t.max(time)));
        }
    }

    /// Whether `view` still misses some of what the processes recovered (at most until the
    /// grace period ends; once it holds it all, never again).
    fn pending(&self, view: impl FnOnce() -> View) -> bool {
        if self.done.load(Ordering::Acquire) {
            return false;
        }
        let told = {
            let heard = self.heard.lock().unwrap_or_else(|p| p.into_inner());
            heard.iter().try_fold(0, |most: Time, t| t.map(|t| most.max(t)))
        };
        let view = view();
        // Every process told of its recovered log (time 0: none), and the state is past all
        // of it.
        let held = told.is_some_and(|t| t == 0 || view.frontier > t)
            && held_lsn(&view, None, Reads::Everything) >= self.target;
        if held || Instant::now() >= self.until {
            if !held {
                tracing::warn!("the recovered log is not visible yet; serving reads regardless");
            }
            self.done.store(true, Ordering::Release);
            return false;
        }
        true
    }
}

impl Tidal {
    /// Notes that process `process` told of a batch at `time` (its last recovered one, or a
    /// commit since).
    pub fn heard_from(&self, process: usize, time: Time) {
        if let Some(r) = &self.recovering {
            r.heard_from(process, time);
        }
    }

    /// Whether the log this process recovered is not visible yet: in an event-clock cluster
    /// just started, until every process has told the others of its last recovered batch
    /// (at most [`RECOVERY_GRACE`]); reads without `min_lsn` are answered 503 meanwhile
    /// rather than from the state before it.
    pub fn recovering(&self) -> bool {
        self.recovering.as_ref().is_some_and(|r| r.pending(|| self.view()))
    }
}
