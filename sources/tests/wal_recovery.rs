//! Torn-tail and corrupt-middle fixtures: open truncates the first and refuses the second,
//! naming file and offset; readers report both without touching the files.

#![allow(clippy::unwrap_used)]

mod wal_support;

use std::path::{Path, PathBuf};

use tidal_core::time::ClockMode;
use tidal_sources::wal::format::{FrameMeta, HEADER_BYTES, encode_frame, frame_len};
use tidal_sources::wal::{Wal, WalError, WalReader, verify};
use wal_support::*;

/// Writes `n` one-signal records, one per batch; returns the last segment's path and the
/// offsets where each record starts in it.
fn fixture(dir: &Path, n: u64, segment_bytes: u64) -> (PathBuf, Vec<u64>) {
    let mut opts = options(dir, ClockMode::Event);
    opts.segment_bytes = segment_bytes;
    let (wal, _feed, _) = open(opts);
    for i in 0..n {
        wal.submit_blocking(signals(vec![sig(
            "view",
            &format!("item-{i}"),
            Some("u1"),
            Some(100 + i),
            None,
        )]))
        .unwrap();
    }
    wal.shutdown();
    let last = segment_paths(dir).pop().unwrap();
    let offsets = WalReader::open(dir, false)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    assert_eq!(offsets.iter().map(|b| b.records.len() as u64).sum::<u64>(), n);
    let mut reader = WalReader::open(dir, false).unwrap();
    let mut starts = Vec::new();
    while let Some(r) = reader.next_record().unwrap() {
        if r.file == last {
            starts.push(r.offset);
        }
    }
    (last, starts)
}

fn append(path: &Path, bytes: &[u8]) {
    let mut all = std::fs::read(path).unwrap();
    all.extend_from_slice(bytes);
    std::fs::write(path, all).unwrap();
}

fn assert_torn_then_repaired(dir: &Path, last: &Path, good_len: u64) {
    // A strict reader refuses, naming the file and where the whole records end.
    let err = WalReader::open(dir, false)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap_err();
    match &err {
        WalError::TornTail { file, offset, .. } => {
            assert_eq!(file, last);
            assert_eq!(*offset, good_len);
        }
        other => panic!("expected a torn tail, got {other}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains(&last.display().to_string()) && msg.contains(&good_len.to_string()),
        "{msg}"
    );
    // A tolerant reader stops at the last whole record.
    let mut reader = WalReader::open(dir, true).unwrap();
    let n: usize = reader.by_ref().map(|b| b.unwrap().records.len()).sum();
    assert_eq!(n, 5);
    assert_eq!(reader.torn_tail(), Some((last.to_path_buf(), good_len)));
    assert_eq!(verify(dir).unwrap().torn_tail, Some((last.to_path_buf(), good_len)));
    // Opening truncates the tail and continues the log.
    let (wal, _feed, recovered) = open(options(dir, ClockMode::Event));
    assert_eq!(recovered.iter().map(|b| b.records.len()).sum::<usize>(), 5);
    assert_eq!(std::fs::metadata(last).unwrap().len(), good_len);
    let c = wal
        .submit_blocking(signals(vec![sig("view", "after", None, None, None)]))
        .unwrap();
    assert_eq!(c.first_lsn, 6);
    wal.shutdown();
    assert_eq!(read_all(dir).iter().map(|b| b.records.len()).sum::<usize>(), 6);
    assert!(verify(dir).unwrap().is_clean());
}

/// The first half of the frame record 6 would have: what a crash mid-write leaves.
fn half_a_frame() -> Vec<u8> {
    let mut frame = Vec::new();
    let rec = &signals(vec![sig("view", "torn", None, Some(1), None)])[0];
    encode_frame(
        &mut frame,
        FrameMeta {
            lsn: 6,
            time: u64::MAX,
            clock_ms: 0,
        },
        rec,
    )
    .unwrap();
    frame.truncate(frame.len() / 2);
    frame
}

#[test]
fn half_a_frame_at_the_end_is_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let (last, _) = fixture(dir.path(), 5, 1 << 20);
    let good = std::fs::metadata(&last).unwrap().len();
    let frame = half_a_frame();
    append(&last, &frame);
    assert_torn_then_repaired(dir.path(), &last, good);
}

#[test]
fn garbage_at_the_end_is_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let (last, _) = fixture(dir.path(), 5, 1 << 20);
    let good = std::fs::metadata(&last).unwrap().len();
    append(&last, &[0x55; 300]);
    assert_torn_then_repaired(dir.path(), &last, good);
}

