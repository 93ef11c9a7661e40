//! Infrastructure shared by every feature, built once at start-up: configuration, the catalog, the upstream
//! client, the store, metrics and limits. Features keep their own state beside it (the OAuth server in
//! `oauth::OAuthState`, the tools in `mcp::McpState`); nothing here knows about them.

use std::sync::Arc;

use url::Url;

use crate::config::Config;
use crate::ratelimit::RateLimiter;
use crate::search::IndexHandle;
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
    /// `Host` values accepted on `/mcp` (lower case, with port where one is required).
    pub allowed_hosts: Vec<String>,
    /// `Origin` values accepted from browsers (serialised origins, lower case).
    pub allowed_origins: Vec<String>,
    pub rate_limiter: RateLimiter,
}

#[derive(Debug, Clone)]
pub struct AppState(pub Arc<App>);

impl std::ops::Deref for AppState {
    type Target = App;
    fn deref(&self) -> &App {
        &self.0
    }
}
