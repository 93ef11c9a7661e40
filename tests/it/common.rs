//! Test harness: the real server on 127.0.0.1:0 against a mock Polytomic API that records what it receives.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use clap::Parser;
use polytomic_mcp::config::Config;
use rmcp::ServiceExt;
use rmcp::model::{CallToolRequestParams, CallToolResult, ClientConfig};
use rmcp::service::RunningService;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub const ORG_ID: &str = "0b4a3f2e-6c1d-4e8a-9f3b-2d7c5e1a9b80";

/// One request as the mock upstream saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// The server's end of the connection the request came on (shows connection reuse).
    pub peer: Option<SocketAddr>,
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// Syncs in the mock's list, served in pages as Polytomic does (`page_token` + `limit`, at most 50 a page).
pub const SYNC_COUNT: usize = 120;
const SYNC_PAGE_MAX: usize = 50;

/// Faults the sync list serves on chosen pages (page numbers count from 1 at the requested `limit`).
#[derive(Clone, Debug, Default)]
pub struct ListFaults {
    /// 429 on this page for the next `times` requests of it, with this `Retry-After` (seconds).
    pub rate_limit: Option<RateLimitFault>,
    /// 500 on this page, every time.
    pub error_page: Option<usize>,
    /// This page stalls for 30 s.
    pub stall_page: Option<usize>,
}

#[derive(Clone, Debug)]
pub struct RateLimitFault {
    pub page: usize,
    pub times: u32,
    pub retry_after: &'static str,
}

/// The mock knows every key that starts with this (all the tests' own keys do); `GET /api/me` with any other
/// bearer answers 401, as Polytomic answers a key it never issued.
pub const KNOWN_KEY_PREFIX: &str = "pk_";

#[derive(Clone, Default)]
pub struct MockUpstream {
    /// Requests made for a tool call (`execute`, the OpenAPI refresh…).
    pub seen: Arc<Mutex<Vec<Recorded>>>,
    /// The server's own API-key checks (`GET /api/me` with a `(key-check)` User-Agent), kept apart so that
    /// "nothing reached Polytomic" assertions about a tool call stay exact.
    pub key_checks: Arc<Mutex<Vec<Recorded>>>,
    /// While set, `/api/me` answers 503 whatever the key (a Polytomic outage for the key check).
    pub me_unavailable: Arc<std::sync::atomic::AtomicBool>,
    /// Calls so far to the flaky endpoints, which fail twice before answering.
    pub flaky_calls: Arc<std::sync::atomic::AtomicU32>,
    pub list_faults: Arc<Mutex<ListFaults>>,
    /// `GET /api/connections/held` answers only once the test hands out a permit ([`Self::release_held`]).
    pub held: Gate,
    pub addr: Option<SocketAddr>,
}

/// Permits handed out by the test, none at first.
#[derive(Clone)]
pub struct Gate(Arc<tokio::sync::Semaphore>);

impl Default for Gate {
    fn default() -> Self {
        Gate(Arc::new(tokio::sync::Semaphore::new(0)))
    }
}

impl MockUpstream {
    pub fn requests(&self) -> Vec<Recorded> {
        self.seen.lock().unwrap().clone()
    }

    pub fn set_list_faults(&self, faults: ListFaults) {
        *self.list_faults.lock().unwrap() = faults;
    }

    /// The key checks the server made, in order.
    pub fn key_checks(&self) -> Vec<Recorded> {
        self.key_checks.lock().unwrap().clone()
    }

