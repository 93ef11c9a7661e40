//! The store's behaviour on both backends: each check runs on SQLite always, and on PostgreSQL
//! (`POLYTOMIC_MCP_TEST_POSTGRES_URL`) when ignored tests are run, as `.ci/run` does.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use polytomic_mcp::store::oauth::{SessionFilter, SessionRow};
use polytomic_mcp::store::oauth_rotation::{
    ClearedUpstream, NewRefreshToken, PairState, Rotation, RotationRefusal,
};
use polytomic_mcp::store::{FeedbackInsert, FeedbackRecord, Store};

fn record(id: &str, category: &str, at: i64) -> FeedbackRecord {
    FeedbackRecord {
        id: id.to_owned(),
        created_at_ms: at,
        category: category.to_owned(),
        summary: format!("summary of {id}"),
        details: Some("details".into()),
        tool: Some("execute".into()),
        operation: Some("GET /api/syncs".into()),
        severity: None,
        expected: Some("a list".into()),
        actual: None,
        principal: "key_0123456789ab".into(),
        organization_id: None,
        user_id: None,
        auth_mode: "user".into(),
        access_mode: "read-only".into(),
        client_name: Some("test-client".into()),
        client_version: Some("1.0".into()),
        request_id: Some("req-1".into()),
        recent_calls: None,
    }
}

/// A fresh SQLite store in its own directory (kept alive by the returned guard).
async fn sqlite() -> (Store, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/store.db", dir.path().display());
    (Store::connect(&url).await.unwrap(), url, dir)
}

async fn postgres() -> (Store, String) {
    let url = crate::common::postgres_url();
    (Store::connect(&url).await.unwrap(), url)
}

/// One test per backend for a check written once: `<name>_on_sqlite` always runs; `<name>_on_postgres` is
/// ignored (with the reason) unless run with `--ignored`, as `.ci/run` does.
macro_rules! on_every_backend {
    ($name:ident, $check:ident) => {
        mod $name {
            #[tokio::test]
            async fn on_sqlite() {
                let (store, url, _dir) = super::sqlite().await;
                super::$check(store, url, "sqlite").await;
            }

            #[tokio::test]
            #[ignore = "needs PostgreSQL: set POLYTOMIC_MCP_TEST_POSTGRES_URL and run `cargo test -- --ignored` (.ci/run does)"]
            async fn on_postgres() {
                let (store, url) = super::postgres().await;
                super::$check(store, url, "postgres").await;
            }
        }
    };
}

on_every_backend!(
    feedback_round_trips_and_lists_newest_first_on_every_backend,
    check_feedback_round_trips
);

async fn check_feedback_round_trips(store: Store, _url: String, name: &str) {
    let run = uuid::Uuid::new_v4().simple().to_string();
    let now = chrono::Utc::now().timestamp_millis();
    let a = record(&format!("fb_{run}_a"), "bug", now);
    let b = record(&format!("fb_{run}_b"), "docs", now + 1);
    store.insert_feedback(&a).await.unwrap();
    store.insert_feedback(&b).await.unwrap();
    assert_eq!(
        store.get_feedback(&a.id).await.unwrap().as_ref(),
        Some(&a),
        "{name}"
    );
    assert_eq!(
        store.get_feedback("fb_missing").await.unwrap(),
        None,
        "{name}"
    );
    let listed = store.list_feedback(Some(now), None, 1000).await.unwrap();
    let ours: Vec<&str> = listed
        .iter()
        .filter(|r| r.id.contains(&run))
        .map(|r| r.id.as_str())
        .collect();
    assert_eq!(ours, [b.id.as_str(), a.id.as_str()], "{name}: newest first");
    let bugs = store
        .list_feedback(Some(now), Some("bug"), 1000)
        .await
        .unwrap();
    assert!(
        bugs.iter().all(|r| r.category == "bug") && bugs.iter().any(|r| r.id == a.id),
        "{name}"
    );
    // A duplicate id is refused, not overwritten.
    assert!(store.insert_feedback(&a).await.is_err(), "{name}");
    assert!(store.ping().await, "{name}");
}

on_every_backend!(
    concurrent_feedback_over_the_limit_stores_exactly_the_limit,
    check_feedback_limit_is_atomic
);

