//! The real `muster-server` in a test: `init`, and `serve` on loopback port 0
//! with its two listening addresses read from its stdout.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::process::{bin_path, run, Process, START_DEADLINE};

/// A running `muster-server serve`, killed on drop.
pub struct Server {
    process: Process,
    data_dir: PathBuf,
    agent_addr: SocketAddr,
    admin_addr: SocketAddr,
}

/// Extra arguments and environment for [`Server`]; [`ServerBuilder::start`]
/// runs it.
pub struct ServerBuilder {
    data_dir: PathBuf,
    listen: String,
    args: Vec<OsString>,
    envs: Vec<(OsString, OsString)>,
    program: Option<PathBuf>,
    deadline: Duration,
    cpus: Option<String>,
}

impl Server {
    /// `muster-server serve --data-dir D --listen 127.0.0.1:0 --admin-listen
    /// 127.0.0.1:0`, once both listeners are up.
    pub fn start(data_dir: &Path) -> Server {
        Server::builder(data_dir).start()
    }

    pub fn builder(data_dir: &Path) -> ServerBuilder {
        ServerBuilder {
            data_dir: data_dir.to_path_buf(),
            listen: "127.0.0.1:0".to_string(),
            args: Vec::new(),
            envs: Vec::new(),
            program: None,
            deadline: START_DEADLINE,
            cpus: None,
        }
    }

    /// `muster-server init --data-dir D EXTRA…`, whatever its exit status.
    pub fn init(data_dir: &Path, extra_args: &[&str]) -> Output {
        run(Command::new(bin_path("muster-server"))
            .arg("init")
            .arg("--data-dir")
            .arg(data_dir)
            .args(extra_args))
    }

    /// `https://127.0.0.1:PORT` of the agent listener.
    pub fn agent_url(&self) -> String {
        format!("https://{}", self.agent_addr)
    }

    /// `https://127.0.0.1:PORT` of the admin listener.
    pub fn admin_url(&self) -> String {
        format!("https://{}", self.admin_addr)
    }

    pub fn agent_addr(&self) -> SocketAddr {
        self.agent_addr
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// The agent listener's `GET /v1/download/`: the agent binaries it
    /// serves, each `{"name", "sha256", ...}`.
    pub async fn download_index(&self) -> Vec<serde_json::Value> {
        self.client()
            .get(format!("{}/v1/download/", self.agent_url()))
            .send()
            .await
            .expect("download index")
            .json()
            .await
            .expect("download index JSON")
    }

    /// The text of `host_id`'s target file in `<data dir>/targets` once
    /// the reconciler has written it: an enrollment's file is written in
    /// the background, just after the agent's answer.
    pub async fn target_file(&self, host_id: &str) -> String {
        self.written(
            &self
                .data_dir
                .join("targets")
                .join(format!("{host_id}.json")),
        )
        .await
    }

    /// The text of `path` once it exists (up to 30 s; the server's logs in
    /// the failure).
    pub async fn written(&self, path: &Path) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match std::fs::read_to_string(path) {
                Ok(text) => return text,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => panic!("reading {}: {e}", path.display()),
            }
            assert!(
                Instant::now() < deadline,
                "{} never written\n{}",
                path.display(),
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// An HTTPS client that trusts only the server's CA (`<data dir>/ca.crt`,
    /// written by `init`), for both listeners. No client certificate.
    pub fn client(&self) -> reqwest::Client {
        let path = self.data_dir.join("ca.crt");
        let pem = std::fs::read(&path)
            .unwrap_or_else(|e| panic!("reading {}: {e}\n{}", path.display(), self.logs()));
        let ca = reqwest::Certificate::from_pem(&pem)
            .unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()));
        crate::install_crypto();
        reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .tls_certs_only([ca])
            .build()
            .expect("a client trusting one CA builds")
    }

    /// The admin token `init` saved in `<data dir>/admin.token`.
    pub fn admin_token(&self) -> String {
        let path = self.data_dir.join("admin.token");
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
            .trim()
            .to_string()
    }

    /// Stops the server as its unit does (SIGTERM) and waits up to
    /// `deadline` for it to exit; `None` if it has not (it is then killed).
    pub fn terminate(mut self, deadline: Duration) -> Option<std::process::ExitStatus> {
        // SAFETY: signalling our own child, not reaped yet.
        unsafe { libc::kill(self.process.pid() as i32, libc::SIGTERM) };
        self.process.wait_exit(deadline)
    }

