//! The router and the whole middleware stack, in one place. Public routes are listed explicitly; everything
//! under `/mcp` is behind Host/Origin checks and authentication.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use http::{HeaderName, HeaderValue, Method, StatusCode, header};
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use serde_json::json;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::limit::RequestBodyLimitLayer;
use tracing::Instrument;
use tracing::field::Empty;

mod address_slots;
mod direct;
mod front;
mod mcp_span;
mod protect;
mod serve;

pub(crate) use serve::serve;

use crate::core::REQUEST_ID_HEADER as REQUEST_ID;
use crate::error::ApiError;
use crate::mcp::{McpState, PolytomicMcp};
use crate::oauth::OAuthState;
use crate::state::AppState;
use crate::telemetry::RequestLabels;

/// The whole application: public routes, the OAuth routes when OAuth is on, and `/mcp`, under one layer
/// stack.
pub fn router(
    state: AppState,
    oauth: Option<OAuthState>,
    mcp: McpState,
    shutdown: CancellationToken,
) -> Router {
    let body_limit = state.config.limits.max_request_bytes();
    // Host and Origin are checked by our own front (before authentication, one rule for every method), so
    // rmcp's built-in host list is disabled rather than kept in sync.
    let mcp_config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        .with_json_response(true)
        .with_sse_keep_alive(None)
        .with_cancellation_token(shutdown.child_token())
        .with_max_request_body_bytes(body_limit)
        .disable_allowed_hosts();
    let mcp_state = mcp.clone();
    let rmcp = StreamableHttpService::new(
        move || Ok(PolytomicMcp::new(mcp_state.clone())),
        Arc::new(NeverSessionManager::default()),
        mcp_config,
    );
    let oauth_on = oauth.is_some();
    let front = front::McpFront {
        state: state.clone(),
        oauth: oauth.clone(),
        mcp,
        rmcp: Arc::new(rmcp),
        keys: Arc::new(crate::auth::KeyVerifier::new(state.upstream.clone())),
        per_address: Arc::new(address_slots::AddressSlots::new(
            state.config.limits.max_concurrent_requests_per_ip as usize,
        )),
        in_flight: Arc::new(Semaphore::new(
            state.config.limits.max_concurrent_requests as usize,
        )),
    };
    let mcp = Router::new()
        .route("/mcp", any(front::serve))
        .with_state(front);

    let mut public = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state.clone());
    // The OAuth routes exist only when OAuth is on; otherwise the fallback answers 404 on every one of them,
    // which keeps clients from caching a bogus authorization server.
    if let Some(oauth) = oauth {
        // Registration, consent and token endpoints face the internet unauthenticated (Claude registers a
        // client on every fresh connect), so they share the per-address limit and the body read time of `/mcp`.
        public = public.merge(
            crate::oauth::router(oauth)
                .layer(from_fn_with_state(state.clone(), protect::body_in_time))
                .layer(from_fn_with_state(state.clone(), protect::limit_ip)),
        );
    }

    let cors = CorsLayer::new()
        .allow_origin({
            // Discovery, registration, token and revocation take no cookies, so any origin may call them
            // (browser-based MCP clients do); everything else only from the allowed origins.
            let allowed: Vec<HeaderValue> = state
                .allowed_origins
                .iter()
                .filter_map(|o| HeaderValue::from_str(o).ok())
                .collect();
            AllowOrigin::predicate(move |origin: &HeaderValue, parts: &http::request::Parts| {
                allowed.contains(origin)
                    || (oauth_on && crate::oauth::is_cors_open_path(parts.uri.path()))
            })
        })
        .allow_methods([Method::GET, Method::POST, Method::DELETE, Method::OPTIONS])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::ACCEPT,
            HeaderName::from_static("mcp-session-id"),
            HeaderName::from_static("mcp-protocol-version"),
            HeaderName::from_static("last-event-id"),
            HeaderName::from_static("mcp-method"),
            HeaderName::from_static("mcp-name"),
            HeaderName::from_static("x-polytomic-access-mode"),
            HeaderName::from_static("x-polytomic-auth-mode"),
            HeaderName::from_static("x-polytomic-partner-org-id"),
        ])
        .expose_headers([
            HeaderName::from_static("mcp-session-id"),
            header::WWW_AUTHENTICATE,
            REQUEST_ID,
        ])
        .max_age(Duration::from_secs(600));

    Router::new()
        .merge(public)
        .merge(mcp)
        .fallback(not_found)
        .layer(RequestBodyLimitLayer::new(body_limit))
        .layer(cors)
        .layer(from_fn_with_state(state, observe))
}

