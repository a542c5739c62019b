//! The ordered ranking indexes of a snapshot and the layout that numbers them.
//!
//! For every signal type `k` the serving state keeps, as persistent ordered sets
//! ([`OrdIndex`](crate::ordindex::OrdIndex), so a snapshot clone is O(1) and a batch of
//! changes costs one pass over the leaves it touches):
//! one `trending` index per window (`count_W` desc), one `rising` index per window
//! (`2·count_W − count_2W` desc), one `hot` index per half-life ([`hot_key`] desc) and one
//! `top` index (`total` desc); plus a single `new` index (`created_at` desc). Only positive
//! values are indexed and only listable (not deleted) items appear.
//!
//! Every index orders its entries by a 64-bit [`OrderKey`] descending, then item id
//! ascending (byte order), then item key — exactly the tie rule of SPEC §3 — so the first
//! entries of an index are the best of that single-signal ranking.
//!
//! [`hot_key`]: tidal_core::features::hot_key

use std::cmp::Ordering;
use tidal_core::Config;

use tidal_core::flow::{HalfLifeIdx, ItemKey, KindIdx};

/// A value mapped onto `u64` so that a larger key means a better rank, whatever the
/// value's type (`i64` fixed point, `f64` hot key, `u64` timestamp).
pub type OrderKey = u64;

const SIGN: u64 = 1 << 63;

/// The order key of a signed fixed-point value.
pub fn order_i64(v: i64) -> OrderKey {
    (v as u64) ^ SIGN
}

/// The `i64` an [`order_i64`] key came from.
pub fn from_order_i64(k: OrderKey) -> i64 {
    (k ^ SIGN) as i64
}

/// The order key of a float (total order; NaN never reaches an index).
pub fn order_f64(v: f64) -> OrderKey {
    let bits = v.to_bits();
    if bits & SIGN != 0 { !bits } else { bits | SIGN }
}

/// The `f64` an [`order_f64`] key came from.
pub fn from_order_f64(k: OrderKey) -> f64 {
    if k & SIGN != 0 {
        f64::from_bits(k & !SIGN)
    } else {
        f64::from_bits(!k)
    }
}

/// One entry of an ordered index: the item's value and key, and a 16-byte digest of its id
/// that orders like the id. `Copy` and 32 bytes, so index nodes copy cheaply.
///
/// Entries order by value descending, then id ascending (byte order), then key — exactly
/// the tie rule of SPEC §3. The digest is the id's first 15 bytes (zero padded) and its
/// length capped at 16: it orders like the id itself, and two equal digests mean equal ids
/// unless both ids are longer than 15 bytes. Only then are the full ids compared
/// ([`IndexEntry::cmp_with`]); the full id is the item's
/// ([`ItemEntry::id`](crate::ItemEntry::id)), looked up by key.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct IndexEntry {
    /// The ranked value, encoded (see [`order_i64`], [`order_f64`]).
    pub order: OrderKey,
    /// The item's key, for random access to its features.
    pub key: ItemKey,
    digest: u128,
}

/// Bytes of the id kept in a digest.
const DIGEST_BYTES: usize = 15;

impl IndexEntry {
    /// The entry of item `key` with id `id` at value `order`.
    pub fn new(order: OrderKey, id: &str, key: ItemKey) -> IndexEntry {
        let mut bytes = [0u8; 16];
        let n = id.len().min(DIGEST_BYTES);
        bytes[..n].copy_from_slice(&id.as_bytes()[..n]);
        bytes[DIGEST_BYTES] = id.len().min(DIGEST_BYTES + 1) as u8;
        IndexEntry {
            order,
            key,
            digest: u128::from_be_bytes(bytes),
        }
    }

    /// Whether the digest holds the whole id (then equal digests are equal ids).
    fn whole_id(&self) -> bool {
        (self.digest & 0xff) as usize <= DIGEST_BYTES
    }

    /// Index order (best first) between two entries whose full ids `self_id` and `other_id`
    /// give; those are asked for only when the values tie and both ids are longer than the
    /// digest with the same first bytes.
    pub fn cmp_with<'a, 'b>(
        &self,
        other: &IndexEntry,
        self_id: impl FnOnce() -> &'a str,
        other_id: impl FnOnce() -> &'b str,
    ) -> Ordering {
        other
            .order
            .cmp(&self.order)
            .then(self.digest.cmp(&other.digest))
            .then_with(|| {
                if self.whole_id() {
                    Ordering::Equal
                } else {
                    self_id().as_bytes().cmp(other_id().as_bytes())
                }
            })
            .then(self.key.cmp(&other.key))
    }
}

/// Which ranking an index serves.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum IndexKind {
    /// `count_W` of window `window` of signal type `kind`.
    Trending {
        /// Signal type index.
        kind: KindIdx,
        /// Window index in the type's `windows`.
        window: usize,
    },
    /// `count_W − (count_2W − count_W)` of window `window`.
    Rising {
        /// Signal type index.
        kind: KindIdx,
        /// Window index in the type's `windows`.
        window: usize,
    },
    /// The decayed sum at half-life `half_life`, by its time-independent hot key.
    Hot {
        /// Signal type index.
        kind: KindIdx,
        /// Half-life index in the type's `half_lives`.
        half_life: HalfLifeIdx,
    },
    /// The all-time total.
    Top {
        /// Signal type index.
        kind: KindIdx,
    },
    /// `created_at`.
    New,
}

/// One signal type's place in the index layout.
#[derive(Clone, Debug, PartialEq)]
pub struct KindLayout {
    /// The type's name.
    pub name: String,
    /// Window sizes (ms), in declaration order.
    pub windows: Vec<u64>,
    /// Half-lives (ms), in declaration order.
    pub half_lives: Vec<u64>,
    base: usize,
}

