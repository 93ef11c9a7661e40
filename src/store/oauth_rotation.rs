//! Refresh-token rotation in one transaction, the token pair each refresh produced (so that a client retrying a
//! lost answer gets it again), and a session's upstream credential: its renewal lease and a revocation that
//! hands back the upstream tokens it cleared, so they can be revoked at the provider too.
//!
//! A *pair* is the access token and refresh token issued together. The session row names its newest pair and
//! when that pair was first used; a used refresh token keeps the pair it produced (and that pair's refresh
//! token, encrypted) only until the session moves on or the retry window ends.

use sqlx::Row;

use super::oauth::{SessionRow, session_columns, session_from_row};
use super::{Store, StoreError};

/// Clears the refresh token kept for a retry on every token of session `$1`.
pub(super) const FORGET_SUCCESSORS: &str = "UPDATE oauth_refresh_tokens SET successor_sealed = NULL \
                                            WHERE session_id = $1 AND successor_sealed IS NOT NULL";

/// The newest pair a session issued, and when it was first used.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PairState {
    pub pair_id: Option<String>,
    pub used_at_ms: Option<i64>,
}

/// A refresh token about to be issued (by hash), and the pair it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRefreshToken {
    pub token_hash: String,
    pub pair_id: String,
    pub expires_at_ms: i64,
}

/// Why a fresh refresh token was spent without issuing anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RotationRefusal {
    /// The session was revoked or has expired.
    SessionEnded,
    /// The refresh token itself has expired.
    Expired,
    /// The token belongs to a session of another client (the caller revokes the session).
    OtherClient,
}

/// A refresh token presented after it was used: what it produced, for telling a retry from theft.
#[derive(Clone, PartialEq, Eq)]
pub struct UsedRefresh {
    pub session_id: String,
    pub used_at_ms: Option<i64>,
    pub successor_pair: Option<String>,
    pub successor_sealed: Option<String>,
}

impl std::fmt::Debug for UsedRefresh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UsedRefresh")
            .field("session_id", &self.session_id)
            .field("used_at_ms", &self.used_at_ms)
            .field("successor_pair", &self.successor_pair)
            .finish_non_exhaustive()
    }
}

/// What rotating a refresh token found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rotation {
    /// The token was fresh: it is spent, the successor is the session's newest pair, the session extended.
    Rotated(SessionRow),
    /// The token was fresh but nothing was issued; it is spent all the same.
    Refused {
        session_id: String,
        reason: RotationRefusal,
    },
    /// Used before.
    Reused(UsedRefresh),
    /// Never issued (or purged).
    Unknown,
}

/// The upstream credential of a session, for renewing it.
#[derive(Clone, PartialEq, Eq)]
pub struct UpstreamRow {
    /// Revoked here, or past its end.
    pub ended: bool,
    /// Encrypted upstream access token.
    pub access: Option<String>,
    /// Encrypted upstream refresh token.
    pub refresh: Option<String>,
    pub expires_at_ms: Option<i64>,
    /// Until when a replica holds the right to renew it.
    pub lease_until_ms: Option<i64>,
}

impl std::fmt::Debug for UpstreamRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamRow")
            .field("ended", &self.ended)
            .field("expires_at_ms", &self.expires_at_ms)
            .field("lease_until_ms", &self.lease_until_ms)
            .finish_non_exhaustive()
    }
}

/// The encrypted upstream tokens a revocation cleared.
#[derive(Clone, PartialEq, Eq)]
pub struct ClearedUpstream {
    pub access: Option<String>,
    pub refresh: Option<String>,
}

impl std::fmt::Debug for ClearedUpstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClearedUpstream")
            .field("access", &self.access.is_some())
            .field("refresh", &self.refresh.is_some())
            .finish()
    }
}

impl Store {
    /// The session and its newest pair.
    pub async fn get_session_and_pair(
        &self,
        id: &str,
    ) -> Result<Option<(SessionRow, PairState)>, StoreError> {
        const SQL: &str = concat!(
            "SELECT ",
            session_columns!(),
            ", pair_id, pair_used_at_ms FROM oauth_sessions WHERE id = $1"
        );
        let found = with_pool!(self, pool => {
            match sqlx::query(SQL).bind(id).fetch_optional(pool).await? {
                Some(row) => Some((
                    session_from_row(&row)?,
                    PairState { pair_id: row.try_get("pair_id")?, used_at_ms: row.try_get("pair_used_at_ms")? },
                )),
                None => None,
            }
        });
        Ok(found)
    }

