//! Staying up under garbage, load, limits and faults, and running as several replicas on one PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{MockUpstream, TestApp, call, initialize_body, text_of};
use serde_json::{Value, json};

const KEY: &str = "pk_test_resilience_0123456789";
/// An upstream path whose answer waits until the test releases it (`MockUpstream::release_held`).
const HELD: &str = "/api/connections/held";

fn unique_key(tag: &str) -> String {
    format!("pk_{tag}_{}", uuid::Uuid::new_v4().simple())
}

async fn raw_post(app: &TestApp, content_type: &str, body: Vec<u8>) -> reqwest::Response {
    reqwest::Client::new()
        .post(app.mcp_url())
        .header("authorization", format!("Bearer {KEY}"))
        .header("content-type", content_type)
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-11-25")
        .body(body)
        .send()
        .await
        .unwrap()
}

/// One stateless `tools/call` of `execute` GET `path`, POSTed as plain JSON to `mcp_url` with the test key.
async fn raw_execute_get(mcp_url: String, path: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(mcp_url)
        .header("authorization", format!("Bearer {KEY}"))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-11-25")
        .body(json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "execute", "arguments": {"method": "GET", "path": path}}}).to_string())
        .send()
        .await
        .unwrap()
}

/// A 4xx, or a JSON-RPC error/acknowledgement: anything but a server failure.
async fn assert_handled(label: &str, response: reqwest::Response) {
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    assert!(!status.is_server_error(), "{label}: {status} {body}");
    if status.is_success() && !body.is_empty() {
        let value: Value =
            serde_json::from_str(&body).unwrap_or_else(|_| panic!("{label}: not JSON: {body}"));
        assert!(
            value.get("error").is_some() || value.get("result").is_some(),
            "{label}: {body}"
        );
    }
}

