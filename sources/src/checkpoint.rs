//! Checkpoints: a consistent copy of every materializer's state at one frontier, with the log
//! position it covers, so that a restart loads it and replays only the WAL after it.
//!
//! Every worker's stateful operators serialize their own state when the checkpoint's frontier
//! reaches them and hand the bytes to this process's [`Checkpointer`], a background thread
//! that writes the parts into `<data-dir>/checkpoints/<name>.tmp/`, syncs them, writes the
//! `MANIFEST` (frontier, position, schema hash, layout, each part's size and BLAKE3) last,
//! and renames the directory into place: a checkpoint is either complete or ignored. The two
//! newest complete checkpoints are kept (three in a cluster). [`load_latest`] takes the newest one whose manifest
//! and parts check out and whose schema and layout match; a damaged one is skipped with a
//! warning (the one before, or the whole WAL, is used instead).

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

mod extra;
mod read;
mod stage;
use extra::add_extras;
pub use extra::{Extra, ExtraFill, ExtraParts, Kept};
pub use read::{CheckpointError, Loaded, load_at, load_latest, verified};
use stage::{Staged, stage_behind, stage_owned};

use tidal_core::flow::{Fill, LaterFill, encode_rank};
use tidal_core::record::Position;
use tidal_core::time::Time;

/// The format of the files this build writes.
pub const FORMAT: u32 = 6;
/// Complete checkpoints kept by a process alone.
const KEEP: usize = 2;

/// Complete checkpoints kept: in a cluster one more than alone. A process may finish a
/// checkpoint another never finishes (it stopped first), and that other one may have lost
/// its newest (damaged, skipped at start): the newest checkpoint all processes still hold is
/// then this process's third, and without it the cluster restarts from the whole log.
fn keep(layout: &Layout) -> usize {
    if layout.peers > layout.workers { KEEP + 1 } else { KEEP }
}

/// Puts the calling thread, one that encodes or writes a checkpoint, at the serving sink's
/// priority ([`tidal_core::priority`]).
fn lower_priority() {
    if let Err(e) = tidal_core::priority::run_in_background() {
        tracing::debug!(error = %e, "a checkpoint thread keeps its priority");
    }
}

/// What a checkpoint must match to be loaded: the schema (its hash) and the partitioning.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layout {
    /// BLAKE3 of the schema the state was computed for.
    pub schema: String,
    /// Workers in the cluster (the ownership modulus).
    pub peers: usize,
    /// The global index of this process's first worker.
    pub first: usize,
    /// Workers in this process.
    pub workers: usize,
}

/// One part of a checkpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// File name in the checkpoint's directory.
    pub name: String,
    /// Its size.
    pub bytes: u64,
    /// Its BLAKE3, hex.
    pub blake3: String,
    /// A copy of something a restart can rebuild (a serving index): when damaged, it is left
    /// out with a warning and the rest of the checkpoint is used. Such a part may be shared
    /// (hard-linked) with the checkpoint before.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rebuildable: bool,
}

/// A checkpoint's manifest, written last.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The file format.
    pub format: u32,
    /// The frontier: the state of every time before it.
    pub frontier: Time,
    /// The log position covered: every record up to `position.lsn`.
    pub position: Position,
    /// What the state was computed for.
    pub layout: Layout,
    /// The parts.
    pub files: Vec<FileEntry>,
    /// Wall clock when written, ms.
    pub created_ms: u64,
}

/// A fingerprint of the parts of a configuration the materialized state depends on (the
/// schema: signal types, windows, half-lives, cohorts...), not of engine or server settings.
pub fn schema_fingerprint(config: &tidal_core::Config) -> String {
    let mut c = config.clone();
    c.engine = Default::default();
    c.server = Default::default();
    blake3::hash(c.to_toml().as_bytes()).to_hex().to_string()
}

/// `<data-dir>/checkpoints`.
pub fn dir_of(data_dir: &Path) -> PathBuf {
    data_dir.join("checkpoints")
}

/// The directory name of the checkpoint at `frontier` covering `lsn` (in a cluster two
/// checkpoints may cover the same LSN of this process's WAL, never the same frontier).
fn name_of(lsn: u64, frontier: Time) -> String {
    format!("ckpt-{lsn:020}-{frontier:020}")
}

