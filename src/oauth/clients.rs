//! Who the OAuth client is: Dynamic Client Registration (RFC 7591, with the RFC 7592 read and delete behind
//! `registration_client_uri`), Client ID Metadata Documents (an https `client_id` naming its own metadata),
//! and the redirect-URI rules both share.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Extension, Path, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode, header};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use url::Url;

use super::OAuthState;
use super::keys::{hash, same};
use super::revocation::{EndReason, end_session};
use super::{
    CLIENT_ID_PREFIX, CLIENT_SECRET_PREFIX, OAuth, OAuthError, REGISTRATION_TOKEN_PREFIX, now_ms,
    oauth_error,
};
use crate::core::{CappedReadError, ClientAddress, Newlines, address_group, read_capped, visible};
use crate::error::ApiError;
use crate::ratelimit::Decision;
use crate::store::Store;
pub(crate) use crate::store::oauth::ClientKind;
use crate::store::oauth::{ClientRow, SessionFilter};

const MAX_REDIRECT_URIS: usize = 10;
const MAX_URI_LEN: usize = 2000;
const MAX_NAME_LEN: usize = 200;
/// All of a client's metadata as stored; Claude's registration comes to under 1 KB.
const MAX_STORED_METADATA: usize = 8 * 1024;
/// Metadata documents are a few hundred bytes; the draft suggests a 5 KB limit, this leaves headroom.
const MAX_METADATA_DOCUMENT: usize = 16 * 1024;
const METADATA_FETCH_TIMEOUT: Duration = Duration::from_secs(5);
const METADATA_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const METADATA_CACHE_DEFAULT_MS: i64 = 60 * 60 * 1000;
const METADATA_CACHE_MIN_MS: i64 = 5 * 60 * 1000;
const METADATA_CACHE_MAX_MS: i64 = 24 * 60 * 60 * 1000;

pub const AUTH_METHODS: &[&str] = &["none", "client_secret_post", "client_secret_basic"];

/// A client's metadata as stored (and as returned from registration).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ClientMetadata {
    pub redirect_uris: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logo_uri: Option<String>,
    pub token_endpoint_auth_method: String,
    pub grant_types: Vec<String>,
    pub response_types: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub software_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub software_version: Option<String>,
}

/// A client resolved for one request.
#[derive(Debug, Clone)]
pub struct Client {
    pub id: String,
    pub kind: ClientKind,
    pub metadata: ClientMetadata,
    secret_hash: Option<String>,
}

impl Client {
    /// The name shown on the consent page: the client's own name (unverified) or its id, with control and
    /// bidirectional characters as visible escapes, so the name cannot reorder itself into something else.
    pub fn display_name(&self) -> String {
        let name = self
            .metadata
            .client_name
            .as_deref()
            .filter(|n| !n.trim().is_empty())
            .unwrap_or(&self.id);
        visible(name, Newlines::Escape).into_owned()
    }

    pub fn allows_redirect(&self, requested: &str) -> bool {
        self.metadata
            .redirect_uris
            .iter()
            .any(|registered| redirect_matches(registered, requested))
    }

    pub fn is_confidential(&self) -> bool {
        self.metadata.token_endpoint_auth_method != "none"
    }

    pub fn secret_matches(&self, secret: &str) -> bool {
        self.secret_hash
            .as_deref()
            .is_some_and(|stored| same(stored, &hash(secret)))
    }

    fn from_row(row: ClientRow) -> Result<Self, OAuthError> {
        let metadata: ClientMetadata = serde_json::from_str(&row.metadata)
            .map_err(|e| OAuthError::Internal(format!("stored client metadata: {e}")))?;
        Ok(Self {
            id: row.client_id,
            kind: row.kind,
            metadata,
            secret_hash: row.secret_hash,
        })
    }
}

/// Why a client could not be resolved. The message is safe to show.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("unknown client_id; register the client again")]
    Unknown,
    #[error("the client metadata document at client_id could not be used: {0}")]
    MetadataDocument(String),
    #[error(transparent)]
    Server(#[from] OAuthError),
}

impl From<crate::store::StoreError> for ClientError {
    fn from(error: crate::store::StoreError) -> Self {
        ClientError::Server(error.into())
    }
}

