//! The operators' side of feedback: the brief memory of each principal's recent tool calls that feedback
//! records point to, webhook delivery through the store's outbox, and the CLI's list/show output.

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::config::OutputFormat;
use crate::core::{FirstRound, Newlines, now_ms, spawn_periodic, visible};
use crate::store::{FeedbackRecord, Store};

/// Calls remembered per principal, and for how long.
const RECENT_CALLS: usize = 5;
const RECENT_TTL_MS: i64 = 15 * 60 * 1000;
/// Principals remembered at once; the oldest are forgotten first, so memory stays bounded.
const MAX_PRINCIPALS: usize = 10_000;

/// One tool call, as feedback refers to it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CallSummary {
    pub id: String,
    pub at_ms: i64,
    pub tool: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operation: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    pub outcome: CallOutcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_key: Option<String>,
}

/// What an agent may report, and how urgent it says it is (the feedback tool's enums and the CLI's filter).
pub const CATEGORIES: [&str; 5] = ["bug", "missing_capability", "friction", "docs", "other"];
pub const SEVERITIES: [&str; 4] = ["low", "medium", "high", "critical"];

/// How a tool call ended, as the agent saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CallOutcome {
    Ok,
    Error,
}

impl CallOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            CallOutcome::Ok => "ok",
            CallOutcome::Error => "error",
        }
    }
}

/// Each principal's last few tool calls, in this process only: a hint for operators, not a record of truth.
#[derive(Debug, Default)]
pub struct RecentCalls {
    inner: Mutex<HashMap<String, VecDeque<CallSummary>>>,
}

impl RecentCalls {
    pub fn record(&self, principal: &str, call: CallSummary) {
        let Ok(mut map) = self.inner.lock() else {
            return;
        };
        if map.len() >= MAX_PRINCIPALS && !map.contains_key(principal) {
            let cutoff = call.at_ms - RECENT_TTL_MS;
            map.retain(|_, calls| calls.back().is_some_and(|c| c.at_ms >= cutoff));
            if map.len() >= MAX_PRINCIPALS {
                let oldest = map
                    .iter()
                    .min_by_key(|(_, calls)| calls.back().map(|c| c.at_ms).unwrap_or(0))
                    .map(|(k, _)| k.clone());
                if let Some(oldest) = oldest {
                    map.remove(&oldest);
                }
            }
        }
        // Looked up before inserting, so the common case (a known principal) does not allocate its key.
        let calls = match map.get_mut(principal) {
            Some(calls) => calls,
            None => map.entry(principal.to_owned()).or_default(),
        };
        calls.push_back(call);
        while calls.len() > RECENT_CALLS {
            calls.pop_front();
        }
    }

