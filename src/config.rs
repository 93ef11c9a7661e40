//! Runtime configuration: every setting is an environment variable and a `--flag`.
//!
//! Validation happens here, once, so that a bad value stops start-up with a one-line message that names the
//! variable instead of surfacing later as a confusing runtime error.

use std::net::IpAddr;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use url::Url;

use crate::core::AccessMode;
use crate::secret::Secret;

#[derive(Debug, Parser)]
#[command(
    name = "polytomic-mcp",
    version,
    about = "MCP server for the Polytomic API"
)]
pub struct Cli {
    #[command(flatten)]
    pub config: Config,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve MCP over HTTP (the default when no command is given).
    Serve,
    /// Read the feedback agents submitted (from the configured store).
    Feedback {
        #[command(subcommand)]
        action: FeedbackCommand,
    },
    /// List or revoke OAuth sign-ins (from the configured store).
    Sessions {
        #[command(subcommand)]
        action: SessionsCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum SessionsCommand {
    /// List sign-ins, newest first: who connected which client, with what access.
    List {
        /// Only this person (their Polytomic user id).
        #[arg(long)]
        user: Option<String>,
        /// Only this client (its client_id).
        #[arg(long)]
        client: Option<String>,
        /// Only sessions with this access.
        #[arg(long, value_enum)]
        access: Option<AccessMode>,
        /// Also list revoked and expired sign-ins.
        #[arg(long)]
        all: bool,
        #[arg(long, value_enum, default_value = "table")]
        format: OutputFormat,
    },
    /// Revoke sign-ins: the client's tokens stop working at once and it must sign the person in again.
    #[command(group(clap::ArgGroup::new("which").required(true).multiple(true).args(["session", "user", "client"])))]
    Revoke {
        /// One sign-in, by its session id (from `sessions list`).
        session: Option<String>,
        /// Every sign-in of this person (their Polytomic user id).
        #[arg(long)]
        user: Option<String>,
        /// Every sign-in of this client (its client_id).
        #[arg(long)]
        client: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum FeedbackCommand {
    /// List feedback, newest first.
    List {
        /// Only records since then: a span (24h, 7d), a date (2026-11-01) or an RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        /// Only this category (bug, missing_capability, friction, docs, other).
        #[arg(long)]
        category: Option<String>,
        #[arg(long, value_enum, default_value = "table")]
        format: OutputFormat,
        /// Most records to print.
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(i64).range(1..=1_000_000))]
        limit: i64,
    },
    /// Print one record in full, as JSON.
    Show { id: String },
    /// List records whose webhook delivery kept failing.
    DeadLetters,
}

#[derive(Debug, Clone, Parser)]
// A flag given twice keeps the last value, as operators layering flags on a base command expect.
#[command(args_override_self = true)]
pub struct Config {
    #[command(flatten)]
    pub http: HttpSettings,
    #[command(flatten)]
    pub limits: LimitSettings,
    #[command(flatten)]
    pub upstream: UpstreamSettings,
    #[command(flatten)]
    pub store: StoreSettings,
    #[command(flatten)]
    pub oauth: OAuthSettings,
    #[command(flatten)]
    pub feedback: FeedbackSettings,
    #[command(flatten)]
    pub log: LogSettings,
}

/// Where the server listens and which origin clients use.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "HTTP")]
pub struct HttpSettings {
    /// Address to bind.
    #[arg(long, env = "POLYTOMIC_HTTP_HOST", default_value = "127.0.0.1")]
    pub http_host: IpAddr,

    /// Port to bind; 0 picks any free port (the bound address is logged).
    #[arg(long, env = "POLYTOMIC_HTTP_PORT", default_value_t = 3000)]
    pub http_port: u16,

    /// External origin of this server; the MCP resource is `{PUBLIC_URL}/mcp`.
    #[arg(long, env = "POLYTOMIC_MCP_PUBLIC_URL", value_parser = parse_public_url)]
    pub public_url: Option<Url>,

    /// Extra browser origins allowed to call `/mcp` (comma-separated, e.g. `http://localhost:6274`).
    #[arg(long, env = "POLYTOMIC_MCP_ALLOWED_ORIGINS", value_delimiter = ',', value_parser = parse_origin)]
    pub allowed_origins: Vec<Url>,

    /// Take the client address from the rightmost `X-Forwarded-For` address (only behind a proxy that appends it).
    #[arg(long, env = "POLYTOMIC_MCP_TRUST_FORWARDED_FOR", default_value_t = false, action = clap::ArgAction::Set)]
    pub trust_forwarded_for: bool,

    /// On SIGTERM, how long in-flight requests may take to finish before the process exits anyway.
    #[arg(long, env = "POLYTOMIC_MCP_SHUTDOWN_GRACE_SECS", default_value_t = 20, value_parser = clap::value_parser!(u64).range(0..=600))]
    pub shutdown_grace_secs: u64,
}

/// What one session, request, credential and address may do.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Limits")]
pub struct LimitSettings {
    /// `read-only` caps every session; no header can lift it.
    #[arg(
        long,
        env = "POLYTOMIC_MCP_MAX_ACCESS_MODE",
        default_value = "full-access"
    )]
    pub max_access_mode: AccessMode,

