//! A compact, explicit binary encoding shared by the WAL and the checkpoints: integers
//! little-endian, lengths and counts as LEB128 varints, optional fields behind a presence
//! byte. Decoding checks every bound and returns a [`DecodeError`] on any input; it never
//! panics.

use crate::record::{Embedding, ItemMeta};

/// Why a payload does not decode. `what` names the field being read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The payload ends inside a field.
    #[error("payload ends inside {what} (needs {needed} bytes at {at})")]
    Truncated {
        /// The field.
        what: &'static str,
        /// Bytes needed.
        needed: usize,
        /// Offset in the payload.
        at: usize,
    },
    /// A varint does not fit 64 bits.
    #[error("{what}: varint overflows 64 bits")]
    VarintOverflow {
        /// The field.
        what: &'static str,
    },
    /// A varint runs past 10 bytes.
    #[error("{what}: varint longer than 10 bytes")]
    VarintTooLong {
        /// The field.
        what: &'static str,
    },
    /// A count larger than the bytes left could hold.
    #[error("{what}: count {count} exceeds the remaining {remaining} bytes")]
    CountTooLarge {
        /// The field.
        what: &'static str,
        /// The count read.
        count: u64,
        /// Bytes left.
        remaining: u64,
    },
    /// A string is not UTF-8.
    #[error("{what}: invalid UTF-8")]
    Utf8 {
        /// The field.
        what: &'static str,
    },
    /// A presence byte other than 0 or 1.
    #[error("{what}: bad presence byte {byte}")]
    Presence {
        /// The field.
        what: &'static str,
        /// The byte.
        byte: u8,
    },
    /// Signal flags with unknown bits.
    #[error("signal flags: unknown bits {0:#04x}")]
    Flags(u8),
    /// Bytes left after the record.
    #[error("{0} trailing bytes after the payload")]
    Trailing(usize),
    /// A record kind this build does not know.
    #[error("unknown record kind {0} (written by a newer tidal?)")]
    UnknownKind(u8),
    /// A value outside the range it must lie in.
    #[error("{what}: {value} is out of range")]
    OutOfRange {
        /// The field.
        what: &'static str,
        /// The value.
        value: u64,
    },
}

/// Bytes of a varint.
pub fn varint_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

/// Appends a LEB128 varint.
pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Appends a LEB128 varint of up to 128 bits (at most 19 bytes).
pub fn put_varint128(out: &mut Vec<u8>, mut v: u128) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Appends a signed integer as a zigzag varint: small magnitudes of either sign take few
/// bytes.
pub fn put_zigzag(out: &mut Vec<u8>, v: i64) {
    put_varint(out, ((v << 1) ^ (v >> 63)) as u64);
}

/// Appends a signed 128-bit integer as a zigzag varint.
pub fn put_zigzag128(out: &mut Vec<u8>, v: i128) {
    put_varint128(out, ((v << 1) ^ (v >> 127)) as u128);
}

/// Encoded size of a string.
pub fn str_len(s: &str) -> usize {
    varint_len(s.len() as u64) + s.len()
}

