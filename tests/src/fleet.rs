//! Many pretend hosts for fleet tests and benchmarks: each has its own dir,
//! machine id, hostname, agent state and Alloy config file, and they share
//! one Alloy stand-in (used to check configs, and scraped by Prometheus for
//! every host), so fifty hosts cost fifty agent runs, not fifty daemons.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::process::bin_path;
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
        let dir = root.join(hostname);
        std::fs::create_dir_all(&dir).expect("host dir");
        std::fs::write(
            dir.join("machine-id"),
            format!("{:032x}\n", 0x000f_1ee7_0000 + index),
        )
        .expect("machine-id");
        let alloy_config = dir.join("config.alloy");
        std::fs::write(&alloy_config, "logging {\n\tlevel = \"info\"\n}\n").expect("alloy config");
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
        let mut cmd = Command::new(bin_path("muster-agent"));
        cmd.arg("enroll")
            .args(["--server", server_url, "--token", token, "--pin", pin])
            .arg("--config")
            .arg(self.agent_config())
            .arg("--state-dir")
            .arg(self.dir.join("state"))
            .arg("--alloy-config")
            .arg(&self.alloy_config)
            .arg("--alloy-bin")
            .arg(Standin::bin())
            .args(["--reload-command", "true"])
            .arg("--ready-url")
            .arg(format!("{}/-/ready", alloy.standin.url()))
            .arg("--scrape-address")
            .arg(alloy.standin.addr().to_string())
            .args(["--hostname", &self.hostname])
            .arg("--machine-id-file")
            .arg(self.dir.join("machine-id"));
        cmd
    }

    /// `muster-agent run --once` (or the daemon without `once`).
    pub fn run(&self, once: bool) -> Command {
        let mut cmd = Command::new(bin_path("muster-agent"));
        cmd.arg("run").arg("--config").arg(self.agent_config());
        if once {
            cmd.arg("--once");
        }
        cmd
    }
}

/// The pin `muster-server init` printed.
pub fn pin_of_init(stdout: &[u8]) -> String {
    String::from_utf8_lossy(stdout)
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
pub fn append_settings(data: &Path, text: &str) {
    let path = data.join("server.toml");
    let mut toml = std::fs::read_to_string(&path).expect("server.toml");
    toml.push_str(text);
    std::fs::write(&path, toml).expect("write server.toml");
}

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
