//! The users materializer's checkpoint part: the declared cohorts and every user's state,
//! written at a checkpoint's frontier and read back at start.

use std::collections::BTreeMap;
use std::sync::Arc;

use tidal_core::codec::{Cursor, DecodeError, put_str, put_u64};
use tidal_core::user::{Edges, Pull};

use super::state::{Slot, Users};

/// Bytes of the part buffered before they are written out.
const SPILL: usize = 1 << 20;

impl Users {
    /// Writes the declared cohorts and every user's state (a checkpoint) to `w`, through a
    /// buffer of [`SPILL`] bytes (the part is never held whole in memory: a million users
    /// make hundreds of megabytes, and fresh pages cost the worker more than the encoding).
    pub(super) fn save(&self, w: &mut dyn std::io::Write) -> std::io::Result<()> {
        let mut buf = Vec::with_capacity(SPILL + 4096);
        let out = &mut buf;
        put_u64(out, self.defs.len() as u64);
        for (name, rule) in &self.defs {
            put_str(out, name);
            put_u64(out, rule.len() as u64);
            for (k, v) in rule {
                put_str(out, k);
                put_str(out, v);
            }
        }
        put_u64(out, self.slots.len() as u64);
        for (key, slot) in &self.slots {
            put_u64(out, *key);
            match &slot.attributes {
                Some(a) => {
                    out.push(1);
                    put_u64(out, a.len() as u64);
                    for (k, v) in a.iter() {
                        put_str(out, k);
                        put_str(out, v);
                    }
                }
                None => out.push(0),
            }
            put_u64(out, slot.marks.len() as u64);
            for (b, item, m) in &slot.marks {
                put_u64(out, *b);
                put_u64(out, u64::from(*item));
                out.push(*m);
            }
            match slot.edges.as_deref() {
                Some(edges) => {
                    for set in [&edges.follows, &edges.blocks] {
                        put_u64(out, set.len() as u64);
                        for c in set {
                            put_str(out, c);
                        }
                    }
                }
                None => {
                    put_u64(out, 0);
                    put_u64(out, 0);
                }
            }
            put_u64(out, slot.affinity.len() as u64);
            for (c, e, v) in &slot.affinity {
                put_u64(out, *c);
                put_u64(out, *e);
                out.extend_from_slice(&v.to_le_bytes());
            }
            put_u64(out, slot.pulls.len() as u64);
            for p in &slot.pulls {
                put_u64(out, p.ts);
                put_u64(out, u64::from(p.item));
                put_u64(out, p.pull.to_bits());
            }
            if out.len() >= SPILL {
                w.write_all(out)?;
                out.clear();
            }
        }
        w.write_all(out)
    }

    /// Reads back what [`save`](Self::save) wrote.
    pub(super) fn load(&mut self, bytes: &[u8]) -> Result<(), DecodeError> {
        let mut c = Cursor::new(bytes);
        self.defs.clear();
        for _ in 0..c.u64("cohorts")? {
            let name = c.string("cohort name")?;
            let mut rule = BTreeMap::new();
            for _ in 0..c.u64("rule size")? {
                let k = c.string("dimension")?;
                rule.insert(k, c.string("value")?);
            }
            self.defs.insert(name, rule);
        }
        let users = c.u64("users")?;
        // Room for them at once (a million users rehashed step by step cost a second of a
        // start), bounded by what the bytes can hold (a user takes at least 9 of them).
        self.slots.reserve(c.room_for(users, 9));
        for _ in 0..users {
            let key = c.u64("user key")?;
            let mut slot = Slot::default();
            if c.u8("attributes")? != 0 {
                let mut attrs = Vec::new();
                for _ in 0..c.u64("attribute count")? {
                    let k = c.string("attribute name")?;
                    let v = c.string("attribute value")?;
                    attrs.push((self.intern(&k), self.intern(&v)));
                }
                slot.attributes = Some(self.intern_set(attrs));
            }
            // Each list sized once from its count (an entry takes at least three bytes), not
            // grown by doubling.
            let n = c.u64("marks")?;
            slot.marks.reserve_exact(c.room_for(n, 3));
            for _ in 0..n {
                let b = c.u64("bucket")?;
                let item = c.u64("item")?;
                let item = u32::try_from(item).map_err(|_| DecodeError::OutOfRange {
                    what: "item",
                    value: item,
                })?;
                slot.marks.push((b, item, c.u8("sets")?));
                self.by_bucket.entry(b).or_default().insert(key);
            }
            let mut edges = Edges::default();
            for set in [&mut edges.follows, &mut edges.blocks] {
                for _ in 0..c.u64("edges")? {
                    set.insert(c.string("creator")?);
                }
            }
            if !edges.follows.is_empty() || !edges.blocks.is_empty() {
                slot.edges = Some(Arc::new(edges));
            }
            let n = c.u64("affinities")?;
            slot.affinity.reserve_exact(c.room_for(n, 3));
            for _ in 0..n {
                let creator = c.u64("creator")?;
                let e = c.u64("epoch")?;
                let raw = c.take(16, "affinity")?;
                let mut a = [0u8; 16];
                a.copy_from_slice(raw);
                slot.affinity.push((creator, e, i128::from_le_bytes(a)));
                self.by_epoch.entry(e).or_default().insert(key);
            }
            let n = c.u64("pulls")?;
            slot.pulls.reserve_exact(c.room_for(n, 3));
            for _ in 0..n {
                let ts = c.u64("pull time")?;
                let item = c.u64("pull item")?;
                let item = u32::try_from(item).map_err(|_| DecodeError::OutOfRange {
                    what: "pull item",
                    value: item,
                })?;
                let pull = f64::from_bits(c.u64("pull")?);
                slot.pulls.push(Pull { ts, item, pull });
            }
            slot.cohorts = self.cohorts_of(slot.attributes.as_deref());
            self.slots.insert(key, Box::new(slot));
        }
        c.finish()
    }
}
