//! Cohort counts after an attribute change, live and after a restart: the live state, a
//! restart from a checkpoint with the WAL after it, and a replay of the whole WAL must answer
//! every cohort ranking alike. Thirty users change every attribute halfway through a log of
//! signals (some late); checkpoints are taken every few dozen signals.
//!
//! Ignored: the live cohort counts now and then lack a few recent signals of users whose
//! attributes changed (one run in three or four; a restart and a replay agree with each
//! other). `cargo test --test cohort_restart -- --ignored` reproduces it.

use std::collections::BTreeMap;
use std::path::Path;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;

use tidal::{ClockMode, Config, NewSignal, RankQuery, Tidal};

const T0: u64 = 1_700_000_000_000;
const MIN: u64 = 60_000;

const QUERIES: [&str; 4] = [
    "profile=trending&window=24h&limit=50",
    "profile=rising&window=1h&limit=50",
    "profile=trending&window=24h&cohort=region:US&limit=50",
    "profile=rising&window=1h&cohort=gender:F&limit=50",
];

fn config(dir: &Path, every: u64) -> Config {
    let mut c = Config::default_filled();
    c.engine.data_dir = dir.display().to_string();
    c.engine.clock = ClockMode::Event;
    c.engine.durability = tidal::Durability::Buffer;
    c.engine.checkpoint_every = every;
    c
}

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
fn write(t: &Tidal, rng: &mut StdRng) {
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

fn answers(t: &Tidal) -> Vec<Value> {
    let lsn = t.stats().wal_lsn;
    QUERIES
        .iter()
        .map(|q| {
            let r = t.rank(&RankQuery::parse(q).expect("query").min_lsn(lsn)).expect("rank");
            serde_json::to_value(&r.items).expect("json")
        })
        .collect()
}

#[test]
#[ignore = "live cohort counts now and then lack recent signals of users whose attributes changed"]
fn cohorts_live_after_a_restart_and_replayed_agree() {
    for seed in 0..6u64 {
        for every in [37u64, 101, 150] {
            let dir = tempfile::tempdir().expect("tempdir");
            let mut rng = StdRng::seed_from_u64(seed);
            let t = Tidal::open(config(dir.path(), every)).expect("open");
            put_users(&t, &mut rng);
            write(&t, &mut rng);
            t.advance_clock(T0 + 260 * MIN).expect("clock");
            let live = answers(&t);
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
            let restarted = answers(&t);
            drop(t);
            std::fs::remove_dir_all(dir.path().join("checkpoints")).expect("remove checkpoints");
            let t = Tidal::open(config(dir.path(), 0)).expect("replay");
            let replayed = answers(&t);
            drop(t);
            assert_eq!(restarted, replayed, "seed {seed} every {every}: restart and replay");
            assert_eq!(live, replayed, "seed {seed} every {every}: live and replay");
        }
    }
}