    /// How many key checks carried `key`.
    pub fn key_checks_for(&self, key: &str) -> usize {
        let bearer = format!("Bearer {key}");
        self.key_checks()
            .iter()
            .filter(|r| {
                r.headers
                    .get("authorization")
                    .is_some_and(|v| v == bearer.as_str())
            })
            .count()
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr.unwrap())
    }

    /// Lets one request to `/api/connections/held` answer (now, or when it comes).
    pub fn release_held(&self) {
        self.held.0.add_permits(1);
    }

    /// Waits until `count` tool-call requests to `path` have arrived (recorded on arrival, before any answer).
    pub async fn wait_for_requests(&self, path: &str, count: usize) {
        wait_until(
            &format!("{count} request(s) to {path} at the mock upstream"),
            || async {
                (self.requests().iter().filter(|r| r.path == path).count() >= count).then_some(())
            },
        )
        .await
    }

    pub async fn start() -> Self {
        polytomic_mcp::install_crypto_provider();
        let mut mock = MockUpstream::default();
        let app = Router::new()
            .route("/api/me", get(me))
            .route("/api/syncs", get(list_syncs))
            .route("/api/syncs/{id}", get(get_sync))
            .route("/api/syncs/{id}/executions", post(start_sync))
            .route("/api/queries/{id}", get(query_results))
            .route("/api/organizations", get(partner_only))
            .route("/api/bulk/syncs", get(big_list))
            .route("/api/bulk/syncs/{id}", get(flaky_get))
            .route("/api/bulk/syncs/{id}/executions", post(flaky_post))
            .route("/api/connections/{id}", get(stall))
            .route("/api/models", get(rate_limited))
            .route("/api/models/{id}", axum::routing::put(unprocessable))
            // A redirect elsewhere (here, to a path of this mock that records whether anyone came), and an
            // answer larger than a small response cap.
            .route("/api/models/{id}/sample", get(redirect_away))
            .route("/api/events_types", get(oversized))
            .fallback(any(echo))
            .layer(axum::middleware::from_fn_with_state(mock.clone(), record))
            .with_state(mock.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        mock.addr = Some(listener.local_addr().unwrap());
        tokio::spawn(async move {
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .await
            .unwrap()
        });
        mock
    }
}

async fn record(
    State(mock): State<MockUpstream>,
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
        &mock.key_checks
    } else {
        &mock.seen
    };
    log.lock().unwrap().push(Recorded {
        peer: parts
            .extensions
            .get::<axum::extract::ConnectInfo<SocketAddr>>()
            .map(|info| info.0),
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        headers: parts.headers.clone(),
        body: bytes.clone(),
    });
    next.run(Request::from_parts(parts, axum::body::Body::from(bytes)))
        .await
}

/// The user behind every key the mock knows.
pub const USER_ID: &str = "u-1";

async fn me(State(mock): State<MockUpstream>, headers: HeaderMap) -> Response {
    if mock
        .me_unavailable
        .load(std::sync::atomic::Ordering::SeqCst)
    {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"status": 503, "message": "try again"})),
        )
            .into_response();
    }
    let known = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|key| key.starts_with(KNOWN_KEY_PREFIX));
    if !known {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"status": 401, "message": "invalid API key", "key": "unauthorized"})),
        )
            .into_response();
    }
    axum::Json(json!({"data": {
        "id": USER_ID, "email": "ada@example.com", "organization_id": ORG_ID,
        "organization_name": "Acme", "is_user": true, "is_partner": false, "role": "admin"
    }}))
    .into_response()
}

/// One sync as Polytomic lists it (760 characters of JSON).
pub fn sync_item(i: usize) -> Value {
    json!({
        "id": sync_id(i),
        "name": format!("Salesforce contacts to HubSpot #{i}"),
        "active": !i.is_multiple_of(3),
        "mode": "updateOrCreate",
        "schedule": {"frequency": "hourly", "minute": "15"},
        "target": {"connection_id": "0b4a3f2e-6c1d-4e8a-9f3b-2d7c5e1a9b80", "object": "contact", "new_name": null},
        "fields": [
            {"source": {"field": "email", "model_id": "7d3f1e2a-0000-4000-8000-000000000001"}, "target": "email", "sync_mode": "updateOrCreate"},
            {"source": {"field": "name", "model_id": "7d3f1e2a-0000-4000-8000-000000000001"}, "target": "firstname", "sync_mode": "updateOrCreate"}
        ],
        "filters": [],
        "identity": {"source": {"field": "email"}, "target": "email", "function": "Equality"},
        "organization_id": ORG_ID,
        "created_at": "2026-11-01T12:00:00Z",
        "updated_at": "2026-11-02T08:30:00Z"
    })
}

pub fn sync_id(i: usize) -> String {
    format!("5f1c2d3e-0000-4000-8000-{i:012}")
}

