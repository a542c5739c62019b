//! The sink operator in a real timely dataflow with two workers, each publishing its own
//! shard: a reader's view never mixes two rounds, across shards either (a concurrent reader
//! checks an invariant that a half-applied batch or shards at different versions would
//! break); versions are cut exactly at the marks and carry their frontier and position;
//! future-time updates stay out until their time completes; closing the inputs publishes the
//! final version. The entity store follows item puts and deletes. Marks inside a catch-up
//! apply without publishing.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tidal_core::user::SideUpdate;
use tidal_sinks::CohortKey;

use differential_dataflow::input::InputSession;
use timely::dataflow::InputHandleVec;
use timely::dataflow::operators::vec::Input;

use tidal_core::Config;
use tidal_core::features::{LANES, Lanes};
use tidal_core::flow::{Control, HalfLifeIdx, ItemKey, ItemState, KindIdx};
use tidal_core::record::{ItemMeta, Position};
use tidal_core::time::Time;
use tidal_sinks::snapshot::CLOSED;
use tidal_sinks::{EntityStore, IndexKind, Shard, Shards, SinkInputs, StoreShard, shard_sink};
use timely::worker::Worker;

/// The decay input's record: ((item, type, half-life, epoch), anchored sum).
type DecayRecord = ((ItemKey, KindIdx, HalfLifeIdx, u64), i128);

const KEYS: u64 = 20;
const ROUNDS: u64 = 30;
const FUTURE: Time = 1_000;
/// How long a test waits for a sink's thread to apply what its worker ran.
const SETTLE: std::time::Duration = std::time::Duration::from_secs(30);

fn lanes(v: u64) -> Lanes {
    Lanes([(v as i64) << 20; LANES])
}

fn state(key: ItemKey, round: u64) -> ItemState {
    ItemState {
        id: format!("i{key}"),
        meta: Some(Arc::new(ItemMeta {
            created_at: Some(round),
            title: Some(format!("t{round}")),
            ..ItemMeta::default()
        })),
        // Odd keys are deleted at round 10 and put again at round 20.
        deleted: key % 2 == 1 && (10..20).contains(&round),
    }
}

fn pos(lsn: u64) -> Position {
    Position { lsn, signals: lsn }
}

/// A sink's inputs, as a test drives them.
struct Inputs {
    windows: InputSession<Time, ((ItemKey, KindIdx), Lanes), isize>,
    decay: InputSession<Time, DecayRecord, isize>,
    items: InputSession<Time, (ItemKey, ItemState), isize>,
    cohorts: InputSession<Time, (CohortKey, Lanes), isize>,
    side: InputHandleVec<Time, SideUpdate>,
    control: InputHandleVec<Time, Control>,
}

impl Inputs {
    /// A sink of `shard` (and `store`, if any) built in `worker`, and its inputs.
    fn sink(
        worker: &mut Worker,
        shard: Arc<Shard>,
        store: Option<(Arc<EntityStore>, StoreShard)>,
        schema: &Config,
    ) -> Inputs {
        let mut inputs = Inputs {
            windows: InputSession::new(),
            decay: InputSession::new(),
            items: InputSession::new(),
            cohorts: InputSession::new(),
            side: InputHandleVec::new(),
            control: InputHandleVec::new(),
        };
        worker.dataflow::<Time, _, _>(|scope| {
            let sink_inputs = SinkInputs {
                windows: inputs.windows.to_collection(scope),
                decay: inputs.decay.to_collection(scope),
                items: inputs.items.to_collection(scope),
                cohorts: inputs.cohorts.to_collection(scope),
                side: scope.input_from(&mut inputs.side),
            };
            shard_sink(
                sink_inputs,
                scope.input_from(&mut inputs.control),
                shard,
                store,
                schema,
                Default::default(),
                Default::default(),
            );
        });
        inputs
    }

