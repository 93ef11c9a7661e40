//! Polytomic's vocabulary and the structural rules that settle near-twin operations.

use std::collections::HashMap;

use super::text::{is_stopword, stem};
use crate::openapi::{KeyType, Operation, Segment};

/// Query words that stand for words the documents use. Each (stemmed) query term adds these stemmed terms
/// with a reduced weight, so the literal word still counts most.
const SYNONYMS: &[(&str, &[&str])] = &[
    ("retl", &["sync", "model"]),
    ("reverse", &["sync", "model"]),
    ("elt", &["bulk", "sync"]),
    ("replication", &["bulk", "sync"]),
    ("replicate", &["bulk", "sync"]),
    ("replica", &["bulk", "sync"]),
    ("pipeline", &["sync"]),
    ("run", &["execution", "start"]),
    ("job", &["execution", "job"]),
    ("execution", &["run"]),
    ("integration", &["connection"]),
    ("source", &["connection"]),
    ("destination", &["connection", "target"]),
    ("warehouse", &["connection"]),
    ("credential", &["connection"]),
    ("dataset", &["model"]),
    ("segment", &["model"]),
    ("audience", &["model"]),
    ("who", &["me", "identity"]),
    ("whoami", &["me", "identity"]),
    ("identity", &["me"]),
    ("myself", &["me"]),
    ("am", &["me"]),
    ("org", &["organization"]),
    ("workspace", &["organization"]),
    ("tenant", &["organization", "partner"]),
    ("customer", &["organization", "partner"]),
    ("trigger", &["start", "execution"]),
    ("kick", &["start"]),
    ("launch", &["start"]),
    ("stop", &["cancel"]),
    ("abort", &["cancel"]),
    ("halt", &["cancel"]),
    ("kill", &["cancel"]),
    ("pause", &["activate", "active"]),
    ("resume", &["activate", "active"]),
    ("unpause", &["activate", "active"]),
    ("enable", &["activate", "active"]),
    ("disable", &["activate", "active"]),
    ("deactivate", &["activate", "active"]),
    ("remove", &["delete"]),
    ("tear", &["delete"]),
    ("offboard", &["delete", "user"]),
    ("decommission", &["delete"]),
    ("destroy", &["delete"]),
    ("drop", &["delete"]),
    ("erase", &["delete"]),
    ("add", &["create"]),
    ("new", &["create"]),
    ("make", &["create"]),
    ("mint", &["create", "key"]),
    ("generate", &["create"]),
    ("issue", &["create"]),
    ("setup", &["create"]),
    ("edit", &["update"]),
    ("change", &["update"]),
    ("modify", &["update"]),
    ("rename", &["update"]),
    ("show", &["list", "get"]),
    ("view", &["get"]),
    ("fetch", &["get"]),
    ("see", &["get", "list"]),
    ("token", &["key"]),
    ("apikey", &["key"]),
    ("member", &["user"]),
    ("teammate", &["user"]),
    ("people", &["user"]),
    ("person", &["user"]),
    ("permission", &["role", "policy"]),
    ("access", &["policy", "role"]),
    ("webhook", &["event"]),
    ("callback", &["webhook"]),
    ("notify", &["notification"]),
    ("alert", &["notification"]),
    ("email", &["me"]),
    ("profile", &["me"]),
    ("account", &["me"]),
    ("table", &["schema"]),
    ("column", &["field", "schema"]),
    ("field", &["schema"]),
    ("fail", &["error", "status"]),
    ("failure", &["error", "status"]),
    ("broken", &["error", "status"]),
    ("error", &["status"]),
    ("progress", &["status"]),
    ("running", &["status"]),
    ("log", &["log", "console"]),
    ("history", &["execution", "list"]),
    ("sql", &["query"]),
    ("schedule", &["schedule", "frequency"]),
    ("cron", &["schedule"]),
    ("test", &["test"]),
    ("check", &["test", "status"]),
    ("verify", &["test"]),
];
const SYNONYM_WEIGHT: f32 = 0.5;

/// The synonym table with every key and target stemmed once, when the catalog is built.
#[derive(Debug)]
pub struct Vocabulary {
    expansions: HashMap<String, Vec<String>>,
}

impl Vocabulary {
    pub fn new() -> Self {
        let mut expansions: HashMap<String, Vec<String>> = HashMap::new();
        for (from, to) in SYNONYMS {
            let targets: Vec<String> = to.iter().map(|t| stem(t)).collect();
            // Both the raw and the stemmed key find the entry, as a query word is looked up in both forms.
            for key in [(*from).to_owned(), stem(from)] {
                let entry = expansions.entry(key).or_default();
                for target in &targets {
                    if !entry.contains(target) {
                        entry.push(target.clone());
                    }
                }
            }
        }
        Self { expansions }
    }

