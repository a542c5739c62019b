//! One handler per endpoint: parse, call the facade, render. Each carries its OpenAPI
//! description.

use std::time::Instant;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use tidal_sinks::View;
use utoipa::ToSchema;

use super::error::ApiError;
use super::openapi::{ClockAnswer, DeleteAnswer, HealthAnswer, ItemBodyDoc, ItemDoc};
use super::{AppState, parse};
use crate::metrics::{ErrorLabel, RouteLabel};
use crate::query::Ranking;
use crate::{NewSignal, RankQuery, Reads, SignalsAck};

/// Write bodies up to this size are parsed and checked on the runtime's thread; larger ones on
/// the write pool, so a big NDJSON batch never holds up the runtime.
const INLINE_BODY: usize = 4096;

/// A write's answer: `fields` with the acknowledgement's `lsn`, `clock` and, in a cluster,
/// `token` (as the write answers serialize them: no token outside a cluster).
pub(super) fn with_ack(mut fields: Value, ack: &crate::WriteAck) -> Value {
    if let (Some(o), Ok(Value::Object(a))) = (fields.as_object_mut(), serde_json::to_value(ack)) {
        o.extend(a);
    }
    fields
}

pub(super) fn body(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|e| {
        let status = e.status();
        let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "body_too_large"
        } else {
            "invalid_body"
        };
        ApiError::new(status, code, e.body_text())
    })
}

/// A read's answer: the entity found, or a 404 naming the `what` and id asked for.
pub(super) fn found_or_404<T: serde::Serialize>(what: &str, found: (Option<T>, String)) -> Result<Response, ApiError> {
    match found {
        (Some(v), _) => Ok(Json(v).into_response()),
        (None, id) => Err(ApiError::not_found(format!("no {what} {id:?}"))),
    }
}

/// A read another process owns, answered as it answered it; 404 when it knows no such id.
pub(super) fn forwarded_or_404(
    what: &str,
    found: (Option<crate::cluster::OwnerJson>, String),
) -> Result<Response, ApiError> {
    match found {
        (Some(body), _) => Ok(([(axum::http::header::CONTENT_TYPE, "application/json")], body.0).into_response()),
        (None, id) => Err(ApiError::not_found(format!("no {what} {id:?}"))),
    }
}

/// Counts an error answer by code.
pub(super) fn counted<T>(state: &AppState, r: Result<T, ApiError>) -> Result<T, ApiError> {
    r.inspect_err(|e| {
        state.metrics.errors.get_or_create(&ErrorLabel { code: e.code }).inc();
    })
}

/// [`counted`], and the time of a read answered with success under `route` (in
/// `tidal_query_seconds`), from `started`.
pub(super) fn timed<T>(
    state: &AppState,
    route: &'static str,
    started: Instant,
    r: Result<T, ApiError>,
) -> Result<T, ApiError> {
    if r.is_ok() {
        state
            .metrics
            .query_seconds
            .get_or_create(&RouteLabel { route })
            .observe(started.elapsed().as_secs_f64());
    }
    counted(state, r)
}

/// The state a read of `reads` answers from: the latest, or one including `min_lsn` (waited
/// for) — an LSN of this process's WAL, or of process `P`'s in a cluster (`P:LSN`).
pub(super) async fn snapshot_with(
    state: &AppState,
    min_lsn: Option<(Option<usize>, u64)>,
    reads: Reads,
) -> Result<View, ApiError> {
    Ok(match min_lsn {
        None => state.tidal.view(),
        Some((process, lsn)) => state.tidal.wait_visible_for_async(process, lsn, reads).await?,
    })
}

/// Refuses a query parameter a read does not know (a typo, usually).
pub(super) fn only_params(pairs: &[(String, String)], known: &[&str]) -> Result<(), ApiError> {
    match pairs.iter().find(|(k, _)| !known.contains(&k.as_str())) {
        Some((k, _)) => Err(ApiError::bad_request(
            "unknown_parameter",
            format!("unknown parameter {k:?}; known: {}", known.join(", ")),
        )),
        None => Ok(()),
    }
}

/// A read's `min_lsn` (`LSN`, or `PROCESS:LSN` in a cluster).
pub(super) fn min_lsn_param(pairs: &[(String, String)]) -> Result<Option<(Option<usize>, u64)>, ApiError> {
    Ok(pairs
        .iter()
        .find(|(k, _)| k == "min_lsn")
        .map(|(_, v)| crate::query::parse_min_lsn(v))
        .transpose()
        .map_err(crate::Error::from)?)
}

