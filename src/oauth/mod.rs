//! The OAuth authorization server on the MCP origin, and the resource-server side of `/mcp`.
//!
//! The server issues its own tokens and delegates the person's sign-in to Polytomic's OAuth provider
//! (`POLYTOMIC_OAUTH_*`). A flow reads top-down:
//! [`metadata`] (discovery) → [`clients`] (DCR, CIMD) → [`authorize`] (consent page, upstream redirect,
//! callback) → [`token`] (codes, refresh rotation and retries, revocation) → [`resource`] (checking a token on
//! `/mcp`) → [`upstream`] (the session's Polytomic token, for `execute`). [`revocation`] ends a sign-in here
//! and at the provider. Every piece of state lives in the store, so any replica can serve any step.

pub mod authorize;
pub mod clients;
pub mod keys;
pub mod metadata;
pub mod provider;
pub mod resource;
pub mod revocation;
pub mod scope;
pub mod token;
pub(crate) mod upstream;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use http::StatusCode;

use crate::config::Config;
use crate::core::now_ms;
use crate::error::ApiError;
use crate::state::{App, AppState};
use crate::store::{Store, StoreError};

pub use keys::{Keys, install_jwt_provider};
pub use provider::Provider;

/// Prefix of every access token this server issues; a bearer token without [`ISSUED_PREFIX`] is a Polytomic
/// API key.
pub const ACCESS_TOKEN_PREFIX: &str = "pmcp_at_";
pub const REFRESH_TOKEN_PREFIX: &str = "pmcp_rt_";
pub const CODE_PREFIX: &str = "pmcp_ac_";
pub const CLIENT_ID_PREFIX: &str = "pmcp_client_";
pub const CLIENT_SECRET_PREFIX: &str = "pmcp_cs_";
pub const REGISTRATION_TOKEN_PREFIX: &str = "pmcp_reg_";

/// What every token, code and secret this server issues starts with.
const ISSUED_PREFIX: &str = "pmcp_";

/// True for a bearer token that claims to be one this server issued, in any letter case: it is checked here
/// as such (and refused unless it is a valid access token), never passed to Polytomic as an API key, where
/// a mistyped or misused token of ours (a refresh token, say) would leak.
pub fn looks_issued(token: &str) -> bool {
    token
        .get(..ISSUED_PREFIX.len())
        .is_some_and(|prefix| prefix.eq_ignore_ascii_case(ISSUED_PREFIX))
}

/// How long a consent page and the upstream sign-in may take.
const PENDING_TTL_MS: i64 = 15 * 60 * 1000;
/// Authorization codes are exchanged at once by real clients; two minutes leaves room for a slow network.
const CODE_TTL_MS: i64 = 2 * 60 * 1000;
/// A refresh token (and its session) lives this long after its last use.
const REFRESH_TTL_MS: i64 = 30 * 24 * 60 * 60 * 1000;
/// Expired rows are deleted at most this often per process.
const PURGE_EVERY_MS: i64 = 10 * 60 * 1000;

#[derive(Debug, thiserror::Error)]
pub enum OAuthError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Internal(String),
    #[error("the Polytomic sign-in service failed: {0}")]
    Provider(String),
    /// A start-up problem with the settings; the message names the variable.
    #[error("{0}")]
    Config(String),
}

impl From<OAuthError> for ApiError {
    fn from(error: OAuthError) -> Self {
        // Details go to the log (inside the request span); the client learns only that the server failed.
        tracing::error!(%error, "oauth internal error");
        match error {
            OAuthError::Provider(_) => oauth_error(
                StatusCode::BAD_GATEWAY,
                "temporarily_unavailable",
                "the Polytomic sign-in service could not be reached; try again",
            ),
            _ => oauth_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "the authorization server failed; try again",
            ),
        }
    }
}

/// An RFC 6749 error response.
pub fn oauth_error(
    status: StatusCode,
    error: &'static str,
    description: impl Into<String>,
) -> ApiError {
    ApiError::OAuth {
        status,
        error,
        description: description.into(),
    }
}

/// Everything the OAuth endpoints share, built once at start-up when OAuth is on.
#[derive(Debug)]
pub struct OAuth {
    /// `PUBLIC_URL` without a trailing slash: the `iss` of our tokens and of authorization responses.
    pub issuer: String,
    /// `{PUBLIC_URL}/mcp`: the only `resource` and `aud` accepted.
    pub resource: String,
    pub resource_metadata_url: String,
    /// The server's cap (`POLYTOMIC_MCP_MAX_ACCESS_MODE`): no grant goes beyond it.
    pub max_access: crate::core::AccessMode,
    pub keys: Keys,
    pub provider: Provider,
    pub access_ttl: Duration,
    /// How long a used refresh token may come back as a retry (`POLYTOMIC_MCP_OAUTH_REFRESH_RETRY_SECS`).
    refresh_retry_ms: i64,
    /// Only with the loopback test fixture ([`clients::MetadataFetch`]): metadata documents may be on loopback.
    cimd_loopback_fixture: bool,
    cimd_http: reqwest::Client,
    last_purge_ms: AtomicI64,
    last_full_registrations_warning_ms: AtomicI64,
}

