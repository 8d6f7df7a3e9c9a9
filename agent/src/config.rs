//! The agent's configuration file (`/etc/muster/agent.toml`;
//! `%ProgramData%\Muster\agent.toml` on Windows): its fields and defaults,
//! pure parsing from TOML text, and reading and writing the file.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use muster_shared::mirror::AlloyMirror;
use reqwest::Url;
use serde::{Deserialize, Serialize};

use crate::atomic_file;

/// Where the agent looks for its configuration unless told otherwise.
#[cfg(not(windows))]
pub fn default_path() -> PathBuf {
    PathBuf::from("/etc/muster/agent.toml")
}

/// Where the agent looks for its configuration unless told otherwise.
#[cfg(windows)]
pub fn default_path() -> PathBuf {
    windows_dirs::data().join("agent.toml")
}

/// The Windows folders the defaults live in: `%ProgramData%\Muster` (config
/// and state) and Alloy's install folder, `%ProgramFiles%\GrafanaLabs\Alloy`,
/// where its installer puts `alloy-windows-amd64.exe` and `config.alloy`.
#[cfg(windows)]
pub mod windows_dirs {
    use std::path::PathBuf;

    fn known(var: &str, fallback: &str) -> PathBuf {
        std::env::var_os(var)
            .filter(|v| !v.is_empty())
            .map_or_else(|| PathBuf::from(fallback), PathBuf::from)
    }

    /// `%ProgramData%\Muster`.
    pub fn data() -> PathBuf {
        known("ProgramData", r"C:\ProgramData").join("Muster")
    }

    /// `%ProgramFiles%\GrafanaLabs\Alloy`.
    pub fn alloy() -> PathBuf {
        known("ProgramFiles", r"C:\Program Files")
            .join("GrafanaLabs")
            .join("Alloy")
    }
}
/// How often services are detected unless `detect_interval` says otherwise.
pub const DEFAULT_DETECT_INTERVAL: Duration = Duration::from_secs(300);

/// The port Alloy's HTTP server listens on by default.
pub const ALLOY_PORT: u16 = 12345;

/// Everything the agent needs to run. Every field but `server` has a default
/// that fits a host with Alloy installed from Grafana's packages.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Base URL of the Muster server, `https://HOST:PORT`. Required to run;
    /// `muster-agent enroll --server` sets it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// Where the key, certificates, identity and apply state live.
    pub state_dir: PathBuf,
    /// The live Alloy config file the agent manages.
    pub alloy_config: PathBuf,
    /// The Alloy binary used to validate configs (looked up in `PATH` when it
    /// has no slash).
    pub alloy_bin: PathBuf,
    /// Alloy's `/-/reload` URL, which loads the new config and answers with
    /// Alloy's verdict. Default: `ready_url` with the path `/-/reload`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reload_url: Option<String>,
    /// Command (argv, no shell) that reloads Alloy when nothing answers at
    /// the reload URL (Alloy not running yet): a service reload.
    pub reload_command: Vec<String>,
    /// Polled after a reload until it answers 200. Plain `http://` (Alloy's
    /// default): the agent trusts no public CAs, so an `https://` URL fails.
    pub ready_url: String,
    /// How long to wait for `ready_url` after a reload (humantime: "30s", "2m").
    #[serde(with = "duration_text")]
    pub ready_timeout: Duration,
    /// How often the agent looks again at this host's facts (the services
    /// running here above all: a walk over every process) and sends them
    /// when they changed; it also looks at start. Check-ins in between only
    /// poll, which keeps them cheap (humantime: "5m", "1h").
    #[serde(with = "duration_text")]
    pub detect_interval: Duration,
    /// `host:port` where Prometheus reaches this host's Alloy. Default: the
    /// address this host uses to reach the server, port 12345.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scrape_address: Option<String>,
    /// Overrides the OS hostname reported to the server.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// File holding this machine's stable id.
    pub machine_id_file: PathBuf,
    /// Where `install-alloy` installs Alloy from instead of Grafana's
    /// repositories (`apt`, `rpm`, `key` URLs); install.sh writes it from the
    /// server's setting.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alloy_mirror: Option<AlloyMirror>,
    /// Alloy's environment file, whose `CUSTOM_ARGS` flags `alloy validate`
    /// is given too. Default: `/etc/default/alloy`, else
    /// `/etc/sysconfig/alloy`, whichever exists.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alloy_env_file: Option<PathBuf>,
}

