//! The JSON log line, written directly. tracing-subscriber's own JSON formatter keeps a span's fields as a JSON
//! text and parses that text back into a map for every event inside the span, which made the audit line of each
//! `execute` call a large share of its CPU (docs/performance.md). Here span fields are kept as
//! a ready JSON fragment and copied into each line as is. The shape is the same as that formatter's with
//! `flatten_event(true)`, `with_current_span(true)`, no target:
//! `{"timestamp":…,"level":…,"message":…,<fields>,"span":{<span fields>,"name":…}}`. While traces are exported
//! (`otel`), each line inside a span also carries `"trace_id"` and `"span_id"` before `"span"`, so a line can be
//! found from its trace and the other way round. Fields with a dot in their name (`http.request.method`,
//! `otel.name`) are span attributes for the trace only and stay out of the line.

use std::fmt;

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// Formats events as one JSON object per line.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonLine;

/// Formats fields as a JSON fragment, `"name":value` pairs joined by commas (no braces).
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonFragment;

impl<S, N> FormatEvent<S, N> for JsonLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        write!(
            writer,
            "{{\"timestamp\":\"{now}\",\"level\":\"{}\"",
            event.metadata().level()
        )?;
        let mut fields = FieldWriter::new(&mut writer, false);
        event.record(&mut fields);
        fields.result?;
        if let Some((trace_id, span_id)) = super::otel::current_ids() {
            write!(
                writer,
                ",\"trace_id\":\"{trace_id}\",\"span_id\":\"{span_id}\""
            )?;
        }
        if let Some(span) = ctx.lookup_current() {
            writer.write_str(",\"span\":{")?;
            let extensions = span.extensions();
            if let Some(fragment) = extensions.get::<FormattedFields<N>>()
                && !fragment.fields.is_empty()
            {
                writer.write_str(&fragment.fields)?;
                writer.write_char(',')?;
            }
            writer.write_str("\"name\":")?;
            write_json_str(&mut writer, span.name())?;
            writer.write_char('}')?;
        }
        writer.write_str("}\n")
    }
}

impl<'writer> FormatFields<'writer> for JsonFragment {
    fn format_fields<R: tracing_subscriber::field::RecordFields>(
        &self,
        mut writer: Writer<'writer>,
        fields: R,
    ) -> fmt::Result {
        let mut visitor = FieldWriter::new(&mut writer, true);
        fields.record(&mut visitor);
        visitor.result
    }

    fn add_fields(
        &self,
        current: &'writer mut FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> fmt::Result {
        // Fields recorded after the span was created join the fragment with a comma (the default separator,
        // a space, would not be JSON).
        let first = current.fields.is_empty();
        let mut writer = current.as_writer();
        let mut visitor = FieldWriter::new(&mut writer, first);
        fields.record(&mut visitor);
        visitor.result
    }
}

/// Writes each field as `,"name":value` (the comma left out before the first when `first` is set).
struct FieldWriter<'a, W: fmt::Write> {
    out: &'a mut W,
    first: bool,
    result: fmt::Result,
}

impl<'a, W: fmt::Write> FieldWriter<'a, W> {
    fn new(out: &'a mut W, first: bool) -> Self {
        Self {
            out,
            first,
            result: Ok(()),
        }
    }

    fn key(&mut self, field: &Field) -> fmt::Result {
        if !std::mem::take(&mut self.first) {
            self.out.write_char(',')?;
        }
        write_json_str(self.out, field.name())?;
        self.out.write_char(':')
    }

    fn raw(&mut self, field: &Field, value: fmt::Arguments<'_>) {
        if self.result.is_ok() && !is_trace_attribute(field) {
            self.result = self.key(field).and_then(|()| self.out.write_fmt(value));
        }
    }

    fn string(&mut self, field: &Field, value: &str) {
        if self.result.is_ok() && !is_trace_attribute(field) {
            self.result = self
                .key(field)
                .and_then(|()| write_json_str(self.out, value));
        }
    }
}

