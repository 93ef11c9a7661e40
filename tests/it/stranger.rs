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
    assert!(
        text_of(&result).contains("65 words"),
        "{}",
        text_of(&result)
    );

    let result = call(&client, "search", json!({"operation": query})).await;
    assert_eq!(result.is_error, Some(true));
    let text = text_of(&result);
    assert!(text.contains("the limit is 300"), "{text}");
    assert!(text.len() < 500, "the operation is not echoed back: {text}");

    // Other echoed arguments are cut, and a near-limit query is still ranked.
    let result = call(
        &client,
        "search",
        json!({"query": "list syncs", "tag": query}),
    )
    .await;
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

// ---------------------------------------------------------------- connections and slots

/// A TCP connection to `server` from the loopback source address `from` (any of 127.0.0.0/8 binds on Linux).
async fn connect_from(from: &str, server: std::net::SocketAddr) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    socket.connect(server).await.unwrap()
}

/// Reads one HTTP/1.1 response (head and a `Content-Length` body); empty when the server closed first.
async fn read_response(stream: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut bytes = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&bytes).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length: usize = text[..end]
                .lines()
                .find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().ok())?
                })
                .unwrap_or(0);
            if bytes.len() >= end + 4 + length {
                return text;
            }
        }
        let read = stream.read(&mut buffer).await.unwrap_or(0);
        if read == 0 {
            return String::from_utf8_lossy(&bytes).into_owned();
        }
        bytes.extend_from_slice(&buffer[..read]);
    }
}

/// Waits for the server to close the connection and returns what it sent first (the safety timeout only turns
/// a hang into a failure; the tests wait for the close itself).
async fn wait_for_close(stream: &mut tokio::net::TcpStream) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut received = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        stream.read_to_end(&mut received),
    )
    .await
    .expect("the server closed the connection");
    match read {
        Ok(_) => {}
        Err(error) => assert_eq!(error.kind(), std::io::ErrorKind::ConnectionReset),
    }
    received
}

