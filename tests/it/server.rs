//! End-to-end behaviour of the real server over real sockets, driven by rmcp's client and raw HTTP.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common;

use common::{ORG_ID, TestApp, call, initialize_body, text_of};
use serde_json::{Value, json};

const KEY: &str = "pk_test_0123456789abcdef";

// ---------------------------------------------------------------- authentication and headers

#[tokio::test]
async fn requests_without_a_token_get_401_before_method_routing() {
    let app = TestApp::spawn().await;
    let http = reqwest::Client::new();
    for method in [
        reqwest::Method::POST,
        reqwest::Method::GET,
        reqwest::Method::DELETE,
        reqwest::Method::PUT,
    ] {
        let response = http
            .request(method.clone(), app.mcp_url())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "{method}");
        let challenge = response.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(challenge.starts_with("Bearer "), "{challenge}");
        let body: Value = response.json().await.unwrap();
        assert!(body["message"].as_str().unwrap().contains("Authorization"));
    }
    let response = app
        .post_mcp(
            &[("authorization", "Basic abc")],
            initialize_body("2025-11-25"),
        )
        .await;
    assert_eq!(response.status(), 401);
    assert!(app.upstream.requests().is_empty());
}

#[tokio::test]
async fn bad_polytomic_header_values_get_400_naming_header_and_allowed_values() {
    let app = TestApp::spawn().await;
    let auth = format!("Bearer {KEY}");
    let cases: [(&str, &str, &str); 4] = [
        (
            "x-polytomic-access-mode",
            "readonly",
            "read-only, full-access",
        ),
        ("x-polytomic-auth-mode", "admin", "user, partner"),
        ("x-polytomic-partner-org-id", ORG_ID, "partner mode"),
        ("x-polytomic-access-mode", "", "ok"),
    ];
    for (header, value, expected) in cases {
        let response = app
            .post_mcp(
                &[("authorization", auth.as_str()), (header, value)],
                initialize_body("2025-11-25"),
            )
            .await;
        if expected == "ok" {
            assert_eq!(response.status(), 200, "empty header value means default");
            continue;
        }
        assert_eq!(response.status(), 400, "{header}: {value}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["header"], header);
        let message = body["message"].as_str().unwrap();
        assert!(message.contains(expected), "{message}");
    }
    // A partner org id must be a UUID.
    let response = app
        .post_mcp(
            &[
                ("authorization", auth.as_str()),
                ("x-polytomic-auth-mode", "partner"),
                ("x-polytomic-partner-org-id", "acme"),
            ],
            initialize_body("2025-11-25"),
        )
        .await;
    assert_eq!(response.status(), 400);
}

#[tokio::test]
async fn foreign_origin_and_host_get_403_and_local_origin_passes() {
    let app = TestApp::spawn().await;
    let auth = format!("Bearer {KEY}");
    let response = app
        .post_mcp(
            &[
                ("authorization", auth.as_str()),
                ("origin", "https://evil.example"),
            ],
            initialize_body("2025-11-25"),
        )
        .await;
    assert_eq!(response.status(), 403);
    let body: Value = response.json().await.unwrap();
    assert!(body["message"].as_str().unwrap().contains("evil.example"));

    let response = app
        .post_mcp(
            &[
                ("authorization", auth.as_str()),
                ("host", "attacker.example:80"),
            ],
            initialize_body("2025-11-25"),
        )
        .await;
    assert_eq!(response.status(), 403);

    let local = format!("http://localhost:{}", app.addr.port());
    let response = app
        .post_mcp(
            &[("authorization", auth.as_str()), ("origin", local.as_str())],
            initialize_body("2025-11-25"),
        )
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["access-control-allow-origin"],
        local.as_str()
    );
}

#[tokio::test]
async fn cors_preflight_is_answered_without_a_token() {
    let app = TestApp::spawn().await;
    let origin = format!("http://127.0.0.1:{}", app.addr.port());
    let response = reqwest::Client::new()
        .request(reqwest::Method::OPTIONS, app.mcp_url())
        .header("origin", &origin)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization, content-type, mcp-protocol-version",
        )
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    assert_eq!(
        response.headers()["access-control-allow-origin"],
        origin.as_str()
    );
    let allowed = response.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(allowed.contains("authorization") && allowed.contains("mcp-protocol-version"));
}

