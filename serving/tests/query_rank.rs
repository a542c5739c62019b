//! `rank` on random snapshots against a brute-force scan: every item is scored from the
//! generated features, filtered, sorted (score desc, id asc), capped per creator and paged —
//! for every profile, several signal blends, windows, half-lives, filters, exclusions,
//! diversity, page sizes and cursors. Scores must match bit for bit (same arithmetic), and a
//! separate check compares them with SPEC §3's formulas within 1e-9.

#![allow(clippy::unwrap_used, clippy::type_complexity)] // test helpers

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use tidal_core::Config;
use tidal_core::features::{LANES, Lanes, TOTAL_LANE, hot_key, hot_value, weight_float};
use tidal_core::flow::owner;
use tidal_core::flow::{HalfLifeIdx, ItemKey, ItemState, KindIdx};
use tidal_core::record::{ItemMeta, Position};
use tidal_core::time::time_at;
use tidal_serving::query::{RankParams, Ranking, rank};
use tidal_sinks::{Snapshot, SnapshotBuilder, Update, View};

const CONFIG: &str = r#"
[[signals]]
name = "view"
half_lives = ["1h", "6h"]
windows = [{ size = "1h" }, { size = "24h" }]
rank_weight = 1.0

[[signals]]
name = "like"
half_lives = ["1h", "6h"]
windows = [{ size = "1h" }, { size = "24h" }]
rank_weight = 3.0

[[signals]]
name = "share"
half_lives = ["1h"]
windows = [{ size = "1h" }]
rank_weight = 0.0

[[profiles]]
name = "buzz"
base = "trending"
signals = { view = 1.0, like = 2.0 }
window = "24h"

[[profiles]]
name = "slow-hot"
base = "hot"
half_life = "6h"
max_per_creator = 2
"#;

const HOUR: u64 = 3_600_000;
/// A multiple of every epoch length (16 half-lives), so epochs start before it.
const T0: u64 = 2_000 * 96 * HOUR;

/// What was generated, item by item: the oracle's input.
struct World {
    config: Config,
    snap: View,
    states: BTreeMap<ItemKey, ItemState>,
    lanes: BTreeMap<(ItemKey, KindIdx), Lanes>,
    epochs: BTreeMap<(ItemKey, KindIdx, HalfLifeIdx), Vec<(u64, i128)>>,
}

fn world(seed: u64, n: u64, clock: u64) -> World {
    let config = Config::parse(CONFIG).unwrap();
    let mut rng = SmallRng::seed_from_u64(seed);
    let (mut states, mut lanes, mut epochs) = (BTreeMap::new(), BTreeMap::new(), BTreeMap::new());
    let mut updates = Vec::new();
    for key in 0..n {
        let id = format!("it{:03}", (key * 7919) % 1009);
        let meta = (!rng.gen_bool(0.1)).then(|| ItemMeta {
            creator: rng.gen_bool(0.9).then(|| format!("c{}", rng.gen_range(0..6))),
            // A rare category: its filter is answered from its posting list.
            category: Some(if rng.gen_bool(0.03) {
                "rare".to_string()
            } else {
                format!("cat{}", rng.gen_range(0..3))
            }),
            tags: ["a", "b", "c"]
                .iter()
                .filter(|_| rng.gen_bool(0.4))
                .map(|t| t.to_string())
                .collect(),
            created_at: rng.gen_bool(0.8).then(|| T0 - rng.gen_range(0..50u64) * 1000),
            ..ItemMeta::default()
        });
        let state = ItemState {
            id,
            meta: meta.map(std::sync::Arc::new),
            deleted: rng.gen_bool(0.1),
        };
        updates.push((
            Update::Item {
                key,
                state: state.clone(),
            },
            1,
        ));
        states.insert(key, state);
        for (kind, st) in config.signals.iter().enumerate() {
            let kind = kind as KindIdx;
            if rng.gen_bool(0.75) {
                let mut l = Lanes::default();
                for j in 0..st.windows.len() {
                    // Small counts (many ties), sometimes half weights, rarely negative.
                    let unit = if rng.gen_bool(0.3) { 1 << 19 } else { 1 << 20 };
                    let c = rng.gen_range(-1i64..7) * unit;
                    l.0[2 * j] = c;
                    l.0[2 * j + 1] = c + rng.gen_range(-1i64..8) * unit;
                }
                l.0[TOTAL_LANE] = rng.gen_range(-1i64..30) << 20;
                updates.push((Update::Window { key, kind, lanes: l }, 1));
                lanes.insert((key, kind), l);
            }
            for (hl, h) in st.half_lives.iter().enumerate() {
                let hl = hl as HalfLifeIdx;
                let r = 16 * h.ms();
                let mut es = Vec::new();
                for k in 0..3u64 {
                    if rng.gen_bool(0.4) {
                        let (epoch, sum) = (T0 - k * r, rng.gen_range(-2i128..25) << 44);
                        updates.push((
                            Update::Decay {
                                key,
                                kind,
                                hl,
                                epoch,
                                sum,
                            },
                            1,
                        ));
                        es.push((epoch, sum));
                    }
                }
                es.sort();
                epochs.insert((key, kind, hl), es);
            }
        }
    }
    // Split over 1, 2 or 3 shards by the ids' owners, as the engine's workers publish them:
    // the merged ranking must not depend on it.
    let peers = 1 + (seed % 3) as usize;
    let mut shards: Vec<Vec<(Update, isize)>> = vec![Vec::new(); peers];
    for (u, d) in updates {
        let key = match &u {
            Update::Window { key, .. } | Update::Decay { key, .. } | Update::Item { key, .. } => *key,
        };
        shards[owner(&states[&key].id, peers)].push((u, d));
    }
    let shards: Vec<Arc<Snapshot>> = shards
        .into_iter()
        .map(|updates| {
            let mut b = SnapshotBuilder::new(&config);
            b.apply(updates);
            b.set_position(Position { lsn: 42, signals: 42 });
            Arc::new(b.snapshot(time_at(clock) + 1))
        })
        .collect();
    let snap = View {
        frontier: time_at(clock) + 1,
        position: Position { lsn: 42, signals: 42 },
        peers,
        first: 0,
        shards,
        lsns: Arc::from(Vec::new()),
        text: None,
    };
    World {
        config,
        snap,
        states,
        lanes,
        epochs,
    }
}

