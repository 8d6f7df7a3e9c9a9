//! The `muster-agent` binary: parses the command line, sets up logging,
//! wires the stop signals and turns the outcome into an exit code. The
//! commands themselves live in the library (`commands`).

use std::process::ExitCode;

use clap::Parser;
use muster_agent::cli::Cli;
use muster_agent::commands;
use muster_agent::log_file::{self, LogFile};
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
    // The Windows service's stderr goes nowhere: it logs to a file.
    #[cfg(windows)]
    let log_file = matches!(cli.command, muster_agent::cli::Command::Service)
        .then(|| muster_agent::service::log_path(&cli.config));
    #[cfg(not(windows))]
    let log_file: Option<std::path::PathBuf> = None;
    init_tracing(log_file.as_deref());
    match commands::dispatch(&cli.config, cli.command, shutdown_signal()) {
        Ok(code) => code,
        Err(failure) => failure.exit(),
    }
}

/// `MUSTER_LOG`: a level (`debug`) or `target=level` pairs
/// (`muster_agent=debug,info`); `info` when unset or unreadable. A plain
/// target filter, not an `EnvFilter`: that one brings a regex engine, which
/// is a tenth of the agent's binary, whose pages are most of its resident
/// memory. Logs to stderr, or to `log_file` when given and it opens (else
/// stderr, saying why).
fn init_tracing(log_file: Option<&std::path::Path>) {
    let filter = std::env::var("MUSTER_LOG")
        .ok()
        .and_then(|v| v.parse::<Targets>().ok())
        .unwrap_or_else(|| Targets::new().with_default(Level::INFO));
    let registry = tracing_subscriber::registry().with(filter);
    let opened = log_file.map(|path| (path, LogFile::open(path, log_file::MAX_BYTES)));
    match opened {
        Some((_, Ok(file))) => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(file)
                    .with_ansi(false),
            )
            .init(),
        Some((path, Err(e))) => {
            registry
                .with(
                    tracing_subscriber::fmt::layer()
                        .with_writer(std::io::stderr)
                        .with_ansi(false),
                )
                .init();
            tracing::warn!(file = %path.display(), error = %e, "cannot open the log file; logging to stderr");
        }
        None => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
            )
            .init(),
    }
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
