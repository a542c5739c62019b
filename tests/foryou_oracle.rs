//! Preference vectors and `for_you` against a from-scratch recomputation of SPEC §12, on
//! random logs where items are embedded, re-embedded, stripped of their embedding, deleted
//! and put again, signals arrive late and cross the horizon, users follow and block
//! creators and are deleted — at many times, with 1, 2 and 4 workers (which must agree
//! exactly), and after a restart from the shutdown checkpoint.
//!
//! The catalogue is smaller than `candidates`, so every admissible item the four sources
//! can name is a candidate and the whole ranking can be recomputed: its set, every
//! `explain` term against its formula, the order, and the exploration slots.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use tidal::{ClockMode, Config, Dur, Durability, Embedding, ItemMeta, NewSignal, RankQuery, RelKind, Tidal};
use tidal_core::config::{Mark, ProfileDef};

const T0: u64 = 1_700_000_000_000;
const USERS: usize = 6;
const ITEMS: usize = 12;
const CREATORS: usize = 3;
const DIM: usize = 3;
/// The state horizon (seen / hidden sets) and the preference horizon and half-life, ms.
const STATE_HORIZON: u64 = 60_000;
const HORIZON: u64 = 30_000;
const HALF_LIFE: u64 = 10_000;
const AFFINITY_H: u64 = 20_000;
/// The popularity half-life (the longest declared).
const POP_H: u64 = 20_000;
const FRESH: u64 = 20_000;
const COLD: f64 = 2.0;
const KINDS: [&str; 4] = ["view", "like", "skip", "hide"];

fn config(dir: &std::path::Path, workers: usize) -> Config {
    let mut c = Config::default_filled();
    c.engine.data_dir = dir.display().to_string();
    c.engine.clock = ClockMode::Event;
    c.engine.durability = Durability::Buffer;
    c.engine.workers = workers;
    c.engine.checkpoint_every = 0;
    c.signals.retain(|s| KINDS.contains(&s.name.as_str()));
    for s in &mut c.signals {
        s.half_lives = vec![Dur(5_000), Dur(POP_H)];
        (s.polarity, s.rank_weight, s.relationship_delta, s.marks) = match s.name.as_str() {
            "view" => (1.0, 1.0, 0.25, vec![Mark::Seen]),
            "like" => (2.0, 3.0, 1.0, vec![Mark::Seen, Mark::Liked]),
            "skip" => (-1.0, 0.0, 0.0, vec![Mark::Seen]),
            _ => (-1.5, 0.0, -0.5, vec![Mark::Hidden]),
        };
    }
    let p = &mut c.personalization;
    p.state_horizon = Dur(STATE_HORIZON);
    p.horizon = Dur(HORIZON);
    p.half_life = Dur(HALF_LIFE);
    p.affinity_half_life = Dur(AFFINITY_H);
    p.fresh_window = Dur(FRESH);
    p.cold_signals = COLD;
    p.exact_search = true;
    c.profiles.push(ProfileDef {
        name: "fy-mix".into(),
        base: "for_you".into(),
        signals: BTreeMap::new(),
        window: None,
        half_life: None,
        max_per_creator: None,
        w_sim: Some(0.3),
        w_pop: Some(0.3),
        w_aff: Some(0.4),
        candidates: None,
        exploration: Some(0.25),
        w_text: None,
        w_profile: None,
        transforms: [("pop", "log1p"), ("aff", "sqrt")]
            .into_iter()
            .map(|(t, f)| (t.to_string(), f.to_string()))
            .collect(),
        ..ProfileDef::default()
    });
    c.validate().expect("valid test config");
    c
}

#[derive(Clone, Debug)]
enum Op {
    ItemPut {
        id: String,
        creator: String,
        embedding: Option<Vec<f32>>,
        created_at: u64,
    },
    ItemDel(String),
    UserDel(String),
    Follow(String, String, bool),
    Block(String, String, bool),
    Signal {
        kind: &'static str,
        item: String,
        user: Option<String>,
        weight: f64,
        ts: u64,
    },
    Advance(u64),
}