/// An opaque page token, as Polytomic hands them out.
pub fn sync_page_token(offset: usize) -> String {
    format!("pt_{:x}", offset * 7919 + 1)
}

fn sync_offset(token: &str) -> Option<usize> {
    let n = usize::from_str_radix(token.strip_prefix("pt_")?, 16).ok()?;
    Some((n - 1) / 7919)
}

/// `GET /api/syncs`: `{data, pagination: {next_page_token}}`, the token absent on the last page.
async fn list_syncs(
    State(mock): State<MockUpstream>,
    axum::extract::Query(query): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> Response {
    let limit = query
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .unwrap_or(SYNC_PAGE_MAX)
        .clamp(1, SYNC_PAGE_MAX);
    let offset = match query.get("page_token") {
        None => 0,
        Some(token) => match sync_offset(token) {
            Some(offset) => offset,
            None => {
                return (
                    StatusCode::BAD_REQUEST,
                    axum::Json(json!({"status": 400, "message": "invalid page_token", "key": "bad_request"})),
                )
                    .into_response();
            }
        },
    };
    if let Some(fault) = list_fault(&mock, offset / limit + 1).await {
        return fault;
    }
    let end = (offset + limit).min(SYNC_COUNT);
    let items: Vec<Value> = (offset..end).map(sync_item).collect();
    let pagination = if end < SYNC_COUNT {
        json!({"next_page_token": sync_page_token(end)})
    } else {
        json!({})
    };
    (
        [
            ("x-ratelimit-limit", "100"),
            ("x-ratelimit-remaining", "99"),
        ],
        axum::Json(json!({"data": items, "pagination": pagination})),
    )
        .into_response()
}

/// The fault configured for `page`, if any (a rate limit counts down its `times`).
async fn list_fault(mock: &MockUpstream, page: usize) -> Option<Response> {
    let stall = {
        let mut faults = mock.list_faults.lock().unwrap();
        if let Some(fault) = faults
            .rate_limit
            .as_mut()
            .filter(|f| f.page == page && f.times > 0)
        {
            fault.times -= 1;
            return Some(
                (
                    StatusCode::TOO_MANY_REQUESTS,
                    [
                        ("retry-after", fault.retry_after),
                        ("x-ratelimit-limit", "100"),
                        ("x-ratelimit-remaining", "0"),
                    ],
                    axum::Json(
                        json!({"status": 429, "message": "slow down", "key": "rate_limited"}),
                    ),
                )
                    .into_response(),
            );
        }
        if faults.error_page == Some(page) {
            return Some(
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    axum::Json(json!({"status": 500, "message": "internal error listing syncs", "key": "internal"})),
                )
                    .into_response(),
            );
        }
        faults.stall_page == Some(page)
    };
    if stall {
        tokio::time::sleep(std::time::Duration::from_secs(30)).await;
    }
    None
}

/// `GET /api/queries/{id}`: 10 result rows, 4 a page, `links.next` an absolute URL on Polytomic's host.
async fn query_results(
    Path(id): Path<String>,
    axum::extract::Query(query): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> impl IntoResponse {
    let page = query
        .get("page")
        .and_then(|p| p.parse::<usize>().ok())
        .unwrap_or(1);
    let rows: Vec<Value> = ((page - 1) * 4..(page * 4).min(10))
        .map(|i| json!({"row": i, "email": format!("user{i}@example.com")}))
        .collect();
    let next = (page * 4 < 10).then(|| {
        format!(
            "https://app.polytomic.com/api/queries/{id}?page={}",
            page + 1
        )
    });
    axum::Json(json!({
        "data": {"id": id, "status": "done", "count": 10, "fields": ["row", "email"], "results": rows},
        "links": {"next": next, "previous": null}
    }))
}

async fn get_sync(Path(id): Path<String>) -> Response {
    if id == "missing" {
        return (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"status": 404, "message": "sync not found", "key": "not_found"})),
        )
            .into_response();
    }
    axum::Json(json!({"data": {"id": id, "name": "orders to salesforce", "active": true}}))
        .into_response()
}

async fn start_sync(Path(id): Path<String>) -> impl IntoResponse {
    (
        StatusCode::CREATED,
        axum::Json(json!({"data": {"id": "exec-1", "sync_id": id, "status": "created"}})),
    )
}

