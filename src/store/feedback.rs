//! Feedback-specific queries beyond insert/get/list: per-principal counts and the webhook outbox.

use super::{
    FeedbackRecord, INSERT_FEEDBACK_WITHIN_LIMIT, Store, StoreError, insert_feedback_query,
    with_pool,
};

/// The first key of the PostgreSQL advisory locks that serialize one principal's feedback submissions (the
/// second is a hash of the principal); the two-key space is apart from the migration lock's one-key space.
const PG_FEEDBACK_LOCK_CLASS: i32 = 0x6662;

/// A new record's webhook delivery, due at once (`$1` the record id, `$2` its creation time).
const INSERT_DELIVERY: &str = "INSERT INTO feedback_deliveries (feedback_id, attempts, next_attempt_at_ms, last_error, created_at_ms) VALUES ($1, 0, $2, NULL, $2)";

/// What [`Store::insert_feedback_within_limit`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedbackInsert {
    Stored,
    /// Nothing stored: the principal already has this many records in the period.
    OverLimit {
        count: i64,
    },
}

/// A delivery claimed by one worker until `lease_until_ms`.
#[derive(Debug, Clone)]
pub struct ClaimedDelivery {
    pub feedback_id: String,
    pub attempts: i64,
}

#[derive(Debug, Clone, serde::Serialize, PartialEq, Eq)]
pub struct DeadLetter {
    pub feedback_id: String,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub failed_at_ms: i64,
}

impl Store {
    /// How many records one principal stored since `since_ms` (the per-principal rate limit, shared by replicas).
    pub async fn count_feedback_since(
        &self,
        principal: &str,
        since_ms: i64,
    ) -> Result<i64, StoreError> {
        const SQL: &str =
            "SELECT COUNT(*) FROM feedback WHERE principal = $1 AND created_at_ms >= $2";
        let count: i64 = with_pool!(self, pool => sqlx::query_scalar(SQL).bind(principal).bind(since_ms).fetch_one(pool).await?);
        Ok(count)
    }

