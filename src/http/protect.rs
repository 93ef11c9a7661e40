//! Protection in front of `/mcp`: per-IP and per-principal rate limits, header and JSON nesting limits.
//! (The body size limit is a tower layer in the router; the in-flight limit is in `front`.) Each check
//! returns the [`ApiError`] to answer.

use std::net::{IpAddr, SocketAddr};

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::request::Parts;
use http::{Extensions, HeaderMap};

use crate::core::{ClientAddress, Principal, address_group, now_ms};
use crate::error::ApiError;
use crate::ratelimit::{Decision, OverLimit};
use crate::state::AppState;

/// Total bytes of request headers accepted.
const MAX_HEADER_BYTES: usize = 32 * 1024;
/// JSON nesting accepted in a request body; MCP messages need a handful of levels.
pub const MAX_JSON_DEPTH: usize = 64;

/// The caller's address group for per-address counting ([`address_group`]: an IPv6 client's whole /64 counts
/// as one), or `unknown` without a peer.
pub(crate) fn client_group(
    headers: &HeaderMap,
    extensions: &Extensions,
    trust_forwarded_for: bool,
) -> String {
    client_addr(headers, extensions, trust_forwarded_for)
        .map_or_else(|| "unknown".to_owned(), address_group)
}

/// The caller's address: the connection's peer, or the rightmost `X-Forwarded-For` address when the operator
/// says a trusted proxy sets it. The rightmost over every line, since a proxy may add its own line after the
/// client's; a value that is not an address (optionally with a port) falls back to the peer, so a caller
/// cannot pick its own rate-limit bucket.
/// `None` without a peer (a request that did not come over a socket).
fn client_addr(
    headers: &HeaderMap,
    extensions: &Extensions,
    trust_forwarded_for: bool,
) -> Option<IpAddr> {
    let forwarded = trust_forwarded_for
        .then(|| rightmost_forwarded(headers))
        .flatten();
    forwarded.or_else(|| {
        extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|info| info.0.ip())
    })
}

fn rightmost_forwarded(headers: &HeaderMap) -> Option<IpAddr> {
    let last_line = headers.get_all("x-forwarded-for").iter().next_back()?;
    let value = last_line.to_str().ok()?.rsplit(',').next()?.trim();
    value
        .parse::<IpAddr>()
        .or_else(|_| value.parse::<SocketAddr>().map(|addr| addr.ip()))
        .ok()
}

/// The per-address limit alone, for the public OAuth endpoints, which also learn the address (registration
/// counts per address).
pub async fn limit_ip(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    if let Err(refusal) = ip_over_limit(&state, request.headers(), request.extensions()) {
        return refusal.into_response();
    }
    let address = client_addr(
        request.headers(),
        request.extensions(),
        state.config.http.trust_forwarded_for,
    );
    request.extensions_mut().insert(ClientAddress(address));
    next.run(request).await
}

/// A 429 when the caller's address is over its per-minute limit.
fn ip_over_limit(
    state: &AppState,
    headers: &HeaderMap,
    extensions: &Extensions,
) -> Result<(), ApiError> {
    let mut bucket = String::with_capacity(48);
    bucket.push_str("ip:");
    bucket.push_str(&client_group(
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
    let bytes = read_in_time(state, body).await?;
    if json_depth(&bytes) > MAX_JSON_DEPTH {
        return Err(ApiError::JsonTooDeep {
            limit: MAX_JSON_DEPTH,
        });
    }
    Ok(bytes)
}

/// For the OAuth endpoints, whose handlers read bodies through axum's extractors, which wait as long as the
/// sender takes: the body is read here first, within `/mcp`'s body time and size, so a trickled `/token` or
/// `/register` body cannot hold a connection and a task open.
pub(crate) async fn body_in_time(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let (parts, body) = request.into_parts();
    match read_in_time(&state, body).await {
        Ok(bytes) => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        Err(refusal) => refusal.into_response(),
    }
}

/// The whole body within the configured read time and size, or the refusal naming which was exceeded.
async fn read_in_time(state: &AppState, body: Body) -> Result<Bytes, ApiError> {
    let limit = state.config.limits.max_request_bytes();
    let timeout = state.config.limits.body_read_timeout();
    // A sender that trickles its body would otherwise hold one of the in-flight slots indefinitely.
    let Ok(read) = tokio::time::timeout(timeout, axum::body::to_bytes(body, limit)).await else {
        return Err(ApiError::BodyTimeout {
            millis: timeout.as_millis(),
        });
    };
    read.map_err(|error| {
        if exceeds_length_limit(&error) {
            ApiError::BodyTooLarge { limit }
        } else {
            // A broken chunked encoding or a connection cut mid-body: the client's fault, not its size.
            ApiError::BodyUnreadable
        }
    })
}

/// True when a body read failed on a length limit (ours or the size-limit layer's), not on the body itself.
fn exceeds_length_limit(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(error) = current {
        if error.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        current = error.source();
    }
    false
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

    fn peer(ip: &str) -> Extensions {
        let mut extensions = Extensions::new();
        extensions.insert(ConnectInfo(SocketAddr::new(ip.parse().unwrap(), 40000)));
        extensions
    }

    fn forwarded(lines: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for line in lines {
            headers.append("x-forwarded-for", line.parse().unwrap());
        }
        headers
    }

    #[test]
    fn the_rightmost_forwarded_address_over_every_line_is_the_client() {
        let proxy = peer("10.0.0.2");
        // A client-supplied line first, the proxy's own line last: the proxy's wins.
        let headers = forwarded(&["6.6.6.6, 7.7.7.7", "203.0.113.9"]);
        assert_eq!(client_group(&headers, &proxy, true), "203.0.113.9");
        assert_eq!(client_group(&headers, &proxy, false), "10.0.0.2");
        assert_eq!(
            client_group(&forwarded(&["1.1.1.1", "2001:DB8:0::1"]), &proxy, true),
            "2001:db8:0:0::/64",
            "an IPv6 client counts by its /64, spelled one way"
        );
        assert_eq!(
            client_group(&forwarded(&["198.51.100.7:5123"]), &proxy, true),
            "198.51.100.7"
        );
        assert_eq!(
            client_group(&forwarded(&["[2001:db8::2]:443"]), &proxy, true),
            "2001:db8:0:0::/64"
        );
    }

    #[test]
    fn an_unparsable_forwarded_address_falls_back_to_the_peer() {
        let proxy = peer("10.0.0.2");
        for lines in [
            &["1.2.3.4", "bucket-of-my-choice"][..],
            &["1.2.3.4, "][..],
            &["unknown"][..],
            &[""][..],
        ] {
            assert_eq!(
                client_group(&forwarded(lines), &proxy, true),
                "10.0.0.2",
                "{lines:?}"
            );
        }
    }

    #[test]
    fn depth_ignores_brackets_in_strings() {
        assert_eq!(json_depth(br#"{"a":[1,{"b":"[[[{{{"}]}"#), 3);
        assert_eq!(json_depth(br#""\"[""#), 0);
        assert_eq!(json_depth("[".repeat(100).as_bytes()), 100);
    }
}
