//! Users, cohorts, user state and relationships against a from-scratch recomputation of
//! SPEC §4's formulas, on random logs where users change attributes and are deleted,
//! cohorts are declared and dropped mid-stream, items are deleted and put again, and events
//! arrive late — at many times, with 1, 2 and 4 workers (which must also agree with each
//! other exactly), and after a restart from a checkpoint.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use tidal::{ClockMode, Config, Dur, Durability, ItemMeta, NewSignal, RankQuery, RelKind, Tidal};
use tidal_core::config::{CohortDef, Mark, WindowDef};

const T0: u64 = 1_700_000_000_000;
const REGIONS: [&str; 3] = ["US", "EU", "AS"];
const GENDERS: [&str; 2] = ["F", "M"];
const USERS: usize = 8;
const ITEMS: usize = 10;
const CREATORS: usize = 3;
/// Windows of every type: (size, granularity) in ms.
const WINDOWS: [(u64, u64); 2] = [(10_000, 1_000), (60_000, 5_000)];
const HORIZON: u64 = 30_000;
const AFFINITY_H: u64 = 20_000;

fn config(dir: &std::path::Path, workers: usize) -> Config {
    let mut c = Config::default_filled();
    c.engine.data_dir = dir.display().to_string();
    c.engine.clock = ClockMode::Event;
    c.engine.durability = Durability::Buffer;
    c.engine.workers = workers;
    c.engine.checkpoint_every = 0;
    c.cohort_dimensions = vec!["region".into(), "gender".into()];
    c.cohorts = vec![CohortDef {
        name: "us_f".into(),
        where_: [("region".to_string(), "US".to_string()), ("gender".into(), "F".into())].into(),
    }];
    c.signals
        .retain(|s| ["view", "like", "hide"].contains(&s.name.as_str()));
    for s in &mut c.signals {
        s.windows = WINDOWS
            .iter()
            .map(|&(w, g)| WindowDef {
                size: Dur(w),
                granularity: Some(Dur(g)),
            })
            .collect();
        s.relationship_delta = match s.name.as_str() {
            "like" => 1.0,
            "hide" => -0.5,
            _ => 0.25,
        };
    }
    c.personalization.state_horizon = Dur(HORIZON);
    c.personalization.horizon = Dur(HORIZON);
    c.personalization.affinity_half_life = Dur(AFFINITY_H);
    c.validate().expect("valid test config");
    c
}

/// One acknowledged write, as the oracle replays it.
#[derive(Clone, Debug)]
enum Op {
    UserPut(String, BTreeMap<String, String>),
    UserDel(String),
    CohortPut(String, BTreeMap<String, String>),
    CohortDel(String),
    ItemPut(String, String),
    ItemDel(String),
    Follow(String, String, bool),
    Block(String, String, bool),
    Signal {
        kind: String,
        item: String,
        user: Option<String>,
        weight: f64,
        ts_eff: u64,
    },
}

/// The random log: ops grouped in phases, each a list of writes (one commit each).
fn random_log(seed: u64) -> Vec<Vec<(Op, u64)>> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut clock = T0;
    let mut phases = Vec::new();
    let user = |rng: &mut StdRng| format!("u{}", rng.gen_range(0..USERS));
    let item = |rng: &mut StdRng| format!("i{}", rng.gen_range(0..ITEMS));
    for phase in 0..14 {
        let mut ops = Vec::new();
        for _ in 0..rng.gen_range(4..14) {
            let r = rng.gen_range(0..100);
            let op = if r < 14 || phase == 0 {
                let mut attrs = BTreeMap::new();
                attrs.insert("region".to_string(), REGIONS[rng.gen_range(0..3)].to_string());
                if rng.gen_bool(0.8) {
                    attrs.insert("gender".to_string(), GENDERS[rng.gen_range(0..2)].to_string());
                }
                if rng.gen_bool(0.2) {
                    attrs.insert("plan".to_string(), "pro".to_string());
                }
                Op::UserPut(user(&mut rng), attrs)
            } else if r < 16 {
                Op::UserDel(user(&mut rng))
            } else if r < 19 {
                let mut rule = BTreeMap::new();
                rule.insert("region".to_string(), REGIONS[rng.gen_range(0..3)].to_string());
                rule.insert("gender".to_string(), GENDERS[rng.gen_range(0..2)].to_string());
                Op::CohortPut(format!("c{}", rng.gen_range(0..2)), rule)
            } else if r < 20 {
                Op::CohortDel(format!("c{}", rng.gen_range(0..2)))
            } else if r < 25 {
                Op::ItemPut(item(&mut rng), format!("k{}", rng.gen_range(0..CREATORS)))
            } else if r < 27 {
                Op::ItemDel(item(&mut rng))
            } else if r < 30 {
                Op::Follow(
                    user(&mut rng),
                    format!("k{}", rng.gen_range(0..CREATORS)),
                    rng.gen_bool(0.8),
                )
            } else if r < 32 {
                Op::Block(
                    user(&mut rng),
                    format!("k{}", rng.gen_range(0..CREATORS)),
                    rng.gen_bool(0.7),
                )
            } else {
                let kind = ["view", "view", "like", "hide"][rng.gen_range(0..4)].to_string();
                // Ahead of the clock (moving it), or late by up to 45 s.
                let ts = if rng.gen_bool(0.7) {
                    clock + rng.gen_range(0..2_500)
                } else {
                    clock.saturating_sub(rng.gen_range(0..45_000))
                };
                Op::Signal {
                    kind,
                    item: item(&mut rng),
                    user: rng.gen_bool(0.85).then(|| user(&mut rng)),
                    weight: [0.5, 1.0, 2.0][rng.gen_range(0..3)],
                    ts_eff: ts,
                }
            };
            if let Op::Signal { ts_eff, .. } = &op {
                clock = clock.max(*ts_eff);
            }
            ops.push((op, 0));
        }
        // Some phases move the clock on, so windows slide and sets expire.
        if rng.gen_bool(0.4) {
            clock += rng.gen_range(1_000..25_000);
            ops.push((Op::CohortDel("never-declared".into()), clock));
        }
        phases.push(ops);
    }
    phases
}

