//! `submit_mcp_feedback`: the agent tells the operators where it got stuck; stored before we answer.

use serde::Deserialize;
use serde_json::{Value, json};

use super::parse_args;
use crate::feedback::{CATEGORIES, SEVERITIES};
use crate::mcp::{CallContext, ToolOutcome, tool_error, tool_success};
use crate::store::{FeedbackInsert, FeedbackRecord};
use crate::telemetry::CategoryLabels;

pub const NAME: &str = "submit_mcp_feedback";
pub const DESCRIPTION: &str = "Report friction with this MCP server or the Polytomic API to the team that runs it: \
a bug, a missing capability, a confusing result or doc. Stored durably; returns the record id. Say what you \
expected and what happened.";

const MAX_SUMMARY: usize = 500;
const MAX_DETAILS: usize = 16 * 1024;
const MAX_SHORT: usize = 2_000;

pub fn input_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "category": {"type": "string", "enum": CATEGORIES},
            "summary": {"type": "string", "maxLength": MAX_SUMMARY, "description": "One sentence."},
            "details": {"type": "string", "maxLength": MAX_DETAILS},
            "tool": {"type": "string", "enum": ["search", "execute", "submit_mcp_feedback"]},
            "operation": {"type": "string", "description": "\"METHOD /path\" involved, if any."},
            "severity": {"type": "string", "enum": SEVERITIES},
            "expected": {"type": "string", "maxLength": MAX_SHORT},
            "actual": {"type": "string", "maxLength": MAX_SHORT}
        },
        "required": ["category", "summary"],
        "additionalProperties": false
    })
}

pub fn output_schema() -> Value {
    json!({
        "type": "object",
        "properties": {"id": {"type": "string"}, "stored_at": {"type": "string"}},
        "required": ["id"]
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Args {
    category: String,
    summary: String,
    details: Option<String>,
    tool: Option<String>,
    operation: Option<String>,
    severity: Option<String>,
    expected: Option<String>,
    actual: Option<String>,
}

fn check(args: &Args) -> Result<(), String> {
    if !CATEGORIES.contains(&args.category.as_str()) {
        return Err(format!(
            "category {:?} is not allowed; use one of: {}",
            args.category,
            CATEGORIES.join(", ")
        ));
    }
    let summary_len = args.summary.trim().chars().count();
    if summary_len == 0 {
        return Err(
            "summary is empty; say in one sentence what went wrong or what is missing".into(),
        );
    }
    if summary_len > MAX_SUMMARY {
        return Err(format!(
            "summary is {summary_len} characters, the limit is {MAX_SUMMARY}; shorten it and move the rest to `details`"
        ));
    }
    if let Some(details) = &args.details {
        let len = details.len();
        if len > MAX_DETAILS {
            return Err(format!(
                "details is {len} bytes, the limit is {MAX_DETAILS}; shorten it (nothing was stored)"
            ));
        }
    }
    for (name, value) in [
        ("expected", &args.expected),
        ("actual", &args.actual),
        ("operation", &args.operation),
    ] {
        if value
            .as_ref()
            .is_some_and(|v| v.chars().count() > MAX_SHORT)
        {
            return Err(format!(
                "{name} is longer than {MAX_SHORT} characters; shorten it (nothing was stored)"
            ));
        }
    }
    if let Some(tool) = &args.tool
        && !super::TOOL_NAMES.contains(&tool.as_str())
    {
        return Err(format!(
            "tool {tool:?} is not one of: {}",
            super::TOOL_NAMES.join(", ")
        ));
    }
    if let Some(severity) = &args.severity
        && !SEVERITIES.contains(&severity.as_str())
    {
        return Err(format!(
            "severity {severity:?} is not allowed; use one of: {}",
            SEVERITIES.join(", ")
        ));
    }
    Ok(())
}

pub async fn call(ctx: &CallContext<'_>, arguments: Value) -> ToolOutcome {
    let args: Args = match parse_args(NAME, arguments) {
        Ok(args) => args,
        Err(message) => {
            return tool_error(
                format!(
                    "{message}. Required: category ({}), summary; optional: details, tool, operation, severity, expected, actual",
                    CATEGORIES.join("/")
                ),
                None,
            );
        }
    };
    if let Err(message) = check(&args) {
        return tool_error(
            format!("{message}. Nothing was stored; fix it and send again."),
            None,
        );
    }
    let principal = ctx.principal;
    if !principal.verified {
        return tool_error(
            "Polytomic could not be asked whether this API key is valid (its API did not answer), so nothing was stored; send the feedback again in a minute. `search` and `execute` keep working meanwhile.",
            None,
        );
    }
    let now = chrono::Utc::now();
    let recent = ctx
        .state
        .recent_calls()
        .recent(&principal.fingerprint, now.timestamp_millis());
    let recent_calls = if recent.is_empty() {
        None
    } else {
        serde_json::to_string(&recent).ok()
    };
    let record = FeedbackRecord {
        id: format!("fb_{}", uuid::Uuid::now_v7().simple()),
        created_at_ms: now.timestamp_millis(),
        category: args.category,
        summary: args.summary.trim().to_owned(),
        details: args.details,
        tool: args.tool,
        operation: args.operation,
        severity: args.severity,
        expected: args.expected,
        actual: args.actual,
        principal: principal.fingerprint.clone(),
        // What Polytomic confirmed, not the partner-mode header (which names an organization the caller
        // chose and nobody checked).
        organization_id: principal.organization_id.clone(),
        user_id: principal.user_id.clone(),
        auth_mode: principal.auth_mode.as_str().to_owned(),
        access_mode: principal.access_mode.as_str().to_owned(),
        client_name: ctx.client.as_ref().map(|c| c.name.clone()),
        client_version: ctx.client.as_ref().map(|c| c.version.clone()),
        request_id: ctx.request_id.clone(),
        recent_calls,
    };
    let deliver = ctx.state.delivers_feedback();
    let limit = i64::from(ctx.state.config.feedback.feedback_per_hour);
    let since_ms = now.timestamp_millis() - 3_600_000;
    match ctx
        .state
        .store
        .insert_feedback_within_limit(&record, deliver, since_ms, limit)
        .await
    {
        Ok(FeedbackInsert::Stored) => {}
        Ok(FeedbackInsert::OverLimit { count }) => {
            return tool_error(
                format!(
                    "this credential already sent {count} feedback records in the last hour (limit {limit}); nothing was stored. Collect further points into one record and send it later."
                ),
                None,
            );
        }
        Err(error) => {
            tracing::error!(%error, "storing feedback failed");
            return tool_error(
                "the feedback could not be stored right now (the server's database is unavailable); nothing was saved. Try again in a minute.",
                None,
            );
        }
    }
    ctx.state
        .metrics
        .feedback
        .get_or_create(&CategoryLabels {
            category: record.category.clone(),
        })
        .inc();
    let stored_at = now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    tool_success(
        json!({"id": record.id, "stored_at": stored_at, "attached_calls": recent.len()}),
        format!(
            "Feedback stored as {} at {stored_at}. Thank you; the team that runs this server reads these.",
            record.id
        ),
    )
}
