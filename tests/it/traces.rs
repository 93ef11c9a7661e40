//! OpenTelemetry traces, end to end: the real binary exports over OTLP/HTTP to a receiver inside the test, which
//! decodes the protobuf. One `execute` retried once is one trace (request → MCP request → two upstream attempts)
//! under the caller's `traceparent`, whether it came as a header or in `params._meta`; the context goes on to
//! Polytomic; log lines carry the trace id; no attribute carries a secret or a query value; and a collector that
//! refuses connections changes nothing for clients.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::common::{self, CollectedLog, MockUpstream};

const KEY: &str = "pk_trace_secret_0123456789";
/// The callers' contexts: a trace id and the caller's own span id.
const HEADER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const HEADER_PARENT: &str = "00f067aa0ba902b7";
const META_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const META_PARENT: &str = "b7ad6b7169203331";

/// A span as the collector received it, with the service that sent it.
#[derive(Clone, Debug)]
struct Received {
    service: String,
    span: Span,
}

impl Received {
    fn trace_id(&self) -> String {
        hex(&self.span.trace_id)
    }
    fn span_id(&self) -> String {
        hex(&self.span.span_id)
    }
    fn parent_id(&self) -> String {
        hex(&self.span.parent_span_id)
    }
    fn attr(&self, key: &str) -> Option<String> {
        let value = self
            .span
            .attributes
            .iter()
            .find(|kv| kv.key == key)?
            .value
            .as_ref()?
            .value
            .as_ref()?;
        Some(text(value))
    }
}

