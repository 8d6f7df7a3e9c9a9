//! What each `muster-agent` subcommand does, from parsed flags to an exit
//! code: the work behind a thin `main.rs`. Exit codes: 0 ok, 1 runtime
//! failure, 3 certificate revoked, 64 bad config or usage.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, Context};

use crate::alloy::command;
use crate::alloy::version::{check_for, Check};
use crate::cli::{Command, EnrollArgs, InstallAlloyArgs};
use crate::config::{Config, ALLOY_PORT};
use crate::enroll::{self, Retry, Token};
use crate::run::{Agent, EXIT_REVOKED};
use crate::{identity, install, status};

/// How a command failed.
pub enum Failure {
    /// Bad flags or config: exit 64.
    Usage(anyhow::Error),
    /// Anything else: exit 1.
    Runtime(anyhow::Error),
}

impl Failure {
    /// Prints the error and gives the exit code.
    pub fn exit(self) -> ExitCode {
        let (e, code) = match self {
            Failure::Usage(e) => (e, ExitCode::from(64)),
            Failure::Runtime(e) => (e, ExitCode::FAILURE),
        };
        eprintln!("muster-agent: {e:#}");
        code
    }
}

fn runtime_failure(e: impl Into<anyhow::Error>) -> Failure {
    Failure::Runtime(e.into())
}

/// Runs `command`; `shutdown` completes when the daemon should stop.
pub fn dispatch(
    config: &Path,
    command: Command,
    shutdown: impl Future<Output = ()>,
) -> Result<ExitCode, Failure> {
    match command {
        Command::Enroll(args) => enroll_cmd(config, &args),
        Command::Run { once } => run_cmd(config, once, shutdown),
        Command::Status { json } => status_cmd(config, json),
        Command::InstallAlloy(args) => install_alloy_cmd(config, &args),
        #[cfg(windows)]
        Command::Service => crate::service::run(config)
            .map(|()| ExitCode::SUCCESS)
            .context("cannot run as a Windows service (only the service control manager starts `muster-agent service`)")
            .map_err(Failure::Runtime),
    }
}

/// One thread: a command does one thing at a time (the daemon, one
/// check-in), so worker threads would only cost memory (a stack and a
/// malloc arena each). Blocking work (detection, name lookups) still runs on
/// tokio's blocking pool, whose threads end when idle.
fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
        .map_err(Failure::Runtime)
}

/// The config file, or the defaults when there is none yet.
fn config_or_default(path: &Path) -> Result<Config, Failure> {
    match Config::read(path) {
        Ok(c) => Ok(c),
        Err(e) if e.is_missing() => Ok(Config::default()),
        Err(e) => Err(Failure::Usage(e.into())),
    }
}

fn install_alloy_cmd(config_path: &Path, args: &InstallAlloyArgs) -> Result<ExitCode, Failure> {
    let config = config_or_default(config_path)?;
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
            .unwrap_or(ALLOY_PORT);
        format!("0.0.0.0:{port}")
    });
    let os = install::read_os(&root).map_err(runtime_failure)?;
    let mirror = config.alloy_mirror.clone().unwrap_or_default();
    let found = install::locate_alloy(&config.alloy_bin, &root);
    let systemd = args.root.is_none() && Path::new("/run/systemd/system").is_dir();
    // The services running here decide the groups; a private root is not
    // this host.
    let groups = match args.root {
        None => install::groups_for(&crate::detect::services()),
        Some(_) => Vec::new(),
    };
    let plan = install::alloy_plan(&install::Request {
        os: &os,
        mirror: &mirror,
        root: &root,
        alloy_present: found.is_some(),
        listen_addr: &listen_addr,
        systemd,
        groups: &groups,
        downloads: &config.state_dir,
    })
    .map_err(runtime_failure)?;
    match &found {
        Some(bin) => println!("Alloy is installed: {}", bin.display()),
        None => println!(
            "Alloy is not installed ({} not found): installing it",
            config.alloy_bin.display()
        ),
    }
    if !systemd && !cfg!(windows) {
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
    install::execute(&plan).map_err(runtime_failure)?;
    let bin = install::locate_alloy(&config.alloy_bin, &root).ok_or_else(|| {
        Failure::Runtime(anyhow!(
            "Alloy is still not found after installing it (looked for {} and {})",
            config.alloy_bin.display(),
            install::under(&root, install::ALLOY_BIN).display()
        ))
    })?;
    let version = runtime()?
        .block_on(command::version(&bin, Duration::from_secs(20)))
        .map_err(|e| anyhow!("{e}; this does not look like a working Grafana Alloy"))
        .map_err(Failure::Runtime)?;
    let check = match check_for(Some(&version)) {
        Check::Validate => "alloy validate",
        Check::Fmt => "alloy fmt (older than 1.9: syntax only)",
    };
    println!(
        "Alloy {} at {}: configs are checked with {check}; it listens on {listen_addr}",
        version.text,
        bin.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn enroll_cmd(config_path: &Path, args: &EnrollArgs) -> Result<ExitCode, Failure> {
    let overrides = args.overrides().map_err(Failure::Usage)?;
    let config =
        Config::merge_into_file(config_path, overrides).map_err(|e| Failure::Usage(e.into()))?;
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

fn run_cmd(
    config_path: &Path,
    once: bool,
    shutdown: impl Future<Output = ()>,
) -> Result<ExitCode, Failure> {
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
            agent.run(shutdown).await
        };
        match result {
            Ok(()) => Ok(ExitCode::SUCCESS),
            Err(e) if e.is_revoked() => {
                // Its own exit code, so a service manager does not restart it
                // (RestartPreventExitStatus=3 in the systemd unit).
                eprintln!("muster-agent: {e}");
                Ok(ExitCode::from(EXIT_REVOKED))
            }
            Err(e) => Err(Failure::Runtime(e.into())),
        }
    })
}

fn status_cmd(config_path: &Path, json: bool) -> Result<ExitCode, Failure> {
    // No config file yet: nothing can have been enrolled with it.
    let config = config_or_default(config_path)?;
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
