//! The WAL's byte format, explicit and versioned, all integers little-endian.
//!
//! A segment file starts with a 12-byte header: the magic `b"TIDALWAL"` and the format
//! version (`u32`). Then come record frames:
//!
//! ```text
//! len u32 (bytes after this field) | blake3 32 bytes (over lsn..payload)
//! | lsn u64 | time u64 | clock_ms u64 | kind u8 | payload
//! ```
//!
//! Every payload is a compact binary encoding: strings and lists are prefixed with their
//! length as an LEB128 varint, optional fields with a presence byte or flag bits. Decoding
//! checks every bound and returns an error on any input; it never panics.

use std::collections::BTreeMap;
use tidal_core::codec::{Cursor, decode_meta, encode_meta, meta_len, put_str, put_varint, str_len, varint_len};

use tidal_core::record::{Record, RelKind, Signal};

pub use tidal_core::codec::DecodeError;
use tidal_core::time::Time;

/// The first 8 bytes of every segment file.
pub const MAGIC: &[u8; 8] = b"TIDALWAL";
/// The format version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// Size of the segment header (magic + version).
pub const HEADER_BYTES: usize = 12;
/// Size of a frame's checksum.
pub const CHECKSUM_BYTES: usize = 32;
/// Bytes a frame's `len` counts besides the payload: checksum, lsn, time, clock, kind.
pub const FRAME_FIXED_BYTES: usize = CHECKSUM_BYTES + 8 + 8 + 8 + 1;
/// The largest `len` a frame may have; larger records are refused when written.
pub const MAX_FRAME_BYTES: usize = 256 << 20;

/// Record kind codes (the frame's `kind` byte).
pub mod kind {
    /// [`Record::Signals`](tidal_core::Record::Signals).
    pub const SIGNALS: u8 = 1;
    /// [`Record::ItemPut`](tidal_core::Record::ItemPut).
    pub const ITEM_PUT: u8 = 2;
    /// [`Record::ItemDelete`](tidal_core::Record::ItemDelete).
    pub const ITEM_DELETE: u8 = 3;
    /// [`Record::ClockAdvance`](tidal_core::Record::ClockAdvance).
    pub const CLOCK_ADVANCE: u8 = 4;
    /// [`Record::Config`](tidal_core::Record::Config).
    pub const CONFIG: u8 = 5;
    /// [`Record::UserPut`](tidal_core::Record::UserPut).
    pub const USER_PUT: u8 = 6;
    /// [`Record::UserDelete`](tidal_core::Record::UserDelete).
    pub const USER_DELETE: u8 = 7;
    /// [`Record::CohortPut`](tidal_core::Record::CohortPut).
    pub const COHORT_PUT: u8 = 8;
    /// [`Record::CohortDelete`](tidal_core::Record::CohortDelete).
    pub const COHORT_DELETE: u8 = 9;
    /// [`Record::Relationship`](tidal_core::Record::Relationship).
    pub const RELATIONSHIP: u8 = 10;
}

const FLAG_USER: u8 = 1;
const FLAG_TS: u8 = 2;
const FLAG_ID: u8 = 4;

/// The segment header bytes.
pub fn header() -> [u8; HEADER_BYTES] {
    let mut h = [0u8; HEADER_BYTES];
    h[..8].copy_from_slice(MAGIC);
    h[8..].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h
}

/// Why a segment header is not one this build reads.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// The file is shorter than a header.
    #[error("segment header incomplete ({0} of {HEADER_BYTES} bytes)")]
    Incomplete(usize),
    /// The magic bytes are wrong.
    #[error("not a tidal WAL segment (bad magic)")]
    BadMagic,
    /// Another format version.
    #[error("unsupported WAL format version {0} (this tidal reads version {FORMAT_VERSION})")]
    Version(u32),
}

/// Checks a segment header.
pub fn check_header(buf: &[u8]) -> Result<(), HeaderError> {
    if buf.len() < HEADER_BYTES {
        return Err(HeaderError::Incomplete(buf.len()));
    }
    if &buf[..8] != MAGIC {
        return Err(HeaderError::BadMagic);
    }
    let version = u32::from_le_bytes([buf[8], buf[9], buf[10], buf[11]]);
    if version != FORMAT_VERSION {
        return Err(HeaderError::Version(version));
    }
    Ok(())
}

