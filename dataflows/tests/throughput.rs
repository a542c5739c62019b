//! A rough throughput figure for the dataflow (source, windows, decay) on the default schema:
//! `cargo test --release -p tidal-dataflows --test throughput -- --ignored --nocapture`.
//! Environment: `TIDAL_TP_SIGNALS` (default 2,000,000), `TIDAL_TP_WORKERS` (default 2),
//! `TIDAL_TP_PUBLISH=1` to publish through the real sink instead of discarding the outputs,
//! `TIDAL_TP_NO_CLOSE=1` to stop once every batch is applied (skip applying the retractions
//! that closing the input releases at once).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use tidal_core::config::Config;
use tidal_core::record::{CommittedBatch, LoggedRecord, Record, Signal};
use tidal_core::time::time_at;
use tidal_dataflows::{Engine, EngineOptions, Outputs};
use tidal_sources::feed::Feed;

/// CPU seconds this process has used (user + system), from `/proc/self/stat`; 0 elsewhere.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(") ").next().unwrap_or("").split_whitespace().collect();
    let ticks: f64 = fields
        .get(11..13)
        .map_or(0.0, |f| f.iter().filter_map(|x| x.parse::<f64>().ok()).sum());
    ticks / 100.0
}

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[test]
#[ignore]
fn signals_per_second() {
    let n = env("TIDAL_TP_SIGNALS", 2_000_000);
    let workers = env("TIDAL_TP_WORKERS", 2);
    let config = Arc::new(Config::default());
    let kinds: Vec<String> = config.signals.iter().map(|s| s.name.clone()).collect();
    let items: Vec<String> = (0..1_000_000).map(|i| format!("item-{i}")).collect();
    let users: Vec<String> = (0..100_000).map(|i| format!("user-{i}")).collect();
    let mut rng = StdRng::seed_from_u64(7);
    let per_batch = 4096;
    let mut clock = 1_700_000_000_000u64;
    let mut batches = Vec::new();
    for chunk in 0..n.div_ceil(per_batch) {
        clock += 50;
        let count = per_batch.min(n - chunk * per_batch);
        let signals = (0..count)
            .map(|_| {
                // Skewed popularity: a power of a uniform draw.
                let item = (rng.gen_range(0.0f64..1.0).powi(3) * items.len() as f64) as usize;
                Signal {
                    kind: kinds[rng.gen_range(0..kinds.len())].clone(),
                    item: items[item].clone(),
                    user: Some(users[rng.gen_range(0..users.len())].clone()),
                    weight: 1.0,
                    ts: Some(clock - rng.gen_range(0..60_000)),
                    id: None,
                }
            })
            .collect();
        let records = vec![LoggedRecord {
            lsn: chunk as u64 + 1,
            record: Record::Signals(signals),
        }];
        batches.push(Arc::new(CommittedBatch {
            time: time_at(clock),
            clock_ms: clock,
            records,
        }));
    }

    let last = batches.last().map_or(0, |b| b.time);
    let feed = Arc::new(Feed::new(64));
    // Per worker and output, the output frontier: every batch is applied once all pass `last`.
    let frontiers: Arc<Vec<AtomicU64>> = Arc::new((0..2 * workers).map(|_| AtomicU64::new(0)).collect());
    let (start, cpu_start) = (Instant::now(), cpu_seconds());
    let engine = if std::env::var("TIDAL_TP_PUBLISH").is_ok_and(|v| v == "1") {
        frontiers.iter().for_each(|f| f.store(u64::MAX, Ordering::Relaxed));
        let shards = Arc::new(tidal_sinks::Shards::new(config.clone(), workers, 0, workers));
        Engine::start(
            config.clone(),
            EngineOptions::threads(workers),
            feed.clone(),
            shards,
            None,
        )
        .unwrap()
    } else {
        let slots = frontiers.clone();
        Engine::start_with(
            config.clone(),
            EngineOptions::threads(workers),
            feed.clone(),
            move |out: Outputs<'_>, index| {
                for (i, stream) in [out.windows.map(|_| ()).inner, out.decay.map(|_| ()).inner]
                    .into_iter()
                    .enumerate()
                {
                    let slots = slots.clone();
                    stream.sink(Pipeline, "Frontier", move |(input, frontier)| {
                        input.for_each(|_, _| {});
                        let f = frontier.frontier().first().copied().unwrap_or(u64::MAX);
                        slots[2 * index + i].store(f, Ordering::Relaxed);
                    });
                }
            },
        )
        .unwrap()
    };
    for b in batches {
        feed.push(b);
    }
    feed.seal(last + 1);
    while frontiers.iter().any(|f| f.load(Ordering::Relaxed) <= last) {
        std::thread::sleep(Duration::from_millis(1));
    }
    let applied = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu_start;
    println!(
        "{n} signals, {workers} workers: all batches applied after {applied:.2} s ({:.0} signals/s), \
         {cpu:.2} CPU s ({:.0} signals per CPU second)",
        n as f64 / applied,
        n as f64 / cpu
    );
    if std::env::var("TIDAL_TP_NO_CLOSE").is_ok_and(|v| v == "1") {
        return;
    }
    engine.shutdown().unwrap();
    let secs = start.elapsed().as_secs_f64();
    println!("closed (every pending retraction applied) after {secs:.2} s");
}