    /// The principal's calls from the last 15 minutes, oldest first.
    pub fn recent(&self, principal: &str, now_ms: i64) -> Vec<CallSummary> {
        let Ok(map) = self.inner.lock() else {
            return Vec::new();
        };
        map.get(principal)
            .map(|calls| {
                calls
                    .iter()
                    .filter(|c| now_ms - c.at_ms <= RECENT_TTL_MS)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Webhook delivery settings. The URL may embed a token, so `Debug` leaves it out.
#[derive(Clone)]
pub struct WebhookConfig {
    pub url: url::Url,
    /// Signs each delivery (HMAC-SHA256) when set.
    pub secret: Option<crate::secret::Secret>,
    pub max_attempts: i64,
    pub retry_base: Duration,
}

impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("host", &self.url.host_str())
            .field("max_attempts", &self.max_attempts)
            .field("retry_base", &self.retry_base)
            .finish()
    }
}

/// Delivers stored feedback to the webhook until it succeeds or lands in the dead letters. Runs in every
/// replica; the store's claim makes each delivery go to one worker at a time.
pub fn spawn_webhook_worker(
    store: Store,
    http: reqwest::Client,
    config: WebhookConfig,
    shutdown: CancellationToken,
) {
    spawn_periodic(
        Duration::from_millis(250),
        FirstRound::Now,
        shutdown,
        move || {
            let (store, http, config) = (store.clone(), http.clone(), config.clone());
            async move {
                if let Err(error) = deliver_due(&store, &http, &config).await {
                    tracing::warn!(%error, "feedback webhook round failed; will retry");
                }
            }
        },
    );
}

async fn deliver_due(
    store: &Store,
    http: &reqwest::Client,
    config: &WebhookConfig,
) -> Result<(), crate::store::StoreError> {
    let now = now_ms();
    let lease = now + 60_000;
    for claimed in store.claim_deliveries(now, lease, 20).await? {
        let Some(record) = store.get_feedback(&claimed.feedback_id).await? else {
            store.delivery_succeeded(&claimed.feedback_id).await?;
            continue;
        };
        let attempts = claimed.attempts + 1;
        match post(http, config, &record).await {
            Ok(()) => {
                store.delivery_succeeded(&record.id).await?;
                tracing::info!(feedback_id = %record.id, attempts, "feedback delivered to webhook");
            }
            Err(error) if attempts >= config.max_attempts => {
                tracing::warn!(feedback_id = %record.id, attempts, %error, "feedback webhook keeps failing; moved to dead letters");
                store
                    .delivery_dead(&record.id, attempts, &error, now_ms())
                    .await?;
            }
            Err(error) => {
                let factor = 2u32.saturating_pow(u32::try_from(attempts - 1).unwrap_or(16).min(16));
                let wait = config
                    .retry_base
                    .saturating_mul(factor)
                    .min(Duration::from_secs(3600));
                let retry_at = now_ms() + i64::try_from(wait.as_millis()).unwrap_or(i64::MAX / 2);
                tracing::info!(feedback_id = %record.id, attempts, %error, "feedback webhook failed; will retry");
                store
                    .delivery_failed(&record.id, attempts, &error, retry_at)
                    .await?;
            }
        }
    }
    Ok(())
}

/// `sha256=` + hex HMAC-SHA256 of `"{timestamp}.{body}"`: the receiver recomputes it with the shared secret to
/// know the record came from this server, and rejects old timestamps to stop replays.
pub fn webhook_signature(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let mut context = ring::hmac::Context::with_key(&key);
    context.update(timestamp.to_string().as_bytes());
    context.update(b".");
    context.update(body);
    let tag = context.sign();
    let mut out = String::from("sha256=");
    for byte in tag.as_ref() {
        out.push_str(&format!("{byte:02x}"));
    }
    out
}

async fn post(
    http: &reqwest::Client,
    config: &WebhookConfig,
    record: &FeedbackRecord,
) -> Result<(), String> {
    let body = serde_json::to_vec(&webhook_payload(record)).map_err(|e| e.to_string())?;
    let mut request = http.post(config.url.clone());
    if let Some(secret) = &config.secret {
        let timestamp = chrono::Utc::now().timestamp();
        request = request
            .header("X-Polytomic-MCP-Timestamp", timestamp.to_string())
            .header(
                "X-Polytomic-MCP-Signature",
                webhook_signature(secret.expose(), timestamp, &body),
            );
    }
    let response = request
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(
            "User-Agent",
            concat!("polytomic-mcp/", env!("CARGO_PKG_VERSION")),
        )
        .timeout(Duration::from_secs(10))
        .body(body)
        .send()
        .await
        .map_err(|e| {
            if e.is_timeout() {
                "timed out".to_owned()
            } else {
                "connection failed".to_owned()
            }
        })?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(format!("HTTP {}", response.status().as_u16()))
    }
}

/// The JSON a webhook receives: the record plus its time as RFC 3339.
pub fn webhook_payload(record: &FeedbackRecord) -> serde_json::Value {
    let mut value = serde_json::to_value(record).unwrap_or_default();
    value["created_at"] = serde_json::json!(rfc3339(record.created_at_ms));
    value["type"] = serde_json::json!("polytomic_mcp.feedback");
    value
}

pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

/// Parses `--since`: an RFC 3339 time, a date (`2026-11-01`), or a span back from now (`30m`, `24h`, `7d`).
pub fn parse_since(value: &str, now_ms: i64) -> Result<i64, String> {
    let value = value.trim();
    if let Ok(time) = chrono::DateTime::parse_from_rfc3339(value) {
        return Ok(time.timestamp_millis());
    }
    if let Ok(date) = chrono::NaiveDate::parse_from_str(value, "%Y-%m-%d")
        && let Some(midnight) = date.and_hms_opt(0, 0, 0)
    {
        return Ok(midnight.and_utc().timestamp_millis());
    }
    let (number, unit) = value.split_at(
        value
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(value.len()),
    );
    let amount: i64 = number.parse().map_err(|_| since_error(value))?;
    let unit_ms = match unit {
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "w" => 7 * 86_400_000,
        _ => return Err(since_error(value)),
    };
    Ok(now_ms - amount.saturating_mul(unit_ms))
}

fn since_error(value: &str) -> String {
    format!("--since {value:?} is not a time; use e.g. 24h, 7d, 2026-11-01 or 2026-11-01T12:00:00Z")
}

// New columns go last, so a spreadsheet or script reading by position keeps working.
const CSV_COLUMNS: [&str; 20] = [
    "id",
    "created_at",
    "category",
    "severity",
    "summary",
    "details",
    "tool",
    "operation",
    "expected",
    "actual",
    "principal",
    "organization_id",
    "auth_mode",
    "access_mode",
    "client_name",
    "client_version",
    "request_id",
    "recent_calls",
    "created_at_ms",
    "user_id",
];

/// Renders records for `feedback list`.
pub fn render(records: &[FeedbackRecord], format: OutputFormat) -> String {
    match format {
        OutputFormat::Json => {
            let values: Vec<serde_json::Value> = records.iter().map(webhook_payload).collect();
            serde_json::to_string_pretty(&values).unwrap_or_default() + "\n"
        }
        OutputFormat::Csv => {
            let mut out = CSV_COLUMNS.join(",");
            out.push('\n');
            for r in records {
                let created = rfc3339(r.created_at_ms);
                let ms = r.created_at_ms.to_string();
                let cells: [Option<&str>; 20] = [
                    Some(&r.id),
                    Some(&created),
                    Some(&r.category),
                    r.severity.as_deref(),
                    Some(&r.summary),
                    r.details.as_deref(),
                    r.tool.as_deref(),
                    r.operation.as_deref(),
                    r.expected.as_deref(),
                    r.actual.as_deref(),
                    Some(&r.principal),
                    r.organization_id.as_deref(),
                    Some(&r.auth_mode),
                    Some(&r.access_mode),
                    r.client_name.as_deref(),
                    r.client_version.as_deref(),
                    r.request_id.as_deref(),
                    r.recent_calls.as_deref(),
                    Some(&ms),
                    r.user_id.as_deref(),
                ];
                let row: Vec<String> = cells.iter().map(|c| csv_cell(c.unwrap_or(""))).collect();
                out.push_str(&row.join(","));
                out.push('\n');
            }
            out
        }
        OutputFormat::Table => {
            let mut out = format!(
                "{:<36}  {:<20}  {:<18}  {:<8}  {}\n",
                "ID", "CREATED (UTC)", "CATEGORY", "SEVERITY", "SUMMARY"
            );
            for r in records {
                let created = chrono::DateTime::from_timestamp_millis(r.created_at_ms)
                    .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                    .unwrap_or_default();
                let shown = |text: &str| visible(text, Newlines::Escape).into_owned();
                let summary: String = shown(&r.summary).chars().take(80).collect();
                let _ = writeln!(
                    out,
                    "{:<36}  {:<20}  {:<18}  {:<8}  {}",
                    shown(&r.id),
                    created,
                    shown(&r.category),
                    shown(r.severity.as_deref().unwrap_or("-")),
                    summary
                );
            }
            let _ = writeln!(out, "{} record(s)", records.len());
            out
        }
    }
}

/// One record in full, for `feedback show`.
pub fn render_one(record: &FeedbackRecord) -> String {
    serde_json::to_string_pretty(&webhook_payload(record)).unwrap_or_default() + "\n"
}

/// Characters that make a spreadsheet read a cell as a formula when they lead it (OWASP, CSV injection).
const FORMULA_LEADS: [char; 6] = ['=', '+', '-', '@', '\t', '\r'];

/// One CSV cell of agent text: control and bidi characters as visible escapes (line feeds stay, inside the
/// quotes), a leading formula character defused with `'`, and always quoted (RFC 4180), as OWASP advises.
fn csv_cell(value: &str) -> String {
    let formula = value.trim_start_matches(' ').starts_with(FORMULA_LEADS);
    let shown = visible(value, Newlines::Keep);
    let mut cell = String::with_capacity(shown.len() + 4);
    cell.push('"');
    if formula {
        cell.push('\'');
    }
    cell.push_str(&shown.replace('"', "\"\""));
    cell.push('"');
    cell
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_signature_matches_a_known_answer() {
        // Computed outside this code base, from the documented format (Python:
        // hmac.new(b"whsec-test-0123456789", b'1700000000.{"type":"polytomic_mcp.feedback"}', sha256)).
        assert_eq!(
            webhook_signature(
                "whsec-test-0123456789",
                1_700_000_000,
                br#"{"type":"polytomic_mcp.feedback"}"#
            ),
            "sha256=b3a656d5126cb3c69caaf4631ee7edbcfb07a2cf5cede6c355b4e5cae3457827"
        );
    }

    fn call(at_ms: i64, n: usize) -> CallSummary {
        CallSummary {
            id: format!("c{n}"),
            at_ms,
            tool: "execute".into(),
            operation: Some("GET /api/me".into()),
            status: Some(200),
            outcome: CallOutcome::Ok,
            error_key: None,
        }
    }

    #[test]
    fn recent_calls_keep_the_last_five_within_fifteen_minutes() {
        let recent = RecentCalls::default();
        for n in 0..8 {
            recent.record("key_a", call(1_000 + n as i64, n));
        }
        let calls = recent.recent("key_a", 2_000);
        assert_eq!(
            calls.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
            ["c3", "c4", "c5", "c6", "c7"]
        );
        assert!(
            recent
                .recent("key_a", 1_000 + RECENT_TTL_MS + 100)
                .is_empty()
        );
        assert!(recent.recent("key_b", 2_000).is_empty());
    }

    #[test]
    fn since_accepts_spans_dates_and_times() {
        let now = 10 * 86_400_000;
        assert_eq!(parse_since("24h", now).unwrap(), now - 86_400_000);
        assert_eq!(parse_since("2d", now).unwrap(), now - 2 * 86_400_000);
        assert_eq!(parse_since("1970-01-02", now).unwrap(), 86_400_000);
        assert_eq!(parse_since("1970-01-01T00:00:01Z", now).unwrap(), 1_000);
        assert!(parse_since("yesterday", now).unwrap_err().contains("24h"));
    }

    fn record(summary: &str, details: &str) -> FeedbackRecord {
        FeedbackRecord {
            user_id: None,
            id: "fb_1".into(),
            created_at_ms: 86_400_000,
            category: "bug".into(),
            summary: summary.into(),
            details: Some(details.into()),
            tool: Some("execute".into()),
            operation: None,
            severity: Some("high".into()),
            expected: Some("\t=1+2".into()),
            actual: Some("\r@SUM(A1)".into()),
            principal: "key_0123456789ab".into(),
            organization_id: None,
            auth_mode: "user".into(),
            access_mode: "full-access".into(),
            client_name: Some("evil\u{202e}gnp.exe".into()),
            client_version: Some("+1".into()),
            request_id: None,
            recent_calls: None,
        }
    }

    /// Characters that would act on a terminal or a spreadsheet instead of being shown.
    fn assert_inert(out: &str) {
        for c in out.chars() {
            assert!(
                c == '\n' || !(c.is_control() || crate::core::is_bidi_control(c)),
                "{c:?} in {out:?}"
            );
        }
    }

    #[test]
    fn table_and_csv_show_control_and_bidi_characters_as_escapes() {
        let records = [record(
            "\u{1b}[31mred\u{1b}[0m\r\nline two \u{202e}txt.exe\u{2066}",
            "details \u{1b}]8;;http://x\u{7} link\nsecond line",
        )];
        let table = render(&records, OutputFormat::Table);
        assert_inert(&table);
        assert!(table.contains("\\u{1b}[31mred"), "{table}");
        assert!(table.contains("\\u{202e}txt.exe"), "{table}");
        assert_eq!(table.lines().count(), 3, "one line per record: {table}");

        let csv = render(&records, OutputFormat::Csv);
        assert_inert(&csv);
        assert!(
            csv.contains("\\u{1b}]8;;http://x\\u{7} link\nsecond line"),
            "{csv}"
        );
        assert!(csv.contains("evil\\u{202e}gnp.exe"), "{csv}");
    }

    #[test]
    fn csv_names_the_polytomic_user_in_its_last_column() {
        let mut with_user = record("s", "d");
        with_user.user_id = Some("u-7".into());
        let csv = render(&[with_user, record("s", "d")], OutputFormat::Csv);
        let lines: Vec<&str> = csv.lines().collect();
        assert!(lines[0].ends_with(",created_at_ms,user_id"), "{csv}");
        assert!(lines[1].ends_with(",\"86400000\",\"u-7\""), "{csv}");
        assert!(lines[2].ends_with(",\"86400000\",\"\""), "{csv}");
    }

    #[test]
    fn csv_defuses_every_formula_lead_including_tab_and_carriage_return() {
        let csv = render(&[record("=HYPERLINK(\"x\")", "-2+3")], OutputFormat::Csv);
        let row = csv.lines().nth(1).unwrap();
        for cell in [
            "\"'=HYPERLINK(\"\"x\"\")\"",
            "\"'-2+3\"",
            "\"'\\t=1+2\"",
            "\"'\\r@SUM(A1)\"",
            "\"'+1\"",
        ] {
            assert!(row.contains(cell), "{cell} not in {row}");
        }
    }

    #[test]
    fn json_output_keeps_the_text_exactly() {
        let original = record("\u{1b}[31m\u{202e}", "=1");
        let json = render(std::slice::from_ref(&original), OutputFormat::Json);
        let parsed: Vec<serde_json::Value> = serde_json::from_str(&json).unwrap();
        assert_eq!(parsed[0]["summary"], original.summary);
        assert_eq!(parsed[0]["details"], "=1");
    }

    #[test]
    fn csv_quotes_and_defuses_formulas() {
        assert_eq!(csv_cell("plain"), "\"plain\"");
        assert_eq!(csv_cell("a,b"), "\"a,b\"");
        assert_eq!(csv_cell("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_cell("=cmd()"), "\"'=cmd()\"");
        assert_eq!(csv_cell("  =cmd()"), "\"'  =cmd()\"");
    }
}
