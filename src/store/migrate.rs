//! Versioned schema migrations, applied in order at start-up; each version runs once, in its own transaction.
//! Replicas starting together serialise on a lock (an advisory lock in PostgreSQL, the write lock in SQLite).

use super::{Store, StoreError};

struct Migration {
    version: i64,
    sqlite: &'static str,
    postgres: &'static str,
}

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        sqlite: include_str!("../../migrations/sqlite/0001_feedback.sql"),
        postgres: include_str!("../../migrations/postgres/0001_feedback.sql"),
    },
    Migration {
        version: 2,
        sqlite: include_str!("../../migrations/sqlite/0002_oauth.sql"),
        postgres: include_str!("../../migrations/postgres/0002_oauth.sql"),
    },
    Migration {
        version: 3,
        sqlite: include_str!("../../migrations/sqlite/0003_feedback_delivery.sql"),
        postgres: include_str!("../../migrations/postgres/0003_feedback_delivery.sql"),
    },
    Migration {
        version: 4,
        sqlite: include_str!("../../migrations/sqlite/0004_rate_limits.sql"),
        postgres: include_str!("../../migrations/postgres/0004_rate_limits.sql"),
    },
    Migration {
        version: 5,
        sqlite: include_str!("../../migrations/sqlite/0005_oauth_scopes.sql"),
        postgres: include_str!("../../migrations/postgres/0005_oauth_scopes.sql"),
    },
    Migration {
        version: 6,
        sqlite: include_str!("../../migrations/sqlite/0006_oauth_refresh_retry.sql"),
        postgres: include_str!("../../migrations/postgres/0006_oauth_refresh_retry.sql"),
    },
    Migration {
        version: 7,
        sqlite: include_str!("../../migrations/sqlite/0007_feedback_user.sql"),
        postgres: include_str!("../../migrations/postgres/0007_feedback_user.sql"),
    },
    Migration {
        version: 8,
        sqlite: include_str!("../../migrations/sqlite/0008_oauth_client_housekeeping.sql"),
        postgres: include_str!("../../migrations/postgres/0008_oauth_client_housekeeping.sql"),
    },
];

/// Arbitrary constant naming this application's migration lock in `pg_advisory_lock`.
const PG_LOCK_ID: i64 = 0x0070_6f6c_796d_6370;

pub async fn run(store: &Store) -> Result<(), StoreError> {
    match store {
        Store::Sqlite(pool) => {
            let mut conn = pool.acquire().await?;
            sqlx::query("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at_ms INTEGER NOT NULL)")
                .execute(&mut *conn)
                .await?;
            for migration in MIGRATIONS {
                // BEGIN IMMEDIATE takes the write lock up front, so two processes cannot both apply a version.
                sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await?;
                let outcome = apply_sqlite(&mut conn, migration).await;
                let end = if outcome.is_ok() {
                    "COMMIT"
                } else {
                    "ROLLBACK"
                };
                sqlx::query(end).execute(&mut *conn).await?;
                outcome?;
            }
        }
        Store::Postgres(pool) => {
            let mut conn = pool.acquire().await?;
            sqlx::query("SELECT pg_advisory_lock($1)")
                .bind(PG_LOCK_ID)
                .execute(&mut *conn)
                .await?;
            let outcome = apply_postgres(&mut conn).await;
            sqlx::query("SELECT pg_advisory_unlock($1)")
                .bind(PG_LOCK_ID)
                .execute(&mut *conn)
                .await?;
            outcome?;
        }
    }
    Ok(())
}

async fn apply_sqlite(
    conn: &mut sqlx::SqliteConnection,
    migration: &Migration,
) -> Result<(), StoreError> {
    let applied: Option<i64> =
        sqlx::query_scalar("SELECT version FROM schema_migrations WHERE version = $1")
            .bind(migration.version)
            .fetch_optional(&mut *conn)
            .await?;
    if applied.is_some() {
        return Ok(());
    }
    sqlx::raw_sql(migration.sqlite)
        .execute(&mut *conn)
        .await
        .map_err(|e| StoreError::Migration {
            version: migration.version,
            reason: e.to_string(),
        })?;
    sqlx::query("INSERT INTO schema_migrations (version, applied_at_ms) VALUES ($1, $2)")
        .bind(migration.version)
        .bind(now_ms())
        .execute(&mut *conn)
        .await?;
    Ok(())
}

async fn apply_postgres(conn: &mut sqlx::PgConnection) -> Result<(), StoreError> {
    sqlx::query("CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at_ms BIGINT NOT NULL)")
        .execute(&mut *conn)
        .await?;
    for migration in MIGRATIONS {
        let applied: Option<i64> =
            sqlx::query_scalar("SELECT version FROM schema_migrations WHERE version = $1")
                .bind(migration.version)
                .fetch_optional(&mut *conn)
                .await?;
        if applied.is_some() {
            continue;
        }
        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
        sqlx::raw_sql(migration.postgres)
            .execute(&mut *tx)
            .await
            .map_err(|e| StoreError::Migration {
                version: migration.version,
                reason: e.to_string(),
            })?;
        sqlx::query("INSERT INTO schema_migrations (version, applied_at_ms) VALUES ($1, $2)")
            .bind(migration.version)
            .bind(now_ms())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
    }
    Ok(())
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
