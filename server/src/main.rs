//! `muster-server`: parses the command line, sets up logging, binds the
//! listeners and chooses the exit code. Everything else lives in the library.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use muster_server::cli::{self, AdminArgs};
use muster_server::settings::{self, Settings};
use muster_server::{app::App, init, serve, tls, DEFAULT_DATA_DIR};
use muster_shared::labels::{self, Labels};

/// Exit code for a bad command line or configuration (EX_USAGE).
const EXIT_USAGE: u8 = 64;

#[derive(Parser)]
#[command(
    name = "muster-server",
    version,
    about = "Muster's central server: enrolls hosts over mutual TLS, renders their Alloy configs, writes Prometheus targets",
    long_about = "Muster's central server.\n\n\
        First run `muster-server init --data-dir DIR` (or `serve --init`), then `muster-server serve --data-dir DIR`.\n\
        Create an enrollment token with `muster-server token create`; it prints the `muster-agent enroll ...` line to run on a host.\n\
        Admin commands talk to the admin API; by default they find its address, token and CA in the data dir."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a data dir: private CA, server certificate, settings, database, first admin token
    Init(InitArgs),
    /// Run the server (agent listener + admin listener)
    Serve(ServeArgs),
    /// Print the Alloy config and Prometheus target groups a host gets (--host)
    /// or would get (--facts FILE), with the templates and overrides on disk
    Render(muster_server::preview::RenderArgs),
    /// Alloy syntax tools: `alloy check FILE...`
    #[command(subcommand)]
    Alloy(muster_server::preview::AlloyCommand),
    /// Manage enrollment tokens
    #[command(subcommand)]
    Token(TokenCommand),
    /// Inspect enrolled hosts
    #[command(subcommand)]
    Hosts(HostsCommand),
}