fn random_log(seed: u64) -> Vec<Vec<Op>> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut clock = T0;
    let user = |rng: &mut StdRng| format!("u{}", rng.gen_range(0..USERS));
    let item = |rng: &mut StdRng| format!("i{}", rng.gen_range(0..ITEMS));
    let mut phases = Vec::new();
    for phase in 0..12 {
        let mut ops = Vec::new();
        let n = if phase == 0 { 20 } else { rng.gen_range(5..15) };
        for _ in 0..n {
            let r = rng.gen_range(0..100);
            let op = if r < 18 || phase == 0 {
                Op::ItemPut {
                    id: item(&mut rng),
                    creator: format!("k{}", rng.gen_range(0..CREATORS)),
                    embedding: rng
                        .gen_bool(0.8)
                        .then(|| (0..DIM).map(|_| rng.gen_range(-1.0f32..1.0)).collect()),
                    created_at: clock - rng.gen_range(0..40_000),
                }
            } else if r < 21 {
                Op::ItemDel(item(&mut rng))
            } else if r < 22 {
                Op::UserDel(user(&mut rng))
            } else if r < 26 {
                Op::Follow(
                    user(&mut rng),
                    format!("k{}", rng.gen_range(0..CREATORS)),
                    rng.gen_bool(0.8),
                )
            } else if r < 28 {
                Op::Block(
                    user(&mut rng),
                    format!("k{}", rng.gen_range(0..CREATORS)),
                    rng.gen_bool(0.6),
                )
            } else {
                let ts = if rng.gen_bool(0.7) {
                    clock + rng.gen_range(0..2_000)
                } else {
                    clock.saturating_sub(rng.gen_range(0..40_000))
                };
                clock = clock.max(ts);
                Op::Signal {
                    kind: ["view", "view", "like", "skip", "hide"][rng.gen_range(0..5)],
                    item: item(&mut rng),
                    user: rng.gen_bool(0.9).then(|| user(&mut rng)),
                    weight: [0.5, 1.0, 2.0][rng.gen_range(0..3)],
                    ts,
                }
            };
            ops.push(op);
        }
        if rng.gen_bool(0.5) {
            clock += rng.gen_range(2_000..20_000);
            ops.push(Op::Advance(clock));
        }
        phases.push(ops);
    }
    phases
}

fn write(t: &Tidal, op: &Op, n: usize) -> (u64, u64) {
    let ack = match op {
        Op::ItemPut {
            id,
            creator,
            embedding,
            created_at,
        } => t
            .put_item(
                id,
                ItemMeta {
                    creator: Some(creator.clone()),
                    created_at: Some(*created_at),
                    embedding: embedding.clone().map(Embedding),
                    ..ItemMeta::default()
                },
            )
            .expect("item put"),
        Op::ItemDel(i) => t.delete_item(i).expect("item delete"),
        Op::UserDel(u) => t.delete_user(u).expect("user delete"),
        Op::Follow(u, c, a) => t.relationship(u, c, RelKind::Follow, *a).expect("follow"),
        Op::Block(u, c, a) => t.relationship(u, c, RelKind::Block, *a).expect("block"),
        Op::Advance(to) => t.advance_clock(*to).expect("advance"),
        Op::Signal {
            kind,
            item,
            user,
            weight,
            ts,
        } => {
            let mut s = NewSignal::new(*kind, item.clone())
                .weight(*weight)
                .ts(*ts)
                .id(format!("s{n}"));
            if let Some(u) = user {
                s = s.user(u.clone());
            }
            let a = t.signal(s).expect("signal");
            return (a.lsn, a.clock);
        }
    };
    (ack.lsn, ack.clock)
}

#[derive(Clone, Debug)]
struct Item {
    live: bool,
    incarnation: usize,
    creator: Option<String>,
    embedding: Option<Vec<f32>>,
    created_at: Option<u64>,
}

#[derive(Clone, Debug)]
struct Sig {
    kind: &'static str,
    item: String,
    incarnation: usize,
    user: Option<String>,
    weight: f64,
    ts_eff: u64,
    creator: Option<String>,
}

#[derive(Default)]
struct Oracle {
    items: HashMap<String, Item>,
    incarnations: usize,
    sigs: Vec<Sig>,
    user_since: HashMap<String, usize>,
    follows: HashMap<String, BTreeSet<String>>,
    blocks: HashMap<String, BTreeSet<String>>,
}

