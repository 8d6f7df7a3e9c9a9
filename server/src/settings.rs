//! `server.toml`: the server's settings. `from_toml` is pure; `read` does the
//! IO. `init` writes the documented default, which is also the reference for
//! every field.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::schema::{LabelSchema, SchemaSpec};

/// File name of the settings inside the data dir.
pub const FILE_NAME: &str = "server.toml";

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Agent listener (TLS; enrollment, agent routes).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Admin listener (TLS, bearer admin token). Loopback by default.
    #[serde(default = "default_admin_listen")]
    pub admin_listen: SocketAddr,
    /// The URL agents use to reach the agent listener; printed in enroll lines.
    pub public_url: String,
    /// Where Prometheus `file_sd` target files go; `<data dir>/targets` when unset.
    #[serde(default)]
    pub targets_dir: Option<PathBuf>,
    /// Operator templates; the templates built into the binary when unset.
    #[serde(default)]
    pub templates_dir: Option<PathBuf>,
    /// Prometheus base URL, for `POST /-/reload` after target changes.
    #[serde(default)]
    pub prometheus_url: Option<String>,
    /// Loki base URL; when set, configs ship the host's journal to it.
    #[serde(default)]
    pub loki_url: Option<String>,
    /// OTLP endpoint (`host:port`, gRPC) that hosts with the `otlp` service
    /// enabled forward to.
    #[serde(default)]
    pub otlp_endpoint: Option<String>,
    /// Per-host and per-label service overrides; `<data dir>/overrides.toml`
    /// when unset (a missing file means none).
    #[serde(default)]
    pub overrides_file: Option<PathBuf>,
    /// How often agents poll for their config.
    #[serde(default = "default_checkin", with = "humantime_serde_compat")]
    pub checkin_interval: Duration,
    /// Validity of agent certificates.
    #[serde(default = "default_cert_validity", with = "humantime_serde_compat")]
    pub cert_validity: Duration,
    /// Lifetime of an enrollment token when `--ttl` is not given.
    #[serde(default = "default_token_ttl", with = "humantime_serde_compat")]
    pub token_ttl: Duration,
    /// Target changes within this window cause a single Prometheus reload.
    #[serde(default = "default_reload_window", with = "humantime_serde_compat")]
    pub reload_window: Duration,
    /// A host with no check-in for this long is shown as `stale`.
    #[serde(default = "default_stale_after", with = "humantime_serde_compat")]
    pub stale_after: Duration,
    /// How often the check-in times of agents' polls (kept in memory) are
    /// written to the database, in one transaction; also at shutdown.
    #[serde(default = "default_last_seen_flush", with = "humantime_serde_compat")]
    pub last_seen_flush: Duration,
    /// How often Prometheus's `/api/v1/targets` is asked whether hosts are
    /// scraped (only with `prometheus_url`).
    #[serde(default = "default_scrape_check", with = "humantime_serde_compat")]
    pub scrape_check_interval: Duration,
    /// The label schema: `[labels]`.
    #[serde(default)]
    pub labels: SchemaSpec,
    /// Agent binaries (`muster-agent-<os>-<arch>`) served at `/v1/download/`;
    /// `<data dir>/downloads` when unset.
    #[serde(default)]
    pub downloads_dir: Option<PathBuf>,
    /// Where hosts install Alloy from instead of Grafana's repositories.
    #[serde(default)]
    pub alloy_mirror: Option<AlloyMirror>,
    /// Whether an enrolled agent may report a scrape address whose host is
    /// not the address it connects from (hosts behind NAT). Off: an agent
    /// cannot point its target at another machine. Either way the change is
    /// audited.
    #[serde(default)]
    pub agents_may_move_targets: bool,
    /// Origins (`https://grafana.example.com`) allowed to frame the web
    /// console; none when empty.
    #[serde(default)]
    pub console_frame_ancestors: Vec<String>,
    /// `/metrics` on the admin listener: `[metrics]`.
    #[serde(default)]
    pub metrics: MetricsSettings,
    /// Connection timeouts and caps of each listener, and the enrollment
    /// refusal limit: `[limits]`.
    #[serde(default)]
    pub limits: Limits,
    /// How long the audit log is kept: `[audit]`.
    #[serde(default)]
    pub audit: AuditSettings,
}

