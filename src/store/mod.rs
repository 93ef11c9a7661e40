//! Durable state behind one type: SQLite for a single node (the default), PostgreSQL when several replicas
//! share state. Query text is shared; each statement is compiled for both pool types by [`with_pool!`].

mod feedback;
mod migrate;

pub use feedback::{ClaimedDelivery, DeadLetter, FeedbackInsert};

use std::str::FromStr;
use std::time::Duration;

use serde::Serialize;
use sqlx::Row;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("POLYTOMIC_MCP_DATABASE_URL: {0}")]
    Config(String),
    #[error("POLYTOMIC_MCP_DATABASE_URL: the database is not reachable: {0}")]
    Unreachable(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration {version} failed: {reason}")]
    Migration { version: i64, reason: String },
}

#[derive(Debug, Clone)]
pub enum Store {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs the same statement against whichever pool this store holds.
macro_rules! with_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match $store {
            Store::Sqlite($pool) => $body,
            Store::Postgres($pool) => $body,
        }
    };
}
pub(crate) use with_pool;

pub mod oauth;
pub mod oauth_rotation;

/// A feedback record as stored.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FeedbackRecord {
    pub id: String,
    pub created_at_ms: i64,
    pub category: String,
    pub summary: String,
    pub details: Option<String>,
    pub tool: Option<String>,
    pub operation: Option<String>,
    pub severity: Option<String>,
    pub expected: Option<String>,
    pub actual: Option<String>,
    /// Key fingerprint or OAuth user id; never the key.
    pub principal: String,
    /// The organization Polytomic confirmed for the credential.
    pub organization_id: Option<String>,
    /// The Polytomic user Polytomic confirmed for the credential.
    pub user_id: Option<String>,
    pub auth_mode: String,
    pub access_mode: String,
    pub client_name: Option<String>,
    pub client_version: Option<String>,
    pub request_id: Option<String>,
    /// JSON array of the principal's last tool calls, when known.
    pub recent_calls: Option<String>,
}

/// The feedback columns in one order, shared by every statement so that reads and writes cannot drift.
macro_rules! feedback_columns {
    () => {
        "id, created_at_ms, category, summary, details, tool, operation, severity, expected, actual, principal, \
         organization_id, auth_mode, access_mode, client_name, client_version, request_id, recent_calls, user_id"
    };
}

pub(crate) const INSERT_FEEDBACK: &str = concat!(
    "INSERT INTO feedback (",
    feedback_columns!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)"
);

/// [`INSERT_FEEDBACK`], done only while the record's principal (`$11`) has stored fewer than `$21` records
/// since `$20`. One statement, so SQLite takes its write lock before counting; on PostgreSQL the caller holds
/// the principal's advisory lock, since two READ COMMITTED statements could both count below the limit.
pub(crate) const INSERT_FEEDBACK_WITHIN_LIMIT: &str = concat!(
    "INSERT INTO feedback (",
    feedback_columns!(),
    ") SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19 \
     WHERE (SELECT COUNT(*) FROM feedback WHERE principal = $11 AND created_at_ms >= $20) < $21"
);

/// The insert statement with every column bound, for either backend (`INSERT_FEEDBACK` unless another
/// statement with the same first 19 parameters is named).
macro_rules! insert_feedback_query {
    ($record:expr) => {
        $crate::store::insert_feedback_query!($record, $crate::store::INSERT_FEEDBACK)
    };
    ($record:expr, $sql:expr) => {{
        let record: &FeedbackRecord = $record;
        sqlx::query($sql)
            .bind(&record.id)
            .bind(record.created_at_ms)
            .bind(&record.category)
            .bind(&record.summary)
            .bind(&record.details)
            .bind(&record.tool)
            .bind(&record.operation)
            .bind(&record.severity)
            .bind(&record.expected)
            .bind(&record.actual)
            .bind(&record.principal)
            .bind(&record.organization_id)
            .bind(&record.auth_mode)
            .bind(&record.access_mode)
            .bind(&record.client_name)
            .bind(&record.client_version)
            .bind(&record.request_id)
            .bind(&record.recent_calls)
            .bind(&record.user_id)
    }};
}
pub(crate) use insert_feedback_query;