#[test]
fn checksum_failure_in_the_last_record_is_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let (last, starts) = fixture(dir.path(), 6, 1 << 20);
    let mut bytes = std::fs::read(&last).unwrap();
    let at = *starts.last().unwrap() as usize;
    let end = bytes.len() - 1;
    bytes[end] ^= 0x01;
    std::fs::write(&last, &bytes).unwrap();
    assert_torn_then_repaired(dir.path(), &last, at as u64);
}

#[test]
fn partial_header_of_a_new_segment_is_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let (last, _) = fixture(dir.path(), 5, 1 << 20);
    let good = std::fs::metadata(&last).unwrap().len();
    let fresh = dir.path().join(format!("wal-{:020}.log", 6));
    std::fs::write(&fresh, &b"TIDALWAL"[..5]).unwrap();
    let mut reader = WalReader::open(dir.path(), true).unwrap();
    assert_eq!(reader.by_ref().map(|b| b.unwrap().records.len()).sum::<usize>(), 5);
    assert_eq!(reader.torn_tail(), Some((fresh.clone(), 0)));
    let (wal, _feed, _) = open(options(dir.path(), ClockMode::Event));
    assert_eq!(std::fs::metadata(&fresh).unwrap().len(), HEADER_BYTES as u64);
    assert_eq!(
        wal.submit_blocking(signals(vec![sig("view", "x", None, None, None)]))
            .unwrap()
            .first_lsn,
        6
    );
    wal.shutdown();
    assert_eq!(std::fs::metadata(&last).unwrap().len(), good);
    assert_eq!(read_all(dir.path()).iter().map(|b| b.records.len()).sum::<usize>(), 6);
}

fn assert_corrupt(dir: &Path, file: &Path, offset: u64) {
    let before = dir_hashes(dir);
    let feed = std::sync::Arc::new(tidal_sources::feed::Feed::new(16));
    let err = Wal::open(options(dir, ClockMode::Event), feed, |_| {}).unwrap_err();
    match &err {
        WalError::Corrupt { file: f, offset: o, .. } => assert_eq!((f.as_path(), *o), (file, offset), "{err}"),
        other => panic!("expected corruption, got {other}"),
    }
    let msg = err.to_string();
    assert!(msg.contains(&file.display().to_string()), "{msg}");
    assert!(msg.contains(&format!("offset {offset}")), "{msg}");
    assert!(msg.contains("tidal wal verify"), "{msg}");
    // `tidal wal verify` reports the damage (and what it read before it) rather than fail.
    let report = verify(dir).expect("a report");
    assert_eq!(
        report.damage.as_ref().map(|(f, o, _)| (f.as_path(), *o)),
        Some((file, offset)),
        "{report}"
    );
    assert!(!report.is_clean());
    for tolerate in [false, true] {
        let res = WalReader::open(dir, tolerate).unwrap().collect::<Result<Vec<_>, _>>();
        assert!(matches!(res, Err(WalError::Corrupt { .. })));
    }
    assert_eq!(dir_hashes(dir), before, "a refused open changes nothing");
}

#[test]
fn flipped_byte_in_an_early_record_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    let (last, starts) = fixture(dir.path(), 8, 1 << 20);
    let mut bytes = std::fs::read(&last).unwrap();
    let at = starts[1] as usize;
    bytes[at + 50] ^= 0x10;
    std::fs::write(&last, &bytes).unwrap();
    assert_corrupt(dir.path(), &last, starts[1]);
}

#[test]
fn damaged_length_followed_by_valid_records_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let (last, starts) = fixture(dir.path(), 8, 1 << 20);
    let mut bytes = std::fs::read(&last).unwrap();
    let at = starts[5] as usize;
    bytes[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    std::fs::write(&last, &bytes).unwrap();
    assert_corrupt(dir.path(), &last, starts[5]);
}

#[test]
fn damage_in_a_sealed_segment_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    fixture(dir.path(), 30, 300);
    let segs = segment_paths(dir.path());
    assert!(segs.len() > 3);
    // Cut the end of an early segment: not a torn tail, since later segments follow.
    let victim = &segs[1];
    let len = std::fs::metadata(victim).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(victim).unwrap();
    f.set_len(len - 3).unwrap();
    drop(f);
    let mut reader = WalReader::open(dir.path(), false).unwrap();
    let mut good_end = 0;
    loop {
        match reader.next_record() {
            Ok(Some(r)) if &r.file == victim => good_end = r.offset + frame_len(&r.record) as u64,
            Ok(Some(_)) => {}
            Ok(None) => panic!("damage went unnoticed"),
            Err(_) => break,
        }
    }
    assert_corrupt(dir.path(), victim, good_end);
}

