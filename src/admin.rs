//! Operator commands that read or change the store directly (`polytomic-mcp sessions …`): who connected
//! which client with what access, and cutting a sign-in off (and, with `POLYTOMIC_OAUTH_REVOKE_URL` set, its
//! grant at Polytomic too). Output is for people (a table) or for scripts (JSON); values that came from
//! clients are stripped of control characters before they reach a terminal.

use std::fmt::Write as _;

use serde_json::json;

use crate::config::{Config, OutputFormat, SessionsCommand};
use crate::core::{AccessMode, now_ms};
use crate::oauth::revocation::revoke_upstream;
use crate::oauth::{Keys, Provider, scope};
use crate::store::oauth::{SessionFilter, SessionRow};
use crate::store::{Store, StoreError};
use crate::upstream::Upstream;

/// What a `sessions` command printed, and whether it found anything to act on.
#[derive(Debug)]
pub struct Report {
    pub text: String,
    pub matched: u64,
}

/// Runs `polytomic-mcp sessions list|revoke`. `config` names the upstream provider for revoking grants there.
pub async fn sessions(
    config: &Config,
    store: &Store,
    command: SessionsCommand,
) -> Result<Report, StoreError> {
    let now = now_ms();
    match command {
        SessionsCommand::List {
            user,
            client,
            access,
            all,
            format,
        } => {
            let filter = SessionFilter {
                session_id: None,
                user_id: user,
                client_id: client,
                include_inactive: all,
            };
            let sessions: Vec<SessionRow> = store
                .list_sessions(&filter, now)
                .await?
                .into_iter()
                .filter(|s| access.is_none_or(|a| scope::access_of(s.scope.as_deref()) == a))
                .collect();
            let mut rows = Vec::with_capacity(sessions.len());
            for session in &sessions {
                rows.push(SessionLine::new(store, session, now).await?);
            }
            Ok(Report {
                matched: rows.len() as u64,
                text: render(&rows, format),
            })
        }
        SessionsCommand::Revoke {
            session,
            user,
            client,
        } => {
            let filter = SessionFilter {
                session_id: session,
                user_id: user,
                client_id: client,
                include_inactive: false,
            };
            revoke(config, store, &filter, now).await
        }
    }
}

/// Revokes each active session the filter names, here first and then its grant at the provider when
/// `POLYTOMIC_OAUTH_REVOKE_URL` is set (a provider failure is reported, never undoes the revocation here).
async fn revoke(
    config: &Config,
    store: &Store,
    filter: &SessionFilter,
    now: i64,
) -> Result<Report, StoreError> {
    if filter.session_id.is_none() && filter.user_id.is_none() && filter.client_id.is_none() {
        return Ok(Report {
            matched: 0,
            text: "0 sign-in(s) revoked\n".into(),
        });
    }
    let revoker = match &config.oauth.oauth_revoke_url {
        Some(_) => Some(UpstreamRevoker::new(config, store).await),
        None => None,
    };
    let mut revoked = 0u64;
    let (mut upstream_ok, mut upstream_failed) = (0u64, Vec::new());
    for session in store.list_sessions(filter, now).await? {
        let Some(cleared) = store
            .revoke_session_taking_upstream(&session.id, now)
            .await?
        else {
            continue;
        };
        revoked += 1;
        match &revoker {
            Some(Ok(r)) => match revoke_upstream(&r.keys, &r.provider, &session.id, &cleared).await
            {
                Ok(()) => upstream_ok += 1,
                Err(error) => upstream_failed.push(format!("{}: {error}", session.id)),
            },
            Some(Err(why)) => upstream_failed.push(format!("{}: {why}", session.id)),
            None => {}
        }
    }
    let mut text = format!("{revoked} sign-in(s) revoked\n");
    if revoker.is_some() {
        let _ = writeln!(text, "{upstream_ok} of {revoked} revoked at Polytomic too");
        for failure in &upstream_failed {
            let _ = writeln!(text, "  not revoked at Polytomic: {}", plain(failure));
        }
    }
    Ok(Report {
        matched: revoked,
        text,
    })
}

/// What revoking a grant at the provider needs: the key that decrypts the stored upstream tokens and the
/// provider client. Built from the same settings as the server's.
struct UpstreamRevoker {
    keys: Keys,
    provider: Provider,
}

