//! OAuth end to end over real sockets: a mock Polytomic OAuth provider (authorize redirects straight back with a
//! code, the token endpoint checks PKCE and rotates refresh tokens, `/api/me` accepts only its own tokens,
//! `/oauth/revoke` records RFC 7009 revocations; refreshes can be made to fail, hang or be refused, and a grant
//! can be revoked at the provider), the server's discovery, registration, consent, callback, token and
//! revocation endpoints, and MCP calls with the issued token through the rmcp client.
//!
//! Client ID Metadata Documents are served over https from a loopback listener in this file, with a
//! certificate from a CA made per test. The server fetches them only when started through the test-only entry
//! point `polytomic_mcp::testing` (the `test-hooks` feature, on only for this crate's own tests), which trusts
//! that CA and lets loopback through the address rule; the production `run` refuses them before any fetch.
//!
//! The two-replica test needs PostgreSQL (`POLYTOMIC_MCP_TEST_POSTGRES_URL`; ignored unless run with `--ignored`,
//! as `.ci/run` does): it creates a fresh database, puts
//! two servers on it behind a small round-robin TCP balancer, and walks one flow across both.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common;

mod access;
mod edges;
mod flaky;
mod logs;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::{MockUpstream, ORG_ID, Recorded, TestApp, call, text_of};
use rmcp::ServiceExt;
use rmcp::model::ClientConfig;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;

const UPSTREAM_CLIENT_ID: &str = "mcp-upstream-client";
const UPSTREAM_CLIENT_SECRET: &str = "upstream-client-secret";
const SIGNING_KEY: &str = "test-signing-key-0123456789abcdef-0123456789";
const LOOPBACK_REDIRECT: &str = "http://127.0.0.1/callback";

// ---------------------------------------------------------------- the mock Polytomic OAuth provider

#[derive(Clone, Default)]
struct Provider {
    seen: Arc<Mutex<Vec<Recorded>>>,
    /// The server's API-key checks, kept apart from the sign-in traffic as in the common mock.
    key_checks: Arc<Mutex<Vec<Recorded>>>,
    /// code → (code_challenge, redirect_uri)
    codes: Arc<Mutex<HashMap<String, (String, String)>>>,
    refresh_tokens: Arc<Mutex<Vec<String>>>,
    access_tokens: Arc<Mutex<Vec<String>>>,
    counter: Arc<AtomicUsize>,
    /// `expires_in` of issued upstream access tokens.
    expires_in: Arc<AtomicUsize>,
    /// How `grant_type=refresh_token` requests are answered.
    refresh_mode: Arc<Mutex<RefreshMode>>,
    /// Opens the gate that [`RefreshMode::Hold`] refreshes wait behind.
    gate: Arc<tokio::sync::watch::Sender<bool>>,
    /// Revocation requests (RFC 7009): (token, token_type_hint, Authorization header).
    revocations: Arc<Mutex<Vec<(String, String, String)>>>,
    /// `/oauth/revoke` answers 503 when set.
    revoke_fails: Arc<std::sync::atomic::AtomicBool>,
}

/// How the mock provider answers refreshes (sign-in itself always works).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum RefreshMode {
    #[default]
    Answer,
    /// 503, as a provider in trouble.
    Fail,
    /// Wait until the test opens the gate (never, for a provider that hangs), then answer.
    Hold,
    /// `invalid_grant`, as for a grant revoked at the provider.
    Refuse,
}

impl Provider {
    async fn start() -> (Provider, MockUpstream) {
        polytomic_mcp::install_crypto_provider();
        let provider = Provider::default();
        provider.expires_in.store(3600, Ordering::SeqCst);
        let app = Router::new()
            .route("/oauth/authorize", get(provider_authorize))
            .route("/oauth/token", post(provider_token))
            .route("/oauth/revoke", post(provider_revoke))
            .route("/api/me", get(provider_me))
            .fallback(any(|| async { StatusCode::NOT_FOUND }))
            .layer(axum::middleware::from_fn_with_state(
                provider.clone(),
                provider_record,
            ))
            .with_state(provider.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let mock = MockUpstream {
            seen: provider.seen.clone(),
            key_checks: provider.key_checks.clone(),
            addr: Some(addr),
            ..Default::default()
        };
        (provider, mock)
    }

    fn requests(&self) -> Vec<Recorded> {
        self.seen.lock().unwrap().clone()
    }

    fn set_refresh_mode(&self, mode: RefreshMode) {
        *self.refresh_mode.lock().unwrap() = mode;
    }

    /// Lets held refreshes through.
    fn open_gate(&self) {
        self.gate.send_replace(true);
    }

    /// Revokes every grant at the provider: its access and refresh tokens stop working.
    fn revoke_every_grant(&self) {
        self.access_tokens.lock().unwrap().clear();
        self.refresh_tokens.lock().unwrap().clear();
    }

    /// Polytomic stops accepting the access tokens it issued (the refresh tokens still work).
    fn reject_access_tokens(&self) {
        self.access_tokens.lock().unwrap().clear();
    }

    fn revocations(&self) -> Vec<(String, String, String)> {
        self.revocations.lock().unwrap().clone()
    }

    /// Refresh requests received so far.
    fn refreshes(&self) -> usize {
        self.requests()
            .iter()
            .filter(|r| {
                r.path == "/oauth/token"
                    && String::from_utf8_lossy(&r.body).contains("grant_type=refresh_token")
            })
            .count()
    }

    fn next(&self, prefix: &str) -> String {
        format!(
            "{prefix}{}",
            self.counter.fetch_add(1, Ordering::SeqCst) + 1
        )
    }
}

async fn provider_record(
    State(provider): State<Provider>,
    request: Request,
    next: axum::middleware::Next,
) -> Response {
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    let key_check = parts
        .headers
        .get("user-agent")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|agent| agent.contains("(key-check)"));
    let log = if key_check {
        &provider.key_checks
    } else {
        &provider.seen
    };
    log.lock().unwrap().push(Recorded {
        peer: None,
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        headers: parts.headers.clone(),
        body: bytes.clone(),
    });
    next.run(Request::from_parts(parts, axum::body::Body::from(bytes)))
        .await
}

/// Signs the person in at once and redirects back with a code, as a provider with a live session does.
async fn provider_authorize(
    State(provider): State<Provider>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    assert_eq!(params["client_id"], UPSTREAM_CLIENT_ID);
    assert_eq!(params["response_type"], "code");
    assert_eq!(params["code_challenge_method"], "S256");
    let code = provider.next("up_code_");
    provider.codes.lock().unwrap().insert(
        code.clone(),
        (
            params["code_challenge"].clone(),
            params["redirect_uri"].clone(),
        ),
    );
    let mut location = url::Url::parse(&params["redirect_uri"]).unwrap();
    location
        .query_pairs_mut()
        .append_pair("code", &code)
        .append_pair("state", &params["state"]);
    (
        StatusCode::FOUND,
        [(axum::http::header::LOCATION, location.to_string())],
    )
        .into_response()
}

async fn provider_token(
    State(provider): State<Provider>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD
            .encode(format!("{UPSTREAM_CLIENT_ID}:{UPSTREAM_CLIENT_SECRET}"))
    );
    let error =
        |code: &str| (StatusCode::BAD_REQUEST, axum::Json(json!({"error": code}))).into_response();
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(basic.as_str()) {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"error": "invalid_client"})),
        )
            .into_response();
    }
    match form.get("grant_type").map(String::as_str) {
        Some("authorization_code") => {
            let Some((challenge, redirect)) = provider.codes.lock().unwrap().remove(&form["code"])
            else {
                return error("invalid_grant");
            };
            if form.get("redirect_uri") != Some(&redirect) {
                return error("invalid_grant");
            }
            let verifier = form.get("code_verifier").cloned().unwrap_or_default();
            if pkce(&verifier) != challenge {
                return error("invalid_grant");
            }
        }
        Some("refresh_token") => {
            let mode = *provider.refresh_mode.lock().unwrap();
            match mode {
                RefreshMode::Answer => {}
                RefreshMode::Fail => {
                    return (
                        StatusCode::SERVICE_UNAVAILABLE,
                        axum::Json(json!({"error": "temporarily_unavailable"})),
                    )
                        .into_response();
                }
                RefreshMode::Refuse => return error("invalid_grant"),
                RefreshMode::Hold => {
                    let mut gate = provider.gate.subscribe();
                    let _ = gate.wait_for(|open| *open).await;
                }
            }
            let mut tokens = provider.refresh_tokens.lock().unwrap();
            let Some(index) = tokens
                .iter()
                .position(|t| Some(t) == form.get("refresh_token"))
            else {
                return error("invalid_grant");
            };
            tokens.remove(index);
        }
        _ => return error("unsupported_grant_type"),
    }
    let access = provider.next("up_at_");
    let refresh = provider.next("up_rt_");
    provider.access_tokens.lock().unwrap().push(access.clone());
    provider
        .refresh_tokens
        .lock()
        .unwrap()
        .push(refresh.clone());
    axum::Json(json!({
        "access_token": access,
        "refresh_token": refresh,
        "token_type": "bearer",
        "expires_in": provider.expires_in.load(Ordering::SeqCst),
    }))
    .into_response()
}

