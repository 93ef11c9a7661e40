//! OAuth state: clients, pending authorizations, sessions (refresh-token families), codes, refresh tokens and
//! the generated signing secret. Every single-use value is consumed with one conditional `UPDATE … RETURNING`,
//! so two replicas racing on the same code or refresh token cannot both win.

use sqlx::Row;

use super::{Store, StoreError};

/// How the server knows a client: it registered (DCR, stored as `dcr`) or it is identified by a Client ID
/// Metadata Document the server fetched and caches (stored as `cimd`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientKind {
    Registered,
    MetadataDocument,
}

impl ClientKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ClientKind::Registered => "dcr",
            ClientKind::MetadataDocument => "cimd",
        }
    }

    fn decode(text: &str) -> Result<Self, sqlx::Error> {
        match text {
            "dcr" => Ok(ClientKind::Registered),
            "cimd" => Ok(ClientKind::MetadataDocument),
            other => Err(unknown_value("oauth_clients.kind", other)),
        }
    }
}

/// Where an authorization request stands: waiting for the person's consent, waiting for the upstream
/// callback, or finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PendingStatus {
    Consent,
    Upstream,
    Done,
}

impl PendingStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PendingStatus::Consent => "consent",
            PendingStatus::Upstream => "upstream",
            PendingStatus::Done => "done",
        }
    }

    fn decode(text: &str) -> Result<Self, sqlx::Error> {
        match text {
            "consent" => Ok(PendingStatus::Consent),
            "upstream" => Ok(PendingStatus::Upstream),
            "done" => Ok(PendingStatus::Done),
            other => Err(unknown_value("oauth_pending.status", other)),
        }
    }
}

/// A stored value this version does not know (a newer version wrote it, or the row was edited by hand).
fn unknown_value(column: &str, value: &str) -> sqlx::Error {
    sqlx::Error::Decode(format!("unknown {column} value {value:?}").into())
}

/// A registered client (DCR) or a cached Client ID Metadata Document (CIMD).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientRow {
    pub client_id: String,
    pub kind: ClientKind,
    /// The client's metadata as JSON (redirect URIs, name, auth method, …).
    pub metadata: String,
    pub secret_hash: Option<String>,
    pub registration_token_hash: Option<String>,
    pub created_at_ms: i64,
    /// When a cached metadata document must be fetched again; `None` for registered clients.
    pub expires_at_ms: Option<i64>,
}

/// An authorization request waiting for consent or for the upstream callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingRow {
    pub id: String,
    pub client_id: String,
    pub redirect_uri: String,
    pub state: Option<String>,
    pub code_challenge: String,
    pub scope: Option<String>,
    pub resource: Option<String>,
    /// SHA-256 of the consent cookie that binds the request to the browser that started it.
    pub browser_hash: String,
    pub status: PendingStatus,
    /// Encrypted PKCE verifier for the upstream provider.
    pub upstream_verifier: Option<String>,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
}

/// One signed-in grant and its refresh-token family.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionRow {
    pub id: String,
    pub client_id: String,
    pub user_id: String,
    pub organization_id: Option<String>,
    pub scope: Option<String>,
    /// Encrypted upstream access token.
    pub upstream_access: Option<String>,
    /// Encrypted upstream refresh token.
    pub upstream_refresh: Option<String>,
    pub upstream_expires_at_ms: Option<i64>,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
    pub revoked_at_ms: Option<i64>,
}

impl std::fmt::Debug for SessionRow {
    // The ciphertexts are not secrets on their own, but there is no reason to print them either.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionRow")
            .field("id", &self.id)
            .field("client_id", &self.client_id)
            .field("user_id", &self.user_id)
            .field("organization_id", &self.organization_id)
            .field("expires_at_ms", &self.expires_at_ms)
            .field("revoked_at_ms", &self.revoked_at_ms)
            .finish_non_exhaustive()
    }
}

/// Which sessions an operator means: by session id, person (Polytomic user id) or client; unset fields
/// match anything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionFilter {
    pub session_id: Option<String>,
    pub user_id: Option<String>,
    pub client_id: Option<String>,
    /// Also list revoked and expired sessions.
    pub include_inactive: bool,
}