impl<W: fmt::Write> Visit for FieldWriter<'_, W> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if is_trace_attribute(field) {
            return;
        }
        // `message` and `%`/`?` fields arrive here; most are short, so one small String is fine.
        let text = format!("{value:?}");
        self.string(field, &text);
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.string(field, value);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.raw(field, format_args!("{value}"));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.raw(field, format_args!("{value}"));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.raw(field, format_args!("{value}"));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        if value.is_finite() {
            self.raw(field, format_args!("{value}"));
        } else {
            self.raw(field, format_args!("null"));
        }
    }
}

/// A dotted field name is an OpenTelemetry attribute (`url.path`, `otel.name`): for the trace, not the log.
pub(super) fn is_trace_attribute(field: &Field) -> bool {
    field.name().contains('.')
}

/// A JSON string literal: quotes, backslashes and control characters escaped.
fn write_json_str(out: &mut impl fmt::Write, text: &str) -> fmt::Result {
    out.write_char('"')?;
    let mut start = 0;
    for (index, c) in text.char_indices() {
        let escape = match c {
            '"' => "\\\"",
            '\\' => "\\\\",
            '\n' => "\\n",
            '\r' => "\\r",
            '\t' => "\\t",
            // Besides what JSON requires, whatever acts on a terminal showing the line (C1 controls, bidi
            // overrides, line separators) is escaped too; the value parses back the same.
            c if crate::core::acts_on_display(c) => "",
            _ => continue,
        };
        out.write_str(&text[start..index])?;
        if escape.is_empty() {
            write!(out, "\\u{:04x}", u32::from(c))?;
        } else {
            out.write_str(escape)?;
        }
        start = index + c.len_utf8();
    }
    out.write_str(&text[start..])?;
    out.write_char('"')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_escaped_as_json() {
        let mut out = String::new();
        write_json_str(&mut out, "a \"q\" \\ line\nnext\u{1}é").unwrap();
        assert_eq!(out, r#""a \"q\" \\ line\nnext\u0001é""#);
        let parsed: String = serde_json::from_str(&out).unwrap();
        assert_eq!(parsed, "a \"q\" \\ line\nnext\u{1}é");
    }

    #[test]
    fn characters_that_act_on_a_terminal_are_escaped_and_parse_back() {
        let text = "exe.\u{202e}txt\u{2066}x\u{2069}\u{9b}31m\u{2028}\u{7f}ok é";
        let mut out = String::new();
        write_json_str(&mut out, text).unwrap();
        assert_eq!(
            out,
            r#""exe.\u202etxt\u2066x\u2069\u009b31m\u2028\u007fok é""#
        );
        let parsed: String = serde_json::from_str(&out).unwrap();
        assert_eq!(parsed, text);
    }

    #[test]
    fn a_line_with_a_span_is_one_json_object_of_the_usual_shape() {
        use std::sync::{Arc, Mutex};
        #[derive(Clone, Default)]
        struct Captured(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Captured {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let captured = Captured::default();
        let sink = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .fmt_fields(JsonFragment)
            .event_format(JsonLine)
            .with_writer(move || sink.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!(
                "request",
                path = "/mcp",
                request_id = "r-1",
                url.path = "/mcp",
                otel.name = tracing::field::Empty
            );
            span.record("otel.name", "POST /mcp");
            let _entered = span.enter();
            tracing::info!(principal = %"key_ab\"c", status = 200u64, ratio = 0.5, ok = true, "execute");
        });
        tracing::subscriber::with_default(
            tracing_subscriber::fmt()
                .fmt_fields(JsonFragment)
                .event_format(JsonLine)
                .with_writer({
                    let sink = captured.clone();
                    move || sink.clone()
                })
                .finish(),
            || tracing::warn!("outside any span"),
        );
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        let line = &lines[0];
        assert_eq!(line["level"], "INFO");
        assert_eq!(line["message"], "execute");
        assert_eq!(line["principal"], "key_ab\"c");
        assert_eq!(line["status"], 200);
        assert_eq!(line["ratio"], 0.5);
        assert_eq!(line["ok"], true);
        assert_eq!(
            line["span"],
            serde_json::json!({"path": "/mcp", "request_id": "r-1", "name": "request"})
        );
        assert!(line["timestamp"].as_str().unwrap().ends_with('Z'));
        assert_eq!(lines[1]["message"], "outside any span");
        assert_eq!(lines[1]["level"], "WARN");
        assert!(lines[1].get("span").is_none());
    }
}
