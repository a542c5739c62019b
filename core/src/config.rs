//! The schema and configuration: one TOML file with embedded defaults (SPEC §7). The field
//! names are the ones `GET /v1/schema` answers with. [`Config::parse`] validates and reports
//! the first bad field by its path (`signals[2].windows[0].granularity`).

use serde::{Deserialize, Serialize};

use crate::duration::Dur;
use crate::error::{Error, Result};
use crate::time::{ClockMode, Durability};

mod schema;
mod validate;

pub use validate::{base_reads_half_life, base_reads_window, valid_name};

pub use schema::{
    CohortDef, FOR_YOU_TERMS, MAX_CANDIDATES, Mark, ProfileDef, SignalType, TRANSFORM_TERMS, Transform, WindowDef,
};

/// The embedded default configuration, as printed by `tidal config default`.
pub const DEFAULT_TOML: &str = include_str!("default.toml");

/// At most this many windows per signal type (the window diff is a fixed-size array).
pub const MAX_WINDOWS: usize = 4;
/// At most this many half-lives per signal type.
pub const MAX_HALF_LIVES: usize = 4;
/// At most this many signal types.
pub const MAX_SIGNAL_TYPES: usize = 64;
/// The largest weight bound a schema may declare: sums stay exact in 64-bit fixed point.
pub const MAX_WEIGHT_BOUND: f64 = 1.0e6;
/// The largest weight a ranking gives a term (a query's `signals=`, a profile's `signals`,
/// `w_*`): a score stays finite, and a sum of terms never meets `inf − inf`.
pub const MAX_RANK_WEIGHT: f64 = 1.0e6;

/// Whether `w` is a ranking weight: finite, within `0..=MAX_RANK_WEIGHT`.
pub fn is_rank_weight(w: f64) -> bool {
    (0.0..=MAX_RANK_WEIGHT).contains(&w)
}

/// The whole configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Signal types, in declaration order.
    #[serde(default = "default_signals")]
    pub signals: Vec<SignalType>,
    /// User attribute names cohorts are built from.
    #[serde(default = "default_dimensions")]
    pub cohort_dimensions: Vec<String>,
    /// Declared (exact) composite cohorts.
    #[serde(default)]
    pub cohorts: Vec<CohortDef>,
    /// Named ranking profiles beside the built-ins.
    #[serde(default)]
    pub profiles: Vec<ProfileDef>,
    /// Per-user state: how long it is kept, how affinity decays.
    #[serde(default)]
    pub personalization: PersonalizationConfig,
    /// Engine settings.
    #[serde(default)]
    pub engine: EngineConfig,
    /// HTTP server settings.
    #[serde(default)]
    pub server: ServerConfig,
    /// The processes of a multi-process cluster (absent: one process).
    #[serde(default, skip_serializing_if = "ClusterConfig::is_single")]
    pub cluster: ClusterConfig,
}

/// A cluster of tidal processes (SPEC §11): each runs `engine.workers` workers, has its own
/// data directory, WAL and HTTP listener, and reaches the others through timely's network
/// (the dataflow) and their HTTP listeners (queries, the event clock).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// This process's index among `processes`.
    pub process_id: usize,
    /// Every process in order (empty: a single process).
    pub processes: Vec<ClusterPeer>,
}

/// One process of a cluster.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterPeer {
    /// Its timely address (`host:port`), where the dataflow's workers connect.
    pub timely: String,
    /// Its HTTP address (`host:port`), where peers scatter queries and the clock; empty when
    /// the host file gives timely's addresses alone: each process then tells the others its
    /// own as the cluster forms.
    #[serde(default)]
    pub http: String,
}

impl ClusterConfig {
    /// Whether this is a single process (no cluster).
    pub fn is_single(&self) -> bool {
        self.processes.len() <= 1
    }

    /// Processes in the cluster (1 when there is none).
    pub fn len(&self) -> usize {
        self.processes.len().max(1)
    }

    /// Whether no process is listed.
    pub fn is_empty(&self) -> bool {
        self.processes.is_empty()
    }

