//! `search`: from a task in plain words to the operation to call, or one operation's full call recipe.

use std::fmt::Write as _;

use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{echo, parse_args};
use crate::core::{AccessMode, AuthMode};
use crate::mcp::{CallContext, ToolOutcome, tool_error, tool_success};
use crate::openapi::{KeyType, Operation, Param, ParamLocation};
use crate::search::{
    Catalog, Filters, Hit, MAX_QUERY_CHARS, MAX_QUERY_WORDS, Session, check_query,
};
use crate::upstream::pages::{Follow, MAX_PAGES};

pub const NAME: &str = "search";
pub const DESCRIPTION: &str = "Find Polytomic API operations for a task described in plain words (e.g. \"why did my \
last sync fail\", \"start a bulk sync now\"). Returns ranked operations with method, path template, parameters, \
key type (user/partner) and pagination. Pass `operation: \"METHOD /path\"` to get one operation's full recipe: \
body fields, response shape and an example `execute` call. Call this before `execute`.";

const DEFAULT_LIMIT: usize = 5;
/// Longest `operation` accepted: every "METHOD /path" in the index is far shorter.
const MAX_OPERATION_CHARS: usize = 300;
const MAX_LIMIT: usize = 25;
/// Enums longer than this are shown only in the detail view.
const SHORT_ENUM: usize = 8;

pub fn input_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "query": {"type": "string", "maxLength": MAX_QUERY_CHARS, "description": "The task in plain words (at most 64 words). Empty: list the API's resource groups."},
            "operation": {"type": "string", "maxLength": MAX_OPERATION_CHARS, "description": "\"METHOD /path\" from a result, for its full call recipe."},
            "method": {"type": "string", "enum": ["GET", "POST", "PUT", "PATCH", "DELETE"]},
            "tag": {"type": "string", "description": "Only this resource group (a `tag` from `groups`)."},
            "key_type": {"type": "string", "enum": ["user", "partner"], "description": "Only operations this key type can call."},
            "read_only": {"type": "boolean", "description": "Only GET operations."},
            "limit": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT}
        },
        "additionalProperties": false
    })
}

pub fn output_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "results": {"type": "array", "items": {"type": "object"}},
            "operation": {"type": "object"},
            "groups": {"type": "array", "items": {"type": "object"}},
            "hint": {"type": "string"}
        }
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Args {
    #[serde(default)]
    query: String,
    operation: Option<String>,
    method: Option<String>,
    tag: Option<String>,
    key_type: Option<String>,
    #[serde(default)]
    read_only: bool,
    limit: Option<i64>,
}

