//! Tokenising and stemming, shared by the index and the query so both sides agree on every word.

/// Words that carry no signal for choosing an operation. `me`, `all`, `list` and verbs are kept on purpose:
/// they select operations (`GET /api/me`) or feed the structural rules.
pub(super) const STOPWORDS: &[&str] = &[
    "a", "an", "the", "of", "for", "to", "in", "on", "at", "my", "our", "your", "i", "we", "you",
    "is", "are", "was", "were", "be", "been", "do", "does", "did", "can", "could", "would",
    "should", "will", "it", "its", "this", "that", "these", "those", "with", "from", "by", "and",
    "or", "as", "so", "please", "some", "any", "there", "here", "into", "about", "via", "using",
    "use", "want", "need", "like", "just", "also", "then", "than", "what", "which", "how", "when",
    "where", "have", "has", "had", "if", "not", "no", "yes", "them", "they", "their", "us", "one",
];

/// Splits on anything but letters and digits, splits camelCase, lower-cases, drops stop words, and stems.
pub fn tokens(text: &str) -> Vec<String> {
    raw_words(text)
        .into_iter()
        .filter(|w| !is_stopword(w))
        .map(|w| stem(&w))
        .collect()
}

/// Lower-cased words before stop-word removal and stemming (the structural rules read these).
pub fn raw_words(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut prev_lower = false;
    for ch in text.chars() {
        if ch.is_alphanumeric() {
            if ch.is_uppercase() && prev_lower && !current.is_empty() {
                words.push(std::mem::take(&mut current));
            }
            prev_lower = ch.is_lowercase() || ch.is_ascii_digit();
            current.extend(ch.to_lowercase());
        } else {
            prev_lower = false;
            if !current.is_empty() {
                words.push(std::mem::take(&mut current));
            }
        }
    }
    if !current.is_empty() {
        words.push(current);
    }
    words
}

pub fn is_stopword(word: &str) -> bool {
    STOPWORDS.contains(&word)
}

/// A light suffix stripper: enough to fold plurals and verb forms (`syncs`, `syncing`, `synced` → `sync`;
/// `policies` → `policy`; `executions` → `execution`). Identical treatment of query and documents matters
/// more than linguistic accuracy.
pub fn stem(word: &str) -> String {
    let w = word;
    if w.len() <= 3 || w.chars().any(|c| c.is_ascii_digit()) {
        return w.to_owned();
    }
    if let Some(base) = w.strip_suffix("ies")
        && base.len() >= 2
    {
        return format!("{base}y");
    }
    if let Some(base) = w.strip_suffix("sses") {
        return format!("{base}ss");
    }
    if let Some(base) = w.strip_suffix("ing")
        && base.len() >= 3
    {
        return restore_e(undouble(base));
    }
    if let Some(base) = w.strip_suffix("ed") {
        if base.len() >= 3 && !base.ends_with('e') {
            return restore_e(undouble(base));
        }
        if base.len() >= 3 {
            return base.to_owned();
        }
    }
    if let Some(base) = w.strip_suffix("es")
        && (base.ends_with("ch")
            || base.ends_with("sh")
            || base.ends_with('x')
            || base.ends_with("ss"))
    {
        return base.to_owned();
    }
    if w.ends_with('s') && !w.ends_with("ss") && !w.ends_with("us") && !w.ends_with("is") {
        return w[..w.len() - 1].to_owned();
    }
    w.to_owned()
}

/// `creat` → `create`, `schedul` → `schedule`, `enabl` → `enable`: the silent `e` the suffix took, so
/// "created", "creating" and "create" meet.
fn restore_e(base: String) -> String {
    const TAKES_E: &[&str] = &["at", "bl", "iz", "ur", "ul", "us", "v"];
    if base.len() >= 4 && TAKES_E.iter().any(|end| base.ends_with(end)) {
        format!("{base}e")
    } else {
        base
    }
}

/// `runn` → `run`, `stopp` → `stop` (but `pull` stays `pull`).
fn undouble(base: &str) -> String {
    let bytes = base.as_bytes();
    let n = bytes.len();
    if n >= 2 && bytes[n - 1] == bytes[n - 2] && !matches!(bytes[n - 1], b'l' | b's' | b'z') {
        return base[..n - 1].to_owned();
    }
    base.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stems_fold_common_forms() {
        for (word, expected) in [
            ("syncs", "sync"),
            ("syncing", "sync"),
            ("synced", "sync"),
            ("policies", "policy"),
            ("executions", "execution"),
            ("running", "run"),
            ("stopped", "stop"),
            ("status", "status"),
            ("addresses", "address"),
            ("batches", "batch"),
            ("created", "create"),
            ("creating", "create"),
            ("scheduled", "schedule"),
            ("enabled", "enable"),
            ("paused", "pause"),
            ("removed", "remove"),
        ] {
            assert_eq!(stem(word), expected, "{word}");
        }
    }

    #[test]
    fn splits_paths_camel_case_and_drops_stopwords() {
        assert_eq!(
            tokens("/api/bulk/syncs/{id}/executions"),
            ["api", "bulk", "sync", "id", "execution"]
        );
        assert_eq!(
            tokens("getBulkSyncStatus"),
            ["get", "bulk", "sync", "status"]
        );
        assert_eq!(tokens("what is the status of my sync"), ["status", "sync"]);
        assert_eq!(tokens("who am I"), ["who", "am"]);
    }
}
