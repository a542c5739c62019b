//! MovieLens 100K for the examples: fetching it (`../shared/data/fetch-movielens.sh`, at run
//! time; the data is never committed), reading its files, running a `tidal serve` on the
//! event clock and loading movies and ratings into it.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Signals per NDJSON request.
const BATCH: usize = 5_000;

/// The MovieLens files, fetched when missing.
pub fn fetch(data: &Path) -> Result<(), String> {
    let have = ["inter", "item"]
        .iter()
        .all(|ext| data.join(format!("ml-100k.{ext}")).is_file());
    if have {
        return Ok(());
    }
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data/fetch-movielens.sh");
    eprintln!("fetching MovieLens 100K into {}", data.display());
    let status = Command::new("bash")
        .arg(&script)
        .arg(data)
        .status()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    if !status.success() {
        return Err(format!("{} failed ({status})", script.display()));
    }
    Ok(())
}

/// Rows of a RecBole atomic file (tab-separated, one header row).
pub fn rows(path: &Path) -> Result<Vec<Vec<String>>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Ok(text
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split('\t').map(str::to_string).collect())
        .collect())
}

/// The item ids of a ranking answer, in order.
pub fn ids(ranking: &serde_json::Value) -> Vec<String> {
    ranking["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["id"].as_str().map(String::from))
        .collect()
}

/// ms since the epoch of January 1 of `year` (UTC).
pub fn year_start_ms(year: i64) -> Option<u64> {
    if !(1970..=9999).contains(&year) {
        return None;
    }
    let days: i64 = (1970..year)
        .map(|y| {
            if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 {
                366
            } else {
                365
            }
        })
        .sum();
    u64::try_from(days * 86_400_000).ok()
}

/// A running `tidal serve`.
pub struct Server {
    child: Child,
    /// `http://host:port`.
    pub base: String,
}

impl Server {
    pub fn start(bin: &Path, config: &Path, data_dir: &Path) -> Result<Server, String> {
        let mut child = Command::new(bin)
            .args(["serve", "--clock", "event", "--listen", "127.0.0.1:0", "--config"])
            .arg(config)
            .arg("--data-dir")
            .arg(data_dir)
            .env("TIDAL_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| {
                format!(
                    "cannot start {} (build it with `cargo build --release`): {e}",
                    bin.display()
                )
            })?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        while let Some(Ok(line)) = lines.next() {
            if let Some(rest) = line.strip_prefix("tidal serving on ") {
                let base = rest.split_whitespace().next().unwrap_or_default().to_string();
                return Ok(Server { child, base });
            }
        }
        let _ = child.kill();
        Err("tidal serve exited before serving".into())
    }

    pub fn send(&self, method: &str, path: &str, body: &str, content_type: &str) -> Result<serde_json::Value, String> {
        let url = format!("{}{path}", self.base);
        let resp = ureq::request(method, &url)
            .set("Content-Type", content_type)
            .send_string(body)
            .map_err(|e| match e {
                ureq::Error::Status(code, r) => {
                    format!("{method} {path}: {code} {}", r.into_string().unwrap_or_default())
                }
                other => format!("{method} {path}: {other}"),
            })?;
        let text = resp.into_string().map_err(|e| format!("{method} {path}: {e}"))?;
        serde_json::from_str(&text).map_err(|e| format!("{method} {path}: {e}"))
    }

    /// Stops the server gracefully (SIGTERM), killing it if it does not stop.
    pub fn stop(mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Loads the movies as items (title, first genre as category — and, with `creators`, as
/// creator —, genres as tags, release year as `created_at`) and the ratings as signals in time
/// order (every rating a `view`, 4 or 5 also a `like`; `ts` = the rating's time). Returns the
/// number of items and signals.
pub fn load(server: &Server, data: &Path, creators: bool) -> Result<(usize, usize), String> {
    let items = rows(&data.join("ml-100k.item"))?;
    for r in &items {
        let [id, title, year, genres, ..] = r.as_slice() else {
            continue;
        };
        let genres: Vec<&str> = genres.split_whitespace().collect();
        let mut body = serde_json::json!({"title": title, "tags": genres});
        if let Some(first) = genres.first() {
            body["category"] = (*first).into();
            if creators {
                body["creator"] = (*first).into();
            }
        }
        if let Some(ms) = year.trim().parse::<i64>().ok().and_then(year_start_ms) {
            body["created_at"] = ms.into();
        }
        server.send(
            "PUT",
            &format!("/v1/items/m{id}"),
            &body.to_string(),
            "application/json",
        )?;
    }
    // (ts, user, item, rating), in time order.
    let mut ratings: Vec<(u64, String, String, u32)> = Vec::new();
    for r in rows(&data.join("ml-100k.inter"))? {
        let [user, item, rating, ts, ..] = r.as_slice() else {
            continue;
        };
        let (Ok(rating), Ok(ts)) = (rating.trim().parse::<f64>(), ts.trim().parse::<u64>()) else {
            continue;
        };
        ratings.push((ts * 1000, user.clone(), item.clone(), rating as u32));
    }
    ratings.sort();
    let mut signals = 0;
    let mut body = String::new();
    let mut in_body = 0;
    for (i, (ts, user, item, rating)) in ratings.iter().enumerate() {
        let kinds: &[&str] = if *rating >= 4 { &["view", "like"] } else { &["view"] };
        for kind in kinds {
            let line =
                serde_json::json!({"type": kind, "item": format!("m{item}"), "user": format!("u{user}"), "ts": ts});
            body.push_str(&line.to_string());
            body.push('\n');
            in_body += 1;
        }
        if in_body >= BATCH || i + 1 == ratings.len() {
            server.send("POST", "/v1/signals", &body, "application/x-ndjson")?;
            signals += in_body;
            body.clear();
            in_body = 0;
        }
    }
    Ok((items.len(), signals))
}