pub async fn call(ctx: &CallContext<'_>, arguments: Value) -> ToolOutcome {
    let args: Args = match parse_args(NAME, arguments) {
        Ok(args) => args,
        Err(message) => {
            return tool_error(
                format!(
                    "{message}. Allowed fields: query, operation, method, tag, key_type, read_only, limit"
                ),
                None,
            );
        }
    };
    if let Err(message) = check_sizes(&args) {
        return tool_error(message, None);
    }
    let catalog = ctx.state.catalog.current();
    if let Some(key) = args.operation.as_deref().filter(|k| !k.trim().is_empty()) {
        return detail(&catalog, key, session_of(ctx));
    }
    let limit = match args.limit {
        None => DEFAULT_LIMIT,
        Some(n) if (1..=MAX_LIMIT as i64).contains(&n) => n as usize,
        Some(n) => {
            return tool_error(
                format!("limit must be between 1 and {MAX_LIMIT}, got {n}"),
                None,
            );
        }
    };
    let method = match args.method.as_deref().map(str::to_ascii_uppercase) {
        None => None,
        Some(m) if ["GET", "POST", "PUT", "PATCH", "DELETE"].contains(&m.as_str()) => Some(m),
        Some(m) => {
            return tool_error(
                format!(
                    "method must be one of GET, POST, PUT, PATCH, DELETE, got {}",
                    echo(&m)
                ),
                None,
            );
        }
    };
    let key_type = match args
        .key_type
        .as_deref()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None => None,
        Some("user") => Some(KeyType::User),
        Some("partner") => Some(KeyType::Partner),
        Some(other) => {
            return tool_error(
                format!(
                    "key_type must be \"user\" or \"partner\", got {}",
                    echo(other)
                ),
                None,
            );
        }
    };
    if let Some(tag) = &args.tag {
        let known = catalog
            .index
            .tags
            .iter()
            .any(|t| t.tag.eq_ignore_ascii_case(tag) || t.name.eq_ignore_ascii_case(tag));
        if !known {
            let tags: Vec<&str> = catalog.index.tags.iter().map(|t| t.tag.as_str()).collect();
            return tool_error(
                format!("unknown tag {}; known tags: {}", echo(tag), tags.join(", ")),
                None,
            );
        }
    }
    let tag = args.tag.as_ref().and_then(|tag| {
        catalog
            .index
            .tags
            .iter()
            .find(|t| t.tag.eq_ignore_ascii_case(tag) || t.name.eq_ignore_ascii_case(tag))
            .map(|t| t.tag.clone())
    });
    let filters = Filters {
        method,
        tag,
        key_type,
        read_only: args.read_only,
        session: Some(session_of(ctx)),
    };
    let has_filters = filters.method.is_some()
        || filters.tag.is_some()
        || filters.key_type.is_some()
        || filters.read_only;
    let query = args.query.trim();

    let hits: Vec<Hit<'_>> = if query.is_empty() {
        if !has_filters {
            return overview(&catalog, None);
        }
        catalog.filtered(&filters, limit)
    } else {
        catalog.search(query, &filters, limit)
    };
    if hits.is_empty() {
        ctx.state.metrics.search_zero_hits.inc();
        return overview(&catalog, Some(query));
    }
    let session = session_of(ctx);
    let results: Vec<Value> = hits
        .iter()
        .map(|hit| summary_item(hit.operation, session))
        .collect();
    let mut text = format!("{} operation(s) for {}:\n", results.len(), echo(query));
    for (i, hit) in hits.iter().enumerate() {
        write_summary_line(&mut text, i + 1, hit.operation, session);
    }
    let mut hint = "Call `execute` with the method and the concrete path (fill the {placeholders}). For body fields and an example, search again with `operation: \"METHOD /path\"`.".to_owned();
    let mut blocked: Vec<Blocker> = hits
        .iter()
        .flat_map(|hit| blockers(hit.operation, session))
        .collect();
    blocked.sort_unstable();
    blocked.dedup();
    for blocker in blocked {
        hint.push(' ');
        hint.push_str(blocker.remedy());
    }
    text.push_str(&hint);
    tool_success(json!({"results": results, "hint": hint}), text)
}

/// What is wrong with a query or operation over its size limit, checked before any word is ranked. The message
/// states the limits and never repeats the oversized text.
fn check_sizes(args: &Args) -> Result<(), String> {
    if let Err(error) = check_query(&args.query) {
        return Err(format!(
            "{error}. Describe the task in one short sentence (at most {MAX_QUERY_WORDS} words), e.g. \"why did my last sync fail\"; nothing was searched."
        ));
    }
    if let Some(operation) = &args.operation {
        let chars = operation.chars().count();
        if chars > MAX_OPERATION_CHARS {
            return Err(format!(
                "operation has {chars} characters; the limit is {MAX_OPERATION_CHARS}. Give it as \"METHOD /path\" exactly as a search result shows it."
            ));
        }
    }
    Ok(())
}

/// The caller's session as the ranking and the notes read it.
fn session_of(ctx: &CallContext<'_>) -> Session {
    Session {
        auth_mode: ctx.principal.auth_mode,
        read_only: ctx.principal.access_mode == AccessMode::ReadOnly,
    }
}

/// Why an operation cannot run in this session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Blocker {
    PartnerKey,
    UserKey,
    ReadOnly,
}

