//! Duplicate signals by idempotency id and by content, within a request, across requests,
//! after reopening, and against a from-scratch model on random input.

#![allow(clippy::unwrap_used)]

mod wal_support;

use rand::{Rng, SeedableRng};
use tidal_core::record::{Record, Signal};
use tidal_core::time::ClockMode;
use wal_support::*;

fn opts(dir: &std::path::Path, window: u64) -> tidal_sources::wal::WalOptions {
    let mut o = options(dir, ClockMode::Event);
    o.dedup_window_ms = window;
    o
}

fn logged_signals(dir: &std::path::Path) -> Vec<Signal> {
    read_all(dir)
        .into_iter()
        .flat_map(|b| b.records)
        .flat_map(|r| match r.record {
            Record::Signals(s) => s,
            _ => vec![],
        })
        .collect()
}

#[test]
fn by_id_by_content_and_within_a_request() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _feed, _) = open(opts(dir.path(), 60_000));
    let c = wal
        .submit_blocking(signals(vec![
            sig("like", "a", Some("u"), Some(1_000), Some("id-1")),
            sig("like", "b", Some("u"), Some(1_000), Some("id-1")), // same id
            sig("view", "a", Some("u"), Some(1_000), None),
            sig("view", "a", Some("u"), Some(1_000), None), // same content
            sig("view", "a", Some("v"), Some(1_000), None), // another user: new
        ]))
        .unwrap();
    assert_eq!((c.accepted, c.duplicates), (3, 2));
    let mut heavier = sig("view", "a", Some("u"), Some(1_000), None);
    heavier.weight = 2.0;
    let c = wal
        .submit_blocking(signals(vec![
            sig("share", "z", None, Some(1_500), Some("id-1")),
            heavier,
        ]))
        .unwrap();
    assert_eq!(
        (c.accepted, c.duplicates),
        (1, 1),
        "same id is a duplicate, another weight is not"
    );
    // A request of duplicates only writes nothing and answers with the current last LSN.
    let last = wal.last_lsn();
    let c = wal
        .submit_blocking(signals(vec![sig("view", "a", Some("u"), Some(1_000), None)]))
        .unwrap();
    assert_eq!((c.first_lsn, c.last_lsn, c.accepted, c.duplicates), (last, last, 0, 1));
    assert_eq!(wal.last_lsn(), last);
    wal.shutdown();
    assert_eq!(logged_signals(dir.path()).len(), 4);

    // After reopening the same signals are still duplicates.
    let (wal, _feed, _) = open(opts(dir.path(), 60_000));
    let c = wal
        .submit_blocking(signals(vec![
            sig("like", "q", None, Some(2_000), Some("id-1")),
            sig("view", "a", Some("v"), Some(1_000), None),
            sig("view", "new", None, Some(2_000), None),
        ]))
        .unwrap();
    assert_eq!((c.accepted, c.duplicates), (1, 2));
    wal.shutdown();
}

#[test]
fn window_expiry_and_disabled_window() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _feed, _) = open(opts(dir.path(), 1_000));
    let s = || sig("view", "a", None, None, Some("k"));
    wal.submit_blocking(vec![Record::ClockAdvance { to_ms: 10_000 }])
        .unwrap();
    assert_eq!(wal.submit_blocking(signals(vec![s()])).unwrap().accepted, 1);
    wal.submit_blocking(vec![Record::ClockAdvance { to_ms: 10_999 }])
        .unwrap();
    assert_eq!(wal.submit_blocking(signals(vec![s()])).unwrap().duplicates, 1);
    wal.submit_blocking(vec![Record::ClockAdvance { to_ms: 11_000 }])
        .unwrap();
    assert_eq!(
        wal.submit_blocking(signals(vec![s()])).unwrap().accepted,
        1,
        "expired after the window"
    );
    wal.shutdown();

    let dir = tempfile::tempdir().unwrap();
    let (wal, _feed, _) = open(opts(dir.path(), 0));
    let c = wal.submit_blocking(signals(vec![s(), s()])).unwrap();
    assert_eq!((c.accepted, c.duplicates), (2, 0));
    wal.shutdown();
}

/// From-scratch model: the writer's dedup clock for a request is max(previous commit
/// clock, max ts of the request), never decreasing; a signal is a duplicate if a signal with
/// the same id or the same content was written at a commit clock within the window of it.
#[test]
fn random_requests_match_a_model() {
    let window = 500u64;
    let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, mut _feed, _) = open(opts(dir.path(), window));
    let mut written: Vec<(u64, Signal)> = Vec::new();
    let mut commit_clock = 0u64;
    let mut dedup_now = 0u64;
    for round in 0..300 {
        if round == 150 {
            wal.shutdown();
            (wal, _feed, _) = open(opts(dir.path(), window));
        }
        let n = rng.gen_range(1..5);
        let req: Vec<Signal> = (0..n)
            .map(|_| {
                let id = rng.gen_bool(0.4).then(|| format!("id{}", rng.gen_range(0..20)));
                let ts = rng.gen_bool(0.8).then(|| round * 20 + rng.gen_range(0..400));
                sig("view", &format!("i{}", rng.gen_range(0..4)), None, ts, id.as_deref())
            })
            .collect();
        let target = req.iter().filter_map(|s| s.ts).max().unwrap_or(0);
        dedup_now = dedup_now.max(commit_clock.max(target));
        let mut keep: Vec<Signal> = Vec::new();
        let mut dups = 0;
        for s in &req {
            let same = |w: &Signal| w == s || (s.id.is_some() && w.id == s.id);
            let dup = written.iter().any(|(at, w)| at + window > dedup_now && same(w)) || keep.iter().any(same);
            if dup {
                dups += 1;
            } else {
                keep.push(s.clone());
            }
        }
        let c = wal.submit_blocking(signals(req.clone())).unwrap();
        assert_eq!((c.accepted, c.duplicates), (keep.len(), dups), "round {round}");
        if !keep.is_empty() {
            commit_clock = commit_clock.max(keep.iter().filter_map(|s| s.ts).max().unwrap_or(0));
            assert_eq!(c.clock_ms, commit_clock);
        }
        written.extend(keep.into_iter().map(|s| (commit_clock, s)));
    }
    wal.shutdown();
    let expected: Vec<Signal> = written.into_iter().map(|(_, s)| s).collect();
    assert_eq!(logged_signals(dir.path()), expected);
}
