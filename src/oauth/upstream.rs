//! An OAuth session's Polytomic credential, obtained when `execute` calls Polytomic and only then: decrypted
//! when fresh; renewed with the provider when about to expire or after Polytomic rejected it; the sign-in ended
//! when the provider no longer honours the grant. Authentication never waits for the provider, so an outage of
//! Polytomic's sign-in service costs only the `execute` calls that need a renewal.
//!
//! One renewal per session at a time across replicas: the replica that takes the lease in the store asks the
//! provider, the others watch the store for its result. Either waits at most [`RENEWAL_WAIT`]; the renewal
//! itself runs on in the background (up to the provider timeout), so a late answer is still saved for the next
//! call instead of leaving the session with a refresh token the provider has already rotated.

use std::time::Duration;
use tracing::Instrument;

use tokio::time::Instant;

use super::OAuthState;
use super::authorize::{access_aad, refresh_aad};
use super::provider::ProviderError;
use super::revocation::{record_upstream_revocation, revoke_upstream};
use crate::core::{OAuthSession, now_ms};
use crate::secret::Secret;
use crate::store::oauth::UpstreamTokens;
use crate::store::oauth_rotation::{ClearedUpstream, UpstreamRow};

/// Renew the upstream token when it has less than this left, so a call never starts with a dying token.
const REFRESH_MARGIN_MS: i64 = 60 * 1000;
/// How long one replica may hold the right to renew a session's credential: longer than one provider call
/// (15 s), so the lease outlives a renewal that is still running.
const REFRESH_LEASE_MS: i64 = 30 * 1000;
/// The longest an `execute` call waits for a renewal (its own or another replica's). With the default
/// upstream timeout (25 s) the call stays within 35 s, well below the 60 s that the MCP TypeScript SDK gives
/// a request by default; the provider normally answers a refresh in well under a second.
pub(crate) const RENEWAL_WAIT: Duration = Duration::from_secs(10);
/// How often a replica waiting for another one's renewal looks at the store.
const POLL: Duration = Duration::from_millis(200);

/// Why the Polytomic credential could not be had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UpstreamAuthError {
    /// The provider failed or did not answer within [`RENEWAL_WAIT`]; nothing was sent to Polytomic.
    Unavailable,
    /// Polytomic no longer honours the grant (or the sign-in ended here): the session is ended, and the
    /// client's next request gets 401 and signs the person in again.
    SignInEnded,
    /// The store failed or the stored token did not decrypt (logged).
    Failed,
}

/// The Polytomic token for one call, with the stored form it came from (to recognise it after a rejection).
pub(crate) struct UpstreamBearer {
    pub token: Secret,
    sealed: String,
}

impl std::fmt::Debug for UpstreamBearer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UpstreamBearer(****)")
    }
}

/// What a renewal must achieve.
#[derive(Clone, Copy)]
enum Need<'a> {
    /// A token with more than the margin left.
    Fresh,
    /// Any token but the one Polytomic rejected (stored form).
    Replacing(&'a str),
}

impl Need<'_> {
    fn met_by(&self, row: &UpstreamRow, access: &str, now: i64) -> bool {
        match self {
            Need::Fresh => fresh_enough(row.expires_at_ms, now),
            Need::Replacing(rejected) => access != *rejected,
        }
    }
}

fn fresh_enough(expires_at_ms: Option<i64>, now: i64) -> bool {
    expires_at_ms.is_none_or(|at| at > now + REFRESH_MARGIN_MS)
}

fn still_valid(expires_at_ms: Option<i64>, now: i64) -> bool {
    expires_at_ms.is_none_or(|at| at > now)
}

/// The session's Polytomic token for an `execute` call: the one authentication read when it is fresh,
/// otherwise a renewed one.
pub(crate) async fn bearer(
    state: &OAuthState,
    session: &OAuthSession,
) -> Result<UpstreamBearer, UpstreamAuthError> {
    if let Some(sealed) = &session.sealed_upstream
        && fresh_enough(session.upstream_expires_at_ms, now_ms())
    {
        return open(state, &session.session_id, sealed);
    }
    renew(state, &session.session_id, Need::Fresh)
        .instrument(crate::telemetry::otel::trace_span!(
            "oauth upstream renewal",
            polytomic.oauth.reason = "expiring"
        ))
        .await
}

