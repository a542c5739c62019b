//! A throughput figure for the serving state alone (no dataflow): a feed-like stream of
//! signals (Zipf 1.1 popularity over 1M items, the default schema's six types), turned into
//! the window, decay and item changes the dataflow would emit, one time per 1000 signals,
//! applied to a `SnapshotBuilder` as the sink does in bulk replay: every time as soon as it
//! is complete, and a version once [`MARK_INTERVAL`] (the source's mark interval) has passed
//! since the last one.
//! Generating the feed stands for the dataflow sharing the sink's worker; only the builder
//! is timed.
//! `cargo test --release -p tidal-sinks --test sink_throughput -- --ignored --nocapture`;
//! `TIDAL_SINK_SIGNALS` (default 2,000,000).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rand_distr::Distribution;

use tidal_core::Config;
use tidal_core::features::Lanes;
use tidal_core::flow::{ItemKey, ItemState, KindIdx};
use tidal_sinks::{SnapshotBuilder, Update};

/// The source's interval between marks, at which shards cut versions.
const MARK_INTERVAL: std::time::Duration = std::time::Duration::from_millis(2);

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The dataflow's view: keys by item, current lanes and decay sums.
#[derive(Default)]
struct Feed {
    keys: HashMap<usize, ItemKey>,
    lanes: HashMap<(ItemKey, KindIdx), Lanes>,
    sums: HashMap<(ItemKey, KindIdx, u8), i128>,
}

impl Feed {
    /// The changes of one time holding `signals` (item, type) signals.
    fn time(&mut self, signals: &[(usize, KindIdx)], epoch: u64) -> Vec<(Update, isize)> {
        let mut lanes: HashMap<(ItemKey, KindIdx), (Option<Lanes>, Lanes)> = HashMap::new();
        let mut sums: HashMap<(ItemKey, KindIdx, u8), (Option<i128>, i128)> = HashMap::new();
        let mut out = Vec::new();
        for &(item, kind) in signals {
            let next = self.keys.len() as ItemKey;
            let key = *self.keys.entry(item).or_insert_with(|| {
                let state = ItemState {
                    id: format!("m{item}"),
                    meta: None,
                    deleted: false,
                };
                out.push((Update::Item { key: next, state }, 1));
                next
            });
            let old = self.lanes.get(&(key, kind)).copied();
            let e = lanes.entry((key, kind)).or_insert((old, old.unwrap_or_default()));
            for l in e.1.0.iter_mut() {
                *l += 1 << 20;
            }
            for hl in 0..3u8 {
                let old = self.sums.get(&(key, kind, hl)).copied();
                let e = sums.entry((key, kind, hl)).or_insert((old, old.unwrap_or_default()));
                e.1 += 1 << 48;
            }
        }
        for ((key, kind), (old, new)) in lanes {
            if let Some(o) = old {
                out.push((Update::Window { key, kind, lanes: o }, -1));
            }
            out.push((Update::Window { key, kind, lanes: new }, 1));
            self.lanes.insert((key, kind), new);
        }
        for ((key, kind, hl), (old, new)) in sums {
            if let Some(o) = old {
                out.push((
                    Update::Decay {
                        key,
                        kind,
                        hl,
                        epoch,
                        sum: o,
                    },
                    -1,
                ));
            }
            out.push((
                Update::Decay {
                    key,
                    kind,
                    hl,
                    epoch,
                    sum: new,
                },
                1,
            ));
            self.sums.insert((key, kind, hl), new);
        }
        out
    }
}

#[test]
#[ignore]
fn sink_signals_per_second() {
    let n = env("TIDAL_SINK_SIGNALS", 2_000_000);
    let config = Config::default_filled();
    let zipf = rand_distr::Zipf::new(1_000_000, 1.1).expect("a Zipf distribution");
    let mix: [(KindIdx, f64); 6] = [(0, 0.70), (1, 0.10), (2, 0.03), (3, 0.10), (4, 0.06), (5, 0.01)];
    let mut rng = SmallRng::seed_from_u64(42);
    let mut feed = Feed::default();
    let mut b = SnapshotBuilder::new(&config);
    let mut busy = Duration::ZERO;
    let mut applying = Duration::ZERO;
    let mut last_version = Instant::now();
    let mut updates = 0usize;
    let mut versions = 0usize;
    for t in 0..n.div_ceil(1000) {
        let signals: Vec<(usize, KindIdx)> = (0..1000)
            .map(|_| {
                let mut u: f64 = rng.r#gen();
                let kind = mix.iter().find(|(_, p)| {
                    let hit = u < *p;
                    u -= p;
                    hit
                });
                (zipf.sample(&mut rng) as usize - 1, kind.map_or(0, |k| k.0))
            })
            .collect();
        let batch = feed.time(&signals, (t as u64 / 100) * 3_600_000);
        updates += batch.len();
        let started = Instant::now();
        b.apply(batch);
        applying += started.elapsed();
        // Generating the feed stands for the dataflow on the sink's worker: it counts
        // towards the interval, not towards the sink's time.
        if last_version.elapsed() >= MARK_INTERVAL {
            std::hint::black_box(b.version(t as u64 + 1, Default::default()));
            versions += 1;
            last_version = Instant::now();
        }
        busy += started.elapsed();
    }
    let secs = busy.as_secs_f64();
    println!(
        "{n} signals ({updates} updates, {versions} versions, {} keys) in {secs:.2} s of sink time: \
         {:.0} signals/s, {:.0} updates/s ({:.2} s applying, the rest cutting versions)",
        b.current().key_count(),
        n as f64 / secs,
        updates as f64 / secs,
        applying.as_secs_f64()
    );
}

#[test]
#[ignore]
fn index_changes_per_second() {
    use std::sync::Arc;
    use tidal_sinks::OrdIndex;
    use tidal_sinks::index::IndexEntry;
    use tidal_sinks::ordindex::{Change, Prepared};
    let n = 200_000u64;
    let ids: Vec<Arc<str>> = (0..n).map(|k| Arc::from(format!("m{k}"))).collect();
    let lookup = |k: ItemKey| ids.get(k as usize).map(|s| &**s);
    let mut rng = SmallRng::seed_from_u64(1);
    let mut value: Vec<u64> = (0..n).map(|_| rng.gen_range(0..1000)).collect();
    let change = |k: u64, v: u64, insert| Change {
        entry: IndexEntry::new(v, &ids[k as usize], k),
        id: ids[k as usize].clone(),
        insert,
    };
    let mut ix = OrdIndex::new();
    ix.apply(
        &Prepared::new((0..n).map(|k| change(k, value[k as usize], true)).collect()),
        &lookup,
    );
    let mut keep = Vec::new();
    for hold in [false, true] {
        let started = Instant::now();
        let mut count = 0;
        for _ in 0..200 {
            let mut batch = Vec::new();
            let mut seen = std::collections::HashSet::new();
            for _ in 0..1000 {
                let k = rng.gen_range(0..n);
                if !seen.insert(k) {
                    continue;
                }
                let v = value[k as usize];
                batch.push(change(k, v, false));
                batch.push(change(k, v + 1, true));
                value[k as usize] = v + 1;
            }
            count += batch.len();
            ix.apply(&Prepared::new(batch), &lookup);
            if hold {
                keep.push(ix.clone());
                if keep.len() > 2 {
                    keep.remove(0);
                }
            }
        }
        let secs = started.elapsed().as_secs_f64();
        println!(
            "{count} changes, versions held: {hold}: {:.0} ns per change",
            secs * 1e9 / count as f64
        );
    }
}
