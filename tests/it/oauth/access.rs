//! OAuth grants carry their access: the consent choice, the token's scope, refresh narrowing and refusal,
//! headers that narrow but never widen, the server's cap, and the operator's `sessions` command.

use super::*;

const WRITE_CALL: fn() -> Value =
    || json!({"method": "POST", "path": "/api/syncs/abc/executions", "body": {}});

impl Server {
    /// GET /authorize with the client asking for `scope` (none when `None`); returns the consent page.
    async fn consent_for_scope(
        &self,
        flow: &Flow,
        resource: &str,
        scope: Option<&str>,
    ) -> (String, String, String, String) {
        let challenge = pkce(&flow.verifier);
        let mut params: Vec<(&str, &str)> = vec![
            ("response_type", "code"),
            ("client_id", &flow.client_id),
            ("redirect_uri", &flow.redirect_uri),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
            ("state", &flow.state),
            ("resource", resource),
        ];
        if let Some(scope) = scope {
            params.push(("scope", scope));
        }
        let response = self
            .http
            .get(format!("{}/authorize", self.base))
            .query(&params)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let cookie = response.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_owned();
        let html = response.text().await.unwrap();
        (
            hidden_field(&html, "request_id"),
            hidden_field(&html, "csrf_token"),
            cookie,
            html,
        )
    }
}

/// Signs in with a fresh client that asks for `scope`, the person choosing `access`; returns the flow, the
/// token response and the consent page the person saw.
async fn signed_in_choosing(
    app: &OAuthApp,
    scope: Option<&str>,
    access: Option<&str>,
) -> (Flow, Value, String) {
    let server = app.server();
    let flow = server.register_native("Access Test Agent").await;
    let (request_id, csrf, cookie, html) =
        server.consent_for_scope(&flow, &app.mcp_url(), scope).await;
    let approved = server
        .decide_with_access(&request_id, &csrf, &cookie, "approve", access)
        .await;
    assert_eq!(approved.status(), 303, "{:?}", approved.text().await);
    let to_provider = location(&approved);
    let provider_answer = server.http.get(to_provider).send().await.unwrap();
    let back = server
        .http
        .get(location(&provider_answer))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(back.status(), 302);
    let code = query(&location(&back))["code"].clone();
    let body = tokens(server.exchange(&flow, &code, &app.mcp_url()).await).await;
    (flow, body, html)
}

fn radio_checked(html: &str, value: &str) -> Option<bool> {
    let marker = format!("name=\"access\" value=\"{value}\"");
    let at = html.find(&marker)?;
    let tag_end = html[at..].find('>')? + at;
    Some(html[at..tag_end].contains(" checked"))
}

fn posts(app: &OAuthApp) -> usize {
    app.app
        .upstream
        .requests()
        .iter()
        .filter(|r| r.method != "GET" && r.path.starts_with("/api/"))
        .count()
}

#[tokio::test]
async fn consent_offers_both_and_preselects_read_only_unless_write_was_asked() {
    let app = spawn(&[]).await;
    let server = app.server();
    for (scope, read_checked) in [
        (None, true),
        (Some("polytomic:read polytomic:write"), false),
        (Some("read write"), true),
    ] {
        let flow = server.register_native("Chooser").await;
        let (_, _, _, html) = server.consent_for_scope(&flow, &app.mcp_url(), scope).await;
        assert_eq!(
            radio_checked(&html, "read-only"),
            Some(read_checked),
            "{scope:?}"
        );
        assert_eq!(
            radio_checked(&html, "full-access"),
            Some(!read_checked),
            "{scope:?}"
        );
        assert!(
            html.contains("<fieldset>") && html.contains("<legend>"),
            "{html}"
        );
        assert!(
            html.contains("delete connections, models and syncs"),
            "{html}"
        );
    }
    // A client that asked only to read is offered only read-only.
    let flow = server.register_native("Reader").await;
    let (request_id, csrf, cookie, html) = server
        .consent_for_scope(&flow, &app.mcp_url(), Some("polytomic:read"))
        .await;
    assert_eq!(radio_checked(&html, "full-access"), None, "{html}");
    assert!(html.contains("the app asked only to read"), "{html}");
    let refused = server
        .decide_with_access(&request_id, &csrf, &cookie, "approve", Some("full-access"))
        .await;
    assert_eq!(refused.status(), 400);
    assert!(refused.text().await.unwrap().contains("not offered"));
    let odd = server
        .decide_with_access(&request_id, &csrf, &cookie, "approve", Some("admin"))
        .await;
    assert_eq!(odd.status(), 400);
    assert!(
        odd.text()
            .await
            .unwrap()
            .contains("read-only or full-access")
    );
}