    /// Stemmed query terms with weights, in first-seen order: the query's own words at 1.0, expansions at
    /// [`SYNONYM_WEIGHT`]. Each term is de-duplicated through a map, so the work is linear in the words.
    pub fn expand(&self, words: &[String]) -> Vec<(String, f32)> {
        let mut terms: Vec<(String, f32)> = Vec::with_capacity(words.len() * 2);
        let mut position: HashMap<String, usize> = HashMap::with_capacity(words.len() * 2);
        let mut add = |term: &str, weight: f32| match position.get(term) {
            Some(&at) => terms[at].1 = terms[at].1.max(weight),
            None => {
                position.insert(term.to_owned(), terms.len());
                terms.push((term.to_owned(), weight));
            }
        };
        for word in words {
            if is_stopword(word) {
                continue;
            }
            let stemmed = stem(word);
            let from_raw = self.expansions.get(word);
            let from_stem = self.expansions.get(&stemmed);
            for target in from_raw.into_iter().chain(from_stem).flatten() {
                add(target, SYNONYM_WEIGHT);
            }
            add(&stemmed, 1.0);
        }
        terms
    }
}

impl Default for Vocabulary {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MethodIntent {
    Read,
    Create,
    Update,
    Delete,
    Action,
}

/// What a query's wording says about the kind of operation it wants.
#[derive(Debug, Default)]
pub struct Intent {
    method: Option<MethodIntent>,
    /// The first resource noun of the query (canonical form), e.g. `execution` for "kill run 42 of the sync".
    object: Option<&'static str>,
    wants_status: bool,
    wants_collection: bool,
    wants_item: bool,
    bulk: bool,
    model_sync: bool,
    partner: bool,
}

const READ_WORDS: &[&str] = &[
    "list", "show", "get", "find", "who", "whoami", "which", "what", "status", "see", "view",
    "look", "fetch", "retrieve", "inspect", "describe", "check", "read", "display", "why",
    "details", "detail", "many", "count", "download", "export", "lookup",
];
const CREATE_WORDS: &[&str] = &[
    "create",
    "add",
    "new",
    "make",
    "mint",
    "generate",
    "register",
    "issue",
    "provision",
    "setup",
    "invite",
    "build",
];
const UPDATE_WORDS: &[&str] = &[
    "update",
    "change",
    "edit",
    "rename",
    "modify",
    "set",
    "patch",
    "replace",
    "adjust",
    "reconfigure",
    "move",
];
const DELETE_WORDS: &[&str] = &[
    "delete",
    "remove",
    "destroy",
    "drop",
    "erase",
    "revoke",
    "purge",
    "tear",
    "offboard",
    "decommission",
];
/// Words that turn "make it run hourly instead" or "add a field to an existing sync" into an update.
const UPDATE_MARKERS: &[&str] = &["instead", "existing", "switch", "toggle", "reconfigure"];
const ACTION_WORDS: &[&str] = &[
    "start",
    "trigger",
    "run",
    "kick",
    "launch",
    "cancel",
    "stop",
    "abort",
    "halt",
    "pause",
    "resume",
    "activate",
    "deactivate",
    "enable",
    "disable",
    "refresh",
    "rotate",
    "test",
    "execute",
    "rerun",
    "retry",
];
/// Words that are verbs only at the start of a request.
const NOUN_OR_VERB: &[&str] = &[
    "run", "runs", "test", "schedule", "log", "export", "set", "issue", "check",
];
/// Leading words of a question; with no other verb in the query they ask to read.
const QUESTION_WORDS: &[&str] = &[
    "is", "are", "does", "did", "has", "have", "was", "were", "when", "what", "which", "who",
    "why", "how", "where",
];
/// Words asking about current state, which the `…/status` operations answer.
const STATUS_WORDS: &[&str] = &[
    "running",
    "status",
    "progress",
    "doing",
    "finished",
    "done",
    "complete",
    "completed",
    "state",
    "stuck",
    "healthy",
];
/// Resource nouns, as query words (raw or stemmed) and as path segments, mapped to one canonical object.
const OBJECTS: &[(&str, &str)] = &[
    ("sync", "sync"),
    ("pipeline", "sync"),
    ("execution", "execution"),
    ("run", "execution"),
    ("schema", "schema"),
    ("table", "schema"),
    ("stream", "schema"),
    ("schedule", "schedule"),
    ("model", "model"),
    ("dataset", "model"),
    ("connection", "connection"),
    ("integration", "connection"),
    ("warehouse", "connection"),
    ("user", "user"),
    ("member", "user"),
    ("login", "user"),
    ("key", "key"),
    ("organization", "organization"),
    ("org", "organization"),
    ("tenant", "organization"),
    ("policy", "policy"),
    ("role", "role"),
    ("event", "event"),
    ("webhook", "webhook"),
    ("field", "field"),
    ("column", "field"),
    ("consolelog", "log"),
    ("log", "log"),
    ("job", "job"),
    ("entity", "entity"),
    ("query", "query"),
    ("me", "me"),
];
/// Path segments that name an action or an aspect rather than the resource acted on.
const ACTION_SEGMENTS: &[&str] = &[
    "cancel",
    "activate",
    "status",
    "refresh",
    "sample",
    "test",
    "start",
    "info",
    "parameter_values",
    "proxy",
];

fn canonical_object(word: &str) -> Option<&'static str> {
    let stemmed = stem(word);
    OBJECTS
        .iter()
        .find(|(w, _)| *w == word || *w == stemmed)
        .map(|(_, object)| *object)
}