    /// Moves every input but the cohort sums to `t`.
    fn advance_main(&mut self, t: Time) {
        self.windows.advance_to(t);
        self.decay.advance_to(t);
        self.items.advance_to(t);
        self.side.advance_to(t);
        self.control.advance_to(t);
        self.windows.flush();
        self.decay.flush();
        self.items.flush();
        self.control.flush();
    }

    /// Moves every input to `t`.
    fn advance(&mut self, t: Time) {
        self.advance_main(t);
        self.cohorts.advance_to(t);
        self.cohorts.flush();
    }
}

#[test]
fn shards_publish_whole_times_at_common_marks() {
    let dir = tempfile::tempdir().unwrap();
    let config = Arc::new(Config::default_filled());
    let shards = Arc::new(Shards::new(config.clone(), 2, 0, 2));
    let store = Arc::new(EntityStore::open(&dir.path().join("entities")).unwrap());
    assert_eq!(shards.view().frontier, 0);

    // A reader that checks every view it sees: all keys, on both shards, carry the value of
    // one round, and that round is the view's LSN.
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (shards, stop) = (shards.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut seen = 0;
            while !stop.load(Ordering::Relaxed) {
                let view = shards.view();
                if view.lsn() > 0 && !view.is_closed() {
                    for key in 0..KEYS {
                        let e = view.shards[(key % 2) as usize]
                            .entry(key)
                            .expect("every key is present");
                        assert_eq!(e.lanes(0), Some(&lanes(view.lsn())), "a view mixes two rounds");
                    }
                    assert!(view.shards.iter().all(|s| s.frontier == view.frontier));
                    seen += 1;
                }
                std::thread::yield_now();
            }
            seen
        })
    };

    let (all, target_store) = (shards.clone(), store.clone());
    timely::execute(timely::Config::process(2), move |worker| {
        let index = worker.index() as u64;
        let peers = worker.peers() as u64;
        let shard = all.shard(index as usize).unwrap().clone();
        let store = Some((target_store.clone(), StoreShard::new(index as usize, 2, 0, 1)));
        let mut inputs = Inputs::sink(worker, shard, store, all.config());
        // An update at a future time: invisible until that time completes.
        if index == 1 {
            inputs.windows.update_at(((999, 0), lanes(7)), FUTURE, 1);
            inputs.decay.update_at(((999, 0, 0, 0), 1 << 50), FUTURE, 1);
            inputs.items.update_at((999, state(999, 0)), FUTURE, 1);
        }
        for round in 1..=ROUNDS {
            let t = round;
            inputs.advance(t);
            // The keys of a round are spread over both workers.
            for key in (0..KEYS).filter(|k| k % peers == index) {
                if round > 1 {
                    inputs.windows.update(((key, 0), lanes(round - 1)), -1);
                    inputs.items.update((key, state(key, round - 1)), -1);
                }
                inputs.windows.update(((key, 0), lanes(round)), 1);
                inputs.items.update((key, state(key, round)), 1);
            }
            // The mark of the round's end (every worker's sink needs the marks).
            inputs.control.send(Control::Mark {
                time: t + 1,
                position: pos(round),
                origin: 0,
                publish: true,
            });
            inputs.advance(t + 1);
            while all.view().frontier < t + 1 {
                worker.step();
            }
            let view = all.view();
            assert_eq!(view.frontier, t + 1);
            assert_eq!(view.lsn(), round);
            assert!(
                view.shards[1].entry(999).is_none(),
                "future update visible at round {round}"
            );
            let expect_listed = if (10..20).contains(&round) { KEYS / 2 } else { KEYS };
            assert_eq!(
                view.shards.iter().map(|s| s.listed()).sum::<usize>(),
                expect_listed as usize
            );
            let indexed: usize = view
                .shards
                .iter()
                .map(|s| s.index(IndexKind::Trending { kind: 0, window: 0 }).unwrap().len())
                .sum();
            assert_eq!(indexed, expect_listed as usize, "round {round}");
        }
        inputs.control.send(Control::Mark {
            time: Time::MAX,
            position: pos(ROUNDS),
            origin: 0,
            publish: true,
        });
        drop(inputs);
        while !all.view().is_closed() {
            worker.step();
        }
    })
    .unwrap();
    stop.store(true, Ordering::Relaxed);
    let seen = reader.join().unwrap();
    assert!(seen > 0);

    let last = shards.view();
    assert_eq!(last.frontier, CLOSED);
    assert_eq!(last.lsn(), ROUNDS);
    assert_eq!(
        last.shards[1].entry(999).and_then(|e| e.lanes(0)),
        Some(&lanes(7)),
        "closing completes every time"
    );
    assert_eq!(last.shards[1].key_of("i999"), Some(999));
    // The entity store holds the latest metadata of live items.
    for key in 0..KEYS {
        let stored = store.get(&format!("i{key}"));
        assert_eq!(stored.as_ref(), state(key, ROUNDS).meta.as_deref(), "key {key}");
    }
}