pub(super) fn query_pairs(
    q: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Vec<(String, String)>, ApiError> {
    let pairs = q
        .map(|Query(p)| p)
        .map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    // `limit=5&limit=7`: which one was meant cannot be told.
    match crate::query::repeated(pairs.iter().map(|(k, _)| k.as_str())) {
        Some(name) => Err(crate::Error::from(crate::query::QueryError::repeated(name)).into()),
        None => Ok(pairs),
    }
}

/// Writes signals: one JSON object, a JSON array of them, or NDJSON
/// (`Content-Type: application/x-ndjson`); all or nothing, answered once durable.
#[utoipa::path(
    post,
    path = "/v1/signals",
    tag = "signals",
    request_body(
        description = "one signal object, an array of them, or NDJSON (one object per line)",
        content((Vec<NewSignal> = "application/json"), (String = "application/x-ndjson"))
    ),
    responses(
        (status = 200, description = "durable", body = SignalsAck),
        (status = 400, description = "a bad record; nothing written; `index` names the first", body = super::ErrorBody),
        (status = 401, description = "missing or wrong bearer token", body = super::ErrorBody),
        (status = 413, description = "body or record count over the limit", body = super::ErrorBody),
        (status = 503, description = "overloaded (with Retry-After), or the WAL is poisoned", body = super::ErrorBody),
    )
)]
pub async fn post_signals(
    State(state): State<AppState>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Json<SignalsAck>, ApiError> {
    let result = async {
        let raw = body(raw)?;
        // Refused before the body is parsed: checking thousands of records only to answer 503
        // would take the cores from the dataflow that has to catch up.
        state.tidal.admit_async().await?;
        let small = raw.len() <= INLINE_BODY;
        let ndjson = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("application/x-ndjson") || ct.starts_with("application/ndjson"));
        let tidal = state.tidal.clone();
        let max = tidal.config().server.max_records_per_request;
        let check = move || -> Result<_, ApiError> {
            let signals = parse::signals(&raw, ndjson, max)?;
            let n = signals.len();
            Ok((tidal.signals_record(signals)?, n))
        };
        // A small body is checked in place (microseconds; two thread hops cost more).
        let (record, n) = if small {
            check()?
        } else {
            state.writes.run(check).await??
        };
        let submitted = Instant::now();
        let ack = state.tidal.write_signals_async(record).await?;
        let m = &state.metrics;
        m.commit_seconds.observe(submitted.elapsed().as_secs_f64());
        m.batch_size.observe(n as f64);
        m.signals_accepted.inc_by(ack.accepted as u64);
        m.signals_duplicate.inc_by(ack.duplicates as u64);
        Ok(Json(ack))
    }
    .await;
    counted(&state, result)
}

/// Puts an item's metadata (replacing what was there); answered once durable.
#[utoipa::path(
    put,
    path = "/v1/items/{id}",
    tag = "items",
    params(("id" = String, Path, description = "item id: 1-256 bytes of UTF-8 without control characters")),
    request_body(content = ItemBodyDoc, description = "every field optional"),
    responses(
        (status = 200, description = "the stored item with the LSN and clock of the write", body = ItemBodyDoc),
        (status = 400, description = "a bad field", body = super::ErrorBody),
        (status = 401, description = "missing or wrong bearer token", body = super::ErrorBody),
        (status = 503, description = "overloaded (with Retry-After)", body = super::ErrorBody),
    )
)]
pub async fn put_item(
    State(state): State<AppState>,
    Path(id): Path<String>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let result = async {
        let raw = body(raw)?;
        let meta = parse::item(&raw, &id)?;
        let ack = state.tidal.put_item_async(&id, meta.clone()).await?;
        // Through the text: an f32 of the embedding is written as its shortest decimal, as
        // GET shows it (0.9), where a JSON value would hold it widened (0.8999999761581421).
        let mut out = serde_json::to_string(&meta)
            .ok()
            .and_then(|text| serde_json::from_str::<Value>(&text).ok())
            .unwrap_or_else(|| json!({}));
        out["id"] = json!(id);
        Ok(Json(with_ack(out, &ack)))
    }
    .await;
    counted(&state, result)
}

