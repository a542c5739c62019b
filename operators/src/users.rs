//! The users materializer: at each user's owner worker it keeps the user's attributes, its
//! cohort memberships, its seen / liked / hidden sets, its follow and block edges and its
//! decayed affinity with each creator, and publishes the user's [`UserView`] to the worker's
//! serving shard.
//!
//! Inputs: the broadcast control stream (user puts and deletes, cohort declarations,
//! relationship edges: each worker takes those of the users it owns, and every worker keeps
//! the declared cohorts) and the [`UserSig`]s the items' owners send here (exchanged by user
//! key). Both are applied in time order once a time is complete, and in log (LSN) order
//! within one time.
//!
//! Outputs: the *memberships* collection `(user, cohort)` — one per declared dimension the
//! user has a value for (`dimension:value`) and one per declared cohort whose rule the user's
//! attributes match — which the cohort rollups join with the user's retained signals; and the
//! stream of [`SideUpdate`]s (user views, declared cohorts) for the sink.
//!
//! The user-state sets follow SPEC §4: an item stays in a set while the signal's bucket
//! (`floor(ts_eff/g)·g`, `g` = horizon/90) plus the horizon lies after the clock, the rule of a
//! window; each bucket is dropped whole at the logical time it ends, so the sets are exact as
//! of every time and a user's state is bounded by the horizon.

use std::collections::BTreeMap;
use std::sync::Arc;

use differential_dataflow::{AsCollection, VecCollection};
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;

use tidal_core::config::Config;
use tidal_core::flow::{CohortId, Control, Partition, Persist, UserKey, UserSig};
use tidal_core::record::Record;
use tidal_core::stats::{Stage, StateStats};
use tidal_core::time::Time;
use tidal_core::user::SideUpdate;

mod checkpoint;
mod state;

use state::Users;

use crate::background::{Background, decoding};

/// The collections and streams the users materializer emits.
pub struct UserOutputs<'s> {
    /// `(user, cohort)` for every cohort each user belongs to.
    pub memberships: VecCollection<'s, Time, (UserKey, CohortId), i64>,
    /// User views and declared cohorts for this worker's serving shard.
    pub side: StreamVec<'s, Time, SideUpdate>,
}

type MemberUpdate = ((UserKey, CohortId), Time, i64);