/// An authorization code, stored by hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeRow {
    pub code_hash: String,
    pub session_id: String,
    pub client_id: String,
    pub redirect_uri: String,
    pub code_challenge: String,
    pub resource: Option<String>,
    pub scope: Option<String>,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
}

/// What consuming a single-use value found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Consumed<T> {
    /// Unused until now; this caller owns it.
    Fresh(T),
    /// Used before: the value leaked or a client replayed it. Carries the session it belonged to.
    Reused { session_id: String },
    /// Never issued (or purged).
    Unknown,
}

/// Encrypted upstream tokens after a refresh.
#[derive(Debug, Clone)]
pub struct UpstreamTokens {
    pub access: String,
    pub refresh: Option<String>,
    pub expires_at_ms: Option<i64>,
}

const SIGNING_KEY_ID: &str = "signing";

/// How long a registration that never led to a sign-in is kept. MCP clients register as the first step of a
/// sign-in and open `/authorize` next; a day still leaves room for one that registers now and signs in later
/// that day, while an abandoned connect or a flood is gone by the next day (a week kept 7 times as many).
pub const UNUSED_CLIENT_TTL_MS: i64 = 24 * 60 * 60 * 1000;

/// A registered client with no sign-in behind it: no session and no pending request.
macro_rules! unused_client {
    () => {
        "kind = 'dcr' \
         AND NOT EXISTS (SELECT 1 FROM oauth_sessions s WHERE s.client_id = oauth_clients.client_id) \
         AND NOT EXISTS (SELECT 1 FROM oauth_pending p WHERE p.client_id = oauth_clients.client_id)"
    };
}

macro_rules! pending_columns {
    () => {
        "id, client_id, redirect_uri, state, code_challenge, scope, resource, browser_hash, status, \
         upstream_verifier, created_at_ms, expires_at_ms"
    };
}

macro_rules! session_columns {
    () => {
        "id, client_id, user_id, organization_id, scope, upstream_access, upstream_refresh, \
         upstream_expires_at_ms, created_at_ms, expires_at_ms, revoked_at_ms"
    };
}

pub(super) use session_columns;

macro_rules! code_columns {
    () => {
        "code_hash, session_id, client_id, redirect_uri, code_challenge, resource, scope, created_at_ms, expires_at_ms"
    };
}

impl Store {
    /// Stores `candidate` as the signing secret unless one exists, and returns the one that won. Replicas that
    /// start together each try to insert; exactly one row survives and all of them read it back.
    pub async fn signing_secret_insert_if_absent(
        &self,
        candidate: &str,
        now_ms: i64,
    ) -> Result<String, StoreError> {
        const INSERT: &str = "INSERT INTO oauth_keys (id, secret, created_at_ms) VALUES ($1, $2, $3) \
                              ON CONFLICT (id) DO NOTHING";
        const SELECT: &str = "SELECT secret FROM oauth_keys WHERE id = $1";
        let secret: String = with_pool!(self, pool => {
            sqlx::query(INSERT).bind(SIGNING_KEY_ID).bind(candidate).bind(now_ms).execute(pool).await?;
            sqlx::query_scalar(SELECT).bind(SIGNING_KEY_ID).fetch_one(pool).await?
        });
        Ok(secret)
    }

    pub async fn insert_client(&self, client: &ClientRow) -> Result<(), StoreError> {
        const SQL: &str = "INSERT INTO oauth_clients (client_id, kind, metadata, secret_hash, registration_token_hash, \
                           created_at_ms, expires_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7)";
        with_pool!(self, pool => {
            sqlx::query(SQL)
                .bind(&client.client_id)
                .bind(client.kind.as_str())
                .bind(&client.metadata)
                .bind(&client.secret_hash)
                .bind(&client.registration_token_hash)
                .bind(client.created_at_ms)
                .bind(client.expires_at_ms)
                .execute(pool)
                .await
                .map(|_| ())
        })?;
        Ok(())
    }