/// The name of a record kind, for humans.
pub fn kind_name(kind: u8) -> &'static str {
    match kind {
        kind::SIGNALS => "signals",
        kind::ITEM_PUT => "item_put",
        kind::ITEM_DELETE => "item_delete",
        kind::CLOCK_ADVANCE => "clock_advance",
        kind::CONFIG => "config",
        kind::USER_PUT => "user_put",
        kind::USER_DELETE => "user_delete",
        kind::COHORT_PUT => "cohort_put",
        kind::COHORT_DELETE => "cohort_delete",
        kind::RELATIONSHIP => "relationship",
        _ => "unknown",
    }
}

/// The kind code of a record.
pub fn record_kind(record: &Record) -> u8 {
    match record {
        Record::Signals(_) => kind::SIGNALS,
        Record::ItemPut { .. } => kind::ITEM_PUT,
        Record::ItemDelete { .. } => kind::ITEM_DELETE,
        Record::ClockAdvance { .. } => kind::CLOCK_ADVANCE,
        Record::Config { .. } => kind::CONFIG,
        Record::UserPut { .. } => kind::USER_PUT,
        Record::UserDelete { .. } => kind::USER_DELETE,
        Record::CohortPut { .. } => kind::COHORT_PUT,
        Record::CohortDelete { .. } => kind::COHORT_DELETE,
        Record::Relationship { .. } => kind::RELATIONSHIP,
    }
}

/// The position and stamp a frame carries besides its record.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct FrameMeta {
    /// The record's LSN.
    pub lsn: u64,
    /// The logical time of its batch.
    pub time: Time,
    /// The commit clock of its batch, ms.
    pub clock_ms: u64,
}

/// The size in bytes of a whole frame (including the `len` field) holding `record`.
pub fn frame_len(record: &Record) -> usize {
    4 + FRAME_FIXED_BYTES + payload_len(record)
}

/// Appends one frame holding `record` to `out`. Fails, leaving `out` as it was, with the
/// frame's `len` when it would exceed [`MAX_FRAME_BYTES`].
pub fn encode_frame(out: &mut Vec<u8>, meta: FrameMeta, record: &Record) -> Result<(), usize> {
    let start = out.len();
    out.extend_from_slice(&[0u8; 4 + CHECKSUM_BYTES]);
    out.extend_from_slice(&meta.lsn.to_le_bytes());
    out.extend_from_slice(&meta.time.to_le_bytes());
    out.extend_from_slice(&meta.clock_ms.to_le_bytes());
    out.push(record_kind(record));
    encode_payload(out, record);
    let len = out.len() - start - 4;
    if len > MAX_FRAME_BYTES {
        out.truncate(start);
        return Err(len);
    }
    out[start..start + 4].copy_from_slice(&(len as u32).to_le_bytes());
    let sum = blake3::hash(&out[start + 4 + CHECKSUM_BYTES..]);
    out[start + 4..start + 4 + CHECKSUM_BYTES].copy_from_slice(sum.as_bytes());
    Ok(())
}

/// A frame whose length and checksum are valid; the payload is not yet decoded.
#[derive(Copy, Clone, Debug)]
pub struct RawFrame<'a> {
    /// Bytes the frame occupies, `len` field included.
    pub size: usize,
    /// LSN, time and clock.
    pub meta: FrameMeta,
    /// The kind code.
    pub kind: u8,
    /// The payload bytes.
    pub payload: &'a [u8],
}

impl RawFrame<'_> {
    /// Decodes the payload.
    pub fn record(&self) -> Result<Record, DecodeError> {
        decode_payload(self.kind, self.payload)
    }
}

/// Why the bytes at some offset are not a frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// The bytes end before the frame does.
    Incomplete {
        /// Bytes the frame needs.
        needed: usize,
        /// Bytes there are.
        available: usize,
    },
    /// The length field is out of range.
    BadLength(u64),
    /// The checksum does not match the content.
    Checksum,
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::Incomplete { needed, available } => {
                write!(f, "incomplete record frame ({available} of {needed} bytes present)")
            }
            FrameError::BadLength(len) => write!(
                f,
                "record frame length {len} out of range ({FRAME_FIXED_BYTES}..={MAX_FRAME_BYTES})"
            ),
            FrameError::Checksum => write!(f, "record checksum mismatch"),
        }
    }
}

