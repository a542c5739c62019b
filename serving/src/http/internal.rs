//! What the processes of a cluster ask each other (SPEC §11): a ranking's share, `for_you`
//! candidates, a user's state, embeddings and text statistics, each as of a frontier the
//! asking process names. A frontier this process no longer holds is a 409: the asker
//! retries at a newer one.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::AppState;
use super::error::ApiError;
use super::handlers::{body, counted};
use super::people::json_body;
use crate::cluster::{CreatorsRequest, EmbeddingsRequest, FloorRequest, TextStatsRequest, UserRequest};
use crate::query::cluster::ShareRequest;
use crate::query::{MAX_LIMIT, MAX_OFFSET};
use crate::{RankQuery, Tidal};
use tidal_core::time::Time;
use tidal_sinks::View;

/// The routes here answer only the processes of a cluster: a process alone has no peers,
/// and answers them 404 (they take frontiers and statistics a client has no reason to send).
fn cluster_only(state: &AppState) -> Result<(), ApiError> {
    if state.tidal.in_cluster() {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::NOT_FOUND,
        "not_a_cluster",
        "/v1/internal/* is asked by the other processes of a cluster; this tidal runs alone",
    ))
}

/// A peer's request body as a `T` (only in a cluster); `what` names it in a 400.
fn peer_request<T: serde::de::DeserializeOwned>(
    state: &AppState,
    raw: Result<Bytes, BytesRejection>,
    what: &str,
) -> Result<T, ApiError> {
    cluster_only(state)?;
    let raw = body(raw)?;
    json_body(&raw, what)
}

fn gone(frontier: Time) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "frontier_gone",
        format!("this process holds no version at frontier {frontier}"),
    )
}

/// Answers `f` on this process's state at `frontier`, its cohort part at `cohorts` or later
/// (a 409 when it no longer holds it).
async fn at_frontier<T: serde::Serialize + Send + 'static>(
    state: &AppState,
    frontier: Time,
    cohorts: Time,
    f: impl FnOnce(&Tidal, &View) -> crate::Result<T> + Send + 'static,
) -> Result<Response, ApiError> {
    // Waited for without holding a read thread: the asking process's scatter waits on this.
    let Some(view) = state.tidal.view_at_async(frontier, cohorts).await else {
        return Err(gone(frontier));
    };
    let tidal = state.tidal.clone();
    let found = state.reads.run(move || f(&tidal, &view)).await?;
    Ok(Json(found?).into_response())
}

/// A share or `for_you` request: the parsed ranking and the request.
fn share_request(
    state: &AppState,
    raw: Result<Bytes, BytesRejection>,
) -> Result<(crate::query::RankParams, ShareRequest), ApiError> {
    let req: ShareRequest = peer_request(state, raw, "share request")?;
    // A share is at most a page past the deepest offset served (and it sizes the text
    // search's collector).
    let most = MAX_OFFSET + MAX_LIMIT + 1;
    if req.need > most {
        return Err(ApiError::bad_request(
            "bad_parameter",
            format!("need: {} is above the most a page asks for ({most})", req.need),
        ));
    }
    let params = state.tidal.parse_query(&RankQuery::from_pairs(req.pairs.clone()))?;
    Ok((params, req))
}

/// A peer's request for this process's share of a ranking: its first `need` items as of
/// `frontier`, for the asking process to merge.
#[utoipa::path(
    post,
    path = "/v1/internal/share",
    tag = "cluster",
    request_body(content = Object, description = "frontier, need, the ranking's query pairs; the user's state, text statistics"),
    responses(
        (status = 200, description = "the share", body = Object),
        (status = 400, description = "a bad parameter", body = super::ErrorBody),
        (status = 409, description = "this process no longer holds that frontier", body = super::ErrorBody),
    )
)]
pub async fn post_share(
    State(state): State<AppState>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let result = async {
        let (params, req) = share_request(&state, raw)?;
        at_frontier(&state, req.frontier, req.cohorts, move |tidal, view| {
            tidal.share_on(view, &params, &req)
        })
        .await
    }
    .await;
    counted(&state, result)
}

/// A peer's request for this process's `for_you` candidates (with the user's preference
/// vector), for the asking process to select from.
#[utoipa::path(
    post,
    path = "/v1/internal/for_you",
    tag = "cluster",
    request_body(content = Object, description = "frontier, the ranking's query pairs, the user's state and preference vector"),
    responses(
        (status = 200, description = "the candidates", body = Object),
        (status = 400, description = "a bad parameter", body = super::ErrorBody),
        (status = 409, description = "this process no longer holds that frontier", body = super::ErrorBody),
    )
)]
pub async fn post_for_you(
    State(state): State<AppState>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let result = async {
        let (params, req) = share_request(&state, raw)?;
        at_frontier(&state, req.frontier, req.cohorts, move |tidal, view| {
            tidal.for_you_on(view, &params, &req)
        })
        .await
    }
    .await;
    counted(&state, result)
}

