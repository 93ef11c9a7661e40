//! `execute` with `max_pages`: a whole list in one call against the mock's 120 syncs (Polytomic's
//! `page_token` + `limit` pagination), with rate limits, errors, budgets and session modes on chosen pages.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common;

use common::{
    ListFaults, ORG_ID, RateLimitFault, Recorded, SYNC_COUNT, TestApp, call, sync_id,
    sync_page_token, text_of,
};
use rmcp::model::CallToolResult;
use serde_json::{Value, json};

const KEY: &str = "pk_test_pages_0123456789";

fn structured(result: &CallToolResult) -> Value {
    result.structured_content.clone().unwrap()
}

/// The `id`s of the merged list, in order.
fn ids(structured: &Value) -> Vec<String> {
    structured["body"]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["id"].as_str().unwrap().to_owned())
        .collect()
}

fn expected_ids(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(sync_id).collect()
}

/// The `page_token` each recorded list request carried (`None` for the first page).
fn page_tokens(requests: &[Recorded]) -> Vec<Option<String>> {
    requests
        .iter()
        .filter(|r| r.path == "/api/syncs")
        .map(|r| {
            url::form_urlencoded::parse(r.query.as_deref().unwrap_or("").as_bytes())
                .find(|(k, _)| k == "page_token")
                .map(|(_, v)| v.into_owned())
        })
        .collect()
}

#[tokio::test]
async fn a_three_page_list_is_read_whole_in_one_call_with_one_request_per_page() {
    let app = TestApp::spawn_with(&["--result-max-chars", "1000000"]).await;
    let client = app.client(KEY, &[]).await;
    let result = call(
        &client,
        "execute",
        json!({"method": "GET", "path": "/api/syncs", "max_pages": 5}),
    )
    .await;
    assert_ne!(result.is_error, Some(true), "{}", text_of(&result));
    let out = structured(&result);
    assert_eq!(
        ids(&out),
        expected_ids(0..SYNC_COUNT),
        "in order, no duplicates"
    );
    assert_eq!(
        out["pages"],
        json!({"read": 3, "items": 120, "complete": true})
    );
    assert!(out.get("next").is_none());
    // The shape of one page: the items in full, the last page's (empty) pagination object.
    assert_eq!(out["body"]["data"][7], common::sync_item(7));
    assert_eq!(out["body"]["pagination"], json!({}));
    assert_eq!(out["rate_limit"]["x-ratelimit-remaining"], "99");
    let requests = app.upstream.requests();
    assert_eq!(
        page_tokens(&requests),
        [None, Some(sync_page_token(50)), Some(sync_page_token(100))]
    );
    assert_eq!(requests.len(), 3);
}

#[tokio::test]
async fn listing_every_sync_with_only_id_name_and_active_is_one_call_returning_all_120() {
    let app = TestApp::spawn().await;
    let client = app.client(KEY, &[]).await;
    let fields = json!(["data.id", "data.name", "data.active"]);
    let result = call(
        &client,
        "execute",
        json!({"method": "GET", "path": "/api/syncs", "max_pages": 20, "fields": fields}),
    )
    .await;
    assert_ne!(result.is_error, Some(true), "{}", text_of(&result));
    let out = structured(&result);
    assert_eq!(
        out["pages"],
        json!({"read": 3, "items": 120, "complete": true})
    );
    let items = out["body"]["data"].as_array().unwrap();
    assert_eq!(items.len(), SYNC_COUNT);
    for (i, item) in items.iter().enumerate() {
        let expected = common::sync_item(i);
        assert_eq!(
            item,
            &json!({"id": expected["id"], "name": expected["name"], "active": expected["active"]})
        );
    }
    assert_eq!(out["body"], json!({"data": items}), "only the asked fields");
    let size = serde_json::to_string(&out["body"]).unwrap().len();
    assert!(size <= 30_000, "within the default budget: {size}");
    assert_eq!(app.upstream.requests().len(), 3);
}

