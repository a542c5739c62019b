//! A mutation fuzzer for the WAL record decoder: builds valid frames and payloads, mutates
//! them (bit flips, byte overwrites, truncation, insertion, splicing) and feeds them to
//! `decode_frame` and — bypassing the checksum — straight to `decode_payload`. Any panic is a
//! bug: the input is printed in hex and the run fails.
//!
//! `cargo run --release --example fuzz_wal_decoder -- [SECONDS] [SEED]` (default 10 s).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use tidal_core::record::{Embedding, ItemMeta, Record, Signal};
use tidal_sources::wal::format::{FrameMeta, decode_frame, decode_payload, encode_frame};

fn text(rng: &mut SmallRng) -> String {
    let n = rng.gen_range(0..12);
    (0..n).map(|_| char::from(rng.gen_range(b'a'..=b'z'))).collect()
}

fn record(rng: &mut SmallRng) -> Record {
    match rng.gen_range(0..5) {
        0 => Record::Signals(
            (0..rng.gen_range(0..6))
                .map(|_| Signal {
                    kind: text(rng),
                    item: text(rng),
                    user: rng.gen_bool(0.5).then(|| text(rng)),
                    weight: rng.gen_range(-10.0..10.0),
                    ts: rng.gen_bool(0.5).then(|| rng.r#gen()),
                    id: rng.gen_bool(0.3).then(|| text(rng)),
                })
                .collect(),
        ),
        1 => Record::ItemPut {
            id: text(rng),
            meta: ItemMeta {
                creator: Some(text(rng)),
                title: Some(text(rng)),
                tags: vec![text(rng), text(rng)],
                created_at: Some(rng.r#gen()),
                embedding: rng
                    .gen_bool(0.5)
                    .then(|| Embedding((0..4).map(|_| rng.r#gen()).collect())),
                ..ItemMeta::default()
            },
        },
        2 => Record::ItemDelete { id: text(rng) },
        3 => Record::ClockAdvance { to_ms: rng.r#gen() },
        _ => Record::Config { toml: text(rng) },
    }
}

fn mutate(rng: &mut SmallRng, buf: &mut Vec<u8>, other: &[u8]) {
    for _ in 0..rng.gen_range(1..4) {
        if buf.is_empty() {
            buf.push(rng.r#gen());
        }
        let i = rng.gen_range(0..buf.len());
        match rng.gen_range(0..6) {
            0 => buf[i] ^= 1 << rng.gen_range(0..8),
            1 => buf[i] = rng.r#gen(),
            2 => buf.truncate(i),
            3 => buf.insert(i, rng.r#gen()),
            4 => {
                let j = rng.gen_range(0..=other.len());
                buf.splice(i.., other[j..].iter().copied());
            }
            _ => {
                // Large little-endian counts/lengths are the classic decoder trap.
                let v = [0xFFu8, 0xFF, 0xFF, 0x7F];
                for (k, b) in v.iter().enumerate() {
                    if let Some(x) = buf.get_mut(i + k) {
                        *x = *b;
                    }
                }
            }
        }
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let secs: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(10);
    let seed: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1);
    let mut rng = SmallRng::seed_from_u64(seed);
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut runs = 0u64;
    let mut prev = Vec::new();
    while Instant::now() < deadline {
        let r = record(&mut rng);
        let mut frame = Vec::new();
        let meta = FrameMeta {
            lsn: rng.r#gen(),
            time: rng.r#gen(),
            clock_ms: rng.r#gen(),
        };
        if encode_frame(&mut frame, meta, &r).is_err() {
            continue;
        }
        let payload_at = frame.len() - tidal_sources::wal::format::payload_len(&r);
        let kind = frame[payload_at - 1];
        for _ in 0..64 {
            let mut f = frame.clone();
            mutate(&mut rng, &mut f, &prev);
            let mut p = frame[payload_at..].to_vec();
            mutate(&mut rng, &mut p, &prev);
            let k = if rng.gen_bool(0.9) { kind } else { rng.r#gen() };
            let outcome = catch_unwind(AssertUnwindSafe(|| {
                let _ = decode_frame(&f).map(|raw| raw.record());
                let _ = decode_payload(k, &p);
            }));
            if outcome.is_err() {
                let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
                eprintln!("decoder panicked; frame {} payload kind {k} {}", hex(&f), hex(&p));
                std::process::exit(1);
            }
            runs += 1;
        }
        prev = frame;
    }
    println!("fuzz_wal_decoder: {runs} mutated inputs, no panic (seed {seed}, {secs} s)");
}