/// A peer's request for the state of a user this process owns, as of a frontier.
#[utoipa::path(
    post,
    path = "/v1/internal/user",
    tag = "cluster",
    request_body(content = Object, description = "frontier, id"),
    responses(
        (status = 200, description = "the user's state (null: none)", body = Object),
        (status = 409, description = "this process no longer holds that frontier", body = super::ErrorBody),
    )
)]
pub async fn post_user(
    State(state): State<AppState>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let result = async {
        let req: UserRequest = peer_request(&state, raw, "user state request (fields: frontier, id)")?;
        at_frontier(&state, req.frontier, 0, move |tidal, view| {
            Ok(tidal.user_state_on(view, &req.id))
        })
        .await
    }
    .await;
    counted(&state, result)
}

/// A peer's request for the embeddings of the items (by key) this process owns.
#[utoipa::path(
    post,
    path = "/v1/internal/embeddings",
    tag = "cluster",
    request_body(content = Object, description = "frontier, keys"),
    responses(
        (status = 200, description = "(key, f32 bits) of the keys held here", body = Object),
        (status = 409, description = "this process no longer holds that frontier", body = super::ErrorBody),
    )
)]
pub async fn post_embeddings(
    State(state): State<AppState>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let result = async {
        let req: EmbeddingsRequest = peer_request(&state, raw, "embeddings request (fields: frontier, keys)")?;
        at_frontier(&state, req.frontier, 0, move |tidal, view| {
            Ok(tidal.embeddings_on(view, &req.keys))
        })
        .await
    }
    .await;
    counted(&state, result)
}

/// A peer's request for this process's text statistics of a query's terms.
#[utoipa::path(
    post,
    path = "/v1/internal/text_stats",
    tag = "cluster",
    request_body(content = Object, description = "q, now"),
    responses((status = 200, description = "documents, tokens per field, each term's document frequency", body = Object))
)]
pub async fn post_text_stats(
    State(state): State<AppState>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let result = async {
        let req: TextStatsRequest = peer_request(&state, raw, "text statistics request (fields: q, now)")?;
        let tidal = state.tidal.clone();
        let stats = state.reads.run(move || tidal.text_stats(&req.q, req.now)).await?;
        Ok(Json(json!(stats)).into_response())
    }
    .await;
    counted(&state, result)
}

/// A peer of an event-clock cluster committed a batch: this process's next batches come
/// after it, and its part of the frontier passes it.
#[utoipa::path(
    post,
    path = "/v1/internal/floor",
    tag = "cluster",
    request_body(content = Object, description = "time: the batch's logical time"),
    responses(
        (status = 200, description = "taken", body = Object),
        (status = 501, description = "not a process of an event-clock cluster", body = super::ErrorBody),
    )
)]
pub async fn post_floor(
    State(state): State<AppState>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let result = async {
        let req: FloorRequest = peer_request(&state, raw, "floor request (field: time)")?;
        state.tidal.raise_floor(req.time)?;
        if let Some(p) = req.process {
            state.tidal.heard_from(p, req.time);
        }
        Ok(Json(json!({})).into_response())
    }
    .await;
    counted(&state, result)
}

/// A peer's request for the names of creators by their hashes (a user's top creators whose
/// items live here).
#[utoipa::path(
    post,
    path = "/v1/internal/creators",
    tag = "cluster",
    request_body(content = Object, description = "frontier, hashes: creator id hashes"),
    responses(
        (status = 200, description = "hash -> name, for those this process knows", body = Object),
        (status = 400, description = "too many hashes", body = super::ErrorBody),
        (status = 409, description = "this process no longer holds that frontier", body = super::ErrorBody),
    )
)]
pub async fn post_creators(
    State(state): State<AppState>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let result = async {
        let req: CreatorsRequest = peer_request(&state, raw, "creators request (fields: frontier, hashes)")?;
        // A user's creators: bounded by what one user's state holds in practice.
        const MOST: usize = 100_000;
        if req.hashes.len() > MOST {
            return Err(ApiError::bad_request(
                "bad_parameter",
                format!(
                    "hashes: {} is above the most one request names ({MOST})",
                    req.hashes.len()
                ),
            ));
        }
        at_frontier(&state, req.frontier, 0, move |_, view| {
            Ok(crate::query::creator_names(view, &req.hashes))
        })
        .await
    }
    .await;
    counted(&state, result)
}
