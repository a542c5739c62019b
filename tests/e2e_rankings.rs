//! End to end through the real binary: ingest signals and items over HTTP, read rankings and
//! item features, and check them against SPEC §3's formulas computed here from the events.
//! Then kill -9 and restart: the same answers.

mod common;

use common::Server;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

const T0: u64 = 1_700_000_000_000;
const H: u64 = 3_600_000;

#[derive(Clone, Debug)]
struct Ev {
    kind: &'static str,
    item: String,
    weight: f64,
    ts_eff: u64,
    commit: u64,
}

/// SPEC §3 from scratch, for one item and type at clock `t`.
fn count(evs: &[Ev], item: &str, kind: &str, w: u64, g: u64, t: u64) -> f64 {
    evs.iter()
        .filter(|e| e.item == item && e.kind == kind && e.commit <= t && (e.ts_eff / g) * g + w > t)
        .map(|e| e.weight)
        .sum()
}
fn total(evs: &[Ev], item: &str, kind: &str, t: u64) -> f64 {
    evs.iter()
        .filter(|e| e.item == item && e.kind == kind && e.commit <= t)
        .map(|e| e.weight)
        .sum()
}
fn decay(evs: &[Ev], item: &str, kind: &str, h: u64, t: u64) -> f64 {
    evs.iter()
        .filter(|e| e.item == item && e.kind == kind && e.commit <= t)
        .map(|e| e.weight * (-((t - e.ts_eff) as f64) / h as f64).exp2())
        .sum()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-6 + 1e-9 * b.abs()
}

fn post_signals(s: &Server, batch: &[Value]) -> (u64, u64) {
    let (st, v) = s.post("/v1/signals", &Value::Array(batch.to_vec()));
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["accepted"].as_u64(), Some(batch.len() as u64), "{v}");
    (v["lsn"].as_u64().expect("lsn"), v["clock"].as_u64().expect("clock"))
}

