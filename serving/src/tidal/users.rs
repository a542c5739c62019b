//! Users, cohorts and relationships through the facade: checked, written to the WAL,
//! answered once durable; and read from the user's owner shard.

use std::collections::BTreeMap;

use tidal_core::ids::check_id;
use tidal_core::record::{Record, RelKind};
use tidal_core::user::CohortDefs;

use super::Tidal;
use super::error::{Error, Result};
use super::types::WriteAck;
use crate::query::{self, UserInfo};

/// Most attributes one user may carry.
pub const MAX_ATTRIBUTES: usize = 64;

impl Tidal {
    fn check_user_id(&self, id: &str) -> Result<()> {
        check_id("user id", id, self.config.server.max_id_bytes).map_err(Error::InvalidId)
    }

    fn check_attributes(&self, attributes: &BTreeMap<String, String>) -> Result<()> {
        if attributes.len() > MAX_ATTRIBUTES {
            return Err(Error::InvalidUser(format!(
                "attributes: {} given, at most {MAX_ATTRIBUTES}",
                attributes.len()
            )));
        }
        let max = self.config.server.max_id_bytes;
        for (k, v) in attributes {
            check_id("attribute name", k, max).map_err(|m| Error::InvalidUser(format!("attributes: {m}")))?;
            check_id(&format!("attribute {k:?}"), v, max)
                .map_err(|m| Error::InvalidUser(format!("attributes.{k}: {m}")))?;
            if v.contains(',') && self.config.cohort_dimensions.contains(k) {
                return Err(Error::InvalidUser(format!("attributes.{k}: {}", comma(v))));
            }
        }
        Ok(())
    }

    fn check_cohort(&self, name: &str, rule: &BTreeMap<String, String>) -> Result<()> {
        check_cohort_name(name)?;
        if rule.is_empty() {
            return Err(Error::InvalidCohort(
                "where: must name at least one dimension:value".into(),
            ));
        }
        for (k, v) in rule {
            if !self.config.cohort_dimensions.contains(k) {
                return Err(Error::InvalidCohort(format!(
                    "where.{k}: not a declared cohort dimension (declared: {})",
                    self.config.cohort_dimensions.join(", ")
                )));
            }
            check_id(&format!("where.{k}"), v, self.config.server.max_id_bytes).map_err(Error::InvalidCohort)?;
            if v.contains(',') {
                return Err(Error::InvalidCohort(format!("where.{k}: {}", comma(v))));
            }
        }
        Ok(())
    }

    fn user_put_record(&self, id: &str, attributes: BTreeMap<String, String>) -> Result<Record> {
        self.check_user_id(id)?;
        self.check_attributes(&attributes)?;
        Ok(Record::UserPut {
            id: id.into(),
            attributes,
        })
    }

    /// Puts a user's attributes (replacing what was there); returns once durable. Cohort
    /// counts follow the user's attributes from this write on.
    pub fn put_user(&self, id: &str, attributes: BTreeMap<String, String>) -> Result<WriteAck> {
        let record = self.user_put_record(id, attributes)?;
        self.write_one(record)
    }

    /// [`put_user`](Self::put_user) without blocking.
    pub async fn put_user_async(&self, id: &str, attributes: BTreeMap<String, String>) -> Result<WriteAck> {
        let record = self.user_put_record(id, attributes)?;
        self.write_one_async(record).await
    }

    /// Deletes a user: attributes, state and edges are dropped (its signals leave every
    /// cohort count and stay counted globally). Returns once durable.
    pub fn delete_user(&self, id: &str) -> Result<WriteAck> {
        self.check_user_id(id)?;
        self.write_one(Record::UserDelete { id: id.into() })
    }

    /// [`delete_user`](Self::delete_user) without blocking.
    pub async fn delete_user_async(&self, id: &str) -> Result<WriteAck> {
        self.check_user_id(id)?;
        self.write_one_async(Record::UserDelete { id: id.into() }).await
    }

    /// Declares (or redefines) a composite cohort; its exact counts cover every signal still
    /// inside a window from the answer's LSN on.
    pub fn put_cohort(&self, name: &str, rule: BTreeMap<String, String>) -> Result<WriteAck> {
        self.check_cohort(name, &rule)?;
        self.write_one(Record::CohortPut {
            name: name.into(),
            rule,
        })
    }

    /// [`put_cohort`](Self::put_cohort) without blocking.
    pub async fn put_cohort_async(&self, name: &str, rule: BTreeMap<String, String>) -> Result<WriteAck> {
        self.check_cohort(name, &rule)?;
        self.write_one_async(Record::CohortPut {
            name: name.into(),
            rule,
        })
        .await
    }

