//! `tidal bench`: SPEC §10's feed-1m workload, measured end to end and printed as a table.
//!
//! Phases: write a WAL of `--users` users (region, age group and gender; one declared
//! composite cohort) and `--signals` signals (Zipf 1.1 item popularity over `--items` items,
//! uniform over the users, the six default signal types); replay it through every
//! materializer (in process: signals/s and peak memory) and the same stream through the
//! hand-rolled loop of `reference.rs` (the ratio); with `--scaling`, replay again with the
//! other worker count; restart a real `tidal serve` on it and time until it serves; then,
//! against that server over loopback HTTP, durable NDJSON ingest in batches of 1000,
//! single-signal POST latency, freshness (ack → visible), trending, cohort trending, for_you
//! (every item carries a 64-dim embedding) and search within cohort trending top-50 latency
//! while 50k signals/s are ingested in the background, and trending under saturating ingest;
//! finally `kill -9`
//! the server and time its restart from the newest periodic checkpoint.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Zipf};

use tidal_core::config::Config;
use tidal_core::record::{Record, Signal};
use tidal_core::time::{ClockMode, Durability, wall_clock_ms};
use tidal_sources::feed::Feed;
use tidal_sources::wal::{Wal, WalOptions};

use tidal::Tidal;

mod http;
mod server;

use http::http_phases;
use server::{BenchServer, metric};
use tidal_serving::wal_dir;

/// Options of `tidal bench`.
#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// Distinct items (Zipf 1.1 popularity).
    #[arg(long, default_value_t = 1_000_000, value_parser = at_least_one)]
    pub items: usize,
    /// Distinct users.
    #[arg(long, default_value_t = 1_000_000, value_parser = at_least_one)]
    pub users: usize,
    /// Signals written to the WAL before replay.
    #[arg(long, default_value_t = 10_000_000, value_parser = at_least_one)]
    pub signals: usize,
    /// Signals sent in the durable HTTP ingest phase.
    #[arg(long, default_value_t = 2_000_000)]
    pub http_signals: usize,
    /// Requests in each latency phase.
    #[arg(long, default_value_t = 5_000)]
    pub requests: usize,
    /// Timely workers.
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
    /// Working directory (default: a fresh temporary one, removed afterwards).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Skip the HTTP phases.
    #[arg(long)]
    pub no_http: bool,
    /// Seconds of the saturating-ingest phase (16 writers, NDJSON batches of 5000).
    #[arg(long, default_value_t = 10)]
    pub flood_seconds: u64,
    /// Writers in the saturating-ingest phase.
    #[arg(long, default_value_t = 16)]
    pub flood_writers: usize,
    /// Also replay with the other worker count (1 or 2) and print the ratio.
    #[arg(long)]
    pub scaling: bool,
    /// Seconds of the last phase: signals posted at 30k/s to a server that checkpoints
    /// every 300k signals, beside a freshness probe (0: left out).
    #[arg(long, default_value_t = 30)]
    pub checkpoint_seconds: u64,
    /// Every item is put with a title, a creator and an embedding of this dimension
    /// (0: items have no metadata, and the for_you and search rows are left out).
    #[arg(long, default_value_t = 64)]
    pub embedding_dim: usize,
}

/// Words of the benchmark's item titles.
pub(crate) const TITLE_WORDS: usize = 1000;
/// Embedding clusters (items of one cluster point the same way).
const CLUSTERS: usize = 256;