/// The defaults that differ by OS: where the state, Alloy's config and
/// binary and the machine id are, and how Alloy is told to reload.
struct OsDefaults {
    state_dir: PathBuf,
    alloy_config: PathBuf,
    alloy_bin: PathBuf,
    reload_command: Vec<String>,
    machine_id_file: PathBuf,
}

/// Grafana's Linux packages: systemd unit `alloy` (`systemctl reload` =
/// SIGHUP, when Alloy does not answer at its reload URL).
#[cfg(not(windows))]
fn os_defaults() -> OsDefaults {
    OsDefaults {
        state_dir: PathBuf::from("/var/lib/muster"),
        alloy_config: PathBuf::from("/etc/alloy/config.alloy"),
        alloy_bin: PathBuf::from("alloy"),
        reload_command: ["systemctl", "reload", "alloy"].map(String::from).to_vec(),
        machine_id_file: PathBuf::from("/etc/machine-id"),
    }
}

/// Alloy's Windows installer: the service `Alloy`, restarted when Alloy does
/// not answer at its reload URL (there is no SIGHUP); the machine id is the
/// registry's MachineGuid unless the file exists.
#[cfg(windows)]
fn os_defaults() -> OsDefaults {
    let alloy = windows_dirs::alloy();
    OsDefaults {
        state_dir: windows_dirs::data().join("state"),
        alloy_config: alloy.join("config.alloy"),
        alloy_bin: alloy.join("alloy-windows-amd64.exe"),
        reload_command: [
            "powershell.exe",
            "-NoProfile",
            "-NonInteractive",
            "-Command",
            "Restart-Service -Name Alloy",
        ]
        .map(String::from)
        .to_vec(),
        machine_id_file: windows_dirs::data().join("machine-id"),
    }
}

