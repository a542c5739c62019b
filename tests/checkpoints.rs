//! Checkpoints: a restart from a checkpoint plus the WAL after it answers exactly as a replay
//! of the whole WAL, on random logs with puts, deletes, late events and clock moves; a
//! damaged or half-written checkpoint is skipped (the one before, or the whole log, is used);
//! a checkpoint of another schema is refused.

use std::collections::BTreeMap;
use std::path::Path;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;

use tidal::{ClockMode, Config, ItemMeta, NewSignal, RankQuery, Tidal};

mod common;

const T0: u64 = 1_700_000_000_000;
const MIN: u64 = 60_000;

const QUERIES: [&str; 6] = [
    "profile=trending&limit=50",
    "profile=trending&window=24h&signals=view:1,like:3&limit=50",
    "profile=rising&signal=view&limit=50",
    "profile=hot&half_life=1h&limit=50",
    "profile=top&category=c1&max_per_creator=2&limit=50",
    "profile=new&limit=10",
];

fn config(dir: &Path, every: u64) -> Config {
    let mut c = Config::default_filled();
    c.engine.data_dir = dir.display().to_string();
    c.engine.clock = ClockMode::Event;
    c.engine.durability = tidal::Durability::Buffer;
    c.engine.checkpoint_every = every;
    c
}

/// A random stretch of writes: signals (some late), puts, deletes, clock moves.
fn write_random(t: &Tidal, rng: &mut StdRng, clock: &mut u64, steps: usize) -> u64 {
    let mut last = 0;
    for _ in 0..steps {
        *clock += rng.gen_range(0..20 * MIN);
        let id = format!("i{}", rng.gen_range(0..40));
        last = match rng.gen_range(0..20) {
            0 => t.delete_item(&id).expect("delete").lsn,
            1 | 2 => {
                let meta = ItemMeta {
                    creator: Some(format!("u{}", rng.gen_range(0..5))),
                    category: Some(format!("c{}", rng.gen_range(0..3))),
                    created_at: Some(*clock - rng.gen_range(0..1000 * MIN)),
                    ..Default::default()
                };
                t.put_item(&id, meta).expect("put").lsn
            }
            3 => t.advance_clock(*clock).expect("advance").lsn,
            _ => {
                let sigs = (0..rng.gen_range(1..12))
                    .map(|_| {
                        let kind = ["view", "view", "like", "share", "skip"][rng.gen_range(0..5)];
                        let late = rng.gen_range(0..3) * 30 * MIN;
                        NewSignal::new(kind, format!("i{}", rng.gen_range(0..40)))
                            .user(format!("u{}", rng.gen_range(0..9)))
                            .weight(rng.gen_range(1..5) as f64 * 0.5)
                            .ts(clock.saturating_sub(late))
                    })
                    .collect();
                t.signals(sigs).expect("signals").lsn
            }
        };
    }
    last
}

/// Every query's ranking and every item's view, as JSON.
fn answers(t: &Tidal) -> Vec<Value> {
    let lsn = t.stats().wal_lsn;
    let mut out = Vec::new();
    for q in QUERIES {
        let r = t.rank(&RankQuery::parse(q).expect("query").min_lsn(lsn)).expect("rank");
        out.push(serde_json::to_value(&r.items).expect("json"));
        out.push(serde_json::json!(r.as_of.clock));
    }
    for i in 0..40 {
        let v = t.item(&format!("i{i}")).expect("item");
        out.push(serde_json::to_value(v.map(|v| (v.meta, v.signals))).expect("json"));
    }
    out
}

/// Each item's metadata as the entity store holds it (the server stopped), and as the
/// server answered it: they must be equal.
fn stored(dir: &Path) -> Vec<Option<ItemMeta>> {
    let store = tidal_sinks::EntityStore::open(&dir.join("entities")).expect("entity store");
    (0..40).map(|i| store.get(&format!("i{i}"))).collect()
}

fn served(t: &Tidal) -> Vec<Option<ItemMeta>> {
    (0..40)
        .map(|i| t.item(&format!("i{i}")).expect("item").and_then(|v| v.meta))
        .collect()
}

