//! OpenTelemetry traces over OTLP/HTTP: the standard `OTEL_*` variables, read and checked once at start; a
//! batched exporter with a bounded queue (a dead collector costs dropped spans, never a slower request); and the
//! W3C trace context taken from requests (header or `params._meta`) and handed on to Polytomic. With no endpoint
//! set there is no exporter and no layer, and every helper here returns at its first line.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{BatchSpanProcessor, Sampler, SdkTracer, SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The target of spans that exist for traces only (the MCP request, queue wait, authentication, store calls,
/// upstream attempts): log lines never show them, and without traces they are never created.
pub const TRACE_TARGET: &str = "polytomic_mcp::trace";

/// A span for traces only ([`TRACE_TARGET`]), named in the trace as in the code, with `otel.status_code` and
/// `error.type` ready for [`failed`]. Extra fields as in `tracing::info_span!`.
macro_rules! trace_span {
    ($name:literal $(, $($field:tt)*)?) => {
        ::tracing::info_span!(
            target: $crate::telemetry::otel::TRACE_TARGET,
            $name,
            otel.name = $name,
            otel.status_code = ::tracing::field::Empty,
            error.type = ::tracing::field::Empty
            $(, $($field)*)?
        )
    };
}

pub(crate) use trace_span;

/// Marks a trace span failed, `reason` its `error.type` (a fixed word, never caller text).
pub fn failed(span: &tracing::Span, reason: &'static str) {
    span.record("error.type", reason);
    span.record("otel.status_code", "error");
}

/// Set once traces are exported; read on the request path to skip all trace work when they are not.
static ENABLED: AtomicBool = AtomicBool::new(false);

/// The service name when neither `OTEL_SERVICE_NAME` nor `service.name` in `OTEL_RESOURCE_ATTRIBUTES` is set.
const DEFAULT_SERVICE_NAME: &str = "polytomic-mcp";
/// The only wire format exported (gRPC would bring tonic and a second HTTP/2 stack into the build).
const PROTOCOL: &str = "http/protobuf";
/// How long shutdown waits for the last batch to reach the collector.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);
/// The sampler names `OTEL_TRACES_SAMPLER` accepts.
const SAMPLERS: [&str; 6] = [
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
];

/// Whether spans are being exported.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// What the `OTEL_*` variables ask for, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceSettings {
    /// One of [`SAMPLERS`].
    pub sampler: &'static str,
    /// The ratio for the `traceidratio` samplers (1.0 otherwise).
    pub ratio: f64,
    pub service_name: String,
}

/// The settings the variables describe; `None` when no OTLP endpoint is set (or the SDK or the traces exporter
/// is switched off), an error naming the variable and what is allowed when a value is wrong.
pub fn settings_from(
    get: impl Fn(&str) -> Option<String>,
) -> Result<Option<TraceSettings>, String> {
    let get = |name: &str| get(name).filter(|value| !value.trim().is_empty());
    if get("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
        return Ok(None);
    }
    match get("OTEL_TRACES_EXPORTER").as_deref().map(str::trim) {
        None | Some("otlp") => {}
        Some("none") => return Ok(None),
        Some(other) => {
            return Err(format!(
                "OTEL_TRACES_EXPORTER is {other:?}; allowed: otlp, none"
            ));
        }
    }
    let endpoint = [
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    ]
    .into_iter()
    .find_map(|name| get(name).map(|value| (name, value)));
    let Some((endpoint_var, endpoint)) = endpoint else {
        return Ok(None);
    };
    match url::Url::parse(endpoint.trim()) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {}
        _ => {
            return Err(format!(
                "{endpoint_var} is {endpoint:?}; it must be an http:// or https:// URL such as http://collector:4318"
            ));
        }
    }
    for name in [
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
    ] {
        if let Some(protocol) = get(name)
            && protocol.trim() != PROTOCOL
        {
            return Err(format!(
                "{name} is {protocol:?}; this server exports {PROTOCOL} only (allowed: {PROTOCOL})"
            ));
        }
    }
    let sampler_name = get("OTEL_TRACES_SAMPLER").unwrap_or_else(|| "parentbased_always_on".into());
    let Some(sampler) = SAMPLERS.into_iter().find(|s| *s == sampler_name.trim()) else {
        return Err(format!(
            "OTEL_TRACES_SAMPLER is {sampler_name:?}; allowed: {}",
            SAMPLERS.join(", ")
        ));
    };
    let ratio = match get("OTEL_TRACES_SAMPLER_ARG") {
        Some(arg) if sampler.ends_with("traceidratio") => match arg.trim().parse::<f64>() {
            Ok(ratio) if (0.0..=1.0).contains(&ratio) => ratio,
            _ => {
                return Err(format!(
                    "OTEL_TRACES_SAMPLER_ARG is {arg:?}; for {sampler} it must be a number from 0 to 1"
                ));
            }
        },
        _ => 1.0,
    };
    let service_name = get("OTEL_SERVICE_NAME")
        .or_else(|| resource_attribute(&get("OTEL_RESOURCE_ATTRIBUTES")?, "service.name"))
        .unwrap_or_else(|| DEFAULT_SERVICE_NAME.into());
    Ok(Some(TraceSettings {
        sampler,
        ratio,
        service_name: service_name.trim().to_owned(),
    }))
}

