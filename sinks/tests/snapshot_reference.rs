//! Random batches of changes applied to a `SnapshotBuilder` (one to three per version),
//! every version checked against a from-scratch model: every feature, the id map, the listed count, the entity
//! store writes, and every ordered index against a brute-force sort of all items.

use std::collections::BTreeMap;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use tidal_core::Config;
use tidal_core::features::{LANES, Lanes, TOTAL_LANE, hot_key, hot_value};
use tidal_core::flow::{HalfLifeIdx, ItemKey, ItemState, KindIdx};
use tidal_core::record::{ItemMeta, Position};
use tidal_sinks::index::{from_order_f64, from_order_i64};
use tidal_sinks::{IndexKind, SnapshotBuilder, Update};

const CONFIG: &str = r#"
[[signals]]
name = "view"
half_lives = ["1h", "24h"]
windows = [{ size = "1h" }, { size = "24h" }]
rank_weight = 1.0

[[signals]]
name = "like"
half_lives = ["1h"]
windows = [{ size = "1h" }]
rank_weight = 3.0
"#;

#[derive(Default)]
struct Model {
    states: BTreeMap<ItemKey, ItemState>,
    lanes: BTreeMap<(ItemKey, KindIdx), Lanes>,
    epochs: BTreeMap<(ItemKey, KindIdx, HalfLifeIdx, u64), i128>,
    lsn: u64,
}

fn id_of(key: ItemKey) -> String {
    // Several keys share an id: a later key is the same item after a delete.
    format!("item-{}", key % 9)
}

fn random_lanes(rng: &mut SmallRng) -> Lanes {
    let mut l = Lanes::default();
    for x in l.0.iter_mut() {
        *x = rng.gen_range(-2i64..6) << 20;
    }
    l
}

fn random_state(rng: &mut SmallRng, key: ItemKey) -> ItemState {
    let meta = rng.gen_bool(0.7).then(|| ItemMeta {
        creator: Some(format!("c{}", rng.gen_range(0..3))),
        created_at: rng.gen_bool(0.8).then(|| rng.gen_range(0..5u64) * 1000),
        ..ItemMeta::default()
    });
    ItemState {
        id: id_of(key),
        meta: meta.map(std::sync::Arc::new),
        deleted: rng.gen_bool(0.2),
    }
}

/// One random batch: a change is `−old +new`; some no-op pairs are mixed in.
fn random_batch(rng: &mut SmallRng, m: &mut Model, h_ms: &[[u64; 2]; 2]) -> Vec<(Update, isize)> {
    let mut out = Vec::new();
    for _ in 0..rng.gen_range(1..40) {
        let key = rng.gen_range(0..30u64);
        match rng.gen_range(0..10) {
            0..=3 => {
                let kind = rng.gen_range(0..2u16);
                let old = m.lanes.get(&(key, kind)).copied();
                let new = (!rng.gen_bool(0.2)).then(|| random_lanes(rng));
                if let Some(o) = old {
                    out.push((Update::Window { key, kind, lanes: o }, -1));
                }
                match new {
                    Some(n) => {
                        out.push((Update::Window { key, kind, lanes: n }, 1));
                        m.lanes.insert((key, kind), n);
                    }
                    None => {
                        m.lanes.remove(&(key, kind));
                    }
                }
            }
            4..=6 => {
                let kind = rng.gen_range(0..2u16);
                let hl = if kind == 0 { rng.gen_range(0..2u8) } else { 0 };
                let h = h_ms[kind as usize][hl as usize];
                let epoch = rng.gen_range(0..3u64) * 16 * h;
                let old = m.epochs.get(&(key, kind, hl, epoch)).copied();
                let new = (!rng.gen_bool(0.2)).then(|| (rng.gen_range(-3i128..40)) << 44);
                if let Some(o) = old {
                    out.push((
                        Update::Decay {
                            key,
                            kind,
                            hl,
                            epoch,
                            sum: o,
                        },
                        -1,
                    ));
                }
                match new {
                    Some(n) => {
                        out.push((
                            Update::Decay {
                                key,
                                kind,
                                hl,
                                epoch,
                                sum: n,
                            },
                            1,
                        ));
                        m.epochs.insert((key, kind, hl, epoch), n);
                    }
                    None => {
                        m.epochs.remove(&(key, kind, hl, epoch));
                    }
                }
            }
            7..=8 => {
                let old = m.states.get(&key).cloned();
                let new = (!rng.gen_bool(0.1)).then(|| random_state(rng, key));
                if let Some(o) = old {
                    out.push((Update::Item { key, state: o }, -1));
                }
                match new {
                    Some(n) => {
                        out.push((Update::Item { key, state: n.clone() }, 1));
                        m.states.insert(key, n);
                    }
                    None => {
                        m.states.remove(&key);
                    }
                }
            }
            _ => {
                // A value that comes and goes within the batch.
                let u = Update::Window {
                    key,
                    kind: 0,
                    lanes: random_lanes(rng),
                };
                out.push((u.clone(), 1));
                out.push((u, -1));
            }
        }
    }
    if rng.gen_bool(0.5) {
        m.lsn += rng.gen_range(1..5);
    }
    // The sink sees updates in any order.
    for i in (1..out.len()).rev() {
        out.swap(i, rng.gen_range(0..=i));
    }
    out
}