#[tokio::test]
async fn max_pages_smaller_than_the_list_gives_a_next_that_resumes_exactly() {
    let app = TestApp::spawn().await;
    let client = app.client(KEY, &[]).await;
    let mut args = json!({
        "method": "GET", "path": "/api/syncs", "query": {"limit": 20}, "fields": ["data.id"], "max_pages": 2
    });
    let mut seen = Vec::new();
    let mut calls = 0;
    loop {
        calls += 1;
        let result = call(&client, "execute", args.clone()).await;
        assert_ne!(result.is_error, Some(true), "{}", text_of(&result));
        let out = structured(&result);
        seen.extend(ids(&out));
        let Some(next) = out.get("next") else {
            assert_eq!(out["pages"]["complete"], true);
            break;
        };
        assert_eq!(out["pages"]["complete"], false);
        assert_eq!(out["pages"]["stopped"], "max_pages");
        assert_eq!(out["pages"]["read"], 2);
        // Everything the agent gave, plus the cursor of the first page not read.
        assert_eq!(
            next,
            &json!({
                "method": "GET", "path": "/api/syncs",
                "query": {"limit": 20, "page_token": sync_page_token(seen.len())},
                "fields": ["data.id"], "max_pages": 2
            })
        );
        args = next.clone();
    }
    assert_eq!(
        seen,
        expected_ids(0..SYNC_COUNT),
        "resumed exactly: no gap, no repeat"
    );
    assert_eq!(calls, 3);
    let requests = app.upstream.requests();
    assert_eq!(requests.len(), 6, "one request per page of 20");
    assert!(
        requests
            .iter()
            .all(|r| r.query.as_deref().unwrap().contains("limit=20")),
        "every page keeps the caller's limit"
    );
}

#[tokio::test]
async fn a_429_on_page_2_is_retried_after_retry_after_and_the_list_completes() {
    let app = TestApp::spawn().await;
    app.upstream.set_list_faults(ListFaults {
        rate_limit: Some(RateLimitFault {
            page: 2,
            times: 1,
            retry_after: "1",
        }),
        ..ListFaults::default()
    });
    let client = app.client(KEY, &[]).await;
    let result = call(
        &client,
        "execute",
        json!({"method": "GET", "path": "/api/syncs", "max_pages": 3, "fields": ["data.id"]}),
    )
    .await;
    assert_ne!(result.is_error, Some(true), "{}", text_of(&result));
    let out = structured(&result);
    assert_eq!(ids(&out), expected_ids(0..SYNC_COUNT));
    assert_eq!(out["pages"]["complete"], true);
    let tokens = page_tokens(&app.upstream.requests());
    assert_eq!(
        tokens,
        [
            None,
            Some(sync_page_token(50)),
            Some(sync_page_token(50)),
            Some(sync_page_token(100))
        ],
        "page 2 sent again after the 429"
    );
}

#[tokio::test]
async fn a_429_that_outlasts_the_retries_returns_page_1_with_next_and_the_error() {
    let app = TestApp::spawn().await;
    app.upstream.set_list_faults(ListFaults {
        rate_limit: Some(RateLimitFault {
            page: 2,
            times: 3,
            retry_after: "0",
        }),
        ..ListFaults::default()
    });
    let client = app.client(KEY, &[]).await;
    let args =
        json!({"method": "GET", "path": "/api/syncs", "max_pages": 3, "fields": ["data.id"]});
    let result = call(&client, "execute", args).await;
    assert_eq!(result.is_error, Some(true));
    let out = structured(&result);
    assert_eq!(
        ids(&out),
        expected_ids(0..50),
        "the page read before the 429"
    );
    assert_eq!(out["status"], 429);
    assert_eq!(
        out["pages"],
        json!({"read": 1, "items": 50, "complete": false, "stopped": "error",
               "hint": "Call execute again with `next` to retry from the failed page."})
    );
    // The rate-limit headers are page 2's.
    assert_eq!(out["rate_limit"]["x-ratelimit-remaining"], "0");
    let text = text_of(&result);
    assert!(
        text.contains("Page 2 of the list failed") && text.contains("slow down"),
        "{text}"
    );
    assert_eq!(
        app.upstream.requests().len(),
        4,
        "page 1, then page 2 three times"
    );

    let rest = call(&client, "execute", out["next"].clone()).await;
    assert_ne!(rest.is_error, Some(true), "{}", text_of(&rest));
    assert_eq!(ids(&structured(&rest)), expected_ids(50..SYNC_COUNT));
}

