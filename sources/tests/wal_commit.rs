//! Group commit, recovery, segment rollover, read-only reading, poisoning and shutdown.

#![allow(clippy::unwrap_used)]

mod wal_support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tidal_core::record::Record;
use tidal_core::time::{ClockMode, clock_of};
use tidal_sources::wal::{Commit, WalError, WalReader, verify};
use wal_support::*;

#[test]
fn concurrent_producers_every_ack_is_in_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, feed, recovered) = open(options(dir.path(), ClockMode::Wall));
    assert!(recovered.is_empty());
    type Acks = Arc<Mutex<Vec<(Commit, Vec<Record>)>>>;
    let acks: Acks = Arc::default();
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let wal = wal.clone();
            let acks = acks.clone();
            std::thread::spawn(move || {
                for i in 0..50 {
                    let n = 1 + (i % 5);
                    let sigs = (0..n)
                        .map(|j| sig("view", &format!("item-{t}-{i}-{j}"), None, None, None))
                        .collect();
                    let records = signals(sigs);
                    let commit = wal.submit_blocking(records.clone()).unwrap();
                    acks.lock().unwrap().push((commit, records));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    wal.shutdown();
    let acks = acks.lock().unwrap();
    assert_eq!(acks.len(), 400);

    let batches = read_all(dir.path());
    let mut by_lsn = std::collections::HashMap::new();
    let mut prev_time = None;
    let mut next_lsn = 1;
    for b in &batches {
        assert!(prev_time.is_none_or(|p| b.time > p), "times strictly increase");
        assert_eq!(clock_of(b.time), b.clock_ms);
        prev_time = Some(b.time);
        for r in &b.records {
            assert_eq!(r.lsn, next_lsn, "LSNs are contiguous from 1");
            next_lsn += 1;
            by_lsn.insert(r.lsn, (b.time, b.clock_ms, r.record.clone()));
        }
    }
    assert_eq!(next_lsn - 1, 400, "one record per request");
    for (c, records) in acks.iter() {
        assert_eq!(c.first_lsn, c.last_lsn);
        let (time, clock, rec) = &by_lsn[&c.first_lsn];
        assert_eq!(&records[0], rec);
        assert_eq!((c.time, c.clock_ms), (*time, *clock));
        assert_eq!(c.accepted, records[0].signal_count());
        assert_eq!(c.duplicates, 0);
    }
    // The feed saw the same batches, in order, then was closed.
    let drained = feed.drain(usize::MAX);
    assert!(drained.closed);
    let fed: Vec<_> = drained.batches.iter().map(|b| (**b).clone()).collect();
    assert_eq!(fed, batches);
    // Group commit happened: fewer batches than requests is not guaranteed on a loaded
    // machine, but never more.
    assert!(batches.len() <= 400);
}

/// The `i`-th of a run of single-signal writes: a view of its own item at event time `1 + i`.
fn view_at(i: u64) -> Vec<Record> {
    signals(vec![sig("view", &format!("item-{i}"), None, Some(1 + i), None)])
}

/// An acknowledged batch is in the feed already when its producer is answered: a checkpoint
/// or a flush asked of the feed after an acknowledgement covers it.
#[test]
fn an_acknowledged_batch_is_in_the_feed_before_the_answer() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, feed, _) = open(options(dir.path(), ClockMode::Event));
    // Each write is a chance for the producer to look before the feed has the batch.
    for i in 0..300u64 {
        let c = wal.submit_blocking(view_at(i)).unwrap();
        let drained = feed.drain(usize::MAX);
        let last = drained.batches.iter().map(|b| b.last_lsn()).max();
        assert_eq!(
            last,
            Some(c.last_lsn),
            "write {i}: the feed holds the acknowledged batch"
        );
    }
}

/// The last LSN the WAL reports is in the feed already, whoever reads it: a checkpoint asked
/// for up to it (by another thread than the writer's producers) covers a batch the feed has.
#[test]
fn the_reported_last_lsn_is_in_the_feed() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, feed, _) = open(options(dir.path(), ClockMode::Event));
    let writer = {
        let wal = wal.clone();
        std::thread::spawn(move || {
            for i in 0..2000u64 {
                wal.submit_blocking(view_at(i)).unwrap();
            }
        })
    };
    let mut pushed = 0;
    while !writer.is_finished() {
        let reported = wal.last_lsn();
        let drained = feed.drain(usize::MAX);
        pushed = drained.batches.iter().map(|b| b.last_lsn()).fold(pushed, u64::max);
        assert!(
            pushed >= reported,
            "LSN {reported} reported, the feed has up to {pushed}"
        );
    }
    writer.join().unwrap();
}