/// Builds the users materializer (see the module docs).
pub fn users<'s>(
    control: StreamVec<'s, Time, Control>,
    sigs: StreamVec<'s, Time, UserSig>,
    config: Arc<Config>,
    stats: Arc<StateStats>,
    persist: Persist,
) -> UserOutputs<'s> {
    let scope = control.scope();
    let partition = Partition::new(scope.index(), scope.peers());
    let mut builder = OperatorBuilder::new("Users".to_owned(), scope);
    let woken = scope
        .worker()
        .sync_activator_for(builder.operator_info().address.to_vec());
    // Also what a time applied beside the worker wakes when it is done.
    let returned = woken.clone();
    let mut control_in = builder.new_input(control, Pipeline);
    let mut sigs_in = builder.new_input(sigs, Exchange::new(|s: &UserSig| s.user));
    let (mut member_out, memberships) = builder.new_output::<Vec<MemberUpdate>>();
    let (mut side_out, side) = builder.new_output::<Vec<SideUpdate>>();
    builder.build(move |capabilities| {
        let mut state = Users::new(&config, partition);
        // A restored state decodes, and its views are made, on a thread of its own.
        let decode = {
            let config = config.clone();
            move |bytes: Vec<u8>| restored(&config, partition, &bytes)
        };
        let mut restoring = decoding(&persist, partition.index, "users", woken, decode);
        let mut initial = Some(capabilities);
        // Per time: the capabilities to emit at it, its control messages and signals.
        let mut waiting: BTreeMap<Time, Held> = BTreeMap::new();
        // Per bucket-expiry time, the capabilities to emit at it.
        let mut expiries: BTreeMap<Time, [Capability<Time>; 2]> = BTreeMap::new();
        // Checkpoints asked for and not written yet: written once every time before their
        // frontier is applied and none after it.
        let mut checkpoints: BTreeMap<Time, tidal_core::record::Position> = BTreeMap::new();
        // The frontier of the last checkpoint written.
        let mut taken: Option<Time> = None;
        // A large time being applied on a thread of its own, with the state.
        let mut away: Option<Away> = None;
        move |frontiers| {
            // A restored state not decoded yet, or the state away applying a large time:
            // the other operators run meanwhile (the thread activates this one when done).
            if restoring.as_mut().is_some_and(|r| !r.ready()) || away.as_mut().is_some_and(|a| !a.job.ready()) {
                return;
            }
            let started = std::time::Instant::now();
            if let Some(a) = away.take() {
                let (back, time, mut members, mut side, new_expiries) = a.job.take();
                state = back;
                if !members.is_empty() {
                    // Not what a time without user records gives; were it to, the changes go
                    // out a time late rather than not at all.
                    tracing::error!(
                        time,
                        changes = members.len(),
                        "memberships changed at a time applied beside the worker"
                    );
                    let later = *a.members.time();
                    members.iter_mut().for_each(|m| m.1 = later);
                    member_out.activate().give(&a.members, &mut members);
                }
                if !side.is_empty() {
                    side_out.activate().give(&a.side, &mut side);
                }
                for at in new_expiries {
                    if at > time {
                        expiries
                            .entry(at)
                            .or_insert_with(|| [a.members.delayed(&at), a.side.delayed(&at)]);
                    }
                }
            }
            if let Some(caps) = initial.take()
                && let [c0, c1] = &caps[..]
            {
                // The declared cohorts (and a restored state) go out at time 0.
                let (mut views, mut members) = (Vec::new(), Vec::new());
                if let Some(r) = restoring.take() {
                    (state, views, members) = r.take();
                }
                let mut out = Vec::with_capacity(views.len() + 1);
                out.push(SideUpdate::Cohorts(Arc::new(state.defs.clone())));
                out.append(&mut views);
                side_out.activate().give(c1, &mut out);
                if !members.is_empty() {
                    member_out.activate().give(c0, &mut members);
                }
                for at in state.bucket_expiries() {
                    expiries.entry(at).or_insert_with(|| [c0.delayed(&at), c1.delayed(&at)]);
                }
            }
            control_in.for_each(|cap, data| {
                let (Some(c0), Some(c1)) = (cap.retain_least(0), cap.retain_least(1)) else {
                    return;
                };
                for msg in data.iter() {
                    // One at a frontier already taken is that state (another process's ask, or
                    // a shutdown's after a periodic one): taken once, as the other stages do.
                    if let Control::Checkpoint { time, position } = msg
                        && taken.is_none_or(|t| t < *time)
                    {
                        checkpoints.insert(*time, *position);
                    }
                }
                let held = waiting.entry(*c0.time()).or_insert_with(|| Held::new([c0, c1]));
                held.control.append(data);
            });
            sigs_in.for_each(|cap, data| {
                let (Some(c0), Some(c1)) = (cap.retain_least(0), cap.retain_least(1)) else {
                    return;
                };
                let held = waiting.entry(*c0.time()).or_insert_with(|| Held::new([c0, c1]));
                held.sigs.append(data);
            });
            let reached = frontiers
                .iter()
                .map(|f| f.frontier().iter().min().copied().unwrap_or(Time::MAX))
                .min()
                .unwrap_or(Time::MAX);
            loop {
                let next_input = waiting.first_key_value().map(|(t, _)| *t).filter(|t| *t < reached);
                let next_expiry = expiries.first_key_value().map(|(t, _)| *t).filter(|t| *t < reached);
                // A checkpoint is written once every time before its frontier is applied and
                // none after it: before the next time to apply, or when all complete times are.
                let next = next_input.into_iter().chain(next_expiry).min().unwrap_or(reached);
                while let Some((&f, &position)) = checkpoints.first_key_value() {
                    if f > next {
                        break;
                    }
                    checkpoints.pop_first();
                    taken = Some(f);
                    // The worker takes a reference to every slot; the part is encoded from
                    // them on the checkpoint writer's thread while the worker goes on.
                    if persist.writes() {
                        let began = std::time::Instant::now();
                        let snapshot = state.snapshot();
                        tracing::debug!(
                            users = state.slots.len(),
                            ms = began.elapsed().as_secs_f64() * 1e3,
                            "users checkpoint snapshot taken"
                        );
                        persist.write_later(
                            partition.index,
                            "users",
                            f,
                            position,
                            Box::new(move |w| snapshot.save(w)),
                        );
                    }
                }
                let (time, caps, control, sigs) = match (next_input, next_expiry) {
                    (None, None) => break,
                    (Some(i), e) if e.is_none_or(|e| i <= e) => {
                        let Some((_, held)) = waiting.pop_first() else { break };
                        // An expiry at the same time is applied with it.
                        if e == Some(i) {
                            expiries.pop_first();
                        }
                        (i, held.caps, held.control, held.sigs)
                    }
                    _ => {
                        let Some((t, caps)) = expiries.pop_first() else { break };
                        (t, caps, Vec::new(), Vec::new())
                    }
                };
                if sigs.len() >= AWAY_AT && !changes_memberships(&control) {
                    // No membership changes at this time: the cohort rollups go on with it
                    // while the users' signals are applied on another core (a restart's
                    // tail, a catch-up), and the views follow once they are.
                    let [members_cap, side_cap] = caps;
                    let members_later = members_cap.delayed(&(time + 1));
                    drop(members_cap);
                    let mut taken = std::mem::replace(&mut state, Users::new(&config, partition));
                    let stats = stats.clone();
                    let returned = returned.clone();
                    let work = move || {
                        let began = std::time::Instant::now();
                        let (mut members, mut side) = (Vec::new(), Vec::new());
                        taken.apply(time, &control, &sigs, &mut members, &mut side);
                        debug_assert!(members.is_empty(), "a time without user records changed memberships");
                        let new_expiries = taken.take_new_expiries();
                        stats.busy(Stage::Users, began);
                        (taken, time, members, side, new_expiries)
                    };
                    let done = move || {
                        let _ = returned.activate();
                    };
                    away = Some(Away {
                        job: Background::start("tidal-users-apply", work, done),
                        members: members_later,
                        side: side_cap,
                    });
                    break;
                }
                let mut members = Vec::new();
                let mut side = Vec::new();
                state.apply(time, &control, &sigs, &mut members, &mut side);
                if !members.is_empty() {
                    member_out.activate().give(&caps[0], &mut members);
                }
                if !side.is_empty() {
                    side_out.activate().give(&caps[1], &mut side);
                }
                for at in state.take_new_expiries() {
                    if at > time {
                        expiries
                            .entry(at)
                            .or_insert_with(|| [caps[0].delayed(&at), caps[1].delayed(&at)]);
                    }
                }
            }
            if away.is_none() {
                StateStats::set(&stats.users, state.slots.len());
            }
            stats.busy(Stage::Users, started);
        }
    });
    UserOutputs {
        memberships: memberships.as_collection(),
        side,
    }
}

