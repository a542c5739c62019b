//! Does `for_you` beat popularity? Personalised ranking measured on MovieLens 100K.
//!
//! The example fetches MovieLens 100K (at run time; the data is never committed) and splits
//! its ratings in time: the first 80% by timestamp train, the rest test. From the training
//! part only it learns item embeddings — a truncated SVD of the user × movie matrix (1 where
//! the user rated the movie), each movie's embedding its row of `V_k` — then starts a
//! real `tidal serve --clock event`, puts the movies (with their embeddings), and loads the
//! training ratings in time order (every rating a `view`, 4 or 5 also a `like`). No test
//! rating is loaded: the clock stops at the last training rating.
//!
//! For every user with a test rating it asks tidal for a top 10 — `for_you` (the built-in and
//! the schema's declared weightings) and the popularity profiles `top`, `hot` and `trending`
//! at each declared half-life and window — all with `user=` and `filter=unseen`, so no profile
//! lists what the user already rated, and scores each list against the user's test ratings:
//! HR@10 (a test movie among the ten) and NDCG@10 (binary relevance, ideal = the user's test
//! movies first).
//!
//! The weighting is not chosen on the test part: the same is done first with the first 70% of
//! the ratings loaded and the next 10% as the validation part, and the weighting with the best
//! NDCG@10 there is the one measured on the test part against the best popularity profile
//! there (by NDCG@10 for NDCG, by HR@10 for HR). The bar (SPEC §12) is read as over the test
//! users with a training history — the users whose later ratings a preference vector can
//! predict; a user with no earlier rating is ranked by popularity alone, and the table shows
//! every test user beside them.
//!
//! ```text
//! cargo build --release && cargo run --release --example movielens_personal
//! ```
//!
//! Options: `--data DIR` (MovieLens files; default `data/movielens`, fetched when missing),
//! `--out DIR` (default `target/movielens-personal`), `--dim K` (embedding dimension,
//! default 16). The `tidal` binary is `target/release/tidal`, or `TIDAL_BIN`.

#[path = "support/movielens.rs"]
mod movielens;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;

use nalgebra::DMatrix;
use serde_json::json;

use movielens::{Server, fetch, ids, rows, year_start_ms};

/// The schema: two signal types, a year of user state, and the `for_you` weightings compared.
const SCHEMA: &str = r#"
[[signals]]
name = "view"
half_lives = ["1d", "7d", "30d"]
windows = [{ size = "7d" }, { size = "30d" }]
rank_weight = 1.0
polarity = 1.0
relationship_delta = 0.25
marks = ["seen"]

[[signals]]
name = "like"
half_lives = ["1d", "7d", "30d"]
windows = [{ size = "7d" }, { size = "30d" }]
rank_weight = 3.0
polarity = 1.0
relationship_delta = 1.0
marks = ["seen", "liked"]

[personalization]
state_horizon = "365d"
horizon = "365d"
half_life = "30d"
exact_search = true

[engine]
durability = "buffer"
workers = 2
"#;

/// The rankings compared: (label, query without user).
const BASELINES: [(&str, &str); 6] = [
    ("top", "profile=top"),
    ("hot 1d", "profile=hot&half_life=1d"),
    ("hot 7d", "profile=hot&half_life=7d"),
    ("hot 30d", "profile=hot&half_life=30d"),
    ("trending 7d", "profile=trending&window=7d"),
    ("trending 30d", "profile=trending&window=30d"),
];
/// The declared `for_you` weightings compared beside the built-in: (w_sim, popularity
/// half-life, transform of the popularity term); w_pop = 1 − w_sim, no exploration slots.
const WEIGHTINGS: [(f64, &str, &str); 16] = [
    (0.2, "7d", "linear"),
    (0.3, "7d", "linear"),
    (0.4, "7d", "linear"),
    (0.5, "7d", "linear"),
    (0.2, "30d", "linear"),
    (0.3, "30d", "linear"),
    (0.4, "30d", "linear"),
    (1.0, "30d", "linear"),
    (0.3, "7d", "sqrt"),
    (0.4, "7d", "sqrt"),
    (0.3, "7d", "log1p"),
    (0.4, "7d", "log1p"),
    (0.2, "7d", "sqrt"),
    (0.5, "7d", "sqrt"),
    (0.4, "30d", "sqrt"),
    (0.3, "1d", "sqrt"),
];

