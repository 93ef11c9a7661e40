//! The MCP server: three tools, instructions that teach search-then-execute, and tool annotations that
//! reflect the caller's session (a read-only session sees `execute` as read-only).

mod tools;

use std::borrow::Cow;
use std::sync::Arc;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    ListToolsResult, PaginatedRequestParams, ProtocolVersion, ServerCapabilities, ServerConfig,
    Tool,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler};
use serde_json::Value;

use crate::core::{AccessMode, ClientInfo, Principal, REQUEST_ID_HEADER, now_ms};
use crate::feedback::{CallOutcome, CallSummary, RecentCalls};
use crate::oauth::OAuthState;
use crate::ratelimit::OverLimit;
use crate::state::{App, AppState};

pub use tools::TOOL_NAMES;
pub(crate) use tools::{ToolOutcome, ToolSet};

const INSTRUCTIONS: &str = "Gateway to the Polytomic API (syncs, bulk syncs, models, connections, users, \
organizations, events...). Work in two steps. 1) `search` with the task in plain words; each result gives the \
method, path template, parameters, key type and pagination. For body fields and a ready example, call `search` \
again with `operation: \"METHOD /path\"`. 2) `execute` with that method and the concrete path (ids filled in), \
plus `query` and `body`. Start with GET /api/me to learn who the user is and which organization they are in. \
Before any write, run `execute` with `dry_run: true` and confirm with the user. Never guess paths. Use \
`submit_mcp_feedback` when the server or API gets in your way.";

/// What the tools work with: the shared infrastructure, the OAuth server when it is on (`execute` obtains an
/// OAuth session's Polytomic token through it), the tool definitions (built once), each principal's recent
/// calls (attached to its feedback), and whether feedback is delivered to a webhook.
#[derive(Debug)]
pub struct McpInner {
    app: AppState,
    oauth: Option<OAuthState>,
    tools: ToolSet,
    recent_calls: RecentCalls,
    feedback_webhook: bool,
}

/// Cheap to clone: rmcp builds one handler per request.
#[derive(Debug, Clone)]
pub struct McpState(Arc<McpInner>);

impl McpState {
    pub fn new(app: AppState, oauth: Option<OAuthState>, feedback_webhook: bool) -> Self {
        Self(Arc::new(McpInner {
            app,
            oauth,
            tools: ToolSet::new(),
            recent_calls: RecentCalls::default(),
            feedback_webhook,
        }))
    }
}

impl McpState {
    pub(crate) fn oauth(&self) -> Option<&OAuthState> {
        self.0.oauth.as_ref()
    }

    pub(crate) fn recent_calls(&self) -> &RecentCalls {
        &self.0.recent_calls
    }

    /// Whether stored feedback is also queued for the webhook.
    pub(crate) fn delivers_feedback(&self) -> bool {
        self.0.feedback_webhook
    }
}

impl std::ops::Deref for McpState {
    type Target = App;
    fn deref(&self) -> &App {
        &self.0.app
    }
}

/// The rmcp handler; one is created per HTTP request (the transport is stateless).
#[derive(Debug, Clone)]
pub struct PolytomicMcp {
    state: McpState,
}

/// What a tool handler needs about the current request.
pub(crate) struct CallContext<'a> {
    pub state: &'a McpState,
    pub principal: &'a Principal,
    pub request_id: Option<String>,
    pub client: Option<ClientInfo>,
}

impl PolytomicMcp {
    pub fn new(state: McpState) -> Self {
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
            self.state.0.tools.for_session(read_only).to_vec(),
        ))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        self.state
            .0
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
            .map(|info| ClientInfo {
                name: info.client_info.name.clone(),
                version: info.client_info.version.clone(),
            })
            .filter(|client| client.name != "rmcp")
            .or_else(|| parts.and_then(|p| ClientInfo::from_user_agent(&p.headers)));
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

/// Runs one tool call; `None` when no tool has that name. Shared by rmcp's handler and the direct path for
/// single stateless `tools/call` POSTs, so both answer identically.
pub(crate) async fn dispatch(
    state: &McpState,
    principal: &Principal,
    parts: Option<&http::request::Parts>,
    client: Option<ClientInfo>,
    name: &str,
    arguments: Value,
) -> Option<CallToolResult> {
    let request_id = parts
        .and_then(|p| p.headers.get(&REQUEST_ID_HEADER))
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let call = CallContext {
        state,
        principal,
        request_id,
        client,
    };
    if let Some(over) = parts.and_then(|p| p.extensions.get::<OverLimit>()) {
        return Some(rate_limited(state, over).result);
    }
    // Each tool's future is boxed: held inline, the three would make every spawned request larger to copy.
    let (tool, outcome) = match name {
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
    let result_kind = if outcome.result.is_error == Some(true) {
        CallOutcome::Error
    } else {
        CallOutcome::Ok
    };
    state.metrics.tool_call(
        tool,
        result_kind.as_str(),
        outcome.operation.as_deref().unwrap_or_default(),
        principal.access_mode.as_str(),
    );
    if tool != tools::feedback::NAME {
        remember(state, principal, tool, result_kind, &outcome);
    }
    Some(outcome.result)
}

fn rate_limited(state: &McpState, over: &OverLimit) -> ToolOutcome {
    tool_error(
        format!(
            "rate limit reached for this credential ({} requests per minute); nothing was done. Slow down: wait {} s before the next call, and batch work into fewer calls.",
            state.config.limits.rate_limit_per_minute, over.retry_after_secs
        ),
        Some(serde_json::json!({"error": "rate_limited", "retry_after": over.retry_after_secs})),
    )
}

/// Keeps a short summary of the call for the principal's next feedback record.
fn remember(
    state: &McpState,
    principal: &Principal,
    tool: &str,
    outcome: CallOutcome,
    result: &ToolOutcome,
) {
    let call = CallSummary {
        id: format!("call_{}", uuid::Uuid::now_v7().simple()),
        at_ms: now_ms(),
        tool: tool.to_owned(),
        operation: result.operation.clone(),
        status: result.upstream_status.filter(|s| *s > 0),
        outcome,
        error_key: result.error_key.clone(),
    };
    state.recent_calls().record(&principal.fingerprint, call);
}

/// A successful result: the structured value plus the same information as compact text.
pub(crate) fn tool_success(structured: Value, text: String) -> ToolOutcome {
    // Built by hand: `CallToolResult::structured` would serialise the value to text only for us to replace it.
    let mut result = CallToolResult::success(vec![ContentBlock::text(text)]);
    result.structured_content = Some(structured);
    ToolOutcome::from(result)
}

/// A failed result the agent can act on: `message` says what went wrong and what to do next.
pub(crate) fn tool_error(message: impl Into<String>, structured: Option<Value>) -> ToolOutcome {
    let message = message.into();
    let structured = structured.unwrap_or_else(|| serde_json::json!({"error": message}));
    let mut result = CallToolResult::error(vec![ContentBlock::text(message)]);
    result.structured_content = Some(structured);
    ToolOutcome::from(result)
}
