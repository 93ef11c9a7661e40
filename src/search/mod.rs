//! Ranking over the operation index: BM25F over weighted fields, query expansion with Polytomic's vocabulary,
//! and structural rules for the near-twin confusions a bag of words cannot settle. Pure and synchronous, so it
//! is easy to test and to benchmark.

mod handle;
mod phrases;
mod rules;
mod spell;
mod text;

use std::collections::HashMap;

use crate::core::AuthMode;
use crate::openapi::{KeyType, Operation, OperationIndex};

pub use handle::{IndexHandle, spawn_refresh};
pub use text::{raw_words, stem, tokens};

/// Longest query accepted, in characters. A task in plain words is a sentence or two; the development set's
/// longest query is far shorter. The cap (with [`MAX_QUERY_WORDS`]) bounds what one search can cost.
pub const MAX_QUERY_CHARS: usize = 1_000;
/// Most words a query may have (stop words included).
pub const MAX_QUERY_WORDS: usize = 64;

/// Why a query is refused before ranking.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error(
        "the query has {chars} characters; the limit is {MAX_QUERY_CHARS} characters and {MAX_QUERY_WORDS} words"
    )]
    TooLong { chars: usize },
    #[error(
        "the query has {words} words; the limit is {MAX_QUERY_WORDS} words and {MAX_QUERY_CHARS} characters"
    )]
    TooManyWords { words: usize },
}

/// Checks a query against the limits without tokenising more than the limits allow.
pub fn check_query(query: &str) -> Result<(), QueryError> {
    if query.len() > MAX_QUERY_CHARS {
        let chars = query.chars().count();
        if chars > MAX_QUERY_CHARS {
            return Err(QueryError::TooLong { chars });
        }
    }
    let words = raw_words(query).len();
    if words > MAX_QUERY_WORDS {
        return Err(QueryError::TooManyWords { words });
    }
    Ok(())
}

/// The query's words as ranking reads them: at most [`MAX_QUERY_CHARS`] characters and [`MAX_QUERY_WORDS`]
/// words, so a caller that skipped [`check_query`] still gets a bounded amount of work.
fn bounded_words(query: &str) -> Vec<String> {
    let end = query
        .char_indices()
        .nth(MAX_QUERY_CHARS)
        .map_or(query.len(), |(at, _)| at);
    let mut words = raw_words(&query[..end]);
    words.truncate(MAX_QUERY_WORDS);
    words
}

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
    /// Repairs query words with a typo into words the catalog or the rules know.
    speller: spell::Speller,
}

/// Filters an agent can add to a query, and the session the query is asked in.
#[derive(Debug, Default, Clone)]
pub struct Filters {
    pub method: Option<String>,
    pub tag: Option<String>,
    pub key_type: Option<KeyType>,
    pub read_only: bool,
    /// The caller's session; `None` ranks as if no key type and no access limit applied.
    pub session: Option<Session>,
}

/// What the caller's session can run: its key type (auth mode) and whether it is read-only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Session {
    pub auth_mode: AuthMode,
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
        let speller = spell::Speller::new(known_words(&index));
        Self {
            index,
            postings,
            vocabulary: rules::Vocabulary::new(),
            speller,
        }
    }

    /// The query's words as the ranking reads them: typos repaired, phrases applied.
    fn query_words(&self, query: &str) -> Vec<String> {
        let words: Vec<String> = bounded_words(query)
            .into_iter()
            .map(|word| match self.speller.repair(&word) {
                Some(repaired) => repaired.to_owned(),
                None => word,
            })
            .collect();
        phrases::rewrite(&words)
    }

    /// Ranks operations for a free-text query; an empty result means nothing matched at all. Only the first
    /// [`MAX_QUERY_CHARS`] characters and [`MAX_QUERY_WORDS`] words are read, so the cost is bounded: one
    /// postings walk per expanded term, then a sort of the matches.
    pub fn search(&self, query: &str, filters: &Filters, limit: usize) -> Vec<Hit<'_>> {
        let words = self.query_words(query);
        let terms = self.vocabulary.expand(&words);
        if terms.is_empty() {
            return Vec::new();
        }
        let intent = rules::Intent::of_words(&words, filters.session);
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