/// The resource an operation acts on: its last path literal that is not an action.
pub fn operation_object(op: &Operation) -> Option<&'static str> {
    op.segments.iter().rev().find_map(|segment| match segment {
        Segment::Literal(lit) if !ACTION_SEGMENTS.contains(&lit.as_str()) && lit != "api" => {
            canonical_object(lit.trim_end_matches("_types"))
        }
        _ => None,
    })
}

const COLLECTION_WORDS: &[&str] = &[
    "list",
    "all",
    "every",
    "each",
    "many",
    "count",
    "enumerate",
    "which",
];
const ITEM_WORDS: &[&str] = &[
    "specific",
    "single",
    "particular",
    "detail",
    "details",
    "id",
    "uuid",
    "this",
    "that",
];
const BULK_WORDS: &[&str] = &[
    "bulk",
    "elt",
    "replication",
    "replicate",
    "replicating",
    "replicated",
    "replica",
];
const MODEL_SYNC_WORDS: &[&str] = &["retl", "reverse", "model", "models"];
const PARTNER_WORDS: &[&str] = &[
    "partner",
    "tenant",
    "tenants",
    "customer",
    "customers",
    "organizations",
    "orgs",
];

impl Intent {
    /// The intent of a query given as its lower-cased words ([`super::raw_words`]).
    pub fn of_words(words: &[String]) -> Self {
        let has = |list: &[&str]| words.iter().any(|w| list.contains(&w.as_str()));
        // The first verb decides: "delete the sync's schedule" is a delete even if "schedule" appears later.
        let method = words.iter().enumerate().find_map(|(position, w)| {
            let w = w.as_str();
            // "run", "test" and the like are nouns in "the last run" or "run history"; only a leading one is
            // an order ("run the sync now").
            if position > 0 && NOUN_OR_VERB.contains(&w) {
                return None;
            }
            if DELETE_WORDS.contains(&w) {
                Some(MethodIntent::Delete)
            } else if CREATE_WORDS.contains(&w) {
                Some(MethodIntent::Create)
            } else if UPDATE_WORDS.contains(&w) {
                Some(MethodIntent::Update)
            } else if ACTION_WORDS.contains(&w) {
                Some(MethodIntent::Action)
            } else if READ_WORDS.contains(&w) {
                Some(MethodIntent::Read)
            } else {
                None
            }
        });
        let method = if has(UPDATE_MARKERS) {
            Some(MethodIntent::Update)
        } else {
            method
        };
        let method = method.or_else(|| {
            words
                .first()
                .filter(|w| QUESTION_WORDS.contains(&w.as_str()))
                .map(|_| MethodIntent::Read)
        });
        let object = words.iter().find_map(|w| canonical_object(w));
        let plural_noun = words.iter().any(|w| {
            w.len() > 4
                && w.ends_with('s')
                && !w.ends_with("ss")
                && !w.ends_with("us")
                && !w.ends_with("is")
        });
        Self {
            method,
            object,
            wants_status: has(STATUS_WORDS),
            wants_collection: has(COLLECTION_WORDS) || (plural_noun && !has(ITEM_WORDS)),
            wants_item: has(ITEM_WORDS),
            bulk: has(BULK_WORDS),
            model_sync: has(MODEL_SYNC_WORDS),
            partner: has(PARTNER_WORDS),
        }
    }

    /// A factor around 1.0 applied to an operation's text score.
    pub fn multiplier(&self, op: &Operation) -> f32 {
        let mut factor = 1.0;
        let ends_in_param = matches!(op.segments.last(), Some(Segment::Param(_)));
        if let Some(method) = self.method {
            let fits = match method {
                MethodIntent::Read => op.method == "GET",
                MethodIntent::Create => op.method == "POST",
                MethodIntent::Update => matches!(op.method.as_str(), "PUT" | "PATCH"),
                MethodIntent::Delete => op.method == "DELETE",
                // Actions are POSTs to a verb sub-path (`/activate`, `/cancel`, `/executions`).
                MethodIntent::Action => op.method == "POST",
            };
            factor *= if fits { 1.25 } else { 0.85 };
        }
        if op.method == "GET" {
            if self.wants_collection && !self.wants_item && !ends_in_param {
                factor *= 1.15;
            }
            if self.wants_item && ends_in_param {
                factor *= 1.1;
            }
        }
        if let Some(object) = self.object
            && operation_object(op) == Some(object)
        {
            factor *= 1.35;
        }
        if self.wants_status && op.path.ends_with("/status") {
            factor *= 1.25;
        }
        let is_bulk = op.path.contains("/bulk/");
        let is_model_sync = op.path.starts_with("/api/syncs");
        if self.bulk {
            if is_bulk {
                factor *= 1.4;
            } else if is_model_sync {
                factor *= 0.7;
            }
        } else if self.model_sync && is_bulk {
            factor *= 0.75;
        }
        if self.partner && op.key_type == KeyType::Partner {
            factor *= 1.2;
        }
        factor
    }
}
