//! Fits an upstream response into an agent's context: valid JSON always, cut at item boundaries when too
//! large, with a note that says what was cut and how to get the rest, and a `next` hint for pagination.

use serde_json::{Map, Value, json};

use crate::openapi::Pagination;

#[derive(Debug, Clone, Copy)]
pub struct ShapeOptions<'a> {
    /// Budget for the serialised body, in characters.
    pub max_chars: usize,
    /// Dotted field paths to keep (`data.id`); arrays are walked through. Empty keeps everything.
    pub fields: &'a [String],
}

#[derive(Debug, Clone)]
pub struct Shaped {
    pub body: Value,
    /// Present when something was cut: what, and how to get the rest.
    pub truncated: Option<Value>,
    /// Arguments to pass back to `execute` for the next page.
    pub next: Option<Value>,
    /// Requested fields that matched nothing in the response.
    pub unmatched_fields: Vec<String>,
    /// `body` as compact JSON, when measuring it already produced that text (bodies kept whole).
    pub text: Option<String>,
}

pub fn shape_body(
    raw: &[u8],
    pagination: Option<&Pagination>,
    options: ShapeOptions<'_>,
) -> Shaped {
    let shaped = |body, truncated, next, unmatched_fields| Shaped {
        body,
        truncated,
        next,
        unmatched_fields,
        text: None,
    };
    if raw.is_empty() {
        return shaped(Value::Null, None, None, Vec::new());
    }
    let Ok(parsed) = serde_json::from_slice::<Value>(raw) else {
        let text = String::from_utf8_lossy(raw);
        let total = text.chars().count();
        if total <= options.max_chars {
            return shaped(Value::String(text.into_owned()), None, None, Vec::new());
        }
        let kept: String = text.chars().take(options.max_chars).collect();
        let note = json!({"kind": "text", "kept_chars": options.max_chars, "total_chars": total});
        return shaped(Value::String(kept), Some(note), None, Vec::new());
    };
    let next = pagination.and_then(|p| next_hint(&parsed, p));
    let (parsed, unmatched) = if options.fields.is_empty() {
        (parsed, Vec::new())
    } else {
        project(parsed, options.fields)
    };
    // Measured by serialising; a body that fits keeps its text, which the tool result shows as well.
    let text = serde_json::to_string(&parsed).unwrap_or_default();
    let size = text.len();
    if size <= options.max_chars {
        return Shaped {
            text: Some(text),
            ..shaped(parsed, None, next, unmatched)
        };
    }
    let (body, truncated) = trim_to_budget(parsed, size, options.max_chars, next.is_some());
    shaped(body, Some(truncated), next, unmatched)
}

/// A tree of requested field names: `data.id` and `data.name` become `data → {id, name}`.
#[derive(Debug, Default)]
struct FieldTree {
    children: Vec<(String, FieldTree)>,
    matched: std::cell::Cell<bool>,
}

impl FieldTree {
    fn insert(&mut self, path: &[&str]) {
        let Some((first, rest)) = path.split_first() else {
            return;
        };
        let index = match self.children.iter().position(|(name, _)| name == first) {
            Some(index) => index,
            None => {
                self.children
                    .push(((*first).to_owned(), FieldTree::default()));
                self.children.len() - 1
            }
        };
        if let Some((_, child)) = self.children.get_mut(index) {
            child.insert(rest);
        }
    }

    fn filter(&self, value: Value) -> Value {
        match value {
            Value::Array(items) => {
                Value::Array(items.into_iter().map(|item| self.filter(item)).collect())
            }
            Value::Object(mut map) => {
                let mut out = Map::new();
                for (name, child) in &self.children {
                    if let Some(inner) = map.remove(name) {
                        child.matched.set(true);
                        let kept = if child.children.is_empty() {
                            inner
                        } else {
                            child.filter(inner)
                        };
                        out.insert(name.clone(), kept);
                    }
                }
                Value::Object(out)
            }
            scalar => scalar,
        }
    }

    fn unmatched(&self, prefix: &str, out: &mut Vec<String>) {
        for (name, child) in &self.children {
            let path = if prefix.is_empty() {
                name.clone()
            } else {
                format!("{prefix}.{name}")
            };
            if child.matched.get() {
                child.unmatched(&path, out);
            } else {
                out.push(path);
            }
        }
    }
}

/// Keeps only the requested fields; returns the fields that matched nothing.
pub(super) fn project(body: Value, fields: &[String]) -> (Value, Vec<String>) {
    let mut tree = FieldTree::default();
    for field in fields {
        let parts: Vec<&str> = field
            .split('.')
            .map(|p| p.trim_end_matches("[]"))
            .filter(|p| !p.is_empty())
            .collect();
        tree.insert(&parts);
    }
    let body = tree.filter(body);
    let mut unmatched = Vec::new();
    tree.unmatched("", &mut unmatched);
    (body, unmatched)
}

