//! The records the WAL stores and the dataflow consumes. A client request becomes one
//! record; a group commit makes several records one [`CommittedBatch`] with one logical time.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::time::Time;

/// Position of a record in the WAL; strictly increasing, first record is 1.
pub type Lsn = u64;

/// How far into the log some state is: the last LSN applied and the signals in the log up to
/// it (so that a lag can be told in signals, whatever the size of the records).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Position {
    /// The last LSN applied (0: none).
    pub lsn: Lsn,
    /// Signals in the records up to `lsn`.
    pub signals: u64,
}

/// One engagement event as the client sent it (after validation).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Signal {
    /// Signal type name.
    pub kind: String,
    /// Item id.
    pub item: String,
    /// User id, when known.
    pub user: Option<String>,
    /// Weight (already defaulted from the schema).
    pub weight: f64,
    /// Event time in ms; `None` = the commit clock.
    pub ts: Option<u64>,
    /// Idempotency key.
    pub id: Option<String>,
}

impl Signal {
    /// `ts_eff = min(ts, T_commit)`, `ts` defaulting to `T_commit`.
    pub fn ts_eff(&self, clock_ms: u64) -> u64 {
        self.ts.map_or(clock_ms, |ts| ts.min(clock_ms))
    }
}

/// An `f32` vector with a total order, so item metadata can be dataflow data.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Embedding(pub Vec<f32>);

impl PartialEq for Embedding {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Embedding {}
impl PartialOrd for Embedding {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Embedding {
    fn cmp(&self, other: &Self) -> Ordering {
        let a = self.0.iter().map(|x| x.to_bits());
        let b = other.0.iter().map(|x| x.to_bits());
        a.cmp(b)
    }
}
impl std::hash::Hash for Embedding {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        for x in &self.0 {
            x.to_bits().hash(state);
        }
    }
}

/// Item metadata, as `PUT /v1/items/{id}` stores it. Every field is optional.
///
/// In JSON (and any human-readable format) absent fields are left out; in binary formats —
/// timely's exchange between the processes of a cluster, which cannot skip a field — it is
/// the WAL's own encoding ([`crate::codec::encode_meta`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ItemMeta {
    /// The author.
    pub creator: Option<String>,
    /// Title (searchable).
    pub title: Option<String>,
    /// Body text (searchable).
    pub text: Option<String>,
    /// Category.
    pub category: Option<String>,
    /// Tags.
    pub tags: Vec<String>,
    /// Creation time, ms since the epoch.
    pub created_at: Option<u64>,
    /// Embedding vector.
    pub embedding: Option<Embedding>,
}

/// [`ItemMeta`] as JSON has it: absent fields left out.
#[derive(Serialize, Deserialize)]
#[serde(remote = "ItemMeta")]
struct ItemMetaText {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    creator: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    category: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    created_at: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    embedding: Option<Embedding>,
}

impl Serialize for ItemMeta {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            ItemMetaText::serialize(self, s)
        } else {
            let mut out = Vec::with_capacity(crate::codec::meta_len(self));
            crate::codec::encode_meta(&mut out, self);
            out.serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for ItemMeta {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<ItemMeta, D::Error> {
        if d.is_human_readable() {
            ItemMetaText::deserialize(d)
        } else {
            let bytes = Vec::<u8>::deserialize(d)?;
            let mut c = crate::codec::Cursor::new(&bytes);
            let meta = crate::codec::decode_meta(&mut c).map_err(serde::de::Error::custom)?;
            c.finish().map_err(serde::de::Error::custom)?;
            Ok(meta)
        }
    }
}

/// One WAL record's content.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Record {
    /// The signals of one request.
    Signals(Vec<Signal>),
    /// An item's metadata was put (replacing what was there).
    ItemPut {
        /// Item id.
        id: String,
        /// The new metadata.
        meta: ItemMeta,
    },
    /// An item was deleted: it leaves every ranking until it is put again.
    ItemDelete {
        /// Item id.
        id: String,
    },
    /// The event clock was moved forward.
    ClockAdvance {
        /// The requested clock, ms.
        to_ms: u64,
    },
    /// The configuration in force from here on (TOML text).
    Config {
        /// The TOML text.
        toml: String,
    },
    /// A user's attributes were put (replacing what was there).
    UserPut {
        /// User id.
        id: String,
        /// Attribute name → value.
        attributes: BTreeMap<String, String>,
    },
    /// A user was deleted: attributes, state and relationships dropped; its past signals stay
    /// counted globally and leave every cohort count.
    UserDelete {
        /// User id.
        id: String,
    },
    /// A composite cohort was declared (replacing one of the same name).
    CohortPut {
        /// Its name.
        name: String,
        /// The attribute values a member has (dimension → value).
        rule: BTreeMap<String, String>,
    },
    /// A declared cohort was dropped.
    CohortDelete {
        /// Its name.
        name: String,
    },
    /// A follow or block edge between a user and a creator was set or cleared.
    Relationship {
        /// User id.
        user: String,
        /// Creator id.
        creator: String,
        /// Follow or block.
        kind: RelKind,
        /// Whether the edge holds from here on.
        active: bool,
    },
}

/// The kind of an explicit user → creator edge.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RelKind {
    /// The user follows the creator (`profile=following`).
    Follow,
    /// The user blocks the creator: its items are never ranked for the user.
    Block,
}

impl RelKind {
    /// The name used in the API.
    pub fn name(self) -> &'static str {
        match self {
            RelKind::Follow => "follow",
            RelKind::Block => "block",
        }
    }
}

impl Record {
    /// Number of signals this record carries.
    pub fn signal_count(&self) -> usize {
        match self {
            Record::Signals(s) => s.len(),
            _ => 0,
        }
    }
}

/// A record with its LSN.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LoggedRecord {
    /// Its position in the log.
    pub lsn: Lsn,
    /// Its content.
    pub record: Record,
}

/// Records made durable together: one group commit, one commit clock, one logical time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CommittedBatch {
    /// The logical time of every update this batch causes.
    pub time: Time,
    /// `T_commit` in ms.
    pub clock_ms: u64,
    /// Records in LSN order.
    pub records: Vec<LoggedRecord>,
}

impl CommittedBatch {
    /// The last LSN in the batch (0 if empty).
    pub fn last_lsn(&self) -> Lsn {
        self.records.last().map_or(0, |r| r.lsn)
    }
}

/// A shared committed batch, as handed from the WAL writer to the dataflow source.
pub type SharedBatch = Arc<CommittedBatch>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn item_meta_leaves_absent_fields_out_of_json_and_keeps_every_field_in_binary() {
        let some = ItemMeta {
            creator: Some("ann".into()),
            tags: vec!["a".into()],
            created_at: Some(7),
            ..ItemMeta::default()
        };
        for meta in [ItemMeta::default(), some] {
            let json = serde_json::to_value(&meta).unwrap();
            assert!(json.get("title").is_none(), "{json}");
            assert_eq!(serde_json::from_value::<ItemMeta>(json).unwrap(), meta);
            // bincode (timely's exchange between processes) cannot skip a field.
            let bytes = bincode::serialize(&Record::ItemPut {
                id: "m1".into(),
                meta: meta.clone(),
            })
            .unwrap();
            let back: Record = bincode::deserialize(&bytes).unwrap();
            assert_eq!(back, Record::ItemPut { id: "m1".into(), meta });
        }
    }
}