async fn metric(app: &TestApp, line_start: &str) -> Option<f64> {
    let text = reqwest::get(format!("http://{}/metrics", app.addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find(|line| line.starts_with(line_start))
        .and_then(|line| line.rsplit(' ').next()?.parse().ok())
}

#[tokio::test]
async fn a_half_sent_request_head_is_closed_after_the_header_timeout() {
    use tokio::io::AsyncWriteExt;
    let app = TestApp::spawn_with(&["--header-read-timeout-ms", "200"]).await;
    let mut stalled = connect_from("127.0.0.2", app.addr).await;
    let head = format!("GET /healthz HTTP/1.1\r\nHost: {}\r\n", app.addr);
    stalled.write_all(head.as_bytes()).await.unwrap();
    let received = wait_for_close(&mut stalled).await;
    assert!(
        received.is_empty(),
        "closed without an answer: {}",
        String::from_utf8_lossy(&received)
    );
    // A whole request on a new connection is served as usual.
    let health = reqwest::get(format!("http://{}/healthz", app.addr))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let closed = metric(
        &app,
        "polytomic_mcp_connections_closed_total{reason=\"header_timeout\"}",
    )
    .await;
    assert!(closed >= Some(1.0), "{closed:?}");
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_keep_alive_timeout() {
    use tokio::io::AsyncWriteExt;
    let app = TestApp::spawn_with(&["--keep-alive-timeout-ms", "200"]).await;
    let mut idle = connect_from("127.0.0.2", app.addr).await;
    let request = format!("GET /healthz HTTP/1.1\r\nHost: {}\r\n\r\n", app.addr);
    idle.write_all(request.as_bytes()).await.unwrap();
    let response = read_response(&mut idle).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(
        !response.to_ascii_lowercase().contains("connection: close"),
        "kept alive after the answer: {response}"
    );
    let received = wait_for_close(&mut idle).await;
    assert!(
        received.is_empty(),
        "{}",
        String::from_utf8_lossy(&received)
    );
    let closed = metric(
        &app,
        "polytomic_mcp_connections_closed_total{reason=\"keep_alive_timeout\"}",
    )
    .await;
    assert!(closed >= Some(1.0), "{closed:?}");
}

#[tokio::test]
async fn at_the_connection_cap_a_new_connection_is_answered_not_left_hanging() {
    use tokio::io::AsyncWriteExt;
    // Stalled heads hold their connections for as long as the test needs them.
    let app = TestApp::spawn_with(&[
        "--max-connections",
        "4",
        "--header-read-timeout-ms",
        "300000",
    ])
    .await;
    let head = format!("GET /healthz HTTP/1.1\r\nHost: {}\r\n", app.addr);
    let mut stalled = Vec::new();
    for _ in 0..4 {
        let mut stream = connect_from("127.0.0.2", app.addr).await;
        stream.write_all(head.as_bytes()).await.unwrap();
        stalled.push(stream);
    }
    let request = format!("GET /healthz HTTP/1.1\r\nHost: {}\r\n\r\n", app.addr);
    let mut other = connect_from("127.0.0.3", app.addr).await;
    other.write_all(request.as_bytes()).await.unwrap();
    let refused = read_response(&mut other).await;
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(refused.contains("limit of 4 open connections"), "{refused}");
    // When one stalled client goes away, its connection is freed and health checks are served again.
    drop(stalled.remove(0));
    loop {
        let mut probe = connect_from("127.0.0.3", app.addr).await;
        probe.write_all(request.as_bytes()).await.unwrap();
        let answer = read_response(&mut probe).await;
        if answer.starts_with("HTTP/1.1 200") {
            assert!(answer.contains("\"status\":\"ok\""), "{answer}");
            break;
        }
        assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_stalling_its_bodies_cannot_take_the_slots_others_need() {
    use tokio::io::AsyncWriteExt;
    const STALLED: usize = 300;
    // Default slots (256 server-wide, 64 per address); the stalled bodies never time out during the test.
    let app = TestApp::spawn_with(&["--body-read-timeout-ms", "300000"]).await;
    let head = format!(
        "POST /mcp HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {KEY}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nContent-Length: 1000\r\n\r\n{{",
        app.addr
    );
    let (answers, mut answered) = tokio::sync::mpsc::unbounded_channel();
    let mut held = Vec::new();
    for _ in 0..STALLED {
        let mut stream = connect_from("127.0.0.2", app.addr).await;
        stream.write_all(head.as_bytes()).await.unwrap();
        let answers = answers.clone();
        held.push(tokio::spawn(async move {
            let answer = read_response(&mut stream).await;
            let _ = answers.send(answer);
            stream
        }));
    }
    // Every request beyond the address's 64 slots is refused (after the queue wait), naming the limit.
    for _ in 0..STALLED - 64 {
        let answer = answered.recv().await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 429"), "{answer}");
        assert!(
            answer.contains("already has 64 requests in flight"),
            "{answer}"
        );
    }
    // Meanwhile a client on another address is served.
    let client = reqwest::Client::builder()
        .local_address("127.0.0.3".parse::<std::net::IpAddr>().unwrap())
        .build()
        .unwrap();
    let response = client
        .post(app.mcp_url())
        .header("authorization", format!("Bearer {KEY}"))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(common::initialize_body("2025-11-25").to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["result"]["serverInfo"]["name"], "polytomic-mcp");
    assert!(
        answered.try_recv().is_err(),
        "the 64 stalled requests still hold their slots"
    );
    for task in held {
        task.abort();
    }
}

// ---------------------------------------------------------------- keys Polytomic never issued

/// One stateless JSON-RPC POST to `/mcp` with `bearer`.
async fn post_with_key(app: &TestApp, bearer: &str, body: Value) -> reqwest::Response {
    app.post_mcp(
        &[
            ("authorization", &format!("Bearer {bearer}")),
            ("mcp-protocol-version", "2025-11-25"),
        ],
        body,
    )
    .await
}

fn feedback_call(summary: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "submit_mcp_feedback",
        "arguments": {"category": "bug", "summary": summary}}})
}

async fn stored_feedback(app: &TestApp) -> Vec<polytomic_mcp::store::FeedbackRecord> {
    let store = polytomic_mcp::store::Store::connect(&app.database_url)
        .await
        .unwrap();
    let records = store.list_feedback(None, None, 1000).await.unwrap();
    store.close().await;
    records
}

#[tokio::test]
async fn twenty_made_up_keys_store_no_feedback_and_learn_why_at_once() {
    let app = TestApp::spawn().await;
    for n in 0..20 {
        let junk = format!("junk-token-{n}");
        let response = post_with_key(&app, &junk, feedback_call("spam")).await;
        assert_eq!(response.status(), 401);
        let challenge = response.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            challenge.starts_with("Bearer realm=\"polytomic-mcp\"")
                && challenge.contains("error=\"invalid_token\""),
            "{challenge}"
        );
        let body: Value = response.json().await.unwrap();
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("Polytomic does not accept this API key"),
            "{body}"
        );
    }
    assert!(stored_feedback(&app).await.is_empty());
    assert_eq!(app.upstream.key_checks().len(), 20);
    // A rejected key learns it on its first request, before any tool: `initialize` already gets the 401.
    let response = post_with_key(&app, "junk-token-0", common::initialize_body("2025-11-25")).await;
    assert_eq!(response.status(), 401);
}

