//! The single pass over the log. Batches stream from a [`WalReader`] (read-only; one
//! segment in memory at a time) into every variant's feed; the dataflows run concurrently,
//! each as fast as its workers allow, the reader waiting only when a feed is full.
//!
//! Evaluating at clock `T`: every batch with a commit clock `≤ T` has been pushed and none
//! later; each feed is sealed at `time_at(T + 1)` and the reader waits until each variant's
//! published snapshot reaches that frontier. That snapshot answers as of clock `T` — the
//! state the live server served at clock `T` — and every query is ranked on it before the
//! pass continues.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use tidal_core::config::Config;
use tidal_core::record::{CommittedBatch, Record};
use tidal_serving::query::RankParams;
use tidal_sources::wal::{WalError, WalReader};

use super::clock::format_clock;
use super::metrics::{Comparison, entering};
use super::progress::Progress;
use super::report::{AsOf, ItemScore, ReplayReport, ResultRow, TornTail, VariantInfo};
use super::variant::{Variant, VariantSpec};
use super::{ReplayError, ReplayOptions, query};

/// Batches read ahead while looking for the log's own configuration record.
const LOOKAHEAD: usize = 64;

/// The clocks to evaluate at, produced in ascending order as the log advances.
struct Schedule {
    explicit: VecDeque<u64>,
    every: Option<u64>,
    next_every: Option<u64>,
    until: Option<u64>,
    at_end: bool,
}

impl Schedule {
    fn new(opts: &ReplayOptions) -> Schedule {
        let explicit: BTreeSet<u64> = opts.at.iter().copied().collect();
        Schedule {
            at_end: explicit.is_empty() && opts.every.is_none(),
            explicit: explicit.into_iter().collect(),
            every: opts.every,
            next_every: opts.every.and(opts.from),
            until: opts.until,
        }
    }

    /// Starts `--every` at the first batch carrying signals when `--from` is not given.
    fn saw_signals(&mut self, clock_ms: u64) {
        if self.every.is_some() && self.next_every.is_none() {
            self.next_every = Some(clock_ms);
        }
    }

    fn next_every(&self, limit: Option<u64>) -> Option<u64> {
        self.next_every.filter(|t| limit.is_none_or(|u| *t <= u))
    }

    /// The earliest clock still to evaluate (periodic ones only up to `--until`).
    fn next_due(&self) -> Option<u64> {
        let e = self.next_every(self.until);
        match (self.explicit.front().copied(), e) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn pop(&mut self, t: u64) {
        if self.explicit.front() == Some(&t) {
            self.explicit.pop_front();
        }
        if let (Some(n), Some(step)) = (self.next_every, self.every)
            && n == t
        {
            match n.checked_add(step) {
                Some(next) => self.next_every = Some(next),
                // Past the largest clock there is nothing left to evaluate.
                None => {
                    self.every = None;
                    self.next_every = None;
                }
            }
        }
    }

    /// Nothing is left to evaluate however far the log goes.
    fn exhausted(&self) -> bool {
        let periodic_left = self.every.is_some() && self.until.is_none_or(|u| self.next_every.is_none_or(|n| n <= u));
        !self.at_end && self.explicit.is_empty() && !periodic_left
    }

    /// What is left once the log has ended at `end_clock`.
    fn remaining(&mut self, end_clock: u64) -> Vec<u64> {
        let mut out: BTreeSet<u64> = self.explicit.drain(..).collect();
        if let Some(step) = self.every {
            while let Some(t) = self.next_every(Some(end_clock)) {
                out.insert(t);
                self.next_every = t.checked_add(step);
            }
        }
        if self.at_end {
            out.insert(end_clock);
        }
        out.into_iter().collect()
    }
}

/// The readers (one WAL, or the WALs of a cluster's processes) plus the batches already
/// read ahead of them.
struct Batches {
    ahead: VecDeque<CommittedBatch>,
    readers: Vec<Reader>,
}

/// One WAL and its next batch.
struct Reader {
    reader: WalReader,
    head: Option<CommittedBatch>,
    done: bool,
}

impl Batches {
    fn next(&mut self) -> Result<Option<CommittedBatch>, WalError> {
        match self.ahead.pop_front() {
            Some(b) => Ok(Some(b)),
            None => self.read(),
        }
    }

    /// The next batch in logical-time order over every WAL (each is in time order; the
    /// first WAL's batch goes first at equal times).
    fn read(&mut self) -> Result<Option<CommittedBatch>, WalError> {
        for r in &mut self.readers {
            if r.head.is_none() && !r.done {
                r.head = r.reader.next_batch()?;
                r.done = r.head.is_none();
            }
        }
        let next = self
            .readers
            .iter()
            .enumerate()
            .filter_map(|(i, r)| r.head.as_ref().map(|b| (b.time, i)))
            .min();
        Ok(next.and_then(|(_, i)| self.readers[i].head.take()))
    }