/// Appends a string: its length, then its bytes.
pub fn put_str(out: &mut Vec<u8>, s: &str) {
    put_varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

/// Encoded size of an optional string.
pub fn opt_str_len(s: &Option<String>) -> usize {
    1 + s.as_deref().map_or(0, str_len)
}

/// Appends an optional string behind a presence byte.
pub fn put_opt_str(out: &mut Vec<u8>, s: &Option<String>) {
    match s {
        Some(s) => {
            out.push(1);
            put_str(out, s);
        }
        None => out.push(0),
    }
}

/// Encoded size of an item's metadata.
pub fn meta_len(m: &ItemMeta) -> usize {
    opt_str_len(&m.creator)
        + opt_str_len(&m.title)
        + opt_str_len(&m.text)
        + opt_str_len(&m.category)
        + varint_len(m.tags.len() as u64)
        + m.tags.iter().map(|t| str_len(t)).sum::<usize>()
        + 1
        + if m.created_at.is_some() { 8 } else { 0 }
        + 1
        + m.embedding
            .as_ref()
            .map_or(0, |e| varint_len(e.0.len() as u64) + 4 * e.0.len())
}

/// Appends an item's metadata.
pub fn encode_meta(out: &mut Vec<u8>, m: &ItemMeta) {
    put_opt_str(out, &m.creator);
    put_opt_str(out, &m.title);
    put_opt_str(out, &m.text);
    put_opt_str(out, &m.category);
    put_varint(out, m.tags.len() as u64);
    for t in &m.tags {
        put_str(out, t);
    }
    match m.created_at {
        Some(c) => {
            out.push(1);
            out.extend_from_slice(&c.to_le_bytes());
        }
        None => out.push(0),
    }
    match &m.embedding {
        Some(e) => {
            out.push(1);
            put_varint(out, e.0.len() as u64);
            for x in &e.0 {
                out.extend_from_slice(&x.to_bits().to_le_bytes());
            }
        }
        None => out.push(0),
    }
}

/// Reads an encoding with bounds checks.
pub struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    /// A cursor at the start of `buf`.
    pub fn new(buf: &'a [u8]) -> Cursor<'a> {
        Cursor { buf, pos: 0 }
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Room to reserve for `count` entries still to be read, each taking at least
    /// `min_bytes`: never more than the bytes left can hold, so a damaged count cannot make
    /// a reader allocate without bound.
    pub fn room_for(&self, count: u64, min_bytes: usize) -> usize {
        usize::try_from(count)
            .unwrap_or(usize::MAX)
            .min(self.remaining() / min_bytes.max(1))
    }

    /// Reads a field.
    pub fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or(DecodeError::Truncated {
                what,
                needed: n,
                at: self.pos,
            })?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    /// Reads a field.
    pub fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.take(1, what)?[0])
    }

    /// Reads a field.
    pub fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    /// Reads a field.
    pub fn varint(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        // The common case: a one-byte varint.
        if let Some(&b) = self.buf.get(self.pos)
            && b < 0x80
        {
            self.pos += 1;
            return Ok(u64::from(b));
        }
        // At most ten bytes, the last holding one bit: the value fits 64 bits.
        self.leb128(10, 1, what).map(|v| v as u64)
    }

    /// Reads a 128-bit varint ([`put_varint128`]).
    pub fn varint128(&mut self, what: &'static str) -> Result<u128, DecodeError> {
        // At most nineteen bytes, the last holding two bits.
        self.leb128(19, 3, what)
    }

    /// Reads a LEB128 varint of at most `bytes` bytes whose last byte holds at most
    /// `last_max`.
    fn leb128(&mut self, bytes: usize, last_max: u8, what: &'static str) -> Result<u128, DecodeError> {
        let rest = &self.buf[self.pos..];
        let mut v: u128 = 0;
        for i in 0..bytes {
            let Some(&b) = rest.get(i) else {
                return Err(DecodeError::Truncated {
                    what,
                    needed: i + 1,
                    at: self.pos,
                });
            };
            let part = b & 0x7f;
            if i == bytes - 1 && part > last_max {
                return Err(DecodeError::VarintOverflow { what });
            }
            v |= u128::from(part) << (7 * i);
            if b & 0x80 == 0 {
                self.pos += i + 1;
                return Ok(v);
            }
        }
        Err(DecodeError::VarintTooLong { what })
    }

    /// Reads a zigzag varint ([`put_zigzag`]).
    pub fn zigzag(&mut self, what: &'static str) -> Result<i64, DecodeError> {
        let v = self.varint(what)?;
        Ok((v >> 1) as i64 ^ -((v & 1) as i64))
    }

    /// Reads a 128-bit zigzag varint ([`put_zigzag128`]).
    pub fn zigzag128(&mut self, what: &'static str) -> Result<i128, DecodeError> {
        let v = self.varint128(what)?;
        Ok((v >> 1) as i128 ^ -((v & 1) as i128))
    }

    /// A count of items each at least `min_item` bytes long, bounded by what remains.
    /// Reads a field.
    pub fn count(&mut self, min_item: usize, what: &'static str) -> Result<usize, DecodeError> {
        let n = self.varint(what)?;
        let remaining = (self.buf.len() - self.pos) as u64;
        if n.saturating_mul(min_item as u64) > remaining {
            return Err(DecodeError::CountTooLarge {
                what,
                count: n,
                remaining,
            });
        }
        Ok(n as usize)
    }

    /// Reads a field.
    pub fn string(&mut self, what: &'static str) -> Result<String, DecodeError> {
        let n = self.count(1, what)?;
        let b = self.take(n, what)?;
        String::from_utf8(b.to_vec()).map_err(|_| DecodeError::Utf8 { what })
    }

    /// Reads a field.
    pub fn opt_string(&mut self, what: &'static str) -> Result<Option<String>, DecodeError> {
        match self.u8(what)? {
            0 => Ok(None),
            1 => Ok(Some(self.string(what)?)),
            byte => Err(DecodeError::Presence { what, byte }),
        }
    }

    /// Reads a field.
    pub fn finish(&self) -> Result<(), DecodeError> {
        if self.pos == self.buf.len() {
            Ok(())
        } else {
            Err(DecodeError::Trailing(self.buf.len() - self.pos))
        }
    }
}

