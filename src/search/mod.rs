//! Ranking over the operation index: BM25F over weighted fields, query expansion with Polytomic's vocabulary,
//! and structural rules for the near-twin confusions a bag of words cannot settle. Pure and synchronous, so it
//! is easy to test and to benchmark.

mod handle;
mod rules;
mod text;

use std::collections::HashMap;

use crate::openapi::{KeyType, Operation, OperationIndex};

pub use handle::{IndexHandle, spawn_refresh};
pub use text::{raw_words, stem, tokens};

/// Field weights: what the operation *is* (path, summary, intent phrases) counts far more than what its
/// long description or body fields happen to mention.
const FIELDS: [(Field, f32, f32); 7] = [
    // (field, weight, length normalisation b)
    (Field::Path, 3.0, 0.3),
    (Field::Summary, 3.0, 0.5),
    (Field::Phrases, 2.0, 0.4),
    (Field::Tags, 1.2, 0.2),
    (Field::Description, 1.0, 0.75),
    (Field::Params, 0.4, 0.5),
    (Field::Body, 0.2, 0.5),
];
const K1: f32 = 1.2;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Field {
    Path,
    Summary,
    Phrases,
    Tags,
    Description,
    Params,
    Body,
}

/// One term's entry in the inverted index.
#[derive(Debug)]
struct Postings {
    idf: f32,
    /// (operation position, weighted length-normalised frequency summed over fields: the BM25F pseudo-frequency).
    docs: Vec<(usize, f32)>,
}

/// An index and its ranker, built together and swapped together.
#[derive(Debug)]
pub struct Catalog {
    pub index: OperationIndex,
    /// term → the operations that contain it: a query looks up each of its terms once, not once per operation.
    postings: HashMap<String, Postings>,
    vocabulary: rules::Vocabulary,
}

/// Filters an agent can add to a query.
#[derive(Debug, Default, Clone)]
pub struct Filters {
    pub method: Option<String>,
    pub tag: Option<String>,
    pub key_type: Option<KeyType>,
    pub read_only: bool,
}

#[derive(Debug, Clone)]
pub struct Hit<'a> {
    pub operation: &'a Operation,
    pub score: f32,
}

impl Catalog {
    pub fn build(index: OperationIndex) -> Self {
        let field_texts: Vec<Vec<(Field, Vec<String>)>> =
            index.operations.iter().map(field_tokens).collect();
        let mut avg_len: HashMap<Field, f32> = HashMap::new();
        for fields in &field_texts {
            for (field, toks) in fields {
                *avg_len.entry(*field).or_default() += toks.len() as f32;
            }
        }
        let n = index.operations.len().max(1) as f32;
        for len in avg_len.values_mut() {
            *len = (*len / n).max(1.0);
        }
        let mut postings: HashMap<String, Postings> = HashMap::new();
        for (position, fields) in field_texts.iter().enumerate() {
            let mut weighted_tf: HashMap<&str, f32> = HashMap::new();
            for (field, toks) in fields {
                let Some(&(_, weight, b)) = FIELDS.iter().find(|(f, _, _)| f == field) else {
                    continue;
                };
                let norm =
                    1.0 - b + b * toks.len() as f32 / avg_len.get(field).copied().unwrap_or(1.0);
                let mut counts: HashMap<&str, f32> = HashMap::new();
                for tok in toks {
                    *counts.entry(tok.as_str()).or_default() += 1.0;
                }
                for (tok, count) in counts {
                    *weighted_tf.entry(tok).or_default() += weight * count / norm;
                }
            }
            for (term, tf) in weighted_tf {
                postings
                    .entry(term.to_owned())
                    .or_insert_with(|| Postings {
                        idf: 0.0,
                        docs: Vec::new(),
                    })
                    .docs
                    .push((position, tf));
            }
        }
        for entry in postings.values_mut() {
            let count = entry.docs.len() as f32;
            entry.idf = ((n - count + 0.5) / (count + 0.5) + 1.0).ln();
        }
        Self {
            index,
            postings,
            vocabulary: rules::Vocabulary::new(),
        }
    }

