//! `execute`: one Polytomic API call, validated against the index before anything is sent; on a paginated
//! GET, optionally several pages merged into one list (`pages`).

mod credential;
mod pages;

use std::fmt::Write as _;

use serde::Deserialize;
use serde_json::{Map, Value, json};

use self::credential::{CallCredential, sign_in_error};
use super::parse_args;
use crate::core::{AccessMode, AuthMode, Principal};
use crate::mcp::{CallContext, ToolOutcome, tool_error, tool_success};
use crate::oauth::scope::granting as scope_granting;
use crate::openapi::KeyType;
use crate::telemetry::UpstreamLabels;
use crate::upstream::pages::MAX_PAGES;
use crate::upstream::plan::{Call, CallerModes};
use crate::upstream::{
    PlanError, PlannedRequest, RATE_LIMIT_HEADERS, ShapeOptions, UpstreamError, UpstreamResponse,
    plan, shape_body,
};

pub const NAME: &str = "execute";
pub const DESCRIPTION: &str = "Call the Polytomic API through this server with the user's credentials. Give the \
method and a concrete path from `search` (e.g. GET /api/syncs/5f1c…), plus `query` and `body` as JSON. Returns the \
HTTP `status` and parsed `body`. For a whole list, pass `max_pages` (up to 20) with `fields` (e.g. \
[\"data.id\",\"data.name\"]): the pages come back merged; when the list is cut, `next` holds the arguments that \
continue. Use `dry_run: true` to validate a write and see the exact request without sending it.";

/// Fields a projection may list; more would defeat its purpose.
const MAX_FIELDS: usize = 50;

/// The input schema; a read-only session offers only the methods it will send.
pub fn input_schema(read_only: bool) -> Value {
    let methods: &[&str] = if read_only {
        &["GET", "HEAD"]
    } else {
        &["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"]
    };
    json!({
        "type": "object",
        "properties": {
            "method": {"type": "string", "enum": methods},
            "path": {"type": "string", "pattern": "^/api/", "description": "Concrete path starting with /api/, ids filled in; no host, no query string."},
            "query": {
                "type": "object",
                "description": "Query parameters, e.g. {\"limit\": 10}.",
                "additionalProperties": {"type": ["string", "number", "boolean", "array"]}
            },
            "body": {"description": "JSON request body for POST, PUT and PATCH."},
            "fields": {
                "type": "array",
                "items": {"type": "string"},
                "maxItems": MAX_FIELDS,
                "description": "Keep only these response fields, dotted through arrays, e.g. [\"data.id\", \"data.name\"]."
            },
            "max_pages": {"type": "integer", "minimum": 1, "maximum": MAX_PAGES, "description": "Pages to read on a paginated GET (default 1)."},
            "dry_run": {"type": "boolean", "description": "Validate and show the request without sending it."}
        },
        "required": ["method", "path"],
        "additionalProperties": false
    })
}

pub fn output_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "status": {"type": "integer"},
            "body": {},
            "next": {"type": "object"},
            "pages": {"type": "object"},
            "truncated": {"type": "object"},
            "context": {"type": "object"},
            "rate_limit": {"type": "object"},
            "request": {"type": "object"},
            "error": {"type": "string"}
        }
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Args {
    method: String,
    path: String,
    query: Option<Map<String, Value>>,
    body: Option<Value>,
    #[serde(default)]
    fields: Vec<String>,
    /// Checked by hand, so a bad value gets a message naming the allowed range.
    max_pages: Option<Value>,
    #[serde(default)]
    dry_run: bool,
}

/// `max_pages` as given: an integer from 1 to [`MAX_PAGES`], 1 when absent.
fn check_max_pages(value: Option<&Value>) -> Result<u32, String> {
    let Some(value) = value else {
        return Ok(1);
    };
    value
        .as_u64()
        .filter(|n| (1..=u64::from(MAX_PAGES)).contains(n))
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| {
            format!("max_pages must be an integer from 1 to {MAX_PAGES} (default 1), got {value}")
        })
}

