//! `$ref` resolution and compact type descriptions for JSON Schemas inside an OpenAPI document.

use serde_json::{Map, Value};

/// How deep nested `$ref`s are followed; deeper (or cyclic) references are left as `{"type":"object"}`.
const MAX_REF_DEPTH: usize = 12;

/// Returns `schema` with every `$ref` into `#/components/...` replaced by its target, recursively.
pub fn resolve(doc: &Value, schema: &Value) -> Result<Value, String> {
    resolve_depth(doc, schema, 0, &mut Vec::new())
}

fn resolve_depth(
    doc: &Value,
    schema: &Value,
    depth: usize,
    stack: &mut Vec<String>,
) -> Result<Value, String> {
    match schema {
        Value::Object(map) => {
            if let Some(Value::String(reference)) = map.get("$ref") {
                if depth >= MAX_REF_DEPTH || stack.iter().any(|seen| seen == reference) {
                    // A recursive schema: stop here with a neutral placeholder naming the type.
                    let name = reference.rsplit('/').next().unwrap_or_default();
                    return Ok(serde_json::json!({"type": "object", "x-recursive": name}));
                }
                let target = lookup(doc, reference)?;
                stack.push(reference.clone());
                let resolved = resolve_depth(doc, target, depth + 1, stack);
                stack.pop();
                let mut resolved = resolved?;
                // Sibling keywords next to $ref (allowed in 3.1) refine the target.
                if let Value::Object(out) = &mut resolved {
                    for (key, value) in map {
                        if key != "$ref" {
                            out.insert(key.clone(), resolve_depth(doc, value, depth, stack)?);
                        }
                    }
                }
                return Ok(resolved);
            }
            let mut out = Map::with_capacity(map.len());
            for (key, value) in map {
                out.insert(key.clone(), resolve_depth(doc, value, depth, stack)?);
            }
            Ok(Value::Object(out))
        }
        Value::Array(items) => items
            .iter()
            .map(|item| resolve_depth(doc, item, depth, stack))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array),
        other => Ok(other.clone()),
    }
}

/// Follows a local JSON pointer reference such as `#/components/schemas/Sync`.
pub fn lookup<'a>(doc: &'a Value, reference: &str) -> Result<&'a Value, String> {
    let pointer = reference
        .strip_prefix('#')
        .ok_or_else(|| format!("only local references are supported, found `{reference}`"))?;
    doc.pointer(pointer)
        .ok_or_else(|| format!("reference `{reference}` does not resolve"))
}

/// The schema's declared type(s), ignoring `null` (a nullable string is reported as `string`).
fn primary_type(schema: &Value) -> Option<&str> {
    match schema.get("type") {
        Some(Value::String(t)) => Some(t.as_str()),
        Some(Value::Array(types)) => types
            .iter()
            .filter_map(Value::as_str)
            .find(|t| *t != "null"),
        _ => None,
    }
}

/// A one-line type such as `string`, `string(uuid)`, `integer`, `array<string>`, `object`, `string|integer`.
pub fn describe_type(schema: &Value) -> String {
    if let Some(variants) = schema
        .get("oneOf")
        .or_else(|| schema.get("anyOf"))
        .and_then(Value::as_array)
    {
        let mut names: Vec<String> = variants
            .iter()
            .filter(|v| primary_type(v) != Some("null") || v.get("type").is_none())
            .filter(|v| !(v.get("type") == Some(&Value::String("null".into()))))
            .map(describe_type)
            .collect();
        names.dedup();
        if !names.is_empty() {
            return names.join("|");
        }
    }
    if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
        if all.len() == 1 {
            return describe_type(&all[0]);
        }
        return "object".into();
    }
    match primary_type(schema) {
        Some("array") => {
            let item = schema
                .get("items")
                .map(describe_type)
                .unwrap_or_else(|| "any".into());
            format!("array<{item}>")
        }
        Some(t) => match schema.get("format").and_then(Value::as_str) {
            Some(format) if t == "string" => format!("string({format})"),
            _ => t.to_owned(),
        },
        None if schema.get("properties").is_some() => "object".into(),
        None if schema.get("enum").is_some() => "string".into(),
        None => "any".into(),
    }
}

/// Object properties of a schema, merging `allOf` members.
pub fn properties(schema: &Value) -> Vec<(&String, &Value)> {
    let mut out = Vec::new();
    if let Some(Value::Object(props)) = schema.get("properties") {
        out.extend(props.iter());
    }
    if let Some(Value::Array(all)) = schema.get("allOf") {
        for member in all {
            out.extend(properties(member));
        }
    }
    out
}

/// Names listed in `required`, merging `allOf` members.
pub fn required(schema: &Value) -> Vec<&str> {
    let mut out: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|names| names.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if let Some(Value::Array(all)) = schema.get("allOf") {
        for member in all {
            out.extend(required(member));
        }
    }
    out
}

/// The element schema when `schema` is an array, else the schema itself.
pub fn item_schema(schema: &Value) -> Option<&Value> {
    if primary_type(schema) == Some("array") {
        schema.get("items")
    } else {
        None
    }
}

pub fn is_object(schema: &Value) -> bool {
    primary_type(schema) == Some("object")
        || schema.get("properties").is_some()
        || schema.get("allOf").is_some()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn resolves_nested_refs_and_stops_on_cycles() {
        let doc = json!({"components": {"schemas": {
            "A": {"type": "object", "properties": {"b": {"$ref": "#/components/schemas/B"}}},
            "B": {"type": "object", "properties": {"a": {"$ref": "#/components/schemas/A"}}}
        }}});
        let resolved = resolve(&doc, &json!({"$ref": "#/components/schemas/A"})).unwrap();
        assert_eq!(
            resolved.pointer("/properties/b/type"),
            Some(&json!("object"))
        );
        assert_eq!(
            resolved.pointer("/properties/b/properties/a/x-recursive"),
            Some(&json!("A"))
        );
    }

    #[test]
    fn unresolvable_ref_is_an_error_naming_it() {
        let err =
            resolve(&json!({}), &json!({"$ref": "#/components/schemas/Missing"})).unwrap_err();
        assert!(err.contains("Missing"));
    }

    #[test]
    fn describes_types_compactly() {
        assert_eq!(
            describe_type(&json!({"type": "string", "format": "uuid"})),
            "string(uuid)"
        );
        assert_eq!(
            describe_type(&json!({"type": ["string", "null"]})),
            "string"
        );
        assert_eq!(
            describe_type(&json!({"type": "array", "items": {"type": "integer"}})),
            "array<integer>"
        );
        assert_eq!(
            describe_type(&json!({"oneOf": [{"type": "string"}, {"type": "integer"}]})),
            "string|integer"
        );
    }
}
