//! The commit clock: event clock T_commit = max(previous, max ts), ClockAdvance, never
//! decreasing, ts_eff = min(ts, T_commit), one time per group, and the wall clock.

#![allow(clippy::unwrap_used)]

mod wal_support;

use std::sync::mpsc;
use std::time::Duration;

use tidal_core::record::Record;
use tidal_core::time::{ClockMode, clock_of, time_at, wall_clock_ms};
use tidal_sources::wal::Commit;
use wal_support::*;

#[test]
fn event_clock_follows_max_ts_and_advances() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _feed, _) = open(options(dir.path(), ClockMode::Event));
    let cases: Vec<(Vec<Record>, u64)> = vec![
        (
            signals(vec![
                sig("view", "a", None, Some(5_000), None),
                sig("view", "b", None, Some(7_000), None),
            ]),
            7_000,
        ),
        (signals(vec![sig("view", "c", None, Some(6_000), None)]), 7_000),
        (signals(vec![sig("view", "d", None, None, None)]), 7_000),
        (vec![Record::ClockAdvance { to_ms: 9_000 }], 9_000),
        (vec![Record::ClockAdvance { to_ms: 8_000 }], 9_000),
        (signals(vec![sig("view", "e", None, Some(12_345), None)]), 12_345),
    ];
    let mut prev_time = None;
    let mut expected_clock = 0;
    for (records, want) in cases {
        // Model: T_commit = max(previous, max ts, advance_to).
        let asked = records
            .iter()
            .flat_map(|r| match r {
                Record::Signals(s) => s.iter().filter_map(|s| s.ts).collect::<Vec<_>>(),
                Record::ClockAdvance { to_ms } => vec![*to_ms],
                _ => vec![],
            })
            .max()
            .unwrap_or(0);
        expected_clock = expected_clock.max(asked);
        assert_eq!(expected_clock, want);
        let c = wal.submit_blocking(records).unwrap();
        assert_eq!(c.clock_ms, want);
        assert_eq!(clock_of(c.time), c.clock_ms);
        assert!(prev_time.is_none_or(|p| c.time > p));
        prev_time = Some(c.time);
    }
    wal.shutdown();
    // ts_eff = min(ts, T_commit) on what was logged.
    for b in read_all(dir.path()) {
        for r in b.records {
            if let Record::Signals(sigs) = r.record {
                for s in sigs {
                    let eff = s.ts_eff(b.clock_ms);
                    assert!(eff <= b.clock_ms);
                    assert_eq!(eff, s.ts.map_or(b.clock_ms, |t| t.min(b.clock_ms)));
                }
            }
        }
    }
}

#[test]
fn same_ms_batches_get_increasing_sequence_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _feed, _) = open(options(dir.path(), ClockMode::Event));
    let mut times = Vec::new();
    for i in 0..20 {
        times.push(
            wal.submit_blocking(signals(vec![sig("view", &format!("{i}"), None, Some(42), None)]))
                .unwrap()
                .time,
        );
    }
    wal.shutdown();
    let want: Vec<u64> = (0..20).map(|i| time_at(42) + i).collect();
    assert_eq!(times, want);
}

#[test]
fn one_group_shares_one_time_and_the_clock_of_its_largest_ts() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(dir.path(), ClockMode::Event);
    opts.max_batch_delay = Duration::from_millis(300);
    opts.max_batch_records = 4;
    let (wal, _feed, _) = open(opts);
    let (tx, rx) = mpsc::channel::<Commit>();
    for ts in [100u64, 900, 300, 500] {
        let tx = tx.clone();
        wal.submit(
            signals(vec![sig("view", &format!("i{ts}"), None, Some(ts), None)]),
            Box::new(move |r| tx.send(r.unwrap()).unwrap()),
        );
    }
    let commits: Vec<Commit> = (0..4).map(|_| rx.recv().unwrap()).collect();
    wal.shutdown();
    assert!(commits.iter().all(|c| c.time == commits[0].time && c.clock_ms == 900));
    let mut lsns: Vec<u64> = commits.iter().map(|c| c.first_lsn).collect();
    lsns.sort();
    assert_eq!(lsns, vec![1, 2, 3, 4]);
    let batches = read_all(dir.path());
    assert_eq!(batches.len(), 1);
    assert_eq!(batches[0].records.len(), 4);
    assert_eq!(batches[0].clock_ms, 900);
}

#[test]
fn wall_clock_is_at_least_now_and_never_decreases() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _feed, _) = open(options(dir.path(), ClockMode::Wall));
    let mut prev = 0;
    for i in 0..20 {
        let before = wall_clock_ms();
        // A far-past ts does not hold the wall clock back.
        let c = wal
            .submit_blocking(signals(vec![sig("view", &format!("{i}"), None, Some(1), None)]))
            .unwrap();
        assert!(c.clock_ms >= before);
        assert!(c.time > prev);
        prev = c.time;
    }
    wal.shutdown();
}
