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
    /// List, inspect, label, decommission and replace hosts
    #[command(subcommand)]
    Hosts(HostsCommand),
    /// The label schema ([labels] in server.toml)
    #[command(subcommand)]
    Labels(LabelsCommand),
    /// Batch enrollment from a spreadsheet: import, status, retry
    #[command(subcommand)]
    Batch(BatchCommand),
    /// The audit log: every admin action and enrollment attempt, with its source address
    Audit {
        /// Only entries about or by this host (or any other target: a token or batch id)
        #[arg(long, value_name = "ID")]
        host: Option<String>,
        /// Only entries since a time ago (30m, 2h, 7days) or a time (2024-05-01T12:00:00Z)
        #[arg(long, value_name = "WHEN")]
        since: Option<String>,
        /// At most this many entries (the newest)
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[command(flatten)]
        admin: AdminArgs,
    },
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
    /// List hosts: state, last seen, applied vs rendered config, Alloy version, OS
    #[command(
        after_help = "States: enrolled, config_applied, config_failed, scrape_ok, scrape_failing \
        (Prometheus was asked), stale (no check-in for stale_after), decommissioned (only with --all \
        or --state decommissioned). Pending hosts are batch rows: see `batch status`."
    )]
    List {
        /// Only hosts whose labels match, e.g. environment=production,location=rack-2
        #[arg(long, value_name = "NAME=VALUE,...")]
        selector: Option<String>,
        /// Only hosts in this state
        #[arg(long)]
        state: Option<String>,
        /// Include decommissioned hosts
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Show one host in detail, including whether it applied its current config
    Show {
        /// Host id, as `hosts list` shows it
        id: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Set or remove labels on one host (ID) or every host a --selector matches
    #[command(
        after_help = "Examples:\n  muster-server hosts label web-01-3fa2c1 maintainers=ops;dba location=rack-2\n  \
        muster-server hosts label --selector environment=staging owner=web --remove legacy\n\n\
        Labels are checked against the label schema ([labels] in server.toml); nothing is changed \
        if any host would break it. Each changed host's config is re-rendered and its target file \
        rewritten (Prometheus is reloaded once); agents pick the config up on their next poll."
    )]
    Label {
        /// Host id, then NAME=VALUE pairs (with --selector: only pairs)
        #[arg(value_name = "ID | NAME=VALUE")]
        args: Vec<String>,
        /// Edit every active host whose labels match, instead of one host
        #[arg(long, value_name = "NAME=VALUE,...")]
        selector: Option<String>,
        /// Remove this label; repeatable
        #[arg(long = "remove", value_name = "NAME")]
        remove: Vec<String>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Retire a host: revoke its certificates (its agent is refused and stops), rename its
    /// target file to <id>.json.deleted.<UTC time> (Prometheus stops scraping), keep its history
    Decommission {
        /// Host id, as `hosts list` shows it
        id: String,
        /// Do not ask for confirmation
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Let a new key take a host over (a reinstalled machine keeping its machine-id)
    #[command(
        after_help = "A second key claiming an enrolled machine-id is refused (409) until \
        this is run; then the next enrollment from that machine-id (within token_ttl) takes the \
        host over and the old key's certificates are revoked. A cloned VM should get its own \
        machine-id instead (systemd-machine-id-setup)."
    )]
    Replace {
        /// Host id, as `hosts list` shows it
        id: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(Subcommand)]