/// Looks a client up: a URL `client_id` is a metadata document (fetched, checked, cached); anything else must
/// have been registered here.
pub async fn resolve(oauth: &OAuth, store: &Store, client_id: &str) -> Result<Client, ClientError> {
    if client_id.is_empty() || client_id.len() > MAX_URI_LEN {
        return Err(ClientError::Unknown);
    }
    let is_url = client_id.starts_with("https://");
    let cached = store.get_client(client_id).await?;
    if !is_url {
        return match cached {
            Some(row) if row.kind == ClientKind::Registered => Ok(Client::from_row(row)?),
            _ => Err(ClientError::Unknown),
        };
    }
    let now = now_ms();
    if let Some(row) = cached
        && row.kind == ClientKind::MetadataDocument
        && row.expires_at_ms.is_some_and(|at| at > now)
    {
        return Ok(Client::from_row(row)?);
    }
    let (metadata, ttl_ms) = fetch_metadata_document(oauth, client_id).await?;
    let row = ClientRow {
        client_id: client_id.to_owned(),
        kind: ClientKind::MetadataDocument,
        metadata: serde_json::to_string(&metadata)
            .map_err(|e| OAuthError::Internal(e.to_string()))?,
        secret_hash: None,
        registration_token_hash: None,
        created_at_ms: now,
        expires_at_ms: Some(now + ttl_ms),
    };
    store.upsert_cached_client(&row).await?;
    Ok(Client {
        id: client_id.to_owned(),
        kind: ClientKind::MetadataDocument,
        metadata,
        secret_hash: None,
    })
}

// ------------------------------------------------------------------ redirect URIs

pub(crate) fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// https anywhere; http only to a loopback host (RFC 8252 §7.3); or a private-use scheme in reverse-domain
/// form such as `com.example.app:/callback` (RFC 8252 §7.1), which native apps use.
pub fn validate_redirect_uri(uri: &str) -> Result<(), String> {
    if uri.len() > MAX_URI_LEN {
        return Err(format!("redirect URI longer than {MAX_URI_LEN} characters"));
    }
    let url = Url::parse(uri)
        .map_err(|e| format!("redirect URI {uri:?} is not an absolute URI ({e})"))?;
    if url.fragment().is_some() {
        return Err(format!("redirect URI {uri:?} must not have a fragment"));
    }
    match url.scheme() {
        "https" if url.host_str().is_some_and(|h| !h.is_empty()) => Ok(()),
        "http" if url.host_str().is_some_and(is_loopback_host) => Ok(()),
        "http" => Err(format!(
            "redirect URI {uri:?} uses http on a non-loopback host; use https, or http://127.0.0.1 / http://[::1] / http://localhost for a native app"
        )),
        scheme if scheme.contains('.') => Ok(()),
        _ => Err(format!(
            "redirect URI {uri:?} must use https, http on a loopback address, or a reverse-domain private-use scheme"
        )),
    }
}

/// Exact match, except that a loopback http redirect matches on any port (RFC 8252 §7.3): native clients
/// pick a free port each time they sign in.
pub fn redirect_matches(registered: &str, requested: &str) -> bool {
    if registered == requested {
        return true;
    }
    let (Ok(a), Ok(b)) = (Url::parse(registered), Url::parse(requested)) else {
        return false;
    };
    a.scheme() == "http"
        && b.scheme() == "http"
        && a.host_str().is_some_and(is_loopback_host)
        && a.host_str() == b.host_str()
        && a.path() == b.path()
        && a.query() == b.query()
        && b.fragment().is_none()
        && a.username() == b.username()
        && a.password().is_none()
        && b.password().is_none()
}

/// The host (or scheme, for a private-use URI) the person will be sent back to, for the consent page.
pub fn redirect_target_label(uri: &str) -> String {
    match Url::parse(uri) {
        Ok(url) => match url.host_str() {
            Some(host) if is_loopback_host(host) => format!("{host} (an app on this computer)"),
            Some(host) => host.to_owned(),
            None => format!("{}: (an app on this computer)", url.scheme()),
        },
        Err(_) => uri.chars().take(100).collect(),
    }
}

// ------------------------------------------------------------------ registration (RFC 7591)

#[derive(Debug, Deserialize)]
struct RegistrationRequest {
    redirect_uris: Option<Vec<String>>,
    client_name: Option<String>,
    client_uri: Option<String>,
    logo_uri: Option<String>,
    token_endpoint_auth_method: Option<String>,
    grant_types: Option<Vec<String>>,
    response_types: Option<Vec<String>>,
    application_type: Option<String>,
    scope: Option<String>,
    software_id: Option<String>,
    software_version: Option<String>,
}

fn invalid_metadata(description: impl Into<String>) -> ApiError {
    oauth_error(
        StatusCode::BAD_REQUEST,
        "invalid_client_metadata",
        description,
    )
}

fn invalid_redirect(description: impl Into<String>) -> ApiError {
    oauth_error(StatusCode::BAD_REQUEST, "invalid_redirect_uri", description)
}