impl Oracle {
    fn apply(&mut self, op: &Op, clock: u64) {
        match op {
            Op::ItemPut {
                id,
                creator,
                embedding,
                created_at,
            } => {
                let next = self.incarnations;
                let e = self.items.entry(id.clone()).or_insert(Item {
                    live: false,
                    incarnation: usize::MAX,
                    creator: None,
                    embedding: None,
                    created_at: None,
                });
                if !e.live {
                    e.live = true;
                    e.incarnation = next;
                    self.incarnations += 1;
                }
                e.creator = Some(creator.clone());
                e.embedding = embedding.clone();
                e.created_at = Some(*created_at);
            }
            Op::ItemDel(i) => {
                self.items.insert(
                    i.clone(),
                    Item {
                        live: false,
                        incarnation: usize::MAX,
                        creator: None,
                        embedding: None,
                        created_at: None,
                    },
                );
            }
            Op::UserDel(u) => {
                self.user_since.insert(u.clone(), self.sigs.len());
                self.follows.remove(u);
                self.blocks.remove(u);
            }
            Op::Follow(u, c, a) | Op::Block(u, c, a) => {
                let map = if matches!(op, Op::Follow(..)) {
                    &mut self.follows
                } else {
                    &mut self.blocks
                };
                let set = map.entry(u.clone()).or_default();
                if *a {
                    set.insert(c.clone());
                } else {
                    set.remove(c);
                }
            }
            Op::Advance(_) => {}
            Op::Signal {
                kind,
                item,
                user,
                weight,
                ts,
            } => {
                let next = self.incarnations;
                let e = self.items.entry(item.clone()).or_insert_with(|| Item {
                    live: true,
                    incarnation: next,
                    creator: None,
                    embedding: None,
                    created_at: None,
                });
                if e.incarnation == next {
                    self.incarnations += 1;
                }
                if !e.live {
                    return;
                }
                self.sigs.push(Sig {
                    kind,
                    item: item.clone(),
                    incarnation: e.incarnation,
                    user: user.clone(),
                    weight: *weight,
                    ts_eff: (*ts).min(clock),
                    creator: e.creator.clone(),
                });
            }
        }
    }

    fn user_sigs<'a>(&'a self, user: &'a str) -> impl Iterator<Item = &'a Sig> + 'a {
        let since = self.user_since.get(user).copied().unwrap_or(0);
        self.sigs[since..]
            .iter()
            .filter(move |s| s.user.as_deref() == Some(user))
    }

    /// The item's unit embedding now, if the signal's incarnation is the live one.
    fn unit(&self, item: &str, incarnation: usize) -> Option<Vec<f64>> {
        let e = self
            .items
            .get(item)
            .filter(|e| e.live && e.incarnation == incarnation)?;
        let v: Vec<f64> = e.embedding.as_ref()?.iter().map(|x| f64::from(*x)).collect();
        let n = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        Some(v.iter().map(|x| x / n).collect())
    }

    /// `p_u(t)`, SPEC §12.
    fn preference(&self, config: &Config, user: &str, t: u64) -> Option<Vec<f64>> {
        let mut p: Option<Vec<f64>> = None;
        for s in self.user_sigs(user) {
            if t - s.ts_eff >= HORIZON {
                continue;
            }
            let Some(e) = self.unit(&s.item, s.incarnation) else {
                continue;
            };
            let polarity = config.signal(s.kind).expect("declared").polarity;
            let f = polarity * s.weight * (-((t - s.ts_eff) as f64) / HALF_LIFE as f64).exp2();
            let acc = p.get_or_insert_with(|| vec![0.0; DIM]);
            for (a, x) in acc.iter_mut().zip(&e) {
                *a += f * x;
            }
        }
        p
    }

    /// The (item, incarnation) pairs in `user`'s seen and hidden sets at `t`.
    fn excluded(&self, config: &Config, user: &str, t: u64, unseen: bool) -> BTreeSet<(String, usize)> {
        let g = (STATE_HORIZON / 90).max(1000);
        let mut out = BTreeSet::new();
        for s in self.user_sigs(user) {
            if (s.ts_eff / g) * g + STATE_HORIZON <= t {
                continue;
            }
            let marks = &config.signal(s.kind).expect("declared").marks;
            if marks.contains(&Mark::Hidden) || (unseen && marks.contains(&Mark::Seen)) {
                out.insert((s.item.clone(), s.incarnation));
            }
        }
        out
    }

    fn affinity(&self, config: &Config, user: &str, creator: &str, t: u64) -> f64 {
        self.user_sigs(user)
            .filter(|s| s.creator.as_deref() == Some(creator))
            .map(|s| {
                let delta = config.signal(s.kind).expect("declared").relationship_delta;
                delta * s.weight * (-((t - s.ts_eff) as f64) / AFFINITY_H as f64).exp2()
            })
            .sum()
    }

    /// `hot` over the schema's blend at the longest half-life.
    fn popularity(&self, config: &Config, item: &str, incarnation: usize, t: u64) -> f64 {
        self.sigs
            .iter()
            .filter(|s| s.item == item && s.incarnation == incarnation)
            .map(|s| {
                let w = config.signal(s.kind).expect("declared").rank_weight;
                w * s.weight * (-((t - s.ts_eff) as f64) / POP_H as f64).exp2()
            })
            .sum()
    }

    fn signals(&self, item: &str, incarnation: usize) -> f64 {
        self.sigs
            .iter()
            .filter(|s| s.item == item && s.incarnation == incarnation)
            .map(|s| s.weight)
            .sum()
    }
}

