//! How much of the worker a checkpoint's work spread over activations takes at a time.

use std::time::{Duration, Instant};

/// The worker's time per activation spent on such work, at least. A debug build (the tests)
/// looks at the clock after each unit of work, so that every test checkpoint resumes slices.
const SLICE: Duration = Duration::from_millis(if cfg!(debug_assertions) { 0 } else { 2 });

/// The slices of one piece of work: each at least [`SLICE`], and a quarter of the time since
/// the previous one ended, so that a worker busy with long rounds (a backlog) still finishes
/// it within a few of them.
pub(crate) struct Slices {
    ended: Instant,
    began: Option<Instant>,
    /// The worker's time in the slices so far, and their number (for the logs).
    pub(crate) spent: Duration,
    pub(crate) count: u32,
}

impl Slices {
    /// The slices of a piece of work beginning now.
    pub(crate) fn new() -> Slices {
        Slices {
            ended: Instant::now(),
            began: None,
            spent: Duration::ZERO,
            count: 0,
        }
    }

    /// When the slice starting now should end.
    pub(crate) fn until(&mut self) -> Instant {
        let now = Instant::now();
        self.began = Some(now);
        now + SLICE.max(now.saturating_duration_since(self.ended) / 4)
    }

    /// The slice begun by [`until`](Self::until) ended now.
    pub(crate) fn ended(&mut self) {
        let now = Instant::now();
        if let Some(began) = self.began.take() {
            self.spent += now.saturating_duration_since(began);
            self.count += 1;
        }
        self.ended = now;
    }
}
