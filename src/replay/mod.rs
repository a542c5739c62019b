//! `tidal replay`: what-if experiments over a recorded WAL (SPEC §8).
//!
//! Replay is the live engine over recorded history. The WAL is read once, as a stream; every
//! variant — the log's own configuration (the baseline) and each `--variant NAME=FILE` —
//! runs its own dataflow, feed and publisher, exactly as `tidal serve` does, and receives
//! every committed batch. At each evaluation clock `T` every variant's state is brought to
//! "as of `T`" (all batches committed at `≤ T`, retractions due at `≤ T`) and the queries
//! (`GET /v1/rankings` query strings) are ranked on it; the baseline's rankings are what the
//! live server answered at clock `T`. Each variant's ranking is compared with the
//! baseline's ([`metrics`]); the result is JSON ([`report`]) and a self-contained HTML
//! report ([`html`]).
//!
//! Evaluation clocks: `--at T` (repeatable; ms or RFC 3339), and/or `--every D` from
//! `--from` (default: the first batch with signals) up to `--until` (default: the end of
//! the log). With neither, the end of the log (or `--until`). Batches committed before
//! `--from` are applied — state needs its history — but nothing is evaluated before it;
//! reading stops after `--until`, or as soon as nothing is left to evaluate.

pub mod clock;
mod driver;
pub mod html;
pub mod metrics;
mod progress;
pub mod query;
pub mod report;
mod variant;

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use tidal_core::config::Config;
use tidal_sources::wal::WalError;

pub use report::{ReplayReport, ResultRow};
pub use variant::VariantSpec;

/// The query used when none is given.
pub const DEFAULT_QUERY: &str = "profile=trending";

/// What can stop a replay.
#[derive(Debug)]
#[non_exhaustive]
pub enum ReplayError {
    /// The options do not make sense.
    Usage(String),
    /// The WAL cannot be read: damaged (names file and offset), torn, or unreadable.
    Wal(WalError),
    /// The directory holds no WAL segment.
    NoSegments {
        /// The directory given.
        dir: PathBuf,
    },
    /// A configuration does not load.
    Config {
        /// Which one.
        origin: String,
        /// Why.
        message: String,
    },
    /// A query does not parse for a variant's schema, or cannot be answered.
    Query {
        /// The variant.
        variant: String,
        /// The query string.
        query: String,
        /// Why.
        message: String,
    },
    /// A variant's dataflow failed.
    Engine {
        /// The variant.
        variant: String,
        /// Why.
        message: String,
    },
    /// An output file cannot be written.
    Output {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// A broken invariant of the replay itself.
    Internal(String),
}

impl std::fmt::Display for ReplayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReplayError::Usage(m) => write!(f, "{m}"),
            ReplayError::Wal(e) => write!(f, "{e}"),
            ReplayError::NoSegments { dir } => {
                write!(f, "no WAL segment files (wal-*.log) in {}", dir.display())?;
                if dir.join("wal").is_dir() {
                    write!(f, "; did you mean {}?", dir.join("wal").display())?;
                } else {
                    write!(f, "; pass the folder <data-dir>/wal")?;
                }
                Ok(())
            }
            ReplayError::Config { origin, message } => write!(f, "configuration {origin}: {message}"),
            ReplayError::Query {
                variant,
                query,
                message,
            } => {
                write!(f, "query {query:?} for variant {variant}: {message}")
            }
            ReplayError::Engine { variant, message } => write!(f, "variant {variant}: dataflow failed: {message}"),
            ReplayError::Output { path, message } => write!(f, "cannot write {}: {message}", path.display()),
            ReplayError::Internal(m) => write!(f, "internal error: {m}"),
        }
    }
}

impl std::error::Error for ReplayError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ReplayError::Wal(e) => Some(e),
            _ => None,
        }
    }
}

impl From<WalError> for ReplayError {
    fn from(e: WalError) -> ReplayError {
        ReplayError::Wal(e)
    }
}