    /// Parses a host file: one process per line, `TIMELY_ADDR HTTP_ADDR`, or timely's own
    /// `TIMELY_ADDR` alone (each process then learns the others' HTTP addresses as the
    /// cluster forms), in process order (blank lines and `#` comments ignored).
    pub fn parse_hostfile(text: &str, process_id: usize) -> Result<ClusterConfig> {
        let mut processes = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let mut words = line.split_whitespace();
            match (words.next(), words.next(), words.next()) {
                (Some(timely), http, None) => processes.push(ClusterPeer {
                    timely: timely.to_string(),
                    http: http.unwrap_or_default().to_string(),
                }),
                _ => {
                    return Err(Error::Config {
                        field: format!("hostfile line {}", n + 1),
                        message: "expected `TIMELY_ADDR [HTTP_ADDR]`, for example `127.0.0.1:7800 127.0.0.1:7700`"
                            .into(),
                    });
                }
            }
        }
        Ok(ClusterConfig { process_id, processes })
    }
}

/// Engine settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineConfig {
    /// Where the WAL and the entity store live.
    pub data_dir: String,
    /// Wall or event clock.
    pub clock: ClockMode,
    /// When an append is acknowledged.
    pub durability: Durability,
    /// Timely worker threads.
    pub workers: usize,
    /// Most records in one group commit.
    pub group_commit_max_records: usize,
    /// Longest a group commit waits for more records, in µs. With 0 it takes what is queued
    /// and commits at once; groups still form from what arrives during an fsync.
    pub group_commit_max_delay_us: u64,
    /// A WAL segment is sealed past this size.
    pub segment_bytes: u64,
    /// In the wall clock, a `ts` further ahead than this is rejected.
    pub max_future_skew: Dur,
    /// In the event clock, the most one batch may move the clock forward once it is set;
    /// only `POST /v1/clock` moves it further.
    pub max_clock_jump: Dur,
    /// Byte-identical signals within this window are duplicates.
    pub dedup_window: Dur,
    /// The most keys the dedup window remembers; past it the oldest are forgotten first.
    pub dedup_max_entries: usize,
    /// Write requests queued for the WAL writer before writes are refused with 503.
    pub wal_queue_requests: usize,
    /// Signals durable but not yet visible to queries before writes are held back.
    pub max_lag_signals: u64,
    /// How long (ms) an HTTP write held back by `max_lag_signals` waits for the dataflow to
    /// catch up before it is refused with 503 (0: refused at once).
    pub max_lag_wait_ms: u64,
    /// A checkpoint of the materialized state is written after every this many signals (and
    /// at a clean shutdown); 0 writes one only at shutdown and on request. A periodic one
    /// waits for the end of a catch-up and for the one before it to be written. After
    /// kill -9 a restart replays about this many signals after loading the newest one.
    pub checkpoint_every: u64,
    /// How often (ms) the wall clock is sealed into the dataflow when idle.
    pub tick_ms: u64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            data_dir: "./tidal-data".into(),
            clock: ClockMode::Wall,
            durability: Durability::Fsync,
            workers: 1,
            group_commit_max_records: 4096,
            group_commit_max_delay_us: 0,
            segment_bytes: 64 << 20,
            max_future_skew: Dur(5 * 60_000),
            max_clock_jump: Dur(30 * 86_400_000),
            dedup_window: Dur(10 * 60_000),
            dedup_max_entries: 4_000_000,
            wal_queue_requests: 1024,
            max_lag_signals: 500_000,
            max_lag_wait_ms: 250,
            checkpoint_every: 2_000_000,
            tick_ms: 20,
        }
    }
}

