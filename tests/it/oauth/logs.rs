//! End to end, no credential reaches a log line: the real binary, logging JSON at `debug`, serves an API-key
//! session and a whole OAuth sign-in (registration, consent, upstream sign-in, code exchange, calls, refresh,
//! revocation, failures), and its whole output is searched for every secret that passed through it.

use super::*;

#[tokio::test]
async fn no_key_token_code_or_secret_appears_in_any_log_line() {
    let (provider, mock) = Provider::start().await;
    let dir = tempfile::tempdir().unwrap();
    let database_url = format!("sqlite://{}/logs.db", dir.path().display());
    let base = mock.url();
    let authorize_url = format!("{base}/oauth/authorize");
    let token_url = format!("{base}/oauth/token");
    let (child, address, log) = common::start_binary_logged(&[
        ("RUST_LOG", "debug"),
        ("POLYTOMIC_BASE_URL", &base),
        ("POLYTOMIC_MCP_DATABASE_URL", &database_url),
        ("POLYTOMIC_OAUTH_AUTHORIZE_URL", &authorize_url),
        ("POLYTOMIC_OAUTH_TOKEN_URL", &token_url),
        ("POLYTOMIC_OAUTH_CLIENT_ID", UPSTREAM_CLIENT_ID),
        ("POLYTOMIC_OAUTH_CLIENT_SECRET", UPSTREAM_CLIENT_SECRET),
        ("POLYTOMIC_OAUTH_SCOPES", "read write"),
        ("POLYTOMIC_MCP_SIGNING_KEY", SIGNING_KEY),
    ]);
    // Killed on every exit from this test, so a failed assertion cannot leave a server (and the output pipe)
    // behind.
    struct KillOnDrop(std::process::Child);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let child = KillOnDrop(child);
    let server = Server {
        base: format!("http://{address}"),
        http: no_redirects(),
    };
    let mcp_url = format!("http://{address}/mcp");
    let api_key = "pk_live_logsecret_0123456789abcdef";

    // An API-key session: calls, a bad header, a write that Polytomic refuses.
    assert_eq!(raw_mcp(&mcp_url, api_key, &[]).await.status(), 200);
    let bad = raw_mcp(&mcp_url, api_key, &[("x-polytomic-auth-mode", "nope")]).await;
    assert_eq!(bad.status(), 400);
    let client = mcp_client(&mcp_url, api_key, &[]).await;
    call(
        &client,
        "execute",
        json!({"method": "GET", "path": "/api/me"}),
    )
    .await;
    call(&client, "search", json!({"query": "who am I"})).await;

    // A whole OAuth sign-in, use, refresh, a refused reuse and a revocation.
    let registration: Value = server
        .register(json!({
            "client_name": "Log Test",
            "redirect_uris": [LOOPBACK_REDIRECT],
            "application_type": "native"
        }))
        .await
        .json()
        .await
        .unwrap();
    let mut flow = Flow::new(
        registration["client_id"].as_str().unwrap(),
        "http://127.0.0.1:54321/callback",
    );
    flow.client_secret = registration["client_secret"].as_str().map(str::to_owned);
    let code = sign_in(&server, &flow, &mcp_url).await;
    let issued = tokens(server.exchange(&flow, &code, &mcp_url).await).await;
    let access = issued["access_token"].as_str().unwrap();
    let oauth_client = mcp_client(&mcp_url, access, &[]).await;
    call(
        &oauth_client,
        "execute",
        json!({"method": "GET", "path": "/api/me"}),
    )
    .await;
    let mut refresh_form = vec![
        ("grant_type", "refresh_token"),
        ("refresh_token", issued["refresh_token"].as_str().unwrap()),
        ("client_id", flow.client_id.as_str()),
    ];
    let secret = flow.client_secret.clone().unwrap_or_default();
    refresh_form.push(("client_secret", &secret));
    let refreshed = tokens(server.token(&refresh_form).await).await;
    // Once the new pair is used, presenting the old refresh token again is reuse, and refused.
    let new_access = refreshed["access_token"].as_str().unwrap();
    assert_eq!(raw_mcp(&mcp_url, new_access, &[]).await.status(), 200);
    assert_eq!(
        server.token(&refresh_form).await.status(),
        400,
        "reuse is refused"
    );
    let expired = raw_mcp(&mcp_url, "pmcp_at_not.a.token", &[]).await;
    assert_eq!(expired.status(), 401);

    drop(child);
    let lines = log.all_after_exit();
    assert!(lines.len() > 20, "the server logged: {lines:?}");

    let mut secrets: Vec<String> = vec![
        api_key.to_owned(),
        code.clone(),
        access.to_owned(),
        issued["refresh_token"].as_str().unwrap().to_owned(),
        refreshed["access_token"].as_str().unwrap().to_owned(),
        refreshed["refresh_token"].as_str().unwrap().to_owned(),
        registration["registration_access_token"]
            .as_str()
            .unwrap()
            .to_owned(),
        UPSTREAM_CLIENT_SECRET.to_owned(),
        SIGNING_KEY.to_owned(),
    ];
    if !secret.is_empty() {
        secrets.push(secret.clone());
    }
    // Our tokens' signed part alone (a JWT without its prefix) must not show either.
    secrets.push(access.trim_start_matches("pmcp_at_").to_owned());
    secrets.extend(provider.access_tokens.lock().unwrap().iter().cloned());
    secrets.extend(provider.refresh_tokens.lock().unwrap().iter().cloned());
    assert!(secrets.len() >= 12, "{secrets:?}");
    for line in &lines {
        for secret in &secrets {
            assert!(
                !line.contains(secret.as_str()),
                "a secret reached the log: {line}"
            );
        }
    }
}