/// Reads an item's metadata.
pub fn decode_meta(c: &mut Cursor<'_>) -> Result<ItemMeta, DecodeError> {
    let creator = c.opt_string("item creator")?;
    let title = c.opt_string("item title")?;
    let text = c.opt_string("item text")?;
    let category = c.opt_string("item category")?;
    let n = c.count(1, "item tags")?;
    let mut tags = Vec::with_capacity(n);
    for _ in 0..n {
        tags.push(c.string("item tag")?);
    }
    let created_at = match c.u8("item created_at")? {
        0 => None,
        1 => Some(c.u64("item created_at")?),
        byte => {
            return Err(DecodeError::Presence {
                what: "item created_at",
                byte,
            });
        }
    };
    let embedding = match c.u8("item embedding")? {
        0 => None,
        1 => {
            let n = c.count(4, "item embedding")?;
            let raw = c.take(4 * n, "item embedding")?;
            let v = raw
                .chunks_exact(4)
                .map(|b| f32::from_bits(u32::from_le_bytes([b[0], b[1], b[2], b[3]])))
                .collect();
            Some(Embedding(v))
        }
        byte => {
            return Err(DecodeError::Presence {
                what: "item embedding",
                byte,
            });
        }
    };
    Ok(ItemMeta {
        creator,
        title,
        text,
        category,
        tags,
        created_at,
        embedding,
    })
}

/// Appends a `u16`.
pub fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_le_bytes());
}

/// Appends a `u64`.
pub fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

/// Appends an `i64`.
pub fn put_i64(out: &mut Vec<u8>, v: i64) {
    out.extend_from_slice(&v.to_le_bytes());
}

/// Appends an `i128`.
pub fn put_i128(out: &mut Vec<u8>, v: i128) {
    out.extend_from_slice(&v.to_le_bytes());
}

impl Cursor<'_> {
    /// Reads a `u16`.
    pub fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        let b = self.take(2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    /// Reads an `i64`.
    pub fn i64(&mut self, what: &'static str) -> Result<i64, DecodeError> {
        Ok(self.u64(what)? as i64)
    }

    /// Reads an `i128`.
    pub fn i128(&mut self, what: &'static str) -> Result<i128, DecodeError> {
        let b = self.take(16, what)?;
        let mut a = [0u8; 16];
        a.copy_from_slice(b);
        Ok(i128::from_le_bytes(a))
    }
}

