//! Prometheus metrics: ingest counts, batch sizes, WAL commit (fsync) latency, query latency
//! and frontier lag, rendered as Prometheus text at `GET /metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

/// Labels for per-endpoint series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabel {
    /// The endpoint, e.g. `rankings`.
    pub route: &'static str,
}

/// Labels for answered errors.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabel {
    /// The error code.
    pub code: &'static str,
}

/// Every metric tidal exports.
pub struct Metrics {
    registry: Registry,
    /// Signals written to the WAL.
    pub signals_accepted: Counter,
    /// Signals dropped as duplicates.
    pub signals_duplicate: Counter,
    /// Records written to the WAL (its LSN: every record the log holds, since its start).
    pub records: Counter,
    /// The LSN `records` counts up to.
    records_counted: std::sync::atomic::AtomicU64,
    /// Signals per ingest request.
    pub batch_size: Histogram,
    /// Submit → durable acknowledgement (includes the group commit's fsync).
    pub commit_seconds: Histogram,
    /// Query latency per endpoint.
    pub query_seconds: Family<RouteLabel, Histogram>,
    /// Errors answered, by code.
    pub errors: Family<ErrorLabel, Counter>,
    /// LSNs written but not yet visible to queries.
    pub frontier_lag_lsn: Gauge,
    /// The engine's clock (the wall clock, or the event clock's) minus the serving clock, ms.
    pub frontier_lag_ms: Gauge,
    /// The last LSN visible to queries.
    pub serving_lsn: Gauge,
    /// Signals durable but not yet visible to queries.
    pub lag_signals: Gauge,
    /// Write requests waiting for the WAL writer.
    pub wal_queue: Gauge,
    /// Keys in the dedup window.
    pub dedup_entries: Gauge,
    /// Dedup keys forgotten before their window ended (`engine.dedup_max_entries`).
    pub dedup_evicted: Gauge,
    /// The materializers' state sizes, by part.
    pub state: Family<StateLabel, Gauge>,
    /// The LSN the newest complete checkpoint covers.
    pub checkpoint_lsn: Gauge,
    /// WAL records replayed at the last start.
    pub recovered_records: Gauge,
    /// The LSN of the checkpoint the last start restored.
    pub restored_lsn: Gauge,
    /// Item metadata writes and removals the entity store committed since the start.
    pub store_items_committed: Gauge,
    /// Time spent in each stage since the start, seconds (the sink's on its own threads).
    pub stage_busy: Family<StageLabel, Gauge<f64, AtomicU64>>,
}

/// Labels of the per-stage busy-time series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabel {
    /// The stage: source, entities, windows, decay, sink, users, cohorts.
    pub stage: &'static str,
}