#[tokio::test]
async fn garbage_gets_4xx_or_json_rpc_errors_and_the_server_stays_healthy() {
    let app = TestApp::spawn().await;
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let deep_object = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{}1{}}}"#,
        "{\"a\":".repeat(200),
        "}".repeat(200)
    );
    let cases: Vec<(&str, &str, Vec<u8>)> = vec![
        ("empty", "application/json", vec![]),
        ("not json", "application/json", b"hello".to_vec()),
        ("invalid utf-8", "application/json", vec![0xff, 0xfe, 0x7b, 0x22, 0xc3, 0x28]),
        ("wrong content type", "text/plain", initialize_body("2025-11-25").to_string().into_bytes()),
        ("json but not an object", "application/json", b"[1,2,3]".to_vec()),
        ("null", "application/json", b"null".to_vec()),
        ("missing method", "application/json", br#"{"jsonrpc":"2.0","id":1}"#.to_vec()),
        ("wrong version", "application/json", br#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#.to_vec()),
        ("object id", "application/json", br#"{"jsonrpc":"2.0","id":{"a":1},"method":"ping"}"#.to_vec()),
        ("boolean id", "application/json", br#"{"jsonrpc":"2.0","id":true,"method":"ping"}"#.to_vec()),
        ("NaN id", "application/json", br#"{"jsonrpc":"2.0","id":NaN,"method":"ping"}"#.to_vec()),
        ("unknown method", "application/json", br#"{"jsonrpc":"2.0","id":1,"method":"no/such"}"#.to_vec()),
        ("tools/call without name", "application/json", br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{}}"#.to_vec()),
        ("unknown tool", "application/json", br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"rm","arguments":{}}}"#.to_vec()),
        ("arguments not an object", "application/json", br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search","arguments":[1]}}"#.to_vec()),
        ("batch", "application/json", br#"[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","id":2,"method":"ping"}]"#.to_vec()),
        ("deeply nested array", "application/json", deep.into_bytes()),
        ("deeply nested params", "application/json", deep_object.into_bytes()),
        ("truncated", "application/json", br#"{"jsonrpc":"2.0","id":1,"method":"tools/li"#.to_vec()),
        ("huge", "application/json", vec![b' '; 3 * 1024 * 1024]),
        ("control characters", "application/json", b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\x00\x07\"}".to_vec()),
    ];
    for (label, content_type, body) in cases {
        let response = raw_post(&app, content_type, body).await;
        if label == "huge" {
            assert_eq!(response.status(), 413, "huge bodies are refused by size");
        }
        if label.starts_with("deeply nested") {
            assert_eq!(response.status(), 400, "{label}");
        }
        assert_handled(label, response).await;
    }
    // Odd methods and headers.
    let http = reqwest::Client::new();
    for method in [
        reqwest::Method::PUT,
        reqwest::Method::PATCH,
        reqwest::Method::GET,
        reqwest::Method::DELETE,
    ] {
        let response = http
            .request(method.clone(), app.mcp_url())
            .header("authorization", format!("Bearer {KEY}"))
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_client_error() || response.status().is_success(),
            "{method}: {}",
            response.status()
        );
    }
    let huge_header = "x".repeat(40 * 1024);
    let response = http
        .post(app.mcp_url())
        .header("authorization", format!("Bearer {KEY}"))
        .header("x-junk", huge_header)
        .send()
        .await
        .unwrap();
    assert!(response.status().is_client_error(), "{}", response.status());

    // Still healthy and still serving.
    assert_eq!(
        http.get(format!("http://{}/healthz", app.addr))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let client = app.client(KEY, &[]).await;
    assert_eq!(client.list_all_tools().await.unwrap().len(), 3);
}

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    fn json_rpc_like() -> impl Strategy<Value = Vec<u8>> {
        let leaf = prop_oneof![
            Just(json!(null)),
            any::<bool>().prop_map(|b| json!(b)),
            any::<i64>().prop_map(|n| json!(n)),
            "\\PC{0,20}".prop_map(|s| json!(s)),
            prop_oneof![
                Just("initialize"),
                Just("tools/list"),
                Just("tools/call"),
                Just("ping"),
                Just("notifications/initialized"),
                Just("server/discover")
            ]
            .prop_map(|s| json!(s)),
        ];
        let value = leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::hash_map(
                    prop_oneof![
                        Just("jsonrpc".to_owned()),
                        Just("id".to_owned()),
                        Just("method".to_owned()),
                        Just("params".to_owned()),
                        Just("name".to_owned()),
                        Just("arguments".to_owned()),
                        "[a-z]{1,6}"
                    ],
                    inner,
                    0..5
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        });
        prop_oneof![
            value.prop_map(|v| v.to_string().into_bytes()),
            prop::collection::vec(any::<u8>(), 0..200),
        ]
    }

    #[test]
    fn the_json_rpc_entry_never_fails_with_a_server_error() {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let app = runtime.block_on(TestApp::spawn());
        let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
            cases: 300,
            ..ProptestConfig::default()
        });
        runner
            .run(&json_rpc_like(), |body| {
                runtime.block_on(async {
                    let response = raw_post(&app, "application/json", body.clone()).await;
                    let status = response.status();
                    prop_assert!(
                        !status.is_server_error(),
                        "{} for {:?}",
                        status,
                        String::from_utf8_lossy(&body)
                    );
                    Ok(())
                })
            })
            .unwrap();
        runtime.block_on(async {
            let health = reqwest::get(format!("http://{}/healthz", app.addr))
                .await
                .unwrap();
            assert_eq!(health.status(), 200);
        });
    }
}

#[tokio::test]
async fn a_principal_over_its_limit_gets_a_tool_error_then_429() {
    let (app, slowed, last) = common::in_one_minute_window(|| async {
        let app = TestApp::spawn_with(&["--rate-limit-per-minute", "4"]).await;
        let key = unique_key("limit");
        let client = app.client(&key, &[]).await;
        // initialize and notifications count too; go until the limit shows in a tool result.
        let mut slowed = None;
        for _ in 0..6 {
            let result = call(&client, "search", json!({"query": "syncs"})).await;
            if result.is_error == Some(true) {
                slowed = Some(text_of(&result));
                break;
            }
        }
        // Far over the limit, HTTP itself answers 429 with Retry-After.
        let mut last = None;
        for _ in 0..10 {
            let response = app
                .post_mcp(
                    &[("authorization", &format!("Bearer {key}"))],
                    initialize_body("2025-11-25"),
                )
                .await;
            if response.status() == 429 {
                last = Some(response);
                break;
            }
        }
        (app, slowed, last)
    })
    .await;
    let text = slowed.expect("a tool error once over the limit");
    assert!(
        text.contains("Slow down") && text.contains("wait"),
        "{text}"
    );
    let response = last.expect("429 far over the limit");
    assert!(
        response.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            <= 60
    );
    // Another credential is unaffected.
    let other = app.client(&unique_key("other"), &[]).await;
    assert_ne!(
        call(&other, "search", json!({"query": "syncs"}))
            .await
            .is_error,
        Some(true)
    );
}

#[tokio::test]
async fn one_address_over_its_limit_gets_429_before_authentication() {
    let (app, statuses) = common::in_one_minute_window(|| async {
        let app = TestApp::spawn_with(&["--ip-rate-limit-per-minute", "3"]).await;
        let mut statuses = Vec::new();
        for _ in 0..5 {
            let response = app.post_mcp(&[], initialize_body("2025-11-25")).await;
            statuses.push(response.status().as_u16());
        }
        (app, statuses)
    })
    .await;
    assert_eq!(statuses, [401, 401, 401, 429, 429]);
    // Health checks are not limited.
    assert_eq!(
        reqwest::get(format!("http://{}/healthz", app.addr))
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn at_the_concurrency_limit_extra_requests_are_shed_with_503() {
    // The extra request waits 200 ms for a slot; the held call keeps the only one until the test lets it go.
    let app =
        TestApp::spawn_with(&["--max-concurrent-requests", "1", "--queue-wait-ms", "200"]).await;
    let url = app.mcp_url();
    let auth = format!("Bearer {KEY}");
    let slow = tokio::spawn(async move { raw_execute_get(url, HELD).await.status() });
    // Once its upstream request has arrived, the held call has the slot.
    app.upstream.wait_for_requests(HELD, 1).await;
    let shed = app
        .post_mcp(
            &[("authorization", auth.as_str())],
            initialize_body("2025-11-25"),
        )
        .await;
    assert_eq!(shed.status(), 503);
    assert_eq!(
        shed.headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    app.upstream.release_held();
    assert_eq!(
        slow.await.unwrap(),
        200,
        "the request in flight still completes"
    );
    let after = app
        .post_mcp(
            &[("authorization", auth.as_str())],
            initialize_body("2025-11-25"),
        )
        .await;
    assert_eq!(after.status(), 200);
    let metrics = reqwest::get(format!("http://{}/metrics", app.addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("polytomic_mcp_load_shed_total 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_body_that_trickles_in_gets_408_and_frees_its_slot() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = TestApp::spawn_with(&[
        "--max-concurrent-requests",
        "1",
        "--queue-wait-ms",
        "0",
        "--body-read-timeout-ms",
        "2000",
    ])
    .await;
    let auth = format!("Bearer {KEY}");
    // Headers promise 100 bytes of body; only 10 come.
    let mut slow = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let head = format!(
        "POST /mcp HTTP/1.1\r\nHost: {}\r\nAuthorization: {auth}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nContent-Length: 100\r\n\r\n{{\"jsonrpc\"",
        app.addr
    );
    let started = Instant::now();
    slow.write_all(head.as_bytes()).await.unwrap();
    // The slow sender holds the only slot while its body is awaited: the gauge shows it (the 2 s body
    // timeout is the window in which the test must see it; a /metrics read takes milliseconds).
    common::wait_for_metric(app.addr, "polytomic_mcp_requests_in_flight", 1.0).await;
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    while !String::from_utf8_lossy(&answer).contains("body_timeout") {
        let read = tokio::time::timeout(common::HANG_GUARD, slow.read(&mut buffer))
            .await
            .expect("an answer before the hang guard")
            .unwrap();
        assert!(
            read > 0,
            "closed without an answer: {}",
            String::from_utf8_lossy(&answer)
        );
        answer.extend_from_slice(&buffer[..read]);
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("2000 ms"), "{answer}");
    // Not before the timeout (a lower bound, which load cannot break).
    assert!(started.elapsed() >= Duration::from_millis(2000));
    // The slot is free again: with no queue wait, a request gets it at once or is refused.
    common::wait_for_metric(app.addr, "polytomic_mcp_requests_in_flight", 0.0).await;
    let served = app
        .post_mcp(
            &[("authorization", auth.as_str())],
            initialize_body("2025-11-25"),
        )
        .await;
    assert_eq!(served.status(), 200);
}

#[tokio::test]
async fn at_the_concurrency_limit_a_request_waits_for_a_slot_within_the_queue_time() {
    // One slot, held by a call until the test lets it go; the second call may wait up to 60 s for it.
    let app =
        TestApp::spawn_with(&["--max-concurrent-requests", "1", "--queue-wait-ms", "60000"]).await;
    let url = app.mcp_url();
    let call = |path: &'static str| {
        let url = url.clone();
        tokio::spawn(async move { raw_execute_get(url, path).await.status() })
    };
    let slow = call(HELD);
    app.upstream.wait_for_requests(HELD, 1).await;
    let queued = call("/api/me");
    common::wait_for_metric(app.addr, "polytomic_mcp_requests_queued", 1.0).await;
    assert!(
        !app.upstream.requests().iter().any(|r| r.path == "/api/me"),
        "the queued call waits for the slot before doing anything"
    );
    app.upstream.release_held();
    assert_eq!(slow.await.unwrap(), 200);
    assert_eq!(
        queued.await.unwrap(),
        200,
        "the queued request is served once the slot frees"
    );
    let order: Vec<String> = app
        .upstream
        .requests()
        .into_iter()
        .map(|r| r.path)
        .collect();
    assert_eq!(order, [HELD, "/api/me"]);
    assert_eq!(
        common::metric(app.addr, "polytomic_mcp_load_shed_total").await,
        Some(0.0)
    );
}

#[tokio::test]
async fn an_unreachable_database_at_start_up_is_retried_then_named() {
    let dir = tempfile::tempdir().unwrap();
    let _ = dir;
    let config = <polytomic_mcp::config::Config as clap::Parser>::parse_from([
        "polytomic-mcp",
        "--database-url",
        "postgres://postgres@127.0.0.1:1/none",
        "--database-wait-secs",
        "1",
    ]);
    let started = Instant::now();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let error = polytomic_mcp::run(config, listener, tokio_util::sync::CancellationToken::new())
        .await
        .unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains("POLYTOMIC_MCP_DATABASE_URL") && message.contains("not reachable"),
        "{message}"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "it retried before giving up"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}

/// A TCP forwarder to PostgreSQL that the test can cut, to take the database away from a running server.
struct CuttableProxy {
    addr: std::net::SocketAddr,
    stop: tokio_util::sync::CancellationToken,
}

async fn cuttable_proxy(target: &str) -> CuttableProxy {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let (target, token) = (target.to_owned(), stop.clone());
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = token.cancelled() => return,
                accepted = listener.accept() => {
                    let Ok((mut inbound, _)) = accepted else { return };
                    let (target, token) = (target.clone(), token.clone());
                    tokio::spawn(async move {
                        let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await else { return };
                        tokio::select! {
                            _ = token.cancelled() => {}
                            _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        }
                    });
                }
            }
        }
    });
    CuttableProxy { addr, stop }
}

#[tokio::test]
#[ignore = "needs PostgreSQL: set POLYTOMIC_MCP_TEST_POSTGRES_URL and run `cargo test -- --ignored` (.ci/run does)"]
async fn when_the_database_goes_away_readiness_fails_api_calls_work_and_feedback_is_refused() {
    let pg = common::postgres_url();
    let url = url::Url::parse(&pg).unwrap();
    let target = format!("{}:{}", url.host_str().unwrap(), url.port().unwrap_or(5432));
    let proxy = cuttable_proxy(&target).await;
    let mut via_proxy = url.clone();
    via_proxy.set_port(Some(proxy.addr.port())).unwrap();
    let upstream = MockUpstream::start().await;
    let app = TestApp::spawn_on(upstream, via_proxy.to_string(), None, &[]).await;
    let key = unique_key("outage");
    let client = app.client(&key, &[]).await;
    let ready = reqwest::get(format!("http://{}/readyz", app.addr))
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);

    proxy.stop.cancel();
    let ready = common::wait_until("/readyz to fail", || async {
        let ready = reqwest::get(format!("http://{}/readyz", app.addr))
            .await
            .unwrap();
        (ready.status() == 503).then_some(ready)
    })
    .await;
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["store"], "unreachable");

    let started = Instant::now();
    let result = call(
        &client,
        "execute",
        json!({"method": "GET", "path": "/api/me"}),
    )
    .await;
    assert_ne!(
        result.is_error,
        Some(true),
        "API-key calls need no store: {}",
        text_of(&result)
    );
    // The shared rate-limit counter gives up after 250 ms and counts locally; were the call to wait for the
    // store instead, it would wait out the pool's 5 s acquire timeout. The bound sits between the two, far
    // enough from the first that load does not reach it.
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "a sick database does not hold API calls up to the store's timeout: {:?}",
        started.elapsed()
    );
    let search = call(&client, "search", json!({"query": "list syncs"})).await;
    assert_ne!(search.is_error, Some(true));
    let feedback = call(
        &client,
        "submit_mcp_feedback",
        json!({"category": "bug", "summary": "db down"}),
    )
    .await;
    assert_eq!(feedback.is_error, Some(true));
    assert!(
        text_of(&feedback).contains("nothing was saved"),
        "{}",
        text_of(&feedback)
    );
}