#[test]
fn reopen_restores_lsn_clock_and_hands_back_batches() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _feed, _) = open(options(dir.path(), ClockMode::Event));
    let mut commits = Vec::new();
    for i in 0..10u64 {
        commits.push(
            wal.submit_blocking(signals(vec![sig(
                "like",
                &format!("i{i}"),
                Some("u"),
                Some(1_000 + i * 10),
                None,
            )]))
            .unwrap(),
        );
    }
    let last = commits.last().unwrap().clone();
    assert_eq!(wal.last_lsn(), 10);
    assert_eq!(wal.clock_ms(), 1_090);
    drop(wal);

    let before = read_all(dir.path());
    let (wal, _feed, recovered) = open(options(dir.path(), ClockMode::Event));
    assert_eq!(recovered, before);
    assert_eq!(wal.last_lsn(), 10);
    assert_eq!(wal.clock_ms(), 1_090);
    assert_eq!(wal.last_time(), last.time);
    // An older ts keeps the clock; the time still increases.
    let c = wal
        .submit_blocking(signals(vec![sig("like", "x", None, Some(5), None)]))
        .unwrap();
    assert_eq!(c.first_lsn, 11);
    assert_eq!(c.clock_ms, 1_090);
    assert!(c.time > last.time);
    wal.shutdown();
    let after = read_all(dir.path());
    assert_eq!(after.len(), before.len() + 1);
}

#[test]
fn segments_roll_over_and_sort_in_log_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(dir.path(), ClockMode::Event);
    opts.segment_bytes = 400;
    let (wal, _feed, _) = open(opts.clone());
    let mut expected = Vec::new();
    for i in 0..40u64 {
        let records = signals(vec![sig("view", &format!("item-{i:04}"), Some("user"), Some(i), None)]);
        wal.submit_blocking(records.clone()).unwrap();
        expected.push(records[0].clone());
    }
    wal.shutdown();
    let segs = segment_paths(dir.path());
    assert!(segs.len() >= 5, "small segments roll over: {segs:?}");
    // Each segment is named for its first record's LSN, and no segment exceeds the limit by
    // more than one group.
    let mut reader = WalReader::open(dir.path(), false).unwrap();
    let mut got = Vec::new();
    let mut firsts = std::collections::BTreeMap::new();
    while let Some(r) = reader.next_record().unwrap() {
        firsts.entry(r.file.clone()).or_insert(r.meta.lsn);
        got.push(r.record);
    }
    assert_eq!(got, expected);
    for (file, lsn) in firsts {
        let name = file.file_name().unwrap().to_str().unwrap().to_string();
        assert_eq!(name, format!("wal-{lsn:020}.log"));
    }
    // Reopen appends to the last segment (or a new one) and keeps LSNs continuous.
    let (wal, _feed, recovered) = open(opts);
    assert_eq!(recovered.iter().map(|b| b.records.len()).sum::<usize>(), 40);
    let c = wal
        .submit_blocking(signals(vec![sig("view", "more", None, Some(100), None)]))
        .unwrap();
    assert_eq!(c.first_lsn, 41);
    wal.shutdown();
    assert_eq!(read_all(dir.path()).iter().map(|b| b.records.len()).sum::<usize>(), 41);
    let report = verify(dir.path()).unwrap();
    assert_eq!(
        (report.first_lsn, report.last_lsn, report.records, report.signals),
        (Some(1), Some(41), 41, 41)
    );
    assert!(report.is_clean());
}

#[test]
fn reading_never_modifies_the_files() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _feed, _) = open(options(dir.path(), ClockMode::Event));
    for i in 0..5u64 {
        wal.submit_blocking(signals(vec![sig("view", "a", None, Some(i), None)]))
            .unwrap();
    }
    wal.shutdown();
    // Leave a torn tail too: readers must not repair it.
    let last = segment_paths(dir.path()).pop().unwrap();
    let mut bytes = std::fs::read(&last).unwrap();
    bytes.extend_from_slice(&[7, 0, 0]);
    std::fs::write(&last, &bytes).unwrap();
    let before = dir_hashes(dir.path());
    let _ = WalReader::open(dir.path(), true).unwrap().collect::<Vec<_>>();
    let _ = WalReader::open(dir.path(), false).unwrap().collect::<Vec<_>>();
    let _ = verify(dir.path()).unwrap();
    let mut out = Vec::new();
    tidal_sources::wal::inspect(dir.path(), &mut out, None).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert_eq!(text.lines().filter(|l| l.starts_with("lsn=")).count(), 5);
    assert!(text.contains("torn tail"));
    assert_eq!(dir_hashes(dir.path()), before);
}