    /// Inserts or refreshes a cached metadata document. Never overwrites a registered (DCR) client.
    pub async fn upsert_cached_client(&self, client: &ClientRow) -> Result<(), StoreError> {
        const SQL: &str = "INSERT INTO oauth_clients (client_id, kind, metadata, secret_hash, registration_token_hash, \
                           created_at_ms, expires_at_ms) VALUES ($1, 'cimd', $2, NULL, NULL, $3, $4) \
                           ON CONFLICT (client_id) DO UPDATE SET metadata = excluded.metadata, \
                           expires_at_ms = excluded.expires_at_ms WHERE oauth_clients.kind = 'cimd'";
        with_pool!(self, pool => {
            sqlx::query(SQL)
                .bind(&client.client_id)
                .bind(&client.metadata)
                .bind(client.created_at_ms)
                .bind(client.expires_at_ms)
                .execute(pool)
                .await
                .map(|_| ())
        })?;
        Ok(())
    }

    pub async fn get_client(&self, client_id: &str) -> Result<Option<ClientRow>, StoreError> {
        const SQL: &str = "SELECT client_id, kind, metadata, secret_hash, registration_token_hash, created_at_ms, \
                           expires_at_ms FROM oauth_clients WHERE client_id = $1";
        let row = with_pool!(self, pool => {
            sqlx::query(SQL).bind(client_id).fetch_optional(pool).await?.map(|row| -> Result<ClientRow, sqlx::Error> {
                Ok(ClientRow {
                    client_id: row.try_get("client_id")?,
                    kind: ClientKind::decode(&row.try_get::<String, _>("kind")?)?,
                    metadata: row.try_get("metadata")?,
                    secret_hash: row.try_get("secret_hash")?,
                    registration_token_hash: row.try_get("registration_token_hash")?,
                    created_at_ms: row.try_get("created_at_ms")?,
                    expires_at_ms: row.try_get("expires_at_ms")?,
                })
            }).transpose()?
        });
        Ok(row)
    }

    /// Registered clients never used for a sign-in.
    pub async fn count_unused_clients(&self) -> Result<i64, StoreError> {
        const SQL: &str = concat!(
            "SELECT COUNT(*) FROM oauth_clients WHERE ",
            unused_client!()
        );
        let count: i64 = with_pool!(self, pool => sqlx::query_scalar(SQL).fetch_one(pool).await?);
        Ok(count)
    }

    /// Deletes the `count` oldest registrations never used for a sign-in; returns how many went.
    pub async fn delete_oldest_unused_clients(&self, count: i64) -> Result<u64, StoreError> {
        const SQL: &str = concat!(
            "DELETE FROM oauth_clients WHERE client_id IN (SELECT client_id FROM oauth_clients WHERE ",
            unused_client!(),
            " ORDER BY created_at_ms, client_id LIMIT $1)"
        );
        let deleted = with_pool!(self, pool => {
            sqlx::query(SQL).bind(count).execute(pool).await?.rows_affected()
        });
        Ok(deleted)
    }

    /// Deletes a registered client and revokes every session it holds (RFC 7592 delete).
    pub async fn delete_client(&self, client_id: &str, now_ms: i64) -> Result<bool, StoreError> {
        const DELETE: &str = "DELETE FROM oauth_clients WHERE client_id = $1 AND kind = 'dcr'";
        const REVOKE: &str = "UPDATE oauth_sessions SET revoked_at_ms = $2, upstream_access = NULL, upstream_refresh = NULL \
                              WHERE client_id = $1 AND revoked_at_ms IS NULL";
        let deleted = with_pool!(self, pool => {
            let deleted = sqlx::query(DELETE).bind(client_id).execute(pool).await?.rows_affected();
            sqlx::query(REVOKE).bind(client_id).bind(now_ms).execute(pool).await?;
            deleted
        });
        Ok(deleted > 0)
    }

    pub async fn insert_pending(&self, pending: &PendingRow) -> Result<(), StoreError> {
        const SQL: &str = concat!(
            "INSERT INTO oauth_pending (",
            pending_columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
        );
        with_pool!(self, pool => {
            sqlx::query(SQL)
                .bind(&pending.id)
                .bind(&pending.client_id)
                .bind(&pending.redirect_uri)
                .bind(&pending.state)
                .bind(&pending.code_challenge)
                .bind(&pending.scope)
                .bind(&pending.resource)
                .bind(&pending.browser_hash)
                .bind(pending.status.as_str())
                .bind(&pending.upstream_verifier)
                .bind(pending.created_at_ms)
                .bind(pending.expires_at_ms)
                .execute(pool)
                .await
                .map(|_| ())
        })?;
        Ok(())
    }

