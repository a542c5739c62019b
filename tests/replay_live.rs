//! Replay equals live: a real `tidal serve --clock event` takes items and signals, and at
//! several clocks (moved there with `POST /v1/clock`) its rankings are recorded. After the
//! server is killed, `tidal replay` of its WAL at those clocks answers the same queries with
//! identical ids and scores, personal queries (`for_you`, a user's unseen filter) included.

mod common;
mod replay_support;

use common::Server;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use replay_support::{HOUR, MIN, T0, json_of, replay_cli};
use serde_json::{Value, json};

const QUERIES: [&str; 12] = [
    "profile=trending&window=1h",
    "profile=trending&signals=view:1,like:3&window=24h&limit=5",
    "profile=hot&half_life=1h",
    "profile=rising&window=1h",
    "profile=top&category=music",
    "profile=new&limit=4",
    // Text: BM25 alone, and search within trending (a title changes midway).
    "q=piano",
    "q=piano&profile=trending&window=24h",
    // Personal: preference vectors over the embeddings, user state, and both together.
    "profile=for_you&user=u1&filter=all",
    "profile=for_you&user=u2&limit=5",
    "profile=trending&window=24h&user=u3&filter=unseen",
    "q=guitar&profile=for_you&user=u4&filter=all",
];

#[test]
fn replay_answers_what_the_live_server_answered() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &["--clock", "event"], &[]);
    let items: Vec<String> = (0..10).map(|i| format!("m{i}")).collect();
    for (i, id) in items.iter().enumerate() {
        let cat = if i % 2 == 0 { "music" } else { "news" };
        let (st, v) = s.put(
            &format!("/v1/items/{id}"),
            &json!({"category": cat, "created_at": T0 - 1000 * i as u64,
                "title": format!("{} {i}", if i % 3 == 0 { "piano" } else { "guitar" }),
                "embedding": [1.0, 0.2 * i as f32, (i % 3) as f32 - 1.0]}),
        );
        assert_eq!(st, 200, "{v}");
    }
    let mut rng = StdRng::seed_from_u64(11);
    let checkpoints = [T0 + 40 * MIN, T0 + 2 * HOUR + 5 * MIN, T0 + 4 * HOUR];
    let mut live: Vec<(u64, Vec<Value>)> = Vec::new();
    let mut next = 0;
    for step in 0..24u64 {
        let clock = T0 + step * 10 * MIN;
        if step == 12 {
            let (st, v) = s.put("/v1/items/m3", &json!({"category": "news", "title": "guitar again"}));
            assert_eq!(st, 200, "{v}");
        }
        while next < checkpoints.len() && checkpoints[next] < clock {
            live.push((checkpoints[next], read_live(&s, checkpoints[next])));
            next += 1;
        }
        let batch: Vec<Value> = (0..rng.gen_range(1..8))
            .map(|n| {
                let item = &items[(rng.gen_range(0.0f64..1.0).powi(2) * items.len() as f64) as usize];
                let kind = ["view", "view", "like", "share"][rng.gen_range(0..4)];
                // Some events arrive late: ts behind the commit clock.
                let ts = clock - rng.gen_range(0..3) * 7 * MIN;
                json!({"type": kind, "item": item, "user": format!("u{}", (step as usize + n) % 6), "ts": ts})
            })
            .collect();
        let (st, v) = s.post("/v1/signals", &Value::Array(batch));
        assert_eq!(st, 200, "{v}");
    }
    while next < checkpoints.len() {
        live.push((checkpoints[next], read_live(&s, checkpoints[next])));
        next += 1;
    }
    let wal = s.data_dir.join("wal");
    s.kill9();

    let mut args: Vec<String> = vec!["--wal".into(), wal.display().to_string(), "--json".into(), "-".into()];
    for (t, _) in &live {
        args.extend(["--at".into(), t.to_string()]);
    }
    for q in QUERIES {
        args.extend(["--query".into(), q.into()]);
    }
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    // Every query but rising lists something at every clock, the personal ones at some
    // clock (a user's unseen items run out as the user sees them).
    let listed = |a: &Value| a["items"].as_array().is_some_and(|v| !v.is_empty());
    for (i, q) in QUERIES.iter().enumerate() {
        if q.contains("rising") {
            continue;
        }
        if q.contains("user=") {
            assert!(live.iter().any(|(_, a)| listed(&a[i])), "live answered nothing for {q}");
        } else {
            for (t, a) in &live {
                assert!(listed(&a[i]), "live answered nothing at {t} for {q}");
            }
        }
    }
    let report = json_of(&replay_cli(&argv));
    assert_eq!(report["variants"][0]["origin"], "WAL");
    for (t, answers) in &live {
        for (q, answer) in QUERIES.iter().zip(answers) {
            let row = report["results"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["at"] == *t && r["query"] == *q)
                .unwrap_or_else(|| panic!("no result at {t} for {q}"));
            let want: Vec<(Value, Value)> = answer["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| (i["id"].clone(), i["score"].clone()))
                .collect();
            let got: Vec<(Value, Value)> = row["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| (i["id"].clone(), i["score"].clone()))
                .collect();
            assert_eq!(got, want, "at {t} for {q}");
            assert_eq!(row["as_of"]["clock"], answer["as_of"]["clock"]);
        }
    }
}

/// Moves the event clock to `t` and reads every query as of it.
fn read_live(s: &Server, t: u64) -> Vec<Value> {
    let (st, v) = s.post("/v1/clock", &json!({"advance_to": t}));
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["clock"], t, "{v}");
    let lsn = v["lsn"].as_u64().expect("lsn");
    QUERIES
        .iter()
        .map(|q| {
            let (st, ans) = s.get(&format!("/v1/rankings?{q}&min_lsn={lsn}"));
            assert_eq!(st, 200, "{q}: {ans}");
            assert_eq!(ans["as_of"]["clock"], t, "{q}: {ans}");
            if q.starts_with("q=") {
                assert!(ans["items"].as_array().is_some_and(|a| !a.is_empty()), "{q}: {ans}");
            }
            ans
        })
        .collect()
}