    /// Records the first use of the session's newest pair (once: later calls change nothing).
    pub async fn mark_pair_used(
        &self,
        session_id: &str,
        pair_id: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        const SQL: &str = "UPDATE oauth_sessions SET pair_used_at_ms = $3 \
                           WHERE id = $1 AND pair_id = $2 AND pair_used_at_ms IS NULL";
        with_pool!(self, pool => {
            sqlx::query(SQL).bind(session_id).bind(pair_id).bind(now_ms).execute(pool).await?;
        });
        Ok(())
    }

    /// Issues the first pair of a session (after the authorization code): its refresh token, and the pair as
    /// the session's newest.
    pub async fn insert_first_pair(
        &self,
        session_id: &str,
        token: &NewRefreshToken,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            sqlx::query(INSERT_REFRESH)
                .bind(&token.token_hash).bind(session_id).bind(now_ms).bind(token.expires_at_ms).bind(&token.pair_id)
                .execute(&mut *tx).await?;
            sqlx::query(SET_PAIR).bind(session_id).bind(&token.pair_id).execute(&mut *tx).await?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// Spends the refresh token `parent_hash` and, when it and its session are still good for `client_id`,
    /// issues `successor` as the session's newest pair (keeping its refresh token, encrypted, on the parent
    /// for a retry) and extends the session to `session_expires_at_ms`, all in one transaction: a retry that
    /// arrives meanwhile sees either nothing or everything.
    pub async fn rotate_refresh_token(
        &self,
        parent_hash: &str,
        client_id: &str,
        successor: &NewRefreshToken,
        successor_sealed: &str,
        session_expires_at_ms: i64,
        now_ms: i64,
    ) -> Result<Rotation, StoreError> {
        const TAKE: &str = "UPDATE oauth_refresh_tokens SET used_at_ms = $2 WHERE token_hash = $1 AND used_at_ms IS NULL \
                            RETURNING session_id, expires_at_ms";
        const LOOKUP: &str = "SELECT session_id, used_at_ms, successor_pair, successor_sealed \
                              FROM oauth_refresh_tokens WHERE token_hash = $1";
        const SESSION: &str = concat!(
            "SELECT ",
            session_columns!(),
            " FROM oauth_sessions WHERE id = $1"
        );
        const SUCCESSOR: &str = "UPDATE oauth_refresh_tokens SET successor_pair = $2, successor_sealed = $3 WHERE token_hash = $1";
        const EXTEND: &str = "UPDATE oauth_sessions SET expires_at_ms = $2 WHERE id = $1";
        let rotation = with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let Some(taken) = sqlx::query(TAKE).bind(parent_hash).bind(now_ms).fetch_optional(&mut *tx).await? else {
                let used = sqlx::query(LOOKUP).bind(parent_hash).fetch_optional(&mut *tx).await?;
                tx.commit().await?;
                return Ok(match used {
                    Some(row) => Rotation::Reused(UsedRefresh {
                        session_id: row.try_get("session_id")?,
                        used_at_ms: row.try_get("used_at_ms")?,
                        successor_pair: row.try_get("successor_pair")?,
                        successor_sealed: row.try_get("successor_sealed")?,
                    }),
                    None => Rotation::Unknown,
                });
            };
            let session_id: String = taken.try_get("session_id")?;
            let token_expires_at_ms: i64 = taken.try_get("expires_at_ms")?;
            let session = match sqlx::query(SESSION).bind(&session_id).fetch_optional(&mut *tx).await? {
                Some(row) => Some(session_from_row(&row)?),
                None => None,
            };
            let refusal = match &session {
                Some(s) if s.revoked_at_ms.is_none() && s.expires_at_ms > now_ms => {
                    if token_expires_at_ms <= now_ms {
                        Some(RotationRefusal::Expired)
                    } else if s.client_id != client_id {
                        Some(RotationRefusal::OtherClient)
                    } else {
                        None
                    }
                }
                _ => Some(RotationRefusal::SessionEnded),
            };
            match (refusal, session) {
                (None, Some(mut session)) => {
                    sqlx::query(FORGET_SUCCESSORS).bind(&session_id).execute(&mut *tx).await?;
                    sqlx::query(SUCCESSOR).bind(parent_hash).bind(&successor.pair_id).bind(successor_sealed)
                        .execute(&mut *tx).await?;
                    sqlx::query(INSERT_REFRESH)
                        .bind(&successor.token_hash).bind(&session_id).bind(now_ms).bind(successor.expires_at_ms)
                        .bind(&successor.pair_id)
                        .execute(&mut *tx).await?;
                    sqlx::query(SET_PAIR).bind(&session_id).bind(&successor.pair_id)
                        .execute(&mut *tx).await?;
                    sqlx::query(EXTEND).bind(&session_id).bind(session_expires_at_ms).execute(&mut *tx).await?;
                    tx.commit().await?;
                    session.expires_at_ms = session_expires_at_ms;
                    Rotation::Rotated(session)
                }
                (reason, _) => {
                    tx.commit().await?;
                    Rotation::Refused { session_id, reason: reason.unwrap_or(RotationRefusal::SessionEnded) }
                }
            }
        });
        Ok(rotation)
    }

    /// Forgets the refresh tokens kept for retries of refreshes made before `used_before_ms`.
    pub async fn forget_refresh_successors(&self, used_before_ms: i64) -> Result<(), StoreError> {
        const SQL: &str = "UPDATE oauth_refresh_tokens SET successor_sealed = NULL \
                           WHERE successor_sealed IS NOT NULL AND used_at_ms < $1";
        with_pool!(self, pool => {
            sqlx::query(SQL).bind(used_before_ms).execute(pool).await?;
        });
        Ok(())
    }

    /// The session's upstream credential and renewal lease.
    pub async fn get_upstream(
        &self,
        id: &str,
        now_ms: i64,
    ) -> Result<Option<UpstreamRow>, StoreError> {
        const SQL: &str = "SELECT revoked_at_ms, expires_at_ms, upstream_access, upstream_refresh, upstream_expires_at_ms, \
                           refresh_lease_until_ms FROM oauth_sessions WHERE id = $1";
        let found = with_pool!(self, pool => {
            match sqlx::query(SQL).bind(id).fetch_optional(pool).await? {
                Some(row) => Some(UpstreamRow {
                    ended: row.try_get::<Option<i64>, _>("revoked_at_ms")?.is_some()
                        || row.try_get::<i64, _>("expires_at_ms")? <= now_ms,
                    access: row.try_get("upstream_access")?,
                    refresh: row.try_get("upstream_refresh")?,
                    expires_at_ms: row.try_get("upstream_expires_at_ms")?,
                    lease_until_ms: row.try_get("refresh_lease_until_ms")?,
                }),
                None => None,
            }
        });
        Ok(found)
    }

    /// Revokes a session and returns the encrypted upstream tokens it cleared, so that the caller can revoke
    /// them at the provider; `None` when the session was not active (someone else revoked it first). The
    /// tokens are read, then cleared only if still unchanged, so a renewal racing with the revocation cannot
    /// hand back tokens that are no longer the session's.
    pub async fn revoke_session_taking_upstream(
        &self,
        id: &str,
        now_ms: i64,
    ) -> Result<Option<ClearedUpstream>, StoreError> {
        const READ: &str = "SELECT upstream_access, upstream_refresh FROM oauth_sessions \
                            WHERE id = $1 AND revoked_at_ms IS NULL";
        const CLEAR: &str = "UPDATE oauth_sessions SET revoked_at_ms = $2, upstream_access = NULL, upstream_refresh = NULL \
                             WHERE id = $1 AND revoked_at_ms IS NULL AND COALESCE(upstream_access, '') = $3";
        for _ in 0..3 {
            let cleared = with_pool!(self, pool => {
                let Some(row) = sqlx::query(READ).bind(id).fetch_optional(pool).await? else {
                    return Ok(None);
                };
                let tokens = ClearedUpstream { access: row.try_get("upstream_access")?, refresh: row.try_get("upstream_refresh")? };
                let changed = sqlx::query(CLEAR)
                    .bind(id).bind(now_ms).bind(tokens.access.clone().unwrap_or_default())
                    .execute(pool).await?.rows_affected();
                if changed == 1 {
                    sqlx::query(FORGET_SUCCESSORS).bind(id).execute(pool).await?;
                }
                (changed == 1).then_some(tokens)
            });
            if cleared.is_some() {
                return Ok(cleared);
            }
        }
        // The tokens kept changing under us: revoke all the same, without handing any back.
        self.revoke_session(id, now_ms).await?;
        Ok(None)
    }
}

const INSERT_REFRESH: &str = "INSERT INTO oauth_refresh_tokens (token_hash, session_id, created_at_ms, expires_at_ms, pair_id) \
                              VALUES ($1, $2, $3, $4, $5)";
const SET_PAIR: &str =
    "UPDATE oauth_sessions SET pair_id = $2, pair_used_at_ms = NULL WHERE id = $1";
