//! The parts of a checkpoint made outside the dataflow (the WAL's dedup window, the serving
//! indexes): written by fill closures, or, for a copy of an index a restart brings up to date
//! anyway, kept from the checkpoint before (a hard link, nothing written) while the index has
//! changed little since.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::sync::{Condvar, Mutex};
use std::time::Instant;

use super::stage::stage_owned;
use super::{Done, Gathering, Manifest, STAGING, name_of, place_part};

/// Extra parts of a checkpoint produced outside the dataflow (the WAL's dedup window, the
/// serving indexes), each named. Called once per checkpoint with what the newest complete
/// checkpoint this process wrote holds of each versioned part ([`Kept`]).
pub type ExtraParts = Box<dyn Fn(&Kept) -> Vec<(String, Extra)> + Send>;

/// An extra part of a checkpoint.
pub enum Extra {
    /// Written by `fill` (`scratch`: a path in the checkpoint directory it may use for a file
    /// of its own, and must remove). `changes`, for a part that copies something kept up to
    /// date elsewhere (an index a restart brings up to date with the restored state): how
    /// many changes that had taken when the copy was asked for, a count that only grows.
    Write {
        /// Writes the part's bytes.
        fill: ExtraFill,
        /// The count of changes the copy holds, if the part is versioned.
        changes: Option<u64>,
    },
    /// The copy the newest complete checkpoint holds, kept as it is: linked, not written
    /// again (what [`Kept::changes`] said it holds).
    Keep,
}

/// What the newest complete checkpoint this process wrote holds of its versioned extra parts.
#[derive(Clone, Debug, Default)]
pub struct Kept {
    changes: HashMap<String, u64>,
}

impl Kept {
    /// The count of changes the newest checkpoint's copy of `part` holds (`None`: it has no
    /// such part, or it was not written by this process).
    pub fn changes(&self, part: &str) -> Option<u64> {
        self.changes.get(part).copied()
    }
}

/// Writes an extra part's bytes: given a scratch path and the part's writer.
pub type ExtraFill = Box<dyn FnOnce(&Path, &mut dyn Write) -> std::io::Result<()> + Send>;

/// Writes the extra parts of the checkpoint being gathered, or keeps those of the newest
/// complete one (`done`) its producer (`extra`) says may be kept.
pub(super) fn add_extras(
    g: &mut Gathering,
    dir: &Path,
    extra: &Mutex<Option<ExtraParts>>,
    done: &(Mutex<Done>, Condvar),
) {
    let lsn = g.position.lsn;
    let (prior, kept) = {
        let done = done.0.lock().unwrap_or_else(|p| p.into_inner());
        (done.latest.clone(), done.kept.clone())
    };
    let extras = extra
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
        .map(|f| f(&kept));
    for (name, part) in extras.unwrap_or_default() {
        let began = Instant::now();
        match part {
            Extra::Write { fill, changes } => {
                let scratch = dir.join(format!("{STAGING}{lsn}-scratch-{name}"));
                let staged = stage_owned(&dir.join(format!("{STAGING}{lsn}-extra-{name}")), |w| fill(&scratch, w));
                if let Some(c) = changes.filter(|_| staged.is_some()) {
                    g.kept.changes.insert(name.clone(), c);
                }
                place_part(g, name.clone(), staged, changes.is_some());
            }
            Extra::Keep => keep_part(g, dir, prior.as_ref(), &kept, &name),
        }
        tracing::debug!(part = %name, ms = began.elapsed().as_secs_f64() * 1e3, "checkpoint part staged");
    }
}

/// Puts the newest complete checkpoint's (`prior`'s) copy of the part `name` into the
/// checkpoint being gathered: a hard link to its file (a copy where the file system has none),
/// with its size and checksum; its count of changes goes on to this checkpoint.
fn keep_part(g: &mut Gathering, dir: &Path, prior: Option<&Manifest>, kept: &Kept, name: &str) {
    if g.failed {
        return;
    }
    let found = prior.and_then(|m| {
        let entry = m.files.iter().find(|f| f.name == name)?;
        Some((dir.join(name_of(m.position.lsn, m.frontier)).join(name), entry.clone()))
    });
    let (Some((from, entry)), Some(changes)) = (found, kept.changes(name)) else {
        tracing::warn!(part = name, "the checkpoint before has no copy of a part to keep");
        g.failed = true;
        return;
    };
    let to = g.dir.join(name);
    let placed = std::fs::hard_link(&from, &to).or_else(|_| {
        std::fs::copy(&from, &to)?;
        std::fs::File::open(&to)?.sync_all()
    });
    match placed {
        Ok(()) => {
            g.kept.changes.insert(name.to_string(), changes);
            g.files.push(entry);
        }
        Err(e) => {
            tracing::warn!(file = %from.display(), error = %e, "cannot keep a checkpoint part");
            g.failed = true;
        }
    }
}
