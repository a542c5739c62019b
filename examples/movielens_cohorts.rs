//! Who is watching what? Cohorts, user state and relationships on MovieLens 100K.
//!
//! The example fetches MovieLens 100K (at run time; the data is never committed), starts a
//! real `tidal serve --clock event` whose schema declares the cohort dimensions `gender`,
//! `occupation` and `age_group`, puts the 943 users with those attributes, loads the 1,682
//! movies (first genre as category and creator) and the 100,000 ratings in time order
//! (every rating a `view`, 4 or 5 also a `like`), and then, as a user of tidal would:
//!
//! 1. asks what is trending over the last 30 days overall, among `gender:F` and among
//!    `occupation:programmer`;
//! 2. asks for `gender:F,occupation:educator` — never declared, so estimated — then declares
//!    it with `PUT /v1/cohorts/women-educators` and reads the exact counts at once with the
//!    answer's `min_lsn`;
//! 3. takes one woman educator, marks the top three items seen, hides a fourth, follows a
//!    genre, and shows her `trending` with `filter=unseen` and her `following`.
//!
//! ```text
//! cargo build --release && cargo run --release --example movielens_cohorts
//! ```
//!
//! Options: `--data DIR` (MovieLens files; default `data/movielens`, fetched when missing),
//! `--out DIR` (default `target/movielens-cohorts`). The `tidal` binary is
//! `target/release/tidal`, or the environment variable `TIDAL_BIN`.

#[path = "support/movielens.rs"]
mod movielens;

use std::path::PathBuf;

use serde_json::{Value, json};

use movielens::{Server, fetch, ids, load, rows};

const SCHEMA: &str = r#"cohort_dimensions = ["gender", "occupation", "age_group"]

[[signals]]
name = "view"
half_lives = ["7d"]
windows = [{ size = "7d" }, { size = "30d" }]
rank_weight = 1.0
marks = ["seen"]

[[signals]]
name = "like"
half_lives = ["7d"]
windows = [{ size = "7d" }, { size = "30d" }]
rank_weight = 3.0
relationship_delta = 1.0
marks = ["seen", "liked"]

[[signals]]
name = "hide"
half_lives = ["7d"]
windows = [{ size = "7d" }, { size = "30d" }]
rank_weight = 0.0
marks = ["seen", "hidden"]

[engine]
durability = "buffer"
"#;

fn age_group(age: u32) -> &'static str {
    match age {
        0..=17 => "under-18",
        18..=24 => "18-24",
        25..=34 => "25-34",
        35..=44 => "35-44",
        45..=54 => "45-54",
        _ => "55-plus",
    }
}

/// `id  score` per item of a ranking, with the movie's title.
fn show(server: &Server, title: &str, query: &str) -> Result<Value, String> {
    let r = server.send("GET", &format!("/v1/rankings?{query}"), "", "application/json")?;
    let estimated = if r["estimated"] == true { "  (estimated)" } else { "" };
    println!("\n{title}{estimated}\n  GET /v1/rankings?{query}");
    for item in r["items"].as_array().into_iter().flatten() {
        let id = item["id"].as_str().unwrap_or_default();
        let movie = server.send("GET", &format!("/v1/items/{id}"), "", "application/json")?;
        println!(
            "  {:>2}. {:<6} {:>8.2}  {}",
            item["rank"],
            id,
            item["score"].as_f64().unwrap_or(0.0),
            movie["title"].as_str().unwrap_or("")
        );
    }
    Ok(r)
}

