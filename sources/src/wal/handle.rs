//! The producers' side of the WAL: a cloneable [`WalHandle`] that submits records to the
//! writer thread and reads its published state. Every submission is answered exactly once:
//! by the writer, or with [`WalError::Closed`] if the writer is gone before it gets to it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;

use crossbeam_channel::{Sender, TrySendError};
use tidal_core::record::Record;
use tidal_core::time::Time;

use super::{Commit, WalError};

/// The callback answering one submission. It runs on the writer thread and must not block.
pub type ReplyFn = Box<dyn FnOnce(Result<Commit, WalError>) + Send>;

/// A reply that answers [`WalError::Closed`] if dropped unanswered.
pub(crate) struct Reply(Option<ReplyFn>);

impl Reply {
    pub fn new(f: ReplyFn) -> Reply {
        Reply(Some(f))
    }

    pub fn send(mut self, result: Result<Commit, WalError>) {
        if let Some(f) = self.0.take() {
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || f(result)));
            if outcome.is_err() {
                tracing::error!("a WAL reply callback panicked");
            }
        }
    }
}

impl Drop for Reply {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || f(Err(WalError::Closed))));
        }
    }
}

/// One producer request on its way to the writer.
pub(crate) struct Submission {
    pub records: Vec<Record>,
    pub reply: Reply,
}

/// State the writer publishes.
#[derive(Default)]
pub(crate) struct Status {
    pub last_lsn: AtomicU64,
    pub clock_ms: AtomicU64,
    pub last_time: AtomicU64,
    /// The floor other processes' commits asked for ([`WalHandle::raise_floor`]).
    pub floor: AtomicU64,
    /// Signals in the log (recovered and written).
    pub signals: AtomicU64,
    pub dedup_entries: AtomicU64,
    pub dedup_evicted: AtomicU64,
    pub poisoned: AtomicBool,
    pub cause: Mutex<Option<String>>,
}

impl Status {
    pub fn poison(&self, cause: String) {
        *self.cause.lock().unwrap_or_else(|p| p.into_inner()) = Some(cause);
        self.poisoned.store(true, Ordering::Release);
    }

    pub fn poison_error(&self) -> Option<WalError> {
        if !self.poisoned.load(Ordering::Acquire) {
            return None;
        }
        let cause = self.cause.lock().unwrap_or_else(|p| p.into_inner()).clone();
        Some(WalError::Poisoned {
            cause: cause.unwrap_or_default(),
        })
    }
}

struct Inner {
    tx: RwLock<Option<Sender<Submission>>>,
    dedup: Arc<Mutex<super::dedup::Dedup>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    status: Arc<Status>,
}