impl Blocker {
    /// A few words on the result itself; the answer's hint says what to do, once.
    fn short(self) -> &'static str {
        match self {
            Blocker::PartnerKey => "needs a partner key",
            Blocker::UserKey => "needs a user key",
            Blocker::ReadOnly => "read-only session",
        }
    }

    fn remedy(self) -> &'static str {
        match self {
            Blocker::PartnerKey => {
                "\"needs a partner key\": reconnect with a partner API key and X-Polytomic-Auth-Mode: partner."
            }
            Blocker::UserKey => {
                "\"needs a user key\": reconnect with a user API key, or act on a customer organization via /api/organizations/{org_id}/…."
            }
            Blocker::ReadOnly => {
                "\"read-only session\": writes need X-Polytomic-Access-Mode: full-access (OAuth: a full-access sign-in)."
            }
        }
    }
}

fn blockers(op: &Operation, session: Session) -> Vec<Blocker> {
    let mut out = Vec::new();
    match (op.key_type, session.auth_mode) {
        (KeyType::Partner, AuthMode::User) => out.push(Blocker::PartnerKey),
        (KeyType::User, AuthMode::Partner) => out.push(Blocker::UserKey),
        _ => {}
    }
    if session.read_only && !op.is_read_only() {
        out.push(Blocker::ReadOnly);
    }
    out
}

/// "cannot run here: needs a partner key, read-only session", or nothing when the session can run it.
fn session_note(op: &Operation, session: Session) -> Option<String> {
    let blockers = blockers(op, session);
    if blockers.is_empty() {
        return None;
    }
    let reasons: Vec<&str> = blockers.iter().map(|b| b.short()).collect();
    Some(format!("cannot run here: {}", reasons.join(", ")))
}

/// The detail view has room for what to do as well.
fn session_note_in_full(op: &Operation, session: Session) -> Option<String> {
    let blockers = blockers(op, session);
    let short = session_note(op, session)?;
    let remedies: Vec<&str> = blockers.iter().map(|b| b.remedy()).collect();
    Some(format!("{short}. {}", remedies.join(" ")))
}

fn param_json(param: &Param, full: bool) -> Value {
    let mut out = Map::new();
    out.insert("name".into(), json!(param.name));
    out.insert("in".into(), json!(param.location));
    out.insert("type".into(), json!(param.ty));
    // Path parameters are always required; the short form leaves that to the `{placeholder}`.
    if param.required && (full || param.location != ParamLocation::Path) {
        out.insert("required".into(), json!(true));
    }
    if !param.enum_values.is_empty() && (full || param.enum_values.len() <= SHORT_ENUM) {
        out.insert("enum".into(), json!(param.enum_values));
    }
    if full && let Some(description) = &param.description {
        out.insert("description".into(), json!(description));
    }
    Value::Object(out)
}

fn summary_item(op: &Operation, session: Session) -> Value {
    let mut item = json!({
        "method": op.method,
        "path": op.path,
        "summary": op.summary,
        "key_type": op.key_type,
        "parameters": op.params.iter().map(|p| param_json(p, false)).collect::<Vec<_>>(),
    });
    if let Some(pagination) = &op.pagination {
        item["pagination"] = json!(pagination);
    }
    if op.body_schema.is_some() {
        item["body"] = json!(if op.body_required {
            "required"
        } else {
            "optional"
        });
    }
    if let Some(note) = session_note(op, session) {
        item["note"] = json!(note);
    }
    item
}

