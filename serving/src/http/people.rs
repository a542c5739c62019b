//! Handlers of the user, cohort and relationship endpoints.

use std::collections::BTreeMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

use tidal_core::record::RelKind;

use super::AppState;
use super::error::ApiError;
use super::handlers::{
    body, counted, forwarded_or_404, found_or_404, min_lsn_param, only_params, query_pairs, snapshot_with, timed,
    with_ack,
};
use crate::Reads;
use crate::query::UserInfo;

/// `PUT /v1/users/{id}` body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserBody {
    /// Attribute name → value (strings); replaces the previous attributes.
    #[serde(default)]
    attributes: BTreeMap<String, String>,
}

/// `PUT /v1/cohorts/{name}` body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CohortBody {
    /// Dimension → value a member has.
    #[serde(rename = "where")]
    rule: BTreeMap<String, String>,
}

/// `POST /v1/relationships` body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RelationshipBody {
    /// User id.
    user: String,
    /// Creator id.
    creator: String,
    /// `follow` or `block`.
    #[schema(value_type = String, example = "follow")]
    kind: RelKind,
    /// Whether the edge holds from now on (default true).
    #[serde(default = "yes")]
    active: bool,
}

fn yes() -> bool {
    true
}

pub(super) fn json_body<T: serde::de::DeserializeOwned>(raw: &[u8], what: &str) -> Result<T, ApiError> {
    serde_json::from_slice(raw)
        .map(|super::parse::Object(v)| v)
        .map_err(|e| match e.classify() {
            serde_json::error::Category::Data => ApiError::bad_request("invalid_body", format!("{what}: {e}")),
            _ => ApiError::bad_request("invalid_json", format!("the body is not valid JSON: {e}")),
        })
}

/// A user read's parameters: `min_lsn` and `vector`.
type UserParams = (Option<(Option<usize>, u64)>, bool);

fn user_params(pairs: &[(String, String)]) -> Result<UserParams, ApiError> {
    only_params(pairs, &["min_lsn", "vector"])?;
    let vector = pairs
        .iter()
        .find(|(k, _)| k == "vector")
        .map(|(_, v)| crate::query::parse_flag("vector", Some(v)))
        .transpose()
        .map_err(crate::Error::from)?
        .unwrap_or(false);
    Ok((min_lsn_param(pairs)?, vector))
}

/// Puts a user's attributes; answered once durable.
#[utoipa::path(
    put,
    path = "/v1/users/{id}",
    tag = "users",
    params(("id" = String, Path, description = "user id")),
    request_body(content = UserBody),
    responses(
        (status = 200, description = "the stored user with the LSN and clock of the write", body = Object),
        (status = 400, description = "a bad id or attribute", body = super::ErrorBody),
        (status = 401, description = "missing or wrong bearer token", body = super::ErrorBody),
        (status = 503, description = "overloaded (with Retry-After)", body = super::ErrorBody),
    )
)]
pub async fn put_user(
    State(state): State<AppState>,
    Path(id): Path<String>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let result = async {
        let raw = body(raw)?;
        let b: UserBody = json_body(&raw, "user (fields: attributes)")?;
        let ack = state.tidal.put_user_async(&id, b.attributes.clone()).await?;
        Ok(Json(with_ack(json!({"id": id, "attributes": b.attributes}), &ack)))
    }
    .await;
    counted(&state, result)
}

/// A user's attributes, cohorts, seen / liked / hidden counts, edges and top creators.
#[utoipa::path(
    get,
    path = "/v1/users/{id}",
    tag = "users",
    params(
        ("id" = String, Path, description = "user id"),
        ("min_lsn" = Option<String>, Query, description = "answer from a state that includes this LSN"),
        ("vector" = Option<String>, Query, description = "1: include the preference vector"),
    ),
    responses(
        (status = 200, description = "the user", body = UserInfo),
        (status = 404, description = "no state for this user", body = super::ErrorBody),
        (status = 503, description = "min_lsn not visible in time", body = super::ErrorBody),
    )
)]
pub async fn get_user(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
    q: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let started = std::time::Instant::now();
    let result = async {
        let pairs = query_pairs(q)?;
        let (min_lsn, vector) = user_params(&pairs)?;
        if let Some(peers) = state.tidal.peers().cloned()
            && let Some(owner) = state.tidal.owner_process(&id)
            && owner != peers.process()
        {
            let found = state
                .scatter
                .run(move || peers.user(owner, &id, &pairs).map(|v| (v, id)))
                .await??;
            return forwarded_or_404("user", found);
        }
        let view = snapshot_with(&state, min_lsn, Reads::Everything).await?;
        let tidal = state.tidal.clone();
        // In a cluster a user's vector and top creators ask the other processes (embeddings,
        // names): not on the pool that answers them, and for a read another process forwarded
        // here (its scatter thread waiting on this one) not on the pool whose threads wait on
        // the others' either.
        let pool = match (
            tidal.peers().is_some(),
            headers.contains_key(crate::cluster::PEER_HEADER),
        ) {
            (false, _) => &state.reads,
            (true, false) => &state.scatter,
            (true, true) => &state.forwarded,
        };
        let found = pool
            .run(move || tidal.user_on(&view, &id, vector).map(|v| (v, id)))
            .await??;
        found_or_404("user", found)
    }
    .await;
    timed(&state, "users", started, result)
}

