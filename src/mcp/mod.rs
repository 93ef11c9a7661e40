//! The MCP server: three tools, instructions that teach search-then-execute, and tool annotations that
//! reflect the caller's session (a read-only session sees `execute` as read-only).

mod tools;

use std::borrow::Cow;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    ListToolsResult, PaginatedRequestParams, ProtocolVersion, ServerCapabilities, ServerConfig,
    Tool,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler};
use serde_json::Value;

use crate::auth::{AccessMode, Principal};
use crate::state::AppState;

pub use tools::feedback::CATEGORIES as FEEDBACK_CATEGORIES;
pub use tools::{TOOL_NAMES, ToolSet};

const INSTRUCTIONS: &str = "Gateway to the Polytomic API (syncs, bulk syncs, models, connections, users, \
organizations, events...). Work in two steps. 1) `search` with the task in plain words; each result gives the \
method, path template, parameters, key type and pagination. For body fields and a ready example, call `search` \
again with `operation: \"METHOD /path\"`. 2) `execute` with that method and the concrete path (ids filled in), \
plus `query` and `body`. Start with GET /api/me to learn who the user is and which organization they are in. \
Before any write, run `execute` with `dry_run: true` and confirm with the user. Never guess paths. Use \
`submit_mcp_feedback` when the server or API gets in your way.";

/// The rmcp handler; one is created per HTTP request (the transport is stateless).
#[derive(Debug, Clone)]
pub struct PolytomicMcp {
    state: AppState,
}

/// What a tool handler needs about the current request.
pub struct CallContext<'a> {
    pub state: &'a AppState,
    pub principal: &'a Principal,
    pub request_id: Option<String>,
    pub client: Option<(String, String)>,
}

impl PolytomicMcp {
    pub fn new(state: AppState) -> Self {
        Self { state }
    }

    fn principal(context: &RequestContext<RoleServer>) -> Result<&Principal, McpError> {
        context
            .extensions
            .get::<http::request::Parts>()
            .and_then(|parts| parts.extensions.get::<Principal>())
            .ok_or_else(|| {
                McpError::internal_error("request reached a tool without authentication", None)
            })
    }
}

impl ServerHandler for PolytomicMcp {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(
                Implementation::new("polytomic-mcp", env!("CARGO_PKG_VERSION"))
                    .with_title("Polytomic")
                    .with_description("Search and call the Polytomic API"),
            )
            .with_instructions(INSTRUCTIONS)
    }

    fn supported_protocol_versions(&self) -> Cow<'static, [ProtocolVersion]> {
        Cow::Borrowed(ProtocolVersion::KNOWN_VERSIONS)
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        let principal = Self::principal(&context)?;
        let read_only = principal.access_mode == AccessMode::ReadOnly;
        Ok(ListToolsResult::with_all_items(
            self.state.tools.for_session(read_only).to_vec(),
        ))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        self.state
            .tools
            .for_session(false)
            .iter()
            .find(|tool| tool.name == name)
            .cloned()
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let principal = Self::principal(&context)?;
        let parts = context.extensions.get::<http::request::Parts>();
        // In stateless mode rmcp stands in an "rmcp" client for requests after initialize; fall back to the
        // User-Agent header, which Claude Code and Codex set to their name and version.
        let client = context
            .peer
            .peer_info()
            .map(|info| {
                (
                    info.client_info.name.clone(),
                    info.client_info.version.clone(),
                )
            })
            .filter(|(name, _)| name != "rmcp")
            .or_else(|| parts.and_then(|p| client_from_user_agent(&p.headers)));
        let arguments = Value::Object(request.arguments.unwrap_or_default());
        match dispatch(
            &self.state,
            principal,
            parts,
            client,
            request.name.as_ref(),
            arguments,
        )
        .await
        {
            Some(result) => Ok(result.into()),
            None => Err(McpError::invalid_params(
                format!(
                    "unknown tool {:?}; this server has: {}",
                    request.name,
                    TOOL_NAMES.join(", ")
                ),
                None,
            )),
        }
    }
}

