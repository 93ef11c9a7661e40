//! Turns an agent's `execute` arguments into the one request the server will send, or refuses with a message
//! that says what to change. The URL is always built from the configured base URL and the matched template;
//! caller text only ever fills parameter values, each percent-encoded.

use std::fmt::Write as _;

use bytes::Bytes;
use http::Method;
use percent_encoding::percent_decode_str;
use serde_json::{Map, Value};
use url::Url;

use crate::core::{AccessMode, AuthMode};
use crate::openapi::{KeyType, Operation, OperationIndex, Param, Segment};

/// Schema violations listed in one refusal; the agent fixes these and learns of any others on the next try.
const MAX_REPORTED_ERRORS: usize = 5;

/// One `execute` call as the agent sent it.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: Option<&'a Map<String, Value>>,
    pub body: Option<&'a Value>,
}

/// The caller's effective context.
#[derive(Debug, Clone, Copy)]
pub struct CallerModes<'a> {
    pub access_mode: AccessMode,
    pub auth_mode: AuthMode,
    pub partner_org_id: Option<&'a str>,
}

#[derive(Debug, Clone)]
pub struct PlannedRequest {
    pub method: Method,
    pub url: Url,
    pub body: Option<Bytes>,
    pub idempotency_key: Option<String>,
    /// `METHOD /template` of the matched operation.
    pub operation_key: String,
    pub path_template: String,
    pub key_type: KeyType,
    /// Path parameters filled in by the server (partner organization), for the result's context.
    pub filled: Vec<(String, String)>,
}

impl PlannedRequest {
    /// Safe to send twice: idempotent methods, and POSTs that carry an `Idempotency-Key`.
    pub fn retryable(&self) -> bool {
        matches!(
            self.method,
            Method::GET | Method::HEAD | Method::PUT | Method::DELETE
        ) || self.idempotency_key.is_some()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("unsupported method {0:?}; use one of GET, POST, PUT, PATCH, DELETE, HEAD")]
    BadMethod(String),
    #[error(
        "refused: this session is read-only, so only GET and HEAD calls are allowed and nothing was sent to Polytomic. \
         {method} changes data; ask the user for a full-access session (header X-Polytomic-Access-Mode: full-access, \
         if the server allows it) or use a GET call to inspect instead"
    )]
    ReadOnly { method: String },
    #[error("invalid path: {0}")]
    BadPath(String),
    #[error("no Polytomic operation matches {path}. {hint}Use `search` to find the right path")]
    UnknownPath { path: String, hint: String },
    #[error(
        "{path} does not support {method}; it supports {allowed}. Use one of those, or `search` for the operation you meant"
    )]
    MethodNotAllowed {
        method: String,
        path: String,
        allowed: String,
    },
    #[error("{0}")]
    BadQuery(String),
    #[error("{0}")]
    BadBody(String),
}

/// Validates `call` against the index and builds the request. Nothing here performs I/O.
pub fn plan(
    index: &OperationIndex,
    base: &Url,
    modes: CallerModes<'_>,
    call: Call<'_>,
) -> Result<PlannedRequest, PlanError> {
    let method = super::parse_method(call.method)
        .ok_or_else(|| PlanError::BadMethod(call.method.chars().take(20).collect()))?;
    if modes.access_mode == AccessMode::ReadOnly && !matches!(method, Method::GET | Method::HEAD) {
        return Err(PlanError::ReadOnly {
            method: method.to_string(),
        });
    }
    let segments = decode_path(call.path)?;
    let (segments, filled) = fill_partner_org(&segments, modes)?;
    let lookup_method = if method == Method::HEAD {
        "GET"
    } else {
        method.as_str()
    };
    let matches = index.match_path(Some(lookup_method), &segments);
    let Some(matched) = matches.into_iter().next() else {
        let any_method = index.match_path(None, &segments);
        if !any_method.is_empty() {
            let mut allowed: Vec<&str> = any_method
                .iter()
                .map(|m| m.operation.method.as_str())
                .collect();
            allowed.sort_unstable();
            allowed.dedup();
            return Err(PlanError::MethodNotAllowed {
                method: method.to_string(),
                path: call.path.to_owned(),
                allowed: allowed.join(", "),
            });
        }
        return Err(PlanError::UnknownPath {
            path: call.path.to_owned(),
            hint: closest_hint(index, &segments),
        });
    };
    let op = matched.operation;
    if let Some(unfilled) = matched
        .params
        .iter()
        .find(|(_, v)| v.starts_with('{') && v.ends_with('}'))
    {
        return Err(PlanError::BadPath(format!(
            "replace the placeholder {} in the path with a real value (template: {})",
            unfilled.1, op.path
        )));
    }

    let mut url = base.clone();
    {
        let mut path = url.path_segments_mut().map_err(|()| {
            PlanError::BadPath("the configured base URL cannot take a path".into())
        })?;
        path.pop_if_empty();
        for (template, actual) in op.segments.iter().zip(&segments) {
            match template {
                Segment::Literal(lit) => path.push(lit),
                Segment::Param(_) => path.push(actual),
            };
        }
    }
    let query_pairs = check_query(op, call.query)?;
    if !query_pairs.is_empty() {
        let mut pairs = url.query_pairs_mut();
        for (name, value) in &query_pairs {
            pairs.append_pair(name, value);
        }
    }
    let body = check_body(op, &method, call.body)?;
    let idempotency_key =
        (method == Method::POST).then(|| format!("mcp-{}", uuid::Uuid::new_v4().simple()));
    Ok(PlannedRequest {
        method,
        url,
        body,
        idempotency_key,
        operation_key: op.key.clone(),
        path_template: op.path.clone(),
        key_type: op.key_type,
        filled,
    })
}