impl KindLayout {
    fn slot_count(&self) -> usize {
        2 * self.windows.len() + self.half_lives.len() + 1
    }
}

/// Numbers the indexes a schema needs: a dense slot per [`IndexKind`].
#[derive(Clone, Debug, PartialEq)]
pub struct Layout {
    kinds: Vec<KindLayout>,
    new_slot: usize,
}

impl Layout {
    /// The layout for a configuration's signal types.
    pub fn from_config(config: &Config) -> Layout {
        let mut base = 0;
        let kinds = config
            .signals
            .iter()
            .map(|s| {
                let k = KindLayout {
                    name: s.name.clone(),
                    windows: s.windows.iter().map(|w| w.size.ms()).collect(),
                    half_lives: s.half_lives.iter().map(|h| h.ms()).collect(),
                    base,
                };
                base += k.slot_count();
                k
            })
            .collect();
        Layout { kinds, new_slot: base }
    }

    /// Number of index slots.
    pub fn slots(&self) -> usize {
        self.new_slot + 1
    }

    /// The signal types, in schema order.
    pub fn kinds(&self) -> &[KindLayout] {
        &self.kinds
    }

    /// A signal type's layout.
    pub fn kind(&self, kind: KindIdx) -> Option<&KindLayout> {
        self.kinds.get(kind as usize)
    }

    /// Half-life `hl` of signal type `kind`, in ms.
    pub fn half_life_ms(&self, kind: KindIdx, hl: HalfLifeIdx) -> Option<u64> {
        self.kind(kind)?.half_lives.get(hl as usize).copied()
    }

    /// The slot of an index, if the schema has it.
    pub fn slot(&self, index: IndexKind) -> Option<usize> {
        match index {
            IndexKind::New => Some(self.new_slot),
            IndexKind::Trending { kind, window } => {
                let k = self.kind(kind)?;
                (window < k.windows.len()).then_some(k.base + window)
            }
            IndexKind::Rising { kind, window } => {
                let k = self.kind(kind)?;
                (window < k.windows.len()).then_some(k.base + k.windows.len() + window)
            }
            IndexKind::Hot { kind, half_life } => {
                let k = self.kind(kind)?;
                let h = half_life as usize;
                (h < k.half_lives.len()).then_some(k.base + 2 * k.windows.len() + h)
            }
            IndexKind::Top { kind } => {
                let k = self.kind(kind)?;
                Some(k.base + 2 * k.windows.len() + k.half_lives.len())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_keys_preserve_order() {
        let ints = [i64::MIN, -5, -1, 0, 1, 7, i64::MAX];
        for w in ints.windows(2) {
            assert!(order_i64(w[0]) < order_i64(w[1]));
            assert_eq!(from_order_i64(order_i64(w[0])), w[0]);
        }
        let floats = [f64::NEG_INFINITY, -3.5, -0.0, 0.0, 1e-300, 2.0, 1e300];
        for w in floats.windows(2) {
            assert!(order_f64(w[0]) <= order_f64(w[1]), "{} {}", w[0], w[1]);
            assert_eq!(from_order_f64(order_f64(w[1])), w[1]);
        }
    }

    #[test]
    fn entries_order_like_their_ids() {
        let ids = [
            "",
            "\0",
            "a",
            "a\0",
            "a\0\0",
            "ab",
            "abcdefghijklmn",
            "abcdefghijklmno",
            "abcdefghijklmno\0",
            "abcdefghijklmnoa",
            "abcdefghijklmnop",
            "abcdefghijklmnopq",
            "abcdefghijklmnoz",
            "b",
            "\u{e9}",
            "\u{ffff}",
        ];
        let mut asked = 0;
        for a in ids {
            for b in ids {
                for (oa, ob) in [(1, 1), (1, 2), (2, 1)] {
                    let (ea, eb) = (IndexEntry::new(oa, a, 7), IndexEntry::new(ob, b, 7));
                    let mut ask = |s| {
                        asked += 1;
                        s
                    };
                    let got = ea.cmp_with(&eb, || ask(a), || b);
                    let want = ob.cmp(&oa).then(a.as_bytes().cmp(b.as_bytes()));
                    assert_eq!(got, want, "{a:?} {b:?} {oa} {ob}");
                }
            }
        }
        // Only ties between ids longer than the digest need the full ids.
        assert!(asked > 0 && asked <= 7 * 7, "{asked}");
    }

    #[test]
    fn slots_are_dense_and_distinct() {
        let config = Config::default_filled();
        let layout = Layout::from_config(&config);
        let mut seen = std::collections::BTreeSet::new();
        for (k, kl) in layout.kinds().iter().enumerate() {
            let kind = k as KindIdx;
            for window in 0..kl.windows.len() {
                assert!(seen.insert(layout.slot(IndexKind::Trending { kind, window }).unwrap()));
                assert!(seen.insert(layout.slot(IndexKind::Rising { kind, window }).unwrap()));
            }
            for h in 0..kl.half_lives.len() {
                let half_life = h as HalfLifeIdx;
                assert!(seen.insert(layout.slot(IndexKind::Hot { kind, half_life }).unwrap()));
            }
            assert!(seen.insert(layout.slot(IndexKind::Top { kind }).unwrap()));
        }
        assert!(seen.insert(layout.slot(IndexKind::New).unwrap()));
        assert_eq!(seen.len(), layout.slots());
        assert_eq!(seen.iter().copied().max(), Some(layout.slots() - 1));
        assert_eq!(layout.slot(IndexKind::Trending { kind: 0, window: 9 }), None);
        assert_eq!(layout.slot(IndexKind::Top { kind: 99 }), None);
    }
}