/// Request id, log span, request metrics and sensitive-header marking for every request, in one layer.
async fn observe(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    // A caller's own request id is kept when it is a sane token, so logs can be joined across services.
    let request_id = match request.headers().get(&REQUEST_ID) {
        Some(id) if id.len() <= 128 && id.as_bytes().iter().all(u8::is_ascii_graphic) => id.clone(),
        _ => {
            let mut buffer = uuid::Uuid::encode_buffer();
            let id = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut buffer);
            let id = HeaderValue::from_str(id).unwrap_or(HeaderValue::from_static("-"));
            request.headers_mut().insert(REQUEST_ID, id.clone());
            id
        }
    };
    // Marked so that no Debug output of the headers can show a credential.
    for name in [header::AUTHORIZATION, header::COOKIE] {
        if let header::Entry::Occupied(mut entry) = request.headers_mut().entry(name) {
            for value in entry.iter_mut() {
                value.set_sensitive(true);
            }
        }
    }
    let route = route_label(request.extensions().get::<MatchedPath>());
    // The dotted fields are the trace's HTTP server span attributes, set only while traces are exported (log
    // lines leave them out); the path is the path alone, never the query.
    let span = tracing::info_span!(
        "request",
        method = %request.method(),
        path = %request.uri().path(),
        request_id = request_id.to_str().unwrap_or("-"),
        otel.name = Empty,
        otel.kind = Empty,
        otel.status_code = Empty,
        http.request.method = Empty,
        http.route = Empty,
        url.path = Empty,
        http.response.status_code = Empty,
    );
    let tracing = crate::telemetry::otel::enabled();
    if tracing {
        let method = request.method().as_str();
        // As the HTTP conventions name a server span: `METHOD route`, or the method alone off every route.
        if route == "other" {
            span.record("otel.name", method);
        } else {
            span.record("otel.name", format!("{method} {route}"));
            span.record("http.route", route);
        }
        span.record("otel.kind", "server");
        span.record("http.request.method", method);
        span.record("url.path", request.uri().path());
        crate::telemetry::otel::adopt_header_parent(&span, request.headers());
    }
    let started = std::time::Instant::now();
    let mut response = next.run(request).instrument(span.clone()).await;
    let status = response.status();
    if tracing {
        span.record("http.response.status_code", status.as_u16());
        if status.is_server_error() {
            span.record("otel.status_code", "error");
        }
    }
    state
        .metrics
        .http_requests
        .get_or_create(&RequestLabels {
            route,
            status: status.as_u16(),
        })
        .inc();
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    span.in_scope(|| {
        if status.is_server_error() && status != StatusCode::SERVICE_UNAVAILABLE {
            tracing::error!(status = status.as_u16(), latency_ms, "response");
        } else {
            tracing::debug!(status = status.as_u16(), latency_ms, "response");
        }
    });
    response.headers_mut().insert(REQUEST_ID, request_id);
    response
}

fn route_label(matched: Option<&MatchedPath>) -> &'static str {
    match matched.map(MatchedPath::as_str) {
        Some("/mcp") => "/mcp",
        Some("/healthz") => "/healthz",
        Some("/readyz") => "/readyz",
        Some("/metrics") => "/metrics",
        Some(path) => crate::oauth::route_label(path).unwrap_or("other"),
        None => "other",
    }
}

async fn healthz() -> impl IntoResponse {
    (StatusCode::OK, axum::Json(json!({"status": "ok"})))
}

async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let operations = state.catalog.current().index.operations.len();
    let store_ok = state.store.ping().await;
    let ready = operations > 0 && store_ok;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        axum::Json(json!({
            "status": if ready { "ready" } else { "not_ready" },
            "index_operations": operations,
            "store": if store_ok { "ok" } else { "unreachable" },
        })),
    )
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
}

/// The 404 every unknown path gets (and the OAuth paths when OAuth is off).
async fn not_found() -> ApiError {
    ApiError::NotFound
}
