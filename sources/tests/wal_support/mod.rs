//! Helpers shared by the WAL integration tests.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tidal_core::record::{CommittedBatch, Record, Signal};
use tidal_core::time::{ClockMode, Durability};
use tidal_sources::feed::Feed;
use tidal_sources::wal::{Wal, WalHandle, WalOptions, WalReader};

/// Fast options: buffered, short tick, event clock unless told.
pub fn options(dir: &Path, clock: ClockMode) -> WalOptions {
    let mut o = WalOptions::new(dir);
    o.durability = Durability::Buffer;
    o.clock = clock;
    o.tick = Duration::from_millis(5);
    o.max_batch_delay = Duration::from_micros(200);
    o
}

/// Opens a WAL, collecting recovered batches.
pub fn open(opts: WalOptions) -> (WalHandle, Arc<Feed>, Vec<CommittedBatch>) {
    let feed = Arc::new(Feed::new(1 << 20));
    let mut recovered = Vec::new();
    let wal = Wal::open(opts, feed.clone(), |b| recovered.push(b)).unwrap();
    (wal, feed, recovered)
}

pub fn sig(kind: &str, item: &str, user: Option<&str>, ts: Option<u64>, id: Option<&str>) -> Signal {
    Signal {
        kind: kind.into(),
        item: item.into(),
        user: user.map(Into::into),
        weight: 1.0,
        ts,
        id: id.map(Into::into),
    }
}

pub fn signals(sigs: Vec<Signal>) -> Vec<Record> {
    vec![Record::Signals(sigs)]
}

/// Every batch of the WAL in `dir`, read strictly.
pub fn read_all(dir: &Path) -> Vec<CommittedBatch> {
    WalReader::open(dir, false)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
}

/// The segment files of `dir`, sorted.
pub fn segment_paths(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    v.sort();
    v
}

/// BLAKE3 of every file in `dir`, with its name.
pub fn dir_hashes(dir: &Path) -> Vec<(PathBuf, [u8; 32])> {
    segment_paths(dir)
        .into_iter()
        .map(|p| {
            let h = *blake3::hash(&std::fs::read(&p).unwrap()).as_bytes();
            (p, h)
        })
        .collect()
}