/// Per-user state (SPEC §4, §12).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PersonalizationConfig {
    /// How long a signal keeps its item in the user's seen / liked / hidden sets.
    pub state_horizon: Dur,
    /// The half-life of user–creator affinity.
    pub affinity_half_life: Dur,
    /// The half-life of a signal's pull on its user's preference vector.
    pub half_life: Dur,
    /// How long a signal pulls on its user's preference vector (at most `state_horizon`).
    pub horizon: Dur,
    /// The embedding dimension; `0`: fixed by the first embedding stored.
    pub dimension: usize,
    /// Items created this recently are `for_you` candidates ("fresh").
    pub fresh_window: Dur,
    /// A fresh item with fewer signals than this (counted by weight) is cold: `for_you`
    /// gives such items its exploration slots.
    pub cold_signals: f64,
    /// Nearest-item candidates are found by an exact scan instead of the approximate index
    /// (deterministic; for tests and small catalogues).
    pub exact_search: bool,
    /// The longest an item's title and text take to become searchable (`q=`).
    pub text_refresh: Dur,
}

impl Default for PersonalizationConfig {
    fn default() -> Self {
        PersonalizationConfig {
            state_horizon: Dur(90 * 86_400_000),
            affinity_half_life: Dur(7 * 86_400_000),
            half_life: Dur(7 * 86_400_000),
            horizon: Dur(30 * 86_400_000),
            dimension: 0,
            fresh_window: Dur(86_400_000),
            cold_signals: 10.0,
            exact_search: false,
            text_refresh: Dur(1000),
        }
    }
}

/// HTTP server settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to bind; loopback unless a token is configured.
    pub listen: String,
    /// Bearer token for writes and admin endpoints (or `TIDAL_AUTH_TOKEN`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_token: Option<String>,
    /// Largest request body.
    pub body_limit_bytes: usize,
    /// Most records in one request.
    pub max_records_per_request: usize,
    /// Longest id, in bytes.
    pub max_id_bytes: usize,
    /// Largest embedding dimension.
    pub max_embedding_dim: usize,
    /// How long `min_lsn` waits before answering 503.
    pub read_your_writes_timeout_ms: u64,
    /// Longest a request may take.
    pub request_timeout_ms: u64,
    /// Longest a connection may take to send a request head, or stay idle between two.
    pub header_timeout_ms: u64,
    /// Connections served at once (at most what the open-file limit leaves); more are
    /// closed when accepted.
    pub max_connections: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:7700".into(),
            auth_token: None,
            body_limit_bytes: 16 << 20,
            max_records_per_request: 100_000,
            max_id_bytes: 256,
            max_embedding_dim: 4096,
            read_your_writes_timeout_ms: 1000,
            request_timeout_ms: 30_000,
            header_timeout_ms: 30_000,
            max_connections: 10_000,
        }
    }
}

fn default_signals() -> Vec<SignalType> {
    Config::default().signals
}
fn default_dimensions() -> Vec<String> {
    Config::default().cohort_dimensions
}

impl Default for Config {
    fn default() -> Self {
        // The embedded file is part of the binary and checked by a unit test.
        #[allow(clippy::expect_used)]
        let raw: RawDefaults = toml::from_str(DEFAULT_TOML).expect("embedded default config parses");
        Config {
            signals: raw.signals,
            cohort_dimensions: raw.cohort_dimensions,
            cohorts: Vec::new(),
            profiles: Vec::new(),
            personalization: PersonalizationConfig::default(),
            engine: EngineConfig::default(),
            server: ServerConfig::default(),
            cluster: ClusterConfig::default(),
        }
    }
}

/// The part of the default file that `Default` needs (avoids recursion through serde defaults).
#[derive(Deserialize)]
struct RawDefaults {
    signals: Vec<SignalType>,
    cohort_dimensions: Vec<String>,
}

