//! Duplicate signals (SPEC §9). A signal whose idempotency `id` was seen, or a byte-identical
//! signal (same kind, item, user, weight bits, ts and id), within the dedup window of the
//! commit clock is a duplicate: it is dropped before writing and counted.
//!
//! Keys are 16-byte prefixes of BLAKE3 hashes of the signal's canonical encoding (content)
//! and of its id, domain-separated. Duplicates are judged at the dedup clock (the largest
//! clock a group asked for so far); what is written is remembered at its batch's commit
//! clock, exactly as recovery rebuilds it from the log, and expires through a queue ordered
//! by that (never decreasing) clock. A window of 0 disables deduplication. At most
//! `max_entries` keys are remembered: past that the oldest are forgotten first (and counted),
//! so memory is bounded by configuration whatever the traffic.

use std::collections::{HashSet, VecDeque};

use foldhash::fast::RandomState;

use tidal_core::record::Signal;

use super::format::encode_signal;

type Key = [u8; 16];

const CONTENT_TAG: u8 = b'c';
const ID_TAG: u8 = b'i';

/// The set of recently written signals.
#[derive(Debug, Default)]
pub struct Dedup {
    window_ms: u64,
    max_entries: usize,
    evicted: u64,
    now_ms: u64,
    /// The keys are BLAKE3 prefixes already: a fast hasher, seeded per process, is enough.
    seen: HashSet<Key, RandomState>,
    order: VecDeque<(u64, Key)>,
    pending: Vec<Key>,
    scratch: Vec<u8>,
}

fn key(tag: u8, bytes: &[u8]) -> Key {
    let mut h = blake3::Hasher::new();
    h.update(&[tag]);
    h.update(bytes);
    let mut k = [0u8; 16];
    k.copy_from_slice(&h.finalize().as_bytes()[..16]);
    k
}

impl Dedup {
    /// Deduplication within `window_ms` of the commit clock (0 = off), remembering at most
    /// `max_entries` keys.
    pub fn new(window_ms: u64, max_entries: usize) -> Dedup {
        Dedup {
            window_ms,
            max_entries,
            ..Dedup::default()
        }
    }

    /// Keys forgotten before their window ended, because `max_entries` was reached.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Whether deduplication is on.
    pub fn enabled(&self) -> bool {
        self.window_ms > 0
    }

    /// Keys currently remembered.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    /// Moves the dedup clock to `clock_ms` (never back) and forgets what fell out of the
    /// window. Returns the clock in force.
    pub fn advance(&mut self, clock_ms: u64) -> u64 {
        self.now_ms = self.now_ms.max(clock_ms);
        while let Some(&(at, k)) = self.order.front() {
            if at.saturating_add(self.window_ms) > self.now_ms {
                break;
            }
            self.order.pop_front();
            self.seen.remove(&k);
        }
        self.now_ms
    }

    fn keys(&mut self, s: &Signal) -> (Key, Option<Key>) {
        self.scratch.clear();
        encode_signal(&mut self.scratch, s);
        let content = key(CONTENT_TAG, &self.scratch);
        let id = s.id.as_deref().map(|id| key(ID_TAG, id.as_bytes()));
        (content, id)
    }

    fn remember(&mut self, k: Key) {
        if self.seen.insert(k) {
            self.pending.push(k);
        }
    }

    /// Dates what was admitted since the last call with the commit clock of its batch.
    pub fn commit(&mut self, clock_ms: u64) {
        let at = self.order.back().map_or(clock_ms, |&(last, _)| clock_ms.max(last));
        self.order.extend(self.pending.drain(..).map(|k| (at, k)));
        while self.order.len() > self.max_entries {
            let Some((_, k)) = self.order.pop_front() else { break };
            self.seen.remove(&k);
            self.evicted += 1;
        }
    }

    /// Whether `s` duplicates a remembered signal; if not, it is remembered (to be dated by
    /// the next [`Dedup::commit`]).
    pub fn check(&mut self, s: &Signal) -> bool {
        if !self.enabled() {
            return false;
        }
        let (content, id) = self.keys(s);
        if self.seen.contains(&content) || id.is_some_and(|k| self.seen.contains(&k)) {
            return true;
        }
        self.remember(content);
        if let Some(k) = id {
            self.remember(k);
        }
        false
    }

