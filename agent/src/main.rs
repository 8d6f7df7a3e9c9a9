//! The `muster-agent` binary: parses the command line, sets up logging,
//! wires the stop signals and turns the outcome into an exit code. The
//! commands themselves live in the library (`commands`).

use std::process::ExitCode;

use clap::Parser;
use muster_agent::cli::Cli;
use muster_agent::commands;
use tracing::Level;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(64)
            } else {
                ExitCode::SUCCESS // --help, --version
            };
        }
    };
    init_tracing();
    match commands::dispatch(&cli.config, cli.command, shutdown_signal()) {
        Ok(code) => code,
        Err(failure) => failure.exit(),
    }
}

/// `MUSTER_LOG`: a level (`debug`) or `target=level` pairs
/// (`muster_agent=debug,info`); `info` when unset or unreadable. A plain
/// target filter, not an `EnvFilter`: that one brings a regex engine, which
/// is a tenth of the agent's binary, whose pages are most of its resident
/// memory.
fn init_tracing() {
    let filter = std::env::var("MUSTER_LOG")
        .ok()
        .and_then(|v| v.parse::<Targets>().ok())
        .unwrap_or_else(|| Targets::new().with_default(Level::INFO));
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
        )
        .with(filter)
        .init();
}

/// Completes on ctrl-c or SIGTERM (what systemd sends on stop).
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
                return;
            }
            Err(e) => tracing::warn!(error = %e, "cannot watch SIGTERM; stopping on ctrl-c only"),
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
