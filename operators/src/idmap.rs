//! [`IdMap`]: a map from id strings to values built for the interning hot path: a table
//! hashed with a randomly seeded foldhash (fast on short strings, yet a client cannot aim ids
//! at one bucket without the seed) whose entries hold ids of up to [`INLINE_ID`] bytes in
//! place, so a lookup compares fixed-size arrays in the entry it probed instead of following a
//! pointer to the stored string. The table is [`Sharded`], so a checkpoint takes it as it is
//! without stopping the worker.

use foldhash::fast::RandomState;

use crate::cow::{Sharded, Shards};

/// Longest id kept inside its table entry.
pub const INLINE_ID: usize = 38;

/// An id as stored in an [`IdMap`]: short ids in place (zero-padded, so equal ids have equal
/// arrays), long ones on the heap.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum StoredId {
    Inline { len: u8, bytes: [u8; INLINE_ID] },
    Heap(Box<str>),
}

impl StoredId {
    /// The in-place form of `id`, if it is short enough.
    fn inline(id: &str) -> Option<StoredId> {
        let src = id.as_bytes();
        let len = u8::try_from(src.len()).ok().filter(|l| usize::from(*l) <= INLINE_ID)?;
        let mut bytes = [0u8; INLINE_ID];
        bytes[..src.len()].copy_from_slice(src);
        Some(StoredId::Inline { len, bytes })
    }

    fn as_bytes(&self) -> &[u8] {
        match self {
            StoredId::Inline { len, bytes } => &bytes[..usize::from(*len)],
            StoredId::Heap(s) => s.as_bytes(),
        }
    }
}

/// A map from id strings to `V`, built for the source's hot path (see the module docs).
pub(crate) struct IdMap<V> {
    table: Sharded<(StoredId, V)>,
    hasher: RandomState,
}

/// An [`IdMap`]'s entries as they were when taken ([`IdMap::snapshot`]).
pub(crate) struct IdMapSnapshot<V> {
    shards: Shards<(StoredId, V)>,
}

impl<V> IdMapSnapshot<V> {
    /// Number of ids.
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| s.len()).sum()
    }

    /// Hands every id with its value to `each`, shard by shard, letting each shard go once
    /// done (so that the worker need not copy it to change it after that).
    pub(crate) fn for_each<E>(self, mut each: impl FnMut(&str, &V) -> Result<(), E>) -> Result<(), E> {
        for shard in self.shards {
            for (k, v) in shard.iter() {
                if let Ok(id) = std::str::from_utf8(k.as_bytes()) {
                    each(id, v)?;
                }
            }
        }
        Ok(())
    }
}

impl<V: Clone> IdMap<V> {
    pub(crate) fn new() -> IdMap<V> {
        IdMap {
            table: Sharded::new(),
            hasher: RandomState::default(),
        }
    }

    /// Every entry as it is now, taken in microseconds ([`Sharded::snapshot`]).
    pub(crate) fn snapshot(&self) -> IdMapSnapshot<V> {
        IdMapSnapshot {
            shards: self.table.snapshot(),
        }
    }

    fn hash(hasher: &RandomState, id: &[u8]) -> u64 {
        use std::hash::BuildHasher;
        hasher.hash_one(id)
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.table.len()
    }

    /// `id`'s hash and what its entry is told apart by.
    #[inline]
    fn probe<'a>(&self, id: &'a str) -> (u64, Probe<'a>) {
        (Self::hash(&self.hasher, id.as_bytes()), Probe::of(id))
    }

    /// The value of `id`, if any.
    pub(crate) fn get(&self, id: &str) -> Option<&V> {
        let (hash, probe) = self.probe(id);
        self.table.find(hash, |e| probe.matches(e)).map(|(_, v)| v)
    }

    /// The value of `id`, if any, to change.
    pub(crate) fn get_mut(&mut self, id: &str) -> Option<&mut V> {
        let (hash, probe) = self.probe(id);
        self.table.find_mut(hash, |e| probe.matches(e)).map(|(_, v)| v)
    }

    #[cfg(test)]
    pub(crate) fn contains(&self, id: &str) -> bool {
        self.get(id).is_some()
    }

    /// Removes `id`, returning its value.
    pub(crate) fn remove(&mut self, id: &str) -> Option<V> {
        let (hash, probe) = self.probe(id);
        self.table.remove(hash, |e| probe.matches(e)).map(|(_, v)| v)
    }

    /// Sets `id`'s value.
    pub(crate) fn insert(&mut self, id: &str, value: V) {
        let (hash, probe) = self.probe(id);
        let hasher = &self.hasher;
        let rehash = |(k, _): &(StoredId, V)| Self::hash(hasher, k.as_bytes());
        self.table
            .upsert(hash, |e| probe.matches(e), (probe.stored(), value), rehash);
    }
}

/// What a lookup tells the entries it probes apart by: a short id's in-place form (fixed-size
/// arrays compared), or a long id's string.
enum Probe<'a> {
    Inline(StoredId),
    Heap(&'a str),
}

impl<'a> Probe<'a> {
    fn of(id: &'a str) -> Probe<'a> {
        match StoredId::inline(id) {
            Some(stored) => Probe::Inline(stored),
            None => Probe::Heap(id),
        }
    }

    /// Whether `entry` is the id's.
    #[inline]
    fn matches<V>(&self, (k, _): &(StoredId, V)) -> bool {
        match self {
            Probe::Inline(p) => k == p,
            Probe::Heap(id) => matches!(k, StoredId::Heap(s) if **s == **id),
        }
    }

    /// The id as its entry keeps it.
    fn stored(&self) -> StoredId {
        match self {
            Probe::Inline(p) => p.clone(),
            Probe::Heap(id) => StoredId::Heap((*id).into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::collections::HashMap;

    /// Random ids on both sides of the in-place limit, against a std map.
    #[test]
    fn id_map_matches_a_hash_map() {
        let mut next = crate::xorshift(0x2545_f491_4f6c_dd1du64);
        let mut ids: IdMap<u64> = IdMap::new();
        let mut want: HashMap<String, u64> = HashMap::new();
        for i in 0..20_000u64 {
            let len = (next() % 60) as usize;
            // Few distinct ids per length, so that most operations hit an existing one; a
            // trailing NUL must not make an id equal to a shorter one.
            let id: String = (0..len)
                .map(|j| {
                    if j + 1 == len && next().is_multiple_of(4) {
                        '\0'
                    } else {
                        char::from(b'a' + (next() % 2) as u8)
                    }
                })
                .collect();
            match next() % 3 {
                0 => {
                    ids.insert(&id, i);
                    want.insert(id, i);
                }
                1 => assert_eq!(ids.get_mut(&id).copied(), want.get(&id).copied(), "{id:?}"),
                _ => {
                    match ids.get_mut(&id) {
                        Some(v) => *v += 1,
                        None => ids.insert(&id, i),
                    }
                    want.entry(id).and_modify(|v| *v += 1).or_insert(i);
                }
            }
        }
        assert_eq!(ids.len(), want.len());
        for (id, v) in &want {
            assert_eq!(ids.get_mut(id), Some(&mut v.clone()), "{id:?}");
            assert!(ids.contains(id));
        }
    }
}
