//! Reading a checkpoint back: its manifest, then every part against its size and BLAKE3,
//! refusing one written for another format, schema or layout of workers.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use tidal_core::time::Time;

use super::{FORMAT, FileEntry, Layout, Manifest, complete};

/// A checkpoint read back, its parts checked.
#[derive(Debug)]
pub struct Loaded {
    /// Its manifest.
    pub manifest: Manifest,
    /// The parts by name.
    pub parts: HashMap<String, Vec<u8>>,
}

impl Loaded {
    /// The part called `name`, if the checkpoint has it.
    pub fn part(&self, name: &str) -> Option<&[u8]> {
        self.parts.get(name).map(Vec::as_slice)
    }
}

/// Why a checkpoint was not loaded.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// A file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The manifest does not parse.
    #[error("{}: bad manifest: {message}", path.display())]
    Manifest {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// A part is damaged or missing.
    #[error("{}: part {name} {problem}", dir.display())]
    Part {
        /// The checkpoint.
        dir: PathBuf,
        /// The part.
        name: String,
        /// What is wrong.
        problem: String,
    },
    /// Written for another schema, partitioning or format.
    #[error("{}: written for {what}; this process has another", dir.display())]
    Mismatch {
        /// The checkpoint.
        dir: PathBuf,
        /// What differs.
        what: &'static str,
    },
}

fn load(dir: &Path, layout: &Layout) -> Result<Loaded, CheckpointError> {
    read(dir, layout, true)
}

/// The manifest of the checkpoint in `dir`, parts unread.
fn manifest_of(dir: &Path) -> Result<Manifest, CheckpointError> {
    let path = dir.join("MANIFEST");
    let text = std::fs::read(&path).map_err(|source| CheckpointError::Io {
        path: path.clone(),
        source,
    })?;
    serde_json::from_slice(&text).map_err(|e| CheckpointError::Manifest {
        path: path.clone(),
        message: e.to_string(),
    })
}

/// A part read back and checked (its bytes, empty unless kept), or what is wrong with it.
type Checked = Result<Vec<u8>, CheckpointError>;

/// Reads the checkpoint in `dir`, every part checked against the manifest; the parts' bytes
/// are kept only with `keep` (one part at a time is held to check it).
fn read(dir: &Path, layout: &Layout, keep: bool) -> Result<Loaded, CheckpointError> {
    let manifest = manifest_of(dir)?;
    let mismatch = |what| {
        Err(CheckpointError::Mismatch {
            dir: dir.to_path_buf(),
            what,
        })
    };
    if manifest.format != FORMAT {
        return mismatch("another checkpoint format");
    }
    if manifest.layout.schema != layout.schema {
        return mismatch("another schema");
    }
    if manifest.layout != *layout {
        return mismatch("another number or layout of workers");
    }
    // Each part read back and checked against its size and checksum; two at a time, largest
    // first (nothing else runs yet: a start read ~900 MB of parts at ~360 MB/s on one core).
    let check = |f: &FileEntry| -> Checked {
        let p = dir.join(&f.name);
        let bytes = std::fs::read(&p).map_err(|source| CheckpointError::Io {
            path: p.clone(),
            source,
        })?;
        let problem = |problem: String| CheckpointError::Part {
            dir: dir.to_path_buf(),
            name: f.name.clone(),
            problem,
        };
        if bytes.len() as u64 != f.bytes {
            return Err(problem(format!(
                "is {} bytes, the manifest says {}",
                bytes.len(),
                f.bytes
            )));
        }
        if blake3::hash(&bytes).to_hex().as_str() != f.blake3 {
            return Err(problem("fails its checksum".into()));
        }
        Ok(if keep { bytes } else { Vec::new() })
    };
    let files = &manifest.files;
    let mut order: Vec<usize> = (0..files.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(files[i].bytes));
    let next = AtomicUsize::new(0);
    let reader = || {
        let mut out = Vec::new();
        while let Some(&i) = order.get(next.fetch_add(1, Ordering::Relaxed)) {
            out.push((i, check(&files[i])));
        }
        out
    };
    let mut checked = std::thread::scope(|s| {
        // Without a second thread this one reads them all.
        let other = std::thread::Builder::new()
            .name("tidal-ckpt-read".into())
            .spawn_scoped(s, reader);
        let mut mine = reader();
        if let Ok(other) = other {
            mine.extend(other.join().unwrap_or_default());
        }
        mine
    });
    // The first problem in the manifest's order is the one reported.
    checked.sort_unstable_by_key(|c| c.0);
    let mut checked = checked.into_iter().peekable();
    let mut parts = HashMap::new();
    for (i, f) in files.iter().enumerate() {
        let bytes = match checked.next_if(|c| c.0 == i) {
            Some((_, Err(e))) if f.rebuildable => {
                tracing::warn!(error = %e, "a checkpoint part a restart can rebuild is left out");
                continue;
            }
            Some((_, r)) => r?,
            None => {
                return Err(CheckpointError::Part {
                    dir: dir.to_path_buf(),
                    name: f.name.clone(),
                    problem: "was not read".into(),
                });
            }
        };
        if keep {
            parts.insert(f.name.clone(), bytes);
        }
    }
    Ok(Loaded { manifest, parts })
}

/// The frontiers of the checkpoints in `dir` that are whole (every part read back against its
/// checksum, none kept in memory) and match `layout`, newest first; the others are left out
/// with a warning naming what is wrong. What a cluster's process offers to restore.
pub fn verified(dir: &Path, layout: &Layout) -> Vec<Time> {
    complete(dir)
        .into_iter()
        .filter_map(|candidate| match read(&candidate, layout, false) {
            Ok(loaded) => Some(loaded.manifest.frontier),
            Err(e) => {
                tracing::warn!(error = %e, "skipping a checkpoint");
                None
            }
        })
        .collect()
}

/// The checkpoint in `dir` at `frontier`, loaded and checked.
pub fn load_at(dir: &Path, layout: &Layout, frontier: Time) -> Result<Loaded, CheckpointError> {
    let mut last = None;
    for candidate in complete(dir) {
        if manifest_of(&candidate).is_ok_and(|m| m.frontier != frontier) {
            continue;
        }
        match load(&candidate, layout) {
            Ok(loaded) if loaded.manifest.frontier == frontier => return Ok(loaded),
            Ok(_) => {}
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or(CheckpointError::Mismatch {
        dir: dir.to_path_buf(),
        what: "no checkpoint at the frontier the cluster agreed on",
    }))
}

/// The newest checkpoint in `dir` that is whole and matches `layout`; the others are skipped
/// with a warning naming what is wrong.
pub fn load_latest(dir: &Path, layout: &Layout) -> Option<Loaded> {
    for candidate in complete(dir) {
        match load(&candidate, layout) {
            Ok(loaded) => return Some(loaded),
            Err(e) => tracing::warn!(error = %e, "skipping a checkpoint"),
        }
    }
    None
}