/// Labels of the state-size series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    /// The part: items, tombstones, window_sums, ...
    pub part: &'static str,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("tidal");
        let signals_accepted = Counter::default();
        let signals_duplicate = Counter::default();
        let records = Counter::default();
        let batch_size = Histogram::new(exponential_buckets(1.0, 4.0, 10));
        let commit_seconds = Histogram::new(exponential_buckets(1e-5, 2.0, 20));
        let query_seconds = Family::<RouteLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(1e-5, 2.0, 20))
        });
        let errors = Family::<ErrorLabel, Counter>::default();
        let frontier_lag_lsn = Gauge::default();
        let frontier_lag_ms = Gauge::default();
        let serving_lsn = Gauge::default();
        let lag_signals = Gauge::default();
        let wal_queue = Gauge::default();
        let dedup_entries = Gauge::default();
        let dedup_evicted = Gauge::default();
        let state = Family::<StateLabel, Gauge>::default();
        let checkpoint_lsn = Gauge::default();
        let recovered_records = Gauge::default();
        let restored_lsn = Gauge::default();
        let store_items_committed = Gauge::default();
        let stage_busy = Family::<StageLabel, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "stage_busy_seconds",
            "Time spent in each stage of the dataflow since the start, all workers summed (the serving sink's on the sink threads beside them): where the dataflow's time goes",
            stage_busy.clone(),
        );
        registry.register(
            "checkpoint_lsn",
            "The LSN the newest complete checkpoint covers (0: none yet)",
            checkpoint_lsn.clone(),
        );
        registry.register(
            "recovered_records",
            "WAL records replayed at the last start (after the checkpoint it loaded)",
            recovered_records.clone(),
        );
        registry.register(
            "restored_lsn",
            "The LSN of the checkpoint the last start restored (0: none, the whole WAL was replayed)",
            restored_lsn.clone(),
        );
        registry.register(
            "entity_store_items_committed",
            "Item metadata writes and removals the entity store committed since the start (a start from a checkpoint the store already holds writes only the items changed after it)",
            store_items_committed.clone(),
        );
        registry.register(
            "state_entries",
            "Entries of the materializers' state, by part (items, tombstones, window sums, ...)",
            state.clone(),
        );
        registry.register(
            "lag_signals",
            "Signals durable but not yet visible to queries",
            lag_signals.clone(),
        );
        registry.register(
            "wal_queue_requests",
            "Write requests waiting for the WAL writer",
            wal_queue.clone(),
        );
        registry.register("dedup_entries", "Keys in the dedup window", dedup_entries.clone());
        registry.register(
            "dedup_evicted",
            "Dedup keys forgotten before their window ended (engine.dedup_max_entries)",
            dedup_evicted.clone(),
        );
        registry.register(
            "signals_accepted",
            "Signals written to the WAL",
            signals_accepted.clone(),
        );
        registry.register(
            "signals_duplicate",
            "Signals dropped as duplicates",
            signals_duplicate.clone(),
        );
        registry.register("wal_records", "Records written to the WAL", records.clone());
        registry.register("ingest_batch_signals", "Signals per ingest request", batch_size.clone());
        registry.register(
            "wal_commit_seconds",
            "Time from submit to durable acknowledgement (group commit incl. fsync)",
            commit_seconds.clone(),
        );
        registry.register("query_seconds", "Query latency by endpoint", query_seconds.clone());
        registry.register("http_errors", "Error answers by code", errors.clone());
        registry.register(
            "frontier_lag_lsn",
            "LSNs written but not yet visible to queries",
            frontier_lag_lsn.clone(),
        );
        registry.register(
            "frontier_lag_ms",
            "The engine's clock (wall, or the event clock's) minus the serving clock, ms",
            frontier_lag_ms.clone(),
        );
        registry.register("serving_lsn", "Last LSN visible to queries", serving_lsn.clone());
        Metrics {
            registry,
            signals_accepted,
            signals_duplicate,
            records,
            records_counted: std::sync::atomic::AtomicU64::new(0),
            batch_size,
            commit_seconds,
            query_seconds,
            errors,
            frontier_lag_lsn,
            frontier_lag_ms,
            serving_lsn,
            lag_signals,
            wal_queue,
            dedup_entries,
            dedup_evicted,
            state,
            checkpoint_lsn,
            recovered_records,
            restored_lsn,
            store_items_committed,
            stage_busy,
        }
    }

    /// Sets the gauges from the engine's counters (at scrape time).
    pub fn observe(&self, s: &crate::Stats) {
        // Up to the WAL's LSN, by as much as it moved since the last scrape (two scrapes at
        // once add it once).
        let counted = self
            .records_counted
            .fetch_max(s.wal_lsn, std::sync::atomic::Ordering::AcqRel);
        if s.wal_lsn > counted {
            self.records.inc_by(s.wal_lsn - counted);
        }
        self.serving_lsn.set(s.visible_lsn as i64);
        self.frontier_lag_lsn
            .set(s.wal_lsn.saturating_sub(s.visible_lsn) as i64);
        // The engine's clock: the wall clock, or on the event clock the log's (the wall clock
        // minus a clock of 1998 is no lag).
        let now = if s.event_clock {
            s.clock
        } else {
            tidal_core::time::wall_clock_ms()
        };
        self.frontier_lag_ms.set(now.saturating_sub(s.serving_clock) as i64);
        self.lag_signals
            .set(s.signals_written.saturating_sub(s.signals_visible) as i64);
        self.wal_queue.set(s.wal_queue as i64);
        self.dedup_entries.set(s.dedup_entries as i64);
        self.dedup_evicted.set(s.dedup_evicted as i64);
        self.checkpoint_lsn.set(s.checkpoint_lsn as i64);
        self.recovered_records.set(s.recovered_records as i64);
        self.restored_lsn.set(s.restored_lsn as i64);
        self.store_items_committed.set(s.store_items_committed as i64);
        let c = &s.state;
        for (part, v) in [
            ("items", c.items),
            ("tombstones", c.tombstones),
            ("free_keys", c.free_keys),
            ("window_sums", c.window_sums),
            ("window_pending", c.window_pending),
            ("window_retired", c.window_retired),
            ("decay_sums", c.decay_sums),
            ("decay_expiry_times", c.decay_times),
            ("cohort_sums", c.cohort_sums),
            ("cohort_pending", c.cohort_pending),
            ("users", c.users),
            ("serving_keys", s.serving_keys as u64),
            ("nearest_index_waiting", s.nearest_waiting),
        ] {
            self.state.get_or_create(&StateLabel { part }).set(v as i64);
        }
        for (stage, ns) in tidal_core::stats::STAGE_NAMES.iter().zip(c.busy_ns) {
            self.stage_busy
                .get_or_create(&StageLabel { stage })
                .set(ns as f64 / 1e9);
        }
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