    /// Largest accepted request body on `/mcp`, in bytes.
    #[arg(long, env = "POLYTOMIC_MCP_MAX_REQUEST_BYTES", default_value_t = 1_048_576, value_parser = clap::value_parser!(u64).range(1024..=67_108_864))]
    pub max_request_bytes: u64,

    /// `/mcp` requests served at once; more wait up to the queue time for a slot, then get 503.
    #[arg(long, env = "POLYTOMIC_MCP_MAX_CONCURRENT_REQUESTS", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_concurrent_requests: u32,

    /// `/mcp` requests one client address may have in flight; more wait up to the queue time, then get 429.
    /// Taken before the server-wide slot, so one address cannot hold every slot.
    #[arg(long, env = "POLYTOMIC_MCP_MAX_CONCURRENT_REQUESTS_PER_IP", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_concurrent_requests_per_ip: u32,

    /// How long a request over the in-flight limit waits for a slot before 503 (0: refuse at once).
    #[arg(long, env = "POLYTOMIC_MCP_QUEUE_WAIT_MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(0..=60_000))]
    pub queue_wait_ms: u64,

    /// How long a request body may take to arrive once its headers have; past it, 408 (frees the slot a slow
    /// sender holds).
    #[arg(long, env = "POLYTOMIC_MCP_BODY_READ_TIMEOUT_MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=300_000))]
    pub body_read_timeout_ms: u64,

    /// How long a connection may take to send a complete request head, counted from accepting it or from the
    /// first byte after an idle spell; past it, the connection is closed.
    #[arg(long, env = "POLYTOMIC_MCP_HEADER_READ_TIMEOUT_MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=300_000))]
    pub header_read_timeout_ms: u64,

    /// How long a keep-alive connection may sit idle between requests before it is closed.
    #[arg(long, env = "POLYTOMIC_MCP_KEEP_ALIVE_TIMEOUT_MS", default_value_t = 75_000, value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub keep_alive_timeout_ms: u64,

    /// Connections open at once; one more is answered 503 and closed. Keep it below the open-file limit.
    #[arg(long, env = "POLYTOMIC_MCP_MAX_CONNECTIONS", default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_connections: u32,

    /// Requests per minute one credential may make (shared by replicas on PostgreSQL). Over it, tool calls
    /// answer with an error telling the agent to slow down; over twice it, requests get 429.
    #[arg(long, env = "POLYTOMIC_MCP_RATE_LIMIT_PER_MINUTE", default_value_t = 600, value_parser = clap::value_parser!(u32).range(1..))]
    pub rate_limit_per_minute: u32,

    /// Requests per minute one client address may make to `/mcp` (counted per replica); over it, 429.
    #[arg(long, env = "POLYTOMIC_MCP_IP_RATE_LIMIT_PER_MINUTE", default_value_t = 3000, value_parser = clap::value_parser!(u32).range(1..))]
    pub ip_rate_limit_per_minute: u32,
}

/// The Polytomic API that `execute` calls, the description it is checked against, and how results are shaped.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Upstream (Polytomic API)")]
pub struct UpstreamSettings {
    /// The Polytomic API that `execute` calls.
    #[arg(long, env = "POLYTOMIC_BASE_URL", default_value = "https://app.polytomic.com", value_parser = parse_base_url)]
    pub base_url: Url,

    /// Sent upstream as `X-Polytomic-Version`.
    #[arg(long, env = "POLYTOMIC_API_VERSION", default_value = "2025-09-18", value_parser = parse_api_version)]
    pub api_version: String,

    /// Path or http(s) URL of an OpenAPI 3.x document to index instead of the embedded one.
    #[arg(long, env = "POLYTOMIC_MCP_OPENAPI")]
    pub openapi: Option<String>,