impl Default for Config {
    fn default() -> Config {
        let os = os_defaults();
        Config {
            server: None,
            state_dir: os.state_dir,
            alloy_config: os.alloy_config,
            alloy_bin: os.alloy_bin,
            reload_url: None,
            reload_command: os.reload_command,
            ready_url: format!("http://127.0.0.1:{ALLOY_PORT}/-/ready"),
            ready_timeout: Duration::from_secs(30),
            detect_interval: DEFAULT_DETECT_INTERVAL,
            scrape_address: None,
            hostname: None,
            machine_id_file: os.machine_id_file,
            alloy_mirror: None,
            alloy_env_file: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Syntax(String),
    #[error("{field}: {problem}")]
    Value {
        field: &'static str,
        problem: String,
    },
    #[error("config file {}: {error}", path.display())]
    InFile {
        path: PathBuf,
        error: Box<ConfigError>,
    },
    #[error("cannot read config file {}: {error}", path.display())]
    Read { path: PathBuf, error: io::Error },
    #[error("cannot write config file {}: {error}", path.display())]
    Write { path: PathBuf, error: io::Error },
    #[error("no server in config file {}: run `muster-agent enroll --server ...` first", path.display())]
    NoServer { path: PathBuf },
}

impl ConfigError {
    /// Whether the file is simply not there (as opposed to unreadable or wrong).
    pub fn is_missing(&self) -> bool {
        matches!(self, ConfigError::Read { error, .. } if error.kind() == io::ErrorKind::NotFound)
    }
}

fn value_error(field: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError::Value {
        field,
        problem: problem.into(),
    }
}

impl Config {
    /// Parses and checks a config from TOML text. Unknown fields are refused,
    /// so a typo never silently falls back to a default.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
            let message = e.message().trim().to_string();
            ConfigError::Syntax(match line {
                Some(line) => format!("line {line}: {message}"),
                None => message,
            })
        })?;
        config.check()?;
        Ok(config)
    }

    /// Reads and checks the config file at `path`.
    pub fn read(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.to_owned(),
            error,
        })?;
        Config::from_toml(&text).map_err(|e| ConfigError::InFile {
            path: path.to_owned(),
            error: Box::new(e),
        })
    }

    /// The config as TOML text, with a header saying who wrote it.
    pub fn to_toml(&self) -> Result<String, ConfigError> {
        let body = toml::to_string(self).map_err(|e| ConfigError::Syntax(e.to_string()))?;
        Ok(format!(
            "# Muster agent configuration, written by `muster-agent enroll`.\n\
             # Re-running enroll merges its flags over this file.\n{body}"
        ))
    }

    /// Writes the config to `path` (mode 0644, atomically), creating the
    /// parent directory when needed.
    pub fn write(&self, path: &Path) -> Result<(), ConfigError> {
        let text = self.to_toml()?;
        let write_error = |error| ConfigError::Write {
            path: path.to_owned(),
            error,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(write_error)?;
        }
        atomic_file::write_atomic(path, text.as_bytes(), 0o644).map_err(write_error)
    }

    /// Checks the values that parsing alone cannot.
    pub fn check(&self) -> Result<(), ConfigError> {
        if let Some(server) = &self.server {
            parse_server(server)?;
        }
        if self
            .reload_command
            .first()
            .filter(|c| !c.trim().is_empty())
            .is_none()
        {
            return Err(value_error("reload_command", "must name a program"));
        }
        if self.alloy_bin.as_os_str().is_empty() {
            return Err(value_error("alloy_bin", "is empty"));
        }
        if self.alloy_config.file_name().is_none() {
            return Err(value_error("alloy_config", "must name a file"));
        }
        let ready = Url::parse(&self.ready_url).map_err(|e| {
            value_error(
                "ready_url",
                format!("{:?} is not a URL: {e}", self.ready_url),
            )
        })?;
        if !matches!(ready.scheme(), "http" | "https") {
            return Err(value_error(
                "ready_url",
                "must be an http:// or https:// URL",
            ));
        }
        if let Some(reload) = &self.reload_url {
            let url = Url::parse(reload)
                .map_err(|e| value_error("reload_url", format!("{reload:?} is not a URL: {e}")))?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(value_error(
                    "reload_url",
                    "must be an http:// or https:// URL",
                ));
            }
        }
        if self.ready_timeout.is_zero() {
            return Err(value_error("ready_timeout", "must be longer than zero"));
        }
        if self.detect_interval < Duration::from_secs(1) {
            return Err(value_error("detect_interval", "must be at least 1s"));
        }
        if let Some(addr) = &self.scrape_address {
            muster_shared::facts::check_scrape_address(addr)
                .map_err(|e| value_error("scrape_address", e.to_string()))?;
        }
        if let Some(name) = &self.hostname {
            muster_shared::facts::check_hostname(name)
                .map_err(|e| value_error("hostname", e.to_string()))?;
        }
        Ok(())
    }

    /// Alloy's `/-/reload`: `reload_url`, else `ready_url`'s scheme, host
    /// and port with the path `/-/reload`.
    pub fn reload_url(&self) -> String {
        if let Some(url) = &self.reload_url {
            return url.clone();
        }
        match Url::parse(&self.ready_url) {
            Ok(mut url) => {
                url.set_path("/-/reload");
                url.set_query(None);
                url.to_string()
            }
            // check() refuses such a ready_url before anything applies.
            Err(_) => format!("http://127.0.0.1:{ALLOY_PORT}/-/reload"),
        }
    }

    /// The server's base URL; an error naming the file when it is missing.
    pub fn server_url(&self, path: &Path) -> Result<Url, ConfigError> {
        match &self.server {
            Some(s) => parse_server(s),
            None => Err(ConfigError::NoServer {
                path: path.to_owned(),
            }),
        }
    }
}

/// Values given on the `enroll` command line; each one set replaces the
/// file's value.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub server: Option<String>,
    pub state_dir: Option<PathBuf>,
    pub alloy_config: Option<PathBuf>,
    pub alloy_bin: Option<PathBuf>,
    pub reload_url: Option<String>,
    pub reload_command: Option<Vec<String>>,
    pub ready_url: Option<String>,
    pub scrape_address: Option<String>,
    pub hostname: Option<String>,
    pub machine_id_file: Option<PathBuf>,
}

