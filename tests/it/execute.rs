//! `execute` as a safe proxy: retries, timeouts, size caps, projections, schema checks, and the refusals
//! that prove nothing reached Polytomic.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common;

use std::time::{Duration, Instant};

use common::{TestApp, call, text_of};
use serde_json::json;

const KEY: &str = "pk_test_execute_0123456789";

#[tokio::test]
async fn idempotent_calls_are_retried_on_503_and_succeed() {
    let app = TestApp::spawn().await;
    let client = app.client(KEY, &[]).await;
    let result = call(
        &client,
        "execute",
        json!({"method": "GET", "path": "/api/bulk/syncs/flaky"}),
    )
    .await;
    assert_ne!(result.is_error, Some(true), "{}", text_of(&result));
    assert_eq!(
        result.structured_content.unwrap()["body"]["data"]["attempt"],
        3
    );
    assert_eq!(app.upstream.requests().len(), 3);
}

#[tokio::test]
async fn a_retried_post_reuses_its_idempotency_key() {
    let app = TestApp::spawn().await;
    let client = app.client(KEY, &[]).await;
    let result = call(
        &client,
        "execute",
        json!({"method": "POST", "path": "/api/bulk/syncs/b-1/executions", "body": {}}),
    )
    .await;
    assert_ne!(result.is_error, Some(true), "{}", text_of(&result));
    assert_eq!(result.structured_content.unwrap()["status"], 201);
    let seen = app.upstream.requests();
    assert_eq!(seen.len(), 2, "one retry after the 502");
    let keys: Vec<&str> = seen
        .iter()
        .map(|r| r.headers["idempotency-key"].to_str().unwrap())
        .collect();
    assert_eq!(
        keys[0], keys[1],
        "the same key on both attempts, so Polytomic runs it once"
    );
}

#[tokio::test]
async fn a_long_retry_after_is_handed_to_the_agent_with_rate_limit_headers() {
    let app = TestApp::spawn().await;
    let client = app.client(KEY, &[]).await;
    let started = Instant::now();
    let result = call(
        &client,
        "execute",
        json!({"method": "GET", "path": "/api/models"}),
    )
    .await;
    // One upstream request (asserted below) and an answer well inside the 30 s Retry-After: the server did not
    // sit out the wait. The bound is generous so a loaded machine cannot trip it.
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "no 30 s wait inside the server"
    );
    assert_eq!(result.is_error, Some(true));
    let structured = result.structured_content.clone().unwrap();
    assert_eq!(structured["status"], 429);
    assert_eq!(structured["rate_limit"]["retry-after"], "30");
    assert_eq!(structured["rate_limit"]["x-ratelimit-remaining"], "0");
    assert!(text_of(&result).contains("slow down") && text_of(&result).contains("Wait"));
    assert_eq!(app.upstream.requests().len(), 1);
}

#[tokio::test]
async fn a_stalled_upstream_ends_in_a_clear_error_before_the_client_gives_up() {
    let app = TestApp::spawn_with(&["--upstream-timeout-ms", "800"]).await;
    let client = app.client(KEY, &[]).await;
    let started = Instant::now();
    let result = call(
        &client,
        "execute",
        json!({"method": "GET", "path": "/api/connections/slow"}),
    )
    .await;
    // The message proves the server's own timeout fired (the mock stalls for longer than this whole test's
    // bound); the bound only catches a server that waited for the stall to end.
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(20), "took {elapsed:?}");
    assert_eq!(result.is_error, Some(true));
    let text = text_of(&result);
    assert!(
        text.contains("did not answer within") && text.contains("Retry once"),
        "{text}"
    );
}

#[tokio::test]
async fn a_5_mb_answer_comes_back_bounded_valid_and_says_how_to_get_the_rest() {
    let app = TestApp::spawn().await;
    let client = app.client(KEY, &[]).await;
    let result = call(
        &client,
        "execute",
        json!({"method": "GET", "path": "/api/bulk/syncs"}),
    )
    .await;
    assert_ne!(result.is_error, Some(true));
    let structured = result.structured_content.clone().unwrap();
    let size = serde_json::to_string(&structured["body"]).unwrap().len();
    assert!(size <= 30_000, "body is {size} characters");
    let kept = structured["body"]["data"].as_array().unwrap().len();
    let note = &structured["truncated"];
    assert_eq!(note["total"], 20_000);
    assert_eq!(note["kept"].as_u64().unwrap() as usize, kept);
    assert!(kept > 50);
    assert!(note["hint"].as_str().unwrap().contains("Narrow"));
    // Claude Code caps a tool result near 25k tokens; text and structured content together stay near 60 KB.
    let whole = serde_json::to_string(&result).unwrap().len();
    assert!(whole < 64_000, "result is {whole} bytes");

    let projected = call(
        &client,
        "execute",
        json!({"method": "GET", "path": "/api/bulk/syncs", "fields": ["data.id"]}),
    )
    .await;
    let structured = projected.structured_content.unwrap();
    let first = &structured["body"]["data"][0];
    assert_eq!(first, &json!({"id": "bulk-00000"}));
    assert!(
        structured["body"]["data"].as_array().unwrap().len() > kept,
        "a projection fits more items"
    );
}