/// Splits and percent-decodes a concrete path once, refusing anything that could step outside `/api/`.
pub fn decode_path(path: &str) -> Result<Vec<String>, PlanError> {
    let bad = |why: &str| Err(PlanError::BadPath(why.to_owned()));
    if path.chars().any(|c| c.is_control()) {
        return bad("control characters (such as CR or LF) are not allowed");
    }
    if path.contains("://") || path.starts_with("//") {
        return bad(
            "give only the path (e.g. /api/me), without scheme or host; the server adds the Polytomic base URL",
        );
    }
    if path.contains('?') || path.contains('#') {
        return bad("put query parameters in the `query` argument, not in the path");
    }
    if path.chars().any(char::is_whitespace) {
        return bad(
            "spaces are not allowed in the path; percent-encode them in ids if they are really part of one",
        );
    }
    if !path.starts_with("/api/") {
        return bad("the path must start with /api/ (for example /api/me)");
    }
    let trimmed = path.strip_suffix('/').unwrap_or(path);
    let mut segments = Vec::new();
    for raw in trimmed[1..].split('/') {
        if raw.is_empty() {
            return bad("empty path segments (`//`) are not allowed");
        }
        if raw == "." || raw == ".." {
            return bad("`.` and `..` segments are not allowed");
        }
        let decoded = percent_decode_str(raw).decode_utf8().map_err(|_| {
            PlanError::BadPath("a percent-encoded segment is not valid UTF-8".into())
        })?;
        if decoded == "." || decoded == ".." || decoded.contains('/') || decoded.contains('\\') {
            return bad("encoded `/`, `\\`, `.` or `..` in a segment are not allowed");
        }
        if decoded.chars().any(|c| c.is_control()) {
            return bad("encoded control characters (such as CR or LF) are not allowed");
        }
        segments.push(decoded.into_owned());
    }
    Ok(segments)
}

/// Path parameters the server filled in, as (name, value).
type FilledParams = Vec<(String, String)>;

/// In partner mode a literal `{org_id}` / `{organization_id}` placeholder takes the default organization.
fn fill_partner_org(
    segments: &[String],
    modes: CallerModes<'_>,
) -> Result<(Vec<String>, FilledParams), PlanError> {
    let mut out = Vec::with_capacity(segments.len());
    let mut filled = Vec::new();
    for seg in segments {
        if seg == "{org_id}" || seg == "{organization_id}" {
            match (modes.auth_mode, modes.partner_org_id) {
                (AuthMode::Partner, Some(org)) => {
                    filled.push((seg.trim_matches(['{', '}']).to_owned(), org.to_owned()));
                    out.push(org.to_owned());
                    continue;
                }
                (AuthMode::Partner, None) => {
                    return Err(PlanError::BadPath(format!(
                        "{seg} needs an organization id: put one in the path, or configure the X-Polytomic-Partner-Org-Id header for this server"
                    )));
                }
                (AuthMode::User, _) => {
                    return Err(PlanError::BadPath(format!(
                        "{seg} must be replaced with an organization id; this operation is for partner keys (X-Polytomic-Auth-Mode: partner)"
                    )));
                }
            }
        }
        out.push(seg.clone());
    }
    Ok((out, filled))
}

