//! The embedded OpenAPI document is valid, complete, and faithful to Polytomic's published structure.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;

use polytomic_mcp::openapi::{EMBEDDED_DOCUMENT, KeyType, index_text};
use serde_json::Value;

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

fn document() -> Value {
    serde_json::from_str(EMBEDDED_DOCUMENT).unwrap()
}

fn operations(doc: &Value) -> Vec<(String, &Value)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in METHODS {
            if let Some(op) = item.get(method) {
                out.push((format!("{} {path}", method.to_uppercase()), op));
            }
        }
    }
    out
}

fn collect_refs<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(r)) = map.get("$ref") {
                out.push(r);
            }
            map.values().for_each(|v| collect_refs(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}

#[test]
fn every_operation_is_documented_for_agents() {
    let doc = document();
    let ops = operations(&doc);
    assert_eq!(ops.len(), 128, "the Polytomic API has 128 operations");
    for (key, op) in &ops {
        let summary = op["summary"].as_str().unwrap_or_default();
        assert!(
            !summary.is_empty() && summary.len() <= 100,
            "{key}: summary"
        );
        assert!(
            op["description"].as_str().is_some_and(|d| d.len() > 20),
            "{key}: description"
        );
        assert!(
            op["x-search-phrases"]
                .as_array()
                .is_some_and(|p| p.len() >= 3),
            "{key}: search phrases"
        );
        assert!(
            op["security"].as_array().is_some_and(|s| !s.is_empty()),
            "{key}: security (key type)"
        );
        assert!(
            op["tags"].as_array().is_some_and(|t| !t.is_empty()),
            "{key}: tags"
        );
        for param in op["parameters"].as_array().into_iter().flatten() {
            let schema = &param["schema"];
            assert!(
                schema.get("type").is_some()
                    || schema.get("$ref").is_some()
                    || schema.get("oneOf").is_some()
                    || schema.get("anyOf").is_some(),
                "{key}: parameter {} has no type",
                param["name"]
            );
            assert!(
                ["path", "query", "header"].contains(&param["in"].as_str().unwrap()),
                "{key}"
            );
        }
    }
}

#[test]
fn every_reference_resolves() {
    let doc = document();
    let mut refs = Vec::new();
    collect_refs(&doc, &mut refs);
    assert!(refs.len() > 500);
    for r in refs {
        let pointer = r
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("non-local ref {r}"));
        assert!(doc.pointer(pointer).is_some(), "unresolved {r}");
    }
}

#[test]
fn the_index_reflects_key_types_pagination_and_bodies() {
    let index = index_text(EMBEDDED_DOCUMENT, "embedded").unwrap();
    assert_eq!(index.operations.len(), 128);
    let partner = index
        .operations
        .iter()
        .filter(|o| o.key_type == KeyType::Partner)
        .count();
    let user = index
        .operations
        .iter()
        .filter(|o| o.key_type == KeyType::User)
        .count();
    assert_eq!((user, partner), (111, 14));
    assert_eq!(index.get("GET /api/me").unwrap().key_type, KeyType::Any);
    let syncs = index.get("get /api/syncs").unwrap();
    assert_eq!(
        syncs.pagination.as_ref().unwrap().next.as_deref(),
        Some("pagination.next_page_token")
    );
    // Where each list keeps its items, for `execute` to merge pages.
    for (key, items) in [
        ("GET /api/syncs", "data"),
        (
            "GET /api/syncs/{sync_id}/executions/{id}/consolelog",
            "data.entries",
        ),
        ("GET /api/queries/{id}", "data.results"),
    ] {
        let pagination = index.get(key).unwrap().pagination.as_ref().unwrap();
        assert_eq!(pagination.items.as_deref(), Some(items), "{key}");
    }
    let console = index
        .get("GET /api/syncs/{sync_id}/executions/{id}/consolelog")
        .unwrap();
    assert_eq!(
        console.pagination.as_ref().unwrap().cursor_param(),
        Some("after")
    );
    let create = index.get("POST /api/syncs").unwrap();
    assert!(create.body_schema.is_some() && create.body_fields.iter().any(|f| f.required));
    // No operation asks the agent for the headers the server sends itself.
    for op in &index.operations {
        assert!(
            op.params
                .iter()
                .all(|p| !p.name.eq_ignore_ascii_case("authorization")),
            "{}",
            op.key
        );
    }
}

/// Polytomic's published document, from the shared reference folder beside the checkout (as on the team's
/// machines and in `.ci/run`; the GitHub workflow has no such folder and skips this test by name).
fn reference() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/openapi/polytomic-openapi.json"
    );
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| {
        panic!("{path}: {e}; this test compares with Polytomic's published document beside the checkout")
    });
    serde_json::from_str(&text).unwrap()
}

#[test]
#[ignore = "needs ../shared/openapi/polytomic-openapi.json beside the checkout; run `cargo test -- --ignored` (.ci/run does)"]
fn structure_matches_polytomics_published_document() {
    let reference = reference();
    let ours = document();
    let ours_ops: BTreeSet<String> = operations(&ours).into_iter().map(|(k, _)| k).collect();
    let theirs = operations(&reference);
    let theirs_keys: BTreeSet<String> = theirs.iter().map(|(k, _)| k.clone()).collect();
    assert_eq!(ours_ops, theirs_keys, "same operations");
    let ours_by_key: std::collections::BTreeMap<String, &Value> =
        operations(&ours).into_iter().collect();
    for (key, op) in &theirs {
        let mine = ours_by_key[key];
        let names = |op: &Value| -> BTreeSet<(String, String, bool)> {
            op["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| {
                    let name = p["name"].as_str().unwrap_or_default().to_ascii_lowercase();
                    name != "authorization" && name != "x-polytomic-version"
                })
                .map(|p| {
                    (
                        p["name"].as_str().unwrap().to_owned(),
                        p["in"].as_str().unwrap().to_owned(),
                        p["required"].as_bool().unwrap_or(false),
                    )
                })
                .collect()
        };
        assert_eq!(names(mine), names(op), "{key}: parameters");
        assert_eq!(
            mine.get("requestBody").is_some(),
            op.get("requestBody").is_some(),
            "{key}: request body"
        );
        // Our text is our own: no reference summary or description is reused verbatim.
        for field in ["summary", "description"] {
            if let (Some(a), Some(b)) = (mine[field].as_str(), op[field].as_str()) {
                assert!(
                    b.len() < 25 || a != b,
                    "{key}: {field} copied from the reference"
                );
            }
        }
    }
    let schemas = |d: &Value| {
        d["components"]["schemas"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect::<BTreeSet<_>>()
    };
    assert_eq!(
        schemas(&ours),
        schemas(&reference),
        "same component schemas"
    );
}