#[test]
fn restart_from_a_checkpoint_answers_as_a_full_replay() {
    for seed in 0..4u64 {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut rng = StdRng::seed_from_u64(seed);
        let mut clock = T0;
        // Automatic checkpoints every 150 signals, and one asked for.
        let t = Tidal::open(config(dir.path(), 150)).expect("open");
        write_random(&t, &mut rng, &mut clock, 60);
        let asked = t.checkpoint().expect("checkpoint");
        assert_eq!(asked.position.lsn, t.stats().wal_lsn);
        write_random(&t, &mut rng, &mut clock, 80);
        let before = answers(&t);
        let meta = served(&t);
        let lsn = t.stats().wal_lsn;
        drop(t); // a shutdown: checkpoints the whole log
        assert_eq!(stored(dir.path()), meta, "seed {seed}: the entity store");

        let t = Tidal::open(config(dir.path(), 150)).expect("reopen");
        let ckpt = t.latest_checkpoint().expect("a checkpoint was loaded");
        assert_eq!(ckpt.position.lsn, lsn, "the shutdown checkpoint covers the whole log");
        assert!(
            t.recovered_records() <= 1,
            "seed {seed}: replayed {} records",
            t.recovered_records()
        );
        assert_eq!(answers(&t), before, "seed {seed}: restored state differs");
        // More writes after the restore: the state goes on exactly.
        write_random(&t, &mut rng, &mut clock, 40);
        let after = answers(&t);
        let meta = served(&t);
        drop(t);
        // The start skipped the versions the store held; what came after is written.
        assert_eq!(
            stored(dir.path()),
            meta,
            "seed {seed}: the entity store after the restore"
        );

        // Without any checkpoint: a replay of the whole WAL gives the same answers.
        std::fs::remove_dir_all(dir.path().join("checkpoints")).expect("remove checkpoints");
        let t = Tidal::open(config(dir.path(), 0)).expect("full replay");
        assert!(t.recovered_records() > 100);
        assert_eq!(
            answers(&t),
            after,
            "seed {seed}: checkpoint + tail differs from a full replay"
        );
        t.shutdown().expect("shutdown");
    }
}

/// Flips a byte in the middle of a file.
fn damage(path: &Path) {
    let mut bytes = std::fs::read(path).expect("read");
    let at = bytes.len() / 2;
    bytes[at] ^= 0x5a;
    std::fs::write(path, bytes).expect("write");
}

fn checkpoints(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir.join("checkpoints"))
        .expect("checkpoints")
        .map(|e| e.expect("entry").path())
        .filter(|p| !p.to_string_lossy().ends_with(".tmp"))
        .collect();
    v.sort();
    v
}

#[test]
fn damaged_or_unfinished_checkpoints_are_skipped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut rng = StdRng::seed_from_u64(9);
    let mut clock = T0;
    let t = Tidal::open(config(dir.path(), 0)).expect("open");
    write_random(&t, &mut rng, &mut clock, 50);
    let first = t.checkpoint().expect("first checkpoint");
    write_random(&t, &mut rng, &mut clock, 50);
    let expected = answers(&t);
    let meta = served(&t);
    drop(t);
    let all = checkpoints(dir.path());
    assert_eq!(all.len(), 2);
    // The newest is damaged: a part fails its checksum.
    let part = std::fs::read_dir(&all[1])
        .expect("dir")
        .map(|e| e.expect("entry").path())
        .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().contains("windows")))
        .expect("a windows part");
    damage(&part);
    // And a checkpoint cut short by a crash, newer still.
    std::fs::create_dir_all(dir.path().join("checkpoints/ckpt-99999999999999999999.tmp")).expect("tmp");
    // And a part staged for it.
    std::fs::write(dir.path().join("checkpoints/staging-99-0-w0-windows"), b"partial").expect("staged");
    let t = Tidal::open(config(dir.path(), 0)).expect("reopen");
    for left in ["ckpt-99999999999999999999.tmp", "staging-99-0-w0-windows"] {
        assert!(
            !dir.path().join("checkpoints").join(left).exists(),
            "{left}: what a crash left half-written is cleared away at start"
        );
    }
    let used = t.latest_checkpoint().expect("the older checkpoint");
    assert_eq!(used.position, first.position, "the damaged one was skipped");
    assert!(t.recovered_records() > 0, "the WAL after the older one is replayed");
    assert_eq!(answers(&t), expected);
    // The store was ahead of the older checkpoint: the versions up to where it stood are
    // skipped, and it still holds every item as the log says.
    write_random(&t, &mut rng, &mut clock, 30);
    let expected = answers(&t);
    let meta_after = served(&t);
    drop(t);
    assert_ne!(meta, meta_after, "the writes after the restore change some metadata");
    assert_eq!(stored(dir.path()), meta_after);

    // Every checkpoint unusable (the manifest of the remaining ones damaged): the whole log.
    for c in checkpoints(dir.path()) {
        damage(&c.join("MANIFEST"));
    }
    let t = Tidal::open(config(dir.path(), 0)).expect("full replay");
    assert!(t.recovered_records() > 50);
    assert_eq!(answers(&t), expected);
    assert_eq!(served(&t), meta_after);
    t.shutdown().expect("shutdown");
    assert_eq!(stored(dir.path()), meta_after);
}

