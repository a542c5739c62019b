//! What if `hot` forgot faster, or slower? A what-if experiment on MovieLens 100K.
//!
//! The example fetches MovieLens 100K (`../shared/data/fetch-movielens.sh`; the data is
//! fetched at run time and never committed), starts a real `tidal serve --clock event` with a
//! baseline schema whose decay half-life is 7 days, loads the 1,682 movies as items (title,
//! first genre as category, genres as tags, release year as `created_at`) and the 100,000
//! ratings as signals in time order (every rating a `view`, ratings of 4 or 5 also a `like`;
//! `ts` = the rating's timestamp), stops the server, and replays its WAL with `tidal replay`:
//! the baseline against variants with 1-day and 30-day half-lives, every 14 days of the
//! seven months the ratings span. It writes `report.json` and `report.html`.
//!
//! ```text
//! cargo build --release && cargo run --release --example movielens_whatif
//! ```
//!
//! Options: `--data DIR` (MovieLens files; default `data/movielens`, fetched when missing),
//! `--out DIR` (default `target/movielens-whatif`), `--every DURATION` (default `14d`).
//! The `tidal` binary is `target/release/tidal`, or the environment variable `TIDAL_BIN`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Signals per NDJSON request.
const BATCH: usize = 5_000;

/// The schema of one variant: `view` and `like` with one half-life and 7- and 30-day windows.
fn schema(half_life: &str, engine: bool) -> String {
    let mut s = String::new();
    for (name, weight) in [("view", 1.0), ("like", 3.0)] {
        s.push_str(&format!(
            "[[signals]]\nname = \"{name}\"\nhalf_lives = [\"{half_life}\"]\n\
             windows = [{{ size = \"7d\" }}, {{ size = \"30d\" }}]\nrank_weight = {weight:.1}\nmarks = [\"seen\"]\n\n"
        ));
    }
    if engine {
        // Loading a finished data set: no fsync per batch.
        s.push_str("[engine]\ndurability = \"buffer\"\n");
    }
    s
}

struct Args {
    data: PathBuf,
    out: PathBuf,
    every: String,
    bin: PathBuf,
}

fn args() -> Result<Args, String> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut a = Args {
        data: root.join("data/movielens"),
        out: root.join("target/movielens-whatif"),
        every: "14d".into(),
        bin: std::env::var_os("TIDAL_BIN").map_or_else(|| root.join("target/release/tidal"), PathBuf::from),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--data" => a.data = PathBuf::from(value()?),
            "--out" => a.out = PathBuf::from(value()?),
            "--every" => a.every = value()?,
            other => {
                return Err(format!(
                    "unknown option {other}; options: --data DIR, --out DIR, --every D"
                ));
            }
        }
    }
    Ok(a)
}

/// The MovieLens files, fetched when missing.
fn fetch(data: &Path) -> Result<(), String> {
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
fn rows(path: &Path) -> Result<Vec<Vec<String>>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Ok(text
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split('\t').map(str::to_string).collect())
        .collect())
}

/// ms since the epoch of January 1 of `year` (UTC).
fn year_start_ms(year: i64) -> Option<u64> {
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
struct Server {
    child: Child,
    base: String,
}

impl Server {
    fn start(bin: &Path, config: &Path, data_dir: &Path) -> Result<Server, String> {
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

    fn send(&self, method: &str, path: &str, body: &str, content_type: &str) -> Result<serde_json::Value, String> {
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
    fn stop(mut self) {
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

fn load(server: &Server, data: &Path) -> Result<(usize, usize), String> {
    let items = rows(&data.join("ml-100k.item"))?;
    for r in &items {
        let [id, title, year, genres, ..] = r.as_slice() else {
            continue;
        };
        let genres: Vec<&str> = genres.split_whitespace().collect();
        let mut body = serde_json::json!({"title": title, "tags": genres});
        if let Some(first) = genres.first() {
            body["category"] = (*first).into();
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

fn run() -> Result<(), String> {
    let a = args()?;
    fetch(&a.data)?;
    let data_dir = a.out.join("data");
    if data_dir.exists() {
        std::fs::remove_dir_all(&data_dir).map_err(|e| format!("cannot clear {}: {e}", data_dir.display()))?;
    }
    std::fs::create_dir_all(&a.out).map_err(|e| format!("cannot create {}: {e}", a.out.display()))?;
    let write = |name: &str, text: String| -> Result<PathBuf, String> {
        let p = a.out.join(name);
        std::fs::write(&p, text).map_err(|e| format!("cannot write {}: {e}", p.display()))?;
        Ok(p)
    };
    let baseline = write("baseline.toml", schema("7d", true))?;
    let mut variants = BTreeMap::new();
    for (name, half_life) in [("half-life-1d", "1d"), ("half-life-30d", "30d")] {
        variants.insert(name, write(&format!("{name}.toml"), schema(half_life, false))?);
    }

    let started = Instant::now();
    let server = Server::start(&a.bin, &baseline, &data_dir)?;
    let (items, signals) = load(&server, &a.data)?;
    server.stop();
    eprintln!(
        "loaded {items} movies and {signals} signals in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let (json, html) = (a.out.join("report.json"), a.out.join("report.html"));
    let mut cmd = Command::new(&a.bin);
    cmd.arg("replay").arg("--wal").arg(data_dir.join("wal"));
    for (name, path) in &variants {
        cmd.arg("--variant").arg(format!("{name}={}", path.display()));
    }
    cmd.args(["--every", &a.every])
        .args(["--query", "profile=hot&limit=20"])
        .args(["--query", "profile=hot&signal=like&category=Comedy&limit=10"])
        .args(["--query", "profile=trending&window=30d&limit=20"])
        .arg("--json")
        .arg(&json)
        .arg("--html")
        .arg(&html);
    let status = cmd.status().map_err(|e| format!("cannot run tidal replay: {e}"))?;
    if !status.success() {
        return Err(format!("tidal replay failed ({status})"));
    }
    println!("wrote {} and {}", json.display(), html.display());
    Ok(())
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("movielens_whatif: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