/// One `key=value` of `OTEL_RESOURCE_ATTRIBUTES` (comma-separated pairs).
fn resource_attribute(attributes: &str, key: &str) -> Option<String> {
    attributes.split(',').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k.trim() == key && !v.trim().is_empty()).then(|| v.trim().to_owned())
    })
}

fn sampler(settings: &TraceSettings) -> Sampler {
    let ratio = Sampler::TraceIdRatioBased(settings.ratio);
    match settings.sampler {
        "always_off" => Sampler::AlwaysOff,
        "traceidratio" => ratio,
        "parentbased_always_off" => Sampler::ParentBased(Box::new(Sampler::AlwaysOff)),
        "parentbased_traceidratio" => Sampler::ParentBased(Box::new(ratio)),
        "always_on" => Sampler::AlwaysOn,
        _ => Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
    }
}

/// The running exporter; [`Traces::shutdown`] sends what is queued.
#[derive(Debug)]
pub struct Traces {
    provider: SdkTracerProvider,
}

impl Traces {
    /// Reads the `OTEL_*` variables and starts the exporter; `Ok(None)` when traces are off.
    pub fn from_env() -> Result<Option<Traces>, String> {
        let Some(settings) = settings_from(|name| std::env::var(name).ok())? else {
            return Ok(None);
        };
        // Endpoint, headers and timeout come from the standard variables, read by the exporter itself.
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .build()
            .map_err(|e| format!("cannot start the OTLP trace exporter: {e}"))?;
        // The batch processor's queue is bounded (OTEL_BSP_MAX_QUEUE_SIZE, 2048 by default): spans that find it
        // full are dropped, and exports run on the processor's own thread, never on a request's.
        let processor = BatchSpanProcessor::builder(exporter).build();
        let resource = Resource::builder()
            .with_service_name(settings.service_name.clone())
            .with_attribute(opentelemetry::KeyValue::new(
                "service.version",
                env!("CARGO_PKG_VERSION"),
            ))
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_sampler(sampler(&settings))
            .with_resource(resource)
            .build();
        ENABLED.store(true, Ordering::Relaxed);
        Ok(Some(Traces { provider }))
    }

    /// The tracer the tracing layer creates spans with.
    pub fn tracer(&self) -> SdkTracer {
        self.provider.tracer("polytomic-mcp")
    }

    /// Exports the spans still queued (waiting at most five seconds for the collector), then stops.
    pub async fn shutdown(self) {
        let provider = self.provider;
        // The export blocks its thread; keep that off the runtime's workers.
        let _ =
            tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT))
                .await;
    }
}

/// Makes the caller's context (a W3C `traceparent`/`tracestate` header) the parent of `span`, which must not have
/// been entered yet. A missing or malformed header leaves `span` a root.
pub fn adopt_header_parent(span: &tracing::Span, headers: &HeaderMap) {
    if !enabled() || !headers.contains_key(TRACEPARENT) {
        return;
    }
    let context = TraceContextPropagator::new().extract(&HeaderRead(headers));
    if context.span().span_context().is_valid() {
        let _ = span.set_parent(context);
    }
}

/// Makes the context an MCP request carries in `params._meta` the parent of `span` (not entered yet), linked
/// to `transport` (the HTTP request's span) when that is in another trace. False when the values are not a
/// valid context.
pub fn adopt_meta_parent(
    span: &tracing::Span,
    traceparent: &str,
    tracestate: Option<&str>,
    transport: &tracing::Span,
) -> bool {
    if !enabled() {
        return false;
    }
    let context = TraceContextPropagator::new().extract(&MetaRead {
        traceparent,
        tracestate,
    });
    let remote = context.span().span_context().clone();
    if !remote.is_valid() {
        return false;
    }
    let http = transport.context().span().span_context().clone();
    if span.set_parent(context).is_err() {
        return false;
    }
    if http.is_valid() && http.trace_id() != remote.trace_id() {
        span.add_link(http);
    }
    true
}

