//! Staging a checkpoint part: its bytes go into a staging file, counted and hashed. A
//! worker's part is handed over a chunk at a time to a thread of its own that writes and
//! hashes it, so the worker stands still only while it encodes, not while the kernel copies
//! the bytes into the page cache.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, sync_channel};
use std::time::Instant;

use tidal_core::flow::PartFill;

/// A part in its staging file: where, how long, its BLAKE3.
pub(super) struct Staged {
    pub(super) path: PathBuf,
    pub(super) bytes: u64,
    pub(super) blake3: String,
}

/// Bytes a staging file takes before their writeback is started: a part reaches the disk a
/// few megabytes at a time, not hundreds at once when the checkpoint is gathered (every WAL
/// sync meanwhile waited behind that writeback). Started, not waited for: the worker's
/// hand-over is not slowed to the disk's pace.
const PACE: u64 = 8 << 20;

/// A staging file whose writeback starts every [`PACE`] bytes (where the platform can).
struct Paced {
    file: std::fs::File,
    written: u64,
    unsent: u64,
}

impl Paced {
    fn new(file: std::fs::File) -> Paced {
        Paced {
            file,
            written: 0,
            unsent: 0,
        }
    }

    /// Starts writing back the last `unsent` bytes (`POSIX_FADV_DONTNEED` starts the
    /// writeback of dirty pages without waiting for it).
    #[cfg(target_os = "linux")]
    fn send(&mut self) {
        let len = std::num::NonZeroU64::new(self.unsent);
        let _ = rustix::fs::fadvise(
            &self.file,
            self.written - self.unsent,
            len,
            rustix::fs::Advice::DontNeed,
        );
        self.unsent = 0;
    }

    #[cfg(not(target_os = "linux"))]
    fn send(&mut self) {
        self.unsent = 0;
    }
}

impl Write for Paced {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let room = usize::try_from(PACE - self.unsent).unwrap_or(usize::MAX);
        let n = self.file.write(&buf[..buf.len().min(room)])?;
        self.written += n as u64;
        self.unsent += n as u64;
        if self.unsent >= PACE {
            self.send();
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// A writer that hashes and counts what goes through it.
struct Hashing<W> {
    inner: W,
    hasher: blake3::Hasher,
    bytes: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Streams a part into the staging file `path` through `fill` on this thread, counting and
/// hashing it; `None` (with a warning, the file removed) when it cannot be written.
pub(super) fn stage(path: &Path, fill: PartFill<'_>) -> Option<Staged> {
    let staged = std::fs::File::create(path).and_then(|f| {
        let mut w = Hashing {
            inner: std::io::BufWriter::with_capacity(CHUNK, Paced::new(f)),
            hasher: blake3::Hasher::new(),
            bytes: 0,
        };
        fill(&mut w)?;
        w.flush()?;
        Ok(staged_at(path, &w))
    });
    settle(path, staged)
}

/// [`stage`] for a fill that runs once and owns what it writes (a part made from a snapshot,
/// an extra part).
pub(super) fn stage_owned(path: &Path, fill: impl FnOnce(&mut dyn Write) -> std::io::Result<()>) -> Option<Staged> {
    let mut fill = Some(fill);
    stage(path, &mut |w| fill.take().map_or(Ok(()), |f| f(w)))
}

fn staged_at<W>(path: &Path, w: &Hashing<W>) -> Staged {
    Staged {
        path: path.to_path_buf(),
        bytes: w.bytes,
        blake3: w.hasher.finalize().to_hex().to_string(),
    }
}

fn settle(path: &Path, staged: std::io::Result<Staged>) -> Option<Staged> {
    match staged {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "cannot write a checkpoint part");
            let _ = std::fs::remove_file(path);
            None
        }
    }
}

/// Bytes handed over at a time.
const CHUNK: usize = 1 << 20;
/// Chunks on their way to the disk at most: how far the encoding may run ahead of it.
const IN_FLIGHT: usize = 32;

/// Streams a part into the staging file `path`: `fill` encodes it on this thread, a thread
/// of its own writes and hashes it, then hands the result to `done` (`None` when the file
/// cannot be written or `fill` fails). Returns once `fill` has run; the file may still be
/// being written.
pub(super) fn stage_behind(
    path: PathBuf,
    fill: PartFill<'_>,
    done: impl FnOnce(Option<Staged>) + Clone + Send + 'static,
) {
    let (tx, rx) = sync_channel::<Vec<u8>>(IN_FLIGHT);
    let (spare_tx, spare_rx) = sync_channel::<Vec<u8>>(IN_FLIGHT);
    let failed = Arc::new(AtomicBool::new(false));
    let writing = {
        let (path, failed, done) = (path.clone(), failed.clone(), done.clone());
        std::thread::Builder::new()
            .name("tidal-checkpoint-part".into())
            .spawn(move || {
                super::lower_priority();
                let began = Instant::now();
                let staged = write_chunks(&path, rx, spare_tx, &failed);
                tracing::debug!(
                    file = %path.display(),
                    ms = began.elapsed().as_secs_f64() * 1e3,
                    "checkpoint part staged"
                );
                done(settle(&path, staged));
            })
    };
    if let Err(e) = writing {
        // No thread for it: the part is written here.
        tracing::warn!(error = %e, "cannot start a checkpoint part's writer; writing it in place");
        done(stage(&path, fill));
        return;
    }
    let mut w = Handoff {
        buf: Vec::with_capacity(CHUNK),
        tx,
        spare: spare_rx,
    };
    if fill(&mut w).and_then(|()| w.hand_over()).is_err() {
        failed.store(true, Ordering::Release);
    }
    // Dropping the sender (with `w`) ends the part.
}

/// The staging thread: writes and hashes each chunk, gives the buffer back for reuse.
fn write_chunks(
    path: &Path,
    rx: Receiver<Vec<u8>>,
    spare: SyncSender<Vec<u8>>,
    failed: &AtomicBool,
) -> std::io::Result<Staged> {
    let f = std::fs::File::create(path)?;
    let mut w = Hashing {
        inner: Paced::new(f),
        hasher: blake3::Hasher::new(),
        bytes: 0,
    };
    for mut chunk in rx {
        w.write_all(&chunk)?;
        chunk.clear();
        let _ = spare.try_send(chunk);
    }
    if failed.load(Ordering::Acquire) {
        return Err(std::io::Error::other("the part's encoding failed"));
    }
    w.flush()?;
    Ok(staged_at(path, &w))
}

/// The worker's end: gathers what it writes into chunks and sends each full one.
struct Handoff {
    buf: Vec<u8>,
    tx: SyncSender<Vec<u8>>,
    spare: Receiver<Vec<u8>>,
}

impl Handoff {
    /// Sends what is gathered (blocking while [`IN_FLIGHT`] chunks wait for the disk).
    fn hand_over(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let next = match self.spare.try_recv() {
            Ok(b) => b,
            Err(TryRecvError::Empty | TryRecvError::Disconnected) => Vec::with_capacity(CHUNK),
        };
        let full = std::mem::replace(&mut self.buf, next);
        self.tx
            .send(full)
            .map_err(|_| std::io::Error::other("the part's staging file cannot be written"))
    }
}

impl Write for Handoff {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.hand_over()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::channel;
    use std::time::Duration;