/// How much of the formula the random logs reached: (vectors, items explored, affinity
/// terms, items listed).
static REACHED: [AtomicUsize; 4] = [const { AtomicUsize::new(0) }; 4];

fn reached(i: usize) {
    REACHED[i].fetch_add(1, Ordering::Relaxed);
}

fn cosine(p: &[f64], e: &[f64]) -> f64 {
    let dot: f64 = p.iter().zip(e).map(|(a, b)| a * b).sum();
    let np = p.iter().map(|x| x * x).sum::<f64>().sqrt();
    let ne = e.iter().map(|x| x * x).sum::<f64>().sqrt();
    if np == 0.0 || ne == 0.0 { 0.0 } else { dot / (np * ne) }
}

fn close(a: f64, b: f64, scale: f64) -> bool {
    (a - b).abs() <= 1e-6 * scale.max(1e-3)
}

/// One `for_you` weighting, with the transforms of its popularity and affinity terms.
struct Weights {
    profile: &'static str,
    sim: f64,
    pop: f64,
    aff: f64,
    exploration: f64,
    pop_f: fn(f64) -> f64,
    aff_f: fn(f64) -> f64,
}

fn linear(x: f64) -> f64 {
    x
}

fn log1p(x: f64) -> f64 {
    x.signum() * (1.0 + x.abs()).ln()
}

fn sqrt(x: f64) -> f64 {
    x.signum() * x.abs().sqrt()
}

const WEIGHTINGS: [Weights; 2] = [
    Weights {
        profile: "for_you",
        sim: 0.5,
        pop: 0.5,
        aff: 0.0,
        exploration: 0.1,
        pop_f: linear,
        aff_f: linear,
    },
    Weights {
        profile: "fy-mix",
        sim: 0.3,
        pop: 0.3,
        aff: 0.4,
        exploration: 0.25,
        pop_f: log1p,
        aff_f: sqrt,
    },
];

/// Checks every user's vector and `for_you` rankings; returns what it read, to compare
/// worker counts.
fn check(t: &Tidal, oracle: &Oracle, config: &Config, ctx: &str) -> Vec<String> {
    let view = t.view();
    let now = view.clock_ms();
    let ctx = format!("{ctx}, clock {now}");
    let mut read = Vec::new();
    for u in 0..USERS {
        let user = format!("u{u}");
        // The vector.
        let want = oracle.preference(config, &user, now);
        let got = t
            .user_on(&view, &user, true)
            .expect("user")
            .and_then(|i| i.vector.flatten());
        let scale = want
            .as_ref()
            .map_or(0.0, |w| w.iter().map(|x| x * x).sum::<f64>().sqrt());
        match (&got, &want) {
            (None, None) => {}
            (None, Some(_)) | (Some(_), None) if scale < 1e-9 => {}
            (Some(g), Some(w)) => {
                for (a, b) in g.iter().zip(w) {
                    assert!(close(*a, *b, scale), "{ctx}: {user}'s vector {g:?} != {w:?}");
                }
            }
            _ => panic!("{ctx}: {user}'s vector {got:?} != {want:?}"),
        }
        if got.is_some() {
            reached(0);
        }
        read.push(format!("{user} vector {got:?}"));
        let vector = want.filter(|_| scale >= 1e-9);

        for w in &WEIGHTINGS {
            for unseen in [true, false] {
                let q = format!(
                    "profile={}&user={user}&explain=1&limit=100{}",
                    w.profile,
                    if unseen { "" } else { "&filter=all" }
                );
                let r = t
                    .rank_on(&view, &t.parse_query(&RankQuery::parse(&q).expect("q")).expect("parse"))
                    .expect("rank");
                read.push(format!(
                    "{q}: {:?}",
                    r.items.iter().map(|i| (&i.id, i.score.to_bits())).collect::<Vec<_>>()
                ));
                check_ranking(oracle, config, &ctx, &q, &user, vector.as_deref(), unseen, w, now, &r);
            }
        }
    }
    read
}