fn check_fields(fields: &[String]) -> Result<(), String> {
    if fields.len() > MAX_FIELDS {
        return Err(format!(
            "fields lists {} entries; at most {MAX_FIELDS}",
            fields.len()
        ));
    }
    for field in fields {
        let ok = !field.is_empty()
            && field.len() <= 200
            && field.split('.').all(|part| {
                let part = part.strip_suffix("[]").unwrap_or(part);
                !part.is_empty()
                    && part
                        .chars()
                        .all(|c| c.is_alphanumeric() || c == '_' || c == '-')
            });
        if !ok {
            return Err(format!(
                "field {field:?} is not a dotted field path; use names joined by dots, e.g. \"data.id\" or \"data[].name\""
            ));
        }
    }
    Ok(())
}

pub async fn call(ctx: &CallContext<'_>, arguments: Value) -> ToolOutcome {
    let args: Args = match parse_args(NAME, arguments) {
        Ok(args) => args,
        Err(message) => {
            return tool_error(
                format!(
                    "{message}. Expected: method (GET/POST/PUT/PATCH/DELETE/HEAD), path (/api/...), optional query (object), body (JSON), fields (list of dotted names), max_pages (1-{MAX_PAGES}), dry_run (boolean)"
                ),
                None,
            );
        }
    };
    let max_pages =
        match check_fields(&args.fields).and_then(|()| check_max_pages(args.max_pages.as_ref())) {
            Ok(max_pages) => max_pages,
            Err(message) => return tool_error(format!("{message}. Nothing was sent."), None),
        };
    let context = session_context(ctx);
    let catalog = ctx.state.catalog.current();
    let planned = match plan_call(ctx, &catalog.index, &args, args.query.as_ref()) {
        Ok(planned) => planned,
        Err(error) => {
            let kind = match error {
                PlanError::ReadOnly { .. } => "read_only",
                PlanError::UnknownPath { .. } => "unknown_path",
                _ => "invalid_request",
            };
            let message = refusal_message(&error, ctx.principal);
            return refused(ctx, &args.method, kind, message, context);
        }
    };
    let pagination = catalog
        .index
        .get(&planned.operation_key)
        .and_then(|op| op.pagination.as_ref());
    let follow = match pages::follow_for(&planned, pagination, max_pages) {
        Ok(follow) => follow,
        Err(message) => {
            let outcome = refused(ctx, &args.method, "invalid_request", message, context);
            return outcome.about(&planned.operation_key);
        }
    };
    if args.dry_run {
        return dry_run(&planned, &context, ctx.state.upstream.api_version.as_str());
    }
    let mut credential = match CallCredential::obtain(ctx).await {
        Ok(credential) => credential,
        Err(problem) => return sign_in_error(ctx, &planned, problem, context),
    };
    if let Some(follow) = follow {
        let list = pages::ListCall {
            index: &catalog.index,
            args: &args,
            follow,
            max_pages,
        };
        return list.read(ctx, &mut credential, planned, context).await;
    }
    let result = match credential.send(ctx, &planned, None, None).await {
        Ok(result) => result,
        Err(problem) => return sign_in_error(ctx, &planned, problem, context),
    };
    record_call(ctx, &planned, &result, None);
    match result {
        Ok(response) => respond(ctx, &planned, response, context, &args),
        Err(error) => transport_error(&error, context),
    }
}

/// Plans the call as the agent gave it, with `query` in place of its own (a later page adds its cursor).
fn plan_call(
    ctx: &CallContext<'_>,
    index: &crate::openapi::OperationIndex,
    args: &Args,
    query: Option<&Map<String, Value>>,
) -> Result<PlannedRequest, PlanError> {
    let principal = ctx.principal;
    let modes = CallerModes {
        access_mode: principal.access_mode,
        auth_mode: principal.auth_mode,
        partner_org_id: principal.partner_org_id.as_deref(),
    };
    let call = Call {
        method: &args.method,
        path: &args.path,
        query,
        body: args.body.as_ref(),
    };
    plan(index, &ctx.state.upstream.base_url, modes, call)
}

