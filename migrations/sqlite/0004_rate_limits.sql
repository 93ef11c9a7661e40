-- Per-principal request counts in fixed one-minute windows, shared by every replica (used on PostgreSQL;
-- a single SQLite node counts in memory). Old windows are deleted by a background task.
CREATE TABLE IF NOT EXISTS rate_limits (
    bucket          TEXT NOT NULL,
    window_start_ms INTEGER NOT NULL,
    count           INTEGER NOT NULL,
    PRIMARY KEY (bucket, window_start_ms)
);
