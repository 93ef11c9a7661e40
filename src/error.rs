//! The HTTP-edge error type. Policy: every error names what was wrong and what to do; internal details are
//! logged inside the request span and never sent to the client.

use axum::Json;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde_json::json;

use crate::auth::HeaderError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    Unauthorized {
        message: String,
        /// Extra `WWW-Authenticate` parameters (e.g. `resource_metadata`), already formatted.
        realm_hint: Option<String>,
    },
    #[error("{0}")]
    BadHeader(HeaderError),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{message}")]
    TooManyRequests {
        message: String,
        retry_after_secs: u64,
    },
    /// An OAuth endpoint error, rendered as RFC 6749 §5.2 JSON (`error`, `error_description`).
    #[error("{error}: {description}")]
    OAuth {
        status: StatusCode,
        error: &'static str,
        description: String,
    },
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::Unauthorized { message, realm_hint } => {
                let mut challenge = String::from("Bearer realm=\"polytomic-mcp\"");
                if let Some(extra) = realm_hint {
                    challenge.push_str(", ");
                    challenge.push_str(&extra);
                }
                let mut response =
                    (StatusCode::UNAUTHORIZED, Json(json!({"error": "unauthorized", "message": message}))).into_response();
                if let Ok(value) = HeaderValue::from_str(&challenge) {
                    response.headers_mut().insert(header::WWW_AUTHENTICATE, value);
                }
                response
            }
            ApiError::BadHeader(error) => (
                StatusCode::BAD_REQUEST,
                Json(json!({"error": "invalid_header", "header": error.header, "message": error.message})),
            )
                .into_response(),
            ApiError::Forbidden(message) => {
                (StatusCode::FORBIDDEN, Json(json!({"error": "forbidden", "message": message}))).into_response()
            }
            ApiError::OAuth { status, error, description } => {
                let mut response = (
                    status,
                    [(header::CACHE_CONTROL, "no-store"), (header::PRAGMA, "no-cache")],
                    Json(json!({"error": error, "error_description": description})),
                )
                    .into_response();
                if status == StatusCode::UNAUTHORIZED {
                    // RFC 6749 §5.2: a failed client authentication names the scheme it expects.
                    response
                        .headers_mut()
                        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"polytomic-mcp\""));
                }
                response
            }
            ApiError::TooManyRequests { message, retry_after_secs } => (
                StatusCode::TOO_MANY_REQUESTS,
                [(header::RETRY_AFTER, retry_after_secs.to_string())],
                Json(json!({"error": "rate_limited", "message": message, "retry_after": retry_after_secs})),
            )
                .into_response(),
            ApiError::Unavailable(message) => (
                StatusCode::SERVICE_UNAVAILABLE,
                // Every 503 here is momentary (capacity, a dependency that did not answer): say when to retry.
                [(header::RETRY_AFTER, "1")],
                Json(json!({"error": "unavailable", "message": message})),
            )
                .into_response(),
        }
    }
}