    /// Drops a declared cohort (a composite asked for afterwards is estimated).
    pub fn delete_cohort(&self, name: &str) -> Result<WriteAck> {
        check_cohort_name(name)?;
        self.write_one(Record::CohortDelete { name: name.into() })
    }

    /// [`delete_cohort`](Self::delete_cohort) without blocking.
    pub async fn delete_cohort_async(&self, name: &str) -> Result<WriteAck> {
        check_cohort_name(name)?;
        self.write_one_async(Record::CohortDelete { name: name.into() }).await
    }

    fn relationship_record(&self, user: &str, creator: &str, kind: RelKind, active: bool) -> Result<Record> {
        self.check_user_id(user)?;
        check_id("creator", creator, self.config.server.max_id_bytes).map_err(Error::InvalidId)?;
        Ok(Record::Relationship {
            user: user.into(),
            creator: creator.into(),
            kind,
            active,
        })
    }

    /// Sets (`active`) or clears a follow or block edge from a user to a creator.
    pub fn relationship(&self, user: &str, creator: &str, kind: RelKind, active: bool) -> Result<WriteAck> {
        let record = self.relationship_record(user, creator, kind, active)?;
        self.write_one(record)
    }

    /// [`relationship`](Self::relationship) without blocking.
    pub async fn relationship_async(&self, user: &str, creator: &str, kind: RelKind, active: bool) -> Result<WriteAck> {
        let record = self.relationship_record(user, creator, kind, active)?;
        self.write_one_async(record).await
    }

    /// A user's attributes, cohorts, state counts, edges and top creators; `None` when the
    /// user has no state. In a cluster, only for users this process owns.
    pub fn user(&self, id: &str) -> Result<Option<UserInfo>> {
        self.check_user_id(id)?;
        Ok(query::user_view(&self.view(), &self.config, id, false))
    }

    /// [`user`](Self::user) on a given state, with the preference vector when `vector`. In
    /// a cluster the vector takes the embeddings of items other processes own from them, and
    /// the top creators their names (blocking requests to each), as `for_you` does.
    pub fn user_on(&self, view: &tidal_sinks::View, id: &str, vector: bool) -> Result<Option<UserInfo>> {
        self.check_user_id(id)?;
        let Some(peers) = self.peers.as_ref() else {
            return Ok(query::user_view(view, &self.config, id, vector));
        };
        self.at_common_state(peers, view.clone(), |view| {
            let Some(mut info) = query::user_view(view, &self.config, id, false) else {
                return Ok(Some(None));
            };
            if !info.unnamed.is_empty() {
                let hashes: Vec<u64> = info.unnamed.iter().map(|(h, _)| *h).collect();
                let mut names = std::collections::HashMap::new();
                // At this state's frontier: a process whose state is behind it would not know
                // the creator of an item put just before (and name none).
                for p in peers.others() {
                    match peers.creator_names(p, view.frontier, &hashes)? {
                        crate::cluster::Answer::At(found) => names.extend(found),
                        crate::cluster::Answer::Gone => return Ok(None),
                    }
                }
                info.name_creators(&names);
            }
            if !vector {
                return Ok(Some(Some(info)));
            }
            let user = view.shard_of(id).and_then(|s| s.user(tidal_core::flow::id_hash(id)));
            Ok(self.preference_cluster(peers, view, user.map(|u| &**u))?.map(|v| {
                info.vector = Some(v);
                Some(info)
            }))
        })
    }

    /// The declared cohorts as of the latest state (the schema's and those put since).
    pub fn cohorts(&self) -> CohortDefs {
        self.cohorts_on(&self.view())
    }

    /// The declared cohorts on a given state.
    pub fn cohorts_on(&self, view: &tidal_sinks::View) -> CohortDefs {
        view.shards
            .first()
            .map(|s| (**s.cohort_defs()).clone())
            .unwrap_or_default()
    }

    /// The declared cohorts on a given state as `GET /v1/cohorts` and `GET /v1/schema` list
    /// them: `{"name": .., "where": {dimension: value}}`.
    pub fn cohort_list_on(&self, view: &tidal_sinks::View) -> Vec<serde_json::Value> {
        self.cohorts_on(view)
            .iter()
            .map(|(name, rule)| serde_json::json!({"name": name, "where": rule}))
            .collect()
    }
}

/// A cohort's name: 1-64 characters of `[a-z0-9_-]` (a `cohort=` without `:` is a name).
fn check_cohort_name(name: &str) -> Result<()> {
    if tidal_core::config::valid_name(name) {
        Ok(())
    } else {
        Err(Error::InvalidCohort(format!(
            "cohort name {name:?}: must be 1-64 characters of [a-z0-9_-]"
        )))
    }
}

/// Why a cohort dimension's value cannot hold a comma.
fn comma(v: &str) -> String {
    format!("{v:?} holds a ',', which no cohort= could name (it separates dimension:value pairs)")
}