    /// How often a URL given in `POLYTOMIC_MCP_OPENAPI` is fetched again, in seconds.
    #[arg(long, env = "POLYTOMIC_MCP_OPENAPI_REFRESH_SECS", default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..))]
    pub openapi_refresh_secs: u64,

    /// Timeout for connecting to the Polytomic API, in milliseconds.
    #[arg(long, env = "POLYTOMIC_MCP_UPSTREAM_CONNECT_TIMEOUT_MS", default_value_t = 5_000, value_parser = clap::value_parser!(u64).range(100..=60_000))]
    pub upstream_connect_timeout_ms: u64,

    /// Total timeout for one Polytomic API call (all retries included), in milliseconds.
    #[arg(long, env = "POLYTOMIC_MCP_UPSTREAM_TIMEOUT_MS", default_value_t = 25_000, value_parser = clap::value_parser!(u64).range(100..=600_000))]
    pub upstream_timeout_ms: u64,

    /// Largest upstream response body read, in bytes; larger answers are refused with advice to narrow the call.
    #[arg(long, env = "POLYTOMIC_MCP_MAX_UPSTREAM_RESPONSE_BYTES", default_value_t = 16_777_216, value_parser = clap::value_parser!(u64).range(1024..=268_435_456))]
    pub max_upstream_response_bytes: u64,

    /// Largest `execute` result handed to the agent, in characters of JSON (Claude Code caps tool results at ~25k tokens).
    #[arg(long, env = "POLYTOMIC_MCP_RESULT_MAX_CHARS", default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(1_000..=1_000_000))]
    pub result_max_chars: u64,
}

/// Where durable state lives.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Store")]
pub struct StoreSettings {
    /// `sqlite://…` (one node) or `postgres://…` (several replicas).
    #[arg(long, env = "POLYTOMIC_MCP_DATABASE_URL", default_value = "sqlite://polytomic-mcp.db", value_parser = parse_database_url)]
    pub database_url: String,

    /// How long start-up keeps retrying a database that does not answer yet.
    #[arg(long, env = "POLYTOMIC_MCP_DATABASE_WAIT_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub database_wait_secs: u64,
}

/// Sign-in through Polytomic's OAuth provider, and the tokens this server issues.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "OAuth")]
pub struct OAuthSettings {
    /// Upstream OAuth authorize endpoint (OAuth is on when authorize URL, token URL and client id are set).
    #[arg(long, env = "POLYTOMIC_OAUTH_AUTHORIZE_URL", value_parser = parse_base_url)]
    pub oauth_authorize_url: Option<Url>,
    #[arg(long, env = "POLYTOMIC_OAUTH_TOKEN_URL", value_parser = parse_base_url)]
    pub oauth_token_url: Option<Url>,
    #[arg(long, env = "POLYTOMIC_OAUTH_CLIENT_ID")]
    pub oauth_client_id: Option<String>,
    #[arg(long, env = "POLYTOMIC_OAUTH_CLIENT_SECRET", hide_env_values = true)]
    pub oauth_client_secret: Option<Secret>,
    #[arg(long, env = "POLYTOMIC_OAUTH_SCOPES")]
    pub oauth_scopes: Option<String>,
    /// Upstream RFC 7009 revocation endpoint: when set, ending a sign-in here also revokes its Polytomic grant.
    #[arg(long, env = "POLYTOMIC_OAUTH_REVOKE_URL", value_parser = parse_base_url)]
    pub oauth_revoke_url: Option<Url>,

    /// Key for the tokens this server issues; generated once and kept in the store when unset.
    #[arg(long, env = "POLYTOMIC_MCP_SIGNING_KEY", hide_env_values = true)]
    pub signing_key: Option<Secret>,

    /// Lifetime of the OAuth access tokens this server issues, in seconds (refresh tokens last 30 days).
    #[arg(long, env = "POLYTOMIC_MCP_OAUTH_ACCESS_TOKEN_TTL_SECS", default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub oauth_access_token_ttl_secs: u64,

    /// How long after a refresh the same refresh token, sent again by the same client before it used the new
    /// pair, gets that pair again instead of ending the sign-in (a client retrying a lost answer), in seconds;
    /// 0 treats every second use as theft.
    #[arg(long, env = "POLYTOMIC_MCP_OAUTH_REFRESH_RETRY_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(0..=300))]
    pub oauth_refresh_retry_secs: u64,

    /// Dynamic client registrations accepted per client address per minute (an IPv6 /64 counts as one address),
    /// in each replica.
    #[arg(long, env = "POLYTOMIC_MCP_OAUTH_REGISTRATIONS_PER_MINUTE", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub oauth_registrations_per_minute: u32,

