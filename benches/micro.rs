//! Criterion micro-benchmarks of the hot arithmetic (window-lane updates and decay terms), of
//! the checkpoint codec (a pending-retraction list encoded as varints) and of the WAL's
//! duplicate check (what a recovery rebuilds per signal, and the writer does per signal).

use criterion::{Criterion, black_box, criterion_group, criterion_main};
use differential_dataflow::difference::Semigroup;

use tidal_core::codec::Codec;
use tidal_core::features::{Lanes, TOTAL_LANE, decay_fixed, epoch_of, hot_key, weight_fixed};

fn lanes(c: &mut Criterion) {
    c.bench_function("lanes_plus_equals", |b| {
        let mut acc = Lanes::default();
        let d = Lanes::with([0, 1, 2, 3, TOTAL_LANE], weight_fixed(1.0));
        b.iter(|| acc.plus_equals(black_box(&d)))
    });
}

fn decay(c: &mut Criterion) {
    let h = 3_600_000;
    c.bench_function("decay_fixed", |b| {
        let mut ts = 1_700_000_000_000u64;
        b.iter(|| {
            ts += 1_000;
            let e = epoch_of(ts, h);
            black_box(decay_fixed(1.0, ts, e, h))
        })
    });
    c.bench_function("hot_key_3_epochs", |b| {
        let epochs = [(0u64, 1i128 << 60), (57_600_000, 1 << 61), (115_200_000, 1 << 59)];
        b.iter(|| black_box(hot_key(epochs.iter().copied(), h)))
    });
}

/// 100k updates shaped like a cohort rollup's pending retractions: `((cohort, kind, lane),
/// item)` and a fixed-point weight.
fn codec(c: &mut Criterion) {
    type Update = (((u64, u16, u16), u64), std::num::Wrapping<i64>);
    let updates: Vec<Update> = (0..100_000u64)
        .map(|i| {
            let key = (
                (i.wrapping_mul(0x9E37_79B9_7F4A_7C15), (i % 6) as u16, (i % 61) as u16),
                i * 7,
            );
            (key, std::num::Wrapping(-((i as i64) << 40)))
        })
        .collect();
    let mut out = Vec::with_capacity(4 << 20);
    c.bench_function("codec_put_100k_pending_updates", |b| {
        b.iter(|| {
            out.clear();
            for (p, d) in &updates {
                p.put(&mut out);
                d.put(&mut out);
            }
            black_box(out.len())
        })
    });
}

/// A window of 1M keys loaded from a checkpoint, and 100k distinct signals remembered into
/// it as a recovery does.
fn dedup(c: &mut Criterion) {
    use tidal_core::record::Signal;
    use tidal_sources::wal::dedup::Dedup;
    let signal = |i: u64| Signal {
        kind: "view".into(),
        item: format!("item-{}", i % 50_000),
        user: Some(format!("user-{i}")),
        weight: 1.0,
        ts: Some(1_700_000_000_000 + i),
        id: None,
    };
    let mut base = Dedup::new(u64::MAX / 4, usize::MAX);
    let old: Vec<Signal> = (0..1_000_000).map(signal).collect();
    base.remember_logged(&old, 1);
    let new: Vec<Signal> = (1_000_000..1_100_000).map(signal).collect();
    let mut saved = Vec::new();
    base.save(&mut saved);
    let mut g = c.benchmark_group("dedup");
    g.sample_size(10);
    g.bench_function("load_1m", |b| {
        b.iter(|| {
            let mut d = Dedup::new(u64::MAX / 4, usize::MAX);
            d.load(&saved).expect("saved just now");
            black_box(d.len())
        })
    });
    g.bench_function("remember_100k_into_1m", |b| {
        b.iter_batched(
            || {
                let mut d = Dedup::new(u64::MAX / 4, usize::MAX);
                d.load(&saved).expect("saved just now");
                d
            },
            |mut d| {
                d.remember_logged(&new, 2);
                black_box(d.len())
            },
            criterion::BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(benches, lanes, decay, codec, dedup);
criterion_main!(benches);