/// `[audit]`: audit retention.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AuditSettings {
    /// Entries older than this are deleted (checked at start-up and every
    /// [`AuditSettings::PRUNE_EVERY`]); kept forever when unset.
    #[serde(default, with = "humantime_serde_compat::option")]
    pub retention: Option<Duration>,
}

impl AuditSettings {
    pub const PRUNE_EVERY: Duration = Duration::from_secs(3600);

    fn check(&self) -> Result<(), String> {
        match self.retention {
            Some(d) if d < Duration::from_secs(86400) => {
                Err("audit.retention must be at least 1day".into())
            }
            _ => Ok(()),
        }
    }
}

/// `[limits]`: what a client may hold of a listener, and for how long. The
/// caps apply to each listener on its own.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Open connections per listener; more are closed as soon as accepted.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Open connections per listener from one source address.
    #[serde(default = "default_max_connections_per_source")]
    pub max_connections_per_source: usize,
    /// Longest a client may take to finish the TLS handshake.
    #[serde(default = "default_handshake_timeout", with = "humantime_serde_compat")]
    pub handshake_timeout: Duration,
    /// Longest a client may take to send a request's headers, from their
    /// first byte.
    #[serde(default = "default_header_timeout", with = "humantime_serde_compat")]
    pub header_timeout: Duration,
    /// How long a kept-alive connection may sit idle between requests:
    /// above the agents' check-in interval plus jitter, so an agent keeps
    /// its connection; below it, agents reconnect (resuming their TLS
    /// session) at every check-in and hold no connection in between.
    #[serde(default = "default_idle_timeout", with = "humantime_serde_compat")]
    pub idle_timeout: Duration,
    /// Longest a client may take to send a request's body, from the end of
    /// its headers.
    #[serde(default = "default_body_timeout", with = "humantime_serde_compat")]
    pub body_timeout: Duration,
    /// Refused enrollments (bad token or request) one source (an IPv4
    /// address, or an IPv6 /64) may make per minute before its attempts
    /// are answered 429.
    #[serde(default = "default_enroll_refusals")]
    pub enroll_refusals_per_minute: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: default_max_connections(),
            max_connections_per_source: default_max_connections_per_source(),
            handshake_timeout: default_handshake_timeout(),
            header_timeout: default_header_timeout(),
            idle_timeout: default_idle_timeout(),
            body_timeout: default_body_timeout(),
            enroll_refusals_per_minute: default_enroll_refusals(),
        }
    }
}

fn default_max_connections() -> usize {
    16_384
}
fn default_max_connections_per_source() -> usize {
    1024
}
fn default_handshake_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_header_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_idle_timeout() -> Duration {
    Duration::from_secs(120)
}
fn default_body_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_enroll_refusals() -> u32 {
    30
}

impl Limits {
    fn check(&self) -> Result<(), String> {
        if self.max_connections == 0 || self.max_connections_per_source == 0 {
            return Err(
                "limits.max_connections and limits.max_connections_per_source must be at least 1"
                    .into(),
            );
        }
        for (name, d) in [
            ("handshake_timeout", self.handshake_timeout),
            ("header_timeout", self.header_timeout),
            ("idle_timeout", self.idle_timeout),
            ("body_timeout", self.body_timeout),
        ] {
            if d < Duration::from_secs(1) {
                return Err(format!("limits.{name} must be at least 1s"));
            }
        }
        if self.enroll_refusals_per_minute == 0 {
            return Err("limits.enroll_refusals_per_minute must be at least 1".into());
        }
        Ok(())
    }
}

/// `[metrics]`: who may read Muster's own `/metrics`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MetricsSettings {
    /// Ask for a targets-reader or admin token (by default anyone who reaches
    /// the admin listener may read it).
    #[serde(default)]
    pub token_required: bool,
}

