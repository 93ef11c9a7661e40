//! The authenticated caller: what the authentication step hands to every later step of a `/mcp` request.

use crate::core::{AccessMode, AuthMode};
use crate::secret::Secret;

/// The credential `execute` presents upstream.
#[derive(Debug, Clone)]
pub(crate) enum Credential {
    /// A Polytomic API key, sent on as the bearer token.
    ApiKey(Secret),
    /// An OAuth session: the client holds our token; upstream gets the session's Polytomic token, which
    /// `execute` obtains (renewing it if needed) only when it calls Polytomic.
    OAuth(OAuthSession),
}

/// What `execute` needs to obtain an OAuth session's Polytomic token: the session, and its upstream token as
/// authentication read it from the store (still encrypted), so that a fresh one costs no second read.
#[derive(Clone)]
pub(crate) struct OAuthSession {
    pub session_id: String,
    /// The upstream access token, encrypted under the server's key.
    pub sealed_upstream: Option<String>,
    pub upstream_expires_at_ms: Option<i64>,
}

impl std::fmt::Debug for OAuthSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuthSession")
            .field("session_id", &self.session_id)
            .field("upstream_expires_at_ms", &self.upstream_expires_at_ms)
            .finish_non_exhaustive()
    }
}

/// An authenticated caller with its effective modes, inserted into request extensions by authentication.
#[derive(Debug, Clone)]
pub(crate) struct Principal {
    pub credential: Credential,
    pub auth_mode: AuthMode,
    pub access_mode: AccessMode,
    /// Default organization for partner-mode calls (`X-Polytomic-Partner-Org-Id`).
    pub partner_org_id: Option<String>,
    /// What an OAuth sign-in was granted (`None` for API keys, whose access comes from headers and the cap).
    /// `access_mode` never exceeds it.
    pub grant: Option<AccessMode>,
    /// Organization the credential belongs to, as Polytomic told us (OAuth sign-in, or the API-key check).
    pub organization_id: Option<String>,
    /// Polytomic user behind the credential, as Polytomic told us (OAuth sign-in, or the API-key check).
    pub user_id: Option<String>,
    /// Whether Polytomic has accepted the credential: always for an OAuth session; for an API key once
    /// `GET /api/me` with it succeeded. An unconfirmed key (Polytomic did not answer) may search and call
    /// Polytomic, which checks it itself, but writes nothing to this server's store.
    pub verified: bool,
    /// Stable, non-secret identifier of the credential for logs, metrics and feedback.
    pub fingerprint: String,
}
