//! Search latency on the embedded index, ranked for a user session as the `search` tool does: one benchmark per
//! query family, plus the whole development set. `cargo bench --bench search` reports the mean per query; the
//! p50/p99 figures in docs/search-quality.md come from `search_latency_percentiles`, which times each query of
//! every evaluation set individually.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use polytomic_mcp::core::AuthMode;
use polytomic_mcp::openapi::{EMBEDDED_DOCUMENT, index_text};
use polytomic_mcp::search::{Catalog, Filters, MAX_QUERY_WORDS, Session, check_query};

fn queries(file: &str) -> Vec<String> {
    let text = std::fs::read_to_string(format!("{}/tests/data/{file}", env!("CARGO_MANIFEST_DIR")))
        .unwrap();
    let tasks: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
    tasks
        .iter()
        .map(|t| t["query"].as_str().unwrap().to_owned())
        .collect()
}

/// What the `search` tool passes for an API-key caller in user mode.
fn user_session() -> Filters {
    Filters {
        session: Some(Session {
            auth_mode: AuthMode::User,
            read_only: false,
        }),
        ..Filters::default()
    }
}

fn bench_search(c: &mut Criterion) {
    let catalog = Catalog::build(index_text(EMBEDDED_DOCUMENT, "embedded").unwrap());
    let filters = user_session();
    for query in [
        "why did my last sync fail",
        "trigger a run now",
        "mint a key for a customer's user",
        "who am I",
    ] {
        c.bench_function(&format!("search/{query}"), |b| {
            b.iter(|| black_box(catalog.search(black_box(query), &filters, 5)))
        });
    }
    // The most a caller can ask for: as many words as accepted, each one a vocabulary word that expands.
    let longest = [
        "run",
        "job",
        "source",
        "destination",
        "show",
        "see",
        "check",
        "fail",
        "broken",
        "history",
        "permission",
        "access",
        "column",
        "pause",
        "resume",
        "trigger",
        "bulk",
        "model",
        "sync",
        "user",
    ]
    .iter()
    .cycle()
    .take(MAX_QUERY_WORDS)
    .copied()
    .collect::<Vec<_>>()
    .join(" ");
    check_query(&longest).unwrap();
    c.bench_function("search/longest accepted query (64 vocabulary words)", |b| {
        b.iter(|| black_box(catalog.search(black_box(&longest), &filters, 25)))
    });
    let dev = queries("search_dev.json");
    c.bench_function("search/dev-set (all queries)", |b| {
        b.iter(|| {
            for q in &dev {
                black_box(catalog.search(q, &filters, 5));
            }
        })
    });
    c.bench_function("index/build embedded catalog", |b| {
        b.iter(|| {
            black_box(Catalog::build(
                index_text(EMBEDDED_DOCUMENT, "embedded").unwrap(),
            ))
        })
    });
    let every_set: Vec<String> = [
        "search_dev.json",
        "search_dev_second.json",
        "search_eval_tuning.json",
        "search_eval_frozen.json",
    ]
    .iter()
    .flat_map(|file| queries(file))
    .collect();
    percentiles(&catalog, &every_set);
}

/// Times every query 200 times and prints p50 / p99 over all individual runs.
fn percentiles(catalog: &Catalog, queries: &[String]) {
    let filters = user_session();
    let mut samples = Vec::with_capacity(queries.len() * 200);
    for _ in 0..200 {
        for q in queries {
            let start = Instant::now();
            black_box(catalog.search(q, &filters, 5));
            samples.push(start.elapsed().as_nanos() as u64);
        }
    }
    samples.sort_unstable();
    let pick = |p: f64| samples[((samples.len() as f64 - 1.0) * p) as usize] as f64 / 1000.0;
    println!(
        "search_latency_percentiles: {} samples  p50 {:.1} µs  p99 {:.1} µs  max {:.1} µs",
        samples.len(),
        pick(0.50),
        pick(0.99),
        pick(1.0)
    );
}

criterion_group!(benches, bench_search);
criterion_main!(benches);
