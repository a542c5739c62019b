//! One handler per endpoint.

use std::time::{Duration, Instant};

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use tidal_core::ids::check_id;
use tidal_core::record::Record;
use tidal_core::time::{ClockMode, wall_clock_ms};
use tidal_sinks::Snapshot;
use tidal_sources::wal::Commit;

use super::error::ApiError;
use super::{AppState, parse};
use crate::metrics::{ErrorLabel, RouteLabel};
use crate::query;

/// Appends records to the WAL and waits until they are durable.
async fn commit(state: &AppState, records: Vec<Record>) -> Result<Commit, ApiError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let started = Instant::now();
    state.wal.submit(
        records,
        Box::new(move |r| {
            let _ = tx.send(r);
        }),
    );
    let result = rx.await.map_err(|_| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "wal_unavailable",
            "the write-ahead log stopped",
        )
    })?;
    state.metrics.commit_seconds.observe(started.elapsed().as_secs_f64());
    Ok(result?)
}

fn body(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
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

fn record_error(state: &AppState, e: ApiError) -> ApiError {
    state.metrics.errors.get_or_create(&ErrorLabel { code: e.code }).inc();
    e
}

/// `POST /v1/signals`: one object, an array, or NDJSON; all-or-nothing.
pub async fn post_signals(
    State(state): State<AppState>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let result = async {
        let raw = body(raw)?;
        let ndjson = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("application/x-ndjson") || ct.starts_with("application/ndjson"));
        let values = parse::signal_values(&raw, ndjson, state.config.server.max_records_per_request)?;
        let rules = parse::SignalRules {
            config: &state.config,
            now_ms: wall_clock_ms(),
        };
        let mut signals = Vec::with_capacity(values.len());
        for (i, v) in values.iter().enumerate() {
            signals.push(parse::signal(v, &rules, i)?);
        }
        let n = signals.len();
        let c = commit(&state, vec![Record::Signals(signals)]).await?;
        state.metrics.batch_size.observe(n as f64);
        state.metrics.signals_accepted.inc_by(c.accepted as u64);
        state.metrics.signals_duplicate.inc_by(c.duplicates as u64);
        if c.accepted > 0 {
            state.metrics.records.inc();
        }
        Ok(Json(json!({
            "accepted": c.accepted,
            "duplicates": c.duplicates,
            "lsn": c.last_lsn,
            "clock": c.clock_ms,
        })))
    }
    .await;
    result.map_err(|e| record_error(&state, e))
}

fn item_id(id: &str, state: &AppState) -> Result<(), ApiError> {
    check_id("item id", id, state.config.server.max_id_bytes).map_err(|m| ApiError::bad_request("invalid_id", m))
}

/// `PUT /v1/items/{id}`.
pub async fn put_item(
    State(state): State<AppState>,
    Path(id): Path<String>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let result = async {
        item_id(&id, &state)?;
        let raw = body(raw)?;
        let meta = parse::item(&raw, &state.config)?;
        let c = commit(
            &state,
            vec![Record::ItemPut {
                id: id.clone(),
                meta: meta.clone(),
            }],
        )
        .await?;
        state.metrics.records.inc();
        let mut out = serde_json::to_value(&meta).unwrap_or_else(|_| json!({}));
        out["id"] = json!(id);
        out["lsn"] = json!(c.last_lsn);
        out["clock"] = json!(c.clock_ms);
        Ok(Json(out))
    }
    .await;
    result.map_err(|e| record_error(&state, e))
}

/// `DELETE /v1/items/{id}`: 204 once durable.
pub async fn delete_item(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let result = async {
        item_id(&id, &state)?;
        commit(&state, vec![Record::ItemDelete { id }]).await?;
        state.metrics.records.inc();
        Ok(StatusCode::NO_CONTENT.into_response())
    }
    .await;
    result.map_err(|e| record_error(&state, e))
}

/// Waits (bounded) until the published snapshot includes `min_lsn`.
async fn snapshot_with(state: &AppState, min_lsn: Option<u64>) -> Result<std::sync::Arc<Snapshot>, ApiError> {
    let snap = state.publisher.load();
    let Some(min) = min_lsn else { return Ok(snap) };
    if snap.lsn >= min {
        return Ok(snap);
    }
    if min > state.wal.last_lsn() {
        return Err(ApiError::bad_request(
            "lsn_not_written",
            format!("min_lsn {min} is beyond the last written LSN {}", state.wal.last_lsn()),
        ));
    }
    let deadline = Instant::now() + Duration::from_millis(state.config.server.read_your_writes_timeout_ms);
    loop {
        tokio::time::sleep(Duration::from_micros(250)).await;
        let snap = state.publisher.load();
        if snap.lsn >= min {
            return Ok(snap);
        }
        if Instant::now() >= deadline {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "lsn_not_visible",
                format!(
                    "LSN {min} did not become visible within {} ms (visible: {})",
                    state.config.server.read_your_writes_timeout_ms, snap.lsn
                ),
            ));
        }
    }
}

