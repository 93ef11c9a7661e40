//! Everything `/mcp` does before the tools, as one handler: Host/Origin, the per-address then server-wide
//! in-flight limits, header size and per-address rate limit, body nesting, authentication, the per-principal limit, then the direct `tools/call`
//! path or rmcp. One function instead of a stack of middleware layers, because each layer cloned everything
//! beneath it on every request (rmcp's service included, whose cancellation token takes a lock to clone).
//! Each step returns `Result<_, ApiError>`; the refusal is rendered once, at the end.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::HeaderMap;
use rmcp::transport::streamable_http_server::StreamableHttpService;
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::ServiceExt;
use tracing::Instrument;
use tracing::field::Empty;

use crate::telemetry::otel;

use super::address_slots::{AddressSlot, AddressSlots};
use super::{direct, protect};
use crate::auth::{
    KeyVerifier, api_key_principal, bearer_token, check_host_and_origin, request_modes,
};
use crate::core::{Credential, Principal};
use crate::error::ApiError;
use crate::mcp::{McpState, PolytomicMcp};
use crate::oauth::OAuthState;
use crate::state::AppState;
use crate::telemetry::GaugeHeld;
use crate::upstream::KeyCheck;

pub(crate) type RmcpService = StreamableHttpService<PolytomicMcp, NeverSessionManager>;

/// The `/mcp` handler's own state: the infrastructure, the OAuth server when it is on, the tools, rmcp's
/// service (cloned only for requests that reach it) and the in-flight limits (per address and server-wide).
#[derive(Clone)]
pub(crate) struct McpFront {
    pub state: AppState,
    pub oauth: Option<OAuthState>,
    pub mcp: McpState,
    pub rmcp: Arc<RmcpService>,
    pub keys: Arc<KeyVerifier>,
    pub per_address: Arc<AddressSlots>,
    pub in_flight: Arc<Semaphore>,
}

pub(crate) async fn serve(State(front): State<McpFront>, request: Request) -> Response {
    match handle(&front, request).await {
        Ok(response) => response,
        Err(refusal) => refusal.into_response(),
    }
}

async fn handle(front: &McpFront, request: Request) -> Result<Response, ApiError> {
    let state = &front.state;
    check_host_and_origin(state, request.headers(), request.uri())?;
    // The address's own slot first: one address stalling its bodies then holds at most its share of the
    // server-wide slots below.
    let address = protect::client_group(
        request.headers(),
        request.extensions(),
        state.config.http.trust_forwarded_for,
    );
    let queue = otel::trace_span!("queue wait");
    let _address_slot = admit_address(front, &address)
        .instrument(queue.clone())
        .await
        .inspect_err(|_| otel::failed(&queue, "ip_concurrency"))?;
    let Some(_permit) = admit(front).instrument(queue.clone()).await else {
        otel::failed(&queue, "load_shed");
        state.metrics.load_shed.inc();
        return Err(ApiError::Unavailable(
            "the server is at capacity; retry in a second".into(),
        ));
    };
    drop(queue);
    let (parts, body) = request.into_parts();
    protect::check_headers_and_address(state, &parts)?;
    // Only POST carries a JSON-RPC body; GET and DELETE go on to rmcp, which answers them.
    let (bytes, body) = if parts.method == http::Method::POST {
        let bytes = protect::read_body(state, body).await?;
        (Some(bytes.clone()), Body::from(bytes))
    } else {
        (None, body)
    };
    let span = match &bytes {
        Some(bytes) => super::mcp_span::for_request(&parts.headers, bytes),
        None => tracing::Span::none(),
    };
    answer(front, parts, body, bytes).instrument(span).await
}

/// Authentication, the per-principal limit, then the tool or rmcp: the part of a request inside its MCP span.
async fn answer(
    front: &McpFront,
    mut parts: http::request::Parts,
    body: Body,
    bytes: Option<bytes::Bytes>,
) -> Result<Response, ApiError> {
    let state = &front.state;
    let auth = otel::trace_span!("authenticate", polytomic.auth.method = Empty);
    let principal = authenticate(front, &parts.headers)
        .instrument(auth.clone())
        .await
        .inspect_err(|_| otel::failed(&auth, "unauthorized"))?;
    drop(auth);
    let limit = otel::trace_span!("rate limit");
    let over = protect::limit_principal(state, &principal)
        .instrument(limit.clone())
        .await?;
    if let Some(over) = over {
        otel::failed(&limit, "rate_limited");
        parts.extensions.insert(over);
    }
    drop(limit);
    if let Some(organization) = &principal.organization_id {
        tracing::Span::current().record("polytomic.organization.id", organization.as_str());
    }
    parts.extensions.insert(principal);
    if let Some(bytes) = &bytes
        && let Some(response) = direct::try_tools_call(&front.mcp, &parts, bytes).await
    {
        return Ok(response);
    }
    let rmcp: RmcpService = front.rmcp.as_ref().clone();
    let outcome: Result<_, Infallible> = rmcp.oneshot(Request::from_parts(parts, body)).await;
    match outcome {
        Ok(response) => Ok(response.into_response()),
        Err(never) => match never {},
    }
}

