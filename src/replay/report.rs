//! What a replay produces: the JSON document (SPEC §8) and the plain-text summary printed
//! when no `--json` file is asked for.

use std::fmt::Write as _;

use serde::Serialize;

use super::clock::format_clock;
use super::metrics::Comparison;

/// The whole result of a replay.
#[derive(Clone, Debug, Serialize)]
pub struct ReplayReport {
    /// The WAL directory replayed.
    pub wal: String,
    /// The variants, baseline first.
    pub variants: Vec<VariantInfo>,
    /// The queries, in `--query` order.
    pub queries: Vec<String>,
    /// The clocks evaluated, ascending.
    pub times: Vec<u64>,
    /// One row per (time, query, variant), in that order.
    pub results: Vec<ResultRow>,
    /// Signals applied.
    pub events: u64,
    /// WAL records applied (signal requests, item puts and deletes, clock moves, configs).
    pub records: u64,
    /// Committed batches applied.
    pub batches: u64,
    /// Signals per second of wall time, over the whole replay.
    pub events_per_s: f64,
    /// Wall time of the replay, seconds.
    pub elapsed_s: f64,
    /// Commit clock of the first batch with signals.
    pub first_clock: Option<u64>,
    /// Commit clock of the last batch applied.
    pub last_clock: Option<u64>,
    /// Where a tolerated torn tail starts.
    pub torn_tail: Option<TornTail>,
    /// Things the user should know (a configuration change inside the log, ignored
    /// parameters).
    pub warnings: Vec<String>,
}

/// A variant's name and where its configuration came from.
#[derive(Clone, Debug, Serialize)]
pub struct VariantInfo {
    /// Its name.
    pub name: String,
    /// "WAL" for the log's own configuration, else the file.
    pub origin: String,
}

/// Where the log was cut short.
#[derive(Clone, Debug, Serialize)]
pub struct TornTail {
    /// The segment file.
    pub file: String,
    /// The offset just past the last whole record.
    pub offset: u64,
}

/// One variant's answer to one query at one clock.
#[derive(Clone, Debug, Serialize)]
pub struct ResultRow {
    /// The variant.
    pub variant: String,
    /// The clock, ms.
    pub at: u64,
    /// The clock as RFC 3339.
    pub at_rfc3339: String,
    /// The query string.
    pub query: String,
    /// The state answered from.
    pub as_of: AsOf,
    /// The ranking (empty when the query could not be answered at this clock).
    pub items: Vec<ItemScore>,
    /// Why the query could not be answered at this clock (a cohort not yet declared, say),
    /// as the live server's 400 would say it; absent when it was answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Measures against the baseline's ranking of the same query and clock; absent when
    /// either could not be answered (there is nothing to compare).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vs_baseline: Option<Comparison>,
    /// Items this ranking lists and the baseline's does not.
    pub entering: Vec<String>,
    /// Items the baseline's ranking lists and this one does not.
    pub leaving: Vec<String>,
}

/// The serving state a ranking was computed on.
#[derive(Copy, Clone, Debug, Serialize)]
pub struct AsOf {
    /// Its clock (ms).
    pub clock: u64,
    /// The last LSN applied.
    pub lsn: u64,
}

/// One ranked item.
#[derive(Clone, Debug, Serialize)]
pub struct ItemScore {
    /// Item id.
    pub id: String,
    /// Score.
    pub score: f64,
    /// 1-based rank.
    pub rank: usize,
}

impl ReplayReport {
    /// The row of `variant` for `query` at `at`.
    pub fn row(&self, variant: &str, at: u64, query: &str) -> Option<&ResultRow> {
        self.results
            .iter()
            .find(|r| r.variant == variant && r.at == at && r.query == query)
    }

    /// A one-line account of the work done.
    pub fn headline(&self) -> String {
        let mut s = format!(
            "replayed {} events ({} records, {} batches) in {:.2} s: {:.0} events/s",
            self.events, self.records, self.batches, self.elapsed_s, self.events_per_s
        );
        if let (Some(a), Some(b)) = (self.first_clock, self.last_clock) {
            let _ = write!(s, "; clocks {} .. {}", format_clock(a), format_clock(b));
        }
        s
    }

    /// The human-readable summary: per clock and query, each variant's top items and its
    /// measures against the baseline (warnings are not repeated here).
    pub fn summary(&self, top: usize) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "{}", self.headline());
        let names: Vec<String> = self
            .variants
            .iter()
            .map(|v| format!("{} ({})", v.name, v.origin))
            .collect();
        let _ = writeln!(out, "variants: {}", names.join(", "));
        for &at in &self.times {
            for q in &self.queries {
                let _ = writeln!(out, "\nat {} ({at})  query {q}", format_clock(at));
                for v in &self.variants {
                    let Some(r) = self.row(&v.name, at, q) else {
                        continue;
                    };
                    if let Some(e) = &r.error {
                        let _ = writeln!(out, "  {:<12} not answered: {e}", r.variant);
                        continue;
                    }
                    let ids: Vec<&str> = r.items.iter().take(top).map(|i| i.id.as_str()).collect();
                    let more = if r.items.len() > top { ", ..." } else { "" };
                    let Some(c) = &r.vs_baseline else {
                        let _ = writeln!(
                            out,
                            "  {:<12} [{}{}] (the baseline was not answered)",
                            r.variant,
                            ids.join(", "),
                            more
                        );
                        continue;
                    };
                    let tau = c.kendall_tau.map_or("n/a".to_string(), |t| format!("{t:.3}"));
                    let _ = writeln!(
                        out,
                        "  {:<12} overlap@{} {:.3}  tau {}  rbo {:.3}  +{} -{}  [{}{}]",
                        r.variant,
                        c.k,
                        c.overlap_at_k,
                        tau,
                        c.rbo,
                        r.entering.len(),
                        r.leaving.len(),
                        ids.join(", "),
                        more
                    );
                }
            }
        }
        out
    }
}
