//! What can go wrong with the WAL. Every error that concerns a file names it, and those about
//! damaged bytes name the offset and the command that shows more.

use std::path::{Path, PathBuf};

/// The directory holding a segment file, for the `tidal wal verify DIR` hint.
fn dir_of(file: &Path) -> &Path {
    file.parent().unwrap_or(file)
}

/// A WAL error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WalError {
    /// An I/O operation on a WAL file or directory failed.
    #[error("WAL I/O error on {}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The log is damaged somewhere other than a torn tail.
    #[error(
        "corrupt WAL: {} at offset {offset}: {reason}; run `tidal wal verify {}` to see the damage",
        file.display(),
        dir_of(file).display()
    )]
    Corrupt {
        /// The segment file.
        file: PathBuf,
        /// Byte offset of the bad frame (or header) in the file.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// The log ends before the checkpoint a start restores: new records would be numbered
    /// as ones the checkpoint already covers, and skipped by the next start.
    #[error(
        "the WAL in {} ends at LSN {last}, before LSN {checkpoint}, which the checkpoint being \
         restored covers: the WAL is older than the checkpoint (put back from a copy, or its \
         last records lost in a crash with engine.durability = \"buffer\"); put back the WAL \
         the checkpoint was made with, or move the checkpoints folder away to start from the \
         WAL alone",
        dir.display()
    )]
    BehindCheckpoint {
        /// The WAL directory.
        dir: PathBuf,
        /// The last LSN the WAL holds (0: none).
        last: u64,
        /// The last LSN the checkpoint covers.
        checkpoint: u64,
    },
    /// The last record of the log is cut short (a crash during a write), and the reader was
    /// asked not to tolerate that.
    #[error(
        "torn WAL tail: {} at offset {offset}: {reason}; the last record was cut short, most \
         likely by a crash (use --tolerate-torn-tail to stop at the last whole record, or start \
         tidal on the data directory, which truncates it)",
        file.display()
    )]
    TornTail {
        /// The last segment file.
        file: PathBuf,
        /// Where the last whole record ends.
        offset: u64,
        /// What is wrong with the bytes there.
        reason: String,
    },
    /// An earlier write or sync failed; the WAL accepts nothing more.
    #[error(
        "the WAL is poisoned: an earlier write or sync failed ({cause}); no further writes are \
         accepted, restart tidal to recover from the log"
    )]
    Poisoned {
        /// The failure that poisoned it.
        cause: String,
    },
    /// The WAL writer has shut down.
    #[error("the WAL is shut down and accepts no more writes")]
    Closed,
    /// A record is too large to be framed.
    #[error("record too large for the WAL: {bytes} bytes encoded, the limit is {max}")]
    TooLarge {
        /// Its encoded size.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// In the event clock, a signal's `ts` would move the clock further than one batch may.
    #[error(
        "record {index}: ts {ts} is {} ms ahead of the clock {clock}; one batch may move the event clock by \
         at most {max_ms} ms (engine.max_clock_jump); use POST /v1/clock to move it further",
        ts.saturating_sub(*clock)
    )]
    ClockJump {
        /// Index of the signal in its request.
        index: usize,
        /// Its `ts`.
        ts: u64,
        /// The clock when it was checked, ms.
        clock: u64,
        /// The largest jump allowed, ms.
        max_ms: u64,
    },
    /// A `ts` or clock value outside `[0, 2^43)` ms.
    #[error("record {index}: {what} {value} is outside [0, 2^43) ms")]
    TimeOutOfRange {
        /// Index of the record (or signal) in its request.
        index: usize,
        /// `ts` or `advance_to`.
        what: &'static str,
        /// The value.
        value: u64,
    },
    /// The writer's queue is full: the caller should retry later.
    #[error("the WAL queue is full ({queued} requests waiting); retry shortly")]
    Overloaded {
        /// Requests queued.
        queued: usize,
    },
    /// The logical clock cannot move further (it reached the largest representable time).
    #[error("the WAL's logical clock is exhausted: no later time can be represented")]
    ClockExhausted,
    /// The options are unusable.
    #[error("invalid WAL options: {0}")]
    InvalidOptions(String),
}

impl WalError {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> WalError {
        WalError::Io {
            path: path.into(),
            source,
        }
    }
}
