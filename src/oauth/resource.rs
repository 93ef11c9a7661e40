//! The resource-server side: an access token on `/mcp` becomes a [`Principal`]. Only our token and the session
//! row are checked here; the session's Polytomic token is obtained by `execute` when it calls Polytomic
//! ([`super::upstream`]), so a slow or failing provider never holds up `initialize`, `tools/list`, `search` or
//! feedback. Our own token is never sent upstream.

use super::OAuthState;
use super::token::{TokenRejection, verify_access_token};
use super::{OAuth, OAuthError, scope};
use crate::core::{AuthMode, Credential, Modes, OAuthSession, Principal, now_ms};
use crate::error::ApiError;
use crate::secret::Secret;
use crate::store::oauth::SessionRow;
use tracing::Instrument;

/// The `WWW-Authenticate` parameters after `realm` when OAuth is on (RFC 9728 §5.1, RFC 6750 §3).
pub fn challenge(oauth: &OAuth, error: Option<&str>) -> String {
    // The scope a client should ask for by default: all the server allows; the person chooses at consent.
    let mut out = format!(
        "resource_metadata=\"{}\", scope=\"{}\"",
        oauth.resource_metadata_url,
        scope::granting(oauth.max_access)
    );
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
    let found = state
        .store
        .get_session_and_pair(&claims.sid)
        .instrument(crate::telemetry::otel::trace_span!(
            "store get_session_and_pair",
            db.operation.name = "get_session_and_pair"
        ))
        .await
        .map_err(|e| ApiError::from(OAuthError::from(e)))?
        .filter(|(s, _)| {
            s.revoked_at_ms.is_none()
                && s.expires_at_ms > now
                && s.client_id == claims.client_id
                && s.user_id == claims.sub
        });
    let Some((session, pair)) = found else {
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
    if upstream_gone_for_good(&session, now) {
        // No upstream refresh token and the upstream token has expired: no call can succeed again, so the
        // client is sent to sign in again now rather than after its next `execute`.
        state
            .store
            .revoke_session(&session.id, now)
            .await
            .map_err(OAuthError::from)?;
        state.metrics.auth_failure("revoked_token");
        return Err(unauthorized(
            oauth,
            "the Polytomic sign-in has expired; sign in again",
        ));
    }
    // The first use of the newest pair: from now on, its refresh token coming back is reuse, not a retry.
    if let Some(used) = claims.pair.as_deref()
        && pair.pair_id.as_deref() == Some(used)
        && pair.used_at_ms.is_none()
    {
        state
            .store
            .mark_pair_used(&session.id, used, now)
            .await
            .map_err(OAuthError::from)?;
    }
    // The signed claim and the stored grant must both allow it: a refresh that narrowed the grant takes
    // effect at once, even for access tokens issued before it.
    let grant =
        scope::access_of(claims.scope.as_deref()).min(scope::access_of(session.scope.as_deref()));
    Ok(Principal {
        credential: Credential::OAuth(OAuthSession {
            session_id: session.id.clone(),
            sealed_upstream: session.upstream_access.clone(),
            upstream_expires_at_ms: session.upstream_expires_at_ms,
        }),
        auth_mode: AuthMode::User,
        access_mode: modes.access_mode.min(grant),
        grant: Some(grant),
        partner_org_id: None,
        organization_id: session.organization_id.clone(),
        user_id: Some(session.user_id.clone()),
        // The sign-in itself was Polytomic's word on this person.
        verified: true,
        fingerprint: format!("oauth:{}", session.user_id),
    })
}

fn upstream_gone_for_good(session: &SessionRow, now: i64) -> bool {
    session.upstream_refresh.is_none()
        && session
            .upstream_expires_at_ms
            .is_some_and(|expires_at| expires_at <= now)
}