/// The caller behind the bearer token: a token this server issued is checked by the OAuth resource server
/// (and never sent upstream); anything else is a Polytomic API key, which Polytomic is asked about.
async fn authenticate(front: &McpFront, headers: &HeaderMap) -> Result<Principal, ApiError> {
    let state = &front.state;
    let token = bearer_token(headers).map_err(|error| {
        state.metrics.auth_failure(error.reason);
        ApiError::Unauthorized {
            message: error.message,
            // With OAuth on, the challenge points clients at the protected resource metadata (RFC 9728).
            realm_hint: front
                .oauth
                .as_ref()
                .map(|oauth| crate::oauth::resource::challenge(&oauth.oauth, None)),
        }
    })?;
    let modes = request_modes(state, headers)?;
    let issued = crate::oauth::looks_issued(token.expose());
    tracing::Span::current().record(
        "polytomic.auth.method",
        if issued { "oauth" } else { "api_key" },
    );
    if !issued {
        return checked_api_key(front, api_key_principal(token, modes)).await;
    }
    let Some(oauth) = &front.oauth else {
        state.metrics.auth_failure("invalid_token");
        return Err(ApiError::Unauthorized {
            message: "OAuth is not enabled on this server; send a Polytomic API key".into(),
            realm_hint: None,
        });
    };
    crate::oauth::resource::authenticate(oauth, &token, modes).await
}

/// An API key's principal with Polytomic's verdict applied. A key Polytomic rejects gets 401 with the standard
/// challenge at once (on `initialize` already), so the client asks for another key. Without a verdict (Polytomic
/// down or slow) the key goes on unconfirmed: search and execute still work (Polytomic checks the key itself on
/// each call), but nothing is written to the store for it.
async fn checked_api_key(
    front: &McpFront,
    mut principal: Principal,
) -> Result<Principal, ApiError> {
    let state = &front.state;
    let Credential::ApiKey(key) = &principal.credential else {
        return Ok(principal);
    };
    let verdict = front
        .keys
        .check(key, &principal.fingerprint, &state.metrics)
        .await;
    match verdict {
        KeyCheck::Accepted {
            user_id,
            organization_id,
        } => {
            principal.verified = true;
            principal.user_id = user_id;
            principal.organization_id = organization_id;
            Ok(principal)
        }
        KeyCheck::Rejected => {
            state.metrics.auth_failure("rejected_key");
            let message = "Polytomic does not accept this API key (GET /api/me answered 401); check the key, or create a new one in Polytomic, and connect with it";
            let realm_hint = match &front.oauth {
                Some(oauth) => crate::oauth::resource::challenge(&oauth.oauth, Some(message)),
                None => format!("error=\"invalid_token\", error_description=\"{message}\""),
            };
            Err(ApiError::Unauthorized {
                message: message.into(),
                realm_hint: Some(realm_hint),
            })
        }
        KeyCheck::Unknown(_) => Ok(principal),
    }
}

/// A slot among the requests one client address may have in flight, waiting up to the queue time; past
/// it, 429 naming the limit.
async fn admit_address(front: &McpFront, address: &str) -> Result<AddressSlot, ApiError> {
    let state = &front.state;
    let wait = state.config.limits.queue_wait();
    if let Some(slot) = front.per_address.acquire(address, wait).await {
        return Ok(slot);
    }
    state.metrics.rate_limited("ip_concurrency");
    Err(ApiError::TooManyRequests {
        message: format!(
            "this address already has {} requests in flight, the most one address may have; send the next one when an answer arrives",
            front.per_address.per_address()
        ),
        retry_after_secs: 1,
    })
}

/// A slot among the requests served at once: at once when one is free, otherwise after waiting up to the
/// configured queue time for one (a burst queues briefly instead of failing); `None` past that. Both the wait
/// and the slot are counted in gauges (`requests_queued`, `requests_in_flight`).
async fn admit(front: &McpFront) -> Option<(OwnedSemaphorePermit, GaugeHeld)> {
    let metrics = &front.state.metrics;
    if let Ok(permit) = front.in_flight.clone().try_acquire_owned() {
        return Some((permit, GaugeHeld::new(&metrics.requests_in_flight)));
    }
    let wait = front.state.config.limits.queue_wait();
    if wait.is_zero() {
        return None;
    }
    let queued = GaugeHeld::new(&metrics.requests_queued);
    let permit = tokio::time::timeout(wait, front.in_flight.clone().acquire_owned())
        .await
        .ok()?
        .ok()?;
    drop(queued);
    Some((permit, GaugeHeld::new(&metrics.requests_in_flight)))
}
