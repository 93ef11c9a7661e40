//! The authenticated caller: what the authentication step hands to every later step of a `/mcp` request.

use crate::core::{AccessMode, AuthMode};
use crate::secret::Secret;

/// The credential `execute` presents upstream.
#[derive(Debug, Clone)]
pub(crate) enum Credential {
    /// A Polytomic API key, sent on as the bearer token.
    ApiKey(Secret),
    /// An OAuth session: the client holds our token; upstream gets the session's Polytomic token, which
    /// authentication decrypted (and refreshed if it was about to expire) for this request.
    OAuth { upstream: Secret },
}

/// An authenticated caller with its effective modes, inserted into request extensions by authentication.
#[derive(Debug, Clone)]
pub(crate) struct Principal {
    pub credential: Credential,
    pub auth_mode: AuthMode,
    pub access_mode: AccessMode,
    /// Default organization for partner-mode calls (`X-Polytomic-Partner-Org-Id`).
    pub partner_org_id: Option<String>,
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

impl Principal {
    pub(crate) fn upstream_bearer(&self) -> &Secret {
        match &self.credential {
            Credential::ApiKey(key) => key,
            Credential::OAuth { upstream, .. } => upstream,
        }
    }
}