fn run() -> Result<(), String> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut data = root.join("data/movielens");
    let mut out = root.join("target/movielens-cohorts");
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--data" => data = args.next().map(PathBuf::from).ok_or("--data needs a directory")?,
            "--out" => out = args.next().map(PathBuf::from).ok_or("--out needs a directory")?,
            other => return Err(format!("unknown option {other:?} (options: --data DIR, --out DIR)")),
        }
    }
    let bin = std::env::var_os("TIDAL_BIN").map_or_else(|| root.join("target/release/tidal"), PathBuf::from);
    fetch(&data)?;
    let data_dir = out.join("data");
    if data_dir.exists() {
        std::fs::remove_dir_all(&data_dir).map_err(|e| format!("cannot clear {}: {e}", data_dir.display()))?;
    }
    std::fs::create_dir_all(&out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    let config = out.join("schema.toml");
    std::fs::write(&config, SCHEMA).map_err(|e| format!("cannot write {}: {e}", config.display()))?;
    let server = Server::start(&bin, &config, &data_dir)?;

    // Users with their attributes.
    let mut educators = Vec::new();
    let users = rows(&data.join("ml-100k.user"))?;
    for r in &users {
        let [id, age, gender, occupation, ..] = r.as_slice() else {
            continue;
        };
        let age: u32 = age.trim().parse().unwrap_or(0);
        let body = json!({"attributes": {"gender": gender, "occupation": occupation, "age_group": age_group(age)}});
        server.send(
            "PUT",
            &format!("/v1/users/u{id}"),
            &body.to_string(),
            "application/json",
        )?;
        if gender == "F" && occupation == "educator" {
            educators.push(format!("u{id}"));
        }
    }
    let (items, signals) = load(&server, &data, true)?;
    println!(
        "loaded {} users, {items} movies, {signals} signals into {}",
        users.len(),
        server.base
    );

    // Reads pass the WAL's last LSN as `min_lsn`: they see everything loaded.
    let clock = server.send("GET", "/v1/clock", "", "application/json")?;
    let lsn = clock["lsn"].as_u64().ok_or("GET /v1/clock answered no lsn")?;

    // 1. Trending over the last 30 days, overall and in two cohorts.
    // The later reads pass the LSN of the write they follow instead.
    let q = "profile=trending&window=30d&limit=5";
    let loaded = format!("min_lsn={lsn}");
    show(&server, "Trending (30 days), everyone", &format!("{q}&{loaded}"))?;
    show(
        &server,
        "Trending among gender:F",
        &format!("{q}&cohort=gender:F&{loaded}"),
    )?;
    show(
        &server,
        "Trending among occupation:programmer",
        &format!("{q}&cohort=occupation:programmer&{loaded}"),
    )?;

    // 2. A composite: estimated until declared, exact at once after.
    let composite = "gender:F,occupation:educator";
    let before = show(
        &server,
        "Trending among women educators",
        &format!("{q}&cohort={composite}&{loaded}"),
    )?;
    let ack = server.send(
        "PUT",
        "/v1/cohorts/women-educators",
        &json!({"where": {"gender": "F", "occupation": "educator"}}).to_string(),
        "application/json",
    )?;
    let lsn = ack["lsn"].as_u64().unwrap_or(0);
    println!("\nPUT /v1/cohorts/women-educators -> lsn {lsn}");
    let after = show(
        &server,
        "Trending among women educators, declared",
        &format!("{q}&cohort={composite}&min_lsn={lsn}"),
    )?;
    if let Some(id) = after["items"][0]["id"].as_str() {
        let exact = server.send(
            "GET",
            &format!("/v1/items/{id}?cohort={composite}"),
            "",
            "application/json",
        )?;
        let views = &exact["cohort"]["signals"]["view"]["counts"]["30d"];
        println!("  {id}: {views} views in 30 days by women educators (exact)");
    }
    let estimated_top = before["items"][0]["id"].clone();
    println!("  the estimate's top item was {estimated_top}");

    // 3. One user: seen, hidden, following.
    let user = educators.first().cloned().ok_or("no woman educator in the data")?;
    let trending = server.send("GET", &format!("/v1/rankings?{q}&{loaded}"), "", "application/json")?;
    let top = ids(&trending);
    let clock = trending["as_of"]["clock"].as_u64().unwrap_or(0);
    let mut lines = String::new();
    for (i, id) in top.iter().take(4).enumerate() {
        let kind = if i < 3 { "view" } else { "hide" };
        lines.push_str(&json!({"type": kind, "item": id, "user": user, "ts": clock}).to_string());
        lines.push('\n');
    }
    server.send("POST", "/v1/signals", &lines, "application/x-ndjson")?;
    let ack = server.send(
        "POST",
        "/v1/relationships",
        &json!({"user": user, "creator": "Film-Noir", "kind": "follow"}).to_string(),
        "application/json",
    )?;
    let lsn = ack["lsn"].as_u64().unwrap_or(0);
    println!(
        "\n{user} views {:?}, hides {:?} and follows Film-Noir",
        &top[..3.min(top.len())],
        top.get(3)
    );
    show(
        &server,
        &format!("Trending for {user}, unseen only"),
        &format!("{q}&user={user}&filter=unseen&min_lsn={lsn}"),
    )?;
    show(
        &server,
        &format!("Following for {user} (Film-Noir, newest first)"),
        &format!("profile=following&user={user}&limit=5"),
    )?;
    let profile = server.send("GET", &format!("/v1/users/{user}"), "", "application/json")?;
    println!("\nGET /v1/users/{user}\n  {profile}");
    server.stop();
    Ok(())
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("movielens_cohorts: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
