//! Protection in front of `/mcp`: per-IP and per-principal rate limits, header and JSON nesting limits.
//! (The body size limit is a tower layer in the router; the in-flight limit is in `front`.) Each check
//! returns the [`ApiError`] to answer.

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::request::Parts;
use http::{Extensions, HeaderMap};

use crate::core::{Principal, now_ms};
use crate::error::ApiError;
use crate::ratelimit::{Decision, OverLimit};
use crate::state::AppState;

/// Total bytes of request headers accepted.
const MAX_HEADER_BYTES: usize = 32 * 1024;
/// JSON nesting accepted in a request body; MCP messages need a handful of levels.
pub const MAX_JSON_DEPTH: usize = 64;

/// The caller's address: the connection's peer, or the last `X-Forwarded-For` hop when the operator says a
/// trusted proxy sets it.
pub fn client_ip(
    headers: &HeaderMap,
    extensions: &Extensions,
    trust_forwarded_for: bool,
) -> String {
    if trust_forwarded_for
        && let Some(last) = headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
    {
        return last.trim().to_owned();
    }
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0.ip().to_string())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// The per-address limit alone, for the public OAuth endpoints.
pub async fn limit_ip(State(state): State<AppState>, request: Request, next: Next) -> Response {
    match ip_over_limit(&state, request.headers(), request.extensions()) {
        Err(refusal) => refusal.into_response(),
        Ok(()) => next.run(request).await,
    }
}

/// A 429 when the caller's address is over its per-minute limit.
fn ip_over_limit(
    state: &AppState,
    headers: &HeaderMap,
    extensions: &Extensions,
) -> Result<(), ApiError> {
    let mut bucket = String::with_capacity(48);
    bucket.push_str("ip:");
    bucket.push_str(&client_ip(
        headers,
        extensions,
        state.config.http.trust_forwarded_for,
    ));
    let limit = state.config.limits.ip_rate_limit_per_minute;
    let Decision::Limited {
        retry_after_secs, ..
    } = state.rate_limiter.hit_local(&bucket, limit, now_ms())
    else {
        return Ok(());
    };
    state.metrics.rate_limited("ip");
    Err(ApiError::TooManyRequests {
        message: format!(
            "too many requests from this address (limit {limit} per minute); retry after {retry_after_secs} s"
        ),
        retry_after_secs,
    })
}

/// The refusal for oversized headers or an address over its limit, checked before authentication does any
/// work.
pub(crate) fn check_headers_and_address(state: &AppState, parts: &Parts) -> Result<(), ApiError> {
    let header_bytes: usize = parts
        .headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    if header_bytes > MAX_HEADER_BYTES {
        return Err(ApiError::HeadersTooLarge {
            bytes: header_bytes,
            limit: MAX_HEADER_BYTES,
        });
    }
    ip_over_limit(state, &parts.headers, &parts.extensions)
}

/// Reads a POST body (already capped by the size-limit layer) and checks its nesting before any parser sees it.
pub(crate) async fn read_body(state: &AppState, body: Body) -> Result<Bytes, ApiError> {
    let limit = state.config.limits.max_request_bytes();
    let timeout = state.config.limits.body_read_timeout();
    // A sender that trickles its body would otherwise hold one of the in-flight slots indefinitely.
    let Ok(read) = tokio::time::timeout(timeout, axum::body::to_bytes(body, limit)).await else {
        return Err(ApiError::BodyTimeout {
            millis: timeout.as_millis(),
        });
    };
    let bytes = read.map_err(|_| ApiError::BodyTooLarge { limit })?;
    if json_depth(&bytes) > MAX_JSON_DEPTH {
        return Err(ApiError::JsonTooDeep {
            limit: MAX_JSON_DEPTH,
        });
    }
    Ok(bytes)
}

/// Per-principal rate limit, after authentication. Over the limit, tool calls get a tool error (the returned
/// marker); far over it (twice the limit), every request gets 429.
pub(crate) async fn limit_principal(
    state: &AppState,
    principal: &Principal,
) -> Result<Option<OverLimit>, ApiError> {
    let limit = state.config.limits.rate_limit_per_minute;
    let now = now_ms();
    let mut bucket = String::with_capacity(16 + principal.fingerprint.len());
    bucket.push_str("principal:");
    bucket.push_str(&principal.fingerprint);
    // An unconfirmed key writes nothing to the store, the shared counter's rows included.
    let decision = if principal.verified {
        state.rate_limiter.hit_shared(&bucket, limit, now).await
    } else {
        state.rate_limiter.hit_local(&bucket, limit, now)
    };
    let Decision::Limited {
        retry_after_secs,
        count,
    } = decision
    else {
        return Ok(None);
    };
    state.metrics.rate_limited("principal");
    if count > 2 * i64::from(limit) {
        return Err(ApiError::TooManyRequests {
            message: format!(
                "this credential sent more than {limit} requests this minute; retry after {retry_after_secs} s"
            ),
            retry_after_secs,
        });
    }
    Ok(Some(OverLimit { retry_after_secs }))
}

/// Deepest nesting of objects and arrays in a JSON text, ignoring brackets inside strings. Invalid JSON is
/// measured the same way; the JSON-RPC layer rejects it afterwards.
pub fn json_depth(bytes: &[u8]) -> usize {
    let (mut depth, mut max, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for &b in bytes {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                max = max.max(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_ignores_brackets_in_strings() {
        assert_eq!(json_depth(br#"{"a":[1,{"b":"[[[{{{"}]}"#), 3);
        assert_eq!(json_depth(br#""\"[""#), 0);
        assert_eq!(json_depth("[".repeat(100).as_bytes()), 100);
    }
}