/// A call refused before anything was sent: audited, and the agent told what to change.
fn refused(
    ctx: &CallContext<'_>,
    method: &str,
    kind: &'static str,
    message: String,
    context: Value,
) -> ToolOutcome {
    tracing::info!(target: "audit", principal = %ctx.principal.fingerprint, access = %ctx.principal.access_mode, method = %method.to_ascii_uppercase(), refused = kind, "execute refused");
    tool_error(
        message.clone(),
        Some(json!({"error": message, "refused": kind, "context": context})),
    )
    .error_key(Some(kind))
}

/// Metrics and the audit line for one upstream call; `page` numbers the pages of a list read in one call.
fn record_call(
    ctx: &CallContext<'_>,
    planned: &PlannedRequest,
    result: &Result<UpstreamResponse, UpstreamError>,
    page: Option<u32>,
) {
    let principal = ctx.principal;
    let status_label = match result {
        Ok(response) => response.status.as_u16().to_string(),
        Err(UpstreamError::Timeout(_)) => "timeout".into(),
        Err(_) => "error".into(),
    };
    if let Ok(response) = result {
        ctx.state
            .metrics
            .upstream_duration
            .get_or_create(&UpstreamLabels {
                method: planned.method.to_string(),
                status: status_label.clone(),
            })
            .observe(response.elapsed.as_secs_f64());
    }
    tracing::info!(
        target: "audit",
        principal = %principal.fingerprint,
        access = %principal.access_mode,
        org = principal.partner_org_id.as_deref().or(principal.organization_id.as_deref()).unwrap_or("-"),
        method = %planned.method,
        path = %planned.path_template,
        status = %status_label,
        duration_ms = result.as_ref().map(|r| r.elapsed.as_millis() as u64).unwrap_or(0),
        page,
        "execute"
    );
}

/// What to do after a call that got no HTTP answer.
fn transport_hint(error: &UpstreamError) -> &'static str {
    match error {
        UpstreamError::Timeout(_) => {
            "Polytomic did not answer in time. Retry once; for a long-running action, check its status with a GET instead of repeating it."
        }
        UpstreamError::TooLarge(_) => {
            "The answer is too large to return. Narrow the call: a smaller `limit`, filters, or a single item by id."
        }
        _ => {
            "Polytomic could not be reached. Retry in a moment; if it keeps failing, tell the user the Polytomic API is unavailable."
        }
    }
}

fn transport_error(error: &UpstreamError, context: Value) -> ToolOutcome {
    let message = format!("{error}. {}", transport_hint(error));
    tool_error(
        message.clone(),
        Some(json!({"error": message, "context": context})),
    )
}

/// The complete `execute` arguments for the next page: the agent's own, with the cursor parameter(s) set.
fn continue_with(args: &Args, cursor: &Map<String, Value>) -> Value {
    let mut query = args.query.clone().unwrap_or_default();
    query.extend(cursor.iter().map(|(k, v)| (k.clone(), v.clone())));
    let method = args.method.trim().to_ascii_uppercase();
    let mut next = json!({"method": method, "path": args.path, "query": query});
    if !args.fields.is_empty() {
        next["fields"] = json!(args.fields);
    }
    if let Some(max_pages) = &args.max_pages {
        next["max_pages"] = max_pages.clone();
    }
    next
}

/// The upstream rate-limit headers and the path parameters the server filled in, when there are any.
fn add_call_facts(
    structured: &mut Value,
    planned: &PlannedRequest,
    rate_limit: Map<String, Value>,
) {
    if !rate_limit.is_empty() {
        structured["rate_limit"] = Value::Object(rate_limit);
    }
    if !planned.filled.is_empty() {
        structured["filled"] = Value::Object(
            planned
                .filled
                .iter()
                .map(|(k, v)| (k.clone(), json!(v)))
                .collect(),
        );
    }
}

