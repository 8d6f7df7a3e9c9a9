//! The `muster-agent` command line as clap definitions, and the `enroll`
//! flags as config overrides. Parsing only: `commands` carries them out.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use muster_shared::pin::Pin;

use crate::config::{default_path, Overrides};

/// Muster agent: enrolls this host with a Muster server, then keeps its
/// Grafana Alloy config current.
#[derive(Parser)]
#[command(name = "muster-agent", version)]
pub struct Cli {
    /// Agent config file.
    #[arg(long, global = true, value_name = "FILE", env = "MUSTER_AGENT_CONFIG", default_value_os_t = default_path())]
    pub config: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
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
    /// Run as the Windows service MusterAgent (the MSI registers it): the
    /// same loop as `run`, started and stopped by the service control manager.
    #[cfg(windows)]
    Service,
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
pub struct InstallAlloyArgs {
    /// Print the plan, change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Treat DIR as the filesystem root: files go under it and apt/dpkg/rpm
    /// use it; no service is touched (image builds, tests).
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Where Alloy's HTTP server listens [default: 0.0.0.0:<port of scrape_address, else 12345>].
    #[arg(long, value_name = "HOST:PORT")]
    pub listen_addr: Option<String>,
}

#[derive(Args)]
pub struct EnrollArgs {
    /// Server base URL.
    #[arg(long, value_name = "https://HOST:PORT")]
    pub server: String,
    /// Enrollment token (or the MUSTER_ENROLL_TOKEN environment variable, which
    /// keeps it out of the process list).
    #[arg(long, env = "MUSTER_ENROLL_TOKEN", hide_env_values = true)]
    pub token: String,
    /// SHA-256 pin of the server's public key, as curl --pinnedpubkey takes it.
    #[arg(long, value_name = "sha256//BASE64")]
    pub pin: Pin,
    /// Where the key, certificates and state live.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// The Alloy config file to manage.
    #[arg(long, value_name = "FILE")]
    pub alloy_config: Option<PathBuf>,
    /// The Alloy binary.
    #[arg(long, value_name = "BIN")]
    pub alloy_bin: Option<PathBuf>,
    /// Alloy's /-/reload URL [default: the ready URL's host and port].
    #[arg(long, value_name = "URL")]
    pub reload_url: Option<String>,
    /// Command that reloads Alloy when nothing answers at the reload URL,
    /// split on whitespace (no shell).
    #[arg(long, value_name = "COMMAND")]
    pub reload_command: Option<String>,
    /// Alloy's readiness URL.
    #[arg(long, value_name = "URL")]
    pub ready_url: Option<String>,
    /// host:port where Prometheus reaches this host's Alloy.
    #[arg(long, value_name = "HOST:PORT")]
    pub scrape_address: Option<String>,
    /// Hostname to report instead of the OS's.
    #[arg(long, value_name = "NAME")]
    pub hostname: Option<String>,
    /// File holding this machine's id.
    #[arg(long, value_name = "FILE")]
    pub machine_id_file: Option<PathBuf>,
    /// A label this host asks for, as name=value; repeatable. The token's
    /// preset labels win over these.
    #[arg(long = "label", value_name = "NAME=VALUE", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
}

fn parse_label(text: &str) -> Result<(String, String), String> {
    muster_shared::labels::parse_pair(text).map_err(|e| e.to_string())
}

impl EnrollArgs {
    /// The flags as config values. Relative paths are made absolute: the
    /// daemon will not run from the directory enroll was run in.
    pub fn overrides(&self) -> anyhow::Result<Overrides> {
        let absolute = |p: &Option<PathBuf>| -> anyhow::Result<Option<PathBuf>> {
            p.as_deref()
                .map(|p| {
                    std::path::absolute(p)
                        .with_context(|| format!("cannot make {} absolute", p.display()))
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
            reload_url: self.reload_url.clone(),
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
