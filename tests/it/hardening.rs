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

#[tokio::test]
async fn a_client_supplied_forwarded_for_line_cannot_dodge_the_address_limit() {
    let app = TestApp::spawn_with(&[
        "--ip-rate-limit-per-minute",
        "2",
        "--trust-forwarded-for",
        "true",
    ])
    .await;
    // The attacker writes a fresh first line each time; the proxy appends the address it saw as its own line.
    let mut statuses = Vec::new();
    for n in 0..4 {
        let forged = format!("198.51.100.{n}");
        let response = post_with_lines(
            &app,
            &[
                ("x-forwarded-for", forged.as_str()),
                ("x-forwarded-for", "203.0.113.66"),
            ],
        )
        .await;
        statuses.push(response.status().as_u16());
    }
    assert_eq!(statuses, [401, 401, 429, 429]);
    // Another client behind the same proxy has its own bucket.
    let other = post_with_lines(&app, &[("x-forwarded-for", "203.0.113.77")]).await;
    assert_eq!(other.status(), 401);
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