pub use muster_shared::mirror::AlloyMirror;

/// What `serve`'s command line overrides; `None` keeps the file's value.
#[derive(Clone, Debug, Default)]
pub struct SettingsOverrides {
    pub listen: Option<SocketAddr>,
    pub admin_listen: Option<SocketAddr>,
    pub targets_dir: Option<PathBuf>,
    pub templates_dir: Option<PathBuf>,
    pub prometheus_url: Option<String>,
    pub public_url: Option<String>,
    pub downloads_dir: Option<PathBuf>,
}

/// Bounds of `checkin_interval`: agents poll at least every hour, and no
/// setting makes a fleet poll faster than every second.
pub const MIN_CHECKIN: Duration = Duration::from_secs(1);
pub const MAX_CHECKIN: Duration = Duration::from_secs(3600);

/// `public_url` is printed into shell lines and `/install.sh`: it must be an
/// `https://host[:port]` URL and nothing else (no path, query, user or
/// characters a shell would read).
pub fn check_public_url(url: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("public_url {url:?} {why}"));
    if !url.starts_with("https://") {
        return bad("must start with https://");
    }
    let parsed = match reqwest::Url::parse(url) {
        Ok(u) => u,
        Err(e) => return bad(&format!("is not a URL: {e}")),
    };
    if parsed.host_str().is_none_or(str::is_empty) {
        return bad("has no host");
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return bad("must not carry a user or password");
    }
    if !matches!(parsed.path(), "" | "/") || parsed.query().is_some() || parsed.fragment().is_some()
    {
        return bad("must be https://HOST[:PORT] without a path, query or fragment");
    }
    let plain = |c: char| c.is_ascii_alphanumeric() || ".-:[]/".contains(c);
    if !url.chars().all(plain) {
        return bad("may hold only letters, digits and . - : [ ] /");
    }
    Ok(())
}

/// A `console_frame_ancestors` entry: `https://HOST[:PORT]` (or http),
/// nothing else, so it cannot widen the Content-Security-Policy.
fn check_origin(origin: &str) -> Result<(), String> {
    let rest = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"));
    let ok = rest.is_some_and(|r| {
        !r.is_empty()
            && r.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'))
    });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "console_frame_ancestors entry {origin:?} must be an origin like https://grafana.example.com[:PORT]"
        ))
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 8443))
}
fn default_admin_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8444))
}
fn default_checkin() -> Duration {
    Duration::from_secs(30)
}
fn default_cert_validity() -> Duration {
    Duration::from_secs(30 * 86400)
}
fn default_token_ttl() -> Duration {
    Duration::from_secs(86400)
}
fn default_reload_window() -> Duration {
    Duration::from_secs(2)
}
fn default_last_seen_flush() -> Duration {
    Duration::from_secs(5)
}
fn default_stale_after() -> Duration {
    Duration::from_secs(300)
}
fn default_scrape_check() -> Duration {
    Duration::from_secs(15)
}

/// A mirror URL goes into a shell script and a repo file: a plain
/// `http(s)://` or `file://` URL without quotes, spaces or control characters.
fn check_mirror_url(name: &str, url: &str) -> Result<(), String> {
    let scheme_ok = ["https://", "http://", "file:///"]
        .iter()
        .any(|s| url.starts_with(s));
    let chars_ok = url
        .chars()
        .all(|c| c.is_ascii_graphic() && !"'\"`$\\<>{}|^".contains(c));
    if scheme_ok && chars_ok {
        Ok(())
    } else {
        Err(format!(
            "{name} {url:?} must be an https://, http:// or file:/// URL without quotes or spaces"
        ))
    }
}

/// Durations written as humantime text (`30s`, `24h`, `30days`).
mod humantime_serde_compat {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text)
            .map_err(|e| serde::de::Error::custom(format!("invalid duration {text:?}: {e}")))
    }

    /// An optional duration.
    pub mod option {
        use serde::Deserializer;
        use std::time::Duration;

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
            super::deserialize(d).map(Some)
        }
    }
}

