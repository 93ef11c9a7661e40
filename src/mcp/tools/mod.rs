//! One module per tool: its NAME, its schemas and its handler.

pub mod execute;
pub mod feedback;
pub mod search;

use std::sync::Arc;

use rmcp::model::{CallToolResult, JsonObject, Tool, ToolAnnotations};
use serde::de::DeserializeOwned;
use serde_json::Value;

pub const TOOL_NAMES: [&str; 3] = [search::NAME, execute::NAME, feedback::NAME];

/// What a tool hands back to dispatch: the result for the agent, and the facts metrics and the recent-calls
/// summary need, so nobody has to dig them out of the result's JSON.
#[derive(Debug)]
pub(crate) struct ToolOutcome {
    pub result: CallToolResult,
    /// The `METHOD /path` the call was about.
    pub operation: Option<String>,
    /// Polytomic's HTTP status, when a request was sent (0 for a dry run).
    pub upstream_status: Option<u16>,
    /// Why the call failed, as a stable key: the refusal kind or Polytomic's error key.
    pub error_key: Option<String>,
}

impl From<CallToolResult> for ToolOutcome {
    fn from(result: CallToolResult) -> Self {
        Self {
            result,
            operation: None,
            upstream_status: None,
            error_key: None,
        }
    }
}

impl ToolOutcome {
    pub(crate) fn about(mut self, operation: &str) -> Self {
        self.operation = Some(operation.to_owned());
        self
    }

    pub(crate) fn upstream_status(mut self, status: u16) -> Self {
        self.upstream_status = Some(status);
        self
    }

    pub(crate) fn error_key(mut self, key: Option<&str>) -> Self {
        self.error_key = key.map(str::to_owned);
        self
    }
}

/// The tool definitions for both kinds of session, built once at start-up (their schemas are constant).
#[derive(Debug, Clone)]
pub(crate) struct ToolSet {
    full_access: Vec<Tool>,
    read_only: Vec<Tool>,
}

impl ToolSet {
    pub fn new() -> Self {
        Self {
            full_access: definitions(false),
            read_only: definitions(true),
        }
    }

    pub fn for_session(&self, read_only: bool) -> &[Tool] {
        if read_only {
            &self.read_only
        } else {
            &self.full_access
        }
    }
}

impl Default for ToolSet {
    fn default() -> Self {
        Self::new()
    }
}

/// Tool definitions as this session should see them.
pub fn definitions(read_only_session: bool) -> Vec<Tool> {
    vec![
        tool(
            search::NAME,
            "Search Polytomic API",
            search::DESCRIPTION,
            search::input_schema(),
            search::output_schema(),
        )
        .with_annotations(
            ToolAnnotations::with_title("Search Polytomic API")
                .read_only(true)
                .destructive(false)
                .idempotent(true)
                .open_world(false),
        ),
        tool(
            execute::NAME,
            "Call Polytomic API",
            execute::DESCRIPTION,
            execute::input_schema(read_only_session),
            execute::output_schema(),
        )
        .with_annotations(if read_only_session {
            // The server refuses every write in this session, so the tool really is read-only here.
            ToolAnnotations::with_title("Call Polytomic API (read-only)")
                .read_only(true)
                .destructive(false)
                .idempotent(true)
                .open_world(true)
        } else {
            ToolAnnotations::with_title("Call Polytomic API")
                .read_only(false)
                .destructive(true)
                .idempotent(false)
                .open_world(true)
        }),
        tool(
            feedback::NAME,
            "Send feedback about this server",
            feedback::DESCRIPTION,
            feedback::input_schema(),
            feedback::output_schema(),
        )
        .with_annotations(
            ToolAnnotations::with_title("Send feedback about this server")
                .read_only(false)
                .destructive(false)
                .idempotent(false)
                .open_world(false),
        ),
    ]
}

fn tool(
    name: &'static str,
    title: &str,
    description: &'static str,
    input: Value,
    output: Value,
) -> Tool {
    Tool::new(name, description, Arc::new(as_object(input)))
        .with_title(title)
        .with_raw_output_schema(Arc::new(as_object(output)))
}

fn as_object(value: Value) -> JsonObject {
    match value {
        Value::Object(map) => map,
        _ => JsonObject::new(),
    }
}

/// Longest piece of the caller's input repeated in an answer: enough to recognise it, never a megabyte back.
const MAX_ECHO_CHARS: usize = 80;
/// Longest argument-parsing message (serde quotes the offending value, which may be any size).
const MAX_PARSE_ERROR_CHARS: usize = 300;

/// Deserialises tool arguments; the error names the field and what is allowed, for the agent to fix.
pub fn parse_args<T: DeserializeOwned>(tool: &str, arguments: Value) -> Result<T, String> {
    serde_json::from_value(arguments).map_err(|e| {
        format!(
            "invalid arguments for `{tool}`: {}",
            truncated(&e.to_string(), MAX_PARSE_ERROR_CHARS)
        )
    })
}

/// The caller's value quoted for an answer, cut to [`MAX_ECHO_CHARS`] characters.
pub(crate) fn echo(value: &str) -> String {
    format!("{:?}", truncated(value, MAX_ECHO_CHARS))
}

/// `text` cut to `max` characters, with `…` when something was cut.
fn truncated(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    match text.char_indices().nth(max) {
        None => std::borrow::Cow::Borrowed(text),
        Some((at, _)) => std::borrow::Cow::Owned(format!("{}…", &text[..at])),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoes_and_parse_errors_are_bounded() {
        assert_eq!(echo("GET /api/me"), "\"GET /api/me\"");
        let long = "é".repeat(10_000);
        let echoed = echo(&long);
        assert_eq!(
            echoed.chars().count(),
            MAX_ECHO_CHARS + 3,
            "quotes and the ellipsis"
        );
        assert!(echoed.ends_with("…\""));
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Args {
            limit: i64,
        }
        let error = parse_args::<Args>("search", serde_json::json!({"limit": "x".repeat(100_000)}))
            .unwrap_err();
        assert!(
            error.chars().count() < MAX_PARSE_ERROR_CHARS + 50,
            "{error}"
        );
    }
}
