//! The engine end to end: the same committed batches through 1, 2 and 4 workers give the same
//! updates at the same times; deletes retire item keys; the real publisher sees the final
//! state.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use differential_dataflow::consolidation::consolidate_updates;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use tidal_core::config::Config;
use tidal_core::features::{Lanes, TOTAL_LANE, weight_fixed};
use tidal_core::record::{CommittedBatch, ItemMeta, LoggedRecord, Record, Signal};
use tidal_core::time::{Time, time_at};
use tidal_dataflows::{Engine, EngineOptions, Outputs};
use tidal_sinks::contract::ItemState;
use tidal_sources::feed::Feed;

type WindowUpdate = (((u64, u16), Lanes), Time, isize);
type DecayUpdate = (((u64, u16, u8, u64), i128), Time, isize);

#[derive(Default, Debug, PartialEq)]
struct Captured {
    windows: Vec<WindowUpdate>,
    decay: Vec<DecayUpdate>,
    items: Vec<((u64, ItemState), Time, isize)>,
    lsn: Vec<(u64, Time, isize)>,
}

impl Captured {
    fn consolidated(mut self) -> Captured {
        consolidate_updates(&mut self.windows);
        consolidate_updates(&mut self.decay);
        consolidate_updates(&mut self.items);
        consolidate_updates(&mut self.lsn);
        self
    }

    /// The final contents (all times accumulated) of a captured collection.
    fn last<D: Ord + Clone>(updates: &[(D, Time, isize)]) -> Vec<D> {
        let mut acc: Vec<(D, Time, isize)> = updates.iter().map(|(d, _, r)| (d.clone(), 0, *r)).collect();
        consolidate_updates(&mut acc);
        assert!(
            acc.iter().all(|(_, _, r)| *r == 1),
            "a collection holds a record with multiplicity != 1"
        );
        acc.into_iter().map(|(d, _, _)| d).collect()
    }
}

fn run(config: &Config, batches: &[CommittedBatch], workers: usize) -> Captured {
    let captured = Arc::new(Mutex::new(Captured::default()));
    let feed = Arc::new(Feed::new(8));
    let sink_target = captured.clone();
    let engine = Engine::start_with(
        Arc::new(config.clone()),
        EngineOptions::threads(workers),
        feed.clone(),
        move |out: Outputs<'_>| {
            let c = sink_target.clone();
            out.windows.inspect(move |u| c.lock().unwrap().windows.push(*u));
            let c = sink_target.clone();
            out.decay.inspect(move |u| c.lock().unwrap().decay.push(*u));
            let c = sink_target.clone();
            out.items.inspect(move |u| c.lock().unwrap().items.push(u.clone()));
            let c = sink_target.clone();
            out.lsn
                .inspect(move |(p, t, r)| c.lock().unwrap().lsn.push((p.lsn, *t, *r)));
        },
    )
    .unwrap();
    for b in batches {
        feed.push(Arc::new(b.clone()));
    }
    engine.shutdown().unwrap();
    let mut guard = captured.lock().unwrap();
    std::mem::take(&mut *guard).consolidated()
}

fn signal(kind: &str, item: &str, weight: f64, ts: Option<u64>, user: Option<&str>) -> Signal {
    Signal {
        kind: kind.into(),
        item: item.into(),
        user: user.map(Into::into),
        weight,
        ts,
        id: None,
    }
}

fn meta(title: &str) -> ItemMeta {
    ItemMeta {
        title: Some(title.into()),
        ..ItemMeta::default()
    }
}

/// Random batches over a few ids: signals (one type unknown), puts, deletes, clock advances.
fn random_batches(seed: u64, n: usize) -> Vec<CommittedBatch> {
    let mut rng = StdRng::seed_from_u64(seed);
    let kinds = ["view", "like", "share", "skip", "nope"];
    let mut clock = 1_700_000_000_000u64;
    let mut seq = 0;
    let mut lsn = 0;
    let mut out = Vec::new();
    for _ in 0..n {
        if rng.gen_bool(0.8) {
            clock += rng.gen_range(1..600_000);
            seq = 0;
        } else {
            seq += 1;
        }
        let mut records = Vec::new();
        for _ in 0..rng.gen_range(1..4) {
            lsn += 1;
            let id = format!("i{}", rng.gen_range(0..12));
            let record = match rng.gen_range(0..10) {
                0 => Record::ItemPut {
                    id,
                    meta: meta(&format!("t{}", rng.gen_range(0..3))),
                },
                1 => Record::ItemDelete { id },
                2 => Record::ClockAdvance { to_ms: clock },
                _ => Record::Signals(
                    (0..rng.gen_range(1..20))
                        .map(|_| {
                            let ts = rng.gen_bool(0.5).then(|| clock - rng.gen_range(0..10_000_000));
                            let user = format!("u{}", rng.gen_range(0..5));
                            signal(
                                kinds[rng.gen_range(0..kinds.len())],
                                &format!("i{}", rng.gen_range(0..12)),
                                rng.gen_range(-2.0..4.0),
                                ts,
                                rng.gen_bool(0.7).then_some(user.as_str()),
                            )
                        })
                        .collect(),
                ),
            };
            records.push(LoggedRecord { lsn, record });
        }
        out.push(CommittedBatch {
            time: time_at(clock) | seq,
            clock_ms: clock,
            records,
        });
    }
    out
}

