//! Pretend hosts for end-to-end tests and benchmarks: each has its own dir,
//! machine id, agent state and Alloy config file. [`PretendHost`]s share one
//! Alloy stand-in (used to check configs, and scraped by Prometheus for
//! every host), so fifty hosts cost fifty agent runs, not fifty daemons;
//! an [`AlloyHost`] has a stand-in of its own that loads what its agent
//! installs.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::process::{agent_command, hermetic, Process};
use crate::server::Server;
use crate::standin::Standin;

/// The stand-in's own config: it serves the metrics path of the unix
/// exporter every rendered config declares.
pub const SHARED_ALLOY_CONFIG: &str = "prometheus.exporter.unix \"default\" { }\n";

/// One Alloy stand-in shared by many pretend hosts.
pub struct SharedAlloy {
    pub standin: Standin,
}

impl SharedAlloy {
    pub async fn start(dir: &Path) -> SharedAlloy {
        std::fs::create_dir_all(dir).expect("shared alloy dir");
        let config = dir.join("shared.alloy");
        std::fs::write(&config, SHARED_ALLOY_CONFIG).expect("shared alloy config");
        let standin = Standin::start(&config);
        standin.wait_ready(Duration::from_secs(10)).await;
        SharedAlloy { standin }
    }
}

/// A fresh host's live Alloy config: valid, with no exporter yet.
pub const FIRST_ALLOY_CONFIG: &str = "logging {\n\tlevel = \"info\"\n}\n";

/// A pretend host's own files: `<root>/<name>/` with a machine id unique by
/// `index` and the first Alloy config. Returns (dir, alloy config path).
fn host_dir(root: &Path, name: &str, index: usize) -> (PathBuf, PathBuf) {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).expect("host dir");
    std::fs::write(
        dir.join("machine-id"),
        format!("{:032x}\n", 0x000f_1ee7_0000 + index),
    )
    .expect("machine-id");
    let alloy_config = dir.join("config.alloy");
    std::fs::write(&alloy_config, FIRST_ALLOY_CONFIG).expect("alloy config");
    (dir, alloy_config)
}

/// The agent binary beside the tests, detecting only this test's processes.
fn agent() -> Command {
    agent_command()
}

/// The arguments of `muster-agent enroll` for the host in `dir`: its
/// identity and state there, validated with the stand-in binary, reloaded by
/// `reload`, ready and scraped at `alloy`.
fn enroll_args(
    dir: &Path,
    alloy_config: &Path,
    alloy: &Standin,
    reload: &str,
    server_url: &str,
    token: &str,
    pin: &str,
) -> Vec<OsString> {
    let mut args: Vec<OsString> = [
        "enroll", "--server", server_url, "--token", token, "--pin", pin,
    ]
    .map(OsString::from)
    .to_vec();
    for (flag, value) in [
        ("--config", dir.join("agent.toml").into_os_string()),
        ("--state-dir", dir.join("state").into_os_string()),
        ("--alloy-config", alloy_config.as_os_str().to_owned()),
        ("--alloy-bin", Standin::bin().into_os_string()),
        ("--reload-command", reload.into()),
        ("--ready-url", format!("{}/-/ready", alloy.url()).into()),
        ("--scrape-address", alloy.addr().to_string().into()),
        ("--machine-id-file", dir.join("machine-id").into_os_string()),
    ] {
        args.push(flag.into());
        args.push(value);
    }
    args
}

/// `<agent> run --config <dir>/agent.toml` (`cmd` is the agent; `--once`
/// when asked).
fn run_command(mut cmd: Command, dir: &Path, once: bool) -> Command {
    cmd.arg("run").arg("--config").arg(dir.join("agent.toml"));
    if once {
        cmd.arg("--once");
    }
    cmd
}

/// A pretend host whose agent validates with the shared stand-in, reloads
/// nothing (`true`) and is scraped at the stand-in's address.
pub struct PretendHost {
    pub dir: PathBuf,
    pub hostname: String,
    pub alloy_config: PathBuf,
}

impl PretendHost {
    /// `index` makes the machine id unique.
    pub fn new(root: &Path, hostname: &str, index: usize) -> PretendHost {
        let (dir, alloy_config) = host_dir(root, hostname, index);
        PretendHost {
            dir,
            hostname: hostname.to_string(),
            alloy_config,
        }
    }

    pub fn agent_config(&self) -> PathBuf {
        self.dir.join("agent.toml")
    }

    /// `muster-agent enroll` with this host's identity.
    pub fn enroll(&self, server_url: &str, token: &str, pin: &str, alloy: &SharedAlloy) -> Command {
        let mut cmd = agent();
        cmd.args(enroll_args(
            &self.dir,
            &self.alloy_config,
            &alloy.standin,
            "true",
            server_url,
            token,
            pin,
        ));
        cmd.args(["--hostname", &self.hostname]);
        cmd
    }

    /// `muster-agent run --once` (or the daemon without `once`).
    pub fn run(&self, once: bool) -> Command {
        run_command(agent(), &self.dir, once)
    }
}

/// A pretend host with an Alloy stand-in of its own, which its agent reloads
/// with SIGHUP as `systemctl reload alloy` does; the stand-in loads the
/// configs the agent installs and serves their exporters.
pub struct AlloyHost {
    pub dir: PathBuf,
    pub alloy_config: PathBuf,
    pub standin: Standin,
}

impl AlloyHost {
    /// `index` makes the machine id unique.
    pub async fn new(root: &Path, name: &str, index: usize) -> AlloyHost {
        let (dir, alloy_config) = host_dir(root, name, index);
        let standin = Standin::start(&alloy_config);
        standin.wait_ready(Duration::from_secs(10)).await;
        AlloyHost {
            dir,
            alloy_config,
            standin,
        }
    }

