//! The facade's one error type. Every variant says what went wrong in terms a caller can act
//! on, and maps to one HTTP status ([`Error::status`]): the caller's mistakes are 4xx, an
//! engine that cannot take more right now is 503 with a retry hint.

use std::path::PathBuf;
use std::time::Duration;

use tidal_core::Dur;
use tidal_dataflows::EngineError;
use tidal_sinks::StoreError;
use tidal_sources::wal::WalError;

use crate::query::QueryError;

/// `Result` with the facade's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why the engine is refusing a write for now.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Overload {
    /// The WAL writer's queue is full (`engine.wal_queue_requests`).
    WalQueue {
        /// Requests waiting.
        queued: usize,
    },
    /// Too many durable signals are not yet visible to queries (`engine.max_lag_signals`).
    Lag {
        /// Signals written but not visible.
        behind: u64,
        /// The bound.
        max: u64,
    },
}

impl std::fmt::Display for Overload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Overload::WalQueue { queued } => write!(
                f,
                "the write-ahead log queue is full ({queued} requests waiting, engine.wal_queue_requests)"
            ),
            Overload::Lag { behind, max } => write!(
                f,
                "{behind} durable signals are not yet visible to queries (engine.max_lag_signals = {max})"
            ),
        }
    }
}

/// Everything the facade can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A signal is malformed: a bad id, weight or field.
    #[error("record {index}: {message}")]
    InvalidSignal {
        /// Its index in the request.
        index: usize,
        /// What is wrong.
        message: String,
    },
    /// A signal names a type the schema does not declare.
    #[error("record {index}: unknown signal type {name:?}; the schema declares {declared}")]
    UnknownSignalType {
        /// Its index in the request.
        index: usize,
        /// The type given.
        name: String,
        /// The declared types, comma-separated.
        declared: String,
    },
    /// In the wall clock, a `ts` too far ahead of the clock.
    #[error(
        "record {index}: ts {ts} is {ahead_ms} ms ahead of the clock; at most {max} is allowed (engine.max_future_skew)"
    )]
    TsInFuture {
        /// Its index in the request.
        index: usize,
        /// The `ts`.
        ts: u64,
        /// How far ahead, ms.
        ahead_ms: u64,
        /// The bound.
        max: Dur,
    },
    /// A `ts` (or clock) outside `[0, 2^43)` ms.
    #[error("{}{what} {value} is outside [0, 2^43) ms", if *what == "ts" { format!("record {index}: ") } else { String::new() })]
    TimeOutOfRange {
        /// Its index in the request.
        index: usize,
        /// `ts` or `advance_to`.
        what: &'static str,
        /// The value.
        value: u64,
    },
    /// In the event clock, a `ts` that would move the clock further than one batch may.
    #[error(
        "record {index}: ts {ts} is {} ms ahead of the clock {clock}; one batch may move the event clock \
         by at most {max} (engine.max_clock_jump); POST /v1/clock moves it further",
        ts.saturating_sub(*clock)
    )]
    ClockJump {
        /// Its index in the request.
        index: usize,
        /// The `ts`.
        ts: u64,
        /// The clock, ms.
        clock: u64,
        /// The bound.
        max: Dur,
    },
    /// An id (item, user, creator, tag, idempotency key) breaks the id rules.
    #[error("{0}")]
    InvalidId(String),
    /// An item's metadata is malformed.
    #[error("{0}")]
    InvalidItem(String),
    /// A user's attributes are malformed.
    #[error("{0}")]
    InvalidUser(String),
    /// A cohort's name or definition is malformed.
    #[error("{0}")]
    InvalidCohort(String),
    /// A ranking request does not parse for the schema.
    #[error(transparent)]
    Query(#[from] QueryError),
    /// The clock cannot be moved by hand in the wall clock.
    #[error("the clock follows wall time; advancing it needs the event clock (engine.clock = \"event\")")]
    WallClock,
    /// A request larger than the WAL can frame.
    #[error("the request is {bytes} bytes encoded; the limit is {max}")]
    TooLarge {
        /// Its encoded size.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// The engine cannot take more writes right now; retry after `retry_after`.
    #[error("overloaded: {reason}; retry in {} s", retry_after.as_secs().max(1))]
    Overloaded {
        /// Why.
        reason: Overload,
        /// When to retry.
        retry_after: Duration,
    },
    /// `min_lsn` names an LSN beyond the last one written.
    #[error("min_lsn {lsn} is beyond the last written LSN {last}")]
    LsnNotWritten {
        /// The LSN asked for.
        lsn: u64,
        /// The last written.
        last: u64,
    },
    /// `min_lsn` did not become visible in time.
    #[error("LSN {lsn} did not become visible within {} ms (visible: {visible})", waited.as_millis())]
    NotVisible {
        /// The LSN asked for.
        lsn: u64,
        /// The LSN visible when giving up.
        visible: u64,
        /// How long it waited.
        waited: Duration,
    },
    /// A failed write or fsync poisoned the WAL; restart to recover from the log.
    #[error("the WAL is poisoned: an earlier write or sync failed ({cause}); restart tidal to recover from the log")]
    Poisoned {
        /// The failure.
        cause: String,
    },
    /// The engine was shut down.
    #[error("the engine is shut down")]
    Closed,
    /// A checkpoint did not complete in time.
    #[error("the checkpoint covering LSN {lsn} was not complete after {} s", waited.as_secs())]
    CheckpointTimeout {
        /// The LSN it was to cover.
        lsn: u64,
        /// How long it was waited for.
        waited: Duration,
    },
    /// The dataflow stopped; nothing new becomes visible.
    #[error("the dataflow has stopped: {0}")]
    DataflowStopped(String),
    /// Another process of the cluster could not answer.
    #[error("process {process} of the cluster could not answer: {message}")]
    Peer {
        /// The process.
        process: usize,
        /// What went wrong.
        message: String,
    },
    /// The process that owns an item or user answered a forwarded read with an error of the
    /// request's own (a bad parameter, a token not written, a state not visible in time):
    /// answered as that process answered it.
    #[error("{message}")]
    Owner {
        /// The owner's status (400 or 503).
        status: u16,
        /// The owner's code, if it is one tidal answers.
        code: &'static str,
        /// The owner's message.
        message: String,
    },
    /// The operation is not available in this configuration.
    #[error("{what}")]
    Unsupported {
        /// What is not available, and why.
        what: &'static str,
    },
    /// The data directory is in use by another process.
    #[error("the data directory {} is in use by another tidal process", path.display())]
    Locked {
        /// The directory.
        path: PathBuf,
    },
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] tidal_core::Error),
    /// A non-loopback listen address without an auth token.
    #[error(
        "refusing to listen on {addr}: it is not a loopback address and no auth token is configured. \
         Set server.auth_token in the configuration or the TIDAL_AUTH_TOKEN environment variable, \
         or listen on 127.0.0.1."
    )]
    InsecureListen {
        /// The address.
        addr: String,
    },
    /// The listen address cannot be bound or is not an address.
    #[error("cannot listen on {addr}: {reason}")]
    Listen {
        /// The address.
        addr: String,
        /// Why.
        reason: String,
    },
    /// A file or directory could not be used.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The WAL could not be opened or written (damage names file and offset).
    #[error(transparent)]
    Wal(WalError),
    /// The dataflow could not start.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The entity store could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How long a refused writer is asked to wait.
