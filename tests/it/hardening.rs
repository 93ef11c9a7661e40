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