/// Checks the fields both registration and metadata documents carry, filling RFC 7591 defaults. Every field is
/// bounded (lists de-duplicated and counted, strings measured) and so is the whole, since all of it is stored.
fn checked_metadata(
    request: RegistrationRequest,
    default_auth: &str,
) -> Result<ClientMetadata, ApiError> {
    let redirect_uris = checked_redirect_uris(request.redirect_uris)?;
    let token_endpoint_auth_method = request
        .token_endpoint_auth_method
        .unwrap_or_else(|| default_auth.to_owned());
    if !AUTH_METHODS.contains(&token_endpoint_auth_method.as_str()) {
        return Err(invalid_metadata(format!(
            "token_endpoint_auth_method {:?} is not supported; use one of {}",
            shortened(&token_endpoint_auth_method),
            AUTH_METHODS.join(", ")
        )));
    }
    let (grant_types, response_types) =
        checked_grants(request.grant_types, request.response_types)?;
    if let Some(kind) = &request.application_type
        && !matches!(kind.as_str(), "native" | "web")
    {
        return Err(invalid_metadata(
            "application_type must be \"native\" or \"web\"",
        ));
    }
    let short = |field: &str, value: Option<String>| -> Result<Option<String>, ApiError> {
        match value {
            Some(v) if v.chars().count() > MAX_NAME_LEN => Err(invalid_metadata(format!(
                "{field} is longer than {MAX_NAME_LEN} characters"
            ))),
            other => Ok(other),
        }
    };
    let uri_field = |field: &str, value: Option<String>| -> Result<Option<String>, ApiError> {
        match value {
            Some(v) if v.len() > MAX_URI_LEN || Url::parse(&v).is_err() => Err(invalid_metadata(
                format!("{field} must be an absolute URL of at most {MAX_URI_LEN} characters"),
            )),
            other => Ok(other),
        }
    };
    let metadata = ClientMetadata {
        redirect_uris,
        client_name: short("client_name", request.client_name)?,
        client_uri: uri_field("client_uri", request.client_uri)?,
        logo_uri: uri_field("logo_uri", request.logo_uri)?,
        token_endpoint_auth_method,
        grant_types,
        response_types,
        application_type: request.application_type,
        scope: short("scope", request.scope)?,
        software_id: short("software_id", request.software_id)?,
        software_version: short("software_version", request.software_version)?,
    };
    let stored = serde_json::to_string(&metadata).map_or(usize::MAX, |text| text.len());
    if stored > MAX_STORED_METADATA {
        return Err(invalid_metadata(format!(
            "the client metadata comes to {stored} bytes and at most {MAX_STORED_METADATA} are kept; \
             register fewer or shorter redirect_uris, or leave out client_uri and logo_uri"
        )));
    }
    Ok(metadata)
}

/// At most [`MAX_REDIRECT_URIS`] distinct redirect URIs, each valid.
fn checked_redirect_uris(uris: Option<Vec<String>>) -> Result<Vec<String>, ApiError> {
    let uris = distinct(uris.unwrap_or_default());
    if uris.is_empty() {
        return Err(invalid_redirect(
            "redirect_uris is required and must not be empty",
        ));
    }
    if uris.len() > MAX_REDIRECT_URIS {
        return Err(invalid_redirect(format!(
            "at most {MAX_REDIRECT_URIS} redirect_uris"
        )));
    }
    for uri in &uris {
        validate_redirect_uri(uri).map_err(invalid_redirect)?;
    }
    Ok(uris)
}

/// The grant and response types, de-duplicated: only the authorization code flow (with refresh) is offered.
fn checked_grants(
    grant_types: Option<Vec<String>>,
    response_types: Option<Vec<String>>,
) -> Result<(Vec<String>, Vec<String>), ApiError> {
    // Refresh tokens are issued to every client, so the default grant list says so.
    let grant_types = distinct(
        grant_types.unwrap_or_else(|| vec!["authorization_code".into(), "refresh_token".into()]),
    );
    if let Some(bad) = grant_types
        .iter()
        .find(|g| !matches!(g.as_str(), "authorization_code" | "refresh_token"))
    {
        return Err(invalid_metadata(format!(
            "grant type {:?} is not supported; use authorization_code and refresh_token",
            shortened(bad)
        )));
    }
    let response_types = distinct(response_types.unwrap_or_else(|| vec!["code".into()]));
    if response_types.iter().any(|r| r != "code") {
        return Err(invalid_metadata(
            "only the response type \"code\" is supported",
        ));
    }
    Ok((grant_types, response_types))
}

/// The list without repeats, in its first order.
fn distinct(values: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(values.len().min(MAX_REDIRECT_URIS + 1));
    for value in values {
        if !out.contains(&value) {
            out.push(value);
        }
        // A list longer than any accepted one is refused anyway; stop comparing.
        if out.len() > MAX_REDIRECT_URIS {
            break;
        }
    }
    out
}

/// Caller text quoted back in an error, cut to a readable length.
fn shortened(text: &str) -> String {
    text.chars().take(60).collect()
}

