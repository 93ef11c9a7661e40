-- OAuth state, shared by every replica: nothing here lives only in one process's memory.
-- Secrets are stored as SHA-256 hashes (codes, refresh tokens, client secrets, registration tokens) or
-- AES-256-GCM ciphertext (upstream tokens, the upstream PKCE verifier).

-- The generated signing secret, only when POLYTOMIC_MCP_SIGNING_KEY is unset. Inserted once (ON CONFLICT DO
-- NOTHING) and read back, so replicas starting together agree on one key.
CREATE TABLE IF NOT EXISTS oauth_keys (
    id            TEXT PRIMARY KEY,
    secret        TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL
);

-- Registered (DCR) clients and cached Client ID Metadata Documents (kind = 'cimd', with an expiry).
CREATE TABLE IF NOT EXISTS oauth_clients (
    client_id               TEXT PRIMARY KEY,
    kind                    TEXT NOT NULL,
    metadata                TEXT NOT NULL,
    secret_hash             TEXT,
    registration_token_hash TEXT,
    created_at_ms           INTEGER NOT NULL,
    expires_at_ms           INTEGER
);

-- An authorization request between /authorize and the upstream callback.
CREATE TABLE IF NOT EXISTS oauth_pending (
    id                  TEXT PRIMARY KEY,
    client_id           TEXT NOT NULL,
    redirect_uri        TEXT NOT NULL,
    state               TEXT,
    code_challenge      TEXT NOT NULL,
    scope               TEXT,
    resource            TEXT,
    browser_hash        TEXT NOT NULL,
    status              TEXT NOT NULL,
    upstream_state_hash TEXT UNIQUE,
    upstream_verifier   TEXT,
    created_at_ms       INTEGER NOT NULL,
    expires_at_ms       INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS oauth_pending_expires ON oauth_pending (expires_at_ms);

-- One signed-in grant: the upstream tokens, who and which organization, and the refresh-token family.
CREATE TABLE IF NOT EXISTS oauth_sessions (
    id                     TEXT PRIMARY KEY,
    client_id              TEXT NOT NULL,
    user_id                TEXT NOT NULL,
    organization_id        TEXT,
    scope                  TEXT,
    upstream_access        TEXT,
    upstream_refresh       TEXT,
    upstream_expires_at_ms INTEGER,
    refresh_lease_until_ms INTEGER,
    created_at_ms          INTEGER NOT NULL,
    expires_at_ms          INTEGER NOT NULL,
    revoked_at_ms          INTEGER
);
CREATE INDEX IF NOT EXISTS oauth_sessions_expires ON oauth_sessions (expires_at_ms);

CREATE TABLE IF NOT EXISTS oauth_codes (
    code_hash      TEXT PRIMARY KEY,
    session_id     TEXT NOT NULL,
    client_id      TEXT NOT NULL,
    redirect_uri   TEXT NOT NULL,
    code_challenge TEXT NOT NULL,
    resource       TEXT,
    scope          TEXT,
    created_at_ms  INTEGER NOT NULL,
    expires_at_ms  INTEGER NOT NULL,
    used_at_ms     INTEGER
);
CREATE INDEX IF NOT EXISTS oauth_codes_expires ON oauth_codes (expires_at_ms);

-- Every refresh token ever issued for a session, so that presenting a rotated one is recognised as reuse.
CREATE TABLE IF NOT EXISTS oauth_refresh_tokens (
    token_hash    TEXT PRIMARY KEY,
    session_id    TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    expires_at_ms INTEGER NOT NULL,
    used_at_ms    INTEGER
);
CREATE INDEX IF NOT EXISTS oauth_refresh_tokens_session ON oauth_refresh_tokens (session_id);
CREATE INDEX IF NOT EXISTS oauth_refresh_tokens_expires ON oauth_refresh_tokens (expires_at_ms);