#[test]
fn a_checkpoint_of_another_schema_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let t = Tidal::open(config(dir.path(), 0)).expect("open");
    let sigs = (0..30)
        .map(|i| NewSignal::new("view", format!("i{}", i % 3)).ts(T0 + i * MIN))
        .collect();
    t.signals(sigs).expect("signals");
    drop(t);
    // The same data directory under a schema with another window for views.
    let mut c = config(dir.path(), 0);
    c.signals[0].windows.push(tidal_core::config::WindowDef {
        size: tidal::Dur(2 * 3_600_000),
        granularity: Some(tidal::Dur(120_000)),
    });
    let t = Tidal::open(c).expect("reopen");
    assert!(
        t.latest_checkpoint().is_none(),
        "the old schema's checkpoint is not used"
    );
    assert!(t.recovered_records() > 0, "the whole WAL is replayed");
    let v = t.item("i0").expect("item").expect("i0");
    // i0 has views at minutes 0, 3, 6, ..., 27; the clock is at minute 29: 2h window holds all.
    assert_eq!(v.signals["view"].counts["2h"], 10.0);
    t.shutdown().expect("shutdown");
}

/// Waits until the nearest-item indexes hold every embedding change handed over to them:
/// their thread inserts behind the view, and a `for_you` read waits for it only up to a
/// second (an exact search not at all).
fn ann_settled(t: &Tidal) {
    common::wait_until(
        "the nearest-item index to settle",
        std::time::Duration::from_secs(60),
        || t.view().shards.iter().all(|s| s.ann().waiting() == 0),
    );
}

/// The shards' nearest-item indexes are kept in the checkpoint: a restart loads them instead
/// of inserting every embedding again, and `for_you` (through the index, not an exact scan)
/// answers as before.
#[test]
fn the_nearest_item_index_is_restored_not_rebuilt() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut rng = StdRng::seed_from_u64(5);
    let open = || {
        let mut c = config(dir.path(), 0);
        c.engine.workers = 2;
        Tidal::open(c).expect("open")
    };
    let t = open();
    let n = 400;
    for i in 0..n {
        let e: Vec<f32> = (0..8).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
        let meta = ItemMeta {
            creator: Some(format!("u{}", i % 13)),
            created_at: Some(T0 - 1000 * MIN),
            embedding: Some(tidal::Embedding(e)),
            ..Default::default()
        };
        t.put_item(&format!("i{i}"), meta).expect("put");
    }
    for u in 0..5 {
        let sigs = (0..6)
            .map(|_| {
                NewSignal::new("like", format!("i{}", rng.gen_range(0..n)))
                    .user(format!("u{u}"))
                    .ts(T0)
            })
            .collect();
        t.signals(sigs).expect("signals");
    }
    let lsn = t.stats().wal_lsn;
    let ask = |t: &Tidal| -> Vec<Value> {
        (0..5)
            .map(|u| {
                let q = format!("profile=for_you&user=u{u}&filter=all&limit=30");
                let r = t
                    .rank(&RankQuery::parse(&q).expect("query").min_lsn(lsn))
                    .expect("rank");
                serde_json::to_value(&r.items).expect("json")
            })
            .collect()
    };
    let before = ask(&t);
    let indexed = |t: &Tidal| -> (usize, u64) {
        ann_settled(t);
        let view = t.view();
        (
            view.shards.iter().map(|s| s.ann().len()).sum(),
            view.shards.iter().map(|s| s.ann().inserted()).sum(),
        )
    };
    assert_eq!(indexed(&t), (n, n as u64));
    drop(t); // a shutdown: checkpoints, with the indexes

    let t = open();
    assert!(t.latest_checkpoint().is_some());
    let after = ask(&t);
    assert_eq!(indexed(&t), (n, 0), "loaded, nothing inserted again");
    assert_eq!(after, before, "for_you through the restored index");
    // A re-embedded item is inserted again, and only it.
    let meta = ItemMeta {
        creator: Some("u1".into()),
        created_at: Some(T0 - 1000 * MIN),
        embedding: Some(tidal::Embedding(vec![1.0; 8])),
        ..Default::default()
    };
    let ack = t.put_item("i7", meta).expect("re-embed");
    t.rank(
        &RankQuery::parse("profile=for_you&user=u0")
            .expect("query")
            .min_lsn(ack.lsn),
    )
    .expect("rank");
    assert_eq!(indexed(&t), (n, 1));
    t.shutdown().expect("shutdown");
}