fn listable(m: &Model, key: ItemKey) -> bool {
    m.states.get(&key).is_some_and(|s| !s.deleted)
}

/// Brute force: every listable key's value, sorted by value desc, id asc, key asc.
fn expected_index<V: PartialOrd + Copy>(m: &Model, value: impl Fn(ItemKey) -> Option<V>) -> Vec<(ItemKey, V)> {
    let mut v: Vec<(ItemKey, V)> = m
        .states
        .keys()
        .filter(|k| listable(m, **k))
        .filter_map(|k| Some((*k, value(*k)?)))
        .collect();
    v.sort_by(|a, b| {
        b.1.partial_cmp(&a.1)
            .expect("no NaN")
            .then_with(|| id_of(a.0).cmp(&id_of(b.0)))
            .then_with(|| a.0.cmp(&b.0))
    });
    v
}

fn epochs_of(m: &Model, key: ItemKey, kind: KindIdx, hl: HalfLifeIdx) -> Vec<(u64, i128)> {
    m.epochs
        .iter()
        .filter(|((k, t, h, _), _)| (*k, *t, *h) == (key, kind, hl))
        .map(|((_, _, _, e), v)| (*e, *v))
        .collect()
}

#[test]
fn indexes_match_brute_force_after_random_batches() {
    let config = Config::parse(CONFIG).unwrap();
    let h_ms = [[3_600_000, 86_400_000], [3_600_000, 0]];
    for seed in 0..12 {
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut m = Model::default();
        let mut b = SnapshotBuilder::new(&config);
        let mut store: BTreeMap<String, ItemMeta> = BTreeMap::new();
        for round in 0..40 {
            // Several batches may be applied before a version is cut.
            for _ in 0..rng.gen_range(1..4) {
                let batch = random_batch(&mut rng, &mut m, &h_ms);
                b.apply(batch);
            }
            b.set_position(Position {
                lsn: m.lsn,
                signals: m.lsn * 3,
            });
            let snap = b.snapshot(round + 1);
            for c in b.take_item_changes() {
                match c.meta() {
                    Some(meta) => store.insert(c.id.to_string(), meta.clone()),
                    None => store.remove(&*c.id),
                };
            }
            let ctx = format!("seed {seed} round {round}");
            assert_eq!(snap.lsn, m.lsn, "{ctx}");
            assert_eq!(snap.signals, m.lsn * 3, "{ctx}");

            // Features, key by key.
            for key in 0..30u64 {
                let e = snap.entry(key);
                assert_eq!(e.and_then(|e| e.state()), m.states.get(&key), "{ctx} key {key}");
                for kind in 0..2u16 {
                    assert_eq!(
                        e.and_then(|e| e.lanes(kind)),
                        m.lanes.get(&(key, kind)),
                        "{ctx} key {key}"
                    );
                    for hl in 0..2u8 {
                        let got: Vec<_> = e.map(|e| e.epochs(kind, hl).collect()).unwrap_or_default();
                        assert_eq!(got, epochs_of(&m, key, kind, hl), "{ctx} key {key}");
                    }
                }
            }
            assert_eq!(
                snap.listed(),
                m.states.keys().filter(|k| listable(&m, **k)).count(),
                "{ctx}"
            );

            // id -> latest key with a state; the store holds the latest key's live metadata.
            let mut expected_store = BTreeMap::new();
            for n in 0..9u64 {
                let id = format!("item-{n}");
                let latest = m.states.iter().filter(|(_, s)| s.id == id).map(|(k, _)| *k).max();
                assert_eq!(snap.key_of(&id), latest, "{ctx} {id}");
                if let Some(s) = latest.map(|k| &m.states[&k])
                    && let (false, Some(meta)) = (s.deleted, &s.meta)
                {
                    expected_store.insert(id, (**meta).clone());
                }
            }
            assert_eq!(store, expected_store, "{ctx}");

            // Every ordered index against a brute-force sort.
            for kind in 0..2u16 {
                let windows = if kind == 0 { 2 } else { 1 };
                for window in 0..windows {
                    let lanes = |k| m.lanes.get(&(k, kind)).copied();
                    let exp = expected_index(&m, |k| lanes(k).map(|l| l.0[2 * window]).filter(|c| *c > 0));
                    let got: Vec<_> = snap
                        .index(IndexKind::Trending { kind, window })
                        .unwrap()
                        .iter()
                        .map(|e| (e.key, from_order_i64(e.order)))
                        .collect();
                    assert_eq!(got, exp, "{ctx} trending {kind}/{window}");
                    let exp = expected_index(&m, |k| {
                        lanes(k)
                            .map(|l| 2 * l.0[2 * window] - l.0[2 * window + 1])
                            .filter(|c| *c > 0)
                    });
                    let got: Vec<_> = snap
                        .index(IndexKind::Rising { kind, window })
                        .unwrap()
                        .iter()
                        .map(|e| (e.key, from_order_i64(e.order)))
                        .collect();
                    assert_eq!(got, exp, "{ctx} rising {kind}/{window}");
                }
                let exp = expected_index(&m, |k| {
                    m.lanes.get(&(k, kind)).map(|l| l.0[TOTAL_LANE]).filter(|c| *c > 0)
                });
                let got: Vec<_> = snap
                    .index(IndexKind::Top { kind })
                    .unwrap()
                    .iter()
                    .map(|e| (e.key, from_order_i64(e.order)))
                    .collect();
                assert_eq!(got, exp, "{ctx} top {kind}");
                for hl in 0..windows as u8 {
                    let h = h_ms[kind as usize][hl as usize];
                    let exp = expected_index(&m, |k| hot_key(epochs_of(&m, k, kind, hl), h));
                    let got: Vec<_> = snap
                        .index(IndexKind::Hot { kind, half_life: hl })
                        .unwrap()
                        .iter()
                        .map(|e| (e.key, from_order_f64(e.order)))
                        .collect();
                    assert_eq!(got, exp, "{ctx} hot {kind}/{hl}");
                    // The hot key gives the decayed sum at any clock (SPEC §3's formula).
                    let t = 3 * 16 * h + 12_345;
                    for (k, key) in &got {
                        let exact: f64 = epochs_of(&m, *k, kind, hl)
                            .iter()
                            .map(|(e, v)| *v as f64 / 2f64.powi(48) * 2f64.powf(-((t - e) as f64) / h as f64))
                            .sum();
                        let via = hot_value(*key, h, t);
                        assert!((via - exact).abs() <= 1e-9 * exact.abs(), "{ctx}: {via} vs {exact}");
                    }
                }
            }
            let exp = expected_index(&m, |k| m.states[&k].meta.as_ref().and_then(|mt| mt.created_at));
            let got: Vec<_> = snap
                .index(IndexKind::New)
                .unwrap()
                .iter()
                .map(|e| (e.key, e.order))
                .collect();
            assert_eq!(got, exp, "{ctx} new");
        }
    }
}