pub(crate) const RETRY_AFTER: Duration = Duration::from_secs(1);

impl From<WalError> for Error {
    fn from(e: WalError) -> Error {
        match e {
            WalError::ClockJump {
                index,
                ts,
                clock,
                max_ms,
            } => Error::ClockJump {
                index,
                ts,
                clock,
                max: Dur(max_ms),
            },
            WalError::TimeOutOfRange { index, what, value } => Error::TimeOutOfRange { index, what, value },
            WalError::TooLarge { bytes, max } => Error::TooLarge { bytes, max },
            WalError::Overloaded { queued } => Error::Overloaded {
                reason: Overload::WalQueue { queued },
                retry_after: RETRY_AFTER,
            },
            WalError::Poisoned { cause } => Error::Poisoned { cause },
            WalError::Closed => Error::Closed,
            other => Error::Wal(other),
        }
    }
}

impl Error {
    /// The HTTP status this error is answered with.
    pub fn status(&self) -> u16 {
        match self {
            Error::InvalidSignal { .. }
            | Error::UnknownSignalType { .. }
            | Error::TsInFuture { .. }
            | Error::TimeOutOfRange { .. }
            | Error::ClockJump { .. }
            | Error::InvalidId(_)
            | Error::InvalidItem(_)
            | Error::InvalidUser(_)
            | Error::InvalidCohort(_)
            | Error::Query(_)
            | Error::WallClock
            | Error::LsnNotWritten { .. } => 400,
            Error::TooLarge { .. } => 413,
            Error::Overloaded { .. }
            | Error::NotVisible { .. }
            | Error::Poisoned { .. }
            | Error::Closed
            | Error::CheckpointTimeout { .. }
            | Error::DataflowStopped(_) => 503,
            Error::Peer { .. } => 502,
            Error::Owner { status, .. } => *status,
            Error::Unsupported { .. } => 501,
            Error::Locked { .. }
            | Error::InsecureListen { .. }
            | Error::Listen { .. }
            | Error::Config(_)
            | Error::Io { .. }
            | Error::Wal(_)
            | Error::Engine(_)
            | Error::Store(_) => 500,
        }
    }

