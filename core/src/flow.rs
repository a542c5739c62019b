//! What flows between the stages of the dataflow, and how state is partitioned among its
//! workers. The source, the materializers and the sinks each depend on this vocabulary and on
//! nothing of each other.
//!
//! **Ownership.** Every item (and user) id is owned by one worker of the cluster, chosen by a
//! fixed hash of the id ([`owner`]), the same in every run, process and checkpoint. The owner
//! interns the id to a dense key `local · peers + owner` ([`Partition::key`]): `key % peers`
//! names the owner and `key / peers` indexes that worker's dense arrays. All state keyed by
//! the item lives at its owner, which also publishes the item's share of the serving state.

use std::hash::BuildHasher;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::record::{CommittedBatch, ItemMeta, Position};
use crate::time::Time;

/// An item's dense key at its owner (see [`Partition`]). A delete retires the key.
pub type ItemKey = u64;
/// Index of a signal type in the schema.
pub type KindIdx = u16;
/// Index of a half-life in its signal type's `half_lives`.
pub type HalfLifeIdx = u8;

/// The key of one anchored decay sum: item, signal type, half-life index, epoch start (ms).
pub type DecayKey = (ItemKey, KindIdx, HalfLifeIdx, u64);

/// The seed of the ownership hash; part of the checkpoint format.
const OWNER_SEED: u64 = 0x7469_6461_6c5f_6f77;

/// The owner hash of an id (stable: the same in every process and run).
pub fn id_hash(id: &str) -> u64 {
    foldhash::fast::FixedState::with_seed(OWNER_SEED).hash_one(id.as_bytes())
}

/// The worker (of `peers`) that owns `id`.
pub fn owner(id: &str, peers: usize) -> usize {
    (id_hash(id) % peers.max(1) as u64) as usize
}

/// How ids and keys are spread over the workers of a cluster.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Partition {
    /// Workers in the cluster.
    pub peers: usize,
    /// This worker's index.
    pub index: usize,
}

impl Partition {
    /// Worker `index` of `peers`.
    pub fn new(index: usize, peers: usize) -> Partition {
        Partition {
            peers: peers.max(1),
            index,
        }
    }

    /// Whether this worker owns `id`.
    pub fn owns(&self, id: &str) -> bool {
        owner(id, self.peers) == self.index
    }

    /// The key of this worker's `local`-th id.
    pub fn key(&self, local: u64) -> ItemKey {
        local * self.peers as u64 + self.index as u64
    }

    /// The dense local index of one of this worker's keys.
    pub fn local(&self, key: ItemKey) -> u64 {
        key / self.peers as u64
    }

    /// The worker owning `key`.
    pub fn owner_of_key(&self, key: ItemKey) -> usize {
        (key % self.peers as u64) as usize
    }
}

/// An item as the serving layer knows it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ItemState {
    /// The client's id.
    pub id: String,
    /// Metadata, once put: shared by the entities stage that keeps it and the serving
    /// entries that show it (an embedding and a title are not copied per holder).
    pub meta: Option<Arc<ItemMeta>>,
    /// Deleted and not put again: never listed.
    pub deleted: bool,
}

/// The signal type of a [`SignalEv`] that retires its item's key (a delete): every sum of
/// the item is zeroed, and its `ts_eff` is the delete's commit clock.
pub const RETIRE: KindIdx = KindIdx::MAX;

/// The signal type of a [`SignalEv`] that asks the materializers for a checkpoint of their
/// state as of frontier `ts_eff` (the entities stage forwards it in order with the signals);
/// `item` and `user` carry the log position it covers (LSN and signals).
pub const CHECKPOINT: KindIdx = KindIdx::MAX - 1;

/// One signal as the materializers see it: ids interned, weight in fixed point.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SignalEv {
    /// The item's key.
    pub item: ItemKey,
    /// The signal type's index in the schema.
    pub kind: KindIdx,
    /// `min(ts, T_commit)`, ms.
    pub ts_eff: u64,
    /// The weight in fixed point ([`crate::features::weight_fixed`]).
    pub weight: i64,
    /// The user's interned id; 0 when the signal names no user.
    pub user: u64,
}

/// Committed batches applied together at one logical time: the source coalesces every batch
/// it finds queued (during recovery, replay, or when behind) into one run, since no one can
/// observe the times in between. Each batch keeps its own commit clock for `ts_eff`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Run {
    /// The batches, in log order.
    pub batches: Vec<Arc<CommittedBatch>>,
    /// The log position after the last of them.
    pub position: Position,
}