/// The schema with a profile per weighting, and the (label, query) of each `for_you` row.
fn personal() -> (String, Vec<(String, String)>) {
    let mut schema = SCHEMA.to_string();
    let mut rows = vec![(
        "for_you (built-in: 0.5 sim, 0.5 pop at 30d, 10% exploration)".to_string(),
        "profile=for_you".to_string(),
    )];
    for (i, (sim, h, f)) in WEIGHTINGS.iter().enumerate() {
        let name = format!("fy-{i}");
        schema.push_str(&format!(
            "\n[[profiles]]\nname = \"{name}\"\nbase = \"for_you\"\nhalf_life = \"{h}\"\nw_sim = {sim}\nw_pop = {pop}\nexploration = 0.0\ntransforms = {{ pop = \"{f}\" }}\n",
            pop = 1.0 - sim
        ));
        let pop = if *f == "linear" {
            "pop".to_string()
        } else {
            format!("{f}(pop)")
        };
        rows.push((
            format!("{name} ({sim:.1} sim, {:.1} {pop} at {h})", 1.0 - sim),
            format!("profile={name}"),
        ));
    }
    (schema, rows)
}

const K_DEFAULT: usize = 16;
const TOP: usize = 10;

struct Rating {
    ts: u64,
    user: usize,
    item: usize,
    rating: u32,
}

/// Item embeddings from the training ratings: row `i` of `V_k` (the top `k` right singular
/// vectors of the user × item matrix, 1 where rated); `None` for items without a training
/// rating. (Scaling by `Σ_k` or `Σ_k^½`, or weighting the matrix by 1/√popularity, ranked
/// worse on this split.)
fn embeddings(train: &[Rating], users: usize, items: usize, k: usize) -> Vec<Option<Vec<f32>>> {
    let mut m = DMatrix::<f64>::zeros(users, items);
    let mut rated = vec![false; items];
    for r in train {
        m[(r.user, r.item)] = 1.0;
        rated[r.item] = true;
    }
    let svd = m.svd(false, true);
    let Some(vt) = svd.v_t else { return vec![None; items] };
    let mut order: Vec<usize> = (0..svd.singular_values.len()).collect();
    order.sort_by(|a, b| svd.singular_values[*b].total_cmp(&svd.singular_values[*a]));
    order.truncate(k);
    (0..items)
        .map(|i| rated[i].then(|| order.iter().map(|&c| vt[(c, i)] as f32).collect()))
        .collect()
}

/// HR@10 and NDCG@10 of `listed` against the relevant set.
fn score(listed: &[String], relevant: &BTreeSet<String>) -> (f64, f64) {
    let mut dcg = 0.0;
    let mut hit = 0.0;
    for (r, id) in listed.iter().take(TOP).enumerate() {
        if relevant.contains(id) {
            dcg += 1.0 / ((r + 2) as f64).log2();
            hit = 1.0;
        }
    }
    let ideal: f64 = (0..relevant.len().min(TOP))
        .map(|r| 1.0 / ((r + 2) as f64).log2())
        .sum();
    (hit, if ideal > 0.0 { dcg / ideal } else { 0.0 })
}