/// Twenty submissions of one principal at once, through two connection pools (as two replicas would have),
/// against a limit of five: exactly five are stored, whatever the interleaving. A count-then-insert would
/// let several through on PostgreSQL, where each pool runs them on its own connections in parallel.
async fn check_feedback_limit_is_atomic(store: Store, url: String, name: &str) {
    const LIMIT: i64 = 5;
    const SUBMISSIONS: usize = 20;
    let other_replica = Store::connect(&url).await.unwrap();
    let run = uuid::Uuid::new_v4().simple().to_string();
    let principal = format!("key_limit_{run}");
    let now = chrono::Utc::now().timestamp_millis();
    let since = now - 3_600_000;
    let attempts = (0..SUBMISSIONS).map(|n| {
        let mut record = record(&format!("fb_{run}_{n}"), "bug", now);
        record.principal = principal.clone();
        let store = if n % 2 == 0 { &store } else { &other_replica };
        async move {
            store
                .insert_feedback_within_limit(&record, n % 3 == 0, since, LIMIT)
                .await
                .unwrap()
        }
    });
    let outcomes = futures_util::future::join_all(attempts).await;
    let stored = outcomes
        .iter()
        .filter(|o| **o == FeedbackInsert::Stored)
        .count();
    assert_eq!(stored, LIMIT as usize, "{name}: {outcomes:?}");
    for outcome in &outcomes {
        if let FeedbackInsert::OverLimit { count } = outcome {
            assert_eq!(*count, LIMIT, "{name}: the refusal reports the count");
        }
    }
    assert_eq!(
        store.count_feedback_since(&principal, since).await.unwrap(),
        LIMIT,
        "{name}: rows stored"
    );
    // Another principal has its own limit, and its records from before the period do not count.
    let other = format!("key_other_{run}");
    let mut before = record(&format!("fb_{run}_before"), "bug", since - 1);
    before.principal = other.clone();
    store.insert_feedback(&before).await.unwrap();
    let mut fresh = record(&format!("fb_{run}_fresh"), "bug", now);
    fresh.principal = other;
    assert_eq!(
        store
            .insert_feedback_within_limit(&fresh, false, since, 1)
            .await
            .unwrap(),
        FeedbackInsert::Stored,
        "{name}"
    );
    let mut second = record(&format!("fb_{run}_second"), "bug", now);
    second.principal = fresh.principal.clone();
    assert_eq!(
        store
            .insert_feedback_within_limit(&second, false, since, 1)
            .await
            .unwrap(),
        FeedbackInsert::OverLimit { count: 1 },
        "{name}"
    );
    other_replica.close().await;
}

on_every_backend!(
    migrations_are_idempotent_across_reconnects,
    check_migrations_idempotent
);

async fn check_migrations_idempotent(store: Store, url: String, name: &str) {
    store.close().await;
    // Two concurrent connects race on the migration lock; both must succeed.
    let (first, second) = tokio::join!(Store::connect(&url), Store::connect(&url));
    let (first, second) = (first.unwrap(), second.unwrap());
    // Each version is recorded once, and both connections work.
    let versions: Vec<i64> = match &first {
        Store::Sqlite(pool) => {
            sqlx::query_scalar("SELECT version FROM schema_migrations ORDER BY version")
                .fetch_all(pool)
                .await
                .unwrap()
        }
        Store::Postgres(pool) => {
            sqlx::query_scalar("SELECT version FROM schema_migrations ORDER BY version")
                .fetch_all(pool)
                .await
                .unwrap()
        }
    };
    assert_eq!(
        versions,
        (1..=versions.len() as i64).collect::<Vec<_>>(),
        "{name}"
    );
    assert!(versions.len() >= 5, "{name}: {versions:?}");
    assert!(first.ping().await && second.ping().await, "{name}");
}

#[tokio::test]
async fn a_bad_database_url_names_the_variable() {
    let error = Store::connect("mysql://localhost/db").await.unwrap_err();
    assert!(
        error.to_string().contains("POLYTOMIC_MCP_DATABASE_URL"),
        "{error}"
    );
}

on_every_backend!(
    oauth_purge_statements_run_on_every_backend,
    check_purge_statements
);

async fn check_purge_statements(store: Store, _url: String, name: &str) {
    store
        .purge_oauth(chrono::Utc::now().timestamp_millis())
        .await
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    store
        .purge_rate_limits(0)
        .await
        .unwrap_or_else(|e| panic!("{name}: {e}"));
}

