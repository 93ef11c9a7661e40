//! `/token` (authorization code with PKCE, refresh with rotation and reuse detection) and `/revoke`
//! (RFC 7009), plus the access token format: `pmcp_at_` followed by an HS256 JWT (RFC 9068 claims) whose
//! audience is the MCP URL.
//!
//! A refresh token that comes back after it was used ends the sign-in (it leaked, or a thief raced the
//! client), except for an honest retry: the same client, within `POLYTOMIC_MCP_OAUTH_REFRESH_RETRY_SECS` of the
//! first use, before the pair that use produced was used. A client whose answer was lost on the way gets that
//! pair again (the same refresh token, a freshly signed access token for it) instead of losing the sign-in.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::{HeaderMap, StatusCode, header};
use jsonwebtoken::{Algorithm, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::OAuthState;
use super::clients::{self, Client, ClientError, no_store};
use super::keys::{hash, pkce_s256, same};
use super::revocation::{EndReason, end_session};
use super::scope;
use super::{
    ACCESS_TOKEN_PREFIX, OAuth, OAuthError, REFRESH_TOKEN_PREFIX, REFRESH_TTL_MS, now_ms,
    oauth_error,
};
use crate::error::ApiError;
use crate::secret::Secret;
use crate::store::oauth::{Consumed, SessionRow};
use crate::store::oauth_rotation::{NewRefreshToken, Rotation, RotationRefusal, UsedRefresh};

const ACCESS_TOKEN_TYPE: &str = "at+jwt";

/// The claims of our access tokens.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    pub aud: String,
    /// The Polytomic user id.
    pub sub: String,
    /// The session (refresh-token family) the token belongs to; checked on every request.
    pub sid: String,
    pub client_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// The token pair this access token was issued with; its first use on `/mcp` ends the retry window of
    /// the refresh that produced it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pair: Option<String>,
    pub iat: i64,
    pub exp: i64,
    pub jti: String,
}

fn invalid_request(description: impl Into<String>) -> ApiError {
    oauth_error(StatusCode::BAD_REQUEST, "invalid_request", description)
}

fn invalid_grant(description: impl Into<String>) -> ApiError {
    oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", description)
}

fn invalid_client(description: impl Into<String>) -> ApiError {
    oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", description)
}

/// Parses an `application/x-www-form-urlencoded` body; a repeated parameter is an error (RFC 6749 §3.1).
fn form(body: &[u8]) -> Result<HashMap<String, String>, ApiError> {
    let mut params = HashMap::new();
    for (name, value) in url::form_urlencoded::parse(body) {
        if params
            .insert(name.clone().into_owned(), value.into_owned())
            .is_some()
        {
            return Err(invalid_request(format!(
                "the parameter {name:?} appears more than once"
            )));
        }
    }
    Ok(params)
}

fn param<'a>(params: &'a HashMap<String, String>, name: &str) -> Option<&'a str> {
    params
        .get(name)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
}

/// Client authentication: HTTP Basic (`client_secret_basic`), body parameters (`client_secret_post`), or just
/// `client_id` for public clients (`none`), which PKCE protects instead.
async fn authenticate_client(
    oauth: &OAuth,
    state: &OAuthState,
    headers: &HeaderMap,
    params: &HashMap<String, String>,
) -> Result<Client, ApiError> {
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
        .map(|(_, encoded)| -> Result<(String, String), ApiError> {
            let decoded = STANDARD
                .decode(encoded.trim())
                .ok()
                .and_then(|bytes| String::from_utf8(bytes).ok())
                .ok_or_else(|| invalid_client("the Basic credentials are not base64"))?;
            let (id, secret) = decoded
                .split_once(':')
                .ok_or_else(|| invalid_client("the Basic credentials have no ':'"))?;
            // RFC 6749 §2.3.1: both halves are form-urlencoded before base64.
            let decode = |s: &str| {
                url::form_urlencoded::parse(format!("x={s}").as_bytes())
                    .next()
                    .map(|(_, v)| v.into_owned())
                    .unwrap_or_default()
            };
            Ok((decode(id), decode(secret)))
        })
        .transpose()?;
    let form_secret = param(params, "client_secret");
    if basic.is_some() && form_secret.is_some() {
        return Err(invalid_request(
            "use one client authentication method, not two",
        ));
    }
    let (client_id, secret) = match &basic {
        Some((id, secret)) => {
            if param(params, "client_id").is_some_and(|form_id| form_id != id) {
                return Err(invalid_request(
                    "client_id in the body differs from the Basic credentials",
                ));
            }
            (id.as_str(), Some(secret.as_str()))
        }
        None => (
            param(params, "client_id").ok_or_else(|| invalid_client("client_id is required"))?,
            form_secret,
        ),
    };
    let client = match clients::resolve(oauth, &state.store, client_id).await {
        Ok(client) => client,
        Err(ClientError::Server(error)) => return Err(error.into()),
        // `invalid_client` makes clients such as Claude register again.
        Err(error) => return Err(invalid_client(error.to_string())),
    };
    if client.is_confidential() {
        match secret {
            Some(secret) if client.secret_matches(secret) => {}
            Some(_) => return Err(invalid_client("the client secret is wrong")),
            None => {
                return Err(invalid_client(
                    "this client must authenticate with its client secret",
                ));
            }
        }
    }
    Ok(client)
}

