//! `/token` (authorization code with PKCE, refresh with rotation and reuse detection) and `/revoke`
//! (RFC 7009), plus the access token format: `pmcp_at_` followed by an HS256 JWT (RFC 9068 claims) whose
//! audience is the MCP URL.

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
use super::scope;
use super::{
    ACCESS_TOKEN_PREFIX, OAuth, OAuthError, REFRESH_TOKEN_PREFIX, REFRESH_TTL_MS, now_ms,
    oauth_error,
};
use crate::error::ApiError;
use crate::store::oauth::{Consumed, SessionRow};

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
    let session = match grant_type {
        "authorization_code" => redeem_code(&state, &client, &params, now).await?,
        "refresh_token" => rotate_refresh_token(&state, &client, &params, now).await?,
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
    let body = issue_tokens(oauth, &state, &session, now).await?;
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
            state
                .store
                .revoke_session(&session_id, now)
                .await
                .map_err(OAuthError::from)?;
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
        state
            .store
            .revoke_session(&row.session_id, now)
            .await
            .map_err(OAuthError::from)?;
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

async fn rotate_refresh_token(
    state: &OAuthState,
    client: &Client,
    params: &HashMap<String, String>,
    now: i64,
) -> Result<SessionRow, ApiError> {
    let token = param(params, "refresh_token")
        .ok_or_else(|| invalid_request("refresh_token is required"))?;
    let asked = param(params, "scope");
    // A scope the grant does not cover is refused before the refresh token is spent, so the client can
    // retry without it.
    if asked.is_some() {
        check_refresh_scope(state, &hash(token), asked).await?;
    }
    let row = match state
        .store
        .consume_refresh_token(&hash(token), now)
        .await
        .map_err(OAuthError::from)?
    {
        Consumed::Fresh(row) => row,
        Consumed::Reused { session_id } => {
            // A rotated-out token came back: either the client or a thief holds a copy. End the whole family.
            tracing::warn!(client_id = %client.id, "oauth refresh token reused; session revoked");
            state
                .store
                .revoke_session(&session_id, now)
                .await
                .map_err(OAuthError::from)?;
            return Err(invalid_grant(
                "the refresh token was already used; sign in again",
            ));
        }
        Consumed::Unknown => {
            return Err(invalid_grant(
                "the refresh token is not valid; sign in again",
            ));
        }
    };
    let session = state
        .store
        .get_session(&row.session_id)
        .await
        .map_err(OAuthError::from)?
        .filter(|s| s.revoked_at_ms.is_none() && s.expires_at_ms > now)
        .ok_or_else(|| invalid_grant("the sign-in was revoked or has expired; sign in again"))?;
    if row.expires_at_ms <= now {
        return Err(invalid_grant(
            "the refresh token has expired; sign in again",
        ));
    }
    if session.client_id != client.id {
        state
            .store
            .revoke_session(&session.id, now)
            .await
            .map_err(OAuthError::from)?;
        return Err(invalid_grant(
            "the refresh token was issued to another client",
        ));
    }
    state
        .store
        .extend_session(&session.id, now + REFRESH_TTL_MS)
        .await
        .map_err(OAuthError::from)?;
    narrow_to_request(state, session, asked).await
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

/// A new access token and a new refresh token for `session`.
async fn issue_tokens(
    oauth: &OAuth,
    state: &OAuthState,
    session: &SessionRow,
    now: i64,
) -> Result<serde_json::Value, ApiError> {
    let ttl_secs = i64::try_from(oauth.access_ttl.as_secs()).unwrap_or(3600);
    let access = sign_access_token(oauth, session, now / 1000, ttl_secs)?;
    let refresh = oauth.keys.token(REFRESH_TOKEN_PREFIX)?;
    state
        .store
        .insert_refresh_token(&hash(&refresh), &session.id, now, now + REFRESH_TTL_MS)
        .await
        .map_err(OAuthError::from)?;
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
        if session.is_some_and(|s| s.client_id == client.id) {
            state
                .store
                .revoke_session(&session_id, now_ms())
                .await
                .map_err(OAuthError::from)?;
            tracing::info!(client_id = %client.id, "oauth session revoked by the client");
        }
    }
    Ok((StatusCode::OK, no_store()).into_response())
}
