//! The operation index: one entry per method + path, with everything `search` and `execute` need, resolved
//! once at load time so that requests never walk the raw document.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use serde::Serialize;
use serde_json::Value;

use super::schema::{self, describe_type};

const METHODS: [&str; 7] = ["get", "post", "put", "patch", "delete", "head", "options"];
/// How deep request-body fields are flattened into dotted names.
const MAX_FIELD_DEPTH: usize = 3;
/// Most body fields listed for one operation; larger bodies say how many were left out.
const MAX_FIELDS: usize = 60;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyType {
    /// A user API key (or an OAuth session) of the organization.
    User,
    /// A partner API key, acting across the partner's customer organizations.
    Partner,
    /// Either kind of key.
    Any,
}

impl KeyType {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyType::User => "user",
            KeyType::Partner => "partner",
            KeyType::Any => "any",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ParamLocation {
    Path,
    Query,
    Header,
}

#[derive(Debug, Clone, Serialize)]
pub struct Param {
    pub name: String,
    #[serde(rename = "in")]
    pub location: ParamLocation,
    pub required: bool,
    #[serde(rename = "type")]
    pub ty: String,
    #[serde(rename = "enum", skip_serializing_if = "Vec::is_empty")]
    pub enum_values: Vec<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The resolved JSON Schema, for validation.
    #[serde(skip)]
    pub schema: Value,
}

#[derive(Debug, Clone, Serialize)]
pub struct BodyField {
    /// Dotted path into the body; `[]` marks array elements (`targets[].name`).
    pub name: String,
    #[serde(rename = "type")]
    pub ty: String,
    pub required: bool,
    #[serde(rename = "enum", skip_serializing_if = "Vec::is_empty")]
    pub enum_values: Vec<Value>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Pagination {
    pub style: String,
    /// Query parameters that select a page.
    pub request: Vec<String>,
    /// Dotted path in the response holding the next cursor or link; `None` when the response carries none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
    /// Where to derive the next bound from when `next` is absent (e.g. `data[].created_at`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cursor_from: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_limit: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Dotted path in the response holding the page's items (`data`, `data.entries`); `None` when unknown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub items: Option<String>,
}

impl Pagination {
    /// The query parameter that carries the cursor or page number (the first request parameter that is not
    /// the page size).
    pub fn cursor_param(&self) -> Option<&str> {
        self.request
            .iter()
            .map(String::as_str)
            .find(|name| *name != "limit")
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Literal(String),
    Param(String),
}

#[derive(Debug, Clone)]
pub struct Operation {
    /// `METHOD /path`, unique in the index.
    pub key: String,
    pub method: String,
    pub path: String,
    pub segments: Vec<Segment>,
    pub operation_id: Option<String>,
    pub summary: String,
    pub description: String,
    pub tags: Vec<String>,
    pub phrases: Vec<String>,
    pub params: Vec<Param>,
    pub body_required: bool,
    pub body_fields: Vec<BodyField>,
    pub body_fields_omitted: usize,
    /// The resolved request-body schema, for validation.
    pub body_schema: Option<Value>,
    /// The body schema compiled on first use; `None` inside when it does not compile.
    body_validator: Arc<OnceLock<Option<jsonschema::Validator>>>,
    /// Top-level shape of the success response, e.g. `data: array<object>`.
    pub response_fields: Vec<String>,
    pub key_type: KeyType,
    pub pagination: Option<Pagination>,
    pub deprecated: bool,
}

impl Operation {
    pub fn is_read_only(&self) -> bool {
        matches!(self.method.as_str(), "GET" | "HEAD")
    }

    /// The compiled body validator, built once per operation and shared by every request.
    pub fn body_validator(&self) -> Option<&jsonschema::Validator> {
        let schema = self.body_schema.as_ref()?;
        self.body_validator
            .get_or_init(|| {
                jsonschema::options()
                    .with_draft(jsonschema::Draft::Draft202012)
                    .should_validate_formats(false)
                    .build(schema)
                    .map_err(|error| tracing::warn!(operation = %self.key, %error, "body schema does not compile; only required fields are checked"))
                    .ok()
            })
            .as_ref()
    }