/// RFC 7009: records the request and forgets the token (a refresh token's grant goes with it).
async fn provider_revoke(
    State(provider): State<Provider>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if provider.revoke_fails.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let token = form.get("token").cloned().unwrap_or_default();
    let authorization = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    provider.revocations.lock().unwrap().push((
        token.clone(),
        form.get("token_type_hint").cloned().unwrap_or_default(),
        authorization,
    ));
    provider
        .refresh_tokens
        .lock()
        .unwrap()
        .retain(|t| *t != token);
    provider
        .access_tokens
        .lock()
        .unwrap()
        .retain(|t| *t != token);
    StatusCode::OK.into_response()
}

async fn provider_me(State(provider): State<Provider>, headers: HeaderMap) -> Response {
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .to_owned();
    // API keys work beside OAuth: the mock knows the tests' keys as the common mock does.
    let known_key = token.starts_with(common::KNOWN_KEY_PREFIX);
    if !known_key && !provider.access_tokens.lock().unwrap().contains(&token) {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"status": 401, "message": "bad token"})),
        )
            .into_response();
    }
    axum::Json(json!({"data": {
        "id": "u-42", "email": "ada@example.com", "organization_id": ORG_ID,
        "organization_name": "Acme", "is_user": true, "role": "admin"
    }}))
    .into_response()
}

// ---------------------------------------------------------------- helpers

