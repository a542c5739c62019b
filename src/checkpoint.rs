//! `tidal checkpoint DIR`: write a checkpoint of a stopped data directory, so that the next
//! start replays only what comes after it (SPEC §6, §9).

use std::path::{Path, PathBuf};
use std::time::Instant;

use tidal_core::Record;
use tidal_core::config::Config;
use tidal_serving::tidal::wal_dir;
use tidal_serving::{Error, Tidal};
use tidal_sources::checkpoint::Manifest;
use tidal_sources::wal::WalReader;

/// What to checkpoint.
#[derive(Debug, Clone)]
pub struct CheckpointOptions {
    /// The data directory of a stopped server.
    pub dir: PathBuf,
    /// The configuration the server ran with; by default the newest one its WAL records.
    pub config: Option<PathBuf>,
    /// `engine.workers` of the server that will open it (a checkpoint is made for one layout).
    pub workers: Option<usize>,
}

/// Opens the directory (recovering from its newest checkpoint and the WAL after it), writes
/// a checkpoint and closes it again.
pub fn run(opts: &CheckpointOptions) -> Result<(Manifest, f64), Error> {
    let started = Instant::now();
    let recorded = recorded_config(&opts.dir)?;
    let mut config = match &opts.config {
        Some(path) => {
            let given = Config::load(path)?;
            // Opened with it, another clock mode would be recorded in the log as a change of
            // configuration and move the clock (an event clock jumps to the wall clock's now):
            // a checkpoint never changes what the server runs with.
            if let Some(recorded) = recorded.as_ref().filter(|r| r.engine.clock != given.engine.clock) {
                return Err(Error::Config(tidal_core::Error::Config {
                    field: "engine.clock".into(),
                    message: format!(
                        "{} runs on the {} clock (its log's newest configuration) and {} says {}: give the \
                         configuration the server runs with (a `--clock` of `tidal serve` is not in the file: \
                         set `clock = \"{}\"` under [engine]), or leave --config out to use the recorded one",
                        opts.dir.display(),
                        recorded.engine.clock.name(),
                        path.display(),
                        given.engine.clock.name(),
                        recorded.engine.clock.name(),
                    ),
                }));
            }
            given
        }
        None => recorded.unwrap_or_else(Config::default_filled),
    };
    if !config.cluster.is_single() {
        // Starting one process of a cluster alone would wait for the others for ever.
        return Err(Error::Unsupported {
            what: "this data directory belongs to a process of a cluster: its checkpoints are written by \
                   the running cluster, every process at one frontier (every engine.checkpoint_every \
                   signals, and when a process is stopped with SIGTERM on the wall clock); opened alone, \
                   it would wait for the other processes for ever",
        });
    }
    config.engine.data_dir = opts.dir.display().to_string();
    if let Some(w) = opts.workers {
        config.engine.workers = w;
    }
    let tidal = Tidal::open(config)?;
    let manifest = tidal.checkpoint()?;
    tidal.shutdown()?;
    Ok((manifest, started.elapsed().as_secs_f64()))
}

/// The newest configuration record in the directory's WAL, if it has one.
fn recorded_config(dir: &Path) -> Result<Option<Config>, Error> {
    let wal = wal_dir(dir);
    if !wal.is_dir() {
        return Err(Error::Io {
            path: wal,
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no WAL here: is this a tidal data directory?",
            ),
        });
    }
    let mut reader = WalReader::open(&wal, true)?;
    let mut newest = None;
    while let Some(r) = reader.next_record()? {
        if let Record::Config { toml } = r.record {
            newest = Some(toml);
        }
    }
    Ok(match newest {
        Some(toml) => Some(Config::parse(&toml)?),
        None => None,
    })
}