#[tokio::test]
async fn both_current_protocol_revisions_are_negotiated() {
    let app = TestApp::spawn().await;
    let auth = format!("Bearer {KEY}");
    for version in ["2025-06-18", "2025-11-25"] {
        let response = app
            .post_mcp(
                &[("authorization", auth.as_str())],
                initialize_body(version),
            )
            .await;
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["result"]["protocolVersion"], version);
        assert_eq!(body["result"]["serverInfo"]["name"], "polytomic-mcp");
        assert!(
            body["result"]["instructions"]
                .as_str()
                .unwrap()
                .contains("search")
        );
    }
}

// ---------------------------------------------------------------- tools over rmcp's client

#[tokio::test]
async fn tools_list_shows_three_tools_with_honest_annotations_in_few_bytes() {
    let app = TestApp::spawn().await;
    let client = app.client(KEY, &[]).await;
    let tools = client.list_all_tools().await.unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    assert_eq!(names, ["search", "execute", "submit_mcp_feedback"]);
    for tool in &tools {
        assert!(
            tool.output_schema.is_some(),
            "{} has an output schema",
            tool.name
        );
        let schema = serde_json::to_string(&tool.input_schema).unwrap();
        assert!(
            !schema.contains(":true") && !schema.contains("uint"),
            "{}: {schema}",
            tool.name
        );
    }
    let execute = tools.iter().find(|t| t.name == "execute").unwrap();
    let annotations = execute.annotations.as_ref().unwrap();
    assert_eq!(annotations.destructive_hint, Some(true));
    assert_eq!(annotations.read_only_hint, Some(false));
    let size = serde_json::to_string(&json!({"tools": tools}))
        .unwrap()
        .len();
    // `max_pages` was allowed ~300 bytes here; the measured sizes are in docs/performance.md.
    assert!(size <= 4_700, "tools/list is {size} bytes");

    let read_only = app
        .client(KEY, &[("x-polytomic-access-mode", "read-only")])
        .await;
    let tools = read_only.list_all_tools().await.unwrap();
    let execute = tools.iter().find(|t| t.name == "execute").unwrap();
    assert_eq!(
        execute.annotations.as_ref().unwrap().read_only_hint,
        Some(true)
    );
}

#[tokio::test]
async fn search_finds_who_am_i_and_returns_a_compact_recipe() {
    let app = TestApp::spawn().await;
    let client = app.client(KEY, &[]).await;
    let result = call(
        &client,
        "search",
        json!({"query": "who am I and which organization am I in"}),
    )
    .await;
    assert_ne!(result.is_error, Some(true));
    let structured = result.structured_content.clone().unwrap();
    let results = structured["results"].as_array().unwrap();
    let top3: Vec<String> = results
        .iter()
        .take(3)
        .map(|r| {
            format!(
                "{} {}",
                r["method"].as_str().unwrap(),
                r["path"].as_str().unwrap()
            )
        })
        .collect();
    assert!(top3.contains(&"GET /api/me".to_owned()), "{top3:?}");
    for item in results {
        assert!(
            item["summary"].is_string()
                && item["key_type"].is_string()
                && item["parameters"].is_array()
        );
    }
    assert!(text_of(&result).contains("GET /api/me"));

    let detail = call(&client, "search", json!({"operation": "GET /api/syncs"})).await;
    let recipe = &detail.structured_content.unwrap()["operation"];
    assert_eq!(recipe["pagination"]["request"][0], "page_token");
    assert_eq!(recipe["example"]["path"], "/api/syncs");

    let empty = call(&client, "search", json!({"query": ""})).await;
    assert_ne!(empty.is_error, Some(true));
    assert!(
        empty.structured_content.unwrap()["groups"]
            .as_array()
            .unwrap()
            .len()
            > 5
    );
}

