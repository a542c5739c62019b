//! [`Sharded`]: a hash table split into [`SHARDS`] tables, each behind an `Arc`, so that a
//! checkpoint takes a table of a million entries as it is in microseconds (a reference per
//! shard) and encodes it on another thread while the worker goes on. A change to a shard a
//! snapshot still holds copies that shard first: a thousand entries, not the table. Taken
//! entry by entry, the users' table held the worker ~35 ms and the items' ~15-20 ms per
//! checkpoint (a reference or an encoding per entry, each its own cache miss).

use std::sync::Arc;

use hashbrown::HashTable;

/// Shards per table (as a power of two).
const SHARD_BITS: u32 = 10;

/// Shards per table.
pub(crate) const SHARDS: usize = 1 << SHARD_BITS;

/// A hash table of `T` in [`SHARDS`] shared shards; the caller hashes (see the module docs).
pub(crate) struct Sharded<T> {
    shards: Box<[Arc<HashTable<T>>]>,
    len: usize,
}

/// The shards of a [`Sharded`] as they were when taken ([`Sharded::snapshot`]).
pub(crate) type Shards<T> = Vec<Arc<HashTable<T>>>;

/// The shard of `hash`: bits the tables inside do not use for themselves (hashbrown takes
/// its bucket from the low bits and its tag from the top seven).
#[inline]
fn shard_of(hash: u64) -> usize {
    (hash >> 32) as usize & (SHARDS - 1)
}

impl<T: Clone> Sharded<T> {
    pub(crate) fn new() -> Sharded<T> {
        Sharded {
            shards: (0..SHARDS).map(|_| Arc::new(HashTable::new())).collect(),
            len: 0,
        }
    }

    /// Number of entries.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The entry with `hash` that `eq` accepts.
    #[inline]
    pub(crate) fn find(&self, hash: u64, eq: impl FnMut(&T) -> bool) -> Option<&T> {
        self.shards[shard_of(hash)].find(hash, eq)
    }

    /// The shard of `hash`, to change (copied first if a snapshot holds it); `None` if a
    /// snapshot holds it and it has no entry `eq` accepts (nothing to change, nothing copied).
    #[inline]
    fn shard_holding(&mut self, hash: u64, eq: &mut impl FnMut(&T) -> bool) -> Option<&mut HashTable<T>> {
        let shard = &mut self.shards[shard_of(hash)];
        if Arc::strong_count(shard) > 1 && shard.find(hash, eq).is_none() {
            return None;
        }
        Some(Arc::make_mut(shard))
    }

    /// The entry with `hash` that `eq` accepts, to change: its shard copied first if a
    /// snapshot holds it (and only if the entry is there).
    #[inline]
    pub(crate) fn find_mut(&mut self, hash: u64, mut eq: impl FnMut(&T) -> bool) -> Option<&mut T> {
        self.shard_holding(hash, &mut eq)?.find_mut(hash, eq)
    }

