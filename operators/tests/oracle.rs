//! Oracle tests: random signals (negative weights, late and future timestamps, retractions,
//! deleted items whose keys are later reused, many batches per millisecond, times long past
//! every window and epoch, checkpoint markers among them) go through the windows and decay materializers; the accumulated
//! output at many logical times — each one a mark, as the serving shards observe them — is
//! compared with a from-scratch computation of SPEC §3's formulas over the same events.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use differential_dataflow::consolidation::consolidate;
use differential_dataflow::input::InputSession;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use tidal_core::config::Config;
use tidal_core::features::{
    LANES, Lanes, TOTAL_LANE, decay_sum, epoch_expiry, epoch_of, weight_fixed, weight_float, window_end,
};
use tidal_core::time::{SEQ_BITS, Time, clock_of, time_at};
use timely::dataflow::InputHandleVec;
use timely::dataflow::operators::vec::Input;

use tidal_core::flow::{CHECKPOINT, Control, Persist, RETIRE};
use tidal_core::stats::StateStats;
use tidal_operators::{SignalEv, kind_specs};

/// A retired item's key is reused only after twice the longest window (10s) of the schema.
const REUSE_AFTER: u64 = 20_000;

const SCHEMA: &str = r#"
[[signals]]
name = "view"
half_lives = ["1s", "5s"]
windows = [{ size = "10s", granularity = "2s" }, { size = "4s" }]
min_weight = -10.0
max_weight = 10.0

[[signals]]
name = "like"
half_lives = ["3s"]
windows = [{ size = "6s", granularity = "3s" }, { size = "9s", granularity = "3s" }, { size = "3s" }]

[[signals]]
name = "plain"
"#;

type Update = (SignalEv, Time, isize);

/// A random history: inserts and retractions of events, in time order.
fn history(seed: u64, batches: usize) -> Vec<Update> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut clock: u64 = 1_000_000;
    let mut seq: u64 = 0;
    let mut out: Vec<Update> = Vec::new();
    let mut live: Vec<SignalEv> = Vec::new();
    // Per item, the clock until which it is retired (no events; its key is not reused).
    let mut retired: [u64; 5] = [0; 5];
    for _ in 0..batches {
        if rng.gen_bool(0.7) {
            clock += rng.gen_range(1..2_500);
            seq = 0;
        } else {
            seq += 1;
        }
        let time = time_at(clock) | seq;
        if rng.gen_bool(0.04) {
            let item = rng.gen_range(0..5u64);
            if retired[item as usize] < clock {
                let ev = SignalEv {
                    item,
                    kind: RETIRE,
                    ts_eff: clock,
                    weight: 0,
                    user: 0,
                };
                out.push((ev, time, 1));
                live.retain(|e| e.item != item);
                retired[item as usize] = clock + REUSE_AFTER;
            }
        }
        for _ in 0..rng.gen_range(0..6) {
            if !live.is_empty() && rng.gen_bool(0.1) {
                let ev = live.swap_remove(rng.gen_range(0..live.len()));
                out.push((ev, time, -1));
                continue;
            }
            let ts = match rng.gen_range(0..5) {
                0 => clock,
                1 => clock.saturating_sub(rng.gen_range(0..20_000)),
                2 => clock.saturating_sub(rng.gen_range(0..400_000)),
                3 => clock + rng.gen_range(0..5_000),
                _ => clock.saturating_sub(rng.gen_range(0..3_000)),
            };
            let weight = if rng.gen_bool(0.05) {
                0
            } else {
                weight_fixed(rng.gen_range(-3.0..5.0))
            };
            let item = rng.gen_range(0..5);
            if retired[item as usize] >= clock {
                continue;
            }
            let ev = SignalEv {
                item,
                kind: rng.gen_range(0..3),
                ts_eff: ts.min(clock),
                weight,
                user: rng.gen_range(0..3),
            };
            let n = if rng.gen_bool(0.05) { 2 } else { 1 };
            out.push((ev, time, n));
            live.push(ev);
        }
        // Now and then a checkpoint of the state before the next time, its marker sent with
        // this batch as the entities stage sends it (no part is written: nothing persists).
        if rng.gen_bool(0.15) {
            let marker = SignalEv {
                item: out.len() as u64,
                kind: CHECKPOINT,
                ts_eff: time + 1,
                weight: 0,
                user: 0,
            };
            out.push((marker, time, 1));
        }
    }
    out
}

type WindowUpdate = (((u64, u16), Lanes), Time, isize);
type DecayUpdate = (((u64, u16, u8, u64), i128), Time, isize);

struct Captured {
    windows: Vec<WindowUpdate>,
    decay: Vec<DecayUpdate>,
}

