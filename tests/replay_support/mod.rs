//! Shared helpers of the `replay_*` tests: write a WAL directly through the WAL writer (no
//! server), build variant configurations, run the `tidal` binary, snapshot WAL bytes.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use tidal_core::config::Config;
use tidal_core::duration::Dur;
use tidal_core::record::{ItemMeta, Record, Signal};
use tidal_core::time::{ClockMode, Durability};
use tidal_sources::feed::Feed;
use tidal_sources::wal::{Commit, Wal, WalOptions};

pub const T0: u64 = 1_700_000_000_000;
pub const MIN: u64 = 60_000;
pub const HOUR: u64 = 3_600_000;

/// Writes `requests` as consecutive group commits (one batch each) to a WAL in `dir`, with
/// the event clock, no dedup, and segments of `segment_bytes`.
pub fn write_wal(dir: &Path, requests: &[Vec<Record>], segment_bytes: u64) -> Vec<Commit> {
    let mut opts = WalOptions::new(dir);
    opts.durability = Durability::Buffer;
    opts.clock = ClockMode::Event;
    opts.dedup_window_ms = 0;
    opts.segment_bytes = segment_bytes;
    let feed = Arc::new(Feed::new(1));
    // Nobody drains this feed: closed, it never makes the writer wait.
    feed.close();
    let wal = Wal::open(opts, feed, |_| {}).expect("open wal");
    let commits = requests
        .iter()
        .map(|r| wal.submit_blocking(r.clone()).expect("append"))
        .collect();
    wal.shutdown();
    commits
}

pub fn view(item: &str, user: &str, ts: u64) -> Signal {
    signal("view", item, user, ts, 1.0)
}

pub fn signal(kind: &str, item: &str, user: &str, ts: u64, weight: f64) -> Signal {
    Signal {
        kind: kind.into(),
        item: item.into(),
        user: Some(user.into()),
        weight,
        ts: Some(ts),
        id: None,
    }
}

pub fn put(item: &str, category: &str) -> Record {
    Record::ItemPut {
        id: item.into(),
        meta: ItemMeta {
            category: Some(category.into()),
            ..ItemMeta::default()
        },
    }
}

/// The default schema with `view`'s half-lives replaced (the first one is what
/// `profile=hot` uses when no `half_life` is given).
pub fn with_view_half_lives(half_lives: &[&str]) -> Config {
    let mut c = Config::default_filled();
    let view = c.signals.iter_mut().find(|s| s.name == "view").expect("view");
    view.half_lives = half_lives.iter().map(|h| h.parse::<Dur>().expect("dur")).collect();
    c.validate().expect("valid");
    c
}

/// Every file under `dir` with its bytes.
pub fn files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(dir).expect("read_dir") {
        let p = e.expect("entry").path();
        if p.is_file() {
            out.insert(p.clone(), std::fs::read(&p).expect("read"));
        }
    }
    out
}

/// Runs `tidal replay` with `args`.
pub fn replay_cli(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tidal"))
        .arg("replay")
        .args(args)
        .env("TIDAL_LOG", "warn")
        .output()
        .expect("run tidal replay")
}

/// The JSON report a successful `--json -` run printed.
pub fn json_of(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "tidal replay failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json report on stdout")
}

/// `Σ weight · 2^(−(T − ts_eff)/h)` over `(item, ts_eff, weight)` events committed by `t`.
pub fn decay_scores(events: &[(String, u64, f64)], h: u64, t: u64) -> Vec<(String, f64)> {
    let mut by_item: BTreeMap<&str, f64> = BTreeMap::new();
    for (item, ts, w) in events.iter().filter(|e| e.1 <= t) {
        *by_item.entry(item).or_default() += w * (-((t - ts) as f64) / h as f64).exp2();
    }
    let mut v: Vec<(String, f64)> = by_item
        .into_iter()
        .filter(|(_, s)| *s > 0.0)
        .map(|(i, s)| (i.to_string(), s))
        .collect();
    v.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    v
}
