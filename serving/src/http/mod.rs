//! The HTTP API (SPEC §5) on axum. [`app`] builds the router from an [`AppState`], so the
//! whole API can be tested without a socket. Writes are validated completely, then appended to
//! the WAL and answered once durable; reads come from the latest published snapshot and never
//! wait on the dataflow (except `min_lsn`, which waits, bounded, for a given LSN to be visible).

mod error;
mod handlers;
pub mod parse;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use tidal_core::config::Config;
use tidal_sinks::Publisher;
use tidal_sources::wal::WalHandle;

use crate::metrics::Metrics;

pub use error::ApiError;

/// Everything a request handler needs.
pub struct Inner {
    /// The schema in force.
    pub config: Arc<Config>,
    /// The write-ahead log.
    pub wal: WalHandle,
    /// The published serving snapshots.
    pub publisher: Arc<Publisher>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Bearer token that writes require, if any.
    pub auth_token: Option<String>,
}

/// Shared handler state.
#[derive(Clone)]
pub struct AppState(pub Arc<Inner>);

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

/// The router of the whole API.
pub fn app(state: AppState) -> Router {
    let body_limit = state.config.server.body_limit_bytes;
    let timeout = Duration::from_millis(state.config.server.request_timeout_ms);
    Router::new()
        .route("/v1/signals", post(handlers::post_signals))
        .route(
            "/v1/items/{id}",
            get(handlers::get_item)
                .put(handlers::put_item)
                .delete(handlers::delete_item),
        )
        .route("/v1/rankings", get(handlers::get_rankings))
        .route("/v1/clock", post(handlers::post_clock).get(handlers::get_clock))
        .route("/v1/schema", get(handlers::get_schema))
        .route("/healthz", get(handlers::healthz))
        .route("/metrics", get(handlers::metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), auth))
        .layer(middleware::from_fn(move |req: Request, next: Next| {
            declared_length(body_limit, req, next)
        }))
        .layer(middleware::from_fn(move |req: Request, next: Next| {
            with_timeout(timeout, req, next)
        }))
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}

async fn not_found(req: Request) -> ApiError {
    ApiError::not_found(format!("no endpoint at {} {}", req.method(), req.uri().path()))
}

async fn method_not_allowed(req: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{} is not allowed on {}", req.method(), req.uri().path()),
    )
}

/// Writes (every method but GET/HEAD) need `Authorization: Bearer <token>` when a token is set.
async fn auth(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if let Some(token) = &state.auth_token {
        let is_read = matches!(*req.method(), Method::GET | Method::HEAD);
        if !is_read {
            let given = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "));
            let ok = given.is_some_and(|g| constant_time_eq(g.as_bytes(), token.as_bytes()));
            if !ok {
                let msg = if given.is_none() {
                    "this endpoint requires Authorization: Bearer <token>"
                } else {
                    "the bearer token is not valid"
                };
                let mut resp = ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", msg).into_response();
                resp.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
                return resp;
            }
        }
    }
    next.run(req).await
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Answers 413 at once when the declared body length is over the limit, before reading it.
async fn declared_length(limit: usize, req: Request, next: Next) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(n) = declared
        && n > limit as u64
    {
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the body is {n} bytes; the limit is {limit} bytes (server.body_limit_bytes)"),
        )
        .into_response();
    }
    next.run(req).await
}

async fn with_timeout(timeout: Duration, req: Request, next: Next) -> Response {
    match tokio::time::timeout(timeout, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            format!("the request took longer than {} ms", timeout.as_millis()),
        )
        .into_response(),
    }
}
