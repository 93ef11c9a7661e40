//! Feedback: durable before the answer (even across kill -9), concurrent, rate-limited, enriched with the
//! caller's recent calls, delivered to a webhook with retries and dead letters, and readable from the CLI.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common;

use std::process::{Child, Command};
use std::sync::{Arc, Mutex};

use common::{MockUpstream, TestApp, call, text_of};
use polytomic_mcp::store::Store;
use serde_json::{Value, json};

const KEY: &str = "pk_test_feedback_0123456789";
const BIN: &str = env!("CARGO_BIN_EXE_polytomic-mcp");

fn start(database_url: &str, upstream: &str) -> (Child, String) {
    common::start_binary(&[
        ("POLYTOMIC_MCP_DATABASE_URL", database_url),
        ("POLYTOMIC_BASE_URL", upstream),
        ("RUST_LOG", "info"),
    ])
}

async fn mcp_client(
    address: &str,
) -> rmcp::service::RunningService<rmcp::RoleClient, rmcp::model::ClientConfig> {
    use rmcp::ServiceExt;
    use rmcp::transport::StreamableHttpClientTransport;
    use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
    let config = StreamableHttpClientTransportConfig::with_uri(format!("http://{address}/mcp"))
        .auth_header(KEY);
    let transport = StreamableHttpClientTransport::with_client(reqwest::Client::new(), config);
    rmcp::model::ClientConfig::default()
        .serve(transport)
        .await
        .unwrap()
}

#[tokio::test]
async fn fifty_concurrent_submissions_acknowledged_before_kill_9_are_all_there_after_restart() {
    let upstream = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let database_url = format!("sqlite://{}/durable.db", dir.path().display());
    let (mut child, address) = start(&database_url, &upstream.url());

    let mut tasks = Vec::new();
    for n in 0..50 {
        let address = address.clone();
        tasks.push(tokio::spawn(async move {
            let client = mcp_client(&address).await;
            let result = call(
                &client,
                "submit_mcp_feedback",
                json!({"category": "friction", "summary": format!("concurrent report {n}"), "severity": "low"}),
            )
            .await;
            assert_ne!(result.is_error, Some(true), "{}", text_of(&result));
            result.structured_content.unwrap()["id"].as_str().unwrap().to_owned()
        }));
    }
    let mut ids = Vec::new();
    for task in tasks {
        ids.push(task.await.unwrap());
    }
    // Every answer is in: kill the process without any chance to flush.
    child.kill().unwrap();
    child.wait().unwrap();

    let (mut restarted, _) = start(&database_url, &upstream.url());
    let store = Store::connect(&database_url).await.unwrap();
    for id in &ids {
        let record = store.get_feedback(id).await.unwrap();
        assert!(
            record.is_some(),
            "{id} was acknowledged but is missing after kill -9"
        );
    }
    assert_eq!(
        store
            .list_feedback(None, Some("friction"), 1000)
            .await
            .unwrap()
            .len(),
        50
    );
    restarted.kill().unwrap();
    restarted.wait().unwrap();
}

#[tokio::test]
async fn feedback_carries_the_callers_recent_calls_and_client() {
    let app = TestApp::spawn().await;
    let client = app.client(KEY, &[]).await;
    call(
        &client,
        "execute",
        json!({"method": "GET", "path": "/api/syncs/missing"}),
    )
    .await;
    call(&client, "search", json!({"query": "list syncs"})).await;
    let result = call(
        &client,
        "submit_mcp_feedback",
        json!({"category": "bug", "summary": "404 for a sync I can see"}),
    )
    .await;
    let structured = result.structured_content.unwrap();
    assert_eq!(structured["attached_calls"], 2);
    let store = Store::connect(&app.database_url).await.unwrap();
    let record = store
        .get_feedback(structured["id"].as_str().unwrap())
        .await
        .unwrap()
        .unwrap();
    let calls: Vec<Value> = serde_json::from_str(record.recent_calls.as_deref().unwrap()).unwrap();
    assert_eq!(calls[0]["tool"], "execute");
    assert_eq!(calls[0]["operation"], "GET /api/syncs/{id}");
    assert_eq!(calls[0]["status"], 404);
    assert_eq!(calls[0]["error_key"], "not_found");
    assert_eq!(calls[1]["tool"], "search");
    assert_eq!(
        record.client_name.as_deref(),
        Some("polytomic-test-client"),
        "named from the User-Agent"
    );
    assert_eq!(record.client_version.as_deref(), Some("1.0"));
}

