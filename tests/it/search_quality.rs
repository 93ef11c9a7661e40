//! Search quality on the embedded index, scored on two task sets: the development set (tuned on) and the
//! holdout set (never tuned on). Run `cargo test --release --test search_quality -- --nocapture` to print
//! the figures and every miss.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use polytomic_mcp::openapi::{EMBEDDED_DOCUMENT, index_text};
use polytomic_mcp::search::{Catalog, Filters};
use serde::Deserialize;

#[derive(Deserialize)]
struct Task {
    query: String,
    expected: Vec<String>,
}

struct Score {
    tasks: usize,
    recall_at_1: f64,
    recall_at_5: f64,
    mrr: f64,
}

fn catalog() -> Catalog {
    Catalog::build(index_text(EMBEDDED_DOCUMENT, "embedded").expect("embedded document indexes"))
}

fn score(catalog: &Catalog, file: &str) -> Score {
    let text = std::fs::read_to_string(format!("{}/tests/data/{file}", env!("CARGO_MANIFEST_DIR")))
        .unwrap();
    let tasks: Vec<Task> = serde_json::from_str(&text).unwrap();
    let (mut r1, mut r5, mut rr) = (0.0, 0.0, 0.0);
    for task in &tasks {
        for key in &task.expected {
            assert!(
                catalog.index.get(key).is_some(),
                "{file}: expected operation {key} is not in the index"
            );
        }
        let hits = catalog.search(&task.query, &Filters::default(), 10);
        let rank = hits
            .iter()
            .position(|h| task.expected.contains(&h.operation.key));
        if let Some(0) = rank {
            r1 += 1.0
        }
        if rank.is_some_and(|r| r < 5) {
            r5 += 1.0;
        }
        if let Some(r) = rank {
            rr += 1.0 / (r as f64 + 1.0);
        }
        if rank != Some(0) {
            let top: Vec<&str> = hits
                .iter()
                .take(3)
                .map(|h| h.operation.key.as_str())
                .collect();
            println!(
                "MISS@{:?} {:?}\n   want {:?}\n   got  {:?}",
                rank.map(|r| r + 1),
                task.query,
                task.expected,
                top
            );
        }
    }
    let n = tasks.len() as f64;
    let s = Score {
        tasks: tasks.len(),
        recall_at_1: r1 / n,
        recall_at_5: r5 / n,
        mrr: rr / n,
    };
    println!(
        "{file}: {} tasks  Recall@1 {:.3}  Recall@5 {:.3}  MRR {:.3}",
        s.tasks, s.recall_at_1, s.recall_at_5, s.mrr
    );
    s
}

#[test]
fn development_set_meets_targets() {
    let catalog = catalog();
    let s = score(&catalog, "search_dev.json");
    assert!(s.tasks >= 60);
    assert!(
        s.recall_at_5 >= 0.95,
        "Recall@5 {:.3} < 0.95",
        s.recall_at_5
    );
    assert!(s.mrr >= 0.85, "MRR {:.3} < 0.85", s.mrr);
}

#[test]
fn holdout_set_stays_close_to_development() {
    let catalog = catalog();
    let s = score(&catalog, "search_holdout.json");
    assert!(s.tasks >= 40);
    // The holdout is never tuned on; a large gap to the development set would mean over-fitting.
    assert!(
        s.recall_at_5 >= 0.90,
        "holdout Recall@5 {:.3} < 0.90",
        s.recall_at_5
    );
    assert!(s.mrr >= 0.75, "holdout MRR {:.3} < 0.75", s.mrr);
}