/// The text index is kept in the checkpoint: a restart loads it and writes only the documents
/// whose title or text changed after the checkpoint; `q=` answers as before the restart and
/// as a full replay.
#[test]
fn the_text_index_is_restored_not_rebuilt() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut rng = StdRng::seed_from_u64(9);
    let words = ["piano", "guitar", "drum", "tutorial", "concert", "live", "solo", "week"];
    let title = |rng: &mut StdRng| {
        (0..rng.gen_range(1..4))
            .map(|_| words[rng.gen_range(0..words.len())])
            .collect::<Vec<_>>()
            .join(" ")
    };
    let put = |t: &Tidal, id: &str, title: String| {
        let meta = ItemMeta {
            title: Some(title),
            creator: Some("c".into()),
            created_at: Some(T0),
            ..Default::default()
        };
        t.put_item(id, meta).expect("put").lsn
    };
    let open = |workers: usize| {
        let mut c = config(dir.path(), 0);
        c.engine.workers = workers;
        c.personalization.exact_search = true;
        Tidal::open(c).expect("open")
    };
    let written = |t: &Tidal| t.view().text.as_ref().map_or(0, |x| x.written());
    let ask = |t: &Tidal| -> Vec<Value> {
        let lsn = t.stats().wal_lsn;
        ["piano", "guitar tutorial", "drum", "live solo", "week"]
            .iter()
            .map(|q| {
                let q = format!("q={}&limit=50&explain=true", q.replace(' ', "+"));
                let r = t
                    .rank(&RankQuery::parse(&q).expect("query").min_lsn(lsn))
                    .expect("rank");
                serde_json::to_value(&r.items).expect("json")
            })
            .collect()
    };
    let t = open(2);
    for i in 0..60 {
        put(&t, &format!("i{i}"), title(&mut rng));
    }
    // Visible first: the checkpoint's text index is the one its first part finds.
    ask(&t);
    t.checkpoint().expect("checkpoint");
    // After the checkpoint: some retitled, some deleted, some new, some put unchanged.
    for i in 0..20 {
        let id = format!("i{}", rng.gen_range(0..70));
        match rng.gen_range(0..3) {
            0 => {
                t.delete_item(&id).expect("delete");
            }
            _ => {
                put(&t, &id, title(&mut rng));
            }
        }
        if i % 5 == 0 {
            put(&t, "i0", "piano tutorial".into());
        }
    }
    let before = ask(&t);
    assert!(before.iter().any(|r| r.as_array().is_some_and(|a| !a.is_empty())));
    drop(t); // a shutdown: checkpoints again, with the text index

    // From the checkpoint before the last writes: the WAL after it retitles, deletes and adds.
    let mut ckpts = checkpoints(dir.path());
    let newest = ckpts.pop().expect("two checkpoints");
    assert_eq!(ckpts.len(), 1);
    std::fs::remove_dir_all(&newest).expect("remove the newest checkpoint");
    let t = open(2);
    assert!(t.recovered_records() > 0);
    assert!(t.latest_checkpoint().is_some());
    assert_eq!(ask(&t), before, "q= from the older checkpoint and the WAL after it");
    assert!(
        (1..30).contains(&written(&t)),
        "only the changes after the checkpoint are written ({})",
        written(&t)
    );
    drop(t);

    // From a shutdown checkpoint: nothing written again.
    let t = open(2);
    assert_eq!(t.recovered_records(), 0);
    assert_eq!(ask(&t), before, "q= from the restored text index");
    assert_eq!(written(&t), 0, "every document came from the checkpoint");
    drop(t);

    // A full replay answers the same.
    std::fs::remove_dir_all(dir.path().join("checkpoints")).expect("remove checkpoints");
    let t = open(2);
    assert_eq!(ask(&t), before, "q= after a full replay");
    assert!(written(&t) >= 50);
    t.shutdown().expect("shutdown");
}

