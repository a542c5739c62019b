//! The serving sink: a timely operator that gathers the dataflow's outputs on worker 0
//! and publishes a new [`Snapshot`](crate::Snapshot) every time the frontier advances.
//!
//! Updates are buffered by time. When the input frontier moves past some times, the
//! updates at those times are consolidated and applied together, and one version is
//! published with the new frontier — a reader never sees part of a time. A frontier move
//! without data (the clock advanced) publishes a new version in O(number of indexes).
//! When the inputs close, the final version is published with frontier
//! [`CLOSED`](crate::snapshot::CLOSED).

use std::collections::BTreeMap;
use std::sync::Arc;

use differential_dataflow::VecCollection;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;

use tidal_core::features::Lanes;
use tidal_core::time::Time;

use crate::contract::{HalfLifeIdx, ItemKey, ItemState, KindIdx};
use crate::publisher::Publisher;
use crate::snapshot::{CLOSED, Update};

/// Sinks the dataflow's outputs into `target`.
///
/// - `windows`: current window lanes per (item, signal type index);
/// - `decay`: current anchored decay sum per (item, type, half-life index, epoch start ms);
/// - `items`: current [`ItemState`] per key;
/// - `lsn`: one element, the last LSN applied.
///
/// Each is a functional collection: a change is `−1` for the old value and `+1` for the new.
#[allow(clippy::type_complexity)] // the signature is the contract with tidal-dataflows
pub fn publish<'s>(
    windows: VecCollection<'s, Time, ((ItemKey, KindIdx), Lanes), isize>,
    decay: VecCollection<'s, Time, ((ItemKey, KindIdx, HalfLifeIdx, u64), i128), isize>,
    items: VecCollection<'s, Time, (ItemKey, ItemState), isize>,
    lsn: VecCollection<'s, Time, u64, isize>,
    target: Arc<Publisher>,
) {
    let is_owner = windows.inner.scope().index() == 0;
    let windows = windows.map(|((key, kind), lanes)| Update::Window { key, kind, lanes });
    let decay = decay.map(|((key, kind, hl, epoch), sum)| Update::Decay {
        key,
        kind,
        hl,
        epoch,
        sum,
    });
    let items = items.map(|(key, state)| Update::Item { key, state });
    let lsn = lsn.map(Update::Lsn);
    let all = windows.concatenate([decay, items, lsn]);

    let mut builder = target.builder();
    let mut pending: BTreeMap<Time, Vec<(Update, isize)>> = BTreeMap::new();
    // The frontier of the last published version; `None` once the final one is out.
    let mut published: Option<Time> = Some(0);
    all.inner.sink(
        Exchange::new(|_: &(Update, Time, isize)| 0u64),
        "ServingSink",
        move |(input, frontier)| {
            input.for_each(|_cap, data| {
                for (u, t, d) in data.drain(..) {
                    pending.entry(t).or_default().push((u, d));
                }
            });
            if !is_owner {
                return;
            }
            // Times are totally ordered: the frontier is one time, or empty once closed.
            let now = frontier.frontier().iter().min().copied();
            if now == published || published.is_none() {
                return;
            }
            let ready = match now {
                Some(f) => {
                    let later = pending.split_off(&f);
                    std::mem::replace(&mut pending, later)
                }
                None => std::mem::take(&mut pending),
            };
            if !ready.is_empty() {
                let updates: Vec<(Update, isize)> = ready.into_values().flatten().collect();
                let changes = builder.apply(updates);
                target.write_items(&changes);
            }
            target.publish(builder.snapshot(now.unwrap_or(CLOSED)));
            published = now;
        },
    );
}
