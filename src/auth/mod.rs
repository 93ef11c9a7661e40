//! Who is calling: the bearer token and the `X-Polytomic-*` headers become a [`Principal`] that tools read
//! from the request. Deny by default: `/mcp` is unreachable without one.

mod middleware;
mod modes;

pub use middleware::{allowed_hosts, allowed_origins, authenticate, check_host_and_origin};
pub use modes::{AccessMode, AuthMode, HeaderError, Modes, parse_modes};

use crate::secret::Secret;

/// The credential `execute` presents upstream.
#[derive(Debug, Clone)]
pub enum Credential {
    /// A Polytomic API key, sent on as the bearer token.
    ApiKey(Secret),
    /// An OAuth session: the client holds our token; upstream gets the session's Polytomic token, which the
    /// middleware decrypted (and refreshed if it was about to expire) for this request.
    OAuth {
        session_id: String,
        user_id: String,
        upstream: Secret,
    },
}

/// An authenticated caller with its effective modes, inserted into request extensions by the middleware.
#[derive(Debug, Clone)]
pub struct Principal {
    pub credential: Credential,
    pub auth_mode: AuthMode,
    pub access_mode: AccessMode,
    /// Default organization for partner-mode calls (`X-Polytomic-Partner-Org-Id`).
    pub partner_org_id: Option<String>,
    /// Organization the credential belongs to, when known (OAuth sessions record it).
    pub organization_id: Option<String>,
    /// Stable, non-secret identifier of the credential for logs, metrics and feedback.
    pub fingerprint: String,
}

impl Principal {
    pub fn upstream_bearer(&self) -> &Secret {
        match &self.credential {
            Credential::ApiKey(key) => key,
            Credential::OAuth { upstream, .. } => upstream,
        }
    }
}
