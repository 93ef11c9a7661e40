//! What a stranger with any bearer string can try on `/mcp` (issue 15): forged forwarding headers, repeated
//! Host and Origin headers, broken chunked bodies, look-alike issued tokens, list values for single-valued query
//! parameters. Each test plays the attacker and, where a per-address defence is involved, a legitimate client
//! on another loopback address.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common;

use common::{TestApp, initialize_body};

/// A POST of `initialize` to `/mcp` with the given header lines (a name may repeat), from `app`'s client.
async fn post_with_lines(app: &TestApp, lines: &[(&str, &str)]) -> reqwest::Response {
    let mut headers = reqwest::header::HeaderMap::new();
    for (name, value) in lines {
        headers.append(
            reqwest::header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    reqwest::Client::new()
        .post(app.mcp_url())
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .headers(headers)
        .body(initialize_body("2025-11-25").to_string())
        .send()
        .await
        .unwrap()
}

/// Four requests through a trusted proxy to a server allowing two per address a minute, the `n`th (1–4) with
/// the `X-Forwarded-For` lines `lines(n)`: the server (to try another client on) and the statuses.
async fn four_through_a_trusted_proxy(lines: impl Fn(u32) -> Vec<String>) -> (TestApp, Vec<u16>) {
    common::in_one_minute_window(|| async {
        let app = TestApp::spawn_with(&[
            "--ip-rate-limit-per-minute",
            "2",
            "--trust-forwarded-for",
            "true",
        ])
        .await;
        let mut statuses = Vec::new();
        for n in 1..=4 {
            let values = lines(n);
            let pairs: Vec<(&str, &str)> = values
                .iter()
                .map(|v| ("x-forwarded-for", v.as_str()))
                .collect();
            statuses.push(post_with_lines(&app, &pairs).await.status().as_u16());
        }
        (app, statuses)
    })
    .await
}

#[tokio::test]
async fn a_client_supplied_forwarded_for_line_cannot_dodge_the_address_limit() {
    // The attacker writes a fresh first line each time; the proxy appends the address it saw as its own line.
    let (app, statuses) = four_through_a_trusted_proxy(|n| {
        vec![format!("198.51.100.{n}"), "203.0.113.66".to_owned()]
    })
    .await;
    assert_eq!(statuses, [401, 401, 429, 429]);
    // Another client behind the same proxy has its own bucket.
    let other = post_with_lines(&app, &[("x-forwarded-for", "203.0.113.77")]).await;
    assert_eq!(other.status(), 401);
}

#[tokio::test]
async fn an_ipv6_client_rotating_addresses_within_its_64_shares_one_address_limit() {
    // Behind the trusted proxy, one site uses a fresh address of its /64 for every request.
    let (app, statuses) =
        four_through_a_trusted_proxy(|n| vec![format!("2001:db8:aa:bb:{n:x}:{n:x}:{n:x}:{n:x}")])
            .await;
    assert_eq!(statuses, [401, 401, 429, 429]);
    // A client in the next /64 is someone else.
    let neighbour = post_with_lines(&app, &[("x-forwarded-for", "2001:db8:aa:bc::1")]).await;
    assert_eq!(neighbour.status(), 401);
}

/// The real binary with text logs: the process, its address, its later log lines and its store's directory.
type TextLoggingBinary = (
    std::process::Child,
    String,
    std::sync::mpsc::Receiver<String>,
    tempfile::TempDir,
);

fn start_text_logging_binary(upstream: &str) -> TextLoggingBinary {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_polytomic-mcp"))
        .env("POLYTOMIC_HTTP_PORT", "0")
        .env("POLYTOMIC_MCP_LOG_FORMAT", "text")
        .env("POLYTOMIC_BASE_URL", upstream)
        .env(
            "POLYTOMIC_MCP_DATABASE_URL",
            format!("sqlite://{}/text.db", dir.path().display()),
        )
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let address = loop {
        let line = lines.next().expect("exited before listening").unwrap();
        if line.contains(" listening ") {
            let start = line.find("address=").unwrap() + "address=".len();
            break line[start..].split_whitespace().next().unwrap().to_owned();
        }
    };
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    (child, address, receiver, dir)
}

#[tokio::test]
async fn caller_text_cannot_forge_text_log_lines_or_drive_a_terminal() {
    let upstream = common::MockUpstream::start().await;
    let (mut child, address, lines, _dir) = start_text_logging_binary(&upstream.url());
    let forged = "GET\r\n2030-01-01T00:00:00.000000Z  INFO execute principal=key_admin method=DELETE \u{1b}[31mred";
    let response = reqwest::Client::new()
        .post(format!("http://{address}/mcp"))
        .header("authorization", "Bearer pk_log_injection")
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-11-25")
        .body(
            serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
                "name": "execute", "arguments": {"method": forged, "path": "/api/me"}}})
            .to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // The refusal's audit line is the one that carries the method.
    let audit = loop {
        let line = lines
            .recv_timeout(std::time::Duration::from_secs(20))
            .expect("an audit line for the refused call");
        if line.contains("execute refused") {
            break line;
        }
    };
    child.kill().unwrap();
    let _ = child.wait();
    let rest: Vec<String> = lines.try_iter().collect();
    // The audit line upper-cases the method; the escapes are written after that.
    assert!(
        audit.contains(r"method=GET\r\n2030-01-01T00:00:00.000000Z  INFO EXECUTE"),
        "{audit}"
    );
    assert!(audit.contains(r"\u{1b}[31MRED"), "{audit}");
    assert!(!audit.contains('\u{1b}'), "{audit:?}");
    assert!(
        rest.iter().all(|line| !line.starts_with("2030-01-01")),
        "a forged line: {rest:?}"
    );
}

