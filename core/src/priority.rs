//! The priority of the process's background threads: the serving sink's, which cuts versions,
//! and the checkpointer's, which encodes and writes checkpoints. They run below the dataflow's
//! workers, the write path and the queries, which take a core first when they wait for one,
//! and share what is left between them (measured in BENCHMARKS.md: the sink at 0 raised cohort
//! trending's p99 under ingest from 18 to 30 ms; the checkpointer at 0, above the sink, kept
//! writes invisible for up to a second while a checkpoint was written).

/// The niceness of the background threads (Linux).
#[cfg(target_os = "linux")]
const BACKGROUND_NICE: i32 = 19;

/// Puts the calling thread at the background threads' priority (nothing elsewhere than on
/// Linux).
pub fn run_in_background() -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    rustix::process::setpriority_process(Some(rustix::thread::gettid()), BACKGROUND_NICE)?;
    Ok(())
}