#[tokio::test]
async fn a_read_only_grant_cannot_write_by_any_path() {
    let app = spawn(&[]).await;
    let (flow, body, _) = signed_in_choosing(
        &app,
        Some("polytomic:read polytomic:write"),
        Some("read-only"),
    )
    .await;
    assert_eq!(body["scope"], "polytomic:read");
    let token = body["access_token"].as_str().unwrap();

    // tools/list: execute is read-only and offers only GET and HEAD.
    let client = mcp_client(&app.mcp_url(), token, &[]).await;
    let tools = client.list_all_tools().await.unwrap();
    let execute = tools.iter().find(|t| t.name == "execute").unwrap();
    assert_eq!(
        execute.annotations.as_ref().unwrap().read_only_hint,
        Some(true)
    );
    assert_eq!(
        execute.input_schema["properties"]["method"]["enum"],
        json!(["GET", "HEAD"])
    );

    // A write is refused before anything is sent, with what to tell the person.
    let refused = call(&client, "execute", WRITE_CALL()).await;
    assert_eq!(refused.is_error, Some(true));
    let text = text_of(&refused);
    assert!(
        text.contains("read-only access") && text.contains("choose \"Full access\""),
        "{text}"
    );
    // The header cannot widen the grant.
    let widened = mcp_client(
        &app.mcp_url(),
        token,
        &[("x-polytomic-access-mode", "full-access")],
    )
    .await;
    assert_eq!(
        call(&widened, "execute", WRITE_CALL()).await.is_error,
        Some(true)
    );
    assert_eq!(posts(&app), 0);

    // The session context says what was granted.
    let read = call(
        &client,
        "execute",
        json!({"method": "GET", "path": "/api/me"}),
    )
    .await;
    let context = &read.structured_content.as_ref().unwrap()["context"];
    assert_eq!(context["scope"], "polytomic:read");
    assert_eq!(context["access_mode"], "read-only");

    // A refresh keeps the grant; asking for write is invalid_scope and does not spend the refresh token.
    let refresh = body["refresh_token"].as_str().unwrap();
    let wider = app
        .server()
        .token(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh),
            ("client_id", flow.client_id.as_str()),
            ("scope", "polytomic:read polytomic:write"),
        ])
        .await;
    assert_eq!(wider.status(), 400);
    let error: Value = wider.json().await.unwrap();
    assert_eq!(error["error"], "invalid_scope");
    let kept = tokens(app.server().refresh(&flow, refresh).await).await;
    assert_eq!(kept["scope"], "polytomic:read");
    let client = mcp_client(&app.mcp_url(), kept["access_token"].as_str().unwrap(), &[]).await;
    assert_eq!(
        call(&client, "execute", WRITE_CALL()).await.is_error,
        Some(true)
    );
    assert_eq!(posts(&app), 0);

    // Metrics carry the grant's access.
    let metrics = reqwest::get(format!("{}/metrics", app.issuer()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"tool="execute",outcome="error",operation="",access="read-only""#),
        "{metrics}"
    );
}