fn closest_hint(index: &OperationIndex, segments: &[String]) -> String {
    let mut scored: Vec<(usize, &Operation)> = index
        .operations
        .iter()
        .map(|op| {
            let shared = op
                .segments
                .iter()
                .zip(segments)
                .take_while(|(t, a)| match t {
                    Segment::Literal(lit) => lit == *a,
                    Segment::Param(_) => true,
                })
                .count();
            let literal_overlap = op
                .segments
                .iter()
                .filter(|t| matches!(t, Segment::Literal(l) if segments.contains(l)))
                .count();
            (shared * 3 + literal_overlap, op)
        })
        .filter(|(score, _)| *score > 3)
        .collect();
    scored.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.key.cmp(&b.1.key)));
    let mut hint = String::new();
    let close: Vec<&str> = scored
        .iter()
        .take(4)
        .map(|(_, op)| op.key.as_str())
        .collect();
    if !close.is_empty() {
        let _ = write!(hint, "Closest operations: {}. ", close.join("; "));
    }
    hint
}

fn check_query(
    op: &Operation,
    query: Option<&Map<String, Value>>,
) -> Result<Vec<(String, String)>, PlanError> {
    let mut pairs = Vec::new();
    let declared: Vec<&Param> = op.query_params().collect();
    let names = || {
        if declared.is_empty() {
            "none".to_owned()
        } else {
            declared
                .iter()
                .map(|p| p.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    if let Some(query) = query {
        for (name, value) in query {
            let Some(param) = declared.iter().find(|p| p.name == *name) else {
                return Err(PlanError::BadQuery(format!(
                    "{} does not take the query parameter {name:?}; allowed: {}",
                    op.key,
                    names()
                )));
            };
            let values: Vec<&Value> = match value {
                Value::Null => continue,
                // Polytomic would read repeated keys as it pleases (first, last, or a list) for a parameter
                // that takes one value; say so instead of guessing.
                Value::Array(_) if !takes_a_list(param) => {
                    return Err(PlanError::BadQuery(format!(
                        "query parameter {name:?} of {} takes one value ({}), not a list; give one value, or make one call per value",
                        op.key, param.ty
                    )));
                }
                Value::Array(items) => items.iter().collect(),
                other => vec![other],
            };
            for item in values {
                let text = scalar_text(item).ok_or_else(|| {
                    PlanError::BadQuery(format!(
                        "query parameter {name:?} must be a string, number or boolean (or a list of them), not an object"
                    ))
                })?;
                check_scalar(param, &text).map_err(PlanError::BadQuery)?;
                pairs.push((name.clone(), text));
            }
        }
    }
    for param in &declared {
        if param.required && !pairs.iter().any(|(n, _)| *n == param.name) {
            return Err(PlanError::BadQuery(format!(
                "{} requires the query parameter {:?} ({}); add it to `query`",
                op.key, param.name, param.ty
            )));
        }
    }
    Ok(pairs)
}

/// A query parameter whose schema is an array (or may be one), sent as repeated keys.
fn takes_a_list(param: &Param) -> bool {
    param
        .ty
        .split('|')
        .any(|variant| variant.starts_with("array"))
}

fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Checks a query value against the parameter's type and enum.
fn check_scalar(param: &Param, text: &str) -> Result<(), String> {
    if !param.enum_values.is_empty()
        && !param
            .enum_values
            .iter()
            .any(|v| scalar_text(v).as_deref() == Some(text))
    {
        let allowed: Vec<String> = param.enum_values.iter().filter_map(scalar_text).collect();
        return Err(format!(
            "{:?} is not an allowed value of {}; allowed: {}",
            text,
            param.name,
            allowed.join(", ")
        ));
    }
    let base = param.ty.split(['(', '<', '|']).next().unwrap_or_default();
    let ok = match base {
        "integer" => text.parse::<i64>().is_ok(),
        "number" => text.parse::<f64>().is_ok(),
        "boolean" => matches!(text, "true" | "false"),
        _ => true,
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "query parameter {} must be of type {}, got {:?}",
            param.name, param.ty, text
        ))
    }
}

fn check_body(
    op: &Operation,
    method: &Method,
    body: Option<&Value>,
) -> Result<Option<Bytes>, PlanError> {
    let body = body.filter(|b| !b.is_null());
    if op.body_schema.is_none() {
        if body.is_some() {
            return Err(PlanError::BadBody(format!(
                "{} takes no request body; remove `body`",
                op.key
            )));
        }
        return Ok(None);
    };
    let Some(body) = body else {
        if op.body_required {
            let required: Vec<&str> = op
                .body_fields
                .iter()
                .filter(|f| f.required && !f.name.contains('.'))
                .map(|f| f.name.as_str())
                .collect();
            return Err(PlanError::BadBody(format!(
                "{} needs a JSON body{}; use `search` with operation \"{}\" to see every field",
                op.key,
                if required.is_empty() {
                    String::new()
                } else {
                    format!(" with at least: {}", required.join(", "))
                },
                op.key
            )));
        }
        return Ok(None);
    };
    if matches!(*method, Method::GET | Method::HEAD) {
        return Err(PlanError::BadBody(
            "GET and HEAD calls take no body; put filters in `query`".into(),
        ));
    }
    if let Value::Object(fields) = body {
        let missing: Vec<&str> = op
            .body_fields
            .iter()
            .filter(|f| {
                f.required
                    && !f.name.contains('.')
                    && !f.name.contains('[')
                    && !fields.contains_key(&f.name)
            })
            .map(|f| f.name.as_str())
            .collect();
        if !missing.is_empty() {
            return Err(PlanError::BadBody(format!(
                "the body is missing required field(s): {}",
                missing.join(", ")
            )));
        }
    }
    if let Some(validator) = op.body_validator() {
        let problems: Vec<String> = validator
            .iter_errors(body)
            .take(MAX_REPORTED_ERRORS)
            .map(|error| {
                let pointer = error.instance_path().as_str().replace('/', ".");
                format!("body{pointer}: {error}")
            })
            .collect();
        if !problems.is_empty() {
            return Err(PlanError::BadBody(format!(
                "the body does not match the schema of {}: {}. Fix these fields (search with operation \"{}\" lists every field, its type and allowed values); nothing was sent",
                op.key,
                problems.join("; "),
                op.key
            )));
        }
    }
    let bytes = serde_json::to_vec(body)
        .map_err(|e| PlanError::BadBody(format!("the body cannot be encoded: {e}")))?;
    Ok(Some(Bytes::from(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each refusal names its own reason, so an agent knows what to fix; a check that fell through to a later
    /// one would refuse with the wrong advice.
    #[test]
    fn each_unsafe_path_is_refused_with_its_own_reason() {
        for (path, reason) in [
            ("/api/me\r\nX-Injected: 1", "control characters"),
            ("https://evil.example/api/me", "without scheme or host"),
            ("/api/x://evil.example", "without scheme or host"),
            ("//evil.example/api/me", "without scheme or host"),
            ("/api/me?limit=1", "`query` argument"),
            ("/api/me#fragment", "`query` argument"),
            ("/api/sync s", "spaces are not allowed"),
            ("/v1/me", "must start with /api/"),
            ("/api//me", "empty path segments"),
            ("/api/../admin", "`.` and `..` segments"),
            ("/api/./me", "`.` and `..` segments"),
            ("/api/%2e", "encoded `/`"),
            ("/api/%2E%2E", "encoded `/`"),
            ("/api/a%2Fb", "encoded `/`"),
            ("/api/a%5Cb", "encoded `/`"),
            ("/api/%0d%0a", "encoded control characters"),
            ("/api/%ff", "not valid UTF-8"),
        ] {
            match decode_path(path) {
                Err(PlanError::BadPath(message)) => {
                    assert!(message.contains(reason), "{path:?}: {message}");
                }
                other => panic!("{path:?} was not refused as a bad path: {other:?}"),
            }
        }
    }

    #[test]
    fn a_safe_path_decodes_each_segment_once() {
        assert_eq!(
            decode_path("/api/syncs/a%20b%2525/").unwrap(),
            ["api", "syncs", "a b%25"]
        );
    }
}
