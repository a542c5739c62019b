//! Opening a WAL for writing: verify every segment, hand each committed batch to the caller
//! in order, truncate a torn tail (the last record cut short by a crash), refuse to open on
//! damage anywhere else, restore the LSN, the clock and the dedup set, then start the writer.

use std::fs::OpenOptions;
use std::path::PathBuf;
use std::sync::Arc;

use tidal_core::record::{CommittedBatch, Record};
use tidal_core::time::Time;

use super::clock::CommitClock;
use super::dedup::Dedup;
use super::error::WalError;
use super::handle::WalHandle;
use super::reader::WalReader;
use super::segment::sync_dir;
use super::{WalOptions, writer};
use crate::feed::Feed;

/// What recovery found.
pub(crate) struct Recovered {
    pub next_lsn: u64,
    /// Signals in the log.
    pub signals: u64,
    pub last_time: Option<Time>,
    pub dedup: Dedup,
    /// The last segment, to append to.
    pub active: Option<PathBuf>,
}

/// Entry point for writing a WAL.
pub struct Wal;

impl Wal {
    /// Opens (creating if needed) the WAL in `opts.dir`: passes every committed batch in the
    /// log to `on_recovered` in order, truncates a torn tail (with a warning), and starts the
    /// writer thread, which pushes each new batch into `feed`.
    ///
    /// Fails with [`WalError::Corrupt`] (naming file and offset) on damage other than a
    /// torn tail.
    pub fn open(
        opts: WalOptions,
        feed: Arc<Feed>,
        mut on_recovered: impl FnMut(CommittedBatch),
    ) -> Result<WalHandle, WalError> {
        opts.validate()?;
        let rec = recover(&opts, &mut on_recovered)?;
        let mut clock = CommitClock::restore(opts.clock, rec.last_time);
        if let Some(r) = &opts.resume {
            clock.raise_floor(r.frontier);
        }
        writer::spawn(opts, feed, rec, clock)
    }
}

fn recover(opts: &WalOptions, on_recovered: &mut dyn FnMut(CommittedBatch)) -> Result<Recovered, WalError> {
    std::fs::create_dir_all(&opts.dir).map_err(|e| WalError::io(&opts.dir, e))?;
    let mut reader = WalReader::open(&opts.dir, true)?;
    let mut dedup = Dedup::new(opts.dedup_window_ms, opts.dedup_max_entries);
    let mut last_time = None;
    let mut signals = 0u64;
    let mut covered = 0u64;
    if let Some(r) = &opts.resume {
        reader.skip_through(r.lsn);
        covered = r.lsn;
        signals = r.signals;
        if let Some(bytes) = &r.dedup
            && let Err(e) = dedup.load(bytes)
        {
            tracing::warn!(error = %e, "the checkpoint's dedup window does not decode; starting it empty");
            dedup = Dedup::new(opts.dedup_window_ms, opts.dedup_max_entries);
        }
    }
    while let Some(batch) = reader.next_batch()? {
        last_time = Some(batch.time);
        if batch.last_lsn() <= covered {
            // In the checkpoint already (its dedup keys too).
            continue;
        }
        signals += batch
            .records
            .iter()
            .map(|r| r.record.signal_count() as u64)
            .sum::<u64>();
        if dedup.enabled() {
            let sigs = batch.records.iter().flat_map(|r| match &r.record {
                Record::Signals(s) => s.as_slice(),
                _ => &[],
            });
            dedup.remember_logged(sigs, batch.clock_ms);
        }
        on_recovered(batch);
    }
    if let Some(r) = &opts.resume
        && reader.next_lsn() <= r.lsn
    {
        return Err(WalError::BehindCheckpoint {
            dir: opts.dir.clone(),
            last: reader.next_lsn() - 1,
            checkpoint: r.lsn,
        });
    }
    // Space the writer had allocated past its records (a stop without sealing): trimmed, so
    // the writer appends at the records' end.
    for (file, offset) in reader.zero_tails() {
        trim(file, *offset)?;
    }
    if let Some((file, offset)) = reader.torn_tail() {
        truncate_torn_tail(&file, offset)?;
        sync_dir(&opts.dir)?;
    }
    Ok(Recovered {
        next_lsn: reader.next_lsn(),
        signals,
        last_time,
        dedup,
        active: reader.segments().last().map(|s| s.path.clone()),
    })
}

fn truncate_torn_tail(file: &std::path::Path, offset: u64) -> Result<(), WalError> {
    let len = std::fs::metadata(file).map_err(|e| WalError::io(file, e))?.len();
    tracing::warn!(
        file = %file.display(),
        offset,
        dropped_bytes = len.saturating_sub(offset),
        "WAL tail torn (a record cut short, most likely by a crash): truncating to the last whole record"
    );
    trim(file, offset)
}

/// Cuts `file` to `len` bytes (a torn tail, or the zeros past its records), synced.
fn trim(file: &std::path::Path, len: u64) -> Result<(), WalError> {
    let f = OpenOptions::new()
        .write(true)
        .open(file)
        .map_err(|e| WalError::io(file, e))?;
    f.set_len(len).map_err(|e| WalError::io(file, e))?;
    f.sync_all().map_err(|e| WalError::io(file, e))
}