    pub fn path_params(&self) -> impl Iterator<Item = &Param> {
        self.params
            .iter()
            .filter(|p| p.location == ParamLocation::Path)
    }

    pub fn query_params(&self) -> impl Iterator<Item = &Param> {
        self.params
            .iter()
            .filter(|p| p.location == ParamLocation::Query)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct TagInfo {
    pub tag: String,
    pub name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub description: String,
    pub operations: usize,
}

/// A concrete path matched to an operation's template.
#[derive(Debug, Clone)]
pub struct PathMatch<'a> {
    pub operation: &'a Operation,
    /// Path parameter values, percent-decoded once.
    pub params: Vec<(String, String)>,
}

#[derive(Debug)]
pub struct OperationIndex {
    pub title: String,
    pub version: String,
    pub operations: Vec<Operation>,
    pub tags: Vec<TagInfo>,
    by_key: BTreeMap<String, usize>,
}

impl OperationIndex {
    /// Builds the index from a parsed OpenAPI 3.x document.
    pub fn from_document(doc: &Value) -> Result<Self, String> {
        let version = doc
            .get("openapi")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if !version.starts_with("3.") {
            return Err(format!(
                "expected an OpenAPI 3.x document (field `openapi` = \"3.0.x\" or \"3.1.x\"), found {:?}",
                doc.get("openapi").unwrap_or(&Value::Null)
            ));
        }
        let paths = doc
            .get("paths")
            .and_then(Value::as_object)
            .ok_or("the document has no `paths` object")?;
        let key_types = security_key_types(doc);
        let mut operations = Vec::new();
        for (path, item) in paths {
            if !path.starts_with('/') {
                return Err(format!("path `{path}` does not start with `/`"));
            }
            let shared_params = item
                .get("parameters")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for method in METHODS {
                let Some(op) = item.get(method) else { continue };
                let operation = build_operation(doc, path, method, op, &shared_params, &key_types)
                    .map_err(|e| format!("{} {path}: {e}", method.to_uppercase()))?;
                operations.push(operation);
            }
        }
        if operations.is_empty() {
            return Err("the document defines no operations".into());
        }
        let mut by_key = BTreeMap::new();
        for (i, op) in operations.iter().enumerate() {
            if by_key.insert(op.key.clone(), i).is_some() {
                return Err(format!("operation {} is defined twice", op.key));
            }
        }
        let tags = build_tags(doc, &operations);
        Ok(Self {
            title: doc
                .pointer("/info/title")
                .and_then(Value::as_str)
                .unwrap_or("API")
                .to_owned(),
            version: doc
                .pointer("/info/version")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            operations,
            tags,
            by_key,
        })
    }

    /// Looks up `METHOD /path/template` (method case-insensitive, spaces around tolerated).
    pub fn get(&self, key: &str) -> Option<&Operation> {
        let (method, path) = key.trim().split_once(char::is_whitespace)?;
        let key = format!("{} {}", method.to_ascii_uppercase(), path.trim());
        self.by_key.get(&key).map(|&i| &self.operations[i])
    }

