//! The `muster-agent` binary: parses the command line, sets up logging,
//! wires the stop signals and turns the outcome into an exit code. The
//! commands themselves live in the library (`commands`).

use std::process::ExitCode;

use clap::Parser;
use muster_agent::cli::Cli;
use muster_agent::commands;

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

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("MUSTER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
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
