//! Ending a sign-in: revoked here at once (the session and its refresh-token family), and, when
//! `POLYTOMIC_OAUTH_REVOKE_URL` is set, its Polytomic grant revoked at the provider too (RFC 7009, with the
//! upstream refresh token, or the access token when there is none). The provider is asked after the local
//! revocation and, on the request path, in the background: a slow or failing provider never holds up or undoes
//! the revocation here; its failure is logged and counted.

use super::authorize::{access_aad, refresh_aad};
use super::provider::{ProviderError, TokenKind};
use super::{Keys, OAuthError, OAuthState, Provider};
use crate::core::now_ms;
use crate::store::oauth_rotation::ClearedUpstream;

/// Why a sign-in ends, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EndReason {
    /// The client revoked one of its tokens (`/revoke`).
    ClientRevoked,
    /// A refresh token or authorization code came back after it was used (and not as a retry).
    Reuse,
    /// A token was presented by a client it was not issued to, or a code failed its checks.
    Misuse,
    /// The client deleted its registration (RFC 7592).
    ClientDeleted,
}

impl EndReason {
    fn as_str(self) -> &'static str {
        match self {
            EndReason::ClientRevoked => "client_revoked",
            EndReason::Reuse => "reuse",
            EndReason::Misuse => "misuse",
            EndReason::ClientDeleted => "client_deleted",
        }
    }
}

/// Revokes the session here and, in the background, its grant at the provider. True when this call ended
/// it (false: it had already ended).
pub(crate) async fn end_session(
    state: &OAuthState,
    session_id: &str,
    reason: EndReason,
) -> Result<bool, OAuthError> {
    let cleared = state
        .store
        .revoke_session_taking_upstream(session_id, now_ms())
        .await?;
    let Some(cleared) = cleared else {
        return Ok(false);
    };
    tracing::info!(session_id, reason = reason.as_str(), "oauth sign-in ended");
    if state.oauth.provider.revokes() {
        let state = state.clone();
        let session_id = session_id.to_owned();
        tokio::spawn(async move {
            let outcome = revoke_upstream(
                &state.oauth.keys,
                &state.oauth.provider,
                &session_id,
                &cleared,
            )
            .await;
            record_upstream_revocation(&state, &session_id, &outcome);
        });
    }
    Ok(true)
}

/// Counts and logs what the provider said to a revocation.
pub(crate) fn record_upstream_revocation(
    state: &OAuthState,
    session_id: &str,
    outcome: &Result<(), ProviderError>,
) {
    match outcome {
        Ok(()) => {
            state.metrics.oauth_event("upstream_revoked");
            tracing::info!(session_id, "upstream grant revoked at the provider");
        }
        Err(error) => {
            state.metrics.oauth_event("upstream_revoke_failed");
            tracing::warn!(session_id, %error, "revoking the upstream grant at the provider failed; the sign-in is ended here all the same");
        }
    }
}

/// Asks the provider to revoke the grant behind the tokens a revocation cleared: the refresh token when the
/// session had one (revoking it ends the grant), otherwise the access token.
pub async fn revoke_upstream(
    keys: &Keys,
    provider: &Provider,
    session_id: &str,
    cleared: &ClearedUpstream,
) -> Result<(), ProviderError> {
    let (sealed, aad, kind) = match (&cleared.refresh, &cleared.access) {
        (Some(refresh), _) => (refresh, refresh_aad(session_id), TokenKind::Refresh),
        (None, Some(access)) => (access, access_aad(session_id), TokenKind::Access),
        (None, None) => return Ok(()),
    };
    let token = keys
        .decrypt(sealed, &aad)
        .map_err(|e| ProviderError::Failed(e.to_string()))?;
    provider.revoke(&token, kind).await
}