/// The serving indexes' parts of a checkpoint are kept from the checkpoint before (hard links,
/// nothing written) while the indexes changed in at most one item in 64; a restart from such a
/// copy takes out the items deleted since it, inserts again those re-embedded, and answers as
/// before; past that share, the indexes are written again.
#[test]
fn a_checkpoint_keeps_the_index_copies_of_the_one_before_while_they_change_little() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut rng = StdRng::seed_from_u64(17);
    let words = ["piano", "guitar", "drum", "tutorial", "concert", "live"];
    let open = || {
        let mut c = config(dir.path(), 0);
        c.personalization.exact_search = true;
        Tidal::open(c).expect("open")
    };
    let n = 640; // one change in 64: 10
    let meta = |rng: &mut StdRng, i: usize| ItemMeta {
        creator: Some(format!("c{}", i % 11)),
        created_at: Some(T0 - 1000 * MIN),
        title: Some(format!("{} {}", words[i % 6], words[(i / 6) % 6])),
        embedding: Some(tidal::Embedding((0..8).map(|_| rng.gen_range(-1.0f32..1.0)).collect())),
        ..Default::default()
    };
    let t = open();
    for i in 0..n {
        t.put_item(&format!("i{i}"), meta(&mut rng, i)).expect("put");
    }
    let like = |t: &Tidal, rng: &mut StdRng| {
        let sigs = (0..40)
            .map(|_| {
                NewSignal::new("like", format!("i{}", rng.gen_range(0..n)))
                    .user(format!("u{}", rng.gen_range(0..4)))
                    .ts(T0)
            })
            .collect();
        t.signals(sigs).expect("signals");
    };
    like(&t, &mut rng);
    let ask = |t: &Tidal| -> Vec<Value> {
        let lsn = t.stats().wal_lsn;
        let mut out: Vec<Value> = (0..4)
            .map(|u| format!("profile=for_you&user=u{u}&filter=all&limit=40&explain=true"))
            .chain(["q=piano&limit=50", "q=live+drum&limit=50"].map(String::from))
            .map(|q| {
                let r = t
                    .rank(&RankQuery::parse(&q).expect("query").min_lsn(lsn))
                    .expect("rank");
                serde_json::to_value(&r.items).expect("json")
            })
            .collect();
        out.push(Value::from(
            t.view().shards.iter().map(|s| s.ann().len()).sum::<usize>(),
        ));
        out
    };
    // What is visible once the nearest-item index holds every embedding change handed over: a
    // checkpoint's copy then holds them, and the counts of changes the test compares are exact.
    let settled = |t: &Tidal| -> Vec<Value> {
        ask(t); // the view at the last write: its changes handed over to the index
        ann_settled(t);
        ask(t)
    };
    // The index parts of the newest checkpoint: (its directory, ann-0's inode, text's inode).
    let newest = || {
        let d = checkpoints(dir.path()).pop().expect("a checkpoint");
        let ino = |name: &str| std::fs::metadata(d.join(name)).expect(name).ino();
        (d.clone(), ino("ann-0"), ino("text"))
    };
    settled(&t);
    t.checkpoint().expect("checkpoint");
    let (first, ann, text) = newest();
    // Signals only: both copies kept.
    like(&t, &mut rng);
    settled(&t);
    t.checkpoint().expect("checkpoint");
    let (second, ann2, text2) = newest();
    assert_ne!(first, second);
    assert_eq!((ann2, text2), (ann, text), "kept: the same files");
    // Three deleted and two re-embedded: 7 changes of the nearest-item index, 3 of the text.
    for i in [3, 50, 200] {
        t.delete_item(&format!("i{i}")).expect("delete");
    }
    for i in [7, 8] {
        t.put_item(&format!("i{i}"), meta(&mut rng, i)).expect("re-embed");
    }
    like(&t, &mut rng);
    let before = settled(&t);
    assert_eq!(before.last(), Some(&Value::from(n - 3)));
    drop(t); // a shutdown: checkpoints, keeping both copies still
    assert_eq!((newest().1, newest().2), (ann, text), "7 and 3 changes: kept");

    // The restart loads copies that still hold the deleted items and the old embeddings.
    let t = open();
    assert_eq!(t.recovered_records(), 0);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while ask(&t).last() != before.last() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let after = settled(&t);
    assert_eq!(
        after.last(),
        before.last(),
        "the items deleted since the copy taken out"
    );
    assert_eq!(after, before, "for_you and q= as before the restart");
    let inserted: u64 = t.view().shards.iter().map(|s| s.ann().inserted()).sum();
    assert_eq!(inserted, 2, "only the re-embedded items inserted again");
    // A process keeps only copies it wrote: its first checkpoint writes both again (after a
    // write: the restart itself writes nothing, so a checkpoint at once is the restored one).
    like(&t, &mut rng);
    settled(&t);
    t.checkpoint().expect("checkpoint");
    let (_, ann3, text3) = newest();
    assert!(ann3 != ann && text3 != text, "written again after a restart");
    // Past one change in 64 since the kept copy: written again.
    for i in 100..112 {
        t.put_item(&format!("i{i}"), meta(&mut rng, i)).expect("re-embed");
    }
    settled(&t);
    t.checkpoint().expect("checkpoint");
    let (_, ann4, text4) = newest();
    assert_ne!(ann4, ann3, "12 changes: the nearest-item index written again");
    assert_eq!(text4, text3, "the text index, with no change, kept");
    let before = settled(&t);
    drop(t); // a shutdown: checkpoints, keeping both copies

    // A damaged index part (shared by both checkpoints) is left out, not the checkpoint: the
    // index is rebuilt from the restored state, and the WAL is not replayed.
    let (newest_dir, ..) = newest();
    damage(&newest_dir.join("ann-0"));
    let t = open();
    assert_eq!(t.recovered_records(), 0, "the checkpoint is used");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while ask(&t).last() != before.last() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let inserted: u64 = t.view().shards.iter().map(|s| s.ann().inserted()).sum();
    assert_eq!(inserted, n as u64 - 3, "the nearest-item index rebuilt");
    // (A rebuilt graph may offer for_you other approximate candidates: q= is compared.)
    assert_eq!(ask(&t)[4..], before[4..], "q= from the kept text index");
    t.shutdown().expect("shutdown");
}

