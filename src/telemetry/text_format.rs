//! The text log line's fields, with the control and bidirectional characters of every value written as
//! visible escapes (`\r\n`, `\u{1b}`). Caller text reaches log fields (an `execute` method, the OAuth
//! callback's `error`); written raw, a CR/LF would start a forged line and an escape sequence would drive the
//! operator's terminal. The JSON format escapes on its own. Layout as tracing-subscriber's default fields: the
//! message, then `name=value` pairs separated by spaces (names are not italicised).

use std::fmt;

use tracing::field::{Field, Visit};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::fmt::format::Writer;

use crate::core::{Newlines, write_visible};

/// Formats event and span fields for the text format.
#[derive(Debug, Clone, Copy, Default)]
pub struct TextFields;

impl<'writer> FormatFields<'writer> for TextFields {
    fn format_fields<R: RecordFields>(
        &self,
        mut writer: Writer<'writer>,
        fields: R,
    ) -> fmt::Result {
        let mut visitor = TextVisitor {
            out: &mut writer,
            first: true,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct TextVisitor<'a, W: fmt::Write> {
    out: &'a mut W,
    first: bool,
    result: fmt::Result,
}

/// A writer that passes text on with every control and bidi character escaped, so a value can be formatted
/// straight into it without an intermediate string.
struct Visible<'a, W: fmt::Write>(&'a mut W);

impl<W: fmt::Write> fmt::Write for Visible<'_, W> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        write_visible(self.0, text, Newlines::Escape)
    }
}

impl<W: fmt::Write> TextVisitor<'_, W> {
    fn field(&mut self, field: &Field, value: fmt::Arguments<'_>) {
        // Dotted names are OpenTelemetry attributes, for the trace only.
        if self.result.is_ok() && !super::log_format::is_trace_attribute(field) {
            self.result = self.write_field(field, value);
        }
    }

    fn write_field(&mut self, field: &Field, value: fmt::Arguments<'_>) -> fmt::Result {
        if !std::mem::take(&mut self.first) {
            self.out.write_char(' ')?;
        }
        if field.name() != "message" {
            self.out.write_str(field.name().trim_start_matches("r#"))?;
            self.out.write_char('=')?;
        }
        fmt::Write::write_fmt(&mut Visible(self.out), value)
    }
}

impl<W: fmt::Write> Visit for TextVisitor<'_, W> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.field(field, format_args!("{value:?}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        // As the default formatter: the message as it is, other strings quoted.
        if field.name() == "message" {
            self.field(field, format_args!("{value}"));
        } else {
            self.field(field, format_args!("{value:?}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn captured_text_log(log: impl FnOnce()) -> String {
        use std::sync::{Arc, Mutex};
        let captured = Arc::new(Mutex::new(Vec::<u8>::new()));
        let sink = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_target(false)
            .with_ansi(false)
            .fmt_fields(TextFields)
            .with_writer(move || WriteInto(sink.clone()))
            .finish();
        tracing::subscriber::with_default(subscriber, log);
        let bytes = captured.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    struct WriteInto(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for WriteInto {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn control_characters_in_every_value_are_escaped() {
        let hostile = "GET\r\n2030-01-01T00:00:00Z  INFO forged \u{1b}[31mred\u{202e}";
        let text = captured_text_log(|| {
            let span = tracing::info_span!("request", path = %hostile);
            let _entered = span.enter();
            tracing::info!(method = %hostile, debug = ?hostile, plain = hostile, n = 3, "execute {}", hostile);
        });
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(!text.contains('\u{1b}') && !text.contains('\r'), "{text:?}");
        let escaped = r"GET\r\n2030-01-01T00:00:00Z  INFO forged \u{1b}[31mred\u{202e}";
        assert!(
            text.contains(&format!("request{{path={escaped}}}")),
            "{text}"
        );
        assert!(
            text.contains(&format!("execute {escaped} method={escaped} ")),
            "{text}"
        );
        assert!(text.contains(" n=3"), "{text}");
        assert!(text.contains(r#"plain="GET\r\n2030"#), "{text}");
    }
}