impl Config {
    /// Parses and validates a TOML configuration.
    pub fn parse(text: &str) -> Result<Config> {
        // The path of the value a parse error is about (`signals[0].half_lives[0]`): toml's
        // own message names only the key it did not expect.
        let mut config: Config = serde_path_to_error::deserialize(toml::Deserializer::new(text)).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let field = match path.as_str() {
                "" | "." => toml_error_field(&inner),
                // The path may or may not end at the unknown key already.
                _ if inner.message().contains("unknown field") => {
                    let key = toml_error_field(&inner);
                    if key.is_empty() || path == key || path.ends_with(&format!(".{key}")) {
                        path
                    } else {
                        format!("{path}.{key}")
                    }
                }
                _ => path,
            };
            Error::Config {
                field,
                message: inner.message().to_string(),
            }
        })?;
        config.fill_defaults();
        config.validate()?;
        Ok(config)
    }

    /// Reads and validates a configuration file.
    pub fn load(path: &std::path::Path) -> Result<Config> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Config {
            field: String::new(),
            message: format!("cannot read {}: {e}", path.display()),
        })?;
        Config::parse(&text).map_err(|e| match e {
            Error::Config { field, message } => Error::Config {
                field,
                message: format!("{message} (in {})", path.display()),
            },
            other => other,
        })
    }

    /// Sets window granularities left out to `W/60` (at least 1 s).
    fn fill_defaults(&mut self) {
        for s in &mut self.signals {
            for w in &mut s.windows {
                if w.granularity.is_none() {
                    w.granularity = Some(Dur((w.size.ms() / 60).max(1000)));
                }
            }
        }
    }

    /// The signal type called `name`, if declared.
    pub fn signal(&self, name: &str) -> Option<&SignalType> {
        self.signals.iter().find(|s| s.name == name)
    }

    /// The index of signal type `name`.
    pub fn signal_index(&self, name: &str) -> Option<usize> {
        self.signals.iter().position(|s| s.name == name)
    }

    /// The declared profile called `name`.
    pub fn profile(&self, name: &str) -> Option<&ProfileDef> {
        self.profiles.iter().find(|p| p.name == name)
    }

    /// The configuration as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }

    /// The schema as `GET /v1/schema` answers it (no server secrets).
    pub fn schema_json(&self) -> serde_json::Value {
        let mut server = self.server.clone();
        server.auth_token = None;
        serde_json::json!({
            "signals": self.signals,
            "cohort_dimensions": self.cohort_dimensions,
            "cohorts": self.cohorts,
            "profiles": self.profiles,
            "personalization": self.personalization,
            "builtin_profiles": BUILTIN_PROFILES,
            "engine": self.engine,
            "server": server,
        })
    }
}

/// Profiles every schema has.
pub const BUILTIN_PROFILES: [&str; 7] = ["trending", "rising", "hot", "top", "new", "for_you", "following"];

/// The dotted path of the field a TOML error is about, as well as it can be recovered.
fn toml_error_field(e: &toml::de::Error) -> String {
    // toml's message carries no path; its span points at the offending key or value.
    let msg = e.message();
    if let Some(start) = msg.find('`')
        && let Some(len) = msg[start + 1..].find('`')
    {
        return msg[start + 1..start + 1 + len].to_string();
    }
    String::new()
}

impl Config {
    /// The default configuration with granularities filled in, as `parse("")` gives it.
    pub fn default_filled() -> Config {
        let mut c = Config::default();
        c.fill_defaults();
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_parses_and_validates() {
        let c = Config::parse(DEFAULT_TOML).expect("default parses");
        let names: Vec<_> = c.signals.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["view", "like", "share", "skip", "completion", "hide"]);
        for s in &c.signals {
            let sizes: Vec<_> = s.windows.iter().map(|w| w.size.to_string()).collect();
            assert_eq!(sizes, ["1h", "24h", "7d"]);
            let hl: Vec<_> = s.half_lives.iter().map(|h| h.to_string()).collect();
            assert_eq!(hl, ["1h", "24h", "7d"]);
            assert_eq!(s.windows[1].granularity, Some(Dur(24 * 60_000)));
        }
        assert_eq!(c, Config::default_filled());
        assert!(c.signal("skip").is_some_and(|s| s.polarity < 0.0));
    }