/// What the source broadcasts to every worker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Control {
    /// Records to apply at the message's time.
    Run(Arc<Run>),
    /// Checkpoint every materializer's state as of frontier `time` (every time before it).
    Checkpoint {
        /// The frontier.
        time: Time,
        /// The log position every batch before `time` reaches.
        position: Position,
    },
    /// The state holds every time before `time`; with `publish`, every shard cuts a version
    /// there (at the same marks, so a reader finds one state common to all of them).
    Mark {
        /// The version's frontier.
        time: Time,
        /// The log position every batch of the origin's WAL before `time` reaches.
        position: Position,
        /// The process whose source made the mark (its WAL is the one `position` is in).
        origin: usize,
        /// Whether the serving shards cut a version here. While the source catches up
        /// (recovery, replay) no one reads the times in between: its marks still close rounds
        /// of the materializers and let the sinks apply what they hold, but only the mark that
        /// ends the catch-up is published — one version, its indexes settled in one pass.
        publish: bool,
    },
    /// In a cluster: process `origin`'s checkpoint writer has finished with every checkpoint
    /// up to frontier `frontier` (written or not). A source asks for its next periodic
    /// checkpoint once every process has finished with its last ([`ClusterFinished`]).
    Finished {
        /// The process.
        origin: usize,
        /// The newest frontier it finished a checkpoint at.
        frontier: Time,
    },
}

/// The newest frontier each process of a cluster has finished a checkpoint at, as its
/// [`Control::Finished`] messages tell: shared by the workers of a process, which note what
/// they receive, and its source, which asks for a periodic checkpoint only once all of them
/// have finished with its last one (so that one process's checkpoints never run ahead of a
/// slower one's by more than the one each process asks for, and the processes keep one in
/// common).
#[derive(Debug)]
pub struct ClusterFinished {
    by_process: Vec<std::sync::atomic::AtomicU64>,
}

impl ClusterFinished {
    /// A table for `processes` processes, none finished yet.
    pub fn new(processes: usize) -> ClusterFinished {
        ClusterFinished {
            by_process: (0..processes).map(|_| std::sync::atomic::AtomicU64::new(0)).collect(),
        }
    }

    /// Notes that `process` has finished at `frontier`.
    pub fn note(&self, process: usize, frontier: Time) {
        if let Some(f) = self.by_process.get(process) {
            f.fetch_max(frontier, std::sync::atomic::Ordering::AcqRel);
        }
    }

    /// The frontier every process has finished at.
    pub fn least(&self) -> Time {
        self.by_process
            .iter()
            .map(|f| f.load(std::sync::atomic::Ordering::Acquire))
            .min()
            .unwrap_or(Time::MAX)
    }
}

/// Writes a checkpoint part's bytes into the writer it is given.
pub type PartFill<'a> = &'a mut dyn FnMut(&mut dyn std::io::Write) -> std::io::Result<()>;

/// Writes a checkpoint part's bytes from a snapshot a worker took, on a thread of the
/// checkpoint writer's, while the worker goes on.
pub type LaterFill = Box<dyn FnOnce(&mut dyn std::io::Write) -> std::io::Result<()> + Send>;

/// How a checkpoint part's bytes are made.
pub enum Fill<'a> {
    /// Encoded on the worker's thread, now, and streamed out as they are made.
    Now(PartFill<'a>),
    /// Encoded later on another thread, from what the worker kept of its state for it.
    Later(LaterFill),
}

/// Where a worker's stateful operators put their checkpoint parts: `(frontier, position,
/// part name, fill)`; the sink has `fill` write into a writer for the part (so a large part
/// is streamed out, never held whole in memory).
pub type PartSink = Arc<dyn Fn(Time, Position, String, Fill<'_>) + Send + Sync>;

/// A checkpoint to start from: the frontier and position it covers and its parts by name.
#[derive(Debug, Default)]
pub struct Restore {
    /// The frontier of the state.
    pub frontier: Time,
    /// The log position it covers.
    pub position: Position,
    /// The parts by name (`w<index>-<operator>`), each taken by the operator that loads
    /// it (so that the bytes are freed once loaded).
    pub parts: std::sync::Mutex<std::collections::HashMap<String, Vec<u8>>>,
}

/// How a worker's stateful operators persist and restore their state.
#[derive(Clone, Default)]
pub struct Persist {
    /// Where checkpoint parts go (`None`: checkpoints are not written).
    pub parts: Option<PartSink>,
    /// The checkpoint to start from.
    pub restore: Option<Arc<Restore>>,
    /// The newest frontier whose checkpoint the writer has finished with (written, or given
    /// up on), which the source reads so that it does not ask for a periodic checkpoint while
    /// the one before is still being written.
    pub finished: Arc<std::sync::atomic::AtomicU64>,
}

impl std::fmt::Debug for Persist {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Persist")
            .field("writes", &self.parts.is_some())
            .field("restore", &self.restore.as_ref().map(|r| r.position))
            .finish()
    }
}

