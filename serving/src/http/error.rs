//! API errors in SPEC §5's shape: `{"error": {"code", "message", "index"?}}`, each with a
//! status chosen on purpose — never 200 for an error, never 500 for the caller's mistake. A
//! refused write (503) carries `Retry-After`.

use std::time::Duration;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// An error answered to a client.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable snake_case code.
    pub code: &'static str,
    /// Human-readable message naming the problem.
    pub message: String,
    /// Index of the first bad record in a batch.
    pub index: Option<usize>,
    /// For a refused write: when to retry.
    pub retry_after: Option<Duration>,
}

/// The body of every error answer.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable snake_case code, e.g. `invalid_signal`.
    pub code: String,
    /// A message naming the problem.
    pub message: String,
    /// The index of the first bad record of a batch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
}

impl ApiError {
    /// A 400 with a code and a message.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// Any status.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            index: None,
            retry_after: None,
        }
    }

    /// Marks the record index the error is about.
    pub fn at(mut self, index: usize) -> ApiError {
        self.index = Some(index);
        self
    }

    /// A 404.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// A 503 `starting`, to be retried in a second.
    pub fn starting(message: impl Into<String>) -> ApiError {
        let mut e = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "starting", message);
        e.retry_after = Some(std::time::Duration::from_secs(1));
        e
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_string(),
                message: self.message,
                index: self.index,
            },
        };
        let mut resp = (self.status, Json(body)).into_response();
        if let Some(d) = self.retry_after
            && let Ok(v) = HeaderValue::from_str(&d.as_secs().max(1).to_string())
        {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        resp
    }
}

impl From<crate::Error> for ApiError {
    fn from(e: crate::Error) -> ApiError {
        let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if status == StatusCode::BAD_GATEWAY {
            // Another process of the cluster could not answer (stopped, or starting): its
            // own log says why; this one is not at fault.
            tracing::warn!(error = %e, "a request another process could not answer");
        } else if status.is_server_error() && status != StatusCode::SERVICE_UNAVAILABLE {
            tracing::error!(error = %e, "internal error answering a request");
        }
        ApiError {
            status,
            code: e.code(),
            index: e.index(),
            retry_after: e.retry_after(),
            message: e.to_string(),
        }
    }
}