enum Msg {
    /// A worker's part, to be moved into its checkpoint.
    Part {
        frontier: Time,
        /// `None`: the part could not name its log position (it fails its checkpoint).
        position: Option<Position>,
        name: String,
        bytes: Bytes,
    },
}

impl Msg {
    /// Whether the checkpoint this part belongs to is being gathered and lacks it.
    fn lacked_by(&self, gathering: &HashMap<Time, Gathering>) -> bool {
        let Msg::Part { frontier, name, .. } = self;
        gathering.get(frontier).is_some_and(|g| !g.parts.contains(name))
    }

    /// Where the part comes among those waiting: the oldest checkpoint's first, parts staged
    /// already before those to encode, then by [`encode_rank`].
    fn order(&self) -> (Time, bool, usize) {
        let Msg::Part {
            frontier, name, bytes, ..
        } = self;
        (*frontier, matches!(bytes, Bytes::Later(..)), encode_rank(name))
    }
}

/// A part's bytes as the writer thread receives them.
enum Bytes {
    /// In a staging file already, or `None` when it could not be written (the checkpoint
    /// fails).
    Staged(Option<Staged>),
    /// To be written into this staging file on the writer thread, from what the worker kept
    /// of its state (as the extra parts are).
    Later(PathBuf, LaterFill),
}

/// Prefix of the staging files parts are streamed into before they join their checkpoint.
const STAGING: &str = "staging-";

/// A checkpoint being gathered.
struct Gathering {
    frontier: Time,
    position: Position,
    dir: PathBuf,
    files: Vec<FileEntry>,
    /// Its versioned extra parts.
    kept: Kept,
    failed: bool,
    /// The names of the workers' parts handed over so far, placed or failed.
    parts: std::collections::HashSet<String>,
}

#[derive(Default)]
struct Done {
    latest: Option<Manifest>,
    /// The versioned extra parts `latest` holds, when this process wrote it.
    kept: Kept,
}

/// This process's checkpoint writer: a background thread.
pub struct Checkpointer {
    dir: PathBuf,
    staged: std::sync::atomic::AtomicU64,
    tx: Mutex<Option<std::sync::mpsc::Sender<Msg>>>,
    done: Arc<(Mutex<Done>, Condvar)>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    extra: Arc<Mutex<Option<ExtraParts>>>,
    finished: Arc<std::sync::atomic::AtomicU64>,
}

impl std::fmt::Debug for Checkpointer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpointer").finish_non_exhaustive()
    }
}

