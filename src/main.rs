//! The `polytomic-mcp` binary: parse configuration, start logging, bind, serve until SIGTERM or Ctrl-C.

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{CommandFactory, Parser};
use polytomic_mcp::config::{Cli, Command, FeedbackCommand, SessionsCommand};
use polytomic_mcp::telemetry::init_tracing;
use polytomic_mcp::telemetry::otel::Traces;
use tokio_util::sync::CancellationToken;

/// mimalloc instead of glibc malloc: per-thread heaps avoid glibc's arena-lock contention under load
/// (measured in docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => return configuration_error(error),
    };
    let command = cli.command.unwrap_or(Command::Serve);
    // Traces only for the server: the operator commands are one-shot and have nothing to join.
    let traces = match command {
        Command::Serve => {
            // The exporter's HTTP client may speak TLS to the collector.
            polytomic_mcp::install_crypto_provider();
            match Traces::from_env() {
                Ok(traces) => traces,
                Err(message) => {
                    eprintln!("polytomic-mcp: {message}");
                    return ExitCode::from(2);
                }
            }
        }
        _ => None,
    };
    init_tracing(cli.config.log.log_format, traces.as_ref());
    let code = match command {
        Command::Serve => match serve(cli.config).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("polytomic-mcp: {error:#}");
                ExitCode::FAILURE
            }
        },
        Command::Feedback { action } => match feedback(&cli.config, action).await {
            Ok(code) => code,
            Err(error) => {
                eprintln!("polytomic-mcp: {error:#}");
                ExitCode::FAILURE
            }
        },
        Command::Sessions { action } => match sessions(&cli.config, action).await {
            Ok(code) => code,
            Err(error) => {
                eprintln!("polytomic-mcp: {error:#}");
                ExitCode::FAILURE
            }
        },
    };
    if let Some(traces) = traces {
        traces.shutdown().await;
    }
    polytomic_mcp::telemetry::flush_logs();
    code
}

/// `polytomic-mcp feedback …`: operators read what agents reported, straight from the store.
async fn feedback(
    config: &polytomic_mcp::config::Config,
    action: FeedbackCommand,
) -> anyhow::Result<ExitCode> {
    use polytomic_mcp::feedback::{parse_since, render, render_one};
    use std::io::Write as _;
    let store = polytomic_mcp::store::Store::connect(&config.store.database_url).await?;
    let mut out = std::io::stdout().lock();
    match action {
        FeedbackCommand::List {
            since,
            category,
            format,
            limit,
        } => {
            let now = chrono::Utc::now().timestamp_millis();
            let since = since
                .as_deref()
                .map(|s| parse_since(s, now))
                .transpose()
                .map_err(anyhow::Error::msg)?;
            if let Some(category) = &category {
                let known = polytomic_mcp::feedback::CATEGORIES;
                if !known.contains(&category.as_str()) {
                    anyhow::bail!(
                        "--category {category:?} is not one of: {}",
                        known.join(", ")
                    );
                }
            }
            let records = store
                .list_feedback(since, category.as_deref(), limit)
                .await?;
            out.write_all(render(&records, format).as_bytes())?;
        }
        FeedbackCommand::Show { id } => match store.get_feedback(&id).await? {
            Some(record) => out.write_all(render_one(&record).as_bytes())?,
            None => {
                eprintln!(
                    "polytomic-mcp: no feedback record {id:?}; `polytomic-mcp feedback list` shows the ids"
                );
                return Ok(ExitCode::from(1));
            }
        },
        FeedbackCommand::DeadLetters => {
            let dead = store.dead_letters().await?;
            out.write_all((serde_json::to_string_pretty(&dead)? + "\n").as_bytes())?;
        }
    }
    store.close().await;
    Ok(ExitCode::SUCCESS)
}

/// `polytomic-mcp sessions …`: operators see who connected what, with which access, and cut sign-ins off.
async fn sessions(
    config: &polytomic_mcp::config::Config,
    action: SessionsCommand,
) -> anyhow::Result<ExitCode> {
    use std::io::Write as _;
    let revoking = matches!(action, SessionsCommand::Revoke { .. });
    // Revoking may call the upstream provider over TLS.
    polytomic_mcp::install_crypto_provider();
    let store = polytomic_mcp::store::Store::connect(&config.store.database_url).await?;
    let report = polytomic_mcp::admin::sessions(config, &store, action).await?;
    store.close().await;
    std::io::stdout().lock().write_all(report.text.as_bytes())?;
    if revoking && report.matched == 0 {
        eprintln!(
            "polytomic-mcp: no active sign-in matched; `polytomic-mcp sessions list` shows them"
        );
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints a bad setting on one line naming the environment variable (most operators set variables, not
/// flags), then exits; help and version requests print as usual.
fn configuration_error(error: clap::Error) -> ExitCode {
    if !matches!(
        error.kind(),
        ErrorKind::InvalidValue | ErrorKind::ValueValidation
    ) {
        let _ = error.print();
        return if error.use_stderr() {
            ExitCode::from(2)
        } else {
            ExitCode::SUCCESS
        };
    }
    let flag = match error.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(arg)) => {
            arg.split_whitespace().next().unwrap_or_default().to_owned()
        }
        _ => String::new(),
    };
    let value = match error.get(ContextKind::InvalidValue) {
        Some(ContextValue::String(value)) => value.clone(),
        _ => String::new(),
    };
    let command = Cli::command();
    let env = command
        .get_arguments()
        .find(|arg| {
            arg.get_long()
                .is_some_and(|long| format!("--{long}") == flag)
        })
        .and_then(|arg| arg.get_env())
        .map(|env| env.to_string_lossy().into_owned());
    let message = error.to_string();
    let first_line = message.lines().next().unwrap_or_default();
    let reason = match error.get(ContextKind::ValidValue) {
        Some(ContextValue::Strings(allowed)) => format!("allowed values: {}", allowed.join(", ")),
        _ => first_line
            .rsplit(": ")
            .next()
            .unwrap_or(first_line)
            .to_owned(),
    };
    match env {
        Some(env) => {
            eprintln!("polytomic-mcp: {env} (or {flag}) has an invalid value {value:?}: {reason}")
        }
        None => eprintln!("polytomic-mcp: {flag} has an invalid value {value:?}: {reason}"),
    }
    ExitCode::from(2)
}

async fn serve(config: polytomic_mcp::config::Config) -> anyhow::Result<()> {
    let address = SocketAddr::new(config.http.http_host, config.http.http_port);
    let listener = tokio::net::TcpListener::bind(address).await.map_err(|e| {
        anyhow::anyhow!("cannot bind {address} (POLYTOMIC_HTTP_HOST/POLYTOMIC_HTTP_PORT): {e}")
    })?;
    let shutdown = CancellationToken::new();
    tokio::spawn(wait_for_signal(shutdown.clone()));
    polytomic_mcp::run(config, listener, shutdown).await?;
    Ok(())
}

async fn wait_for_signal(shutdown: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(
            tokio::signal::unix::SignalKind::terminate(),
        ) {
            Ok(term) => term,
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; only Ctrl-C stops the server");
                let _ = ctrl_c.await;
                shutdown.cancel();
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutting down: draining in-flight requests");
    // Supervisors and tests wait for this line.
    polytomic_mcp::telemetry::flush_logs();
    shutdown.cancel();
}