/// `POST /token`.
pub async fn token(
    State(state): State<OAuthState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let oauth = &*state.oauth;
    let params = form(&body)?;
    let grant_type =
        param(&params, "grant_type").ok_or_else(|| invalid_request("grant_type is required"))?;
    let client = authenticate_client(oauth, &state, &headers, &params).await?;
    if let Some(resource) = param(&params, "resource")
        && resource != oauth.resource
    {
        return Err(oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_target",
            format!("resource must be {}", oauth.resource),
        ));
    }
    let now = now_ms();
    let body = match grant_type {
        "authorization_code" => {
            let session = redeem_code(&state, &client, &params, now).await?;
            issue_first_pair(oauth, &state, &session, now).await?
        }
        "refresh_token" => refresh(&state, &client, &params, now).await?,
        other => {
            return Err(oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                format!(
                    "grant_type {other:?} is not supported; use authorization_code or refresh_token"
                ),
            ));
        }
    };
    Ok((StatusCode::OK, no_store(), axum::Json(body)).into_response())
}

async fn redeem_code(
    state: &OAuthState,
    client: &Client,
    params: &HashMap<String, String>,
    now: i64,
) -> Result<SessionRow, ApiError> {
    let code = param(params, "code").ok_or_else(|| invalid_request("code is required"))?;
    let verifier = param(params, "code_verifier")
        .ok_or_else(|| invalid_request("code_verifier is required (PKCE)"))?;
    let redirect_uri =
        param(params, "redirect_uri").ok_or_else(|| invalid_request("redirect_uri is required"))?;
    let row = match state
        .store
        .consume_code(&hash(code), now)
        .await
        .map_err(OAuthError::from)?
    {
        Consumed::Fresh(row) => row,
        Consumed::Reused { session_id } => {
            // RFC 6749 §4.1.2: a code used twice may have leaked; what it granted goes too.
            tracing::warn!(client_id = %client.id, "oauth authorization code reused; session revoked");
            end_session(state, &session_id, EndReason::Reuse).await?;
            return Err(invalid_grant("the authorization code was already used"));
        }
        Consumed::Unknown => return Err(invalid_grant("the authorization code is not valid")),
    };
    let verifier_ok = (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
    let problem = if row.expires_at_ms <= now {
        Some("the authorization code has expired")
    } else if row.client_id != client.id {
        Some("the authorization code was issued to another client")
    } else if row.redirect_uri != redirect_uri {
        Some("redirect_uri differs from the one in the authorization request")
    } else if !verifier_ok || !same(&pkce_s256(verifier), &row.code_challenge) {
        Some("code_verifier does not match the code_challenge")
    } else {
        None
    };
    if let Some(description) = problem {
        // The code is spent either way; the session it would have opened goes with it.
        end_session(state, &row.session_id, EndReason::Misuse).await?;
        return Err(invalid_grant(description));
    }
    let session = state
        .store
        .get_session(&row.session_id)
        .await
        .map_err(OAuthError::from)?
        .filter(|s| s.revoked_at_ms.is_none())
        .ok_or_else(|| invalid_grant("the sign-in behind this code was revoked"))?;
    Ok(session)
}

/// `grant_type=refresh_token`: rotation, an honest retry answered with the same pair, or reuse ending the
/// sign-in.
async fn refresh(
    state: &OAuthState,
    client: &Client,
    params: &HashMap<String, String>,
    now: i64,
) -> Result<serde_json::Value, ApiError> {
    let oauth = &*state.oauth;
    let token = param(params, "refresh_token")
        .ok_or_else(|| invalid_request("refresh_token is required"))?;
    let asked = param(params, "scope");
    let parent_hash = hash(token);
    // A scope the grant does not cover is refused before the refresh token is spent, so the client can
    // retry without it.
    if asked.is_some() {
        check_refresh_scope(state, &parent_hash, asked).await?;
    }
    let refresh = oauth.keys.token(REFRESH_TOKEN_PREFIX)?;
    let successor = NewRefreshToken {
        token_hash: hash(&refresh),
        pair_id: new_pair_id(),
        expires_at_ms: now + REFRESH_TTL_MS,
    };
    let sealed = oauth.keys.encrypt(&refresh, &successor_aad(&parent_hash))?;
    let rotation = state
        .store
        .rotate_refresh_token(
            &parent_hash,
            &client.id,
            &successor,
            &sealed,
            now + REFRESH_TTL_MS,
            now,
        )
        .await
        .map_err(OAuthError::from)?;
    let session = match rotation {
        Rotation::Rotated(session) => session,
        Rotation::Reused(used) => {
            return retry_or_end(state, client, &parent_hash, used, asked, now).await;
        }
        Rotation::Refused { session_id, reason } => {
            return Err(match reason {
                RotationRefusal::SessionEnded => {
                    invalid_grant("the sign-in was revoked or has expired; sign in again")
                }
                RotationRefusal::Expired => {
                    invalid_grant("the refresh token has expired; sign in again")
                }
                RotationRefusal::OtherClient => {
                    end_session(state, &session_id, EndReason::Misuse).await?;
                    invalid_grant("the refresh token was issued to another client")
                }
            });
        }
        Rotation::Unknown => {
            return Err(invalid_grant(
                "the refresh token is not valid; sign in again",
            ));
        }
    };
    let session = narrow_to_request(state, session, asked).await?;
    token_response(oauth, &session, &refresh, &successor.pair_id, now)
}

/// A used refresh token came back: the pair it produced once more when this is an honest retry, otherwise
/// the end of the sign-in (either the client or a thief holds a copy).
async fn retry_or_end(
    state: &OAuthState,
    client: &Client,
    parent_hash: &str,
    used: UsedRefresh,
    asked: Option<&str>,
    now: i64,
) -> Result<serde_json::Value, ApiError> {
    if let Some((session, refresh, pair_id)) =
        retried_pair(state, client, parent_hash, &used, now).await?
    {
        state.metrics.oauth_event("refresh_retry");
        tracing::info!(client_id = %client.id, session_id = %session.id, "oauth refresh retried; the pair it produced is sent again");
        let session = narrow_to_request(state, session, asked).await?;
        return token_response(&state.oauth, &session, refresh.expose(), &pair_id, now);
    }
    state.metrics.oauth_event("refresh_reuse");
    tracing::warn!(client_id = %client.id, "oauth refresh token reused; session revoked");
    end_session(state, &used.session_id, EndReason::Reuse).await?;
    Err(invalid_grant(
        "the refresh token was already used; sign in again",
    ))
}

/// The session, refresh token and pair id to answer a retry with, when the reuse is one: the same client,
/// within the retry window of the first use, and the pair that use produced still the newest and unused.
async fn retried_pair(
    state: &OAuthState,
    client: &Client,
    parent_hash: &str,
    used: &UsedRefresh,
    now: i64,
) -> Result<Option<(SessionRow, Secret, String)>, ApiError> {
    let window = state.config.oauth.refresh_retry_ms();
    let (Some(used_at), Some(pair_id), Some(sealed)) = (
        used.used_at_ms,
        used.successor_pair.as_deref(),
        used.successor_sealed.as_deref(),
    ) else {
        return Ok(None);
    };
    if window == 0 || now > used_at.saturating_add(window) {
        return Ok(None);
    }
    let Some((session, pair)) = state
        .store
        .get_session_and_pair(&used.session_id)
        .await
        .map_err(OAuthError::from)?
    else {
        return Ok(None);
    };
    let unused_newest = pair.pair_id.as_deref() == Some(pair_id) && pair.used_at_ms.is_none();
    let live = session.revoked_at_ms.is_none() && session.expires_at_ms > now;
    if !(unused_newest && live && session.client_id == client.id) {
        return Ok(None);
    }
    match state
        .oauth
        .keys
        .decrypt(sealed, &successor_aad(parent_hash))
    {
        Ok(refresh) => Ok(Some((session, refresh, pair_id.to_owned()))),
        Err(error) => {
            tracing::warn!(%error, "the refresh token kept for a retry does not decrypt");
            Ok(None)
        }
    }
}

/// The encryption context of the refresh token a used refresh token produced: bound to that parent token.
fn successor_aad(parent_hash: &str) -> String {
    format!("refresh:{parent_hash}:successor")
}

fn new_pair_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

fn invalid_scope(description: String) -> ApiError {
    oauth_error(StatusCode::BAD_REQUEST, "invalid_scope", description)
}

/// Refuses a refresh that asks for more than its session was granted (an unknown token passes here; the
/// rotation that follows refuses it properly).
async fn check_refresh_scope(
    state: &OAuthState,
    token_hash: &str,
    asked: Option<&str>,
) -> Result<(), ApiError> {
    let store = &state.store;
    let Some(session_id) = store
        .refresh_token_session(token_hash)
        .await
        .map_err(OAuthError::from)?
    else {
        return Ok(());
    };
    if let Some(session) = store
        .get_session(&session_id)
        .await
        .map_err(OAuthError::from)?
    {
        scope::requested_at_refresh(asked, scope::access_of(session.scope.as_deref()))
            .map_err(invalid_scope)?;
    }
    Ok(())
}

/// A refresh that asks for less than the grant narrows the grant for good (RFC 6749 §6).
async fn narrow_to_request(
    state: &OAuthState,
    mut session: SessionRow,
    asked: Option<&str>,
) -> Result<SessionRow, ApiError> {
    let granted = scope::access_of(session.scope.as_deref());
    let wanted = scope::requested_at_refresh(asked, granted).map_err(invalid_scope)?;
    if wanted < granted {
        let narrowed = scope::granting(wanted);
        state
            .store
            .set_session_scope(&session.id, narrowed)
            .await
            .map_err(OAuthError::from)?;
        tracing::info!(client_id = %session.client_id, access = %wanted, "oauth grant narrowed on refresh");
        session.scope = Some(narrowed.to_owned());
    }
    Ok(session)
}

/// The first pair of a session, after the authorization code.
async fn issue_first_pair(
    oauth: &OAuth,
    state: &OAuthState,
    session: &SessionRow,
    now: i64,
) -> Result<serde_json::Value, ApiError> {
    let refresh = oauth.keys.token(REFRESH_TOKEN_PREFIX)?;
    let first = NewRefreshToken {
        token_hash: hash(&refresh),
        pair_id: new_pair_id(),
        expires_at_ms: now + REFRESH_TTL_MS,
    };
    state
        .store
        .insert_first_pair(&session.id, &first, now)
        .await
        .map_err(OAuthError::from)?;
    token_response(oauth, session, &refresh, &first.pair_id, now)
}

/// The token response: a new access token for `session` in pair `pair_id`, with that pair's refresh token.
fn token_response(
    oauth: &OAuth,
    session: &SessionRow,
    refresh: &str,
    pair_id: &str,
    now: i64,
) -> Result<serde_json::Value, ApiError> {
    let ttl_secs = i64::try_from(oauth.access_ttl.as_secs()).unwrap_or(3600);
    let access = sign_access_token(oauth, session, Some(pair_id), now / 1000, ttl_secs)?;
    let mut body = json!({
        "access_token": access,
        "token_type": "Bearer",
        "expires_in": ttl_secs,
        "refresh_token": refresh,
    });
    if let Some(scope) = &session.scope {
        body["scope"] = json!(scope);
    }
    Ok(body)
}

pub fn sign_access_token(
    oauth: &OAuth,
    session: &SessionRow,
    pair: Option<&str>,
    now_secs: i64,
    ttl_secs: i64,
) -> Result<String, OAuthError> {
    let claims = AccessClaims {
        iss: oauth.issuer.clone(),
        aud: oauth.resource.clone(),
        sub: session.user_id.clone(),
        sid: session.id.clone(),
        client_id: session.client_id.clone(),
        scope: session.scope.clone(),
        pair: pair.map(str::to_owned),
        iat: now_secs,
        exp: now_secs + ttl_secs,
        jti: uuid::Uuid::new_v4().simple().to_string(),
    };
    let mut header = Header::new(Algorithm::HS256);
    header.typ = Some(ACCESS_TOKEN_TYPE.into());
    let jwt = jsonwebtoken::encode(&header, &claims, &oauth.keys.encoding)
        .map_err(|e| OAuthError::Internal(format!("signing an access token: {e}")))?;
    Ok(format!("{ACCESS_TOKEN_PREFIX}{jwt}"))
}

/// Why an access token was refused (safe to tell the client).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenRejection {
    Malformed,
    Expired,
    Invalid,
}