fn write_summary_line(text: &mut String, rank: usize, op: &Operation, session: Session) {
    // The key type is shown where it matters: when this session cannot run the operation.
    let _ = write!(text, "{rank}. {} {} — {}", op.method, op.path, op.summary);
    match session_note(op, session) {
        Some(note) => {
            let _ = writeln!(text, " [{} key; {note}]", op.key_type.as_str());
        }
        None => text.push('\n'),
    }
    // Path parameters are in the template already ({id}) and always required; the text lists the others.
    let listed: Vec<&Param> = op
        .params
        .iter()
        .filter(|p| p.location != ParamLocation::Path)
        .collect();
    if !listed.is_empty() {
        let params: Vec<String> = listed
            .iter()
            .map(|p| {
                let loc = match p.location {
                    ParamLocation::Path => "path",
                    ParamLocation::Query => "query",
                    ParamLocation::Header => "header",
                };
                format!(
                    "{}{} ({loc}, {})",
                    p.name,
                    if p.required { "*" } else { "" },
                    p.ty
                )
            })
            .collect();
        let _ = writeln!(text, "   params: {}", params.join(", "));
    }
    if op.body_schema.is_some() {
        let _ = writeln!(
            text,
            "   body: {}",
            if op.body_required {
                "required"
            } else {
                "optional"
            }
        );
    }
    if let Some(p) = &op.pagination {
        let _ = writeln!(text, "   pages: {}", pagination_text(p));
    }
}

fn pagination_text(p: &crate::openapi::Pagination) -> String {
    let mut out = p.request.join(", ");
    match (&p.next, &p.cursor_from) {
        (Some(next), _) => {
            let _ = write!(out, " → next in {next}");
        }
        (None, Some(from)) => {
            let _ = write!(out, " → derive the next bound from {from}");
        }
        (None, None) => {}
    }
    if let Some(max) = p.max_limit {
        let _ = write!(out, " (limit ≤ {max})");
    }
    out
}

/// For a list `execute` can follow by itself: how to read it whole in one call.
fn whole_list_hint(op: &Operation) -> Option<String> {
    let pagination = op.pagination.as_ref().filter(|_| op.method == "GET")?;
    Follow::new(pagination)?;
    let items = pagination.items.as_deref()?;
    Some(format!(
        "execute with max_pages (up to {MAX_PAGES}) reads the pages in one call; add fields such as [\"{items}.<field>\"] to keep each item small"
    ))
}

/// The API's resource groups, for an empty or unmatched query.
fn overview(catalog: &Catalog, unmatched: Option<&str>) -> ToolOutcome {
    let groups: Vec<Value> = catalog
        .index
        .tags
        .iter()
        .map(|t| json!({"tag": t.tag, "name": t.name, "operations": t.operations}))
        .collect();
    let hint = match unmatched {
        Some(query) => format!(
            "Nothing matched {}. Describe the task with Polytomic's words (sync, bulk sync, model, connection, execution, user, organization), or pick a group and search with `tag`.",
            echo(query)
        ),
        None => "Describe the task in plain words, e.g. \"list my model syncs\" or \"start a bulk sync\"; narrow with `tag`, `method` or `read_only`.".to_owned(),
    };
    let mut text = format!(
        "{hint}\nGroups ({} operations):\n",
        catalog.index.operations.len()
    );
    for t in &catalog.index.tags {
        let _ = writeln!(
            text,
            "- {} ({}): {} operations",
            t.name, t.tag, t.operations
        );
    }
    tool_success(json!({"results": [], "groups": groups, "hint": hint}), text)
}

