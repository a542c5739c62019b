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

/// Issue: one signal with a ts in the far future pinned the event clock for ever. Now a ts
/// outside [0, 2^43) is refused in both modes, and once the event clock is set a batch may
/// move it by at most `max_clock_jump`; a refused request moves nothing, and the clock only
/// follows accepted records, also within one group commit.
#[test]
fn event_clock_refuses_far_jumps_and_out_of_range_ts() {
    use tidal_core::time::MAX_TS_MS;
    use tidal_sources::wal::WalError;
    let dir = tempfile::tempdir().unwrap();
    let mut o = options(dir.path(), ClockMode::Event);
    o.max_clock_jump_ms = 1_000_000;
    let (wal, _feed, _) = open(o);
    // The first batch of an empty log sets the clock, however far.
    let c = wal
        .submit_blocking(signals(vec![sig("view", "a", None, Some(1_700_000_000_000), None)]))
        .unwrap();
    assert_eq!(c.clock_ms, 1_700_000_000_000);
    let lsn = c.last_lsn;
    // The defect's signal: refused, naming the record.
    let far = 18_446_744_073_709_551_000u64;
    match wal.submit_blocking(signals(vec![
        sig("view", "b", None, Some(1_700_000_000_001), None),
        sig("view", "c", None, Some(far), None),
    ])) {
        Err(WalError::TimeOutOfRange { index: 1, value, .. }) => assert_eq!(value, far),
        other => panic!("expected a range error for record 1, got {other:?}"),
    }
    // A jump past max_clock_jump: refused; at the limit: accepted.
    match wal.submit_blocking(signals(vec![sig("view", "d", None, Some(1_700_001_000_001), None)])) {
        Err(WalError::ClockJump { index: 0, clock, .. }) => assert_eq!(clock, 1_700_000_000_000),
        other => panic!("expected a clock-jump error, got {other:?}"),
    }
    assert_eq!(wal.last_lsn(), lsn, "a refused request wrote nothing");
    assert_eq!(wal.clock_ms(), 1_700_000_000_000, "a refused request moved the clock");
    let c = wal
        .submit_blocking(signals(vec![sig("view", "e", None, Some(1_700_001_000_000), None)]))
        .unwrap();
    assert_eq!(c.clock_ms, 1_700_001_000_000);
    // Only a clock advance moves it further; it too must stay below 2^43.
    let c = wal
        .submit_blocking(vec![Record::ClockAdvance {
            to_ms: 1_800_000_000_000,
        }])
        .unwrap();
    assert_eq!(c.clock_ms, 1_800_000_000_000);
    assert!(matches!(
        wal.submit_blocking(vec![Record::ClockAdvance { to_ms: MAX_TS_MS }]),
        Err(WalError::TimeOutOfRange { .. })
    ));
    // In one group: a bad submission does not move the clock for the good ones.
    let (tx, rx) = mpsc::channel();
    for (item, ts) in [("f", 1_800_000_000_500u64), ("g", 1_900_000_000_000)] {
        let tx = tx.clone();
        wal.submit(
            signals(vec![sig("view", item, None, Some(ts), None)]),
            Box::new(move |r| tx.send((item, r)).unwrap()),
        );
    }
    let mut got: Vec<_> = (0..2).map(|_| rx.recv().unwrap()).collect();
    got.sort_by_key(|(i, _)| *i);
    assert!(got[0].1.is_ok());
    assert!(matches!(got[1].1, Err(WalError::ClockJump { .. })));
    assert_eq!(wal.clock_ms(), 1_800_000_000_500);
    wal.shutdown();
}

/// A full writer queue answers at once with `Overloaded` instead of blocking the caller.
#[test]
fn full_queue_refuses_without_blocking() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tidal_sources::wal::WalError;
    let dir = tempfile::tempdir().unwrap();
    let mut o = options(dir.path(), ClockMode::Event);
    o.queue_capacity = 4;
    // No waiting for more submissions to join a group: a group is what is queued.
    o.max_batch_delay = Duration::ZERO;
    // A feed of one batch, full already and never drained, stalls the writer at its first
    // commit, whatever the threads' timing.
    let feed = Arc::new(tidal_sources::feed::Feed::new(1));
    let wal = tidal_sources::wal::Wal::open(o, feed.clone(), |_| {}).unwrap();
    feed.push(Arc::new(tidal_core::record::CommittedBatch {
        time: 0,
        clock_ms: 0,
        records: Vec::new(),
    }));
    let overloaded = Arc::new(AtomicUsize::new(0));
    let started = std::time::Instant::now();
    for i in 0..64 {
        let overloaded = overloaded.clone();
        wal.submit(
            signals(vec![sig("view", &format!("i{i}"), None, Some(1_000 + i), None)]),
            Box::new(move |r| {
                if matches!(r, Err(WalError::Overloaded { .. })) {
                    overloaded.fetch_add(1, Ordering::SeqCst);
                }
            }),
        );
    }
    assert!(started.elapsed() < Duration::from_secs(2), "submit blocked");
    // At most one group (the one it woke for and the 4 queued behind it) is in the stalled
    // commit and 4 more wait in the queue: every other submission is refused.
    assert!(
        overloaded.load(Ordering::SeqCst) >= 64 - 5 - 4,
        "{}",
        overloaded.load(Ordering::SeqCst)
    );
    feed.close();
    wal.shutdown();
}