async fn partner_only() -> impl IntoResponse {
    (
        StatusCode::FORBIDDEN,
        axum::Json(
            json!({"status": 403, "message": "this endpoint requires a partner key", "key": "forbidden"}),
        ),
    )
}

/// About 5 MB: 20,000 items of ~250 bytes.
async fn big_list() -> impl IntoResponse {
    let items: Vec<Value> = (0..20_000)
        .map(|i| json!({"id": format!("bulk-{i:05}"), "name": format!("replication {i}"), "description": "x".repeat(200)}))
        .collect();
    axum::Json(json!({"data": items}))
}

/// 503 for the first two calls, then 200.
async fn flaky_get(State(mock): State<MockUpstream>, Path(id): Path<String>) -> Response {
    let n = mock
        .flaky_calls
        .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    if n < 2 {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"status": 503, "message": "try again"})),
        )
            .into_response();
    }
    axum::Json(json!({"data": {"id": id, "attempt": n + 1}})).into_response()
}

/// 502 once with `Retry-After: 0`, then 201.
async fn flaky_post(State(mock): State<MockUpstream>, Path(id): Path<String>) -> Response {
    let n = mock
        .flaky_calls
        .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    if n < 1 {
        return (
            StatusCode::BAD_GATEWAY,
            [("retry-after", "0")],
            "upstream hiccup",
        )
            .into_response();
    }
    (
        StatusCode::CREATED,
        axum::Json(json!({"data": {"id": "exec-9", "sync_id": id}})),
    )
        .into_response()
}

/// `held` answers when the test releases it ([`MockUpstream::release_held`]); `slowish` after 1.5 s; anything
/// else stalls for 30 s.
async fn stall(State(mock): State<MockUpstream>, Path(id): Path<String>) -> impl IntoResponse {
    if id == "held" {
        mock.held.0.acquire().await.unwrap().forget();
        return axum::Json(json!({"data": {"id": "held"}}));
    }
    let wait = if id == "slowish" { 1_500 } else { 30_000 };
    tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
    axum::Json(json!({"data": {}}))
}

/// How long [`wait_until`] waits before it calls the test hung: a guard against hanging, not a deadline any
/// test relies on (every wait ends as soon as its state is there).
pub const HANG_GUARD: std::time::Duration = std::time::Duration::from_secs(60);

/// Polls `check` every 10 ms until it gives `Some`, and returns that; panics naming `what` after [`HANG_GUARD`].
pub async fn wait_until<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let started = std::time::Instant::now();
    loop {
        if let Some(found) = check().await {
            return found;
        }
        assert!(started.elapsed() < HANG_GUARD, "hung waiting for {what}");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// The value of an unlabelled metric (`name` as exposed, e.g. `polytomic_mcp_requests_in_flight`) at
/// `http://{addr}/metrics`; `None` when absent.
pub async fn metric(addr: SocketAddr, name: &str) -> Option<f64> {
    let text = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines().find_map(|line| {
        let (metric, value) = line.split_once(' ')?;
        (metric == name).then(|| value.trim().parse().ok())?
    })
}

/// The wall-clock minute, as the rate limits number their fixed one-minute windows.
fn minute_now() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        / 60_000
}