/// `name/version` from the first product of a User-Agent header.
pub fn client_from_user_agent(headers: &http::HeaderMap) -> Option<(String, String)> {
    let agent = headers.get(http::header::USER_AGENT)?.to_str().ok()?;
    let first = agent.split_whitespace().next()?;
    let (name, version) = first.split_once('/').unwrap_or((first, ""));
    Some((
        name.chars().take(100).collect(),
        version.chars().take(50).collect(),
    ))
}

/// Runs one tool call; `None` when no tool has that name. Shared by rmcp's handler and the direct path for
/// single stateless `tools/call` POSTs, so both answer identically.
pub async fn dispatch(
    state: &AppState,
    principal: &Principal,
    parts: Option<&http::request::Parts>,
    client: Option<(String, String)>,
    name: &str,
    arguments: Value,
) -> Option<CallToolResult> {
    let request_id = parts
        .and_then(|p| p.headers.get("x-request-id"))
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let call = CallContext {
        state,
        principal,
        request_id,
        client,
    };
    if let Some(over) = parts.and_then(|p| p.extensions.get::<crate::http::OverLimit>()) {
        return Some(tool_error(
            format!(
                "rate limit reached for this credential ({} requests per minute); nothing was done. Slow down: wait {} s before the next call, and batch work into fewer calls.",
                state.config.rate_limit_per_minute, over.retry_after_secs
            ),
            Some(
                serde_json::json!({"error": "rate_limited", "retry_after": over.retry_after_secs}),
            ),
        ));
    }
    // Each tool's future is boxed: held inline, the three would make every spawned request ~12 KB to copy.
    let (tool, result) = match name {
        tools::search::NAME => (
            tools::search::NAME,
            Box::pin(tools::search::call(&call, arguments)).await,
        ),
        tools::execute::NAME => (
            tools::execute::NAME,
            Box::pin(tools::execute::call(&call, arguments)).await,
        ),
        tools::feedback::NAME => (
            tools::feedback::NAME,
            Box::pin(tools::feedback::call(&call, arguments)).await,
        ),
        _ => return None,
    };
    let outcome = if result.is_error == Some(true) {
        "error"
    } else {
        "ok"
    };
    let operation = result
        .structured_content
        .as_ref()
        .and_then(|s| s.get("operation"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    state.metrics.tool_call(tool, outcome, operation);
    remember(state, principal, tool, outcome, &result);
    Some(result)
}

/// Keeps a short summary of the call for the principal's next feedback record.
fn remember(
    state: &AppState,
    principal: &Principal,
    tool: &str,
    outcome: &str,
    result: &CallToolResult,
) {
    if tool == tools::feedback::NAME {
        return;
    }
    let structured = result.structured_content.as_ref();
    let field = |name: &str| structured.and_then(|s| s.get(name));
    let call = crate::feedback::CallSummary {
        id: format!("call_{}", uuid::Uuid::now_v7().simple()),
        at_ms: chrono::Utc::now().timestamp_millis(),
        tool: tool.to_owned(),
        operation: field("operation")
            .and_then(Value::as_str)
            .map(str::to_owned),
        status: field("status")
            .and_then(Value::as_u64)
            .and_then(|s| u16::try_from(s).ok())
            .filter(|s| *s > 0),
        outcome: outcome.to_owned(),
        error_key: field("refused")
            .and_then(Value::as_str)
            .or_else(|| {
                field("body")
                    .and_then(|b| b.get("key"))
                    .and_then(Value::as_str)
            })
            .map(str::to_owned),
    };
    state.recent_calls.record(&principal.fingerprint, call);
}

/// A successful result: the structured value plus the same information as compact text.
pub fn tool_success(structured: Value, text: String) -> CallToolResult {
    // Built by hand: `CallToolResult::structured` would serialise the value to text only for us to replace it.
    let mut result = CallToolResult::success(vec![ContentBlock::text(text)]);
    result.structured_content = Some(structured);
    result
}

/// A failed result the agent can act on: `message` says what went wrong and what to do next.
pub fn tool_error(message: impl Into<String>, structured: Option<Value>) -> CallToolResult {
    let message = message.into();
    let structured = structured.unwrap_or_else(|| serde_json::json!({"error": message}));
    let mut result = CallToolResult::error(vec![ContentBlock::text(message)]);
    result.structured_content = Some(structured);
    result
}