    /// The command line, stdout and stderr so far: for panic messages.
    pub fn logs(&self) -> String {
        self.process.logs()
    }
}

impl ServerBuilder {
    /// The agent listener's address instead of `127.0.0.1:0` (for a URL
    /// that must be known before start, such as `--public-url`).
    pub fn listen(mut self, addr: std::net::SocketAddr) -> Self {
        self.listen = addr.to_string();
        self
    }

    /// An argument appended after the defaults.
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: Into<OsString>>(mut self, args: I) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Runs this `muster-server` executable instead of the one built beside
    /// the tests (a copy elsewhere has no `muster-agent` beside it).
    pub fn program(mut self, path: &Path) -> Self {
        self.program = Some(path.to_path_buf());
        self
    }

    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.envs.push((key.into(), value.into()));
        self
    }

    /// How long start-up may take (a data dir with 100,000 hosts takes
    /// longer than the default).
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// Runs the server on these CPUs only (`taskset -c CPUS`), as a
    /// benchmark pins it apart from its load.
    pub fn cpus(mut self, cpus: &str) -> Self {
        self.cpus = Some(cpus.to_string());
        self
    }

    /// Starts the server and waits for its `listening on ADDR (agents)` and
    /// `listening on ADDR (admin)` lines; panics with its output if they do
    /// not come within the start deadline.
    pub fn start(self) -> Server {
        let program = self
            .program
            .clone()
            .unwrap_or_else(|| bin_path("muster-server"));
        let mut command = match &self.cpus {
            Some(cpus) => {
                let mut c = Command::new("taskset");
                c.args(["-c", cpus]).arg(program);
                c
            }
            None => Command::new(program),
        };
        let mut process = Process::spawn(
            command
                .arg("serve")
                .arg("--data-dir")
                .arg(&self.data_dir)
                .args([
                    "--listen",
                    self.listen.as_str(),
                    "--admin-listen",
                    "127.0.0.1:0",
                ])
                .args(&self.args)
                .envs(self.envs.iter().map(|(k, v)| (k, v))),
        );
        let until = Instant::now() + self.deadline;
        let (mut agent_addr, mut admin_addr) = (None, None);
        let (agent_addr, admin_addr) = loop {
            if let (Some(agent), Some(admin)) = (agent_addr, admin_addr) {
                break (agent, admin);
            }
            let line = process
                .wait_for_line(until.saturating_duration_since(Instant::now()), |l| {
                    l.starts_with("listening on ")
                });
            match parse_listening(&line) {
                Some((addr, "agents")) => agent_addr = Some(addr),
                Some((addr, "admin")) => admin_addr = Some(addr),
                _ => panic!("unexpected line {line:?}\n{}", process.logs()),
            }
        };
        Server {
            process,
            data_dir: self.data_dir,
            agent_addr,
            admin_addr,
        }
    }
}

/// Address and role of a `listening on 127.0.0.1:PORT (role)` line.
pub fn parse_listening(line: &str) -> Option<(SocketAddr, &str)> {
    let rest = line.strip_prefix("listening on ")?;
    let (addr, role) = match rest.split_once(' ') {
        Some((addr, role)) => (addr, role.trim()),
        None => (rest.trim(), ""),
    };
    let role = if role.is_empty() {
        role
    } else {
        role.strip_prefix('(')?.strip_suffix(')')?
    };
    Some((addr.parse().ok()?, role))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_listening_lines() {
        let addr: SocketAddr = "127.0.0.1:40001".parse().expect("addr");
        assert_eq!(
            parse_listening("listening on 127.0.0.1:40001 (agents)"),
            Some((addr, "agents"))
        );
        assert_eq!(
            parse_listening("listening on 127.0.0.1:40001 (admin)"),
            Some((addr, "admin"))
        );
        assert_eq!(
            parse_listening("listening on 127.0.0.1:40001"),
            Some((addr, ""))
        );
        assert_eq!(
            parse_listening("listening on [::1]:8443 (agents)").map(|(a, _)| a.port()),
            Some(8443)
        );
        assert_eq!(parse_listening("listening on nowhere (admin)"), None);
        assert_eq!(parse_listening("starting"), None);
    }
}