/// Reads the frame at the start of `buf`, checking its length and checksum.
pub fn decode_frame(buf: &[u8]) -> Result<RawFrame<'_>, FrameError> {
    let Some(len_bytes) = buf.get(..4) else {
        return Err(FrameError::Incomplete {
            needed: 4,
            available: buf.len(),
        });
    };
    let len = u32::from_le_bytes([len_bytes[0], len_bytes[1], len_bytes[2], len_bytes[3]]) as usize;
    if !(FRAME_FIXED_BYTES..=MAX_FRAME_BYTES).contains(&len) {
        return Err(FrameError::BadLength(len as u64));
    }
    let Some(body) = buf.get(4..4 + len) else {
        return Err(FrameError::Incomplete {
            needed: 4 + len,
            available: buf.len(),
        });
    };
    let (sum, content) = body.split_at(CHECKSUM_BYTES);
    if blake3::hash(content).as_bytes() != sum {
        return Err(FrameError::Checksum);
    }
    let u = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&content[at..at + 8]);
        u64::from_le_bytes(b)
    };
    Ok(RawFrame {
        size: 4 + len,
        meta: FrameMeta {
            lsn: u(0),
            time: u(8),
            clock_ms: u(16),
        },
        kind: content[24],
        payload: &content[25..],
    })
}

/// The LSN field of a frame-shaped byte run, without checking anything else.
pub(crate) fn peek_lsn(buf: &[u8]) -> Option<u64> {
    let b = buf.get(4 + CHECKSUM_BYTES..4 + CHECKSUM_BYTES + 8)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    Some(u64::from_le_bytes(a))
}

// ----- payload encoding -----

/// Encoded size of one signal.
pub fn signal_len(s: &Signal) -> usize {
    str_len(&s.kind)
        + str_len(&s.item)
        + 1
        + s.user.as_deref().map_or(0, str_len)
        + 8
        + if s.ts.is_some() { 8 } else { 0 }
        + s.id.as_deref().map_or(0, str_len)
}

/// Appends the canonical encoding of one signal: kind, item, flags, user?, weight, ts?, id?.
pub fn encode_signal(out: &mut Vec<u8>, s: &Signal) {
    put_str(out, &s.kind);
    put_str(out, &s.item);
    let flags = (if s.user.is_some() { FLAG_USER } else { 0 })
        | (if s.ts.is_some() { FLAG_TS } else { 0 })
        | (if s.id.is_some() { FLAG_ID } else { 0 });
    out.push(flags);
    if let Some(u) = &s.user {
        put_str(out, u);
    }
    out.extend_from_slice(&s.weight.to_bits().to_le_bytes());
    if let Some(ts) = s.ts {
        out.extend_from_slice(&ts.to_le_bytes());
    }
    if let Some(id) = &s.id {
        put_str(out, id);
    }
}

/// Encoded size of a record's payload.
pub fn payload_len(record: &Record) -> usize {
    match record {
        Record::Signals(sigs) => varint_len(sigs.len() as u64) + sigs.iter().map(signal_len).sum::<usize>(),
        Record::ItemPut { id, meta } => str_len(id) + meta_len(meta),
        Record::ItemDelete { id } => str_len(id),
        Record::ClockAdvance { .. } => 8,
        Record::Config { toml } => str_len(toml),
        Record::UserPut { id, attributes } => str_len(id) + pairs_len(attributes),
        Record::UserDelete { id } => str_len(id),
        Record::CohortPut { name, rule } => str_len(name) + pairs_len(rule),
        Record::CohortDelete { name } => str_len(name),
        Record::Relationship { user, creator, .. } => str_len(user) + str_len(creator) + 2,
    }
}

/// Appends a record's payload.
pub fn encode_payload(out: &mut Vec<u8>, record: &Record) {
    match record {
        Record::Signals(sigs) => {
            put_varint(out, sigs.len() as u64);
            for s in sigs {
                encode_signal(out, s);
            }
        }
        Record::ItemPut { id, meta } => {
            put_str(out, id);
            encode_meta(out, meta);
        }
        Record::ItemDelete { id } => put_str(out, id),
        Record::ClockAdvance { to_ms } => out.extend_from_slice(&to_ms.to_le_bytes()),
        Record::Config { toml } => put_str(out, toml),
        Record::UserPut { id, attributes } => {
            put_str(out, id);
            put_pairs(out, attributes);
        }
        Record::UserDelete { id } => put_str(out, id),
        Record::CohortPut { name, rule } => {
            put_str(out, name);
            put_pairs(out, rule);
        }
        Record::CohortDelete { name } => put_str(out, name),
        Record::Relationship {
            user,
            creator,
            kind,
            active,
        } => {
            put_str(out, user);
            put_str(out, creator);
            out.push(match kind {
                RelKind::Follow => 0,
                RelKind::Block => 1,
            });
            out.push(u8::from(*active));
        }
    }
}