#[tokio::test]
async fn execute_get_me_sends_the_key_and_version_and_returns_status_and_body() {
    let app = TestApp::spawn().await;
    let client = app.client(KEY, &[]).await;
    let result = call(
        &client,
        "execute",
        json!({"method": "GET", "path": "/api/me"}),
    )
    .await;
    assert_ne!(result.is_error, Some(true), "{}", text_of(&result));
    let structured = result.structured_content.clone().unwrap();
    assert_eq!(structured["status"], 200);
    assert_eq!(structured["body"]["data"]["email"], "ada@example.com");
    assert_eq!(structured["context"]["access_mode"], "full-access");
    assert_eq!(structured["context"]["api_version"], "2025-09-18");

    let seen = app.upstream.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, "/api/me");
    assert_eq!(
        seen[0].headers["authorization"],
        format!("Bearer {KEY}").as_str()
    );
    assert_eq!(seen[0].headers["x-polytomic-version"], "2025-09-18");
}

#[tokio::test]
async fn read_only_session_refuses_delete_and_nothing_reaches_upstream() {
    let app = TestApp::spawn().await;
    let client = app
        .client(KEY, &[("x-polytomic-access-mode", "read-only")])
        .await;
    for method in ["DELETE", "post", "Put", "PATCH"] {
        let result = call(
            &client,
            "execute",
            json!({"method": method, "path": "/api/syncs/abc"}),
        )
        .await;
        assert_eq!(result.is_error, Some(true), "{method}");
        assert!(
            text_of(&result).contains("read-only"),
            "{}",
            text_of(&result)
        );
    }
    assert!(
        app.upstream.requests().is_empty(),
        "nothing may reach Polytomic"
    );
    let ok = call(
        &client,
        "execute",
        json!({"method": "GET", "path": "/api/syncs/abc"}),
    )
    .await;
    assert_ne!(ok.is_error, Some(true));
}

#[tokio::test]
async fn server_maximum_access_mode_caps_a_full_access_header() {
    let app = TestApp::spawn_with(&["--max-access-mode", "read-only"]).await;
    let client = app
        .client(KEY, &[("x-polytomic-access-mode", "full-access")])
        .await;
    let result = call(
        &client,
        "execute",
        json!({"method": "POST", "path": "/api/syncs/abc/executions", "body": {}}),
    )
    .await;
    assert_eq!(result.is_error, Some(true));
    assert!(app.upstream.requests().is_empty());
    let tools = client.list_all_tools().await.unwrap();
    let execute = tools.iter().find(|t| t.name == "execute").unwrap();
    assert_eq!(
        execute.annotations.as_ref().unwrap().read_only_hint,
        Some(true)
    );
}

#[tokio::test]
async fn execute_refuses_paths_outside_the_index_and_sends_nothing() {
    let app = TestApp::spawn().await;
    let client = app.client(KEY, &[]).await;
    let cases = [
        ("/api/../admin", "`..`"),
        ("/api/syncs/%2e%2e", "encoded"),
        ("/api/syncs/a%2Fb/status", "encoded"),
        ("/api//syncs", "empty path"),
        ("https://evil.example/api/me", "without scheme"),
        ("/api/me\r\nX-Evil: 1", "control"),
        ("/api/me?x=1", "query"),
        ("/admin", "/api/"),
        ("/api/no/such/thing", "search"),
    ];
    for (path, expected) in cases {
        let result = call(&client, "execute", json!({"method": "GET", "path": path})).await;
        assert_eq!(result.is_error, Some(true), "{path}");
        let text = text_of(&result);
        assert!(text.contains(expected), "{path}: {text}");
    }
    let wrong_method = call(
        &client,
        "execute",
        json!({"method": "DELETE", "path": "/api/me"}),
    )
    .await;
    assert!(
        text_of(&wrong_method).contains("supports GET"),
        "{}",
        text_of(&wrong_method)
    );
    let near = call(
        &client,
        "execute",
        json!({"method": "GET", "path": "/api/syncs/abc/statuss"}),
    )
    .await;
    assert!(
        text_of(&near).contains("/api/syncs/{id}/status"),
        "{}",
        text_of(&near)
    );
    assert!(app.upstream.requests().is_empty());
}

#[tokio::test]
async fn execute_validates_query_parameters_before_sending() {
    let app = TestApp::spawn().await;
    let client = app.client(KEY, &[]).await;
    let unknown = call(
        &client,
        "execute",
        json!({"method": "GET", "path": "/api/syncs", "query": {"_method": "DELETE"}}),
    )
    .await;
    assert_eq!(unknown.is_error, Some(true));
    assert!(
        text_of(&unknown).contains("allowed: "),
        "{}",
        text_of(&unknown)
    );
    let wrong_type = call(
        &client,
        "execute",
        json!({"method": "GET", "path": "/api/syncs", "query": {"limit": "many"}}),
    )
    .await;
    assert_eq!(wrong_type.is_error, Some(true));
    assert!(text_of(&wrong_type).contains("integer"));
    assert!(app.upstream.requests().is_empty());
}