/// The upstream rate-limit headers worth showing the agent.
fn rate_limit_of(headers: &http::HeaderMap) -> Map<String, Value> {
    let mut rate_limit = Map::new();
    for name in &RATE_LIMIT_HEADERS {
        if let Some(value) = headers.get(name).and_then(|v| v.to_str().ok()) {
            rate_limit.insert(name.as_str().to_owned(), json!(value));
        }
    }
    rate_limit
}

/// The refusal for the agent. A read-only OAuth grant is the person's own choice at sign-in, so the way to
/// write is theirs too: reconnect and choose full access (a header cannot widen a grant).
fn refusal_message(error: &PlanError, principal: &Principal) -> String {
    match (error, principal.grant) {
        (PlanError::ReadOnly { method }, Some(AccessMode::ReadOnly)) => format!(
            "refused: this sign-in was granted read-only access, so only GET and HEAD calls are allowed and nothing was sent to Polytomic. \
             {method} changes data. Tell the user: to let you make changes, they must disconnect and reconnect the Polytomic MCP server \
             and choose \"Full access\" on the consent page. Until then, use GET calls to inspect instead"
        ),
        _ => error.to_string(),
    }
}

fn session_context(ctx: &CallContext<'_>) -> Value {
    let p = ctx.principal;
    let mut context = json!({
        "auth_mode": p.auth_mode.as_str(),
        "access_mode": p.access_mode.as_str(),
        "api_version": ctx.state.upstream.api_version,
    });
    if let Some(org) = p.partner_org_id.as_deref().or(p.organization_id.as_deref()) {
        context["organization_id"] = json!(org);
    }
    if let Some(grant) = p.grant {
        context["scope"] = json!(scope_granting(grant));
    }
    context
}

fn dry_run(planned: &PlannedRequest, context: &Value, api_version: &str) -> ToolOutcome {
    let mut headers = json!({
        "Authorization": "Bearer ****",
        "X-Polytomic-Version": api_version,
        "Accept": "application/json",
    });
    if planned.body.is_some() {
        headers["Content-Type"] = json!("application/json");
    }
    if let Some(key) = &planned.idempotency_key {
        headers["Idempotency-Key"] = json!(key);
    }
    let body: Value = planned
        .body
        .as_ref()
        .and_then(|b| serde_json::from_slice(b).ok())
        .unwrap_or(Value::Null);
    let request = json!({
        "method": planned.method.as_str(),
        "url": planned.url.as_str(),
        "operation": planned.operation_key,
        "headers": headers,
        "body": body,
    });
    let text = format!(
        "Dry run, nothing sent. Valid request for {}:\n{} {}\nbody: {}\nRun the same call without dry_run to send it.",
        planned.operation_key, planned.method, planned.url, body
    );
    tool_success(
        json!({"status": 0, "dry_run": true, "operation": planned.operation_key, "request": request, "body": Value::Null, "context": context}),
        text,
    )
    .about(&planned.operation_key)
    .upstream_status(0)
}

