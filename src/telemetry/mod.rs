//! Logs (tracing: text locally, JSON in production; caller text escaped in both), Prometheus metrics, and
//! OpenTelemetry traces when an OTLP endpoint is configured (`otel`).

mod log_format;
pub mod otel;
mod text_format;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, text::encode};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

use crate::config::LogFormat;

/// Installs the global subscriber. `RUST_LOG` overrides the default level. With `traces`, spans of this crate
/// also go to OpenTelemetry, whatever the log level (the logs' filter applies to the log lines only).
pub fn init_tracing(format: LogFormat, traces: Option<&otel::Traces>) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,rmcp=warn"));
    // Colours only for a person at a terminal: piped into a file or a collector they are noise.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stdout())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    if let Some(traces) = traces {
        return init_with_traces(format, traces, filter, colour);
    }
    // Without traces, global filters: a span or event below the level, and every trace-only span, costs a
    // cached check at its call site only.
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let hidden = not_trace_only(&filter);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(colour)
        .with_writer(LogSink::install());
    // `try_init` fails only when a subscriber is already set (tests); keeping the first one is right.
    let _ = match format {
        LogFormat::Json => builder
            .fmt_fields(log_format::JsonFragment)
            .event_format(log_format::JsonLine)
            .finish()
            .with(hidden)
            .try_init(),
        LogFormat::Text => builder
            .fmt_fields(text_format::TextFields)
            .finish()
            .with(hidden)
            .try_init(),
    };
}

/// Everything but the spans that exist for traces only ([`otel::TRACE_TARGET`]): log lines keep the request span
/// as their `span`, whatever the level.
/// Its default level is the log filter's most verbose one, so adding it never raises the global level check.
fn not_trace_only(filter: &EnvFilter) -> tracing_subscriber::filter::Targets {
    let level = filter
        .max_level_hint()
        .unwrap_or(tracing::level_filters::LevelFilter::TRACE);
    tracing_subscriber::filter::Targets::new()
        .with_default(level)
        .with_target(otel::TRACE_TARGET, tracing::level_filters::LevelFilter::OFF)
}

/// The log layer under its own filter beside the OpenTelemetry layer, which takes this crate's spans at every
/// level (those under [`otel::TRACE_TARGET`] exist for traces only: the MCP request, queue wait, authentication,
/// store calls, upstream attempts) and no events (log lines are not copied into traces).
fn init_with_traces(format: LogFormat, traces: &otel::Traces, filter: EnvFilter, colour: bool) {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::filter::FilterExt as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let spans = tracing_opentelemetry::layer()
        .with_tracer(traces.tracer())
        .with_location(false)
        .with_threads(false)
        .with_tracked_inactivity(false)
        .with_filter(tracing_subscriber::filter::filter_fn(|metadata| {
            metadata.is_span() && metadata.target().starts_with("polytomic_mcp")
        }));
    let logs = tracing_subscriber::fmt::layer()
        .with_target(false)
        .with_ansi(colour)
        .with_writer(LogSink::install());
    let hidden = not_trace_only(&filter);
    let registry = tracing_subscriber::registry().with(spans);
    let _ = match format {
        LogFormat::Json => registry
            .with(
                logs.fmt_fields(log_format::JsonFragment)
                    .event_format(log_format::JsonLine)
                    .with_filter(filter.and(hidden)),
            )
            .try_init(),
        LogFormat::Text => registry
            .with(
                logs.fmt_fields(text_format::TextFields)
                    .with_filter(filter.and(hidden)),
            )
            .try_init(),
    };
}

/// Writes out every log line collected so far; call before exiting and after lines someone waits for.
pub fn flush_logs() {
    if let Some(sink) = LOG_SINK.get() {
        sink.write_out();
    }
}

/// How often the background thread writes collected log lines to stdout.
const LOG_FLUSH_INTERVAL: Duration = Duration::from_millis(50);
/// Collected bytes at which the logging thread writes them out itself rather than wait for the interval.
const LOG_FLUSH_AT: usize = 256 * 1024;

static LOG_SINK: OnceLock<LogSink> = OnceLock::new();