impl Store {
    /// Opens the database named by `url`, creating a SQLite file if needed, and applies migrations.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let store = if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)
                .map_err(|e| StoreError::Config(format!("not a usable SQLite URL: {e}")))?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                // FULL: a record acknowledged to the agent survives a crash or power loss.
                .synchronous(SqliteSynchronous::Full)
                .busy_timeout(Duration::from_secs(5))
                .foreign_keys(true);
            let pool = SqlitePoolOptions::new()
                .max_connections(8)
                .acquire_timeout(Duration::from_secs(5))
                .connect_with(options)
                .await
                .map_err(|e| StoreError::Config(format!("cannot open the SQLite database: {e}")))?;
            Store::Sqlite(pool)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let pool = PgPoolOptions::new()
                .max_connections(16)
                .acquire_timeout(Duration::from_secs(5))
                .connect(url)
                .await
                .map_err(|e| {
                    StoreError::Unreachable(format!("cannot connect to PostgreSQL: {e}"))
                })?;
            Store::Postgres(pool)
        } else {
            return Err(StoreError::Config(
                "expected sqlite://FILE or postgres://…".into(),
            ));
        };
        migrate::run(&store).await?;
        Ok(store)
    }

    /// Like [`Store::connect`], but keeps retrying a database that is not reachable yet (a replica often
    /// starts before its database), for at most `wait`. Configuration errors fail at once.
    pub async fn connect_with_retry(url: &str, wait: Duration) -> Result<Self, StoreError> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut delay = Duration::from_millis(250);
        let mut attempt = 1;
        loop {
            match Self::connect(url).await {
                Ok(store) => return Ok(store),
                Err(StoreError::Unreachable(reason))
                    if tokio::time::Instant::now() + delay < deadline =>
                {
                    tracing::warn!(attempt, retry_in_ms = delay.as_millis() as u64, %reason, "database not reachable yet; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                    attempt += 1;
                }
                Err(error) => return Err(error),
            }
        }
    }

    pub fn backend(&self) -> &'static str {
        match self {
            Store::Sqlite(_) => "sqlite",
            Store::Postgres(_) => "postgres",
        }
    }

    /// True when a trivial query answers within a second (for `/readyz`).
    pub async fn ping(&self) -> bool {
        let probe = async {
            with_pool!(self, pool => sqlx::query("SELECT 1").execute(pool).await.map(|_| ()))
        };
        matches!(
            tokio::time::timeout(Duration::from_secs(1), probe).await,
            Ok(Ok(()))
        )
    }

    pub async fn close(&self) {
        with_pool!(self, pool => pool.close().await)
    }

    /// Inserts one record; returns once the database has committed it.
    pub async fn insert_feedback(&self, record: &FeedbackRecord) -> Result<(), StoreError> {
        self.insert_feedback_with_delivery(record, false).await
    }

    pub async fn get_feedback(&self, id: &str) -> Result<Option<FeedbackRecord>, StoreError> {
        const SQL: &str = concat!(
            "SELECT ",
            feedback_columns!(),
            " FROM feedback WHERE id = $1"
        );
        let record = with_pool!(self, pool => {
            sqlx::query(SQL).bind(id).fetch_optional(pool).await?.map(|row| feedback_from_row(&row)).transpose()?
        });
        Ok(record)
    }

    /// Newest first; `since_ms` and `category` narrow the list.
    pub async fn list_feedback(
        &self,
        since_ms: Option<i64>,
        category: Option<&str>,
        limit: i64,
    ) -> Result<Vec<FeedbackRecord>, StoreError> {
        const SQL: &str = concat!(
            "SELECT ",
            feedback_columns!(),
            " FROM feedback WHERE created_at_ms >= $1 AND ($2 IS NULL OR category = $2) ",
            "ORDER BY created_at_ms DESC, id DESC LIMIT $3"
        );
        let records = with_pool!(self, pool => {
            sqlx::query(SQL)
                .bind(since_ms.unwrap_or(0))
                .bind(category)
                .bind(limit)
                .fetch_all(pool)
                .await?
                .iter()
                .map(feedback_from_row)
                .collect::<Result<Vec<_>, _>>()?
        });
        Ok(records)
    }
}

fn feedback_from_row<R>(row: &R) -> Result<FeedbackRecord, sqlx::Error>
where
    R: Row,
    for<'r> &'r str: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(FeedbackRecord {
        id: row.try_get("id")?,
        created_at_ms: row.try_get("created_at_ms")?,
        category: row.try_get("category")?,
        summary: row.try_get("summary")?,
        details: row.try_get("details")?,
        tool: row.try_get("tool")?,
        operation: row.try_get("operation")?,
        severity: row.try_get("severity")?,
        expected: row.try_get("expected")?,
        actual: row.try_get("actual")?,
        principal: row.try_get("principal")?,
        organization_id: row.try_get("organization_id")?,
        user_id: row.try_get("user_id")?,
        auth_mode: row.try_get("auth_mode")?,
        access_mode: row.try_get("access_mode")?,
        client_name: row.try_get("client_name")?,
        client_version: row.try_get("client_version")?,
        request_id: row.try_get("request_id")?,
        recent_calls: row.try_get("recent_calls")?,
    })
}
