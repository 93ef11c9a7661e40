//! The Polytomic client: one pooled reqwest client, request planning (validation against the index and URL
//! building), bounded retries, a streamed response-size cap, and response shaping for agents.

pub mod pages;
pub mod plan;
mod shape;

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use tracing::Instrument;
use tracing::field::Empty;

pub use plan::{PlanError, PlannedRequest, plan};
pub use shape::{ShapeOptions, Shaped, shape_body};

use crate::config::UpstreamSettings;
use crate::core::{CappedReadError, read_capped};
use crate::secret::Secret;
use crate::telemetry::otel;

/// Retries after the first attempt for retryable statuses and connection failures.
const MAX_RETRIES: u32 = 2;
/// Longest `Retry-After` honoured; a longer wait is handed back to the agent instead.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(10);
/// Longest wait for Polytomic's verdict on an API key; past it the key is let through unconfirmed.
const KEY_CHECK_TIMEOUT: Duration = Duration::from_secs(5);
/// `/api/me` answers are small; a larger one is not what we asked for.
const MAX_KEY_CHECK_RESPONSE: usize = 64 * 1024;
/// The key check says what it is in its User-Agent, so Polytomic's logs (and the tests' mock) can tell it
/// from an agent's own `GET /api/me`.
const KEY_CHECK_USER_AGENT: &str =
    concat!("polytomic-mcp/", env!("CARGO_PKG_VERSION"), " (key-check)");

/// Response headers worth showing the agent so it can pace itself.
pub const RATE_LIMIT_HEADERS: [HeaderName; 5] = [
    HeaderName::from_static("x-ratelimit-limit"),
    HeaderName::from_static("x-ratelimit-remaining"),
    HeaderName::from_static("x-ratelimit-reset"),
    header::RETRY_AFTER,
    HeaderName::from_static("x-polytomic-version"),
];

#[derive(Debug, Clone)]
pub struct Upstream {
    client: reqwest::Client,
    pub base_url: url::Url,
    pub api_version: String,
    total_timeout: Duration,
    max_response_bytes: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("could not build the HTTP client: {0}")]
    Client(String),
    #[error("the Polytomic API did not answer within {0:?}")]
    Timeout(Duration),
    #[error("could not reach the Polytomic API: {0}")]
    Connect(String),
    #[error("the Polytomic API's response was larger than {0} bytes")]
    TooLarge(usize),
}

/// Polytomic's verdict on an API key, from `GET /api/me` with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyCheck {
    /// Polytomic accepted the key; the user and organization are those `/api/me` names, when it names them.
    Accepted {
        user_id: Option<String>,
        organization_id: Option<String>,
    },
    /// Polytomic answered 401: it does not know the key.
    Rejected,
    /// No verdict: Polytomic did not answer in time, or answered something other than success or 401.
    Unknown(String),
}

/// What came back from Polytomic.
#[derive(Debug)]
pub struct UpstreamResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub attempts: u32,
    pub elapsed: Duration,
}

impl Upstream {
    /// `max_idle` is the idle connections kept per host: as many as requests may be in flight (with fewer, a
    /// burst closes the extras after use and the next burst pays for new connections again).
    pub fn new(config: &UpstreamSettings, max_idle: usize) -> Result<Self, UpstreamError> {
        let client = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(max_idle)
            .tcp_nodelay(true)
            // A redirect could carry the caller's key to another host; Polytomic's API does not redirect.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("polytomic-mcp/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| UpstreamError::Client(e.to_string()))?;
        Ok(Self {
            client,
            base_url: config.base_url.clone(),
            api_version: config.api_version.clone(),
            total_timeout: config.timeout(),
            max_response_bytes: usize::try_from(config.max_upstream_response_bytes)
                .unwrap_or(usize::MAX),
        })
    }

    /// A plain client for fetching documents (OpenAPI refresh, metadata), sharing the connection pool.
    pub fn http(&self) -> &reqwest::Client {
        &self.client
    }

    pub fn total_timeout(&self) -> Duration {
        self.total_timeout
    }

    /// Sends a planned request with the caller's credential, retrying what is safe to retry.
    pub async fn send(
        &self,
        request: &PlannedRequest,
        bearer: &Secret,
    ) -> Result<UpstreamResponse, UpstreamError> {
        self.send_before(request, bearer, Instant::now() + self.total_timeout)
            .await
    }