#[tokio::test]
async fn a_rejected_key_is_remembered_and_polytomic_is_not_asked_again() {
    let app = TestApp::spawn().await;
    for _ in 0..3 {
        let response =
            post_with_key(&app, "made-up-key", common::initialize_body("2025-11-25")).await;
        assert_eq!(response.status(), 401);
    }
    assert_eq!(app.upstream.key_checks_for("made-up-key"), 1);
    assert!(app.upstream.requests().is_empty());
}

#[tokio::test]
async fn a_valid_key_stores_feedback_with_the_organization_and_user_polytomic_confirmed() {
    let app = TestApp::spawn().await;
    let client = app.client(KEY, &[]).await;
    let result = call(
        &client,
        "submit_mcp_feedback",
        json!({"category": "friction", "summary": "verified"}),
    )
    .await;
    assert_ne!(result.is_error, Some(true), "{}", text_of(&result));
    let records = stored_feedback(&app).await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].organization_id.as_deref(), Some(common::ORG_ID));
    assert_eq!(records[0].user_id.as_deref(), Some(common::USER_ID));
    // One check served the whole session (initialize, tools/call); the key itself never reaches the store.
    assert_eq!(app.upstream.key_checks_for(KEY), 1);
    assert!(!records[0].principal.contains(KEY));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_arriving_together_with_a_new_key_share_one_check() {
    let app = TestApp::spawn().await;
    let key = "pk_test_together_0123456789";
    let responses = futures_util::future::join_all(
        (0..10).map(|_| post_with_key(&app, key, common::initialize_body("2025-11-25"))),
    )
    .await;
    assert!(responses.iter().all(|r| r.status() == 200));
    assert_eq!(app.upstream.key_checks_for(key), 1);
}

#[tokio::test]
async fn a_polytomic_outage_leaves_search_working_and_stores_nothing() {
    let upstream = common::MockUpstream::start().await;
    upstream
        .me_unavailable
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();
    let database_url = format!("sqlite://{}/outage.db", dir.path().display());
    let app = TestApp::spawn_on(upstream, database_url, Some(dir), &[]).await;
    let client = app.client(KEY, &[]).await;
    let search = call(&client, "search", json!({"query": "list syncs"})).await;
    assert_ne!(search.is_error, Some(true), "{}", text_of(&search));
    let feedback = call(
        &client,
        "submit_mcp_feedback",
        json!({"category": "bug", "summary": "during an outage"}),
    )
    .await;
    assert_eq!(feedback.is_error, Some(true));
    assert!(
        text_of(&feedback).contains("nothing was stored"),
        "{}",
        text_of(&feedback)
    );
    assert!(stored_feedback(&app).await.is_empty());
    let metrics = reqwest::get(format!("http://{}/metrics", app.addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("polytomic_mcp_key_checks_total{reason=\"unknown\"} "),
        "{metrics}"
    );
}
