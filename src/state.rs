//! Shared application state, built once at start-up and handed to every request.

use std::sync::Arc;
use std::time::Instant;

use url::Url;

use crate::config::Config;
use crate::openapi::IndexHandle;
use crate::store::Store;
use crate::telemetry::Metrics;
use crate::upstream::Upstream;

#[derive(Debug)]
pub struct App {
    pub config: Config,
    /// External origin, e.g. `https://mcp.polytomic.com`.
    pub public_url: Url,
    /// The MCP resource identifier: `{public_url}/mcp`.
    pub mcp_url: String,
    pub catalog: IndexHandle,
    pub upstream: Upstream,
    pub store: Store,
    pub metrics: Metrics,
    pub started: Instant,
    /// `Host` values accepted on `/mcp` (lower case, with port where one is required).
    pub allowed_hosts: Vec<String>,
    /// `Origin` values accepted from browsers (serialised origins, lower case).
    pub allowed_origins: Vec<String>,
    /// Each principal's last few tool calls, attached to its feedback.
    pub recent_calls: crate::feedback::RecentCalls,
    pub rate_limiter: crate::ratelimit::RateLimiter,
    /// The MCP tool definitions, built once.
    pub tools: crate::mcp::ToolSet,
    /// Where feedback records are delivered, when configured.
    pub webhook: Option<crate::feedback::WebhookConfig>,
    /// The OAuth authorization server; `None` when OAuth is off.
    pub oauth: Option<crate::oauth::OAuth>,
}

#[derive(Debug, Clone)]
pub struct AppState(pub Arc<App>);

impl std::ops::Deref for AppState {
    type Target = App;
    fn deref(&self) -> &App {
        &self.0
    }
}
