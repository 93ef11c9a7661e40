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
    /// What an OAuth sign-in was granted (`None` for API keys, whose access comes from headers and the cap).
    /// `access_mode` never exceeds it.
    pub grant: Option<AccessMode>,
    /// Organization the credential belongs to, when known (OAuth sessions record it).
    pub organization_id: Option<String>,
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