    /// The stable snake_case code answered in `{"error": {"code": ..}}`.
    pub fn code(&self) -> &'static str {
        match self {
            Error::InvalidSignal { .. } => "invalid_signal",
            Error::UnknownSignalType { .. } => "unknown_signal_type",
            Error::TsInFuture { .. } => "ts_in_future",
            Error::TimeOutOfRange { .. } => "time_out_of_range",
            Error::ClockJump { .. } => "clock_jump",
            Error::InvalidId(_) => "invalid_id",
            Error::InvalidItem(_) => "invalid_item",
            Error::InvalidUser(_) => "invalid_user",
            Error::InvalidCohort(_) => "invalid_cohort",
            Error::Query(q) => q.code(),
            Error::WallClock => "wall_clock",
            Error::TooLarge { .. } => "too_large",
            Error::Overloaded { .. } => "overloaded",
            Error::LsnNotWritten { .. } => "lsn_not_written",
            Error::NotVisible { .. } => "lsn_not_visible",
            Error::Poisoned { .. } => "wal_poisoned",
            Error::Closed => "shut_down",
            Error::CheckpointTimeout { .. } => "checkpoint_timeout",
            Error::DataflowStopped(_) => "dataflow_stopped",
            Error::Peer { .. } => "peer_unavailable",
            Error::Owner { code, .. } => code,
            Error::Unsupported { .. } => "not_supported",
            Error::Locked { .. } => "data_dir_locked",
            Error::Config(_) => "bad_configuration",
            Error::InsecureListen { .. } => "insecure_listen",
            Error::Listen { .. } => "listen",
            Error::Io { .. } => "io",
            Error::Wal(_) => "wal_error",
            Error::Engine(_) => "engine_error",
            Error::Store(_) => "store_error",
        }
    }

    /// The index of the record of a request the error is about, if any.
    pub fn index(&self) -> Option<usize> {
        match self {
            Error::InvalidSignal { index, .. }
            | Error::UnknownSignalType { index, .. }
            | Error::TsInFuture { index, .. }
            | Error::ClockJump { index, .. } => Some(*index),
            // Of a signal's `ts`; an `advance_to` or a peer's time is no record's.
            Error::TimeOutOfRange { index, what, .. } if *what == "ts" => Some(*index),
            _ => None,
        }
    }

    /// For a refused write, how long to wait before retrying.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Overloaded { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }
}

/// The codes tidal answers, for one a peer answered: `code` itself when it is one of them
/// (else `peer_error`).
pub(crate) fn known_code(code: &str) -> &'static str {
    const CODES: &[&str] = &[
        "invalid_signal",
        "unknown_signal_type",
        "ts_in_future",
        "time_out_of_range",
        "clock_jump",
        "invalid_id",
        "invalid_item",
        "invalid_user",
        "invalid_cohort",
        "wall_clock",
        "too_large",
        "overloaded",
        "lsn_not_written",
        "lsn_not_visible",
        "wal_poisoned",
        "shut_down",
        "checkpoint_timeout",
        "dataflow_stopped",
        "not_supported",
        "empty_body",
        "invalid_body",
        "invalid_json",
        "invalid_query",
        "not_found",
        "unauthorized",
        "timeout",
        "unknown_parameter",
        "unsupported_parameter",
        "invalid_parameter",
        "unknown_profile",
        "unsupported_profile",
        "unknown_signal",
        "undeclared_window",
        "undeclared_half_life",
        "limit_too_large",
        "invalid_cursor",
        "unknown_dimension",
        "repeated_parameter",
        "starting",
        "invalid_request",
        "body_too_large",
        "too_many_records",
        "method_not_allowed",
        "unsupported_media_type",
    ];
    CODES.iter().find(|c| **c == code).copied().unwrap_or("peer_error")
}
