//! The engine end to end: the same committed batches through 1, 2 and 4 workers give the
//! same final state per item id (keys depend on the number of workers: each id is interned
//! at the worker that owns it); deletes retire item keys; the serving shards see the final
//! state.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use differential_dataflow::consolidation::consolidate_updates;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use tidal_core::config::Config;
use tidal_core::features::{Lanes, TOTAL_LANE, weight_fixed};
use tidal_core::flow::ItemState;
use tidal_core::record::{CommittedBatch, ItemMeta, LoggedRecord, Record, Signal};
use tidal_core::time::{Time, time_at};
use tidal_dataflows::{Engine, EngineOptions, Outputs};
use tidal_sinks::Shards;
use tidal_sources::feed::Feed;

type WindowUpdate = (((u64, u16), Lanes), Time, isize);
type DecayUpdate = (((u64, u16, u8, u64), i128), Time, isize);

#[derive(Default, Debug, PartialEq)]
struct Captured {
    windows: Vec<WindowUpdate>,
    decay: Vec<DecayUpdate>,
    items: Vec<((u64, ItemState), Time, isize)>,
}

/// An item key named by what does not depend on the worker count: the id, and the how-many-th
/// key of that id it is (a delete retires a key; the id's next write gets a new one).
type Named = (String, usize);

/// The final state of every collection, by item id.
#[derive(Debug, PartialEq)]
struct Final {
    items: BTreeMap<Named, ItemState>,
    windows: BTreeMap<(Named, u16), Lanes>,
    decay: BTreeMap<(Named, u16, u8, u64), i128>,
}

impl Captured {
    /// The contents of a captured collection as of frontier `before` (every update at an
    /// earlier time accumulated).
    fn last<D: Ord + Clone>(updates: &[(D, Time, isize)], before: Time) -> Vec<D> {
        let mut acc: Vec<(D, Time, isize)> = updates
            .iter()
            .filter(|(_, t, _)| *t < before)
            .map(|(d, _, r)| (d.clone(), 0, *r))
            .collect();
        consolidate_updates(&mut acc);
        assert!(
            acc.iter().all(|(_, _, r)| *r == 1),
            "a collection holds a record with multiplicity != 1"
        );
        acc.into_iter().map(|(d, _, _)| d).collect()
    }

    /// Names every key by its id and ordinal (every key ever emitted has an item state: the
    /// states' history names them, even retired ones).
    fn finals(&self, before: Time) -> Final {
        let mut keys: BTreeMap<u64, String> = BTreeMap::new();
        for ((k, s), _, _) in &self.items {
            keys.insert(*k, s.id.clone());
        }
        let mut ordinal: BTreeMap<u64, Named> = BTreeMap::new();
        let mut per_id: BTreeMap<String, usize> = BTreeMap::new();
        // Keys of one id are interned in log order at its owner: ascending keys.
        for (k, id) in &keys {
            let n = per_id.entry(id.clone()).or_default();
            ordinal.insert(*k, (id.clone(), *n));
            *n += 1;
        }
        let name = |k: u64| {
            ordinal
                .get(&k)
                .cloned()
                .unwrap_or_else(|| panic!("key {k} has no item state"))
        };
        Final {
            items: Self::last(&self.items, before)
                .into_iter()
                .map(|(k, s)| (name(k), s))
                .collect(),
            windows: Self::last(&self.windows, before)
                .into_iter()
                .map(|((k, kind), l)| ((name(k), kind), l))
                .collect(),
            decay: Self::last(&self.decay, before)
                .into_iter()
                .map(|((k, kind, h, e), v)| ((name(k), kind, h, e), v))
                .collect(),
        }
    }
}

fn run(config: &Config, batches: &[CommittedBatch], workers: usize) -> Captured {
    run_phases(config, &[batches], workers)
}

/// Runs `phases` of batches one after the other: each is sealed and applied before the next
/// is pushed (so they are not coalesced into one run).
fn run_phases(config: &Config, phases: &[&[CommittedBatch]], workers: usize) -> Captured {
    let captured = Arc::new(Mutex::new(Captured::default()));
    let feed = Arc::new(Feed::new(8));
    let sink_target = captured.clone();
    let engine = Engine::start_with(
        Arc::new(config.clone()),
        EngineOptions::threads(workers),
        feed.clone(),
        move |out: Outputs<'_>, _index| {
            let c = sink_target.clone();
            out.windows.inspect(move |u| c.lock().unwrap().windows.push(*u));
            let c = sink_target.clone();
            out.decay.inspect(move |u| c.lock().unwrap().decay.push(*u));
            let c = sink_target.clone();
            out.items.inspect(move |u| c.lock().unwrap().items.push(u.clone()));
        },
    )
    .unwrap();
    for batches in phases {
        for b in batches.iter() {
            feed.push(Arc::new(b.clone()));
        }
        // The state as of the last batch's clock is observed (marked), and the next phase
        // is only pushed once the source has taken this one (a run of its own).
        if let Some(last) = batches.last() {
            feed.seal(time_at(last.clock_ms + 1));
        }
        while feed.queued() > 0 {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
    engine.shutdown().unwrap();
    let mut guard = captured.lock().unwrap();
    std::mem::take(&mut *guard)
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
        // The state as of the last batch's clock (the run closes the feed, and a closed
        // dataflow applies every future retraction: the end of time).
        let at = time_at(batches.last().unwrap().clock_ms + 1);
        let one = run(&config, &batches, 1).finals(at);
        assert!(!one.windows.is_empty() && !one.decay.is_empty() && !one.items.is_empty());
        for workers in [2, 4] {
            let many = run(&config, &batches, workers).finals(at);
            assert!(one == many, "seed {seed}: {workers} workers differ from one");
        }
    }
}

