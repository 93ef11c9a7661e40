//! Multi-word terms read as one: "set up" is a create, "connection type" is one resource, "console log" is one
//! word in the paths. A phrase may replace its words (what the ranking then reads) and may name the resource it
//! stands for, as a marker word (`~…`) that the structural rules read and the text ranking ignores.

/// (the phrase's words, the words that replace them or `None` to keep them, the resource it names).
type Phrase = (
    &'static [&'static str],
    Option<&'static [&'static str]>,
    Option<&'static str>,
);

const PHRASES: &[Phrase] = &[
    // Intent: phrasal verbs.
    (&["set", "up"], Some(&["create"]), None),
    (&["hook", "up"], Some(&["setup", "connection"]), None),
    (&["kick", "off"], Some(&["start"]), None),
    (&["kick", "of"], Some(&["start"]), None),
    (&["turn", "back", "on"], Some(&["enable"]), None),
    (&["back", "on"], Some(&["enable"]), None),
    (&["turn", "on"], Some(&["enable"]), None),
    (&["turn", "off"], Some(&["disable"]), None),
    (&["get", "notified"], Some(&["register", "webhook"]), None),
    (&["dry", "run"], Some(&["preview"]), Some("model_preview")),
    (&["went", "wrong"], Some(&["why", "error"]), None),
    (&["who", "has", "access"], Some(&["list", "users"]), None),
    (&["tear", "down"], Some(&["delete"]), None),
    // The family's name, not the operations whose summary happens to spell it out.
    (&["reverse", "etl"], Some(&["model", "sync"]), None),
    (
        &["replicate", "from"],
        Some(&["bulksync", "source"]),
        Some("bulk_source"),
    ),
    (&["audit", "log"], Some(&["events"]), Some("event")),
    // "the sync runs every hour": when it runs is its schedule, not an execution.
    (&["run", "every"], Some(&["frequency", "every"]), None),
    (&["run", "hourly"], Some(&["frequency", "hourly"]), None),
    (&["run", "daily"], Some(&["frequency", "daily"]), None),
    (&["run", "weekly"], Some(&["frequency", "weekly"]), None),
    (&["run", "nightly"], Some(&["frequency", "nightly"]), None),
    (&["run", "at"], Some(&["frequency", "at"]), None),
    (&["sync", "job"], Some(&["sync"]), Some("sync")),
    // "show me", "tell me": the caller is not the subject.
    (&["show", "me"], Some(&["show"]), None),
    (&["tell", "me"], Some(&["show"]), None),
    (&["give", "me"], Some(&["get"]), None),
    (&["let", "me"], Some(&[]), None),
    // Resources named by two words.
    (&["connection", "type"], None, Some("connection_type")),
    (&["connector", "type"], None, Some("connection_type")),
    (&["integration", "type"], None, Some("connection_type")),
    (&["event", "type"], None, Some("event_type")),
    (
        &["event", "name"],
        Some(&["event", "type"]),
        Some("event_type"),
    ),
    (
        &["destination", "object"],
        Some(&["targetobjects"]),
        Some("targetobject"),
    ),
    (
        &["target", "object"],
        Some(&["targetobjects"]),
        Some("targetobject"),
    ),
    (
        &["destination", "field"],
        Some(&["target", "fields"]),
        Some("target_field"),
    ),
    (
        &["object", "field"],
        Some(&["target", "fields"]),
        Some("target_field"),
    ),
    (&["target", "field"], None, Some("target_field")),
    (&["source", "field"], None, Some("source_field")),
    (
        &["source", "column"],
        Some(&["source", "fields"]),
        Some("source_field"),
    ),
    (
        &["model", "source"],
        Some(&["modelsync", "source"]),
        Some("model_source"),
    ),
    (
        &["bulk", "sync", "source"],
        Some(&["bulksync", "source"]),
        Some("bulk_source"),
    ),
    (
        &["bulk", "source"],
        Some(&["bulksync", "source"]),
        Some("bulk_source"),
    ),
    (
        &["bulk", "sync", "destination"],
        Some(&["bulksync", "target"]),
        Some("bulk_target"),
    ),
    (
        &["bulk", "destination"],
        Some(&["bulksync", "target"]),
        Some("bulk_target"),
    ),
    (&["enrichment", "source"], None, Some("enrichment_source")),
    (&["console", "log"], Some(&["consolelog"]), Some("log")),
    (
        &["run", "history"],
        Some(&["executions", "history"]),
        Some("execution"),
    ),
    (
        &["sync", "history"],
        Some(&["sync", "executions", "history"]),
        Some("execution"),
    ),
    (&["schema", "cache"], Some(&["schemas", "refresh"]), None),
    (
        &["user", "defined", "field"],
        Some(&["custom", "field"]),
        Some("field"),
    ),
    (&["custom", "field"], None, Some("field")),
    (&["field", "mapping"], Some(&["mapping"]), None),
    (&["primary", "key"], None, Some("primary_key")),
    (&["api", "key"], Some(&["key"]), Some("key")),
    (
        &["error", "alert"],
        Some(&["global", "error", "subscribers"]),
        Some("subscriber"),
    ),
    (
        &["error", "notification"],
        Some(&["global", "error", "subscribers"]),
        Some("subscriber"),
    ),
    (
        &["failure", "alert"],
        Some(&["global", "error", "subscribers"]),
        Some("subscriber"),
    ),
];