/// Encoded size of a string map.
fn pairs_len(map: &BTreeMap<String, String>) -> usize {
    varint_len(map.len() as u64) + map.iter().map(|(k, v)| str_len(k) + str_len(v)).sum::<usize>()
}

/// Appends a string map: its size, then each key and value.
fn put_pairs(out: &mut Vec<u8>, map: &BTreeMap<String, String>) {
    put_varint(out, map.len() as u64);
    for (k, v) in map {
        put_str(out, k);
        put_str(out, v);
    }
}

/// Reads what [`put_pairs`] wrote; keys must be strictly increasing (one encoding per map).
fn decode_pairs(c: &mut Cursor<'_>, what: &'static str) -> Result<BTreeMap<String, String>, DecodeError> {
    let n = c.count(2, what)?;
    let mut map = BTreeMap::new();
    for _ in 0..n {
        let k = c.string(what)?;
        let v = c.string(what)?;
        if map.last_key_value().is_some_and(|(last, _)| *last >= k) {
            return Err(DecodeError::OutOfRange { what, value: n as u64 });
        }
        map.insert(k, v);
    }
    Ok(map)
}

// ----- payload decoding -----

/// Smallest encoding of a signal: two empty strings, flags, weight.
const MIN_SIGNAL_BYTES: usize = 1 + 1 + 1 + 8;

fn decode_signal(c: &mut Cursor<'_>) -> Result<Signal, DecodeError> {
    let kind = c.string("signal kind")?;
    let item = c.string("signal item")?;
    let flags = c.u8("signal flags")?;
    if flags & !(FLAG_USER | FLAG_TS | FLAG_ID) != 0 {
        return Err(DecodeError::Flags(flags));
    }
    let user = if flags & FLAG_USER != 0 {
        Some(c.string("signal user")?)
    } else {
        None
    };
    let weight = f64::from_bits(c.u64("signal weight")?);
    let ts = if flags & FLAG_TS != 0 {
        Some(c.u64("signal ts")?)
    } else {
        None
    };
    let id = if flags & FLAG_ID != 0 {
        Some(c.string("signal id")?)
    } else {
        None
    };
    Ok(Signal {
        kind,
        item,
        user,
        weight,
        ts,
        id,
    })
}

/// Decodes a record from its kind code and payload.
pub fn decode_payload(kind: u8, payload: &[u8]) -> Result<Record, DecodeError> {
    let mut c = Cursor::new(payload);
    let record = match kind {
        kind::SIGNALS => {
            let n = c.count(MIN_SIGNAL_BYTES, "signal count")?;
            let mut sigs = Vec::with_capacity(n);
            for _ in 0..n {
                sigs.push(decode_signal(&mut c)?);
            }
            Record::Signals(sigs)
        }
        kind::ITEM_PUT => {
            let id = c.string("item id")?;
            let meta = decode_meta(&mut c)?;
            Record::ItemPut { id, meta }
        }
        kind::ITEM_DELETE => Record::ItemDelete {
            id: c.string("item id")?,
        },
        kind::CLOCK_ADVANCE => Record::ClockAdvance {
            to_ms: c.u64("clock advance")?,
        },
        kind::CONFIG => Record::Config {
            toml: c.string("config text")?,
        },
        kind::USER_PUT => Record::UserPut {
            id: c.string("user id")?,
            attributes: decode_pairs(&mut c, "user attributes")?,
        },
        kind::USER_DELETE => Record::UserDelete {
            id: c.string("user id")?,
        },
        kind::COHORT_PUT => Record::CohortPut {
            name: c.string("cohort name")?,
            rule: decode_pairs(&mut c, "cohort rule")?,
        },
        kind::COHORT_DELETE => Record::CohortDelete {
            name: c.string("cohort name")?,
        },
        kind::RELATIONSHIP => {
            let user = c.string("relationship user")?;
            let creator = c.string("relationship creator")?;
            let kind = match c.u8("relationship kind")? {
                0 => RelKind::Follow,
                1 => RelKind::Block,
                k => {
                    return Err(DecodeError::OutOfRange {
                        what: "relationship kind",
                        value: u64::from(k),
                    });
                }
            };
            let active = match c.u8("relationship active")? {
                0 => false,
                1 => true,
                byte => {
                    return Err(DecodeError::Presence {
                        what: "relationship active",
                        byte,
                    });
                }
            };
            Record::Relationship {
                user,
                creator,
                kind,
                active,
            }
        }
        other => return Err(DecodeError::UnknownKind(other)),
    };
    c.finish()?;
    Ok(record)
}