/// The full recipe for one operation.
fn detail(catalog: &Catalog, key: &str, session: Session) -> ToolOutcome {
    let Some(op) = catalog.index.get(key) else {
        let close: Vec<String> = catalog
            .search(key, &Filters::default(), 3)
            .iter()
            .map(|h| h.operation.key.clone())
            .collect();
        return tool_error(
            format!(
                "no operation {}; give it as \"METHOD /path/template\" exactly as search returns it{}",
                echo(key),
                if close.is_empty() {
                    String::new()
                } else {
                    format!(". Did you mean: {}", close.join("; "))
                }
            ),
            None,
        );
    };
    let mut recipe = json!({
        "method": op.method,
        "path": op.path,
        "summary": op.summary,
        "description": op.description,
        "key_type": op.key_type,
        "parameters": op.params.iter().map(|p| param_json(p, true)).collect::<Vec<_>>(),
        "example": example_call(op),
    });
    if op.body_schema.is_some() {
        recipe["body"] = json!({
            "required": op.body_required,
            "fields": op.body_fields,
            "fields_not_shown": op.body_fields_omitted,
        });
    }
    if !op.response_fields.is_empty() {
        recipe["response"] = json!(op.response_fields);
    }
    if let Some(pagination) = &op.pagination {
        recipe["pagination"] = json!(pagination);
        if let Some(hint) = whole_list_hint(op) {
            recipe["pagination"]["whole_list"] = json!(hint);
        }
    }
    if let Some(note) = session_note_in_full(op, session) {
        recipe["note"] = json!(note);
    }
    if op.deprecated {
        recipe["deprecated"] = json!(true);
    }
    let mut text = format!(
        "{} {} — {} [{} key]\n{}\n",
        op.method,
        op.path,
        op.summary,
        op.key_type.as_str(),
        op.description
    );
    for p in &op.params {
        let _ = write!(
            text,
            "param {} ({:?}, {}{})",
            p.name,
            p.location,
            p.ty,
            if p.required { ", required" } else { "" }
        );
        if !p.enum_values.is_empty() {
            let _ = write!(text, " one of {}", Value::Array(p.enum_values.clone()));
        }
        text.push('\n');
    }
    if op.body_schema.is_some() {
        let _ = writeln!(
            text,
            "body ({}):",
            if op.body_required {
                "required"
            } else {
                "optional"
            }
        );
        for f in &op.body_fields {
            let _ = write!(
                text,
                "  {}: {}{}",
                f.name,
                f.ty,
                if f.required { " (required)" } else { "" }
            );
            if !f.enum_values.is_empty() {
                let _ = write!(text, " one of {}", Value::Array(f.enum_values.clone()));
            }
            text.push('\n');
        }
        if op.body_fields_omitted > 0 {
            let _ = writeln!(
                text,
                "  … {} more nested fields not shown",
                op.body_fields_omitted
            );
        }
    }
    if !op.response_fields.is_empty() {
        let _ = writeln!(text, "response: {}", op.response_fields.join("; "));
    }
    if let Some(p) = &op.pagination {
        let _ = writeln!(text, "pages: {}", pagination_text(p));
    }
    if let Some(hint) = whole_list_hint(op) {
        let _ = writeln!(text, "whole list: {hint}");
    }
    if let Some(note) = session_note_in_full(op, session) {
        let _ = writeln!(text, "note: {note}");
    }
    let _ = write!(text, "example execute: {}", recipe["example"]);
    tool_success(json!({"operation": recipe}), text)
}

/// An `execute` call with placeholders for ids and the required body fields filled with typed stand-ins.
fn example_call(op: &Operation) -> Value {
    let mut call = json!({"method": op.method, "path": op.path});
    let query: Map<String, Value> = op
        .params
        .iter()
        .filter(|p| p.location == ParamLocation::Query && p.required)
        .map(|p| (p.name.clone(), placeholder(&p.ty, &p.enum_values, &p.name)))
        .collect();
    if !query.is_empty() {
        call["query"] = Value::Object(query);
    }
    if op.body_schema.is_some() {
        let mut body = Map::new();
        for field in op
            .body_fields
            .iter()
            .filter(|f| f.required && !f.name.contains('.') && !f.name.contains('['))
        {
            body.insert(
                field.name.clone(),
                placeholder(&field.ty, &field.enum_values, &field.name),
            );
        }
        call["body"] = Value::Object(body);
    }
    if !op.is_read_only() {
        call["dry_run"] = json!(true);
    }
    call
}

fn placeholder(ty: &str, enum_values: &[Value], name: &str) -> Value {
    if let Some(first) = enum_values.first() {
        return first.clone();
    }
    match ty.split(['(', '<', '|']).next().unwrap_or_default() {
        "integer" | "number" => json!(0),
        "boolean" => json!(false),
        "array" => json!([]),
        "object" => json!({}),
        _ => json!(format!("<{name}>")),
    }
}