#[test]
fn same_updates_for_one_two_and_four_workers() {
    let config = Config::default();
    for seed in 0..2 {
        let batches = random_batches(seed, 120);
        let one = run(&config, &batches, 1);
        assert!(!one.windows.is_empty() && !one.decay.is_empty() && !one.items.is_empty());
        assert_eq!(Captured::last(&one.lsn), vec![batches.last().unwrap().last_lsn()]);
        for workers in [2, 4] {
            let many = run(&config, &batches, workers);
            assert!(one == many, "seed {seed}: {workers} workers differ from one");
        }
    }
}

#[test]
fn deletes_retire_keys() {
    let config = Config::default();
    let view = config.signals.iter().position(|s| s.name == "view").unwrap() as u16;
    let clock = 1_700_000_000_000u64;
    let batch = |i: u64, records: Vec<Record>| CommittedBatch {
        time: time_at(clock + i),
        clock_ms: clock + i,
        records: records
            .into_iter()
            .enumerate()
            .map(|(j, record)| LoggedRecord {
                lsn: i * 10 + j as u64 + 1,
                record,
            })
            .collect(),
    };
    let batches = vec![
        batch(
            0,
            vec![Record::Signals(vec![
                signal("view", "a", 1.0, None, None),
                signal("view", "b", 2.0, None, Some("u")),
            ])],
        ),
        batch(
            1,
            vec![Record::ItemPut {
                id: "a".into(),
                meta: meta("A"),
            }],
        ),
        batch(
            2,
            vec![
                Record::ItemDelete { id: "a".into() },
                Record::Signals(vec![signal("view", "a", 5.0, None, None)]),
            ],
        ),
        batch(3, vec![Record::Signals(vec![signal("view", "a", 0.5, None, None)])]),
        batch(
            4,
            vec![
                Record::ItemDelete { id: "ghost".into() },
                Record::Signals(vec![signal("view", "ghost", 1.0, None, None)]),
            ],
        ),
        batch(
            5,
            vec![Record::ItemPut {
                id: "ghost".into(),
                meta: meta("G"),
            }],
        ),
    ];
    let out = run(&config, &batches, 2);
    let items: BTreeMap<u64, ItemState> = Captured::last(&out.items).into_iter().collect();
    let state = |id: &str, meta: Option<ItemMeta>, deleted: bool| ItemState {
        id: id.into(),
        meta,
        deleted,
    };
    // a -> 0, b -> 1, a again after its delete -> 2, ghost -> 3.
    assert_eq!(items[&0], state("a", Some(meta("A")), true));
    assert_eq!(items[&1], state("b", None, false));
    assert_eq!(items[&2], state("a", None, true));
    assert_eq!(items[&3], state("ghost", Some(meta("G")), false));
    assert_eq!(items.len(), 4);
    let totals: BTreeMap<(u64, u16), i64> = Captured::last(&out.windows)
        .into_iter()
        .map(|(k, l)| (k, l.0[TOTAL_LANE]))
        .collect();
    assert_eq!(totals[&(0, view)], weight_fixed(1.0));
    assert_eq!(totals[&(1, view)], weight_fixed(2.0));
    assert_eq!(totals[&(2, view)], weight_fixed(5.0) + weight_fixed(0.5));
    assert_eq!(totals[&(3, view)], weight_fixed(1.0));
    // The item state of key 0 changed at the delete's time, not later.
    assert!(
        out.items
            .contains(&((0, state("a", Some(meta("A")), true)), time_at(clock + 2), 1))
    );
    assert_eq!(Captured::last(&out.lsn), vec![51]);
}

#[test]
fn engine_publishes_through_the_publisher() {
    let config = Arc::new(Config::default());
    let publisher = Arc::new(tidal_sinks::Publisher::new(config.clone()));
    let feed = Arc::new(Feed::new(8));
    let engine = Engine::start(config.clone(), 2, feed.clone(), publisher.clone()).unwrap();
    let clock = 1_700_000_000_000u64;
    let signals = vec![
        signal("like", "x", 2.0, None, None),
        signal("like", "y", 1.0, Some(clock - 1_000), None),
    ];
    feed.push(Arc::new(CommittedBatch {
        time: time_at(clock),
        clock_ms: clock,
        records: vec![LoggedRecord {
            lsn: 1,
            record: Record::Signals(signals),
        }],
    }));
    feed.seal(time_at(clock + 10));
    engine.shutdown().unwrap();
    let snapshot = publisher.load();
    let like = config.signals.iter().position(|s| s.name == "like").unwrap() as u16;
    let (_, x) = snapshot.item("x").expect("x published");
    assert_eq!(x.lanes(like).map(|l| l.0[TOTAL_LANE]), Some(weight_fixed(2.0)));
    assert!(snapshot.item("y").is_some());
}

#[test]
fn timely_config_rejects_zero_workers() {
    assert!(EngineOptions::threads(0).timely_config().is_err());
    assert!(EngineOptions::threads(3).timely_config().is_ok());
}