/// Every word a phrase reads, so typo repair keeps them.
pub fn phrase_words() -> impl Iterator<Item = &'static str> {
    PHRASES
        .iter()
        .flat_map(|(words, _, _)| words.iter().copied())
}

/// Whether a query word is the phrase word `want`, in the singular or the plural.
fn matches(word: &str, want: &str) -> bool {
    word == want || word.strip_suffix('s') == Some(want)
}

/// The query's words with each phrase applied (longest first at each position, left to right).
pub fn rewrite(words: &[String]) -> Vec<String> {
    let mut out = Vec::with_capacity(words.len() + 2);
    let mut at = 0;
    while at < words.len() {
        let found = PHRASES
            .iter()
            .filter(|(phrase, _, _)| {
                at + phrase.len() <= words.len()
                    && phrase
                        .iter()
                        .zip(&words[at..])
                        .all(|(want, word)| matches(word, want))
            })
            .max_by_key(|(phrase, _, _)| phrase.len());
        let Some((phrase, replacement, object)) = found else {
            out.push(words[at].clone());
            at += 1;
            continue;
        };
        let last = &words[at + phrase.len() - 1];
        let plural = last.ends_with('s') && !phrase.last().is_some_and(|p| p.ends_with('s'));
        if let Some(object) = object {
            out.push(format!("~{object}{}", if plural { "s" } else { "" }));
        }
        match replacement {
            Some(replacement) => out.extend(replacement.iter().map(|w| (*w).to_owned())),
            None => out.extend(words[at..at + phrase.len()].iter().cloned()),
        }
        at += phrase.len();
    }
    out
}

/// A marker word names a resource for the rules; the text ranking skips it.
pub fn is_marker(word: &str) -> bool {
    word.starts_with('~')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str) -> Vec<String> {
        text.split(' ').map(str::to_owned).collect()
    }

    #[test]
    fn phrases_replace_or_mark_their_words() {
        assert_eq!(
            rewrite(&words("set up a model sync")),
            words("create a model sync")
        );
        assert_eq!(
            rewrite(&words("list connector types")),
            words("list ~connection_types connector types")
        );
        assert_eq!(
            rewrite(&words("tail the console log now")),
            words("tail the ~log consolelog now")
        );
        // The longest phrase wins: "bulk sync source", not "bulk sync" then "source".
        assert_eq!(
            rewrite(&words("tables of a bulk sync source")),
            words("tables of a ~bulk_source bulksync source")
        );
        assert_eq!(rewrite(&words("list syncs")), words("list syncs"));
    }
}
