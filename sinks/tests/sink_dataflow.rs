//! The sink operator in a real timely dataflow with two workers: every published version
//! is a whole number of input times (a concurrent reader checks an invariant that a half
//! applied batch would break), versions carry the frontier, future-time updates stay out
//! until their time completes, and closing the inputs publishes the final version. The
//! entity store follows item puts and deletes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use differential_dataflow::input::InputSession;

use tidal_core::Config;
use tidal_core::features::{LANES, Lanes};
use tidal_core::record::ItemMeta;
use tidal_core::record::Position;
use tidal_core::time::Time;
use tidal_sinks::contract::{HalfLifeIdx, ItemKey, ItemState, KindIdx};
use tidal_sinks::snapshot::CLOSED;
use tidal_sinks::{IndexKind, Publisher, publish};

/// The decay input's record: ((item, type, half-life, epoch), anchored sum).
type DecayRecord = ((ItemKey, KindIdx, HalfLifeIdx, u64), i128);

const KEYS: u64 = 20;
const ROUNDS: u64 = 30;
const FUTURE: Time = 1_000;

fn lanes(v: u64) -> Lanes {
    Lanes([(v as i64) << 20; LANES])
}

fn state(key: ItemKey, round: u64) -> ItemState {
    ItemState {
        id: format!("i{key}"),
        meta: Some(ItemMeta {
            created_at: Some(round),
            title: Some(format!("t{round}")),
            ..ItemMeta::default()
        }),
        // Odd keys are deleted at round 10 and put again at round 20.
        deleted: key % 2 == 1 && (10..20).contains(&round),
    }
}

#[test]
fn sink_publishes_whole_times_with_their_frontier() {
    let dir = tempfile::tempdir().unwrap();
    let config = Arc::new(Config::default_filled());
    let publisher = Arc::new(Publisher::with_store(config, dir.path().join("entities")).unwrap());
    assert_eq!(publisher.load().frontier, 0);

    // A reader that checks every version it sees: all keys carry the value of one round,
    // and that round is the version's LSN.
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (publisher, stop) = (publisher.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut seen = 0;
            while !stop.load(Ordering::Relaxed) {
                let snap = publisher.load();
                if snap.lsn > 0 && !snap.is_closed() {
                    for key in 0..KEYS {
                        let e = snap.entry(key).expect("every key is present");
                        assert_eq!(e.lanes(0), Some(&lanes(snap.lsn)), "a version mixes two rounds");
                    }
                    seen += 1;
                }
                std::thread::yield_now();
            }
            seen
        })
    };

    let p = publisher.clone();
    timely::execute(timely::Config::process(2), move |worker| {
        let index = worker.index() as u64;
        let peers = worker.peers() as u64;
        let mut windows: InputSession<Time, ((ItemKey, KindIdx), Lanes), isize> = InputSession::new();
        let mut decay: InputSession<Time, DecayRecord, isize> = InputSession::new();
        let mut items: InputSession<Time, (ItemKey, ItemState), isize> = InputSession::new();
        let mut lsn: InputSession<Time, Position, isize> = InputSession::new();
        let target = p.clone();
        worker.dataflow::<Time, _, _>(|scope| {
            publish(
                windows.to_collection(scope),
                decay.to_collection(scope),
                items.to_collection(scope),
                lsn.to_collection(scope),
                target,
            );
        });
        // An update at a future time: invisible until that time completes.
        if index == 0 {
            windows.update_at(((999, 0), lanes(7)), FUTURE, 1);
            decay.update_at(((999, 0, 0, 0), 1 << 50), FUTURE, 1);
            items.update_at((999, state(999, 0)), FUTURE, 1);
        }
        for round in 1..=ROUNDS {
            let t = round;
            windows.advance_to(t);
            decay.advance_to(t);
            items.advance_to(t);
            lsn.advance_to(t);
            // The keys of a round are spread over both workers.
            for key in (0..KEYS).filter(|k| k % peers == index) {
                if round > 1 {
                    windows.update(((key, 0), lanes(round - 1)), -1);
                    items.update((key, state(key, round - 1)), -1);
                }
                windows.update(((key, 0), lanes(round)), 1);
                items.update((key, state(key, round)), 1);
            }
            if index == 0 {
                if round > 1 {
                    lsn.update(pos(round - 1), -1);
                }
                lsn.update(pos(round), 1);
            }
            for s in [&mut windows as &mut dyn Advance, &mut decay, &mut items, &mut lsn] {
                s.advance_and_flush(t + 1);
            }
            while p.load().frontier < t + 1 {
                worker.step();
            }
            let snap = p.load();
            assert_eq!(snap.frontier, t + 1);
            assert_eq!(snap.lsn, round);
            assert!(snap.entry(999).is_none(), "future update visible at round {round}");
            let expect_listed = if (10..20).contains(&round) { KEYS / 2 } else { KEYS };
            assert_eq!(snap.listed(), expect_listed as usize, "round {round}");
            assert_eq!(
                snap.index(IndexKind::Trending { kind: 0, window: 0 }).unwrap().len(),
                expect_listed as usize
            );
        }
        drop((windows, decay, items, lsn));
        while !p.load().is_closed() {
            worker.step();
        }
    })
    .unwrap();
    stop.store(true, Ordering::Relaxed);
    let seen = reader.join().unwrap();
    assert!(seen > 0);

    let last = publisher.load();
    assert_eq!(last.frontier, CLOSED);
    assert_eq!(
        last.entry(999).and_then(|e| e.lanes(0)),
        Some(&lanes(7)),
        "closing completes every time"
    );
    assert_eq!(last.key_of("i999"), Some(999));
    // The entity store holds the latest metadata of live items.
    for key in 0..KEYS {
        let stored = publisher.stored_item(&format!("i{key}"));
        assert_eq!(stored, state(key, ROUNDS).meta, "key {key}");
    }
}

#[test]
fn deleted_items_leave_the_entity_store() {
    let dir = tempfile::tempdir().unwrap();
    let publisher = Publisher::with_store(Arc::new(Config::default_filled()), dir.path().join("entities")).unwrap();
    let mut b = publisher.builder();
    let live = ItemState {
        id: "x".into(),
        meta: Some(ItemMeta {
            title: Some("hello".into()),
            ..Default::default()
        }),
        deleted: false,
    };
    b.apply(vec![(
        tidal_sinks::Update::Item {
            key: 1,
            state: live.clone(),
        },
        1,
    )]);
    b.snapshot(1);
    publisher.write_items(&b.take_item_changes());
    assert_eq!(publisher.stored_item("x"), live.meta);
    let dead = ItemState {
        deleted: true,
        ..live.clone()
    };
    b.apply(vec![
        (tidal_sinks::Update::Item { key: 1, state: live }, -1),
        (tidal_sinks::Update::Item { key: 1, state: dead }, 1),
    ]);
    b.snapshot(2);
    publisher.write_items(&b.take_item_changes());
    assert_eq!(publisher.stored_item("x"), None);
}

/// Advancing the four differently typed inputs in one loop.
trait Advance {
    fn advance_and_flush(&mut self, t: Time);
}

impl<D: differential_dataflow::ExchangeData + std::hash::Hash> Advance for InputSession<Time, D, isize> {
    fn advance_and_flush(&mut self, t: Time) {
        self.advance_to(t);
        self.flush();
    }
}

fn pos(lsn: u64) -> Position {
    Position { lsn, signals: lsn }
}
