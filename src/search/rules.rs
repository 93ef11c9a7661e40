//! Polytomic's vocabulary and the structural rules that settle near-twin operations.

use std::collections::HashMap;

use super::Session;
use super::phrases::is_marker;
use super::text::{is_stopword, stem};
use crate::core::AuthMode;
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
    ("connector", &["connection"]),
    ("connect", &["connection", "create"]),
    ("catalogue", &["schema"]),
    ("catalog", &["schema"]),
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
    ("show", &["get"]),
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
    ("fail", &["error", "execution"]),
    ("failure", &["error", "execution"]),
    ("broken", &["error", "execution"]),
    ("broke", &["error", "execution"]),
    ("wrong", &["error", "execution"]),
    ("error", &["execution"]),
    ("progress", &["status"]),
    ("running", &["status"]),
    ("log", &["log", "console"]),
    ("history", &["execution", "list"]),
    ("sql", &["query"]),
    ("schedule", &["schedule", "frequency"]),
    ("cron", &["schedule"]),
    ("frequency", &["schedule"]),
    ("refer", &["entity", "resolve"]),
    ("uuid", &["entity"]),
    ("grant", &["policy", "create"]),
    ("peek", &["sample"]),
    ("activity", &["event"]),
    ("audit", &["event"]),
    ("emailed", &["notification", "subscriber"]),
    ("instead", &["update"]),
    ("existing", &["update"]),
    ("hourly", &["schedule"]),
    ("daily", &["schedule"]),
    ("reload", &["refresh"]),
    ("rescan", &["refresh"]),
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
            if is_stopword(word) || is_marker(word) {
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
    /// The head of the query's first noun phrase (canonical form), e.g. `execution` for "kill run 42 of the
    /// sync" and `schedule` for "bulk sync schedules".
    object: Option<&'static str>,
    wants_status: bool,
    /// "why did it fail": the answer is an execution's errors or its log, not a status summary.
    wants_diagnosis: bool,
    wants_collection: bool,
    wants_item: bool,
    bulk: bool,
    model_sync: bool,
    partner: bool,
    /// An id right after the resource noun: "run 42", "sync 7f3e…".
    object_id_given: bool,
    /// A word that says an existing thing changes ("instead", "existing").
    explicit_update: bool,
    /// "sync" without a word for bulk or model sync.
    plain_sync: bool,
    /// "the current run", "the running sync": whatever runs now, not one execution by id.
    current_run: bool,
    /// The session the query is asked in, when known.
    session: Option<Session>,
}

const READ_WORDS: &[&str] = &[
    "list", "show", "get", "find", "who", "whoami", "which", "what", "status", "see", "view",
    "look", "fetch", "retrieve", "inspect", "describe", "check", "read", "display", "why",
    "details", "detail", "many", "count", "download", "lookup",
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
    "connect",
    "grant",
    "schedule",
    "replicate",
    "push",
    "copy",
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
    "rotate",
    "deselect",
    "unselect",
    "exclude",
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
    "test",
    "execute",
    "rerun",
    "retry",
    "export",
    "reload",
    "kill",
];
/// Words that are verbs only at the start of a request.
const NOUN_OR_VERB: &[&str] = &[
    "run",
    "runs",
    "test",
    "schedule",
    "log",
    "export",
    "set",
    "issue",
    "check",
    "replicate",
    "push",
    "copy",
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
    "next",
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
    ("someone", "user"),
    ("person", "user"),
    ("people", "user"),
    ("teammate", "user"),
    ("colleague", "user"),
    ("audience", "model"),
    ("source", "connection"),
    ("destination", "connection"),
    ("object", "object"),
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
        .chain(COMPOUND_OBJECTS)
        .find(|(w, _)| *w == word || *w == stemmed)
        .map(|(_, object)| *object)
}

/// Resources named by two words, as phrase markers (see `phrases`) and as path segments.
const COMPOUND_OBJECTS: &[(&str, &str)] = &[
    ("~connection_type", "connection_type"),
    ("connection_types", "connection_type"),
    ("~event_type", "event_type"),
    ("events_types", "event_type"),
    ("~targetobject", "targetobject"),
    ("targetobjects", "targetobject"),
    ("~target_field", "target_field"),
    ("target/fields", "target_field"),
    ("~source_field", "source_field"),
    ("source/fields", "source_field"),
    ("~model_source", "model_source"),
    ("modelsync/source", "model_source"),
    ("~bulk_source", "bulk_source"),
    ("bulksync/source", "bulk_source"),
    ("~bulk_target", "bulk_target"),
    ("bulksync/target", "bulk_target"),
    ("~enrichment_source", "enrichment_source"),
    ("modelsync/enrichment-source", "enrichment_source"),
    ("~primary_key", "primary_key"),
    ("primary_keys", "primary_key"),
    ("~subscriber", "subscriber"),
    ("global-error-subscribers", "subscriber"),
    ("~log", "log"),
    ("~execution", "execution"),
    ("~field", "field"),
    ("~key", "key"),
    ("~sync", "sync"),
    ("~event", "event"),
    ("model-preview", "model_preview"),
    ("~model_preview", "model_preview"),
];

