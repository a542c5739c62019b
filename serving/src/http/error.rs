//! API errors in SPEC §5's shape: `{"error": {"code", "message", "index"?}}`, each with a
//! status chosen on purpose — never 200 for an error, never 500 for the caller's mistake.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

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
}

impl ApiError {
    /// A 400 with a code and a message.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            code,
            message: message.into(),
            index: None,
        }
    }

    /// Any status.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            index: None,
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
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = serde_json::json!({"error": {"code": self.code, "message": self.message}});
        if let Some(i) = self.index {
            body["error"]["index"] = i.into();
        }
        (self.status, Json(body)).into_response()
    }
}

impl From<tidal_sources::wal::WalError> for ApiError {
    fn from(e: tidal_sources::wal::WalError) -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "wal_unavailable",
            format!("the write-ahead log did not accept the write: {e}"),
        )
    }
}