#[tokio::test]
async fn an_error_on_page_3_returns_pages_1_and_2_with_next_and_the_error() {
    let app = TestApp::spawn().await;
    app.upstream.set_list_faults(ListFaults {
        error_page: Some(3),
        ..ListFaults::default()
    });
    let client = app.client(KEY, &[]).await;
    let result = call(
        &client,
        "execute",
        json!({"method": "GET", "path": "/api/syncs", "max_pages": 5, "fields": ["data.id", "data.name"]}),
    )
    .await;
    assert_eq!(result.is_error, Some(true));
    let out = structured(&result);
    assert_eq!(ids(&out), expected_ids(0..100));
    assert_eq!(out["status"], 500);
    assert_eq!(out["pages"]["read"], 2);
    assert_eq!(out["pages"]["complete"], false);
    assert_eq!(
        out["next"]["query"]["page_token"],
        json!(sync_page_token(100))
    );
    assert!(
        out["error"]
            .as_str()
            .unwrap()
            .contains("internal error listing syncs"),
        "{out}"
    );
    assert_eq!(app.upstream.requests().len(), 3);
}

#[tokio::test]
async fn the_result_budget_stops_at_a_page_boundary_and_next_fetches_the_page_left_out() {
    let app = TestApp::spawn().await;
    let client = app.client(KEY, &[]).await;
    let result = call(
        &client,
        "execute",
        json!({"method": "GET", "path": "/api/syncs", "query": {"limit": 10}, "max_pages": 20}),
    )
    .await;
    assert_ne!(result.is_error, Some(true), "{}", text_of(&result));
    let out = structured(&result);
    let size = serde_json::to_string(&out["body"]).unwrap().len();
    assert!(size <= 30_000, "body is {size} characters");
    let read = out["pages"]["read"].as_u64().unwrap() as usize;
    assert!((2..12).contains(&read), "{read} pages fit");
    assert_eq!(out["pages"]["stopped"], "result_budget");
    assert_eq!(ids(&out), expected_ids(0..read * 10), "whole pages only");
    assert_eq!(
        out["next"]["query"],
        json!({"limit": 10, "page_token": sync_page_token(read * 10)})
    );
    assert_eq!(
        app.upstream.requests().len(),
        read + 1,
        "the page that did not fit was read, then left out"
    );
    // With fewer fields, the same list fits whole.
    let projected = call(
        &client,
        "execute",
        json!({"method": "GET", "path": "/api/syncs", "query": {"limit": 10}, "max_pages": 20, "fields": ["data.id"]}),
    )
    .await;
    assert_eq!(structured(&projected)["pages"]["complete"], true);
    assert_eq!(ids(&structured(&projected)).len(), SYNC_COUNT);
}

#[tokio::test]
async fn a_first_page_over_the_budget_is_cut_at_an_item_boundary_and_says_so() {
    let app = TestApp::spawn_with(&["--result-max-chars", "5000"]).await;
    let client = app.client(KEY, &[]).await;
    let result = call(
        &client,
        "execute",
        json!({"method": "GET", "path": "/api/syncs", "max_pages": 3}),
    )
    .await;
    assert_ne!(result.is_error, Some(true), "{}", text_of(&result));
    let out = structured(&result);
    let kept = ids(&out).len();
    assert!(kept > 0 && kept < 50, "{kept}");
    assert!(serde_json::to_string(&out["body"]).unwrap().len() <= 5_000);
    assert_eq!(out["truncated"]["kept"], kept);
    assert_eq!(out["truncated"]["total"], 50);
    assert_eq!(out["pages"]["stopped"], "result_budget");
    assert_eq!(
        out["next"]["query"]["page_token"],
        json!(sync_page_token(50))
    );
    assert_eq!(app.upstream.requests().len(), 1);
}

#[tokio::test]
async fn the_time_budget_stops_a_stalled_page_with_the_pages_read_and_next() {
    let app = TestApp::spawn_with(&["--upstream-timeout-ms", "3000"]).await;
    app.upstream.set_list_faults(ListFaults {
        stall_page: Some(2),
        ..ListFaults::default()
    });
    let client = app.client(KEY, &[]).await;
    let result = call(
        &client,
        "execute",
        json!({"method": "GET", "path": "/api/syncs", "max_pages": 3, "fields": ["data.id"]}),
    )
    .await;
    assert_ne!(result.is_error, Some(true), "{}", text_of(&result));
    let out = structured(&result);
    assert_eq!(ids(&out), expected_ids(0..50));
    assert_eq!(out["pages"]["stopped"], "time_budget");
    assert_eq!(
        out["next"]["query"]["page_token"],
        json!(sync_page_token(50))
    );
}