/// After Polytomic answered 401 to `rejected`: a replacement (renewed once, or already renewed by another
/// call), or the sign-in ended when the grant is gone.
pub(crate) async fn after_rejection(
    state: &OAuthState,
    session: &OAuthSession,
    rejected: &UpstreamBearer,
) -> Result<UpstreamBearer, UpstreamAuthError> {
    state.metrics.oauth_event("upstream_rejected");
    renew(
        state,
        &session.session_id,
        Need::Replacing(&rejected.sealed),
    )
    .instrument(crate::telemetry::otel::trace_span!(
        "oauth upstream renewal",
        polytomic.oauth.reason = "rejected"
    ))
    .await
}

fn open(
    state: &OAuthState,
    session_id: &str,
    sealed: &str,
) -> Result<UpstreamBearer, UpstreamAuthError> {
    match state.oauth.keys.decrypt(sealed, &access_aad(session_id)) {
        Ok(token) => Ok(UpstreamBearer {
            token,
            sealed: sealed.to_owned(),
        }),
        Err(error) => {
            tracing::error!(%error, session_id, "the session's upstream token does not decrypt");
            Err(UpstreamAuthError::Failed)
        }
    }
}

fn store_failed(error: impl std::fmt::Display) -> UpstreamAuthError {
    tracing::error!(%error, "reading or saving the upstream credential failed");
    UpstreamAuthError::Failed
}

/// Gets a token that meets `need`: from the store when another call already renewed it, by renewing it under
/// the lease, or by waiting for the replica that holds the lease; within [`RENEWAL_WAIT`].
async fn renew(
    state: &OAuthState,
    session_id: &str,
    need: Need<'_>,
) -> Result<UpstreamBearer, UpstreamAuthError> {
    let deadline = Instant::now() + RENEWAL_WAIT;
    let mut first_look = true;
    loop {
        let now = now_ms();
        let row = state
            .store
            .get_upstream(session_id, now)
            .await
            .map_err(store_failed)?;
        let Some(row) = row.filter(|row| !row.ended) else {
            return Err(UpstreamAuthError::SignInEnded);
        };
        let Some(access) = row.access.as_deref() else {
            return Err(UpstreamAuthError::SignInEnded);
        };
        if need.met_by(&row, access, now) {
            return open(state, session_id, access);
        }
        let Some(sealed_refresh) = row.refresh.clone() else {
            // Nothing to renew with: use the token while it lasts; once it is gone, so is the sign-in.
            if matches!(need, Need::Fresh) && still_valid(row.expires_at_ms, now) {
                return open(state, session_id, access);
            }
            end_locally(
                state,
                session_id,
                "the upstream token expired or was rejected and cannot be renewed",
            )
            .await;
            return Err(UpstreamAuthError::SignInEnded);
        };
        match row.lease_until_ms {
            // The holder let go without a usable token: its renewal just failed.
            None if !first_look => return fallback(state, session_id, &row, need),
            Some(until) if until >= now => {}
            _ => {
                let leased = state
                    .store
                    .take_refresh_lease(session_id, now, now + REFRESH_LEASE_MS)
                    .await
                    .map_err(store_failed)?;
                if leased {
                    return renew_under_lease(
                        state,
                        session_id,
                        sealed_refresh,
                        &row,
                        need,
                        deadline,
                    )
                    .await;
                }
            }
        }
        if first_look {
            // Another call (here or on another replica) is renewing: wait for its result.
            state.metrics.oauth_event("upstream_renewal_waited");
            first_look = false;
        }
        if Instant::now() + POLL >= deadline {
            tracing::warn!(
                session_id,
                "another replica's upstream renewal did not finish in time"
            );
            return fallback(state, session_id, &row, need);
        }
        tokio::time::sleep(POLL).await;
    }
}

/// What is left when no renewal arrived in time: the current token while it is still valid (it was only
/// inside the margin), unless Polytomic already rejected it.
fn fallback(
    state: &OAuthState,
    session_id: &str,
    row: &UpstreamRow,
    need: Need<'_>,
) -> Result<UpstreamBearer, UpstreamAuthError> {
    match (need, row.access.as_deref()) {
        (Need::Fresh, Some(access)) if still_valid(row.expires_at_ms, now_ms()) => {
            open(state, session_id, access)
        }
        _ => Err(UpstreamAuthError::Unavailable),
    }
}

