//! The serving sink: a timely operator that gathers the dataflow's outputs on worker 0
//! and publishes new [`Snapshot`](crate::Snapshot)s as the frontier advances.
//!
//! Updates are buffered by time. When the input frontier moves past some times, the
//! updates at those times are consolidated and applied to the builder's working copy
//! together; a version published afterwards holds every time before its frontier and none
//! after — a reader never sees part of a time.
//!
//! Versions are published at most once per [`PUBLISH_INTERVAL`]: a frontier advance less
//! than that after the last version is applied but not yet published, and the operator asks
//! to be woken when the interval is up, so a completed frontier is visible at most one
//! interval late even if nothing else arrives. Under a steady stream of small advances (bulk
//! replay) the cost of a version — its index maintenance, the entity-store batch — is paid
//! once per interval instead of once per advance. An advance after a quiet interval is
//! published at once. When the inputs close, the final version (frontier
//! [`CLOSED`](crate::snapshot::CLOSED)) is published immediately.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use differential_dataflow::VecCollection;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;

use tidal_core::features::Lanes;
use tidal_core::record::Position;
use tidal_core::time::Time;

use crate::contract::{HalfLifeIdx, ItemKey, ItemState, KindIdx};
use crate::delta::Delta;
use crate::publisher::Publisher;
use crate::snapshot::CLOSED;

/// The shortest time between two published versions while frontier advances keep coming,
/// and so the longest a completed frontier waits to be published.
pub const PUBLISH_INTERVAL: Duration = Duration::from_millis(3);

/// Sinks the dataflow's outputs into `target`.
///
/// - `windows`: current window lanes per (item, signal type index);
/// - `decay`: current anchored decay sum per (item, type, half-life index, epoch start ms);
/// - `items`: current [`ItemState`] per key;
/// - `lsn`: one element, the log position applied (last LSN and signals up to it).
///
/// Each is a functional collection: a change is `−1` for the old value and `+1` for the new.
#[allow(clippy::type_complexity)] // the signature is the contract with tidal-dataflows
pub fn publish<'s>(
    windows: VecCollection<'s, Time, ((ItemKey, KindIdx), Lanes), isize>,
    decay: VecCollection<'s, Time, ((ItemKey, KindIdx, HalfLifeIdx, u64), i128), isize>,
    items: VecCollection<'s, Time, (ItemKey, ItemState), isize>,
    lsn: VecCollection<'s, Time, Position, isize>,
    target: Arc<Publisher>,
) {
    let is_owner = windows.inner.scope().index() == 0;
    let windows = windows.map(|((key, kind), lanes)| Delta::Window { key, kind, lanes });
    let decay = decay.map(|((key, kind, hl, epoch), sum)| Delta::Decay {
        key,
        kind,
        hl,
        epoch,
        sum,
    });
    let items = items.map(|(key, state)| Delta::Item {
        key,
        state: Box::new(state),
    });
    let lsn = lsn.map(Delta::Lsn);
    let all = windows.concatenate([decay, items, lsn]);

    let scope = all.inner.scope();
    let mut op = OperatorBuilder::new("ServingSink".to_owned(), scope);
    let activator = scope.activator_for(op.operator_info().address);
    let mut input = op.new_input(all.inner, Exchange::new(|_: &(Delta, Time, isize)| 0u64));

    let mut builder = target.builder();
    // Containers received since the frontier last moved, and containers with updates at
    // times not yet complete, by their earliest such time.
    let mut fresh: Vec<Batch> = Vec::new();
    let mut later: BTreeMap<Time, Vec<Batch>> = BTreeMap::new();
    // The frontier up to which updates are applied to the builder.
    let mut applied: Time = 0;
    // The frontier of the last published version; `None` once the final one is out.
    let mut published: Option<Time> = Some(0);
    let mut last_publish: Option<Instant> = None;
    // When a wake-up for a deferred version is due.
    let mut wake: Option<Instant> = None;
    op.build(move |_capabilities| {
        move |frontiers| {
            input.for_each(|_cap, data| fresh.push(std::mem::take(data)));
            let Some(last) = published else { return };
            if !is_owner {
                return;
            }
            // Times are totally ordered: the frontier is one time, or empty once closed.
            let now = frontiers[0].frontier().iter().min().copied().unwrap_or(CLOSED);
            if now != applied {
                let due = match now {
                    CLOSED => std::mem::take(&mut later),
                    _ => {
                        let rest = later.split_off(&now);
                        std::mem::replace(&mut later, rest)
                    }
                };
                let mut ready = Vec::new();
                for batch in due.into_values().flatten().chain(fresh.drain(..)) {
                    sort_out(batch, now, &mut ready, &mut later);
                }
                if !ready.is_empty() {
                    builder.apply_deltas(&ready);
                }
                applied = now;
            }
            if now == last {
                return;
            }
            let since = last_publish.map_or(Duration::MAX, |t| t.elapsed());
            if now != CLOSED && since < PUBLISH_INTERVAL {
                if wake.is_none_or(|w| w <= Instant::now()) {
                    let delay = PUBLISH_INTERVAL - since;
                    activator.activate_after(delay);
                    wake = Some(Instant::now() + delay);
                }
                return;
            }
            target.publish_shared(builder.version(now));
            target.write_items(&builder.take_item_changes());
            last_publish = Some(Instant::now());
            wake = None;
            published = (now != CLOSED).then_some(now);
        }
    });
}

/// Updates as the sink receives them.
type Batch = Vec<(Delta, Time, isize)>;

/// Files a container under `ready` if all its times are before the frontier `now`, under
/// `later` (by its earliest time) if none is, or splits it.
fn sort_out(batch: Batch, now: Time, ready: &mut Vec<Batch>, later: &mut BTreeMap<Time, Vec<Batch>>) {
    let Some(min) = batch.iter().map(|u| u.1).min() else {
        return;
    };
    let max = batch.iter().map(|u| u.1).max().unwrap_or(min);
    if max < now {
        ready.push(batch);
    } else if min >= now {
        later.entry(min).or_default().push(batch);
    } else {
        let (done, open): (Batch, Batch) = batch.into_iter().partition(|u| u.1 < now);
        ready.push(done);
        sort_out(open, now, ready, later);
    }
}