/// Log lines go to stdout in batches: formatted lines are appended to a buffer, and a background thread writes
/// the buffer every 50 ms. One `write` per line cost a system call on every request (the audit line of each
/// `execute`); batching keeps that off the request path. A full buffer is written by whoever filled it, which
/// bounds memory and passes a blocked stdout's back-pressure on, as unbuffered writes did.
#[derive(Clone, Debug)]
pub struct LogSink(Arc<Mutex<Vec<u8>>>);

impl LogSink {
    fn install() -> LogSink {
        LOG_SINK
            .get_or_init(|| {
                let sink = LogSink(Arc::new(Mutex::new(Vec::with_capacity(64 * 1024))));
                let background = sink.clone();
                // Without the thread, lines would still be written once the buffer fills and at exit.
                let _ = std::thread::Builder::new()
                    .name("log-flush".into())
                    .spawn(move || {
                        loop {
                            std::thread::sleep(LOG_FLUSH_INTERVAL);
                            background.write_out();
                        }
                    });
                sink
            })
            .clone()
    }

    fn write_out(&self) {
        // stdout's lock is taken first, so batches reach it in the order they were collected.
        let mut stdout = std::io::stdout().lock();
        let batch = match self.0.lock() {
            Ok(mut buffer) if !buffer.is_empty() => std::mem::take(&mut *buffer),
            _ => return,
        };
        let _ = stdout.write_all(&batch);
        let _ = stdout.flush();
    }
}