/// Brute force: the full ranking (ids and scores) for a parsed request.
fn oracle(w: &World, p: &RankParams, q: &HashMap<&str, &str>) -> Vec<(String, f64)> {
    use tidal_serving::query::{Base, Feature};
    let clock = w.snap.clock_ms();
    let mut all = Vec::new();
    for (key, s) in &w.states {
        if s.deleted {
            continue;
        }
        let meta = s.meta.as_ref();
        let want = |k: &str, have: Option<&String>| q.get(k).is_none_or(|v| have.map(String::as_str) == Some(*v));
        if !want("category", meta.and_then(|m| m.category.as_ref()))
            || !want("creator", meta.and_then(|m| m.creator.as_ref()))
            || q.get("tag")
                .is_some_and(|t| !meta.is_some_and(|m| m.tags.iter().any(|x| x == t)))
            || q.get("exclude").is_some_and(|ex| ex.split(',').any(|e| e == s.id))
        {
            continue;
        }
        let score = if p.base == Base::New {
            match meta.and_then(|m| m.created_at) {
                Some(c) => c as f64,
                None => continue,
            }
        } else {
            // SPEC §3: Σ weight × count_W / W_h, the weighted counts summed before the one
            // division by the window's hours (equal sums tie exactly, broken by id).
            let mut score = 0.0;
            let mut hours = 1.0;
            for t in &p.terms {
                let l = w.lanes.get(&(*key, t.kind)).copied().unwrap_or_default();
                score += match (p.base, t.feature) {
                    (Base::Trending, Feature::Window { index, size }) => {
                        hours = size.hours();
                        t.weight * weight_float(l.0[2 * index])
                    }
                    (Base::Rising, Feature::Window { index, size }) => {
                        hours = size.hours();
                        t.weight * weight_float(2 * l.0[2 * index] - l.0[2 * index + 1])
                    }
                    (Base::Hot, Feature::HalfLife { index, size }) => {
                        let es = &w.epochs[&(*key, t.kind, index)];
                        match hot_key(es.iter().copied(), size.ms()) {
                            Some(k) => t.weight * hot_value(k, size.ms(), clock),
                            None => t.weight * tidal_core::features::decay_sum(es.iter().copied(), size.ms(), clock),
                        }
                    }
                    (Base::Top, _) => t.weight * weight_float(l.0[TOTAL_LANE]),
                    other => panic!("unexpected term {other:?}"),
                };
            }
            let score = score / hours;
            if score <= 0.0 {
                continue;
            }
            score
        };
        all.push((s.id.clone(), score, meta.and_then(|m| m.creator.clone())));
    }
    all.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.as_bytes().cmp(b.0.as_bytes())));
    let mut per: HashMap<String, usize> = HashMap::new();
    all.into_iter()
        .filter(|(_, _, c)| match (p.max_per_creator, c) {
            (Some(cap), Some(c)) => {
                let n = per.entry(c.clone()).or_default();
                *n += 1;
                *n <= cap
            }
            _ => true,
        })
        .map(|(id, s, _)| (id, s))
        .collect()
}

