-- OAuth grants carry their access as scopes: polytomic:read (read-only) and polytomic:write (full access).
-- Sign-ins made before this version were full access, and their rows held the upstream provider's scopes;
-- they get the scope that says what they were granted.
UPDATE oauth_sessions SET scope = 'polytomic:read polytomic:write'
    WHERE scope IS NULL OR scope NOT LIKE '%polytomic:read%';
UPDATE oauth_codes SET scope = 'polytomic:read polytomic:write'
    WHERE scope IS NULL OR scope NOT LIKE '%polytomic:read%';
UPDATE oauth_pending SET scope = 'polytomic:read polytomic:write'
    WHERE scope IS NULL OR scope NOT LIKE '%polytomic:read%';
