//! The configuration record a start writes to the WAL, and `<data-dir>/last-config.json`:
//! the configuration the WAL recorded last, with its LSN. A start restored from a checkpoint
//! past that record reads it there instead of in the log, and records its own configuration
//! again only if it differs.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tidal_core::Config;
use tidal_core::record::Record;
use tidal_core::time::ClockMode;

use super::{Result, Tidal};

#[derive(Serialize, Deserialize)]
struct LastConfig {
    lsn: u64,
    toml: String,
}

fn path(data_dir: &Path) -> PathBuf {
    data_dir.join("last-config.json")
}

/// The configuration recorded at an LSN the log still holds (`<= last_lsn`); `None` when the
/// file is missing, damaged or ahead of the log (a log cut short since).
pub(super) fn read(data_dir: &Path, last_lsn: u64) -> Option<String> {
    let text = std::fs::read_to_string(path(data_dir)).ok()?;
    let c: LastConfig = serde_json::from_str(&text).ok()?;
    (c.lsn <= last_lsn).then_some(c.toml)
}

/// Records that the WAL's record `lsn` holds `toml` (written whole, then renamed into place).
pub(super) fn write(data_dir: &Path, lsn: u64, toml: &str) -> std::io::Result<()> {
    let body = serde_json::to_vec(&LastConfig {
        lsn,
        toml: toml.to_string(),
    })
    .map_err(std::io::Error::other)?;
    let tmp = data_dir.join("last-config.json.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&body)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path(data_dir))
}

/// Records the configuration in force at the end of a start (`recovered`: the last config
/// record among those recovered after the checkpoint, with its LSN); `wait`: served only once
/// the state holds what this writes.
pub(super) fn record(tidal: &Tidal, data_dir: &Path, recovered: Option<(u64, String)>, wait: bool) -> Result<()> {
    // The WAL records the configuration in force, so replay can use it as its baseline:
    // the last one in the records recovered after the checkpoint, else (one process
    // alone) the one `last-config.json` names; written again if neither is known.
    // Where the data directory is, how many workers run it and where it listens change
    // no answer: the same directory spelled another way, opened by `tidal checkpoint`
    // with another worker count, or served on another port, records nothing new.
    let toml = tidal.config.to_toml();
    let last_config = recovered.as_ref().map(|(_, t)| t.clone()).or_else(|| {
        // A process of a cluster writes it at every start, as before (its restarts,
        // which agree on a checkpoint with the others, are tested that way).
        tidal
            .config
            .cluster
            .is_single()
            .then(|| read(data_dir, tidal.wal.last_lsn()))
            .flatten()
    });
    let same = last_config.as_deref().is_some_and(|last| {
        last == toml
            || Config::parse(last).is_ok_and(|mut c| {
                c.engine.data_dir.clone_from(&tidal.config.engine.data_dir);
                c.engine.workers = tidal.config.engine.workers;
                c.server.listen.clone_from(&tidal.config.server.listen);
                c.to_toml() == toml
            })
    });
    let noted = if same {
        // Served once the state is at the clock of now (the idle writer's next tick), as
        // after a record: not at the clock the checkpoint was taken, behind what readers
        // saw before the restart.
        if wait && tidal.config.engine.clock == ClockMode::Wall {
            let now = tidal_core::time::wall_clock_ms();
            let deadline = Instant::now() + Duration::from_secs(2);
            while tidal.view().clock_ms() < now && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        recovered
    } else {
        if let Some(before) = last_config.as_deref().and_then(|t| Config::parse(t).ok())
            && before.engine.clock != tidal.config.engine.clock
        {
            // Legitimate (a log loaded on the event clock, then served live), but it moves
            // the clock, and a forgotten `--clock event` does the same.
            tracing::warn!(
                before = before.engine.clock.name(),
                now = tidal.config.engine.clock.name(),
                "the clock mode of this data directory changes: the log records it, and the clock moves on from here"
            );
        }
        let commit = tidal.wal.submit_blocking(vec![Record::Config { toml: toml.clone() }])?;
        // Served once the state holds it too, as every record before: a first read then
        // sees the LSN the next one will (the sink's thread publishes it a moment later).
        if wait {
            tidal.wait_visible(commit.last_lsn)?;
        }
        Some((commit.last_lsn, toml))
    };
    if let Some((lsn, toml)) = noted
        && let Err(e) = write(data_dir, lsn, &toml)
    {
        // Only a later start is affected: it records its configuration again.
        tracing::warn!(error = %e, "cannot note the configuration the WAL recorded last");
    }
    Ok(())
}