/// Deletes an item: it leaves every ranking. Answered once durable with the LSN a following
/// read passes as `min_lsn`.
#[utoipa::path(
    delete,
    path = "/v1/items/{id}",
    tag = "items",
    params(("id" = String, Path, description = "item id")),
    responses(
        (status = 200, description = "deleted", body = DeleteAnswer),
        (status = 400, description = "a bad id", body = super::ErrorBody),
        (status = 401, description = "missing or wrong bearer token", body = super::ErrorBody),
        (status = 503, description = "overloaded (with Retry-After)", body = super::ErrorBody),
    )
)]
pub async fn delete_item(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<DeleteAnswer>, ApiError> {
    let result = async {
        let ack = state.tidal.delete_item_async(&id).await?;
        Ok(Json(DeleteAnswer {
            id,
            lsn: ack.lsn,
            clock: ack.clock,
            token: ack.token,
        }))
    }
    .await;
    counted(&state, result)
}

/// An item's metadata and every feature of every signal type.
#[utoipa::path(
    get,
    path = "/v1/items/{id}",
    tag = "items",
    params(
        ("id" = String, Path, description = "item id"),
        ("min_lsn" = Option<String>, Query, description = "answer from a state that includes this LSN of this process, or PROCESS:LSN (a cluster write's token); waits up to server.read_your_writes_timeout_ms, then 503"),
        ("cohort" = Option<String>, Query, description = "also the item's window counts among this cohort's users (dimension:value[,dimension:value])"),
    ),
    responses(
        (status = 200, description = "the item", body = ItemDoc),
        (status = 400, description = "a bad id or parameter", body = super::ErrorBody),
        (status = 404, description = "unknown or deleted", body = super::ErrorBody),
        (status = 503, description = "min_lsn not visible in time", body = super::ErrorBody),
    )
)]
pub async fn get_item(
    State(state): State<AppState>,
    Path(id): Path<String>,
    q: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let result = async {
        let pairs = query_pairs(q)?;
        only_params(&pairs, &["min_lsn", "cohort"])?;
        let min_lsn = min_lsn_param(&pairs)?;
        state.tidal.check_item_id(&id)?;
        // Checked here before a peer is asked: a bad parameter is this request's 400, not a
        // peer's failure.
        let cohort = pairs
            .iter()
            .find(|(k, _)| k == "cohort")
            .map(|(_, v)| crate::query::parse_cohort(v, state.tidal.config()))
            .transpose()
            .map_err(crate::Error::from)?;
        // In a cluster, an item another process owns is answered by that process.
        let forwarded = pairs.clone();
        if let Some(peers) = state.tidal.peers().cloned()
            && let Some(owner) = state.tidal.owner_process(&id)
            && owner != peers.process()
        {
            let found = state
                .scatter
                .run(move || peers.item(owner, &id, &forwarded).map(|v| (v, id)))
                .await??;
            return forwarded_or_404("item", found);
        }
        let snap = snapshot_with(&state, min_lsn, Reads::counting_cohort(cohort.is_some())).await?;
        let tidal = state.tidal.clone();
        let view = state
            .reads
            .run(move || tidal.item_in_cohort(&snap, &id, cohort.as_deref()).map(|v| (v, id)))
            .await??;
        found_or_404("item", view)
    }
    .await;
    timed(&state, "items", started, result)
}

/// A ranking: built-in profiles `trending`, `rising`, `hot`, `top`, `new`, `following`,
/// `for_you` or one declared in the schema, with a cohort, a user, text, filters, diversity,
/// paging and `explain`.
#[utoipa::path(
    get,
    path = "/v1/rankings",
    tag = "rankings",
    params(
        ("profile" = Option<String>, Query, description = "trending (default), rising, hot, top, new, following, for_you, or a declared profile"),
        ("q" = Option<String>, Query, description = "text (every term) in title or text: alone BM25, with profile= the profile's candidates that match"),
        ("cohort" = Option<String>, Query, description = "dimension:value[,dimension:value] or a declared cohort's name (trending, rising)"),
        ("user" = Option<String>, Query, description = "the user asking: hidden items and blocked creators are left out; needed by following and for_you"),
        ("filter" = Option<String>, Query, description = "unseen: leave out the user's seen items (for_you's default); all: keep them"),
        ("signal" = Option<String>, Query, description = "rank by one signal type"),
        ("signals" = Option<String>, Query, description = "a blend: view:1,like:3"),
        ("window" = Option<String>, Query, description = "trending/rising window, e.g. 24h"),
        ("half_life" = Option<String>, Query, description = "hot half-life, e.g. 6h"),
        ("category" = Option<String>, Query, description = "only items of this category"),
        ("creator" = Option<String>, Query, description = "only items of this creator"),
        ("tag" = Option<String>, Query, description = "only items with this tag"),
        ("exclude" = Option<String>, Query, description = "ids never listed, comma-separated"),
        ("max_per_creator" = Option<usize>, Query, description = "diversity: at most this many items per creator"),
        ("limit" = Option<usize>, Query, description = "page size, default 20, at most 1000"),
        ("cursor" = Option<String>, Query, description = "the next_cursor of the previous page"),
        ("explain" = Option<u8>, Query, description = "1: per-item features and score terms"),
        ("min_lsn" = Option<String>, Query, description = "read your writes: an LSN of this process, or PROCESS:LSN (a cluster write's token); waits (bounded) until it is visible"),
    ),
    responses(
        (status = 200, description = "a page of the ranking", body = Ranking),
        (status = 400, description = "a bad parameter, named in the message", body = super::ErrorBody),
        (status = 503, description = "min_lsn not visible in time", body = super::ErrorBody),
    )
)]
pub async fn get_rankings(
    State(state): State<AppState>,
    q: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<Ranking>, ApiError> {
    let result = async {
        let query = RankQuery::from_pairs(query_pairs(q)?);
        let params = state.tidal.parse_query(&query)?;
        let started = Instant::now();
        let tidal = state.tidal.clone();
        let snap = snapshot_with(
            &state,
            params.min_lsn.map(|l| (params.min_lsn_process, l)),
            Reads::of(&params),
        )
        .await?;
        let ranking = if tidal.peers().is_some() {
            // Scattered to every process: blocking calls to the others, on the pool that
            // waits for peers (never the one that answers them).
            state
                .scatter
                .run(move || tidal.rank_from(snap, &params, query.pairs()))
                .await??
        } else {
            state.reads.run(move || tidal.rank_on(&snap, &params)).await??
        };
        state
            .metrics
            .query_seconds
            .get_or_create(&RouteLabel { route: "rankings" })
            .observe(started.elapsed().as_secs_f64());
        Ok(Json(ranking))
    }
    .await;
    counted(&state, result)
}

/// The body of `POST /v1/clock`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdvanceClock {
    /// The clock to move to, ms since the epoch.
    advance_to: u64,
}