    fn torn_tail(&self) -> Option<(PathBuf, u64)> {
        self.readers.iter().find_map(|r| r.reader.torn_tail())
    }
}

/// The first configuration record of a batch, with its LSN.
fn config_in(batch: &CommittedBatch) -> Option<(u64, &str)> {
    batch.records.iter().find_map(|r| match &r.record {
        Record::Config { toml } => Some((r.lsn, toml.as_str())),
        _ => None,
    })
}

/// Finds the log's first configuration record: in the batches read ahead, or else by a
/// separate scan of the log (only logs written without one need it).
fn wal_config(batches: &mut Batches, wal: &Path, tolerate: bool) -> Result<Option<(u64, String)>, WalError> {
    while batches.ahead.len() < LOOKAHEAD {
        let Some(b) = batches.read()? else {
            break;
        };
        let found = config_in(&b).map(|(lsn, t)| (lsn, t.to_string()));
        batches.ahead.push_back(b);
        if found.is_some() {
            return Ok(found);
        }
    }
    if batches.ahead.len() < LOOKAHEAD {
        return Ok(None);
    }
    let mut scan = WalReader::open(wal, tolerate)?;
    // Damage is reported by the main pass, with its position; the scan just stops there.
    while let Ok(Some(r)) = scan.next_record() {
        if let Record::Config { toml } = r.record {
            return Ok(Some((r.meta.lsn, toml)));
        }
    }
    Ok(None)
}

/// The parts of a configuration the dataflow and the rankings depend on (engine and server
/// settings, such as the data directory, are left at their defaults).
fn schema_of(config: &Config) -> Config {
    let mut c = config.clone();
    c.engine = Default::default();
    c.server = Default::default();
    c.cluster = Default::default();
    c
}

/// Runs the replay described by `opts`.
pub(crate) fn run(opts: &ReplayOptions) -> Result<ReplayReport, ReplayError> {
    let started = Instant::now();
    let mut readers = Vec::new();
    let mut total_bytes = 0u64;
    for dir in std::iter::once(&opts.wal).chain(&opts.more_wals) {
        let reader = WalReader::open(dir, opts.tolerate_torn_tail)?;
        if reader.segments().is_empty() {
            return Err(ReplayError::NoSegments { dir: dir.clone() });
        }
        total_bytes += reader
            .segments()
            .iter()
            .filter_map(|s| std::fs::metadata(&s.path).ok())
            .map(|m| m.len())
            .sum::<u64>();
        readers.push(Reader {
            reader,
            head: None,
            done: false,
        });
    }
    let mut batches = Batches {
        ahead: VecDeque::new(),
        readers,
    };
    let mut warnings = Vec::new();
    let baseline = match wal_config(&mut batches, &opts.wal, opts.tolerate_torn_tail)? {
        Some((lsn, toml)) => VariantSpec {
            name: opts.baseline_name.clone(),
            config: Config::parse(&toml)
                .map(|mut c| {
                    // A cluster's processes replay together in this one process.
                    c.cluster = Default::default();
                    c
                })
                .map_err(|e| ReplayError::Config {
                    origin: format!("the WAL's configuration record (LSN {lsn})"),
                    message: e.to_string(),
                })?,
            origin: "WAL".into(),
        },
        None => {
            warnings.push("the WAL holds no configuration record; the baseline uses the embedded default".into());
            VariantSpec {
                name: opts.baseline_name.clone(),
                config: Config::default_filled(),
                origin: "default".into(),
            }
        }
    };
    let baseline_schema = schema_of(&baseline.config);
    let specs: Vec<&VariantSpec> = std::iter::once(&baseline).chain(&opts.variants).collect();
    for q in &opts.queries {
        let (_, dropped) = query::pairs(q).map_err(ReplayError::Usage)?;
        for d in dropped {
            warnings.push(format!("query {q:?}: {d} is ignored in a replay"));
        }
    }
    // A query one variant's schema cannot answer is that variant's error in every row of
    // it (and a warning, as for a query unanswered at some clocks); a query none can
    // answer is refused before the replay starts.
    let parsed: Vec<Vec<Result<RankParams, String>>> = specs
        .iter()
        .map(|spec| opts.queries.iter().map(|q| query::parse(q, &spec.config)).collect())
        .collect();
    for (qi, q) in opts.queries.iter().enumerate() {
        if parsed.iter().all(|p| p[qi].is_err()) {
            let message = parsed.first().and_then(|p| p[qi].clone().err()).unwrap_or_default();
            let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
            return Err(ReplayError::Query {
                variant: names.join(", "),
                query: q.clone(),
                message,
            });
        }
    }
    let mut variants = Vec::with_capacity(specs.len());
    for (spec, parsed) in specs.iter().zip(parsed) {
        variants.push(Variant::start(spec, parsed, opts.workers)?);
    }

    let mut pass = Pass {
        variants,
        queries: &opts.queries,
        results: Vec::new(),
        times: Vec::new(),
        unanswered: BTreeMap::new(),
    };
    let mut schedule = Schedule::new(opts);
    let mut progress = Progress::new(opts.progress, total_bytes);
    let (mut events, mut records, mut nbatches) = (0u64, 0u64, 0u64);
    let (mut first_clock, mut last_clock) = (None, None);
    let mut config_changed = false;
    while let Some(batch) = batches.next()? {
        let clock = batch.clock_ms;
        if opts.until.is_some_and(|u| clock > u) {
            break;
        }
        let signals: u64 = batch.records.iter().map(|r| r.record.signal_count() as u64).sum();
        if signals > 0 {
            schedule.saw_signals(clock);
            first_clock.get_or_insert(clock);
        }
        while let Some(t) = schedule.next_due().filter(|t| *t < clock) {
            pass.evaluate(t)?;
            schedule.pop(t);
        }
        if schedule.exhausted() {
            break;
        }
        if !config_changed
            && let Some((lsn, toml)) = config_in(&batch)
            && Config::parse(toml).ok().map(|c| schema_of(&c)).as_ref() != Some(&baseline_schema)
        {
            config_changed = true;
            warnings.push(format!(
                "the schema changes inside the log (LSN {lsn}, clock {}); the baseline applies the first \
                 configuration to the whole log",
                format_clock(clock)
            ));
        }
        events += signals;
        records += batch.records.len() as u64;
        nbatches += 1;
        last_clock = Some(clock);
        progress.advance(&batch, events);
        let shared = Arc::new(batch);
        for v in &pass.variants {
            v.push(shared.clone())?;
        }
    }
    let end_clock = opts.until.or(last_clock).unwrap_or(0);
    for t in schedule.remaining(end_clock) {
        pass.evaluate(t)?;
    }
    progress.finish();
    warnings.extend(pass.warnings());
    for v in pass.variants {
        v.finish()?;
    }
    let elapsed_s = started.elapsed().as_secs_f64();
    let torn_tail = batches.torn_tail().map(|(file, offset)| TornTail {
        file: file.display().to_string(),
        offset,
    });
    Ok(ReplayReport {
        wal: std::iter::once(&opts.wal)
            .chain(&opts.more_wals)
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
        variants: specs
            .iter()
            .map(|s| VariantInfo {
                name: s.name.clone(),
                origin: s.origin.clone(),
            })
            .collect(),
        queries: opts.queries.clone(),
        times: pass.times,
        results: pass.results,
        events,
        records,
        batches: nbatches,
        events_per_s: if elapsed_s > 0.0 {
            events as f64 / elapsed_s
        } else {
            0.0
        },
        elapsed_s,
        first_clock,
        last_clock,
        torn_tail,
        warnings,
    })
}

/// The running variants and what has been evaluated so far.
struct Pass<'a> {
    variants: Vec<Variant>,
    queries: &'a [String],
    results: Vec<ResultRow>,
    times: Vec<u64>,
    /// Per (variant, query), the clocks at which the query could not be answered.
    unanswered: BTreeMap<(usize, usize), Unanswered>,
}