fn respond(
    ctx: &CallContext<'_>,
    planned: &PlannedRequest,
    response: UpstreamResponse,
    context: Value,
    args: &Args,
) -> ToolOutcome {
    let fields = args.fields.as_slice();
    let catalog = ctx.state.catalog.current();
    let pagination = catalog
        .index
        .get(&planned.operation_key)
        .and_then(|op| op.pagination.clone());
    let max_chars = ctx.state.config.upstream.result_max_chars();
    let shaped = shape_body(
        &response.body,
        pagination.as_ref(),
        ShapeOptions { max_chars, fields },
    );
    let rate_limit = rate_limit_of(&response.headers);
    let status = response.status.as_u16();
    let mut structured = json!({
        "status": status,
        "operation": planned.operation_key,
        "body": shaped.body,
        "context": context,
    });
    let next = shaped
        .next
        .as_ref()
        .and_then(|hint| hint.get("query"))
        .and_then(Value::as_object)
        .map(|cursor| continue_with(args, cursor));
    if let Some(next) = &next {
        structured["next"] = next.clone();
    }
    if let Some(truncated) = &shaped.truncated {
        structured["truncated"] = truncated.clone();
    }
    if !shaped.unmatched_fields.is_empty() {
        structured["unmatched_fields"] = json!(shaped.unmatched_fields);
    }
    add_call_facts(&mut structured, planned, rate_limit);
    let body_text = match shaped.text {
        Some(text) => text,
        None => serde_json::to_string(&structured["body"]).unwrap_or_default(),
    };
    if response.status.is_success() {
        let mut text = format!(
            "{} {} → {}\n{}",
            planned.method,
            planned.url.path(),
            status,
            body_text
        );
        if let Some(next) = &next {
            let _ = write!(text, "\nnext page: call again with {next}");
        }
        if let Some(truncated) = &shaped.truncated {
            let _ = write!(text, "\ntruncated: {truncated}");
        }
        return tool_success(structured, text)
            .about(&planned.operation_key)
            .upstream_status(status);
    }
    let message = error_message(ctx, planned, status, &structured["body"]);
    let error_key = structured["body"]
        .get("key")
        .and_then(Value::as_str)
        .map(str::to_owned);
    structured["error"] = json!(message);
    tool_error(
        format!("{message}\nresponse body: {body_text}"),
        Some(structured),
    )
    .about(&planned.operation_key)
    .upstream_status(status)
    .error_key(error_key.as_deref())
}

/// Keeps Polytomic's own message and adds the next step for the agent.
fn error_message(
    ctx: &CallContext<'_>,
    planned: &PlannedRequest,
    status: u16,
    body: &Value,
) -> String {
    let upstream = body
        .get("message")
        .and_then(Value::as_str)
        .or_else(|| body.get("error").and_then(Value::as_str))
        .or_else(|| body.as_str())
        .unwrap_or("");
    let partner_op_in_user_mode =
        planned.key_type == KeyType::Partner && ctx.principal.auth_mode == AuthMode::User;
    let next = match status {
        400 => "Check the parameters and body against `search` with this operation; fix the named field and retry.".to_owned(),
        401 if matches!(ctx.principal.credential, crate::core::Credential::OAuth { .. }) => "Polytomic no longer accepts this sign-in. Ask the user to reconnect the Polytomic MCP server (sign in again).".to_owned(),
        401 => "The API key is invalid, expired or lacks access. Ask the user to check the key configured for this MCP server.".to_owned(),
        403 if partner_op_in_user_mode => "This operation needs a partner API key: the user must connect with a partner key and the header X-Polytomic-Auth-Mode: partner.".to_owned(),
        403 => "The key is not allowed to do this. Ask the user for a key (or role) with access.".to_owned(),
        404 => "Nothing exists at this id. Check the id with the matching list call (search for it), then retry.".to_owned(),
        409 => "Conflict: the resource changed or the action is already running. Fetch its current state with a GET before retrying.".to_owned(),
        422 => "Polytomic rejected a field (named in the message). Fix that field and retry; `search` with this operation lists the fields.".to_owned(),
        429 => "Rate limited. Wait before calling again (see `rate_limit`), and make fewer calls.".to_owned(),
        s if s >= 500 => "Polytomic had an error. Retry once later; if it persists, tell the user.".to_owned(),
        _ => "Check the request against `search` for this operation.".to_owned(),
    };
    let mut message = format!("Polytomic answered {status} for {}", planned.operation_key);
    let metadata = body
        .get("metadata")
        .filter(|m| m.as_object().is_some_and(|o| !o.is_empty()));
    if !upstream.is_empty() {
        let _ = write!(
            message,
            ": {}",
            upstream.chars().take(500).collect::<String>()
        );
    }
    if let Some(metadata) = metadata {
        let details: String = metadata.to_string().chars().take(300).collect();
        let _ = write!(message, " (details: {details})");
    }
    let _ = write!(message, ". {next}");
    message
}