/// A count of at least one (the workload draws from it).
fn at_least_one(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// Opens the data directory with `workers` workers (from whatever checkpoint it holds),
/// which replays its WAL, and shuts down (writing a checkpoint). Returns signals/s.
fn replay_once(dir: &Path, workers: usize, signals: usize, rows: &mut Vec<Row>) -> Result<f64, String> {
    let mut config = Config::default_filled();
    config.engine.data_dir = dir.display().to_string();
    config.engine.workers = workers;
    config.engine.durability = Durability::Buffer;
    let started = Instant::now();
    let tidal = Tidal::open(config).map_err(|e| e.to_string())?;
    let secs = started.elapsed().as_secs_f64();
    let rate = signals as f64 / secs;
    rows.push(Row {
        figure: "replay through all materializers",
        target: ">= 1M signals/s",
        result: format!("{rate:.0} signals/s ({signals} in {secs:.1} s, {workers} workers)"),
        met: Some(rate >= 1e6),
    });
    rows.push(Row {
        figure: "replay: busy time per stage (all workers)",
        target: "-",
        result: tidal.stats().state.busy_summary(),
        met: None,
    });
    // The nearest-item indexes fill on threads of their own after the replay: the shutdown
    // checkpoint keeps them whole, so the restarted server does not build them again.
    let view = tidal.view();
    let ann_started = Instant::now();
    for shard in &view.shards {
        shard
            .ann()
            .wait_for(view.frontier, std::time::Duration::from_secs(3600));
    }
    let indexed: usize = view.shards.iter().map(|s| s.ann().len()).sum();
    if indexed > 0 {
        rows.push(Row {
            figure: "nearest-item index filled after the replay",
            target: "-",
            result: format!(
                "{:.1} s more ({indexed} items, {:.1} s after the start)",
                ann_started.elapsed().as_secs_f64(),
                started.elapsed().as_secs_f64()
            ),
            met: None,
        });
    }
    tidal.shutdown().map_err(|e| e.to_string())?;
    Ok(rate)
}

/// Age groups of the benchmark's users.
const AGE_GROUPS: [&str; 6] = ["13-17", "18-24", "25-34", "35-44", "45-54", "55+"];

/// The six default types with a feed-like mix.
const MIX: [(&str, f64); 6] = [
    ("view", 0.70),
    ("like", 0.10),
    ("share", 0.03),
    ("skip", 0.10),
    ("completion", 0.06),
    ("hide", 0.01),
];

struct Gen {
    /// Item popularity ranks `1..=n`.
    zipf: Zipf<f64>,
    users: usize,
    rng: SmallRng,
    /// Idempotency ids handed out so far (HTTP phases send one with every signal).
    ids: u64,
}

impl Gen {
    fn signal(&mut self, ts: Option<u64>) -> Signal {
        let item = self.zipf.sample(&mut self.rng) as u64 - 1;
        let user = self.rng.gen_range(0..self.users);
        let mut u: f64 = self.rng.r#gen();
        let mut kind = "view";
        for (k, p) in MIX {
            if u < p {
                kind = k;
                break;
            }
            u -= p;
        }
        Signal {
            kind: kind.into(),
            item: format!("m{item}"),
            user: Some(format!("u{user}")),
            weight: 1.0,
            ts,
            id: None,
        }
    }
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// Peak resident memory (VmHWM) of a process, bytes.
fn peak_rss(pid: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

struct Row {
    figure: &'static str,
    target: &'static str,
    result: String,
    met: Option<bool>,
}

/// Runs every phase and prints the table.
pub fn run(args: BenchArgs) -> Result<(), String> {
    let tmp;
    let dir = match &args.dir {
        Some(d) => d.clone(),
        None => {
            tmp = tempfile::Builder::new()
                .prefix("tidal-bench-")
                .tempdir()
                .map_err(|e| format!("cannot create a temporary directory: {e}"))?;
            tmp.path().to_path_buf()
        }
    };
    let mut rows = Vec::new();
    eprintln!(
        "bench: generating {} signals over {} items in {}",
        args.signals,
        args.items,
        dir.display()
    );
    let mut g = Gen {
        zipf: Zipf::new(args.items as u64, 1.1).map_err(|e| format!("--items: {e}"))?,
        users: args.users,
        rng: SmallRng::seed_from_u64(42),
        ids: 0,
    };
    write_wal(&dir, &args, &mut g)?;

    // Replay through every materializer, in process, from an empty state.
    let replay = replay_once(&dir, args.workers, args.signals, &mut rows)?;
    let rss = peak_rss("self").unwrap_or(0);

    // The same stream through the hand-rolled loop, in the same run.
    let reference = crate::reference::run(&Config::default_filled(), &wal_dir(&dir))?;
    let limit = reference.signals as f64 / reference.busy.as_secs_f64().max(1e-9);
    rows.push(Row {
        figure: "hand-rolled loop, same stream (1 thread, in memory)",
        target: "-",
        result: format!(
            "{:.0} signals/s ({} items; tidal replay = 1/{:.1} of it)",
            limit,
            reference.items,
            limit / replay.max(1.0)
        ),
        met: None,
    });
    if reference.checksum.is_nan() {
        return Err("the hand-rolled loop computed NaN".into());
    }

    // Worker scaling: the other layout replays from an empty state too (its checkpoints are
    // set aside, then the first layout's are put back for the restarts).
    if args.scaling {
        let other = if args.workers == 1 { 2 } else { 1 };
        let ckpt = tidal_sources::checkpoint::dir_of(&dir);
        let aside = dir.join("checkpoints.bench");
        std::fs::rename(&ckpt, &aside).map_err(|e| format!("cannot set checkpoints aside: {e}"))?;
        let mut scratch = Vec::new();
        let rate = replay_once(&dir, other, args.signals, &mut scratch)?;
        let _ = std::fs::remove_dir_all(&ckpt);
        std::fs::rename(&aside, &ckpt).map_err(|e| format!("cannot put checkpoints back: {e}"))?;
        rows.push(Row {
            figure: "worker scaling (replay)",
            target: "-",
            result: format!(
                "{} workers {:.0} signals/s, {} workers {:.0} signals/s ({:.2}x)",
                args.workers,
                replay,
                other,
                rate,
                rate / replay.max(1.0)
            ),
            met: None,
        });
    }

    // Restart of the real binary on that data directory, from the shutdown checkpoint.
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let started = Instant::now();
    let mut server = BenchServer::start(&exe, &dir, args.workers)?;
    let restart = started.elapsed().as_secs_f64();
    rows.push(Row {
        figure: "restart after a clean shutdown",
        target: "<= 10 s to serving",
        result: format!("{restart:.2} s ({} signals in the WAL)", args.signals),
        met: Some(restart <= 10.0),
    });

    let mut server_rss = 0;
    if !args.no_http {
        http_phases(&server, &args, &mut g, &mut rows);
        // kill -9 after the writes above: the restart loads the newest periodic checkpoint
        // and replays the WAL after it.
        server_rss = peak_rss(&server.child.id().to_string()).unwrap_or(0);
        drop(server);
        let started = Instant::now();
        server = BenchServer::start(&exe, &dir, args.workers)?;
        let restart = started.elapsed().as_secs_f64();
        let tail = metric(&server, "tidal_recovered_records").unwrap_or(0.0);
        rows.push(Row {
            figure: "restart after kill -9 (during the writes above)",
            target: "<= 10 s to serving",
            result: format!("{restart:.2} s ({tail:.0} WAL records replayed after the checkpoint)"),
            met: Some(restart <= 10.0),
        });
    }
    // The server's peak: the largest of the first server's (through the HTTP phases), the
    // one restarted after kill -9 (its catch-up over the WAL's tail) and the one that
    // checkpoints under ingest, each named.
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    let last_rss = peak_rss(&server.child.id().to_string()).unwrap_or(0);
    let (mut peak, mut split) = (last_rss, String::new());
    if !args.no_http {
        split = format!(
            " (through the HTTP phases {:.2} GiB, restarted after kill -9 {:.2} GiB",
            gib(server_rss),
            gib(last_rss)
        );
        peak = server_rss.max(last_rss);
        if args.checkpoint_seconds > 0 {
            // Stopped as an operator would: its shutdown checkpoint spares the next start the
            // WAL's tail.
            server.stop();
            let ckpt_rss = http::checkpoints_under_ingest(&exe, &dir, &args, &mut g, &mut rows)?;
            split.push_str(&format!(", checkpointing under ingest {:.2} GiB", gib(ckpt_rss)));
            peak = peak.max(ckpt_rss);
        }
        split.push(')');
    }
    rows.push(Row {
        figure: "peak resident memory",
        target: "<= 6 GiB",
        result: format!("{:.2} GiB replay process, {:.2} GiB server{split}", gib(rss), gib(peak)),
        met: Some(rss.max(peak) <= 6 << 30),
    });

    println!("| figure | target | result | met |");
    println!("|---|---|---|---|");
    for r in rows {
        let met = match r.met {
            Some(true) => "yes",
            Some(false) => "no",
            None => "-",
        };
        println!("| {} | {} | {} | {} |", r.figure, r.target, r.result, met);
    }
    Ok(())
}

fn write_wal(dir: &Path, args: &BenchArgs, g: &mut Gen) -> Result<(), String> {
    let mut config = Config::default_filled();
    config.engine.clock = ClockMode::Event;
    config.engine.durability = Durability::Buffer;
    config.engine.dedup_window = tidal_core::Dur(0);
    let mut opts = WalOptions::from_config(&config, wal_dir(dir));
    opts.durability = Durability::Buffer;
    let feed = Arc::new(Feed::new(usize::MAX));
    let wal = Wal::open(opts, feed.clone(), |_| {}).map_err(|e| e.to_string())?;
    // Event times spread over the last 7 days, ending now, so the wall clock carries on.
    let end = wall_clock_ms();
    let span = 7 * 86_400_000u64;
    let batches = args.signals.div_ceil(1000);
    let (tx, rx) = std::sync::mpsc::sync_channel::<Result<(), String>>(64);
    // At most 32 requests in flight; the feed is not read here: what it holds is dropped.
    let inflight = std::cell::Cell::new(0usize);
    let submit = |records: Vec<Record>| -> Result<(), String> {
        let tx = tx.clone();
        wal.submit(
            records,
            Box::new(move |r| {
                let _ = tx.send(r.map(|_| ()).map_err(|e| e.to_string()));
            }),
        );
        inflight.set(inflight.get() + 1);
        if inflight.get() >= 32 {
            rx.recv().map_err(|e| e.to_string())??;
            inflight.set(inflight.get() - 1);
        }
        let _ = feed.drain(usize::MAX);
        Ok(())
    };
    // Every user first, with the three default cohort dimensions (region skewed over ten
    // values, six age groups, two genders), and one declared composite cohort.
    let mut records = vec![Record::CohortPut {
        name: "r1-women".into(),
        rule: [("region".to_string(), "r1".to_string()), ("gender".into(), "F".into())].into(),
    }];
    for u in 0..args.users {
        let region = (g.rng.r#gen::<f64>().powi(2) * 10.0) as usize;
        let attributes = [
            ("region".to_string(), format!("r{region}")),
            (
                "age_group".to_string(),
                AGE_GROUPS[g.rng.gen_range(0..AGE_GROUPS.len())].to_string(),
            ),
            ("gender".to_string(), ["F", "M"][g.rng.gen_range(0..2)].to_string()),
        ]
        .into();
        records.push(Record::UserPut {
            id: format!("u{u}"),
            attributes,
        });
        if records.len() == 1000 || u + 1 == args.users {
            submit(std::mem::take(&mut records))?;
        }
    }
    // Every item with a title (two of a thousand words), a creator and an embedding near
    // one of 256 directions.
    if args.embedding_dim > 0 {
        let dim = args.embedding_dim;
        let centroids: Vec<Vec<f32>> = (0..CLUSTERS)
            .map(|_| (0..dim).map(|_| g.rng.gen_range(-1.0f32..1.0)).collect())
            .collect();
        let mut records = Vec::new();
        for i in 0..args.items {
            let c = &centroids[i % CLUSTERS];
            let embedding: Vec<f32> = c.iter().map(|x| x + g.rng.gen_range(-0.3f32..0.3)).collect();
            let meta = tidal_core::record::ItemMeta {
                creator: Some(format!("c{}", i % 10_000)),
                title: Some(format!(
                    "w{} w{}",
                    g.rng.gen_range(0..TITLE_WORDS),
                    g.rng.gen_range(0..TITLE_WORDS)
                )),
                created_at: Some(end - g.rng.gen_range(0..30 * 86_400_000u64)),
                embedding: Some(tidal_core::record::Embedding(embedding)),
                ..Default::default()
            };
            records.push(Record::ItemPut {
                id: format!("m{i}"),
                meta,
            });
            if records.len() == 1000 || i + 1 == args.items {
                submit(std::mem::take(&mut records))?;
            }
        }
    }
    for b in 0..batches {
        let ts = end - span + span * b as u64 / batches.max(1) as u64;
        let n = 1000.min(args.signals - b * 1000);
        let sigs: Vec<Signal> = (0..n).map(|_| g.signal(Some(ts))).collect();
        submit(vec![Record::Signals(sigs)])?;
    }
    for _ in 0..inflight.get() {
        rx.recv().map_err(|e| e.to_string())??;
    }
    wal.shutdown();
    Ok(())
}
