//! The users materializer's state at one worker: per user its attributes, cohort
//! memberships, marks (seen / liked / hidden by bucket), edges, affinity sums and preference
//! pulls, and how one complete time of records and signals changes it.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use foldhash::fast::RandomState;

use tidal_core::config::{Config, Mark};
use tidal_core::features::{decay_fixed, epoch_expiry, epoch_of, weight_float};
use tidal_core::flow::{CohortId, Control, Partition, UserKey, UserSig, cohort_named, cohort_value, id_hash};
use tidal_core::record::{Record, RelKind};
use tidal_core::time::{Time, clock_of, time_at};
use tidal_core::user::{Attributes, CohortDefs, CohortRule, Edges, Pull, SideUpdate, UserView, attribute, matches};

use super::MemberUpdate;
use crate::cow::CowMap;

/// The users a time changed, in the order they were changed, repeats and all: sorted and
/// deduplicated once at the time's end (a hash set of them cost a cache miss per signal).
pub(super) type Touched = Vec<UserKey>;

/// Users looked up ahead of their work at a time (see [`Users::touch`]).
const AHEAD: usize = 32;

/// Buckets per state horizon.
const STATE_BUCKETS: u64 = 90;

/// The three user-state sets, in [`UserView`] field order.
const SETS: [Mark; 3] = [Mark::Seen, Mark::Liked, Mark::Hidden];
/// Distinct attribute sets shared among users, at most.
pub(super) const SHARED_SETS: usize = 1 << 16;
// A view's mark bits are the slot's: bit `i` is `SETS[i]`.
const _: () = assert!(tidal_core::user::SEEN == 1 && tidal_core::user::LIKED == 2 && tidal_core::user::HIDDEN == 4);

/// One user's state at its owner.
#[derive(Clone)]
pub(super) struct Slot {
    pub(super) attributes: Option<Attributes>,
    /// `(bucket start, item key, sets)`: the item is in the sets (bit `i` = `SETS[i]`) from a
    /// signal in that bucket. Appended as signals come; sorted and merged when published.
    pub(super) marks: Vec<(u64, u32, u8)>,
    pub(super) edges: Option<Arc<Edges>>,
    /// `(creator owner hash, epoch, anchored sum)`, sorted.
    pub(super) affinity: Vec<(u64, u64, i128)>,
    /// The cohorts the user belongs to, sorted.
    pub(super) cohorts: Vec<CohortId>,
    /// Pulls on the preference vector within the horizon, in log order.
    pub(super) pulls: Vec<Pull>,
    /// The mark bucket and the affinity epoch whose users' lists ([`Users::by_bucket`],
    /// [`Users::by_epoch`]) this user was last added to, while they last ([`NONE`] once
    /// they end): a user's signals mostly fall in one bucket and epoch, and are added once.
    pub(super) listed: [u64; 2],
}

/// No bucket or epoch (in [`Slot::listed`]).
pub(super) const NONE: u64 = u64::MAX;

impl Default for Slot {
    fn default() -> Slot {
        Slot {
            attributes: None,
            marks: Vec::new(),
            edges: None,
            affinity: Vec::new(),
            cohorts: Vec::new(),
            pulls: Vec::new(),
            listed: [NONE; 2],
        }
    }
}

impl Slot {
    /// A word of the slot and of each of its lists, read so that their cache misses overlap
    /// with other users' (see `batches`).
    pub(super) fn touch(&self) -> u64 {
        self.marks
            .first()
            .map_or(0, |m| m.0)
            .wrapping_add(self.pulls.first().map_or(0, |p| p.ts))
            .wrapping_add(self.affinity.first().map_or(0, |a| a.1))
    }

    pub(super) fn is_empty(&self) -> bool {
        self.attributes.is_none()
            && self.marks.is_empty()
            && self.edges.is_none()
            && self.affinity.is_empty()
            && self.pulls.is_empty()
    }
}