#[test]
fn missing_segment_is_an_lsn_gap() {
    let dir = tempfile::tempdir().unwrap();
    fixture(dir.path(), 30, 300);
    let segs = segment_paths(dir.path());
    std::fs::remove_file(&segs[2]).unwrap();
    let feed = std::sync::Arc::new(tidal_sources::feed::Feed::new(16));
    let err = Wal::open(options(dir.path(), ClockMode::Event), feed, |_| {}).unwrap_err();
    match err {
        WalError::Corrupt { file, offset, reason } => {
            assert_eq!((file, offset), (segs[3].clone(), 0));
            assert!(reason.contains("LSN gap"), "{reason}");
        }
        other => panic!("expected an LSN gap, got {other}"),
    }
}

/// What a writer stopped without sealing leaves: the records, then zeros it had allocated
/// ahead. Readers take the zeros for the end of the records (no torn tail, no damage), and
/// opening trims them and appends right after the last record.
#[test]
fn zeros_past_the_records_end_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let (last, _) = fixture(dir.path(), 5, 1 << 20);
    let good = std::fs::metadata(&last).unwrap().len();
    append(&last, &vec![0; 1 << 16]);
    for tolerate in [false, true] {
        let mut reader = WalReader::open(dir.path(), tolerate).unwrap();
        assert_eq!(reader.by_ref().map(|b| b.unwrap().records.len()).sum::<usize>(), 5);
        assert_eq!(reader.torn_tail(), None);
        assert_eq!(reader.zero_tails(), [(last.clone(), good)]);
    }
    assert!(verify(dir.path()).unwrap().is_clean());
    let (wal, _feed, recovered) = open(options(dir.path(), ClockMode::Event));
    assert_eq!(recovered.iter().map(|b| b.records.len()).sum::<usize>(), 5);
    assert_eq!(std::fs::metadata(&last).unwrap().len(), good, "trimmed");
    let c = wal
        .submit_blocking(signals(vec![sig("view", "after", None, None, None)]))
        .unwrap();
    assert_eq!(c.first_lsn, 6);
    wal.shutdown();
    assert_eq!(read_all(dir.path()).iter().map(|b| b.records.len()).sum::<usize>(), 6);
    assert!(verify(dir.path()).unwrap().is_clean());
}

#[test]
fn half_a_frame_then_zeros_is_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let (last, _) = fixture(dir.path(), 5, 1 << 20);
    let good = std::fs::metadata(&last).unwrap().len();
    let mut frame = half_a_frame();
    frame.resize(frame.len() + (1 << 16), 0);
    append(&last, &frame);
    assert_torn_then_repaired(dir.path(), &last, good);
}

#[test]
fn a_zeroed_record_followed_by_records_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let (last, starts) = fixture(dir.path(), 8, 1 << 20);
    let mut bytes = std::fs::read(&last).unwrap();
    let (at, end) = (starts[3] as usize, starts[4] as usize);
    bytes[at..end].fill(0);
    std::fs::write(&last, &bytes).unwrap();
    assert_corrupt(dir.path(), &last, starts[3]);
}

/// The writer allocates the active segment ahead of its records (on Linux): a reader sees
/// every committed record while it runs; sealed segments, and the last one once the writer
/// stops, hold their records only.
#[test]
fn the_active_segment_is_allocated_ahead_and_trimmed_when_sealed() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(dir.path(), ClockMode::Event);
    opts.segment_bytes = 4096;
    let (wal, _feed, _) = open(opts);
    let n = 100;
    for i in 0..n {
        wal.submit_blocking(signals(vec![sig("view", &format!("item-{i}"), None, None, None)]))
            .unwrap();
    }
    let mut reader = WalReader::open(dir.path(), false).unwrap();
    assert_eq!(reader.by_ref().map(|b| b.unwrap().records.len()).sum::<usize>(), n);
    let segs = segment_paths(dir.path());
    assert!(segs.len() > 2);
    let active = segs.last().unwrap();
    let ends_in_zeros = reader.zero_tails().iter().map(|(f, _)| f.clone()).collect::<Vec<_>>();
    if cfg!(target_os = "linux") {
        assert_eq!(
            ends_in_zeros,
            std::slice::from_ref(active),
            "only the active segment is allocated ahead"
        );
    } else {
        assert!(ends_in_zeros.is_empty());
    }
    wal.shutdown();
    let mut reader = WalReader::open(dir.path(), false).unwrap();
    assert_eq!(reader.by_ref().map(|b| b.unwrap().records.len()).sum::<usize>(), n);
    assert!(reader.zero_tails().is_empty(), "a stopped writer trims its segment");
    assert_eq!(
        reader.end_position().map(|e| e.1),
        Some(std::fs::metadata(active).unwrap().len())
    );
}