    /// [`Upstream::send`] within a deadline the caller already holds (one time budget for several pages).
    pub async fn send_before(
        &self,
        request: &PlannedRequest,
        bearer: &Secret,
        deadline: Instant,
    ) -> Result<UpstreamResponse, UpstreamError> {
        let started = Instant::now();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(UpstreamError::Timeout(self.total_timeout));
            }
            let span = attempt_span(request, attempt);
            let outcome = tokio::time::timeout(remaining, self.attempt(request, bearer))
                .instrument(span.clone())
                .await;
            record_outcome(&span, &outcome);
            drop(span);
            let retry_allowed = request.retryable() && attempt <= MAX_RETRIES;
            match outcome {
                Err(_) => return Err(UpstreamError::Timeout(self.total_timeout)),
                Ok(Err(AttemptError::Connect(message))) => {
                    if retry_allowed && backoff(attempt, None, deadline).await {
                        continue;
                    }
                    return Err(UpstreamError::Connect(message));
                }
                Ok(Err(AttemptError::TooLarge)) => {
                    return Err(UpstreamError::TooLarge(self.max_response_bytes));
                }
                Ok(Ok((status, headers, body))) => {
                    let retryable_status = matches!(status.as_u16(), 429 | 502 | 503 | 504);
                    if retryable_status && retry_allowed {
                        let wait = retry_after(&headers);
                        if wait.is_none_or(|w| w <= MAX_RETRY_AFTER)
                            && backoff(attempt, wait, deadline).await
                        {
                            continue;
                        }
                    }
                    return Ok(UpstreamResponse {
                        status,
                        headers,
                        body,
                        attempts: attempt,
                        elapsed: started.elapsed(),
                    });
                }
            }
        }
    }

    /// Asks Polytomic whether it accepts `key` (`GET /api/me`, one attempt, at most five seconds).
    pub async fn check_key(&self, key: &Secret) -> KeyCheck {
        let Ok(authorization) = bearer_header(key) else {
            // A key that cannot be sent in a header can never be accepted.
            return KeyCheck::Rejected;
        };
        let url = format!("{}/api/me", self.base_url.as_str().trim_end_matches('/'));
        let span = otel::trace_span!(
            "GET /api/me",
            otel.kind = "client",
            http.request.method = "GET",
            url.template = "/api/me",
            http.response.status_code = Empty,
        );
        let mut trace = HeaderMap::new();
        span.in_scope(|| otel::inject_current(&mut trace));
        let sent = self
            .client
            .get(url)
            .headers(trace)
            .header(header::AUTHORIZATION, authorization)
            .header("X-Polytomic-Version", &self.api_version)
            .header(header::ACCEPT, "application/json")
            .header(header::USER_AGENT, KEY_CHECK_USER_AGENT)
            .timeout(KEY_CHECK_TIMEOUT.min(self.total_timeout))
            .send()
            .instrument(span.clone())
            .await;
        let response = match sent {
            Ok(response) => response,
            Err(error) => {
                otel::failed(&span, "connect");
                return KeyCheck::Unknown(describe_reqwest(&error));
            }
        };
        let status = response.status();
        span.record("http.response.status_code", status.as_u16());
        if status == StatusCode::UNAUTHORIZED {
            return KeyCheck::Rejected;
        }
        if !status.is_success() {
            return KeyCheck::Unknown(format!("GET /api/me answered {}", status.as_u16()));
        }
        // The status is the verdict; the ids are a bonus when the body is what the API documents.
        let body = read_capped(response, MAX_KEY_CHECK_RESPONSE)
            .await
            .unwrap_or_default();
        let (user_id, organization_id) = identity_of(&body);
        KeyCheck::Accepted {
            user_id,
            organization_id,
        }
    }

    async fn attempt(
        &self,
        request: &PlannedRequest,
        bearer: &Secret,
    ) -> Result<(StatusCode, HeaderMap, Bytes), AttemptError> {
        let mut builder = self
            .client
            .request(request.method.clone(), request.url.clone())
            .header(header::AUTHORIZATION, bearer_header(bearer)?)
            .header("X-Polytomic-Version", &self.api_version)
            .header(header::ACCEPT, "application/json");
        if let Some(key) = &request.idempotency_key {
            builder = builder.header("Idempotency-Key", key);
        }
        if otel::enabled() {
            let mut trace = HeaderMap::new();
            otel::inject_current(&mut trace);
            builder = builder.headers(trace);
        }
        if let Some(body) = &request.body {
            builder = builder
                .header(header::CONTENT_TYPE, "application/json")
                .body(body.clone());
        }
        let response = builder
            .send()
            .await
            .map_err(|e| AttemptError::Connect(describe_reqwest(&e)))?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = read_capped(response, self.max_response_bytes)
            .await
            .map_err(|e| match e {
                CappedReadError::TooLarge { .. } => AttemptError::TooLarge,
                CappedReadError::Read(e) => AttemptError::Connect(describe_reqwest(&e)),
            })?;
        Ok((status, headers, Bytes::from(body)))
    }
}