/// A value with a binary encoding (for checkpoints of the materializers' state). Integers
/// are varints (signed ones zigzag), so the small keys, kinds and fixed-point weights that
/// make up most of a checkpoint take a few bytes each, not eight or sixteen.
pub trait Codec: Sized {
    /// Appends the encoding.
    fn put(&self, out: &mut Vec<u8>);
    /// Reads one back.
    fn get(c: &mut Cursor<'_>) -> Result<Self, DecodeError>;
}

impl Codec for () {
    fn put(&self, _: &mut Vec<u8>) {}
    fn get(_: &mut Cursor<'_>) -> Result<(), DecodeError> {
        Ok(())
    }
}

impl Codec for u16 {
    fn put(&self, out: &mut Vec<u8>) {
        put_varint(out, u64::from(*self));
    }
    fn get(c: &mut Cursor<'_>) -> Result<u16, DecodeError> {
        let v = c.varint("u16")?;
        u16::try_from(v).map_err(|_| DecodeError::OutOfRange { what: "u16", value: v })
    }
}

impl Codec for u8 {
    fn put(&self, out: &mut Vec<u8>) {
        out.push(*self);
    }
    fn get(c: &mut Cursor<'_>) -> Result<u8, DecodeError> {
        c.u8("u8")
    }
}

impl Codec for u64 {
    fn put(&self, out: &mut Vec<u8>) {
        put_varint(out, *self);
    }
    fn get(c: &mut Cursor<'_>) -> Result<u64, DecodeError> {
        c.varint("u64")
    }
}

impl Codec for i64 {
    fn put(&self, out: &mut Vec<u8>) {
        put_zigzag(out, *self);
    }
    fn get(c: &mut Cursor<'_>) -> Result<i64, DecodeError> {
        c.zigzag("i64")
    }
}

impl Codec for i128 {
    fn put(&self, out: &mut Vec<u8>) {
        put_zigzag128(out, *self);
    }
    fn get(c: &mut Cursor<'_>) -> Result<i128, DecodeError> {
        c.zigzag128("i128")
    }
}

impl<T: Codec> Codec for std::num::Wrapping<T> {
    fn put(&self, out: &mut Vec<u8>) {
        self.0.put(out);
    }
    fn get(c: &mut Cursor<'_>) -> Result<Self, DecodeError> {
        Ok(std::num::Wrapping(T::get(c)?))
    }
}

impl<A: Codec, B: Codec> Codec for (A, B) {
    fn put(&self, out: &mut Vec<u8>) {
        self.0.put(out);
        self.1.put(out);
    }
    fn get(c: &mut Cursor<'_>) -> Result<Self, DecodeError> {
        Ok((A::get(c)?, B::get(c)?))
    }
}

impl<A: Codec, B: Codec, C: Codec> Codec for (A, B, C) {
    fn put(&self, out: &mut Vec<u8>) {
        self.0.put(out);
        self.1.put(out);
        self.2.put(out);
    }
    fn get(c: &mut Cursor<'_>) -> Result<Self, DecodeError> {
        Ok((A::get(c)?, B::get(c)?, C::get(c)?))
    }
}

impl<A: Codec, B: Codec, C: Codec, D: Codec> Codec for (A, B, C, D) {
    fn put(&self, out: &mut Vec<u8>) {
        self.0.put(out);
        self.1.put(out);
        self.2.put(out);
        self.3.put(out);
    }
    fn get(c: &mut Cursor<'_>) -> Result<Self, DecodeError> {
        Ok((A::get(c)?, B::get(c)?, C::get(c)?, D::get(c)?))
    }
}

/// Lanes: a bit mask of the lanes that are not zero, then each of those as a zigzag varint
/// (a window retraction touches one or two of the lanes).
impl Codec for crate::features::Lanes {
    fn put(&self, out: &mut Vec<u8>) {
        let mask = self
            .0
            .iter()
            .enumerate()
            .filter(|(_, v)| **v != 0)
            .fold(0u64, |m, (i, _)| m | 1 << i);
        put_varint(out, mask);
        for &v in self.0.iter().filter(|v| **v != 0) {
            put_zigzag(out, v);
        }
    }
    fn get(c: &mut Cursor<'_>) -> Result<Self, DecodeError> {
        let mask = c.varint("lanes")?;
        if mask >> crate::features::LANES != 0 {
            return Err(DecodeError::OutOfRange {
                what: "lanes",
                value: mask,
            });
        }
        let mut l = crate::features::Lanes::default();
        for (i, v) in l.0.iter_mut().enumerate() {
            if mask & 1 << i != 0 {
                *v = c.zigzag("lanes")?;
            }
        }
        Ok(l)
    }
}

impl Codec for crate::record::Position {
    fn put(&self, out: &mut Vec<u8>) {
        put_u64(out, self.lsn);
        put_u64(out, self.signals);
    }
    fn get(c: &mut Cursor<'_>) -> Result<Self, DecodeError> {
        Ok(crate::record::Position {
            lsn: c.u64("lsn")?,
            signals: c.u64("signals")?,
        })
    }
}
