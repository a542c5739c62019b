//! The entities materializer's checkpoint part: the interned ids, their keys, clocks and
//! metadata, the tombstones and the free keys, written at a checkpoint's frontier and read
//! back at start.

use std::sync::Arc;

use tidal_core::codec::{Cursor, DecodeError, decode_meta, encode_meta, put_str, put_u64};

use super::{Buffers, Interner, ItemSlot};
use crate::idmap::IdMapSnapshot;

/// An [`Interner`]'s checkpoint part as of one moment, taken by reference and encoded by
/// [`Saved::write_into`] on the checkpoint writer's thread.
pub(super) struct Saved {
    next_local: u64,
    items: IdMapSnapshot<ItemSlot>,
    /// The tombstones and free keys, encoded.
    tail: Vec<u8>,
}

impl Saved {
    /// Writes the part: the next local key, the number of ids, per id its key, clock and
    /// metadata, then the tombstones and free keys.
    pub(super) fn write_into(self, w: &mut dyn std::io::Write) -> std::io::Result<()> {
        let mut buf = Vec::with_capacity(1 << 16);
        put_u64(&mut buf, self.next_local);
        put_u64(&mut buf, self.items.len() as u64);
        self.items.for_each(|id, slot| {
            put_str(&mut buf, id);
            match slot.key {
                Some(k) => {
                    buf.push(1);
                    put_u64(&mut buf, k);
                }
                None => buf.push(0),
            }
            put_u64(&mut buf, slot.until);
            match &slot.meta {
                Some(m) => {
                    buf.push(1);
                    encode_meta(&mut buf, m);
                }
                None => buf.push(0),
            }
            if buf.len() >= 1 << 16 {
                w.write_all(&buf)?;
                buf.clear();
            }
            Ok::<(), std::io::Error>(())
        })?;
        w.write_all(&buf)?;
        w.write_all(&self.tail)
    }
}

impl Interner {
    /// What a checkpoint keeps of the interned ids, their states, tombstones and free keys,
    /// as of now: the ids' table by reference (a reference per shard: microseconds, where an
    /// encoding per id held the worker 15-20 ms at a million items), the tombstones and free
    /// keys (few) encoded.
    pub(super) fn snapshot(&self) -> Saved {
        let mut tail = Vec::new();
        put_u64(&mut tail, self.tombstones.len() as u64);
        for (until, id) in &self.tombstones {
            put_u64(&mut tail, *until);
            put_str(&mut tail, id);
        }
        put_u64(&mut tail, self.free.len() as u64);
        for (after, retired, key) in &self.free {
            put_u64(&mut tail, *after);
            put_u64(&mut tail, *retired);
            put_u64(&mut tail, *key);
        }
        Saved {
            next_local: self.next_local,
            items: self.items.snapshot(),
            tail,
        }
    }

    /// Reads back what [`Saved::write_into`] wrote; every live item's state is queued in
    /// `bufs` (emitted at time 0).
    pub(super) fn load(&mut self, bytes: &[u8], bufs: &mut Buffers) -> Result<(), DecodeError> {
        let mut c = Cursor::new(bytes);
        self.next_local = c.u64("next key")?;
        for _ in 0..c.u64("items")? {
            let id = c.string("item id")?;
            let key = match c.u8("key")? {
                0 => None,
                _ => Some(c.u64("key")?),
            };
            let until = c.u64("until")?;
            let meta = match c.u8("meta")? {
                0 => None,
                _ => Some(Arc::new(decode_meta(&mut c)?)),
            };
            let slot = ItemSlot { key, until, meta };
            if let Some(k) = key {
                bufs.items.push(((k, slot.state(&id)), 0, 1));
                self.live += 1;
            }
            self.items.insert(&id, slot);
        }
        for _ in 0..c.u64("tombstones")? {
            let until = c.u64("until")?;
            self.tombstones.push_back((until, c.string("id")?));
        }
        for _ in 0..c.u64("free keys")? {
            let (after, retired, key) = (c.u64("after")?, c.u64("retired")?, c.u64("key")?);
            self.free.push_back((after, retired, key));
        }
        c.finish()
    }
}