/// Signals alone, with users (a few hundred: a time of them is large at every worker),
/// after the end of `log`, some of them late.
fn signals_only(seed: u64, log: &[Vec<(Op, u64)>]) -> Vec<(Op, u64)> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5167_4a15);
    let end = log
        .iter()
        .flatten()
        .map(|(op, advance)| match op {
            Op::Signal { ts_eff, .. } => *ts_eff,
            _ => *advance,
        })
        .max()
        .unwrap_or(T0);
    (0..400)
        .map(|i| {
            let ts = if rng.gen_bool(0.7) {
                end + i * 10 + rng.gen_range(0..2_500)
            } else {
                end.saturating_sub(rng.gen_range(0..45_000))
            };
            let op = Op::Signal {
                kind: ["view", "view", "like", "hide"][rng.gen_range(0..4)].to_string(),
                item: format!("i{}", rng.gen_range(0..ITEMS)),
                user: rng.gen_bool(0.9).then(|| format!("u{}", rng.gen_range(0..USERS))),
                weight: [0.5, 1.0, 2.0][rng.gen_range(0..3)],
                ts_eff: ts,
            };
            (op, 0)
        })
        .collect()
}

/// Writes one op; returns its LSN and commit clock.
fn write(t: &Tidal, op: &Op, advance: u64, n: usize) -> (u64, u64) {
    let ack = match op {
        Op::CohortDel(name) if advance > 0 => {
            t.advance_clock(advance).expect("advance");
            t.delete_cohort(name).expect("cohort delete")
        }
        Op::UserPut(u, a) => t.put_user(u, a.clone()).expect("user put"),
        Op::UserDel(u) => t.delete_user(u).expect("user delete"),
        Op::CohortPut(n, r) => t.put_cohort(n, r.clone()).expect("cohort put"),
        Op::CohortDel(n) => t.delete_cohort(n).expect("cohort delete"),
        Op::ItemPut(i, c) => t
            .put_item(
                i,
                ItemMeta {
                    creator: Some(c.clone()),
                    category: Some(category_of(i).to_string()),
                    ..ItemMeta::default()
                },
            )
            .expect("item put"),
        Op::ItemDel(i) => t.delete_item(i).expect("item delete"),
        Op::Follow(u, c, a) => t.relationship(u, c, RelKind::Follow, *a).expect("follow"),
        Op::Block(u, c, a) => t.relationship(u, c, RelKind::Block, *a).expect("block"),
        Op::Signal {
            kind,
            item,
            user,
            weight,
            ts_eff,
        } => {
            let mut s = NewSignal::new(kind.clone(), item.clone())
                .weight(*weight)
                .ts(*ts_eff)
                .id(format!("s{n}"));
            if let Some(u) = user {
                s = s.user(u.clone());
            }
            let a = t.signal(s).expect("signal");
            assert_eq!(a.accepted, 1);
            return (a.lsn, a.clock);
        }
    };
    (ack.lsn, ack.clock)
}

/// The category a put gives item `id`: `a` for even numbers, `b` for odd.
fn category_of(id: &str) -> &'static str {
    let n: usize = id.trim_start_matches('i').parse().unwrap_or(1);
    if n.is_multiple_of(2) { "a" } else { "b" }
}