/// The resource an operation acts on: its last path literal that is not an action, or its last two when
/// they name one resource together (`…/target/fields`).
pub fn operation_object(op: &Operation) -> Option<&'static str> {
    let literals: Vec<&str> = op
        .segments
        .iter()
        .filter_map(|segment| match segment {
            Segment::Literal(lit) if !ACTION_SEGMENTS.contains(&lit.as_str()) && lit != "api" => {
                Some(lit.as_str())
            }
            _ => None,
        })
        .collect();
    let [.., previous, last] = literals.as_slice() else {
        return literals.last().and_then(|last| canonical_object(last));
    };
    let pair = format!("{previous}/{last}");
    COMPOUND_OBJECTS
        .iter()
        .find(|(w, _)| *w == pair)
        .map(|(_, object)| *object)
        .or_else(|| canonical_object(last))
}

/// The resource a query is about: the head of its first noun phrase. In "bulk sync schedules" the head is the
/// last noun (schedules); "of" ends a phrase, so in "the schedule of a bulk sync" it is the first. A phrase
/// marker in the run names the resource outright. Returns the resource and whether it was named in the plural.
fn head_object(words: &[String]) -> Option<(&'static str, bool)> {
    // "running", "syncing": verbs, whatever their stem names.
    let noun = |w: &String| {
        if w.ends_with("ing") {
            None
        } else {
            canonical_object(w)
        }
    };
    let start = words.iter().position(|w| noun(w).is_some())?;
    let mut head: Option<(&'static str, &str)> = None;
    let mut marker: Option<(&'static str, &str)> = None;
    for word in &words[start..] {
        if word == "s" {
            continue; // "the sync's schedule"
        }
        // "sync failure events": a modifier inside the phrase, not its end.
        if DIAGNOSIS_WORDS.contains(&word.as_str()) {
            continue;
        }
        let Some(object) = noun(word) else {
            break;
        };
        // "the accounts sync run next", "when does the sync run": a verb, not the noun of "the sync run".
        if word.starts_with("run")
            && (next_is_time(words, word) || asked_with_auxiliary(words, word))
        {
            break;
        }
        if word.starts_with('~') {
            marker = Some((object, word));
        }
        head = Some((object, word));
    }
    let (object, word) = marker.or(head)?;
    let plural = word.ends_with('s') && stem(word) != *word;
    Some((object, plural))
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
    "one",
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
    "child",
    "tenant",
    "tenants",
    "customer",
    "customers",
    "organizations",
    "orgs",
];

impl Intent {
    /// The intent of a query given as its lower-cased words ([`super::raw_words`]).
    pub fn of_words(words: &[String], session: Option<Session>) -> Self {
        let has = |list: &[&str]| words.iter().any(|w| list.contains(&w.as_str()));
        let method = first_verb(words);
        let explicit_update = has(UPDATE_MARKERS);
        let method = if explicit_update {
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
        let wants_status = has(STATUS_WORDS);
        // "current state of the sync": asking about state is reading.
        let method = method.or(wants_status.then_some(MethodIntent::Read));
        // "kill the running replication": with another verb, state words describe the target.
        let wants_status = wants_status && matches!(method, None | Some(MethodIntent::Read));
        let reads = matches!(method, None | Some(MethodIntent::Read));
        let head =
            head_object(words).map(|(object, plural)| in_context(object, plural, reads, &has));
        let plural_noun = words.iter().any(|w| {
            w.len() > 4
                && w.ends_with('s')
                && !w.ends_with("ss")
                && !w.ends_with("us")
                && !w.ends_with("is")
        });
        let collection_words = has(COLLECTION_WORDS);
        let item_words = has(ITEM_WORDS);
        let (wants_collection, wants_item) = match head {
            // The head noun's number decides: "list the syncs" vs "show the sync".
            // "this", "that" and ids then point at the parent ("the tables of this bulk sync"); only "one",
            // "specific" and the like make a plural head one item.
            Some((_, plural)) => {
                let one = has(&["one", "specific", "single", "particular"]);
                (
                    collection_words || (plural && !one),
                    one || (!plural && !collection_words),
                )
            }
            None => (collection_words || (plural_noun && !item_words), item_words),
        };
        // Diagnosis is about a run: "sync failure events" asks for events, "sync error alerts" for alerts.
        let wants_diagnosis = has(DIAGNOSIS_WORDS)
            && head.is_none_or(|(object, _)| {
                matches!(object, "sync" | "execution" | "schema" | "log" | "job")
            });
        Self {
            method,
            // "why did the sync fail": what failed is one of its executions.
            object: head.map(|(object, _)| match object {
                "sync" if wants_diagnosis => "execution",
                other => other,
            }),
            wants_status: wants_status && (!wants_diagnosis || has(&["status"])),
            wants_diagnosis,
            wants_collection,
            wants_item,
            bulk: has(BULK_WORDS),
            model_sync: has(MODEL_SYNC_WORDS),
            partner: has(PARTNER_WORDS),
            plain_sync: has(&["sync", "syncs"]),
            explicit_update,
            object_id_given: id_follows_object(words),
            current_run: has(&["cancel", "stop", "abort", "halt", "kill"])
                && has(&["current", "running", "now", "whatever"])
                && !words.iter().any(|w| w.chars().any(|c| c.is_ascii_digit())),
            session,
        }
    }

    /// A factor around 1.0 applied to an operation's text score.
    pub fn multiplier(&self, op: &Operation) -> f32 {
        let mut factor = 1.0;
        // One thing's status or sample is about that one thing, like its detail; a collection ends in the
        // resource's own name.
        let ends_in_param = match op.segments.last() {
            Some(Segment::Param(_)) => true,
            Some(Segment::Literal(last)) => {
                ACTION_SEGMENTS.contains(&last.as_str()) && op.path.contains('{')
            }
            None => false,
        };
        if let Some(method) = self.method {
            let fits = match method {
                MethodIntent::Read => op.method == "GET",
                MethodIntent::Create => op.method == "POST",
                MethodIntent::Update => matches!(op.method.as_str(), "PUT" | "PATCH"),
                MethodIntent::Delete => op.method == "DELETE",
                // Actions are POSTs to a verb sub-path (`/activate`, `/cancel`, `/executions`).
                MethodIntent::Action => op.method == "POST",
            };
            factor *= match (fits, self.explicit_update) {
                (true, false) => 1.25,
                (false, false) => 0.85,
                // "instead", "existing": the thing exists and changes.
                (true, true) => 1.4,
                (false, true) => 0.75,
            };
        }
        if op.method == "GET" {
            if self.wants_collection && !self.wants_item && !ends_in_param {
                factor *= 1.15;
            }
            if self.wants_item && !self.wants_collection {
                factor *= if ends_in_param { 1.2 } else { 0.95 };
            }
        }
        if let Some(object) = self.object {
            match operation_object(op) {
                Some(own) if own == object => factor *= 1.35,
                Some(_) => factor *= 0.9,
                None => {}
            }
        }
        if self.object_id_given && self.object.is_some_and(|object| takes_id_of(op, object)) {
            // "run 42 of the sync": the id names one of those, so the operation must take its id.
            factor *= 1.2;
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
        } else if self.plain_sync && is_bulk {
            // A bare "sync" is a model sync in Polytomic's words; bulk syncs are called bulk syncs.
            factor *= 0.75;
        }
        if self.current_run && op.method == "POST" && op.path.ends_with("/cancel") {
            // "cancel the running sync" stops whatever runs now; a specific execution needs its id.
            factor *= if op.path.contains("/executions/") {
                0.85
            } else {
                1.15
            };
        }
        if self.partner && op.key_type == KeyType::Partner {
            factor *= 1.2;
        }
        if self.wants_diagnosis && op.method == "GET" {
            factor *= diagnosis_factor(op);
        }
        factor * self.session_factor(op)
    }

    /// Operations the session's key cannot call rank below those it can, unless the query names the other
    /// kind of key ("partner", "customer organizations") in a user session.
    fn session_factor(&self, op: &Operation) -> f32 {
        let Some(session) = self.session else {
            return 1.0;
        };
        let callable = match (op.key_type, session.auth_mode) {
            (KeyType::Any, _) => true,
            (KeyType::User, mode) => mode == AuthMode::User,
            (KeyType::Partner, mode) => mode == AuthMode::Partner || self.partner,
        };
        // Both halves of the pair stay within reach: the penalty settles near-twins, not distinct answers.
        if callable { 1.0 } else { SESSION_MISMATCH }
    }
}

/// How much an operation the session's key cannot call is held back.
const SESSION_MISMATCH: f32 = 0.75;

/// Whether the word after `word` (by identity) says when: "run next", "run hourly".
fn next_is_time(words: &[String], word: &String) -> bool {
    let Some(at) = words.iter().position(|w| std::ptr::eq(w, word)) else {
        return false;
    };
    words
        .get(at + 1)
        .is_some_and(|next| TIME_WORDS.contains(&next.as_str()))
}

/// The method the query's first verb asks for: "delete the sync's schedule" is a delete even if "schedule"
/// appears later.
fn first_verb(words: &[String]) -> Option<MethodIntent> {
    words.iter().enumerate().find_map(|(position, w)| {
        let w = w.as_str();
        // "run", "test" and the like are nouns in "the last run" or "run history"; only a leading one is an
        // order ("run the sync now").
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
    })
}

/// The head resource read in the context of the rest of the query.
fn in_context(
    object: &'static str,
    plural: bool,
    reads: bool,
    has: &dyn Fn(&[&str]) -> bool,
) -> (&'static str, bool) {
    match object {
        // "the jobs that ran for the bulk sync": a sync's jobs are its executions.
        "job" if has(&["sync", "syncs", "bulk", "replication"]) => ("execution", plural),
        // "the columns of one table": a table's fields are its schema.
        "field" if reads && has(&["table", "tables"]) => ("schema", false),
        // "objects a sync can write to" are a destination's target objects.
        "object" if has(&["sync", "write", "into", "mapping", "destination"]) => {
            ("targetobject", plural)
        }
        "object" => ("schema", plural),
        other => (other, plural),
    }
}

/// Whether a query word naming a resource is followed by an id (a word with a digit).
fn id_follows_object(words: &[String]) -> bool {
    words.windows(2).any(|pair| {
        canonical_object(&pair[0]).is_some() && pair[1].chars().any(|c| c.is_ascii_digit())
    })
}

/// Whether the operation's path takes the id of `object`: `/executions/{id}` for an execution.
fn takes_id_of(op: &Operation, object: &str) -> bool {
    op.segments.windows(2).any(|pair| match pair {
        [Segment::Literal(lit), Segment::Param(_)] => canonical_object(lit) == Some(object),
        _ => false,
    })
}

/// Whether an auxiliary ("does", "will") comes before `word` (by identity): "when does the sync run".
fn asked_with_auxiliary(words: &[String], word: &String) -> bool {
    let Some(at) = words.iter().position(|w| std::ptr::eq(w, word)) else {
        return false;
    };
    words[..at].iter().any(|w| {
        matches!(
            w.as_str(),
            "does" | "do" | "did" | "will" | "would" | "should" | "can"
        )
    })
}

const TIME_WORDS: &[&str] = &[
    "next",
    "now",
    "every",
    "hourly",
    "daily",
    "weekly",
    "nightly",
    "at",
    "again",
    "automatically",
    "once",
    "twice",
];

/// Words asking why something went wrong.
const DIAGNOSIS_WORDS: &[&str] = &[
    "why", "error", "errors", "fail", "failed", "failing", "failure", "failures", "broke",
    "broken", "wrong", "crash", "crashed",
];

/// For "why did it fail": one execution, its console log and its log files answer; a status summary does not.
fn diagnosis_factor(op: &Operation) -> f32 {
    let path = op.path.as_str();
    if path.ends_with("/status") {
        0.8
    } else if path.contains("/executions/{") && !path.ends_with("/cancel") {
        1.3
    } else {
        1.0
    }
}

/// Every word the vocabulary and the rules read, so a typo can be repaired into one of them.
pub fn rule_words() -> impl Iterator<Item = &'static str> {
    let lists: [&[&str]; 14] = [
        READ_WORDS,
        CREATE_WORDS,
        UPDATE_WORDS,
        DELETE_WORDS,
        UPDATE_MARKERS,
        ACTION_WORDS,
        STATUS_WORDS,
        COLLECTION_WORDS,
        ITEM_WORDS,
        BULK_WORDS,
        MODEL_SYNC_WORDS,
        PARTNER_WORDS,
        DIAGNOSIS_WORDS,
        super::text::STOPWORDS,
    ];
    lists
        .into_iter()
        .flatten()
        .copied()
        .chain(SYNONYMS.iter().map(|(from, _)| *from))
        .chain(OBJECTS.iter().map(|(word, _)| *word))
}