/// Runs the materializers over `updates` in one worker, stepping between batches at random;
/// the states at `observed` times (the frontiers marked) are what the test checks.
fn run(updates: Vec<Update>, config: Config, seed: u64, observed: Vec<Time>) -> Captured {
    run_sent(updates, config, seed, observed, false)
}

/// [`run`]; with `early`, most updates are sent under a capability earlier than their own
/// time (as a join sends what an earlier batch of its other input makes at a later time).
fn run_sent(updates: Vec<Update>, config: Config, seed: u64, observed: Vec<Time>, early: bool) -> Captured {
    timely::execute_directly(move |worker| {
        let windows_out = Rc::new(RefCell::new(Vec::new()));
        let decay_out = Rc::new(RefCell::new(Vec::new()));
        let mut input: InputSession<Time, SignalEv, isize> = InputSession::new();
        let mut control: InputHandleVec<Time, Control> = InputHandleVec::new();
        let (w_out, d_out) = (windows_out.clone(), decay_out.clone());
        let stats = std::sync::Arc::new(StateStats::default());
        let probe = worker.dataflow::<Time, _, _>(|scope| {
            let signals = input.to_collection(scope);
            let marks = scope.input_from(&mut control);
            let w = tidal_operators::windows(
                signals.clone(),
                marks.clone(),
                &config,
                stats.clone(),
                Persist::default(),
            )
            .inspect(move |u| w_out.borrow_mut().push(*u));
            let (probe, _) = tidal_operators::decay(signals, marks, &config, stats, Persist::default())
                .inspect(move |u| d_out.borrow_mut().push(*u))
                .probe();
            w.probe_with(&probe);
            probe
        });
        // The state as of `at` is the version at frontier `at + 1`.
        for at in observed {
            control.send(Control::Mark {
                time: at + 1,
                position: Default::default(),
                origin: 0,
                publish: true,
            });
        }
        control.close();
        let mut rng = StdRng::seed_from_u64(seed ^ 0xabcdef);
        for (ev, time, diff) in updates {
            if time > *input.time() && (!early || rng.gen_bool(0.1)) {
                input.advance_to(time);
                input.flush();
                if rng.gen_bool(0.3) {
                    worker.step_while(|| probe.less_than(input.time()));
                }
            }
            input.update_at(ev, time, diff);
        }
        input.close();
        worker.step_while(|| !probe.done());
        Captured {
            windows: windows_out.borrow().clone(),
            decay: decay_out.borrow().clone(),
        }
    })
}

/// The collection as of `at`: one value per key, checked.
fn as_of<K: Ord + Clone + std::fmt::Debug, V: Ord + Clone + std::fmt::Debug>(
    updates: &[((K, V), Time, isize)],
    at: Time,
) -> BTreeMap<K, V> {
    let mut acc: Vec<((K, V), isize)> = updates
        .iter()
        .filter(|(_, t, _)| *t <= at)
        .map(|(kv, _, d)| (kv.clone(), *d))
        .collect();
    consolidate(&mut acc);
    let mut map = BTreeMap::new();
    for ((k, v), d) in acc {
        assert_eq!(d, 1, "key {k:?} has value {v:?} with multiplicity {d} at {at}");
        assert!(map.insert(k.clone(), v).is_none(), "key {k:?} has two values at {at}");
    }
    map
}

/// Per key and time, at most the old value out and the new one in.
fn assert_minimal<K: Ord + Clone + std::fmt::Debug, V>(updates: &[((K, V), Time, isize)]) {
    let mut per_key: BTreeMap<(K, Time), (usize, isize)> = BTreeMap::new();
    for ((k, _), t, d) in updates {
        let e = per_key.entry((k.clone(), *t)).or_default();
        e.0 += 1;
        e.1 += d;
    }
    for ((k, t), (n, net)) in per_key {
        assert!(n <= 2 && net.abs() <= 1, "key {k:?} has {n} updates (net {net}) at {t}");
    }
}

fn check_times(updates: &[Update], seed: u64) -> Vec<Time> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
    let mut times: Vec<Time> = updates.iter().map(|(_, t, _)| *t).collect();
    times.dedup();
    let first = clock_of(times[0]);
    let last = clock_of(*times.last().expect("non-empty"));
    for _ in 0..60 {
        let c = rng.gen_range(first..last + 30_000);
        times.push(time_at(c));
        times.push(time_at(c) + rng.gen_range(0..3));
        times.push(time_at(c).saturating_sub(1));
    }
    // Every whole second: window ends and epoch expiries fall on them.
    for c in first / 1000..last / 1000 + 30 {
        times.push(time_at(c * 1000));
        times.push(time_at(c * 1000) - 1);
    }
    // Long after everything: every window closed, every epoch expired.
    times.push(time_at(last + 1_000_000));
    times.sort_unstable();
    times.dedup();
    times
}