#[tokio::test]
async fn bodies_are_checked_against_the_schema_before_sending() {
    let app = TestApp::spawn().await;
    let client = app.client(KEY, &[]).await;
    let result = call(
        &client,
        "execute",
        json!({"method": "POST", "path": "/api/syncs", "body": {
            "name": 42, "mode": "sideways", "fields": "all", "schedule": {}, "target": {}
        }}),
    )
    .await;
    assert_eq!(result.is_error, Some(true));
    let text = text_of(&result);
    assert!(
        text.contains("POST /api/syncs") && text.contains("nothing was sent"),
        "{text}"
    );
    assert!(
        text.contains("body.name") && text.contains("body.mode") && text.contains("body.fields"),
        "{text}"
    );
    let missing = call(
        &client,
        "execute",
        json!({"method": "POST", "path": "/api/syncs", "body": {"name": "x"}}),
    )
    .await;
    assert!(
        text_of(&missing).contains("missing required field(s): fields, mode, schedule, target"),
        "{}",
        text_of(&missing)
    );
    let no_body = call(
        &client,
        "execute",
        json!({"method": "GET", "path": "/api/me", "body": {"x": 1}}),
    )
    .await;
    assert!(text_of(&no_body).contains("takes no request body"));
    let bad_fields = call(
        &client,
        "execute",
        json!({"method": "GET", "path": "/api/me", "fields": ["a..b"]}),
    )
    .await;
    assert!(text_of(&bad_fields).contains("dotted field path"));
    assert!(app.upstream.requests().is_empty());
}

#[tokio::test]
async fn unprocessable_entity_names_the_field() {
    let app = TestApp::spawn().await;
    let client = app.client(KEY, &[]).await;
    let body = json!({"name": "x", "connection_id": "c-1", "configuration": {"query": "select"}});
    let result = call(
        &client,
        "execute",
        json!({"method": "PUT", "path": "/api/models/m-1", "body": body}),
    )
    .await;
    let text = text_of(&result);
    assert_eq!(result.is_error, Some(true));
    assert!(
        text.contains("422") && text.contains("invalid model") && text.contains("query"),
        "{text}"
    );
}

#[tokio::test]
async fn read_only_sessions_offer_only_read_methods_in_the_schema() {
    let app = TestApp::spawn().await;
    let client = app
        .client(KEY, &[("x-polytomic-access-mode", "read-only")])
        .await;
    let tools = client.list_all_tools().await.unwrap();
    let execute = tools.iter().find(|t| t.name == "execute").unwrap();
    let methods = execute.input_schema["properties"]["method"]["enum"].clone();
    assert_eq!(methods, json!(["GET", "HEAD"]));
}

#[tokio::test]
async fn head_is_allowed_in_read_only_and_maps_to_the_get_operation() {
    let app = TestApp::spawn().await;
    let client = app
        .client(KEY, &[("x-polytomic-access-mode", "read-only")])
        .await;
    let result = call(
        &client,
        "execute",
        json!({"method": "HEAD", "path": "/api/me"}),
    )
    .await;
    assert_ne!(result.is_error, Some(true), "{}", text_of(&result));
    assert_eq!(app.upstream.requests()[0].method, "HEAD");
}

#[tokio::test]
async fn an_unreachable_upstream_is_a_clear_tool_error_and_the_server_stays_up() {
    // A port nothing listens on: bind, note the port, drop the listener.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let base = format!("http://127.0.0.1:{closed}");
    let app = TestApp::spawn_with(&["--base-url", &base, "--upstream-timeout-ms", "3000"]).await;
    let client = app.client(KEY, &[]).await;
    let started = Instant::now();
    let result = call(
        &client,
        "execute",
        json!({"method": "GET", "path": "/api/me"}),
    )
    .await;
    assert_eq!(result.is_error, Some(true));
    let text = text_of(&result);
    assert!(
        text.contains("could not reach the Polytomic API") && text.contains("Retry"),
        "{text}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "bounded by the timeout: {:?}",
        started.elapsed()
    );
    let ready = reqwest::get(format!("http://{}/readyz", app.addr))
        .await
        .unwrap();
    assert_eq!(
        ready.status(),
        200,
        "an upstream outage does not make the server unready"
    );
}