fn text(value: &AnyValue) -> String {
    match value {
        AnyValue::StringValue(s) => s.clone(),
        AnyValue::IntValue(i) => i.to_string(),
        AnyValue::BoolValue(b) => b.to_string(),
        AnyValue::DoubleValue(d) => d.to_string(),
        other => format!("{other:?}"),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An OTLP/HTTP trace receiver on 127.0.0.1.
#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<Received>>>,
    exports: Arc<Mutex<u32>>,
}

impl Collector {
    async fn start() -> (Collector, String) {
        let collector = Collector::default();
        let app = Router::new()
            .route("/v1/traces", post(receive))
            .with_state(collector.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (collector, format!("http://{address}"))
    }

    fn spans(&self) -> Vec<Received> {
        self.spans.lock().unwrap().clone()
    }
}

async fn receive(State(collector): State<Collector>, body: Bytes) -> impl IntoResponse {
    let request = ExportTraceServiceRequest::decode(body).unwrap();
    let mut spans = collector.spans.lock().unwrap();
    for resource in request.resource_spans {
        let service = resource
            .resource
            .iter()
            .flat_map(|r| r.attributes.iter())
            .find(|kv| kv.key == "service.name")
            .and_then(|kv| kv.value.as_ref()?.value.as_ref().map(text))
            .unwrap_or_default();
        for scope in resource.scope_spans {
            for span in scope.spans {
                spans.push(Received {
                    service: service.clone(),
                    span,
                });
            }
        }
    }
    *collector.exports.lock().unwrap() += 1;
    (
        [("content-type", "application/x-protobuf")],
        ExportTraceServiceResponse::default().encode_to_vec(),
    )
}

/// The server binary with traces to `endpoint`, JSON logs, against `upstream`.
fn start_server(
    upstream: &MockUpstream,
    endpoint: &str,
    dir: &tempfile::TempDir,
    extra: &[(&str, &str)],
) -> (std::process::Child, String, CollectedLog) {
    let database_url = format!("sqlite://{}/traces.db", dir.path().display());
    let upstream_url = upstream.url();
    let mut env = vec![
        ("POLYTOMIC_MCP_DATABASE_URL", database_url.as_str()),
        ("POLYTOMIC_BASE_URL", upstream_url.as_str()),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
        ("OTEL_TRACES_SAMPLER", "parentbased_always_on"),
        ("RUST_LOG", "info"),
    ];
    env.extend_from_slice(extra);
    common::start_binary_logged(&env)
}

/// SIGTERM, then the exit status (the server drains, flushes its spans and logs, and exits). Waits without
/// blocking the runtime, which serves the collector the server flushes to.
async fn stop(mut child: std::process::Child) -> std::process::ExitStatus {
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the server did not exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One `tools/call` POSTed as JSON, as Claude Code and Codex send it.
async fn tools_call(
    address: &str,
    headers: &[(&str, &str)],
    arguments: Value,
    meta: Option<Value>,
) -> Value {
    let mut params = json!({"name": "execute", "arguments": arguments});
    if let Some(meta) = meta {
        params["_meta"] = meta;
    }
    let mut request = reqwest::Client::new()
        .post(format!("http://{address}/mcp"))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-11-25")
        .header("authorization", format!("Bearer {KEY}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let body = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": params});
    let response = request.body(body.to_string()).send().await.unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

fn log_lines(log: &CollectedLog) -> Vec<Value> {
    log.all_after_exit()
        .iter()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

fn one<'a>(spans: &'a [Received], what: &str, matches: impl Fn(&Received) -> bool) -> &'a Received {
    let found: Vec<&Received> = spans.iter().filter(|s| matches(s)).collect();
    assert_eq!(found.len(), 1, "{what}: {found:#?}");
    found[0]
}

#[tokio::test]
async fn a_retried_execute_is_one_trace_under_the_callers_traceparent_header_and_meta() {
    let upstream = MockUpstream::start().await;
    let (collector, endpoint) = Collector::start().await;
    let dir = tempfile::tempdir().unwrap();
    // Nothing is exported before shutdown (a batch waits ten minutes, and never fills): the spans the test
    // reads prove the flush on shutdown as well.
    let (child, address, log) = start_server(
        &upstream,
        &endpoint,
        &dir,
        &[("OTEL_BSP_SCHEDULE_DELAY", "600000")],
    );

    let traceparent = format!("00-{HEADER_TRACE}-{HEADER_PARENT}-01");
    let answer = tools_call(
        &address,
        &[
            ("traceparent", traceparent.as_str()),
            ("tracestate", "vendor=abc"),
            ("x-request-id", "trace-header-1"),
        ],
        json!({"method": "POST", "path": "/api/bulk/syncs/b-1/executions", "body": {}}),
        None,
    )
    .await;
    assert_eq!(
        answer["result"]["structuredContent"]["status"], 201,
        "{answer}"
    );

    let page_token = common::sync_page_token(5);
    let answer = tools_call(
        &address,
        &[("x-request-id", "trace-meta-1")],
        json!({"method": "GET", "path": "/api/syncs", "query": {"page_token": page_token, "limit": 5}}),
        Some(json!({"traceparent": format!("00-{META_TRACE}-{META_PARENT}-01"), "progressToken": 3})),
    )
    .await;
    assert_eq!(
        answer["result"]["structuredContent"]["status"], 200,
        "{answer}"
    );

    assert!(stop(child).await.success());
    let spans = collector.spans();
    assert!(
        !spans.is_empty(),
        "no span reached the collector: {:#?}",
        log.all_after_exit()
    );
    assert!(spans.iter().all(|s| s.service == "polytomic-mcp"));

    // The header's trace: HTTP request → MCP request → authentication (→ key check) and two attempts.
    let header: Vec<Received> = spans
        .iter()
        .filter(|s| s.trace_id() == HEADER_TRACE)
        .cloned()
        .collect();
    let request = one(&header, "HTTP span", |s| s.span.name == "POST /mcp");
    assert_eq!(
        request.parent_id(),
        HEADER_PARENT,
        "joined to the caller's span"
    );
    assert_eq!(request.attr("http.request.method").as_deref(), Some("POST"));
    assert_eq!(request.attr("url.path").as_deref(), Some("/mcp"));
    assert_eq!(request.attr("http.route").as_deref(), Some("/mcp"));
    assert_eq!(
        request.attr("http.response.status_code").as_deref(),
        Some("200")
    );
    let mcp = one(&header, "MCP span", |s| s.span.name == "tools/call execute");
    assert_eq!(mcp.parent_id(), request.span_id());
    assert_eq!(mcp.attr("mcp.method.name").as_deref(), Some("tools/call"));
    assert_eq!(mcp.attr("gen_ai.tool.name").as_deref(), Some("execute"));
    assert_eq!(
        mcp.attr("polytomic.organization.id").as_deref(),
        Some(common::ORG_ID)
    );
    let queue = one(&header, "queue wait", |s| s.span.name == "queue wait");
    assert_eq!(queue.parent_id(), request.span_id());
    let auth = one(&header, "authentication", |s| s.span.name == "authenticate");
    assert_eq!(auth.parent_id(), mcp.span_id());
    assert_eq!(
        auth.attr("polytomic.auth.method").as_deref(),
        Some("api_key")
    );
    let key_check = one(&header, "key check", |s| s.span.name == "GET /api/me");
    assert_eq!(key_check.parent_id(), auth.span_id());
    let mut attempts: Vec<&Received> = header
        .iter()
        .filter(|s| {
            s.attr("http.request.method").as_deref() == Some("POST")
                && s.span_id() != request.span_id()
        })
        .collect();
    attempts.sort_by_key(|s| s.span.start_time_unix_nano);
    assert_eq!(attempts.len(), 2, "two upstream attempts: {attempts:#?}");
    for attempt in &attempts {
        assert_eq!(attempt.parent_id(), mcp.span_id());
        let template = attempt.attr("url.template").unwrap();
        assert!(
            template.starts_with("/api/bulk/syncs/{") && !template.contains("b-1"),
            "the path template, not the path: {template}"
        );
        assert_eq!(attempt.span.name, format!("POST {template}"));
    }
    assert_eq!(
        attempts[0].attr("http.response.status_code").as_deref(),
        Some("502")
    );
    assert_eq!(
        attempts[0]
            .attr("http.response.header.retry-after")
            .as_deref(),
        Some("0")
    );
    assert_eq!(attempts[0].attr("http.request.resend_count"), None);
    assert_eq!(
        attempts[1].attr("http.response.status_code").as_deref(),
        Some("201")
    );
    assert_eq!(
        attempts[1].attr("http.request.resend_count").as_deref(),
        Some("1")
    );

    // Polytomic received each attempt's own context.
    let sent: Vec<String> = upstream
        .requests()
        .iter()
        .filter(|r| r.path == "/api/bulk/syncs/b-1/executions")
        .map(|r| r.headers["traceparent"].to_str().unwrap().to_owned())
        .collect();
    let expected: Vec<String> = attempts
        .iter()
        .map(|a| format!("00-{HEADER_TRACE}-{}-01", a.span_id()))
        .collect();
    assert_eq!(sent, expected);
    let checks = upstream.key_checks();
    assert_eq!(
        checks[0].headers["traceparent"].to_str().unwrap(),
        format!("00-{HEADER_TRACE}-{}-01", key_check.span_id())
    );

    // The `_meta` context is the MCP span's parent; the HTTP span, in a trace of its own, is linked.
    let meta: Vec<Received> = spans
        .iter()
        .filter(|s| s.trace_id() == META_TRACE)
        .cloned()
        .collect();
    let mcp = one(&meta, "MCP span from _meta", |s| {
        s.span.name == "tools/call execute"
    });
    assert_eq!(mcp.parent_id(), META_PARENT);
    let http = one(&spans, "HTTP span of the _meta call", |s| {
        s.span.name == "POST /mcp" && s.trace_id() != HEADER_TRACE
    });
    assert_eq!(mcp.span.links.len(), 1);
    assert_eq!(hex(&mcp.span.links[0].span_id), http.span_id());
    let attempt = one(&meta, "the GET attempt", |s| {
        s.span.name == "GET /api/syncs"
    });
    assert_eq!(attempt.parent_id(), mcp.span_id());
    let list = upstream
        .requests()
        .into_iter()
        .find(|r| r.path == "/api/syncs")
        .unwrap();
    assert_eq!(
        list.headers["traceparent"].to_str().unwrap(),
        format!("00-{META_TRACE}-{}-01", attempt.span_id())
    );

    // No secret, token, body or query value in any name or attribute.
    for span in &spans {
        let mut texts = vec![span.span.name.clone()];
        texts.extend(span.span.attributes.iter().map(|kv| {
            format!(
                "{}={}",
                kv.key,
                kv.value
                    .as_ref()
                    .and_then(|v| v.value.as_ref())
                    .map(text)
                    .unwrap_or_default()
            )
        }));
        for text in texts {
            for forbidden in [KEY, "Bearer", page_token.as_str(), "b-1", "vendor=abc"] {
                assert!(
                    !text.contains(forbidden),
                    "{forbidden:?} in {text:?} of {span:#?}"
                );
            }
        }
    }

    // Every log line of each request carries the trace id its spans have.
    let lines = log_lines(&log);
    let of = |request_id: &str| -> Vec<Value> {
        lines
            .iter()
            .filter(|l| l["span"]["request_id"] == request_id)
            .cloned()
            .collect()
    };
    let header_lines = of("trace-header-1");
    assert!(
        header_lines.iter().any(|l| l["message"] == "execute"),
        "{header_lines:#?}"
    );
    for line in &header_lines {
        assert_eq!(line["trace_id"], HEADER_TRACE, "{line}");
        assert_eq!(
            line["span"]["name"], "request",
            "the request span stays the log's span: {line}"
        );
        assert!(
            line["span"].get("url.path").is_none(),
            "attributes stay out of logs: {line}"
        );
    }
    let audit = of("trace-meta-1")
        .into_iter()
        .find(|l| l["message"] == "execute")
        .unwrap();
    assert_eq!(audit["trace_id"], META_TRACE, "{audit}");
    assert_eq!(audit["span_id"], mcp.span_id(), "{audit}");
}

#[tokio::test]
async fn a_collector_that_refuses_connections_changes_nothing_for_clients() {
    let upstream = MockUpstream::start().await;
    // A loopback port that was free a moment ago and has no listener now: every export is refused.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let dir = tempfile::tempdir().unwrap();
    // Batches are sent as soon as possible and the queue is small, so exports fail and spans are dropped
    // while the calls run.
    let (child, address, _log) = start_server(
        &upstream,
        &endpoint,
        &dir,
        &[
            ("OTEL_BSP_SCHEDULE_DELAY", "1"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "4"),
            ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "2"),
        ],
    );
    let traceparent = format!("00-{HEADER_TRACE}-{HEADER_PARENT}-01");
    let mut statuses = HashMap::new();
    for i in 0..20 {
        let answer = tools_call(
            &address,
            &[("traceparent", traceparent.as_str())],
            json!({"method": "GET", "path": format!("/api/syncs/s-{i}")}),
            None,
        )
        .await;
        let status = answer["result"]["structuredContent"]["status"].clone();
        *statuses.entry(status.to_string()).or_insert(0) += 1;
        assert_eq!(
            answer["result"]["structuredContent"]["body"]["data"]["id"],
            format!("s-{i}"),
            "{answer}"
        );
    }
    assert_eq!(statuses, HashMap::from([("200".to_owned(), 20)]));
    // The context still goes to Polytomic with no collector to send spans to.
    assert!(upstream.requests().iter().all(|r| {
        r.headers["traceparent"]
            .to_str()
            .unwrap()
            .starts_with(&format!("00-{HEADER_TRACE}-"))
    }));
    assert!(
        stop(child).await.success(),
        "a clean exit despite the spans it could not send"
    );
}

#[test]
fn a_bad_otel_setting_stops_the_server_with_a_message_naming_it() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_polytomic-mcp"))
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1")
        .env("OTEL_TRACES_SAMPLER", "sometimes")
        .env("POLYTOMIC_HTTP_PORT", "0")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("OTEL_TRACES_SAMPLER is \"sometimes\"; allowed: always_on"),
        "{stderr}"
    );
}

#[tokio::test]
async fn with_traces_off_nothing_about_them_reaches_polytomic_or_the_answer() {
    // In-process server: this test process never sets an OTLP endpoint, so traces are off.
    let app = common::TestApp::spawn().await;
    let traceparent = format!("00-{HEADER_TRACE}-{HEADER_PARENT}-01");
    let answer = tools_call(
        &app.addr.to_string(),
        &[("traceparent", traceparent.as_str())],
        json!({"method": "GET", "path": "/api/syncs/s-1"}),
        Some(json!({"traceparent": format!("00-{META_TRACE}-{META_PARENT}-01")})),
    )
    .await;
    assert_eq!(
        answer["result"]["structuredContent"]["status"], 200,
        "{answer}"
    );
    let seen = app.upstream.requests();
    assert_eq!(seen.len(), 1);
    assert!(!seen[0].headers.contains_key("traceparent"));
    assert!(!seen[0].headers.contains_key("tracestate"));
    app.stop().await;
}