#[tokio::test]
async fn upstream_errors_keep_polytomic_message_and_add_the_next_step() {
    let app = TestApp::spawn().await;
    let client = app.client(KEY, &[]).await;
    let result = call(
        &client,
        "execute",
        json!({"method": "GET", "path": "/api/syncs/missing"}),
    )
    .await;
    assert_eq!(result.is_error, Some(true));
    let text = text_of(&result);
    assert!(
        text.contains("sync not found") && text.contains("list call"),
        "{text}"
    );
    assert_eq!(result.structured_content.unwrap()["status"], 404);

    let partner = call(
        &client,
        "execute",
        json!({"method": "GET", "path": "/api/organizations"}),
    )
    .await;
    assert_eq!(partner.is_error, Some(true));
    assert!(
        text_of(&partner).contains("X-Polytomic-Auth-Mode: partner"),
        "{}",
        text_of(&partner)
    );
}

#[tokio::test]
async fn pagination_is_surfaced_as_a_next_hint_the_agent_can_pass_back() {
    let app = TestApp::spawn().await;
    let client = app.client(KEY, &[]).await;
    let first = call(
        &client,
        "execute",
        json!({"method": "GET", "path": "/api/syncs", "query": {"limit": 2}}),
    )
    .await;
    let next = first.structured_content.unwrap()["next"].clone();
    // The complete arguments for the next call: the caller's own query (its `limit`) plus the cursor.
    assert_eq!(
        next,
        json!({"method": "GET", "path": "/api/syncs", "query": {"limit": 2, "page_token": common::sync_page_token(2)}})
    );
    let second = call(&client, "execute", next).await;
    let body = &second.structured_content.unwrap()["body"];
    assert_eq!(body["data"][0]["id"], common::sync_id(2));
    assert_eq!(body["data"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn post_carries_an_idempotency_key_and_dry_run_sends_nothing() {
    let app = TestApp::spawn().await;
    let client = app.client(KEY, &[]).await;
    let dry = call(
        &client,
        "execute",
        json!({"method": "POST", "path": "/api/syncs/s-1/executions", "body": {}, "dry_run": true}),
    )
    .await;
    assert_ne!(dry.is_error, Some(true), "{}", text_of(&dry));
    let request = dry.structured_content.unwrap()["request"].clone();
    assert_eq!(request["headers"]["Authorization"], "Bearer ****");
    assert!(!request.to_string().contains(KEY));
    assert!(
        request["url"]
            .as_str()
            .unwrap()
            .ends_with("/api/syncs/s-1/executions")
    );
    assert!(app.upstream.requests().is_empty());

    let sent = call(
        &client,
        "execute",
        json!({"method": "POST", "path": "/api/syncs/s-1/executions", "body": {}}),
    )
    .await;
    assert_eq!(sent.structured_content.unwrap()["status"], 201);
    let seen = app.upstream.requests();
    let key = seen[0].headers["idempotency-key"].to_str().unwrap();
    assert!(
        key.len() >= 8
            && key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    );
}

#[tokio::test]
async fn partner_mode_fills_the_organization_placeholder() {
    let app = TestApp::spawn().await;
    let client = app
        .client(
            KEY,
            &[
                ("x-polytomic-auth-mode", "partner"),
                ("x-polytomic-partner-org-id", ORG_ID),
            ],
        )
        .await;
    let result = call(
        &client,
        "execute",
        json!({"method": "GET", "path": "/api/organizations/{org_id}/users"}),
    )
    .await;
    assert_ne!(result.is_error, Some(true), "{}", text_of(&result));
    let structured = result.structured_content.unwrap();
    assert_eq!(structured["context"]["auth_mode"], "partner");
    assert_eq!(structured["context"]["organization_id"], ORG_ID);
    assert_eq!(
        app.upstream.requests()[0].path,
        format!("/api/organizations/{ORG_ID}/users")
    );
}

#[tokio::test]
async fn bad_tool_arguments_are_tool_errors_that_say_what_is_allowed() {
    let app = TestApp::spawn().await;
    let client = app.client(KEY, &[]).await;
    let result = call(&client, "execute", json!({"method": "GET"})).await;
    assert_eq!(result.is_error, Some(true));
    assert!(text_of(&result).contains("path"));
    let result = call(&client, "search", json!({"query": "syncs", "limit": 500})).await;
    assert_eq!(result.is_error, Some(true));
    assert!(text_of(&result).contains("between 1 and 25"));
    let result = call(
        &client,
        "submit_mcp_feedback",
        json!({"category": "rant", "summary": "x"}),
    )
    .await;
    assert_eq!(result.is_error, Some(true));
    assert!(text_of(&result).contains("missing_capability"));
    let result = call(
        &client,
        "submit_mcp_feedback",
        json!({"category": "bug", "summary": "x".repeat(501)}),
    )
    .await;
    assert!(text_of(&result).contains("limit is 500"));
}

// ---------------------------------------------------------------- feedback durability

#[tokio::test]
async fn feedback_is_stored_before_the_answer_and_survives_a_restart() {
    let app = TestApp::spawn().await;
    let client = app.client(KEY, &[]).await;
    let result = call(
        &client,
        "submit_mcp_feedback",
        json!({"category": "missing_capability", "summary": "cannot filter syncs by name", "details": "wanted ?name=", "operation": "GET /api/syncs"}),
    )
    .await;
    assert_ne!(result.is_error, Some(true), "{}", text_of(&result));
    let id = result.structured_content.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(id.starts_with("fb_"));
    drop(client);
    let (upstream, database_url, dir) = app.stop().await;

    let app = TestApp::spawn_on(upstream, database_url.clone(), dir, &[]).await;
    let store = polytomic_mcp::store::Store::connect(&database_url)
        .await
        .unwrap();
    let record = store
        .get_feedback(&id)
        .await
        .unwrap()
        .expect("record survives restart");
    assert_eq!(record.summary, "cannot filter syncs by name");
    assert_eq!(record.category, "missing_capability");
    assert_eq!(record.operation.as_deref(), Some("GET /api/syncs"));
    assert!(record.principal.starts_with("key_") && !record.principal.contains(KEY));
    assert_eq!(
        store
            .list_feedback(None, Some("missing_capability"), 10)
            .await
            .unwrap()
            .len(),
        1
    );
    drop(app);
}

// ---------------------------------------------------------------- operations

#[tokio::test]
async fn health_readiness_and_metrics() {
    let app = TestApp::spawn().await;
    let http = reqwest::Client::new();
    let health = http
        .get(format!("http://{}/healthz", app.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let ready: Value = http
        .get(format!("http://{}/readyz", app.addr))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["status"], "ready");
    assert!(ready["index_operations"].as_u64().unwrap() >= 128);

    let client = app.client(KEY, &[]).await;
    call(
        &client,
        "execute",
        json!({"method": "GET", "path": "/api/me"}),
    )
    .await;
    call(
        &client,
        "execute",
        json!({"method": "GET", "path": "/nope"}),
    )
    .await;
    let metrics = http
        .get(format!("http://{}/metrics", app.addr))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"polytomic_mcp_tool_calls_total{tool="execute",outcome="ok",operation="GET /api/me",access="full-access"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains(
        r#"polytomic_mcp_tool_calls_total{tool="execute",outcome="error",operation="",access="full-access"} 1"#
    ));
    assert!(metrics.contains("polytomic_mcp_upstream_request_duration_seconds_bucket"));
    assert!(metrics.contains("polytomic_mcp_http_requests_total"));
    assert!(!metrics.contains(KEY));
    let unknown = http
        .get(format!("http://{}/nope", app.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
}

// ---------------------------------------------------------------- token budgets

/// Size of a tool result as the client receives it (text and structured content both count).
fn result_bytes(result: &rmcp::model::CallToolResult) -> usize {
    serde_json::to_string(result).unwrap().len()
}

#[tokio::test]
async fn search_answers_fit_their_token_budgets() {
    let app = TestApp::spawn().await;
    let client = app.client(KEY, &[]).await;
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/search_dev.json"
    ))
    .unwrap();
    let tasks: Vec<Value> = serde_json::from_str(&text).unwrap();
    let mut largest_search = 0;
    for task in &tasks {
        let result = call(&client, "search", json!({"query": task["query"]})).await;
        largest_search = largest_search.max(result_bytes(&result));
    }
    assert!(
        largest_search < 6 * 1024,
        "largest default search answer is {largest_search} bytes"
    );

    let catalog = polytomic_mcp::search::Catalog::build(
        polytomic_mcp::openapi::index_text(polytomic_mcp::openapi::EMBEDDED_DOCUMENT, "embedded")
            .unwrap(),
    );
    let mut largest_detail = (0, String::new());
    for op in &catalog.index.operations {
        let result = call(&client, "search", json!({"operation": op.key})).await;
        assert_ne!(result.is_error, Some(true), "{}", op.key);
        let size = result_bytes(&result);
        if size > largest_detail.0 {
            largest_detail = (size, op.key.clone());
        }
    }
    assert!(
        largest_detail.0 < 12 * 1024,
        "detail for {} is {} bytes",
        largest_detail.1,
        largest_detail.0
    );
    println!(
        "largest search answer {largest_search} B; largest detail {} B ({})",
        largest_detail.0, largest_detail.1
    );
}

// ---------------------------------------------------------------- the index source

fn tiny_document(extra_path: &str) -> String {
    json!({
        "openapi": "3.1.0",
        "info": {"title": "tiny", "version": "1"},
        "paths": {
            "/api/me": {"get": {"summary": "Who the caller is", "responses": {"200": {"description": "ok"}}}},
            extra_path: {"get": {"summary": format!("List {}", extra_path.trim_start_matches("/api/")), "responses": {"200": {"description": "ok"}}}}
        }
    })
    .to_string()
}

#[tokio::test]
async fn a_url_index_is_refreshed_and_a_bad_refresh_keeps_the_old_one() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    let document = Arc::new(Mutex::new(tiny_document("/api/gadgets")));
    let fetches = Arc::new(AtomicUsize::new(0));
    let (served, counted) = (document.clone(), fetches.clone());
    let doc_app = axum::Router::new().route(
        "/openapi.json",
        axum::routing::get(move || {
            let served = served.clone();
            let counted = counted.clone();
            async move {
                let body = served.lock().unwrap().clone();
                counted.fetch_add(1, Ordering::SeqCst);
                body
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let doc_url = format!("http://{}/openapi.json", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, doc_app).await.unwrap() });

    let app = TestApp::spawn_with(&["--openapi", &doc_url, "--openapi-refresh-secs", "1"]).await;
    let client = app.client(KEY, &[]).await;
    let finds = |query: &'static str, path: &'static str| {
        let client = &client;
        async move {
            call(client, "search", json!({"query": query}))
                .await
                .structured_content
                .unwrap()["results"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["path"] == path)
        }
    };
    // Waits (by the document server's count, not the clock) until the server has fetched `n` more times.
    let fetched = |n: usize| {
        let fetches = fetches.clone();
        async move {
            let target = fetches.load(Ordering::SeqCst) + n;
            while fetches.load(Ordering::SeqCst) < target {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    };
    assert!(finds("gadgets", "/api/gadgets").await);

    // The loop fetches, indexes and swaps, then waits for its next tick: once three more fetches have begun
    // since a change, the second of them (which certainly saw the change) has been applied.
    *document.lock().unwrap() = tiny_document("/api/widgets");
    fetched(3).await;
    assert!(
        finds("widgets", "/api/widgets").await,
        "the new document was indexed"
    );

    // A bad document is refused and the index in service stays.
    *document.lock().unwrap() = "{ this is not json".to_owned();
    fetched(3).await;
    assert!(finds("widgets", "/api/widgets").await);
    let ok = call(
        &client,
        "execute",
        json!({"method": "GET", "path": "/api/widgets"}),
    )
    .await;
    assert_ne!(ok.is_error, Some(true), "{}", text_of(&ok));

    // …and the refresh loop survived it: the next good document is indexed too.
    *document.lock().unwrap() = tiny_document("/api/sprockets");
    fetched(3).await;
    assert!(
        finds("sprockets", "/api/sprockets").await,
        "refreshing stopped after a bad document"
    );
}

#[tokio::test]
async fn a_bad_document_at_start_up_fails_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, r#"{"openapi": "2.0", "paths": {}}"#).unwrap();
    let db = format!("sqlite://{}/x.db", dir.path().display());
    let config = <polytomic_mcp::config::Config as clap::Parser>::parse_from([
        "polytomic-mcp",
        "--openapi",
        bad.to_str().unwrap(),
        "--database-url",
        &db,
    ]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let error = polytomic_mcp::run(config, listener, tokio_util::sync::CancellationToken::new())
        .await
        .unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains("POLYTOMIC_MCP_OPENAPI") && message.contains("OpenAPI 3.x"),
        "{message}"
    );
}

// ---------------------------------------------------------------- the direct path for tools/call

#[tokio::test]
async fn the_direct_tools_call_path_answers_exactly_as_rmcp_does() {
    let app = TestApp::spawn().await;
    let auth = format!("Bearer {KEY}");
    let body = json!({"jsonrpc": "2.0", "id": 42, "method": "tools/call",
        "params": {"name": "search", "arguments": {"query": "start a bulk sync now"}}});
    // With the protocol header the request takes the direct path; without it, rmcp's.
    let direct = app
        .post_mcp(
            &[
                ("authorization", auth.as_str()),
                ("mcp-protocol-version", "2025-11-25"),
            ],
            body.clone(),
        )
        .await;
    assert_eq!(direct.status(), 200);
    assert_eq!(direct.headers()["content-type"], "application/json");
    let direct: Value = direct.json().await.unwrap();
    let via_rmcp = app
        .post_mcp(&[("authorization", auth.as_str())], body)
        .await;
    let via_rmcp: Value = via_rmcp.json().await.unwrap();
    assert_eq!(direct, via_rmcp);
    assert_eq!(direct["id"], 42);
    assert!(direct["result"].get("resultType").is_none());

    // A string id, an error result, and an unknown tool (which rmcp answers).
    let error = app
        .post_mcp(
            &[("authorization", auth.as_str()), ("mcp-protocol-version", "2025-06-18")],
            json!({"jsonrpc": "2.0", "id": "req-1", "method": "tools/call", "params": {"name": "execute", "arguments": {"method": "GET", "path": "/nope"}}}),
        )
        .await;
    let error: Value = error.json().await.unwrap();
    assert_eq!(error["id"], "req-1");
    assert_eq!(error["result"]["isError"], true);
    let unknown = app
        .post_mcp(
            &[("authorization", auth.as_str()), ("mcp-protocol-version", "2025-11-25")],
            json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "rm", "arguments": {}}}),
        )
        .await;
    let unknown: Value = unknown.json().await.unwrap();
    assert!(
        unknown["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unknown tool"),
        "{unknown}"
    );
    assert!(app.upstream.requests().is_empty());
}

/// Bytes per search result in each kind of session, over every operation (each tag's operations, listed by
/// the filter alone so the ranking does not decide which results are measured). The ceilings are the sizes
/// before session notes existed (user 529.2, partner 733.8, read-only 529.2 bytes per result, measured at 66c950a):
/// telling an agent what its session cannot run must not make results larger.
#[tokio::test]
async fn search_results_do_not_grow_per_result_in_any_session() {
    let app = TestApp::spawn().await;
    let catalog = polytomic_mcp::search::Catalog::build(
        polytomic_mcp::openapi::index_text(polytomic_mcp::openapi::EMBEDDED_DOCUMENT, "embedded")
            .unwrap(),
    );
    type Headers<'a> = &'a [(&'a str, &'a str)];
    let sessions: [(&str, Headers<'_>, f64); 3] = [
        ("user", &[], CEILING_USER),
        (
            "partner",
            &[("x-polytomic-auth-mode", "partner")],
            CEILING_PARTNER,
        ),
        (
            "read-only",
            &[("x-polytomic-access-mode", "read-only")],
            CEILING_READ_ONLY,
        ),
    ];
    for (name, headers, ceiling) in sessions {
        let client = app.client(KEY, headers).await;
        let (mut bytes, mut results) = (0usize, 0usize);
        for tag in &catalog.index.tags {
            let answer = call(&client, "search", json!({"tag": tag.tag, "limit": 25})).await;
            assert_ne!(answer.is_error, Some(true), "{}", text_of(&answer));
            results += answer.structured_content.as_ref().unwrap()["results"]
                .as_array()
                .unwrap()
                .len();
            bytes += result_bytes(&answer);
        }
        let per_result = bytes as f64 / results as f64;
        println!("{name} session: {results} results, {per_result:.1} bytes per result");
        assert!(
            per_result <= ceiling,
            "{name} session: {per_result:.1} bytes per result > {ceiling}"
        );
    }
}
const CEILING_USER: f64 = 529.2;
const CEILING_PARTNER: f64 = 733.8;
const CEILING_READ_ONLY: f64 = 529.2;

/// The same question ranks first the operation the session's key can call; the other stays in the results,
/// marked, and the answer says what to do. A read-only session still finds writes, marked as such.
#[tokio::test]
async fn search_ranks_for_the_session_and_marks_what_it_cannot_run() {
    let app = TestApp::spawn().await;
    let user = app.client(KEY, &[]).await;
    let partner = app
        .client(KEY, &[("x-polytomic-auth-mode", "partner")])
        .await;
    let read_only = app
        .client(KEY, &[("x-polytomic-access-mode", "read-only")])
        .await;
    let ranked = |answer: &rmcp::model::CallToolResult| -> Vec<(String, Option<String>)> {
        answer.structured_content.as_ref().unwrap()["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    format!(
                        "{} {}",
                        r["method"].as_str().unwrap(),
                        r["path"].as_str().unwrap()
                    ),
                    r["note"].as_str().map(str::to_owned),
                )
            })
            .collect()
    };
    for (query, user_op, partner_op) in [
        (
            "change a user's role to admin",
            "PUT /api/organization/users/{id}",
            "PUT /api/organizations/{org_id}/users/{id}",
        ),
        (
            "what is this uuid",
            "GET /api/entities/{id}",
            "GET /api/organizations/entities/{id}",
        ),
    ] {
        let as_user = call(&user, "search", json!({"query": query})).await;
        let as_partner = call(&partner, "search", json!({"query": query})).await;
        let (as_user, as_partner) = (ranked(&as_user), ranked(&as_partner));
        assert_eq!(
            as_user[0],
            (user_op.to_owned(), None),
            "{query}: {as_user:?}"
        );
        assert_eq!(
            as_partner[0],
            (partner_op.to_owned(), None),
            "{query}: {as_partner:?}"
        );
        // The other session's operation is still there, marked.
        let marked = |results: &[(String, Option<String>)], op: &str, why: &str| {
            results
                .iter()
                .any(|(key, note)| key == op && note.as_deref() == Some(why))
        };
        assert!(
            marked(&as_user, partner_op, "cannot run here: needs a partner key"),
            "{as_user:?}"
        );
        assert!(
            marked(&as_partner, user_op, "cannot run here: needs a user key"),
            "{as_partner:?}"
        );
    }
    let answer = call(&partner, "search", json!({"query": "list users"})).await;
    let hint = answer.structured_content.as_ref().unwrap()["hint"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(hint.contains("reconnect with a user API key"), "{hint}");
    assert!(text_of(&answer).contains("[user key; cannot run here: needs a user key]"));

    let answer = call(
        &read_only,
        "search",
        json!({"query": "delete the test sync"}),
    )
    .await;
    let results = ranked(&answer);
    assert_eq!(
        results[0],
        (
            "DELETE /api/syncs/{id}".to_owned(),
            Some("cannot run here: read-only session".to_owned())
        ),
        "{results:?}"
    );
    assert!(text_of(&answer).contains("X-Polytomic-Access-Mode: full-access"));
    let detail = call(
        &read_only,
        "search",
        json!({"operation": "DELETE /api/syncs/{id}"}),
    )
    .await;
    let note = detail.structured_content.as_ref().unwrap()["operation"]["note"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        note.starts_with("cannot run here: read-only session. ") && note.contains("full-access"),
        "{note}"
    );
    // Reads in a read-only session carry no note.
    let answer = call(
        &read_only,
        "search",
        json!({"query": "list my model syncs"}),
    )
    .await;
    assert_eq!(ranked(&answer)[0], ("GET /api/syncs".to_owned(), None));
}