#[test]
fn a_published_version_does_not_change_when_the_builder_moves_on() {
    let config = Config::parse(CONFIG).unwrap();
    let mut b = SnapshotBuilder::new(&config);
    let state = ItemState {
        id: "a".into(),
        meta: None,
        deleted: false,
    };
    let lanes = Lanes([1 << 20; LANES]);
    b.apply(vec![
        (
            Update::Item {
                key: 1,
                state: state.clone(),
            },
            1,
        ),
        (Update::Window { key: 1, kind: 0, lanes }, 1),
    ]);
    let v1 = b.snapshot(5);
    b.apply(vec![
        (
            Update::Item {
                key: 1,
                state: state.clone(),
            },
            -1,
        ),
        (
            Update::Item {
                key: 1,
                state: ItemState { deleted: true, ..state },
            },
            1,
        ),
    ]);
    let v2 = b.snapshot(6);
    let trending = IndexKind::Trending { kind: 0, window: 0 };
    assert_eq!(v1.index(trending).unwrap().len(), 1);
    assert_eq!(
        v2.index(trending).unwrap().len(),
        0,
        "a deleted item leaves every index"
    );
    assert_eq!((v1.frontier, v2.frontier), (5, 6));
    assert_eq!(v2.item("a").map(|(_, e)| e.is_listable()), Some(false));
}
