//! The resource-server side: an access token on `/mcp` becomes a [`Principal`] whose upstream credential is
//! the session's Polytomic token (decrypted, refreshed upstream when it is about to expire). Our own token is
//! never sent upstream.

use std::time::Duration;

use super::OAuthState;
use super::authorize::{access_aad, refresh_aad};
use super::provider::ProviderError;
use super::token::{TokenRejection, verify_access_token};
use super::{OAuth, OAuthError};
use crate::core::{AuthMode, Credential, Modes, Principal, now_ms};
use crate::error::ApiError;
use crate::secret::Secret;
use crate::store::oauth::{SessionRow, UpstreamTokens};

/// Refresh the upstream token when it has less than this left, so a call never starts with a dying token.
const REFRESH_MARGIN_MS: i64 = 60 * 1000;
/// How long one replica may hold the right to refresh a session upstream.
const REFRESH_LEASE_MS: i64 = 30 * 1000;
/// How long a replica that lost the lease waits for the winner's new token.
const LEASE_WAIT: Duration = Duration::from_secs(10);

/// The `WWW-Authenticate` parameters after `realm` when OAuth is on (RFC 9728 §5.1, RFC 6750 §3).
pub fn challenge(oauth: &OAuth, error: Option<&str>) -> String {
    let mut out = format!("resource_metadata=\"{}\"", oauth.resource_metadata_url);
    if let Some(scope) = oauth.scope_string() {
        out.push_str(&format!(", scope=\"{scope}\""));
    }
    if let Some(description) = error {
        out.push_str(&format!(
            ", error=\"invalid_token\", error_description=\"{}\"",
            description.replace(['"', '\\'], "'")
        ));
    }
    out
}

fn unauthorized(oauth: &OAuth, description: &str) -> ApiError {
    ApiError::Unauthorized {
        message: description.to_owned(),
        realm_hint: Some(challenge(oauth, Some(description))),
    }
}

/// Checks an access token and builds the principal for this request.
pub(crate) async fn authenticate(
    state: &OAuthState,
    token: &Secret,
    modes: Modes,
) -> Result<Principal, ApiError> {
    let oauth = &*state.oauth;
    let claims = verify_access_token(oauth, token.expose(), true).map_err(|rejection| {
        state.metrics.auth_failure(match rejection {
            TokenRejection::Expired => "expired_token",
            _ => "invalid_token",
        });
        unauthorized(oauth, rejection.description())
    })?;
    let now = now_ms();
    let session = state
        .store
        .get_session(&claims.sid)
        .await
        .map_err(|e| ApiError::from(OAuthError::from(e)))?
        .filter(|s| {
            s.revoked_at_ms.is_none()
                && s.expires_at_ms > now
                && s.client_id == claims.client_id
                && s.user_id == claims.sub
        });
    let Some(session) = session else {
        state.metrics.auth_failure("revoked_token");
        return Err(unauthorized(
            oauth,
            "the sign-in behind this token was revoked; sign in again",
        ));
    };
    if modes.auth_mode == AuthMode::Partner {
        return Err(ApiError::Forbidden(
            "X-Polytomic-Auth-Mode: partner needs a Polytomic partner API key; an OAuth sign-in is a user session. \
             Drop the header to work as the signed-in user, or connect with a partner key instead of OAuth."
                .into(),
        ));
    }
    let upstream = upstream_token(state, oauth, session.clone()).await?;
    Ok(Principal {
        credential: Credential::OAuth { upstream },
        auth_mode: AuthMode::User,
        access_mode: modes.access_mode,
        partner_org_id: None,
        organization_id: session.organization_id.clone(),
        user_id: Some(session.user_id.clone()),
        // The sign-in itself was Polytomic's word on this person.
        verified: true,
        fingerprint: format!("oauth:{}", session.user_id),
    })
}

fn decrypt_access(oauth: &OAuth, session: &SessionRow) -> Result<Secret, OAuthError> {
    let sealed = session
        .upstream_access
        .as_deref()
        .ok_or_else(|| OAuthError::Internal("session without an upstream token".into()))?;
    oauth.keys.decrypt(sealed, &access_aad(&session.id))
}

