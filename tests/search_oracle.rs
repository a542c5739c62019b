//! `q=` against what the log says: on random logs where items are put, retitled and
//! deleted, every item listed for a word contains it and every live item containing it is
//! listed (BM25 alone); within cohort trending, the listed items are exactly the cohort's
//! trending candidates that contain the word, each scored `0.5 · bm25 / max bm25 + 0.5 ·
//! score / max score` (and with a profile's transforms `f`, `g`: `0.5 · f(bm25) / max f(bm25)
//! + 0.5 · g(score) / max g(score)`); and 1, 2 and 4 workers answer alike.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use tidal::{ClockMode, Config, Durability, ItemMeta, NewSignal, RankQuery, Tidal};
use tidal_core::config::ProfileDef;

const T0: u64 = 1_700_000_000_000;
const WORDS: [&str; 6] = ["piano", "guitar", "jazz", "lesson", "live", "drums"];
const ITEMS: usize = 24;
const USERS: usize = 8;
const REGIONS: [&str; 2] = ["US", "EU"];

fn config(dir: &std::path::Path, workers: usize) -> Config {
    let mut c = Config::default_filled();
    c.engine.data_dir = dir.display().to_string();
    c.engine.clock = ClockMode::Event;
    c.engine.durability = Durability::Buffer;
    c.engine.workers = workers;
    c.engine.checkpoint_every = 0;
    c.cohort_dimensions = vec!["region".into()];
    // Deterministic BM25 (one segment of live documents) and nearest items.
    c.personalization.exact_search = true;
    c.signals.retain(|s| ["view", "like"].contains(&s.name.as_str()));
    // Trending with its text and profile terms transformed before they are fused.
    c.profiles.push(ProfileDef {
        name: "trending-t".into(),
        base: "trending".into(),
        transforms: [("text", "sqrt"), ("profile", "log1p")]
            .into_iter()
            .map(|(t, f)| (t.to_string(), f.to_string()))
            .collect(),
        ..ProfileDef::default()
    });
    c.validate().expect("valid test config");
    c
}

/// A score term's transform.
type Term = fn(f64) -> f64;

fn linear(x: f64) -> f64 {
    x
}

fn sqrt(x: f64) -> f64 {
    x.signum() * x.abs().sqrt()
}

fn log1p(x: f64) -> f64 {
    x.signum() * (1.0 + x.abs()).ln()
}