/// A counted signal as the oracle keeps it.
#[derive(Clone, Debug)]
struct Sig {
    kind: String,
    item: String,
    incarnation: usize,
    user: Option<String>,
    weight: f64,
    ts_eff: u64,
    creator: Option<String>,
}

/// Everything the log says, replayed in order.
#[derive(Default)]
struct Oracle {
    attrs: HashMap<String, BTreeMap<String, String>>,
    defs: BTreeMap<String, BTreeMap<String, String>>,
    /// Item id → (live, incarnation, creator).
    items: HashMap<String, (bool, usize, Option<String>)>,
    incarnations: usize,
    sigs: Vec<Sig>,
    /// Per user, the index in `sigs` from which its signals count for its state.
    user_since: HashMap<String, usize>,
    follows: HashMap<String, BTreeSet<String>>,
    blocks: HashMap<String, BTreeSet<String>>,
}

impl Oracle {
    fn new(config: &Config) -> Oracle {
        Oracle {
            defs: config
                .cohorts
                .iter()
                .map(|c| (c.name.clone(), c.where_.clone()))
                .collect(),
            ..Oracle::default()
        }
    }

    fn apply(&mut self, op: &Op, clock: u64) {
        match op {
            Op::UserPut(u, a) => {
                self.attrs.insert(u.clone(), a.clone());
            }
            Op::UserDel(u) => {
                self.attrs.remove(u);
                self.user_since.insert(u.clone(), self.sigs.len());
                self.follows.remove(u);
                self.blocks.remove(u);
            }
            Op::CohortPut(n, r) => {
                self.defs.insert(n.clone(), r.clone());
            }
            Op::CohortDel(n) => {
                self.defs.remove(n);
            }
            Op::ItemPut(i, c) => {
                let next = self.incarnations;
                let e = self.items.entry(i.clone()).or_insert((false, usize::MAX, None));
                if !e.0 {
                    *e = (true, next, None);
                    self.incarnations += 1;
                }
                e.2 = Some(c.clone());
            }
            Op::ItemDel(i) => {
                self.items.insert(i.clone(), (false, usize::MAX, None));
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
            Op::Signal {
                kind,
                item,
                user,
                weight,
                ts_eff,
            } => {
                let next = self.incarnations;
                let e = self.items.entry(item.clone()).or_insert_with(|| (true, next, None));
                if e.1 == next {
                    self.incarnations += 1;
                }
                if !e.0 {
                    return; // deleted: not counted until put again
                }
                self.sigs.push(Sig {
                    kind: kind.clone(),
                    item: item.clone(),
                    incarnation: e.1,
                    user: user.clone(),
                    weight: *weight,
                    ts_eff: (*ts_eff).min(clock),
                    creator: e.2.clone(),
                });
            }
        }
    }

    fn in_cohort(&self, user: &str, rule: &BTreeMap<String, String>) -> bool {
        self.attrs
            .get(user)
            .is_some_and(|a| rule.iter().all(|(k, v)| a.get(k) == Some(v)))
    }

    /// `count_W` and `count_2W` of (item, kind) per window among users matching `rule`.
    fn cohort_counts(&self, item: &str, kind: &str, rule: &BTreeMap<String, String>, t: u64) -> Vec<(f64, f64)> {
        self.counts(item, kind, t, |s| {
            s.user.as_deref().is_some_and(|u| self.in_cohort(u, rule))
        })
    }

    /// Every live item's score among users matching `rule` at `t`, from its view and like
    /// counts (`count_W`, `count_2W`) in the first window, above 0 only, best first.
    fn cohort_ranking(
        &self,
        rule: &BTreeMap<String, String>,
        t: u64,
        score: impl Fn((f64, f64), (f64, f64)) -> f64,
    ) -> Vec<(String, f64)> {
        let mut ranked: Vec<(String, f64)> = (0..ITEMS)
            .map(|i| format!("i{i}"))
            .filter(|id| self.items.get(id).is_some_and(|e| e.0))
            .map(|id| {
                let v = self.cohort_counts(&id, "view", rule, t)[0];
                let l = self.cohort_counts(&id, "like", rule, t)[0];
                let s = score(v, l);
                (id, s)
            })
            .filter(|(_, s)| *s > 1e-9)
            .collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        ranked
    }

    /// `count_W` and `count_2W` of (item, kind) per window over every signal.
    fn global_counts(&self, item: &str, kind: &str, t: u64) -> Vec<(f64, f64)> {
        self.counts(item, kind, t, |_| true)
    }

    fn counts(&self, item: &str, kind: &str, t: u64, counted: impl Fn(&Sig) -> bool) -> Vec<(f64, f64)> {
        let Some((true, inc, _)) = self.items.get(item) else {
            return vec![(0.0, 0.0); WINDOWS.len()];
        };
        WINDOWS
            .iter()
            .map(|&(w, g)| {
                let mut c = (0.0, 0.0);
                for s in &self.sigs {
                    if s.item != item || s.incarnation != *inc || s.kind != kind || !counted(s) {
                        continue;
                    }
                    let b = (s.ts_eff / g) * g;
                    if b + w > t {
                        c.0 += s.weight;
                    }
                    if b + 2 * w > t {
                        c.1 += s.weight;
                    }
                }
                c
            })
            .collect()
    }

    fn user_sigs<'a>(&'a self, user: &'a str) -> impl Iterator<Item = &'a Sig> + 'a {
        let since = self.user_since.get(user).copied().unwrap_or(0);
        self.sigs[since..]
            .iter()
            .filter(move |s| s.user.as_deref() == Some(user))
    }

