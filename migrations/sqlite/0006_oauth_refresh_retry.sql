-- Refresh retries and the pair each refresh produced. A client that lost the answer to a refresh and sends the
-- same refresh token again, soon and before it used the new pair, gets that pair again instead of losing its
-- sign-in to reuse detection.
--
-- pair_id: the token pair (access and refresh token issued together) a refresh token belongs to.
-- successor_pair, successor_sealed: the pair produced when this refresh token was used, and its refresh token
-- encrypted (AES-256-GCM); the ciphertext is kept only while a retry may still ask for it.
ALTER TABLE oauth_refresh_tokens ADD COLUMN pair_id TEXT;
ALTER TABLE oauth_refresh_tokens ADD COLUMN successor_pair TEXT;
ALTER TABLE oauth_refresh_tokens ADD COLUMN successor_sealed TEXT;
-- The session's newest pair, and when it was first used (its access token on /mcp or its refresh token).
ALTER TABLE oauth_sessions ADD COLUMN pair_id TEXT;
ALTER TABLE oauth_sessions ADD COLUMN pair_used_at_ms INTEGER;