/// Marks inside a catch-up close rounds without publishing: the sink applies them to its
/// working copy and cuts no version until a publishing mark — also one at the time the last
/// non-publishing mark already reached, as when a catch-up ends with nothing new.
#[test]
fn catch_up_marks_apply_without_publishing() {
    let config = Arc::new(Config::default_filled());
    let shards = Arc::new(Shards::new(config.clone(), 1, 0, 1));
    let all = shards.clone();
    timely::execute(timely::Config::thread(), move |worker| {
        let shard = all.shard(0).unwrap().clone();
        let mut inputs = Inputs::sink(worker, shard, None, all.config());
        for round in 1..=5u64 {
            inputs.advance(round);
            for key in 0..KEYS {
                if round > 1 {
                    inputs.windows.update(((key, 0), lanes(round - 1)), -1);
                } else {
                    inputs.items.update((key, state(key, 0)), 1);
                }
                inputs.windows.update(((key, 0), lanes(round)), 1);
            }
            inputs.control.send(Control::Mark {
                time: round + 1,
                position: pos(round),
                origin: 0,
                publish: false,
            });
            inputs.advance(round + 1);
            // One thread: a few steps run everything the inputs allow.
            for _ in 0..50 {
                worker.step();
            }
            assert!(all.shard(0).unwrap().settle(SETTLE));
            assert_eq!(
                all.view().frontier,
                0,
                "round {round}: a catch-up mark published a version"
            );
        }
        // The catch-up ends where its last mark was: a publishing mark at that time.
        inputs.control.send(Control::Mark {
            time: 6,
            position: pos(5),
            origin: 0,
            publish: true,
        });
        inputs.advance(7);
        for _ in 0..50 {
            worker.step();
        }
        assert!(all.shard(0).unwrap().settle(SETTLE));
        let view = all.view();
        assert_eq!(view.frontier, 6);
        assert_eq!(view.lsn(), 5);
        for key in 0..KEYS {
            let e = view.shards[0].entry(key).expect("every key is present");
            assert_eq!(e.lanes(0), Some(&lanes(5)), "key {key}: every round applied");
        }
        let indexed = view.shards[0]
            .index(IndexKind::Trending { kind: 0, window: 0 })
            .unwrap()
            .len();
        assert_eq!(indexed, KEYS as usize, "the indexes are settled in the one version");
    })
    .unwrap();
}