/// Length of the compact JSON text of `value`, counted as it is written rather than built in memory.
pub(super) fn serialized_len(value: &Value) -> usize {
    struct Counter(usize);
    impl std::io::Write for Counter {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    match serde_json::to_writer(&mut counter, value) {
        Ok(()) => counter.0,
        Err(_) => usize::MAX,
    }
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
    let param = pagination.cursor_param()?;
    let cursor = next_cursor(body, pagination)?;
    Some(json!({"query": {param: cursor}}))
}

/// The value of the cursor parameter for the page after `body`: the token at `pagination.next`, or for
/// page-style pagination the page number inside the `links.next` URL. `None` at the end of the list.
pub(super) fn next_cursor(body: &Value, pagination: &Pagination) -> Option<String> {
    let mut cursor = body;
    for part in pagination.next.as_deref()?.split('.') {
        cursor = cursor.get(part)?;
    }
    let token = match cursor {
        Value::String(s) if !s.is_empty() => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    if pagination.style != "page" {
        return Some(token);
    }
    // `links.next` is a URL; its page parameter is the cursor.
    let param = pagination.cursor_param()?;
    let url = url::Url::parse(&token)
        .or_else(|_| url::Url::parse(&format!("http://x{token}")))
        .ok()?;
    url.query_pairs()
        .find(|(k, _)| *k == param)
        .map(|(_, v)| v.into_owned())
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
            items: Some("data".into()),
        }
    }

    #[test]
    fn small_bodies_pass_through_with_next_hint() {
        let raw = br#"{"data":[{"id":1}],"pagination":{"next_page_token":"abc"}}"#;
        let shaped = shape_body(
            raw,
            Some(&cursor()),
            ShapeOptions {
                max_chars: 10_000,
                fields: &[],
            },
        );
        assert!(shaped.truncated.is_none());
        assert_eq!(shaped.next, Some(json!({"query": {"page_token": "abc"}})));
    }

    #[test]
    fn the_next_hint_names_the_cursor_parameter_even_when_limit_is_listed_first() {
        let console = Pagination {
            request: vec!["limit".into(), "after".into()],
            next: Some("data.next_cursor".into()),
            items: Some("data.entries".into()),
            ..cursor()
        };
        let raw = br#"{"data":{"entries":[{"message":"m"}],"next_cursor":"c2"}}"#;
        let shaped = shape_body(
            raw,
            Some(&console),
            ShapeOptions {
                max_chars: 10_000,
                fields: &[],
            },
        );
        assert_eq!(shaped.next, Some(json!({"query": {"after": "c2"}})));
    }

    #[test]
    fn large_arrays_are_cut_at_item_boundaries_and_stay_valid_json() {
        let items: Vec<Value> = (0..500)
            .map(|i| json!({"id": i, "name": "x".repeat(50)}))
            .collect();
        let raw = serde_json::to_vec(&json!({"data": items})).unwrap();
        let shaped = shape_body(
            &raw,
            None,
            ShapeOptions {
                max_chars: 5_000,
                fields: &[],
            },
        );
        let note = shaped.truncated.unwrap();
        let kept = note["kept"].as_u64().unwrap() as usize;
        assert!(kept > 10 && kept < 500);
        assert_eq!(shaped.body["data"].as_array().unwrap().len(), kept);
        assert_eq!(note["total"], 500);
        assert!(serde_json::to_string(&shaped.body).unwrap().len() <= 5_000);
    }

    #[test]
    fn fields_keep_only_what_was_asked_through_arrays() {
        let raw = br#"{"data":[{"id":1,"name":"a","big":"x"},{"id":2,"name":"b","big":"y"}],"pagination":{"next_page_token":"t"}}"#;
        let fields = vec![
            "data.id".to_owned(),
            "data[].name".to_owned(),
            "nope".to_owned(),
        ];
        let shaped = shape_body(
            raw,
            Some(&cursor()),
            ShapeOptions {
                max_chars: 10_000,
                fields: &fields,
            },
        );
        assert_eq!(
            shaped.body,
            json!({"data": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]})
        );
        assert_eq!(shaped.unmatched_fields, ["nope"]);
        // The next-page hint is read before projection, so it survives a projection that drops it.
        assert_eq!(shaped.next, Some(json!({"query": {"page_token": "t"}})));
    }

    #[test]
    fn non_json_is_returned_as_text() {
        let shaped = shape_body(
            b"<html>oops</html>",
            None,
            ShapeOptions {
                max_chars: 100,
                fields: &[],
            },
        );
        assert_eq!(shaped.body, json!("<html>oops</html>"));
    }
}
