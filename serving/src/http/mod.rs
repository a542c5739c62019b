//! The HTTP API (SPEC §5) on axum: a thin layer over [`Tidal`](crate::Tidal) — handlers parse,
//! call, render. [`app`] builds the router from an [`AppState`], so the whole API can be
//! tested without a socket; [`openapi`] is the OpenAPI 3 document generated from the same
//! route table (`GET /openapi.json`).
//!
//! Reads and writes never wait on each other: parsing and checking a write body runs on the
//! write pool (one of a few kilobytes in place: the two thread hops cost more than its
//! parsing), ranking and item views on the read pool, and the async runtime itself only
//! moves bytes. A write the engine cannot take now (full WAL queue, dataflow too far behind)
//! is answered at once with 503 and `Retry-After`.

mod error;
mod handlers;
mod internal;
pub mod listen;
mod openapi;
pub mod parse;
mod people;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::Tidal;
use crate::metrics::Metrics;

pub use error::{ApiError, ErrorBody, ErrorDetail};

/// Threads waiting on other processes at once: they mostly wait, so more than the cores.
const SCATTER_THREADS: usize = 16;

/// A small pool of threads of its own (a tokio runtime) that CPU work runs on, so that one
/// kind of request cannot take the threads another kind needs.
pub struct Pool {
    rt: Option<tokio::runtime::Runtime>,
}

impl Pool {
    /// A pool of `threads` threads named `name`.
    pub fn new(name: &str, threads: usize) -> std::io::Result<Pool> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .thread_name(name)
            .enable_time()
            .build()?;
        Ok(Pool { rt: Some(rt) })
    }

    /// Runs `f` on the pool and waits for its result without blocking the caller's thread.
    pub async fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T, ApiError> {
        let Some(rt) = &self.rt else {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "shut_down",
                "the server is stopping",
            ));
        };
        rt.spawn(async move { f() }).await.map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                format!("a worker failed: {e}"),
            )
        })
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// Everything a request handler needs.
pub struct Inner {
    /// The engine.
    pub tidal: Arc<Tidal>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Threads for queries.
    pub reads: Pool,
    /// Threads for parsing and checking writes.
    pub writes: Pool,
    /// Threads for the requests that wait on other processes of a cluster (a scattered
    /// ranking, a forwarded item or user, the event clock). Kept apart from `reads`, which
    /// answers the other processes' requests: with one pool, the reads of two processes
    /// waiting on each other's shares held every thread, and the shares queued behind them.
    pub scatter: Pool,
    /// Threads for a read another process forwarded here that itself waits on the others (a
    /// user's vector): the forwarding process's scatter thread waits on it, so it must not
    /// queue behind this process's own scatter threads, which may wait on that process.
    pub forwarded: Pool,
}

/// Shared handler state.
#[derive(Clone)]
pub struct AppState(pub Arc<Inner>);

impl AppState {
    /// State over an engine, with read and write pools sized to the machine (and, in a
    /// cluster, a scatter pool).
    pub fn new(tidal: Arc<Tidal>) -> std::io::Result<AppState> {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let scatter = if tidal.peers().is_some() { SCATTER_THREADS } else { 1 };
        Ok(AppState(Arc::new(Inner {
            tidal,
            metrics: Arc::new(Metrics::new()),
            reads: Pool::new("tidal-read", cores)?,
            writes: Pool::new("tidal-write", cores)?,
            scatter: Pool::new("tidal-scatter", scatter)?,
            forwarded: Pool::new("tidal-forwarded", scatter)?,
        })))
    }
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

/// Every route with its documentation: the router and the OpenAPI document come from here.
fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::base())
        .routes(routes!(handlers::post_signals))
        .routes(routes!(handlers::get_item, handlers::put_item, handlers::delete_item))
        .routes(routes!(people::get_user, people::put_user, people::delete_user))
        .routes(routes!(people::put_cohort, people::delete_cohort))
        .routes(routes!(people::get_cohorts))
        .routes(routes!(people::post_relationships))
        .routes(routes!(handlers::get_rankings))
        .routes(routes!(handlers::post_clock, handlers::get_clock))
        .routes(routes!(handlers::get_schema))
        .routes(routes!(handlers::healthz))
        .routes(routes!(handlers::metrics))
        .routes(routes!(handlers::openapi_json))
        .routes(routes!(internal::post_share))
        .routes(routes!(internal::post_for_you))
        .routes(routes!(internal::post_user))
        .routes(routes!(internal::post_embeddings))
        .routes(routes!(internal::post_text_stats))
        .routes(routes!(internal::post_floor))
        .routes(routes!(internal::post_creators))
}