enum LabelsCommand {
    /// Check every active host against the label schema; exits 1 when one does not fit
    Check {
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(Subcommand)]
enum BatchCommand {
    /// Pre-register hosts from a CSV (with a header) or JSON file; prints each host's enroll line
    #[command(
        after_help = "CSV: a header naming the columns: hostname (required), address \
        (optional, where the host is expected), every other column a label; empty cells set \
        nothing. Lines starting with # are skipped. Example:\n\n  \
        hostname,address,environment,location\n  web-01,10.0.0.11,production,rack-2\n\n\
        JSON: [{\"hostname\": \"web-01\", \"labels\": {\"environment\": \"production\"}, \"address\": \"10.0.0.11\"}]\n\n\
        The whole file is checked first (hostnames, labels against the schema, duplicates); \
        errors are listed with their line numbers and nothing is imported, unless --skip-invalid. \
        Each row gets a one-time token bound to its hostname."
    )]
    Import {
        /// The CSV or JSON file
        file: PathBuf,
        /// The file's format [default: from the extension, else sniffed]
        #[arg(long, value_enum)]
        input: Option<muster_server::batch::Format>,
        /// Import the valid rows and list the invalid ones instead of refusing the file
        #[arg(long)]
        skip_invalid: bool,
        /// Lifetime of the tokens, e.g. 7days [default: server.toml's token_ttl]
        #[arg(long, value_parser = humantime::parse_duration)]
        ttl: Option<Duration>,
        /// How to print the enrollment lines
        #[arg(long, value_enum, default_value = "lines")]
        format: cli::batch::Output,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// List batches
    List {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Per-host state of a batch (pending -> enrolled -> config_applied -> scrape_ok, or failed and why) and totals
    Status {
        /// Batch id, as `batch import` and `batch list` print it
        id: String,
        /// Refresh until every host has settled; exits 1 if any failed
        #[arg(long)]
        watch: bool,
        /// Refresh interval for --watch
        #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
        interval: Duration,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// New tokens for rows that failed to enroll or whose token expired (old tokens are revoked)
    Retry {
        /// Batch id
        id: String,
        /// Only this row (by hostname)
        #[arg(long)]
        host: Option<String>,
        /// Lifetime of the new tokens [default: server.toml's token_ttl]
        #[arg(long, value_parser = humantime::parse_duration)]
        ttl: Option<Duration>,
        /// How to print the enrollment lines
        #[arg(long, value_enum, default_value = "lines")]
        format: cli::batch::Output,
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
        Command::Hosts(HostsCommand::Label {
            args,
            selector,
            remove,
            admin,
        }) => {
            let (target, pairs) = label_target(args, selector).map_err(usage)?;
            let set = pairs
                .iter()
                .map(|p| labels::parse_pair(p))
                .collect::<Result<Labels, _>>()
                .map_err(|e| usage(e.into()))?;
            client(|| async move { cli::hosts_label(&admin, target, set, remove).await })
        }
        Command::Hosts(HostsCommand::Decommission { id, yes, admin }) => {
            confirm(&id, yes).map_err(usage)?;
            client(|| async move { cli::hosts_decommission(&admin, &id).await })
        }
        Command::Hosts(cmd) => client(|| async move {
            match cmd {
                HostsCommand::List {
                    selector,
                    state,
                    all,
                    admin,
                } => {
                    let filter = cli::HostFilter {
                        selector,
                        state,
                        all,
                    };
                    cli::hosts_list(&admin, &filter).await
                }
                HostsCommand::Show { id, admin } => cli::hosts_show(&admin, &id).await,
                HostsCommand::Replace { id, admin } => cli::hosts_replace(&admin, &id).await,
                HostsCommand::Label { .. } | HostsCommand::Decommission { .. } => {
                    unreachable!("handled above")
                }
            }
        }),
        Command::Labels(LabelsCommand::Check { admin }) => {
            let fits = runtime()?.block_on(cli::labels_check(&admin))?;
            if fits {
                Ok(())
            } else {
                Err(Failure {
                    code: 1,
                    error: anyhow::anyhow!("some hosts do not fit the label schema"),
                })
            }
        }
        Command::Batch(BatchCommand::Status {
            id,
            watch,
            interval,
            admin,
        }) => {
            let ok = runtime()?.block_on(cli::batch::status(&admin, &id, watch, interval))?;
            if ok {
                Ok(())
            } else {
                Err(Failure {
                    code: 1,
                    error: anyhow::anyhow!(
                        "some hosts of batch {id} failed; see the PROBLEM column"
                    ),
                })
            }
        }
        Command::Batch(cmd) => client(|| async move {
            match cmd {
                BatchCommand::Import {
                    file,
                    input,
                    skip_invalid,
                    ttl,
                    format,
                    admin,
                } => cli::batch::import(&admin, &file, input, skip_invalid, ttl, format).await,
                BatchCommand::List { admin } => cli::batch::list(&admin).await,
                BatchCommand::Retry {
                    id,
                    host,
                    ttl,
                    format,
                    admin,
                } => cli::batch::retry(&admin, &id, host, ttl, format).await,
                BatchCommand::Status { .. } => unreachable!("handled above"),
            }
        }),
        Command::Audit {
            host,
            since,
            limit,
            admin,
        } => {
            let since = since
                .map(|s| cli::parse_since(&s, SystemTime::now()))
                .transpose()
                .map_err(|e| usage(anyhow::anyhow!(e)))?;
            client(|| async move { cli::audit(&admin, host.as_deref(), since, limit).await })
        }
    }
}

/// `hosts label`'s positionals: a host id then pairs, or (with a selector)
/// only pairs.
fn label_target(
    args: Vec<String>,
    selector: Option<String>,
) -> Result<(cli::LabelTarget, Vec<String>)> {
    match selector {
        Some(s) => {
            if let Some(id) = args.iter().find(|a| !a.contains('=')) {
                anyhow::bail!("{id:?} is not NAME=VALUE; with --selector, give no host id");
            }
            Ok((cli::LabelTarget::Selector(s), args))
        }
        None => {
            let mut args = args.into_iter();
            match args.next() {
                Some(id) if !id.contains('=') => Ok((cli::LabelTarget::Host(id), args.collect())),
                _ => anyhow::bail!(
                    "give a host id first (hosts label ID NAME=VALUE...), or --selector NAME=VALUE"
                ),
            }
        }
    }
}

/// Decommissioning cannot be undone: ask, unless --yes.
fn confirm(id: &str, yes: bool) -> Result<()> {
    use std::io::{BufRead, IsTerminal, Write};
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        anyhow::bail!("decommissioning {id} cannot be undone: pass --yes to confirm");
    }
    print!("Decommission {id}? Its agent is cut off and its target file retired. Type the host id to confirm: ");
    std::io::stdout().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    if answer.trim() != id {
        anyhow::bail!("not confirmed; nothing was changed");
    }
    Ok(())
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