fn session(id: &str, user: &str, client: &str, scope: &str, now: i64) -> SessionRow {
    SessionRow {
        id: id.to_owned(),
        client_id: client.to_owned(),
        user_id: user.to_owned(),
        organization_id: Some("org-1".into()),
        scope: Some(scope.to_owned()),
        upstream_access: Some("sealed".into()),
        upstream_refresh: None,
        upstream_expires_at_ms: None,
        created_at_ms: now,
        expires_at_ms: now + 60_000,
        revoked_at_ms: None,
    }
}

on_every_backend!(
    sessions_are_listed_narrowed_and_revoked_by_person_or_client_on_every_backend,
    check_sessions
);

async fn check_sessions(store: Store, _url: String, name: &str) {
    let run = uuid::Uuid::new_v4().simple().to_string();
    let now = chrono::Utc::now().timestamp_millis();
    let (alice, bob) = (format!("alice-{run}"), format!("bob-{run}"));
    let (desktop, code) = (format!("desktop-{run}"), format!("code-{run}"));
    let full = "polytomic:read polytomic:write";
    for (id, user, client) in [
        ("a1", &alice, &desktop),
        ("a2", &alice, &code),
        ("b1", &bob, &desktop),
    ] {
        store
            .insert_session(&session(&format!("{id}-{run}"), user, client, full, now))
            .await
            .unwrap();
    }
    let by = |user: Option<&String>, client: Option<&String>| SessionFilter {
        user_id: user.cloned(),
        client_id: client.cloned(),
        ..SessionFilter::default()
    };
    let alices = store
        .list_sessions(&by(Some(&alice), None), now)
        .await
        .unwrap();
    assert_eq!(alices.len(), 2, "{name}");
    let on_desktop = store
        .list_sessions(&by(None, Some(&desktop)), now)
        .await
        .unwrap();
    assert_eq!(on_desktop.len(), 2, "{name}");

    store
        .set_session_scope(&format!("a1-{run}"), "polytomic:read")
        .await
        .unwrap();
    let a1 = store
        .get_session(&format!("a1-{run}"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(a1.scope.as_deref(), Some("polytomic:read"), "{name}");

    // An empty filter matches nothing; a filter revokes only what it names.
    assert_eq!(
        store
            .revoke_sessions(&SessionFilter::default(), now)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        store
            .revoke_sessions(&by(Some(&alice), None), now)
            .await
            .unwrap(),
        2,
        "{name}"
    );
    assert_eq!(
        store
            .revoke_sessions(&by(Some(&alice), None), now)
            .await
            .unwrap(),
        0,
        "{name}"
    );
    let active = store
        .list_sessions(&by(None, Some(&desktop)), now)
        .await
        .unwrap();
    assert_eq!(
        active
            .iter()
            .map(|s| s.user_id.as_str())
            .collect::<Vec<_>>(),
        [bob.as_str()]
    );
    let everything = SessionFilter {
        include_inactive: true,
        ..by(None, Some(&desktop))
    };
    let all = store.list_sessions(&everything, now).await.unwrap();
    assert_eq!(all.len(), 2, "{name}");
    let revoked = all.iter().find(|s| s.user_id == alice).unwrap();
    assert!(
        revoked.revoked_at_ms.is_some() && revoked.upstream_access.is_none(),
        "{name}"
    );
}

#[tokio::test]
async fn grants_from_before_scopes_read_as_full_access_after_the_migration() {
    // Migration 5 gives sessions stored with the upstream provider's scopes (or none) the full-access scope
    // they were granted; a fresh database has nothing to convert, so write such a row and run it again.
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/legacy.db", dir.path().display());
    let store = Store::connect(&url).await.unwrap();
    let now = chrono::Utc::now().timestamp_millis();
    store
        .insert_session(&session("legacy", "u", "c", "read write", now))
        .await
        .unwrap();
    let Store::Sqlite(pool) = &store else {
        panic!("sqlite")
    };
    sqlx::query("DELETE FROM schema_migrations WHERE version = 5")
        .execute(pool)
        .await
        .unwrap();
    store.close().await;
    let store = Store::connect(&url).await.unwrap();
    let legacy = store.get_session("legacy").await.unwrap().unwrap();
    assert_eq!(
        legacy.scope.as_deref(),
        Some("polytomic:read polytomic:write")
    );
}

on_every_backend!(
    refresh_rotation_pairs_and_revocation_on_every_backend,
    check_refresh_rotation
);

async fn check_refresh_rotation(store: Store, _url: String, name: &str) {
    let run = uuid::Uuid::new_v4().simple().to_string();
    let now = chrono::Utc::now().timestamp_millis();
    let id = format!("rot-{run}");
    let client = format!("client-{run}");
    let mut row = session(&id, "u", &client, "polytomic:read", now);
    row.upstream_refresh = Some("sealed-refresh".into());
    store.insert_session(&row).await.unwrap();
    let token = |n: u32| NewRefreshToken {
        token_hash: format!("h{n}-{run}"),
        pair_id: format!("p{n}-{run}"),
        expires_at_ms: now + 60_000,
    };
    let pair_of = |store: &Store| {
        let (store, id) = (store.clone(), id.clone());
        async move { store.get_session_and_pair(&id).await.unwrap().unwrap().1 }
    };

    store.insert_first_pair(&id, &token(1), now).await.unwrap();
    assert_eq!(
        pair_of(&store).await,
        PairState {
            pair_id: Some(token(1).pair_id),
            used_at_ms: None
        },
        "{name}"
    );
    store
        .mark_pair_used(&id, &token(1).pair_id, now)
        .await
        .unwrap();
    assert_eq!(pair_of(&store).await.used_at_ms, Some(now), "{name}");

    // Rotation: the successor becomes the newest, unused pair and the session is extended.
    let rotated = store
        .rotate_refresh_token(
            &token(1).token_hash,
            &client,
            &token(2),
            "sealed-2",
            now + 90_000,
            now,
        )
        .await
        .unwrap();
    let Rotation::Rotated(session) = rotated else {
        panic!("{name}: {rotated:?}")
    };
    assert_eq!(session.expires_at_ms, now + 90_000, "{name}");
    assert_eq!(
        pair_of(&store).await,
        PairState {
            pair_id: Some(token(2).pair_id),
            used_at_ms: None
        },
        "{name}"
    );

    // The used token remembers what it produced; the kept secret goes once the window has passed.
    let again = store
        .rotate_refresh_token(
            &token(1).token_hash,
            &client,
            &token(3),
            "sealed-3",
            now,
            now,
        )
        .await
        .unwrap();
    let Rotation::Reused(used) = again else {
        panic!("{name}: {again:?}")
    };
    assert_eq!(used.session_id, id, "{name}");
    assert_eq!(used.used_at_ms, Some(now), "{name}");
    assert_eq!(used.successor_pair, Some(token(2).pair_id), "{name}");
    assert_eq!(used.successor_sealed.as_deref(), Some("sealed-2"), "{name}");
    store.forget_refresh_successors(now + 1).await.unwrap();
    let Rotation::Reused(used) = store
        .rotate_refresh_token(
            &token(1).token_hash,
            &client,
            &token(3),
            "sealed-3",
            now,
            now,
        )
        .await
        .unwrap()
    else {
        panic!("{name}")
    };
    assert_eq!(used.successor_sealed, None, "{name}");

    // Another client's presentation spends the token and issues nothing; an unknown one is unknown.
    assert_eq!(
        store
            .rotate_refresh_token(
                &token(2).token_hash,
                "someone-else",
                &token(4),
                "sealed-4",
                now,
                now
            )
            .await
            .unwrap(),
        Rotation::Refused {
            session_id: id.clone(),
            reason: RotationRefusal::OtherClient
        },
        "{name}"
    );
    assert_eq!(
        pair_of(&store).await.pair_id,
        Some(token(2).pair_id),
        "{name}"
    );
    assert_eq!(
        store
            .rotate_refresh_token(&format!("nope-{run}"), &client, &token(5), "s", now, now)
            .await
            .unwrap(),
        Rotation::Unknown,
        "{name}"
    );

    // The upstream credential, its lease, and a revocation that hands the upstream tokens back once.
    let upstream = store.get_upstream(&id, now).await.unwrap().unwrap();
    assert!(
        !upstream.ended && upstream.lease_until_ms.is_none(),
        "{name}"
    );
    assert!(
        store
            .take_refresh_lease(&id, now, now + 30_000)
            .await
            .unwrap()
    );
    assert!(
        !store
            .take_refresh_lease(&id, now, now + 30_000)
            .await
            .unwrap()
    );
    let leased = store.get_upstream(&id, now).await.unwrap().unwrap();
    assert_eq!(leased.lease_until_ms, Some(now + 30_000), "{name}");
    assert_eq!(
        store
            .revoke_session_taking_upstream(&id, now)
            .await
            .unwrap(),
        Some(ClearedUpstream {
            access: Some("sealed".into()),
            refresh: Some("sealed-refresh".into())
        }),
        "{name}"
    );
    assert_eq!(
        store
            .revoke_session_taking_upstream(&id, now)
            .await
            .unwrap(),
        None,
        "{name}"
    );
    let ended = store.get_upstream(&id, now).await.unwrap().unwrap();
    assert!(
        ended.ended && ended.access.is_none() && ended.refresh.is_none(),
        "{name}"
    );
}

/// A fresh PostgreSQL database, for checks that count or delete across a whole table and so must not share
/// it; returns the store, the server's URL and the database's name (for [`drop_database`]).
async fn fresh_postgres() -> (Store, String, String) {
    let base_url = crate::common::postgres_url();
    let name = format!("pmcp_store_{}", uuid::Uuid::new_v4().simple());
    let admin = sqlx::PgPool::connect(&base_url).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&admin)
        .await
        .unwrap();
    admin.close().await;
    let mut url = url::Url::parse(&base_url).unwrap();
    url.set_path(&format!("/{name}"));
    (Store::connect(url.as_str()).await.unwrap(), base_url, name)
}

async fn drop_database(base_url: &str, name: &str) {
    let admin = sqlx::PgPool::connect(base_url).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&admin)
    .await
    .unwrap();
}