const COHORT_QUERIES: [&str; 4] = [
    "profile=trending&window=24h&limit=50",
    "profile=rising&window=1h&limit=50",
    "profile=trending&window=24h&cohort=region:US&limit=50",
    "profile=rising&window=1h&cohort=gender:F&limit=50",
];

fn put_users(t: &Tidal, rng: &mut StdRng) {
    for u in 0..30 {
        let attrs: BTreeMap<String, String> = [
            (
                "region".to_string(),
                ["US", "EU", "ASIA"][rng.gen_range(0..3)].to_string(),
            ),
            ("gender".to_string(), ["F", "M"][rng.gen_range(0..2)].to_string()),
        ]
        .into();
        t.put_user(&format!("v{u}"), attrs).expect("user");
    }
}

/// Sixty batches two minutes apart; every user's attributes change before the 40th.
fn write_with_moves(t: &Tidal, rng: &mut StdRng) {
    let kinds = ["view", "view", "view", "like", "share", "skip", "hide"];
    let mut n = 0;
    for b in 0..60u64 {
        if b == 40 {
            put_users(t, rng);
        }
        let at = T0 + 60 * MIN + b * 2 * MIN;
        let sigs = (0..rng.gen_range(1..25))
            .map(|_| {
                n += 1;
                let late = if rng.gen_bool(0.2) {
                    rng.gen_range(0..90) * MIN
                } else {
                    0
                };
                let item = format!("m{}", (rng.r#gen::<f64>().powi(2) * 60.0) as u64);
                NewSignal::new(kinds[rng.gen_range(0..kinds.len())], item)
                    .user(format!("v{}", rng.gen_range(0..30)))
                    .ts(at.saturating_sub(late) + rng.gen_range(0..MIN))
                    .id(format!("s{n}"))
            })
            .collect();
        t.signals(sigs).expect("signals");
    }
}

fn cohort_answers(t: &Tidal) -> Vec<Value> {
    let lsn = t.stats().wal_lsn;
    COHORT_QUERIES
        .iter()
        .map(|q| {
            let r = t.rank(&RankQuery::parse(q).expect("query").min_lsn(lsn)).expect("rank");
            serde_json::to_value(&r.items).expect("json")
        })
        .collect()
}

/// Cohort counts after an attribute change, live, after a restart and replayed: the live
/// state, a restart from an older checkpoint with the WAL after it, and a replay of the whole
/// WAL must answer every cohort ranking alike. Thirty users change every attribute halfway
/// through a log of signals (some late); checkpoints are taken every few dozen signals, so
/// checkpoint markers arrive among the membership moves the cohort join emits (a keyed sum
/// that applied updates past a pending checkpoint's frontier emitted rounds out of time
/// order, and the serving side dropped the newer value).
#[test]
fn cohorts_live_after_a_restart_and_replayed_agree() {
    for seed in 0..6u64 {
        for every in [37u64, 101, 150] {
            let dir = tempfile::tempdir().expect("tempdir");
            let mut rng = StdRng::seed_from_u64(seed);
            let t = Tidal::open(config(dir.path(), every)).expect("open");
            put_users(&t, &mut rng);
            write_with_moves(&t, &mut rng);
            t.advance_clock(T0 + 260 * MIN).expect("clock");
            let live = cohort_answers(&t);
            drop(t);
            // The newest checkpoint (the shutdown's) removed: an older one and the WAL after it.
            let mut ckpts: Vec<_> = std::fs::read_dir(dir.path().join("checkpoints"))
                .expect("checkpoints")
                .map(|e| e.expect("entry").path())
                .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("ckpt-")))
                .collect();
            ckpts.sort();
            if ckpts.len() >= 2
                && let Some(newest) = ckpts.last()
            {
                std::fs::remove_dir_all(newest).expect("remove");
            }
            let t = Tidal::open(config(dir.path(), 0)).expect("restart");
            let restarted = cohort_answers(&t);
            drop(t);
            std::fs::remove_dir_all(dir.path().join("checkpoints")).expect("remove checkpoints");
            let t = Tidal::open(config(dir.path(), 0)).expect("replay");
            let replayed = cohort_answers(&t);
            drop(t);
            assert_eq!(restarted, replayed, "seed {seed} every {every}: restart and replay");
            assert_eq!(live, replayed, "seed {seed} every {every}: live and replay");
        }
    }
}

