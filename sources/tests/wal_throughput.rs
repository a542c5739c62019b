//! Ingest throughput through `WalHandle::submit` (ignored; run with
//! `cargo test -p tidal-sources --release --test wal_throughput -- --ignored --nocapture`).

#![allow(clippy::unwrap_used)]

mod wal_support;

use std::sync::mpsc;
use std::time::Instant;

use tidal_core::record::Record;
use tidal_core::time::{ClockMode, Durability};
use wal_support::*;

fn run(durability: Durability, requests: usize, per_request: usize) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(dir.path(), ClockMode::Wall);
    opts.durability = durability;
    let (wal, feed, _) = open(opts);
    let reqs: Vec<Vec<Record>> = (0..requests)
        .map(|r| {
            signals(
                (0..per_request)
                    .map(|i| {
                        let mut s = sig(
                            "view",
                            &format!("item-{}", (r * 7919 + i) % 100_000),
                            Some(&format!("user-{}", i % 5000)),
                            None,
                            None,
                        );
                        s.weight = 1.0 + (r % 3) as f64;
                        s
                    })
                    .collect(),
            )
        })
        .collect();
    let drainer = std::thread::spawn(move || {
        let mut n = 0;
        loop {
            let d = feed.drain(usize::MAX);
            n += d.batches.len();
            if d.closed {
                return n;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    });
    let (tx, rx) = mpsc::channel();
    let start = Instant::now();
    for r in reqs {
        let tx = tx.clone();
        wal.submit(r, Box::new(move |c| tx.send(c.unwrap().accepted).unwrap()));
    }
    let accepted: usize = (0..requests).map(|_| rx.recv().unwrap()).sum();
    let secs = start.elapsed().as_secs_f64();
    wal.shutdown();
    drainer.join().unwrap();
    assert_eq!(accepted, requests * per_request);
    let rate = accepted as f64 / secs;
    println!("{durability:?}: {accepted} signals in {secs:.3}s = {rate:.0} signals/s");
    rate
}

#[test]
#[ignore = "throughput measurement"]
fn throughput_batches_of_1000() {
    run(Durability::Buffer, 500, 1000);
    run(Durability::Fdatasync, 500, 1000);
}
