//! The store's behaviour on both backends: SQLite always, PostgreSQL when
//! `POLYTOMIC_MCP_TEST_POSTGRES_URL` is set (`.ci/run` sets it to the local server).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use polytomic_mcp::store::{FeedbackRecord, Store};

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

async fn backends() -> Vec<(String, Store, Option<tempfile::TempDir>)> {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = Store::connect(&format!("sqlite://{}/store.db", dir.path().display()))
        .await
        .unwrap();
    let mut out = vec![("sqlite".to_owned(), sqlite, Some(dir))];
    match std::env::var("POLYTOMIC_MCP_TEST_POSTGRES_URL") {
        Ok(url) => out.push((
            "postgres".to_owned(),
            Store::connect(&url).await.unwrap(),
            None,
        )),
        Err(_) => {
            eprintln!("POLYTOMIC_MCP_TEST_POSTGRES_URL not set: PostgreSQL store tests skipped")
        }
    }
    out
}

#[tokio::test]
async fn feedback_round_trips_and_lists_newest_first_on_every_backend() {
    for (name, store, _dir) in backends().await {
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
}

#[tokio::test]
async fn migrations_are_idempotent_across_reconnects() {
    for (name, store, dir) in backends().await {
        let url = match &dir {
            Some(dir) => format!("sqlite://{}/store.db", dir.path().display()),
            None => std::env::var("POLYTOMIC_MCP_TEST_POSTGRES_URL").unwrap(),
        };
        store.close().await;
        // Two concurrent connects race on the migration lock; both must succeed.
        let (first, second) = tokio::join!(Store::connect(&url), Store::connect(&url));
        assert!(first.is_ok() && second.is_ok(), "{name}");
    }
}

#[tokio::test]
async fn a_bad_database_url_names_the_variable() {
    let error = Store::connect("mysql://localhost/db").await.unwrap_err();
    assert!(
        error.to_string().contains("POLYTOMIC_MCP_DATABASE_URL"),
        "{error}"
    );
}

#[tokio::test]
async fn oauth_purge_statements_run_on_every_backend() {
    for (name, store, _dir) in backends().await {
        store
            .purge_oauth(chrono::Utc::now().timestamp_millis())
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        store
            .purge_rate_limits(0)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}
