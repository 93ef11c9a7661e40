//! The credential one `execute` call presents to Polytomic: an API key as the caller sent it, or an OAuth
//! session's Polytomic token, obtained now (renewed with the provider when it is about to expire) and renewed
//! once more when Polytomic answers 401 to it. When the token cannot be had, the call answers a tool error that
//! says why and what to do, and nothing is sent.

use std::time::Instant;

use serde_json::{Value, json};

use super::record_call;
use crate::core::{Credential, OAuthSession};
use crate::mcp::{CallContext, ToolOutcome, tool_error};
use crate::oauth::OAuthState;
use crate::oauth::upstream::{self, UpstreamAuthError, UpstreamBearer};
use crate::secret::Secret;
use crate::upstream::{PlannedRequest, UpstreamError, UpstreamResponse};

/// What this call sends as `Authorization: Bearer …`.
pub(super) enum CallCredential<'a> {
    ApiKey(&'a Secret),
    OAuth {
        oauth: &'a OAuthState,
        session: &'a OAuthSession,
        bearer: UpstreamBearer,
        /// Renewed after a 401 already: a second 401 is Polytomic's answer, not a stale token.
        renewed: bool,
    },
}

/// Why an OAuth session's Polytomic token could not be had; nothing was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct SignInProblem(UpstreamAuthError);

impl<'a> CallCredential<'a> {
    pub(super) async fn obtain(ctx: &CallContext<'a>) -> Result<Self, SignInProblem> {
        match &ctx.principal.credential {
            Credential::ApiKey(key) => Ok(CallCredential::ApiKey(key)),
            Credential::OAuth(session) => {
                let Some(oauth) = ctx.state.oauth() else {
                    tracing::error!("an OAuth principal on a server without OAuth");
                    return Err(SignInProblem(UpstreamAuthError::Failed));
                };
                let bearer = upstream::bearer(oauth, session)
                    .await
                    .map_err(SignInProblem)?;
                Ok(CallCredential::OAuth {
                    oauth,
                    session,
                    bearer,
                    renewed: false,
                })
            }
        }
    }

    fn token(&self) -> &Secret {
        match self {
            CallCredential::ApiKey(key) => key,
            CallCredential::OAuth { bearer, .. } => &bearer.token,
        }
    }

    /// Sends `planned` (within `deadline` when the call has one). When Polytomic answers 401 to an OAuth
    /// session's token, the rejected attempt is recorded, the token renewed once and the request sent again
    /// (a 401 means Polytomic did nothing, so even a write is safe to repeat).
    pub(super) async fn send(
        &mut self,
        ctx: &CallContext<'_>,
        planned: &PlannedRequest,
        deadline: Option<Instant>,
        page: Option<u32>,
    ) -> Result<Result<UpstreamResponse, UpstreamError>, SignInProblem> {
        let result = send_once(ctx, planned, self.token(), deadline).await;
        let rejected =
            matches!(&result, Ok(response) if response.status == http::StatusCode::UNAUTHORIZED);
        let CallCredential::OAuth {
            oauth,
            session,
            bearer,
            renewed,
        } = self
        else {
            return Ok(result);
        };
        if !rejected || *renewed {
            return Ok(result);
        }
        record_call(ctx, planned, &result, page);
        tracing::info!(session_id = %session.session_id, "Polytomic rejected the session's token; renewing it once");
        *bearer = upstream::after_rejection(oauth, session, bearer)
            .await
            .map_err(SignInProblem)?;
        *renewed = true;
        Ok(send_once(ctx, planned, &bearer.token, deadline).await)
    }
}

async fn send_once(
    ctx: &CallContext<'_>,
    planned: &PlannedRequest,
    token: &Secret,
    deadline: Option<Instant>,
) -> Result<UpstreamResponse, UpstreamError> {
    let upstream = &ctx.state.upstream;
    match deadline {
        Some(deadline) => upstream.send_before(planned, token, deadline).await,
        None => upstream.send(planned, token).await,
    }
}

/// The tool error for a call that could not get its Polytomic token, audited like a refusal: what happened,
/// and what the agent should do or tell the person.
pub(super) fn sign_in_error(
    ctx: &CallContext<'_>,
    planned: &PlannedRequest,
    problem: SignInProblem,
    context: Value,
) -> ToolOutcome {
    let (kind, message) = match problem.0 {
        UpstreamAuthError::Unavailable => (
            "sign_in_unavailable",
            "Polytomic's sign-in service is unavailable right now: this sign-in's Polytomic credential needed \
             renewing and the service did not answer, so nothing was sent to Polytomic. Retry this call shortly \
             (in a minute or so); search and the other tools keep working meanwhile. If it keeps failing, tell \
             the user that Polytomic's sign-in service is down.",
        ),
        UpstreamAuthError::SignInEnded => (
            "sign_in_ended",
            "Polytomic no longer accepts this sign-in (it was revoked or has expired at Polytomic), so it has \
             been ended here and nothing was sent. Tell the user they need to sign in to Polytomic again: the \
             client will ask them to on its next request (if it does not, reconnect the Polytomic MCP server).",
        ),
        UpstreamAuthError::Failed => (
            "sign_in_failed",
            "The server could not read this sign-in's Polytomic credential, so nothing was sent. Retry shortly; \
             if it keeps failing, ask the user to reconnect the Polytomic MCP server (sign in again).",
        ),
    };
    tracing::info!(target: "audit", principal = %ctx.principal.fingerprint, access = %ctx.principal.access_mode, method = %planned.method, path = %planned.path_template, refused = kind, "execute refused");
    tool_error(
        message,
        Some(json!({"error": message, "refused": kind, "context": context})),
    )
    .about(&planned.operation_key)
    .error_key(Some(kind))
}
