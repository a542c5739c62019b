//! Ranking latency over 1M items (Zipf 1.1 popularity, the default schema). Ignored by
//! default; run with
//! `cargo test --release -p tidal-serving --test query_perf -- --ignored --nocapture`.

#![allow(clippy::unwrap_used, clippy::type_complexity)] // test helpers

use std::time::Instant;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use tidal_core::Config;
use tidal_core::features::{Lanes, TOTAL_LANE, decay_fixed, epoch_of, weight_fixed};
use tidal_core::flow::ItemState;
use tidal_core::record::ItemMeta;
use tidal_core::time::time_at;
use tidal_serving::query::{RankParams, rank};
use tidal_sinks::{SnapshotBuilder, Update};

const ITEMS: u64 = 1_000_000;

#[test]
#[ignore = "builds a 1M-item snapshot; run in release"]
fn trending_top50_over_1m_items() {
    let config = Config::default_filled();
    let mut rng = SmallRng::seed_from_u64(1);
    let mut b = SnapshotBuilder::new(&config);
    let clock = 1_700_000_000_000u64;
    let h = config.signals[0].half_lives[0].ms();
    let started = Instant::now();
    let mut batch = Vec::new();
    for key in 0..ITEMS {
        // Zipf(1.1): the expected 24h views of the item of popularity rank `key`.
        // Every item has a view or more: every index holds a million entries.
        let mut views = (200_000.0 / ((key + 1) as f64).powf(1.1)).max(1.0);
        let rare = key % 1000 == 7;
        if rare {
            // Rare items are unpopular: they sit at the end of every index.
            views = rng.gen_range(1.0..4.0);
        }
        let id = format!("item{:07}", (key * 7_919) % ITEMS);
        let meta = ItemMeta {
            creator: Some(format!("c{}", rng.gen_range(0..50_000))),
            // 0.1% of the items are in a rare category (the posting-list path).
            category: Some(if rare {
                "rare".to_string()
            } else {
                format!("cat{}", rng.gen_range(0..20))
            }),
            created_at: Some(clock - rng.gen_range(0..86_400_000)),
            ..ItemMeta::default()
        };
        batch.push((
            Update::Item {
                key,
                state: ItemState {
                    id,
                    meta: Some(std::sync::Arc::new(meta)),
                    deleted: false,
                },
            },
            1,
        ));
        // view, like, share, completion: the types with a rank weight.
        for (kind, share) in [(0u16, 1.0), (1, 0.05), (2, 0.01), (4, 0.3)] {
            let c24 = if kind == 0 {
                views.floor()
            } else {
                (views * share * rng.gen_range(0.5..1.5)).floor()
            };
            if c24 < 1.0 {
                continue;
            }
            let c1 = if rare {
                c24
            } else {
                (c24 * rng.gen_range(0.0..0.1)).ceil()
            };
            let mut l = Lanes::default();
            l.0[0] = weight_fixed(c1);
            l.0[1] = weight_fixed(c1 * rng.gen_range(1.0..2.5));
            l.0[2] = weight_fixed(c24);
            l.0[3] = weight_fixed(c24 * rng.gen_range(1.0..2.5));
            l.0[4] = weight_fixed(c24 * 7.0);
            l.0[5] = weight_fixed(c24 * 14.0);
            l.0[TOTAL_LANE] = weight_fixed(c24 * 30.0);
            batch.push((Update::Window { key, kind, lanes: l }, 1));
            let ts = clock - rng.gen_range(0..3_600_000);
            let epoch = epoch_of(ts, h);
            batch.push((
                Update::Decay {
                    key,
                    kind,
                    hl: 0,
                    epoch,
                    sum: decay_fixed(c1, ts, epoch, h),
                },
                1,
            ));
        }
        if batch.len() >= 200_000 {
            b.apply(std::mem::take(&mut batch));
        }
    }
    b.apply(batch);
    let snap = tidal_sinks::View::single(std::sync::Arc::new(b.snapshot(time_at(clock) + 1)));
    println!(
        "built {} items in {:.1}s",
        snap.shards[0].listed(),
        started.elapsed().as_secs_f64()
    );

    let cases: [&[(&str, &str)]; 9] = [
        &[("limit", "50")],
        &[("limit", "50"), ("signal", "view")],
        &[("limit", "50"), ("window", "24h")],
        &[("limit", "50"), ("profile", "hot")],
        &[("limit", "50"), ("max_per_creator", "1")],
        &[("limit", "50"), ("category", "cat3")],
        &[("limit", "50"), ("category", "rare")],
        &[("limit", "50"), ("category", "rare"), ("profile", "hot")],
        &[("limit", "50"), ("category", "rare"), ("signal", "view")],
    ];
    let (mut default_p50, mut rare_p99) = (0.0, 0.0f64);
    for q in cases {
        let pairs: Vec<(String, String)> = q.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let p = RankParams::parse(&pairs, &config).unwrap();
        for _ in 0..20 {
            rank(&snap, &config, &p).unwrap();
        }
        let mut times = Vec::new();
        for _ in 0..1000 {
            let t = Instant::now();
            let r = rank(&snap, &config, &p).unwrap();
            times.push(t.elapsed().as_secs_f64() * 1e3);
            assert!(r.items.len() == 50 || (q.contains(&("category", "rare")) && !r.items.is_empty()));
        }
        times.sort_by(f64::total_cmp);
        let (p50, p99) = (times[times.len() / 2], times[times.len() * 99 / 100]);
        println!("{q:?}: p50 {p50:.3} ms, p99 {p99:.3} ms");
        if q.len() == 1 {
            default_p50 = p50;
        }
        if q.contains(&("category", "rare")) {
            rare_p99 = rare_p99.max(p99);
        }
    }
    if !cfg!(debug_assertions) {
        assert!(default_p50 < 2.0, "trending top-50 p50 {default_p50} ms");
        assert!(
            rare_p99 < 10.0,
            "a filter matching 0.1% of the items: p99 {rare_p99} ms"
        );
    }
}