    /// Stores the record (and, when `deliver`, its webhook delivery) only if its principal stored fewer than
    /// `limit` records since `since_ms`, atomically: concurrent submissions, on any replica, never store more
    /// than `limit`. PostgreSQL serializes a principal's submissions with a transaction-scoped advisory lock;
    /// SQLite's conditional insert holds the database's write lock while it counts.
    pub async fn insert_feedback_within_limit(
        &self,
        record: &FeedbackRecord,
        deliver: bool,
        since_ms: i64,
        limit: i64,
    ) -> Result<FeedbackInsert, StoreError> {
        const LOCK: &str = "SELECT pg_advisory_xact_lock($1, hashtext($2))";
        let postgres = matches!(self, Store::Postgres(_));
        let stored = with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            if postgres {
                sqlx::query(LOCK)
                    .bind(PG_FEEDBACK_LOCK_CLASS)
                    .bind(&record.principal)
                    .execute(&mut *tx)
                    .await?;
            }
            let inserted = insert_feedback_query!(record, INSERT_FEEDBACK_WITHIN_LIMIT)
                .bind(since_ms)
                .bind(limit)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if inserted == 1 && deliver {
                sqlx::query(INSERT_DELIVERY).bind(&record.id).bind(record.created_at_ms).execute(&mut *tx).await?;
            }
            tx.commit().await?;
            inserted == 1
        });
        if stored {
            return Ok(FeedbackInsert::Stored);
        }
        let count = self
            .count_feedback_since(&record.principal, since_ms)
            .await?;
        Ok(FeedbackInsert::OverLimit { count })
    }

    /// Stores the record and, when a webhook is configured, its delivery in one transaction.
    pub async fn insert_feedback_with_delivery(
        &self,
        record: &FeedbackRecord,
        deliver: bool,
    ) -> Result<(), StoreError> {
        with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            insert_feedback_query!(record).execute(&mut *tx).await?;
            if deliver {
                sqlx::query(INSERT_DELIVERY).bind(&record.id).bind(record.created_at_ms).execute(&mut *tx).await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// Claims up to `limit` due deliveries by pushing their next attempt past `lease_until_ms`. The due
    /// condition is repeated in the outer WHERE so that, in PostgreSQL, a row another replica claimed
    /// meanwhile is re-checked and skipped.
    pub async fn claim_deliveries(
        &self,
        now_ms: i64,
        lease_until_ms: i64,
        limit: i64,
    ) -> Result<Vec<ClaimedDelivery>, StoreError> {
        const SQL: &str = "UPDATE feedback_deliveries SET next_attempt_at_ms = $2 \
             WHERE next_attempt_at_ms <= $1 AND feedback_id IN \
             (SELECT feedback_id FROM feedback_deliveries WHERE next_attempt_at_ms <= $1 ORDER BY next_attempt_at_ms LIMIT $3) \
             RETURNING feedback_id, attempts";
        let rows: Vec<(String, i64)> = with_pool!(self, pool => {
            sqlx::query_as(SQL).bind(now_ms).bind(lease_until_ms).bind(limit).fetch_all(pool).await?
        });
        Ok(rows
            .into_iter()
            .map(|(feedback_id, attempts)| ClaimedDelivery {
                feedback_id,
                attempts,
            })
            .collect())
    }

    pub async fn delivery_succeeded(&self, feedback_id: &str) -> Result<(), StoreError> {
        const SQL: &str = "DELETE FROM feedback_deliveries WHERE feedback_id = $1";
        with_pool!(self, pool => sqlx::query(SQL).bind(feedback_id).execute(pool).await.map(|_| ()))?;
        Ok(())
    }

    pub async fn delivery_failed(
        &self,
        feedback_id: &str,
        attempts: i64,
        error: &str,
        retry_at_ms: i64,
    ) -> Result<(), StoreError> {
        const SQL: &str = "UPDATE feedback_deliveries SET attempts = $2, last_error = $3, next_attempt_at_ms = $4 WHERE feedback_id = $1";
        with_pool!(self, pool => sqlx::query(SQL).bind(feedback_id).bind(attempts).bind(error).bind(retry_at_ms).execute(pool).await.map(|_| ()))?;
        Ok(())
    }

    /// Moves a delivery that keeps failing to the dead letters, in one transaction.
    pub async fn delivery_dead(
        &self,
        feedback_id: &str,
        attempts: i64,
        error: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        const INSERT: &str = "INSERT INTO feedback_dead_letters (feedback_id, attempts, last_error, failed_at_ms) VALUES ($1, $2, $3, $4)";
        const DELETE: &str = "DELETE FROM feedback_deliveries WHERE feedback_id = $1";
        with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            sqlx::query(INSERT).bind(feedback_id).bind(attempts).bind(error).bind(now_ms).execute(&mut *tx).await?;
            sqlx::query(DELETE).bind(feedback_id).execute(&mut *tx).await?;
            tx.commit().await?;
        });
        Ok(())
    }

    pub async fn pending_deliveries(&self) -> Result<i64, StoreError> {
        const SQL: &str = "SELECT COUNT(*) FROM feedback_deliveries";
        let count: i64 = with_pool!(self, pool => sqlx::query_scalar(SQL).fetch_one(pool).await?);
        Ok(count)
    }

    pub async fn dead_letters(&self) -> Result<Vec<DeadLetter>, StoreError> {
        const SQL: &str = "SELECT feedback_id, attempts, last_error, failed_at_ms FROM feedback_dead_letters ORDER BY failed_at_ms DESC";
        let rows: Vec<(String, i64, Option<String>, i64)> =
            with_pool!(self, pool => sqlx::query_as(SQL).fetch_all(pool).await?);
        Ok(rows
            .into_iter()
            .map(
                |(feedback_id, attempts, last_error, failed_at_ms)| DeadLetter {
                    feedback_id,
                    attempts,
                    last_error,
                    failed_at_ms,
                },
            )
            .collect())
    }

    /// Counts one request in the bucket's current window and returns the window's total so far.
    pub async fn count_request(
        &self,
        bucket: &str,
        window_start_ms: i64,
    ) -> Result<i64, StoreError> {
        const SQL: &str = "INSERT INTO rate_limits (bucket, window_start_ms, count) VALUES ($1, $2, 1) \
             ON CONFLICT (bucket, window_start_ms) DO UPDATE SET count = rate_limits.count + 1 RETURNING count";
        let count: i64 = with_pool!(self, pool => sqlx::query_scalar(SQL).bind(bucket).bind(window_start_ms).fetch_one(pool).await?);
        Ok(count)
    }

    pub async fn purge_rate_limits(&self, before_ms: i64) -> Result<(), StoreError> {
        const SQL: &str = "DELETE FROM rate_limits WHERE window_start_ms < $1";
        with_pool!(self, pool => sqlx::query(SQL).bind(before_ms).execute(pool).await.map(|_| ()))?;
        Ok(())
    }
}
