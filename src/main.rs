//! The `polytomic-mcp` binary: parse configuration, start logging, bind, serve until SIGTERM or Ctrl-C.

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Parser;
use polytomic_mcp::config::{Cli, Command};
use polytomic_mcp::telemetry::init_tracing;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.config.log_format);
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => match serve(cli.config).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("polytomic-mcp: {error:#}");
                ExitCode::FAILURE
            }
        },
    }
}

async fn serve(config: polytomic_mcp::config::Config) -> anyhow::Result<()> {
    let address = SocketAddr::new(config.http_host, config.http_port);
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
    shutdown.cancel();
}