impl Checkpointer {
    /// Starts the writer for checkpoints in `dir`, each of `parts` parts from the dataflow
    /// (plus the extras), for `layout`. `latest` is the checkpoint loaded at start, if any.
    pub fn start(
        dir: PathBuf,
        layout: Layout,
        parts: usize,
        latest: Option<Manifest>,
    ) -> std::io::Result<Checkpointer> {
        std::fs::create_dir_all(&dir)?;
        // Parts staged, and checkpoints begun, by a process that stopped before they were
        // complete.
        for entry in std::fs::read_dir(&dir)?.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if name.starts_with(STAGING) {
                let _ = std::fs::remove_file(entry.path());
            } else if name.ends_with(".tmp") {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        let (tx, rx) = std::sync::mpsc::channel::<Msg>();
        let done = Arc::new((
            Mutex::new(Done {
                latest,
                kept: Kept::default(),
            }),
            Condvar::new(),
        ));
        let extra: Arc<Mutex<Option<ExtraParts>>> = Arc::new(Mutex::new(None));
        let finished = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (d, e, f) = (done.clone(), extra.clone(), finished.clone());
        let writer_dir = dir.clone();
        let thread = std::thread::Builder::new()
            .name("tidal-checkpoint".into())
            .spawn(move || {
                lower_priority();
                writer(rx, writer_dir, layout, parts, d, e, f)
            })?;
        Ok(Checkpointer {
            dir,
            staged: std::sync::atomic::AtomicU64::new(0),
            tx: Mutex::new(Some(tx)),
            done,
            thread: Mutex::new(Some(thread)),
            extra,
            finished,
        })
    }

    /// The newest frontier whose checkpoint this writer has finished with (written, or given
    /// up on because a part could not be written).
    pub fn finished(&self) -> Arc<std::sync::atomic::AtomicU64> {
        self.finished.clone()
    }

    /// Sets the producer of the extra parts (called once per checkpoint, on the writer thread).
    pub fn set_extra(&self, extra: ExtraParts) {
        *self.extra.lock().unwrap_or_else(|p| p.into_inner()) = Some(extra);
    }

    /// Writes one part of the checkpoint at `frontier` covering `position` into a staging
    /// file, which the writer thread then syncs and moves into the checkpoint. A
    /// [`Fill::Now`] encodes its bytes on the caller's thread and hands them over a chunk at a
    /// time to a thread that writes them; a [`Fill::Later`] is handed to the writer thread,
    /// which runs it as it does the extra parts, and this returns at once.
    pub fn part_with(&self, frontier: Time, position: Position, name: String, fill: Fill<'_>) {
        // Unique: two checkpoints may cover the same LSN.
        let seq = self.staged.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = self.dir.join(format!("{STAGING}{}-{seq}-{name}", position.lsn));
        let Some(tx) = self.tx.lock().unwrap_or_else(|p| p.into_inner()).clone() else {
            // Shut down: no checkpoint is gathered any more.
            return;
        };
        let began = Instant::now();
        let part = name.clone();
        let send = move |bytes| {
            let _ = tx.send(Msg::Part {
                frontier,
                position: Some(position),
                name: part,
                bytes,
            });
        };
        match fill {
            Fill::Now(fill) => stage_behind(path, fill, move |staged| send(Bytes::Staged(staged))),
            Fill::Later(fill) => send(Bytes::Later(path, fill)),
        }
        // The caller (a worker, standing still while it encodes its part) took this long.
        tracing::debug!(
            part = %name,
            ms = began.elapsed().as_secs_f64() * 1e3,
            "checkpoint part written"
        );
    }

    /// Hands over worker part `name` of the checkpoint at `frontier` as failed: its log
    /// position there is unknown (`why`). The checkpoint ends unwritten once all its parts are in.
    pub fn part_unknown(&self, frontier: Time, name: String, why: &str) {
        tracing::error!(part = %name, frontier, "checkpoint part not written: {why}");
        if let Some(tx) = self.tx.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            let _ = tx.send(Msg::Part {
                frontier,
                position: None,
                name,
                bytes: Bytes::Staged(None),
            });
        }
    }

    /// Records `manifest` as the newest complete checkpoint (one loaded after the writer
    /// started: a cluster's, once its processes agreed on it).
    pub fn set_latest(&self, manifest: Manifest) {
        let (lock, cond) = &*self.done;
        let mut done = lock.lock().unwrap_or_else(|p| p.into_inner());
        done.latest = Some(manifest);
        done.kept = Kept::default();
        cond.notify_all();
    }

    /// The newest complete checkpoint (written or loaded).
    pub fn latest(&self) -> Option<Manifest> {
        self.done.0.lock().unwrap_or_else(|p| p.into_inner()).latest.clone()
    }