#[derive(clap::Args)]
struct InitArgs {
    /// Directory for the server's state (created with mode 0700)
    #[arg(long, env = "MUSTER_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    data_dir: PathBuf,
    /// Extra name (DNS name or IP) for the server certificate; repeatable. localhost and 127.0.0.1 are always included
    #[arg(long = "san", value_name = "NAME")]
    sans: Vec<String>,
    /// URL agents use to reach the server [default: https://<first --san or localhost>:8443]
    #[arg(long)]
    public_url: Option<String>,
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Directory holding server.toml, the CA, the database and target files
    #[arg(long, env = "MUSTER_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    data_dir: PathBuf,
    /// Initialise the data dir first if it is not initialised yet (as `init` would)
    #[arg(long)]
    init: bool,
    /// With --init: extra certificate name, as for `init --san`
    #[arg(long = "san", value_name = "NAME", requires = "init")]
    sans: Vec<String>,
    /// Agent listener address (TLS) [default: server.toml's listen, 0.0.0.0:8443]
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Admin listener address (TLS, bearer token) [default: server.toml's admin_listen, 127.0.0.1:8444]
    #[arg(long)]
    admin_listen: Option<SocketAddr>,
    /// Directory for Prometheus file_sd target files [default: <data dir>/targets]
    #[arg(long)]
    targets_dir: Option<PathBuf>,
    /// Directory of operator templates (*.alloy.j2) [default: the templates built into this binary]
    #[arg(long)]
    templates_dir: Option<PathBuf>,
    /// Prometheus base URL to reload after target changes (needs --web.enable-lifecycle)
    #[arg(long)]
    prometheus_url: Option<String>,
    /// URL agents use to reach the agent listener, as written into /install.sh and enroll lines [default: server.toml's public_url]
    #[arg(long, value_name = "https://HOST:PORT")]
    public_url: Option<String>,
    /// Directory of agent binaries served at /v1/download/ for /install.sh: put the
    /// muster-agent-<os>-<arch> files there (e.g. muster-agent-linux-x86_64, from
    /// packaging/build); read at start-up [default: server.toml's downloads_dir, else <data dir>/downloads]
    #[arg(long, value_name = "DIR")]
    downloads_dir: Option<PathBuf>,
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create an enrollment token and print the line that enrolls a host with it
    Create {
        /// Preset label for hosts enrolled with this token, as name=value; repeatable
        #[arg(long = "label", value_name = "NAME=VALUE", value_parser = parse_label)]
        labels: Vec<(String, String)>,
        /// Lifetime, e.g. 30m, 24h, 7days [default: server.toml's token_ttl]
        #[arg(long, value_parser = humantime::parse_duration)]
        ttl: Option<Duration>,
        /// How many hosts may enroll with it
        #[arg(long, default_value_t = 1)]
        uses: u32,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// List enrollment tokens (never their secrets)
    List {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Revoke an enrollment token: it can no longer enroll anything
    Revoke {
        /// Token id, as `token list` shows it
        id: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(Subcommand)]
enum HostsCommand {
    /// List hosts with their state and config rollout
    List {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Show one host in detail
    Show {
        /// Host id, as `hosts list` shows it
        id: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

fn parse_label(text: &str) -> Result<(String, String), String> {
    labels::parse_pair(text).map_err(|e| e.to_string())
}

/// An error with the exit code it deserves.
struct Failure {
    code: u8,
    error: anyhow::Error,
}

impl From<anyhow::Error> for Failure {
    fn from(error: anyhow::Error) -> Failure {
        Failure { code: 1, error }
    }
}

fn usage(error: anyhow::Error) -> Failure {
    Failure {
        code: EXIT_USAGE,
        error,
    }
}

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
        .init();
    // reqwest builds its default TLS setup from the process-wide provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("error: {:#}", f.error);
            ExitCode::from(f.code)
        }
    }
}

fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Init(args) => {
            let done = init::init(
                &args.data_dir,
                &args.sans,
                args.public_url,
                SystemTime::now(),
            )
            .with_context(|| format!("initialising {}", args.data_dir.display()))
            .map_err(usage)?;
            print_initialized(&args.data_dir, &done);
            Ok(())
        }
        Command::Serve(args) => serve_command(args),
        Command::Render(args) => {
            let preview = muster_server::preview::render(&args)?;
            print!("{}", preview.text(args.json));
            Ok(())
        }
        Command::Alloy(muster_server::preview::AlloyCommand::Check { files }) => {
            let errors = muster_server::preview::check_files(&files, &mut std::io::stdout())
                .context("writing to stdout")?;
            if errors > 0 {
                return Err(anyhow::anyhow!("{errors} syntax error(s)").into());
            }
            Ok(())
        }
        Command::Token(cmd) => client(|| async move {
            match cmd {
                TokenCommand::Create {
                    labels,
                    ttl,
                    uses,
                    admin,
                } => {
                    let labels: Labels = labels.into_iter().collect();
                    cli::token_create(&admin, labels, ttl, Some(uses)).await
                }
                TokenCommand::List { admin } => cli::token_list(&admin).await,
                TokenCommand::Revoke { id, admin } => cli::token_revoke(&admin, &id).await,
            }
        }),
        Command::Hosts(cmd) => client(|| async move {
            match cmd {
                HostsCommand::List { admin } => cli::hosts_list(&admin).await,
                HostsCommand::Show { id, admin } => cli::hosts_show(&admin, &id).await,
            }
        }),
    }
}

fn print_initialized(dir: &Path, done: &init::Initialized) {
    println!("Initialised Muster data dir {}", dir.display());
    println!("  server public-key pin: {}", done.pin);
    println!(
        "  admin token (shown once; also saved in {}, mode 0600): {}",
        dir.join(init::ADMIN_TOKEN_FILE).display(),
        done.admin_token.expose()
    );
    println!("  agents will reach the server at {}", done.public_url);
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn client<F, Fut>(f: F) -> Result<(), Failure>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    runtime()?.block_on(f())?;
    Ok(())
}

fn serve_command(args: ServeArgs) -> Result<(), Failure> {
    let dir = &args.data_dir;
    if !init::is_initialized(dir) {
        if !args.init {
            return Err(usage(anyhow::anyhow!(
                "{} has no {}: run `muster-server init --data-dir {}` first, or pass --init",
                dir.display(),
                settings::FILE_NAME,
                dir.display()
            )));
        }
        let done = init::init(dir, &args.sans, None, SystemTime::now())
            .with_context(|| format!("initialising {}", dir.display()))
            .map_err(usage)?;
        print_initialized(dir, &done);
    }
    let mut settings = Settings::read(&dir.join(settings::FILE_NAME))
        .context("reading settings")
        .map_err(usage)?;
    let configured_admin = settings.admin_listen;
    if let Some(a) = args.listen {
        settings.listen = a;
    }
    if let Some(a) = args.admin_listen {
        settings.admin_listen = a;
    }
    if let Some(d) = args.targets_dir {
        settings.targets_dir = Some(d);
    }
    if let Some(d) = args.templates_dir {
        settings.templates_dir = Some(d);
    }
    if let Some(u) = args.prometheus_url {
        settings.prometheus_url = Some(u);
    }
    if let Some(u) = args.public_url {
        if !u.starts_with("https://") {
            return Err(usage(anyhow::anyhow!(
                "--public-url {u:?} must start with https://"
            )));
        }
        settings.public_url = u;
    }
    if let Some(d) = args.downloads_dir {
        settings.downloads_dir = Some(d);
    }
    runtime()?.block_on(async move {
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
