//! The entities materializer's checkpoint part: the interned ids, their keys, clocks and
//! metadata, the tombstones and the free keys, written at a checkpoint's frontier and read
//! back at start.

use std::sync::Arc;

use tidal_core::codec::{Cursor, DecodeError, decode_meta, encode_meta, put_str, put_u64};
use tidal_core::record::ItemMeta;

use super::{Buffers, Interner, ItemSlot};
use crate::batches::touched_in_batches;

/// An [`Interner`]'s checkpoint part as of one moment, its items' metadata not yet encoded.
pub(super) struct Saved {
    /// The next local key and the number of ids.
    head: Vec<u8>,
    /// Per id in map order: the id, its key and its clock, encoded, ending at `ends`.
    items: Vec<u8>,
    ends: Vec<usize>,
    /// Per id, its metadata.
    metas: Vec<Option<Arc<ItemMeta>>>,
    /// The tombstones and free keys, encoded.
    tail: Vec<u8>,
}

impl Saved {
    /// Writes the part: per id its encoded fields, then its metadata.
    pub(super) fn write_into(self, w: &mut dyn std::io::Write) -> std::io::Result<()> {
        w.write_all(&self.head)?;
        let mut buf = Vec::with_capacity(1 << 16);
        let mut start = 0;
        for (&end, meta) in self.ends.iter().zip(&self.metas) {
            buf.extend_from_slice(&self.items[start..end]);
            start = end;
            match meta {
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
        }
        w.write_all(&buf)?;
        w.write_all(&self.tail)
    }
}

impl Interner {
    /// What a checkpoint keeps of the interned ids, their states, tombstones and free keys,
    /// as of now: everything but the items' metadata is encoded here, the metadata is kept by
    /// reference (each item's `Arc`) and encoded by [`Saved::write_into`], so the worker's
    /// part of a checkpoint is a copy of a few bytes per item, not the titles, texts and
    /// embeddings (most of the part: 640 of its 700 ms at a million 64-dim items).
    pub(super) fn snapshot(&self) -> Saved {
        let mut head = Vec::with_capacity(20);
        put_u64(&mut head, self.next_local);
        put_u64(&mut head, self.items.len_all() as u64);
        let n = self.items.len_all();
        let mut items = Vec::with_capacity(n * 24);
        let mut ends = Vec::with_capacity(n);
        let mut metas = Vec::with_capacity(n);
        // Each item's metadata count read first, a batch at a time (see `batches`).
        let touch = |(_, slot): &(&str, &ItemSlot)| slot.meta.as_ref().map_or(0, |m| Arc::strong_count(m) as u64);
        let Ok(()) = touched_in_batches(self.items.iter(), touch, |batch| {
            for &(id, slot) in batch.iter() {
                put_str(&mut items, id);
                match slot.key {
                    Some(k) => {
                        items.push(1);
                        put_u64(&mut items, k);
                    }
                    None => items.push(0),
                }
                put_u64(&mut items, slot.until);
                ends.push(items.len());
                metas.push(slot.meta.clone());
            }
            Ok::<(), std::convert::Infallible>(())
        });
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
            head,
            items,
            ends,
            metas,
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