fn run() -> Result<(), String> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut data = root.join("data/movielens");
    let mut out = root.join("target/movielens-personal");
    let mut k = K_DEFAULT;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--data" => data = args.next().map(PathBuf::from).ok_or("--data needs a directory")?,
            "--out" => out = args.next().map(PathBuf::from).ok_or("--out needs a directory")?,
            "--dim" => {
                k = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|k| *k > 0)
                    .ok_or("--dim needs a positive number")?
            }
            other => {
                return Err(format!(
                    "unknown option {other:?} (options: --data DIR, --out DIR, --dim K)"
                ));
            }
        }
    }
    let bin = std::env::var_os("TIDAL_BIN").map_or_else(|| root.join("target/release/tidal"), PathBuf::from);
    fetch(&data)?;

    // Ratings in time order, split 80 / 20.
    let mut user_ix: HashMap<String, usize> = HashMap::new();
    let mut item_ix: HashMap<String, usize> = HashMap::new();
    let movies = rows(&data.join("ml-100k.item"))?;
    for r in &movies {
        if let Some(id) = r.first() {
            let n = item_ix.len();
            item_ix.entry(id.clone()).or_insert(n);
        }
    }
    let mut ratings = Vec::new();
    for r in rows(&data.join("ml-100k.inter"))? {
        let [user, item, rating, ts, ..] = r.as_slice() else {
            continue;
        };
        let (Ok(rating), Ok(ts)) = (rating.trim().parse::<f64>(), ts.trim().parse::<u64>()) else {
            continue;
        };
        let Some(&item) = item_ix.get(item) else { continue };
        let n = user_ix.len();
        let user = *user_ix.entry(user.clone()).or_insert(n);
        ratings.push(Rating {
            ts: ts * 1000,
            user,
            item,
            rating: rating as u32,
        });
    }
    ratings.sort_by_key(|r| (r.ts, r.user, r.item));
    let cut = ratings.len() * 8 / 10;
    let (train, test) = ratings.split_at(cut);
    let user_ids: Vec<String> = {
        let mut v = vec![String::new(); user_ix.len()];
        for (id, i) in &user_ix {
            v[*i] = format!("u{id}");
        }
        v
    };
    let item_ids: Vec<String> = {
        let mut v = vec![String::new(); item_ix.len()];
        for (id, i) in &item_ix {
            v[*i] = format!("m{id}");
        }
        v
    };
    println!(
        "{} ratings: {} to train (up to {}), {} to test",
        ratings.len(),
        train.len(),
        train.last().map_or(0, |r| r.ts),
        test.len()
    );
    // The weighting is chosen on a validation split inside the training part (the first 70%
    // of the ratings train, the next 10% validate), then measured once on the test part.
    let fit_cut = ratings.len() * 7 / 10;
    let (fit, valid) = train.split_at(fit_cut);
    let (schema, personal) = personal();
    let profiles: Vec<(String, String)> = BASELINES
        .iter()
        .map(|(l, q)| (l.to_string(), q.to_string()))
        .chain(personal)
        .collect();
    let catalog = Catalog {
        bin: &bin,
        movies: &movies,
        item_ix: &item_ix,
        item_ids: &item_ids,
        user_ids: &user_ids,
        schema: &schema,
        profiles: &profiles,
        k,
    };
    println!(
        "\nvalidation: {} ratings train (up to {}), the next {} validate",
        fit.len(),
        fit.last().map_or(0, |r| r.ts),
        valid.len()
    );
    let validation = catalog.evaluate(&out.join("validation"), fit, valid)?;
    validation.print(&profiles);
    let chosen = (BASELINES.len()..profiles.len())
        .max_by(|a, b| validation.warm[*a].1.total_cmp(&validation.warm[*b].1))
        .ok_or("no for_you weighting to choose")?;
    println!(
        "chosen on validation (best NDCG@10 for the users with a training history): {}",
        profiles[chosen].0
    );

    println!("\ntest: {} ratings train, the last {} test", train.len(), test.len());
    let tested = catalog.evaluate(&out.join("test"), train, test)?;
    tested.print(&profiles);
    for (who, table, n) in [
        ("users with a training history", &tested.warm, tested.warm_users),
        ("every test user", &tested.all, tested.users),
    ] {
        // The best popularity profile on the test part, by each measure on its own.
        let best = |m: fn(&(f64, f64)) -> f64| {
            (0..BASELINES.len())
                .map(|i| (i, m(&table[i]) / n))
                .max_by(|a, b| a.1.total_cmp(&b.1))
                .ok_or("no popularity profile")
        };
        let (bn, bp_ndcg) = best(|t| t.1)?;
        let (bh, bp_hr) = best(|t| t.0)?;
        let (hr, ndcg) = (table[chosen].0 / n, table[chosen].1 / n);
        println!(
            "{who}: {} (chosen on validation) has NDCG@10 {ndcg:.4} ({:+.1}% against the best popularity profile on the test part, {} at {bp_ndcg:.4}) and HR@10 {hr:.4} ({:+.1}% against {} at {bp_hr:.4})",
            profiles[chosen].0,
            100.0 * (ndcg / bp_ndcg - 1.0),
            profiles[bn].0,
            100.0 * (hr / bp_hr - 1.0),
            profiles[bh].0
        );
    }
    Ok(())
}

/// What every evaluation shares: the binary, the movies and the profiles compared.
struct Catalog<'a> {
    bin: &'a PathBuf,
    movies: &'a [Vec<String>],
    item_ix: &'a HashMap<String, usize>,
    item_ids: &'a [String],
    user_ids: &'a [String],
    schema: &'a str,
    profiles: &'a [(String, String)],
    k: usize,
}

/// HR@10 and NDCG@10 sums per profile: over every evaluated user, and over those with a
/// rating in the loaded part.
struct Scores {
    all: Vec<(f64, f64)>,
    warm: Vec<(f64, f64)>,
    users: f64,
    warm_users: f64,
}

impl Scores {
    fn print(&self, profiles: &[(String, String)]) {
        println!("\n{} users ({} with training ratings)\n", self.users, self.warm_users);
        println!(
            "| profile | HR@10 (with history) | NDCG@10 (with history) | HR@10 (every user) | NDCG@10 (every user) |\n|---|---|---|---|---|"
        );
        for ((label, _), ((hr, ndcg), (whr, wndcg))) in profiles.iter().zip(self.all.iter().zip(&self.warm)) {
            println!(
                "| {label} | {:.4} | {:.4} | {:.4} | {:.4} |",
                whr / self.warm_users,
                wndcg / self.warm_users,
                hr / self.users,
                ndcg / self.users
            );
        }
        println!();
    }
}