    #[test]
    fn transforms_are_odd_increasing_and_named() {
        for t in [Transform::Linear, Transform::Log1p, Transform::Sqrt] {
            assert_eq!(Transform::parse(t.name()), Some(t));
            assert_eq!(t.apply(0.0), 0.0);
            let xs = [-100.0, -2.5, -0.3, 0.0, 0.3, 2.5, 100.0];
            for w in xs.windows(2) {
                assert!(t.apply(w[0]) < t.apply(w[1]), "{t:?} increasing at {w:?}");
            }
            for x in xs {
                assert_eq!(t.apply(-x), -t.apply(x), "{t:?} odd at {x}");
            }
        }
        assert_eq!(Transform::Log1p.apply(std::f64::consts::E - 1.0), 1.0);
        assert_eq!(Transform::Sqrt.apply(-9.0), -3.0);
        assert_eq!(Transform::parse("cube"), None);
    }

    #[test]
    fn empty_file_is_the_default() {
        assert_eq!(Config::parse("").expect("empty parses"), Config::default_filled());
    }

    #[test]
    fn printed_config_parses_back() {
        let c = Config::default_filled();
        assert_eq!(Config::parse(&c.to_toml()).expect("round trip"), c);
    }

    #[test]
    fn bad_fields_are_named() {
        let cases = [
            (
                "[[signals]]\nname = \"v\"\nwindows = [{ size = \"1h\", granularity = \"7m\" }]",
                "signals[0].windows[0].granularity",
            ),
            ("[[signals]]\nname = \"V!\"", "signals[0].name"),
            ("[engine]\nworkers = 0", "engine.workers"),
            ("[server]\nlisten = \"nowhere\"", "server.listen"),
            ("[server]\nauth_token = \" \"", "server.auth_token"),
            ("[server]\nauth_token = \"s3cret \"", "server.auth_token"),
            ("[server]\nmax_connections = 0", "server.max_connections"),
            (
                "cohort_dimensions = [\"region\"]\n[[cohorts]]\nname = \"a\"\nwhere = { region = \"US,EU\" }",
                "cohorts[0].where.region",
            ),
            ("[server]\nheader_timeout_ms = 5", "server.header_timeout_ms"),
            (
                "[[signals]]\nname = \"v\"\nhalf_lives = [\"1x\"]",
                "signals[0].half_lives[0]",
            ),
            ("[engine]\nbogus = 1", "engine.bogus"),
            ("[[profiles]]\nname = \"p\"\nbase = \"hot\"\nfoo = 1", "profiles[0].foo"),
            (
                "[[profiles]]\nname = \"p\"\nbase = \"hot\"\n[[profiles]]\nname = \"p\"\nbase = \"new\"",
                "profiles[1].name",
            ),
            (
                "cohort_dimensions = [\"region\"]\n[[cohorts]]\nname = \"a\"\nwhere = { region = \"US\" }\n[[cohorts]]\nname = \"a\"\nwhere = { region = \"EU\" }",
                "cohorts[1].name",
            ),
            ("[engine]\nworkers = \"two\"", "engine.workers"),
            (
                "[[signals]]\nname = \"v\"\nwindows = [{ size = \"106751991167301d\" }]",
                "signals[0].windows[0].size",
            ),
            (
                "[[signals]]\nname = \"v\"\nhalf_lives = [\"4000d\"]",
                "signals[0].half_lives[0]",
            ),
            (
                "[personalization]\nstate_horizon = \"9999d\"",
                "personalization.state_horizon",
            ),
            ("[[signals]]\nname = \"v\"\nrank_weight = 1e9", "signals[0].rank_weight"),
            ("[personalization]\nhorizon = \"100d\"", "personalization.horizon"),
            ("[personalization]\ncold_signals = -1.0", "personalization.cold_signals"),
            (
                "[[profiles]]\nname = \"p\"\nbase = \"hot\"\nw_sim = 0.5",
                "profiles[0].w_sim",
            ),
            (
                "[[profiles]]\nname = \"p\"\nbase = \"for_you\"\ncandidates = 0",
                "profiles[0].candidates",
            ),
            (
                "[[profiles]]\nname = \"p\"\nbase = \"for_you\"\nexploration = 1.5",
                "profiles[0].exploration",
            ),
            (
                "[[profiles]]\nname = \"p\"\nbase = \"hot\"\nw_text = -1",
                "profiles[0].w_text",
            ),
            (
                "[[profiles]]\nname = \"p\"\nbase = \"hot\"\nhalf_life = \"5h\"",
                "profiles[0].half_life",
            ),
            (
                "[[profiles]]\nname = \"p\"\nbase = \"trending\"\nwindow = \"2h\"",
                "profiles[0].window",
            ),
            (
                "[[profiles]]\nname = \"p\"\nbase = \"for_you\"\nw_pop = 1e300",
                "profiles[0].w_pop",
            ),
            (
                "[[signals]]\nname = \"v\"\n[[profiles]]\nname = \"p\"\nbase = \"trending\"\nsignals = { v = 2e6 }",
                "profiles[0].signals.v",
            ),
            ("[[profiles]]\nname = \"for_you\"\nbase = \"hot\"", "profiles[0].name"),
            (
                "[[profiles]]\nname = \"p\"\nbase = \"hot\"\nwindow = \"1h\"",
                "profiles[0].window",
            ),
            (
                "[[profiles]]\nname = \"p\"\nbase = \"top\"\nhalf_life = \"24h\"",
                "profiles[0].half_life",
            ),
            (
                "[[profiles]]\nname = \"p\"\nbase = \"for_you\"\nwindow = \"24h\"",
                "profiles[0].window",
            ),
            (
                "[[profiles]]\nname = \"p\"\nbase = \"new\"\nsignals = { like = 1.0 }",
                "profiles[0].signals",
            ),
            (
                "[[profiles]]\nname = \"p\"\nbase = \"trending\"\nexploration = 0.2",
                "profiles[0].exploration",
            ),
            (
                "[[profiles]]\nname = \"p\"\nbase = \"trending\"\ncandidates = 50",
                "profiles[0].candidates",
            ),
            (
                "[[profiles]]\nname = \"p\"\nbase = \"for_you\"\nw_sim = 0\nw_pop = 0\nw_aff = 0",
                "profiles[0].w_sim",
            ),
            (
                "[[profiles]]\nname = \"p\"\nbase = \"hot\"\ncohort = \"region:US\"",
                "profiles[0].cohort",
            ),
            (
                "[[profiles]]\nname = \"p\"\nbase = \"trending\"\ncohort = \"planet:mars\"",
                "profiles[0].cohort",
            ),
            (
                "[[profiles]]\nname = \"p\"\nbase = \"trending\"\ncohort = \"nobody\"",
                "profiles[0].cohort",
            ),
            (
                "[[profiles]]\nname = \"p\"\nbase = \"trending\"\nfilter = \"seen\"",
                "profiles[0].filter",
            ),
            (
                "[[profiles]]\nname = \"p\"\nbase = \"top\"\ncategory = \"\"",
                "profiles[0].category",
            ),
            (
                "[[profiles]]\nname = \"p\"\nbase = \"for_you\"\ntransforms = { pop = \"cube\" }",
                "profiles[0].transforms.pop",
            ),
            (
                "[[profiles]]\nname = \"p\"\nbase = \"hot\"\ntransforms = { sim = \"log1p\" }",
                "profiles[0].transforms.sim",
            ),
            (
                "[[profiles]]\nname = \"p\"\nbase = \"hot\"\ntransforms = { age = \"sqrt\" }",
                "profiles[0].transforms.age",
            ),
        ];
        for (text, field) in cases {
            match Config::parse(text) {
                Err(Error::Config { field: f, message }) => {
                    assert!(
                        f.contains(field),
                        "{text:?}: field {f:?} should name {field:?} ({message})"
                    );
                    let last = f.rsplit('.').next().unwrap_or_default();
                    assert!(
                        !f.ends_with(&format!("{last}.{last}")),
                        "{text:?}: field {f:?} names its key twice"
                    );
                }
                other => panic!("{text:?} should fail, got {other:?}"),
            }
        }
    }
}
