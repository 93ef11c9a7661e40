//! Response shaping, the per-call work `execute` does on every upstream answer: parse, the pagination hint,
//! optional field projection, measuring, and cutting to the budget at item boundaries.
//! `cargo bench --bench shape` reports the time per response for each size.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use polytomic_mcp::openapi::Pagination;
use polytomic_mcp::upstream::{ShapeOptions, shape_body};
use serde_json::json;

/// The default `POLYTOMIC_MCP_RESULT_MAX_CHARS`.
const BUDGET: usize = 30_000;

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

/// A page of sync-like records, `n` items, as Polytomic would send it.
fn sync_page(n: usize) -> Vec<u8> {
    let items: Vec<_> = (0..n)
        .map(|i| {
            json!({
                "id": format!("5f1c2d3e-0000-4000-8000-{i:012}"),
                "name": format!("Salesforce contacts to HubSpot #{i}"),
                "active": i % 3 != 0,
                "mode": "updateOrCreate",
                "schedule": {"frequency": "hourly", "minute": "15"},
                "target": {"connection_id": "0b4a3f2e-6c1d-4e8a-9f3b-2d7c5e1a9b80", "object": "contact"},
                "fields": [{"source": {"field": "email"}, "target": "email"}, {"source": {"field": "name"}, "target": "firstname"}],
                "created_at": "2026-11-01T12:00:00Z",
            })
        })
        .collect();
    serde_json::to_vec(&json!({"data": items, "pagination": {"next_page_token": "tok_abc"}}))
        .unwrap()
}

fn bench_shape(c: &mut Criterion) {
    let me = br#"{"data":{"id":"u1","email":"ada@example.com","organization_id":"0b4a3f2e-6c1d-4e8a-9f3b-2d7c5e1a9b80","organization_name":"Acme","role":"admin"}}"#.to_vec();
    let page = sync_page(40);
    let big = sync_page(1_000);
    let pagination = cursor();
    let whole = ShapeOptions {
        max_chars: BUDGET,
        fields: &[],
    };
    let projected_fields = vec!["data.id".to_owned(), "data.name".to_owned()];
    let projected = ShapeOptions {
        max_chars: BUDGET,
        fields: &projected_fields,
    };

    let mut group = c.benchmark_group("shape");
    for (name, body, pagination, options) in [
        ("GET /api/me (156 B, kept whole)", &me, None, whole),
        (
            "40 syncs (kept whole, next hint)",
            &page,
            Some(&pagination),
            whole,
        ),
        (
            "1,000 syncs (cut to 30k chars)",
            &big,
            Some(&pagination),
            whole,
        ),
        (
            "1,000 syncs, fields id+name",
            &big,
            Some(&pagination),
            projected,
        ),
    ] {
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| black_box(shape_body(black_box(body), pagination, options)))
        });
    }
    group.finish();
}

criterion_group!(benches, bench_shape);
criterion_main!(benches);
