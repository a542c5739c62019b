//! Durability through the real binary: kill -9 during concurrent ingest loses no acknowledged
//! signal; a torn tail is truncated on restart; corruption in the middle refuses to start and
//! names the file and offset.

mod common;

use std::collections::BTreeSet;
use std::io::{Seek, SeekFrom, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Server, tidal};
use serde_json::json;

fn segments(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir.join("wal"))
        .expect("wal dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    v.sort();
    v
}

#[test]
fn kill9_during_concurrent_ingest_keeps_every_acknowledged_signal() {
    kill9_during_ingest(&[]);
}

/// The same with a checkpoint every 300 signals: the kill lands during checkpoints, and the
/// restart loads the newest whole one and replays the WAL after it.
#[test]
fn kill9_during_checkpoints_keeps_every_acknowledged_signal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("tidal.toml");
    std::fs::write(&cfg, "[engine]\ncheckpoint_every = 300\n").expect("config");
    kill9_during_ingest(&["--config", cfg.to_str().expect("path")]);
}

fn kill9_during_ingest(args: &[&str]) {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(dir.path(), args, &[]);
    let acked: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for t in 0..4 {
        let url = s.url("/v1/signals");
        let acked = acked.clone();
        let stop = stop.clone();
        threads.push(std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                // Each request: 5 signals on its own items, so presence is checkable per item.
                let ids: Vec<String> = (0..5).map(|k| format!("k{t}-{n}-{k}")).collect();
                let body: Vec<_> = ids
                    .iter()
                    .map(|i| json!({"type": "like", "item": i, "user": "u"}))
                    .collect();
                let r = ureq::post(&url)
                    .timeout(Duration::from_secs(5))
                    .send_string(&serde_json::Value::Array(body).to_string());
                match r {
                    Ok(resp) if resp.status() == 200 => acked.lock().expect("lock").extend(ids),
                    _ => break,
                }
                n += 1;
            }
        }));
    }
    common::wait_until("some acknowledged writes", Duration::from_secs(30), || {
        acked.lock().expect("lock").len() >= 1000
    });
    let data = s.data_dir.clone();
    s.kill9();
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    let acked = acked.lock().expect("lock").clone();
    let s = Server::start(&data, args, &[]);
    let (st, v) = s.get("/v1/rankings?profile=top&signal=like&limit=1000");
    assert_eq!(st, 200, "{v}");
    let mut missing = Vec::new();
    for id in &acked {
        let (st, v) = s.get(&format!("/v1/items/{id}"));
        if st != 200 || v["signals"]["like"]["total"].as_f64() != Some(1.0) {
            missing.push(id.clone());
        }
    }
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged signals lost, e.g. {:?}",
        missing.len(),
        acked.len(),
        &missing[..missing.len().min(5)]
    );
}

