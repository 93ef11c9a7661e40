//! The token endpoint's and the registration endpoint's rules that the flow tests do not reach: PKCE verifier
//! shape, unknown grant types, codes and refresh tokens presented by another client, revoking an access token,
//! and deleting a registration.

use super::*;

/// A registered native client that has signed in: (flow, token response).
async fn client_with_tokens(app: &OAuthApp, name: &str) -> (Flow, Value) {
    let server = app.server();
    let flow = server.register_native(name).await;
    let code = sign_in(&server, &flow, &app.mcp_url()).await;
    let issued = tokens(server.exchange(&flow, &code, &app.mcp_url()).await).await;
    (flow, issued)
}

async fn error_of(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    (
        status,
        body["error"].as_str().unwrap_or_default().to_owned(),
    )
}

#[tokio::test]
async fn verifiers_outside_rfc_7636_are_refused_even_when_they_hash_right() {
    let app = spawn(&[]).await;
    let server = app.server();
    // 42 characters (one short), and one with a character outside the unreserved set.
    for verifier in ["a".repeat(42), format!("{}+", "a".repeat(50))] {
        let mut flow = server.register_native("Verifier Test").await;
        flow.verifier = verifier.clone();
        let code = sign_in(&server, &flow, &app.mcp_url()).await;
        let (status, error) = error_of(server.exchange(&flow, &code, &app.mcp_url()).await).await;
        assert_eq!(
            (status, error.as_str()),
            (400, "invalid_grant"),
            "{verifier}"
        );
    }
    // 128 characters is the longest allowed and works.
    let mut flow = server.register_native("Verifier Test").await;
    flow.verifier = "b".repeat(128);
    let code = sign_in(&server, &flow, &app.mcp_url()).await;
    tokens(server.exchange(&flow, &code, &app.mcp_url()).await).await;
}

#[tokio::test]
async fn an_unknown_grant_type_is_unsupported_grant_type() {
    let app = spawn(&[]).await;
    let server = app.server();
    let flow = server.register_native("Grant Test").await;
    for grant in [
        "client_credentials",
        "password",
        "urn:ietf:params:oauth:grant-type:device_code",
    ] {
        let response = server
            .token(&[
                ("grant_type", grant),
                ("client_id", flow.client_id.as_str()),
            ])
            .await;
        let (status, error) = error_of(response).await;
        assert_eq!(
            (status, error.as_str()),
            (400, "unsupported_grant_type"),
            "{grant}"
        );
    }
}

