//! polytomic-mcp: a hosted MCP server that lets LLM agents search and call the Polytomic API.
//!
//! A request reads top-down: [`http`] (router and layers) → [`auth`] / [`oauth`] (principal) → [`mcp`]
//! (tools) → [`search`] / [`upstream`] over the [`openapi`] index, with [`store`] for durable state. The
//! modules are layered without cycles: [`core`] is the shared vocabulary at the bottom, [`state`] holds the
//! infrastructure every feature uses, each feature (`oauth`, `feedback`, `mcp`) owns its own state and
//! routes, and [`http`] composes them.

// The layers, lowest first, are listed in tests/it/architecture.rs: secret, core → error, config, telemetry,
// store, ratelimit → openapi → search → upstream → state → auth → oauth → feedback → mcp → http → admin. A module
// uses only modules below it.
pub mod admin;
pub(crate) mod auth;
pub mod config;
pub mod core;
pub(crate) mod error;
pub mod feedback;
pub(crate) mod http;
pub(crate) mod mcp;
pub(crate) mod oauth;
pub mod openapi;
pub(crate) mod ratelimit;
pub mod search;
pub mod secret;
pub(crate) mod state;
pub mod store;
pub mod telemetry;
// Test-only entry points, compiled only with the `test-hooks` feature (see the module).
#[cfg(feature = "test-hooks")]
#[doc(hidden)]
pub mod testing;
pub mod upstream;

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::core::{FirstRound, now_ms, spawn_periodic};
use crate::feedback::WebhookConfig;
use crate::mcp::McpState;
use crate::oauth::{OAuth, OAuthState};
use crate::openapi::{IndexSource, LoadError, load_index};
use crate::search::{IndexHandle, spawn_refresh};
use crate::state::{App, AppState};
use crate::store::{Store, StoreError};
use crate::telemetry::Metrics;
use crate::upstream::{Upstream, UpstreamError};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Index(#[from] LoadError),
    #[error(transparent)]
    Store(#[from] StoreError),
    // Not `#[from]`: that would make the OAuth error the source too, and `{:#}` would print it twice.
    #[error("OAuth set-up failed: {0}")]
    OAuth(oauth::OAuthError),
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error("server error: {0}")]
    Serve(#[from] std::io::Error),
}

impl From<oauth::OAuthError> for StartError {
    fn from(error: oauth::OAuthError) -> Self {
        StartError::OAuth(error)
    }
}

/// reqwest is built without a bundled crypto provider (ring builds faster and smaller than aws-lc); install
/// it once per process before any client is built. A second call is a no-op.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    oauth::install_jwt_provider();
}

/// Everything a running server is made of: the shared infrastructure and each feature's own state.
struct Services {
    app: AppState,
    oauth: Option<OAuthState>,
    mcp: McpState,
    webhook: Option<WebhookConfig>,
}

