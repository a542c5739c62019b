//! tidal as a library: the facade from several threads at once, reopening after a drop, and
//! the same answers as the HTTP server for the same writes.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use common::Server;
use tidal::{ClockMode, Config, ItemMeta, NewSignal, RankQuery, Tidal};

fn config(dir: &std::path::Path) -> Config {
    let mut c = Config::default_filled();
    c.engine.data_dir = dir.display().to_string();
    c
}

/// Writers on four threads, readers on two: every acknowledged signal is counted once, and
/// readers always see a consistent ranking (never more than what was acknowledged).
#[test]
fn concurrent_writers_and_readers_through_the_facade() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tidal = Arc::new(Tidal::open(config(dir.path())).expect("open"));
    let done = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|r| {
            let (tidal, done) = (tidal.clone(), done.clone());
            std::thread::spawn(move || {
                let mut reads = 0;
                while !done.load(Ordering::Acquire) || reads < 5 {
                    let q = RankQuery::new().profile("top").signal("like").limit(50);
                    let ranking = tidal.rank(&q).expect("rank");
                    for w in ranking.items.windows(2) {
                        assert!(w[0].score >= w[1].score, "reader {r}: out of order");
                    }
                    assert!(ranking.items.iter().all(|i| i.score <= 4.0 * 60.0));
                    reads += 1;
                }
                reads
            })
        })
        .collect();
    let writers: Vec<_> = (0..4u64)
        .map(|w| {
            let tidal = tidal.clone();
            std::thread::spawn(move || {
                let mut rng = StdRng::seed_from_u64(w);
                let mut acked: BTreeMap<String, u64> = BTreeMap::new();
                let mut last_lsn = 0;
                for _ in 0..60 {
                    let n = rng.gen_range(1..8);
                    let batch: Vec<NewSignal> = (0..n)
                        .map(|i| {
                            let item = format!("i{}", rng.gen_range(0..20));
                            *acked.entry(item.clone()).or_default() += 1;
                            // An idempotency key: distinct signals are never dedup'd.
                            NewSignal::new("like", item).id(format!("w{w}-{last_lsn}-{i}-{}", rng.r#gen::<u64>()))
                        })
                        .collect();
                    let ack = tidal.signals(batch).expect("write");
                    assert_eq!(ack.accepted, n);
                    assert!(ack.lsn > last_lsn, "LSNs increase for one writer");
                    last_lsn = ack.lsn;
                }
                (acked, last_lsn)
            })
        })
        .collect();
    let mut want: BTreeMap<String, u64> = BTreeMap::new();
    let mut max_lsn = 0;
    for w in writers {
        let (acked, lsn) = w.join().expect("writer");
        for (k, v) in acked {
            *want.entry(k).or_default() += v;
        }
        max_lsn = max_lsn.max(lsn);
    }
    done.store(true, Ordering::Release);
    for r in readers {
        assert!(r.join().expect("reader") >= 5);
    }
    let ranking = tidal
        .rank(
            &RankQuery::new()
                .profile("top")
                .signal("like")
                .limit(100)
                .min_lsn(max_lsn),
        )
        .expect("rank");
    let got: BTreeMap<String, u64> = ranking.items.iter().map(|i| (i.id.clone(), i.score as u64)).collect();
    assert_eq!(got, want, "every acknowledged signal is counted exactly once");
    tidal.shutdown().expect("shutdown");
}

/// Dropping the engine without `shutdown` loses nothing acknowledged.
#[test]
fn drop_without_shutdown_then_reopen_keeps_every_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    let query = RankQuery::new().profile("top").signals(&[("view", 1.0), ("like", 3.0)]);
    let before = {
        let tidal = Tidal::open(config(dir.path())).expect("open");
        tidal
            .put_item(
                "a",
                ItemMeta {
                    creator: Some("ann".into()),
                    ..Default::default()
                },
            )
            .expect("put");
        for i in 0..30 {
            tidal
                .signals(vec![
                    NewSignal::new(if i % 3 == 0 { "like" } else { "view" }, format!("i{}", i % 7)).id(format!("k{i}")),
                ])
                .expect("write");
        }
        let del = tidal.delete_item("i3").expect("delete");
        let r = tidal.rank(&query.clone().min_lsn(del.lsn)).expect("rank");
        assert!(!r.items.iter().any(|i| i.id == "i3"));
        r.items
        // dropped here, no shutdown call
    };
    let tidal = Tidal::open(config(dir.path())).expect("reopen");
    assert_eq!(tidal.rank(&query).expect("rank").items, before);
    assert_eq!(
        tidal
            .item("a")
            .expect("item")
            .and_then(|v| v.meta)
            .and_then(|m| m.creator),
        Some("ann".into())
    );
    assert!(tidal.item("i3").expect("item").is_none());
    // A second engine on the same directory is refused while the first holds it.
    assert!(matches!(
        Tidal::open(config(dir.path())),
        Err(tidal::Error::Locked { .. })
    ));
}