#[tokio::test]
async fn max_pages_above_1_where_there_is_nothing_to_follow_is_refused_before_sending() {
    let app = TestApp::spawn().await;
    let client = app.client(KEY, &[]).await;
    let cases = [
        (
            json!({"method": "GET", "path": "/api/me", "max_pages": 2}),
            "GET /api/me does not paginate",
        ),
        (
            json!({"method": "POST", "path": "/api/syncs/s-1/executions", "body": {}, "max_pages": 2}),
            "max_pages applies only to GET list operations",
        ),
        (
            json!({"method": "HEAD", "path": "/api/syncs", "max_pages": 2}),
            "max_pages applies only to GET list operations",
        ),
        (
            json!({"method": "GET", "path": "/api/events", "max_pages": 2}),
            "cannot follow for you",
        ),
    ];
    for (args, expected) in cases {
        let result = call(&client, "execute", args.clone()).await;
        assert_eq!(result.is_error, Some(true), "{args}");
        let text = text_of(&result);
        assert!(
            text.contains(expected)
                && text.contains("Drop max_pages")
                && text.contains("Nothing was sent"),
            "{args}: {text}"
        );
        assert_eq!(structured(&result)["refused"], "invalid_request");
    }
    assert!(app.upstream.requests().is_empty());
    // `max_pages: 1` is the default everywhere.
    let me = call(
        &client,
        "execute",
        json!({"method": "GET", "path": "/api/me", "max_pages": 1}),
    )
    .await;
    assert_ne!(me.is_error, Some(true), "{}", text_of(&me));
}

#[tokio::test]
async fn bad_max_pages_values_are_argument_errors_naming_the_range() {
    let app = TestApp::spawn().await;
    let client = app.client(KEY, &[]).await;
    for bad in [json!(0), json!(21), json!(2.5), json!("3"), json!(-1)] {
        let result = call(
            &client,
            "execute",
            json!({"method": "GET", "path": "/api/syncs", "max_pages": bad}),
        )
        .await;
        assert_eq!(result.is_error, Some(true), "{bad}");
        let text = text_of(&result);
        assert!(
            text.contains("max_pages must be an integer from 1 to 20")
                && text.contains("Nothing was sent"),
            "{bad}: {text}"
        );
    }
    assert!(app.upstream.requests().is_empty());
}

#[tokio::test]
async fn a_read_only_session_reads_every_page_and_still_sends_no_write() {
    let app = TestApp::spawn().await;
    let client = app
        .client(KEY, &[("x-polytomic-access-mode", "read-only")])
        .await;
    let result = call(
        &client,
        "execute",
        json!({"method": "GET", "path": "/api/syncs", "max_pages": 3, "fields": ["data.id"]}),
    )
    .await;
    assert_ne!(result.is_error, Some(true), "{}", text_of(&result));
    let out = structured(&result);
    assert_eq!(ids(&out), expected_ids(0..SYNC_COUNT));
    assert_eq!(out["context"]["access_mode"], "read-only");
    let write = call(
        &client,
        "execute",
        json!({"method": "POST", "path": "/api/syncs/s-1/executions", "body": {}, "max_pages": 2}),
    )
    .await;
    assert_eq!(write.is_error, Some(true));
    assert_eq!(structured(&write)["refused"], "read_only");
    let requests = app.upstream.requests();
    assert_eq!(requests.len(), 3);
    assert!(requests.iter().all(|r| r.method == "GET"));
}

#[tokio::test]
async fn partner_mode_sends_every_page_with_the_partner_key_and_context() {
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
        json!({"method": "GET", "path": "/api/syncs", "max_pages": 3, "fields": ["data.id"]}),
    )
    .await;
    assert_ne!(result.is_error, Some(true), "{}", text_of(&result));
    let out = structured(&result);
    assert_eq!(ids(&out).len(), SYNC_COUNT);
    assert_eq!(out["context"]["auth_mode"], "partner");
    assert_eq!(out["context"]["organization_id"], ORG_ID);
    let requests = app.upstream.requests();
    assert_eq!(requests.len(), 3);
    for request in &requests {
        assert_eq!(
            request.headers["authorization"].to_str().unwrap(),
            format!("Bearer {KEY}")
        );
        assert_eq!(request.headers["x-polytomic-version"], "2025-09-18");
    }
}

