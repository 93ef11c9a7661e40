-- Finding registrations never used for a sign-in (to purge them after a day, or to make room under
-- POLYTOMIC_MCP_OAUTH_MAX_UNUSED_CLIENTS) looks up sessions and pending requests by client, oldest clients first.
CREATE INDEX IF NOT EXISTS oauth_sessions_client ON oauth_sessions (client_id);
CREATE INDEX IF NOT EXISTS oauth_pending_client ON oauth_pending (client_id);
CREATE INDEX IF NOT EXISTS oauth_clients_kind_created ON oauth_clients (kind, created_at_ms);