/// The WAL records the configuration when it changes, not at every start: a start restored
/// from the shutdown checkpoint (which covers the configuration record) writes nothing.
#[test]
fn an_unchanged_configuration_is_recorded_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let open_shut = |c: Config| {
        std::thread::sleep(std::time::Duration::from_millis(5));
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_millis() as u64;
        let tidal = Tidal::open(c).expect("open");
        // Served at the clock of now, not of the checkpoint (behind what readers saw).
        assert!(tidal.view().clock_ms() >= started, "the serving clock after a restart");
        let lsn = tidal.stats().wal_lsn;
        tidal.shutdown().expect("shutdown");
        lsn
    };
    let first = {
        let tidal = Tidal::open(config(dir.path())).expect("open");
        tidal.signals(vec![NewSignal::new("view", "a")]).expect("write");
        let lsn = tidal.stats().wal_lsn;
        tidal.shutdown().expect("shutdown");
        lsn
    };
    assert_eq!(open_shut(config(dir.path())), first, "a clean restart records nothing");
    assert_eq!(open_shut(config(dir.path())), first, "nor a second one");
    // Another setting is recorded once.
    let mut other = config(dir.path());
    other.server.read_your_writes_timeout_ms += 1;
    assert_eq!(
        open_shut(other.clone()),
        first + 1,
        "a changed configuration is recorded"
    );
    assert_eq!(open_shut(other.clone()), first + 1, "once");
    // Without the note of the last one, the configuration is recorded again (to be sure).
    std::fs::remove_file(dir.path().join("last-config.json")).expect("the note exists");
    assert_eq!(open_shut(other), first + 2);
}