impl Config {
    /// Sets every value `overrides` has.
    pub fn merge(&mut self, overrides: Overrides) {
        let Overrides {
            server,
            state_dir,
            alloy_config,
            alloy_bin,
            reload_url,
            reload_command,
            ready_url,
            scrape_address,
            hostname,
            machine_id_file,
        } = overrides;
        if server.is_some() {
            self.server = server;
        }
        if scrape_address.is_some() {
            self.scrape_address = scrape_address;
        }
        if hostname.is_some() {
            self.hostname = hostname;
        }
        if reload_url.is_some() {
            self.reload_url = reload_url;
        }
        self.state_dir = state_dir.unwrap_or(std::mem::take(&mut self.state_dir));
        self.alloy_config = alloy_config.unwrap_or(std::mem::take(&mut self.alloy_config));
        self.alloy_bin = alloy_bin.unwrap_or(std::mem::take(&mut self.alloy_bin));
        self.reload_command = reload_command.unwrap_or(std::mem::take(&mut self.reload_command));
        self.ready_url = ready_url.unwrap_or(std::mem::take(&mut self.ready_url));
        self.machine_id_file = machine_id_file.unwrap_or(std::mem::take(&mut self.machine_id_file));
    }

    /// Reads the file at `path` (defaults when there is none), merges
    /// `overrides` over it, checks the result and writes it back, so that
    /// `run` needs nothing else.
    pub fn merge_into_file(path: &Path, overrides: Overrides) -> Result<Config, ConfigError> {
        let mut config = match Config::read(path) {
            Ok(c) => c,
            Err(e) if e.is_missing() => Config::default(),
            Err(e) => return Err(e),
        };
        config.merge(overrides);
        config.check().map_err(|e| ConfigError::InFile {
            path: path.to_owned(),
            error: Box::new(e),
        })?;
        config.server_url(path)?;
        config.write(path)?;
        Ok(config)
    }
}

/// Checks a server base URL: `https://` with a host, nothing after the port.
pub fn parse_server(text: &str) -> Result<Url, ConfigError> {
    let url = Url::parse(text)
        .map_err(|e| value_error("server", format!("{text:?} is not a URL: {e}")))?;
    if url.scheme() != "https" {
        return Err(value_error(
            "server",
            format!("{text:?} must start with https://"),
        ));
    }
    if url.host_str().filter(|h| !h.is_empty()).is_none() {
        return Err(value_error("server", format!("{text:?} has no host")));
    }
    if url.query().is_some() || url.fragment().is_some() || url.path() != "/" {
        return Err(value_error(
            "server",
            format!("{text:?} must be only https://HOST:PORT, without a path"),
        ));
    }
    Ok(url)
}