/// Moves the event clock forward (event clock only).
#[utoipa::path(
    post,
    path = "/v1/clock",
    tag = "clock",
    request_body = AdvanceClock,
    responses(
        (status = 200, description = "the new clock and the LSN of the write", body = crate::WriteAck),
        (status = 400, description = "wall clock, or a bad body", body = super::ErrorBody),
        (status = 401, description = "missing or wrong bearer token", body = super::ErrorBody),
    )
)]
pub async fn post_clock(
    State(state): State<AppState>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Json<crate::WriteAck>, ApiError> {
    let result = async {
        let raw = body(raw)?;
        let super::parse::Object::<AdvanceClock>(req) = serde_json::from_slice(&raw).map_err(|e| {
            ApiError::bad_request(
                "invalid_clock",
                format!("expected {{\"advance_to\": <ms since the epoch>}}: {e}"),
            )
        })?;
        let ack = state.tidal.advance_clock_async(req.advance_to).await?;
        // In a cluster the event clock moves on every process (a peer's request is not
        // passed on again).
        if let Some(peers) = state.tidal.peers().cloned()
            && !headers.contains_key(crate::cluster::PEER_HEADER)
        {
            let to = req.advance_to;
            state.scatter.run(move || peers.advance_clock(to)).await??;
        }
        Ok(Json(ack))
    }
    .await;
    counted(&state, result)
}

/// The commit clock and the serving clock.
#[utoipa::path(get, path = "/v1/clock", tag = "clock", responses((status = 200, description = "clocks", body = ClockAnswer)))]
pub async fn get_clock(State(state): State<AppState>) -> Json<ClockAnswer> {
    let snap = state.tidal.view();
    let (clock, mode) = state.tidal.clock();
    Json(ClockAnswer {
        clock,
        lsn: state.tidal.stats().wal_lsn,
        serving: crate::query::AsOf {
            clock: snap.clock_ms(),
            lsn: snap.lsn(),
        },
        cohorts: crate::query::AsOf {
            clock: snap.cohort_clock_ms(),
            lsn: snap.cohort_lsn(),
        },
        mode: mode.name().into(),
    })
}

/// The schema in force.
#[utoipa::path(get, path = "/v1/schema", tag = "schema", responses((status = 200, description = "signal types, cohort dimensions, cohorts, profiles and settings (no secrets)", body = Object)))]
pub async fn get_schema(State(state): State<AppState>) -> Json<Value> {
    Json(state.tidal.schema())
}

/// Liveness: 503 when the WAL is poisoned or the dataflow has stopped.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    responses(
        (status = 200, description = "serving", body = HealthAnswer),
        (status = 503, description = "the WAL is poisoned or the dataflow has stopped", body = super::ErrorBody),
    )
)]
pub async fn healthz(State(state): State<AppState>) -> Response {
    match state.tidal.health() {
        Ok(h) => Json(HealthAnswer {
            status: "ok".into(),
            lsn: h.lsn,
            clock: h.clock,
        })
        .into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, description = "OpenMetrics text", body = String, content_type = "application/openmetrics-text")))]
pub async fn metrics(State(state): State<AppState>) -> Response {
    let m = &state.metrics;
    m.observe(&state.tidal.stats());
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        m.render(),
    )
        .into_response()
}

/// This API's OpenAPI 3 document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations", responses((status = 200, description = "the OpenAPI 3 document", body = Object)))]
pub async fn openapi_json() -> Response {
    match super::openapi().to_json() {
        Ok(s) => ([(header::CONTENT_TYPE, "application/json")], s).into_response(),
        Err(e) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()).into_response(),
    }
}