impl Persist {
    /// Takes the bytes of this worker's part `what`, when restoring.
    pub fn take_restored(&self, index: usize, what: &str) -> Option<Vec<u8>> {
        self.restore
            .as_ref()?
            .parts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&part_name(index, what))
    }

    /// Writes this worker's part `what` of the checkpoint at `frontier` through `fill`.
    pub fn write_with(&self, index: usize, what: &str, frontier: Time, position: Position, fill: PartFill<'_>) {
        if let Some(sink) = &self.parts {
            sink(frontier, position, part_name(index, what), Fill::Now(fill));
        }
    }

    /// Hands over this worker's part `what` of the checkpoint at `frontier` as `fill`, which
    /// writes it later on another thread from a snapshot of the state.
    pub fn write_later(&self, index: usize, what: &str, frontier: Time, position: Position, fill: LaterFill) {
        if let Some(sink) = &self.parts {
            sink(frontier, position, part_name(index, what), Fill::Later(fill));
        }
    }

    /// Whether checkpoint parts are written at all (a snapshot is taken only then).
    pub fn writes(&self) -> bool {
        self.parts.is_some()
    }
}

/// The name of worker `index`'s checkpoint part `what`.
pub fn part_name(index: usize, what: &str) -> String {
    format!("w{index}-{what}")
}

/// Where the checkpoint part `name` ([`part_name`]) comes in the order a checkpoint's writer
/// encodes the parts a worker hands over together, lower first. Until its part is encoded, a
/// snapshot holds the state as of the checkpoint, and the worker copies each chunk or shard
/// of it that a signal changes first: the state it changes most per signal goes first (the
/// cohort sums, several per signal), the waiting updates (frozen, never copied) last.
pub fn encode_rank(name: &str) -> usize {
    const ORDER: [&str; 6] = ["cohorts", "windows", "decay", "users", "retained", "entities"];
    let what = name.split_once('-').map_or(name, |(_, what)| what);
    ORDER.iter().position(|o| *o == what).unwrap_or(ORDER.len())
}

/// A user's key: the owner hash of its id ([`id_hash`]). Users are not interned: every
/// worker computes the same key from the id, and the owner of user `u` is `key % peers`
/// ([`owner`]). Two ids with the same 64-bit hash would share state (for a million users,
/// a chance of about 3·10⁻⁸); the owner logs it if it ever happens.
pub type UserKey = u64;

/// A cohort's key: a hash of `dimension:value` ([`cohort_value`]) or of a declared cohort's
/// name ([`cohort_named`]), the same in every worker, process and run.
pub type CohortId = u64;

/// The key of the single-dimension cohort `dimension:value`.
pub fn cohort_value(dimension: &str, value: &str) -> CohortId {
    let mut s = String::with_capacity(dimension.len() + value.len() + 1);
    s.push_str(dimension);
    s.push(':');
    s.push_str(value);
    id_hash(&s)
}

/// The key of the declared cohort `name` (`#` cannot start a dimension name, so the two
/// kinds of keys never meet).
pub fn cohort_named(name: &str) -> CohortId {
    id_hash(&format!("#{name}"))
}

/// What a signal with a user tells the user's owner: sent by the item's owner (which knows
/// the item's key and creator) to the user's.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct UserSig {
    /// The user's key.
    pub user: UserKey,
    /// The item's key.
    pub item: ItemKey,
    /// The signal type.
    pub kind: KindIdx,
    /// `min(ts, T_commit)`, ms.
    pub ts_eff: u64,
    /// The weight in fixed point.
    pub weight: i64,
    /// The owner hash of the item's creator as of the signal; 0 when it has none.
    pub creator: u64,
    /// The LSN of the signal's record: the user's owner applies its records and signals of
    /// one logical time in log order.
    pub lsn: u64,
}