    pub fn agent_config(&self) -> PathBuf {
        self.dir.join("agent.toml")
    }

    /// Sets `key = value` (`value` in TOML) in the agent's config file,
    /// replacing the line `enroll` wrote for it.
    pub fn set_agent_option(&self, key: &str, value: &str) {
        let path = self.agent_config();
        let text = std::fs::read_to_string(&path).expect("agent.toml");
        let line = format!("{key} = {value}");
        let mut lines: Vec<String> = text
            .lines()
            .filter(|l| !l.starts_with(&format!("{key} =")))
            .map(str::to_string)
            .collect();
        // Before any [table], where a top-level key belongs.
        lines.insert(0, line);
        std::fs::write(&path, lines.join("\n") + "\n").expect("agent.toml");
    }

    /// `muster-agent enroll` against `server`, with the OS hostname.
    pub fn enroll(&self, server: &Server, token: &str, pin: &str) -> Command {
        self.enroll_with(agent(), server, token, pin)
    }

    /// [`AlloyHost::enroll`] with another agent command (an agent built for
    /// another architecture, run by an emulator).
    pub fn enroll_with(
        &self,
        mut agent: Command,
        server: &Server,
        token: &str,
        pin: &str,
    ) -> Command {
        hermetic(&mut agent);
        agent.args(enroll_args(
            &self.dir,
            &self.alloy_config,
            &self.standin,
            &format!("kill -HUP {}", self.standin.pid()),
            &server.agent_url(),
            token,
            pin,
        ));
        agent
    }

    /// The agent daemon, logging at debug level.
    pub fn run_daemon(&self) -> Process {
        Process::spawn(run_command(agent(), &self.dir, false).env("MUSTER_LOG", "debug"))
    }

    /// `run` with `agent` as the agent command as it is (not made to detect
    /// only this process's tree), logging with the `MUSTER_LOG` filter `log`.
    pub fn run_daemon_with(&self, agent: Command, log: &str) -> Process {
        Process::spawn(run_command(agent, &self.dir, false).env("MUSTER_LOG", log))
    }

    /// `run --once` with `agent` as the agent command.
    pub fn run_once_with(&self, mut agent: Command) -> Command {
        hermetic(&mut agent);
        run_command(agent, &self.dir, true)
    }
}

/// `muster-server init --data-dir DATA`, which must succeed; returns the
/// server key pin it printed.
pub fn init(data: &Path) -> String {
    let out = Server::init(data, &[]);
    assert!(out.status.success(), "init failed: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.trim().strip_prefix("server public-key pin: "))
        .expect("init prints the pin")
        .to_string()
}

/// An admin API call that must succeed; its JSON answer.
pub async fn admin(
    server: &Server,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> Value {
    let mut req = server
        .client()
        .request(method, format!("{}{path}", server.admin_url()))
        .bearer_auth(server.admin_token());
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("admin request");
    let status = resp.status();
    let body: Value = resp.json().await.expect("admin JSON");
    assert!(status.is_success(), "{status}: {body}\n{}", server.logs());
    body
}

/// Appends lines to `<data dir>/server.toml`.
/// A new enrollment token made from `body` (`POST /v1/admin/tokens`):
/// the answer, with `token` and `install_command`.
pub async fn new_token(server: &Server, body: Value) -> Value {
    admin(
        server,
        reqwest::Method::POST,
        "/v1/admin/tokens",
        Some(body),
    )
    .await
}

pub fn append_settings(data: &Path, text: &str) {
    let path = data.join("server.toml");
    let mut toml = std::fs::read_to_string(&path).expect("server.toml");
    toml.push_str(text);
    std::fs::write(&path, toml).expect("write server.toml");
}

/// Replaces settings lines of the default `<data dir>/server.toml`
/// (`(from, to)` pairs); panics if a `from` line is not there.
pub fn edit_settings(data: &Path, edits: &[(&str, &str)]) {
    let path = data.join("server.toml");
    let mut toml = std::fs::read_to_string(&path).expect("server.toml");
    for (from, to) in edits {
        assert!(toml.contains(from), "{from} not in the default server.toml");
        toml = toml.replace(from, to);
    }
    std::fs::write(&path, toml).expect("write server.toml");
}

/// Agents check in every second, so tests and benchmarks need not wait.
pub const FAST_CHECKINS: (&str, &str) = ("checkin_interval = \"30s\"", "checkin_interval = \"1s\"");

/// `overrides.toml` turning off every service the agents could detect: the
/// pretend hosts all run on this machine, whose processes (other tests'
/// stand-in postgres or nginx included) are not theirs, and the shared
/// stand-in serves only the unix exporter.
pub const NO_DETECTED_SERVICES: &str = "[[rule]]\n\
    [rule.services.postgres]\nenabled = false\n\
    [rule.services.mysql]\nenabled = false\n\
    [rule.services.redis]\nenabled = false\n\
    [rule.services.nginx]\nenabled = false\n\
    [rule.services.docker]\nenabled = false\n\
    [rule.services.journal]\nenabled = false\n";

/// Writes [`NO_DETECTED_SERVICES`] as `<data dir>/overrides.toml`.
pub fn disable_detected_services(data: &Path) {
    std::fs::write(data.join("overrides.toml"), NO_DETECTED_SERVICES).expect("overrides.toml");
}

/// A CSV batch file for `hostnames`, each with `environment=batch-test` and
/// a `location` per host.
pub fn batch_csv(hostnames: &[String]) -> String {
    let mut csv = String::from("hostname,environment,location\n");
    for (i, h) in hostnames.iter().enumerate() {
        csv.push_str(&format!("{h},batch-test,rack-{}\n", i % 4));
    }
    csv
}
