//! Caller text made safe to show to a person: control characters (C0, DEL, C1) and the characters that
//! reorder or break the text around them (bidirectional formatting, line and paragraph separators) are written
//! as visible escapes such as `\n`, `\u{1b}` or `\u{202e}`. Used wherever such text meets a terminal, a text
//! log, a spreadsheet or a page. JSON log lines write the same characters as `\uXXXX` escapes, which parse back exactly.

use std::borrow::Cow;
use std::fmt;

/// Unicode bidirectional formatting characters (embeddings, overrides, isolates and marks): they change the
/// order in which the text around them is displayed, so `exe.txt` can look like `txt.exe`.
pub(crate) fn is_bidi_control(c: char) -> bool {
    matches!(
        c,
        '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
    )
}

/// True for a character that acts on the display instead of being shown.
pub(crate) fn acts_on_display(c: char) -> bool {
    c.is_control() || is_bidi_control(c) || matches!(c, '\u{2028}' | '\u{2029}')
}

/// Whether a line feed may stay as it is (a multi-line spreadsheet cell) or must be escaped too (one log line,
/// one table row).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Newlines {
    Keep,
    Escape,
}

/// Writes `text` with every character that acts on the display as a visible escape.
pub(crate) fn write_visible(
    out: &mut impl fmt::Write,
    text: &str,
    newlines: Newlines,
) -> fmt::Result {
    let mut start = 0;
    for (index, c) in text.char_indices() {
        if !acts_on_display(c) || (c == '\n' && newlines == Newlines::Keep) {
            continue;
        }
        out.write_str(&text[start..index])?;
        match c {
            '\n' => out.write_str("\\n")?,
            '\r' => out.write_str("\\r")?,
            '\t' => out.write_str("\\t")?,
            other => write!(out, "\\u{{{:x}}}", u32::from(other))?,
        }
        start = index + c.len_utf8();
    }
    out.write_str(&text[start..])
}

/// `text` with every character that acts on the display as a visible escape; borrowed when there is none.
pub(crate) fn visible(text: &str, newlines: Newlines) -> Cow<'_, str> {
    let clean = text
        .chars()
        .all(|c| !acts_on_display(c) || (c == '\n' && newlines == Newlines::Keep));
    if clean {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    // Writing to a String cannot fail.
    let _ = write_visible(&mut out, text, newlines);
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_and_bidi_become_visible_escapes() {
        assert_eq!(
            visible("a\r\nb\u{1b}[31m\u{202e}c\u{85}\u{2028}", Newlines::Escape),
            "a\\r\\nb\\u{1b}[31m\\u{202e}c\\u{85}\\u{2028}"
        );
        assert_eq!(visible("one\ntwo\tx", Newlines::Keep), "one\ntwo\\tx");
        assert!(matches!(
            visible("plain é ü 漢字", Newlines::Escape),
            Cow::Borrowed(_)
        ));
    }
}