/// How often one variant could not answer one query, and why the first time.
struct Unanswered {
    clocks: usize,
    first: u64,
    message: String,
}

impl Pass<'_> {
    /// One warning per variant and query that some clock could not answer.
    fn warnings(&self) -> impl Iterator<Item = String> + '_ {
        self.unanswered.iter().map(|(&(vi, qi), u)| {
            format!(
                "query {:?} for variant {}: not answered at {} of {} clocks, first at {}: {}",
                self.queries[qi],
                self.variants[vi].name,
                u.clocks,
                self.times.len(),
                format_clock(u.first),
                u.message
            )
        })
    }

    /// Evaluates every query on every variant as of clock `t`.
    fn evaluate(&mut self, t: u64) -> Result<(), ReplayError> {
        for v in &self.variants {
            v.seal_through(t);
        }
        let mut snaps = Vec::with_capacity(self.variants.len());
        for v in &self.variants {
            let snap = v.snapshot_through(t)?;
            if snap.clock_ms() != t {
                return Err(ReplayError::Internal(format!(
                    "variant {}: expected the state as of clock {t}, the dataflow published clock {}",
                    v.name,
                    snap.clock_ms()
                )));
            }
            snaps.push(snap);
        }
        for (qi, q) in self.queries.iter().enumerate() {
            let mut rankings = Vec::with_capacity(self.variants.len());
            for (vi, (v, snap)) in self.variants.iter().zip(&snaps).enumerate() {
                let ranking = v.rank(snap, qi)?;
                if let Err(message) = &ranking {
                    self.unanswered
                        .entry((vi, qi))
                        .or_insert_with(|| Unanswered {
                            clocks: 0,
                            first: t,
                            message: message.clone(),
                        })
                        .clocks += 1;
                }
                rankings.push(ranking);
            }
            let ids: Vec<Vec<&str>> = rankings
                .iter()
                .map(|r| r.iter().flat_map(|r| &r.items).map(|i| i.id.as_str()).collect())
                .collect();
            let base = &ids[0];
            let base_answered = rankings[0].is_ok();
            for (((v, ranking), these), snap) in self.variants.iter().zip(&rankings).zip(&ids).zip(&snaps) {
                let (items, error) = match ranking {
                    Ok(r) => (&r.items[..], None),
                    Err(e) => (&[][..], Some(e.clone())),
                };
                // Nothing to compare where either side was not answered.
                let compared = base_answered && error.is_none();
                self.results.push(ResultRow {
                    variant: v.name.clone(),
                    at: t,
                    at_rfc3339: format_clock(t),
                    query: q.clone(),
                    as_of: AsOf {
                        clock: snap.clock_ms(),
                        lsn: snap.lsn(),
                    },
                    items: items
                        .iter()
                        .map(|i| ItemScore {
                            id: i.id.clone(),
                            score: i.score,
                            rank: i.rank,
                        })
                        .collect(),
                    error,
                    vs_baseline: compared.then(|| Comparison::between(base, these)),
                    entering: if compared { entering(base, these) } else { Vec::new() },
                    leaving: if compared { entering(these, base) } else { Vec::new() },
                });
            }
        }
        self.times.push(t);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(at: &[u64], every: Option<u64>, from: Option<u64>, until: Option<u64>) -> ReplayOptions {
        ReplayOptions {
            at: at.to_vec(),
            every,
            from,
            until,
            ..ReplayOptions::new("unused")
        }
    }

    /// Drives a schedule over batches at `clocks`; returns the evaluated clocks.
    fn drive(mut s: Schedule, clocks: &[u64]) -> Vec<u64> {
        let mut out = Vec::new();
        let mut last = None;
        for &c in clocks {
            if s.until.is_some_and(|u| c > u) {
                break;
            }
            s.saw_signals(c);
            while let Some(t) = s.next_due().filter(|t| *t < c) {
                out.push(t);
                s.pop(t);
            }
            if s.exhausted() {
                return out;
            }
            last = Some(c);
        }
        out.extend(s.remaining(s.until.or(last).unwrap_or(0)));
        out
    }

    #[test]
    fn explicit_times_in_order_even_past_the_end() {
        let s = Schedule::new(&opts(&[50, 10, 10, 500], None, None, None));
        assert_eq!(drive(s, &[5, 10, 20, 60, 70]), vec![10, 50, 500]);
    }

    #[test]
    fn stops_reading_once_done() {
        let s = Schedule::new(&opts(&[15], None, None, None));
        let mut s2 = Schedule::new(&opts(&[15], None, None, None));
        assert_eq!(drive(s, &[10, 20, 30]), vec![15]);
        s2.pop(15);
        assert!(s2.exhausted());
    }

    #[test]
    fn default_is_the_end_of_the_log_or_until() {
        assert_eq!(drive(Schedule::new(&opts(&[], None, None, None)), &[3, 7, 9]), vec![9]);
        assert_eq!(drive(Schedule::new(&opts(&[], None, None, Some(8))), &[3, 7]), vec![8]);
    }

    #[test]
    fn periodic_from_first_signals_or_from() {
        let s = Schedule::new(&opts(&[], Some(10), None, None));
        assert_eq!(drive(s, &[100, 105, 131, 140]), vec![100, 110, 120, 130, 140]);
        let s = Schedule::new(&opts(&[115], Some(10), Some(95), Some(120)));
        assert_eq!(drive(s, &[100, 105, 131, 140]), vec![95, 105, 115]);
    }
}