    /// The entry with `hash` that `eq` accepts, to change, made by `make` if absent (one
    /// lookup either way); `rehash` hashes an entry (to grow).
    #[inline]
    pub(crate) fn find_or_insert_with(
        &mut self,
        hash: u64,
        eq: impl FnMut(&T) -> bool,
        make: impl FnOnce() -> T,
        rehash: impl Fn(&T) -> u64,
    ) -> &mut T {
        use hashbrown::hash_table::Entry;
        match Arc::make_mut(&mut self.shards[shard_of(hash)]).entry(hash, eq, rehash) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(v) => {
                self.len += 1;
                v.insert(make()).into_mut()
            }
        }
    }

    /// Puts `value` in place of the entry with `hash` that `eq` accepts, or adds it (one
    /// lookup either way).
    pub(crate) fn upsert(&mut self, hash: u64, eq: impl FnMut(&T) -> bool, value: T, rehash: impl Fn(&T) -> u64) {
        use hashbrown::hash_table::Entry;
        match Arc::make_mut(&mut self.shards[shard_of(hash)]).entry(hash, eq, rehash) {
            Entry::Occupied(mut e) => *e.get_mut() = value,
            Entry::Vacant(v) => {
                self.len += 1;
                v.insert(value);
            }
        }
    }

    /// Removes the entry with `hash` that `eq` accepts, returning it.
    pub(crate) fn remove(&mut self, hash: u64, mut eq: impl FnMut(&T) -> bool) -> Option<T> {
        let removed = self.shard_holding(hash, &mut eq)?.find_entry(hash, eq).ok()?.remove().0;
        self.len -= 1;
        Some(removed)
    }

    /// Room for `additional` more entries spread evenly (a restore's, known ahead).
    pub(crate) fn reserve(&mut self, additional: usize, rehash: impl Fn(&T) -> u64) {
        let each = additional.div_ceil(SHARDS);
        for shard in self.shards.iter_mut() {
            Arc::make_mut(shard).reserve(each, &rehash);
        }
    }

    /// Every entry, shard by shard.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &T> {
        self.shards.iter().flat_map(|s| s.iter())
    }

    /// Every entry, to change: every shard a snapshot holds is copied.
    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.shards.iter_mut().flat_map(|s| Arc::make_mut(s).iter_mut())
    }

    /// The table as it is now: a reference per shard.
    pub(crate) fn snapshot(&self) -> Shards<T> {
        self.shards.to_vec()
    }
}

/// A map from keys to values on a [`Sharded`] table, hashed with a randomly seeded foldhash.
pub(crate) struct CowMap<K, V> {
    table: Sharded<(K, V)>,
    hasher: foldhash::fast::RandomState,
}

impl<K: Copy + Eq + std::hash::Hash, V: Clone> CowMap<K, V> {
    pub(crate) fn new() -> CowMap<K, V> {
        CowMap {
            table: Sharded::new(),
            hasher: foldhash::fast::RandomState::default(),
        }
    }

    #[inline]
    fn hash(&self, key: &K) -> u64 {
        use std::hash::BuildHasher;
        self.hasher.hash_one(key)
    }

