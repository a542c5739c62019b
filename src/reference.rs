//! The benchmark's yardstick: the same features as tidal's materializers, computed by a
//! hand-rolled loop on one thread over signals already in memory — per (item, signal type)
//! the total, one decayed sum per half-life and time buckets for the windows. It keeps no
//! history, serves no reads, writes nothing and cannot be restarted; its rate is the limit a
//! dedicated single-purpose program reaches on this machine, and `tidal bench` prints the
//! engine's replay rate as a ratio of it.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::time::{Duration, Instant};

use tidal_core::config::Config;
use tidal_core::features::window_specs;
use tidal_core::record::{Record, Signal};
use tidal_sources::wal::reader::WalReader;

/// One (item, signal type): what the materializers keep for it.
struct Slot {
    total: f64,
    /// Decayed sums anchored at the loop's first clock, one per half-life.
    decay: Vec<f64>,
    /// (bucket start, weight) of the last `2 × longest window`, oldest first.
    buckets: VecDeque<(u64, f64)>,
}

/// What one run of the loop found.
pub struct Outcome {
    /// Signals processed.
    pub signals: u64,
    /// Time spent processing them (reading the WAL excluded).
    pub busy: Duration,
    /// Distinct items seen.
    pub items: usize,
    /// A checksum of the final features, so the work cannot be optimised away.
    pub checksum: f64,
}

/// Reads the WAL in `wal_dir` one record at a time and folds every signal into the features;
/// only the folding is timed.
pub fn run(config: &Config, wal_dir: &Path) -> Result<Outcome, String> {
    let kinds: HashMap<&str, usize> = config
        .signals
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.as_str(), i))
        .collect();
    let half_lives: Vec<Vec<f64>> = config
        .signals
        .iter()
        .map(|s| s.half_lives.iter().map(|h| h.0 as f64).collect())
        .collect();
    let horizon: Vec<u64> = config
        .signals
        .iter()
        .map(|s| window_specs(s).iter().map(|(w, _)| 2 * w).max().unwrap_or(0))
        .collect();
    let grain: Vec<u64> = config
        .signals
        .iter()
        .map(|s| window_specs(s).iter().map(|(_, g)| *g).min().unwrap_or(1).max(1))
        .collect();
    let mut ids: HashMap<String, u32> = HashMap::new();
    let mut slots: HashMap<(u32, usize), Slot> = HashMap::new();
    let mut reader = WalReader::open(wal_dir, true).map_err(|e| e.to_string())?;
    let mut anchor: Option<u64> = None;
    let mut busy = Duration::ZERO;
    let mut signals = 0u64;
    let mut clock = 0u64;
    while let Some(read) = reader.next_record().map_err(|e| e.to_string())? {
        let Record::Signals(batch) = read.record else { continue };
        let started = Instant::now();
        clock = read.meta.clock_ms;
        let anchor = *anchor.get_or_insert(clock);
        for s in &batch {
            fold(
                s,
                clock,
                anchor,
                &kinds,
                &half_lives,
                &horizon,
                &grain,
                &mut ids,
                &mut slots,
            );
        }
        signals += batch.len() as u64;
        busy += started.elapsed();
    }
    // The window counts as of the last clock, so every feature is read once.
    let started = Instant::now();
    let mut checksum = 0.0;
    for ((_, kind), slot) in &slots {
        checksum += slot.total + slot.decay.iter().sum::<f64>();
        for (w, _) in window_specs(&config.signals[*kind]) {
            let from = clock.saturating_sub(w);
            checksum += slot
                .buckets
                .iter()
                .filter(|(b, _)| *b >= from)
                .map(|(_, v)| v)
                .sum::<f64>();
        }
    }
    busy += started.elapsed();
    Ok(Outcome {
        signals,
        busy,
        items: ids.len(),
        checksum,
    })
}

#[allow(clippy::too_many_arguments)]
fn fold(
    s: &Signal,
    clock: u64,
    anchor: u64,
    kinds: &HashMap<&str, usize>,
    half_lives: &[Vec<f64>],
    horizon: &[u64],
    grain: &[u64],
    ids: &mut HashMap<String, u32>,
    slots: &mut HashMap<(u32, usize), Slot>,
) {
    let Some(&kind) = kinds.get(s.kind.as_str()) else {
        return;
    };
    let next = ids.len() as u32;
    let item = match ids.get(s.item.as_str()) {
        Some(k) => *k,
        None => *ids.entry(s.item.clone()).or_insert(next),
    };
    let ts = s.ts_eff(clock);
    let slot = slots.entry((item, kind)).or_insert_with(|| Slot {
        total: 0.0,
        decay: vec![0.0; half_lives[kind].len()],
        buckets: VecDeque::new(),
    });
    slot.total += s.weight;
    let age = ts as f64 - anchor as f64;
    for (d, h) in slot.decay.iter_mut().zip(&half_lives[kind]) {
        *d += s.weight * (age / h).exp2();
    }
    let bucket = ts / grain[kind] * grain[kind];
    match slot.buckets.iter_mut().rev().find(|(b, _)| *b == bucket) {
        Some((_, v)) => *v += s.weight,
        None => {
            let at = slot.buckets.partition_point(|(b, _)| *b < bucket);
            slot.buckets.insert(at, (bucket, s.weight));
        }
    }
    let oldest = clock.saturating_sub(horizon[kind]);
    while slot.buckets.front().is_some_and(|(b, _)| *b < oldest) {
        slot.buckets.pop_front();
    }
}