impl Catalog<'_> {
    /// Learns embeddings from `train`, loads the movies and `train` into a fresh server in
    /// `out`, and scores every profile's top 10 for each user with a rating in `test`.
    fn evaluate(&self, out: &std::path::Path, train: &[Rating], test: &[Rating]) -> Result<Scores, String> {
        let started = std::time::Instant::now();
        let emb = embeddings(train, self.user_ids.len(), self.item_ids.len(), self.k);
        println!(
            "learned {}-dim embeddings for {} movies (truncated SVD of the training matrix) in {:.1} s",
            self.k,
            emb.iter().filter(|e| e.is_some()).count(),
            started.elapsed().as_secs_f64()
        );
        let data_dir = out.join("data");
        if data_dir.exists() {
            std::fs::remove_dir_all(&data_dir).map_err(|e| format!("cannot clear {}: {e}", data_dir.display()))?;
        }
        std::fs::create_dir_all(out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
        let config = out.join("schema.toml");
        std::fs::write(&config, self.schema).map_err(|e| format!("cannot write {}: {e}", config.display()))?;
        let server = Server::start(self.bin, &config, &data_dir)?;
        for r in self.movies {
            let [id, title, year, genres, ..] = r.as_slice() else {
                continue;
            };
            let Some(&i) = self.item_ix.get(id) else { continue };
            let genres: Vec<&str> = genres.split_whitespace().collect();
            let mut body = json!({"title": title, "tags": genres});
            if let Some(first) = genres.first() {
                body["category"] = (*first).into();
            }
            if let Some(ms) = year.trim().parse::<i64>().ok().and_then(year_start_ms) {
                body["created_at"] = ms.into();
            }
            if let Some(e) = &emb[i] {
                body["embedding"] = json!(e);
            }
            server.send(
                "PUT",
                &format!("/v1/items/{}", self.item_ids[i]),
                &body.to_string(),
                "application/json",
            )?;
        }
        let mut body = String::new();
        for (n, r) in train.iter().enumerate() {
            let kinds: &[&str] = if r.rating >= 4 { &["view", "like"] } else { &["view"] };
            for kind in kinds {
                let line =
                    json!({"type": kind, "item": self.item_ids[r.item], "user": self.user_ids[r.user], "ts": r.ts});
                body.push_str(&line.to_string());
                body.push('\n');
            }
            if (n + 1) % 2_000 == 0 || n + 1 == train.len() {
                server.send("POST", "/v1/signals", &body, "application/x-ndjson")?;
                body.clear();
            }
        }
        let clock = server.send("GET", "/v1/clock", "", "application/json")?;
        let lsn = clock["lsn"].as_u64().ok_or("GET /v1/clock answered no lsn")?;

        // Every evaluated user's later movies, and each profile's top 10 for them.
        let mut relevant: BTreeMap<usize, BTreeSet<String>> = BTreeMap::new();
        for r in test {
            relevant
                .entry(r.user)
                .or_default()
                .insert(self.item_ids[r.item].clone());
        }
        let trained: BTreeSet<usize> = train.iter().map(|r| r.user).collect();
        let mut scores = Scores {
            all: vec![(0.0, 0.0); self.profiles.len()],
            warm: vec![(0.0, 0.0); self.profiles.len()],
            users: relevant.len() as f64,
            warm_users: relevant.keys().filter(|u| trained.contains(u)).count() as f64,
        };
        let started = std::time::Instant::now();
        for (user, rel) in &relevant {
            for (p, (_, q)) in self.profiles.iter().enumerate() {
                let r = server.send(
                    "GET",
                    &format!(
                        "/v1/rankings?{q}&user={}&filter=unseen&limit={TOP}&min_lsn={lsn}",
                        self.user_ids[*user]
                    ),
                    "",
                    "application/json",
                )?;
                let (hr, ndcg) = score(&ids(&r), rel);
                scores.all[p].0 += hr;
                scores.all[p].1 += ndcg;
                if trained.contains(user) {
                    scores.warm[p].0 += hr;
                    scores.warm[p].1 += ndcg;
                }
            }
        }
        println!(
            "{} rankings in {:.1} s",
            relevant.len() * self.profiles.len(),
            started.elapsed().as_secs_f64()
        );
        server.stop();
        Ok(scores)
    }
}

fn main() {
    if let Err(e) = run() {
        eprintln!("movielens_personal: {e}");
        std::process::exit(1);
    }
}
