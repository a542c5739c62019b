//! tidal's write-ahead log: the single source of truth (SPEC §2, §3, §8, §9).
//!
//! Records live in segment files `wal-<first lsn>.log` under one directory
//! ([`segment`]), framed with a BLAKE3 checksum each ([`format`]). One writer thread owns
//! the files ([`writer`]): producers [`WalHandle::submit`] records, the writer takes many
//! submissions at once, drops duplicate signals ([`dedup`]), stamps the group with one
//! commit clock and logical time ([`clock`]), writes it with one write, syncs once per the
//! [`Durability`](tidal_core::Durability) mode, pushes the committed batch into the
//! dataflow's [`Feed`](crate::feed::Feed) and answers every producer. Opening the WAL
//! verifies it and truncates a torn tail ([`recovery`]); [`WalReader`] reads a directory
//! without modifying it (replay, tools), and [`verify()`] / [`inspect()`] back `tidal wal`.

pub mod clock;
pub mod dedup;
mod error;
pub mod format;
mod handle;
pub mod reader;
mod recovery;
pub mod segment;
pub mod verify;
mod writer;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use tidal_core::time::{ClockMode, Durability, Time};

pub use error::WalError;
pub use handle::{ReplyFn, WalHandle};
pub use reader::{ReadRecord, WalReader};
pub use recovery::Wal;
pub use verify::{VerifyReport, inspect, verify};

/// How a WAL is opened and run.
#[derive(Clone, Debug)]
pub struct WalOptions {
    /// The WAL directory (`<data-dir>/wal`); created if missing.
    pub dir: PathBuf,
    /// A segment is sealed and a new one started once it holds this many bytes.
    pub segment_bytes: u64,
    /// When a group commit is acknowledged.
    pub durability: Durability,
    /// Most records (client requests) in one group commit.
    pub max_batch_records: usize,
    /// Longest a group commit waits for more submissions after its first.
    pub max_batch_delay: Duration,
    /// How the commit clock moves.
    pub clock: ClockMode,
    /// In the event clock, the most one batch may move a set clock forward, ms.
    pub max_clock_jump_ms: u64,
    /// Duplicate signals are detected within this many ms of the commit clock (0 = off).
    pub dedup_window_ms: u64,
    /// The most keys the dedup window remembers (the oldest are forgotten first).
    pub dedup_max_entries: usize,
    /// Submissions queued for the writer before [`WalHandle::submit`] refuses with
    /// [`WalError::Overloaded`].
    pub queue_capacity: usize,
    /// In the wall clock, after this long without submissions the clock is advanced and
    /// the feed sealed, so time-driven changes (window retractions) become visible.
    pub tick: Duration,
    /// Resume after a checkpoint: records up to its LSN are covered by it (not handed to the
    /// caller again), and the dedup window starts from its copy.
    pub resume: Option<Resume>,
    /// Fault-injection hook for tests: while the flag is set, every sync of a group
    /// commit fails (in every durability mode), which poisons the WAL. `None` in production.
    pub fail_sync: Option<Arc<AtomicBool>>,
}

impl WalOptions {
    /// Options with the engine defaults for the WAL in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> WalOptions {
        WalOptions::from_config(&tidal_core::Config::default(), dir)
    }

    /// Options from the configuration's `engine.*` settings, for the WAL in `dir`.
    pub fn from_config(config: &tidal_core::Config, dir: impl Into<PathBuf>) -> WalOptions {
        let e = &config.engine;
        WalOptions {
            dir: dir.into(),
            segment_bytes: e.segment_bytes,
            durability: e.durability,
            max_batch_records: e.group_commit_max_records,
            max_batch_delay: Duration::from_micros(e.group_commit_max_delay_us),
            clock: e.clock,
            max_clock_jump_ms: e.max_clock_jump.ms(),
            dedup_window_ms: e.dedup_window.ms(),
            dedup_max_entries: e.dedup_max_entries,
            queue_capacity: e.wal_queue_requests,
            tick: Duration::from_millis(e.tick_ms),
            resume: None,
            fail_sync: None,
        }
    }

    fn validate(&self) -> Result<(), WalError> {
        if self.segment_bytes < format::HEADER_BYTES as u64 + 1 {
            return Err(WalError::InvalidOptions(format!(
                "segment_bytes must be more than {} (got {})",
                format::HEADER_BYTES,
                self.segment_bytes
            )));
        }
        if self.max_batch_records == 0 {
            return Err(WalError::InvalidOptions("max_batch_records must be at least 1".into()));
        }
        if self.queue_capacity == 0 {
            return Err(WalError::InvalidOptions("queue_capacity must be at least 1".into()));
        }
        if self.tick.is_zero() {
            return Err(WalError::InvalidOptions("tick must be positive".into()));
        }
        Ok(())
    }
}

/// Where a checkpoint left the log.
#[derive(Clone, Debug, Default)]
pub struct Resume {
    /// The last LSN the checkpoint covers.
    pub lsn: u64,
    /// Signals in the log up to it.
    pub signals: u64,
    /// The dedup window's copy ([`WalHandle::dedup_snapshot`]), if any.
    pub dedup: Option<Vec<u8>>,
    /// The frontier the checkpoint was taken at: every later batch is stamped at or above
    /// it, even when this log's last batch lies further below it (in an event-clock cluster
    /// the feed may have been sealed past it by another process's commit).
    pub frontier: tidal_core::time::Time,
}

/// The acknowledgement of one submission.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Commit {
    /// LSN of its first record; when nothing was written (all duplicates), the last LSN of
    /// the log when it was answered.
    pub first_lsn: u64,
    /// LSN of its last record; when nothing was written, as `first_lsn`.
    pub last_lsn: u64,
    /// `T_commit` of its batch in ms (the current clock when nothing was written).
    pub clock_ms: u64,
    /// Logical time of its batch (the last batch's when nothing was written).
    pub time: Time,
    /// Signals written.
    pub accepted: usize,
    /// Signals dropped as duplicates.
    pub duplicates: usize,
}