impl TokenRejection {
    pub fn description(self) -> &'static str {
        match self {
            TokenRejection::Malformed => "the access token is malformed",
            TokenRejection::Expired => "the access token has expired; refresh it or sign in again",
            TokenRejection::Invalid => "the access token is not valid for this server",
        }
    }
}

/// Checks signature, issuer, audience and expiry. `check_expiry: false` is for revocation only.
pub fn verify_access_token(
    oauth: &OAuth,
    token: &str,
    check_expiry: bool,
) -> Result<AccessClaims, TokenRejection> {
    let jwt = token
        .strip_prefix(ACCESS_TOKEN_PREFIX)
        .ok_or(TokenRejection::Malformed)?;
    let mut validation = Validation::new(Algorithm::HS256);
    validation.set_issuer(&[&oauth.issuer]);
    validation.set_audience(&[&oauth.resource]);
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    validation.leeway = 0;
    validation.validate_exp = check_expiry;
    let data = jsonwebtoken::decode::<AccessClaims>(jwt, &oauth.keys.decoding, &validation)
        .map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenRejection::Expired,
            jsonwebtoken::errors::ErrorKind::InvalidToken
            | jsonwebtoken::errors::ErrorKind::Base64(_)
            | jsonwebtoken::errors::ErrorKind::Json(_)
            | jsonwebtoken::errors::ErrorKind::Utf8(_) => TokenRejection::Malformed,
            _ => TokenRejection::Invalid,
        })?;
    if data.header.typ.as_deref() != Some(ACCESS_TOKEN_TYPE) {
        return Err(TokenRejection::Invalid);
    }
    Ok(data.claims)
}

