//! The trace span of one MCP request, named and attributed as the MCP semantic conventions say
//! (`tools/call execute`, `mcp.method.name`, `gen_ai.tool.name`), under the caller's context from
//! `params._meta.traceparent` when the request carries one (MCP 2026-07-28 puts it there). Built only while traces
//! are exported; otherwise a disabled span that costs nothing.

use std::borrow::Cow;

use http::HeaderMap;
use serde::Deserialize;
use tracing::Span;
use tracing::field::Empty;

use crate::telemetry::otel;

/// The few members of a JSON-RPC request the span needs; everything else (the arguments) is skipped unread.
#[derive(Deserialize)]
struct Peek<'a> {
    #[serde(borrow, default)]
    method: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    params: Option<PeekParams<'a>>,
}

#[derive(Deserialize)]
struct PeekParams<'a> {
    #[serde(borrow, default)]
    name: Option<Cow<'a, str>>,
    #[serde(rename = "_meta", default)]
    meta: Option<PeekMeta>,
}

#[derive(Deserialize)]
struct PeekMeta {
    #[serde(default)]
    traceparent: Option<String>,
    #[serde(default)]
    tracestate: Option<String>,
}

/// The span for a POSTed JSON-RPC body (not yet entered); a disabled span when traces are off or the body is not
/// a single JSON-RPC request.
pub(crate) fn for_request(headers: &HeaderMap, body: &[u8]) -> Span {
    if !otel::enabled() {
        return Span::none();
    }
    let Ok(peek) = serde_json::from_slice::<Peek<'_>>(body) else {
        return Span::none();
    };
    let method = peek.method.as_deref().unwrap_or("unknown");
    let params = peek.params.as_ref();
    // Only a tool call names its target: other methods' `name` fields are not tool names.
    let tool = params
        .and_then(|p| p.name.as_deref())
        .filter(|_| method == "tools/call");
    let span = tracing::info_span!(
        target: otel::TRACE_TARGET,
        "mcp",
        otel.name = Empty,
        otel.kind = "server",
        mcp.method.name = method,
        mcp.protocol.version = Empty,
        gen_ai.tool.name = Empty,
        gen_ai.operation.name = Empty,
        polytomic.organization.id = Empty,
    );
    match tool {
        Some(tool) => {
            span.record("otel.name", format!("{method} {tool}"));
            span.record("gen_ai.tool.name", tool);
            span.record("gen_ai.operation.name", "execute_tool");
        }
        None => {
            span.record("otel.name", method);
        }
    }
    if let Some(version) = headers
        .get("mcp-protocol-version")
        .and_then(|v| v.to_str().ok())
    {
        span.record("mcp.protocol.version", version);
    }
    if let Some(meta) = params.and_then(|p| p.meta.as_ref())
        && let Some(traceparent) = &meta.traceparent
    {
        otel::adopt_meta_parent(
            &span,
            traceparent,
            meta.tracestate.as_deref(),
            &Span::current(),
        );
    }
    span
}