#[test]
fn failed_sync_poisons_the_wal() {
    let dir = tempfile::tempdir().unwrap();
    let fail = Arc::new(AtomicBool::new(false));
    let mut opts = options(dir.path(), ClockMode::Event);
    opts.fail_sync = Some(fail.clone());
    let (wal, _feed, _) = open(opts);
    wal.submit_blocking(signals(vec![sig("view", "a", None, Some(1), None)]))
        .unwrap();
    fail.store(true, Ordering::SeqCst);
    let err = wal
        .submit_blocking(signals(vec![sig("view", "b", None, Some(2), None)]))
        .unwrap_err();
    assert!(matches!(err, WalError::Poisoned { .. }), "{err}");
    assert!(
        err.to_string().contains("poisoned") && err.to_string().contains("injected sync failure"),
        "{err}"
    );
    assert!(wal.is_poisoned());
    // Even with the fault gone, nothing more is accepted or written.
    fail.store(false, Ordering::SeqCst);
    let size = std::fs::metadata(segment_paths(dir.path()).pop().unwrap())
        .unwrap()
        .len();
    let err = wal
        .submit_blocking(signals(vec![sig("view", "c", None, Some(3), None)]))
        .unwrap_err();
    assert!(matches!(err, WalError::Poisoned { .. }));
    assert_eq!(
        std::fs::metadata(segment_paths(dir.path()).pop().unwrap())
            .unwrap()
            .len(),
        size
    );
    assert_eq!(wal.last_lsn(), 1);
    wal.shutdown();
}

#[test]
fn shutdown_is_idempotent_and_later_submits_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, feed, _) = open(options(dir.path(), ClockMode::Wall));
    let other = wal.clone();
    wal.submit_blocking(signals(vec![sig("view", "a", None, None, None)]))
        .unwrap();
    wal.shutdown();
    wal.shutdown();
    assert!(matches!(other.submit_blocking(signals(vec![])), Err(WalError::Closed)));
    assert!(feed.drain(10).closed);
}

#[test]
fn idle_wall_clock_seals_the_feed() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, feed, _) = open(options(dir.path(), ClockMode::Wall));
    let c = wal
        .submit_blocking(signals(vec![sig("view", "a", None, None, None)]))
        .unwrap();
    let start = feed.sealed();
    assert!(start > c.time);
    std::thread::sleep(std::time::Duration::from_millis(60));
    let later = feed.sealed();
    assert!(
        clock_of(later) > c.clock_ms,
        "the seal follows the wall clock while idle"
    );
    let c2 = wal
        .submit_blocking(signals(vec![sig("view", "b", None, None, None)]))
        .unwrap();
    assert!(c2.time >= later, "no batch below the seal");
    wal.shutdown();
}

#[test]
fn options_from_config() {
    let cfg = tidal_core::Config::default();
    let o = tidal_sources::wal::WalOptions::from_config(&cfg, "/tmp/x/wal");
    assert_eq!(o.segment_bytes, cfg.engine.segment_bytes);
    assert_eq!(o.max_batch_records, cfg.engine.group_commit_max_records);
    assert_eq!(o.dedup_window_ms, cfg.engine.dedup_window.ms());
    assert_eq!(o.tick.as_millis() as u64, cfg.engine.tick_ms);
    assert!(o.fail_sync.is_none());
}

#[test]
fn handle_is_shareable_and_dropping_the_last_one_shuts_down() {
    fn shareable<T: Send + Sync + Clone + 'static>() {}
    shareable::<tidal_sources::wal::WalHandle>();
    let dir = tempfile::tempdir().unwrap();
    let (wal, feed, _) = open(options(dir.path(), ClockMode::Event));
    let clone = wal.clone();
    wal.submit_blocking(signals(vec![sig("view", "a", None, Some(1), None)]))
        .unwrap();
    drop(wal);
    assert!(!feed.drain(0).closed, "a clone keeps the writer running");
    drop(clone);
    let d = feed.drain(10);
    assert!(d.closed);
    assert_eq!(d.batches.len(), 1);
}