    /// Registered clients kept that have not been used for a sign-in yet; at the cap the oldest of them make room.
    #[arg(long, env = "POLYTOMIC_MCP_OAUTH_MAX_UNUSED_CLIENTS", default_value_t = 5_000, value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    pub oauth_max_unused_clients: u32,
}

/// Where agents' feedback goes and how much one credential may send.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Feedback")]
pub struct FeedbackSettings {
    /// Each feedback record is POSTed here as JSON (retried, then dead-lettered); may carry a token, so hidden.
    #[arg(
        long,
        env = "POLYTOMIC_MCP_FEEDBACK_WEBHOOK_URL",
        hide_env_values = true
    )]
    pub feedback_webhook_url: Option<Secret>,

    /// Shared secret that signs each webhook delivery (`X-Polytomic-MCP-Signature: sha256=…` over
    /// `"{X-Polytomic-MCP-Timestamp}.{body}"`).
    #[arg(
        long,
        env = "POLYTOMIC_MCP_FEEDBACK_WEBHOOK_SECRET",
        hide_env_values = true
    )]
    pub feedback_webhook_secret: Option<Secret>,

    /// Delivery attempts before a record moves to the dead letters.
    #[arg(long, env = "POLYTOMIC_MCP_FEEDBACK_WEBHOOK_MAX_ATTEMPTS", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub feedback_webhook_max_attempts: u32,

    /// First retry delay in milliseconds; doubles on each failure (capped at an hour).
    #[arg(long, env = "POLYTOMIC_MCP_FEEDBACK_WEBHOOK_RETRY_MS", default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(10..=3_600_000))]
    pub feedback_webhook_retry_ms: u64,

    /// Feedback records one principal may store per hour (shared by every replica through the store).
    #[arg(long, env = "POLYTOMIC_MCP_FEEDBACK_PER_HOUR", default_value_t = 60, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub feedback_per_hour: u32,
}

/// How log lines are written.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Logging")]
pub struct LogSettings {
    /// `text` (default, for people) or `json` (for log pipelines).
    #[arg(long, env = "POLYTOMIC_MCP_LOG_FORMAT", default_value = "text")]
    pub log_format: LogFormat,
}

/// How `feedback list` prints records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
    Csv,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

impl Config {
    /// Rules that involve more than one setting, section by section; the message names the variables.
    pub fn validate(&self) -> Result<(), String> {
        self.oauth.validate()?;
        self.feedback.validate()?;
        Ok(())
    }
}

impl HttpSettings {
    /// The external origin, defaulting to the bound address.
    pub fn public_url(&self, bound_port: u16) -> Result<Url, url::ParseError> {
        if let Some(url) = &self.public_url {
            return Ok(url.clone());
        }
        let host = match self.http_host {
            IpAddr::V6(v6) => format!("[{v6}]"),
            IpAddr::V4(v4) if v4.is_unspecified() => "127.0.0.1".to_owned(),
            IpAddr::V4(v4) => v4.to_string(),
        };
        Url::parse(&format!("http://{host}:{bound_port}"))
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }
}

impl LimitSettings {
    pub fn body_read_timeout(&self) -> Duration {
        Duration::from_millis(self.body_read_timeout_ms)
    }

    pub fn queue_wait(&self) -> Duration {
        Duration::from_millis(self.queue_wait_ms)
    }

    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_millis(self.header_read_timeout_ms)
    }

    pub fn keep_alive_timeout(&self) -> Duration {
        Duration::from_millis(self.keep_alive_timeout_ms)
    }

    /// The request body cap as a length (the setting's range keeps it far below `usize::MAX`).
    pub fn max_request_bytes(&self) -> usize {
        usize::try_from(self.max_request_bytes).unwrap_or(1 << 20)
    }
}

impl UpstreamSettings {
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.upstream_connect_timeout_ms)
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.upstream_timeout_ms)
    }

    pub fn refresh_every(&self) -> Duration {
        Duration::from_secs(self.openapi_refresh_secs)
    }

    pub fn result_max_chars(&self) -> usize {
        usize::try_from(self.result_max_chars).unwrap_or(30_000)
    }
}

impl StoreSettings {
    pub fn wait(&self) -> Duration {
        Duration::from_secs(self.database_wait_secs)
    }
}

/// Shortest accepted `POLYTOMIC_MCP_SIGNING_KEY`: keys are derived from it, so it must carry real entropy.
pub const MIN_SIGNING_KEY_LEN: usize = 32;