impl Inner {
    fn shutdown(&self) {
        // Dropping the only sender lets the writer drain what was submitted, then stop.
        drop(self.tx.write().unwrap_or_else(|p| p.into_inner()).take());
        let handle = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(h) = handle {
            if h.thread().id() == std::thread::current().id() {
                // Shut down from a reply callback: the writer stops on its own.
                return;
            }
            if h.join().is_err() {
                tracing::error!("the WAL writer thread panicked");
            }
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A handle to a running WAL writer. Cheap to clone; the writer shuts down when the last
/// handle is dropped or [`WalHandle::shutdown`] is called.
#[derive(Clone)]
pub struct WalHandle {
    inner: Arc<Inner>,
}

impl WalHandle {
    pub(crate) fn new(
        tx: Sender<Submission>,
        thread: JoinHandle<()>,
        status: Arc<Status>,
        dedup: Arc<Mutex<super::dedup::Dedup>>,
    ) -> WalHandle {
        WalHandle {
            inner: Arc::new(Inner {
                tx: RwLock::new(Some(tx)),
                dedup,
                thread: Mutex::new(Some(thread)),
                status,
            }),
        }
    }

    /// Submits one client request's records (usually one) without ever blocking. `reply` is
    /// called once: on the writer thread after the group commit holding them is durable per the
    /// durability mode, or with an error — at once, on the caller's thread, when the WAL is
    /// poisoned, closed, or its queue is full ([`WalError::Overloaded`]). It must not block.
    pub fn submit(&self, records: Vec<Record>, reply: ReplyFn) {
        let reply = Reply::new(reply);
        if let Some(e) = self.inner.status.poison_error() {
            reply.send(Err(e));
            return;
        }
        let tx = self.inner.tx.read().unwrap_or_else(|p| p.into_inner()).clone();
        match tx {
            None => reply.send(Err(WalError::Closed)),
            Some(tx) => match tx.try_send(Submission { records, reply }) {
                Ok(()) => {}
                Err(TrySendError::Full(s)) => s.reply.send(Err(WalError::Overloaded { queued: tx.len() })),
                Err(TrySendError::Disconnected(s)) => s.reply.send(Err(WalError::Closed)),
            },
        }
    }

    /// Submits and waits for the answer (for callers that are not asynchronous). A full queue
    /// is waited out rather than refused.
    pub fn submit_blocking(&self, records: Vec<Record>) -> Result<Commit, WalError> {
        let tx = self.inner.tx.read().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(e) = self.inner.status.poison_error() {
            return Err(e);
        }
        let Some(tx) = tx else { return Err(WalError::Closed) };
        let (done, rx) = std::sync::mpsc::sync_channel(1);
        let reply = Reply::new(Box::new(move |r| {
            let _ = done.send(r);
        }));
        if let Err(e) = tx.send(Submission { records, reply }) {
            e.into_inner().reply.send(Err(WalError::Closed));
        }
        rx.recv().unwrap_or(Err(WalError::Closed))
    }

    /// Submits and waits, refusing with [`WalError::Overloaded`] when the queue is full.
    pub fn try_submit_blocking(&self, records: Vec<Record>) -> Result<Commit, WalError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.submit(
            records,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        );
        rx.recv().unwrap_or(Err(WalError::Closed))
    }

    /// LSN of the last record written (0 for an empty log).
    pub fn last_lsn(&self) -> u64 {
        self.inner.status.last_lsn.load(Ordering::Acquire)
    }

    /// Another process of an event-clock cluster committed a batch at logical time `time`:
    /// every later batch of this log is stamped above it (so writes acknowledged there
    /// before are ordered before this log's next ones), and, once the writer has taken it,
    /// the feed is sealed past it (so this log does not hold the cluster's frontier below
    /// the other's batch).
    pub fn raise_floor(&self, time: Time) {
        let floor = time.saturating_add(1);
        if self.inner.status.floor.fetch_max(floor, Ordering::AcqRel) >= floor {
            return;
        }
        // An empty submission wakes the writer, which takes the floor and seals the feed.
        self.submit(Vec::new(), Box::new(|_| {}));
    }

    /// The commit clock in ms (`T_commit` of the last batch, or later after an idle tick).
    pub fn clock_ms(&self) -> u64 {
        self.inner.status.clock_ms.load(Ordering::Acquire)
    }

    /// Signals in the log: recovered at open plus written since.
    pub fn signals_written(&self) -> u64 {
        self.inner.status.signals.load(Ordering::Acquire)
    }

    /// Keys the dedup window remembers, and keys it forgot early (`engine.dedup_max_entries`).
    pub fn dedup_stats(&self) -> (u64, u64) {
        let s = &self.inner.status;
        (
            s.dedup_entries.load(Ordering::Acquire),
            s.dedup_evicted.load(Ordering::Acquire),
        )
    }

    /// The dedup window as bytes (a checkpoint part; see [`Dedup::save`]). It holds every
    /// signal committed so far.
    ///
    /// [`Dedup::save`]: super::dedup::Dedup::save
    pub fn dedup_snapshot(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.inner
            .dedup
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .save(&mut out);
        out
    }

    /// Submissions waiting for the writer.
    pub fn queued(&self) -> usize {
        self.inner
            .tx
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map_or(0, |tx| tx.len())
    }

    /// Logical time of the last batch written (0 for an empty log).
    pub fn last_time(&self) -> Time {
        self.inner.status.last_time.load(Ordering::Acquire)
    }

    /// Whether a failed write or sync has poisoned the WAL.
    pub fn is_poisoned(&self) -> bool {
        self.inner.status.poisoned.load(Ordering::Acquire)
    }

    /// The poisoning error, if poisoned.
    pub fn poison_error(&self) -> Option<WalError> {
        self.inner.status.poison_error()
    }

    /// Commits what was submitted before, stops the writer and waits for it, then closes
    /// the feed. Idempotent; later submissions are answered with [`WalError::Closed`]. The
    /// writer waits while the feed is full, so the feed must be drained (or closed) for the
    /// shutdown to finish.
    pub fn shutdown(&self) {
        self.inner.shutdown();
    }
}

impl std::fmt::Debug for WalHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WalHandle")
            .field("last_lsn", &self.last_lsn())
            .field("clock_ms", &self.clock_ms())
            .field("poisoned", &self.is_poisoned())
            .finish()
    }
}
