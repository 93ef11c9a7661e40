//! Fits an upstream response into an agent's context: valid JSON always, cut at item boundaries when too
//! large, with a note that says what was cut and how to get the rest, and a `next` hint for pagination.

use serde_json::{Map, Value, json};

use crate::openapi::Pagination;

#[derive(Debug, Clone, Copy)]
pub struct ShapeOptions {
    /// Budget for the serialised body, in characters.
    pub max_chars: usize,
}

#[derive(Debug, Clone)]
pub struct Shaped {
    pub body: Value,
    /// Present when something was cut: what, and how to get the rest.
    pub truncated: Option<Value>,
    /// Arguments to pass back to `execute` for the next page.
    pub next: Option<Value>,
}

pub fn shape_body(raw: &[u8], pagination: Option<&Pagination>, options: ShapeOptions) -> Shaped {
    if raw.is_empty() {
        return Shaped {
            body: Value::Null,
            truncated: None,
            next: None,
        };
    }
    let Ok(parsed) = serde_json::from_slice::<Value>(raw) else {
        let text = String::from_utf8_lossy(raw);
        let total = text.chars().count();
        if total <= options.max_chars {
            return Shaped {
                body: Value::String(text.into_owned()),
                truncated: None,
                next: None,
            };
        }
        let kept: String = text.chars().take(options.max_chars).collect();
        return Shaped {
            body: Value::String(kept),
            truncated: Some(
                json!({"kind": "text", "kept_chars": options.max_chars, "total_chars": total}),
            ),
            next: None,
        };
    };
    let next = pagination.and_then(|p| next_hint(&parsed, p));
    let size = serialized_len(&parsed);
    if size <= options.max_chars {
        return Shaped {
            body: parsed,
            truncated: None,
            next,
        };
    }
    let (body, truncated) = trim_to_budget(parsed, size, options.max_chars, next.is_some());
    Shaped {
        body,
        truncated: Some(truncated),
        next,
    }
}

fn serialized_len(value: &Value) -> usize {
    serde_json::to_string(value)
        .map(|s| s.len())
        .unwrap_or(usize::MAX)
}

/// The JSON pointer of the largest array (by serialised size) within three levels.
fn largest_array(value: &Value, pointer: String, depth: usize, best: &mut Option<(usize, String)>) {
    match value {
        Value::Array(items) => {
            let size = serialized_len(value);
            if items.len() > 1 && best.as_ref().is_none_or(|(s, _)| size > *s) {
                *best = Some((size, pointer.clone()));
            }
        }
        Value::Object(map) if depth < 3 => {
            for (key, child) in map {
                let escaped = key.replace('~', "~0").replace('/', "~1");
                largest_array(child, format!("{pointer}/{escaped}"), depth + 1, best);
            }
        }
        _ => {}
    }
}

fn trim_to_budget(mut body: Value, size: usize, budget: usize, has_next: bool) -> (Value, Value) {
    let mut best = None;
    largest_array(&body, String::new(), 0, &mut best);
    if let Some((array_size, pointer)) = best {
        let overhead = size - array_size;
        if let Some(Value::Array(items)) = body.pointer_mut(&pointer) {
            let total = items.len();
            // Keep the longest prefix of items that fits; the sizes are summed, not re-serialised each time.
            let room = budget.saturating_sub(overhead + 400);
            let mut used = 2;
            let mut kept = 0;
            for item in items.iter() {
                let item_len = serialized_len(item) + 1;
                if used + item_len > room {
                    break;
                }
                used += item_len;
                kept += 1;
            }
            if kept > 0 || overhead + 400 < budget {
                items.truncate(kept);
                let field = if pointer.is_empty() {
                    "(top level)".to_owned()
                } else {
                    pointer.clone()
                };
                let hint = if has_next {
                    "Ask for smaller pages with `limit`, or follow `next` for the following page; add filters to narrow the list."
                } else {
                    "Narrow the call: add filters or a smaller `limit`, or fetch single items by id."
                };
                let note = json!({
                    "kind": "items",
                    "array": field,
                    "kept": kept,
                    "total": total,
                    "hint": hint,
                });
                return (body, note);
            }
        }
    }
    // No array to cut (or one item alone is too large): keep the top-level keys that fit.
    let mut kept_keys = Vec::new();
    let mut dropped_keys = Vec::new();
    let body = match body {
        Value::Object(map) => {
            let mut out = Map::new();
            let mut used = 2;
            for (key, value) in map {
                let len = serialized_len(&value) + key.len() + 4;
                if used + len <= budget.saturating_sub(400) {
                    used += len;
                    kept_keys.push(key.clone());
                    out.insert(key, value);
                } else {
                    dropped_keys.push(key);
                }
            }
            Value::Object(out)
        }
        _ => Value::Null,
    };
    let note = json!({
        "kind": "fields",
        "dropped_fields": dropped_keys,
        "hint": "The response was too large for the result budget; request a single item or a narrower view.",
    });
    (body, note)
}

/// Reads the next-page cursor at `pagination.next` and turns it into `execute` query arguments.
fn next_hint(body: &Value, pagination: &Pagination) -> Option<Value> {
    let mut cursor = body;
    for part in pagination.next.as_deref()?.split('.') {
        cursor = cursor.get(part)?;
    }
    let token = match cursor {
        Value::String(s) if !s.is_empty() => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    let param = pagination.request.first()?.clone();
    if pagination.style == "page" {
        // `links.next` is a URL; hand back its page parameter when it has one.
        let url = url::Url::parse(&token)
            .or_else(|_| url::Url::parse(&format!("http://x{token}")))
            .ok()?;
        let page = url
            .query_pairs()
            .find(|(k, _)| *k == param.as_str())
            .map(|(_, v)| v.into_owned())?;
        return Some(json!({"query": {param: page}}));
    }
    Some(json!({"query": {param: token}}))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cursor() -> Pagination {
        Pagination {
            style: "cursor".into(),
            request: vec!["page_token".into(), "limit".into()],
            next: Some("pagination.next_page_token".into()),
            cursor_from: None,
            max_limit: None,
            note: None,
        }
    }

    #[test]
    fn small_bodies_pass_through_with_next_hint() {
        let raw = br#"{"data":[{"id":1}],"pagination":{"next_page_token":"abc"}}"#;
        let shaped = shape_body(raw, Some(&cursor()), ShapeOptions { max_chars: 10_000 });
        assert!(shaped.truncated.is_none());
        assert_eq!(shaped.next, Some(json!({"query": {"page_token": "abc"}})));
    }

    #[test]
    fn large_arrays_are_cut_at_item_boundaries_and_stay_valid_json() {
        let items: Vec<Value> = (0..500)
            .map(|i| json!({"id": i, "name": "x".repeat(50)}))
            .collect();
        let raw = serde_json::to_vec(&json!({"data": items})).unwrap();
        let shaped = shape_body(&raw, None, ShapeOptions { max_chars: 5_000 });
        let note = shaped.truncated.unwrap();
        let kept = note["kept"].as_u64().unwrap() as usize;
        assert!(kept > 10 && kept < 500);
        assert_eq!(shaped.body["data"].as_array().unwrap().len(), kept);
        assert_eq!(note["total"], 500);
        assert!(serde_json::to_string(&shaped.body).unwrap().len() <= 5_000);
    }

    #[test]
    fn non_json_is_returned_as_text() {
        let shaped = shape_body(b"<html>oops</html>", None, ShapeOptions { max_chars: 100 });
        assert_eq!(shaped.body, json!("<html>oops</html>"));
    }
}
