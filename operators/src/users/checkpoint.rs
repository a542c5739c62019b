//! The users materializer's checkpoint part: the declared cohorts and every user's state,
//! written at a checkpoint's frontier and read back at start.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use tidal_core::codec::{Cursor, DecodeError, put_str, put_u64, put_varint, put_zigzag, put_zigzag128};
use tidal_core::flow::{CohortId, UserKey};
use tidal_core::user::{Attributes, CohortDefs, Edges, Pull};

use super::state::{SHARED_SETS, Slot, Users};
use crate::batches::touched_in_batches;
use crate::cow::Shards;
use crate::dense::SPILL;

/// What a checkpoint keeps of the users' state: the declared cohorts and the users' table
/// as it is (a reference per shard, taken on the worker in microseconds), encoded on the
/// checkpoint writer's thread ([`UsersSnapshot::save`]). A shard, or a slot, the worker
/// changes meanwhile is copied for it first, so the snapshot stays as of its frontier.
pub(super) struct UsersSnapshot {
    defs: CohortDefs,
    slots: Shards<(UserKey, Arc<Slot>)>,
}

impl Users {
    /// The state as it is now, for a checkpoint part.
    pub(super) fn snapshot(&self) -> UsersSnapshot {
        UsersSnapshot {
            defs: self.defs.clone(),
            slots: self.slots.snapshot(),
        }
    }
}

impl UsersSnapshot {
    /// Writes the declared cohorts and every user's state (a checkpoint) to `w`, through a
    /// buffer of [`SPILL`] bytes (the part is never held whole in memory: a million users
    /// make hundreds of megabytes). Each shard is let go once written, so the worker need
    /// not copy it, or its slots, to change them after that.
    ///
    /// Compact: counts, item keys and epochs are varints, a user's mark buckets and pull
    /// times are deltas from the one before, and an attribute set shared among users is
    /// written once, then named by its index (tag 1: a set follows; tag 2: the index of one
    /// written before; tag 0: none).
    pub(super) fn save(self, w: &mut dyn std::io::Write) -> std::io::Result<()> {
        let mut buf = Vec::with_capacity(SPILL + 4096);
        let out = &mut buf;
        put_varint(out, self.defs.len() as u64);
        for (name, rule) in &self.defs {
            put_str(out, name);
            put_varint(out, rule.len() as u64);
            for (k, v) in rule {
                put_str(out, k);
                put_str(out, v);
            }
        }
        // Sets written so far, by address: the same `Arc` is the same set (each one kept
        // alive here, so that its address is not taken by another while the part is made).
        let mut written: HashMap<usize, (u64, Attributes)> = HashMap::new();
        put_varint(out, self.slots.iter().map(|s| s.len()).sum::<usize>() as u64);
        // Users a batch at a time (see `batches`): each one's slot and lists touched first,
        // then encoded from the cache. One after the other, the misses made the part. Each
        // shard is let go once written.
        let touch = |(_, s): &&(UserKey, Arc<Slot>)| s.touch();
        for shard in self.slots {
            touched_in_batches(shard.iter(), touch, |batch| {
                for (key, slot) in batch.iter() {
                    encode_user(out, &mut written, *key, slot);
                }
                if out.len() >= SPILL {
                    w.write_all(out)?;
                    out.clear();
                }
                Ok::<(), std::io::Error>(())
            })?;
        }
        w.write_all(out)
    }
}