/// A replay, as a library call.
#[derive(Clone, Debug)]
pub struct ReplayOptions {
    /// The WAL directory (`<data-dir>/wal`); only read.
    pub wal: PathBuf,
    /// The WALs of a cluster's other processes, replayed together with `wal` in logical-time
    /// order (the state a cluster serves at a clock is that of all its WALs' records).
    pub more_wals: Vec<PathBuf>,
    /// The baseline's name (default `baseline`).
    pub baseline_name: String,
    /// Variants besides the baseline, in report order.
    pub variants: Vec<VariantSpec>,
    /// Clocks to evaluate at (ms).
    pub at: Vec<u64>,
    /// Evaluate every this many ms, from `from` (or the first signals) to `until` (or the end).
    pub every: Option<u64>,
    /// Nothing is evaluated before this clock.
    pub from: Option<u64>,
    /// Batches committed after this clock are not applied.
    pub until: Option<u64>,
    /// `GET /v1/rankings` query strings.
    pub queries: Vec<String>,
    /// Timely worker threads per variant.
    pub workers: usize,
    /// Stop quietly at a torn tail instead of failing.
    pub tolerate_torn_tail: bool,
    /// Draw a progress bar on stderr.
    pub progress: bool,
}

impl ReplayOptions {
    /// The baseline alone, evaluated at the end of the log with the default query.
    pub fn new(wal: impl Into<PathBuf>) -> ReplayOptions {
        ReplayOptions {
            wal: wal.into(),
            more_wals: Vec::new(),
            baseline_name: "baseline".into(),
            variants: Vec::new(),
            at: Vec::new(),
            every: None,
            from: None,
            until: None,
            queries: vec![DEFAULT_QUERY.to_string()],
            workers: 1,
            tolerate_torn_tail: false,
            progress: false,
        }
    }

    fn validate(&self) -> Result<(), ReplayError> {
        let usage = |m: String| Err(ReplayError::Usage(m));
        if self.workers == 0 {
            return usage("--workers must be at least 1".into());
        }
        if self.queries.is_empty() {
            return usage("at least one --query is needed".into());
        }
        if let (Some(f), Some(u)) = (self.from, self.until)
            && f > u
        {
            return usage(format!("--from ({f}) is after --until ({u})"));
        }
        for &t in &self.at {
            if self.from.is_some_and(|f| t < f) || self.until.is_some_and(|u| t > u) {
                return usage(format!("--at {t} lies outside the --from/--until range"));
            }
        }
        let mut names = vec![self.baseline_name.as_str()];
        for v in &self.variants {
            if v.name.is_empty() {
                return usage(format!("the variant from {} has an empty name", v.origin));
            }
            if names.contains(&v.name.as_str()) {
                return usage(format!("two variants are named {:?}", v.name));
            }
            names.push(&v.name);
        }
        Ok(())
    }
}

/// Runs a replay and returns its report.
pub fn replay(opts: &ReplayOptions) -> Result<ReplayReport, ReplayError> {
    opts.validate()?;
    driver::run(opts)
}

/// `tidal replay` arguments.
#[derive(clap::Args, Debug, Clone)]
pub struct ReplayArgs {
    /// The WAL directory (<data-dir>/wal or a copy of it). Opened read-only. Repeat it for
    /// the WALs of a cluster's processes: they replay together, in logical-time order.
    #[arg(long, value_name = "DIR", required = true)]
    pub wal: Vec<PathBuf>,
    /// Evaluate at this clock: ms since the epoch or RFC 3339. Repeatable.
    #[arg(long = "at", value_name = "TIME")]
    pub at: Vec<String>,
    /// Also evaluate every DURATION (e.g. 6h, 7d) from --from to --until.
    #[arg(long, value_name = "DURATION")]
    pub every: Option<String>,
    /// Evaluate nothing before this clock (earlier batches are still applied).
    #[arg(long, value_name = "TIME")]
    pub from: Option<String>,
    /// Apply no batch committed after this clock.
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    /// A GET /v1/rankings query string, e.g. 'profile=hot&limit=10'. Repeatable.
    #[arg(long = "query", value_name = "QUERY")]
    pub queries: Vec<String>,
    /// A variant configuration: NAME=config.toml. Repeatable; compared with the baseline.
    #[arg(long = "variant", value_name = "NAME=FILE")]
    pub variants: Vec<String>,
    /// A variant configuration named after its file (after the --variant ones). Repeatable.
    #[arg(long = "config", value_name = "FILE")]
    pub configs: Vec<PathBuf>,
    /// Write the JSON report here ('-' for stdout).
    #[arg(long, value_name = "OUT")]
    pub json: Option<PathBuf>,
    /// Write the HTML report here.
    #[arg(long, value_name = "OUT")]
    pub html: Option<PathBuf>,
    /// Timely worker threads per variant [default: the machine's cores shared among the
    /// variants, at least one each]
    #[arg(long)]
    pub workers: Option<usize>,
    /// Stop at the last whole record when the log ends in a torn one.
    #[arg(long)]
    pub tolerate_torn_tail: bool,
    /// The name of the WAL's own configuration in reports.
    #[arg(long, default_value = "baseline")]
    pub baseline_name: String,
    /// Never draw the progress bar.
    #[arg(long)]
    pub no_progress: bool,
}