#[tokio::test]
async fn a_code_or_refresh_token_presented_by_another_client_is_refused_and_ends_the_sign_in() {
    let app = spawn(&[]).await;
    let server = app.server();
    let owner = server.register_native("Owner").await;
    let thief = server.register_native("Thief").await;
    // A code used by another client: refused, and what it granted is gone.
    let code = sign_in(&server, &owner, &app.mcp_url()).await;
    let stolen = Flow {
        client_id: thief.client_id.clone(),
        client_secret: None,
        redirect_uri: owner.redirect_uri.clone(),
        verifier: owner.verifier.clone(),
        state: owner.state.clone(),
    };
    let (status, error) = error_of(server.exchange(&stolen, &code, &app.mcp_url()).await).await;
    assert_eq!((status, error.as_str()), (400, "invalid_grant"));
    let (status, _) = error_of(server.exchange(&owner, &code, &app.mcp_url()).await).await;
    assert_eq!(status, 400, "the code is spent");

    // A refresh token used by another client: refused, and the owner's sign-in ends too.
    let (owner, issued) = client_with_tokens(&app, "Owner 2").await;
    let refresh = issued["refresh_token"].as_str().unwrap();
    let (status, error) = error_of(server.refresh(&thief, refresh).await).await;
    assert_eq!((status, error.as_str()), (400, "invalid_grant"));
    let access = issued["access_token"].as_str().unwrap();
    assert_eq!(raw_mcp(&app.mcp_url(), access, &[]).await.status(), 401);
    let (status, _) = error_of(server.refresh(&owner, refresh).await).await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn revoking_an_access_token_ends_its_sign_in() {
    let app = spawn(&[]).await;
    let (flow, issued) = client_with_tokens(&app, "Revoker").await;
    let access = issued["access_token"].as_str().unwrap();
    assert_eq!(raw_mcp(&app.mcp_url(), access, &[]).await.status(), 200);
    let revoked = app
        .http
        .post(format!("{}/revoke", app.issuer()))
        .form(&[
            ("token", access),
            ("token_type_hint", "access_token"),
            ("client_id", flow.client_id.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 200);
    assert_eq!(raw_mcp(&app.mcp_url(), access, &[]).await.status(), 401);
    let refresh = issued["refresh_token"].as_str().unwrap();
    assert_eq!(app.server().refresh(&flow, refresh).await.status(), 400);
}

#[tokio::test]
async fn deleting_a_registration_needs_its_token_and_ends_its_sign_ins() {
    let app = spawn(&[]).await;
    let server = app.server();
    let response = server
        .register(json!({
            "client_name": "Deletable",
            "redirect_uris": [LOOPBACK_REDIRECT],
            "token_endpoint_auth_method": "none",
            "application_type": "native"
        }))
        .await;
    let registration: Value = response.json().await.unwrap();
    let client_id = registration["client_id"].as_str().unwrap();
    let uri = registration["registration_client_uri"].as_str().unwrap();
    let token = registration["registration_access_token"].as_str().unwrap();
    let flow = Flow::new(client_id, "http://127.0.0.1:54321/callback");
    let code = sign_in(&server, &flow, &app.mcp_url()).await;
    let issued = tokens(server.exchange(&flow, &code, &app.mcp_url()).await).await;
    let access = issued["access_token"].as_str().unwrap();

    let unauthenticated = server.http.delete(uri).send().await.unwrap();
    assert_eq!(unauthenticated.status(), 401);
    let wrong = server
        .http
        .delete(uri)
        .bearer_auth("pmcp_reg_wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    assert_eq!(raw_mcp(&app.mcp_url(), access, &[]).await.status(), 200);

    let deleted = server
        .http
        .delete(uri)
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    assert_eq!(raw_mcp(&app.mcp_url(), access, &[]).await.status(), 401);
    let read = server
        .http
        .get(uri)
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 401);
    let again = server
        .authorize_with(&flow, &[("resource", &app.mcp_url())])
        .await;
    assert_eq!(
        again.status(),
        400,
        "a deleted client can no longer start a sign-in"
    );
}

#[tokio::test]
async fn a_token_request_whose_body_trickles_gets_408_instead_of_holding_the_connection() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn(&["--body-read-timeout-ms", "300"]).await;
    let mut stream = tokio::net::TcpStream::connect(app.app.addr).await.unwrap();
    // The headers promise 64 bytes; a third of them arrive and the sender goes quiet.
    let head = format!(
        "POST /token HTTP/1.1\r\nHost: {}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: 64\r\nConnection: close\r\n\r\ngrant_type=refresh_",
        app.app.addr
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    // Only a hang guard: without the body's read time the server would wait for the rest forever.
    tokio::time::timeout(
        std::time::Duration::from_secs(60),
        stream.read_to_end(&mut answer),
    )
    .await
    .expect("the server answers a stalled body and closes")
    .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("body_timeout"), "{answer}");
    // A whole body on the same endpoint is still read and judged on its content.
    let complete = app
        .http
        .post(format!("{}/token", app.issuer()))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", "pmcp_rt_unknown"),
        ])
        .send()
        .await
        .unwrap();
    // (No client credentials: the token endpoint itself answers, as RFC 6749 says.)
    assert_eq!(error_of(complete).await, (401, "invalid_client".to_owned()));
}