#[tokio::test]
async fn feedback_is_rate_limited_per_principal() {
    let app = TestApp::spawn_with(&["--feedback-per-hour", "2"]).await;
    let client = app.client(KEY, &[]).await;
    for n in 0..2 {
        let ok = call(
            &client,
            "submit_mcp_feedback",
            json!({"category": "other", "summary": format!("note {n}")}),
        )
        .await;
        assert_ne!(ok.is_error, Some(true));
    }
    let refused = call(
        &client,
        "submit_mcp_feedback",
        json!({"category": "other", "summary": "one too many"}),
    )
    .await;
    assert_eq!(refused.is_error, Some(true));
    assert!(
        text_of(&refused).contains("limit 2"),
        "{}",
        text_of(&refused)
    );
    // Another credential is not affected.
    let other = app.client("pk_other_key_987654321", &[]).await;
    let ok = call(
        &other,
        "submit_mcp_feedback",
        json!({"category": "other", "summary": "mine"}),
    )
    .await;
    assert_ne!(ok.is_error, Some(true));
}

#[tokio::test]
async fn every_bad_input_is_refused_and_nothing_is_stored() {
    let app = TestApp::spawn().await;
    let client = app.client(KEY, &[]).await;
    let cases = [
        (json!({"summary": "no category"}), "category"),
        (json!({"category": "bug"}), "summary"),
        (json!({"category": "bug", "summary": "   "}), "empty"),
        (
            json!({"category": "complaint", "summary": "x"}),
            "bug, missing_capability",
        ),
        (
            json!({"category": "bug", "summary": "x".repeat(501)}),
            "limit is 500",
        ),
        (
            json!({"category": "bug", "summary": "x", "details": "y".repeat(16 * 1024 + 1)}),
            "details",
        ),
        (
            json!({"category": "bug", "summary": "x", "severity": "urgent"}),
            "low, medium, high, critical",
        ),
        (
            json!({"category": "bug", "summary": "x", "tool": "delete_everything"}),
            "search, execute",
        ),
        (
            json!({"category": "bug", "summary": "x", "mood": "sad"}),
            "unknown field",
        ),
        (json!({"category": 7, "summary": "x"}), "invalid type"),
    ];
    for (args, expected) in cases {
        let result = call(&client, "submit_mcp_feedback", args.clone()).await;
        assert_eq!(result.is_error, Some(true), "{args}");
        assert!(
            text_of(&result).contains(expected),
            "{args}: {}",
            text_of(&result)
        );
    }
    let store = Store::connect(&app.database_url).await.unwrap();
    assert!(
        store
            .list_feedback(None, None, 100)
            .await
            .unwrap()
            .is_empty()
    );
}