    /// Stages `parts` chunks of `size` bytes through a worker-side fill; returns what the
    /// staging thread reported.
    fn staged(path: PathBuf, parts: usize, size: usize) -> Option<Staged> {
        let (tx, rx) = channel();
        let mut fill = |w: &mut dyn Write| -> std::io::Result<()> {
            for i in 0..parts {
                w.write_all(&vec![i as u8; size])?;
            }
            Ok(())
        };
        stage_behind(path, &mut fill, move |s| {
            let _ = tx.send(s);
        });
        rx.recv_timeout(Duration::from_secs(30))
            .expect("the staging thread reports")
    }

    #[test]
    fn a_part_streamed_behind_is_the_bytes_written_with_their_hash() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("part");
        // More than the chunks in flight, each chunk bigger than one write.
        let s = staged(path.clone(), 100, 700_000).expect("staged");
        let bytes = std::fs::read(&path).expect("read back");
        let want: Vec<u8> = (0..100u8).flat_map(|i| vec![i; 700_000]).collect();
        assert_eq!(bytes, want);
        assert_eq!(s.bytes, want.len() as u64);
        assert_eq!(s.blake3, blake3::hash(&want).to_hex().to_string());
    }

    #[test]
    fn a_part_that_cannot_be_written_is_reported_as_failed_without_blocking_the_worker() {
        let dir = tempfile::tempdir().expect("tempdir");
        // A directory that does not exist: the staging thread cannot create the file, and
        // the worker's writes fail instead of waiting on a full channel.
        let s = staged(dir.path().join("missing").join("part"), 100, 700_000);
        assert!(s.is_none());
    }

    #[test]
    fn a_fill_that_fails_fails_the_part() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("part");
        let (tx, rx) = channel();
        let mut fill = |w: &mut dyn Write| -> std::io::Result<()> {
            w.write_all(b"half")?;
            Err(std::io::Error::other("the encoding failed"))
        };
        stage_behind(path.clone(), &mut fill, move |s| {
            let _ = tx.send(s);
        });
        let s = rx.recv_timeout(Duration::from_secs(30)).expect("reported");
        assert!(s.is_none());
        assert!(!path.exists(), "the staging file is removed");
    }

    #[test]
    fn a_part_written_later_is_its_bytes_with_their_hash_and_a_failed_one_is_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        // The fill owns its snapshot.
        let snapshot: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let want = snapshot.clone();
        let path = dir.path().join("part");
        let s = stage_owned(&path, move |w| w.write_all(&snapshot)).expect("staged");
        assert_eq!(std::fs::read(&path).expect("read back"), want);
        assert_eq!(s.bytes, want.len() as u64);
        assert_eq!(s.blake3, blake3::hash(&want).to_hex().to_string());

        let failed = dir.path().join("failed");
        let s = stage_owned(&failed, |w| {
            w.write_all(b"half")?;
            Err(std::io::Error::other("the encoding failed"))
        });
        assert!(s.is_none());
        assert!(!failed.exists(), "the staging file is removed");
    }
}