/// The OpenAPI 3 document of every route.
pub fn openapi() -> utoipa::openapi::OpenApi {
    routes().split_for_parts().1
}

/// The router of the whole API.
pub fn app(state: AppState) -> Router {
    let server = &state.tidal.config().server;
    let body_limit = server.body_limit_bytes;
    let timeout = Duration::from_millis(server.request_timeout_ms);
    let (router, _) = routes().split_for_parts();
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), recovered_reads))
        .layer(middleware::from_fn_with_state(state.clone(), auth))
        .layer(middleware::from_fn(move |req: Request, next: Next| {
            declared_length(body_limit, req, next)
        }))
        .layer(middleware::from_fn(move |req: Request, next: Next| {
            with_timeout(timeout, req, next)
        }))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::map_response(json_errors))
        .with_state(state)
}

/// Error answers that are not JSON yet (an extractor's rejection, such as a path that is
/// not UTF-8) in the API's error shape, their text as the message.
async fn json_errors(resp: Response) -> Response {
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, 64 << 10)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let code = match status {
        StatusCode::BAD_REQUEST => "invalid_request",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "body_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        s if s.is_server_error() => "internal",
        _ => "invalid_request",
    };
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_string()
    } else {
        text
    };
    let mut out = ApiError::new(status, code, message).into_response();
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            out.headers_mut().insert(name.clone(), value.clone());
        }
    }
    out
}

/// The router of a server that is not serving yet: while the engine recovers its checkpoint
/// and WAL (and, in a cluster, waits for every process to connect) the listener is already
/// bound, and every request is answered 503 `starting` with `Retry-After`, saying why and for
/// how long so far — a health check or a load balancer gets an answer, not a refused
/// connection. Each answer closes its connection (`Connection: close`): this listener's
/// connections end when the server begins to serve, and a client that reused one then
/// would find it closed under its next request.
pub fn starting(why: impl Into<String>) -> Router {
    let why: Arc<str> = why.into().into();
    let since = std::time::Instant::now();
    Router::new().fallback(move || {
        let why = why.clone();
        async move {
            let mut resp =
                ApiError::starting(format!("{why}; {:.1} s so far", since.elapsed().as_secs_f64())).into_response();
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            resp
        }
    })
}

/// A read of the state (without `min_lsn`, which waits on its own) while the log this
/// process recovered is not visible yet ([`Tidal::recovering`](crate::Tidal::recovering)):
/// 503 `starting` rather than the state before the restart's tail.
async fn recovered_reads(State(state): State<AppState>, req: Request, next: Next) -> Response {
    // Whether it is recovering first: a field read on every process but a cluster's, and an
    // atomic one there once the recovered log is visible.
    if matches!(*req.method(), Method::GET | Method::HEAD) && state.tidal.recovering() && reads_state(&req) {
        return ApiError::starting(
            "the log this process recovered is not visible yet: it is once every process of the cluster \
             has told the others of its last recovered batch (a read with min_lsn waits for it)",
        )
        .into_response();
    }
    next.run(req).await
}

/// Whether a GET reads the served state without waiting for an LSN of its own.
fn reads_state(req: &Request) -> bool {
    let path = req.uri().path();
    path.starts_with("/v1/")
        && !path.starts_with("/v1/internal/")
        && path != "/v1/clock"
        && !req
            .uri()
            .query()
            .is_some_and(|q| q.split('&').any(|p| p.starts_with("min_lsn=")))
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
    if let Some(token) = &state.tidal.config().server.auth_token {
        let is_read = matches!(*req.method(), Method::GET | Method::HEAD);
        if !is_read {
            let given = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(bearer);
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

/// The token of an `Authorization: Bearer <token>` value (the scheme in any case, RFC 9110).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim_start())
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