#[test]
fn deletes_retire_keys_and_leave_nothing_behind() {
    let config = Config::default();
    let view = config.signals.iter().position(|s| s.name == "view").unwrap() as u16;
    let clock = 1_700_000_000_000u64;
    let day = 86_400_000u64;
    let batch = |ms: u64, lsn: u64, records: Vec<Record>| CommittedBatch {
        time: time_at(clock + ms),
        clock_ms: clock + ms,
        records: records
            .into_iter()
            .enumerate()
            .map(|(j, record)| LoggedRecord {
                lsn: lsn * 10 + j as u64 + 1,
                record,
            })
            .collect(),
    };
    let early = vec![
        batch(
            0,
            0,
            vec![Record::Signals(vec![
                signal("view", "a", 1.0, None, None),
                signal("view", "b", 2.0, None, Some("u")),
            ])],
        ),
        batch(
            1,
            1,
            vec![Record::ItemPut {
                id: "a".into(),
                meta: meta("A"),
            }],
        ),
        // Signals of a deleted item are not counted until it is put again.
        batch(
            2,
            2,
            vec![
                Record::ItemDelete { id: "a".into() },
                Record::Signals(vec![signal("view", "a", 5.0, None, None)]),
            ],
        ),
        batch(3, 3, vec![Record::Signals(vec![signal("view", "a", 0.5, None, None)])]),
        batch(
            4,
            4,
            vec![
                Record::ItemDelete { id: "ghost".into() },
                Record::Signals(vec![signal("view", "ghost", 1.0, None, None)]),
            ],
        ),
        batch(
            5,
            5,
            vec![Record::ItemPut {
                id: "ghost".into(),
                meta: meta("G"),
            }],
        ),
    ];
    let out = run(&config, &early, 2);
    let f = out.finals(time_at(clock + 6));
    let state = |id: &str, meta: Option<ItemMeta>| ItemState {
        id: id.into(),
        meta: meta.map(std::sync::Arc::new),
        deleted: false,
    };
    let n = |id: &str, i: usize| (id.to_string(), i);
    let states: Vec<_> = f.items.iter().map(|(k, s)| (k.clone(), s.clone())).collect();
    assert_eq!(
        states,
        vec![
            (n("b", 0), state("b", None)),
            (n("ghost", 0), state("ghost", Some(meta("G"))))
        ]
    );
    let totals: BTreeMap<(Named, u16), i64> = f.windows.iter().map(|(k, l)| (k.clone(), l.0[TOTAL_LANE])).collect();
    assert_eq!(totals, BTreeMap::from([((n("b", 0), view), weight_fixed(2.0))]));
    assert!(
        f.decay.keys().all(|(k, ..)| *k == n("b", 0)),
        "a's decay sums were zeroed"
    );

    // Once a's signals have left every window (twice the longest, 7d) its id is forgotten,
    // and once users' seen sets have (the state horizon, 90d) so is its key: a later signal
    // starts a new item, on the reused key.
    let later = vec![batch(
        92 * day,
        6,
        vec![Record::Signals(vec![signal("view", "a", 3.0, None, None)])],
    )];
    let out = run_phases(&config, &[&early, &later], 1);
    let f = out.finals(time_at(clock + 92 * day + 1));
    let a_keys: std::collections::BTreeSet<u64> = out
        .items
        .iter()
        .filter(|((_, s), _, d)| s.id == "a" && *d > 0)
        .map(|((k, _), _, _)| *k)
        .collect();
    assert_eq!(a_keys.len(), 1, "the retired key is reused: {a_keys:?}");
    assert!(
        out.items
            .iter()
            .any(|((_, s), t, d)| s.id == "a" && *d > 0 && *t >= time_at(clock + 92 * day))
    );
    let a = f
        .windows
        .iter()
        .find(|((k, _), _)| k.0 == "a")
        .map(|(_, l)| l.0[TOTAL_LANE]);
    assert_eq!(a, Some(weight_fixed(3.0)));
}

#[test]
fn engine_publishes_every_shard() {
    let config = Arc::new(Config::default());
    let shards = Arc::new(Shards::new(config.clone(), 2, 0, 2));
    let feed = Arc::new(Feed::new(8));
    let engine = Engine::start(
        config.clone(),
        EngineOptions::threads(2),
        feed.clone(),
        shards.clone(),
        None,
    )
    .unwrap();
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
    let view = shards.view();
    assert!(view.is_closed());
    assert_eq!(view.lsn(), 1);
    let like = config.signals.iter().position(|s| s.name == "like").unwrap() as u16;
    let (_, x) = view.shard_of("x").and_then(|s| s.item("x")).expect("x published");
    assert_eq!(x.lanes(like).map(|l| l.0[TOTAL_LANE]), Some(weight_fixed(2.0)));
    assert!(view.shard_of("y").and_then(|s| s.item("y")).is_some());
}

#[test]
fn timely_config_rejects_zero_workers() {
    assert!(EngineOptions::threads(0).timely_config().is_err());
    assert!(EngineOptions::threads(3).timely_config().is_ok());
}