/// Runs `attempt` (which should start its own server and return what it observed, asserting nothing that a
/// window change could break) until one run starts and ends within one wall-clock minute, and returns that
/// run's observations. The rate limits count in fixed minute windows, so a run that straddles a boundary
/// has its requests split between two windows and proves nothing: it is redone rather than judged.
pub async fn in_one_minute_window<T, F, Fut>(mut attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = T>,
{
    for _ in 0..3 {
        let minute = minute_now();
        let observed = attempt().await;
        if minute_now() == minute {
            return observed;
        }
    }
    panic!("three runs in a row straddled a minute boundary")
}

/// Waits until the metric `name` at `addr` equals `value`.
pub async fn wait_for_metric(addr: SocketAddr, name: &str, value: f64) {
    wait_until(&format!("{name} = {value}"), || async {
        (metric(addr, name).await == Some(value)).then_some(())
    })
    .await
}

async fn rate_limited() -> impl IntoResponse {
    (
        StatusCode::TOO_MANY_REQUESTS,
        [
            ("retry-after", "30"),
            ("x-ratelimit-limit", "100"),
            ("x-ratelimit-remaining", "0"),
        ],
        axum::Json(json!({"status": 429, "message": "slow down", "key": "rate_limited"})),
    )
}

async fn unprocessable() -> impl IntoResponse {
    (
        StatusCode::UNPROCESSABLE_ENTITY,
        axum::Json(
            json!({"status": 422, "message": "invalid model", "key": "validation", "metadata": {"field": "query"}}),
        ),
    )
}

async fn redirect_away() -> impl IntoResponse {
    (
        StatusCode::FOUND,
        [(axum::http::header::LOCATION, "/api/redirected-here")],
    )
}

/// 64 KiB of JSON.
async fn oversized() -> impl IntoResponse {
    axum::Json(json!({"data": vec!["x".repeat(1024); 64]}))
}

async fn echo(request: Request) -> impl IntoResponse {
    axum::Json(
        json!({"data": {"method": request.method().to_string(), "path": request.uri().path()}}),
    )
}

pub struct TestApp {
    pub addr: SocketAddr,
    pub upstream: MockUpstream,
    pub shutdown: CancellationToken,
    pub database_url: String,
    pub handle: tokio::task::JoinHandle<()>,
    _dir: Option<tempfile::TempDir>,
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(&[]).await
    }

    /// Starts the server with extra command-line flags (e.g. `["--max-access-mode", "read-only"]`).
    pub async fn spawn_with(extra: &[&str]) -> Self {
        let upstream = MockUpstream::start().await;
        let dir = tempfile::tempdir().unwrap();
        let database_url = format!("sqlite://{}/test.db", dir.path().display());
        Self::spawn_on(upstream, database_url, Some(dir), extra).await
    }

    pub async fn spawn_on(
        upstream: MockUpstream,
        database_url: String,
        dir: Option<tempfile::TempDir>,
        extra: &[&str],
    ) -> Self {
        Self::spawn_trusting(upstream, database_url, dir, extra, None).await
    }

    /// [`Self::spawn_on`]; with `metadata_root` (a DER certificate), through the test-only entry point that
    /// lets client metadata documents come from a loopback https fixture whose certificate that root issued.
    pub async fn spawn_trusting(
        upstream: MockUpstream,
        database_url: String,
        dir: Option<tempfile::TempDir>,
        extra: &[&str],
        metadata_root: Option<Vec<u8>>,
    ) -> Self {
        let upstream_url = upstream.url();
        let mut args = vec![
            "polytomic-mcp",
            "--http-port",
            "0",
            "--base-url",
            upstream_url.as_str(),
            "--database-url",
            database_url.as_str(),
        ];
        args.extend_from_slice(extra);
        let config = Config::parse_from(args);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        let handle = tokio::spawn(async move {
            match metadata_root {
                None => polytomic_mcp::run(config, listener, token).await.unwrap(),
                Some(root) => polytomic_mcp::testing::run_with_loopback_metadata_documents(
                    config, listener, token, &root,
                )
                .await
                .unwrap(),
            }
        });
        // Wait until it answers.
        let http = reqwest::Client::new();
        for _ in 0..200 {
            if http
                .get(format!("http://{addr}/healthz"))
                .send()
                .await
                .is_ok()
            {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        TestApp {
            addr,
            upstream,
            shutdown,
            database_url,
            handle,
            _dir: dir,
        }
    }

    pub fn mcp_url(&self) -> String {
        format!("http://{}/mcp", self.addr)
    }

    pub async fn stop(self) -> (MockUpstream, String, Option<tempfile::TempDir>) {
        self.shutdown.cancel();
        let _ = self.handle.await;
        (self.upstream, self.database_url, self._dir)
    }

    /// An rmcp client session with the given bearer key and extra headers.
    pub async fn client(
        &self,
        key: &str,
        headers: &[(&str, &str)],
    ) -> RunningService<rmcp::RoleClient, ClientConfig> {
        let mut custom = std::collections::HashMap::new();
        for (name, value) in headers {
            custom.insert(
                axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                axum::http::HeaderValue::from_str(value).unwrap(),
            );
        }
        let config = StreamableHttpClientTransportConfig::with_uri(self.mcp_url())
            .auth_header(key)
            .custom_headers(custom);
        let http = reqwest::Client::builder()
            .user_agent("polytomic-test-client/1.0")
            .build()
            .unwrap();
        let transport = StreamableHttpClientTransport::with_client(http, config);
        ClientConfig::default().serve(transport).await.unwrap()
    }

    /// A raw JSON-RPC POST to /mcp.
    pub async fn post_mcp(&self, headers: &[(&str, &str)], body: Value) -> reqwest::Response {
        let mut request = reqwest::Client::new()
            .post(self.mcp_url())
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.body(body.to_string()).send().await.unwrap()
    }
}

pub async fn call(
    client: &RunningService<rmcp::RoleClient, ClientConfig>,
    tool: &str,
    args: Value,
) -> CallToolResult {
    let Value::Object(arguments) = args else {
        panic!("arguments must be an object")
    };
    client
        .call_tool(CallToolRequestParams::new(tool.to_owned()).with_arguments(arguments))
        .await
        .unwrap()
}

pub fn text_of(result: &CallToolResult) -> String {
    result
        .content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect::<Vec<_>>()
        .join("\n")
}

pub fn initialize_body(version: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "raw-test", "version": "1.0"}
    }})
}