    /// An entry's hash, for the table to grow by.
    fn rehash(hasher: &foldhash::fast::RandomState) -> impl Fn(&(K, V)) -> u64 + '_ {
        |(k, _)| std::hash::BuildHasher::hash_one(hasher, k)
    }

    /// Number of keys.
    pub(crate) fn len(&self) -> usize {
        self.table.len()
    }

    #[inline]
    pub(crate) fn get(&self, key: &K) -> Option<&V> {
        self.table.find(self.hash(key), |(k, _)| k == key).map(|(_, v)| v)
    }

    #[cfg(test)]
    pub(crate) fn contains_key(&self, key: &K) -> bool {
        self.get(key).is_some()
    }

    #[inline]
    pub(crate) fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        let hash = self.hash(key);
        self.table.find_mut(hash, |(k, _)| k == key).map(|(_, v)| v)
    }

    /// `key`'s value, made from `make` if absent.
    #[inline]
    pub(crate) fn get_or_insert_with(&mut self, key: K, make: impl FnOnce() -> V) -> &mut V {
        let hash = self.hash(&key);
        let rehash = Self::rehash(&self.hasher);
        &mut self
            .table
            .find_or_insert_with(hash, |(k, _)| *k == key, || (key, make()), rehash)
            .1
    }

    /// Sets `key`'s value.
    pub(crate) fn insert(&mut self, key: K, value: V) {
        let hash = self.hash(&key);
        let rehash = Self::rehash(&self.hasher);
        self.table.upsert(hash, |(k, _)| *k == key, (key, value), rehash);
    }

    pub(crate) fn remove(&mut self, key: &K) -> Option<V> {
        let hash = self.hash(key);
        self.table.remove(hash, |(k, _)| k == key).map(|(_, v)| v)
    }

    /// Room for `additional` more keys.
    pub(crate) fn reserve(&mut self, additional: usize) {
        self.table.reserve(additional, Self::rehash(&self.hasher));
    }

    /// Every key with its value, in no particular order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.table.iter().map(|(k, v)| (k, v))
    }

    /// Every key with its value, to change.
    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = (&K, &mut V)> {
        self.table.iter_mut().map(|(k, v)| (&*k, v))
    }

    /// Every entry as it is now, taken in microseconds ([`Sharded::snapshot`]).
    pub(crate) fn snapshot(&self) -> Shards<(K, V)> {
        self.table.snapshot()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::collections::HashMap;

    fn hash(k: u64) -> u64 {
        use std::hash::BuildHasher;
        foldhash::fast::FixedState::with_seed(7).hash_one(k)
    }

    /// Random inserts, changes and removals against a std map, with snapshots taken along the
    /// way that must stay as they were taken.
    #[test]
    fn sharded_matches_a_hash_map_and_snapshots_hold_still() {
        let mut next = crate::xorshift(0x9e37_79b9_7f4a_7c15u64);
        let mut table: Sharded<(u64, u64)> = Sharded::new();
        let mut want: HashMap<u64, u64> = HashMap::new();
        type Taken = (Shards<(u64, u64)>, HashMap<u64, u64>);
        let mut snaps: Vec<Taken> = Vec::new();
        for i in 0..60_000u64 {
            let k = next() % 5_000;
            let h = hash(k);
            match next() % 5 {
                0 => match table.find_mut(h, |e| e.0 == k) {
                    Some(e) => {
                        e.1 = i;
                        want.insert(k, i);
                    }
                    None => {
                        table.find_or_insert_with(h, |e| e.0 == k, || (k, i), |e| hash(e.0));
                        want.insert(k, i);
                    }
                },
                1 => {
                    table.upsert(h, |e| e.0 == k, (k, i), |e| hash(e.0));
                    want.insert(k, i);
                }
                2 => assert_eq!(table.remove(h, |e| e.0 == k).map(|e| e.1), want.remove(&k)),
                3 => assert_eq!(table.find(h, |e| e.0 == k).map(|e| e.1), want.get(&k).copied()),
                _ => {
                    if i % 97 == 0 {
                        snaps.push((table.snapshot(), want.clone()));
                    }
                }
            }
            assert_eq!(table.len(), want.len());
        }
        table.reserve(10_000, |e| hash(e.0));
        for e in table.iter_mut() {
            e.1 += 1;
        }
        let now: HashMap<u64, u64> = table.iter().map(|e| (e.0, e.1)).collect();
        assert_eq!(now, want.iter().map(|(k, v)| (*k, v + 1)).collect::<HashMap<_, _>>());
        assert!(!snaps.is_empty());
        for (shards, then) in snaps {
            let held: HashMap<u64, u64> = shards.iter().flat_map(|s| s.iter()).copied().collect();
            assert_eq!(held, then);
        }
    }

    /// The map's calls against a std map, with a snapshot held throughout (every change
    /// copies) and let go halfway (none does).
    #[test]
    fn cow_map_matches_a_hash_map() {
        let mut next = crate::xorshift(0x2545_f491_4f6c_dd1du64);
        let mut map: CowMap<u64, u64> = CowMap::new();
        let mut want: HashMap<u64, u64> = HashMap::new();
        let mut held = Some(map.snapshot());
        for i in 0..40_000u64 {
            if i == 20_000 {
                held = None;
            }
            let k = next() % 3_000;
            match next() % 4 {
                0 => {
                    *map.get_or_insert_with(k, || 0) += i;
                    *want.entry(k).or_insert(0) += i;
                }
                1 => {
                    map.insert(k, i);
                    want.insert(k, i);
                }
                2 => assert_eq!(map.remove(&k), want.remove(&k)),
                _ => assert_eq!(map.get(&k), want.get(&k)),
            }
            assert_eq!(map.len(), want.len());
        }
        assert!(held.is_none());
        let now: HashMap<u64, u64> = map.iter().map(|(k, v)| (*k, *v)).collect();
        assert_eq!(now, want);
    }
}