    /// Matches decoded path segments against every template; literal segments beat parameters, so
    /// `/api/syncs/status` (if it existed) would win over `/api/syncs/{id}`.
    pub fn match_path<'a>(
        &'a self,
        method: Option<&str>,
        segments: &[String],
    ) -> Vec<PathMatch<'a>> {
        let mut matches: Vec<(usize, PathMatch<'a>)> = Vec::new();
        for op in &self.operations {
            if method.is_some_and(|m| m != op.method) || op.segments.len() != segments.len() {
                continue;
            }
            let mut params = Vec::new();
            let mut literal_hits = 0;
            let mut ok = true;
            for (template, actual) in op.segments.iter().zip(segments) {
                match template {
                    Segment::Literal(lit) if lit == actual => literal_hits += 1,
                    Segment::Literal(_) => {
                        ok = false;
                        break;
                    }
                    Segment::Param(name) => {
                        if actual.is_empty() {
                            ok = false;
                            break;
                        }
                        params.push((name.clone(), actual.clone()));
                    }
                }
            }
            if ok {
                matches.push((
                    literal_hits,
                    PathMatch {
                        operation: op,
                        params,
                    },
                ));
            }
        }
        let best = matches.iter().map(|(hits, _)| *hits).max().unwrap_or(0);
        matches
            .into_iter()
            .filter(|(hits, _)| *hits == best)
            .map(|(_, m)| m)
            .collect()
    }
}

pub fn split_template(path: &str) -> Vec<Segment> {
    path.trim_start_matches('/')
        .split('/')
        .map(
            |seg| match seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                Some(name) => Segment::Param(name.to_owned()),
                None => Segment::Literal(seg.to_owned()),
            },
        )
        .collect()
}

/// Maps each security scheme name to the key type it stands for, from its name or description.
fn security_key_types(doc: &Value) -> BTreeMap<String, KeyType> {
    let mut out = BTreeMap::new();
    if let Some(Value::Object(schemes)) = doc.pointer("/components/securitySchemes") {
        for (name, scheme) in schemes {
            let text = format!(
                "{name} {}",
                scheme
                    .get("description")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
            )
            .to_lowercase();
            let kind = if text.contains("partner") {
                KeyType::Partner
            } else if text.contains("user") {
                KeyType::User
            } else {
                KeyType::Any
            };
            out.insert(name.clone(), kind);
        }
    }
    out
}

fn key_type_of(op: &Value, params: &[Value], schemes: &BTreeMap<String, KeyType>) -> KeyType {
    if let Some(Value::Array(requirements)) = op.get("security") {
        let kinds: Vec<KeyType> = requirements
            .iter()
            .filter_map(Value::as_object)
            .flat_map(|req| req.keys())
            .map(|name| schemes.get(name).copied().unwrap_or(KeyType::Any))
            .collect();
        return match kinds.as_slice() {
            [] => KeyType::Any,
            [first, rest @ ..] if rest.iter().all(|k| k == first) => *first,
            _ => KeyType::Any,
        };
    }
    // Documents without `security` (such as Fern exports) describe the key on the Authorization header.
    for param in params {
        if param.get("in").and_then(Value::as_str) == Some("header")
            && param
                .get("name")
                .and_then(Value::as_str)
                .is_some_and(|n| n.eq_ignore_ascii_case("authorization"))
        {
            let text = param
                .get("description")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_lowercase();
            if text.contains("partner") {
                return KeyType::Partner;
            }
            if text.contains("user") {
                return KeyType::User;
            }
        }
    }
    KeyType::Any
}

fn build_operation(
    doc: &Value,
    path: &str,
    method: &str,
    op: &Value,
    shared_params: &[Value],
    schemes: &BTreeMap<String, KeyType>,
) -> Result<Operation, String> {
    let raw_params = merged_params(doc, shared_params, op)?;
    let key_type = key_type_of(op, &raw_params, schemes);
    let segments = split_template(path);
    let params = build_params(&raw_params, &segments)?;
    let (body_required, body_schema) = request_body(doc, op)?;
    let mut body_fields = Vec::new();
    let mut omitted = 0;
    if let Some(schema) = &body_schema {
        flatten_fields(schema, &mut body_fields, &mut omitted);
    }
    let success = success_response_schema(doc, op)?;
    let response_fields = success.as_ref().map(response_shape).unwrap_or_default();
    let mut pagination = match op.get("x-pagination") {
        Some(explicit) => Some(explicit_pagination(explicit)),
        None => infer_pagination(&params, success.as_ref()),
    };
    if let Some(p) = pagination.as_mut().filter(|p| p.items.is_none()) {
        p.items = success.as_ref().and_then(list_items_path);
    }
    let text = |field: &str| {
        op.get(field)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .trim()
            .to_owned()
    };
    let mut summary = text("summary");
    if summary.is_empty() {
        summary = op
            .get("operationId")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
    }
    Ok(Operation {
        key: format!("{} {path}", method.to_uppercase()),
        method: method.to_uppercase(),
        path: path.to_owned(),
        segments,
        operation_id: op
            .get("operationId")
            .and_then(Value::as_str)
            .map(str::to_owned),
        summary,
        description: text("description"),
        tags: string_list(op.get("tags")),
        phrases: string_list(op.get("x-search-phrases")),
        params,
        body_required,
        body_fields,
        body_fields_omitted: omitted,
        body_schema,
        body_validator: Arc::new(OnceLock::new()),
        response_fields,
        key_type,
        pagination,
        deprecated: op
            .get("deprecated")
            .and_then(Value::as_bool)
            .unwrap_or(false),
    })
}

/// The path-level and operation-level parameters, resolved; an operation-level one overrides a path-level
/// one with the same name and location.
fn merged_params(doc: &Value, shared_params: &[Value], op: &Value) -> Result<Vec<Value>, String> {
    let mut raw_params: Vec<Value> = Vec::new();
    for p in shared_params.iter().chain(
        op.get("parameters")
            .and_then(Value::as_array)
            .into_iter()
            .flatten(),
    ) {
        let p = schema::resolve(doc, p)?;
        let id = (p.get("name").cloned(), p.get("in").cloned());
        raw_params.retain(|q| (q.get("name").cloned(), q.get("in").cloned()) != id);
        raw_params.push(p);
    }
    Ok(raw_params)
}

/// The parameters an agent may pass, plus one for every template variable the document forgot to declare.
fn build_params(raw_params: &[Value], segments: &[Segment]) -> Result<Vec<Param>, String> {
    let mut params = Vec::new();
    for p in raw_params {
        let name = p
            .get("name")
            .and_then(Value::as_str)
            .ok_or("a parameter has no name")?;
        let location = match p.get("in").and_then(Value::as_str) {
            Some("path") => ParamLocation::Path,
            Some("query") => ParamLocation::Query,
            Some("header") => {
                // The server sends these itself; listing them would invite the agent to pass secrets.
                if name.eq_ignore_ascii_case("authorization")
                    || name.eq_ignore_ascii_case("x-polytomic-version")
                {
                    continue;
                }
                ParamLocation::Header
            }
            _ => continue, // cookies are not used by this API
        };
        let schema = p
            .get("schema")
            .cloned()
            .unwrap_or(Value::Object(Default::default()));
        params.push(Param {
            name: name.to_owned(),
            location,
            required: location == ParamLocation::Path
                || p.get("required").and_then(Value::as_bool).unwrap_or(false),
            ty: describe_type(&schema),
            enum_values: enum_values(&schema),
            description: p
                .get("description")
                .and_then(Value::as_str)
                .map(str::to_owned),
            schema,
        });
    }
    for seg in segments {
        if let Segment::Param(name) = seg
            && !params
                .iter()
                .any(|p| p.location == ParamLocation::Path && &p.name == name)
        {
            // Templates without a declared parameter still need one for matching and validation.
            params.push(Param {
                name: name.clone(),
                location: ParamLocation::Path,
                required: true,
                ty: "string".into(),
                enum_values: Vec::new(),
                description: None,
                schema: serde_json::json!({"type": "string"}),
            });
        }
    }
    Ok(params)
}

/// Whether a body is required, and its JSON schema (the `application/json` one, else the first).
fn request_body(doc: &Value, op: &Value) -> Result<(bool, Option<Value>), String> {
    let Some(body) = op.get("requestBody") else {
        return Ok((false, None));
    };
    let body = schema::resolve(doc, body)?;
    let schema = body
        .get("content")
        .and_then(Value::as_object)
        .and_then(|content| {
            content
                .get("application/json")
                .or_else(|| content.values().next())
        })
        .and_then(|media| media.get("schema"))
        .cloned();
    let required = body
        .get("required")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    Ok((required, schema))
}

/// Pagination as our document states it (`x-pagination`), instead of inferred from parameter names.
fn explicit_pagination(explicit: &Value) -> Pagination {
    let text = |name: &str| {
        explicit
            .get(name)
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    Pagination {
        style: text("style").unwrap_or_else(|| "cursor".to_owned()),
        request: explicit
            .get("request")
            .and_then(Value::as_array)
            .map(|names| {
                names
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default(),
        next: text("next"),
        cursor_from: text("cursor_from"),
        max_limit: explicit.get("max_limit").and_then(Value::as_u64),
        note: text("note"),
        items: text("items"),
    }
}

/// Where a list response keeps its items: a top-level array of objects (`data`), else one inside a `data`
/// object (`data.entries`, `data.results`). Arrays of scalars (`data.fields`) are not items.
fn list_items_path(success: &Value) -> Option<String> {
    let is_item_list = |schema: &Value| schema::item_schema(schema).is_some_and(schema::is_object);
    let top = schema::properties(success);
    if let Some((name, _)) = top.iter().find(|(_, prop)| is_item_list(prop)) {
        return Some((*name).clone());
    }
    let (_, data) = top.iter().find(|(name, _)| name.as_str() == "data")?;
    schema::properties(data)
        .into_iter()
        .find(|(_, prop)| is_item_list(prop))
        .map(|(name, _)| format!("data.{name}"))
}

fn string_list(value: Option<&Value>) -> Vec<String> {
    value
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

fn enum_values(schema: &Value) -> Vec<Value> {
    schema
        .get("enum")
        .or_else(|| schema.get("items").and_then(|items| items.get("enum")))
        .and_then(Value::as_array)
        .map(|values| values.iter().filter(|v| !v.is_null()).cloned().collect())
        .unwrap_or_default()
}

/// Lists body fields breadth-first, so every top-level field is kept even when nested ones hit the cap,
/// then sorts them by name so that nested fields follow their parent.
fn flatten_fields(schema: &Value, out: &mut Vec<BodyField>, omitted: &mut usize) {
    let mut queue: std::collections::VecDeque<(&Value, String, bool, usize)> =
        std::collections::VecDeque::from([(schema, String::new(), true, 0)]);
    while let Some((schema, prefix, parent_required, depth)) = queue.pop_front() {
        let required = schema::required(schema);
        for (name, prop) in schema::properties(schema) {
            if out.len() >= MAX_FIELDS {
                *omitted += 1;
                continue;
            }
            let full = if prefix.is_empty() {
                name.clone()
            } else {
                format!("{prefix}.{name}")
            };
            let is_required = parent_required && required.contains(&name.as_str());
            out.push(BodyField {
                name: full.clone(),
                ty: describe_type(prop),
                required: is_required,
                enum_values: enum_values(prop),
            });
            if depth + 1 >= MAX_FIELD_DEPTH {
                continue;
            }
            if schema::is_object(prop) {
                queue.push_back((prop, full, is_required, depth + 1));
            } else if let Some(item) = schema::item_schema(prop)
                && schema::is_object(item)
            {
                queue.push_back((item, format!("{full}[]"), is_required, depth + 1));
            }
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
}

fn success_response_schema(doc: &Value, op: &Value) -> Result<Option<Value>, String> {
    let Some(Value::Object(responses)) = op.get("responses") else {
        return Ok(None);
    };
    let success = responses.iter().find(|(code, _)| code.starts_with('2'));
    let Some((_, response)) = success else {
        return Ok(None);
    };
    let response = schema::resolve(doc, response)?;
    Ok(response
        .get("content")
        .and_then(Value::as_object)
        .and_then(|content| {
            content
                .get("application/json")
                .or_else(|| content.values().next())
        })
        .and_then(|media| media.get("schema"))
        .cloned())
}

/// Top-level fields of the success body, one level into `data`, e.g. `data: array<object{id,name,…}>`.
fn response_shape(schema: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for (name, prop) in schema::properties(schema) {
        let ty = describe_type(prop);
        let inner = schema::item_schema(prop).unwrap_or(prop);
        let children: Vec<&str> = schema::properties(inner)
            .iter()
            .map(|(n, _)| n.as_str())
            .collect();
        if children.is_empty() {
            out.push(format!("{name}: {ty}"));
        } else {
            let shown: Vec<&str> = children.iter().take(12).copied().collect();
            let more = if children.len() > shown.len() {
                ",…"
            } else {
                ""
            };
            out.push(format!("{name}: {ty}{{{}{more}}}", shown.join(",")));
        }
    }
    out
}

/// For documents without `x-pagination`: recognise the cursor parameters this API family uses, and find
/// where the response carries the next cursor.
fn infer_pagination(params: &[Param], success: Option<&Value>) -> Option<Pagination> {
    let has = |name: &str| {
        params
            .iter()
            .any(|p| p.location == ParamLocation::Query && p.name == name)
    };
    let response_has = |dotted: &str| {
        let mut schema = success?;
        for part in dotted.split('.') {
            schema = schema::properties(schema)
                .into_iter()
                .find(|(n, _)| n.as_str() == part)?
                .1;
        }
        Some(dotted.to_owned())
    };
    let first_present = |candidates: &[&str]| candidates.iter().find_map(|c| response_has(c));
    let with_limit = |mut names: Vec<String>| {
        if has("limit") {
            names.push("limit".into());
        }
        names
    };
    let build = |style: &str,
                 request: Vec<String>,
                 next: Option<String>,
                 cursor_from: Option<String>| Pagination {
        style: style.into(),
        request,
        next,
        cursor_from,
        max_limit: None,
        note: None,
        items: None,
    };
    if has("page_token") {
        let next = first_present(&[
            "pagination.next_page_token",
            "next_page_token",
            "data.next_page_token",
        ]);
        return Some(build(
            "cursor",
            with_limit(vec!["page_token".into()]),
            next,
            None,
        ));
    }
    if has("after") {
        let next = first_present(&["next_cursor", "data.next_cursor", "pagination.next_cursor"]);
        return Some(build(
            "cursor",
            with_limit(vec!["after".into()]),
            next,
            None,
        ));
    }
    if has("starting_after") {
        let mut request = vec!["starting_after".into()];
        if has("ending_before") {
            request.push("ending_before".into());
        }
        return Some(build(
            "starting_after",
            with_limit(request),
            None,
            Some("the last item received".into()),
        ));
    }
    if has("page") {
        let next = first_present(&["links.next", "next"]);
        return Some(build("page", vec!["page".into()], next, None));
    }
    None
}

fn build_tags(doc: &Value, operations: &[Operation]) -> Vec<TagInfo> {
    let declared: BTreeMap<String, (String, String)> = doc
        .get("tags")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|t| {
            let tag = t.get("name")?.as_str()?.to_owned();
            let name = t
                .get("x-displayName")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .unwrap_or_else(|| tag.clone());
            let description = t
                .get("description")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            Some((tag, (name, description)))
        })
        .collect();
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for op in operations {
        for tag in &op.tags {
            *counts.entry(tag.as_str()).or_default() += 1;
        }
    }
    counts
        .into_iter()
        .map(|(tag, operations)| {
            let (name, description) = declared
                .get(tag)
                .cloned()
                .unwrap_or_else(|| (humanize_tag(tag), String::new()));
            TagInfo {
                tag: tag.to_owned(),
                name,
                description,
                operations,
            }
        })
        .collect()
}

/// `subpackage_bulkSync` → `bulk sync`.
pub fn humanize_tag(tag: &str) -> String {
    let base = tag.strip_prefix("subpackage_").unwrap_or(tag);
    let base = base.rsplit('.').next().unwrap_or(base);
    let mut out = String::new();
    for (i, ch) in base.chars().enumerate() {
        if ch.is_uppercase() && i > 0 {
            out.push(' ');
        }
        if ch == '_' || ch == '-' {
            out.push(' ');
        } else {
            out.extend(ch.to_lowercase());
        }
    }
    out
}
