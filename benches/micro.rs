//! Criterion micro-benchmarks of the hot arithmetic: window-lane updates and decay terms.

use criterion::{Criterion, black_box, criterion_group, criterion_main};
use differential_dataflow::difference::Semigroup;

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

criterion_group!(benches, lanes, decay);
criterion_main!(benches);