/// The users one worker owns.
pub(super) struct Users {
    pub(super) partition: Partition,
    pub(super) dims: Vec<String>,
    pub(super) defs: CohortDefs,
    /// Per signal type: which sets it marks (bit `i` = `SETS[i]`) and its relationship delta.
    pub(super) marks: Vec<u8>,
    pub(super) deltas: Vec<f64>,
    /// Per signal type, its preference polarity.
    pub(super) polarity: Vec<f64>,
    /// How long a signal pulls on its user's preference vector.
    pub(super) pull_horizon: u64,
    pub(super) horizon: u64,
    pub(super) g: u64,
    pub(super) aff_h: u64,
    /// Behind an `Arc`: a table of a million users sits at half load after it grows, and
    /// 120-byte slots inline made that half 130 MB of empty buckets; and a checkpoint takes
    /// the table as it is (a reference per shard, [`CowMap`]), to be encoded off the worker,
    /// while a shard it holds is copied before a change, and a slot it holds too
    /// ([`Arc::make_mut`]).
    pub(super) slots: CowMap<UserKey, Arc<Slot>>,
    /// Attribute names and values, shared among users.
    pub(super) strings: HashSet<Arc<str>, RandomState>,
    /// Whole attribute sets, shared among users (a million users with three dimensions have
    /// a few hundred distinct sets; each its own copy was ~110 MB). At most
    /// [`SHARED_SETS`] are kept; past that, a set is the user's own.
    pub(super) sets: HashSet<Attributes, RandomState>,
    /// Per bucket start, the users with marks in it (a user may be listed more than once:
    /// appended, not looked up in a set, a cache miss per signal).
    pub(super) by_bucket: BTreeMap<u64, Vec<UserKey>>,
    /// Per affinity epoch, the users with a sum in it (dropped whole at its expiry, when its
    /// weight is below 2^-64, as the decay materializer drops its epochs), listed the same way.
    pub(super) by_epoch: BTreeMap<u64, Vec<UserKey>>,
    /// Times at which buckets or epochs that appeared since the last `take_new_expiries` end.
    pub(super) new_expiries: Vec<Time>,
    /// Item keys beyond 32 bits seen (not marked in the user sets).
    pub(super) wide_keys: bool,
}

impl Users {
    pub(super) fn new(config: &Config, partition: Partition) -> Users {
        let horizon = config.personalization.state_horizon.ms();
        Users {
            partition,
            dims: config.cohort_dimensions.clone(),
            defs: config
                .cohorts
                .iter()
                .map(|c| (c.name.clone(), c.where_.clone()))
                .collect(),
            marks: config
                .signals
                .iter()
                .map(|s| {
                    SETS.iter()
                        .enumerate()
                        .filter(|(_, m)| s.marks.contains(m))
                        .fold(0u8, |acc, (i, _)| acc | 1 << i)
                })
                .collect(),
            deltas: config.signals.iter().map(|s| s.relationship_delta).collect(),
            polarity: config.signals.iter().map(|s| s.polarity).collect(),
            pull_horizon: config.personalization.horizon.ms(),
            horizon,
            g: (horizon / STATE_BUCKETS).max(1000),
            aff_h: config.personalization.affinity_half_life.ms(),
            slots: CowMap::new(),
            strings: HashSet::default(),
            sets: HashSet::default(),
            by_bucket: BTreeMap::new(),
            by_epoch: BTreeMap::new(),
            new_expiries: Vec::new(),
            wide_keys: false,
        }
    }

    /// The shared copy of `s`.
    pub(super) fn intern(&mut self, s: &str) -> Arc<str> {
        match self.strings.get(s) {
            Some(a) => a.clone(),
            None => {
                let a: Arc<str> = Arc::from(s);
                self.strings.insert(a.clone());
                a
            }
        }
    }

    /// The shared copy of the attribute set `attrs`.
    pub(super) fn intern_set(&mut self, attrs: Vec<(Arc<str>, Arc<str>)>) -> Attributes {
        if let Some(a) = self.sets.get(attrs.as_slice()) {
            return a.clone();
        }
        let a: Attributes = attrs.into();
        if self.sets.len() < SHARED_SETS {
            self.sets.insert(a.clone());
        }
        a
    }

