-- Webhook delivery of feedback records: an outbox written in the same transaction as the record, so a
-- crash between storing and delivering loses nothing. Records that keep failing move to the dead letters.
CREATE TABLE IF NOT EXISTS feedback_deliveries (
    feedback_id        TEXT PRIMARY KEY,
    attempts           INTEGER NOT NULL,
    next_attempt_at_ms INTEGER NOT NULL,
    last_error         TEXT,
    created_at_ms      INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS feedback_deliveries_due ON feedback_deliveries (next_attempt_at_ms);

CREATE TABLE IF NOT EXISTS feedback_dead_letters (
    feedback_id   TEXT PRIMARY KEY,
    attempts      INTEGER NOT NULL,
    last_error    TEXT,
    failed_at_ms  INTEGER NOT NULL
);

CREATE INDEX IF NOT EXISTS feedback_principal ON feedback (principal, created_at_ms);