#[tokio::test]
async fn sigterm_lets_the_request_in_flight_finish_then_exits() {
    let upstream = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let database_url = format!("sqlite://{}/drain.db", dir.path().display());
    let upstream_url = upstream.url();
    let (mut child, address, log) = common::start_binary_logged(&[
        ("POLYTOMIC_MCP_DATABASE_URL", &database_url),
        ("POLYTOMIC_BASE_URL", &upstream_url),
    ]);
    let url = format!("http://{address}/mcp");
    let in_flight = tokio::spawn(async move {
        let response = raw_execute_get(url, HELD).await;
        (response.status(), response.text().await.unwrap())
    });
    upstream.wait_for_requests(HELD, 1).await;
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    // The server is draining with the call still held at the upstream; only then does the call go on.
    log.wait_for_line("the shutdown notice", |line| {
        line.contains("shutting down: draining in-flight requests")
    })
    .await;
    assert!(!in_flight.is_finished());
    upstream.release_held();
    let (code, body) = in_flight.await.unwrap();
    assert_eq!(code, 200, "{body}");
    let reply: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        reply["result"]["structuredContent"]["status"], 200,
        "{body}"
    );
    let started = Instant::now();
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        assert!(
            started.elapsed() < common::HANG_GUARD,
            "did not exit after draining"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "{exit:?}");
    // Log lines are written in batches; the last batch must still reach stdout before the process exits.
    let lines = log.all_after_exit();
    let audit = lines
        .iter()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|event| event["message"] == "execute")
        .unwrap_or_else(|| panic!("no audit line for the drained call in {lines:#?}"));
    assert_eq!(audit["path"], "/api/connections/{id}");
    assert_eq!(audit["status"], "200");
    assert!(
        lines
            .last()
            .is_some_and(|line| line.contains("\"stopped\"")),
        "the final line is the exit notice: {lines:#?}"
    );
}