#[allow(clippy::too_many_arguments)]
fn check_ranking(
    oracle: &Oracle,
    config: &Config,
    ctx: &str,
    q: &str,
    user: &str,
    vector: Option<&[f64]>,
    unseen: bool,
    w: &Weights,
    now: u64,
    r: &tidal::Ranking,
) {
    let excluded = oracle.excluded(config, user, now, unseen);
    let blocks = oracle.blocks.get(user).cloned().unwrap_or_default();
    let follows = oracle.follows.get(user).cloned().unwrap_or_default();
    // The candidates: every admissible item some source names.
    struct Cand {
        id: String,
        sim: f64,
        pop: f64,
        aff: f64,
        cold: bool,
    }
    let mut cands: Vec<Cand> = Vec::new();
    for (id, e) in &oracle.items {
        if !e.live
            || excluded.contains(&(id.clone(), e.incarnation))
            || e.creator.as_ref().is_some_and(|c| blocks.contains(c))
        {
            continue;
        }
        let unit = oracle.unit(id, e.incarnation);
        let pop = oracle.popularity(config, id, e.incarnation, now);
        let fresh = e.created_at.is_some_and(|c| c + FRESH >= now);
        let followed = e.creator.as_ref().is_some_and(|c| follows.contains(c));
        let nearest = vector.is_some() && unit.is_some();
        if !(nearest || pop > 0.0 || followed || fresh) {
            continue;
        }
        cands.push(Cand {
            id: id.clone(),
            sim: match (vector, &unit) {
                (Some(p), Some(e)) => cosine(p, e),
                _ => 0.0,
            },
            pop,
            aff: e
                .creator
                .as_ref()
                .map_or(0.0, |c| oracle.affinity(config, user, c, now)),
            cold: fresh && oracle.signals(id, e.incarnation) < COLD,
        });
    }
    let max_pop = cands.iter().map(|c| c.pop).fold(0.0, f64::max);
    let max_aff = cands.iter().map(|c| c.aff).fold(0.0, f64::max);
    // The normalised terms: the transformed value over the largest transformed value.
    let max_pop_f = cands.iter().map(|c| (w.pop_f)(c.pop)).fold(0.0, f64::max);
    let max_aff_f = cands.iter().map(|c| (w.aff_f)(c.aff)).fold(0.0, f64::max);
    let ratio = |x: f64, m: f64| if m > 0.0 { x / m } else { 0.0 };
    let pop_term = |c: &Cand| ratio((w.pop_f)(c.pop), max_pop_f);
    let aff_term = |c: &Cand| ratio((w.aff_f)(c.aff), max_aff_f);
    let score = |c: &Cand| match vector {
        Some(_) => w.sim * c.sim + w.pop * pop_term(c) + w.aff * aff_term(c),
        None => pop_term(c),
    };
    let by_id: HashMap<&str, &Cand> = cands.iter().map(|c| (c.id.as_str(), c)).collect();
    let listed: BTreeSet<&str> = r.items.iter().map(|i| i.id.as_str()).collect();
    let want: BTreeSet<&str> = by_id.keys().copied().collect();
    assert_eq!(listed, want, "{ctx}: {q} lists {listed:?}, the candidates are {want:?}");
    let mut regular_last = f64::INFINITY;
    let mut cold_last = f64::INFINITY;
    for (p, item) in r.items.iter().enumerate() {
        let c = by_id[item.id.as_str()];
        let f = item.features.as_ref().expect("explain");
        let expect = score(c);
        assert!(
            close(item.score, expect, 1.0),
            "{ctx}: {q}: {} scores {} != {expect}",
            item.id,
            item.score
        );
        for (name, got, want, scale) in [
            ("sim", &f["sim"], c.sim, 1.0),
            ("pop", &f["pop"], c.pop, max_pop),
            ("aff", &f["aff"], c.aff, max_aff.abs()),
        ] {
            let got = got.as_f64().expect("a term");
            assert!(
                close(got, want, scale.max(1.0)),
                "{ctx}: {q}: {} {name} {got} != {want}",
                item.id
            );
        }
        let terms = &f["terms"];
        let (wsim, wpop, waff) = if vector.is_some() {
            (w.sim, w.pop, w.aff)
        } else {
            (0.0, 1.0, 0.0)
        };
        for (name, want) in [
            ("sim", wsim * c.sim),
            ("pop", wpop * pop_term(c)),
            ("aff", waff * aff_term(c)),
        ] {
            let got = terms[name].as_f64().expect("a weighted term");
            assert!(
                close(got, want, 1.0),
                "{ctx}: {q}: {} {name} term {got} != {want}",
                item.id
            );
        }
        let explored = f["exploration"].as_bool().expect("exploration");
        reached(3);
        if explored {
            reached(1);
        }
        if c.aff != 0.0 && w.aff > 0.0 {
            reached(2);
        }
        let slot = ((p + 1) as f64 * w.exploration).floor() > (p as f64 * w.exploration).floor();
        // An exploration slot holds a cold item when one is left; the others hold the best
        // item left, in score order.
        if explored {
            assert!(slot && c.cold, "{ctx}: {q}: {} explored at {p}", item.id);
            assert!(item.score <= cold_last + 1e-12, "{ctx}: {q}: cold items out of order");
            cold_last = item.score;
        } else {
            if slot {
                assert!(
                    r.items[p + 1..].iter().all(|i| !by_id[i.id.as_str()].cold),
                    "{ctx}: {q}: slot {p} is an exploration slot and a cold item was left"
                );
            }
            assert!(
                item.score <= regular_last + 1e-12,
                "{ctx}: {q}: {} out of order",
                item.id
            );
            regular_last = item.score;
        }
        assert_eq!(f["cold"].as_bool(), Some(c.cold), "{ctx}: {q}: {} cold", item.id);
    }
}