/// Builds the infrastructure (HTTP client, index, store) and the features on top of it.
async fn build(
    config: Config,
    bound_port: u16,
    cimd: &oauth::clients::MetadataFetch,
) -> Result<Services, StartError> {
    install_crypto_provider();
    config.validate().map_err(StartError::Config)?;
    let public_url = config
        .http
        .public_url(bound_port)
        .map_err(|e| StartError::Config(format!("POLYTOMIC_MCP_PUBLIC_URL: {e}")))?;
    let upstream = Upstream::new(
        &config.upstream,
        config.limits.max_concurrent_requests as usize,
    )?;
    let source = IndexSource::from_setting(config.upstream.openapi.as_deref());
    let index = load_index(&source, upstream.http()).await?;
    let store = Store::connect_with_retry(&config.store.database_url, config.store.wait()).await?;
    let oauth =
        OAuth::from_config(&config, &public_url, &store, upstream.http().clone(), cimd).await?;
    let allowed_hosts = auth::allowed_hosts(&public_url);
    let allowed_origins = auth::allowed_origins(&public_url, &config.http.allowed_origins);
    let mcp_url = format!("{}/mcp", public_url.as_str().trim_end_matches('/'));
    let webhook = config.feedback.webhook_url().map(|url| WebhookConfig {
        url,
        secret: config.feedback.feedback_webhook_secret.clone(),
        max_attempts: i64::from(config.feedback.feedback_webhook_max_attempts),
        retry_base: config.feedback.retry_base(),
    });
    tracing::info!(
        operations = index.operations.len(),
        source = %source.describe(),
        store = store.backend(),
        %mcp_url,
        "state ready"
    );
    // Principal limits are shared through PostgreSQL when several replicas run; one SQLite node counts locally.
    let rate_limiter = ratelimit::RateLimiter::new(match &store {
        Store::Postgres(_) => Some(store.clone()),
        Store::Sqlite(_) => None,
    });
    let app = AppState(Arc::new(App {
        config,
        public_url,
        mcp_url,
        catalog: IndexHandle::new(index),
        upstream,
        store,
        metrics: Metrics::new(),
        allowed_hosts,
        allowed_origins,
        rate_limiter,
    }));
    let oauth = oauth.map(|oauth| OAuthState {
        app: app.clone(),
        oauth: Arc::new(oauth),
    });
    Ok(Services {
        mcp: McpState::new(app.clone(), oauth.clone(), webhook.is_some()),
        oauth,
        app,
        webhook,
    })
}

/// Serves on `listener` until `shutdown` is cancelled, then drains in-flight requests.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), StartError> {
    serve(
        config,
        listener,
        shutdown,
        &oauth::clients::MetadataFetch::default(),
    )
    .await
}

/// [`run`] with a choice of how client metadata documents are fetched (only `testing` passes another).
async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
    cimd: &oauth::clients::MetadataFetch,
) -> Result<(), StartError> {
    let address = listener.local_addr()?;
    let services = build(config, address.port(), cimd).await?;
    let state = services.app.clone();
    spawn_background(&services, &shutdown);
    // rmcp gets its own token, cancelled only after in-flight requests have drained.
    let mcp_stop = CancellationToken::new();
    let app = http::router(
        state.clone(),
        services.oauth,
        services.mcp,
        mcp_stop.clone(),
    );
    tracing::info!(%address, mcp = %state.mcp_url, "listening");
    // Supervisors and tests wait for this line; it should not sit in the log buffer.
    crate::telemetry::flush_logs();
    let server = http::serve(listener, app, state.clone(), shutdown.clone());
    let grace = state.config.http.shutdown_grace();
    let deadline = async {
        shutdown.cancelled().await;
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        () = server => {}
        () = deadline => tracing::warn!(grace_secs = grace.as_secs(), "grace period over; exiting with requests still in flight"),
    }
    mcp_stop.cancel();
    state.store.close().await;
    tracing::info!("stopped");
    Ok(())
}

/// The background tasks: OpenAPI refresh, rate-limit purge (PostgreSQL only), feedback webhook delivery.
fn spawn_background(services: &Services, shutdown: &CancellationToken) {
    let state = &services.app;
    let source = IndexSource::from_setting(state.config.upstream.openapi.as_deref());
    spawn_refresh(
        state.catalog.clone(),
        source,
        state.config.upstream.refresh_every(),
        state.upstream.http().clone(),
        shutdown.clone(),
    );
    if matches!(state.store, Store::Postgres(_)) {
        spawn_rate_limit_purge(state.store.clone(), shutdown.clone());
    }
    if let Some(webhook) = services.webhook.clone() {
        feedback::spawn_webhook_worker(
            state.store.clone(),
            state.upstream.http().clone(),
            webhook,
            shutdown.clone(),
        );
    }
}

/// Deletes finished rate-limit windows every minute (only the shared PostgreSQL counter keeps any).
fn spawn_rate_limit_purge(store: Store, shutdown: CancellationToken) {
    spawn_periodic(
        Duration::from_secs(60),
        FirstRound::Now,
        shutdown,
        move || {
            let store = store.clone();
            async move {
                if let Err(error) = store.purge_rate_limits(now_ms() - 5 * 60_000).await {
                    tracing::warn!(%error, "purging old rate-limit windows failed");
                }
            }
        },
    );
}