    /// Waits until a checkpoint covering at least `lsn` is complete, at most `timeout`.
    pub fn wait_for(&self, lsn: u64, timeout: Duration) -> Option<Manifest> {
        let deadline = Instant::now() + timeout;
        let (lock, cond) = &*self.done;
        let mut done = lock.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(m) = done.latest.as_ref().filter(|m| m.position.lsn >= lsn) {
                return Some(m.clone());
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            done = cond
                .wait_timeout(done, deadline - now)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }

    /// Stops the writer after what it was handed.
    pub fn shutdown(&self) {
        drop(self.tx.lock().unwrap_or_else(|p| p.into_inner()).take());
        if let Some(t) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = t.join();
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn writer(
    rx: std::sync::mpsc::Receiver<Msg>,
    dir: PathBuf,
    layout: Layout,
    parts: usize,
    done: Arc<(Mutex<Done>, Condvar)>,
    extra: Arc<Mutex<Option<ExtraParts>>>,
    finished: Arc<std::sync::atomic::AtomicU64>,
) {
    let mut gathering: HashMap<Time, Gathering> = HashMap::new();
    // Parts handed over and not handled yet. A worker hands over all its parts at once, and
    // they are encoded in the order of `encode_rank`, once the checkpoint's extra parts are
    // written (by then the others have come).
    let mut queue: Vec<Msg> = Vec::new();
    loop {
        queue.extend(rx.try_iter());
        let new = queue.iter().find_map(|Msg::Part { frontier, position, .. }| {
            (!gathering.contains_key(frontier)).then_some((*frontier, *position))
        });
        if let Some((frontier, position)) = new {
            let g = match position {
                Some(position) => begin(&dir, frontier, position, &extra, &done),
                // Its position unknown: nothing of it is written.
                None => Gathering::failed(frontier),
            };
            gathering.insert(frontier, g);
            continue;
        }
        // A part its checkpoint lacks (a second checkpoint asked for at the same frontier, a
        // periodic one and a shutdown's, is gathered after the first), the oldest checkpoint's
        // first, then by rank; none (or nothing queued): wait for the next part.
        let next = queue
            .iter()
            .enumerate()
            .filter(|(_, m)| m.lacked_by(&gathering))
            .min_by_key(|(_, m)| m.order())
            .map(|(i, _)| i);
        let Some(next) = next else {
            match rx.recv() {
                Ok(m) => queue.push(m),
                Err(_) => break,
            }
            continue;
        };
        let Msg::Part {
            frontier,
            position,
            name,
            bytes,
        } = queue.remove(next);
        let Some(g) = gathering.get_mut(&frontier) else {
            continue;
        };
        if position.is_some_and(|p| p != g.position) && !g.failed {
            // Every part covers the same log: a part that names another position holds
            // another state, and the checkpoint is not written.
            tracing::error!(
                part = %name,
                position = position.map(|p| p.lsn),
                checkpoint = g.position.lsn,
                "a checkpoint part names another log position than the others"
            );
            g.failed = true;
        }
        g.failed |= position.is_none();
        // A failed part counts: the checkpoint ends (not written) once all are in, and the
        // next one is asked for.
        g.parts.insert(name.clone());
        let staged = match bytes {
            // Failed already: nothing more of it is encoded.
            Bytes::Later(..) if g.failed => None,
            Bytes::Staged(staged) => staged,
            Bytes::Later(path, fill) => {
                let began = Instant::now();
                let staged = stage_owned(&path, fill);
                tracing::debug!(part = %name, ms = began.elapsed().as_secs_f64() * 1e3, "checkpoint part staged");
                staged
            }
        };
        place_part(g, name, staged, false);
        if g.parts.len() < parts {
            continue;
        }
        let Some(mut g) = gathering.remove(&frontier) else {
            continue;
        };
        let kept = std::mem::take(&mut g.kept);
        match finish(&dir, g, &layout) {
            Ok(manifest) => {
                tracing::info!(lsn = manifest.position.lsn, "checkpoint written");
                let (lock, cond) = &*done;
                let mut done = lock.lock().unwrap_or_else(|p| p.into_inner());
                done.latest = Some(manifest);
                done.kept = kept;
                drop(done);
                cond.notify_all();
                prune(&dir, keep(&layout));
            }
            Err(e) => tracing::warn!(error = %e, frontier, "checkpoint not written"),
        }
        finished.fetch_max(frontier, std::sync::atomic::Ordering::AcqRel);
    }
}

impl Gathering {
    /// A checkpoint at `frontier` covering `position`, gathered into `dir`, nothing in yet.
    fn new(frontier: Time, position: Position, dir: PathBuf, failed: bool) -> Gathering {
        Gathering {
            frontier,
            position,
            dir,
            files: Vec::new(),
            kept: Kept::default(),
            failed,
            parts: Default::default(),
        }
    }

    /// A checkpoint that fails before anything of it is written (a part's position unknown).
    fn failed(frontier: Time) -> Gathering {
        Gathering::new(frontier, Position::default(), PathBuf::new(), true)
    }
}

/// Starts gathering the checkpoint at `frontier` covering `position`: its directory, and the
/// extra parts (the WAL's dedup window, the serving indexes), written or kept.
fn begin(
    dir: &Path,
    frontier: Time,
    position: Position,
    extra: &Mutex<Option<ExtraParts>>,
    done: &(Mutex<Done>, Condvar),
) -> Gathering {
    let lsn = position.lsn;
    // One at this frontier may be there already (the state a start restored, which wrote
    // nothing since; or a damaged copy, skipped when loaded): it is written anew beside it
    // and replaced only once the new one is complete (`finish`), so that a stop in between
    // keeps it.
    let tmp = dir.join(format!("{}.tmp", name_of(lsn, frontier)));
    let _ = std::fs::remove_dir_all(&tmp);
    let failed = std::fs::create_dir_all(&tmp).is_err();
    let mut g = Gathering::new(frontier, position, tmp, failed);
    // The extra parts (the WAL's dedup window, the serving indexes) come with the first part.
    add_extras(&mut g, dir, extra, done);
    g
}

/// Moves a staged part into the checkpoint being gathered, synced (`rebuildable`: see
/// [`FileEntry::rebuildable`]).
fn place_part(g: &mut Gathering, name: String, staged: Option<Staged>, rebuildable: bool) {
    let Some(staged) = staged else {
        g.failed = true;
        return;
    };
    if g.failed {
        let _ = std::fs::remove_file(&staged.path);
        return;
    }
    let path = g.dir.join(&name);
    let placed = std::fs::File::open(&staged.path)
        .and_then(|f| f.sync_all())
        .and_then(|()| std::fs::rename(&staged.path, &path));
    match placed {
        Ok(()) => g.files.push(FileEntry {
            name,
            bytes: staged.bytes,
            blake3: staged.blake3,
            rebuildable,
        }),
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "cannot place a checkpoint part");
            let _ = std::fs::remove_file(&staged.path);
            g.failed = true;
        }
    }
}

fn finish(dir: &Path, g: Gathering, layout: &Layout) -> std::io::Result<Manifest> {
    if g.failed {
        let _ = std::fs::remove_dir_all(&g.dir);
        return Err(std::io::Error::other("a part could not be written"));
    }
    let mut files = g.files;
    files.sort_by(|a, b| a.name.cmp(&b.name));
    let manifest = Manifest {
        format: FORMAT,
        frontier: g.frontier,
        position: g.position,
        layout: layout.clone(),
        files,
        created_ms: tidal_core::time::wall_clock_ms(),
    };
    let json = serde_json::to_vec_pretty(&manifest).map_err(std::io::Error::other)?;
    let path = g.dir.join("MANIFEST");
    {
        let mut f = std::fs::File::create(&path)?;
        f.write_all(&json)?;
        f.sync_all()?;
    }
    sync_dir(&g.dir)?;
    let name = name_of(g.position.lsn, g.frontier);
    let final_dir = dir.join(&name);
    if final_dir.exists() {
        // Moved aside (a name a start clears, and no load reads) until the new one is in.
        let old = dir.join(format!("{name}.replaced.tmp"));
        let _ = std::fs::remove_dir_all(&old);
        std::fs::rename(&final_dir, &old)?;
        std::fs::rename(&g.dir, &final_dir)?;
        let _ = std::fs::remove_dir_all(&old);
    } else {
        std::fs::rename(&g.dir, &final_dir)?;
    }
    sync_dir(dir)?;
    Ok(manifest)
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Complete checkpoints in `dir`, newest first.
fn complete(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("ckpt-") && !n.ends_with(".tmp"))
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out.reverse();
    out
}

/// Removes all but the newest `keep` complete checkpoints, and unfinished ones.
fn prune(dir: &Path, keep: usize) {
    for old in complete(dir).into_iter().skip(keep) {
        let _ = std::fs::remove_dir_all(old);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fill(bytes: &'static [u8]) -> Fill<'static> {
        Fill::Later(Box::new(move |w: &mut dyn Write| w.write_all(bytes)))
    }

    fn two_workers() -> Layout {
        Layout {
            schema: "s".into(),
            peers: 2,
            first: 0,
            workers: 2,
        }
    }

    /// The position the tests' parts cover.
    const AT: Position = Position { lsn: 7, signals: 70 };

    /// A checkpoint writer for two parts (one per worker) in `dir`.
    fn writer_of(dir: &Path, layout: &Layout) -> Checkpointer {
        Checkpointer::start(dir.to_path_buf(), layout.clone(), 2, None).expect("start")
    }

    /// Two checkpoints at one frontier whose parts arrive interleaved (a second worker's part
    /// of the first after the first worker's part of the second) are gathered one after the
    /// other, each with each part once.
    #[test]
    fn two_checkpoints_at_one_frontier_are_gathered_apart() {
        let (dir, layout, at) = (tempfile::tempdir().expect("tempdir"), two_workers(), AT);
        let c = writer_of(dir.path(), &layout);
        c.part_with(5, at, "w0-sums".into(), fill(b"first w0"));
        c.part_with(5, at, "w0-sums".into(), fill(b"second w0"));
        c.part_with(5, at, "w1-sums".into(), fill(b"first w1"));
        c.part_with(5, at, "w1-sums".into(), fill(b"second w1"));
        c.shutdown();
        let loaded = load_latest(dir.path(), &layout).expect("a whole checkpoint");
        let names: Vec<&str> = loaded.manifest.files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["w0-sums", "w1-sums"]);
        assert_eq!(loaded.part("w0-sums"), Some(&b"second w0"[..]));
        assert_eq!(loaded.part("w1-sums"), Some(&b"second w1"[..]));
    }

    /// A part that cannot be written, that names another log position than the others, or
    /// whose position is unknown, ends its checkpoint unwritten (nothing of it left behind)
    /// once every part is in; the next one is written.
    #[test]
    fn a_failed_or_disagreeing_part_ends_its_checkpoint_unwritten() {
        let (dir, layout, at) = (tempfile::tempdir().expect("tempdir"), two_workers(), AT);
        let c = writer_of(dir.path(), &layout);
        let failing = || Fill::Later(Box::new(|_: &mut dyn Write| Err(std::io::Error::other("no"))));
        c.part_with(5, at, "w0-sums".into(), fill(b"a"));
        c.part_with(5, at, "w1-sums".into(), failing());
        c.part_with(6, at, "w0-sums".into(), fill(b"b"));
        c.part_with(6, Position { lsn: 8, signals: 80 }, "w1-sums".into(), fill(b"b"));
        c.part_unknown(7, "w0-sums".into(), "gone");
        c.part_with(7, at, "w1-sums".into(), fill(b"c"));
        c.part_with(8, at, "w0-sums".into(), fill(b"d0"));
        c.part_with(8, at, "w1-sums".into(), fill(b"d1"));
        let finished = c.finished();
        c.shutdown();
        assert_eq!(finished.load(std::sync::atomic::Ordering::Acquire), 8, "each one ended");
        let complete = super::complete(dir.path());
        assert_eq!(complete.len(), 1, "{complete:?}");
        let loaded = load_latest(dir.path(), &layout).expect("the fourth");
        assert_eq!(loaded.manifest.frontier, 8);
        assert_eq!(loaded.part("w1-sums"), Some(&b"d1"[..]));
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .expect("dir")
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            .filter(|n| !n.starts_with("ckpt-") || n.ends_with(".tmp"))
            .collect();
        assert!(left.is_empty(), "left behind: {left:?}");
    }

    /// A checkpoint begun at the name of a complete one (a start that restored it and wrote
    /// nothing since) replaces it only once complete: stopped half-way, the old one stays.
    #[test]
    fn a_checkpoint_at_a_complete_ones_name_replaces_it_only_when_complete() {
        let (dir, layout, at) = (tempfile::tempdir().expect("tempdir"), two_workers(), AT);
        let c = writer_of(dir.path(), &layout);
        c.part_with(5, at, "w0-sums".into(), fill(b"first w0"));
        c.part_with(5, at, "w1-sums".into(), fill(b"first w1"));
        c.shutdown();
        let c = writer_of(dir.path(), &layout);
        c.part_with(5, at, "w0-sums".into(), fill(b"second w0"));
        c.shutdown();
        let loaded = load_latest(dir.path(), &layout).expect("the first checkpoint, whole");
        assert_eq!(loaded.part("w0-sums"), Some(&b"first w0"[..]));
        assert_eq!(loaded.part("w1-sums"), Some(&b"first w1"[..]));
    }

    /// The parts handed over together are encoded the state the worker changes most first.
    #[test]
    fn parts_are_ranked_by_what_the_worker_changes_most() {
        let mut names = [
            "w0-entities",
            "w0-cohorts-pending",
            "w0-users",
            "w0-cohorts",
            "w0-windows",
        ];
        names.sort_by_key(|n| encode_rank(n));
        assert_eq!(
            names,
            [
                "w0-cohorts",
                "w0-windows",
                "w0-users",
                "w0-entities",
                "w0-cohorts-pending"
            ]
        );
    }
}
