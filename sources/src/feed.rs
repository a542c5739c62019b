//! The hand-off between the WAL (its writer thread, or a reader replaying files) and the
//! dataflow's source operator: a bounded queue of committed batches plus the *seal*, the
//! logical time below which no further batch will arrive. Producers push; the source
//! operator on worker 0 drains and is woken through registered `SyncActivator`s.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex};
use std::time::Instant;

use timely::scheduling::SyncActivator;

use tidal_core::record::SharedBatch;
use tidal_core::time::Time;

/// What the source gets from one [`Feed::drain`].
#[derive(Debug, Default)]
pub struct Drained {
    /// Batches in log order.
    pub batches: Vec<SharedBatch>,
    /// No batch will come with a time below this.
    pub sealed: Time,
    /// The producer is gone: after these batches, the input is closed.
    pub closed: bool,
    /// Batches still queued after these.
    pub remaining: usize,
    /// The producer is catching up (recovery, replay): batches are coalesced into large runs
    /// until [`flush`](Self::flush) is asked for.
    pub catching_up: bool,
    /// How many times a flush was asked for (an explicit seal, the end of a catch-up).
    pub flushes: u64,
    /// How many checkpoints were asked for.
    pub checkpoints: u64,
}

#[derive(Default)]
struct State {
    batches: VecDeque<SharedBatch>,
    sealed: Time,
    closed: bool,
    /// Fault-injection for tests: while set, the consumer gets nothing.
    held: bool,
    /// The workers are being stopped: the consumer gets nothing more (and no close, which
    /// would have it apply every future time first), and a producer no longer waits.
    stopped: bool,
    catching_up: bool,
    flushes: u64,
    checkpoints: u64,
    /// The reader drains by then on its own (see [`Feed::drains_by`]); cleared by a drain.
    drains_by: Option<Instant>,
}

/// A queue of committed batches from one producer to the dataflow source.
pub struct Feed {
    state: Mutex<State>,
    space: Condvar,
    capacity: usize,
    activators: Mutex<Vec<SyncActivator>>,
}

impl Feed {
    /// A feed holding at most `capacity` undrained batches (`push` waits past that).
    pub fn new(capacity: usize) -> Feed {
        Feed {
            state: Mutex::new(State::default()),
            space: Condvar::new(),
            capacity: capacity.max(1),
            activators: Mutex::new(Vec::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends a committed batch; its time must exceed every earlier batch's. Waits while the
    /// queue is full (back-pressure for replay).
    pub fn push(&self, batch: SharedBatch) {
        self.push_quietly(batch);
        let _ = self.wake_for_batches();
    }

    /// [`push`](Self::push) without waking the reader: the caller wakes it
    /// ([`wake_for_batches`](Self::wake_for_batches)) when it is done with what must come
    /// first (the WAL writer answers its producers). A drain finds the batch at once.
    pub fn push_quietly(&self, batch: SharedBatch) {
        let mut st = self.lock();
        while st.batches.len() >= self.capacity && !st.closed && !st.stopped {
            st = self.space.wait(st).unwrap_or_else(|p| p.into_inner());
        }
        st.sealed = st.sealed.max(batch.time + 1);
        st.batches.push_back(batch);
    }

    /// Promises that no batch will come with a time below `t`, and asks for the state up to
    /// there to be made visible (a flush of a catch-up). The writer's idle ticks use
    /// [`advance`](Self::advance) instead.
    pub fn seal(&self, t: Time) {
        let mut st = self.lock();
        st.sealed = st.sealed.max(t);
        st.flushes += 1;
        drop(st);
        self.wake();
    }

    /// Promises that no batch will come with a time below `t`.
    pub fn advance(&self, t: Time) {
        let mut st = self.lock();
        if t > st.sealed {
            st.sealed = t;
            drop(st);
            self.wake();
        }
    }

    /// Asks for a checkpoint of the state after every batch pushed so far.
    pub fn request_checkpoint(&self) {
        let mut st = self.lock();
        st.checkpoints += 1;
        drop(st);
        self.wake();
    }

    /// Marks the start (`true`) or the end (`false`) of a catch-up: while catching up, the
    /// source gathers batches into large runs and makes them visible only when flushed.
    pub fn catch_up(&self, on: bool) {
        let mut st = self.lock();
        st.catching_up = on;
        if !on {
            st.flushes += 1;
        }
        drop(st);
        self.wake();
    }

    /// The current seal.
    pub fn sealed(&self) -> Time {
        self.lock().sealed
    }

    /// No more batches will come.
    pub fn close(&self) {
        self.lock().closed = true;
        self.space.notify_all();
        self.wake();
    }

    /// The workers are stopping without applying what is pending: the consumer is woken and
    /// gets nothing more, and a producer waiting for room returns.
    pub fn stop(&self) {
        self.lock().stopped = true;
        self.space.notify_all();
        self.wake();
    }

    /// Registers an activator to wake when something arrives.
    pub fn register(&self, activator: SyncActivator) {
        self.activators
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(activator);
    }

    /// Fault-injection hook for tests: while held, [`drain`](Self::drain) hands out nothing
    /// and reports the seal unchanged, as a dataflow that has fallen behind would see it.
    pub fn hold(&self, held: bool) {
        self.lock().held = held;
        if !held {
            self.wake();
        }
    }

    /// Batches waiting to be drained.
    pub fn queued(&self) -> usize {
        self.lock().batches.len()
    }

    /// Takes up to `max` batches.
    pub fn drain(&self, max: usize) -> Drained {
        let mut st = self.lock();
        st.drains_by = None;
        if st.held || st.stopped {
            return Drained {
                catching_up: st.catching_up,
                flushes: st.flushes,
                checkpoints: st.checkpoints,
                ..Drained::default()
            };
        }
        let n = st.batches.len().min(max);
        let batches: Vec<_> = st.batches.drain(..n).collect();
        let closed = st.closed && st.batches.is_empty();
        // The seal may only run ahead of batches already handed out.
        let sealed = match st.batches.front() {
            Some(b) => b.time,
            None => st.sealed,
        };
        let remaining = st.batches.len();
        let (st_catching_up, st_flushes, st_checkpoints) = (st.catching_up, st.flushes, st.checkpoints);
        drop(st);
        self.space.notify_all();
        Drained {
            remaining,
            batches,
            sealed,
            closed,
            catching_up: st_catching_up,
            flushes: st_flushes,
            checkpoints: st_checkpoints,
        }
    }

    /// The reader's word that it drains the feed by `at` on its own (it has asked for a
    /// wake-up of its own, to drain what comes with its next mark): until its next drain,
    /// batches pushed do not wake it. Live single-signal writes come thousands a second, and
    /// each wake-up is a step of the worker on the cores that answer them.
    pub fn drains_by(&self, at: Instant) {
        self.lock().drains_by = Some(at);
    }

    /// Wakes the readers for batches pushed, unless they drain on their own soon
    /// ([`drains_by`](Self::drains_by); past that time, they are woken all the same).
    /// Whether they were woken.
    pub fn wake_for_batches(&self) -> bool {
        if self.lock().drains_by.is_some_and(|at| at > Instant::now()) {
            return false;
        }
        self.wake();
        true
    }

    /// Wakes the workers that read the feed.
    pub fn wake(&self) {
        let acts = self.activators.lock().unwrap_or_else(|p| p.into_inner());
        for a in acts.iter() {
            let _ = a.activate();
        }
    }
}
