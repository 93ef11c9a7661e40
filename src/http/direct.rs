//! A direct path for the most frequent request: one stateless `tools/call` POSTed as plain JSON by a client on
//! protocol 2025-06-18 or 2025-11-25. rmcp's per-request service set-up (a second JSON parse, two task spawns,
//! channels) is a large share of a call's cost (docs/performance.md); this path parses the request once and
//! calls the same [`dispatch`] that rmcp's handler calls, so the answer is identical. Anything else — other methods,
//! batches, sessions, unknown fields, unusual headers or unknown tools — goes to rmcp unchanged.

use axum::response::{IntoResponse, Response};
use http::request::Parts;
use http::{HeaderMap, HeaderName, Method, StatusCode, header};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::core::{ClientInfo, Principal};
use crate::mcp::{McpState, dispatch};

const DIRECT_PROTOCOLS: [&str; 2] = ["2025-06-18", "2025-11-25"];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope {
    jsonrpc: String,
    id: Value,
    method: String,
    params: Params,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    name: String,
    #[serde(default)]
    arguments: Option<Map<String, Value>>,
    #[serde(rename = "_meta", default)]
    _meta: Option<Value>,
}

#[derive(Serialize)]
struct Reply<'a> {
    jsonrpc: &'static str,
    id: &'a Value,
    result: &'a rmcp::model::CallToolResult,
}

const MCP_PROTOCOL_VERSION: HeaderName = HeaderName::from_static("mcp-protocol-version");
const MCP_SESSION_ID: HeaderName = HeaderName::from_static("mcp-session-id");
const MCP_METHOD: HeaderName = HeaderName::from_static("mcp-method");

/// Only requests whose every header is the ordinary kind take the direct path. (Header names are constants:
/// looking one up by `&str` parses and hashes the name on every request.)
fn eligible(method: &Method, headers: &HeaderMap) -> bool {
    let text = |name: &HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    *method == Method::POST
        && text(&header::CONTENT_TYPE)
            .is_some_and(|c| c.trim().eq_ignore_ascii_case("application/json"))
        && text(&header::ACCEPT)
            .is_some_and(|a| a.contains("application/json") && a.contains("text/event-stream"))
        && text(&MCP_PROTOCOL_VERSION).is_some_and(|v| DIRECT_PROTOCOLS.contains(&v))
        && !headers.contains_key(&MCP_SESSION_ID)
        && !headers.contains_key(&MCP_METHOD)
}

/// Answers the request when it is a single `tools/call` this path handles; `None` hands it to rmcp.
pub(crate) async fn try_tools_call(
    state: &McpState,
    parts: &Parts,
    body: &[u8],
) -> Option<Response> {
    if !eligible(&parts.method, &parts.headers) {
        return None;
    }
    let envelope = serde_json::from_slice::<Envelope>(body).ok().filter(|e| {
        e.jsonrpc == "2.0" && e.method == "tools/call" && (e.id.is_number() || e.id.is_string())
    })?;
    let principal = parts.extensions.get::<Principal>()?;
    let arguments = Value::Object(envelope.params.arguments.unwrap_or_default());
    let client = ClientInfo::from_user_agent(&parts.headers);
    // `None` for an unknown tool: rmcp words that JSON-RPC error.
    let mut result = dispatch(
        state,
        principal,
        Some(parts),
        client,
        &envelope.params.name,
        arguments,
    )
    .await?;
    // The result-type discriminator belongs to protocol 2026-07-28; older revisions omit it.
    result.result_type = None;
    // Written straight from the result: going through `json!` would first copy it into a `Value` tree.
    let reply = Reply {
        jsonrpc: "2.0",
        id: &envelope.id,
        result: &result,
    };
    Some(match serde_json::to_vec(&reply) {
        Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    })
}