/// Workers per variant when `--workers` is not given: a replay is a batch job, so the
/// machine's cores are shared among its `dataflows` (the baseline and each variant), at least
/// one each. Answers do not depend on the number of workers.
fn default_workers(dataflows: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (cores / dataflows.max(1)).max(1)
}

fn load_variant(name: &str, path: &Path) -> Result<VariantSpec, ReplayError> {
    let config = Config::load(path).map_err(|e| ReplayError::Config {
        origin: format!("of variant {name}"),
        message: e.to_string(),
    })?;
    Ok(VariantSpec {
        name: name.to_string(),
        config,
        origin: path.display().to_string(),
    })
}

impl ReplayArgs {
    /// The library options these arguments ask for.
    pub fn options(&self) -> Result<ReplayOptions, ReplayError> {
        let clock =
            |flag: &str, s: &str| clock::parse_clock(s).map_err(|e| ReplayError::Usage(format!("--{flag}: {e}")));
        let mut variants = Vec::new();
        for v in &self.variants {
            let Some((name, file)) = v.split_once('=') else {
                return Err(ReplayError::Usage(format!(
                    "--variant {v:?}: expected NAME=config.toml"
                )));
            };
            variants.push(load_variant(name.trim(), Path::new(file))?);
        }
        for path in &self.configs {
            let name = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            variants.push(load_variant(&name, path)?);
        }
        let (wal, more_wals) = match self.wal.split_first() {
            Some((first, rest)) => (first.clone(), rest.to_vec()),
            None => return Err(ReplayError::Usage("--wal DIR is required".into())),
        };
        let workers = self.workers.unwrap_or_else(|| default_workers(1 + variants.len()));
        Ok(ReplayOptions {
            wal,
            more_wals,
            baseline_name: self.baseline_name.clone(),
            variants,
            at: self.at.iter().map(|s| clock("at", s)).collect::<Result<_, _>>()?,
            every: self
                .every
                .as_deref()
                .map(|s| clock::parse_duration(s).map_err(|e| ReplayError::Usage(format!("--every: {e}"))))
                .transpose()?,
            from: self.from.as_deref().map(|s| clock("from", s)).transpose()?,
            until: self.until.as_deref().map(|s| clock("until", s)).transpose()?,
            queries: if self.queries.is_empty() {
                vec![DEFAULT_QUERY.to_string()]
            } else {
                self.queries.clone()
            },
            workers,
            tolerate_torn_tail: self.tolerate_torn_tail,
            progress: !self.no_progress && std::io::stderr().is_terminal(),
        })
    }
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), ReplayError> {
    std::fs::write(path, bytes).map_err(|e| ReplayError::Output {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// `tidal replay`: runs, writes the reports, prints a summary.
pub fn run(args: ReplayArgs) -> Result<(), String> {
    let opts = args.options().map_err(|e| e.to_string())?;
    let report = replay(&opts).map_err(|e| e.to_string())?;
    if let Some(t) = &report.torn_tail {
        eprintln!(
            "tidal replay: the WAL ends in a torn record at {} offset {}; replayed up to the last whole record",
            t.file, t.offset
        );
    }
    for w in &report.warnings {
        eprintln!("tidal replay: warning: {w}");
    }
    let json = serde_json::to_vec_pretty(&report).map_err(|e| format!("cannot encode the report: {e}"))?;
    if let Some(path) = &args.json {
        if path.as_os_str() == "-" {
            let mut out = std::io::stdout().lock();
            out.write_all(&json)
                .and_then(|()| out.write_all(b"\n"))
                .map_err(|e| format!("cannot write the report to stdout: {e}"))?;
        } else {
            write_file(path, &json).map_err(|e| e.to_string())?;
        }
    }
    if let Some(path) = &args.html {
        write_file(path, html::render(&report).as_bytes()).map_err(|e| e.to_string())?;
    }
    if args.json.is_none() {
        print!("{}", report.summary(10));
    } else {
        eprintln!("tidal replay: {}", report.headline());
    }
    Ok(())
}