/// `POST /register`.
pub async fn register(
    State(state): State<OAuthState>,
    address: Option<Extension<ClientAddress>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let oauth = &*state.oauth;
    limit_registrations(&state, address.and_then(|Extension(ClientAddress(ip))| ip))?;
    let request: RegistrationRequest = serde_json::from_slice(&body).map_err(|e| {
        invalid_metadata(format!(
            "the body must be a JSON client metadata object: {e}"
        ))
    })?;
    // RFC 7591 §2: the default is client_secret_basic.
    let metadata = checked_metadata(request, "client_secret_basic")?;
    let now = now_ms();
    let client_id = oauth.keys.token(CLIENT_ID_PREFIX)?;
    let registration_token = oauth.keys.token(REGISTRATION_TOKEN_PREFIX)?;
    let secret = if metadata.token_endpoint_auth_method == "none" {
        None
    } else {
        Some(oauth.keys.token(CLIENT_SECRET_PREFIX)?)
    };
    make_room_for_a_registration(&state).await?;
    let row = ClientRow {
        client_id: client_id.clone(),
        kind: ClientKind::Registered,
        metadata: serde_json::to_string(&metadata)
            .map_err(|e| OAuthError::Internal(e.to_string()))?,
        secret_hash: secret.as_deref().map(hash),
        registration_token_hash: Some(hash(&registration_token)),
        created_at_ms: now,
        expires_at_ms: None,
    };
    state
        .store
        .insert_client(&row)
        .await
        .map_err(OAuthError::from)?;
    oauth.maybe_purge(&state.store).await;
    tracing::info!(
        client_id = %client_id,
        client_name = metadata.client_name.as_deref().unwrap_or("-"),
        auth_method = %metadata.token_endpoint_auth_method,
        "oauth client registered"
    );
    let mut body = registration_body(oauth, &client_id, &metadata, now);
    body["registration_access_token"] = json!(registration_token);
    if let Some(secret) = secret {
        body["client_secret"] = json!(secret);
        body["client_secret_expires_at"] = json!(0);
    }
    Ok((StatusCode::CREATED, no_store(), axum::Json(body)).into_response())
}

/// A 429 when the caller's address has registered its allowance this minute. An IPv6 address counts by its
/// /64, the block one subscriber gets, so a single host cannot register from a fresh address each time.
fn limit_registrations(state: &OAuthState, address: Option<IpAddr>) -> Result<(), ApiError> {
    let bucket = match address {
        Some(ip) => format!("register:{}", address_group(ip)),
        None => "register:unknown".to_owned(),
    };
    let limit = state.config.oauth.oauth_registrations_per_minute;
    let Decision::Limited {
        retry_after_secs, ..
    } = state.rate_limiter.hit_local(&bucket, limit, now_ms())
    else {
        return Ok(());
    };
    state.metrics.rate_limited("registration");
    Err(ApiError::TooManyRequests {
        message: format!(
            "too many client registrations from this address (limit {limit} per minute); retry after {retry_after_secs} s"
        ),
        retry_after_secs,
    })
}

/// Keeps the registrations never used for a sign-in under the configured cap by dropping the oldest of them:
/// a flood from many addresses then costs a bounded table, not a refusal for everyone. A client opens
/// `/authorize` (which makes its registration used) as its next step, so the oldest unused are the abandoned.
async fn make_room_for_a_registration(state: &OAuthState) -> Result<(), ApiError> {
    let cap = i64::from(state.config.oauth.oauth_max_unused_clients);
    let unused = state
        .store
        .count_unused_clients()
        .await
        .map_err(OAuthError::from)?;
    if unused < cap {
        return Ok(());
    }
    let dropped = state
        .store
        .delete_oldest_unused_clients(unused - cap + 1)
        .await
        .map_err(OAuthError::from)?;
    if state.oauth.time_to_warn_of_full_registrations(now_ms()) {
        tracing::warn!(
            dropped,
            cap,
            "unused client registrations reached POLYTOMIC_MCP_OAUTH_MAX_UNUSED_CLIENTS; the oldest were dropped (warned at most once a minute)"
        );
    }
    Ok(())
}

fn registration_body(
    oauth: &OAuth,
    client_id: &str,
    metadata: &ClientMetadata,
    issued_ms: i64,
) -> Value {
    let mut body = serde_json::to_value(metadata).unwrap_or_else(|_| json!({}));
    body["client_id"] = json!(client_id);
    body["client_id_issued_at"] = json!(issued_ms / 1000);
    body["registration_client_uri"] = json!(format!("{}/register/{client_id}", oauth.issuer));
    body
}

