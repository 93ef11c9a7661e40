//! polytomic-mcp: a hosted MCP server that lets LLM agents search and call the Polytomic API.
//!
//! A request reads top-down: [`http`] (router and layers) → [`auth`] (principal) → [`mcp`] (tools) →
//! [`search`] / [`upstream`] over the [`openapi`] index, with [`store`] for durable state.

pub mod auth;
pub mod config;
pub mod error;
pub mod feedback;
pub mod http;
pub mod log_format;
pub mod mcp;
pub mod oauth;
pub mod openapi;
pub mod ratelimit;
pub mod search;
pub mod secret;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod upstream;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::openapi::{IndexHandle, IndexSource, LoadError, load_index, spawn_refresh};
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

/// Builds the shared state: HTTP client, index, store.
pub async fn build_state(config: Config, bound_port: u16) -> Result<AppState, StartError> {
    install_crypto_provider();
    config.validate().map_err(StartError::Config)?;
    let public_url = config
        .public_url(bound_port)
        .map_err(|e| StartError::Config(format!("POLYTOMIC_MCP_PUBLIC_URL: {e}")))?;
    let upstream = Upstream::new(&config)?;
    let source = IndexSource::from_setting(config.openapi.as_deref());
    let index = load_index(&source, upstream.http()).await?;
    let store = Store::connect_with_retry(
        &config.database_url,
        Duration::from_secs(config.database_wait_secs),
    )
    .await?;
    let oauth =
        oauth::OAuth::from_config(&config, &public_url, &store, upstream.http().clone()).await?;
    let allowed_hosts = auth::allowed_hosts(&public_url);
    let allowed_origins = auth::allowed_origins(&public_url, &config.allowed_origins);
    let mcp_url = format!("{}/mcp", public_url.as_str().trim_end_matches('/'));
    let webhook = match &config.feedback_webhook_url {
        None => None,
        Some(url) => Some(feedback::WebhookConfig {
            url: url::Url::parse(url.expose())
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https"))
                .ok_or_else(|| {
                    StartError::Config(
                        "POLYTOMIC_MCP_FEEDBACK_WEBHOOK_URL: expected an http(s) URL".into(),
                    )
                })?,
            secret: config.feedback_webhook_secret.clone(),
            max_attempts: i64::from(config.feedback_webhook_max_attempts),
            retry_base: Duration::from_millis(config.feedback_webhook_retry_ms),
        }),
    };
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
    Ok(AppState(Arc::new(App {
        config,
        public_url,
        mcp_url,
        catalog: IndexHandle::new(index),
        upstream,
        store,
        metrics: Metrics::new(),
        started: Instant::now(),
        allowed_hosts,
        allowed_origins,
        recent_calls: feedback::RecentCalls::default(),
        rate_limiter,
        tools: mcp::ToolSet::new(),
        webhook,
        oauth,
    })))
}

/// Serves on `listener` until `shutdown` is cancelled, then drains in-flight requests.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), StartError> {
    let address = listener.local_addr()?;
    let state = build_state(config, address.port()).await?;
    let source = IndexSource::from_setting(state.config.openapi.as_deref());
    spawn_refresh(
        state.catalog.clone(),
        source,
        Duration::from_secs(state.config.openapi_refresh_secs),
        state.upstream.http().clone(),
        shutdown.clone(),
    );
    if matches!(state.store, Store::Postgres(_)) {
        spawn_rate_limit_purge(state.store.clone(), shutdown.clone());
    }
    if let Some(webhook) = state.webhook.clone() {
        feedback::spawn_webhook_worker(
            state.store.clone(),
            state.upstream.http().clone(),
            webhook,
            shutdown.clone(),
        );
    }
    // rmcp gets its own token, cancelled only after in-flight requests have drained.
    let mcp_stop = CancellationToken::new();
    let app = http::router(state.clone(), mcp_stop.clone());
    tracing::info!(%address, mcp = %state.mcp_url, "listening");
    // Supervisors and tests wait for this line; it should not sit in the log buffer.
    crate::telemetry::flush_logs();
    let drain = shutdown.clone();
    let server = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(async move { drain.cancelled().await });
    let grace = Duration::from_secs(state.config.shutdown_grace_secs);
    let deadline = async {
        shutdown.cancelled().await;
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        result = server.into_future() => result?,
        () = deadline => tracing::warn!(grace_secs = grace.as_secs(), "grace period over; exiting with requests still in flight"),
    }
    mcp_stop.cancel();
    state.store.close().await;
    tracing::info!("stopped");
    Ok(())
}

/// Deletes finished rate-limit windows every minute (only the shared PostgreSQL counter keeps any).
fn spawn_rate_limit_purge(store: Store, shutdown: CancellationToken) {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(Duration::from_secs(60));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticker.tick() => {}
            }
            let before = chrono::Utc::now().timestamp_millis() - 5 * 60_000;
            if let Err(error) = store.purge_rate_limits(before).await {
                tracing::warn!(%error, "purging old rate-limit windows failed");
            }
        }
    });
}
