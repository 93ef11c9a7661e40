//! The HTTP-edge error type. Policy: every error names what was wrong and what to do; internal details are
//! logged inside the request span and never sent to the client.

use axum::Json;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde_json::json;

use crate::core::HeaderError;

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
    #[error("request headers total {bytes} bytes; the limit is {limit}")]
    HeadersTooLarge { bytes: usize, limit: usize },
    #[error(
        "the request body did not arrive within {millis} ms of its headers; send the whole body at once"
    )]
    BodyTimeout { millis: u128 },
    #[error("the request body is larger than {limit} bytes")]
    BodyTooLarge { limit: usize },
    #[error(
        "the request body could not be read (a malformed chunked encoding, or the connection broke off); send it again, whole"
    )]
    BodyUnreadable,
    /// A body nested deeper than the JSON-RPC layer accepts, answered as a JSON-RPC invalid request.
    #[error("JSON nested deeper than {limit} levels")]
    JsonTooDeep { limit: usize },
    #[error("no such route; the MCP endpoint is /mcp")]
    NotFound,
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
            ApiError::HeadersTooLarge { .. } => simple(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "headers_too_large", &self),
            ApiError::BodyTimeout { .. } => simple(StatusCode::REQUEST_TIMEOUT, "body_timeout", &self),
            ApiError::BodyTooLarge { .. } => simple(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", &self),
            ApiError::BodyUnreadable => simple(StatusCode::BAD_REQUEST, "bad_body", &self),
            ApiError::NotFound => simple(StatusCode::NOT_FOUND, "not_found", &self),
            ApiError::JsonTooDeep { .. } => (
                StatusCode::BAD_REQUEST,
                [(header::CONTENT_TYPE, "application/json")],
                json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32600, "message": self.to_string()}}).to_string(),
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

/// The `{"error", "message"}` body most refusals share.
fn simple(status: StatusCode, error: &'static str, message: &ApiError) -> Response {
    (
        status,
        Json(json!({"error": error, "message": message.to_string()})),
    )
        .into_response()
}
