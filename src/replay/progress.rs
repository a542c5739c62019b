//! The progress bar of `tidal replay` (on stderr, only when stderr is a terminal): bytes of
//! the log consumed against the size of its segment files — which gives the ETA — with the
//! events replayed and the rate in the message.

use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use tidal_core::record::CommittedBatch;
use tidal_sources::wal::format;

/// How often the message is redrawn.
const REDRAW: Duration = Duration::from_millis(100);

/// The bar, or nothing when disabled.
pub(crate) struct Progress {
    bar: Option<ProgressBar>,
    bytes: u64,
    started: Instant,
    last: Instant,
}

impl Progress {
    /// A bar over `total_bytes` when `enabled`.
    pub fn new(enabled: bool, total_bytes: u64) -> Progress {
        let bar = enabled.then(|| {
            let bar = ProgressBar::with_draw_target(Some(total_bytes), ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template(
                "{spinner} replay [{elapsed_precise}] [{wide_bar}] {percent:>3}% {msg} ETA {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            bar.set_style(style);
            bar
        });
        let now = Instant::now();
        Progress {
            bar,
            bytes: 0,
            started: now,
            last: now,
        }
    }

    /// Counts a batch as read; `events` is the running total of signals.
    pub fn advance(&mut self, batch: &CommittedBatch, events: u64) {
        let Some(bar) = &self.bar else {
            return;
        };
        self.bytes += batch
            .records
            .iter()
            .map(|r| format::frame_len(&r.record) as u64)
            .sum::<u64>();
        let now = Instant::now();
        if now.duration_since(self.last) < REDRAW {
            return;
        }
        self.last = now;
        let secs = now.duration_since(self.started).as_secs_f64().max(1e-9);
        bar.set_position(self.bytes);
        bar.set_message(format!("{events} events, {:.0} events/s", events as f64 / secs));
    }

    /// Removes the bar.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