    /// Removes duplicates from `signals` (keeping the first of repeats within it) after
    /// moving the dedup clock to `clock_ms`; returns how many were removed. Call
    /// [`Dedup::commit`] once the batch is stamped.
    pub fn filter(&mut self, signals: &mut Vec<Signal>, clock_ms: u64) -> usize {
        if !self.enabled() {
            return 0;
        }
        self.advance(clock_ms);
        let before = signals.len();
        signals.retain(|s| !self.check(s));
        before - signals.len()
    }

    /// Appends the remembered keys with their clocks, oldest first (a checkpoint).
    pub fn save(&self, out: &mut Vec<u8>) {
        use tidal_core::codec::put_u64;
        put_u64(out, self.now_ms);
        put_u64(out, self.evicted);
        put_u64(out, self.order.len() as u64);
        for (at, k) in &self.order {
            put_u64(out, *at);
            out.extend_from_slice(k);
        }
    }

    /// Reads back what [`save`](Self::save) wrote into an empty window.
    pub fn load(&mut self, bytes: &[u8]) -> Result<(), tidal_core::codec::DecodeError> {
        let mut c = tidal_core::codec::Cursor::new(bytes);
        self.now_ms = c.u64("dedup clock")?;
        self.evicted = c.u64("dedup evicted")?;
        let n = c.u64("dedup keys")?;
        // Room for them at once (a checkpoint's window holds millions), within what the
        // bytes can hold: each key is saved with its clock.
        let saved = std::mem::size_of::<u64>() + std::mem::size_of::<Key>();
        let room = usize::try_from(n).unwrap_or(usize::MAX).min(bytes.len() / saved);
        self.seen.reserve(room);
        self.order.reserve(room);
        for _ in 0..n {
            let at = c.u64("dedup key clock")?;
            let mut k = [0u8; 16];
            k.copy_from_slice(c.take(16, "dedup key")?);
            if self.seen.insert(k) {
                self.order.push_back((at, k));
            }
        }
        c.finish()
    }

    /// Remembers signals already in the log at `clock_ms` (recovery).
    pub fn remember_logged<'a>(&mut self, signals: impl IntoIterator<Item = &'a Signal>, clock_ms: u64) {
        if !self.enabled() {
            return;
        }
        self.advance(clock_ms);
        for s in signals {
            self.check(s);
        }
        self.commit(clock_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sig(item: &str, id: Option<&str>) -> Signal {
        Signal {
            kind: "view".into(),
            item: item.into(),
            user: None,
            weight: 1.0,
            ts: None,
            id: id.map(Into::into),
        }
    }

    #[test]
    fn expiry_by_clock() {
        let mut d = Dedup::new(100, usize::MAX);
        let mut v = vec![sig("a", None)];
        assert_eq!(d.filter(&mut v, 1_000), 0);
        d.commit(1_000);
        let mut v = vec![sig("a", None)];
        assert_eq!(d.filter(&mut v, 1_099), 1);
        d.commit(1_099);
        let mut v = vec![sig("a", None)];
        assert_eq!(d.filter(&mut v, 1_100), 0, "expired exactly at the window's end");
        d.commit(1_100);
        assert_eq!(d.len(), 1);
    }

    #[test]
    fn bounded_by_max_entries_oldest_first() {
        let mut d = Dedup::new(1_000_000, 10);
        for i in 0..25u64 {
            let mut v = vec![sig(&format!("i{i}"), None)];
            assert_eq!(d.filter(&mut v, 1_000 + i), 0);
            d.commit(1_000 + i);
            assert!(d.len() <= 10, "{} keys after {i}", d.len());
        }
        assert_eq!(d.evicted(), 15);
        // The newest are still remembered, the oldest are not.
        let mut v = vec![sig("i24", None), sig("i0", None)];
        assert_eq!(d.filter(&mut v, 2_000), 1);
        assert_eq!(v[0].item, "i0");
    }

    #[test]
    fn id_and_content_keys_are_separate() {
        let mut d = Dedup::new(100, usize::MAX);
        let mut v = vec![sig("a", Some("x")), sig("b", Some("x")), sig("c", Some("y"))];
        assert_eq!(d.filter(&mut v, 1), 1);
        assert_eq!(v.len(), 2);
        let mut off = Dedup::new(0, usize::MAX);
        let mut v = vec![sig("a", Some("x")), sig("a", Some("x"))];
        assert_eq!(off.filter(&mut v, 1), 0);
    }
}
