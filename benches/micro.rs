//! Criterion micro-benchmarks of the hot arithmetic (window-lane updates and decay terms) and
//! of the checkpoint codec (a pending-retraction list encoded as varints).

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

criterion_group!(benches, lanes, decay, codec);
criterion_main!(benches);