impl Users {
    /// Reads back what [`save`](Self::save) wrote.
    pub(super) fn load(&mut self, bytes: &[u8]) -> Result<(), DecodeError> {
        let mut c = Cursor::new(bytes);
        self.defs.clear();
        for _ in 0..c.varint("cohorts")? {
            let name = c.string("cohort name")?;
            let mut rule = BTreeMap::new();
            for _ in 0..c.varint("rule size")? {
                let k = c.string("dimension")?;
                rule.insert(k, c.string("value")?);
            }
            self.defs.insert(name, rule);
        }
        let users = c.varint("users")?;
        // Room for them at once (a million users rehashed step by step cost a second of a
        // start), bounded by what the bytes can hold (a user takes at least 14 of them).
        self.slots.reserve(c.room_for(users, 14));
        // The sets in the order they were first written, each with its cohorts.
        let mut sets: Vec<(Attributes, Vec<CohortId>)> = Vec::new();
        let mut epochs: Vec<u64> = Vec::new();
        for _ in 0..users {
            let key = c.u64("user key")?;
            let mut slot = Slot::default();
            match c.u8("attributes")? {
                0 => {}
                1 => {
                    let mut attrs = Vec::new();
                    for _ in 0..c.varint("attribute count")? {
                        let k = c.string("attribute name")?;
                        let v = c.string("attribute value")?;
                        attrs.push((self.intern(&k), self.intern(&v)));
                    }
                    let set = self.intern_set(attrs);
                    slot.cohorts = self.cohorts_of(Some(&set));
                    if sets.len() < SHARED_SETS {
                        sets.push((set.clone(), slot.cohorts.clone()));
                    }
                    slot.attributes = Some(set);
                }
                2 => {
                    let i = c.varint("attribute set")?;
                    let (set, cohorts) =
                        usize::try_from(i)
                            .ok()
                            .and_then(|i| sets.get(i))
                            .ok_or(DecodeError::OutOfRange {
                                what: "attribute set",
                                value: i,
                            })?;
                    slot.attributes = Some(set.clone());
                    slot.cohorts = cohorts.clone();
                }
                tag => {
                    return Err(DecodeError::OutOfRange {
                        what: "attributes",
                        value: u64::from(tag),
                    });
                }
            }
            // Each list sized once from its count (an entry takes at least three bytes), not
            // grown by doubling.
            let n = c.varint("marks")?;
            slot.marks.reserve_exact(c.room_for(n, 3));
            let mut last = 0u64;
            for _ in 0..n {
                let b = last.wrapping_add(c.zigzag("bucket")? as u64);
                last = b;
                let item = c.varint("item")?;
                let item = u32::try_from(item).map_err(|_| DecodeError::OutOfRange {
                    what: "item",
                    value: item,
                })?;
                slot.marks.push((b, item, c.u8("sets")?));
                // A user's marks are sorted by bucket: each bucket lists it once.
                if slot.listed[0] != b {
                    self.by_bucket.entry(b).or_default().push(key);
                    slot.listed[0] = b;
                }
            }
            let mut edges = Edges::default();
            for set in [&mut edges.follows, &mut edges.blocks] {
                for _ in 0..c.varint("edges")? {
                    set.insert(c.string("creator")?);
                }
            }
            if !edges.follows.is_empty() || !edges.blocks.is_empty() {
                slot.edges = Some(Arc::new(edges));
            }
            let n = c.varint("affinities")?;
            slot.affinity.reserve_exact(c.room_for(n, 10));
            for _ in 0..n {
                let creator = c.u64("creator")?;
                let e = c.varint("epoch")?;
                slot.affinity.push((creator, e, c.zigzag128("affinity")?));
                epochs.push(e);
            }
            // Sorted by creator first: each epoch listed once, the newest last.
            epochs.sort_unstable();
            epochs.dedup();
            for &e in &epochs {
                self.by_epoch.entry(e).or_default().push(key);
                slot.listed[1] = e;
            }
            epochs.clear();
            let n = c.varint("pulls")?;
            slot.pulls.reserve_exact(c.room_for(n, 10));
            let mut last = 0u64;
            for _ in 0..n {
                let ts = last.wrapping_add(c.zigzag("pull time")? as u64);
                last = ts;
                let item = c.varint("pull item")?;
                let item = u32::try_from(item).map_err(|_| DecodeError::OutOfRange {
                    what: "pull item",
                    value: item,
                })?;
                let pull = f64::from_bits(c.u64("pull")?);
                slot.pulls.push(Pull { ts, item, pull });
            }
            self.slots.insert(key, Arc::new(slot));
        }
        c.finish()
    }
}

/// Appends one user's state (see [`UsersSnapshot::save`]); `written` holds the attribute sets
/// written so far, by address.
fn encode_user(out: &mut Vec<u8>, written: &mut HashMap<usize, (u64, Attributes)>, key: UserKey, slot: &Slot) {
    put_u64(out, key);
    match &slot.attributes {
        Some(a) => {
            let at = Arc::as_ptr(a).cast::<u8>() as usize;
            if let Some(&(i, _)) = written.get(&at) {
                out.push(2);
                put_varint(out, i);
            } else {
                out.push(1);
                put_varint(out, a.len() as u64);
                for (k, v) in a.iter() {
                    put_str(out, k);
                    put_str(out, v);
                }
                if written.len() < SHARED_SETS {
                    written.insert(at, (written.len() as u64, a.clone()));
                }
            }
        }
        None => out.push(0),
    }
    put_varint(out, slot.marks.len() as u64);
    let mut last = 0u64;
    for (b, item, m) in &slot.marks {
        put_zigzag(out, b.wrapping_sub(last) as i64);
        last = *b;
        put_varint(out, u64::from(*item));
        out.push(*m);
    }
    match slot.edges.as_deref() {
        Some(edges) => {
            for set in [&edges.follows, &edges.blocks] {
                put_varint(out, set.len() as u64);
                for c in set {
                    put_str(out, c);
                }
            }
        }
        None => {
            put_varint(out, 0);
            put_varint(out, 0);
        }
    }
    put_varint(out, slot.affinity.len() as u64);
    for (c, e, v) in &slot.affinity {
        put_u64(out, *c);
        put_varint(out, *e);
        put_zigzag128(out, *v);
    }
    put_varint(out, slot.pulls.len() as u64);
    let mut last = 0u64;
    for p in &slot.pulls {
        put_zigzag(out, p.ts.wrapping_sub(last) as i64);
        last = p.ts;
        put_varint(out, u64::from(p.item));
        put_u64(out, p.pull.to_bits());
    }
}

#[cfg(test)]
mod tests {
    use tidal_core::config::Config;
    use tidal_core::flow::Partition;

    use super::super::state::tests::sig;
    use super::super::state::{Touched, Users};

    fn encoded(users: &Users) -> Vec<u8> {
        let mut out = Vec::new();
        users.snapshot().save(&mut out).expect("save");
        out
    }

    /// A checkpoint's snapshot is encoded after the worker went on changing its users: it
    /// still writes them as they were when it was taken.
    #[test]
    fn a_snapshot_writes_the_users_as_they_were_when_taken() {
        let config = Config::default_filled();
        let mut users = Users::new(&config, Partition::new(0, 1));
        let mut touched = Touched::new();
        let clock = 1_700_000_000_000;
        for i in 0..300 {
            users.signal(&sig(i % 20, i, clock + i, clock + i), clock + i, &mut touched);
        }
        let before = encoded(&users);
        let snapshot = users.snapshot();
        // The same users and new ones change after it.
        for i in 0..300 {
            users.signal(
                &sig(i % 40, 1000 + i, clock + 500 + i, clock + 500 + i),
                clock + 500 + i,
                &mut touched,
            );
        }
        let mut later = Vec::new();
        snapshot.save(&mut later).expect("save");
        assert_eq!(later, before);
        assert_ne!(encoded(&users), before, "the users did change");
    }
}