/// Deletes a user: attributes, state and edges dropped; its signals leave every cohort count.
#[utoipa::path(
    delete,
    path = "/v1/users/{id}",
    tag = "users",
    params(("id" = String, Path, description = "user id")),
    responses(
        (status = 200, description = "deleted", body = Object),
        (status = 400, description = "a bad id", body = super::ErrorBody),
        (status = 401, description = "missing or wrong bearer token", body = super::ErrorBody),
    )
)]
pub async fn delete_user(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let result = async {
        let ack = state.tidal.delete_user_async(&id).await?;
        Ok(Json(with_ack(json!({ "id": id }), &ack)))
    }
    .await;
    counted(&state, result)
}

/// Declares a composite cohort; a read with the answer's `min_lsn` sees its exact counts.
#[utoipa::path(
    put,
    path = "/v1/cohorts/{name}",
    tag = "cohorts",
    params(("name" = String, Path, description = "cohort name: 1-64 characters of [a-z0-9_-]")),
    request_body(content = CohortBody),
    responses(
        (status = 200, description = "the cohort with the LSN of the write", body = Object),
        (status = 400, description = "a bad name or dimension", body = super::ErrorBody),
        (status = 401, description = "missing or wrong bearer token", body = super::ErrorBody),
    )
)]
pub async fn put_cohort(
    State(state): State<AppState>,
    Path(name): Path<String>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let result = async {
        let raw = body(raw)?;
        let b: CohortBody = json_body(&raw, "cohort (fields: where)")?;
        let ack = state.tidal.put_cohort_async(&name, b.rule.clone()).await?;
        Ok(Json(with_ack(json!({"name": name, "where": b.rule}), &ack)))
    }
    .await;
    counted(&state, result)
}

/// The declared cohorts (those of the schema and those declared since), as of a state
/// that includes `min_lsn` when given.
#[utoipa::path(
    get,
    path = "/v1/cohorts",
    tag = "cohorts",
    params(
        ("min_lsn" = Option<String>, Query, description = "answer from a state that includes this LSN (or PROCESS:LSN)"),
    ),
    responses(
        (status = 200, description = "declared cohorts", body = Object),
        (status = 400, description = "a bad parameter, or min_lsn past the log", body = super::ErrorBody),
        (status = 503, description = "min_lsn not visible in time", body = super::ErrorBody),
    )
)]
pub async fn get_cohorts(
    State(state): State<AppState>,
    q: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let result = async {
        let pairs = query_pairs(q)?;
        only_params(&pairs, &["min_lsn"])?;
        let view = snapshot_with(&state, min_lsn_param(&pairs)?, Reads::Everything).await?;
        Ok(Json(json!({ "cohorts": state.tidal.cohort_list_on(&view) })))
    }
    .await;
    counted(&state, result)
}

/// Drops a declared cohort.
#[utoipa::path(
    delete,
    path = "/v1/cohorts/{name}",
    tag = "cohorts",
    params(("name" = String, Path, description = "cohort name")),
    responses(
        (status = 200, description = "dropped", body = Object),
        (status = 401, description = "missing or wrong bearer token", body = super::ErrorBody),
    )
)]
pub async fn delete_cohort(State(state): State<AppState>, Path(name): Path<String>) -> Result<Json<Value>, ApiError> {
    let result = async {
        let ack = state.tidal.delete_cohort_async(&name).await?;
        Ok(Json(with_ack(json!({ "name": name }), &ack)))
    }
    .await;
    counted(&state, result)
}

/// Sets or clears a follow or block edge from a user to a creator.
#[utoipa::path(
    post,
    path = "/v1/relationships",
    tag = "users",
    request_body(content = RelationshipBody),
    responses(
        (status = 200, description = "stored, with the LSN and clock of the write", body = Object),
        (status = 400, description = "a bad field", body = super::ErrorBody),
        (status = 401, description = "missing or wrong bearer token", body = super::ErrorBody),
    )
)]
pub async fn post_relationships(
    State(state): State<AppState>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let result = async {
        let raw = body(raw)?;
        let b: RelationshipBody = json_body(&raw, "relationship (fields: user, creator, kind, active)")?;
        let ack = state
            .tidal
            .relationship_async(&b.user, &b.creator, b.kind, b.active)
            .await?;
        Ok(Json(with_ack(
            json!({"user": b.user, "creator": b.creator, "kind": b.kind.name(), "active": b.active}),
            &ack,
        )))
    }
    .await;
    counted(&state, result)
}
