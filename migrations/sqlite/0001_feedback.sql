CREATE TABLE IF NOT EXISTS feedback (
    id              TEXT PRIMARY KEY,
    created_at_ms   INTEGER NOT NULL,
    category        TEXT NOT NULL,
    summary         TEXT NOT NULL,
    details         TEXT,
    tool            TEXT,
    operation       TEXT,
    severity        TEXT,
    expected        TEXT,
    actual          TEXT,
    principal       TEXT NOT NULL,
    organization_id TEXT,
    auth_mode       TEXT NOT NULL,
    access_mode     TEXT NOT NULL,
    client_name     TEXT,
    client_version  TEXT,
    request_id      TEXT,
    recent_calls    TEXT
);
CREATE INDEX IF NOT EXISTS feedback_created_at ON feedback (created_at_ms);
CREATE INDEX IF NOT EXISTS feedback_category ON feedback (category, created_at_ms);