/// Every word a query may be repaired into, with how often the catalog uses it: the words of every
/// operation's fields and the words the vocabulary and the rules read.
fn known_words(index: &OperationIndex) -> HashMap<String, u32> {
    let mut known: HashMap<String, u32> = HashMap::new();
    for op in &index.operations {
        let text = [
            op.path.as_str(),
            op.summary.as_str(),
            op.description.as_str(),
            &op.phrases.join(" "),
            &op.tags.join(" "),
        ]
        .join(" ");
        for word in raw_words(&text) {
            *known.entry(word).or_default() += 1;
        }
        for param in &op.params {
            *known.entry(param.name.to_lowercase()).or_default() += 1;
        }
    }
    for word in rules::rule_words().chain(phrases::phrase_words()) {
        *known.entry(word.to_owned()).or_default() += 1;
    }
    known
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_over_the_limits_are_refused_with_their_size() {
        assert_eq!(check_query("why did my last sync fail"), Ok(()));
        let long = "x".repeat(MAX_QUERY_CHARS + 1);
        assert_eq!(
            check_query(&long),
            Err(QueryError::TooLong {
                chars: MAX_QUERY_CHARS + 1
            })
        );
        let wordy = "a ".repeat(MAX_QUERY_WORDS + 1);
        assert_eq!(
            check_query(&wordy),
            Err(QueryError::TooManyWords {
                words: MAX_QUERY_WORDS + 1
            })
        );
        // Characters, not bytes: 1,000 two-byte letters are within the limit.
        assert_eq!(check_query(&"é".repeat(MAX_QUERY_CHARS)), Ok(()));
        let message = QueryError::TooLong { chars: 5000 }.to_string();
        assert!(message.contains("1000 characters") && message.contains("64 words"));
    }

    #[test]
    fn ranking_reads_at_most_the_limits_of_an_unchecked_query() {
        let query = (0..10_000).map(|n| format!("w{n} ")).collect::<String>();
        let words = bounded_words(&query);
        assert_eq!(words.len(), MAX_QUERY_WORDS);
        assert_eq!(words[0], "w0");
        let multibyte = "é".repeat(5 * MAX_QUERY_CHARS);
        assert_eq!(
            bounded_words(&multibyte)[0].chars().count(),
            MAX_QUERY_CHARS
        );
    }

    #[test]
    fn expansion_keeps_each_term_once_at_its_highest_weight() {
        let vocabulary = rules::Vocabulary::new();
        // `run` expands to `execution` at half weight; the literal `execution` later lifts it to 1.0.
        let words: Vec<String> = ["run", "run", "execution"]
            .iter()
            .map(|w| (*w).to_owned())
            .collect();
        let terms = vocabulary.expand(&words);
        let weight = |term: &str| {
            let found: Vec<f32> = terms
                .iter()
                .filter(|(t, _)| t == term)
                .map(|(_, w)| *w)
                .collect();
            assert_eq!(found.len(), 1, "{term} appears once in {terms:?}");
            found[0]
        };
        assert_eq!(weight("run"), 1.0);
        assert_eq!(weight("execution"), 1.0);
        assert_eq!(weight("start"), 0.5);
    }

    fn embedded() -> Catalog {
        Catalog::build(
            crate::openapi::index_text(crate::openapi::EMBEDDED_DOCUMENT, "embedded")
                .expect("embedded document indexes"),
        )
    }

    fn ranked(catalog: &Catalog, query: &str, session: Option<Session>) -> Vec<String> {
        let filters = Filters {
            session,
            ..Filters::default()
        };
        catalog
            .search(query, &filters, 5)
            .iter()
            .map(|hit| hit.operation.key.clone())
            .collect()
    }

    fn session(auth_mode: AuthMode) -> Option<Session> {
        Some(Session {
            auth_mode,
            read_only: false,
        })
    }

    #[test]
    fn the_session_decides_which_key_type_ranks_first_and_the_other_stays_in_reach() {
        let catalog = embedded();
        for (query, user_op, partner_op) in [
            (
                "remove a user from the organization",
                "DELETE /api/organization/users/{id}",
                "DELETE /api/organizations/{org_id}/users/{id}",
            ),
            (
                "list users",
                "GET /api/organization/users",
                "GET /api/organizations/{org_id}/users",
            ),
        ] {
            let as_user = ranked(&catalog, query, session(AuthMode::User));
            let as_partner = ranked(&catalog, query, session(AuthMode::Partner));
            assert_eq!(as_user[0], user_op, "{query}: {as_user:?}");
            assert_eq!(as_partner[0], partner_op, "{query}: {as_partner:?}");
            assert!(as_user.iter().any(|k| k == partner_op), "{as_user:?}");
            assert!(as_partner.iter().any(|k| k == user_op), "{as_partner:?}");
        }
        // Naming the partner's world in a user session still finds the partner operation first.
        let as_user = ranked(
            &catalog,
            "list all customer organizations of my partner account",
            session(AuthMode::User),
        );
        assert_eq!(as_user[0], "GET /api/organizations");
    }

    #[test]
    fn typos_phrases_and_intent_reach_the_right_operation() {
        let catalog = embedded();
        let user = session(AuthMode::User);
        for (query, expected) in [
            ("cretae a conection to salesforce", "POST /api/connections"),
            ("set up a model sync", "POST /api/syncs"),
            (
                "list the schedules of a bulk sync",
                "GET /api/bulk/syncs/{sync_id}/schedules",
            ),
            (
                "bulk sync schedules",
                "GET /api/bulk/syncs/{sync_id}/schedules",
            ),
            ("is the accounts sync running", "GET /api/syncs/{id}/status"),
        ] {
            assert_eq!(ranked(&catalog, query, user)[0], expected, "{query}");
        }
        // Asking why it failed wants the execution's errors or log, not the status summary.
        let why = ranked(&catalog, "why did the hubspot sync fail", user);
        assert!(
            why[0].starts_with("GET /api/syncs/{sync_id}/executions/{id}"),
            "{why:?}"
        );
    }
}