impl OAuthSettings {
    /// The refresh retry window in milliseconds (0: off).
    pub fn refresh_retry_ms(&self) -> i64 {
        i64::try_from(self.oauth_refresh_retry_secs.saturating_mul(1000)).unwrap_or(0)
    }

    /// OAuth sign-in is on when the provider's authorize URL, token URL and client id are all set.
    pub fn enabled(&self) -> bool {
        self.oauth_authorize_url.is_some()
            && self.oauth_token_url.is_some()
            && self.oauth_client_id.is_some()
    }

    fn validate(&self) -> Result<(), String> {
        let parts = [
            self.oauth_authorize_url.is_some(),
            self.oauth_token_url.is_some(),
            self.oauth_client_id.is_some(),
        ];
        if parts.iter().any(|set| *set) && !parts.iter().all(|set| *set) {
            return Err("POLYTOMIC_OAUTH_AUTHORIZE_URL, POLYTOMIC_OAUTH_TOKEN_URL and POLYTOMIC_OAUTH_CLIENT_ID must be set together (OAuth is on only when all three are set)".into());
        }
        if self.oauth_revoke_url.is_some() && !self.enabled() {
            return Err("POLYTOMIC_OAUTH_REVOKE_URL is set but OAuth is off: set POLYTOMIC_OAUTH_AUTHORIZE_URL, POLYTOMIC_OAUTH_TOKEN_URL and POLYTOMIC_OAUTH_CLIENT_ID too, or unset it".into());
        }
        if let Some(key) = &self.signing_key
            && key.expose().len() < MIN_SIGNING_KEY_LEN
        {
            return Err(format!(
                "POLYTOMIC_MCP_SIGNING_KEY must be at least {MIN_SIGNING_KEY_LEN} characters (e.g. `openssl rand -base64 48`)"
            ));
        }
        Ok(())
    }
}

impl FeedbackSettings {
    /// The webhook address, when one is set (checked by [`Config::validate`] to be an http(s) URL).
    pub fn webhook_url(&self) -> Option<Url> {
        let url = Url::parse(self.feedback_webhook_url.as_ref()?.expose()).ok()?;
        matches!(url.scheme(), "http" | "https").then_some(url)
    }

    pub fn retry_base(&self) -> Duration {
        Duration::from_millis(self.feedback_webhook_retry_ms)
    }

    fn validate(&self) -> Result<(), String> {
        if self.feedback_webhook_url.is_some() && self.webhook_url().is_none() {
            return Err("POLYTOMIC_MCP_FEEDBACK_WEBHOOK_URL: expected an http(s) URL".into());
        }
        Ok(())
    }
}

fn parse_base_url(value: &str) -> Result<Url, String> {
    let url = Url::parse(value).map_err(|e| {
        format!("not an absolute URL ({e}); expected e.g. https://app.polytomic.com")
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("scheme must be http or https".into());
    }
    if url.query().is_some()
        || url.fragment().is_some()
        || !url.username().is_empty()
        || url.password().is_some()
    {
        return Err("must be a plain origin (no query, fragment or credentials), e.g. https://app.polytomic.com".into());
    }
    Ok(url)
}

fn parse_public_url(value: &str) -> Result<Url, String> {
    let url = parse_base_url(value)?;
    if url.path() != "/" {
        return Err("must be an origin without a path (the MCP endpoint is always {PUBLIC_URL}/mcp), e.g. https://mcp.example.com".into());
    }
    Ok(url)
}

fn parse_origin(value: &str) -> Result<Url, String> {
    let url = parse_base_url(value.trim())?;
    if url.path() != "/" {
        return Err("an origin has no path, e.g. http://localhost:6274".into());
    }
    Ok(url)
}

fn parse_api_version(value: &str) -> Result<String, String> {
    let ok = value.len() == 10
        && value.bytes().enumerate().all(|(i, b)| {
            if i == 4 || i == 7 {
                b == b'-'
            } else {
                b.is_ascii_digit()
            }
        });
    if ok {
        Ok(value.to_owned())
    } else {
        Err("expected a date-shaped version such as 2025-09-18".into())
    }
}

fn parse_database_url(value: &str) -> Result<String, String> {
    if value.starts_with("sqlite:")
        || value.starts_with("postgres://")
        || value.starts_with("postgresql://")
    {
        Ok(value.to_owned())
    } else {
        Err("expected sqlite://FILE (one node) or postgres://… (several replicas)".into())
    }
}