fn min_lsn(pairs: &[(String, String)]) -> Result<Option<u64>, ApiError> {
    match pairs.iter().rev().find(|(k, _)| k == "min_lsn") {
        None => Ok(None),
        Some((_, v)) => v.parse::<u64>().map(Some).map_err(|_| {
            ApiError::bad_request(
                "invalid_parameter",
                format!("min_lsn must be a non-negative integer, got {v:?}"),
            )
        }),
    }
}

fn query_pairs(q: Result<Query<Vec<(String, String)>>, QueryRejection>) -> Result<Vec<(String, String)>, ApiError> {
    q.map(|Query(p)| p)
        .map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))
}

/// `GET /v1/items/{id}`: metadata and every feature.
pub async fn get_item(
    State(state): State<AppState>,
    Path(id): Path<String>,
    q: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let result = async {
        item_id(&id, &state)?;
        let pairs = query_pairs(q)?;
        let snap = snapshot_with(&state, min_lsn(&pairs)?).await?;
        query::item_view(&snap, &state.config, &id)
            .map(Json)
            .ok_or_else(|| ApiError::not_found(format!("no item {id:?}")))
    }
    .await;
    result.map_err(|e| record_error(&state, e))
}

/// `GET /v1/rankings`.
pub async fn get_rankings(
    State(state): State<AppState>,
    q: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let result = async {
        let pairs = query_pairs(q)?;
        let wait = min_lsn(&pairs)?;
        let params = query::RankParams::parse(&pairs, &state.config)
            .map_err(|e| ApiError::bad_request(e.code(), e.to_string()))?;
        let snap = snapshot_with(&state, wait).await?;
        let started = Instant::now();
        let ranking =
            query::rank(&snap, &state.config, &params).map_err(|e| ApiError::bad_request(e.code(), e.to_string()))?;
        state
            .metrics
            .query_seconds
            .get_or_create(&RouteLabel { route: "rankings" })
            .observe(started.elapsed().as_secs_f64());
        serde_json::to_value(&ranking)
            .map(Json)
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))
    }
    .await;
    result.map_err(|e| record_error(&state, e))
}

/// `POST /v1/clock {"advance_to": ms}` (event clock only).
pub async fn post_clock(
    State(state): State<AppState>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let result = async {
        if state.config.engine.clock != ClockMode::Event {
            return Err(ApiError::bad_request(
                "wall_clock",
                "the clock follows wall time; POST /v1/clock needs the event clock (--clock event)",
            ));
        }
        let raw = body(raw)?;
        let v: Value = serde_json::from_slice(&raw)
            .map_err(|e| ApiError::bad_request("invalid_json", format!("the body is not valid JSON: {e}")))?;
        let to_ms = v
            .get("advance_to")
            .and_then(Value::as_u64)
            .ok_or_else(|| ApiError::bad_request("invalid_clock", "expected {\"advance_to\": <ms since the epoch>}"))?;
        let c = commit(&state, vec![Record::ClockAdvance { to_ms }]).await?;
        Ok(Json(json!({"clock": c.clock_ms, "lsn": c.last_lsn})))
    }
    .await;
    result.map_err(|e| record_error(&state, e))
}

/// `GET /v1/clock`: the commit clock and the serving clock.
pub async fn get_clock(State(state): State<AppState>) -> Json<Value> {
    let snap = state.publisher.load();
    Json(json!({
        "clock": state.wal.clock_ms(),
        "lsn": state.wal.last_lsn(),
        "serving": {"clock": snap.clock_ms(), "lsn": snap.lsn},
        "mode": state.config.engine.clock,
    }))
}

/// `GET /v1/schema`.
pub async fn get_schema(State(state): State<AppState>) -> Json<Value> {
    Json(state.config.schema_json())
}

/// `GET /healthz`.
pub async fn healthz(State(state): State<AppState>) -> Response {
    let snap = state.publisher.load();
    if state.wal.is_poisoned() {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "wal_poisoned",
            "a WAL write or fsync failed; no more writes are accepted. Restart the server.",
        )
        .into_response();
    }
    Json(json!({"status": "ok", "lsn": snap.lsn, "clock": snap.clock_ms()})).into_response()
}

/// `GET /metrics` in Prometheus text.
pub async fn metrics(State(state): State<AppState>) -> Response {
    let snap = state.publisher.load();
    let m = &state.metrics;
    m.serving_lsn.set(snap.lsn as i64);
    m.frontier_lag_lsn
        .set(state.wal.last_lsn().saturating_sub(snap.lsn) as i64);
    m.frontier_lag_ms
        .set(wall_clock_ms().saturating_sub(snap.clock_ms()) as i64);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        m.render(),
    )
        .into_response()
}