#[test]
fn rankings_and_features_follow_the_formulas_and_survive_kill9() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(dir.path(), &["--clock", "event"], &[]);
    let items: Vec<String> = (0..12).map(|i| format!("item-{i:02}")).collect();
    for (i, id) in items.iter().enumerate() {
        let (st, v) = s.put(
            &format!("/v1/items/{id}"),
            &json!({"creator": format!("c{}", i % 3), "category": if i % 2 == 0 {"music"} else {"news"},
                    "title": format!("title {i}"), "tags": [format!("t{}", i % 4)], "created_at": T0 - 1000 * i as u64}),
        );
        assert_eq!(st, 200, "{v}");
    }
    let mut rng = StdRng::seed_from_u64(7);
    let kinds = ["view", "like", "share", "skip"];
    let mut evs: Vec<Ev> = Vec::new();
    let mut last_lsn = 0;
    let mut clock = 0;
    // 30 requests spread over 3 hours of event time, some events late (ts behind the clock).
    for step in 0..30u64 {
        let base = T0 + step * 6 * 60_000;
        let mut batch = Vec::new();
        let mut pending = Vec::new();
        for _ in 0..rng.gen_range(1..12) {
            let item = items[(rng.gen_range(0.0f64..1.0).powi(2) * items.len() as f64) as usize].clone();
            let kind = kinds[rng.gen_range(0..kinds.len())];
            let weight = [1.0, 1.0, 2.0, 0.5][rng.gen_range(0..4)];
            let late = rng.gen_bool(0.2);
            let ts = if late {
                base.saturating_sub(rng.gen_range(0..2 * H))
            } else {
                base + rng.gen_range(0..60_000)
            };
            batch.push(json!({"type": kind, "item": item, "weight": weight, "ts": ts}));
            pending.push((kind, item, weight, ts));
        }
        let (lsn, commit) = post_signals(&s, &batch);
        assert!(commit >= clock, "the clock never goes back");
        clock = commit;
        last_lsn = lsn;
        for (kind, item, weight, ts) in pending {
            evs.push(Ev {
                kind,
                item,
                weight,
                ts_eff: ts.min(commit),
                commit,
            });
        }
    }
    let (st, v) = s.post("/v1/clock", &json!({"advance_to": T0 + 200 * 60_000}));
    assert_eq!(st, 200, "{v}");
    let clock_lsn = v["lsn"].as_u64().expect("lsn");
    assert!(clock_lsn > last_lsn);

    // Item features at the serving clock, read-your-writes.
    let check_features = |s: &Server| {
        for id in &items {
            let (st, v) = s.get(&format!("/v1/items/{id}?min_lsn={clock_lsn}"));
            assert_eq!(st, 200, "{v}");
            let t = v["as_of"]["clock"].as_u64().expect("as_of.clock");
            assert_eq!(t, T0 + 200 * 60_000);
            for kind in kinds {
                let f = &v["signals"][kind];
                let expect_total = total(&evs, id, kind, t);
                let got_total = f["total"].as_f64().unwrap_or(0.0);
                assert!(
                    close(got_total, expect_total),
                    "{id} {kind} total {got_total} vs {expect_total}"
                );
                for (name, w, g) in [("1h", H, 60_000), ("24h", 24 * H, 24 * 60_000)] {
                    let c = count(&evs, id, kind, w, g, t);
                    let c2 = count(&evs, id, kind, 2 * w, g, t);
                    let got = f["counts"][name].as_f64().unwrap_or(0.0);
                    assert!(close(got, c), "{id} {kind} count {name}: {got} vs {c}");
                    let hours = w as f64 / H as f64;
                    let vel = f["velocity"][name].as_f64().unwrap_or(0.0);
                    assert!(
                        close(vel, c / hours),
                        "{id} {kind} velocity {name}: {vel} vs {}",
                        c / hours
                    );
                    let acc = f["acceleration"][name].as_f64().unwrap_or(0.0);
                    let want = (c - (c2 - c)) / hours;
                    assert!(close(acc, want), "{id} {kind} acceleration {name}: {acc} vs {want}");
                }
                for (name, h) in [("1h", H), ("24h", 24 * H), ("7d", 7 * 24 * H)] {
                    let d = decay(&evs, id, kind, h, t);
                    let got = f["decay"][name].as_f64().unwrap_or(0.0);
                    assert!(close(got, d), "{id} {kind} decay {name}: {got} vs {d}");
                }
            }
        }
    };
    check_features(&s);

    // Rankings: trending (weighted velocity), hot, top, rising, new — against the oracle.
    let t = T0 + 200 * 60_000;
    let expect = |score: &dyn Fn(&str) -> f64, listed: &dyn Fn(&str) -> bool| -> Vec<(String, f64)> {
        let mut v: Vec<(String, f64)> = items
            .iter()
            .filter(|i| listed(i))
            .map(|i| (i.clone(), score(i)))
            .filter(|(_, sc)| *sc > 0.0)
            .collect();
        v.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        v
    };
    let all = |_: &str| true;
    let same = |got: Vec<(String, f64)>, want: Vec<(String, f64)>, what: &str| {
        let gi: Vec<_> = got.iter().map(|x| x.0.clone()).collect();
        let wi: Vec<_> = want.iter().map(|x| x.0.clone()).collect();
        assert_eq!(gi, wi, "{what}: order");
        for (g, w) in got.iter().zip(&want) {
            assert!(close(g.1, w.1), "{what}: {} score {} vs {}", g.0, g.1, w.1);
        }
    };
    let trending = |i: &str| {
        (count(&evs, i, "view", 24 * H, 24 * 60_000, t) + 3.0 * count(&evs, i, "like", 24 * H, 24 * 60_000, t)) / 24.0
    };
    same(
        s.ranking("profile=trending&signals=view:1,like:3&window=24h&limit=100"),
        expect(&trending, &all),
        "trending",
    );
    let hot = |i: &str| decay(&evs, i, "share", H, t);
    same(
        s.ranking("profile=hot&signal=share&half_life=1h&limit=100"),
        expect(&hot, &all),
        "hot",
    );
    let top = |i: &str| total(&evs, i, "view", t) + 2.0 * total(&evs, i, "like", t);
    same(
        s.ranking("profile=top&signals=view:1,like:2&limit=100"),
        expect(&top, &all),
        "top",
    );
    let rising = |i: &str| {
        let c = count(&evs, i, "view", H, 60_000, t);
        let c2 = count(&evs, i, "view", 2 * H, 60_000, t);
        c - (c2 - c)
    };
    same(
        s.ranking("profile=rising&signal=view&window=1h&limit=100"),
        expect(&rising, &all),
        "rising",
    );
    let music = |i: &str| {
        i.trim_start_matches("item-")
            .parse::<usize>()
            .map(|n| n % 2 == 0)
            .unwrap_or(false)
    };
    let trending_view = |i: &str| count(&evs, i, "view", 24 * H, 24 * 60_000, t) / 24.0;
    same(
        s.ranking("profile=trending&signal=view&window=24h&category=music&limit=100"),
        expect(&trending_view, &music),
        "category",
    );
    let newest = s.ranking("profile=new&limit=3");
    assert_eq!(
        newest.iter().map(|x| x.0.as_str()).collect::<Vec<_>>(),
        ["item-00", "item-01", "item-02"]
    );

    // Paging: two pages of 3 equal the first 6.
    let (_, p1) = s.get("/v1/rankings?profile=top&signal=view&limit=3");
    let cursor = p1["next_cursor"].as_str().expect("next_cursor").to_string();
    let (_, p2) = s.get(&format!("/v1/rankings?profile=top&signal=view&limit=3&cursor={cursor}"));
    let six = s.ranking("profile=top&signal=view&limit=6");
    let paged: Vec<String> = p1["items"]
        .as_array()
        .into_iter()
        .chain(p2["items"].as_array())
        .flatten()
        .map(|i| i["id"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(paged, six.iter().map(|x| x.0.clone()).collect::<Vec<_>>());

    // Deleting an item drops it from every ranking.
    let victim = six[0].0.clone();
    let (st, del) = s.delete(&format!("/v1/items/{victim}"));
    assert_eq!(st, 200, "{del}");
    assert_eq!(del["id"], victim.as_str());
    assert_eq!(del["lsn"].as_u64(), Some(clock_lsn + 1), "{del}");
    assert!(del["clock"].as_u64().is_some(), "{del}");
    let (_, v) = s.get(&format!(
        "/v1/rankings?profile=top&signal=view&limit=100&min_lsn={}",
        del["lsn"]
    ));
    assert!(
        !v["items"]
            .as_array()
            .expect("items")
            .iter()
            .any(|i| i["id"] == victim.as_str()),
        "{victim} still ranked: {v}"
    );
    let (st, _) = s.get(&format!("/v1/items/{victim}"));
    assert_eq!(st, 404);

    let before: Vec<Value> = [
        "profile=top&signal=view&limit=100",
        "profile=hot&signal=share&half_life=1h",
        "profile=trending",
    ]
    .iter()
    .map(|q| s.get(&format!("/v1/rankings?{q}")).1["items"].clone())
    .collect();
    let dir_path = s.data_dir.clone();
    s.kill9();
    let s = Server::start(&dir_path, &["--clock", "event"], &[]);
    let after: Vec<Value> = [
        "profile=top&signal=view&limit=100",
        "profile=hot&signal=share&half_life=1h",
        "profile=trending",
    ]
    .iter()
    .map(|q| s.get(&format!("/v1/rankings?{q}")).1["items"].clone())
    .collect();
    assert_eq!(before, after, "rankings after kill -9 and restart");
    // On the event clock the serving state's lag is measured against the log's clock, not
    // the wall clock (years ahead of these events): everything recovered is served.
    assert_eq!(s.metric("tidal_frontier_lag_ms"), Some(0));
    evs.retain(|e| e.item != victim);
    let (st, _) = s.get(&format!("/v1/items/{victim}"));
    assert_eq!(st, 404);
}

#[test]
fn read_your_writes_in_the_wall_clock() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(dir.path(), &[], &[]);
    for i in 0..20 {
        let (st, v) = s.post(
            "/v1/signals",
            &json!({"type": "view", "item": format!("w{i}"), "user": "u1"}),
        );
        assert_eq!(st, 200, "{v}");
        let lsn = v["lsn"].as_u64().expect("lsn");
        let (st, r) = s.get(&format!(
            "/v1/rankings?profile=top&signal=view&limit=1000&min_lsn={lsn}"
        ));
        assert_eq!(st, 200, "{r}");
        assert!(r["as_of"]["lsn"].as_u64().expect("as_of.lsn") >= lsn);
        assert!(
            r["items"]
                .as_array()
                .expect("items")
                .iter()
                .any(|x| x["id"] == format!("w{i}").as_str()),
            "{r}"
        );
    }
    let (st, v) = s.get("/healthz");
    assert_eq!(st, 200, "{v}");
    let (st, v) = s.get("/v1/schema");
    assert_eq!(st, 200);
    assert_eq!(v["signals"][0]["name"], "view");
    assert_eq!(v["signals"][0]["windows"][1]["size"], "24h");
    assert_eq!(v["signals"][0]["windows"][1]["granularity"], "24m");
    let (st, v) = s.get("/v1/items/w0");
    assert_eq!(st, 200, "{v}");
    let text = ureq::get(&s.url("/metrics"))
        .call()
        .expect("metrics")
        .into_string()
        .expect("text");
    assert!(text.contains("tidal_signals_accepted_total 20"), "{text}");
    // Reads are timed by route: the 20 rankings and the item.
    assert!(
        text.contains("tidal_query_seconds_count{route=\"rankings\"} 20"),
        "{text}"
    );
    assert!(text.contains("tidal_query_seconds_count{route=\"items\"} 1"), "{text}");
    // Every record the WAL holds: the 20 writes and the configuration's.
    let value = |name: &str| -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
    };
    let records = value("tidal_wal_records_total").expect("tidal_wal_records_total");
    assert!(records >= 21.0, "{records}");
    // Every acknowledged write's commit is timed: 20 of them, each a positive time.
    assert!(text.contains("tidal_wal_commit_seconds_count 20"), "{text}");
    let sum: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("tidal_wal_commit_seconds_sum ")?.trim().parse().ok())
        .expect("tidal_wal_commit_seconds_sum");
    assert!(sum > 0.0 && sum < 20.0, "{sum}");
    // Every stage's busy time is there; the sink and the windows have done work for the 20
    // writes the reads above saw.
    let busy = |stage: &str| -> f64 {
        let prefix = format!("tidal_stage_busy_seconds{{stage=\"{stage}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(prefix.as_str())?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no busy time for {stage}: {text}"))
    };
    for stage in ["source", "entities", "windows", "decay", "users", "cohorts"] {
        assert!(busy(stage) >= 0.0, "{stage}");
    }
    assert!(busy("sink") > 0.0 && busy("windows") > 0.0, "{text}");
}