fn pairs(q: &[(&str, &str)]) -> Vec<(String, String)> {
    q.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn check(w: &World, q: &[(&str, &str)]) -> usize {
    let p = RankParams::parse(&pairs(q), &w.config).unwrap_or_else(|e| panic!("{q:?}: {e}"));
    let map: HashMap<&str, &str> = q.iter().copied().collect();
    let expected = oracle(w, &p, &map);
    let got: Ranking = rank(&w.snap, &w.config, &p).unwrap();
    let (off, lim) = (p.offset, p.limit);
    let page: Vec<(String, f64)> = got.items.iter().map(|i| (i.id.clone(), i.score)).collect();
    let want: Vec<(String, f64)> = expected.iter().skip(off).take(lim).cloned().collect();
    assert_eq!(page, want, "{q:?}");
    for (n, item) in got.items.iter().enumerate() {
        assert_eq!(item.rank, off + n + 1, "{q:?}");
    }
    assert_eq!(got.next_cursor.is_some(), expected.len() > off + lim, "{q:?}");
    assert_eq!((got.as_of.lsn, got.as_of.clock), (42, w.snap.clock_ms()));
    expected.len()
}

/// Pages through the whole ranking with the cursor and compares the concatenation.
fn check_paging(w: &World, q: &[(&str, &str)], limit: usize) {
    let p = RankParams::parse(&pairs(q), &w.config).unwrap();
    let map: HashMap<&str, &str> = q.iter().copied().collect();
    let expected: Vec<String> = oracle(w, &p, &map).into_iter().map(|x| x.0).collect();
    let mut got = Vec::new();
    let mut cursor: Option<String> = None;
    let limit = limit.to_string();
    loop {
        let mut qq = pairs(q);
        qq.push(("limit".into(), limit.clone()));
        if let Some(c) = &cursor {
            qq.push(("cursor".into(), c.clone()));
        }
        let r = rank(&w.snap, &w.config, &RankParams::parse(&qq, &w.config).unwrap()).unwrap();
        got.extend(r.items.into_iter().map(|i| i.id));
        match r.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(got, expected, "{q:?} paged by {limit}");
}

#[test]
fn rankings_equal_brute_force() {
    let profiles: [&[(&str, &str)]; 8] = [
        &[("profile", "trending")],
        &[("profile", "rising")],
        &[("profile", "hot")],
        &[("profile", "top")],
        &[("profile", "new")],
        &[("profile", "buzz")],
        &[("profile", "slow-hot")],
        &[],
    ];
    let blends: [&[(&str, &str)]; 5] = [
        &[],
        &[("signal", "view")],
        &[("signal", "like")],
        &[("signals", "view:1,like:3")],
        &[("signals", "like:0.5,view:0,share:2")],
    ];
    let filters: [&[(&str, &str)]; 11] = [
        &[],
        &[("limit", "1")],
        &[("limit", "200")],
        &[("category", "cat1")],
        &[("category", "rare")],
        &[("category", "rare"), ("tag", "a"), ("max_per_creator", "1")],
        &[("category", "nowhere")],
        &[("creator", "c2"), ("limit", "7")],
        &[("tag", "a"), ("max_per_creator", "1")],
        &[
            ("exclude", "it000,it007,it014,it021,it356"),
            ("max_per_creator", "3"),
            ("limit", "9"),
        ],
        &[("cursor", "p5"), ("limit", "6")],
    ];
    for seed in 0..4 {
        let w = world(seed, 300, T0 + 5 * HOUR + 123);
        let mut nonempty = 0;
        for profile in profiles {
            for blend in blends {
                // share declares only 1h: windows stay at their defaults when it is used.
                let windows: &[&[(&str, &str)]] = if blend.iter().any(|(_, v)| v.contains("share")) {
                    &[&[]]
                } else {
                    &[&[], &[("window", "24h")], &[("half_life", "6h")]]
                };
                for window in windows {
                    for filter in filters {
                        let q: Vec<(&str, &str)> = [profile, blend, window, filter].concat();
                        if let Err(e) = RankParams::parse(&pairs(&q), &w.config) {
                            // Presets of the declared profiles that share does not declare,
                            // or a window, half-life or blend the profile does not read.
                            let undeclared =
                                e.code().starts_with("undeclared") && blend.iter().any(|(_, v)| v.contains("share"));
                            let unread = e.code() == "invalid_parameter"
                                && q.iter().any(|(k, _)| *k == e.param())
                                && e.to_string().contains("ranks by");
                            assert!(undeclared || unread, "{q:?}: {e}");
                            continue;
                        }
                        if check(&w, &q) > 0 {
                            nonempty += 1;
                        }
                    }
                }
            }
        }
        assert!(
            nonempty > 500,
            "the random worlds should give non-empty rankings ({nonempty})"
        );
        for q in [
            &[("profile", "trending")][..],
            &[("profile", "hot"), ("signal", "like")],
            &[("profile", "new"), ("max_per_creator", "2")],
        ] {
            check_paging(&w, q, 7);
            check_paging(&w, q, 50);
        }
    }
}

#[test]
fn scores_follow_the_spec_formulas() {
    let w = world(9, 200, T0 + 3 * HOUR);
    let clock = w.snap.clock_ms();
    let by_id: HashMap<&str, ItemKey> = w.states.iter().map(|(k, s)| (s.id.as_str(), *k)).collect();
    let run = |q: &[(&str, &str)]| rank(&w.snap, &w.config, &RankParams::parse(&pairs(q), &w.config).unwrap()).unwrap();
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * b.abs().max(1e-300);
    // trending: Σ weight × count_W / W-in-hours; rising: Σ weight × (2·count_W − count_2W) / W.
    for (profile, window, hours) in [
        ("trending", "1h", 1.0),
        ("trending", "24h", 24.0),
        ("rising", "24h", 24.0),
    ] {
        let r = run(&[
            ("profile", profile),
            ("signals", "view:2,like:3"),
            ("window", window),
            ("limit", "1000"),
        ]);
        assert!(!r.items.is_empty());
        let j = if window == "1h" { 0 } else { 1 };
        for item in &r.items {
            let key = by_id[item.id.as_str()];
            let mut want = 0.0;
            for (kind, weight) in [(0u16, 2.0), (1, 3.0)] {
                let l = w.lanes.get(&(key, kind)).copied().unwrap_or_default();
                let (c, c2) = (l.count(j), l.count2(j));
                want += weight
                    * if profile == "trending" {
                        c / hours
                    } else {
                        (c - (c2 - c)) / hours
                    };
            }
            assert!(
                close(item.score, want),
                "{profile} {window} {}: {} vs {want}",
                item.id,
                item.score
            );
        }
    }
    // hot: Σ weight × Σ w·2^(−(T−ts)/h), from the anchored epoch sums.
    let r = run(&[
        ("profile", "hot"),
        ("signals", "view:1,like:2"),
        ("half_life", "6h"),
        ("limit", "1000"),
    ]);
    for item in &r.items {
        let key = by_id[item.id.as_str()];
        let want: f64 = [(0u16, 1.0), (1, 2.0)]
            .iter()
            .map(|(kind, weight)| {
                weight
                    * w.epochs[&(key, *kind, 1)]
                        .iter()
                        .map(|(e, v)| *v as f64 * 2f64.powi(-48) * 2f64.powf(-((clock - e) as f64) / (6 * HOUR) as f64))
                        .sum::<f64>()
            })
            .sum();
        assert!(close(item.score, want), "hot {}: {} vs {want}", item.id, item.score);
    }
    let _ = LANES;
}

#[test]
fn hot_scores_follow_the_clock() {
    // The same features at two clocks: hot values move, each still the exact decay.
    let q = pairs(&[("profile", "hot"), ("signals", "view:1,like:1"), ("limit", "1000")]);
    let early = world(3, 150, T0 + HOUR);
    let late = world(3, 150, T0 + 4 * HOUR);
    let p = RankParams::parse(&q, &early.config).unwrap();
    let a = rank(&early.snap, &early.config, &p).unwrap();
    let b = rank(&late.snap, &late.config, &p).unwrap();
    let qmap = HashMap::new();
    for (w, r) in [(&early, &a), (&late, &b)] {
        let want = oracle(w, &p, &qmap);
        let got: Vec<_> = r.items.iter().map(|i| (i.id.clone(), i.score)).collect();
        assert_eq!(got, want);
    }
    // Three half-lives (1h) later every item's 1h decay is 1/8 of what it was.
    let early_scores: HashMap<_, _> = a.items.iter().map(|i| (i.id.clone(), i.score)).collect();
    for i in &b.items {
        let before = early_scores[&i.id];
        assert!(
            (i.score - before / 8.0).abs() <= 1e-9 * before,
            "{}: {} vs {}",
            i.id,
            i.score,
            before / 8.0
        );
    }
    assert_eq!(a.items.len(), b.items.len());
}