fn pkce(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

fn oauth_flags(provider: &MockUpstream) -> Vec<String> {
    let base = provider.url();
    vec![
        "--oauth-authorize-url".into(),
        format!("{base}/oauth/authorize"),
        "--oauth-token-url".into(),
        format!("{base}/oauth/token"),
        "--oauth-client-id".into(),
        UPSTREAM_CLIENT_ID.into(),
        "--oauth-client-secret".into(),
        UPSTREAM_CLIENT_SECRET.into(),
        "--oauth-scopes".into(),
        "read write".into(),
    ]
}

struct OAuthApp {
    app: TestApp,
    provider: Provider,
    http: reqwest::Client,
}

async fn spawn(extra: &[&str]) -> OAuthApp {
    spawn_with_metadata_root(extra, None).await
}

/// The OAuth server with its mock provider; with `metadata_root`, through the test-only entry point that trusts
/// that CA and lets the client-metadata fetch reach loopback.
async fn spawn_with_metadata_root(extra: &[&str], metadata_root: Option<Vec<u8>>) -> OAuthApp {
    let (provider, mock) = Provider::start().await;
    let dir = tempfile::tempdir().unwrap();
    let database_url = format!("sqlite://{}/oauth.db", dir.path().display());
    let mut flags = oauth_flags(&mock);
    flags.push("--signing-key".into());
    flags.push(SIGNING_KEY.into());
    flags.extend(extra.iter().map(|s| s.to_string()));
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let app = TestApp::spawn_trusting(mock, database_url, Some(dir), &flags, metadata_root).await;
    OAuthApp {
        app,
        provider,
        http: no_redirects(),
    }
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// One server as seen by the flow: its base URL for the OAuth endpoints.
#[derive(Clone)]
struct Server {
    base: String,
    http: reqwest::Client,
}

impl OAuthApp {
    fn server(&self) -> Server {
        Server {
            base: format!("http://{}", self.app.addr),
            http: self.http.clone(),
        }
    }

    fn issuer(&self) -> String {
        format!("http://{}", self.app.addr)
    }

    fn mcp_url(&self) -> String {
        self.app.mcp_url()
    }
}

/// What a client keeps between the steps of one flow.
struct Flow {
    client_id: String,
    client_secret: Option<String>,
    redirect_uri: String,
    verifier: String,
    state: String,
}

impl Flow {
    fn new(client_id: &str, redirect_uri: &str) -> Self {
        Flow {
            client_id: client_id.to_owned(),
            client_secret: None,
            redirect_uri: redirect_uri.to_owned(),
            verifier: format!("verifier-{}-{}", uuid::Uuid::new_v4(), uuid::Uuid::new_v4()),
            state: format!("state-{}", uuid::Uuid::new_v4()),
        }
    }
}

impl Server {
    async fn register(&self, body: Value) -> reqwest::Response {
        self.http
            .post(format!("{}/register", self.base))
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    async fn register_native(&self, name: &str) -> Flow {
        let response = self
            .register(json!({
                "client_name": name,
                "redirect_uris": [LOOPBACK_REDIRECT],
                "token_endpoint_auth_method": "none",
                "grant_types": ["authorization_code", "refresh_token"],
                "application_type": "native"
            }))
            .await;
        assert_eq!(response.status(), 201);
        let body: Value = response.json().await.unwrap();
        Flow::new(
            body["client_id"].as_str().unwrap(),
            "http://127.0.0.1:54321/callback",
        )
    }

    async fn authorize_with(&self, flow: &Flow, extra: &[(&str, &str)]) -> reqwest::Response {
        let challenge = pkce(&flow.verifier);
        let mut params: Vec<(&str, &str)> = vec![
            ("response_type", "code"),
            ("client_id", &flow.client_id),
            ("redirect_uri", &flow.redirect_uri),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
            ("state", &flow.state),
            ("scope", "read write"),
        ];
        params.extend_from_slice(extra);
        self.http
            .get(format!("{}/authorize", self.base))
            .query(&params)
            .send()
            .await
            .unwrap()
    }

    /// GET /authorize and read the consent page: (request id, CSRF token, cookie, html).
    async fn consent_page(&self, flow: &Flow, resource: &str) -> (String, String, String, String) {
        let response = self.authorize_with(flow, &[("resource", resource)]).await;
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

    /// The person's answer on the consent page; approving chooses full access (see `decide_with_access`).
    async fn decide(
        &self,
        request_id: &str,
        csrf: &str,
        cookie: &str,
        decision: &str,
    ) -> reqwest::Response {
        self.decide_with_access(request_id, csrf, cookie, decision, Some("full-access"))
            .await
    }

    async fn decide_with_access(
        &self,
        request_id: &str,
        csrf: &str,
        cookie: &str,
        decision: &str,
        access: Option<&str>,
    ) -> reqwest::Response {
        let mut form = vec![
            ("request_id", request_id),
            ("csrf_token", csrf),
            ("decision", decision),
        ];
        if let Some(access) = access {
            form.push(("access", access));
        }
        self.http
            .post(format!("{}/authorize", self.base))
            .header("cookie", cookie)
            .form(&form)
            .send()
            .await
            .unwrap()
    }

    async fn token(&self, form: &[(&str, &str)]) -> reqwest::Response {
        self.http
            .post(format!("{}/token", self.base))
            .form(form)
            .send()
            .await
            .unwrap()
    }

    async fn exchange(&self, flow: &Flow, code: &str, resource: &str) -> reqwest::Response {
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", flow.redirect_uri.as_str()),
            ("code_verifier", flow.verifier.as_str()),
            ("client_id", flow.client_id.as_str()),
            ("resource", resource),
        ];
        if let Some(secret) = &flow.client_secret {
            form.push(("client_secret", secret));
        }
        self.token(&form).await
    }

    async fn refresh(&self, flow: &Flow, refresh_token: &str) -> reqwest::Response {
        self.token(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
            ("client_id", flow.client_id.as_str()),
        ])
        .await
    }
}

fn hidden_field(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name} in {html}"))
        + marker.len();
    let end = html[start..].find('"').unwrap();
    html[start..start + end].to_owned()
}

fn location(response: &reqwest::Response) -> url::Url {
    url::Url::parse(response.headers()["location"].to_str().unwrap()).unwrap()
}

fn query(url: &url::Url) -> HashMap<String, String> {
    url.query_pairs().into_owned().collect()
}

/// Consent approved → provider → callback on `callback_server`; returns the redirect to the client.
async fn approve_and_sign_in(
    consent: &Server,
    callback: &Server,
    request_id: &str,
    csrf: &str,
    cookie: &str,
) -> url::Url {
    let approved = consent.decide(request_id, csrf, cookie, "approve").await;
    assert_eq!(approved.status(), 303);
    let to_provider = location(&approved);
    // The provider's answer names our callback; the browser follows it to whichever replica answers.
    let provider_answer = consent.http.get(to_provider.clone()).send().await.unwrap();
    assert_eq!(provider_answer.status(), 302);
    let mut to_callback = location(&provider_answer);
    let callback_base = url::Url::parse(&callback.base).unwrap();
    to_callback.set_port(callback_base.port()).unwrap();
    let back = callback
        .http
        .get(to_callback)
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(back.status(), 302, "{:?}", back.text().await);
    location(&back)
}

/// The whole browser part against one server; returns the code from the client redirect.
async fn sign_in(server: &Server, flow: &Flow, resource: &str) -> String {
    let (request_id, csrf, cookie, _) = server.consent_page(flow, resource).await;
    let back = approve_and_sign_in(server, server, &request_id, &csrf, &cookie).await;
    let params = query(&back);
    assert_eq!(params.get("state"), Some(&flow.state));
    params["code"].clone()
}

async fn tokens(response: reqwest::Response) -> Value {
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");
    response.json().await.unwrap()
}

async fn mcp_client(
    url: &str,
    token: &str,
    headers: &[(&str, &str)],
) -> rmcp::service::RunningService<rmcp::RoleClient, ClientConfig> {
    let mut custom = HashMap::new();
    for (name, value) in headers {
        custom.insert(
            axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            axum::http::HeaderValue::from_str(value).unwrap(),
        );
    }
    let config = StreamableHttpClientTransportConfig::with_uri(url.to_owned())
        .auth_header(token)
        .custom_headers(custom);
    let transport = StreamableHttpClientTransport::with_client(reqwest::Client::new(), config);
    ClientConfig::default().serve(transport).await.unwrap()
}

async fn raw_mcp(url: &str, token: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut request = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("authorization", format!("Bearer {token}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request
        .body(common::initialize_body("2025-11-25").to_string())
        .send()
        .await
        .unwrap()
}

fn authorizations(requests: &[Recorded], path: &str) -> Vec<String> {
    requests
        .iter()
        .filter(|r| r.path == path)
        .filter_map(|r| r.headers.get("authorization"))
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

/// Signs in with a fresh native client and returns (flow, token response).
async fn signed_in(app: &OAuthApp) -> (Flow, Value) {
    let server = app.server();
    let flow = server.register_native("Test Agent").await;
    let code = sign_in(&server, &flow, &app.mcp_url()).await;
    let body = tokens(server.exchange(&flow, &code, &app.mcp_url()).await).await;
    (flow, body)
}

// ---------------------------------------------------------------- discovery

#[tokio::test]
async fn challenge_and_discovery_documents_point_at_this_origin() {
    let app = spawn(&[]).await;
    let issuer = app.issuer();
    let mcp_url = app.mcp_url();
    for method in [reqwest::Method::POST, reqwest::Method::GET] {
        let response = reqwest::Client::new()
            .request(method, &mcp_url)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401);
        let challenge = response.headers()["www-authenticate"].to_str().unwrap();
        assert!(
            challenge.contains(&format!(
                "resource_metadata=\"{issuer}/.well-known/oauth-protected-resource/mcp\""
            )),
            "{challenge}"
        );
        assert!(
            challenge.contains("scope=\"polytomic:read polytomic:write\""),
            "{challenge}"
        );
    }
    for path in [
        "/.well-known/oauth-protected-resource/mcp",
        "/.well-known/oauth-protected-resource",
    ] {
        let prm: Value = reqwest::get(format!("{issuer}{path}"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(prm["resource"], mcp_url, "{path}");
        assert_eq!(prm["authorization_servers"], json!([issuer]));
        assert_eq!(
            prm["scopes_supported"],
            json!(["polytomic:read", "polytomic:write"])
        );
    }
    let response = reqwest::get(format!("{issuer}/.well-known/oauth-authorization-server"))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let meta: Value = response.json().await.unwrap();
    assert_eq!(meta["issuer"], issuer);
    assert_eq!(
        meta["authorization_endpoint"],
        format!("{issuer}/authorize")
    );
    assert_eq!(meta["token_endpoint"], format!("{issuer}/token"));
    assert_eq!(meta["registration_endpoint"], format!("{issuer}/register"));
    assert_eq!(meta["revocation_endpoint"], format!("{issuer}/revoke"));
    assert_eq!(meta["code_challenge_methods_supported"], json!(["S256"]));
    assert_eq!(meta["response_types_supported"], json!(["code"]));
    assert_eq!(
        meta["grant_types_supported"],
        json!(["authorization_code", "refresh_token"])
    );
    assert_eq!(
        meta["token_endpoint_auth_methods_supported"],
        json!(["none", "client_secret_post", "client_secret_basic"])
    );
    assert_eq!(meta["client_id_metadata_document_supported"], true);
    assert_eq!(meta["authorization_response_iss_parameter_supported"], true);

    // Browser-based clients may read discovery cross-origin; /mcp stays closed to foreign origins.
    let response = reqwest::Client::new()
        .get(format!("{issuer}/.well-known/oauth-authorization-server"))
        .header("origin", "http://localhost:6274")
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.headers()["access-control-allow-origin"],
        "http://localhost:6274"
    );
}

#[tokio::test]
async fn with_oauth_off_every_oauth_path_is_404() {
    let app = TestApp::spawn().await;
    let base = format!("http://{}", app.addr);
    let http = no_redirects();
    for path in [
        "/.well-known/oauth-protected-resource",
        "/.well-known/oauth-protected-resource/mcp",
        "/.well-known/oauth-authorization-server",
        "/authorize",
        "/oauth/callback",
    ] {
        let response = http.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(response.status(), 404, "{path}");
    }
    for path in ["/register", "/token", "/revoke"] {
        let response = http
            .post(format!("{base}{path}"))
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 404, "{path}");
    }
    let response = http.post(app.mcp_url()).send().await.unwrap();
    assert_eq!(response.status(), 401);
    let challenge = response.headers()["www-authenticate"].to_str().unwrap();
    assert!(!challenge.contains("resource_metadata"), "{challenge}");
    // One of our token shapes is refused rather than forwarded as an API key.
    let response = raw_mcp(&app.mcp_url(), "pmcp_at_abc.def.ghi", &[]).await;
    assert_eq!(response.status(), 401);
    assert!(app.upstream.requests().is_empty());
}

// ---------------------------------------------------------------- the full flow

#[tokio::test]
async fn full_flow_register_consent_sign_in_call_refresh_reuse_and_revoke() {
    let app = spawn(&[]).await;
    let server = app.server();
    let issuer = app.issuer();
    let mcp_url = app.mcp_url();

    // DCR, as Codex sends it: a native app with a loopback redirect.
    let response = server
        .register(json!({
            "client_name": "Codex <script>",
            "redirect_uris": [LOOPBACK_REDIRECT],
            "token_endpoint_auth_method": "none",
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "application_type": "native"
        }))
        .await;
    assert_eq!(response.status(), 201);
    let registration: Value = response.json().await.unwrap();
    let client_id = registration["client_id"].as_str().unwrap().to_owned();
    assert!(registration.get("client_secret").is_none());
    assert_eq!(registration["application_type"], "native");
    let registration_uri = registration["registration_client_uri"].as_str().unwrap();
    assert_eq!(registration_uri, format!("{issuer}/register/{client_id}"));
    let read = server
        .http
        .get(registration_uri)
        .bearer_auth(registration["registration_access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200);
    assert_eq!(read.json::<Value>().await.unwrap()["client_id"], client_id);
    let unauthenticated = server.http.get(registration_uri).send().await.unwrap();
    assert_eq!(unauthenticated.status(), 401);

    // The loopback redirect matches on another port (RFC 8252).
    let flow = Flow::new(&client_id, "http://127.0.0.1:61999/callback");
    let (request_id, csrf, cookie, html) = server.consent_page(&flow, &mcp_url).await;
    assert!(
        html.contains("Codex &lt;script&gt;"),
        "client name, escaped"
    );
    assert!(!html.contains("<script>"));
    assert!(html.contains("127.0.0.1"), "redirect host named");
    assert!(html.contains("Polytomic organization"));
    assert!(html.contains("name=\"decision\" value=\"approve\""));
    assert!(cookie.starts_with(&format!("pmcp_consent_{request_id}=")));

    // Approval sends the browser upstream with the server's own PKCE and state, never the client's.
    let approved = server.decide(&request_id, &csrf, &cookie, "approve").await;
    assert_eq!(approved.status(), 303);
    let to_provider = location(&approved);
    let upstream_params = query(&to_provider);
    assert_eq!(upstream_params["client_id"], UPSTREAM_CLIENT_ID);
    assert_eq!(
        upstream_params["redirect_uri"],
        format!("{issuer}/oauth/callback")
    );
    assert_eq!(upstream_params["scope"], "read write");
    assert_ne!(upstream_params["code_challenge"], pkce(&flow.verifier));
    assert_ne!(upstream_params["state"], flow.state);
    // A second approval of the same request does nothing.
    let again = server.decide(&request_id, &csrf, &cookie, "approve").await;
    assert_eq!(again.status(), 400);

    let provider_answer = server.http.get(to_provider).send().await.unwrap();
    let to_callback = location(&provider_answer);
    let back = server
        .http
        .get(to_callback.clone())
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(back.status(), 302);
    let back = location(&back);
    assert_eq!(back.host_str(), Some("127.0.0.1"));
    assert_eq!(back.port(), Some(61999));
    assert_eq!(back.path(), "/callback");
    let params = query(&back);
    assert_eq!(params["state"], flow.state);
    assert_eq!(params["iss"], issuer);
    let code = params["code"].clone();
    assert!(code.starts_with("pmcp_ac_"));
    // The callback is single-use too.
    let replay = server
        .http
        .get(to_callback)
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(replay.status(), 400);

    let issued = tokens(server.exchange(&flow, &code, &mcp_url).await).await;
    let access = issued["access_token"].as_str().unwrap().to_owned();
    let refresh = issued["refresh_token"].as_str().unwrap().to_owned();
    assert!(access.starts_with("pmcp_at_"));
    assert!(refresh.starts_with("pmcp_rt_"));
    assert_eq!(issued["token_type"], "Bearer");
    assert_eq!(issued["expires_in"], 3600);
    assert_eq!(issued["scope"], "polytomic:read polytomic:write");

    // An MCP call with our token reaches Polytomic with the upstream token only.
    let client = mcp_client(&mcp_url, &access, &[]).await;
    let result = call(
        &client,
        "execute",
        json!({"method": "GET", "path": "/api/me"}),
    )
    .await;
    assert_ne!(result.is_error, Some(true), "{}", text_of(&result));
    let structured = result.structured_content.clone().unwrap();
    assert_eq!(structured["status"], 200);
    assert_eq!(structured["body"]["data"]["id"], "u-42");
    assert_eq!(structured["context"]["organization_id"], ORG_ID);
    assert_eq!(structured["context"]["auth_mode"], "user");
    client.cancel().await.unwrap();
    let me_calls = authorizations(&app.provider.requests(), "/api/me");
    assert!(me_calls.len() >= 2, "sign-in and execute both call /api/me");
    assert!(
        me_calls.iter().all(|a| a.starts_with("Bearer up_at_")),
        "{me_calls:?}"
    );
    for request in app.provider.requests() {
        let text = format!(
            "{:?} {:?} {:?}",
            request.headers, request.query, request.body
        );
        assert!(!text.contains("pmcp_"), "our token went upstream: {text}");
    }

    // Refresh rotates: a new pair, and the old access token keeps working until it expires.
    let rotated = tokens(server.refresh(&flow, &refresh).await).await;
    let refresh2 = rotated["refresh_token"].as_str().unwrap().to_owned();
    let access2 = rotated["access_token"].as_str().unwrap().to_owned();
    assert_ne!(refresh2, refresh);
    assert_ne!(access2, access);
    assert_eq!(raw_mcp(&mcp_url, &access2, &[]).await.status(), 200);

    // Presenting the rotated-out token again revokes the whole family.
    let reuse = server.refresh(&flow, &refresh).await;
    assert_eq!(reuse.status(), 400);
    assert_eq!(
        reuse.json::<Value>().await.unwrap()["error"],
        "invalid_grant"
    );
    let after = server.refresh(&flow, &refresh2).await;
    assert_eq!(after.status(), 400);
    let refused = raw_mcp(&mcp_url, &access2, &[]).await;
    assert_eq!(refused.status(), 401);
    assert!(
        refused.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("error=\"invalid_token\"")
    );

    // Revocation (RFC 7009) with a fresh sign-in.
    let code = sign_in(&server, &flow, &mcp_url).await;
    let issued = tokens(server.exchange(&flow, &code, &mcp_url).await).await;
    let access3 = issued["access_token"].as_str().unwrap();
    let refresh3 = issued["refresh_token"].as_str().unwrap();
    assert_eq!(raw_mcp(&mcp_url, access3, &[]).await.status(), 200);
    let revoked = server
        .http
        .post(format!("{issuer}/revoke"))
        .form(&[("token", refresh3), ("client_id", client_id.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 200);
    assert_eq!(raw_mcp(&mcp_url, access3, &[]).await.status(), 401);
    assert_eq!(server.refresh(&flow, refresh3).await.status(), 400);
    let unknown = server
        .http
        .post(format!("{issuer}/revoke"))
        .form(&[("token", "not-a-token"), ("client_id", client_id.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 200);
}

#[tokio::test]
async fn confidential_client_must_authenticate_at_the_token_endpoint() {
    let app = spawn(&[]).await;
    let server = app.server();
    // No token_endpoint_auth_method: RFC 7591's default, client_secret_basic, so a secret is issued.
    let response = server
        .register(
            json!({"client_name": "Web App", "redirect_uris": ["https://app.example.com/cb"]}),
        )
        .await;
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    let client_id = body["client_id"].as_str().unwrap().to_owned();
    let secret = body["client_secret"].as_str().unwrap().to_owned();
    assert_eq!(body["token_endpoint_auth_method"], "client_secret_basic");
    assert_eq!(body["client_secret_expires_at"], 0);

    let mut flow = Flow::new(&client_id, "https://app.example.com/cb");
    let code = sign_in(&server, &flow, &app.mcp_url()).await;
    let missing = server.exchange(&flow, &code, &app.mcp_url()).await;
    assert_eq!(missing.status(), 401);
    assert_eq!(
        missing.json::<Value>().await.unwrap()["error"],
        "invalid_client"
    );

    // The failed attempt did not spend the code (client authentication comes first); Basic works.
    let response = server
        .http
        .post(format!("{}/token", server.base))
        .basic_auth(&client_id, Some(&secret))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", flow.redirect_uri.as_str()),
            ("code_verifier", flow.verifier.as_str()),
        ])
        .send()
        .await
        .unwrap();
    let issued = tokens(response).await;

    // client_secret_post works too, and a wrong or missing secret does not.
    let missing = server
        .refresh(&flow, issued["refresh_token"].as_str().unwrap())
        .await;
    assert_eq!(missing.status(), 401);
    let wrong = server
        .token(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", issued["refresh_token"].as_str().unwrap()),
            ("client_id", client_id.as_str()),
            ("client_secret", "pmcp_cs_wrong"),
        ])
        .await;
    assert_eq!(wrong.status(), 401);
    flow.client_secret = Some(secret.clone());
    let response = server
        .token(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", issued["refresh_token"].as_str().unwrap()),
            ("client_id", client_id.as_str()),
            ("client_secret", secret.as_str()),
        ])
        .await;
    tokens(response).await;
}

#[tokio::test]
async fn claude_web_callbacks_register_and_receive_the_code() {
    let app = spawn(&[]).await;
    let server = app.server();
    let response = server
        .register(json!({
            "client_name": "Claude",
            "redirect_uris": [
                "https://claude.ai/api/mcp/auth_callback",
                "https://claude.com/api/mcp/auth_callback"
            ],
            "token_endpoint_auth_method": "none",
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"]
        }))
        .await;
    assert_eq!(response.status(), 201);
    let client_id = response.json::<Value>().await.unwrap()["client_id"]
        .as_str()
        .unwrap()
        .to_owned();
    for callback in [
        "https://claude.ai/api/mcp/auth_callback",
        "https://claude.com/api/mcp/auth_callback",
    ] {
        let flow = Flow::new(&client_id, callback);
        let (request_id, csrf, cookie, html) = server.consent_page(&flow, &app.mcp_url()).await;
        let host = url::Url::parse(callback)
            .unwrap()
            .host_str()
            .unwrap()
            .to_owned();
        assert!(html.contains(&host), "consent page names {host}");
        let back = approve_and_sign_in(&server, &server, &request_id, &csrf, &cookie).await;
        assert_eq!(back.as_str().split('?').next().unwrap(), callback);
        let params = query(&back);
        assert_eq!(params["iss"], app.issuer());
        tokens(
            server
                .exchange(&flow, &params["code"], &app.mcp_url())
                .await,
        )
        .await;
    }
}

#[tokio::test]
async fn the_consent_page_shows_bidi_and_control_characters_of_a_client_name_as_escapes() {
    let app = spawn(&[]).await;
    let server = app.server();
    // Displayed raw, the override would make the name read "Claude exe.txt" backwards as a trusted-looking name.
    let flow = server
        .register_native("Cla\u{202e}edualC\u{202c} \u{2066}Desktop\u{1b}[0m")
        .await;
    let (_, _, _, html) = server.consent_page(&flow, &app.mcp_url()).await;
    for c in ['\u{202e}', '\u{202c}', '\u{2066}', '\u{1b}'] {
        assert!(!html.contains(c), "{c:?} reached the page");
    }
    assert!(
        html.contains(r"Cla\u{202e}edualC\u{202c} \u{2066}Desktop\u{1b}[0m"),
        "{html}"
    );
}

// ---------------------------------------------------------------- client ID metadata documents

/// Client metadata documents served over https on loopback, with a certificate for `127.0.0.1` and
/// `localhost` issued by a CA made for this fixture alone. `root_der` is that CA: the server under test
/// trusts it only when started through the test-only entry point (`spawn_trusting_documents`). Every fetch
/// is recorded, so a refusal can be shown to have happened before any request was made.
struct DocumentServer {
    addr: SocketAddr,
    root_der: Vec<u8>,
    fetched: Arc<Mutex<Vec<String>>>,
}

/// A document as a function of the fixture's base URL (`https://127.0.0.1:{port}`), since it names its own URL.
type Document = fn(&str) -> Value;

impl DocumentServer {
    /// Serves `documents` (path → document).
    async fn start(documents: Vec<(&'static str, Document)>) -> Self {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let leaf =
            rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .unwrap()
                .signed_by(&leaf_key, &ca)
                .unwrap();
        let tls = tokio_rustls::rustls::ServerConfig::builder_with_provider(Arc::new(
            tokio_rustls::rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            tokio_rustls::rustls::pki_types::PrivateKeyDer::try_from(leaf_key.serialize_der())
                .unwrap(),
        )
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let fetched = Arc::new(Mutex::new(Vec::new()));
        let base = format!("https://{addr}");
        let mut router = Router::new();
        for (path, document) in documents {
            let (body, fetched) = (document(&base), fetched.clone());
            router = router.route(
                path,
                get(move || {
                    fetched.lock().unwrap().push(path.to_owned());
                    let body = body.clone();
                    async move { axum::Json(body) }
                }),
            );
        }
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (acceptor, router) = (acceptor.clone(), router.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(move |request| {
                        tower::ServiceExt::oneshot(router.clone(), request)
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        DocumentServer {
            addr,
            root_der: ca.der().to_vec(),
            fetched,
        }
    }

    fn url(&self, host: &str, path: &str) -> String {
        format!("https://{host}:{}{path}", self.addr.port())
    }

    fn fetched(&self) -> Vec<String> {
        self.fetched.lock().unwrap().clone()
    }
}

/// A metadata document that is valid in every respect for the URL it is served at.
fn valid_document(base: &str) -> Value {
    document_named(&format!("{base}/oauth/client.json"))
}

/// The same, served at `/oauth/local.json` and named by `localhost` rather than the address.
fn valid_localhost_document(base: &str) -> Value {
    document_named(&format!(
        "{}/oauth/local.json",
        base.replace("127.0.0.1", "localhost")
    ))
}

fn document_named(client_id: &str) -> Value {
    json!({
        "client_id": client_id,
        "client_name": "Claude Code",
        "redirect_uris": [LOOPBACK_REDIRECT],
        "token_endpoint_auth_method": "none",
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"]
    })
}

/// The OAuth server, started through the test-only entry point that trusts `documents`' CA and lets the
/// metadata fetch reach loopback.
async fn spawn_trusting_documents(documents: &DocumentServer) -> OAuthApp {
    spawn_with_metadata_root(&[], Some(documents.root_der.clone())).await
}

#[tokio::test]
async fn client_id_metadata_document_is_fetched_over_https_checked_and_used() {
    let documents = DocumentServer::start(vec![
        ("/oauth/client.json", valid_document),
        ("/oauth/other.json", |_| {
            json!({
                "client_id": "https://claude.ai/oauth/claude-code-client-metadata",
                "redirect_uris": [LOOPBACK_REDIRECT]
            })
        }),
    ])
    .await;
    let app = spawn_trusting_documents(&documents).await;
    let server = app.server();
    let good_id = documents.url("127.0.0.1", "/oauth/client.json");

    let flow = Flow::new(&good_id, "http://127.0.0.1:40001/callback");
    let (request_id, csrf, cookie, html) = server.consent_page(&flow, &app.mcp_url()).await;
    assert!(html.contains("Claude Code"), "{html}");
    assert!(
        html.contains(&good_id),
        "the document's URL is shown as the app's identity"
    );
    assert_eq!(
        documents.fetched(),
        ["/oauth/client.json"],
        "fetched over https"
    );
    let back = approve_and_sign_in(&server, &server, &request_id, &csrf, &cookie).await;
    let code = query(&back)["code"].clone();
    let issued = tokens(server.exchange(&flow, &code, &app.mcp_url()).await).await;
    assert_eq!(
        raw_mcp(
            &app.mcp_url(),
            issued["access_token"].as_str().unwrap(),
            &[]
        )
        .await
        .status(),
        200
    );

    // A document whose client_id is not its own URL is refused, with an error page and no redirect.
    let bad = Flow::new(
        &documents.url("127.0.0.1", "/oauth/other.json"),
        "http://127.0.0.1:40001/callback",
    );
    let response = server.authorize_with(&bad, &[]).await;
    assert_eq!(response.status(), 400);
    assert!(response.headers().get("location").is_none());
    assert!(response.text().await.unwrap().contains("does not equal"));
    // A redirect the document does not list is refused the same way.
    let wrong_redirect = Flow::new(&good_id, "https://evil.example/callback");
    let response = server.authorize_with(&wrong_redirect, &[]).await;
    assert_eq!(response.status(), 400);
    assert!(response.headers().get("location").is_none());
}

/// The production server (plain `run`) with a document that is valid in every respect, served over https on
/// loopback: only the address rule stands between it and a fetch, so each refusal below is that rule's.
#[tokio::test]
async fn metadata_documents_on_loopback_are_refused_before_any_fetch() {
    let documents = DocumentServer::start(vec![
        ("/oauth/client.json", valid_document),
        ("/oauth/local.json", valid_localhost_document),
    ])
    .await;
    let app = spawn(&[]).await;
    for (client_id, refusal) in [
        // An address literal is judged before any connection.
        (
            documents.url("127.0.0.1", "/oauth/client.json"),
            "private address",
        ),
        // A name is judged by what it resolves to.
        (
            documents.url("localhost", "/oauth/local.json"),
            "resolves to no public address",
        ),
    ] {
        let flow = Flow::new(&client_id, "http://127.0.0.1:40001/callback");
        let response = app.server().authorize_with(&flow, &[]).await;
        assert_eq!(response.status(), 400, "{client_id}");
        assert!(response.headers().get("location").is_none());
        let body = response.text().await.unwrap();
        assert!(body.contains(refusal), "{client_id}: {body}");
    }
    // A plain-http client id is not taken for a metadata document at all.
    let flow = Flow::new(
        &format!(
            "http://127.0.0.1:{}/oauth/client.json",
            documents.addr.port()
        ),
        "http://127.0.0.1:40001/callback",
    );
    let response = app.server().authorize_with(&flow, &[]).await;
    assert_eq!(response.status(), 400);
    assert!(response.text().await.unwrap().contains("unknown client_id"));
    assert!(documents.fetched().is_empty(), "{:?}", documents.fetched());
    // The same documents, from the same server code with the fixture's CA trusted and loopback let through, are
    // fetched: the refusals above come from the address rule, not from TLS or the documents.
    let trusting = spawn_trusting_documents(&documents).await;
    for path in ["/oauth/client.json", "/oauth/local.json"] {
        let host = if path == "/oauth/local.json" {
            "localhost"
        } else {
            "127.0.0.1"
        };
        let flow = Flow::new(
            &documents.url(host, path),
            "http://127.0.0.1:40001/callback",
        );
        let (_, _, _, html) = trusting
            .server()
            .consent_page(&flow, &trusting.mcp_url())
            .await;
        assert!(html.contains("Claude Code"), "{html}");
    }
    assert_eq!(
        documents.fetched(),
        ["/oauth/client.json", "/oauth/local.json"]
    );
}

// ---------------------------------------------------------------- refusals

#[tokio::test]
async fn registration_refuses_unsafe_redirect_uris() {
    let app = spawn(&[]).await;
    let server = app.server();
    for uri in [
        "http://example.com/callback",
        "https://example.com/cb#fragment",
        "javascript:alert(1)",
        "relative/path",
    ] {
        let response = server
            .register(json!({"redirect_uris": [uri], "token_endpoint_auth_method": "none"}))
            .await;
        assert_eq!(response.status(), 400, "{uri}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "invalid_redirect_uri", "{uri}");
        assert!(body["error_description"].as_str().unwrap().len() > 10);
    }
    let response = server
        .register(json!({"client_name": "no redirects"}))
        .await;
    assert_eq!(response.status(), 400);
    let response = server
        .register(json!({"redirect_uris": [LOOPBACK_REDIRECT], "token_endpoint_auth_method": "private_key_jwt"}))
        .await;
    assert_eq!(
        response.json::<Value>().await.unwrap()["error"],
        "invalid_client_metadata"
    );
}

#[tokio::test]
async fn unregistered_redirect_uri_gets_an_error_page_not_a_redirect() {
    let app = spawn(&[]).await;
    let server = app.server();
    let registered = server.register_native("Agent").await;
    for redirect in [
        "https://attacker.example/callback",
        "http://127.0.0.1:5000/other-path",
        "http://localhost:5000/callback",
    ] {
        let flow = Flow::new(&registered.client_id, redirect);
        let response = server.authorize_with(&flow, &[]).await;
        assert_eq!(response.status(), 400, "{redirect}");
        assert!(response.headers().get("location").is_none());
        assert!(response.text().await.unwrap().contains("not registered"));
    }
    let unknown = Flow::new("pmcp_client_unknown", "http://127.0.0.1:5000/callback");
    let response = server.authorize_with(&unknown, &[]).await;
    assert_eq!(response.status(), 400);
    assert!(response.headers().get("location").is_none());
}

#[tokio::test]
async fn authorize_errors_after_the_redirect_check_go_back_to_the_client() {
    let app = spawn(&[]).await;
    let server = app.server();
    let flow = server.register_native("Agent").await;
    let check = |response: reqwest::Response, error: &str| {
        assert_eq!(response.status(), 302);
        let params = query(&location(&response));
        assert_eq!(params["error"], error);
        assert_eq!(params["state"], flow.state);
        assert_eq!(params["iss"], app.issuer());
    };
    // Wrong resource (RFC 8707).
    check(
        server
            .authorize_with(&flow, &[("resource", "https://evil.example/mcp")])
            .await,
        "invalid_target",
    );
    check(
        server
            .authorize_with(&flow, &[("resource", &format!("{}/", app.mcp_url()))])
            .await,
        "invalid_target",
    );
    // PKCE is required, and only S256.
    let response = server
        .http
        .get(format!("{}/authorize", server.base))
        .query(&[
            ("response_type", "code"),
            ("client_id", flow.client_id.as_str()),
            ("redirect_uri", flow.redirect_uri.as_str()),
            ("state", flow.state.as_str()),
        ])
        .send()
        .await
        .unwrap();
    check(response, "invalid_request");
    let challenge = pkce(&flow.verifier);
    let response = server
        .http
        .get(format!("{}/authorize", server.base))
        .query(&[
            ("response_type", "code"),
            ("client_id", flow.client_id.as_str()),
            ("redirect_uri", flow.redirect_uri.as_str()),
            ("state", flow.state.as_str()),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "plain"),
        ])
        .send()
        .await
        .unwrap();
    check(response, "invalid_request");
    // Cancel on the consent page.
    let (request_id, csrf, cookie, _) = server.consent_page(&flow, &app.mcp_url()).await;
    let cancelled = server.decide(&request_id, &csrf, &cookie, "deny").await;
    assert_eq!(cancelled.status(), 303);
    let params = query(&location(&cancelled));
    assert_eq!(params["error"], "access_denied");
    assert_eq!(params["state"], flow.state);
    assert_eq!(params["iss"], app.issuer());
}

/// GET /authorize for `flow` with some parameters replaced or removed, sending `cookie` when given.
async fn authorize_broken(
    server: &Server,
    flow: &Flow,
    change: &[(&str, Option<&str>)],
    cookie: Option<&str>,
) -> reqwest::Response {
    let challenge = pkce(&flow.verifier);
    let mut params: Vec<(&str, &str)> = vec![
        ("response_type", "code"),
        ("client_id", &flow.client_id),
        ("redirect_uri", &flow.redirect_uri),
        ("code_challenge", &challenge),
        ("code_challenge_method", "S256"),
        ("state", &flow.state),
    ];
    for (name, value) in change {
        params.retain(|(n, _)| n != name);
        if let Some(value) = value {
            params.push((name, value));
        }
    }
    let mut request = server
        .http
        .get(format!("{}/authorize", server.base))
        .query(&params);
    if let Some(cookie) = cookie {
        request = request.header("cookie", cookie);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn request_errors_for_a_web_redirect_are_shown_not_redirected_until_the_person_approved_the_client()
 {
    let app = spawn(&[]).await;
    let server = app.server();
    let mut clients = Vec::new();
    for redirect in [
        "https://app.example/oauth/callback",
        "com.example.app:/oauth2redirect",
    ] {
        let response = server
            .register(json!({"client_name": "Some App", "redirect_uris": [redirect], "token_endpoint_auth_method": "none"}))
            .await;
        assert_eq!(response.status(), 201);
        let body: Value = response.json().await.unwrap();
        clients.push(Flow::new(body["client_id"].as_str().unwrap(), redirect));
    }
    let errors: [&[(&str, Option<&str>)]; 3] = [
        &[("response_type", Some("token"))],
        &[("code_challenge", None)],
        &[("prompt", Some("none"))],
    ];
    // Nobody has approved these clients: an error page, never a redirect to an address anyone could register.
    for flow in &clients {
        for change in errors {
            let response = authorize_broken(&server, flow, change, None).await;
            assert_eq!(response.status(), 400, "{} {change:?}", flow.redirect_uri);
            assert!(response.headers().get("location").is_none());
            let page = response.text().await.unwrap();
            assert!(page.contains("start the connection again"), "{page}");
        }
    }
    // The person approves the web client once in this browser; its errors then go back to it.
    let web = &clients[0];
    let (request_id, csrf, cookie, _) = server.consent_page(web, &app.mcp_url()).await;
    let approved = server.decide(&request_id, &csrf, &cookie, "approve").await;
    assert_eq!(approved.status(), 303);
    let seen = approved
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_owned())
        .find(|c| c.starts_with("pmcp_approved_"))
        .expect("an approval cookie");
    for change in errors {
        let response = authorize_broken(&server, web, change, Some(&seen)).await;
        assert_eq!(response.status(), 302, "{change:?}");
        let back = location(&response);
        assert!(back.as_str().starts_with(&web.redirect_uri), "{back}");
        assert_eq!(query(&back)["iss"], app.issuer());
    }
    // The approval is for that client only.
    let response = authorize_broken(&server, &clients[1], errors[0], Some(&seen)).await;
    assert_eq!(response.status(), 400);
}

#[tokio::test]
async fn consent_needs_the_browser_that_opened_it() {
    let app = spawn(&[]).await;
    let server = app.server();
    let flow = server.register_native("Agent").await;
    let (request_id, csrf, cookie, _) = server.consent_page(&flow, &app.mcp_url()).await;
    // No cookie (a forged cross-site post), a wrong token, a post from another site: all refused.
    let response = server
        .http
        .post(format!("{}/authorize", server.base))
        .form(&[
            ("request_id", request_id.as_str()),
            ("csrf_token", csrf.as_str()),
            ("decision", "approve"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let response = server
        .decide(&request_id, "forged", &cookie, "approve")
        .await;
    assert_eq!(response.status(), 400);
    let response = server
        .http
        .post(format!("{}/authorize", server.base))
        .header("cookie", &cookie)
        .header("sec-fetch-site", "cross-site")
        .form(&[
            ("request_id", request_id.as_str()),
            ("csrf_token", csrf.as_str()),
            ("decision", "approve"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    // The genuine approval still works afterwards.
    let response = server.decide(&request_id, &csrf, &cookie, "approve").await;
    assert_eq!(response.status(), 303);
    // A callback without the consent cookie (or with another browser's) is refused, and does not spend the
    // sign-in: the browser that holds the cookie still completes it.
    let to_provider = location(&response);
    let provider_answer = server.http.get(to_provider).send().await.unwrap();
    let to_callback = location(&provider_answer);
    let response = server.http.get(to_callback.clone()).send().await.unwrap();
    assert_eq!(response.status(), 400);
    let (cookie_name, _) = cookie.split_once('=').unwrap();
    let response = server
        .http
        .get(to_callback.clone())
        .header("cookie", format!("{cookie_name}=another-browser"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let response = server
        .http
        .get(to_callback)
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 302, "{:?}", response.text().await);
    let back = query(&location(&response));
    assert!(back["code"].starts_with("pmcp_ac_"), "{back:?}");
    assert_eq!(back["state"], flow.state);
}

#[tokio::test]
async fn wrong_code_verifier_is_refused_and_spends_the_code() {
    let app = spawn(&[]).await;
    let server = app.server();
    let mut flow = server.register_native("Agent").await;
    let code = sign_in(&server, &flow, &app.mcp_url()).await;
    let right = flow.verifier.clone();
    flow.verifier = format!("{}x", right);
    let response = server.exchange(&flow, &code, &app.mcp_url()).await;
    assert_eq!(response.status(), 400);
    assert_eq!(
        response.json::<Value>().await.unwrap()["error"],
        "invalid_grant"
    );
    flow.verifier = right;
    let response = server.exchange(&flow, &code, &app.mcp_url()).await;
    assert_eq!(response.status(), 400, "a code is good for one attempt");
}

#[tokio::test]
async fn reused_code_is_refused_and_revokes_what_it_granted() {
    let app = spawn(&[]).await;
    let server = app.server();
    let flow = server.register_native("Agent").await;
    let code = sign_in(&server, &flow, &app.mcp_url()).await;
    let issued = tokens(server.exchange(&flow, &code, &app.mcp_url()).await).await;
    let access = issued["access_token"].as_str().unwrap();
    assert_eq!(raw_mcp(&app.mcp_url(), access, &[]).await.status(), 200);
    let again = server.exchange(&flow, &code, &app.mcp_url()).await;
    assert_eq!(again.status(), 400);
    assert_eq!(
        again.json::<Value>().await.unwrap()["error"],
        "invalid_grant"
    );
    assert_eq!(raw_mcp(&app.mcp_url(), access, &[]).await.status(), 401);
    let refresh = server
        .refresh(&flow, issued["refresh_token"].as_str().unwrap())
        .await;
    assert_eq!(refresh.status(), 400);
}

#[tokio::test]
async fn wrong_resource_or_redirect_at_the_token_endpoint_is_refused() {
    let app = spawn(&[]).await;
    let server = app.server();
    let flow = server.register_native("Agent").await;
    let code = sign_in(&server, &flow, &app.mcp_url()).await;
    let response = server
        .exchange(&flow, &code, "https://evil.example/mcp")
        .await;
    assert_eq!(response.status(), 400);
    assert_eq!(
        response.json::<Value>().await.unwrap()["error"],
        "invalid_target"
    );
    // invalid_target is checked before the code is touched, so the right request still succeeds…
    let mut other_redirect = Flow::new(&flow.client_id, "http://127.0.0.1:1/callback");
    other_redirect.verifier = flow.verifier.clone();
    let response = server
        .exchange(&other_redirect, &code, &app.mcp_url())
        .await;
    // …but a redirect_uri that differs from the authorization request's spends it.
    assert_eq!(response.status(), 400);
    assert_eq!(
        response.json::<Value>().await.unwrap()["error"],
        "invalid_grant"
    );
}

#[tokio::test]
async fn tampered_or_foreign_tokens_are_refused() {
    let app = spawn(&[]).await;
    let (_, issued) = signed_in(&app).await;
    let access = issued["access_token"].as_str().unwrap().to_owned();
    let jwt = access.strip_prefix("pmcp_at_").unwrap();
    let parts: Vec<&str> = jwt.split('.').collect();
    // A changed claim with the old signature.
    let mut claims: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    claims["sub"] = json!("someone-else");
    let forged_claims = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap());
    // A flipped signature character.
    let mut signature = parts[2].to_owned();
    let last = signature.pop().unwrap();
    signature.push(if last == 'A' { 'B' } else { 'A' });
    // An unsigned token.
    let none_header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"at+jwt"}"#);
    for token in [
        format!("pmcp_at_{}.{}.{}", parts[0], forged_claims, parts[2]),
        format!("pmcp_at_{}.{}.{}", parts[0], parts[1], signature),
        format!("pmcp_at_{}.{}.", none_header, parts[1]),
        "pmcp_at_garbage".to_owned(),
        // Our own token with the prefix in another case, and a refresh token: ours, so never an API key.
        format!("PMCP_AT_{jwt}"),
        issued["refresh_token"].as_str().unwrap().to_owned(),
    ] {
        let response = raw_mcp(&app.mcp_url(), &token, &[]).await;
        assert_eq!(response.status(), 401, "{token}");
        let challenge = response.headers()["www-authenticate"].to_str().unwrap();
        assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
        assert!(challenge.contains("resource_metadata="), "{challenge}");
    }
    // A token signed with another key, claims untouched, is refused (the signature check)…
    let other_key = URL_SAFE_NO_PAD.encode(crate::feedback::hmac_sha256_bytes(
        b"another signing key, 32 bytes or more",
        format!("{}.{}", parts[0], parts[1]).as_bytes(),
    ));
    let response = raw_mcp(
        &app.mcp_url(),
        &format!("pmcp_at_{}.{}.{other_key}", parts[0], parts[1]),
        &[],
    )
    .await;
    assert_eq!(response.status(), 401);
    // …and so is one from another server with the same signing key: another issuer and audience.
    let other = spawn(&[]).await;
    let (_, foreign) = signed_in(&other).await;
    let response = raw_mcp(
        &app.mcp_url(),
        foreign["access_token"].as_str().unwrap(),
        &[],
    )
    .await;
    assert_eq!(response.status(), 401);
    // Tokens are read only from the Authorization header.
    let response = reqwest::Client::new()
        .post(format!("{}?access_token={access}", app.mcp_url()))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(common::initialize_body("2025-11-25").to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(raw_mcp(&app.mcp_url(), &access, &[]).await.status(), 200);
}

#[tokio::test]
async fn expired_access_token_is_refused_and_refresh_gets_a_new_one() {
    let app = spawn(&["--oauth-access-token-ttl-secs", "1"]).await;
    let (flow, issued) = signed_in(&app).await;
    assert_eq!(issued["expires_in"], 1);
    let access = issued["access_token"].as_str().unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let response = raw_mcp(&app.mcp_url(), access, &[]).await;
    assert_eq!(response.status(), 401);
    let challenge = response.headers()["www-authenticate"].to_str().unwrap();
    assert!(challenge.contains("expired"), "{challenge}");
    let renewed = tokens(
        app.server()
            .refresh(&flow, issued["refresh_token"].as_str().unwrap())
            .await,
    )
    .await;
    let response = raw_mcp(
        &app.mcp_url(),
        renewed["access_token"].as_str().unwrap(),
        &[],
    )
    .await;
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn partner_mode_with_an_oauth_token_is_refused_with_403() {
    let app = spawn(&[]).await;
    let (_, issued) = signed_in(&app).await;
    let access = issued["access_token"].as_str().unwrap();
    let response = raw_mcp(
        &app.mcp_url(),
        access,
        &[("x-polytomic-auth-mode", "partner")],
    )
    .await;
    assert_eq!(response.status(), 403);
    let body: Value = response.json().await.unwrap();
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("partner") && message.contains("API key"),
        "{message}"
    );
    // Read-only still applies to OAuth sessions.
    let client = mcp_client(
        &app.mcp_url(),
        access,
        &[("x-polytomic-access-mode", "read-only")],
    )
    .await;
    let result = call(
        &client,
        "execute",
        json!({"method": "POST", "path": "/api/syncs/s-1/executions", "body": {}}),
    )
    .await;
    assert_eq!(result.is_error, Some(true));
    client.cancel().await.unwrap();
    // API keys keep working beside OAuth.
    let response = raw_mcp(
        &app.mcp_url(),
        "pk_test_key",
        &[("x-polytomic-auth-mode", "partner")],
    )
    .await;
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn expiring_upstream_token_is_refreshed_before_the_call() {
    let app = spawn(&[]).await;
    // Upstream tokens that live 5 s are inside the refresh margin from the start.
    app.provider.expires_in.store(5, Ordering::SeqCst);
    let (_, issued) = signed_in(&app).await;
    let access = issued["access_token"].as_str().unwrap();
    let client = mcp_client(&app.mcp_url(), access, &[]).await;
    let result = call(
        &client,
        "execute",
        json!({"method": "GET", "path": "/api/me"}),
    )
    .await;
    assert_ne!(result.is_error, Some(true), "{}", text_of(&result));
    client.cancel().await.unwrap();
    let requests = app.provider.requests();
    let refreshes = requests
        .iter()
        .filter(|r| {
            r.path == "/oauth/token"
                && String::from_utf8_lossy(&r.body).contains("grant_type=refresh_token")
        })
        .count();
    assert!(refreshes >= 1, "the server refreshed upstream");
    let sign_in_token = authorizations(&requests, "/api/me")[0].clone();
    let last = authorizations(&requests, "/api/me").last().unwrap().clone();
    assert_ne!(
        sign_in_token, last,
        "execute used the refreshed upstream token"
    );
}

// ---------------------------------------------------------------- two replicas, one PostgreSQL database

/// Forwards each accepted connection to the next backend in turn; returns the count of connections.
fn round_robin(listener: TcpListener, backends: Vec<SocketAddr>) -> Arc<AtomicUsize> {
    let next = Arc::new(AtomicUsize::new(0));
    let counter = next.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut inbound, _)) = listener.accept().await else {
                return;
            };
            let backend = backends[next.fetch_add(1, Ordering::SeqCst) % backends.len()];
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(backend).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    counter
}

#[tokio::test]
#[ignore = "needs PostgreSQL: set POLYTOMIC_MCP_TEST_POSTGRES_URL and run `cargo test -- --ignored` (.ci/run does)"]
async fn one_flow_across_two_replicas_sharing_postgres() {
    let base_url = common::postgres_url();
    // A fresh database, so the generated signing key and every row belong to this test alone.
    let name = format!("pmcp_oauth_{}", uuid::Uuid::new_v4().simple());
    let admin = sqlx::PgPool::connect(&base_url).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&admin)
        .await
        .unwrap();
    let mut database_url = url::Url::parse(&base_url).unwrap();
    database_url.set_path(&format!("/{name}"));
    let database_url = database_url.to_string();

    let (provider, mock) = Provider::start().await;
    // The balancer's address is the public URL of both replicas; it must exist before they start.
    let placeholder = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let public_port = placeholder.local_addr().unwrap().port();
    drop(placeholder);
    let public_url = format!("http://127.0.0.1:{public_port}");
    let mut flags = oauth_flags(&mock);
    flags.extend(["--public-url".to_owned(), public_url.clone()]);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    // Started together, with no configured key: both race to generate the signing key and must agree.
    let (a, b) = tokio::join!(
        TestApp::spawn_on(mock.clone(), database_url.clone(), None, &flags),
        TestApp::spawn_on(mock.clone(), database_url.clone(), None, &flags),
    );
    let listener = TcpListener::bind(("127.0.0.1", public_port)).await.unwrap();
    let served = round_robin(listener, vec![a.addr, b.addr]);

    // Each step goes to the other replica.
    let server_a = Server {
        base: format!("http://{}", a.addr),
        http: no_redirects(),
    };
    let server_b = Server {
        base: format!("http://{}", b.addr),
        http: no_redirects(),
    };
    let mcp_url = format!("{public_url}/mcp");
    let flow = server_a.register_native("Replicated Agent").await;
    let (request_id, csrf, cookie, _) = server_b.consent_page(&flow, &mcp_url).await;
    let back = approve_and_sign_in(&server_a, &server_b, &request_id, &csrf, &cookie).await;
    let params = query(&back);
    assert_eq!(params["iss"], public_url);
    let code = params["code"].clone();
    let issued = tokens(server_a.exchange(&flow, &code, &mcp_url).await).await;
    // The code is single-use across replicas.
    let replay = server_b.exchange(&flow, &code, &mcp_url).await;
    assert_eq!(replay.status(), 400);
    // …and that replay revoked the session everywhere; sign in again for the rest.
    let code = sign_in(&server_b, &flow, &mcp_url).await;
    let issued2 = tokens(server_b.exchange(&flow, &code, &mcp_url).await).await;
    // The first sign-in's tokens died with the replayed code, on both replicas.
    let first_access = issued["access_token"].as_str().unwrap();
    let public_host = format!("127.0.0.1:{public_port}");
    for replica in [&a, &b] {
        let url = format!("http://{}/mcp", replica.addr);
        let refused = raw_mcp(&url, first_access, &[("host", &public_host)]).await;
        assert_eq!(refused.status(), 401);
        let live = raw_mcp(
            &url,
            issued2["access_token"].as_str().unwrap(),
            &[("host", &public_host)],
        )
        .await;
        assert_eq!(live.status(), 200);
    }
    let first_refresh = server_b
        .refresh(&flow, issued["refresh_token"].as_str().unwrap())
        .await;
    assert_eq!(first_refresh.status(), 400);
    let access = issued2["access_token"].as_str().unwrap();

    // MCP calls through the balancer land on both replicas (a fresh connection each), and both accept the token.
    let before = served.load(Ordering::SeqCst);
    for _ in 0..4 {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .unwrap();
        let response = client
            .post(&mcp_url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("authorization", format!("Bearer {access}"))
            .body(common::initialize_body("2025-11-25").to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    assert!(served.load(Ordering::SeqCst) - before >= 4);
    let client = mcp_client(&mcp_url, access, &[]).await;
    let result = call(
        &client,
        "execute",
        json!({"method": "GET", "path": "/api/me"}),
    )
    .await;
    assert_ne!(result.is_error, Some(true), "{}", text_of(&result));
    client.cancel().await.unwrap();

    // Refresh on one replica, reuse detected on the other. The new pair is used first: before that, the old
    // refresh token coming back within the retry window is a retry, answered with the same pair.
    let refresh = issued2["refresh_token"].as_str().unwrap();
    let rotated = tokens(server_a.refresh(&flow, refresh).await).await;
    let used = raw_mcp(&mcp_url, rotated["access_token"].as_str().unwrap(), &[]).await;
    assert_eq!(used.status(), 200);
    assert_eq!(server_b.refresh(&flow, refresh).await.status(), 400);
    assert!(
        authorizations(&provider.requests(), "/api/me")
            .iter()
            .all(|a| a.starts_with("Bearer up_at_"))
    );

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

async fn start_error(flags: Vec<String>, database_url: &str) -> String {
    let mut args = vec![
        "polytomic-mcp".to_owned(),
        "--database-url".into(),
        database_url.to_owned(),
    ];
    args.extend(flags);
    let config = <polytomic_mcp::config::Config as clap::Parser>::parse_from(args);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    polytomic_mcp::run(config, listener, tokio_util::sync::CancellationToken::new())
        .await
        .unwrap_err()
        .to_string()
}

#[tokio::test]
async fn a_generated_signing_key_is_stored_only_wrapped_under_the_client_secret() {
    let (_provider, mock) = Provider::start().await;
    let dir = tempfile::tempdir().unwrap();
    let database_url = format!("sqlite://{}/keys.db", dir.path().display());
    let flags = oauth_flags(&mock);
    let flag_refs: Vec<&str> = flags.iter().map(String::as_str).collect();
    let app = TestApp::spawn_on(mock.clone(), database_url.clone(), None, &flag_refs).await;
    let discovery = reqwest::get(format!(
        "http://{}/.well-known/oauth-authorization-server",
        app.addr
    ))
    .await
    .unwrap();
    assert_eq!(discovery.status(), 200, "OAuth runs on a generated key");
    let _ = app.stop().await;

    let options = sqlx::sqlite::SqliteConnectOptions::new().filename(dir.path().join("keys.db"));
    let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect_with(&options)
        .await
        .unwrap();
    let stored: String = sqlx::query_scalar("SELECT secret FROM oauth_keys")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert!(stored.starts_with("v1."), "wrapped, versioned");
    let raw = URL_SAFE_NO_PAD.decode(&stored[3..]).unwrap();
    assert_eq!(
        raw.len(),
        12 + 32 + 16,
        "nonce, 32-byte key, tag: ciphertext, not the key itself"
    );

    // Another client secret cannot unwrap it: start-up names the variable instead of signing with garbage.
    let mut other = oauth_flags(&mock);
    let secret_at = other
        .iter()
        .position(|f| f == "--oauth-client-secret")
        .unwrap()
        + 1;
    other[secret_at] = "a-different-upstream-client-secret".into();
    let message = start_error(other, &database_url).await;
    assert!(
        message.contains("POLYTOMIC_OAUTH_CLIENT_SECRET"),
        "{message}"
    );

    // Without a client secret there is nothing to wrap with: a signing key must be configured.
    let mut public_client = oauth_flags(&mock);
    let at = public_client
        .iter()
        .position(|f| f == "--oauth-client-secret")
        .unwrap();
    public_client.drain(at..at + 2);
    let fresh = format!("sqlite://{}/fresh.db", dir.path().display());
    let message = start_error(public_client, &fresh).await;
    assert!(message.contains("POLYTOMIC_MCP_SIGNING_KEY"), "{message}");
}

#[tokio::test]
async fn registration_floods_from_one_address_get_429() {
    let statuses = common::in_one_minute_window(|| async {
        let oauth = spawn(&["--ip-rate-limit-per-minute", "2"]).await;
        let url = format!("http://{}/register", oauth.app.addr);
        let body = json!({"redirect_uris": ["http://127.0.0.1/callback"], "token_endpoint_auth_method": "none", "client_name": "flood"});
        let mut statuses = Vec::new();
        for _ in 0..3 {
            statuses.push(
                oauth
                    .http
                    .post(&url)
                    .json(&body)
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16(),
            );
        }
        statuses
    })
    .await;
    assert_eq!(statuses, [201, 201, 429]);
}

/// A client for the OAuth endpoints whose connections come from `source` (any 127.0.0.0/8 address).
fn from_address(source: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .local_address(source.parse::<std::net::IpAddr>().unwrap())
        .build()
        .unwrap()
}

async fn register_from(client: &reqwest::Client, app: &OAuthApp, name: &str) -> reqwest::Response {
    client
        .post(format!("http://{}/register", app.app.addr))
        .json(&json!({"redirect_uris": [LOOPBACK_REDIRECT], "token_endpoint_auth_method": "none", "client_name": name}))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_registration_flood_from_one_address_is_capped_and_another_address_still_registers() {
    let (app, statuses, refusal) = common::in_one_minute_window(|| async {
        let app = spawn(&["--oauth-registrations-per-minute", "3"]).await;
        let flooder = from_address("127.0.0.2");
        let mut statuses = Vec::new();
        let mut refusal = None;
        for n in 0..6 {
            let response = register_from(&flooder, &app, &format!("flood {n}")).await;
            statuses.push(response.status().as_u16());
            if response.status() == 429 {
                refusal = Some(response);
            }
        }
        (app, statuses, refusal)
    })
    .await;
    assert_eq!(statuses, [201, 201, 201, 429, 429, 429]);
    let refusal = refusal.unwrap();
    let retry_after: u64 = refusal.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    let body: Value = refusal.json().await.unwrap();
    assert!(
        body["message"].as_str().unwrap().contains("3 per minute"),
        "{body}"
    );
    // Someone else, on another address, registers and signs in as usual.
    let legitimate = from_address("127.0.0.3");
    let response = register_from(&legitimate, &app, "Claude").await;
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    let server = Server {
        base: format!("http://{}", app.app.addr),
        http: legitimate,
    };
    let flow = Flow::new(
        body["client_id"].as_str().unwrap(),
        "http://127.0.0.1:54321/callback",
    );
    let code = sign_in(&server, &flow, &app.mcp_url()).await;
    tokens(server.exchange(&flow, &code, &app.mcp_url()).await).await;
}

async fn dcr_client_ids(database_url: &str) -> Vec<String> {
    let store = polytomic_mcp::store::Store::connect(database_url)
        .await
        .unwrap();
    let polytomic_mcp::store::Store::Sqlite(pool) = &store else {
        panic!("sqlite expected")
    };
    sqlx::query_scalar(
        "SELECT client_id FROM oauth_clients WHERE kind = 'dcr' ORDER BY created_at_ms",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn unused_registrations_are_capped_in_total_and_the_oldest_unused_make_room() {
    let app = spawn(&[
        "--oauth-max-unused-clients",
        "3",
        "--oauth-registrations-per-minute",
        "1000",
    ])
    .await;
    // A client that signed in is used, and is never dropped to make room.
    let (used, _) = signed_in(&app).await;
    let server = app.server();
    let mut unused = Vec::new();
    for n in 0..6 {
        let response = server
            .register(json!({"redirect_uris": [LOOPBACK_REDIRECT], "token_endpoint_auth_method": "none", "client_name": format!("abandoned {n}")}))
            .await;
        assert_eq!(response.status(), 201, "registration {n}");
        let body: Value = response.json().await.unwrap();
        unused.push(body["client_id"].as_str().unwrap().to_owned());
    }
    let kept = dcr_client_ids(&app.app.database_url).await;
    let mut expected = vec![used.client_id.clone()];
    expected.extend_from_slice(&unused[3..]);
    assert_eq!(
        kept, expected,
        "the used client and the newest three unused"
    );
    // A dropped registration is told to register again.
    let dropped = Flow::new(&unused[0], "http://127.0.0.1:5000/callback");
    let response = server.authorize_with(&dropped, &[]).await;
    assert_eq!(response.status(), 400);
    assert!(response.text().await.unwrap().contains("register"));
}

#[tokio::test]
async fn registrations_never_used_within_a_day_are_purged() {
    let oauth = spawn(&[]).await;
    let url = format!("http://{}/register", oauth.app.addr);
    let mut ids = Vec::new();
    for name in ["stale", "recent"] {
        let body = json!({"redirect_uris": ["http://127.0.0.1/callback"], "token_endpoint_auth_method": "none", "client_name": name});
        let registered: Value = oauth
            .http
            .post(&url)
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        ids.push(registered["client_id"].as_str().unwrap().to_owned());
    }
    let store = polytomic_mcp::store::Store::connect(&oauth.app.database_url)
        .await
        .unwrap();
    let polytomic_mcp::store::Store::Sqlite(pool) = &store else {
        panic!("sqlite expected")
    };
    let now = chrono::Utc::now().timestamp_millis();
    let hour = 60 * 60 * 1000;
    for (id, age) in [(&ids[0], 25 * hour), (&ids[1], 23 * hour)] {
        sqlx::query("UPDATE oauth_clients SET created_at_ms = $1 WHERE client_id = $2")
            .bind(now - age)
            .bind(id)
            .execute(pool)
            .await
            .unwrap();
    }
    store.purge_oauth(now).await.unwrap();
    let remaining: Vec<String> =
        sqlx::query_scalar("SELECT client_id FROM oauth_clients WHERE kind = 'dcr'")
            .fetch_all(pool)
            .await
            .unwrap();
    assert_eq!(
        remaining,
        [ids[1].clone()],
        "the unused registration from 25 hours ago is gone, the one from 23 hours ago stays"
    );
}