/// A settings file of the data dir (`server.toml`, `overrides.toml`) that
/// cannot be read or does not parse.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

impl Settings {
    pub fn from_toml(text: &str) -> Result<Settings, String> {
        let settings: Settings = toml::from_str(text).map_err(|e| e.to_string())?;
        settings.check()?;
        Ok(settings)
    }

    pub fn read(path: &Path) -> Result<Settings, ConfigFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigFileError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Settings::from_toml(&text).map_err(|message| ConfigFileError::Invalid {
            path: path.to_path_buf(),
            message,
        })
    }

    /// These settings with the command line's overrides applied, checked
    /// again as a whole (an override is held to the file's rules).
    pub fn overridden(mut self, o: SettingsOverrides) -> Result<Settings, String> {
        if let Some(a) = o.listen {
            self.listen = a;
        }
        if let Some(a) = o.admin_listen {
            self.admin_listen = a;
        }
        if let Some(d) = o.targets_dir {
            self.targets_dir = Some(d);
        }
        if let Some(d) = o.templates_dir {
            self.templates_dir = Some(d);
        }
        if let Some(u) = o.prometheus_url {
            self.prometheus_url = Some(u);
        }
        if let Some(u) = o.public_url {
            self.public_url = u;
        }
        if let Some(d) = o.downloads_dir {
            self.downloads_dir = Some(d);
        }
        self.check()?;
        Ok(self)
    }

    fn check(&self) -> Result<(), String> {
        for origin in &self.console_frame_ancestors {
            check_origin(origin)?;
        }
        check_public_url(&self.public_url)?;
        for (name, url) in [
            ("prometheus_url", &self.prometheus_url),
            ("loki_url", &self.loki_url),
        ] {
            if let Some(url) = url {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return Err(format!(
                        "{name} {url:?} must start with http:// or https://"
                    ));
                }
            }
        }
        if let Some(mirror) = &self.alloy_mirror {
            for (name, url) in [
                ("alloy_mirror.apt", &mirror.apt),
                ("alloy_mirror.rpm", &mirror.rpm),
                ("alloy_mirror.key", &mirror.key),
            ] {
                if let Some(url) = url {
                    check_mirror_url(name, url)?;
                }
            }
        }
        if !(MIN_CHECKIN..=MAX_CHECKIN).contains(&self.checkin_interval) {
            return Err(format!(
                "checkin_interval must be between {} and {}",
                humantime::format_duration(MIN_CHECKIN),
                humantime::format_duration(MAX_CHECKIN)
            ));
        }
        if self.cert_validity < Duration::from_secs(3600) {
            return Err("cert_validity must be at least 1h".into());
        }
        if self.stale_after < Duration::from_secs(1) {
            return Err("stale_after must be at least 1s".into());
        }
        if self.last_seen_flush < Duration::from_secs(1) {
            return Err("last_seen_flush must be at least 1s".into());
        }
        if self.scrape_check_interval < Duration::from_secs(1) {
            return Err("scrape_check_interval must be at least 1s".into());
        }
        self.limits.check()?;
        self.audit.check()?;
        self.label_schema()?;
        Ok(())
    }

    /// The compiled `[labels]` schema; errors name the setting.
    pub fn label_schema(&self) -> Result<LabelSchema, String> {
        LabelSchema::compile(&self.labels)
    }

    /// The downloads dir: the configured one, else `<data dir>/downloads`.
    pub fn downloads_dir(&self, data_dir: &Path) -> PathBuf {
        self.downloads_dir
            .clone()
            .unwrap_or_else(|| data_dir.join("downloads"))
    }

    /// The documented file `init` writes.
    pub fn default_file(public_url: &str) -> String {
        format!(
            r#"# Muster server settings. Flags given to `muster-server serve` override them.

# Agent listener (TLS): enrollment and agent routes. Reachable by every host.
listen = "0.0.0.0:8443"

# Admin listener (TLS, bearer admin token). Keep it on loopback unless a
# firewall guards it.
admin_listen = "127.0.0.1:8444"

# The URL agents use to reach the agent listener, written into /install.sh and
# every enroll line. `init` chose this machine's primary address (or its first
# --san); change it to a name or address every host can reach, then restart.
# Agents trust the server by its key pin, not by this name.
public_url = "{public_url}"

# May an enrolled agent report a scrape address on another host than the one
# it connects from (hosts behind NAT)? Off, it cannot move its target.
# agents_may_move_targets = false

# Where Prometheus file_sd target files are written (default: <data dir>/targets).
# targets_dir = "/var/lib/muster-server/targets"

# Operator templates (default: the templates built into the binary).
# templates_dir = "/etc/muster-server/templates"

# Prometheus to reload after target changes (needs --web.enable-lifecycle).
# prometheus_url = "http://127.0.0.1:9090"

# Loki to ship host journals to; unset means no log pipeline in configs.
# loki_url = "http://loki.example.com:3100"

# OTLP endpoint (host:port, gRPC) for hosts whose overrides enable `otlp`.
# otlp_endpoint = "otel-collector.example.com:4317"

# Service overrides per host or label selector (default: <data dir>/overrides.toml).
# overrides_file = "/etc/muster-server/overrides.toml"

# How often agents poll for their config.
checkin_interval = "30s"

# Validity of agent certificates; agents renew when a third is left.
cert_validity = "30days"

# Lifetime of an enrollment token when `token create --ttl` is not given.
token_ttl = "24h"

# Target changes within this window cause one Prometheus reload.
reload_window = "2s"

# A host that has not checked in for this long is shown as `stale`.
stale_after = "5m"

# Check-in times are kept in memory (every view shows them at once) and
# written to the database this often, in one transaction, and at shutdown.
# last_seen_flush = "5s"

# With prometheus_url: how often to ask Prometheus (/api/v1/targets) whether
# each host's targets are up (recorded as scrape_ok / scrape_failing).
scrape_check_interval = "15s"

# The label schema: every label given on a token, a batch row or a host edit
# is checked against it (`muster-server labels check` checks existing hosts).
# Names must be Prometheus label names not starting with "__". Without this
# section any such name and value is accepted.
# [labels]
# required = ["environment", "maintainers"]   # every host must have them
# allowed = ["location", "team"]              # only these, plus the names below
# [labels.defaults]                           # filled in when not given
# environment = "production"
# [labels.rules.environment]                  # allowed values ...
# values = ["production", "staging", "dev"]
# [labels.rules.location]                     # ... or a pattern (whole value)
# pattern = "rack-[0-9]+"

# Agent binaries served at /v1/download/ for install.sh, named
# muster-agent-<os>-<arch> (e.g. muster-agent-linux-x86_64; for Windows
# muster-agent-windows-x86_64.exe and .msi); read at start-up.
# downloads_dir = "/var/lib/muster-server/downloads"

# Origins allowed to show the web console in a frame (a Grafana panel or
# link); by default no site may frame it.
# console_frame_ancestors = ["https://grafana.example.com"]

# A mirror of Grafana's package repositories for air-gapped sites; hosts
# installed with /install.sh install Alloy from it.
# [alloy_mirror]
# apt = "https://mirror.example.com/grafana/apt"   # deb URL stable main
# rpm = "https://mirror.example.com/grafana/rpm"   # dnf/yum/zypper baseurl
# key = "https://mirror.example.com/grafana/gpg.key"
# windows = "https://mirror.example.com/grafana/alloy-installer-windows-amd64.exe"

# Muster's own /metrics on the admin listener needs no token unless asked
# (then a targets-reader token, `muster-server token create-reader`, or an
# admin token).
# [metrics]
# token_required = true

# Connection limits, each listener on its own. A connection over a cap is
# closed as soon as it is accepted; a client slower than a timeout is cut off.
# Keep max_connections on both listeners below the server's open-file limit
# (LimitNOFILE in the systemd unit). Hosts behind one NAT address share the
# per-source cap.
# [limits]
# max_connections = 16384
# max_connections_per_source = 1024
# handshake_timeout = "10s"      # TLS handshake
# header_timeout = "30s"         # request headers, from their first byte
# body_timeout = "30s"           # request body, from the end of the headers
# Idle time allowed between requests on a kept-alive connection. Above the
# check-in interval (+10% jitter), agents keep their connection between
# check-ins (about 25 KiB of server memory each: raise max_connections and
# LimitNOFILE past the fleet size); below it, each check-in reconnects with a
# resumed TLS session and nothing is held in between.
# idle_timeout = "120s"
# Refused enrollments (bad token or request) one source (an IPv4 address, or
# an IPv6 /64) may make per minute; past it, its attempts are answered 429
# with Retry-After and summed into one audit entry per minute.
# enroll_refusals_per_minute = 30

# How long audit entries are kept (by default forever). Older entries are
# deleted at start-up and every hour, and each deletion is audited.
# [audit]
# retention = "90days"
"#
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_file_parses_to_the_defaults() {
        let s = Settings::from_toml(&Settings::default_file("https://muster.example:8443"))
            .expect("default file parses");
        assert_eq!(s.listen, default_listen());
        assert_eq!(s.admin_listen, default_admin_listen());
        assert_eq!(s.checkin_interval, Duration::from_secs(30));
        assert_eq!(s.cert_validity, Duration::from_secs(30 * 86400));
        assert_eq!(s.prometheus_url, None);
        assert_eq!(s.alloy_mirror, None);
        assert_eq!(s.downloads_dir(Path::new("/d")), Path::new("/d/downloads"));
    }

    #[test]
    fn an_alloy_mirror_is_read_and_its_urls_checked() {
        let s = Settings::from_toml(
            "public_url = \"https://x\"\n[alloy_mirror]\napt = \"https://m/apt\"\nkey = \"file:///srv/key.asc\"\n",
        )
        .expect("mirror");
        let m = s.alloy_mirror.expect("set");
        assert_eq!(m.apt.as_deref(), Some("https://m/apt"));
        assert_eq!(m.rpm, None);
        for bad in [
            "ftp://m",
            "https://m/a b",
            "https://m/'x",
            "https://m/$(id)",
        ] {
            let text = format!("public_url = \"https://x\"\n[alloy_mirror]\nrpm = \"{bad}\"\n");
            let err = Settings::from_toml(&text).expect_err(bad);
            assert!(err.contains("alloy_mirror.rpm"), "{err}");
        }
        let err = Settings::from_toml("public_url = \"https://x\"\n[alloy_mirror]\nyum = \"x\"\n")
            .expect_err("unknown key");
        assert!(err.contains("yum"), "{err}");
    }

    #[test]
    fn unknown_fields_and_bad_values_are_refused_with_their_name() {
        let err = Settings::from_toml("public_url = \"https://x\"\nlisten_addr = \"1\"")
            .expect_err("unknown field");
        assert!(err.contains("listen_addr"), "{err}");
        let err = Settings::from_toml("public_url = \"http://x\"").expect_err("http");
        assert!(err.contains("https://"), "{err}");
        let err = Settings::from_toml("public_url = \"https://x\"\ncheckin_interval = \"soon\"")
            .expect_err("duration");
        assert!(
            err.contains("\"soon\"") && err.contains("checkin_interval"),
            "{err}"
        );
    }

    #[test]
    fn the_documented_label_schema_example_parses() {
        let text = Settings::default_file("https://x");
        // The commented-out [labels] example, from its header to the blank line.
        let example: Vec<&str> = text
            .lines()
            .skip_while(|l| *l != "# [labels]")
            .take_while(|l| !l.is_empty())
            .map(|l| l.trim_start_matches("# ").split("   #").next().unwrap_or(l))
            .collect();
        assert!(example.len() > 5, "example not found in {text}");
        let toml = format!("public_url = \"https://x\"\n{}\n", example.join("\n"));
        let s = Settings::from_toml(&toml).expect("example parses");
        assert_eq!(s.labels.required, vec!["environment", "maintainers"]);
        assert_eq!(s.stale_after, default_stale_after());
        let err =
            Settings::from_toml("public_url = \"https://x\"\n[labels.rules.x]\npattern = \"(\"\n")
                .expect_err("bad pattern");
        assert!(err.contains("labels.rules.x.pattern"), "{err}");
    }

    #[test]
    fn public_url_must_be_a_plain_https_origin() {
        for good in [
            "https://muster.example",
            "https://muster.example:8443",
            "https://10.0.0.1:8443/",
            "https://[::1]:8443",
        ] {
            check_public_url(good).unwrap_or_else(|e| panic!("{good}: {e}"));
        }
        for bad in [
            "http://x",
            "https://",
            "https://x/path",
            "https://x/?q=1",
            "https://u:p@x",
            "https://x/$(reboot)",
            "https://x:8443'; rm -rf /",
            "https://x y",
        ] {
            let err = check_public_url(bad).expect_err(bad);
            assert!(err.contains("public_url"), "{bad}: {err}");
        }
    }

    #[test]
    fn overrides_are_held_to_the_files_rules() {
        let s = Settings::from_toml("public_url = \"https://x\"").expect("valid");
        let o = SettingsOverrides {
            public_url: Some("https://y:9443".into()),
            ..SettingsOverrides::default()
        };
        assert_eq!(
            s.clone().overridden(o).expect("valid").public_url,
            "https://y:9443"
        );
        let o = SettingsOverrides {
            public_url: Some("https://y/`id`".into()),
            ..SettingsOverrides::default()
        };
        assert!(s.overridden(o).expect_err("refused").contains("public_url"));
    }

    #[test]
    fn the_documented_limits_example_parses_to_the_defaults() {
        let text = Settings::default_file("https://x");
        let example: Vec<&str> = text
            .lines()
            .skip_while(|l| *l != "# [limits]")
            .take_while(|l| !l.is_empty())
            .filter(|l| l.contains(" = ") || l.starts_with("# ["))
            .map(|l| l.trim_start_matches("# ").split("   #").next().unwrap_or(l))
            .collect();
        assert!(example.len() > 5, "example not found in {text}");
        let toml = format!("public_url = \"https://x\"\n{}\n", example.join("\n"));
        let s = Settings::from_toml(&toml).expect("example parses");
        assert_eq!(s.limits, Limits::default());
        let err =
            Settings::from_toml("public_url = \"https://x\"\n[limits]\nbody_timeout = \"0s\"\n")
                .expect_err("zero timeout");
        assert!(err.contains("limits.body_timeout"), "{err}");
        let err = Settings::from_toml("public_url = \"https://x\"\n[limits]\nmax_conns = 1\n")
            .expect_err("unknown key");
        assert!(err.contains("max_conns"), "{err}");
    }

    #[test]
    fn audit_retention_is_optional_and_at_least_a_day() {
        let s = Settings::from_toml("public_url = \"https://x\"").expect("parses");
        assert_eq!(s.audit.retention, None);
        let text = Settings::default_file("https://x");
        let example = text
            .lines()
            .skip_while(|l| *l != "# [audit]")
            .take(2)
            .map(|l| l.trim_start_matches("# "))
            .collect::<Vec<_>>()
            .join("\n");
        let s = Settings::from_toml(&format!("public_url = \"https://x\"\n{example}\n"))
            .expect("documented example parses");
        assert_eq!(s.audit.retention, Some(Duration::from_secs(90 * 86400)));
        let err = Settings::from_toml("public_url = \"https://x\"\n[audit]\nretention = \"1h\"\n")
            .expect_err("too short");
        assert!(err.contains("audit.retention"), "{err}");
    }

    #[test]
    fn checkin_interval_is_bounded() {
        for (text, ok) in [
            ("\"1s\"", true),
            ("\"1h\"", true),
            ("\"500ms\"", false),
            ("\"2h\"", false),
        ] {
            let r = Settings::from_toml(&format!(
                "public_url = \"https://x\"\ncheckin_interval = {text}"
            ));
            assert_eq!(r.is_ok(), ok, "{text}: {r:?}");
        }
    }
}