/// The events that count at `at`: committed by then and not retired by then (checkpoint
/// markers are not events).
fn counted(updates: &[Update], at: Time) -> Vec<Update> {
    let mut out: Vec<Update> = Vec::new();
    for u in updates.iter().filter(|(ev, t, _)| *t <= at && ev.kind != CHECKPOINT) {
        if u.0.kind == RETIRE {
            out.retain(|(ev, _, _)| ev.item != u.0.item);
        } else {
            out.push(*u);
        }
    }
    out
}

fn windows_oracle(updates: &[Update], config: &Config, at: Time) -> BTreeMap<(u64, u16), Lanes> {
    let specs = kind_specs(config);
    let now = clock_of(at);
    let mut map: BTreeMap<(u64, u16), Lanes> = BTreeMap::new();
    for (ev, _, d) in counted(updates, at).iter() {
        let lanes = &mut map.entry((ev.item, ev.kind)).or_default().0;
        let w = ev.weight * *d as i64;
        for (j, &(size, g)) in specs[ev.kind as usize].windows().iter().enumerate() {
            if window_end(ev.ts_eff, size, g) > now {
                lanes[2 * j] += w;
            }
            if window_end(ev.ts_eff, 2 * size, g) > now {
                lanes[2 * j + 1] += w;
            }
        }
        lanes[TOTAL_LANE] += w;
    }
    map.retain(|_, l| l.0 != [0; LANES]);
    map
}

#[test]
fn windows_match_the_formulas() {
    windows_against_the_formulas(false);
}

/// The same when the updates come under capabilities earlier than their times: each is
/// counted at its own time (a lane already closed then is never opened).
#[test]
fn windows_count_each_update_at_its_own_time() {
    windows_against_the_formulas(true);
}

/// The window lanes at every observed mark against the formulas, the updates sent under
/// earlier capabilities with `early` (see [`run_sent`]).
fn windows_against_the_formulas(early: bool) {
    let config = Config::parse(SCHEMA).expect("schema");
    for seed in 0..6 {
        let updates = history(seed, 160);
        let times = check_times(&updates, seed);
        let out = run_sent(updates.clone(), config.clone(), seed, times.clone(), early);
        assert_minimal(&out.windows);
        for at in times {
            let got = as_of(&out.windows, at);
            let want = windows_oracle(&updates, &config, at);
            assert_eq!(
                got,
                want,
                "seed {seed}, time {at} (clock {} seq {})",
                clock_of(at),
                at & ((1 << SEQ_BITS) - 1)
            );
        }
    }
}

#[test]
fn decay_matches_the_formula() {
    let config = Config::parse(SCHEMA).expect("schema");
    let specs = kind_specs(&config);
    for seed in 10..16 {
        let updates = history(seed, 160);
        let times = check_times(&updates, seed);
        let out = run(updates.clone(), config.clone(), seed, times.clone());
        assert_minimal(&out.decay);
        for &at in &times {
            let got = as_of(&out.decay, at);
            let now = clock_of(at);
            for item in 0..5u64 {
                for (kind, spec) in specs.iter().enumerate() {
                    for (hi, &h) in spec.half_lives().iter().enumerate() {
                        let epochs = got
                            .iter()
                            .filter(|((i, k, x, _), _)| *i == item && usize::from(*k) == kind && usize::from(*x) == hi)
                            .map(|((_, _, _, e), v)| (*e, *v));
                        let value = decay_sum(epochs, h, now);
                        let (mut exact, mut magnitude) = (0.0f64, 0.0f64);
                        for (ev, _, d) in counted(&updates, at)
                            .iter()
                            .filter(|(ev, _, _)| ev.item == item && usize::from(ev.kind) == kind)
                        {
                            let term =
                                *d as f64 * weight_float(ev.weight) * (-((now - ev.ts_eff) as f64) / h as f64).exp2();
                            exact += term;
                            magnitude += term.abs();
                        }
                        let tol = 1e-9 * exact.abs() + 1e-12 * magnitude + 1e-12;
                        assert!(
                            (value - exact).abs() <= tol,
                            "seed {seed} item {item} kind {kind} h {h} at clock {now}: {value} vs {exact}"
                        );
                    }
                }
            }
            // Every epoch still present is one that has not expired.
            for ((_, kind, hi, e), _) in got.keys().map(|k| (k, ())) {
                let h = specs[usize::from(*kind)].half_lives()[usize::from(*hi)];
                assert_eq!(*e, epoch_of(*e, h));
                assert!(epoch_expiry(*e, h) > now, "expired epoch {e} still present at {now}");
            }
        }
        let end = *times.last().expect("times");
        assert!(
            as_of(&out.decay, end).is_empty(),
            "decay state left after every epoch expired"
        );
    }
}