/// Resident memory of a process, from /proc (Linux), in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test]
async fn hundreds_of_concurrent_clients_get_every_answer_with_bounded_memory() {
    const CLIENTS: usize = 200;
    const CALLS: usize = 5;
    let upstream = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let database_url = format!("sqlite://{}/load.db", dir.path().display());
    let upstream_url = upstream.url();
    // The clients all connect from 127.0.0.1 but stand for 200 people: the per-address in-flight cap (64) would
    // treat them as one client, so it is set to the server-wide limit here, as benches/load.sh does.
    let (mut child, address) = common::start_binary(&[
        ("POLYTOMIC_MCP_DATABASE_URL", &database_url),
        ("POLYTOMIC_BASE_URL", &upstream_url),
        ("POLYTOMIC_MCP_MAX_CONCURRENT_REQUESTS_PER_IP", "256"),
        ("RUST_LOG", "warn,polytomic_mcp=info"),
    ]);
    let pid = child.id();
    let idle = rss_kib(pid);

    let started = Instant::now();
    let mut tasks = Vec::new();
    for n in 0..CLIENTS {
        let address = address.clone();
        tasks.push(tokio::spawn(async move {
            use rmcp::ServiceExt;
            use rmcp::transport::StreamableHttpClientTransport;
            use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
            let config =
                StreamableHttpClientTransportConfig::with_uri(format!("http://{address}/mcp"))
                    .auth_header(format!("pk_load_{n}"));
            let transport =
                StreamableHttpClientTransport::with_client(reqwest::Client::new(), config);
            let client = rmcp::model::ClientConfig::default()
                .serve(transport)
                .await
                .unwrap();
            let mut ok = 0;
            for i in 0..CALLS {
                let result = if i % 2 == 0 {
                    call(
                        &client,
                        "search",
                        json!({"query": "why did my last sync fail"}),
                    )
                    .await
                } else {
                    call(
                        &client,
                        "execute",
                        json!({"method": "GET", "path": "/api/me"}),
                    )
                    .await
                };
                let good = result.is_error != Some(true)
                    && (i % 2 == 0
                        || result.structured_content.as_ref().unwrap()["body"]["data"]["email"]
                            == "ada@example.com");
                if good {
                    ok += 1;
                }
            }
            ok
        }));
    }
    let mut ok = 0;
    for task in tasks {
        ok += tokio::time::timeout(Duration::from_secs(60), task)
            .await
            .expect("bounded time")
            .unwrap();
    }
    let elapsed = started.elapsed();
    let loaded = rss_kib(pid);
    child.kill().unwrap();
    child.wait().unwrap();
    println!(
        "{CLIENTS} clients x {CALLS} calls in {elapsed:?}; RSS idle {idle} KiB, after load {loaded} KiB"
    );
    assert_eq!(ok, CLIENTS * CALLS, "every call answered correctly");
    assert!(loaded < 150 * 1024, "RSS after load {loaded} KiB");
}