fn run(seed: u64, workers: usize) -> Vec<String> {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(dir.path(), workers);
    let mut oracle = Oracle::default();
    let mut read = Vec::new();
    let mut n = 0;
    let t = Tidal::open(config.clone()).expect("open");
    for (p, phase) in random_log(seed).iter().enumerate() {
        let mut last = 0;
        for op in phase {
            let (lsn, clock) = write(&t, op, n);
            n += 1;
            oracle.apply(op, clock);
            last = lsn;
        }
        t.wait_visible(last).expect("visible");
        read.extend(check(
            &t,
            &oracle,
            &config,
            &format!("seed {seed}, {workers} workers, phase {p}"),
        ));
    }
    let before = check(&t, &oracle, &config, "before the restart");
    t.shutdown().expect("shutdown");
    drop(t);
    let t = Tidal::open(config.clone()).expect("reopen from the checkpoint");
    let after = check(
        &t,
        &oracle,
        &config,
        &format!("seed {seed}, {workers} workers, restored"),
    );
    assert_eq!(before, after, "seed {seed}: the restart changed the answers");
    t.shutdown().expect("shutdown");
    read
}

#[test]
fn preference_vectors_and_for_you_match_the_oracle_for_any_number_of_workers() {
    for seed in [1u64, 2] {
        let one = run(seed, 1);
        for workers in [2, 4] {
            assert_eq!(one, run(seed, workers), "seed {seed}: {workers} workers differ from 1");
        }
    }
    let [vectors, explored, aff, listed] = REACHED.each_ref().map(|r| r.load(Ordering::Relaxed));
    eprintln!("vectors {vectors}, explored {explored}, affinity terms {aff}, listed {listed}");
    assert!(
        vectors > 100 && explored > 20 && aff > 100 && listed > 1000,
        "the logs reach too little"
    );
}