/// Durations as humantime text ("30s", "1m 30s") in the file.
mod duration_text {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(|e| {
            serde::de::Error::custom(format!("{text:?} is not a duration like \"30s\": {e}"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_file_gives_the_real_host_defaults() {
        let c = Config::from_toml("").unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.state_dir, Path::new("/var/lib/muster"));
        assert_eq!(c.reload_command, ["systemctl", "reload", "alloy"]);
        assert_eq!(c.ready_url, "http://127.0.0.1:12345/-/ready");
        assert_eq!(c.reload_url(), "http://127.0.0.1:12345/-/reload");
        assert_eq!(c.ready_timeout, Duration::from_secs(30));
        assert_eq!(c.detect_interval, Duration::from_secs(300));
        assert_eq!(c.machine_id_file, Path::new("/etc/machine-id"));
        assert!(c.server.is_none() && c.scrape_address.is_none() && c.hostname.is_none());
    }

    #[test]
    fn parses_every_documented_field() {
        let text = r#"
            server = "https://muster.example.com:8443"
            state_dir = "/tmp/s"
            alloy_config = "/tmp/a/config.alloy"
            alloy_bin = "/usr/local/bin/alloy"
            reload_command = ["curl", "-fsS", "-X", "POST", "http://127.0.0.1:12345/-/reload"]
            reload_url = "http://127.0.0.1:9/-/reload"
            alloy_env_file = "/etc/sysconfig/alloy"
            ready_url = "http://127.0.0.1:9/-/ready"
            ready_timeout = "1m 30s"
            detect_interval = "10m"
            scrape_address = "10.0.0.5:12345"
            hostname = "web-01"
            machine_id_file = "/tmp/machine-id"

            [alloy_mirror]
            apt = "https://mirror.example/apt"
            key = "file:///srv/key.asc"
        "#;
        let c = Config::from_toml(text).unwrap();
        assert_eq!(c.server.as_deref(), Some("https://muster.example.com:8443"));
        assert_eq!(c.ready_timeout, Duration::from_secs(90));
        assert_eq!(c.detect_interval, Duration::from_secs(600));
        assert_eq!(c.reload_command.len(), 5);
        assert_eq!(c.reload_url(), "http://127.0.0.1:9/-/reload");
        assert_eq!(
            c.alloy_env_file.as_deref(),
            Some(Path::new("/etc/sysconfig/alloy"))
        );
        assert_eq!(c.hostname.as_deref(), Some("web-01"));
        let mirror = c.alloy_mirror.as_ref().expect("mirror");
        assert_eq!(mirror.apt.as_deref(), Some("https://mirror.example/apt"));
        assert_eq!(mirror.rpm, None);
        // What enroll writes reads back the same.
        assert_eq!(Config::from_toml(&c.to_toml().unwrap()).unwrap(), c);
    }

    #[test]
    fn refuses_an_unknown_field_by_name() {
        let err = Config::from_toml("server = \"https://a:1\"\nstate_dri = \"/x\"\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("line 2"), "{msg}");
        assert!(msg.contains("unknown field `state_dri`"), "{msg}");
        assert!(
            msg.contains("state_dir"),
            "should list the known fields: {msg}"
        );
    }

    #[test]
    fn refuses_bad_values() {
        for (text, field) in [
            ("server = \"http://a:1\"", "server"),
            ("server = \"https://a:1/x\"", "server"),
            ("reload_command = []", "reload_command"),
            ("ready_timeout = \"soon\"", "soon"),
            ("ready_timeout = \"0s\"", "ready_timeout"),
            ("detect_interval = \"500ms\"", "detect_interval"),
            ("ready_url = \"ftp://x/\"", "ready_url"),
            ("reload_url = \"ftp://x/\"", "reload_url"),
            ("scrape_address = \"10.0.0.5\"", "scrape_address"),
            ("hostname = \"a/b\"", "hostname"),
        ] {
            let msg = Config::from_toml(text).unwrap_err().to_string();
            assert!(msg.contains(field), "{text}: {msg}");
        }
    }

    #[test]
    fn read_names_the_file_and_write_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("etc/muster/agent.toml");
        let err = Config::read(&path).unwrap_err();
        assert!(err.is_missing());
        assert!(err.to_string().contains("agent.toml"));
        let c = Config {
            server: Some("https://[::1]:8443".into()),
            ..Config::default()
        };
        c.write(&path).unwrap();
        assert_eq!(Config::read(&path).unwrap(), c);
        std::fs::write(&path, "bogus = 1").unwrap();
        let msg = Config::read(&path).unwrap_err().to_string();
        assert!(msg.contains("agent.toml") && msg.contains("bogus"), "{msg}");
    }

    #[test]
    fn enroll_flags_merge_over_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.toml");
        std::fs::write(&path, "hostname = \"keep-me\"\nready_timeout = \"5s\"\n").unwrap();
        let overrides = Overrides {
            server: Some("https://muster:8443".into()),
            reload_command: Some(vec!["kill".into(), "-HUP".into(), "1".into()]),
            ..Overrides::default()
        };
        let c = Config::merge_into_file(&path, overrides).unwrap();
        assert_eq!(c.hostname.as_deref(), Some("keep-me"));
        assert_eq!(c.ready_timeout, Duration::from_secs(5));
        assert_eq!(c.reload_command, ["kill", "-HUP", "1"]);
        assert_eq!(Config::read(&path).unwrap(), c);
        // No server anywhere: refused before anything is written.
        let other = dir.path().join("new/agent.toml");
        assert!(Config::merge_into_file(&other, Overrides::default()).is_err());
        assert!(!other.exists());
    }

    #[test]
    fn the_reload_url_follows_the_ready_url_unless_set() {
        let mut c = Config {
            ready_url: "http://127.0.0.1:4242/-/ready?x=1".into(),
            ..Config::default()
        };
        assert_eq!(c.reload_url(), "http://127.0.0.1:4242/-/reload");
        c.reload_url = Some("http://[::1]:9/-/reload".into());
        assert_eq!(c.reload_url(), "http://[::1]:9/-/reload");
    }

    #[test]
    fn a_missing_server_points_at_enroll() {
        let c = Config::default();
        let msg = c
            .server_url(Path::new("/x/agent.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("enroll") && msg.contains("/x/agent.toml"),
            "{msg}"
        );
    }
}
