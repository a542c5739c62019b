//! Counters of the state each worker holds, updated by the materializers after every
//! activation and read by monitoring (`/metrics`) and by tests that check memory is bounded
//! by the data, not by the traffic.

use std::sync::atomic::{AtomicU64, Ordering};

/// One worker's state sizes.
#[derive(Debug, Default)]
pub struct StateStats {
    /// Item ids interned with a live key.
    pub items: AtomicU64,
    /// Deleted item ids still remembered (until their signals have left every window).
    pub tombstones: AtomicU64,
    /// Retired item keys waiting to be given to new items.
    pub free_keys: AtomicU64,
    /// Non-zero window sums.
    pub window_sums: AtomicU64,
    /// Window retractions waiting for their time.
    pub window_pending: AtomicU64,
    /// Retired items whose pending window retractions are still ignored.
    pub window_retired: AtomicU64,
    /// Non-zero decay epoch sums.
    pub decay_sums: AtomicU64,
    /// Distinct future times the decay materializer waits for (epoch expiries).
    pub decay_times: AtomicU64,
    /// Non-zero cohort window sums.
    pub cohort_sums: AtomicU64,
    /// Cohort window retractions waiting for their time.
    pub cohort_pending: AtomicU64,
    /// Users with state at this worker.
    pub users: AtomicU64,
    /// Time spent in each stage, ns (the source, entities, windows, decay, the sink).
    pub busy_ns: [AtomicU64; STAGES],
}

/// The stages whose busy time is counted, in [`StateStats::busy_ns`] order.
pub const STAGE_NAMES: [&str; STAGES] = ["source", "entities", "windows", "decay", "sink", "users", "cohorts"];
/// Number of stages.
pub const STAGES: usize = 7;

/// A stage of [`STAGE_NAMES`].
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum Stage {
    /// The WAL source.
    Source = 0,
    /// The entities materializer.
    Entities = 1,
    /// The windows materializer.
    Windows = 2,
    /// The decay materializer.
    Decay = 3,
    /// The serving sink.
    Sink = 4,
    /// The users materializer.
    Users = 5,
    /// The cohort rollups.
    Cohorts = 6,
}

/// A plain copy of [`StateStats`] (summed over workers by [`EngineStats::total`]).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct StateCounts {
    /// Item ids interned with a live key.
    pub items: u64,
    /// Deleted item ids still remembered.
    pub tombstones: u64,
    /// Retired item keys waiting to be reused.
    pub free_keys: u64,
    /// Non-zero window sums.
    pub window_sums: u64,
    /// Window retractions waiting for their time.
    pub window_pending: u64,
    /// Retired items whose pending window retractions are still ignored.
    pub window_retired: u64,
    /// Non-zero decay epoch sums.
    pub decay_sums: u64,
    /// Distinct future times of epoch expiries.
    pub decay_times: u64,
    /// Non-zero cohort window sums.
    pub cohort_sums: u64,
    /// Cohort window retractions waiting for their time.
    pub cohort_pending: u64,
    /// Users with state.
    pub users: u64,
    /// Busy time per stage ([`STAGE_NAMES`]), ns.
    pub busy_ns: [u64; STAGES],
}

impl StateCounts {
    /// Busy time per stage, for people: `source 0.00 s, entities 0.42 s, ...`.
    pub fn busy_summary(&self) -> String {
        STAGE_NAMES
            .iter()
            .zip(self.busy_ns)
            .map(|(n, ns)| format!("{n} {:.2} s", ns as f64 / 1e9))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl StateStats {
    /// Sets a counter.
    pub fn set(counter: &AtomicU64, v: usize) {
        counter.store(v as u64, Ordering::Relaxed);
    }

    /// Adds the time since `since` to a stage's busy time.
    pub fn busy(&self, stage: Stage, since: std::time::Instant) {
        self.busy_ns[stage as usize].fetch_add(since.elapsed().as_nanos() as u64, Ordering::Relaxed);
    }

    /// A copy of the counters.
    pub fn counts(&self) -> StateCounts {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StateCounts {
            items: g(&self.items),
            tombstones: g(&self.tombstones),
            free_keys: g(&self.free_keys),
            window_sums: g(&self.window_sums),
            window_pending: g(&self.window_pending),
            window_retired: g(&self.window_retired),
            decay_sums: g(&self.decay_sums),
            decay_times: g(&self.decay_times),
            cohort_sums: g(&self.cohort_sums),
            cohort_pending: g(&self.cohort_pending),
            users: g(&self.users),
            busy_ns: std::array::from_fn(|i| g(&self.busy_ns[i])),
        }
    }
}

/// Every local worker's counters.
#[derive(Debug, Default)]
pub struct EngineStats {
    /// Per local worker.
    pub workers: Vec<std::sync::Arc<StateStats>>,
}

impl EngineStats {
    /// Counters for `n` workers.
    pub fn new(n: usize) -> EngineStats {
        EngineStats {
            workers: (0..n.max(1)).map(|_| Default::default()).collect(),
        }
    }

    /// The counters summed over the workers.
    pub fn total(&self) -> StateCounts {
        self.workers
            .iter()
            .map(|w| w.counts())
            .fold(StateCounts::default(), |a, b| StateCounts {
                items: a.items + b.items,
                tombstones: a.tombstones + b.tombstones,
                free_keys: a.free_keys + b.free_keys,
                window_sums: a.window_sums + b.window_sums,
                window_pending: a.window_pending + b.window_pending,
                window_retired: a.window_retired + b.window_retired,
                decay_sums: a.decay_sums + b.decay_sums,
                decay_times: a.decay_times + b.decay_times,
                cohort_sums: a.cohort_sums + b.cohort_sums,
                cohort_pending: a.cohort_pending + b.cohort_pending,
                users: a.users + b.users,
                busy_ns: std::array::from_fn(|i| a.busy_ns[i] + b.busy_ns[i]),
            })
    }
}
