//! Everything `/mcp` does before rmcp, as one handler: Host/Origin, the in-flight limit, header size and
//! per-address limit, body nesting, authentication, the per-principal limit, then the direct `tools/call`
//! path or rmcp. One function instead of a stack of middleware layers: each layer cloned everything beneath
//! it on every request (rmcp's service included, whose cancellation token takes a lock to clone), which
//! profiling showed as a tenth of the server's CPU per call.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use rmcp::transport::streamable_http_server::StreamableHttpService;
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::ServiceExt;

use super::{direct, protect};
use crate::auth::{authenticate, check_host_and_origin};
use crate::error::ApiError;
use crate::mcp::PolytomicMcp;
use crate::state::AppState;

pub type RmcpService = StreamableHttpService<PolytomicMcp, NeverSessionManager>;

/// The `/mcp` handler's own state: the app, rmcp's service (cloned only for requests that reach it) and the
/// in-flight limit.
#[derive(Clone)]
pub struct McpFront {
    pub state: AppState,
    pub rmcp: Arc<RmcpService>,
    pub in_flight: Arc<Semaphore>,
}

pub async fn serve(State(front): State<McpFront>, request: Request) -> Response {
    let state = &front.state;
    if let Some(refusal) = check_host_and_origin(state, request.headers(), request.uri()) {
        return refusal;
    }
    let Some(_permit) = admit(&front).await else {
        state.metrics.load_shed.inc();
        return ApiError::Unavailable("the server is at capacity; retry in a second".into())
            .into_response();
    };
    let (mut parts, body) = request.into_parts();
    if let Some(refusal) = protect::check_headers_and_address(state, &parts) {
        return refusal;
    }
    // Only POST carries a JSON-RPC body; GET and DELETE go on to rmcp, which answers them.
    let (bytes, body) = if parts.method == http::Method::POST {
        match protect::read_body(state, body).await {
            Ok(bytes) => (Some(bytes.clone()), Body::from(bytes)),
            Err(refusal) => return refusal,
        }
    } else {
        (None, body)
    };
    let principal = match authenticate(state, &parts.headers).await {
        Ok(principal) => principal,
        Err(refusal) => return refusal,
    };
    match protect::limit_principal(state, &principal).await {
        Ok(Some(over)) => {
            parts.extensions.insert(over);
        }
        Ok(None) => {}
        Err(refusal) => return refusal,
    }
    parts.extensions.insert(principal);
    if let Some(bytes) = &bytes
        && let Some(response) = direct::try_tools_call(state, &parts, bytes).await
    {
        return response;
    }
    let rmcp: RmcpService = front.rmcp.as_ref().clone();
    let outcome: Result<_, Infallible> = rmcp.oneshot(Request::from_parts(parts, body)).await;
    match outcome {
        Ok(response) => response.into_response(),
        Err(never) => match never {},
    }
}

/// A slot among the requests served at once: at once when one is free, otherwise after waiting up to the
/// configured queue time for one (a burst queues briefly instead of failing); `None` past that.
async fn admit(front: &McpFront) -> Option<OwnedSemaphorePermit> {
    if let Ok(permit) = front.in_flight.clone().try_acquire_owned() {
        return Some(permit);
    }
    let wait = front.state.config.queue_wait();
    if wait.is_zero() {
        return None;
    }
    tokio::time::timeout(wait, front.in_flight.clone().acquire_owned())
        .await
        .ok()?
        .ok()
}