fn title(rng: &mut StdRng) -> String {
    (0..rng.gen_range(1..4))
        .map(|_| WORDS[rng.gen_range(0..WORDS.len())])
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs a random log; returns every answer read, checking each against the log.
fn run(seed: u64, workers: usize) -> Vec<String> {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(dir.path(), workers);
    let t = Tidal::open(config).expect("open");
    let mut rng = StdRng::seed_from_u64(seed);
    // The live items' title + text, as the log says.
    let mut live: HashMap<String, String> = HashMap::new();
    let mut read = Vec::new();
    for u in 0..USERS {
        let attrs: BTreeMap<String, String> = [("region".to_string(), REGIONS[u % 2].to_string())].into();
        t.put_user(&format!("u{u}"), attrs).expect("user");
    }
    let mut n = 0;
    for phase in 0..6 {
        let mut last = 0;
        for _ in 0..25 {
            let item = format!("i{}", rng.gen_range(0..ITEMS));
            let r = rng.gen_range(0..100);
            let ack = if r < 30 || phase == 0 {
                let (ti, tx) = (title(&mut rng), title(&mut rng));
                live.insert(item.clone(), format!("{ti} {tx}"));
                t.put_item(
                    &item,
                    ItemMeta {
                        title: Some(ti),
                        text: Some(tx),
                        creator: Some(format!("c{}", rng.gen_range(0..3))),
                        ..ItemMeta::default()
                    },
                )
                .expect("put")
                .lsn
            } else if r < 36 {
                live.remove(&item);
                t.delete_item(&item).expect("delete").lsn
            } else {
                n += 1;
                let s = NewSignal::new(["view", "like"][rng.gen_range(0..2)], item)
                    .user(format!("u{}", rng.gen_range(0..USERS)))
                    .ts(T0 + phase * 1000)
                    .id(format!("s{n}"));
                t.signal(s).expect("signal").lsn
            };
            last = ack;
        }
        let view = t.wait_visible(last).expect("visible");
        let rank = |q: &str| {
            let q = format!("{q}&min_lsn={last}");
            t.rank(&RankQuery::parse(&q).expect("q")).expect("rank")
        };
        let ctx = format!("seed {seed}, {workers} workers, phase {phase}");
        for word in WORDS {
            let has = |id: &str| live.get(id).is_some_and(|t| t.split(' ').any(|w| w == word));
            // BM25 alone: exactly the live items containing the word.
            let r = rank(&format!("q={word}&limit=100"));
            let listed: BTreeSet<String> = r.items.iter().map(|i| i.id.clone()).collect();
            let want: BTreeSet<String> = live.keys().filter(|id| has(id)).cloned().collect();
            assert_eq!(listed, want, "{ctx}: q={word}");
            read.push(format!(
                "{word}: {:?}",
                r.items.iter().map(|i| (&i.id, i.score.to_bits())).collect::<Vec<_>>()
            ));
            for region in REGIONS {
                let cohort = format!("cohort=region:{region}");
                let trending = rank(&format!("profile=trending&{cohort}&limit=500"));
                let scores: HashMap<&str, f64> = trending.items.iter().map(|i| (i.id.as_str(), i.score)).collect();
                let r = rank(&format!("q={word}&profile=trending&{cohort}&limit=100&explain=1"));
                let listed: BTreeSet<&str> = r.items.iter().map(|i| i.id.as_str()).collect();
                let want: BTreeSet<&str> = scores.keys().copied().filter(|id| has(id)).collect();
                assert_eq!(listed, want, "{ctx}: q={word} within {cohort} trending");
                let fused: [(&str, Term, Term); 2] = [("trending", linear, linear), ("trending-t", sqrt, log1p)];
                for (profile, text_f, profile_f) in fused {
                    let r = if profile == "trending" {
                        r.clone()
                    } else {
                        rank(&format!("q={word}&profile={profile}&{cohort}&limit=100&explain=1"))
                    };
                    let listed: BTreeSet<&str> = r.items.iter().map(|i| i.id.as_str()).collect();
                    assert_eq!(listed, want, "{ctx}: q={word} within {cohort} {profile}");
                    let max_score = want.iter().map(|id| profile_f(scores[id])).fold(0.0, f64::max);
                    let bm25 =
                        |i: &tidal::RankedItem| i.features.as_ref().expect("explain")["bm25"].as_f64().expect("bm25");
                    let max_bm25 = r.items.iter().map(|i| text_f(bm25(i))).fold(0.0, f64::max);
                    for i in &r.items {
                        let want =
                            0.5 * text_f(bm25(i)) / max_bm25 + 0.5 * profile_f(scores[i.id.as_str()]) / max_score;
                        assert!(
                            (i.score - want).abs() < 1e-9,
                            "{ctx}: {profile}: {} scores {} != {want}",
                            i.id,
                            i.score
                        );
                    }
                    read.push(format!(
                        "{word} {region} {profile}: {:?}",
                        r.items.iter().map(|i| &i.id).collect::<Vec<_>>()
                    ));
                }
            }
        }
        drop(view);
    }
    t.shutdown().expect("shutdown");
    read
}

#[test]
fn text_search_matches_the_log_for_any_number_of_workers() {
    for seed in [1u64, 2] {
        let one = run(seed, 1);
        for workers in [2, 4] {
            assert_eq!(one, run(seed, workers), "seed {seed}: {workers} workers differ from 1");
        }
    }
}
