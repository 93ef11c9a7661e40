//! Typo repair: a query word the catalog has never seen is replaced by the known word one edit away (a letter
//! added, dropped, changed, or two neighbours swapped), the most frequent one when several are. Lookups go
//! through a map of single-letter deletions built with the catalog, so a repair costs a handful of hash
//! lookups, not a scan of the vocabulary.

use std::collections::HashMap;

/// Shorter words are left alone: at three letters nearly every word is one edit from another.
const MIN_LEN: usize = 4;

#[derive(Debug, Default)]
pub struct Speller {
    /// Known word → how often the catalog uses it (the tie-breaker between candidates).
    known: HashMap<String, u32>,
    /// A known word with one letter deleted → the known words it came from.
    deletions: HashMap<String, Vec<String>>,
}

impl Speller {
    /// Builds the speller from every word the catalog knows, with its frequency.
    pub fn new(words: HashMap<String, u32>) -> Self {
        let mut deletions: HashMap<String, Vec<String>> = HashMap::new();
        for word in words.keys() {
            if word.chars().count() < MIN_LEN - 1 {
                continue;
            }
            for deleted in deletions_of(word) {
                let entry = deletions.entry(deleted).or_default();
                if !entry.contains(word) {
                    entry.push(word.clone());
                }
            }
        }
        Self {
            known: words,
            deletions,
        }
    }

    pub fn knows(&self, word: &str) -> bool {
        self.known.contains_key(word)
    }

    /// The known word closest to an unknown one, if one is a single edit away.
    pub fn repair(&self, word: &str) -> Option<&str> {
        if word.chars().count() < MIN_LEN
            || self.knows(word)
            || word.chars().any(|c| !c.is_alphabetic())
        {
            return None;
        }
        let mut best: Option<(&str, u32)> = None;
        let mut consider = |candidate: &str| {
            let Some((known, &count)) = self.known.get_key_value(candidate) else {
                return;
            };
            if one_edit_apart(word, known)
                && best.is_none_or(|(b, c)| count > c || (count == c && known.as_str() < b))
            {
                best = Some((known.as_str(), count));
            }
        };
        // A dropped letter: the word is a deletion of a known word.
        for known in self.deletions.get(word).into_iter().flatten() {
            consider(known);
        }
        for deleted in deletions_of(word) {
            // An extra letter: the deletion is itself known.
            consider(&deleted);
            // A changed letter or swapped neighbours: both share a deletion.
            for known in self.deletions.get(&deleted).into_iter().flatten() {
                consider(known);
            }
        }
        best.map(|(word, _)| word)
    }
}

fn deletions_of(word: &str) -> Vec<String> {
    let chars: Vec<char> = word.chars().collect();
    (0..chars.len())
        .map(|skip| {
            chars
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != skip)
                .map(|(_, c)| *c)
                .collect()
        })
        .collect()
}

/// Whether two words differ by one insertion, deletion, substitution or swap of neighbours.
fn one_edit_apart(a: &str, b: &str) -> bool {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    if a == b {
        return false;
    }
    let prefix = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let (ra, rb) = (&a[prefix..], &b[prefix..]);
    match ra.len().abs_diff(rb.len()) {
        0 => {
            ra[1..] == rb[1..]
                || (ra.len() >= 2 && ra[0] == rb[1] && ra[1] == rb[0] && ra[2..] == rb[2..])
        }
        1 if ra.len() > rb.len() => ra[1..] == *rb,
        1 => rb[1..] == *ra,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn speller(words: &[(&str, u32)]) -> Speller {
        Speller::new(words.iter().map(|(w, c)| ((*w).to_owned(), *c)).collect())
    }

    #[test]
    fn repairs_each_kind_of_single_edit() {
        let s = speller(&[
            ("connections", 9),
            ("create", 9),
            ("sync", 9),
            ("history", 3),
            ("refresh", 3),
        ]);
        assert_eq!(s.repair("conections"), Some("connections")); // dropped letter
        assert_eq!(s.repair("creatte"), Some("create")); // extra letter
        assert_eq!(s.repair("sinc"), Some("sync")); // changed letter
        assert_eq!(s.repair("histroy"), Some("history")); // swapped neighbours
        assert_eq!(s.repair("cretae"), Some("create"));
        assert_eq!(s.repair("refesh"), Some("refresh"));
    }

    #[test]
    fn leaves_known_short_distant_and_numeric_words_alone() {
        let s = speller(&[("sync", 9), ("list", 9), ("model", 4)]);
        assert_eq!(s.repair("sync"), None);
        assert_eq!(s.repair("lst"), None);
        assert_eq!(s.repair("salesforce"), None);
        assert_eq!(s.repair("sync2"), None);
    }

    #[test]
    fn prefers_the_more_frequent_candidate() {
        let s = speller(&[("model", 2), ("modes", 9), ("models", 1)]);
        // "moder" is one change from both "model" and "modes".
        assert_eq!(s.repair("moder"), Some("modes"));
    }

    #[test]
    fn edit_distance_is_exact() {
        assert!(one_edit_apart("lsit", "list"));
        assert!(one_edit_apart("list", "lists"));
        assert!(!one_edit_apart("list", "lost1"));
        assert!(!one_edit_apart("revmoe", "remove"));
        assert!(!one_edit_apart("same", "same"));
    }
}