    /// The cohorts a user with `attributes` belongs to, sorted.
    pub(super) fn cohorts_of(&self, attributes: Option<&[(Arc<str>, Arc<str>)]>) -> Vec<CohortId> {
        if attributes.is_none() {
            return Vec::new();
        }
        let mut out: Vec<CohortId> = self
            .dims
            .iter()
            .filter_map(|d| attribute(attributes, d).map(|v| cohort_value(d, v)))
            .chain(
                self.defs
                    .iter()
                    .filter(|(_, rule)| matches(attributes, rule))
                    .map(|(name, _)| cohort_named(name)),
            )
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// The serving view of a user.
    pub(super) fn view(&self, slot: &Slot) -> UserView {
        // Bit `i` of a slot's sets is `SETS[i]`: seen, liked, hidden, as in the view.
        let marks = slot.marks.iter().map(|&(_, item, m)| (item, m)).collect();
        UserView {
            attributes: slot.attributes.clone(),
            marks: UserView::marks_of(marks),
            edges: slot.edges.clone(),
            affinity: Arc::from(slot.affinity.as_slice()),
            pulls: Arc::from(slot.pulls.as_slice()),
        }
    }

    /// Applies one complete time: its records and signals in log order, then the buckets and
    /// epochs that end at it.
    pub(super) fn apply(
        &mut self,
        time: Time,
        control: &[Control],
        sigs: &[UserSig],
        members: &mut Vec<MemberUpdate>,
        side: &mut Vec<SideUpdate>,
    ) {
        let mut touched = Touched::new();
        let clock = clock_of(time);
        // Records and signals in log order (a catch-up gives several batches one time).
        let mut records: Vec<(u64, &Record)> = Vec::new();
        for msg in control {
            if let Control::Run(run) = msg {
                for batch in &run.batches {
                    for logged in &batch.records {
                        if !matches!(logged.record, Record::Signals(_)) {
                            records.push((logged.lsn, &logged.record));
                        }
                    }
                }
            }
        }
        records.sort_by_key(|r| r.0);
        let mut sigs: Vec<&UserSig> = sigs.iter().collect();
        sigs.sort_by_key(|s| s.lsn);
        let (mut r, mut s) = (0, 0);
        while r < records.len() || s < sigs.len() {
            if s < sigs.len() && (r == records.len() || sigs[s].lsn < records[r].0) {
                if s % AHEAD == 0 {
                    self.touch(sigs[s..].iter().take(AHEAD).map(|sig| sig.user));
                }
                self.signal(sigs[s], clock, &mut touched);
                s += 1;
            } else {
                self.record(records[r].1, time, members, side, &mut touched);
                r += 1;
            }
        }
        // Buckets ending at or before this time's clock are dropped.
        while let Some((&b, _)) = self.by_bucket.first_key_value() {
            if time_at(b.saturating_add(self.horizon)) > time {
                break;
            }
            for key in self.by_bucket.pop_first().map(|(_, u)| u).unwrap_or_default() {
                if let Some(slot) = self.slots.get_mut(&key) {
                    let slot = Arc::make_mut(slot);
                    slot.marks.retain(|m| m.0 != b);
                    if slot.listed[0] == b {
                        slot.listed[0] = NONE;
                    }
                    touched.push(key);
                }
            }
        }
        // So are the affinity epochs that expire by then.
        while let Some((&e, _)) = self.by_epoch.first_key_value() {
            if time_at(epoch_expiry(e, self.aff_h)) > time {
                break;
            }
            for key in self.by_epoch.pop_first().map(|(_, u)| u).unwrap_or_default() {
                if let Some(slot) = self.slots.get_mut(&key) {
                    let slot = Arc::make_mut(slot);
                    slot.affinity.retain(|a| a.1 != e);
                    if slot.listed[1] == e {
                        slot.listed[1] = NONE;
                    }
                    touched.push(key);
                }
            }
        }
        touched.sort_unstable();
        touched.dedup();
        for (i, &key) in touched.iter().enumerate() {
            if i % AHEAD == 0 {
                self.touch(touched[i..].iter().take(AHEAD).copied());
            }
            let Some(slot) = self.slots.get_mut(&key) else {
                side.push(SideUpdate::User(key, None));
                continue;
            };
            let slot = Arc::make_mut(slot);
            // Marks sorted, one per (bucket, item), sets merged.
            slot.marks.sort_unstable();
            slot.marks.dedup_by(|next, kept| {
                let same = (next.0, next.1) == (kept.0, kept.1);
                if same {
                    kept.2 |= next.2;
                }
                same
            });
            slot.affinity.retain(|a| a.2 != 0);
            let horizon = self.pull_horizon;
            slot.pulls.retain(|p| p.ts.saturating_add(horizon) > clock);
            if slot.is_empty() {
                self.slots.remove(&key);
                side.push(SideUpdate::User(key, None));
            } else if let Some(slot) = self.slots.get(&key) {
                side.push(SideUpdate::User(key, Some(Arc::new(self.view(slot)))));
            }
        }
    }

    pub(super) fn record(
        &mut self,
        record: &Record,
        time: Time,
        members: &mut Vec<MemberUpdate>,
        side: &mut Vec<SideUpdate>,
        touched: &mut Touched,
    ) {
        match record {
            Record::UserPut { id, attributes } if self.partition.owns(id) => {
                let key = id_hash(id);
                let attrs = attributes
                    .iter()
                    .map(|(k, v)| (self.intern(k), self.intern(v)))
                    .collect::<Vec<_>>();
                let attrs = self.intern_set(attrs);
                Arc::make_mut(self.slots.get_or_insert_with(key, Default::default)).attributes = Some(attrs);
                self.recompute(key, time, members);
                touched.push(key);
            }
            Record::UserDelete { id } if self.partition.owns(id) => {
                let key = id_hash(id);
                if let Some(slot) = self.slots.remove(&key) {
                    for &c in &slot.cohorts {
                        members.push(((key, c), time, -1));
                    }
                    touched.push(key);
                }
            }
            Record::Relationship {
                user,
                creator,
                kind,
                active,
            } if self.partition.owns(user) => {
                let key = id_hash(user);
                let slot = Arc::make_mut(self.slots.get_or_insert_with(key, Default::default));
                let edges = Arc::make_mut(slot.edges.get_or_insert_with(Default::default));
                let set = match kind {
                    RelKind::Follow => &mut edges.follows,
                    RelKind::Block => &mut edges.blocks,
                };
                if *active {
                    set.insert(creator.clone());
                } else {
                    set.remove(creator);
                }
                if edges.follows.is_empty() && edges.blocks.is_empty() {
                    slot.edges = None;
                }
                touched.push(key);
            }
            Record::CohortPut { name, rule } => {
                self.defs.insert(name.clone(), rule.clone());
                self.redefine(name, Some(rule), time, members, side);
            }
            Record::CohortDelete { name } if self.defs.remove(name).is_some() => {
                self.redefine(name, None, time, members, side);
            }
            _ => {}
        }
    }

    /// Declared cohort `name` is now `rule` (`None`: dropped): every user's membership of it
    /// alone is checked (a broad cohort declared over a million users is one rule match
    /// each, not their every membership again).
    pub(super) fn redefine(
        &mut self,
        name: &str,
        rule: Option<&CohortRule>,
        time: Time,
        members: &mut Vec<MemberUpdate>,
        side: &mut Vec<SideUpdate>,
    ) {
        side.push(SideUpdate::Cohorts(Arc::new(self.defs.clone())));
        // Its id differs from every dimension value's ("#name" and "dimension:value" hash
        // apart), so no other membership moves.
        let id = cohort_named(name);
        for (key, slot) in self.slots.iter_mut() {
            let is = rule.is_some_and(|r| matches(slot.attributes.as_deref(), r));
            match (slot.cohorts.binary_search(&id), is) {
                (Err(at), true) => {
                    Arc::make_mut(slot).cohorts.insert(at, id);
                    members.push(((*key, id), time, 1));
                }
                (Ok(at), false) => {
                    Arc::make_mut(slot).cohorts.remove(at);
                    members.push(((*key, id), time, -1));
                }
                _ => {}
            }
        }
    }

    /// Recomputes one user's memberships, emitting the difference.
    pub(super) fn recompute(&mut self, key: UserKey, time: Time, members: &mut Vec<MemberUpdate>) {
        let Some(slot) = self.slots.get(&key) else { return };
        let now = self.cohorts_of(slot.attributes.as_deref());
        if now == slot.cohorts {
            return;
        }
        for c in &slot.cohorts {
            if now.binary_search(c).is_err() {
                members.push(((key, *c), time, -1));
            }
        }
        for c in &now {
            if slot.cohorts.binary_search(c).is_err() {
                members.push(((key, *c), time, 1));
            }
        }
        if let Some(slot) = self.slots.get_mut(&key) {
            Arc::make_mut(slot).cohorts = now;
        }
    }

    /// Reads a word of each of `keys`' slots and of their lists, so that the cache misses of
    /// a batch of users overlap (plain loads that do not wait on one another; see
    /// `batches`), before the work on each user finds them in the cache. One user after the
    /// other, each lookup into a million slots waited for its own misses.
    fn touch(&self, keys: impl Iterator<Item = UserKey>) {
        let sum = keys.fold(0u64, |n, key| {
            n.wrapping_add(self.slots.get(&key).map_or(0, |s| s.touch()))
        });
        std::hint::black_box(sum);
    }

    pub(super) fn signal(&mut self, sig: &UserSig, clock: u64, touched: &mut Touched) {
        let k = usize::from(sig.kind);
        let marks = self.marks.get(k).copied().unwrap_or(0);
        let delta = self.deltas.get(k).copied().unwrap_or(0.0);
        let bucket = (sig.ts_eff / self.g) * self.g;
        let item = match u32::try_from(sig.item) {
            Ok(i) => Some(i),
            Err(_) => {
                if !self.wide_keys {
                    self.wide_keys = true;
                    tracing::warn!("item keys beyond 2^32: such items are not kept in users' seen sets");
                }
                None
            }
        };
        let marks_live = marks != 0 && item.is_some() && bucket.saturating_add(self.horizon) > clock;
        let affects = sig.creator != 0 && delta != 0.0 && sig.weight != 0;
        let pull = self.polarity.get(k).copied().unwrap_or(0.0) * weight_float(sig.weight);
        let pulls = pull != 0.0 && item.is_some() && sig.ts_eff.saturating_add(self.pull_horizon) > clock;
        if !marks_live && !affects && !pulls {
            return;
        }
        let slot = Arc::make_mut(self.slots.get_or_insert_with(sig.user, Default::default));
        if let (true, Some(item)) = (marks_live, item) {
            slot.marks.push((bucket, item, marks));
        }
        if let (true, Some(item)) = (pulls, item) {
            slot.pulls.push(Pull {
                ts: sig.ts_eff,
                item,
                pull,
            });
        }
        if (marks_live || pulls) && item.is_some() {
            // The bucket's end drops its marks; past the (shorter) preference horizon it also
            // touches the user, which drops the pull even when no later signal does.
            let h = self.horizon;
            let new = &mut self.new_expiries;
            let users = self.by_bucket.entry(bucket).or_insert_with(|| {
                new.push(time_at(bucket.saturating_add(h)));
                Vec::new()
            });
            if slot.listed[0] != bucket {
                users.push(sig.user);
                slot.listed[0] = bucket;
            }
        }
        if affects {
            let e = epoch_of(sig.ts_eff, self.aff_h);
            let v = decay_fixed(delta * weight_float(sig.weight), sig.ts_eff, e, self.aff_h);
            match slot.affinity.binary_search_by(|a| (a.0, a.1).cmp(&(sig.creator, e))) {
                Ok(i) => slot.affinity[i].2 = slot.affinity[i].2.wrapping_add(v),
                Err(i) => slot.affinity.insert(i, (sig.creator, e, v)),
            }
            let aff_h = self.aff_h;
            let new = &mut self.new_expiries;
            let users = self.by_epoch.entry(e).or_insert_with(|| {
                new.push(time_at(epoch_expiry(e, aff_h)));
                Vec::new()
            });
            if slot.listed[1] != e {
                users.push(sig.user);
                slot.listed[1] = e;
            }
        }
        touched.push(sig.user);
    }

    /// The times at which buckets and epochs that appeared since the last call end.
    pub(super) fn take_new_expiries(&mut self) -> Vec<Time> {
        std::mem::take(&mut self.new_expiries)
    }

    /// The times at which every bucket and epoch held ends (after a restore).
    pub(super) fn bucket_expiries(&self) -> Vec<Time> {
        let buckets = self.by_bucket.keys().map(|b| time_at(b.saturating_add(self.horizon)));
        let epochs = self.by_epoch.keys().map(|e| time_at(epoch_expiry(*e, self.aff_h)));
        buckets.chain(epochs).collect()
    }
}

#[cfg(test)]
pub(super) mod tests {
    use tidal_core::Dur;
    use tidal_core::config::Config;
    use tidal_core::flow::{Partition, UserSig};
    use tidal_core::time::time_at;
    use tidal_core::user::SideUpdate;