/// Signals at one time from which it is applied on a thread of its own, beside the worker.
/// Debug builds (the tests) take that path from a few dozen, so that both paths are checked.
const AWAY_AT: usize = if cfg!(debug_assertions) { 48 } else { 1 << 16 };

/// A time applied away from the worker: the state, the time, its membership changes (none),
/// its views and the bucket and epoch ends it added come back.
type AwayResult = (Users, Time, Vec<MemberUpdate>, Vec<SideUpdate>, Vec<Time>);

/// The state away applying one time, with the capabilities to emit what comes back: the
/// views at that time; the memberships' only one time later (there are none at that time,
/// so the cohort rollups need not wait), to make the capabilities of the bucket ends.
struct Away {
    job: Background<AwayResult>,
    members: Capability<Time>,
    side: Capability<Time>,
}

/// Whether a time's control messages hold a record that can change memberships: a user's
/// attributes put or deleted, a cohort declared or dropped.
fn changes_memberships(control: &[Control]) -> bool {
    control.iter().any(|msg| match msg {
        Control::Run(run) => run.batches.iter().any(|batch| {
            batch.records.iter().any(|logged| {
                matches!(
                    logged.record,
                    Record::UserPut { .. }
                        | Record::UserDelete { .. }
                        | Record::CohortPut { .. }
                        | Record::CohortDelete { .. }
                )
            })
        }),
        _ => false,
    })
}

/// A time's inputs, held until it is complete.
struct Held {
    caps: [Capability<Time>; 2],
    control: Vec<Control>,
    sigs: Vec<UserSig>,
}

impl Held {
    fn new(caps: [Capability<Time>; 2]) -> Held {
        Held {
            caps,
            control: Vec::new(),
            sigs: Vec::new(),
        }
    }
}

/// A restored users part decoded: the state, with its users' views and memberships (at
/// time 0).
fn restored(config: &Config, partition: Partition, bytes: &[u8]) -> (Users, Vec<SideUpdate>, Vec<MemberUpdate>) {
    let mut state = Users::new(config, partition);
    if let Err(e) = state.load(bytes) {
        // A checked checkpoint (checksum, format version) does not fail to decode; were it
        // to, the state would be wrong: stop here rather than serve it.
        panic!(
            "checkpoint part users of worker {} does not decode: {e}",
            partition.index
        );
    }
    let mut views = Vec::with_capacity(state.slots.len());
    let mut members = Vec::new();
    for (key, slot) in state.slots.iter() {
        views.push(SideUpdate::User(*key, Some(Arc::new(state.view(slot)))));
        for c in &slot.cohorts {
            members.push(((*key, *c), 0, 1));
        }
    }
    // In key order for the memberships' batcher, which then lays its chunks end to end
    // rather than merging them (the slots' table is a hash table).
    members.sort_unstable();
    (state, views, members)
}
