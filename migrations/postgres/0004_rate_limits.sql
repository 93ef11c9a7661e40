-- Per-principal request counts in fixed one-minute windows, shared by every replica (used on PostgreSQL;
-- a single SQLite node counts in memory). Old windows are deleted by a background task.
CREATE TABLE IF NOT EXISTS rate_limits (
    bucket          TEXT NOT NULL,
    window_start_ms BIGINT NOT NULL,
    count           BIGINT NOT NULL,
    PRIMARY KEY (bucket, window_start_ms)
);