/// `POST /revoke` (RFC 7009). Revoking either token ends the session it belongs to; unknown tokens answer 200.
pub async fn revoke(
    State(state): State<OAuthState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let oauth = &*state.oauth;
    let params = form(&body)?;
    let token = param(&params, "token").ok_or_else(|| invalid_request("token is required"))?;
    let client = authenticate_client(oauth, &state, &headers, &params).await?;
    let session_id = if token.starts_with(REFRESH_TOKEN_PREFIX) {
        state
            .store
            .refresh_token_session(&hash(token))
            .await
            .map_err(OAuthError::from)?
    } else if token.starts_with(ACCESS_TOKEN_PREFIX) {
        verify_access_token(oauth, token, false)
            .ok()
            .map(|claims| claims.sid)
    } else {
        None
    };
    if let Some(session_id) = session_id {
        let session = state
            .store
            .get_session(&session_id)
            .await
            .map_err(OAuthError::from)?;
        // A client may revoke only its own tokens (RFC 7009 §2.1); for anyone else nothing happens.
        if session.is_some_and(|s| s.client_id == client.id)
            && end_session(&state, &session_id, EndReason::ClientRevoked).await?
        {
            tracing::info!(client_id = %client.id, "oauth session revoked by the client");
        }
    }
    Ok((StatusCode::OK, no_store()).into_response())
}