    use super::Users;

    /// A bucket start: buckets are 10 s at a 900 s horizon.
    const C0: u64 = 1_700_000_000_000;
    const B1: u64 = C0 + 10_000;
    const HORIZON: u64 = 900_000;

    /// A signal of the first type (a view: marks seen) with no creator.
    pub(in crate::users) fn sig(user: u64, item: u64, ts: u64, lsn: u64) -> UserSig {
        UserSig {
            user,
            item,
            kind: 0,
            ts_eff: ts,
            weight: 1 << 32,
            creator: 0,
            lsn,
        }
    }

    /// Applies `sigs` at clock `clock`, returning the side updates.
    fn at(users: &mut Users, clock: u64, sigs: &[UserSig]) -> Vec<SideUpdate> {
        let (mut members, mut side) = (Vec::new(), Vec::new());
        users.apply(time_at(clock), &[], sigs, &mut members, &mut side);
        side
    }

    fn marks(users: &Users, user: u64) -> Vec<(u64, u32, u8)> {
        users.slots.get(&user).map(|s| s.marks.clone()).unwrap_or_default()
    }

    /// A user's marks leave with their bucket however its signals came (several in one
    /// bucket, another bucket between, a late one back in the first), the users' lists name
    /// each of its users, and a slot left empty is forgotten.
    #[test]
    fn marks_leave_with_their_bucket_however_the_signals_came() {
        let mut config = Config::default_filled();
        config.personalization.state_horizon = Dur(HORIZON);
        config.personalization.horizon = Dur(600_000);
        let mut users = Users::new(&config, Partition::new(0, 1));
        let seen = 1u8;
        at(
            &mut users,
            C0 + 25_000,
            &[
                sig(1, 10, C0 + 1_000, 1),
                sig(1, 11, B1 + 5_000, 2),
                sig(1, 12, C0 + 2_000, 3),
                sig(2, 10, C0 + 3_000, 4),
                sig(1, 10, C0 + 4_000, 5),
            ],
        );
        assert_eq!(marks(&users, 1), vec![(C0, 10, seen), (C0, 12, seen), (B1, 11, seen)]);
        let listed = |users: &Users, b: u64| {
            let mut v = users.by_bucket.get(&b).cloned().unwrap_or_default();
            v.sort_unstable();
            v.dedup();
            v
        };
        assert_eq!(listed(&users, C0), vec![1, 2]);
        assert_eq!(listed(&users, B1), vec![1]);
        // A user's signals in one bucket list it there once.
        assert_eq!(users.by_bucket[&B1].len(), 1);

        // The first bucket ends (its pulls, 600 s long, ended before it): user 2 is empty.
        let side = at(&mut users, C0 + HORIZON, &[]);
        assert_eq!(marks(&users, 1), vec![(B1, 11, seen)]);
        assert!(!users.slots.contains_key(&2));
        assert!(side.iter().any(|u| matches!(u, SideUpdate::User(2, None))));
        assert!(!users.by_bucket.contains_key(&C0));

        // A late signal in the bucket still open (the user was listed in the first one
        // last, so it is listed in this one again: twice, which its end reads as once).
        at(&mut users, C0 + HORIZON + 5_000, &[sig(1, 13, B1 + 6_000, 6)]);
        assert_eq!(marks(&users, 1), vec![(B1, 11, seen), (B1, 13, seen)]);
        assert_eq!(users.by_bucket[&B1], vec![1, 1]);

        // Its end leaves nothing of user 1.
        let side = at(&mut users, B1 + HORIZON, &[]);
        assert!(!users.slots.contains_key(&1));
        assert!(side.iter().any(|u| matches!(u, SideUpdate::User(1, None))));
        assert!(users.by_bucket.is_empty());

        // A user back in a bucket whose list ended is listed again.
        at(&mut users, B1 + HORIZON + 1_000, &[sig(1, 14, B1 + HORIZON, 7)]);
        let b = (B1 + HORIZON) / 10_000 * 10_000;
        assert_eq!(listed(&users, b), vec![1]);
    }
}
