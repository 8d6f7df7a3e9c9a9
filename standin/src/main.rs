//! `alloy-standin`: a stand-in for Grafana Alloy's `alloy` binary, for Muster's
//! tests only (Alloy cannot be installed where they run). It answers
//! `--version`, `fmt`, `validate` and `run` the way Muster uses them; see
//! `alloy-standin --help`. Its code is this crate's library.

use std::io::{Read, Write};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use alloy_standin::{check, cli, http};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let command = match cli::parse(&args) {
        Ok(command) => command,
        Err(e) => {
            eprintln!("Error: {e}\n\n{}", cli::USAGE);
            return ExitCode::FAILURE;
        }
    };
    let version =
        std::env::var("ALLOY_STANDIN_VERSION").unwrap_or_else(|_| cli::DEFAULT_VERSION.to_string());
    match command {
        cli::Command::Help => {
            print!("{}", cli::USAGE);
            ExitCode::SUCCESS
        }
        cli::Command::Version => {
            println!("{}", cli::version_line(&version));
            ExitCode::SUCCESS
        }
        cli::Command::Fmt(file) => fmt(file.as_deref()),
        cli::Command::Validate(file) => validate(&file),
        cli::Command::Run {
            listen_addr,
            config,
        } => {
            let app = http::App::new(config, version, hostname());
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            match runtime {
                Ok(runtime) => runtime.block_on(run(&listen_addr, app)),
                Err(e) => {
                    eprintln!("Error: starting the runtime: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// `alloy fmt`: syntax check; prints the file when it passes.
fn fmt(file: Option<&Path>) -> ExitCode {
    let (name, text) = match file {
        Some(path) => (path.display().to_string(), std::fs::read_to_string(path)),
        None => {
            let mut text = String::new();
            let read = std::io::stdin().read_to_string(&mut text).map(|_| text);
            ("<stdin>".to_string(), read)
        }
    };
    let text = match text {
        Ok(text) => text,
        Err(e) => {
            eprintln!("Error: reading {name}: {e}");
            return ExitCode::FAILURE;
        }
    };
    match check::syntax(&text) {
        Ok(_) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(diags) => report(&name, &diags),
    }
}

/// `alloy validate`: syntax and components; silent when it passes.
fn validate(file: &Path) -> ExitCode {
    let name = file.display().to_string();
    match std::fs::read_to_string(file) {
        Ok(text) => match check::validate(&text) {
            Ok(_) => ExitCode::SUCCESS,
            Err(diags) => report(&name, &diags),
        },
        Err(e) => {
            eprintln!("Error: reading {name}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn report(name: &str, diags: &[impl std::fmt::Display]) -> ExitCode {
    for d in diags {
        eprintln!("{name}:{d}");
    }
    ExitCode::FAILURE
}

/// `alloy run`: bind, announce the address, load the config (exit if the
/// first load fails, as Alloy does), then reload on every SIGHUP (Unix) and
/// `POST /-/reload`.
async fn run(listen_addr: &str, app: http::App) -> ExitCode {
    // Install the handler before announcing the address: SIGHUP's default
    // action would kill the process.
    #[cfg(unix)]
    let hangups = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("Error: installing the SIGHUP handler: {e}");
            return ExitCode::FAILURE;
        }
    };
    let listener = match tokio::net::TcpListener::bind(listen_addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("Error: listening on {listen_addr}: {e}");
            return ExitCode::FAILURE;
        }
    };
    match listener.local_addr() {
        Ok(addr) => println!("listening on {addr}"),
        Err(e) => {
            eprintln!("Error: reading the bound address: {e}");
            return ExitCode::FAILURE;
        }
    }
    // A failed flush means nobody reads stdout; serving goes on regardless.
    let _ = std::io::stdout().flush();
    let app = Arc::new(app);
    tokio::spawn(http::serve(listener, Arc::clone(&app)));
    if let Err(e) = app.reload() {
        eprintln!("{e}\nError: could not perform the initial load successfully");
        return ExitCode::FAILURE;
    }
    eprintln!("level=info msg=\"config loaded\"");
    #[cfg(unix)]
    reload_on_hangups(hangups, &app).await;
    // Windows has no SIGHUP: the stand-in reloads on `POST /-/reload` only.
    #[cfg(not(unix))]
    std::future::pending::<()>().await;
    ExitCode::SUCCESS
}

#[cfg(unix)]
async fn reload_on_hangups(mut hangups: tokio::signal::unix::Signal, app: &http::App) {
    while hangups.recv().await.is_some() {
        match app.reload() {
            Ok(()) => eprintln!("level=info msg=\"config reloaded\""),
            Err(e) => eprintln!("level=error msg=\"failed to reload config\" err={e:?}"),
        }
    }
}

/// The name the unix exporter reports as `nodename`.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "alloy-standin".to_string())
}