/// A WAL older than the newest checkpoint (put back from a copy) is refused at start, naming
/// both LSNs and what to do: new records would be numbered as ones the checkpoint already
/// covers, and the next start would skip them. Moved away, the checkpoints leave the WAL
/// alone to start from.
#[test]
fn a_wal_older_than_the_checkpoint_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let copy = tempfile::tempdir().expect("tempdir");
    let t = Tidal::open(config(dir.path(), 0)).expect("open");
    let views = |from: u64, n: u64| {
        (from..from + n)
            .map(|i| NewSignal::new("view", "i0").ts(T0 + i * MIN).id(format!("v{i}")))
            .collect::<Vec<_>>()
    };
    let early = t.signals(views(0, 10)).expect("signals");
    t.wait_visible(early.lsn).expect("visible");
    let wal = dir.path().join("wal");
    let old = copy.path().join("wal");
    std::fs::create_dir_all(&old).expect("dir");
    for e in std::fs::read_dir(&wal).expect("wal") {
        let e = e.expect("entry");
        std::fs::copy(e.path(), old.join(e.file_name())).expect("copy");
    }
    for k in 0..5 {
        t.signals(views(10 + k * 4, 4)).expect("signals");
    }
    t.shutdown().expect("shutdown: a checkpoint");
    drop(t);
    std::fs::remove_dir_all(&wal).expect("remove");
    std::fs::rename(&old, &wal).expect("put back the old WAL");
    let err = match Tidal::open(config(dir.path(), 0)) {
        Ok(_) => panic!("a WAL older than the checkpoint was opened"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("older than the checkpoint") && err.contains("checkpoints"),
        "{err}"
    );
    std::fs::rename(dir.path().join("checkpoints"), copy.path().join("checkpoints")).expect("move");
    let t = Tidal::open(config(dir.path(), 0)).expect("the WAL alone");
    let v = t.item("i0").expect("item").expect("i0");
    assert_eq!(v.signals["view"].total, 10.0, "the old WAL's views");
    t.shutdown().expect("shutdown");
}