    /// Ranks operations for a free-text query; an empty result means nothing matched at all.
    pub fn search(&self, query: &str, filters: &Filters, limit: usize) -> Vec<Hit<'_>> {
        let terms = self.vocabulary.expand(query);
        if terms.is_empty() {
            return Vec::new();
        }
        let intent = rules::Intent::of(query);
        let mut scores = vec![0.0f32; self.index.operations.len()];
        for (term, weight) in &terms {
            let Some(entry) = self.postings.get(term) else {
                continue;
            };
            for &(position, tf) in &entry.docs {
                scores[position] += weight * entry.idf * tf * (K1 + 1.0) / (tf + K1);
            }
        }
        let mut hits: Vec<Hit<'_>> = Vec::new();
        for (op, score) in self.index.operations.iter().zip(scores) {
            if score <= 0.0 || !passes(op, filters) {
                continue;
            }
            hits.push(Hit {
                operation: op,
                score: score * intent.multiplier(op),
            });
        }
        hits.sort_by(|a, b| {
            b.score
                .total_cmp(&a.score)
                .then_with(|| a.operation.key.cmp(&b.operation.key))
        });
        hits.truncate(limit);
        hits
    }

    /// Every operation passing the filters, in document order (for a filter-only request).
    pub fn filtered(&self, filters: &Filters, limit: usize) -> Vec<Hit<'_>> {
        self.index
            .operations
            .iter()
            .filter(|op| passes(op, filters))
            .take(limit)
            .map(|operation| Hit {
                operation,
                score: 0.0,
            })
            .collect()
    }
}

fn passes(op: &Operation, filters: &Filters) -> bool {
    if filters.read_only && !op.is_read_only() {
        return false;
    }
    if let Some(method) = &filters.method
        && !op.method.eq_ignore_ascii_case(method)
    {
        return false;
    }
    if let Some(key_type) = filters.key_type
        && op.key_type != key_type
        && op.key_type != KeyType::Any
    {
        return false;
    }
    if let Some(tag) = &filters.tag {
        let wanted = tag.to_lowercase();
        let matches_tag = op.tags.iter().any(|t| {
            t.to_lowercase() == wanted || crate::openapi::humanize_tag_public(t).contains(&wanted)
        });
        if !matches_tag {
            return false;
        }
    }
    true
}

/// The description without its sentences about other operations: "use GET /api/syncs/{id}/status to see if
/// it is running" describes the twin, and indexing it would pull queries about the twin here.
fn own_sentences(description: &str) -> String {
    description
        .split_inclusive(['.', ';'])
        .filter(|sentence| {
            !["GET /", "POST /", "PUT /", "PATCH /", "DELETE /"]
                .iter()
                .any(|m| sentence.contains(m))
        })
        .collect()
}

fn field_tokens(op: &Operation) -> Vec<(Field, Vec<String>)> {
    let path_words: String = op
        .path
        .split('/')
        .filter(|seg| !seg.is_empty() && *seg != "api" && !seg.starts_with('{'))
        .collect::<Vec<_>>()
        .join(" ");
    let params: String = op
        .params
        .iter()
        .map(|p| p.name.as_str())
        .collect::<Vec<_>>()
        .join(" ");
    let body: String = op
        .body_fields
        .iter()
        .map(|f| f.name.as_str())
        .collect::<Vec<_>>()
        .join(" ");
    let tags: String = op
        .tags
        .iter()
        .map(|t| crate::openapi::humanize_tag_public(t))
        .collect::<Vec<_>>()
        .join(" ");
    let mut summary = op.summary.clone();
    if let Some(id) = &op.operation_id {
        summary.push(' ');
        summary.push_str(id);
    }
    vec![
        (Field::Path, tokens(&path_words)),
        (Field::Summary, tokens(&summary)),
        (Field::Phrases, tokens(&op.phrases.join(" . "))),
        (Field::Tags, tokens(&tags)),
        (Field::Description, tokens(&own_sentences(&op.description))),
        (Field::Params, tokens(&params)),
        (Field::Body, tokens(&body)),
    ]
}
