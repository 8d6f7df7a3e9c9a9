//! The `muster-agent` command line: parses arguments, sets up logging and the
//! runtime, wires signals, and turns results into exit codes (0 ok, 1 runtime
//! failure, 3 certificate revoked, 64 bad config or usage). Everything else
//! lives in the library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{anyhow, Context};
use clap::{Args, Parser, Subcommand};
use muster_agent::config::{Config, Overrides, DEFAULT_PATH};
use muster_agent::enroll::{self, Retry, Token};
use muster_agent::run::Agent;
use muster_agent::{identity, status};
use muster_shared::pin::Pin;

/// Muster agent: enrolls this host with a Muster server, then keeps its
/// Grafana Alloy config current.
#[derive(Parser)]
#[command(name = "muster-agent", version)]
struct Cli {
    /// Agent config file.
    #[arg(long, global = true, value_name = "FILE", env = "MUSTER_AGENT_CONFIG", default_value = DEFAULT_PATH)]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Enroll this host: write the config file, send token + CSR + facts to
    /// the server (trusted by its key pin), store the certificate.
    Enroll(Box<EnrollArgs>),
    /// Run the agent: poll for config, apply it, report, renew the certificate.
    /// Stops with exit code 3 when the server revoked its certificate (host
    /// decommissioned or replaced).
    Run {
        /// Check in once (poll, apply, report), then exit: 0 ok, 1 failure.
        #[arg(long)]
        once: bool,
    },
    /// Show this agent's identity, certificate expiry and last apply.
    Status {
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Install Grafana Alloy when it is missing (apt, dnf/yum or zypper, from
    /// Grafana's repositories or the config's [alloy_mirror]), make it listen
    /// where Prometheus can scrape it, and enable its service.
    InstallAlloy(InstallAlloyArgs),
}

#[derive(Args)]
struct InstallAlloyArgs {
    /// Print the plan, change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Treat DIR as the filesystem root: files go under it and apt/dpkg/rpm
    /// use it; no service is touched (image builds, tests).
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
    /// Where Alloy's HTTP server listens [default: 0.0.0.0:<port of scrape_address, else 12345>].
    #[arg(long, value_name = "HOST:PORT")]
    listen_addr: Option<String>,
}

#[derive(Args)]
struct EnrollArgs {
    /// Server base URL.
    #[arg(long, value_name = "https://HOST:PORT")]
    server: String,
    /// Enrollment token (or the MUSTER_ENROLL_TOKEN environment variable, which
    /// keeps it out of the process list).
    #[arg(long, env = "MUSTER_ENROLL_TOKEN", hide_env_values = true)]
    token: String,
    /// SHA-256 pin of the server's public key, as curl --pinnedpubkey takes it.
    #[arg(long, value_name = "sha256//BASE64")]
    pin: Pin,
    /// Where the key, certificates and state live.
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// The Alloy config file to manage.
    #[arg(long, value_name = "FILE")]
    alloy_config: Option<PathBuf>,
    /// The Alloy binary.
    #[arg(long, value_name = "BIN")]
    alloy_bin: Option<PathBuf>,
    /// Command that reloads Alloy, split on whitespace (no shell).
    #[arg(long, value_name = "COMMAND")]
    reload_command: Option<String>,
    /// Alloy's readiness URL.
    #[arg(long, value_name = "URL")]
    ready_url: Option<String>,
    /// host:port where Prometheus reaches this host's Alloy.
    #[arg(long, value_name = "HOST:PORT")]
    scrape_address: Option<String>,
    /// Hostname to report instead of the OS's.
    #[arg(long, value_name = "NAME")]
    hostname: Option<String>,
    /// File holding this machine's id.
    #[arg(long, value_name = "FILE")]
    machine_id_file: Option<PathBuf>,
    /// A label this host asks for, as name=value; repeatable. The token's
    /// preset labels win over these.
    #[arg(long = "label", value_name = "NAME=VALUE", value_parser = parse_label)]
    labels: Vec<(String, String)>,
}

fn parse_label(text: &str) -> Result<(String, String), String> {
    muster_shared::labels::parse_pair(text).map_err(|e| e.to_string())
}

impl EnrollArgs {
    /// The flags as config values. Relative paths are made absolute: the
    /// daemon will not run from the directory enroll was run in.
    fn overrides(&self) -> Result<Overrides, Failure> {
        let absolute = |p: &Option<PathBuf>| -> Result<Option<PathBuf>, Failure> {
            p.as_deref()
                .map(|p| {
                    std::path::absolute(p)
                        .with_context(|| format!("cannot make {} absolute", p.display()))
                        .map_err(Failure::Usage)
                })
                .transpose()
        };
        // A bare program name is looked up in PATH; a path with a slash is a file.
        let alloy_bin = match &self.alloy_bin {
            Some(b) if b.components().count() > 1 => absolute(&self.alloy_bin)?,
            other => other.clone(),
        };
        Ok(Overrides {
            server: Some(self.server.clone()),
            state_dir: absolute(&self.state_dir)?,
            alloy_config: absolute(&self.alloy_config)?,
            alloy_bin,
            reload_command: self
                .reload_command
                .as_deref()
                .map(|c| c.split_whitespace().map(String::from).collect()),
            ready_url: self.ready_url.clone(),
            scrape_address: self.scrape_address.clone(),
            hostname: self.hostname.clone(),
            machine_id_file: absolute(&self.machine_id_file)?,
        })
    }
}

/// How a command failed.
enum Failure {
    /// Bad flags or config: exit 64.
    Usage(anyhow::Error),
    /// Anything else: exit 1.
    Runtime(anyhow::Error),
}

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
    match dispatch(cli) {
        Ok(code) => code,
        Err(Failure::Usage(e)) => {
            eprintln!("muster-agent: {e:#}");
            ExitCode::from(64)
        }
        Err(Failure::Runtime(e)) => {
            eprintln!("muster-agent: {e:#}");
            ExitCode::FAILURE
        }
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

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
        .map_err(Failure::Runtime)
}

fn dispatch(cli: Cli) -> Result<ExitCode, Failure> {
    match cli.command {
        Command::Enroll(args) => enroll_cmd(&cli.config, &args),
        Command::Run { once } => run_cmd(&cli.config, once),
        Command::Status { json } => status_cmd(&cli.config, json),
        Command::InstallAlloy(args) => install_alloy_cmd(&cli.config, &args),
    }
}

fn install_alloy_cmd(
    config_path: &std::path::Path,
    args: &InstallAlloyArgs,
) -> Result<ExitCode, Failure> {
    use muster_agent::install;
    let config = match Config::read(config_path) {
        Ok(c) => c,
        Err(e) if e.is_missing() => Config::default(),
        Err(e) => return Err(Failure::Usage(e.into())),
    };
    let root = args.root.clone().unwrap_or_else(|| PathBuf::from("/"));
    if !root.is_absolute() {
        return Err(Failure::Usage(anyhow!("--root must be an absolute path")));
    }
    let listen_addr = args.listen_addr.clone().unwrap_or_else(|| {
        let port = config
            .scrape_address
            .as_deref()
            .and_then(|a| a.rsplit_once(':'))
            .and_then(|(_, p)| p.parse::<u16>().ok())
            .unwrap_or(muster_agent::config::ALLOY_PORT);
        format!("0.0.0.0:{port}")
    });
    let os = install::OsFacts::read(&root).map_err(|e| Failure::Runtime(e.into()))?;
    let mirror = config.alloy_mirror.clone().unwrap_or_default();
    let found = install::locate_alloy(&config.alloy_bin, &root);
    let systemd = args.root.is_none() && std::path::Path::new("/run/systemd/system").is_dir();
    let plan = install::alloy_plan(&install::Request {
        os: &os,
        mirror: &mirror,
        root: &root,
        alloy_present: found.is_some(),
        listen_addr: &listen_addr,
        systemd,
    })
    .map_err(|e| Failure::Runtime(e.into()))?;
    match &found {
        Some(bin) => println!("Alloy is installed: {}", bin.display()),
        None => println!(
            "Alloy is not installed ({} not found): installing it",
            config.alloy_bin.display()
        ),
    }
    if !systemd {
        println!("no systemd here (or --root given): Alloy's service is not enabled or started");
    }
    if args.dry_run {
        println!("plan (dry run, nothing is changed):");
        for step in &plan {
            let text = step.to_string();
            println!("  {}", text.trim_end().replace('\n', "\n  "));
        }
        return Ok(ExitCode::SUCCESS);
    }
    install::execute(&plan).map_err(|e| Failure::Runtime(e.into()))?;
    let bin = install::locate_alloy(&config.alloy_bin, &root).ok_or_else(|| {
        Failure::Runtime(anyhow!(
            "Alloy is still not found after installing it (looked for {} and {})",
            config.alloy_bin.display(),
            install::under(&root, install::ALLOY_BIN).display()
        ))
    })?;
    let version = install::alloy_version(&bin).map_err(|e| Failure::Runtime(e.into()))?;
    let check = match muster_agent::alloy::check_for(Some(&version)) {
        muster_agent::alloy::Check::Validate => "alloy validate",
        muster_agent::alloy::Check::Fmt => "alloy fmt (older than 1.9: syntax only)",
    };
    println!(
        "Alloy {} at {}: configs are checked with {check}; it listens on {listen_addr}",
        version.text,
        bin.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn enroll_cmd(config_path: &std::path::Path, args: &EnrollArgs) -> Result<ExitCode, Failure> {
    let config = Config::merge_into_file(config_path, args.overrides()?)
        .map_err(|e| Failure::Usage(e.into()))?;
    let token = Token(args.token.clone());
    let identity = runtime()?
        .block_on(enroll::enroll(
            &config,
            &token,
            args.pin,
            &args.labels.iter().cloned().collect(),
            &Retry::default(),
        ))
        .map_err(|e| {
            let usage = e.is_usage();
            let e = anyhow!(e).context("enrollment failed");
            if usage {
                Failure::Usage(e)
            } else {
                Failure::Runtime(e)
            }
        })?;
    println!("enrolled as {}", identity.host_id);
    Ok(ExitCode::SUCCESS)
}

fn run_cmd(config_path: &std::path::Path, once: bool) -> Result<ExitCode, Failure> {
    let config = Config::read(config_path).map_err(|e| Failure::Usage(e.into()))?;
    let rt = runtime()?;
    rt.block_on(async {
        let mut agent = Agent::load(config, config_path).map_err(|e| {
            if e.is_usage() {
                Failure::Usage(e.into())
            } else {
                Failure::Runtime(e.into())
            }
        })?;
        let result = if once {
            agent.run_once().await
        } else {
            agent.run(shutdown_signal()).await
        };
        match result {
            Ok(()) => Ok(ExitCode::SUCCESS),
            Err(e) if e.is_revoked() => {
                // Its own exit code, so a service manager does not restart it
                // (RestartPreventExitStatus=3 in the systemd unit).
                eprintln!("muster-agent: {e}");
                Ok(ExitCode::from(muster_agent::run::EXIT_REVOKED))
            }
            Err(e) => Err(Failure::Runtime(e.into())),
        }
    })
}

fn status_cmd(config_path: &std::path::Path, json: bool) -> Result<ExitCode, Failure> {
    let config = match Config::read(config_path) {
        Ok(c) => c,
        // No config file yet: nothing can have been enrolled with it.
        Err(e) if e.is_missing() => Config::default(),
        Err(e) => return Err(Failure::Usage(e.into())),
    };
    let status = status::gather(&config, identity::unix_now())
        .context("cannot read the agent's state")
        .map_err(Failure::Runtime)?;
    if json {
        let text = serde_json::to_string_pretty(&status)
            .context("cannot encode the status")
            .map_err(Failure::Runtime)?;
        println!("{text}");
    } else {
        print!("{}", status::render(&status, config_path));
    }
    Ok(if status.enrolled {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
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
