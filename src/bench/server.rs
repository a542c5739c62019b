//! The server a `tidal bench` run measures: the real binary started on the bench's data
//! directory, and what the bench reads about it from outside (its `/metrics`, its CPU time).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `tidal serve` child on a loopback port (`base`), killed when dropped.
pub(super) struct BenchServer {
    pub(super) child: Child,
    pub(super) base: String,
}

impl BenchServer {
    pub(super) fn start(exe: &Path, dir: &Path, workers: usize) -> Result<BenchServer, String> {
        BenchServer::start_with(exe, dir, workers, None)
    }

    /// [`start`](Self::start) with a configuration file.
    pub(super) fn start_with(
        exe: &Path,
        dir: &Path,
        workers: usize,
        config: Option<&Path>,
    ) -> Result<BenchServer, String> {
        let mut command = Command::new(exe);
        command.arg("serve");
        if let Some(config) = config {
            command.arg("--config").arg(config);
        }
        let mut child = command
            .arg("--data-dir")
            .arg(dir)
            .args(["--listen", "127.0.0.1:0", "--workers", &workers.to_string()])
            .env("TIDAL_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", exe.display()))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        while let Some(Ok(line)) = lines.next() {
            if let Some(rest) = line.strip_prefix("tidal serving on ") {
                let base = rest.split_whitespace().next().unwrap_or("").to_string();
                std::thread::spawn(move || for _ in lines {});
                return Ok(BenchServer { child, base });
            }
        }
        Err("the server exited before serving".into())
    }

    /// Stops the server as an operator would (SIGTERM: it writes its checkpoint, then exits).
    pub(super) fn stop(mut self) {
        let stopped = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        if stopped {
            let _ = self.child.wait();
        }
    }
}

impl Drop for BenchServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The server's `/metrics` text.
fn metrics_text(server: &BenchServer) -> Option<String> {
    ureq::get(&format!("{}/metrics", server.base))
        .call()
        .ok()?
        .into_string()
        .ok()
}

/// A metric's value from the server's `/metrics`.
pub(super) fn metric(server: &BenchServer, name: &str) -> Option<f64> {
    metrics_text(server)?
        .lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
}

/// A histogram's cumulative buckets from the server's `/metrics`: `(upper bound, count)`.
pub(super) fn histogram(server: &BenchServer, name: &str) -> Vec<(f64, f64)> {
    let Some(body) = metrics_text(server) else {
        return Vec::new();
    };
    let prefix = format!("{name}_bucket{{le=\"");
    body.lines()
        .filter_map(|l| {
            let (le, count) = l.strip_prefix(&prefix)?.split_once("\"} ")?;
            let le = if le == "+Inf" { f64::INFINITY } else { le.parse().ok()? };
            Some((le, count.trim().parse().ok()?))
        })
        .collect()
}

/// The bucket bound below which a fraction `q` of the observations made between two reads
/// of a histogram fall (an upper bound of the quantile).
pub(super) fn quantile_between(before: &[(f64, f64)], after: &[(f64, f64)], q: f64) -> Option<f64> {
    let delta: Vec<(f64, f64)> = after
        .iter()
        .map(|&(le, n)| {
            let was = before.iter().find(|b| b.0 == le).map_or(0.0, |b| b.1);
            (le, n - was)
        })
        .collect();
    let total = delta.last()?.1;
    (total > 0.0).then(|| {
        delta
            .iter()
            .find(|(_, n)| *n >= q * total)
            .map_or(f64::INFINITY, |b| b.0)
    })
}

/// CPU time (clock ticks) the server process has used, from `/proc` (`None` elsewhere).
fn cpu_ticks(server: &BenchServer) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", server.child.id())).ok()?;
    // The fields after the command name, which is in parentheses and may hold spaces.
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace();
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Waits until the server has used under 5% of a core for a whole second (or `most` has
/// passed); how long that took.
pub(super) fn settle(server: &BenchServer, most: Duration) -> Duration {
    let started = Instant::now();
    let Some(mut last) = cpu_ticks(server) else {
        return Duration::ZERO;
    };
    while started.elapsed() < most {
        std::thread::sleep(Duration::from_secs(1));
        let Some(now) = cpu_ticks(server) else { break };
        // Clock ticks are 1/100 s on Linux: 5 ticks in a second is 5% of a core.
        if now.saturating_sub(last) < 5 {
            break;
        }
        last = now;
    }
    started.elapsed()
}

#[cfg(test)]
mod tests {
    use super::quantile_between;

    #[test]
    fn quantile_bounds_come_from_the_buckets_filled_between_two_reads() {
        let before = [(1e-5, 5.0), (2e-5, 5.0), (4e-5, 6.0), (f64::INFINITY, 6.0)];
        // 100 observations between: 10 under 10 us, 89 more under 20 us, 1 over 40 us.
        let after = [(1e-5, 15.0), (2e-5, 104.0), (4e-5, 105.0), (f64::INFINITY, 106.0)];
        assert_eq!(quantile_between(&before, &after, 0.05), Some(1e-5));
        assert_eq!(quantile_between(&before, &after, 0.5), Some(2e-5));
        assert_eq!(quantile_between(&before, &after, 0.99), Some(2e-5));
        assert_eq!(quantile_between(&before, &after, 1.0), Some(f64::INFINITY));
        assert_eq!(quantile_between(&after, &after, 0.5), None);
    }
}
