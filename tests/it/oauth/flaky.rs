//! OAuth as real clients meet it on real networks: a refresh retried after its answer was lost, Polytomic's
//! sign-in service failing or hanging while a session's upstream credential has expired, Polytomic rejecting
//! a token or revoking a grant, revocations reaching Polytomic, and all of it across two replicas.

use std::time::Duration;

use super::*;

/// The `polytomic_mcp_oauth_events_total` count of `event` on the server at `addr`.
async fn oauth_events(addr: SocketAddr, event: &str) -> u64 {
    let text = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let prefix = format!("polytomic_mcp_oauth_events_total{{event=\"{event}\"}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .map_or(0, |n| n.trim().parse().unwrap())
}

/// Waits (without a deadline of its own: the test's) until `check` holds, looking every 20 ms.
async fn until<F, Fut>(mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    while !check().await {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn refreshed(server: &Server, flow: &Flow, refresh: &str) -> Value {
    tokens(server.refresh(flow, refresh).await).await
}

fn text(value: &Value, key: &str) -> String {
    value[key].as_str().unwrap().to_owned()
}

async fn refused_with_invalid_grant(response: reqwest::Response) {
    assert_eq!(response.status(), 400);
    assert_eq!(
        response.json::<Value>().await.unwrap()["error"],
        "invalid_grant"
    );
}

/// The access token no longer opens `/mcp`: 401 with `invalid_token`, so the client signs in again.
async fn signed_out(mcp_url: &str, access: &str) {
    let response = raw_mcp(mcp_url, access, &[]).await;
    assert_eq!(response.status(), 401);
    let challenge = response.headers()["www-authenticate"].to_str().unwrap();
    assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
}

// ---------------------------------------------------------------- refresh retries

#[tokio::test]
async fn a_refresh_retried_before_the_new_pair_is_used_gets_that_pair_again() {
    let app = spawn(&[]).await;
    let server = app.server();
    let (flow, issued) = signed_in(&app).await;
    let first = refreshed(&server, &flow, &text(&issued, "refresh_token")).await;

    // The answer was lost; the client sends the same refresh token again, twice.
    for _ in 0..2 {
        let retried = refreshed(&server, &flow, &text(&issued, "refresh_token")).await;
        assert_eq!(retried["refresh_token"], first["refresh_token"]);
        assert_eq!(retried["scope"], first["scope"]);
        assert_eq!(retried["expires_in"], first["expires_in"]);
        assert!(text(&retried, "access_token").starts_with("pmcp_at_"));
    }
    assert_eq!(oauth_events(app.app.addr, "refresh_retry").await, 2);

    // The client carries on with what the retry gave it: signed in, and the rotation goes on.
    let retried = refreshed(&server, &flow, &text(&issued, "refresh_token")).await;
    assert_eq!(
        raw_mcp(&app.mcp_url(), &text(&retried, "access_token"), &[])
            .await
            .status(),
        200
    );
    let next = refreshed(&server, &flow, &text(&retried, "refresh_token")).await;
    assert_eq!(
        raw_mcp(&app.mcp_url(), &text(&next, "access_token"), &[])
            .await
            .status(),
        200
    );
    assert_eq!(oauth_events(app.app.addr, "refresh_reuse").await, 0);
}

#[tokio::test]
async fn a_refresh_token_sent_again_after_the_new_pair_was_used_ends_the_sign_in() {
    let app = spawn(&[]).await;
    let server = app.server();

    // The new access token was used on /mcp.
    let (flow, issued) = signed_in(&app).await;
    let rotated = refreshed(&server, &flow, &text(&issued, "refresh_token")).await;
    let access = text(&rotated, "access_token");
    assert_eq!(raw_mcp(&app.mcp_url(), &access, &[]).await.status(), 200);
    refused_with_invalid_grant(server.refresh(&flow, &text(&issued, "refresh_token")).await).await;
    signed_out(&app.mcp_url(), &access).await;
    refused_with_invalid_grant(
        server
            .refresh(&flow, &text(&rotated, "refresh_token"))
            .await,
    )
    .await;

    // The new refresh token was used.
    let (flow, issued) = signed_in(&app).await;
    let rotated = refreshed(&server, &flow, &text(&issued, "refresh_token")).await;
    let again = refreshed(&server, &flow, &text(&rotated, "refresh_token")).await;
    refused_with_invalid_grant(server.refresh(&flow, &text(&issued, "refresh_token")).await).await;
    refused_with_invalid_grant(server.refresh(&flow, &text(&again, "refresh_token")).await).await;
    signed_out(&app.mcp_url(), &text(&again, "access_token")).await;

    // Another client presents it: not a retry, whoever it is.
    let (flow, issued) = signed_in(&app).await;
    let rotated = refreshed(&server, &flow, &text(&issued, "refresh_token")).await;
    let other = server.register_native("Another Agent").await;
    refused_with_invalid_grant(
        server
            .refresh(&other, &text(&issued, "refresh_token"))
            .await,
    )
    .await;
    refused_with_invalid_grant(
        server
            .refresh(&flow, &text(&rotated, "refresh_token"))
            .await,
    )
    .await;
    assert_eq!(oauth_events(app.app.addr, "refresh_retry").await, 0);
}

#[tokio::test]
async fn a_refresh_retried_after_the_window_ends_the_sign_in() {
    let app = spawn(&["--oauth-refresh-retry-secs", "1"]).await;
    let server = app.server();
    let (flow, issued) = signed_in(&app).await;
    let rotated = refreshed(&server, &flow, &text(&issued, "refresh_token")).await;
    // Past the one-second window (the window is measured from the first use; sleeping longer cannot pass it).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    refused_with_invalid_grant(server.refresh(&flow, &text(&issued, "refresh_token")).await).await;
    signed_out(&app.mcp_url(), &text(&rotated, "access_token")).await;
    refused_with_invalid_grant(
        server
            .refresh(&flow, &text(&rotated, "refresh_token"))
            .await,
    )
    .await;
}

// ---------------------------------------------------------------- Polytomic's sign-in service in trouble

/// Signs in with upstream tokens that expire at once, so the next `execute` must renew them.
async fn signed_in_with_expired_upstream(app: &OAuthApp) -> (Flow, Value) {
    app.provider.expires_in.store(0, Ordering::SeqCst);
    let signed = signed_in(app).await;
    app.provider.expires_in.store(3600, Ordering::SeqCst);
    signed
}

fn me_calls(app: &OAuthApp) -> usize {
    authorizations(&app.provider.requests(), "/api/me").len()
}

/// `initialize` (raw), `tools/list`, `search` and feedback all answer for this token.
async fn everything_but_execute_answers(app: &OAuthApp, access: &str) {
    assert_eq!(raw_mcp(&app.mcp_url(), access, &[]).await.status(), 200);
    let client = mcp_client(&app.mcp_url(), access, &[]).await;
    assert_eq!(client.list_all_tools().await.unwrap().len(), 3);
    let found = call(&client, "search", json!({"query": "list syncs"})).await;
    assert_ne!(found.is_error, Some(true), "{}", text_of(&found));
    let stored = call(
        &client,
        "submit_mcp_feedback",
        json!({"category": "friction", "summary": "the sign-in service is slow"}),
    )
    .await;
    assert_ne!(stored.is_error, Some(true), "{}", text_of(&stored));
    client.cancel().await.unwrap();
}

fn assert_unavailable(result: &rmcp::model::CallToolResult) {
    assert_eq!(result.is_error, Some(true));
    let text = text_of(result);
    assert!(
        text.contains("Polytomic's sign-in service is unavailable") && text.contains("Retry"),
        "{text}"
    );
    assert_eq!(
        result.structured_content.as_ref().unwrap()["refused"],
        "sign_in_unavailable"
    );
}

#[tokio::test]
async fn a_failing_sign_in_service_costs_only_execute_and_it_recovers() {
    let app = spawn(&[]).await;
    let (_, issued) = signed_in_with_expired_upstream(&app).await;
    let access = text(&issued, "access_token");
    app.provider.set_refresh_mode(RefreshMode::Fail);
    let before = me_calls(&app);

    everything_but_execute_answers(&app, &access).await;
    let client = mcp_client(&app.mcp_url(), &access, &[]).await;
    let failed = call(
        &client,
        "execute",
        json!({"method": "GET", "path": "/api/me"}),
    )
    .await;
    assert_unavailable(&failed);
    assert_eq!(me_calls(&app), before, "nothing was sent to Polytomic");
    assert_eq!(
        app.provider.refreshes(),
        1,
        "only execute asked the provider"
    );
    assert_eq!(
        oauth_events(app.app.addr, "upstream_renewal_failed").await,
        1
    );

    // The provider is back: the next call renews and goes through, on the same sign-in.
    app.provider.set_refresh_mode(RefreshMode::Answer);
    let result = call(
        &client,
        "execute",
        json!({"method": "GET", "path": "/api/me"}),
    )
    .await;
    assert_ne!(result.is_error, Some(true), "{}", text_of(&result));
    assert_eq!(result.structured_content.unwrap()["status"], 200);
    client.cancel().await.unwrap();
    assert_eq!(oauth_events(app.app.addr, "upstream_renewed").await, 1);
}

#[tokio::test]
async fn a_hanging_sign_in_service_costs_only_execute_within_the_wait_bound() {
    let app = spawn(&[]).await;
    let (_, issued) = signed_in_with_expired_upstream(&app).await;
    let access = text(&issued, "access_token");
    // Refreshes wait behind a gate that this test never opens.
    app.provider.set_refresh_mode(RefreshMode::Hold);
    let before = me_calls(&app);

    let mcp_url = app.mcp_url();
    let execute = tokio::spawn({
        let access = access.clone();
        async move {
            let client = mcp_client(&mcp_url, &access, &[]).await;
            let result = call(
                &client,
                "execute",
                json!({"method": "GET", "path": "/api/me"}),
            )
            .await;
            client.cancel().await.unwrap();
            result
        }
    });
    // While the provider holds the renewal, everything else answers.
    until(|| async { app.provider.refreshes() == 1 }).await;
    everything_but_execute_answers(&app, &access).await;
    assert_eq!(app.provider.refreshes(), 1, "still the one held renewal");

    // Execute gives up on the provider and says so, instead of hanging until the client's timeout.
    let result = execute.await.unwrap();
    assert_unavailable(&result);
    assert_eq!(me_calls(&app), before, "nothing was sent to Polytomic");
}

#[tokio::test]
async fn polytomic_rejecting_the_token_renews_it_once_and_retries() {
    let app = spawn(&[]).await;
    let (_, issued) = signed_in(&app).await;
    let client = mcp_client(&app.mcp_url(), &text(&issued, "access_token"), &[]).await;
    let first = call(
        &client,
        "execute",
        json!({"method": "GET", "path": "/api/me"}),
    )
    .await;
    assert_ne!(first.is_error, Some(true), "{}", text_of(&first));

    // Polytomic stops accepting the upstream access token long before it expires.
    app.provider.reject_access_tokens();
    let result = call(
        &client,
        "execute",
        json!({"method": "GET", "path": "/api/me"}),
    )
    .await;
    assert_ne!(result.is_error, Some(true), "{}", text_of(&result));
    assert_eq!(result.structured_content.unwrap()["status"], 200);
    client.cancel().await.unwrap();

    let calls = authorizations(&app.provider.requests(), "/api/me");
    let n = calls.len();
    assert_eq!(
        calls[n - 2],
        calls[n - 3],
        "the rejected token was the one in use"
    );
    assert_ne!(
        calls[n - 1],
        calls[n - 2],
        "the retry carried the renewed token"
    );
    assert_eq!(app.provider.refreshes(), 1);
    assert_eq!(oauth_events(app.app.addr, "upstream_rejected").await, 1);
    assert_eq!(oauth_events(app.app.addr, "upstream_renewed").await, 1);
}

async fn assert_sign_in_ended(result: &rmcp::model::CallToolResult) {
    assert_eq!(result.is_error, Some(true));
    let text = text_of(result);
    assert!(text.contains("sign in to Polytomic again"), "{text}");
    assert_eq!(
        result.structured_content.as_ref().unwrap()["refused"],
        "sign_in_ended"
    );
}

#[tokio::test]
async fn a_grant_revoked_at_polytomic_sends_the_client_back_to_sign_in() {
    let app = spawn(&[]).await;

    // Found out by a 401 from Polytomic: the renewal is refused too.
    let (flow, issued) = signed_in(&app).await;
    let access = text(&issued, "access_token");
    app.provider.revoke_every_grant();
    let client = mcp_client(&app.mcp_url(), &access, &[]).await;
    let result = call(
        &client,
        "execute",
        json!({"method": "GET", "path": "/api/me"}),
    )
    .await;
    assert_sign_in_ended(&result).await;
    client.cancel().await.unwrap();
    signed_out(&app.mcp_url(), &access).await;
    refused_with_invalid_grant(
        app.server()
            .refresh(&flow, &text(&issued, "refresh_token"))
            .await,
    )
    .await;

    // Found out when renewing an expired upstream token.
    let (_, issued) = signed_in_with_expired_upstream(&app).await;
    let access = text(&issued, "access_token");
    app.provider.set_refresh_mode(RefreshMode::Refuse);
    let client = mcp_client(&app.mcp_url(), &access, &[]).await;
    let result = call(
        &client,
        "execute",
        json!({"method": "GET", "path": "/api/me"}),
    )
    .await;
    assert_sign_in_ended(&result).await;
    client.cancel().await.unwrap();
    signed_out(&app.mcp_url(), &access).await;
    assert_eq!(oauth_events(app.app.addr, "upstream_grant_gone").await, 2);
}

// ---------------------------------------------------------------- revocation reaches Polytomic

/// The upstream refresh token the provider issued last (the newest sign-in's).
fn newest_upstream_refresh(app: &OAuthApp) -> String {
    app.provider
        .refresh_tokens
        .lock()
        .unwrap()
        .last()
        .unwrap()
        .clone()
}

async fn revoked_upstream(app: &OAuthApp, token: &str) {
    until(|| async {
        app.provider
            .revocations()
            .iter()
            .any(|(t, _, _)| t == token)
    })
    .await;
    let (_, hint, authorization) = app
        .provider
        .revocations()
        .into_iter()
        .find(|(t, _, _)| t == token)
        .unwrap();
    assert_eq!(hint, "refresh_token");
    let basic = base64::engine::general_purpose::STANDARD
        .encode(format!("{UPSTREAM_CLIENT_ID}:{UPSTREAM_CLIENT_SECRET}"));
    assert_eq!(authorization, format!("Basic {basic}"));
    assert!(
        !app.provider
            .refresh_tokens
            .lock()
            .unwrap()
            .contains(&token.to_owned())
    );
}

#[tokio::test]
async fn ending_a_sign_in_here_revokes_its_grant_at_polytomic() {
    let (provider, mock) = Provider::start().await;
    let revoke_url = format!("{}/oauth/revoke", mock.url());
    let app = {
        let dir = tempfile::tempdir().unwrap();
        let database_url = format!("sqlite://{}/oauth.db", dir.path().display());
        let mut flags = oauth_flags(&mock);
        flags.extend(["--signing-key".into(), SIGNING_KEY.into()]);
        flags.extend(["--oauth-revoke-url".into(), revoke_url.clone()]);
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        OAuthApp {
            app: TestApp::spawn_on(mock.clone(), database_url, Some(dir), &flags).await,
            provider,
            http: no_redirects(),
        }
    };
    let server = app.server();

    // RFC 7009 /revoke by the client.
    let (flow, issued) = signed_in(&app).await;
    let upstream = newest_upstream_refresh(&app);
    let revoked = server
        .http
        .post(format!("{}/revoke", server.base))
        .form(&[
            ("token", issued["refresh_token"].as_str().unwrap()),
            ("client_id", flow.client_id.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 200);
    signed_out(&app.mcp_url(), &text(&issued, "access_token")).await;
    revoked_upstream(&app, &upstream).await;

    // Reuse detection.
    let (flow, issued) = signed_in(&app).await;
    let upstream = newest_upstream_refresh(&app);
    let rotated = refreshed(&server, &flow, &text(&issued, "refresh_token")).await;
    let access = text(&rotated, "access_token");
    assert_eq!(raw_mcp(&app.mcp_url(), &access, &[]).await.status(), 200);
    refused_with_invalid_grant(server.refresh(&flow, &text(&issued, "refresh_token")).await).await;
    revoked_upstream(&app, &upstream).await;

    // The operator's `sessions revoke`, with the server's settings.
    let (_, issued) = signed_in(&app).await;
    let upstream = newest_upstream_refresh(&app);
    // Run off the test's thread: the mock provider the command calls is served on it.
    let cli = |args: &[&str]| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_polytomic-mcp"));
        command
            .args(args)
            .env("POLYTOMIC_MCP_DATABASE_URL", &app.app.database_url)
            .env(
                "POLYTOMIC_OAUTH_AUTHORIZE_URL",
                format!("{}/oauth/authorize", mock.url()),
            )
            .env(
                "POLYTOMIC_OAUTH_TOKEN_URL",
                format!("{}/oauth/token", mock.url()),
            )
            .env("POLYTOMIC_OAUTH_CLIENT_ID", UPSTREAM_CLIENT_ID)
            .env("POLYTOMIC_OAUTH_CLIENT_SECRET", UPSTREAM_CLIENT_SECRET)
            .env("POLYTOMIC_OAUTH_REVOKE_URL", &revoke_url)
            .env("POLYTOMIC_MCP_SIGNING_KEY", SIGNING_KEY);
        async move {
            let output = tokio::task::spawn_blocking(move || command.output().unwrap())
                .await
                .unwrap();
            (
                output.status.code(),
                String::from_utf8(output.stdout).unwrap(),
            )
        }
    };
    let (_, listed) = cli(&["sessions", "list", "--format", "json"]).await;
    let listed: Vec<Value> = serde_json::from_str(&listed).unwrap();
    assert_eq!(listed.len(), 1, "the two sign-ins before were ended");
    let session_id = listed[0]["session_id"].as_str().unwrap();
    let (code, out) = cli(&["sessions", "revoke", session_id]).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("1 sign-in(s) revoked"), "{out}");
    assert!(out.contains("1 of 1 revoked at Polytomic too"), "{out}");
    signed_out(&app.mcp_url(), &text(&issued, "access_token")).await;
    revoked_upstream(&app, &upstream).await;

    // The client deletes its registration (RFC 7592): its sign-ins go, here and at Polytomic.
    let registered: Value = server
        .register(json!({
            "client_name": "Leaving Agent",
            "redirect_uris": [LOOPBACK_REDIRECT],
            "token_endpoint_auth_method": "none",
            "application_type": "native"
        }))
        .await
        .json()
        .await
        .unwrap();
    let flow = Flow::new(
        registered["client_id"].as_str().unwrap(),
        "http://127.0.0.1:54321/callback",
    );
    let code = sign_in(&server, &flow, &app.mcp_url()).await;
    let issued = tokens(server.exchange(&flow, &code, &app.mcp_url()).await).await;
    let upstream = newest_upstream_refresh(&app);
    let deleted = server
        .http
        .delete(registered["registration_client_uri"].as_str().unwrap())
        .bearer_auth(registered["registration_access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    signed_out(&app.mcp_url(), &text(&issued, "access_token")).await;
    revoked_upstream(&app, &upstream).await;

    // A provider that fails never holds up or undoes the revocation here.
    app.provider.revoke_fails.store(true, Ordering::SeqCst);
    let (flow, issued) = signed_in(&app).await;
    let revoked = server
        .http
        .post(format!("{}/revoke", server.base))
        .form(&[
            ("token", issued["access_token"].as_str().unwrap()),
            ("client_id", flow.client_id.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 200);
    signed_out(&app.mcp_url(), &text(&issued, "access_token")).await;
    until(|| async { oauth_events(app.app.addr, "upstream_revoke_failed").await == 1 }).await;
    assert_eq!(oauth_events(app.app.addr, "upstream_revoked").await, 3);
    refused_with_invalid_grant(server.refresh(&flow, &text(&issued, "refresh_token")).await).await;
}

// ---------------------------------------------------------------- two replicas, one PostgreSQL database

/// A direct `tools/call` of `execute` to one replica, with the public Host both replicas answer to: the HTTP
/// status and the JSON-RPC result.
async fn execute_on(replica: SocketAddr, public_host: &str, access: &str) -> (u16, Value) {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "execute", "arguments": {"method": "GET", "path": "/api/me"}}});
    let response = reqwest::Client::new()
        .post(format!("http://{replica}/mcp"))
        .header("host", public_host)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-11-25")
        .header("authorization", format!("Bearer {access}"))
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    (status, body["result"].clone())
}

#[tokio::test]
#[ignore = "needs PostgreSQL: set POLYTOMIC_MCP_TEST_POSTGRES_URL and run `cargo test -- --ignored` (.ci/run does)"]
async fn retries_renewals_and_revocations_span_two_replicas_sharing_postgres() {
    let base_url = common::postgres_url();
    let name = format!("pmcp_flaky_{}", uuid::Uuid::new_v4().simple());
    let admin = sqlx::PgPool::connect(&base_url).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&admin)
        .await
        .unwrap();
    let mut database_url = url::Url::parse(&base_url).unwrap();
    database_url.set_path(&format!("/{name}"));
    let database_url = database_url.to_string();

    let (provider, mock) = Provider::start().await;
    // Both replicas answer to one public origin; nothing needs to listen there for these steps.
    let placeholder = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let public_host = format!("127.0.0.1:{}", placeholder.local_addr().unwrap().port());
    drop(placeholder);
    let public_url = format!("http://{public_host}");
    let mcp_url = format!("{public_url}/mcp");
    let mut flags = oauth_flags(&mock);
    flags.extend(["--public-url".to_owned(), public_url.clone()]);
    flags.extend(["--signing-key".to_owned(), SIGNING_KEY.to_owned()]);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let a = TestApp::spawn_on(mock.clone(), database_url.clone(), None, &flags).await;
    let b = TestApp::spawn_on(mock.clone(), database_url.clone(), None, &flags).await;
    let server_a = Server {
        base: format!("http://{}", a.addr),
        http: no_redirects(),
    };
    let server_b = Server {
        base: format!("http://{}", b.addr),
        http: no_redirects(),
    };

    // Signed in on A with an upstream token that has already expired.
    provider.expires_in.store(0, Ordering::SeqCst);
    let flow = server_a.register_native("Replicated Agent").await;
    let code = sign_in(&server_a, &flow, &mcp_url).await;
    let issued = tokens(server_a.exchange(&flow, &code, &mcp_url).await).await;
    provider.expires_in.store(3600, Ordering::SeqCst);

    // A refresh answered by A, its answer lost, retried on B: the same pair.
    let first = refreshed(&server_a, &flow, &text(&issued, "refresh_token")).await;
    let retried = refreshed(&server_b, &flow, &text(&issued, "refresh_token")).await;
    assert_eq!(retried["refresh_token"], first["refresh_token"]);
    assert_eq!(oauth_events(b.addr, "refresh_retry").await, 1);
    let access = text(&retried, "access_token");

    // Both replicas need the renewal at once: A holds the lease and asks the provider, B waits for A's result.
    provider.set_refresh_mode(RefreshMode::Hold);
    let on_a = tokio::spawn({
        let (host, access) = (public_host.clone(), access.clone());
        let addr = a.addr;
        async move { execute_on(addr, &host, &access).await }
    });
    until(|| async { provider.refreshes() == 1 }).await;
    let on_b = tokio::spawn({
        let (host, access) = (public_host.clone(), access.clone());
        let addr = b.addr;
        async move { execute_on(addr, &host, &access).await }
    });
    until(|| async { oauth_events(b.addr, "upstream_renewal_waited").await == 1 }).await;
    provider.open_gate();
    for (status, result) in [on_a.await.unwrap(), on_b.await.unwrap()] {
        assert_eq!(status, 200);
        assert_ne!(result["isError"], true, "{result}");
        assert_eq!(result["structuredContent"]["status"], 200, "{result}");
    }
    assert_eq!(provider.refreshes(), 1, "one renewal for both replicas");
    let calls = authorizations(&provider.requests(), "/api/me");
    let n = calls.len();
    assert_eq!(calls[n - 1], calls[n - 2], "both used the renewed token");
    assert_eq!(oauth_events(a.addr, "upstream_renewed").await, 1);

    // Revoked on B, refused on A.
    let revoked = server_b
        .http
        .post(format!("{}/revoke", server_b.base))
        .form(&[
            ("token", retried["refresh_token"].as_str().unwrap()),
            ("client_id", flow.client_id.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 200);
    let (status, _) = execute_on(a.addr, &public_host, &access).await;
    assert_eq!(status, 401);

    a.stop().await;
    b.stop().await;
    admin.close().await;
    let admin = sqlx::PgPool::connect(&base_url).await.unwrap();
    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&admin)
    .await;
}
