//! `<data-dir>/last-config.json`: the configuration the WAL recorded last, with its LSN. A
//! start restored from a checkpoint past that record reads it here instead of in the log,
//! and records its own configuration again only if it differs.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

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