/// A cohort rollup that lags behind (a broad cohort just declared, its counts still being
/// built from the retained signals) does not hold back the versions of everything else: they
/// go on being cut at the marks, with the cohort lanes and declarations as of the last mark
/// the cohort input has reached. When it completes, the same frontier is published again with
/// them, without waiting for a new mark.
#[test]
fn a_lagging_cohort_rollup_does_not_hold_back_versions() {
    let config = Arc::new(Config::default_filled());
    let shards = Arc::new(Shards::new(config.clone(), 1, 0, 1));
    let all = shards.clone();
    timely::execute(timely::Config::thread(), move |worker| {
        let shard = all.shard(0).unwrap().clone();
        let mut inputs = Inputs::sink(worker, shard, None, all.config());
        let defs = |names: &[&str]| -> Arc<tidal_core::user::CohortDefs> {
            Arc::new(
                names
                    .iter()
                    .map(|n| (n.to_string(), [("gender".to_string(), "F".to_string())].into()))
                    .collect(),
            )
        };
        let mark = |time: Time, lsn: u64| Control::Mark {
            time,
            position: pos(lsn),
            origin: 0,
            publish: true,
        };

        // Round 1: items, a cohort sum and a declared cohort, all complete at mark 2.
        for key in 0..KEYS {
            inputs.items.update((key, state(key, 0)), 1);
            inputs.windows.update(((key, 0), lanes(1)), 1);
        }
        inputs.cohorts.update(((0, 0, 5), lanes(1)), 1);
        inputs.side.send(SideUpdate::Cohorts(defs(&["narrow"])));
        inputs.control.send(mark(2, 1));
        inputs.advance_main(2);
        inputs.cohorts.advance_to(2);
        inputs.cohorts.flush();
        for _ in 0..50 {
            worker.step();
        }
        assert!(all.shard(0).unwrap().settle(SETTLE));
        let view = all.view();
        assert_eq!((view.frontier, view.lsn()), (2, 1));
        assert_eq!((view.cohort_frontier(), view.cohort_lsn_of(0)), (2, 1));
        assert_eq!(view.shards[0].cohort_lanes(5, 0, 0), Some(&lanes(1)));

        // Round 2 declares a broad cohort; its counts (cohort 6) are being built: the cohort
        // input stays at time 2 while everything else goes on for four more rounds.
        inputs.side.send(SideUpdate::Cohorts(defs(&["narrow", "wide"])));
        inputs.cohorts.update(((0, 0, 6), lanes(2)), 1);
        for round in 2..=5u64 {
            for key in 0..KEYS {
                inputs.windows.update(((key, 0), lanes(round - 1)), -1);
                inputs.windows.update(((key, 0), lanes(round)), 1);
            }
            inputs.control.send(mark(round + 1, round));
            inputs.advance_main(round + 1);
            for _ in 0..50 {
                worker.step();
            }
            assert!(all.shard(0).unwrap().settle(SETTLE));
            let view = all.view();
            assert_eq!(
                (view.frontier, view.lsn()),
                (round + 1, round),
                "round {round}: the versions wait for the cohorts"
            );
            let e = view.shards[0].entry(3).expect("every key is present");
            assert_eq!(e.lanes(0), Some(&lanes(round)));
            // The cohort part stays as of mark 2: the old sums, the old declarations.
            assert_eq!((view.cohort_frontier(), view.cohort_lsn_of(0)), (2, 1));
            assert_eq!(view.shards[0].cohort_lanes(6, 0, 0), None);
            assert!(!view.shards[0].cohort_defs().contains_key("wide"));
            assert_eq!(view.shards[0].cohort_lanes(5, 0, 0), Some(&lanes(1)));
        }

        // The counts are built: the cohort input completes up to the last mark. No new mark
        // comes; the version at frontier 6 is published again with the cohorts of mark 6.
        inputs.cohorts.advance_to(6);
        inputs.cohorts.flush();
        for _ in 0..50 {
            worker.step();
        }
        assert!(all.shard(0).unwrap().settle(SETTLE));
        let view = all.view();
        assert_eq!((view.frontier, view.lsn()), (6, 5));
        assert_eq!((view.cohort_frontier(), view.cohort_lsn_of(0)), (6, 5));
        assert_eq!(view.shards[0].cohort_lanes(6, 0, 0), Some(&lanes(2)));
        assert!(view.shards[0].cohort_defs().contains_key("wide"));
        assert_eq!(view.shards[0].entry(3).and_then(|e| e.lanes(0)), Some(&lanes(5)));
    })
    .unwrap();
}