/// Sends `request` as raw bytes (it must ask for `Connection: close`) and returns the whole answer.
async fn raw_exchange(addr: std::net::SocketAddr, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(20),
        stream.read_to_end(&mut answer),
    )
    .await
    .expect("the server answers and closes")
    .unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn a_second_host_or_origin_header_gets_400_naming_it() {
    let app = TestApp::spawn().await;
    let body = initialize_body("2025-11-25").to_string();
    let request = |extra: &str| {
        format!(
            "POST /mcp HTTP/1.1\r\nHost: {addr}\r\n{extra}Authorization: Bearer pk_hosts\r\n\
             Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n\
             Content-Length: {len}\r\nConnection: close\r\n\r\n{body}",
            addr = app.addr,
            len = body.len(),
        )
    };
    let host = raw_exchange(app.addr, &request("Host: evil.example\r\n")).await;
    assert!(host.starts_with("HTTP/1.1 400"), "{host}");
    assert!(host.contains(r#""header":"host""#), "{host}");
    let same_host_twice =
        raw_exchange(app.addr, &request(&format!("Host: {}\r\n", app.addr))).await;
    assert!(
        same_host_twice.starts_with("HTTP/1.1 400"),
        "{same_host_twice}"
    );
    let origin = format!("http://{}", app.addr);
    let origins = raw_exchange(
        app.addr,
        &request(&format!(
            "Origin: {origin}\r\nOrigin: http://evil.example\r\n"
        )),
    )
    .await;
    assert!(origins.starts_with("HTTP/1.1 400"), "{origins}");
    assert!(origins.contains(r#""header":"origin""#), "{origins}");
    // One of each still passes.
    let fine = raw_exchange(app.addr, &request(&format!("Origin: {origin}\r\n"))).await;
    assert!(fine.starts_with("HTTP/1.1 200"), "{fine}");
}

#[tokio::test]
async fn a_malformed_chunked_body_gets_400_and_an_oversized_one_413() {
    let app = TestApp::spawn_with(&["--max-request-bytes", "2048"]).await;
    let head = format!(
        "POST /mcp HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer pk_chunks\r\nContent-Type: application/json\r\n\
         Accept: application/json, text/event-stream\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        app.addr
    );
    let malformed = raw_exchange(app.addr, &format!("{head}zz-not-hex\r\n{{}}\r\n0\r\n\r\n")).await;
    assert!(malformed.starts_with("HTTP/1.1 400"), "{malformed}");
    assert!(malformed.contains("chunked"), "{malformed}");
    let big = "x".repeat(3000);
    let oversized = raw_exchange(
        app.addr,
        &format!("{head}{:x}\r\n{big}\r\n0\r\n\r\n", big.len()),
    )
    .await;
    assert!(oversized.starts_with("HTTP/1.1 413"), "{oversized}");
}

#[tokio::test]
async fn a_look_alike_issued_token_is_refused_and_never_sent_upstream() {
    let app = TestApp::spawn().await;
    for token in [
        "PMCP_AT_eyJhbGciOiJIUzI1NiJ9.e30.c2ln",
        "Pmcp_At_eyJhbGciOiJIUzI1NiJ9.e30.c2ln",
        "pmcp_rt_0123456789abcdef",
        "PMCP_RT_0123456789abcdef",
    ] {
        let auth = format!("Bearer {token}");
        let response = app
            .post_mcp(
                &[
                    ("authorization", auth.as_str()),
                    ("mcp-protocol-version", "2025-11-25"),
                ],
                serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
                    "name": "execute", "arguments": {"method": "GET", "path": "/api/me"}}}),
            )
            .await;
        assert_eq!(response.status(), 401, "{token}");
    }
    assert!(
        app.upstream.requests().is_empty(),
        "{:?}",
        app.upstream.requests()
    );
}

#[tokio::test]
async fn a_list_for_a_single_valued_query_parameter_is_refused_naming_it() {
    let app = TestApp::spawn().await;
    let client = app.client("pk_query_lists", &[]).await;
    let refused = common::call(
        &client,
        "execute",
        serde_json::json!({"method": "GET", "path": "/api/syncs", "query": {"limit": [5, 500]}}),
    )
    .await;
    assert_eq!(refused.is_error, Some(true));
    let text = common::text_of(&refused);
    assert!(
        text.contains("\"limit\"") && text.contains("one value"),
        "{text}"
    );
    assert!(app.upstream.requests().is_empty());
    // A parameter whose schema is an array takes a list, sent as repeated keys.
    let ids = [
        "9b1deb4d-3b7d-4bad-9bdd-2b0d7b3dcb6d",
        "1b9d6bcd-bbfd-4b2d-9b5d-ab8dfbbd4bed",
    ];
    let listed = common::call(
        &client,
        "execute",
        serde_json::json!({"method": "GET", "path": "/api/bulk/syncs/status", "query": {"sync_id": ids}}),
    )
    .await;
    assert_ne!(listed.is_error, Some(true), "{}", common::text_of(&listed));
    let sent = app.upstream.requests();
    assert_eq!(
        sent.last().unwrap().query.as_deref(),
        Some(format!("sync_id={}&sync_id={}", ids[0], ids[1]).as_str())
    );
}