#[tokio::test]
async fn full_access_writes_a_header_narrows_and_a_refresh_narrows_for_good() {
    let app = spawn(&[]).await;
    let (flow, body, _) = signed_in_choosing(
        &app,
        Some("polytomic:read polytomic:write"),
        Some("full-access"),
    )
    .await;
    assert_eq!(body["scope"], "polytomic:read polytomic:write");
    let token = body["access_token"].as_str().unwrap().to_owned();
    let client = mcp_client(&app.mcp_url(), &token, &[]).await;
    // Sent to Polytomic (the mock has no sync `abc`, so it answers 404: what matters is that it was sent).
    let written = call(&client, "execute", WRITE_CALL()).await;
    assert!(
        text_of(&written).contains("Polytomic answered 404"),
        "{}",
        text_of(&written)
    );
    assert_eq!(posts(&app), 1);

    // The header narrows this request's session.
    let narrowed = mcp_client(
        &app.mcp_url(),
        &token,
        &[("x-polytomic-access-mode", "read-only")],
    )
    .await;
    let refused = call(&narrowed, "execute", WRITE_CALL()).await;
    assert_eq!(refused.is_error, Some(true));
    assert!(
        text_of(&refused).contains("X-Polytomic-Access-Mode"),
        "{}",
        text_of(&refused)
    );
    assert_eq!(posts(&app), 1);

    // A refresh asking for read only narrows the grant, and at once for the older access token too.
    let narrower = tokens(
        app.server()
            .token(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", body["refresh_token"].as_str().unwrap()),
                ("client_id", flow.client_id.as_str()),
                ("scope", "polytomic:read"),
            ])
            .await,
    )
    .await;
    assert_eq!(narrower["scope"], "polytomic:read");
    let old = mcp_client(&app.mcp_url(), &token, &[]).await;
    assert_eq!(
        call(&old, "execute", WRITE_CALL()).await.is_error,
        Some(true)
    );
    let again = tokens(
        app.server()
            .refresh(&flow, narrower["refresh_token"].as_str().unwrap())
            .await,
    )
    .await;
    assert_eq!(again["scope"], "polytomic:read");
    assert_eq!(posts(&app), 1);
}

#[tokio::test]
async fn a_read_only_server_offers_and_asks_only_for_read() {
    let app = spawn(&["--max-access-mode", "read-only"]).await;
    let response = reqwest::Client::new()
        .post(app.mcp_url())
        .send()
        .await
        .unwrap();
    let challenge = response.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        challenge.contains("scope=\"polytomic:read\""),
        "{challenge}"
    );
    let (_, body, html) = signed_in_choosing(
        &app,
        Some("polytomic:read polytomic:write"),
        Some("read-only"),
    )
    .await;
    assert_eq!(radio_checked(&html, "full-access"), None);
    assert!(html.contains("this server allows reading only"), "{html}");
    assert_eq!(body["scope"], "polytomic:read");
}

#[tokio::test]
async fn operators_list_and_revoke_sessions_by_person_or_client() {
    let app = spawn(&[]).await;
    let (reader, read_body, _) = signed_in_choosing(&app, None, Some("read-only")).await;
    let (_, write_body, _) = signed_in_choosing(&app, None, Some("full-access")).await;
    let database_url = app.app.database_url.clone();
    let cli = |args: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_polytomic-mcp"))
            .args(args)
            .env("POLYTOMIC_MCP_DATABASE_URL", &database_url)
            .output()
            .unwrap();
        (
            output.status.code(),
            String::from_utf8(output.stdout).unwrap(),
            String::from_utf8(output.stderr).unwrap(),
        )
    };
    let (code, out, _) = cli(&["sessions", "list", "--format", "json"]);
    assert_eq!(code, Some(0));
    let listed: Vec<Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(listed.len(), 2, "{out}");
    assert!(
        listed
            .iter()
            .all(|s| s["client_name"] == "Access Test Agent")
    );
    let (_, out, _) = cli(&[
        "sessions",
        "list",
        "--access",
        "full-access",
        "--format",
        "json",
    ]);
    let writers: Vec<Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(writers.len(), 1);
    assert_eq!(writers[0]["scope"], "polytomic:read polytomic:write");
    let (_, table, _) = cli(&["sessions", "list"]);
    assert!(
        table.contains("read-only")
            && table.contains("full-access")
            && table.contains("2 sign-in(s)"),
        "{table}"
    );

    // Cut off the reader's client; the writer's sign-in keeps working.
    let (code, out, _) = cli(&["sessions", "revoke", "--client", &reader.client_id]);
    assert_eq!(code, Some(0));
    assert_eq!(out.trim(), "1 sign-in(s) revoked");
    let cut = raw_mcp(
        &app.mcp_url(),
        read_body["access_token"].as_str().unwrap(),
        &[],
    )
    .await;
    assert_eq!(cut.status(), 401);
    let kept = raw_mcp(
        &app.mcp_url(),
        write_body["access_token"].as_str().unwrap(),
        &[],
    )
    .await;
    assert_eq!(kept.status(), 200);
    let (code, _, err) = cli(&["sessions", "revoke", "--client", &reader.client_id]);
    assert_eq!(code, Some(1));
    assert!(err.contains("no active sign-in matched"), "{err}");
    let (code, _, err) = cli(&["sessions", "revoke"]);
    assert_eq!(code, Some(2), "{err}");
}