/// Updates that arrive before their mark, while the marks' frontier is ahead of theirs (a
/// restore's or a catch-up's run), reach the working copy as they come, in several steps,
/// a time's changes split among them, in either order: no version shows them before the
/// mark, and the version at the mark is what applying them all at once gives.
#[test]
fn updates_ahead_of_their_mark_apply_early_and_alike() {
    const MANY: u64 = 200;
    let config = Arc::new(Config::default_filled());
    let shards = Arc::new(Shards::new(config.clone(), 1, 0, 1));
    let all = shards.clone();
    timely::execute(timely::Config::thread(), move |worker| {
        let shard = all.shard(0).unwrap().clone();
        let mut inputs = Inputs::sink(worker, shard, None, all.config());
        let run = |worker: &mut Worker| {
            for _ in 0..20 {
                worker.step();
            }
            assert!(all.shard(0).unwrap().settle(SETTLE));
        };
        // A publishing mark at `time` for the log up to `lsn`, the marks' frontier moved there.
        let mark = |inputs: &mut Inputs, time: Time, lsn: u64| {
            inputs.control.send(Control::Mark {
                time,
                position: pos(lsn),
                origin: 0,
                publish: true,
            });
            inputs.control.advance_to(time);
            inputs.control.flush();
        };
        // The newest version is at `frontier`, every key with `lanes(v)`.
        let holds = |frontier: Time, v: u64, why: &str| {
            let view = all.view();
            assert_eq!(view.frontier, frontier);
            for key in 0..MANY {
                let e = view.shards[0].entry(key).expect("every key is present");
                assert_eq!(e.lanes(0), Some(&lanes(v)), "key {key}{why}");
            }
        };
        inputs.advance(1);
        // The mark at 2 and the marks' frontier beyond the updates' time, which stays at 1.
        mark(&mut inputs, 2, 1);
        for key in 0..MANY {
            inputs.items.update((key, state(key, 0)), 1);
            inputs.windows.update(((key, 0), lanes(1)), 1);
        }
        inputs.items.flush();
        inputs.windows.flush();
        run(worker);
        // The same time again: each key's lanes change, retraction and assertion together.
        for key in 0..MANY {
            inputs.windows.update(((key, 0), lanes(1)), -1);
            inputs.windows.update(((key, 0), lanes(7)), 1);
        }
        inputs.windows.flush();
        run(worker);
        assert_eq!(all.view().frontier, 0, "a version before its mark");
        inputs.advance(2);
        run(worker);
        holds(2, 7, "");
        // The next time's changes come with their assertions first and their retractions
        // in a later step.
        mark(&mut inputs, 3, 2);
        for key in 0..MANY {
            inputs.windows.update(((key, 0), lanes(9)), 1);
        }
        inputs.windows.flush();
        run(worker);
        for key in 0..MANY {
            inputs.windows.update(((key, 0), lanes(7)), -1);
        }
        inputs.windows.flush();
        run(worker);
        assert_eq!(all.view().frontier, 2, "a version before its mark");
        inputs.advance(3);
        run(worker);
        holds(3, 9, "");
        let indexed = all.view().shards[0]
            .index(IndexKind::Trending { kind: 0, window: 0 })
            .unwrap()
            .len();
        assert_eq!(indexed, MANY as usize);
        // Updates at the marks' own frontier wait: a mark may still come at their time, and
        // its version must not hold them.
        inputs.advance(4);
        run(worker);
        for key in 0..MANY {
            inputs.windows.update(((key, 0), lanes(9)), -1);
            inputs.windows.update(((key, 0), lanes(11)), 1);
        }
        inputs.windows.flush();
        run(worker);
        mark(&mut inputs, 4, 3);
        inputs.advance(5);
        run(worker);
        holds(4, 9, ": a change at the mark's time");
    })
    .unwrap();
}