#[tokio::test]
#[ignore = "needs PostgreSQL: set POLYTOMIC_MCP_TEST_POSTGRES_URL and run `cargo test -- --ignored` (.ci/run does)"]
async fn two_replicas_on_one_postgres_serve_one_client_alternately() {
    let pg = common::postgres_url();
    let upstream = MockUpstream::start().await;
    let flags = ["--rate-limit-per-minute", "10", "--feedback-per-hour", "3"];
    let a = TestApp::spawn_on(upstream.clone(), pg.clone(), None, &flags).await;
    let b = TestApp::spawn_on(upstream.clone(), pg.clone(), None, &flags).await;
    let key = unique_key("replicas");
    let on_a = a.client(&key, &[]).await; // initialize counts once on A
    let on_b = b.client(&key, &[]).await; // and once on B

    // Calls alternate between the replicas; each answers fully.
    let search = call(&on_a, "search", json!({"query": "start a bulk sync"})).await;
    assert_ne!(search.is_error, Some(true));
    let me = call(
        &on_b,
        "execute",
        json!({"method": "GET", "path": "/api/me"}),
    )
    .await;
    assert_eq!(me.structured_content.unwrap()["status"], 200);

    // Feedback stored through A is visible through B's store, and the hourly limit is shared.
    let first = call(
        &on_a,
        "submit_mcp_feedback",
        json!({"category": "other", "summary": "via A"}),
    )
    .await;
    let id = first.structured_content.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let second = call(
        &on_b,
        "submit_mcp_feedback",
        json!({"category": "other", "summary": "via B"}),
    )
    .await;
    assert_ne!(second.is_error, Some(true));
    let store = polytomic_mcp::store::Store::connect(&pg).await.unwrap();
    assert!(store.get_feedback(&id).await.unwrap().is_some());
    let third = call(
        &on_a,
        "submit_mcp_feedback",
        json!({"category": "other", "summary": "via A again"}),
    )
    .await;
    assert_ne!(third.is_error, Some(true), "{}", text_of(&third));
    // The fourth in the hour is refused by B, which stored only one of the three itself.
    let fourth = call(
        &on_b,
        "submit_mcp_feedback",
        json!({"category": "other", "summary": "one too many"}),
    )
    .await;
    assert_eq!(fourth.is_error, Some(true), "{}", text_of(&fourth));
    assert!(
        text_of(&fourth).contains("(limit 3)"),
        "{}",
        text_of(&fourth)
    );

    // The shared per-minute limit, with a fresh key per run so each run starts from zero. Ten requests are
    // allowed this minute across both replicas: each client's initialize and initialized notification (four),
    // then six calls alternating between the replicas; the seventh is refused. With per-replica counting each
    // replica would allow five calls of its own, ten in all.
    let (a_ref, b_ref) = (&a, &b);
    let allowed = common::in_one_minute_window(|| async move {
        let key = unique_key("replicas_limit");
        let on_a = a_ref.client(&key, &[]).await;
        let on_b = b_ref.client(&key, &[]).await;
        let mut allowed = 0;
        for n in 0..10 {
            let client = if n % 2 == 0 { &on_a } else { &on_b };
            let result = call(client, "search", json!({"query": "list syncs"})).await;
            if result.is_error == Some(true) {
                assert!(
                    text_of(&result).contains("Slow down"),
                    "{}",
                    text_of(&result)
                );
                break;
            }
            allowed += 1;
        }
        allowed
    })
    .await;
    assert_eq!(allowed, 6, "the per-principal limit holds across replicas");
    let _ = (a.stop().await, b.stop().await);
}
