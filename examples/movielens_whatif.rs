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

#[path = "support/movielens.rs"]
mod movielens;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use movielens::{Server, fetch, load};

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
    let (items, signals) = load(&server, &a.data, false)?;
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