    pub async fn get_pending(&self, id: &str) -> Result<Option<PendingRow>, StoreError> {
        const SQL: &str = concat!(
            "SELECT ",
            pending_columns!(),
            " FROM oauth_pending WHERE id = $1"
        );
        let row = with_pool!(self, pool => {
            sqlx::query(SQL).bind(id).fetch_optional(pool).await?.map(|row| pending_from_row(&row)).transpose()?
        });
        Ok(row)
    }

    /// Moves a request from consent to the upstream sign-in, once: only the browser that holds the consent cookie
    /// can do it, and only while the request is still waiting for consent.
    pub async fn approve_pending(
        &self,
        id: &str,
        browser_hash: &str,
        upstream_state_hash: &str,
        upstream_verifier: &str,
        granted_scope: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        const SQL: &str = "UPDATE oauth_pending SET status = 'upstream', upstream_state_hash = $3, upstream_verifier = $4, \
                           scope = $6 WHERE id = $1 AND browser_hash = $2 AND status = 'consent' AND expires_at_ms > $5";
        let changed = with_pool!(self, pool => {
            sqlx::query(SQL)
                .bind(id)
                .bind(browser_hash)
                .bind(upstream_state_hash)
                .bind(upstream_verifier)
                .bind(now_ms)
                .bind(granted_scope)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(changed == 1)
    }

    /// Closes a request that the person declined; true when it was still waiting for consent.
    pub async fn deny_pending(
        &self,
        id: &str,
        browser_hash: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        const SQL: &str = "UPDATE oauth_pending SET status = 'done' \
                           WHERE id = $1 AND browser_hash = $2 AND status = 'consent' AND expires_at_ms > $3";
        let changed = with_pool!(self, pool => {
            sqlx::query(SQL).bind(id).bind(browser_hash).bind(now_ms).execute(pool).await?.rows_affected()
        });
        Ok(changed == 1)
    }

    /// The request waiting for the upstream callback whose `state` this is, without taking it: the callback
    /// checks the browser first, so that a request from another browser cannot spend the sign-in.
    pub async fn find_pending_by_upstream_state(
        &self,
        upstream_state_hash: &str,
        now_ms: i64,
    ) -> Result<Option<PendingRow>, StoreError> {
        const SQL: &str = concat!(
            "SELECT ",
            pending_columns!(),
            " FROM oauth_pending WHERE upstream_state_hash = $1 AND status = 'upstream' AND expires_at_ms > $2"
        );
        let row = with_pool!(self, pool => {
            sqlx::query(SQL)
                .bind(upstream_state_hash)
                .bind(now_ms)
                .fetch_optional(pool)
                .await?
                .map(|row| pending_from_row(&row))
                .transpose()?
        });
        Ok(row)
    }

    /// Takes the request that the upstream callback's `state` names, for the browser that started it; a second
    /// callback with the same state finds nothing.
    pub async fn take_pending_by_upstream_state(
        &self,
        upstream_state_hash: &str,
        browser_hash: &str,
        now_ms: i64,
    ) -> Result<Option<PendingRow>, StoreError> {
        const SQL: &str = concat!(
            "UPDATE oauth_pending SET status = 'done' WHERE upstream_state_hash = $1 AND browser_hash = $2 ",
            "AND status = 'upstream' AND expires_at_ms > $3 RETURNING ",
            pending_columns!()
        );
        let row = with_pool!(self, pool => {
            sqlx::query(SQL)
                .bind(upstream_state_hash)
                .bind(browser_hash)
                .bind(now_ms)
                .fetch_optional(pool)
                .await?
                .map(|row| pending_from_row(&row))
                .transpose()?
        });
        Ok(row)
    }

    pub async fn insert_session(&self, session: &SessionRow) -> Result<(), StoreError> {
        const SQL: &str = concat!(
            "INSERT INTO oauth_sessions (",
            session_columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
        );
        with_pool!(self, pool => {
            sqlx::query(SQL)
                .bind(&session.id)
                .bind(&session.client_id)
                .bind(&session.user_id)
                .bind(&session.organization_id)
                .bind(&session.scope)
                .bind(&session.upstream_access)
                .bind(&session.upstream_refresh)
                .bind(session.upstream_expires_at_ms)
                .bind(session.created_at_ms)
                .bind(session.expires_at_ms)
                .bind(session.revoked_at_ms)
                .execute(pool)
                .await
                .map(|_| ())
        })?;
        Ok(())
    }

    pub async fn get_session(&self, id: &str) -> Result<Option<SessionRow>, StoreError> {
        const SQL: &str = concat!(
            "SELECT ",
            session_columns!(),
            " FROM oauth_sessions WHERE id = $1"
        );
        let row = with_pool!(self, pool => {
            sqlx::query(SQL).bind(id).fetch_optional(pool).await?.map(|row| session_from_row(&row)).transpose()?
        });
        Ok(row)
    }

    /// Sessions matching an operator's filter, newest first: active ones only unless `include_inactive`.
    pub async fn list_sessions(
        &self,
        filter: &SessionFilter,
        now_ms: i64,
    ) -> Result<Vec<SessionRow>, StoreError> {
        const SQL: &str = concat!(
            "SELECT ",
            session_columns!(),
            " FROM oauth_sessions WHERE (CAST($1 AS TEXT) IS NULL OR id = $1) \
             AND (CAST($2 AS TEXT) IS NULL OR user_id = $2) AND (CAST($3 AS TEXT) IS NULL OR client_id = $3) \
             AND ($4 = 1 OR (revoked_at_ms IS NULL AND expires_at_ms > $5)) ORDER BY created_at_ms DESC LIMIT 10000"
        );
        let rows = with_pool!(self, pool => {
            sqlx::query(SQL)
                .bind(&filter.session_id)
                .bind(&filter.user_id)
                .bind(&filter.client_id)
                .bind(i64::from(filter.include_inactive))
                .bind(now_ms)
                .fetch_all(pool)
                .await?
                .iter()
                .map(session_from_row)
                .collect::<Result<Vec<_>, _>>()?
        });
        Ok(rows)
    }

    /// Revokes every active session matching the filter; returns how many. An empty filter matches nothing.
    pub async fn revoke_sessions(
        &self,
        filter: &SessionFilter,
        now_ms: i64,
    ) -> Result<u64, StoreError> {
        const SQL: &str = "UPDATE oauth_sessions SET revoked_at_ms = $4, upstream_access = NULL, upstream_refresh = NULL \
                           WHERE revoked_at_ms IS NULL AND (CAST($1 AS TEXT) IS NULL OR id = $1) \
                           AND (CAST($2 AS TEXT) IS NULL OR user_id = $2) AND (CAST($3 AS TEXT) IS NULL OR client_id = $3)";
        if filter.session_id.is_none() && filter.user_id.is_none() && filter.client_id.is_none() {
            return Ok(0);
        }
        let changed = with_pool!(self, pool => {
            sqlx::query(SQL)
                .bind(&filter.session_id)
                .bind(&filter.user_id)
                .bind(&filter.client_id)
                .bind(now_ms)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(changed)
    }

    /// Revokes a session (the whole refresh-token family) and forgets its upstream tokens and the refresh
    /// token kept for a retry.
    pub async fn revoke_session(&self, id: &str, now_ms: i64) -> Result<(), StoreError> {
        const SQL: &str = "UPDATE oauth_sessions SET revoked_at_ms = $2, upstream_access = NULL, upstream_refresh = NULL \
                           WHERE id = $1 AND revoked_at_ms IS NULL";
        with_pool!(self, pool => {
            sqlx::query(SQL).bind(id).bind(now_ms).execute(pool).await?;
            sqlx::query(super::oauth_rotation::FORGET_SUCCESSORS).bind(id).execute(pool).await?;
        });
        Ok(())
    }

    /// Claims the right to refresh a session's upstream token until `until_ms`, so that replicas do not spend
    /// the same upstream refresh token twice.
    pub async fn take_refresh_lease(
        &self,
        id: &str,
        now_ms: i64,
        until_ms: i64,
    ) -> Result<bool, StoreError> {
        const SQL: &str = "UPDATE oauth_sessions SET refresh_lease_until_ms = $3 WHERE id = $1 \
                           AND revoked_at_ms IS NULL AND (refresh_lease_until_ms IS NULL OR refresh_lease_until_ms < $2)";
        let changed = with_pool!(self, pool => {
            sqlx::query(SQL).bind(id).bind(now_ms).bind(until_ms).execute(pool).await?.rows_affected()
        });
        Ok(changed == 1)
    }

    /// Saves refreshed upstream tokens and releases the lease; false when the session was revoked meanwhile
    /// (nothing is saved then).
    pub async fn store_upstream_tokens(
        &self,
        id: &str,
        tokens: &UpstreamTokens,
    ) -> Result<bool, StoreError> {
        const SQL: &str = "UPDATE oauth_sessions SET upstream_access = $2, upstream_refresh = COALESCE($3, upstream_refresh), \
                           upstream_expires_at_ms = $4, refresh_lease_until_ms = NULL WHERE id = $1 AND revoked_at_ms IS NULL";
        let changed = with_pool!(self, pool => {
            sqlx::query(SQL)
                .bind(id)
                .bind(&tokens.access)
                .bind(&tokens.refresh)
                .bind(tokens.expires_at_ms)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(changed == 1)
    }

    pub async fn release_refresh_lease(&self, id: &str) -> Result<(), StoreError> {
        const SQL: &str = "UPDATE oauth_sessions SET refresh_lease_until_ms = NULL WHERE id = $1";
        with_pool!(self, pool => sqlx::query(SQL).bind(id).execute(pool).await.map(|_| ()))?;
        Ok(())
    }

    /// Pushes the session's end out after a successful refresh (sliding refresh-token lifetime).
    /// Replaces a session's granted scope (only ever narrower: the caller checks).
    pub async fn set_session_scope(&self, id: &str, scope: &str) -> Result<(), StoreError> {
        const SQL: &str = "UPDATE oauth_sessions SET scope = $2 WHERE id = $1";
        with_pool!(self, pool => {
            sqlx::query(SQL).bind(id).bind(scope).execute(pool).await?;
        });
        Ok(())
    }

    pub async fn extend_session(&self, id: &str, expires_at_ms: i64) -> Result<(), StoreError> {
        const SQL: &str =
            "UPDATE oauth_sessions SET expires_at_ms = $2 WHERE id = $1 AND revoked_at_ms IS NULL";
        with_pool!(self, pool => sqlx::query(SQL).bind(id).bind(expires_at_ms).execute(pool).await.map(|_| ()))?;
        Ok(())
    }

    pub async fn insert_code(&self, code: &CodeRow) -> Result<(), StoreError> {
        const SQL: &str = concat!(
            "INSERT INTO oauth_codes (",
            code_columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
        );
        with_pool!(self, pool => {
            sqlx::query(SQL)
                .bind(&code.code_hash)
                .bind(&code.session_id)
                .bind(&code.client_id)
                .bind(&code.redirect_uri)
                .bind(&code.code_challenge)
                .bind(&code.resource)
                .bind(&code.scope)
                .bind(code.created_at_ms)
                .bind(code.expires_at_ms)
                .execute(pool)
                .await
                .map(|_| ())
        })?;
        Ok(())
    }

    /// Marks a code used and returns it, or says that it was used before or never existed.
    pub async fn consume_code(
        &self,
        code_hash: &str,
        now_ms: i64,
    ) -> Result<Consumed<CodeRow>, StoreError> {
        const TAKE: &str = concat!(
            "UPDATE oauth_codes SET used_at_ms = $2 WHERE code_hash = $1 AND used_at_ms IS NULL RETURNING ",
            code_columns!()
        );
        const LOOKUP: &str = "SELECT session_id FROM oauth_codes WHERE code_hash = $1";
        let outcome = with_pool!(self, pool => {
            match sqlx::query(TAKE).bind(code_hash).bind(now_ms).fetch_optional(pool).await? {
                Some(row) => Consumed::Fresh(CodeRow {
                    code_hash: row.try_get("code_hash")?,
                    session_id: row.try_get("session_id")?,
                    client_id: row.try_get("client_id")?,
                    redirect_uri: row.try_get("redirect_uri")?,
                    code_challenge: row.try_get("code_challenge")?,
                    resource: row.try_get("resource")?,
                    scope: row.try_get("scope")?,
                    created_at_ms: row.try_get("created_at_ms")?,
                    expires_at_ms: row.try_get("expires_at_ms")?,
                }),
                None => match sqlx::query_scalar::<_, String>(LOOKUP).bind(code_hash).fetch_optional(pool).await? {
                    Some(session_id) => Consumed::Reused { session_id },
                    None => Consumed::Unknown,
                },
            }
        });
        Ok(outcome)
    }

    /// The session a refresh token belongs to, used or not (for revocation).
    pub async fn refresh_token_session(
        &self,
        token_hash: &str,
    ) -> Result<Option<String>, StoreError> {
        const SQL: &str = "SELECT session_id FROM oauth_refresh_tokens WHERE token_hash = $1";
        let session = with_pool!(self, pool => {
            sqlx::query_scalar::<_, String>(SQL).bind(token_hash).fetch_optional(pool).await?
        });
        Ok(session)
    }

    /// Deletes what can no longer be used: expired requests, codes, refresh tokens and sessions, and stale
    /// cached metadata documents. Revoked sessions are kept until they expire so reuse is still recognised.
    pub async fn purge_oauth(&self, now_ms: i64) -> Result<(), StoreError> {
        const STATEMENTS: &[&str] = &[
            "DELETE FROM oauth_pending WHERE expires_at_ms < $1",
            "DELETE FROM oauth_codes WHERE expires_at_ms < $1",
            "DELETE FROM oauth_refresh_tokens WHERE expires_at_ms < $1",
            "DELETE FROM oauth_sessions WHERE expires_at_ms < $1",
            "DELETE FROM oauth_clients WHERE kind = 'cimd' AND expires_at_ms < $1",
        ];
        // Claude registers a client on every fresh connect: drop registrations that never led to a sign-in
        // within a day (UNUSED_CLIENT_TTL_MS), so the table does not grow without bound.
        const UNUSED: &str = concat!(
            "DELETE FROM oauth_clients WHERE created_at_ms < $1 AND ",
            unused_client!()
        );
        with_pool!(self, pool => {
            for sql in STATEMENTS {
                sqlx::query(*sql).bind(now_ms).execute(pool).await?;
            }
            sqlx::query(UNUSED).bind(now_ms - UNUSED_CLIENT_TTL_MS).execute(pool).await?;
        });
        Ok(())
    }
}

fn pending_from_row<R>(row: &R) -> Result<PendingRow, sqlx::Error>
where
    R: Row,
    for<'r> &'r str: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(PendingRow {
        id: row.try_get("id")?,
        client_id: row.try_get("client_id")?,
        redirect_uri: row.try_get("redirect_uri")?,
        state: row.try_get("state")?,
        code_challenge: row.try_get("code_challenge")?,
        scope: row.try_get("scope")?,
        resource: row.try_get("resource")?,
        browser_hash: row.try_get("browser_hash")?,
        status: PendingStatus::decode(&row.try_get::<String, _>("status")?)?,
        upstream_verifier: row.try_get("upstream_verifier")?,
        created_at_ms: row.try_get("created_at_ms")?,
        expires_at_ms: row.try_get("expires_at_ms")?,
    })
}

pub(super) fn session_from_row<R>(row: &R) -> Result<SessionRow, sqlx::Error>
where
    R: Row,
    for<'r> &'r str: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<i64>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(SessionRow {
        id: row.try_get("id")?,
        client_id: row.try_get("client_id")?,
        user_id: row.try_get("user_id")?,
        organization_id: row.try_get("organization_id")?,
        scope: row.try_get("scope")?,
        upstream_access: row.try_get("upstream_access")?,
        upstream_refresh: row.try_get("upstream_refresh")?,
        upstream_expires_at_ms: row.try_get("upstream_expires_at_ms")?,
        created_at_ms: row.try_get("created_at_ms")?,
        expires_at_ms: row.try_get("expires_at_ms")?,
        revoked_at_ms: row.try_get("revoked_at_ms")?,
    })
}
