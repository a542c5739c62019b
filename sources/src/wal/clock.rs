//! The commit clock (SPEC §3). Each committed batch gets `T_commit` in ms and a logical time
//! `clock_ms << SEQ_BITS | seq` strictly above the previous batch's; `seq` counts batches
//! within one millisecond and, if it would overflow, the clock moves to the next ms.
//!
//! In the wall clock a batch asks for the wall-clock now; in the event clock it asks for the
//! largest `ts` among its signals. In both, a `ClockAdvance { to_ms }` record asks for
//! `to_ms` (whether a client may send one in the wall clock is the HTTP layer's call), and
//! the clock never goes back.

use tidal_core::record::Record;
use tidal_core::time::{ClockMode, MAX_CLOCK_MS, Time, clock_of, time_at};

/// The clock of one WAL writer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommitClock {
    mode: ClockMode,
    clock_ms: u64,
    last_time: Option<Time>,
    /// Every later batch is stamped at or above this (another process's last batch, plus
    /// one: see [`raise_floor`](Self::raise_floor)).
    floor: Time,
}

impl CommitClock {
    /// A clock that has stamped nothing yet.
    pub fn new(mode: ClockMode) -> CommitClock {
        CommitClock {
            mode,
            clock_ms: 0,
            last_time: None,
            floor: 0,
        }
    }

    /// A clock continuing after a batch stamped `last_time` (recovery).
    pub fn restore(mode: ClockMode, last_time: Option<Time>) -> CommitClock {
        CommitClock {
            mode,
            clock_ms: last_time.map_or(0, clock_of),
            last_time,
            floor: 0,
        }
    }

    /// The mode.
    pub fn mode(&self) -> ClockMode {
        self.mode
    }

    /// The current `T_commit` in ms.
    pub fn clock_ms(&self) -> u64 {
        self.clock_ms
    }

    /// The logical time of the last stamped batch.
    pub fn last_time(&self) -> Option<Time> {
        self.last_time
    }

    /// The clock (ms) a batch of `records` asks for, `wall_now_ms` being the wall clock.
    pub fn target<'a>(&self, records: impl IntoIterator<Item = &'a Record>, wall_now_ms: u64) -> u64 {
        let mut target = match self.mode {
            ClockMode::Wall => wall_now_ms,
            ClockMode::Event => 0,
        };
        for r in records {
            match r {
                Record::Signals(sigs) if self.mode == ClockMode::Event => {
                    for s in sigs {
                        if let Some(ts) = s.ts {
                            target = target.max(ts);
                        }
                    }
                }
                Record::ClockAdvance { to_ms } => target = target.max(*to_ms),
                _ => {}
            }
        }
        target
    }

    /// The `T_commit` a batch asking for `target_ms` would get, without stamping it.
    pub fn peek(&self, target_ms: u64) -> u64 {
        match self.next_time(target_ms) {
            Some(t) => clock_of(t),
            None => self.clock_ms,
        }
    }

    fn next_time(&self, target_ms: u64) -> Option<Time> {
        let at = time_at(self.clock_ms.max(target_ms).min(MAX_CLOCK_MS)).max(self.floor);
        match self.last_time {
            None => Some(at),
            Some(last) => Some(at.max(last.checked_add(1)?)),
        }
    }

    /// Stamps a batch asking for `target_ms`: its `(clock_ms, time)`. `None` when no later
    /// logical time can be represented.
    pub fn stamp(&mut self, target_ms: u64) -> Option<(u64, Time)> {
        let t = self.next_time(target_ms)?;
        self.last_time = Some(t);
        self.clock_ms = clock_of(t);
        Some((self.clock_ms, t))
    }

    /// Stamps every later batch at or above logical time `floor` (and moves the clock to its
    /// millisecond) without stamping one: in a cluster on the event clock, another process
    /// committed a batch just below it, so what this process commits next comes after that
    /// batch, and this process's part of the frontier may pass it. Returns the logical time
    /// every later batch will be at or above.
    pub fn raise_floor(&mut self, floor: Time) -> Time {
        self.floor = self.floor.max(floor);
        self.clock_ms = self.clock_ms.max(clock_of(self.floor).min(MAX_CLOCK_MS));
        let at = time_at(self.clock_ms).max(self.floor);
        match self.last_time {
            Some(last) => at.max(last.saturating_add(1)),
            None => at,
        }
    }

    /// Moves the clock to at least `now_ms` without stamping a batch (the idle tick of the
    /// wall clock); returns the logical time every later batch will be at or above.
    pub fn advance_idle(&mut self, now_ms: u64) -> Time {
        self.clock_ms = self.clock_ms.max(now_ms.min(MAX_CLOCK_MS));
        let at = time_at(self.clock_ms).max(self.floor);
        match self.last_time {
            Some(last) => at.max(last.saturating_add(1)),
            None => at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidal_core::time::SEQ_BITS;

    #[test]
    fn a_raised_floor_orders_later_batches_after_it() {
        let mut c = CommitClock::new(ClockMode::Event);
        let (_, t0) = c.stamp(1000).expect("stamp");
        // Another process committed three batches in the same millisecond.
        let other = t0 + 3;
        assert_eq!(c.raise_floor(other + 1), other + 1);
        let (ms, t1) = c.stamp(0).expect("stamp");
        assert_eq!((ms, t1), (1000, other + 1));
        // A floor in a later millisecond moves the clock there.
        let later = time_at(2000) + 5;
        assert_eq!(c.raise_floor(later), later);
        assert_eq!(c.clock_ms(), 2000);
        assert_eq!(c.stamp(1500).expect("stamp").1, later);
        // A floor below what is stamped changes nothing.
        assert_eq!(c.raise_floor(t0), later + 1);
    }

    #[test]
    fn seq_overflow_moves_to_next_ms() {
        let mut c = CommitClock::restore(ClockMode::Event, Some(time_at(5) + (1 << SEQ_BITS) - 1));
        let (ms, t) = c.stamp(5).unwrap();
        assert_eq!(ms, 6);
        assert_eq!(t, time_at(6));
        let (ms, t) = c.stamp(0).unwrap();
        assert_eq!((ms, t), (6, time_at(6) + 1));
    }

    #[test]
    fn idle_seal_bounds_next_batch() {
        let mut c = CommitClock::new(ClockMode::Wall);
        let (_, t1) = c.stamp(100).unwrap();
        let seal = c.advance_idle(100);
        assert_eq!(seal, t1 + 1);
        let (_, t2) = c.stamp(100).unwrap();
        assert!(t2 >= seal);
        let seal = c.advance_idle(200);
        assert_eq!(seal, time_at(200));
        let (ms, t3) = c.stamp(150).unwrap();
        assert_eq!(ms, 200);
        assert!(t3 >= seal);
    }

    #[test]
    fn exhausted_clock_refuses() {
        let mut c = CommitClock::restore(ClockMode::Event, Some(u64::MAX));
        assert_eq!(c.stamp(1), None);
    }
}