#[tokio::test]
async fn page_style_results_follow_the_page_number_and_never_the_links_host() {
    let app = TestApp::spawn().await;
    let client = app.client(KEY, &[]).await;
    let result = call(
        &client,
        "execute",
        json!({"method": "GET", "path": "/api/queries/q-1", "max_pages": 5, "fields": ["data.results.row", "data.status"]}),
    )
    .await;
    assert_ne!(result.is_error, Some(true), "{}", text_of(&result));
    let out = structured(&result);
    let rows: Vec<u64> = out["body"]["data"]["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["row"].as_u64().unwrap())
        .collect();
    assert_eq!(rows, (0..10).collect::<Vec<u64>>());
    assert_eq!(out["body"]["data"]["status"], "done");
    assert_eq!(
        out["pages"],
        json!({"read": 3, "items": 10, "complete": true})
    );
    let queries: Vec<Option<String>> = app
        .upstream
        .requests()
        .iter()
        .map(|r| r.query.clone())
        .collect();
    assert_eq!(
        queries,
        [None, Some("page=2".to_owned()), Some("page=3".to_owned())],
        "every page went to the configured base URL"
    );
}

#[tokio::test]
async fn every_page_is_counted_by_its_number_in_the_metrics() {
    let app = TestApp::spawn().await;
    let client = app.client(KEY, &[]).await;
    let result = call(
        &client,
        "execute",
        json!({"method": "GET", "path": "/api/syncs", "max_pages": 3, "fields": ["data.id"]}),
    )
    .await;
    assert_ne!(result.is_error, Some(true), "{}", text_of(&result));
    let metrics = reqwest::get(format!("http://{}/metrics", app.addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for page in 1..=3 {
        assert!(
            metrics.contains(&format!(
                "polytomic_mcp_upstream_pages_total{{page=\"{page}\"}} 1"
            )),
            "{metrics}"
        );
    }
    assert!(
        metrics.contains(
            "polytomic_mcp_upstream_request_duration_seconds_count{method=\"GET\",status=\"200\"} 3"
        ),
        "{metrics}"
    );
}

#[tokio::test]
async fn every_page_has_its_own_audit_line_with_its_number() {
    let upstream = common::MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let database_url = format!("sqlite://{}/audit.db", dir.path().display());
    let upstream_url = upstream.url();
    let (mut child, address, log) = common::start_binary_logged(&[
        ("POLYTOMIC_MCP_DATABASE_URL", &database_url),
        ("POLYTOMIC_BASE_URL", &upstream_url),
    ]);
    let reply = reqwest::Client::new()
        .post(format!("http://{address}/mcp"))
        .header("authorization", format!("Bearer {KEY}"))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-11-25")
        .body(json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "execute", "arguments": {
            "method": "GET", "path": "/api/syncs", "max_pages": 3, "fields": ["data.id"]
        }}}).to_string())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let reply: Value = serde_json::from_str(&reply).unwrap();
    assert_eq!(
        reply["result"]["structuredContent"]["pages"]["read"], 3,
        "{reply}"
    );
    // SIGTERM drains and flushes the log; then every line is in.
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    child.wait().unwrap();
    let pages: Vec<Value> = log
        .all_after_exit()
        .iter()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|event| event["message"] == "execute")
        .map(|event| {
            assert_eq!(event["path"], "/api/syncs");
            assert_eq!(event["status"], "200");
            event["page"].clone()
        })
        .collect();
    assert_eq!(pages, [json!(1), json!(2), json!(3)]);
}

#[tokio::test]
async fn the_search_recipe_of_a_list_the_server_can_follow_mentions_max_pages_with_fields() {
    let app = TestApp::spawn().await;
    let client = app.client(KEY, &[]).await;
    let syncs = call(&client, "search", json!({"operation": "GET /api/syncs"})).await;
    let hint = structured(&syncs)["operation"]["pagination"]["whole_list"].clone();
    let hint = hint.as_str().unwrap();
    assert!(
        hint.contains("max_pages") && hint.contains("fields") && hint.contains("data."),
        "{hint}"
    );
    assert!(text_of(&syncs).contains("whole list: "));
    // Time-bounded windows are not followed, so their recipe does not offer it.
    let events = call(&client, "search", json!({"operation": "GET /api/events"})).await;
    assert!(structured(&events)["operation"]["pagination"]["whole_list"].is_null());
    assert!(!text_of(&events).contains("max_pages"));
}
