//! `muster-server`: parses the command line, sets up logging, binds the
//! listeners, waits for signals and chooses the exit code. The clap
//! definitions are in `args`, what each command does in `commands`.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::SystemTime;

use anyhow::{Context, Result};
use clap::Parser;
use muster_server::args::{Cli, Command, ServeArgs};
use muster_server::commands::{self, usage, Failure, EXIT_USAGE};
use muster_server::machine::Machine;
use muster_server::settings::{self, Settings};
use muster_server::{app::App, init, serve, tls};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(EXIT_USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("MUSTER_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colour only for a person watching; a log file gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    // reqwest builds its default TLS setup from the process-wide provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let outcome = match cli.command {
        Command::Serve(args) => serve_command(args),
        command => commands::run(command),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("error: {:#}", f.error);
            ExitCode::from(f.code)
        }
    }
}

/// Reads the settings (initialising the data dir first with `--init`),
/// applies the command line's overrides, binds both listeners and serves
/// until SIGTERM or ctrl-c.
fn serve_command(args: ServeArgs) -> Result<(), Failure> {
    let dir: &Path = &args.data_dir;
    if !init::is_initialized(dir) {
        if !args.init {
            return Err(usage(anyhow::anyhow!(
                "{} has no {}: run `muster-server init --data-dir {}` first, or pass --init",
                dir.display(),
                settings::FILE_NAME,
                dir.display()
            )));
        }
        // --public-url goes into the settings init writes, so the URL it
        // prints is the one agents get.
        let done = init::init(
            dir,
            &args.sans,
            args.public_url.clone(),
            &Machine::discover(),
            SystemTime::now(),
        )
        .with_context(|| format!("initialising {}", dir.display()))
        .map_err(usage)?;
        commands::print_initialized(dir, &done);
    }
    let settings = Settings::read(&dir.join(settings::FILE_NAME))
        .context("reading settings")
        .map_err(usage)?;
    let configured_admin = settings.admin_listen;
    let settings = settings
        .overridden(args.overrides())
        .map_err(|e| usage(anyhow::anyhow!("{e}")))?;
    commands::runtime()?.block_on(async move {
        let listen = settings.listen;
        let admin_listen = settings.admin_listen;
        let app = App::load(dir, settings).map_err(usage)?;
        let agent_tls = tls::agent_listener_config(dir, app.ca.cert_der())
            .context("TLS setup for the agent listener")?;
        let admin_tls =
            tls::admin_listener_config(dir).context("TLS setup for the admin listener")?;
        let agent = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("binding the agent listener on {listen}"))?;
        let admin = tokio::net::TcpListener::bind(admin_listen)
            .await
            .with_context(|| format!("binding the admin listener on {admin_listen}"))?;
        let shutdown = shutdown_signal()?;
        let admin_addr = admin.local_addr().context("admin listener address")?;
        println!(
            "listening on {} (agents)",
            agent.local_addr().context("agent listener address")?
        );
        println!("listening on {admin_addr} (admin)");
        let url_flag = if admin_addr == configured_admin {
            String::new()
        } else {
            format!(" --admin-url https://{admin_addr}")
        };
        println!(
            "To enroll a host, create a token: muster-server token create --data-dir {}{url_flag}",
            dir.display()
        );
        use std::io::Write as _;
        let _ = std::io::stdout().flush();
        serve::run(Arc::new(app), agent, agent_tls, admin, admin_tls, shutdown).await;
        Ok::<(), Failure>(())
    })
}

/// Completes on SIGTERM or ctrl-c. The handlers are installed here, before
/// the listeners announce themselves, so a signal sent right after the
/// `listening on` lines is never missed.
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).context("watching SIGTERM")?;
        let mut int = signal(SignalKind::interrupt()).context("watching SIGINT")?;
        Ok(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
        })
    }
}