pub fn no_store() -> [(header::HeaderName, &'static str); 2] {
    [
        (header::CACHE_CONTROL, "no-store"),
        (header::PRAGMA, "no-cache"),
    ]
}

/// Checks the registration access token of RFC 7592 and returns the stored client.
async fn registered_client(
    state: &OAuthState,
    client_id: &str,
    headers: &HeaderMap,
) -> Result<ClientRow, ApiError> {
    let denied = || {
        oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_token",
            "send the registration_access_token from the registration response as a bearer token",
        )
    };
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .ok_or_else(denied)?;
    let row = state
        .store
        .get_client(client_id)
        .await
        .map_err(OAuthError::from)?;
    match row {
        Some(row)
            if row.kind == ClientKind::Registered
                && row
                    .registration_token_hash
                    .as_deref()
                    .is_some_and(|stored| same(stored, &hash(token))) =>
        {
            Ok(row)
        }
        _ => Err(denied()),
    }
}

/// `GET /register/{client_id}` (RFC 7592 §2.1).
pub async fn read_registration(
    State(state): State<OAuthState>,
    Path(client_id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let oauth = &*state.oauth;
    let row = registered_client(&state, &client_id, &headers).await?;
    let client = Client::from_row(row.clone())?;
    let body = registration_body(oauth, &client.id, &client.metadata, row.created_at_ms);
    Ok((StatusCode::OK, no_store(), axum::Json(body)).into_response())
}

/// `DELETE /register/{client_id}` (RFC 7592 §2.3): the client and its sessions go (their grants at the
/// provider too, when upstream revocation is on).
pub async fn delete_registration(
    State(state): State<OAuthState>,
    Path(client_id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    registered_client(&state, &client_id, &headers).await?;
    let sessions = SessionFilter {
        client_id: Some(client_id.clone()),
        ..SessionFilter::default()
    };
    for session in state
        .store
        .list_sessions(&sessions, now_ms())
        .await
        .map_err(OAuthError::from)?
    {
        end_session(&state, &session.id, EndReason::ClientDeleted).await?;
    }
    state
        .store
        .delete_client(&client_id, now_ms())
        .await
        .map_err(OAuthError::from)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ------------------------------------------------------------------ client ID metadata documents

/// The client used only for metadata documents: no redirects, tight timeouts, and a resolver that refuses
/// private addresses, so a `client_id` cannot make the server probe its own network.
pub fn metadata_document_client(fetch: &MetadataFetch) -> Result<reqwest::Client, OAuthError> {
    let allow_loopback = fetch.loopback_fixture_root.is_some();
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(METADATA_CONNECT_TIMEOUT)
        .timeout(METADATA_FETCH_TIMEOUT)
        .dns_resolver(Arc::new(PublicOnlyResolver { allow_loopback }))
        .user_agent(concat!("polytomic-mcp/", env!("CARGO_PKG_VERSION")));
    if let Some(root) = &fetch.loopback_fixture_root {
        builder = builder.add_root_certificate(root.clone());
    }
    builder
        .build()
        .map_err(|e| OAuthError::Internal(format!("metadata document client: {e}")))
}

/// How client metadata documents are fetched. The only value production builds is the default: https to
/// public addresses, checked against the system's roots. The test fixture (`polytomic_mcp::testing`, behind the
/// `test-hooks` feature that only the crate's own dev-dependency turns on) serves documents over https on
/// loopback with its own certificate; only then are loopback addresses reachable and that root trusted.
#[derive(Default, Clone)]
pub struct MetadataFetch {
    pub(crate) loopback_fixture_root: Option<reqwest::Certificate>,
}

impl MetadataFetch {
    /// Whether the loopback test fixture is in use (loopback addresses pass the address rule).
    pub(crate) fn allows_loopback(&self) -> bool {
        self.loopback_fixture_root.is_some()
    }
}

struct PublicOnlyResolver {
    allow_loopback: bool,
}

impl reqwest::dns::Resolve for PublicOnlyResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow_loopback = self.allow_loopback;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<std::net::SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|addr| address_allowed(addr.ip(), allow_loopback))
                .collect();
            if addrs.is_empty() {
                return Err(format!("{host} resolves to no public address").into());
            }
            let addrs: reqwest::dns::Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

/// Globally routable unicast only (plus loopback for the test fixture, see [`MetadataFetch`]). IPv6 is allowed only inside global unicast
/// (2000::/3) minus its special-purpose blocks; the forms that carry an IPv4 address (mapped, SIIT, NAT64's
/// well-known prefix, 6to4) are judged by that IPv4 address, since that is where a connection ends up.
pub fn address_allowed(ip: IpAddr, allow_loopback: bool) -> bool {
    if ip.is_loopback() {
        return allow_loopback;
    }
    match ip {
        IpAddr::V4(v4) => ipv4_allowed(v4),
        IpAddr::V6(v6) => match embedded_ipv4(v6) {
            Some(v4) => !v4.is_loopback() && ipv4_allowed(v4),
            None => ipv6_allowed(v6),
        },
    }
}

fn ipv4_allowed(v4: std::net::Ipv4Addr) -> bool {
    let [a, b, c, _] = v4.octets();
    !(v4.is_private()
        || v4.is_loopback()
        || v4.is_link_local()
        || v4.is_unspecified()
        || v4.is_broadcast()
        || v4.is_documentation()
        || v4.is_multicast()
        || a == 0
        || a >= 240
        // Shared address space (carrier-grade NAT), 100.64.0.0/10.
        || (a == 100 && (64..128).contains(&b))
        // IETF protocol assignments, 192.0.0.0/24.
        || (a == 192 && b == 0 && c == 0)
        // The deprecated 6to4 relay anycast, 192.88.99.0/24.
        || (a == 192 && b == 88 && c == 99)
        // Benchmarking, 198.18.0.0/15.
        || (a == 198 && (b & 0xfe) == 18))
}

/// The IPv4 address an IPv6 address stands for, when it is one of the forms that embed one.
fn embedded_ipv4(v6: std::net::Ipv6Addr) -> Option<std::net::Ipv4Addr> {
    let o = v6.octets();
    let last_32 = std::net::Ipv4Addr::new(o[12], o[13], o[14], o[15]);
    match v6.segments() {
        // IPv4-mapped ::ffff:a.b.c.d and the SIIT form ::ffff:0:a.b.c.d.
        [0, 0, 0, 0, 0, 0xffff, ..] | [0, 0, 0, 0, 0xffff, 0, ..] => Some(last_32),
        // NAT64 well-known prefix 64:ff9b::/96.
        [0x64, 0xff9b, 0, 0, 0, 0, ..] => Some(last_32),
        // 6to4 2002:a.b.c.d::/48.
        [0x2002, ..] => Some(std::net::Ipv4Addr::new(o[2], o[3], o[4], o[5])),
        _ => None,
    }
}

/// IPv6 that embeds no IPv4 address: global unicast (2000::/3) only, without its special-purpose blocks.
/// Everything else (::/96 IPv4-compatible, 64:ff9b:1::/48 local-use NAT64, 100::/64 discard, fc00::/7,
/// fe80::/10, fec0::/10, multicast) lies outside 2000::/3.
fn ipv6_allowed(v6: std::net::Ipv6Addr) -> bool {
    let s = v6.segments();
    let global_unicast = (s[0] & 0xe000) == 0x2000;
    let special_purpose = match s[0] {
        // IETF protocol assignments 2001::/23 (Teredo, ORCHID, benchmarking…) and documentation 2001:db8::/32.
        0x2001 => s[1] < 0x0200 || s[1] == 0x0db8,
        // Documentation 3fff::/20.
        first => (first & 0xfff0) == 0x3ff0,
    };
    global_unicast && !special_purpose
}

fn document_error(message: impl Into<String>) -> ClientError {
    ClientError::MetadataDocument(message.into())
}

async fn fetch_metadata_document(
    oauth: &OAuth,
    client_id: &str,
) -> Result<(ClientMetadata, i64), ClientError> {
    let url = Url::parse(client_id).map_err(|_| document_error("client_id is not a URL"))?;
    // The URL must be in canonical form (no dot segments, no default port spelled out), since the document
    // must repeat it byte for byte.
    if url.as_str() != client_id {
        return Err(document_error("client_id is not in canonical URL form"));
    }
    if url.fragment().is_some() || !url.username().is_empty() || url.password().is_some() {
        return Err(document_error(
            "client_id must not carry a fragment or credentials",
        ));
    }
    if url.path() == "/" || url.path().is_empty() {
        return Err(document_error("client_id must have a path"));
    }
    if url.scheme() != "https" {
        return Err(document_error("client_id must be an https URL"));
    }
    let host = url.host_str().unwrap_or_default();
    if let Ok(ip) = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
        && !address_allowed(ip, oauth.cimd_loopback_fixture)
    {
        return Err(document_error("client_id points at a private address"));
    }
    let response = oauth
        .cimd_http
        .get(url.clone())
        .header(header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| document_error(format!("fetching it failed ({})", without_url(&e))))?;
    if response.status() != StatusCode::OK {
        return Err(document_error(format!(
            "fetching it answered {}",
            response.status()
        )));
    }
    let ttl_ms = cache_ttl_ms(response.headers());
    let body = read_capped(response, MAX_METADATA_DOCUMENT)
        .await
        .map_err(|e| match e {
            CappedReadError::TooLarge { cap } => {
                document_error(format!("it is larger than {cap} bytes"))
            }
            CappedReadError::Read(e) => {
                document_error(format!("reading it failed ({})", without_url(&e)))
            }
        })?;
    let document: Value = serde_json::from_slice(&body)
        .map_err(|e| document_error(format!("it is not JSON ({e})")))?;
    if document.get("client_id").and_then(Value::as_str) != Some(client_id) {
        return Err(document_error(
            "its client_id does not equal the URL it was fetched from",
        ));
    }
    if document.get("client_secret").is_some() || document.get("client_secret_expires_at").is_some()
    {
        return Err(document_error("it must not contain a client secret"));
    }
    let request: RegistrationRequest = serde_json::from_value(document)
        .map_err(|e| document_error(format!("a field has the wrong type ({e})")))?;
    if let Some(method) = request.token_endpoint_auth_method.as_deref()
        && method != "none"
    {
        return Err(document_error(format!(
            "token_endpoint_auth_method {method:?} is not supported for metadata documents; use \"none\""
        )));
    }
    let metadata = checked_metadata(request, "none").map_err(|e| document_error(e.to_string()))?;
    Ok((metadata, ttl_ms))
}

/// reqwest's error text, with its innermost cause (which says why: a refused address, a bad certificate…);
/// the URL it may repeat is the client's own, but keep messages short.
fn without_url(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut cause: Option<&dyn std::error::Error> = std::error::Error::source(error);
    let mut innermost = None;
    while let Some(inner) = cause {
        innermost = Some(inner);
        cause = inner.source();
    }
    if let Some(inner) = innermost {
        text = format!("{text}: {inner}");
    }
    if let Some(url) = error.url() {
        text = text.replace(url.as_str(), "client_id");
    }
    text
}

/// `Cache-Control: max-age`, bounded; an hour when absent.
fn cache_ttl_ms(headers: &HeaderMap) -> i64 {
    let max_age = headers
        .get(header::CACHE_CONTROL)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.split(',')
                .filter_map(|d| d.trim().strip_prefix("max-age="))
                .find_map(|s| s.trim().parse::<i64>().ok())
        });
    match max_age {
        Some(secs) => secs
            .saturating_mul(1000)
            .clamp(METADATA_CACHE_MIN_MS, METADATA_CACHE_MAX_MS),
        None => METADATA_CACHE_DEFAULT_MS,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_uri_rules() {
        for ok in [
            "https://claude.ai/api/mcp/auth_callback",
            "https://claude.com/api/mcp/auth_callback",
            "http://localhost:33418/callback",
            "http://127.0.0.1:1455/callback/abc",
            "http://[::1]:8080/cb",
            "com.example.app:/oauth2redirect",
        ] {
            assert!(validate_redirect_uri(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://example.com/cb",
            "https://claude.ai/cb#frag",
            "javascript:alert(1)",
            "not a url",
            "ftp://example.com/",
        ] {
            assert!(validate_redirect_uri(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn loopback_redirects_match_on_any_port_and_nothing_else() {
        let registered = "http://127.0.0.1:1455/callback";
        assert!(redirect_matches(
            registered,
            "http://127.0.0.1:50123/callback"
        ));
        assert!(redirect_matches(registered, "http://127.0.0.1/callback"));
        assert!(!redirect_matches(
            registered,
            "http://127.0.0.1:50123/other"
        ));
        assert!(!redirect_matches(
            registered,
            "http://localhost:50123/callback"
        ));
        assert!(!redirect_matches(
            "https://claude.ai/api/mcp/auth_callback",
            "https://claude.ai:8443/api/mcp/auth_callback"
        ));
        assert!(redirect_matches(
            "https://claude.ai/api/mcp/auth_callback",
            "https://claude.ai/api/mcp/auth_callback"
        ));
    }

    #[test]
    fn private_addresses_are_refused() {
        for ip in [
            "10.0.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "::1",
            "fd00::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(!address_allowed(ip.parse().unwrap(), false), "{ip}");
        }
        assert!(address_allowed("93.184.216.34".parse().unwrap(), false));
        assert!(address_allowed("127.0.0.1".parse().unwrap(), true));
    }

    /// Addresses that reach a private, reserved or translated network, spelled every way the resolver could
    /// return them. Only parsed, never connected to.
    #[test]
    fn embedded_and_reserved_addresses_are_refused() {
        let refused = [
            // IPv4 special-purpose ranges.
            "198.18.0.1",
            "198.19.255.254",
            "192.0.0.8",
            "192.0.0.170",
            "192.88.99.1",
            "224.0.0.1",
            "240.0.0.1",
            "255.255.255.255",
            "0.1.2.3",
            "192.0.2.10",
            // IPv4-compatible (deprecated) ::a.b.c.d.
            "::10.0.0.1",
            "::127.0.0.1",
            "::169.254.169.254",
            "::8.8.8.8",
            // IPv4-mapped and the SIIT form ::ffff:0:a.b.c.d.
            "::ffff:192.168.0.1",
            "::ffff:0:10.0.0.1",
            "::ffff:0:127.0.0.1",
            // NAT64: well-known prefix with private targets, and the local-use prefix whatever it embeds.
            "64:ff9b::10.0.0.1",
            "64:ff9b::169.254.169.254",
            "64:ff9b::127.0.0.1",
            "64:ff9b:1::a00:1",
            "64:ff9b:1:ffff::1",
            // 6to4 with private targets.
            "2002:a00:1::1",
            "2002:c0a8:101::1",
            "2002:7f00:1::1",
            "2002:a9fe:a9fe::1",
            // Reserved IPv6 ranges.
            "fec0::1",
            "feff::1",
            "100::1",
            "100::ffff:ffff:ffff:ffff",
            "fc00::1",
            "fe80::1",
            "ff02::1",
            "2001:db8::1",
            "2001::1",
            "2001:2::1",
            "3fff::1",
            "5f00::1",
            "::",
            "::1",
        ];
        for ip in refused {
            assert!(!address_allowed(ip.parse().unwrap(), false), "{ip} passed");
        }
        let allowed = [
            "93.184.216.34",
            "8.8.8.8",
            "2606:4700::1111",
            "2a00:1450:4001:81b::200e",
            "::ffff:93.184.216.34",
            "64:ff9b::93.184.216.34",
            "2002:5db8:d822::1",
        ];
        for ip in allowed {
            assert!(address_allowed(ip.parse().unwrap(), false), "{ip} refused");
        }
    }

    fn registration(body: serde_json::Value) -> RegistrationRequest {
        serde_json::from_value(body).unwrap()
    }

    fn refusal(error: ApiError) -> (&'static str, String) {
        match error {
            ApiError::OAuth {
                error, description, ..
            } => (error, description),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_stored_list_is_bounded_and_without_repeats() {
        let flood = vec!["authorization_code"; 10_000];
        let metadata = checked_metadata(
            registration(json!({
                "redirect_uris": ["http://127.0.0.1/cb", "http://127.0.0.1/cb", "http://[::1]/cb"],
                "grant_types": flood,
                "response_types": vec!["code"; 10_000],
            })),
            "none",
        )
        .unwrap();
        assert_eq!(
            metadata.redirect_uris,
            ["http://127.0.0.1/cb", "http://[::1]/cb"]
        );
        assert_eq!(metadata.grant_types, ["authorization_code"]);
        assert_eq!(metadata.response_types, ["code"]);
        let eleven: Vec<String> = (0..11).map(|n| format!("http://127.0.0.1/cb{n}")).collect();
        let (error, description) = refusal(
            checked_metadata(registration(json!({"redirect_uris": eleven})), "none").unwrap_err(),
        );
        assert_eq!(error, "invalid_redirect_uri");
        assert!(description.contains("at most 10"), "{description}");
    }

    #[test]
    fn the_whole_stored_metadata_is_bounded() {
        let long: Vec<String> = (0..5)
            .map(|n| format!("https://app.example/{n}/{}", "p".repeat(1_900)))
            .collect();
        let (error, description) = refusal(
            checked_metadata(registration(json!({"redirect_uris": long})), "none").unwrap_err(),
        );
        assert_eq!(error, "invalid_client_metadata");
        assert!(description.contains("8192"), "{description}");
        let (error, _) = refusal(
            checked_metadata(
                registration(json!({"redirect_uris": ["http://127.0.0.1/cb"], "client_name": "n".repeat(201)})),
                "none",
            )
            .unwrap_err(),
        );
        assert_eq!(error, "invalid_client_metadata");
        // A real client's metadata is far inside the bounds.
        let claude = checked_metadata(
            registration(json!({
                "client_name": "Claude",
                "redirect_uris": ["https://claude.ai/api/mcp/auth_callback", "https://claude.com/api/mcp/auth_callback"],
                "token_endpoint_auth_method": "none",
                "grant_types": ["authorization_code", "refresh_token"],
                "response_types": ["code"]
            })),
            "client_secret_basic",
        )
        .unwrap();
        assert!(serde_json::to_string(&claude).unwrap().len() < 1_000);
    }

    #[test]
    fn cache_lifetime_is_bounded() {
        let mut headers = HeaderMap::new();
        assert_eq!(cache_ttl_ms(&headers), METADATA_CACHE_DEFAULT_MS);
        headers.insert(header::CACHE_CONTROL, "public, max-age=1".parse().unwrap());
        assert_eq!(cache_ttl_ms(&headers), METADATA_CACHE_MIN_MS);
        headers.insert(header::CACHE_CONTROL, "max-age=999999999".parse().unwrap());
        assert_eq!(cache_ttl_ms(&headers), METADATA_CACHE_MAX_MS);
    }
}