impl UpstreamRevoker {
    async fn new(config: &Config, store: &Store) -> Result<Self, String> {
        let keys = Keys::load(
            config.oauth.signing_key.as_ref(),
            config.oauth.oauth_client_secret.as_ref(),
            store,
        )
        .await
        .map_err(|e| e.to_string())?;
        let http = Upstream::new(&config.upstream, 4).map_err(|e| e.to_string())?;
        let issuer = config
            .http
            .public_url(config.http.http_port)
            .map_err(|e| format!("POLYTOMIC_MCP_PUBLIC_URL: {e}"))?;
        let provider = Provider::from_config(
            config,
            issuer.as_str().trim_end_matches('/'),
            &[],
            http.http().clone(),
        )
        .map_err(|e| e.to_string())?;
        Ok(Self { keys, provider })
    }
}

/// One session as an operator reads it.
#[derive(Debug)]
struct SessionLine {
    id: String,
    user_id: String,
    organization_id: Option<String>,
    client_id: String,
    client_name: Option<String>,
    access: AccessMode,
    created_at_ms: i64,
    expires_at_ms: i64,
    status: &'static str,
}

impl SessionLine {
    async fn new(store: &Store, session: &SessionRow, now: i64) -> Result<Self, StoreError> {
        let client_name = store
            .get_client(&session.client_id)
            .await?
            .and_then(|c| serde_json::from_str::<serde_json::Value>(&c.metadata).ok())
            .and_then(|m| m.get("client_name").and_then(|n| n.as_str()).map(plain));
        let status = if session.revoked_at_ms.is_some() {
            "revoked"
        } else if session.expires_at_ms <= now {
            "expired"
        } else {
            "active"
        };
        Ok(Self {
            id: session.id.clone(),
            user_id: plain(&session.user_id),
            organization_id: session.organization_id.as_deref().map(plain),
            client_id: plain(&session.client_id),
            client_name,
            access: scope::access_of(session.scope.as_deref()),
            created_at_ms: session.created_at_ms,
            expires_at_ms: session.expires_at_ms,
            status,
        })
    }
}

/// Text safe to print on a terminal: control and bidirectional-override characters removed, length capped.
fn plain(text: &str) -> String {
    text.chars()
        .filter(|c| !c.is_control() && !matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'))
        .take(80)
        .collect()
}

fn time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M").to_string())
        .unwrap_or_default()
}

fn render(rows: &[SessionLine], format: OutputFormat) -> String {
    match format {
        OutputFormat::Json | OutputFormat::Csv => {
            let values: Vec<serde_json::Value> = rows
                .iter()
                .map(|r| {
                    json!({
                        "session_id": r.id,
                        "user_id": r.user_id,
                        "organization_id": r.organization_id,
                        "client_id": r.client_id,
                        "client_name": r.client_name,
                        "access": r.access.as_str(),
                        "scope": scope::granting(r.access),
                        "created_at": crate::feedback::rfc3339(r.created_at_ms),
                        "expires_at": crate::feedback::rfc3339(r.expires_at_ms),
                        "status": r.status,
                    })
                })
                .collect();
            serde_json::to_string_pretty(&values).unwrap_or_default() + "\n"
        }
        OutputFormat::Table => {
            let mut out = format!(
                "{:<32}  {:<11}  {:<7}  {:<16}  {:<24}  {:<24}  {}\n",
                "SESSION", "ACCESS", "STATUS", "CREATED (UTC)", "USER", "ORGANIZATION", "CLIENT"
            );
            for r in rows {
                let client = match &r.client_name {
                    Some(name) => format!("{name} ({})", r.client_id),
                    None => r.client_id.clone(),
                };
                let _ = writeln!(
                    out,
                    "{:<32}  {:<11}  {:<7}  {:<16}  {:<24}  {:<24}  {}",
                    r.id,
                    r.access.as_str(),
                    r.status,
                    time(r.created_at_ms),
                    r.user_id,
                    r.organization_id.as_deref().unwrap_or("-"),
                    client
                );
            }
            let _ = writeln!(out, "{} sign-in(s)", rows.len());
            out
        }
    }
}