mod unused_registrations_are_counted_dropped_oldest_first_and_purged_after_a_day {
    #[tokio::test]
    async fn on_sqlite() {
        let (store, _url, _dir) = super::sqlite().await;
        super::check_unused_registrations(&store, "sqlite").await;
    }

    #[tokio::test]
    #[ignore = "needs PostgreSQL: set POLYTOMIC_MCP_TEST_POSTGRES_URL and run `cargo test -- --ignored` (.ci/run does)"]
    async fn on_postgres() {
        let (store, base_url, name) = super::fresh_postgres().await;
        super::check_unused_registrations(&store, "postgres").await;
        store.close().await;
        super::drop_database(&base_url, &name).await;
    }
}

async fn check_unused_registrations(store: &Store, name: &str) {
    use polytomic_mcp::store::oauth::{ClientKind, ClientRow, SessionRow};
    let now = chrono::Utc::now().timestamp_millis();
    let hour = 60 * 60 * 1000;
    let client = |id: &str, age_ms: i64| ClientRow {
        client_id: id.to_owned(),
        kind: ClientKind::Registered,
        metadata: "{}".to_owned(),
        secret_hash: None,
        registration_token_hash: None,
        created_at_ms: now - age_ms,
        expires_at_ms: None,
    };
    // Oldest first: a used client (it has a session), then four unused ones.
    for (id, age) in [
        ("used", 30 * hour),
        ("a", 26 * hour),
        ("b", 3 * hour),
        ("c", 2 * hour),
        ("d", hour),
    ] {
        store.insert_client(&client(id, age)).await.unwrap();
    }
    store
        .insert_session(&SessionRow {
            id: "s-1".into(),
            client_id: "used".into(),
            user_id: "u-1".into(),
            organization_id: None,
            scope: None,
            upstream_access: None,
            upstream_refresh: None,
            upstream_expires_at_ms: None,
            created_at_ms: now,
            expires_at_ms: now + 1_000 * hour,
            revoked_at_ms: None,
        })
        .await
        .unwrap();
    assert_eq!(store.count_unused_clients().await.unwrap(), 4, "{name}");
    assert_eq!(
        store.delete_oldest_unused_clients(2).await.unwrap(),
        2,
        "{name}"
    );
    let left = |id: &'static str| async move { store.get_client(id).await.unwrap().is_some() };
    assert!(
        left("used").await && !left("a").await && !left("b").await,
        "{name}"
    );
    assert!(left("c").await && left("d").await, "{name}");
    // A day after registering, the unused ones are purged (c and d are 2 h and 1 h old); the used one stays.
    store.purge_oauth(now + 21 * hour).await.unwrap();
    assert_eq!(store.count_unused_clients().await.unwrap(), 2, "{name}");
    store.purge_oauth(now + 24 * hour).await.unwrap();
    assert_eq!(store.count_unused_clients().await.unwrap(), 0, "{name}");
    assert!(left("used").await, "{name}");
}