    /// (seen, liked, hidden) counts of `user` at `t`.
    fn state(&self, config: &Config, user: &str, t: u64) -> [u64; 3] {
        self.sets(config, user, t).map(|s| s.len() as u64)
    }

    /// The (item, incarnation) pairs in `user`'s seen, liked and hidden sets at `t`.
    fn sets(&self, config: &Config, user: &str, t: u64) -> [BTreeSet<(String, usize)>; 3] {
        let g = (HORIZON / 90).max(1000);
        let mut sets: [BTreeSet<(String, usize)>; 3] = Default::default();
        for s in self.user_sigs(user) {
            if (s.ts_eff / g) * g + HORIZON <= t {
                continue;
            }
            let marks = &config.signal(&s.kind).expect("declared").marks;
            for (i, m) in [Mark::Seen, Mark::Liked, Mark::Hidden].iter().enumerate() {
                if marks.contains(m) {
                    sets[i].insert((s.item.clone(), s.incarnation));
                }
            }
        }
        sets
    }

    fn affinity(&self, config: &Config, user: &str, t: u64) -> BTreeMap<String, f64> {
        let mut out: BTreeMap<String, f64> = BTreeMap::new();
        for s in self.user_sigs(user) {
            let Some(c) = &s.creator else { continue };
            let delta = config.signal(&s.kind).expect("declared").relationship_delta;
            *out.entry(c.clone()).or_default() +=
                delta * s.weight * (-((t - s.ts_eff) as f64) / AFFINITY_H as f64).exp2();
        }
        out
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

/// Asserts that a ranking lists `want`'s ids in order, with its scores.
fn assert_ranking(have: &[(String, f64)], want: &[(String, f64)], what: &str) {
    assert_eq!(
        have.iter().map(|h| &h.0).collect::<Vec<_>>(),
        want.iter().map(|w| &w.0).collect::<Vec<_>>(),
        "{what}: {have:?} != {want:?}"
    );
    for (h, w) in have.iter().zip(want) {
        assert!(close(h.1, w.1), "{what}: score {h:?} != {w:?}");
    }
}

/// Checks the state of `view` against the oracle; returns the cohort rankings and per-user
/// rankings it read (to compare worker counts).
fn check(t: &Tidal, view: &tidal_sinks::View, oracle: &Oracle, config: &Config, ctx: &str, p: usize) -> Vec<String> {
    let mut rankings = Vec::new();
    let now = view.clock_ms();
    let ctx = format!("{ctx}, clock {now}");
    // Cohort counts per item and type: every single dimension, every declared cohort
    // (exact), and one composite never declared (estimated).
    let mut cohorts: Vec<(String, BTreeMap<String, String>)> = Vec::new();
    for r in REGIONS {
        cohorts.push((format!("region:{r}"), [("region".to_string(), r.to_string())].into()));
    }
    for g in GENDERS {
        cohorts.push((format!("gender:{g}"), [("gender".to_string(), g.to_string())].into()));
    }
    for (name, rule) in &oracle.defs {
        let q = rule
            .iter()
            .map(|(k, v)| format!("{k}:{v}"))
            .collect::<Vec<_>>()
            .join(",");
        cohorts.push((q, rule.clone()));
        let _ = name;
    }
    for i in 0..ITEMS {
        let id = format!("i{i}");
        for (q, rule) in &cohorts {
            let pairs = tidal_serving::query::parse_cohort(q, config).expect("cohort");
            let got = t.item_in_cohort(view, &id, Some(&pairs)).expect("item");
            let Some(got) = got else {
                assert!(
                    !oracle.items.get(&id).is_some_and(|e| e.0),
                    "{ctx}: live item {id} not served"
                );
                continue;
            };
            let c = got.cohort.expect("cohort features");
            assert!(!c.estimated, "{ctx}: {q} is exact");
            for kind in ["view", "like", "hide"] {
                let want = oracle.cohort_counts(&id, kind, rule, now);
                for (j, (w, _)) in WINDOWS.iter().enumerate() {
                    let key = Dur(*w).to_string();
                    let have = c.signals[kind].counts[&key];
                    assert!(
                        close(have, want[j].0),
                        "{ctx}: {id} {kind} {q} count_{key} {have} != {}",
                        want[j].0
                    );
                    let acc = c.signals[kind].acceleration[&key];
                    let want_acc = (2.0 * want[j].0 - want[j].1) / Dur(*w).hours();
                    assert!(
                        close(acc, want_acc),
                        "{ctx}: {id} {kind} {q} acceleration_{key} {acc} != {want_acc}"
                    );
                }
            }
        }
        // An undeclared composite: estimated under independence.
        let rule: BTreeMap<String, String> =
            [("region".to_string(), "EU".to_string()), ("gender".into(), "M".into())].into();
        if oracle.defs.values().any(|r| *r == rule) {
            continue;
        }
        let pairs = tidal_serving::query::parse_cohort("region:EU,gender:M", config).expect("cohort");
        if let Some(got) = t.item_in_cohort(view, &id, Some(&pairs)).expect("item") {
            let c = got.cohort.expect("cohort features");
            assert!(c.estimated, "{ctx}: region:EU,gender:M is not declared");
            for kind in ["view", "like"] {
                let eu = oracle.cohort_counts(&id, kind, &[("region".to_string(), "EU".to_string())].into(), now);
                let m = oracle.cohort_counts(&id, kind, &[("gender".to_string(), "M".to_string())].into(), now);
                let g = oracle.global_counts(&id, kind, now);
                for (j, (w, _)) in WINDOWS.iter().enumerate() {
                    let want = if g[j].0 > 0.0 { eu[j].0 * m[j].0 / g[j].0 } else { 0.0 };
                    let have = c.signals[kind].counts[&Dur(*w).to_string()];
                    assert!(close(have, want), "{ctx}: {id} {kind} estimate {have} != {want}");
                }
            }
        }
    }
    // User state, edges and affinity.
    for u in 0..USERS {
        let id = format!("u{u}");
        let got = t.user_on(view, &id, false).expect("user");
        let [seen, liked, hidden] = oracle.state(config, &id, now);
        let aff = oracle.affinity(config, &id, now);
        let follows: Vec<String> = oracle
            .follows
            .get(&id)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        let blocks: Vec<String> = oracle
            .blocks
            .get(&id)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        let Some(got) = got else {
            assert_eq!((seen, liked, hidden), (0, 0, 0), "{ctx}: {id} has state");
            assert!(follows.is_empty() && blocks.is_empty(), "{ctx}: {id} has edges");
            assert!(!oracle.attrs.contains_key(&id), "{ctx}: {id} has attributes");
            continue;
        };
        assert_eq!(
            (got.seen, got.liked, got.hidden),
            (seen, liked, hidden),
            "{ctx}: {id} state"
        );
        assert_eq!(got.follows, follows, "{ctx}: {id} follows");
        assert_eq!(got.blocks, blocks, "{ctx}: {id} blocks");
        assert_eq!(
            got.attributes,
            oracle.attrs.get(&id).cloned().unwrap_or_default(),
            "{ctx}: {id} attributes"
        );
        let live_creators: BTreeSet<String> = oracle
            .items
            .values()
            .filter(|e| e.0)
            .filter_map(|e| e.2.clone())
            .collect();
        let mut want: Vec<(String, f64)> = aff
            .into_iter()
            .filter(|(c, a)| *a > 1e-9 && live_creators.contains(c))
            .collect();
        want.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let have: Vec<(String, f64)> = got
            .top_creators
            .iter()
            .map(|c| (c.creator.clone(), c.affinity))
            .collect();
        assert_eq!(have.len(), want.len(), "{ctx}: {id} top creators {have:?} != {want:?}");
        for ((hc, ha), (wc, wa)) in have.iter().zip(&want) {
            assert!(
                hc == wc && close(*ha, *wa),
                "{ctx}: {id} top creators {have:?} != {want:?}"
            );
        }
    }
    // Cohort rankings and per-user exclusion: recorded for the worker-count comparison,
    // and the cohort ranking checked against the oracle's scores.
    for q in ["region:US", "gender:F", "region:US,gender:F", "region:EU,gender:M"] {
        let r = t
            .rank(
                &RankQuery::parse(&format!(
                    "profile=trending&cohort={q}&window=10s&signals=view:1,like:3&limit=50"
                ))
                .expect("query"),
            )
            .expect("rank");
        rankings.push(format!(
            "{p} {q} {:?}",
            r.items.iter().map(|i| (&i.id, i.score)).collect::<Vec<_>>()
        ));
    }
    let r = t
        .rank(
            &RankQuery::parse("profile=trending&cohort=region:US&window=10s&signals=view:1,like:3&limit=50")
                .expect("q"),
        )
        .expect("rank");
    let rule: BTreeMap<String, String> = [("region".to_string(), "US".to_string())].into();
    let trending_score = |v: (f64, f64), l: (f64, f64)| (v.0 + 3.0 * l.0) / (10.0 / 3600.0);
    let want = oracle.cohort_ranking(&rule, now, trending_score);
    let have: Vec<(String, f64)> = r.items.iter().map(|i| (i.id.clone(), i.score)).collect();
    assert_ranking(&have, &want, &format!("{ctx}: cohort ranking"));
    // One item per creator: the same ranking, each creator's best only (items without a
    // creator all kept).
    let r = t
        .rank(
            &RankQuery::parse(
                "profile=trending&cohort=region:US&window=10s&signals=view:1,like:3&limit=50&max_per_creator=1",
            )
            .expect("q"),
        )
        .expect("rank");
    let mut creators = BTreeSet::new();
    let diverse: Vec<&String> = want
        .iter()
        .map(|w| &w.0)
        .filter(|id| match oracle.items.get(*id).and_then(|e| e.2.clone()) {
            Some(c) => creators.insert(c),
            None => true,
        })
        .collect();
    assert_eq!(
        r.items.iter().map(|i| &i.id).collect::<Vec<_>>(),
        diverse,
        "{ctx}: cohort ranking, one per creator"
    );
    // Rising within a cohort: Σ weight × acceleration over the window, above 0 only.
    let want = oracle.cohort_ranking(&rule, now, |v, l| {
        ((2.0 * v.0 - v.1) + 3.0 * (2.0 * l.0 - l.1)) / (10.0 / 3600.0)
    });
    let r = t
        .rank(
            &RankQuery::parse("profile=rising&cohort=region:US&window=10s&signals=view:1,like:3&limit=50").expect("q"),
        )
        .expect("rank");
    let have: Vec<(String, f64)> = r.items.iter().map(|i| (i.id.clone(), i.score)).collect();
    assert_ranking(&have, &want, &format!("{ctx}: cohort rising"));
    // Everything in one query, paged two items at a time: a cohort, a user's exclusions
    // (unseen, or hidden and blocked alone with filter=all), a category, one item per
    // creator, and explain's cohort counts.
    let rule: BTreeMap<String, String> = [("gender".to_string(), "F".to_string())].into();
    let trending = oracle.cohort_ranking(&rule, now, trending_score);
    for u in 0..USERS {
        let user = format!("u{u}");
        let filter = if u % 2 == 0 { "unseen" } else { "all" };
        let blocked = oracle.blocks.get(&user).cloned().unwrap_or_default();
        let [seen, _, hidden] = oracle.sets(config, &user, now);
        let mut creators = BTreeSet::new();
        let want: Vec<&(String, f64)> = trending
            .iter()
            .filter(|(id, _)| {
                let Some(e) = oracle.items.get(id) else { return false };
                let Some(creator) = &e.2 else { return false };
                let key = (id.clone(), e.1);
                category_of(id) == "a"
                    && !blocked.contains(creator)
                    && !hidden.contains(&key)
                    && (filter == "all" || !seen.contains(&key))
                    && creators.insert(creator.clone())
            })
            .collect();
        let mut have = Vec::new();
        let mut cursor = String::new();
        for page in 0.. {
            assert!(page <= ITEMS, "{ctx}: {user} pages without end");
            let r = t
                .rank(
                    &RankQuery::parse(&format!(
                        "profile=trending&cohort=gender:F&window=10s&signals=view:1,like:3&user={user}&filter={filter}&category=a&max_per_creator=1&explain=1&limit=2{cursor}"
                    ))
                    .expect("q"),
                )
                .expect("rank");
            assert!(r.items.len() <= 2, "{ctx}: {user} page of {}", r.items.len());
            have.extend(r.items);
            match r.next_cursor {
                Some(c) => cursor = format!("&cursor={c}"),
                None => break,
            }
        }
        assert_eq!(
            have.iter().map(|i| &i.id).collect::<Vec<_>>(),
            want.iter().map(|w| &w.0).collect::<Vec<_>>(),
            "{ctx}: {user} filter={filter}, everything in one query"
        );
        for (h, w) in have.iter().zip(&want) {
            assert!(
                close(h.score, w.1),
                "{ctx}: {user} {} score {} != {}",
                h.id,
                h.score,
                w.1
            );
            let cohort = &h.features.as_ref().expect("explain")["cohort"];
            assert_eq!(cohort["estimated"], false, "{ctx}: {} explain {cohort}", h.id);
            for term in cohort["terms"].as_array().expect("terms") {
                let kind = term["signal"].as_str().expect("signal");
                let c = oracle.cohort_counts(&h.id, kind, &rule, now)[0];
                let (count, count2) = (term["count"].as_f64(), term["count_2w"].as_f64());
                assert!(
                    count.is_some_and(|x| close(x, c.0)) && count2.is_some_and(|x| close(x, c.1)),
                    "{ctx}: {} explain {term} != {c:?}",
                    h.id
                );
            }
        }
        rankings.push(format!(
            "{p} {user} {filter} {:?}",
            have.iter().map(|i| (&i.id, i.score)).collect::<Vec<_>>()
        ));
    }
    for u in 0..USERS {
        let user = format!("u{u}");
        let r = t
            .rank(&RankQuery::parse(&format!("profile=top&user={user}&filter=unseen&limit=50")).expect("q"))
            .expect("rank");
        let blocked = oracle.blocks.get(&user).cloned().unwrap_or_default();
        let [seen, _, _] = oracle.sets(config, &user, now);
        let listed: BTreeSet<String> = r.items.iter().map(|i| i.id.clone()).collect();
        for (id, e) in &oracle.items {
            let live = e.0;
            let excluded = seen.contains(&(id.clone(), e.1)) || e.2.as_ref().is_some_and(|c| blocked.contains(c));
            let has_total = oracle
                .sigs
                .iter()
                .any(|s| s.item == *id && s.incarnation == e.1 && s.kind != "hide" && s.kind != "skip");
            if live && has_total {
                assert_eq!(listed.contains(id), !excluded, "{ctx}: {user} filter=unseen and {id}");
            }
        }
        rankings.push(format!(
            "{p} {user} {:?}",
            r.items.iter().map(|i| &i.id).collect::<Vec<_>>()
        ));
    }
    rankings
}

/// Writes one phase; returns its last LSN.
fn write_phase(t: &Tidal, oracle: &mut Oracle, phase: &[(Op, u64)], n: &mut usize) -> u64 {
    let mut last = 0;
    for (op, advance) in phase {
        let (lsn, clock) = write(t, op, *advance, *n);
        if let Ok(u) = std::env::var("DEBUG_USER")
            && format!("{op:?}").contains(&format!("\"{u}\""))
        {
            eprintln!("lsn {lsn} clock {clock}: {op:?}");
        }
        *n += 1;
        oracle.apply(op, clock);
        last = lsn;
    }
    last
}

/// Runs the log through a fresh engine with `workers` workers, checking every phase against
/// the oracle; then restarts it from its shutdown checkpoint (the log goes on: attribute
/// changes must move the restored signals too), and once more from the WAL alone (the whole
/// log in one catch-up). Returns what every check read.
fn run(seed: u64, workers: usize) -> Vec<String> {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(dir.path(), workers);
    let mut oracle = Oracle::new(&config);
    let mut rankings = Vec::new();
    let mut n = 0;
    let log = random_log(seed);
    let (first, second) = log.split_at(log.len() - 4);
    let t = Tidal::open(config.clone()).expect("open");
    for (p, phase) in first.iter().enumerate() {
        let last = write_phase(&t, &mut oracle, phase, &mut n);
        let view = t.wait_visible(last).expect("visible");
        let ctx = format!("seed {seed}, {workers} workers, phase {p}");
        rankings.extend(check(&t, &view, &oracle, &config, &ctx, p));
    }
    t.shutdown().expect("shutdown");
    drop(t);
    let t = Tidal::open(config.clone()).expect("reopen from the checkpoint");
    let view = t.view();
    let ctx = format!("seed {seed}, {workers} workers, restored from the checkpoint");
    rankings.extend(check(&t, &view, &oracle, &config, &ctx, first.len()));
    for (i, phase) in second.iter().enumerate() {
        let p = first.len() + i;
        let last = write_phase(&t, &mut oracle, phase, &mut n);
        let view = t.wait_visible(last).expect("visible");
        let ctx = format!("seed {seed}, {workers} workers, phase {p} after the restart");
        rankings.extend(check(&t, &view, &oracle, &config, &ctx, p));
    }
    // A phase of signals alone, then a restart from the checkpoint before it, as after a
    // kill -9: its signals come back as one catch-up time, which the users materializer
    // applies on a thread beside the worker while the cohort rollups go on.
    t.shutdown().expect("shutdown");
    drop(t);
    let t = Tidal::open(config.clone()).expect("reopen from the checkpoint");
    let signals = signals_only(seed, &log);
    let last = write_phase(&t, &mut oracle, &signals, &mut n);
    let view = t.wait_visible(last).expect("visible");
    let ctx = format!("seed {seed}, {workers} workers, a phase of signals alone");
    rankings.extend(check(&t, &view, &oracle, &config, &ctx, log.len()));
    t.shutdown().expect("shutdown");
    drop(t);
    let mut kept: Vec<_> = std::fs::read_dir(dir.path().join("checkpoints"))
        .expect("checkpoints")
        .map(|e| e.expect("entry").path())
        .collect();
    kept.sort();
    let newest = kept.pop().expect("a checkpoint after the phase of signals");
    assert!(!kept.is_empty(), "the checkpoint before it is kept");
    std::fs::remove_dir_all(newest).expect("drop the newest checkpoint");
    let t = Tidal::open(config.clone()).expect("reopen with the phase of signals as the WAL's tail");
    let view = t.view();
    let ctx = format!("seed {seed}, {workers} workers, the phase of signals caught up at once");
    rankings.extend(check(&t, &view, &oracle, &config, &ctx, log.len()));
    t.shutdown().expect("shutdown");
    drop(t);
    std::fs::remove_dir_all(dir.path().join("checkpoints")).expect("drop the checkpoints");
    let t = Tidal::open(config.clone()).expect("reopen from the WAL");
    let view = t.view();
    let ctx = format!("seed {seed}, {workers} workers, replayed from the WAL");
    rankings.extend(check(&t, &view, &oracle, &config, &ctx, log.len()));
    // `tidal replay` of the same WAL answers cohort and personal queries as the engine
    // answers them at the end of the log (the first and the second as `check` has just
    // checked them against the oracle; the others of the same kinds, other cohorts and
    // windows).
    let at = view.clock_ms();
    let live: Vec<Vec<(String, f64)>> = REPLAYED
        .iter()
        .map(|q| {
            let r = t.rank(&RankQuery::parse(q).expect("query")).expect("rank");
            r.items.into_iter().map(|i| (i.id, i.score)).collect()
        })
        .collect();
    assert!(
        live.iter().filter(|l| !l.is_empty()).count() >= 3,
        "seed {seed}: the replayed queries list items: {live:?}"
    );
    t.shutdown().expect("shutdown");
    drop(t);
    let report = tidal::replay::replay(&tidal::replay::ReplayOptions {
        at: vec![at],
        queries: REPLAYED.iter().map(|q| q.to_string()).collect(),
        workers,
        ..tidal::replay::ReplayOptions::new(dir.path().join("wal"))
    })
    .expect("replay");
    for (q, want) in REPLAYED.iter().zip(&live) {
        let row = report.row("baseline", at, q).expect("a row per query");
        assert!(row.error.is_none(), "seed {seed}: replay of {q}: {:?}", row.error);
        let got: Vec<(String, f64)> = row.items.iter().map(|i| (i.id.clone(), i.score)).collect();
        assert_ranking(&got, want, &format!("seed {seed}, {workers} workers: replay of {q}"));
    }
    rankings
}

/// The queries `tidal replay` answers at the end of the log, as the engine did.
const REPLAYED: [&str; 6] = [
    "profile=trending&cohort=region:US&window=10s&signals=view:1,like:3&limit=50",
    "profile=rising&cohort=region:US&window=10s&signals=view:1,like:3&limit=50",
    "profile=trending&cohort=region:EU,gender:M&window=1m&signals=view:1,like:3&limit=50",
    "profile=trending&cohort=gender:F&window=1m&signals=view:1,like:3&user=u2&filter=all&category=a&max_per_creator=1",
    "profile=top&user=u1&filter=all&limit=50",
    "profile=trending&cohort=region:US&window=1m&signals=view:1,like:3&user=u4&filter=all&limit=50",
];

#[test]
fn cohorts_user_state_and_affinity_match_the_oracle_for_any_number_of_workers() {
    for seed in [1u64, 2, 3] {
        let one = run(seed, 1);
        for workers in [2, 4] {
            let other = run(seed, workers);
            assert_eq!(one, other, "seed {seed}: {workers} workers rank differently from 1");
        }
    }
}

#[test]
#[ignore]
fn one_run() {
    let seed: u64 = std::env::var("SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(1);
    let workers: usize = std::env::var("WORKERS").ok().and_then(|s| s.parse().ok()).unwrap_or(1);
    let t = std::time::Instant::now();
    run(seed, workers);
    eprintln!("run took {:?}", t.elapsed());
}