/// The same writes through the facade and through the real HTTP server give the same
/// rankings (ids and scores) and item views.
#[test]
fn facade_and_http_server_answer_alike() {
    let t0 = 1_700_000_000_000u64;
    let mut rng = StdRng::seed_from_u64(7);
    let kinds = ["view", "like", "share", "skip", "completion"];
    let mut batches: Vec<Vec<Value>> = Vec::new();
    for b in 0..20u64 {
        batches.push(
            (0..rng.gen_range(1..10))
                .map(|_| {
                    json!({
                        "type": kinds[rng.gen_range(0..kinds.len())],
                        "item": format!("m{}", rng.gen_range(0..15)),
                        "user": format!("u{}", rng.gen_range(0..5)),
                        "weight": rng.gen_range(1..4) as f64 * 0.5,
                        "ts": t0 + b * 600_000 - rng.gen_range(0..3_600_000u64),
                    })
                })
                .collect(),
        );
    }
    let items: Vec<(String, Value)> = (0..15)
        .map(|i| {
            (
                format!("m{i}"),
                json!({"creator": format!("c{}", i % 4), "category": if i % 2 == 0 { "even" } else { "odd" }, "created_at": t0 + i * 1000}),
            )
        })
        .collect();
    let queries = [
        "profile=trending",
        "profile=trending&window=24h&signals=view:1,like:3",
        "profile=rising&signal=view",
        "profile=hot&half_life=1h&explain=1",
        "profile=top&category=even&max_per_creator=1",
        "profile=new&limit=5",
    ];

    let dir = tempfile::tempdir().expect("tempdir");
    let mut c = config(&dir.path().join("lib"));
    c.engine.clock = ClockMode::Event;
    let lib = Tidal::open(c).expect("open");
    let server = Server::start(&dir.path().join("http"), &["--clock", "event"], &[]);
    for (id, body) in &items {
        let meta: ItemMeta = serde_json::from_value(body.clone()).expect("meta");
        lib.put_item(id, meta).expect("put");
        let (st, v) = server.put(&format!("/v1/items/{id}"), body);
        assert_eq!(st, 200, "{v}");
    }
    let (mut lib_lsn, mut http_lsn) = (0, 0);
    for batch in &batches {
        let sigs: Vec<NewSignal> = batch
            .iter()
            .map(|v| serde_json::from_value(v.clone()).expect("signal"))
            .collect();
        let ack = lib.signals(sigs).expect("write");
        let (st, v) = server.post("/v1/signals", &Value::Array(batch.clone()));
        assert_eq!(st, 200, "{v}");
        assert_eq!(v["clock"].as_u64(), Some(ack.clock), "the same clock");
        (lib_lsn, http_lsn) = (ack.lsn, v["lsn"].as_u64().expect("lsn"));
    }
    for q in queries {
        let lib_r = lib
            .rank(&RankQuery::parse(q).expect("query").min_lsn(lib_lsn))
            .expect("rank");
        let lib_r = serde_json::to_value(&lib_r).expect("json");
        let (st, http_r) = server.get(&format!("/v1/rankings?{q}&min_lsn={http_lsn}"));
        assert_eq!(st, 200, "{http_r}");
        assert!(!lib_r["items"].as_array().expect("items").is_empty(), "{q}");
        assert_eq!(lib_r["items"], http_r["items"], "{q}");
        assert_eq!(lib_r["as_of"]["clock"], http_r["as_of"]["clock"], "{q}");
    }
    for (id, _) in &items {
        let lib_v = serde_json::to_value(lib.item(id).expect("item")).expect("json");
        let (st, http_v) = server.get(&format!("/v1/items/{id}"));
        assert_eq!(st, 200);
        assert_eq!(lib_v["signals"], http_v["signals"], "{id}");
        assert_eq!(lib_v["creator"], http_v["creator"], "{id}");
    }
    lib.shutdown().expect("shutdown");
}

/// SPEC §3: equal scores are ordered by id. Two items whose weighted counts sum to the same
/// number (4 views and 1 like, 1 view and 2 likes, at view:1, like:3) score exactly alike
/// in trending and rising, however the sum is split: the one with the smaller id first.
#[test]
fn equal_weighted_counts_tie_exactly_and_order_by_id() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tidal = Tidal::open(config(dir.path())).expect("open");
    let mut batch = Vec::new();
    for (item, views, likes) in [("a", 4, 1), ("b", 1, 2)] {
        // Each its own id: byte-identical signals would be duplicates.
        batch.extend((0..views).map(|i| NewSignal::new("view", item).id(format!("{item}-v{i}"))));
        batch.extend((0..likes).map(|i| NewSignal::new("like", item).id(format!("{item}-l{i}"))));
    }
    let ack = tidal.signals(batch).expect("write");
    for profile in ["trending", "rising"] {
        let q = RankQuery::parse(&format!("profile={profile}&window=24h&signals=view:1,like:3"))
            .expect("query")
            .min_lsn(ack.lsn);
        let items = tidal.rank(&q).expect("rank").items;
        let got: Vec<(&str, f64)> = items.iter().map(|i| (i.id.as_str(), i.score)).collect();
        assert_eq!(got.len(), 2, "{profile}: {got:?}");
        assert_eq!(got[0].1, got[1].1, "{profile}: equal sums score alike: {got:?}");
        assert_eq!((got[0].0, got[1].0), ("a", "b"), "{profile}: ties by id: {got:?}");
    }
}
