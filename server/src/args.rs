//! The `muster-server` command line (clap definitions only; `main.rs`
//! dispatches, `cli` holds the admin client behind the admin commands).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use muster_shared::labels;

use crate::cli::{self, AdminArgs};
use crate::DEFAULT_DATA_DIR;

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
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Create a data dir: private CA, server certificate, settings, database, first admin token
    Init(InitArgs),
    /// Run the server (agent listener + admin listener)
    Serve(ServeArgs),
    /// Print the Alloy config and Prometheus target groups a host gets (--host)
    /// or would get (--facts FILE), with the templates and overrides on disk
    Render(crate::preview::RenderArgs),
    /// Alloy syntax tools: `alloy check FILE...`
    #[command(subcommand)]
    Alloy(crate::preview::AlloyCommand),
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
    /// Prometheus target files: compare them with the database and repair them
    #[command(subcommand)]
    Targets(TargetsCommand),
    /// The audit log: every admin action and enrollment attempt, with its source address
    Audit {
        /// Only entries about or by this host (or any other target: a token or batch id)
        #[arg(long, value_name = "ID")]
        host: Option<String>,
        /// Only entries by this actor: an admin token's name, a host id, or `server`
        #[arg(long, value_name = "NAME")]
        actor: Option<String>,
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
pub struct InitArgs {
    /// Directory for the server's state (created with mode 0700)
    #[arg(long, env = "MUSTER_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// Extra name (DNS name or IP) for the server certificate; repeatable. The machine's
    /// hostname, FQDN and non-loopback addresses, localhost and 127.0.0.1 are always included
    #[arg(long = "san", value_name = "NAME")]
    pub sans: Vec<String>,
    /// URL agents use to reach the server [default: https://<first --san, else this machine's primary address>:8443]
    #[arg(long)]
    pub public_url: Option<String>,
}

#[derive(clap::Args)]
pub struct ServeArgs {
    /// Directory holding server.toml, the CA, the database and target files
    #[arg(long, env = "MUSTER_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// Initialise the data dir first if it is not initialised yet (as `init` would)
    #[arg(long)]
    pub init: bool,
    /// With --init: extra certificate name, as for `init --san`
    #[arg(long = "san", value_name = "NAME", requires = "init")]
    pub sans: Vec<String>,
    /// Agent listener address (TLS) [default: server.toml's listen, 0.0.0.0:8443]
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Admin listener address (TLS, bearer token) [default: server.toml's admin_listen, 127.0.0.1:8444]
    #[arg(long)]
    pub admin_listen: Option<SocketAddr>,
    /// Directory for Prometheus file_sd target files [default: <data dir>/targets]
    #[arg(long)]
    pub targets_dir: Option<PathBuf>,
    /// Directory of operator templates (*.alloy.j2) [default: the templates built into this binary]
    #[arg(long)]
    pub templates_dir: Option<PathBuf>,
    /// Prometheus base URL to reload after target changes (needs --web.enable-lifecycle)
    #[arg(long)]
    pub prometheus_url: Option<String>,
    /// URL agents use to reach the agent listener, as written into /install.sh and enroll lines [default: server.toml's public_url]
    #[arg(long, value_name = "https://HOST:PORT")]
    pub public_url: Option<String>,
    /// Directory of agent binaries served at /v1/download/ for /install.sh: put the
    /// muster-agent-<os>-<arch> files there (e.g. muster-agent-linux-x86_64, from
    /// packaging/build); read at start-up [default: server.toml's downloads_dir, else <data dir>/downloads]
    #[arg(long, value_name = "DIR")]
    pub downloads_dir: Option<PathBuf>,
}

impl ServeArgs {
    /// The settings this command line overrides.
    pub fn overrides(&self) -> crate::settings::SettingsOverrides {
        crate::settings::SettingsOverrides {
            listen: self.listen,
            admin_listen: self.admin_listen,
            targets_dir: self.targets_dir.clone(),
            templates_dir: self.templates_dir.clone(),
            prometheus_url: self.prometheus_url.clone(),
            public_url: self.public_url.clone(),
            downloads_dir: self.downloads_dir.clone(),
        }
    }
}

#[derive(Subcommand)]
pub enum TargetsCommand {
    /// Rewrite every target file that differs from the database (missing,
    /// changed, a decommissioned host's still live, leftover temp files);
    /// with --check only list them and exit 1 if there are any
    Sync {
        /// The server's data dir (its server.toml names the targets dir)
        #[arg(long, env = "MUSTER_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
        /// Only report the differences; change nothing
        #[arg(long)]
        check: bool,
    },
}

#[derive(Subcommand)]
pub enum TokenCommand {
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
    /// Create a targets-reader token for Prometheus (http_sd at /v1/sd/targets
    /// and /metrics, nothing else) and print it: `> /etc/prometheus/muster-sd.token`
    CreateReader {
        /// What it is for, e.g. the Prometheus that uses it
        #[arg(long, default_value = "prometheus")]
        name: String,
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
    /// List targets-reader tokens (never their secrets)
    ListReaders {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Revoke a targets-reader token: it reads nothing more
    RevokeReader {
        /// Token id, as `token list-readers` shows it
        id: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(Subcommand)]
pub enum HostsCommand {
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
pub enum LabelsCommand {
    /// Check every active host against the label schema; exits 1 when one does not fit
    Check {
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(Subcommand)]
pub enum BatchCommand {
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
        input: Option<crate::batch::Format>,
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

pub fn parse_label(text: &str) -> Result<(String, String), String> {
    labels::parse_pair(text).map_err(|e| e.to_string())
}
