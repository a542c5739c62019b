//! Logical time. Every committed WAL batch gets its own strictly increasing logical time
//! `clock_ms << SEQ_BITS | seq`: the commit clock in the high bits, a per-millisecond
//! sequence number in the low bits. Window retractions and epoch expiries are scheduled at
//! `clock_ms << SEQ_BITS`, the first logical time of a millisecond, so a query answered at
//! frontier `F` has applied every retraction due at or before clock `(F - 1) >> SEQ_BITS`.

use serde::{Deserialize, Serialize};

/// The dataflow's timestamp.
pub type Time = u64;

/// Bits of the logical time given to the per-millisecond batch sequence.
pub const SEQ_BITS: u32 = 20;

/// The largest clock value (ms) a logical time can carry.
pub const MAX_CLOCK_MS: u64 = (u64::MAX >> SEQ_BITS) - 1;

/// Every `ts` and clock a client gives must lie below this: `2^43` ms, the year 2248.
pub const MAX_TS_MS: u64 = 1 << 43;

/// The first logical time at clock `ms`.
pub fn time_at(ms: u64) -> Time {
    ms.min(MAX_CLOCK_MS) << SEQ_BITS
}

/// The clock (ms) a logical time belongs to.
pub fn clock_of(t: Time) -> u64 {
    t >> SEQ_BITS
}

/// The clock a reader sees when the dataflow's frontier is `frontier`: the clock of the last
/// complete logical time. Retractions due at or before it are applied.
pub fn clock_at_frontier(frontier: Time) -> u64 {
    clock_of(frontier.saturating_sub(1))
}

/// How the commit clock moves (SPEC §3).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ClockMode {
    /// `T_commit = max(previous, wall-clock now)`.
    #[default]
    Wall,
    /// `T_commit = max(previous, max ts in the batch)`; moved on by `POST /v1/clock`.
    Event,
}

impl ClockMode {
    /// Its name in the configuration and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            ClockMode::Wall => "wall",
            ClockMode::Event => "event",
        }
    }
}

impl std::str::FromStr for ClockMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "wall" => Ok(ClockMode::Wall),
            "event" => Ok(ClockMode::Event),
            other => Err(format!("unknown clock mode {other:?}: expected \"wall\" or \"event\"")),
        }
    }
}

/// When a WAL append is acknowledged.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// `fsync` (data and metadata) before acknowledging. The default.
    #[default]
    Fsync,
    /// `fdatasync` before acknowledging.
    Fdatasync,
    /// Write to the OS buffer only (tests and benchmarks; lost on power failure).
    Buffer,
}

/// Milliseconds since the Unix epoch, from the system clock.
pub fn wall_clock_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_round_trip() {
        let ms = 1_700_000_000_123;
        assert_eq!(clock_of(time_at(ms)), ms);
        assert_eq!(clock_of(time_at(ms) + 5), ms);
        assert_eq!(clock_at_frontier(time_at(ms) + 1), ms);
        assert_eq!(clock_at_frontier(time_at(ms)), ms - 1);
    }
}