/// Runs the renewal this replica holds the lease for, in the background, and waits for it until `deadline`.
async fn renew_under_lease(
    state: &OAuthState,
    session_id: &str,
    sealed_refresh: String,
    row: &UpstreamRow,
    need: Need<'_>,
    deadline: Instant,
) -> Result<UpstreamBearer, UpstreamAuthError> {
    let task = tokio::spawn(
        renew_with_provider(state.clone(), session_id.to_owned(), sealed_refresh).instrument(
            crate::telemetry::otel::trace_span!("oauth provider refresh"),
        ),
    );
    match tokio::time::timeout_at(deadline, task).await {
        Ok(Ok(outcome)) => match outcome {
            Err(UpstreamAuthError::Unavailable) => fallback(state, session_id, row, need),
            other => other,
        },
        Ok(Err(error)) => {
            tracing::error!(%error, "the upstream renewal task failed");
            Err(UpstreamAuthError::Failed)
        }
        Err(_) => {
            tracing::warn!(
                session_id,
                wait_secs = RENEWAL_WAIT.as_secs(),
                "Polytomic's sign-in service did not answer the renewal in time; it goes on in the background"
            );
            fallback(state, session_id, row, need)
        }
    }
}

/// One refresh with the provider under the lease: the new tokens saved (which releases the lease), the lease
/// released on failure, the sign-in ended when the provider refuses the grant.
async fn renew_with_provider(
    state: OAuthState,
    session_id: String,
    sealed_refresh: String,
) -> Result<UpstreamBearer, UpstreamAuthError> {
    let oauth = &state.oauth;
    let release = || async {
        if let Err(error) = state.store.release_refresh_lease(&session_id).await {
            tracing::warn!(%error, "releasing the upstream renewal lease failed; it lapses by itself");
        }
    };
    let refresh = match oauth
        .keys
        .decrypt(&sealed_refresh, &refresh_aad(&session_id))
    {
        Ok(refresh) => refresh,
        Err(error) => {
            tracing::error!(%error, session_id, "the session's upstream refresh token does not decrypt");
            release().await;
            return Err(UpstreamAuthError::Failed);
        }
    };
    match oauth.provider.refresh(&refresh).await {
        Ok(tokens) => save(&state, &session_id, tokens).await,
        Err(ProviderError::InvalidGrant(_)) => {
            // Polytomic no longer honours the sign-in: end it, so the client signs the person in again.
            state.metrics.oauth_event("upstream_grant_gone");
            end_locally(
                &state,
                &session_id,
                "the provider refused the upstream refresh",
            )
            .await;
            Err(UpstreamAuthError::SignInEnded)
        }
        Err(error) => {
            state.metrics.oauth_event("upstream_renewal_failed");
            tracing::warn!(%error, session_id, "upstream renewal failed");
            release().await;
            Err(UpstreamAuthError::Unavailable)
        }
    }
}

/// Saves renewed tokens. When the sign-in was ended while the provider was answering, the new grant must not
/// outlive it: it is revoked at the provider instead.
async fn save(
    state: &OAuthState,
    session_id: &str,
    tokens: super::provider::ProviderTokens,
) -> Result<UpstreamBearer, UpstreamAuthError> {
    let keys = &state.oauth.keys;
    let now = now_ms();
    let seal = |value: &Secret, aad: String| {
        keys.encrypt(value.expose(), &aad).map_err(|error| {
            tracing::error!(%error, "encrypting the renewed upstream token failed");
            UpstreamAuthError::Failed
        })
    };
    let access = seal(&tokens.access, access_aad(session_id))?;
    let refresh = tokens
        .refresh
        .as_ref()
        .map(|r| seal(r, refresh_aad(session_id)))
        .transpose()?;
    let stored = UpstreamTokens {
        access: access.clone(),
        refresh: refresh.clone(),
        expires_at_ms: tokens
            .expires_in
            .map(|d| now + i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 2)),
    };
    let saved = state
        .store
        .store_upstream_tokens(session_id, &stored)
        .await
        .map_err(store_failed)?;
    if !saved {
        let cleared = ClearedUpstream {
            access: Some(access),
            refresh,
        };
        let outcome = revoke_upstream(keys, &state.oauth.provider, session_id, &cleared).await;
        if state.oauth.provider.revokes() {
            record_upstream_revocation(state, session_id, &outcome);
        }
        return Err(UpstreamAuthError::SignInEnded);
    }
    state.metrics.oauth_event("upstream_renewed");
    tracing::info!(session_id, "upstream token renewed");
    Ok(UpstreamBearer {
        token: tokens.access,
        sealed: access,
    })
}

async fn end_locally(state: &OAuthState, session_id: &str, why: &'static str) {
    tracing::info!(session_id, why, "oauth sign-in ended");
    if let Err(error) = state.store.revoke_session(session_id, now_ms()).await {
        tracing::error!(%error, session_id, "ending the sign-in failed");
    }
}