/// The trace span of one attempt: `METHOD /template` (never the filled-in path or the query), the retry number,
/// and after it the status and any `Retry-After`.
fn attempt_span(request: &PlannedRequest, attempt: u32) -> tracing::Span {
    let span = otel::trace_span!(
        "upstream attempt",
        otel.kind = "client",
        http.request.method = request.method.as_str(),
        url.template = request.path_template.as_str(),
        http.request.resend_count = Empty,
        http.response.status_code = Empty,
        "http.response.header.retry-after" = Empty,
    );
    if !span.is_disabled() {
        span.record(
            "otel.name",
            format!("{} {}", request.method, request.path_template),
        );
        if attempt > 1 {
            span.record("http.request.resend_count", attempt - 1);
        }
    }
    span
}

type AttemptOutcome =
    Result<Result<(StatusCode, HeaderMap, Bytes), AttemptError>, tokio::time::error::Elapsed>;

fn record_outcome(span: &tracing::Span, outcome: &AttemptOutcome) {
    if span.is_disabled() {
        return;
    }
    match outcome {
        Err(_) => otel::failed(span, "timeout"),
        Ok(Err(AttemptError::Connect(_))) => otel::failed(span, "connect"),
        Ok(Err(AttemptError::TooLarge)) => otel::failed(span, "response_too_large"),
        Ok(Ok((status, headers, _))) => {
            span.record("http.response.status_code", status.as_u16());
            if let Some(wait) = headers
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
            {
                span.record("http.response.header.retry-after", wait);
            }
            if status.is_server_error() || *status == StatusCode::TOO_MANY_REQUESTS {
                span.record("otel.status_code", "error");
                span.record("error.type", status.as_str());
            }
        }
    }
}

#[derive(Debug)]
enum AttemptError {
    Connect(String),
    TooLarge,
}

/// `data.id` and `data.organization_id` of an `/api/me` answer (strings or numbers), when present.
fn identity_of(body: &[u8]) -> (Option<String>, Option<String>) {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else {
        return (None, None);
    };
    let data = value.get("data").unwrap_or(&value);
    let text = |key: &str| match data.get(key)? {
        serde_json::Value::String(s) if !s.is_empty() && s.len() <= 200 => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    };
    (text("id"), text("organization_id"))
}

fn bearer_header(bearer: &Secret) -> Result<HeaderValue, AttemptError> {
    let mut value =
        HeaderValue::from_str(&format!("Bearer {}", bearer.expose())).map_err(|_| {
            AttemptError::Connect(
                "the API key contains characters that cannot be sent in a header".into(),
            )
        })?;
    value.set_sensitive(true);
    Ok(value)
}

/// reqwest's errors can include the URL; ours never contains secrets, but keep the message short anyway.
fn describe_reqwest(error: &reqwest::Error) -> String {
    if error.is_connect() {
        "connection refused or failed".into()
    } else if error.is_timeout() {
        "timed out".into()
    } else if error.is_body() || error.is_decode() {
        "the response body could not be read".into()
    } else {
        "request failed".into()
    }
}

/// `Retry-After` in seconds (the HTTP-date form is not used by Polytomic).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// Sleeps before the next attempt (exponential from 200 ms, or `Retry-After`); false when the deadline
/// would pass first.
async fn backoff(attempt: u32, retry_after: Option<Duration>, deadline: Instant) -> bool {
    let wait = retry_after
        .unwrap_or_else(|| Duration::from_millis(200 * 2u64.pow(attempt.saturating_sub(1))));
    if Instant::now() + wait >= deadline {
        return false;
    }
    tokio::time::sleep(wait).await;
    true
}

/// Methods `execute` accepts, upper case.
pub fn parse_method(method: &str) -> Option<Method> {
    match method.trim().to_ascii_uppercase().as_str() {
        "GET" => Some(Method::GET),
        "HEAD" => Some(Method::HEAD),
        "POST" => Some(Method::POST),
        "PUT" => Some(Method::PUT),
        "PATCH" => Some(Method::PATCH),
        "DELETE" => Some(Method::DELETE),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_identity_comes_from_the_documented_me_answer_or_not_at_all() {
        let body = br#"{"data": {"id": "u-1", "email": "a@b.c", "organization_id": "org-9"}}"#;
        assert_eq!(
            identity_of(body),
            (Some("u-1".to_owned()), Some("org-9".to_owned()))
        );
        assert_eq!(
            identity_of(br#"{"data": {"id": 42}}"#),
            (Some("42".to_owned()), None)
        );
        assert_eq!(identity_of(b"not json"), (None, None));
        let oversized = format!(r#"{{"data": {{"id": "{}"}}}}"#, "x".repeat(500));
        assert_eq!(identity_of(oversized.as_bytes()), (None, None));
    }
}