/// Adds the current span's `traceparent` (and `tracestate`) to an outgoing request's headers.
pub fn inject_current(headers: &mut HeaderMap) {
    if !enabled() {
        return;
    }
    let context = tracing::Span::current().context();
    if context.span().span_context().is_valid() {
        TraceContextPropagator::new().inject_context(&context, &mut HeaderWrite(headers));
    }
}

/// The current span's trace and span ids in hex, for the log line.
pub(crate) fn current_ids() -> Option<(String, String)> {
    if !enabled() {
        return None;
    }
    let context = tracing::Span::current().context();
    let span = context.span();
    let ids = span.span_context();
    ids.is_valid()
        .then(|| (ids.trace_id().to_string(), ids.span_id().to_string()))
}

const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

struct HeaderRead<'a>(&'a HeaderMap);

impl Extractor for HeaderRead<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

struct MetaRead<'a> {
    traceparent: &'a str,
    tracestate: Option<&'a str>,
}

impl Extractor for MetaRead<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            "traceparent" => Some(self.traceparent),
            "tracestate" => self.tracestate,
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        vec!["traceparent", "tracestate"]
    }
}

struct HeaderWrite<'a>(&'a mut HeaderMap);

impl Injector for HeaderWrite<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(vars: &[(&str, &str)]) -> Result<Option<TraceSettings>, String> {
        settings_from(|name| {
            vars.iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| (*value).to_owned())
        })
    }

    #[test]
    fn traces_are_off_without_an_endpoint_or_when_switched_off() {
        assert_eq!(settings(&[]), Ok(None));
        assert_eq!(settings(&[("OTEL_SERVICE_NAME", "x")]), Ok(None));
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318");
        assert_eq!(
            settings(&[endpoint, ("OTEL_SDK_DISABLED", "true")]),
            Ok(None)
        );
        assert_eq!(
            settings(&[endpoint, ("OTEL_TRACES_EXPORTER", "none")]),
            Ok(None)
        );
    }

    #[test]
    fn the_defaults_are_the_standard_ones_with_our_service_name() {
        for var in [
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        ] {
            let on = settings(&[(var, "https://collector.example:4318/v1/traces")])
                .unwrap()
                .unwrap();
            assert_eq!(on.sampler, "parentbased_always_on");
            assert_eq!(on.ratio, 1.0);
            assert_eq!(on.service_name, "polytomic-mcp");
        }
        let named = settings(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "deployment.environment=prod, service.name=mcp-eu",
            ),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(named.service_name, "mcp-eu");
        let both = settings(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_RESOURCE_ATTRIBUTES", "service.name=mcp-eu"),
            ("OTEL_SERVICE_NAME", "mcp-us"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(both.service_name, "mcp-us", "OTEL_SERVICE_NAME wins");
    }

    #[test]
    fn samplers_and_their_ratio_are_read() {
        let on = settings(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!((on.sampler, on.ratio), ("parentbased_traceidratio", 0.25));
        assert!(matches!(sampler(&on), Sampler::ParentBased(_)));
        let off = settings(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_TRACES_SAMPLER", "always_off"),
            ("OTEL_TRACES_SAMPLER_ARG", "not read for this sampler"),
        ])
        .unwrap()
        .unwrap();
        assert!(matches!(sampler(&off), Sampler::AlwaysOff));
    }

    #[test]
    fn bad_values_are_refused_naming_the_variable_and_what_is_allowed() {
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318");
        let error = settings(&[endpoint, ("OTEL_TRACES_SAMPLER", "jaeger_remote")]).unwrap_err();
        assert!(
            error.contains("OTEL_TRACES_SAMPLER") && error.contains("parentbased_traceidratio"),
            "{error}"
        );
        let error = settings(&[
            endpoint,
            ("OTEL_TRACES_SAMPLER", "traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "1.5"),
        ])
        .unwrap_err();
        assert!(
            error.contains("OTEL_TRACES_SAMPLER_ARG") && error.contains("0 to 1"),
            "{error}"
        );
        let error = settings(&[endpoint, ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]).unwrap_err();
        assert!(
            error.contains("OTEL_EXPORTER_OTLP_PROTOCOL") && error.contains("http/protobuf"),
            "{error}"
        );
        let error =
            settings(&[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "collector:4318")]).unwrap_err();
        assert!(
            error.contains("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") && error.contains("http://"),
            "{error}"
        );
        let error = settings(&[endpoint, ("OTEL_TRACES_EXPORTER", "jaeger")]).unwrap_err();
        assert!(
            error.contains("OTEL_TRACES_EXPORTER") && error.contains("otlp, none"),
            "{error}"
        );
        assert!(
            settings(&[endpoint, ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")])
                .unwrap()
                .is_some()
        );
    }
}