impl Write for LogSink {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        let full = match self.0.lock() {
            Ok(mut buffer) => {
                buffer.extend_from_slice(line);
                buffer.len() >= LOG_FLUSH_AT
            }
            // A thread panicked while holding the buffer; write straight through rather than lose lines.
            Err(_) => return std::io::stdout().lock().write(line),
        };
        if full {
            self.write_out();
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.write_out();
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LogSink {
    type Writer = LogSink;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: &'static str,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ToolLabels {
    pub tool: &'static str,
    pub outcome: &'static str,
    /// `METHOD /template` for `execute` (a bounded set: the index's operations), empty otherwise.
    pub operation: String,
    /// The session's effective access (`read-only`, `full-access`): for OAuth sessions, what the grant allows.
    pub access: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamLabels {
    pub method: String,
    pub status: String,
}

/// The page number of a list page `execute` read (1 to 20, so the label stays bounded).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PageLabels {
    pub page: u32,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CategoryLabels {
    pub category: String,
}

/// Every metric the server exports, registered once.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub http_requests: Family<RequestLabels, Counter>,
    pub tool_calls: Family<ToolLabels, Counter>,
    pub upstream_duration: Family<UpstreamLabels, Histogram, fn() -> Histogram>,
    pub upstream_pages: Family<PageLabels, Counter>,
    pub auth_failures: Family<ReasonLabels, Counter>,
    pub search_zero_hits: Counter,
    pub feedback: Family<CategoryLabels, Counter>,
    pub rate_limited: Family<ScopeLabels, Counter>,
    pub load_shed: Counter,
    pub oauth_events: Family<EventLabels, Counter>,
    pub open_connections: Gauge,
    /// `/mcp` requests holding one of the server-wide slots (`POLYTOMIC_MCP_MAX_CONCURRENT_REQUESTS`) now.
    pub requests_in_flight: Gauge,
    /// `/mcp` requests waiting for a slot now (at most `POLYTOMIC_MCP_QUEUE_WAIT_MS` each).
    pub requests_queued: Gauge,
    pub connections_refused: Counter,
    pub connections_closed: Family<ReasonLabels, Counter>,
    pub key_checks: Family<ReasonLabels, Counter>,
}

/// Counts one in a gauge while it lives: up on creation, down on drop (also when the future holding it is
/// dropped mid-wait, as when a client goes away).
pub struct GaugeHeld(Gauge);

impl GaugeHeld {
    pub fn new(gauge: &Gauge) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for GaugeHeld {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// What happened to an OAuth sign-in (a bounded set of names, see [`Metrics::oauth_event`]).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    pub event: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ScopeLabels {
    pub scope: &'static str,
}

fn upstream_histogram() -> Histogram {
    // 1 ms .. ~65 s
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("polytomic_mcp");
        let http_requests = Family::<RequestLabels, Counter>::default();
        let tool_calls = Family::<ToolLabels, Counter>::default();
        let upstream_duration = Family::<UpstreamLabels, Histogram>::new_with_constructor(
            upstream_histogram as fn() -> Histogram,
        );
        let upstream_pages = Family::<PageLabels, Counter>::default();
        let auth_failures = Family::<ReasonLabels, Counter>::default();
        let search_zero_hits = Counter::default();
        let feedback = Family::<CategoryLabels, Counter>::default();
        let rate_limited = Family::<ScopeLabels, Counter>::default();
        let load_shed = Counter::default();
        let oauth_events = Family::<EventLabels, Counter>::default();
        registry.register(
            "oauth_events",
            "OAuth sign-in events: refresh_retry, refresh_reuse, upstream_renewed, upstream_renewal_failed, \
             upstream_renewal_waited, upstream_rejected, upstream_grant_gone, upstream_revoked, \
             upstream_revoke_failed",
            oauth_events.clone(),
        );
        let open_connections = Gauge::default();
        let requests_in_flight = Gauge::default();
        let requests_queued = Gauge::default();
        let connections_refused = Counter::default();
        let connections_closed = Family::<ReasonLabels, Counter>::default();
        let key_checks = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "key_checks",
            "API keys checked with Polytomic (GET /api/me), by outcome (accepted, rejected, unknown)",
            key_checks.clone(),
        );
        registry.register(
            "open_connections",
            "HTTP connections open now",
            open_connections.clone(),
        );
        registry.register(
            "requests_in_flight",
            "MCP requests holding one of the server-wide concurrency slots now",
            requests_in_flight.clone(),
        );
        registry.register(
            "requests_queued",
            "MCP requests waiting for a concurrency slot now",
            requests_queued.clone(),
        );
        registry.register(
            "connections_refused",
            "Connections answered 503 and closed because the server had its maximum open",
            connections_refused.clone(),
        );
        registry.register(
            "connections_closed",
            "Connections the server closed for a timeout, by reason (header_timeout, keep_alive_timeout)",
            connections_closed.clone(),
        );
        registry.register(
            "rate_limited",
            "Requests over a rate limit, by scope (ip, ip_concurrency, principal)",
            rate_limited.clone(),
        );
        registry.register(
            "load_shed",
            "Requests refused with 503 because the server was at its concurrency limit",
            load_shed.clone(),
        );
        registry.register(
            "http_requests",
            "HTTP requests by route and status",
            http_requests.clone(),
        );
        registry.register(
            "tool_calls",
            "MCP tool calls by tool, outcome, operation and the session's access",
            tool_calls.clone(),
        );
        registry.register(
            "upstream_request_duration_seconds",
            "Polytomic API call latency by method and status",
            upstream_duration.clone(),
        );
        registry.register(
            "upstream_pages",
            "List pages read by execute on paginated GET operations, by page number",
            upstream_pages.clone(),
        );
        registry.register(
            "auth_failures",
            "Rejected requests by reason",
            auth_failures.clone(),
        );
        registry.register(
            "search_zero_hits",
            "Searches that matched no operation",
            search_zero_hits.clone(),
        );
        registry.register(
            "feedback",
            "Feedback records stored, by category",
            feedback.clone(),
        );
        Self {
            registry,
            http_requests,
            tool_calls,
            upstream_duration,
            upstream_pages,
            auth_failures,
            search_zero_hits,
            feedback,
            rate_limited,
            load_shed,
            oauth_events,
            open_connections,
            requests_in_flight,
            requests_queued,
            connections_refused,
            connections_closed,
            key_checks,
        }
    }

    pub fn oauth_event(&self, event: &'static str) {
        self.oauth_events
            .get_or_create(&EventLabels { event })
            .inc();
    }

    pub fn tool_call(
        &self,
        tool: &'static str,
        outcome: &'static str,
        operation: &str,
        access: &'static str,
    ) {
        self.tool_calls
            .get_or_create(&ToolLabels {
                tool,
                outcome,
                operation: operation.to_owned(),
                access,
            })
            .inc();
    }

    pub fn rate_limited(&self, scope: &'static str) {
        self.rate_limited
            .get_or_create(&ScopeLabels { scope })
            .inc();
    }

    pub fn auth_failure(&self, reason: &'static str) {
        self.auth_failures
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
