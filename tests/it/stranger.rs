//! What a stranger with nothing but loopback access and made-up bearer strings can do: oversized searches,
//! stalled request bodies, half-sent and idle connections, and keys Polytomic never issued. Attackers and
//! legitimate clients use different loopback source addresses, so per-address defences are exercised.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common;

use common::{TestApp, call, text_of};
use serde_json::{Value, json};

const KEY: &str = "pk_test_stranger_0123456789";

/// About 1 MiB of distinct words, under the default 1 MiB body limit once wrapped in JSON-RPC.
fn megabyte_of_unique_words() -> String {
    let mut query = String::with_capacity(1_000_000);
    let mut n = 0u64;
    while query.len() < 1_000_000 {
        query.push_str(&format!("w{n:x} "));
        n += 1;
    }
    query
}

/// A stateless `tools/call` of `search`, POSTed as plain JSON.
async fn raw_search(mcp_url: String, arguments: Value) -> Value {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "search", "arguments": arguments}});
    let response = reqwest::Client::new()
        .post(mcp_url)
        .header("authorization", format!("Bearer {KEY}"))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-11-25")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

#[tokio::test]
async fn a_megabyte_query_gets_an_argument_error_that_states_the_limits() {
    let app = TestApp::spawn().await;
    let client = app.client(KEY, &[]).await;
    let query = megabyte_of_unique_words();
    let result = call(&client, "search", json!({"query": query})).await;
    assert_eq!(result.is_error, Some(true));
    let text = text_of(&result);
    assert!(
        text.contains("the limit is 1000 characters and 64 words"),
        "{text}"
    );
    assert!(text.len() < 500, "the query is not echoed back: {text}");

    let wordy = "sync ".repeat(65);
    let result = call(&client, "search", json!({"query": wordy})).await;
    assert_eq!(result.is_error, Some(true));
    assert!(text_of(&result).contains("65 words"), "{}", text_of(&result));

    let result = call(&client, "search", json!({"operation": query})).await;
    assert_eq!(result.is_error, Some(true));
    let text = text_of(&result);
    assert!(text.contains("the limit is 300"), "{text}");
    assert!(text.len() < 500, "the operation is not echoed back: {text}");

    // Other echoed arguments are cut, and a near-limit query is still ranked.
    let result = call(&client, "search", json!({"query": "list syncs", "tag": query})).await;
    assert_eq!(result.is_error, Some(true));
    assert!(text_of(&result).len() < 4_000, "{}", text_of(&result));
    let near_limit = format!("{} why did my last sync fail", "please ".repeat(50));
    let result = call(&client, "search", json!({"query": near_limit})).await;
    assert_ne!(result.is_error, Some(true), "{}", text_of(&result));
    let results = &result.structured_content.unwrap()["results"];
    assert!(!results.as_array().unwrap().is_empty(), "{results}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_are_answered_while_megabyte_searches_arrive() {
    let app = TestApp::spawn().await;
    let query = megabyte_of_unique_words();
    let searches: Vec<_> = (0..4)
        .map(|_| {
            let url = app.mcp_url();
            let arguments = json!({"query": query});
            tokio::spawn(raw_search(url, arguments))
        })
        .collect();
    let health = reqwest::get(format!("http://{}/healthz", app.addr))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(health.json::<Value>().await.unwrap()["status"], "ok");
    for search in searches {
        let reply = search.await.unwrap();
        assert_eq!(reply["result"]["isError"], true, "{reply}");
        let text = reply["result"]["content"][0]["text"].as_str().unwrap();
        assert!(text.contains("the limit is 1000 characters"), "{text}");
    }
}