/// A webhook receiver that fails the first `failures` posts with 500, then accepts.
async fn webhook(failures: usize) -> (String, Arc<Mutex<Vec<Value>>>, Arc<Mutex<usize>>) {
    let received = Arc::new(Mutex::new(Vec::new()));
    let attempts = Arc::new(Mutex::new(0usize));
    let (r, a) = (received.clone(), attempts.clone());
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |axum::Json(body): axum::Json<Value>| {
            let (r, a) = (r.clone(), a.clone());
            async move {
                let n = {
                    let mut a = a.lock().unwrap();
                    *a += 1;
                    *a
                };
                if n <= failures {
                    return axum::http::StatusCode::INTERNAL_SERVER_ERROR;
                }
                r.lock().unwrap().push(body);
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, received, attempts)
}

#[tokio::test]
async fn the_webhook_gets_each_record_after_retries() {
    let (url, received, attempts) = webhook(2).await;
    let app = TestApp::spawn_with(&[
        "--feedback-webhook-url",
        &url,
        "--feedback-webhook-retry-ms",
        "20",
    ])
    .await;
    let client = app.client(KEY, &[]).await;
    let result = call(
        &client,
        "submit_mcp_feedback",
        json!({"category": "docs", "summary": "pagination unclear"}),
    )
    .await;
    let id = result.structured_content.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Wait for the state, not a time: the worker marks the delivery done after the webhook has answered.
    let store = Store::connect(&app.database_url).await.unwrap();
    common::wait_until("the delivery to complete", || async {
        (!received.lock().unwrap().is_empty() && store.pending_deliveries().await.unwrap() == 0)
            .then_some(())
    })
    .await;
    let got = received.lock().unwrap().clone();
    assert_eq!(got.len(), 1, "delivered once");
    assert_eq!(got[0]["id"], id.as_str());
    assert_eq!(got[0]["summary"], "pagination unclear");
    assert_eq!(got[0]["type"], "polytomic_mcp.feedback");
    assert_eq!(*attempts.lock().unwrap(), 3);
    assert!(store.dead_letters().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_webhook_that_keeps_failing_leaves_the_record_in_the_dead_letters() {
    let (url, received, attempts) = webhook(usize::MAX).await;
    let app = TestApp::spawn_with(&[
        "--feedback-webhook-url",
        &url,
        "--feedback-webhook-retry-ms",
        "10",
        "--feedback-webhook-max-attempts",
        "3",
    ])
    .await;
    let client = app.client(KEY, &[]).await;
    let result = call(
        &client,
        "submit_mcp_feedback",
        json!({"category": "bug", "summary": "webhook down"}),
    )
    .await;
    let id = result.structured_content.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let store = Store::connect(&app.database_url).await.unwrap();
    let dead = common::wait_until("a dead letter", || async {
        let dead = store.dead_letters().await.unwrap();
        (!dead.is_empty()).then_some(dead)
    })
    .await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].feedback_id, id);
    assert_eq!(dead[0].attempts, 3);
    assert_eq!(dead[0].last_error.as_deref(), Some("HTTP 500"));
    assert_eq!(*attempts.lock().unwrap(), 3);
    assert!(received.lock().unwrap().is_empty());
    // The record itself is kept.
    assert!(store.get_feedback(&id).await.unwrap().is_some());
    assert_eq!(store.pending_deliveries().await.unwrap(), 0);
}

fn cli(database_url: &str, args: &[&str]) -> (bool, String, String) {
    let output = Command::new(BIN)
        .env("POLYTOMIC_MCP_DATABASE_URL", database_url)
        .args(args)
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

#[tokio::test]
async fn operators_list_show_and_export_feedback_from_the_cli() {
    let app = TestApp::spawn().await;
    let client = app.client(KEY, &[]).await;
    let mut ids = Vec::new();
    for (category, summary) in [
        ("bug", "first, with a comma"),
        ("docs", "second \"quoted\""),
        ("bug", "=SUM(A1)"),
    ] {
        let result = call(
            &client,
            "submit_mcp_feedback",
            json!({"category": category, "summary": summary}),
        )
        .await;
        ids.push(
            result.structured_content.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let db = app.database_url.clone();

    let (ok, json_out, _) = cli(&db, &["feedback", "list", "--format", "json"]);
    assert!(ok);
    let records: Vec<Value> = serde_json::from_str(&json_out).unwrap();
    assert_eq!(records.len(), 3);
    assert_eq!(records[0]["id"], ids[2].as_str(), "newest first");
    assert!(records[0]["created_at"].as_str().unwrap().ends_with('Z'));

    let (ok, csv_out, _) = cli(
        &db,
        &["feedback", "list", "--format", "csv", "--category", "bug"],
    );
    assert!(ok);
    let lines: Vec<&str> = csv_out.lines().collect();
    assert!(lines[0].starts_with("id,created_at,category,severity,summary"));
    assert_eq!(lines.len(), 3, "{csv_out}");
    assert!(csv_out.contains("\"first, with a comma\"") && csv_out.contains("'=SUM(A1)"));

    let (ok, table, _) = cli(&db, &["feedback", "list", "--since", "1h"]);
    assert!(ok);
    assert!(table.starts_with("ID") && table.contains("3 record(s)") && table.contains(&ids[0]));

    let (ok, shown, _) = cli(&db, &["feedback", "show", &ids[1]]);
    assert!(ok);
    let record: Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(record["summary"], "second \"quoted\"");
    assert!(record["principal"].as_str().unwrap().starts_with("key_"));
    assert!(!shown.contains(KEY));

    let (ok, _, err) = cli(&db, &["feedback", "show", "fb_nope"]);
    assert!(!ok && err.contains("feedback list"));
    let (ok, _, err) = cli(&db, &["feedback", "list", "--since", "last tuesday"]);
    assert!(!ok && err.contains("24h"), "{err}");
    let (ok, _, err) = cli(&db, &["feedback", "list", "--category", "rants"]);
    assert!(!ok && err.contains("missing_capability"), "{err}");
    let (ok, _, err) = cli(&db, &["feedback", "list", "--format", "xml"]);
    assert!(!ok && err.contains("table, json, csv"), "{err}");
}

/// The headers and raw body of one webhook delivery.
type Delivery = (axum::http::HeaderMap, Vec<u8>);

#[tokio::test]
async fn webhook_deliveries_are_signed_when_a_secret_is_set() {
    let captured: Arc<Mutex<Option<Delivery>>> = Arc::new(Mutex::new(None));
    let sink = captured.clone();
    let receiver = axum::Router::new().route(
        "/hook",
        axum::routing::post(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let sink = sink.clone();
                async move {
                    *sink.lock().unwrap() = Some((headers, body.to_vec()));
                    axum::http::StatusCode::OK
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, receiver).await.unwrap() });

    let secret = "whsec-test-0123456789";
    let app = TestApp::spawn_with(&[
        "--feedback-webhook-url",
        &url,
        "--feedback-webhook-secret",
        secret,
    ])
    .await;
    let client = app.client(KEY, &[]).await;
    call(
        &client,
        "submit_mcp_feedback",
        json!({"category": "docs", "summary": "signed please"}),
    )
    .await;
    let (headers, body) = common::wait_until("the signed delivery", || async {
        captured.lock().unwrap().clone()
    })
    .await;
    let timestamp: i64 = headers["x-polytomic-mcp-timestamp"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let signature = headers["x-polytomic-mcp-signature"].to_str().unwrap();
    // Checked as a receiver would, from the documented format, not with the server's own function.
    let signed = [timestamp.to_string().as_bytes(), b".", body.as_ref()].concat();
    assert_eq!(
        signature,
        format!("sha256={}", hmac_sha256_hex(secret.as_bytes(), &signed))
    );
    assert_ne!(
        signature,
        format!("sha256={}", hmac_sha256_hex(b"another-secret", &signed))
    );
    assert!((chrono::Utc::now().timestamp() - timestamp).abs() < 60);
}

/// HMAC-SHA256 (RFC 2104) written out over SHA-256, independent of the server's implementation.
pub fn hmac_sha256_hex(key: &[u8], message: &[u8]) -> String {
    hmac_sha256_bytes(key, message)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub fn hmac_sha256_bytes(key: &[u8], message: &[u8]) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.iter().map(|b| b ^ byte).collect::<Vec<u8>>();
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .to_vec()
}

#[test]
fn the_test_hmac_agrees_with_rfc_4231() {
    // RFC 4231 test case 2.
    assert_eq!(
        hmac_sha256_hex(b"Jefe", b"what do ya want for nothing?"),
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
}