#[tokio::test]
async fn upstream_connections_are_reused_across_calls() {
    let app = TestApp::spawn().await;
    let client = app.client(KEY, &[]).await;
    for _ in 0..20 {
        let result = call(
            &client,
            "execute",
            json!({"method": "GET", "path": "/api/me"}),
        )
        .await;
        assert_ne!(result.is_error, Some(true), "{}", text_of(&result));
    }
    // Eight calls at once need at most eight connections, and the idle ones are kept for the next burst.
    let burst = || {
        futures_util::future::join_all((0..8).map(|_| {
            call(
                &client,
                "execute",
                json!({"method": "GET", "path": "/api/me"}),
            )
        }))
    };
    burst().await;
    let after_first_burst = peers(&app.upstream.requests());
    burst().await;
    let requests = app.upstream.requests();
    assert_eq!(requests.len(), 36);
    let sequential: std::collections::HashSet<_> =
        requests[..20].iter().map(|r| r.peer.unwrap()).collect();
    assert_eq!(
        sequential.len(),
        1,
        "20 calls one after another used one connection: {sequential:?}"
    );
    // Without reuse the second burst would open up to eight more.
    let all = peers(&requests);
    assert!(
        all.len() <= 8 && all.is_superset(&after_first_burst),
        "two bursts of 8 used {} connections (first burst: {})",
        all.len(),
        after_first_burst.len()
    );
}

fn peers(requests: &[common::Recorded]) -> std::collections::BTreeSet<std::net::SocketAddr> {
    requests.iter().map(|r| r.peer.unwrap()).collect()
}

#[tokio::test]
async fn upstream_redirects_are_not_followed_so_the_key_goes_nowhere_else() {
    let app = TestApp::spawn().await;
    let client = app.client(KEY, &[]).await;
    let result = call(
        &client,
        "execute",
        json!({"method": "GET", "path": "/api/models/m1/sample"}),
    )
    .await;
    assert_eq!(result.structured_content.as_ref().unwrap()["status"], 302);
    let paths: Vec<String> = app
        .upstream
        .requests()
        .iter()
        .map(|r| r.path.clone())
        .collect();
    assert!(
        paths.contains(&"/api/models/m1/sample".to_owned()),
        "{paths:?}"
    );
    assert!(
        !paths.iter().any(|p| p == "/api/redirected-here"),
        "followed: {paths:?}"
    );
}

#[tokio::test]
async fn an_upstream_answer_over_the_size_cap_is_refused_with_advice() {
    let app = TestApp::spawn_with(&["--max-upstream-response-bytes", "16384"]).await;
    let client = app.client(KEY, &[]).await;
    let result = call(
        &client,
        "execute",
        json!({"method": "GET", "path": "/api/events_types"}),
    )
    .await;
    assert_eq!(result.is_error, Some(true));
    let text = text_of(&result);
    assert!(
        text.contains("too large") && text.contains("Narrow the call"),
        "{text}"
    );
    // Under the cap the same call answers.
    let roomy = TestApp::spawn().await;
    let client = roomy.client(KEY, &[]).await;
    let result = call(
        &client,
        "execute",
        json!({"method": "GET", "path": "/api/events_types"}),
    )
    .await;
    assert_ne!(result.is_error, Some(true), "{}", text_of(&result));
}

#[tokio::test]
async fn a_path_known_under_other_methods_names_them_and_an_unknown_path_says_so() {
    let app = TestApp::spawn().await;
    let client = app.client(KEY, &[]).await;
    let wrong_method = call(
        &client,
        "execute",
        json!({"method": "DELETE", "path": "/api/syncs"}),
    )
    .await;
    assert_eq!(wrong_method.is_error, Some(true));
    assert!(
        text_of(&wrong_method)
            .contains("/api/syncs does not support DELETE; it supports GET, POST"),
        "{}",
        text_of(&wrong_method)
    );
    let unknown = call(
        &client,
        "execute",
        json!({"method": "GET", "path": "/api/no-such-thing"}),
    )
    .await;
    assert_eq!(unknown.is_error, Some(true));
    assert!(
        text_of(&unknown).contains("no Polytomic operation matches /api/no-such-thing"),
        "{}",
        text_of(&unknown)
    );
    assert!(app.upstream.requests().is_empty(), "nothing was sent");
}

#[tokio::test]
async fn a_missing_required_query_parameter_is_named_before_anything_is_sent() {
    let app = TestApp::spawn().await;
    let client = app.client(KEY, &[]).await;
    let path = "/api/connections/c-1/modelsync/target/fields";
    let missing = call(&client, "execute", json!({"method": "GET", "path": path})).await;
    assert_eq!(missing.is_error, Some(true));
    assert!(
        text_of(&missing).contains("requires the query parameter \"target\""),
        "{}",
        text_of(&missing)
    );
    assert!(app.upstream.requests().is_empty(), "nothing was sent");
    // With it, the call goes out carrying it.
    let given = call(
        &client,
        "execute",
        json!({"method": "GET", "path": path, "query": {"target": "orders"}}),
    )
    .await;
    assert_ne!(given.is_error, Some(true), "{}", text_of(&given));
    let sent = app.upstream.requests();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].query.as_deref(), Some("target=orders"));
}
