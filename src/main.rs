//! The `tidal` command line (SPEC §6).

use std::path::PathBuf;
use std::process::ExitCode;

use std::io::IsTerminal;

use clap::{Parser, Subcommand, ValueEnum};

use tidal::server::{ServeOptions, serve};
use tidal_core::time::ClockMode;

mod bench;
mod reference;

/// mimalloc keeps freed memory for reuse where glibc handed it back to the kernel and faulted
/// it in again: replay 0.84x the time, peak resident 0.88x. Built without transparent huge pages,
/// whose 2 MiB faults each zeroed a whole huge page (README, "Memory allocator").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "tidal", version, about = "A streaming ranking engine for content feeds")]
struct Cli {
    /// Log format on stderr: text (coloured only on a terminal) or json (one object per line,
    /// for log shippers).
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (embedded default schema and ./tidal-data when given nothing).
    Serve {
        /// TOML configuration file.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Data directory (WAL under <DIR>/wal).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Address to listen on.
        #[arg(long)]
        listen: Option<String>,
        /// Timely worker threads.
        #[arg(long)]
        workers: Option<usize>,
        /// Clock mode: wall or event.
        #[arg(long)]
        clock: Option<ClockMode>,
        /// Processes in the cluster (needs --hostfile).
        #[arg(long, requires = "hostfile")]
        processes: Option<usize>,
        /// This process's index in the cluster, from 0 (needs --hostfile).
        #[arg(long, requires = "hostfile")]
        process_id: Option<usize>,
        /// The cluster: one line per process, in order, `TIMELY_ADDR HTTP_ADDR` or timely's own
        /// `TIMELY_ADDR` (the HTTP addresses are then learned as the cluster forms).
        #[arg(long)]
        hostfile: Option<PathBuf>,
    },
    /// Check or print a write-ahead log.
    Wal {
        #[command(subcommand)]
        command: WalCommand,
    },
    /// Configuration helpers.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Run the feed-1m benchmark and print the table (SPEC §10).
    Bench(bench::BenchArgs),
    /// What-if experiments over a recorded WAL (SPEC §8).
    Replay(tidal::replay::ReplayArgs),
    /// Write a checkpoint of a stopped data directory, so the next start replays only the
    /// WAL after it (a running server checkpoints on its own).
    Checkpoint {
        /// The data directory.
        dir: PathBuf,
        /// The configuration the server runs with (default: the newest one its WAL records).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Worker threads of the server that will open it.
        #[arg(long)]
        workers: Option<usize>,
    },
}

#[derive(Subcommand)]
enum WalCommand {
    /// Verify every record's checksum and the LSN sequence.
    Verify {
        /// The WAL directory (<data-dir>/wal), or the data directory.
        dir: PathBuf,
    },
    /// Print the records.
    Inspect {
        /// The WAL directory (<data-dir>/wal), or the data directory.
        dir: PathBuf,
        /// Print at most this many records.
        #[arg(long)]
        limit: Option<usize>,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print the embedded default configuration.
    Default,
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TIDAL_LOG")
        .unwrap_or_else(|_| "info,fjall=warn,lsm_tree=warn,tantivy=warn".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        // Colour codes only when a person reads the terminal, never in a file or a pipe.
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    // The pool a catch-up's large sorts and cohort maps run on: named, so that a profile or
    // `top -H` tells its threads from the workers (unnamed, they take their spawner's name).
    if let Err(e) = rayon::ThreadPoolBuilder::new()
        .thread_name(|i| format!("tidal-pool-{i}"))
        .build_global()
    {
        tracing::debug!(error = %e, "the thread pool keeps its defaults");
    }
    let result = match cli.command {
        Command::Serve {
            config,
            data_dir,
            listen,
            workers,
            clock,
            processes,
            process_id,
            hostfile,
        } => serve(ServeOptions {
            config,
            data_dir,
            listen,
            workers,
            clock,
            processes,
            process_id,
            hostfile,
        })
        .map_err(|e| e.to_string()),
        Command::Wal {
            command: WalCommand::Verify { dir },
        } => wal_dir(dir).and_then(|dir| match tidal_sources::wal::verify(&dir) {
            Ok(report) => {
                println!("{report}");
                match report.damage {
                    None => Ok(()),
                    Some(_) => Err("the WAL is damaged (above)".into()),
                }
            }
            Err(e) => Err(e.to_string()),
        }),
        Command::Wal {
            command: WalCommand::Inspect { dir, limit },
        } => wal_dir(dir).and_then(|dir| {
            let mut out = std::io::stdout().lock();
            tidal_sources::wal::inspect(&dir, &mut out, limit).map_err(|e| e.to_string())
        }),
        Command::Config {
            command: ConfigCommand::Default,
        } => {
            print!("{}", tidal_core::config::DEFAULT_TOML);
            Ok(())
        }
        Command::Bench(args) => bench::run(args),
        Command::Replay(args) => tidal::replay::run(args),
        Command::Checkpoint { dir, config, workers } => {
            match tidal::checkpoint::run(&tidal::checkpoint::CheckpointOptions { dir, config, workers }) {
                Ok((m, seconds)) => {
                    println!(
                        "checkpoint at lsn {} ({} signals) in {seconds:.2} s",
                        m.position.lsn, m.position.signals
                    );
                    Ok(())
                }
                Err(e) => Err(e.to_string()),
            }
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tidal: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The WAL folder `tidal wal` reads: `dir` itself, or `dir/wal` when `dir` is a data
/// directory. A folder without segments is an error (nothing would be verified).
fn wal_dir(dir: PathBuf) -> Result<PathBuf, String> {
    let has_segments = |d: &std::path::Path| {
        std::fs::read_dir(d).is_ok_and(|entries| {
            entries.filter_map(|e| e.ok()).any(|e| {
                let name = e.file_name();
                let name = name.to_string_lossy();
                name.starts_with("wal-") && name.ends_with(".log")
            })
        })
    };
    if has_segments(&dir) {
        return Ok(dir);
    }
    let inner = dir.join("wal");
    if has_segments(&inner) {
        return Ok(inner);
    }
    Err(format!(
        "no WAL segment files (wal-*.log) in {} or {}",
        dir.display(),
        inner.display()
    ))
}