/// Starts the real binary on port 0 with these environment variables (plus JSON logs) and returns it with the
/// address it logged. The log keeps being drained so the server never blocks on a full pipe.
pub fn start_binary(env: &[(&str, &str)]) -> (std::process::Child, String) {
    let (child, address, _log) = start_binary_logged(env);
    (child, address)
}

/// Log lines the binary wrote after "listening", collected until its stdout closes.
#[derive(Clone, Default)]
pub struct CollectedLog {
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    closed: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl CollectedLog {
    /// Waits (without blocking the runtime) until a line satisfies `found`.
    pub async fn wait_for_line(&self, what: &str, found: impl Fn(&str) -> bool) {
        wait_until(what, || async {
            self.lines
                .lock()
                .unwrap()
                .iter()
                .any(|line| found(line))
                .then_some(())
        })
        .await
    }

    /// Every line, once the process has closed its stdout (waits up to 10 s for that).
    pub fn all_after_exit(&self) -> Vec<String> {
        let started = std::time::Instant::now();
        while !self.closed.load(std::sync::atomic::Ordering::SeqCst) {
            assert!(
                started.elapsed() < std::time::Duration::from_secs(10),
                "stdout never closed"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        self.lines.lock().unwrap().clone()
    }
}

/// [`start_binary`], also keeping what the server logs afterwards.
pub fn start_binary_logged(env: &[(&str, &str)]) -> (std::process::Child, String, CollectedLog) {
    use std::io::{BufRead, BufReader};
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_polytomic-mcp"));
    command
        .env("POLYTOMIC_HTTP_PORT", "0")
        .env("POLYTOMIC_MCP_LOG_FORMAT", "json")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit());
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command.spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let address = loop {
        let line = lines
            .next()
            .expect("server exited before listening")
            .unwrap();
        if let Ok(event) = serde_json::from_str::<Value>(&line)
            && event["message"] == "listening"
        {
            break event["address"].as_str().unwrap().to_owned();
        }
    };
    let log = CollectedLog::default();
    let collected = log.clone();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            collected.lines.lock().unwrap().push(line);
        }
        collected
            .closed
            .store(true, std::sync::atomic::Ordering::SeqCst);
    });
    (child, address, log)
}

/// The PostgreSQL server for the tests that need one. Those tests are `#[ignore]`d with the reason, so a plain
/// `cargo test` reports them as ignored instead of passing without running; `.ci/run` runs them with
/// `-- --ignored`, where a missing variable is a failure, not a skip.
pub fn postgres_url() -> String {
    std::env::var("POLYTOMIC_MCP_TEST_POSTGRES_URL").unwrap_or_else(|_| {
        panic!("POLYTOMIC_MCP_TEST_POSTGRES_URL is not set: this test needs a PostgreSQL server (e.g. postgres://postgres@127.0.0.1:5432/test)")
    })
}