impl OAuth {
    /// `None` when OAuth is off (the upstream provider is not configured).
    pub async fn from_config(
        config: &Config,
        public_url: &url::Url,
        store: &Store,
        http: reqwest::Client,
        cimd: &clients::MetadataFetch,
    ) -> Result<Option<Self>, OAuthError> {
        if !config.oauth.enabled() {
            return Ok(None);
        }
        install_jwt_provider();
        let issuer = public_url.as_str().trim_end_matches('/').to_owned();
        let keys = Keys::load(
            config.oauth.signing_key.as_ref(),
            config.oauth.oauth_client_secret.as_ref(),
            store,
        )
        .await?;
        let scopes = parse_scopes(config.oauth.oauth_scopes.as_deref());
        let provider = Provider::from_config(config, &issuer, &scopes, http)?;
        let cimd_http = clients::metadata_document_client(cimd)?;
        tracing::info!(
            redirect_uri = %provider.redirect_uri,
            upstream_revocation = provider.revokes(),
            signing_key = if config.oauth.signing_key.is_some() { "configured" } else { "stored" },
            "oauth sign-in on; the provider must allow this redirect URI"
        );
        Ok(Some(Self {
            resource: format!("{issuer}/mcp"),
            resource_metadata_url: format!("{issuer}/.well-known/oauth-protected-resource/mcp"),
            issuer,
            max_access: config.limits.max_access_mode,
            keys,
            provider,
            access_ttl: Duration::from_secs(config.oauth.oauth_access_token_ttl_secs),
            refresh_retry_ms: config.oauth.refresh_retry_ms(),
            cimd_loopback_fixture: cimd.allows_loopback(),
            cimd_http,
            last_purge_ms: AtomicI64::new(0),
            last_full_registrations_warning_ms: AtomicI64::new(0),
        }))
    }

    /// Deletes expired rows now and then; cheap enough to call from any endpoint that creates rows.
    pub async fn maybe_purge(&self, store: &Store) {
        let now = now_ms();
        if !once_per(&self.last_purge_ms, PURGE_EVERY_MS, now) {
            return;
        }
        if let Err(error) = store.purge_oauth(now).await {
            tracing::warn!(%error, "purging expired OAuth rows failed");
        }
        // A refresh token kept for a retry is no use once the window has passed.
        if let Err(error) = store
            .forget_refresh_successors(now - self.refresh_retry_ms)
            .await
        {
            tracing::warn!(%error, "forgetting refresh tokens kept for retries failed");
        }
    }

    /// True at most once a minute, so a flood of registrations at the cap logs one warning, not one per request.
    pub fn time_to_warn_of_full_registrations(&self, now: i64) -> bool {
        once_per(&self.last_full_registrations_warning_ms, 60_000, now)
    }
}

/// True when `every_ms` has passed since `last` and this caller is the one that moved it to `now`.
fn once_per(last: &AtomicI64, every_ms: i64, now: i64) -> bool {
    let previous = last.load(Ordering::Relaxed);
    now - previous >= every_ms
        && last
            .compare_exchange(previous, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
}

/// POLYTOMIC_OAUTH_SCOPES may be space- or comma-separated.
fn parse_scopes(value: Option<&str>) -> Vec<String> {
    let mut scopes: Vec<String> = value
        .unwrap_or_default()
        .split([' ', ','])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    scopes.dedup();
    scopes
}

/// What every OAuth endpoint works with: the shared infrastructure and the authorization server. It exists
/// only when OAuth is on, so no endpoint has to ask.
#[derive(Debug, Clone)]
pub struct OAuthState {
    pub app: AppState,
    pub oauth: Arc<OAuth>,
}

impl std::ops::Deref for OAuthState {
    type Target = App;
    fn deref(&self) -> &App {
        &self.app
    }
}

/// The OAuth routes; mounted only when OAuth is on, so that with it off every one of them is a 404.
pub fn router(state: OAuthState) -> Router {
    Router::new()
        .route(
            "/.well-known/oauth-protected-resource",
            get(metadata::protected_resource),
        )
        .route(
            "/.well-known/oauth-protected-resource/mcp",
            get(metadata::protected_resource),
        )
        .route(
            "/.well-known/oauth-authorization-server",
            get(metadata::authorization_server),
        )
        .route("/register", post(clients::register))
        .route(
            "/register/{client_id}",
            get(clients::read_registration).delete(clients::delete_registration),
        )
        .route(
            "/authorize",
            get(authorize::authorize).post(authorize::consent),
        )
        .route("/oauth/callback", get(authorize::callback))
        .route("/token", post(token::token))
        .route("/revoke", post(token::revoke))
        .with_state(state)
}

/// The metrics label of an OAuth route (by its matched path), `None` for any other route.
pub fn route_label(matched_path: &str) -> Option<&'static str> {
    match matched_path {
        path if path.starts_with("/.well-known/oauth-") => Some("/.well-known"),
        "/authorize" => Some("/authorize"),
        "/oauth/callback" => Some("/oauth/callback"),
        "/token" => Some("/token"),
        "/revoke" => Some("/revoke"),
        "/register" | "/register/{client_id}" => Some("/register"),
        _ => None,
    }
}

/// True for the paths browser-based clients call cross-origin (discovery, registration, token, revocation).
pub fn is_cors_open_path(path: &str) -> bool {
    path.starts_with("/.well-known/oauth-")
        || matches!(path, "/token" | "/register" | "/revoke")
        || path.starts_with("/register/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_split_on_spaces_and_commas() {
        assert_eq!(
            parse_scopes(Some("read write, admin")),
            ["read", "write", "admin"]
        );
        assert!(parse_scopes(None).is_empty());
    }
}