fn fresh_enough(session: &SessionRow, now: i64) -> bool {
    session
        .upstream_expires_at_ms
        .is_none_or(|at| at > now + REFRESH_MARGIN_MS)
}

fn still_valid(session: &SessionRow, now: i64) -> bool {
    session.upstream_expires_at_ms.is_none_or(|at| at > now)
}

/// The session's upstream access token, refreshed first when it is about to expire. One replica refreshes
/// (it holds a lease in the store); the others wait for its result.
async fn upstream_token(
    state: &OAuthState,
    oauth: &OAuth,
    mut session: SessionRow,
) -> Result<Secret, ApiError> {
    let now = now_ms();
    if fresh_enough(&session, now) {
        return Ok(decrypt_access(oauth, &session)?);
    }
    let unavailable = || {
        ApiError::Unavailable(
            "the Polytomic sign-in needs renewing and Polytomic's sign-in service did not answer; try again shortly".into(),
        )
    };
    let Some(sealed_refresh) = session.upstream_refresh.clone() else {
        if still_valid(&session, now) {
            return Ok(decrypt_access(oauth, &session)?);
        }
        state
            .store
            .revoke_session(&session.id, now)
            .await
            .map_err(OAuthError::from)?;
        return Err(unauthorized(
            oauth,
            "the Polytomic sign-in has expired; sign in again",
        ));
    };
    let leased = state
        .store
        .take_refresh_lease(&session.id, now, now + REFRESH_LEASE_MS)
        .await
        .map_err(OAuthError::from)?;
    if !leased {
        let deadline = tokio::time::Instant::now() + LEASE_WAIT;
        while tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
            match state
                .store
                .get_session(&session.id)
                .await
                .map_err(OAuthError::from)?
            {
                Some(latest) if latest.revoked_at_ms.is_none() => {
                    if fresh_enough(&latest, now_ms()) {
                        return Ok(decrypt_access(oauth, &latest)?);
                    }
                    session = latest;
                }
                _ => {
                    return Err(unauthorized(
                        oauth,
                        "the sign-in behind this token was revoked; sign in again",
                    ));
                }
            }
        }
        if still_valid(&session, now_ms()) {
            return Ok(decrypt_access(oauth, &session)?);
        }
        return Err(unavailable());
    }
    let refresh = oauth
        .keys
        .decrypt(&sealed_refresh, &refresh_aad(&session.id))?;
    match oauth.provider.refresh(&refresh).await {
        Ok(tokens) => {
            let now = now_ms();
            let stored = UpstreamTokens {
                access: oauth
                    .keys
                    .encrypt(tokens.access.expose(), &access_aad(&session.id))?,
                refresh: tokens
                    .refresh
                    .as_ref()
                    .map(|r| oauth.keys.encrypt(r.expose(), &refresh_aad(&session.id)))
                    .transpose()?,
                expires_at_ms: tokens
                    .expires_in
                    .map(|d| now + i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 2)),
            };
            state
                .store
                .store_upstream_tokens(&session.id, &stored)
                .await
                .map_err(OAuthError::from)?;
            tracing::info!(user_id = %session.user_id, "upstream token refreshed");
            Ok(tokens.access)
        }
        Err(ProviderError::InvalidGrant(_)) => {
            // Polytomic no longer honours the sign-in: end the session so the client's refresh fails too and
            // it starts a new sign-in instead of looping.
            tracing::info!(user_id = %session.user_id, "upstream refresh refused; session revoked");
            state
                .store
                .revoke_session(&session.id, now_ms())
                .await
                .map_err(OAuthError::from)?;
            Err(unauthorized(
                oauth,
                "the Polytomic sign-in has expired; sign in again",
            ))
        }
        Err(error) => {
            tracing::warn!(%error, "upstream refresh failed");
            state
                .store
                .release_refresh_lease(&session.id)
                .await
                .map_err(OAuthError::from)?;
            if still_valid(&session, now_ms()) {
                return Ok(decrypt_access(oauth, &session)?);
            }
            Err(unavailable())
        }
    }
}