#[test]
fn torn_tail_is_truncated_and_corruption_in_the_middle_refuses_to_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(dir.path(), &[], &[]);
    for i in 0..50 {
        let (st, v) = s.post("/v1/signals", &json!({"type": "view", "item": format!("i{i}")}));
        assert_eq!(st, 200, "{v}");
    }
    let data = s.data_dir.clone();
    s.kill9();

    // A torn tail: half a record right after the last one (the zeros allocated past the
    // records follow it).
    let last = segments(&data).pop().expect("a segment");
    let mut reader = tidal_sources::wal::WalReader::open(data.join("wal"), false).expect("reader");
    // The 50 signals and the schema the server logged at its start.
    assert_eq!(
        reader.by_ref().map(|b| b.expect("batch").records.len()).sum::<usize>(),
        51
    );
    let (file, len) = reader.end_position().expect("the records' end");
    assert_eq!(file, last);
    let mut f = std::fs::OpenOptions::new().write(true).open(&last).expect("open");
    f.seek(SeekFrom::Start(len)).expect("seek");
    f.write_all(&[200, 0, 0, 0, 1, 2, 3, 4, 5]).expect("write");
    drop(f);
    let s = Server::start(&data, &[], &[]);
    let (st, v) = s.get("/v1/items/i49");
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["signals"]["view"]["total"].as_f64(), Some(1.0));
    s.kill9();
    assert!(std::fs::metadata(&last).expect("meta").len() >= len);

    // Corruption in the middle: flip a byte inside an early record.
    let first = segments(&data).remove(0);
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&first)
        .expect("open");
    f.seek(SeekFrom::Start(100)).expect("seek");
    f.write_all(&[0xAB]).expect("write");
    drop(f);
    let out = tidal()
        .arg("serve")
        .arg("--data-dir")
        .arg(&data)
        .arg("--listen")
        .arg("127.0.0.1:0")
        .env("TIDAL_LOG", "error")
        .output()
        .expect("run");
    assert!(!out.status.success(), "serve must refuse a corrupt WAL");
    let err = String::from_utf8_lossy(&out.stderr);
    let name = first.file_name().expect("name").to_string_lossy().to_string();
    assert!(
        err.contains(&name) && err.contains("offset"),
        "error should name the file and offset: {err}"
    );

    let out = tidal()
        .arg("wal")
        .arg("verify")
        .arg(data.join("wal"))
        .output()
        .expect("run");
    assert!(!out.status.success(), "verify must fail on a corrupt WAL");
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(all.contains(&name), "verify should name the file: {all}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("CORRUPT") && stdout.contains("records") && !all.contains("run `tidal wal verify"),
        "verify shows what it read before the damage, and does not send the reader to itself: {all}"
    );
}

#[test]
fn wal_tools_read_a_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start(dir.path(), &[], &[]);
    let (st, _) = s.post(
        "/v1/signals",
        &json!([{"type": "view", "item": "a"}, {"type": "like", "item": "b", "user": "u"}]),
    );
    assert_eq!(st, 200);
    let (st, _) = s.put("/v1/items/a", &json!({"title": "A"}));
    assert_eq!(st, 200);
    let data = s.data_dir.clone();
    s.kill9();
    let out = tidal()
        .arg("wal")
        .arg("verify")
        .arg(data.join("wal"))
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = tidal()
        .arg("wal")
        .arg("inspect")
        .arg(data.join("wal"))
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("like") && text.contains("\"b\"") || text.contains(" b"),
        "{text}"
    );
    // The data directory itself reads as its WAL; a folder without segments is an error,
    // not an empty success.
    let of_data = tidal().arg("wal").arg("verify").arg(&data).output().expect("run");
    assert!(of_data.status.success(), "{}", String::from_utf8_lossy(&of_data.stderr));
    assert!(String::from_utf8_lossy(&of_data.stdout).contains("ok"));
    let empty = dir.path().join("nothing");
    std::fs::create_dir_all(&empty).expect("dir");
    for cmd in ["verify", "inspect"] {
        let out = tidal().arg("wal").arg(cmd).arg(&empty).output().expect("run");
        assert!(!out.status.success(), "{cmd} of a folder without a WAL");
        assert!(String::from_utf8_lossy(&out.stderr).contains("no WAL segment"), "{cmd}");
    }
}

/// `tidal checkpoint DIR` after a kill -9 (with checkpoints far apart, so none was written):
/// it takes the schema from the WAL, and the next start replays nothing before it.
#[test]
fn checkpoint_command_covers_the_log_of_a_killed_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("tidal.toml");
    std::fs::write(
        &cfg,
        "[[signals]]\nname = \"clap\"\nhalf_lives = [\"1h\"]\nwindows = [{ size = \"1h\" }]\n\n\
         [engine]\ncheckpoint_every = 1000000000\n",
    )
    .expect("config");
    let args = ["--config", cfg.to_str().expect("path")];
    let data = dir.path().join("data");
    let s = Server::start(&data, &args, &[]);
    let mut lsn = 0;
    for n in 0..40 {
        let batch: Vec<_> = (0..=n % 7)
            .map(|k| json!({"type": "clap", "item": format!("i{}", (n * 3 + k) % 17), "user": format!("u{n}")}))
            .collect();
        let (st, v) = s.post("/v1/signals", &serde_json::Value::Array(batch));
        assert_eq!(st, 200, "{v}");
        lsn = v["lsn"].as_u64().expect("lsn");
    }
    let query = "profile=trending&signal=clap&window=1h&limit=100";
    let before = s.ranking(&format!("{query}&min_lsn={lsn}"));
    assert!(before.len() >= 10, "{before:?}");
    s.kill9();
    assert!(
        std::fs::read_dir(data.join("checkpoints")).map_or(true, |mut d| d.next().is_none()),
        "no checkpoint was due before the kill"
    );

    // The directory spelled another way: the same configuration, so nothing is written to
    // the WAL before the checkpoint (it covers the last write).
    let out = tidal()
        .arg("checkpoint")
        .arg(data.join("."))
        .env("TIDAL_LOG", "warn")
        .output()
        .expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with(&format!("checkpoint at lsn {lsn} ")), "{stdout}");

    // A configuration on another clock than the log's is refused by its field, and writes
    // nothing (the start below replays nothing): opened with it, the change would be
    // recorded and move the clock.
    let event = dir.path().join("event.toml");
    let text = std::fs::read_to_string(&cfg).expect("config");
    std::fs::write(&event, format!("{text}clock = \"event\"\n")).expect("config");
    let out = tidal()
        .arg("checkpoint")
        .arg(&data)
        .arg("--config")
        .arg(&event)
        .env("TIDAL_LOG", "warn")
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("engine.clock") && stderr.contains("runs on the wall clock"),
        "{stderr}"
    );

    let s = Server::start(&data, &args, &[]);
    let (st, metrics) = s.get("/metrics");
    assert_eq!(st, 200);
    let metrics = metrics.as_str().expect("text").to_string();
    assert!(metrics.contains("tidal_recovered_records 0\n"), "{metrics}");
    assert_eq!(s.ranking(query), before, "{stdout}");

    // A data directory that is not one is refused by name.
    let out = tidal()
        .arg("checkpoint")
        .arg(dir.path().join("nothing"))
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no WAL here"));
}

/// A stop signal (SIGTERM) shuts down cleanly: the process exits with success after a
/// checkpoint of the whole log, the entity store holds every item's metadata, and the next
/// start replays nothing and answers as before.
#[test]
fn a_stop_signal_checkpoints_and_the_next_start_replays_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cfg, data) = checkpoints_at_stops_only(dir.path());
    let args = ["--config", cfg.as_str()];
    let s = Server::start(&data, &args, &[]);
    for i in 0..20 {
        let (st, v) = s.put(
            &format!("/v1/items/i{i}"),
            &json!({"title": format!("title {i}"), "creator": format!("c{}", i % 3)}),
        );
        assert_eq!(st, 200, "{v}");
    }
    let mut lsn = 0;
    for n in 0..30 {
        let batch: Vec<_> = (0..=n % 5)
            .map(|k| json!({"type": "view", "item": format!("i{}", (n * 7 + k) % 20), "user": format!("u{n}")}))
            .collect();
        let (st, v) = s.post("/v1/signals", &serde_json::Value::Array(batch));
        assert_eq!(st, 200, "{v}");
        lsn = v["lsn"].as_u64().expect("lsn");
    }
    let query = "profile=trending&limit=100";
    let before = s.ranking(&format!("{query}&min_lsn={lsn}"));
    assert!(before.len() >= 10, "{before:?}");

    let status = s.stop(Duration::from_secs(60));
    assert!(status.success(), "{status}");
    let written = std::fs::read_dir(data.join("checkpoints")).map_or(0, |d| d.count());
    assert_eq!(written, 1, "one checkpoint, taken at the stop");
    {
        let store = tidal_sinks::EntityStore::open(&data.join("entities")).expect("entity store");
        for i in 0..20 {
            let meta = store.get(&format!("i{i}")).expect("stored");
            assert_eq!(meta.title, Some(format!("title {i}")));
            assert_eq!(meta.creator, Some(format!("c{}", i % 3)));
        }
    }

    let s = Server::start(&data, &args, &[]);
    let (st, metrics) = s.get("/metrics");
    assert_eq!(st, 200);
    let metrics = metrics.as_str().expect("text").to_string();
    assert!(metrics.contains("tidal_recovered_records 0\n"), "{metrics}");
    assert_eq!(s.ranking(query), before);
}

/// A configuration file under `dir` whose server checkpoints only when it stops (none is due
/// on the way), and the data directory beside it.
fn checkpoints_at_stops_only(dir: &std::path::Path) -> (String, std::path::PathBuf) {
    let cfg = dir.join("tidal.toml");
    std::fs::write(&cfg, "[engine]\ncheckpoint_every = 1000000000\n").expect("config");
    (cfg.to_str().expect("path").to_string(), dir.join("data"))
}

/// The value of a `/metrics` gauge.
fn gauge(s: &Server, name: &str) -> u64 {
    s.metric(name).unwrap_or_else(|| panic!("no {name} in /metrics"))
}

/// After a kill -9, a start from a checkpoint the entity store already holds writes to the
/// store only the items the log after the checkpoint changed, not every restored item again;
/// and the store still holds every item as the server answers it.
#[test]
fn after_kill9_the_entity_store_writes_only_what_followed_the_checkpoint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cfg, data) = checkpoints_at_stops_only(dir.path());
    let args = ["--config", cfg.as_str()];
    let committed = "tidal_entity_store_items_committed";

    // Twenty items, then a stop: its checkpoint covers them, and so does the store.
    let s = Server::start(&data, &args, &[]);
    for i in 0..20 {
        let (st, v) = s.put(&format!("/v1/items/i{i}"), &json!({"title": format!("title {i}")}));
        assert_eq!(st, 200, "{v}");
    }
    assert!(s.stop(Duration::from_secs(60)).success());

    // After the checkpoint: three items put again, one deleted, all visible and stored;
    // then a large batch of signals, and kill -9 while it is being applied.
    let s = Server::start(&data, &args, &[]);
    assert_eq!(
        gauge(&s, committed),
        0,
        "a start from the store's own checkpoint writes nothing"
    );
    for i in 0..3 {
        let (st, v) = s.put(&format!("/v1/items/i{i}"), &json!({"title": format!("new title {i}")}));
        assert_eq!(st, 200, "{v}");
    }
    let (st, v) = s.delete("/v1/items/i3");
    assert_eq!(st, 200, "{v}");
    let lsn = v["lsn"].as_u64().expect("lsn");
    let (st, _) = s.get(&format!("/v1/items/i0?min_lsn={lsn}"));
    assert_eq!(st, 200);
    common::wait_until(
        &format!("the store's commits ({})", gauge(&s, committed)),
        Duration::from_secs(10),
        || gauge(&s, committed) == 4,
    );
    let batch: Vec<_> = (0..5000)
        .map(|k| json!({"type": "view", "item": format!("i{}", 4 + k % 16), "user": format!("u{k}")}))
        .collect();
    let (st, v) = s.post("/v1/signals", &serde_json::Value::Array(batch));
    assert_eq!(st, 200, "{v}");
    // And a delete the store has most likely not seen when the process dies.
    let (st, v) = s.delete("/v1/items/i5");
    assert_eq!(st, 200, "{v}");
    let last = v["lsn"].as_u64().expect("lsn");
    s.kill9();
    let held = {
        let store = tidal_sinks::EntityStore::open(&data.join("entities")).expect("entity store");
        store
            .written(&tidal_sinks::StoreShard::new(0, 1, 0, 1))
            .expect("the store's record")
    };
    assert!(held >= lsn, "the store held the item changes ({held} < {lsn})");

    let s = Server::start(&data, &args, &[]);
    let (_, v) = s.get(&format!("/v1/items/i4?min_lsn={last}"));
    assert_eq!(v["signals"]["view"]["total"], 313.0, "{v}");
    let mut expected = Vec::new();
    for i in 0..20 {
        let (st, v) = s.get(&format!("/v1/items/i{i}"));
        expected.push((st == 200).then(|| v["title"].as_str().unwrap_or_default().to_string()));
    }
    assert_eq!(expected[0].as_deref(), Some("new title 0"));
    assert_eq!((expected[3].as_ref(), expected[5].as_ref()), (None, None), "deleted");
    // Where the last writes had not reached the store before the kill, the first version
    // after the start writes the five items changed after the checkpoint (three puts, two
    // deletes), not the twenty it restored.
    if held < last {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while gauge(&s, committed) < 5 {
            assert!(
                std::time::Instant::now() < deadline,
                "{} items written after the start (store at {held}, log at {last})",
                gauge(&s, committed)
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let n = gauge(&s, committed);
    assert!(
        n == 5 || (held == last && n == 0),
        "{n} items written after the start (store at {held}, log at {last})"
    );
    assert!(s.stop(Duration::from_secs(60)).success());
    let store = tidal_sinks::EntityStore::open(&data.join("entities")).expect("entity store");
    for (i, title) in expected.iter().enumerate() {
        let stored = store.get(&format!("i{i}")).map(|m| m.title.unwrap_or_default());
        assert_eq!(
            stored.as_ref(),
            title.as_ref(),
            "i{i}: the store holds what the server answers"
        );
    }
}
