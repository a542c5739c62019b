//! Memory is bounded by configuration and by the live data, not by traffic: the dedup window
//! holds at most `engine.dedup_max_entries` keys, and a deleted item leaves no state behind
//! once its signals have left every window (its key goes to the next new item).

use tidal::{ClockMode, Config, ItemMeta, NewSignal, Tidal};

const T0: u64 = 1_700_000_000_000;
const DAY: u64 = 86_400_000;

fn open(dir: &std::path::Path, tune: impl FnOnce(&mut Config)) -> Tidal {
    let mut c = Config::default_filled();
    c.engine.data_dir = dir.display().to_string();
    c.engine.clock = ClockMode::Event;
    c.engine.durability = tidal::Durability::Buffer;
    tune(&mut c);
    Tidal::open(c).expect("open")
}

#[test]
fn dedup_window_is_bounded_oldest_first() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tidal = open(dir.path(), |c| c.engine.dedup_max_entries = 50);
    for i in 0..200u64 {
        let ack = tidal
            .signals(vec![
                NewSignal::new("view", format!("i{i}")).ts(T0 + i).id(format!("k{i}")),
            ])
            .expect("write");
        assert_eq!(ack.accepted, 1);
    }
    let s = tidal.stats();
    assert!(s.dedup_entries <= 50, "{} dedup keys held", s.dedup_entries);
    assert!(s.dedup_evicted >= 300, "{} evicted", s.dedup_evicted);
    // The newest ids are still remembered: a retry of the last one is a duplicate.
    let ack = tidal
        .signals(vec![NewSignal::new("view", "i199").ts(T0 + 199).id("k199")])
        .expect("write");
    assert_eq!((ack.accepted, ack.duplicates), (0, 1));
    tidal.shutdown().expect("shutdown");
}

#[test]
fn deleted_items_leave_nothing_behind() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tidal = open(dir.path(), |_| {});
    let n = 120u64;
    for i in 0..n {
        let meta = ItemMeta {
            creator: Some(format!("c{}", i % 7)),
            category: Some("music".into()),
            ..Default::default()
        };
        tidal.put_item(&format!("i{i}"), meta).expect("put");
        let sigs = (0..5)
            .map(|j| {
                NewSignal::new(["view", "like", "share"][j % 3], format!("i{i}"))
                    .user(format!("u{j}"))
                    .ts(T0 + i * 1000 + j as u64)
            })
            .collect();
        tidal.signals(sigs).expect("signals");
    }
    let lsn = tidal.stats().wal_lsn;
    tidal.wait_visible(lsn).expect("visible");
    let full = tidal.stats();
    assert_eq!(full.state.items, n);
    assert_eq!(full.serving_keys as u64, n);
    assert!(full.state.window_sums >= n && full.state.decay_sums >= n && full.state.window_pending > 0);

    let mut last = 0;
    for i in 0..n {
        last = tidal.delete_item(&format!("i{i}")).expect("delete").lsn;
    }
    tidal.wait_visible(last).expect("visible");
    let deleted = tidal.stats();
    assert_eq!(deleted.state.items, 0);
    assert_eq!(deleted.state.tombstones, n);
    assert_eq!(deleted.serving_keys, 0, "the serving state drops deleted items at once");
    assert_eq!(deleted.state.window_sums, 0);
    assert_eq!(deleted.state.decay_sums, 0);
    // Signals for a deleted item are not counted.
    let ack = tidal
        .signals(vec![NewSignal::new("view", "i3").ts(T0 + 200_000)])
        .expect("write");
    tidal.wait_visible(ack.lsn).expect("visible");
    assert!(tidal.item("i3").expect("item").is_none());
    assert_eq!(tidal.stats().state.window_sums, 0);

    // Once every window has passed (twice the longest, 7d), nothing is left: no tombstone,
    // no pending retraction, no sum; only the retired keys, waiting for new items.
    tidal.advance_clock(T0 + 15 * DAY).expect("advance");
    let ack = tidal
        .signals(vec![NewSignal::new("view", "fresh").ts(T0 + 15 * DAY)])
        .expect("write");
    tidal.wait_visible(ack.lsn).expect("visible");
    let after = tidal.stats();
    assert_eq!(after.state.tombstones, 0, "{:?}", after.state);
    assert_eq!(after.state.window_retired, 0, "{:?}", after.state);
    assert_eq!(after.state.items, 1, "{:?}", after.state);
    assert_eq!(after.serving_keys, 1);
    assert_eq!(after.state.window_sums, 1, "only the fresh item's: {:?}", after.state);
    assert!(
        after.state.window_pending <= 6,
        "only the fresh item's retractions wait: {:?}",
        after.state
    );
    assert_eq!(
        after.state.decay_sums, 3,
        "one epoch per half-life of the fresh item: {:?}",
        after.state
    );
    // The retired keys wait for the users' seen sets to forget them (the state horizon,
    // 90d), then are given to new items.
    assert_eq!(after.state.free_keys, n, "{:?}", after.state);
    tidal.advance_clock(T0 + 92 * DAY).expect("advance");
    let ack = tidal
        .signals(vec![NewSignal::new("view", "fresh2").ts(T0 + 92 * DAY)])
        .expect("write");
    tidal.wait_visible(ack.lsn).expect("visible");
    let after = tidal.stats();
    assert_eq!(
        after.state.free_keys,
        n - 1,
        "the new item took a retired key: {:?}",
        after.state
    );
    // A user's affinity with a creator lasts until its weight is below 2^-64 (80 half-lives
    // of 7d after its epoch); then nothing of the users is left.
    assert!(after.state.users > 0, "{:?}", after.state);
    tidal.advance_clock(T0 + 700 * DAY).expect("advance");
    let ack = tidal
        .signals(vec![NewSignal::new("view", "fresh3").ts(T0 + 700 * DAY)])
        .expect("write");
    tidal.wait_visible(ack.lsn).expect("visible");
    let after = tidal.stats();
    assert_eq!(after.state.users, 0, "every user's state is gone: {:?}", after.state);
    // Deleted ids may come back as new items.
    let ack = tidal
        .signals(vec![NewSignal::new("like", "i3").ts(T0 + 700 * DAY + 1)])
        .expect("write");
    tidal.wait_visible(ack.lsn).expect("visible");
    let v = tidal.item("i3").expect("item").expect("i3 is back");
    assert_eq!(v.signals["like"].total, 1.0);
    assert_eq!(v.signals["view"].total, 0.0, "nothing of its first life");
    assert!(v.meta.is_none());
    tidal.shutdown().expect("shutdown");
}
