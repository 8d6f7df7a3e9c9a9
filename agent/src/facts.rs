//! Gathering the host facts reported at enrollment: pure parsing of
//! `/etc/os-release`, and thin IO functions that read the machine id, the
//! hostname, the kernel release and the address this host uses to reach the
//! server.

use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};

use muster_shared::facts::{FactError, Facts};
use reqwest::Url;
use tracing::warn;

use crate::config::{Config, ALLOY_PORT};

#[derive(Debug, thiserror::Error)]
pub enum FactsError {
    #[error("cannot read the machine id from {}: {error}", path.display())]
    MachineId { path: PathBuf, error: io::Error },
    #[error("the machine id file {} is empty", path.display())]
    MachineIdEmpty { path: PathBuf },
    #[error("cannot find this host's name: {0}")]
    Hostname(io::Error),
    #[error("cannot find the local address used to reach {server}: {error} (set scrape_address)")]
    PrimaryAddress { server: String, error: io::Error },
    #[error("{0}")]
    Invalid(#[from] FactError),
}

/// Parses os-release text (`KEY=value` lines, values optionally in single or
/// double quotes, `#` comments) into its keys and values.
pub fn parse_os_release(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter_map(|line| line.split_once('='))
        .filter(|(key, _)| !key.is_empty() && !key.contains(char::is_whitespace))
        .map(|(key, value)| (key.to_string(), unquote(value.trim())))
        .collect()
}

/// Removes shell-style quotes: `"..."` with backslash escapes, or `'...'`.
fn unquote(value: &str) -> String {
    if value.len() >= 2 && value.starts_with('\'') && value.ends_with('\'') {
        return value[1..value.len() - 1].to_string();
    }
    if value.len() >= 2 && value.starts_with('"') && value.ends_with('"') {
        let mut out = String::new();
        let mut chars = value[1..value.len() - 1].chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => out.extend(chars.next()),
                c => out.push(c),
            }
        }
        return out;
    }
    value.to_string()
}

/// Collects this host's facts and checks them as the server will.
pub fn gather(config: &Config, server: &Url) -> Result<Facts, FactsError> {
    let machine_id = read_machine_id(&config.machine_id_file)?;
    let hostname = match &config.hostname {
        Some(name) => name.clone(),
        None => os_hostname().map_err(FactsError::Hostname)?,
    };
    let scrape_address = match &config.scrape_address {
        Some(addr) => addr.clone(),
        None => {
            let ip = primary_address(server).map_err(|error| FactsError::PrimaryAddress {
                server: server.to_string(),
                error,
            })?;
            SocketAddr::new(ip, ALLOY_PORT).to_string()
        }
    };
    let os_release = read_os_release();
    let mut facts = Facts {
        hostname,
        machine_id,
        os: std::env::consts::OS.to_string(),
        arch: std::env::consts::ARCH.to_string(),
        os_id: os_release.get("ID").cloned(),
        os_version: os_release.get("VERSION_ID").cloned(),
        kernel: kernel_release(),
        scrape_address,
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
    };
    check_dropping_optionals(&mut facts)?;
    Ok(facts)
}

/// Checks the facts as the server will. Optional facts the server would
/// refuse (an odd kernel string, say) are left out rather than failing the
/// whole enrollment; a bad required fact is an error.
fn check_dropping_optionals(facts: &mut Facts) -> Result<(), FactError> {
    loop {
        let err = match facts.check() {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        let FactError::Invalid { field, problem } = &err;
        let slot = match *field {
            "os_id" => &mut facts.os_id,
            "os_version" => &mut facts.os_version,
            "kernel" => &mut facts.kernel,
            _ => return Err(err),
        };
        warn!(fact = field, value = ?slot, problem, "leaving out a fact the server would refuse");
        *slot = None;
    }
}

/// The machine id, trimmed.
pub fn read_machine_id(path: &Path) -> Result<String, FactsError> {
    let text = std::fs::read_to_string(path).map_err(|error| FactsError::MachineId {
        path: path.to_owned(),
        error,
    })?;
    let id = text.trim();
    if id.is_empty() {
        return Err(FactsError::MachineIdEmpty {
            path: path.to_owned(),
        });
    }
    Ok(id.to_string())
}

/// `/etc/os-release`, falling back to `/usr/lib/os-release`; empty when neither exists.
fn read_os_release() -> BTreeMap<String, String> {
    ["/etc/os-release", "/usr/lib/os-release"]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .map(|text| parse_os_release(&text))
        .unwrap_or_default()
}

/// The kernel release (`uname -r`), where the OS exposes it as a file.
fn kernel_release() -> Option<String> {
    let text = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
    Some(text.trim().to_string()).filter(|k| !k.is_empty())
}

/// The OS hostname: the kernel's on Linux, else what `hostname` prints.
fn os_hostname() -> io::Result<String> {
    if let Ok(name) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        let name = name.trim();
        if !name.is_empty() {
            return Ok(name.to_string());
        }
    }
    let out = std::process::Command::new("hostname").output()?;
    let name = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() || name.is_empty() {
        return Err(io::Error::other("`hostname` printed nothing"));
    }
    Ok(name)
}

/// The local address of the interface this host uses to reach the server:
/// a UDP socket `connect()`ed to it picks the route without sending anything.
pub fn primary_address(server: &Url) -> io::Result<IpAddr> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, "the server name has no address");
    for addr in server.socket_addrs(|| Some(443))? {
        let bind: SocketAddr = if addr.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        match UdpSocket::bind(bind).and_then(|s| s.connect(addr).map(|()| s)) {
            Ok(socket) => return Ok(socket.local_addr()?.ip()),
            Err(e) => last = e,
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_quoted_unquoted_and_commented_os_release() {
        let text = r#"
# a comment
PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
NAME='Debian GNU/Linux'
ID=debian
  VERSION_ID="12"
ESCAPED="say \"hi\" \\ ok"
EMPTY=
not a pair
"#;
        let r = parse_os_release(text);
        assert_eq!(r["ID"], "debian");
        assert_eq!(r["VERSION_ID"], "12");
        assert_eq!(r["NAME"], "Debian GNU/Linux");
        assert_eq!(r["PRETTY_NAME"], "Debian GNU/Linux 12 (bookworm)");
        assert_eq!(r["ESCAPED"], r#"say "hi" \ ok"#);
        assert_eq!(r["EMPTY"], "");
        assert!(!r.keys().any(|k| k.contains('#') || k.contains(' ')));
    }

    #[test]
    fn gathers_facts_from_the_config_overrides() {
        let dir = tempfile::tempdir().unwrap();
        let id_file = dir.path().join("machine-id");
        std::fs::write(&id_file, "0123456789abcdef0123456789abcdef\n").unwrap();
        let config = Config {
            hostname: Some("web-01".into()),
            scrape_address: Some("10.0.0.5:12345".into()),
            machine_id_file: id_file,
            ..Config::default()
        };
        let url = Url::parse("https://127.0.0.1:8443").unwrap();
        let facts = gather(&config, &url).unwrap();
        assert_eq!(facts.hostname, "web-01");
        assert_eq!(facts.machine_id, "0123456789abcdef0123456789abcdef");
        assert_eq!(facts.scrape_address, "10.0.0.5:12345");
        assert_eq!(facts.os, std::env::consts::OS);
        assert_eq!(facts.agent_version, env!("CARGO_PKG_VERSION"));
    }

    #[test]
    fn a_missing_or_empty_machine_id_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("machine-id");
        let msg = read_machine_id(&path).unwrap_err().to_string();
        assert!(msg.contains("machine-id"), "{msg}");
        std::fs::write(&path, " \n").unwrap();
        assert!(matches!(
            read_machine_id(&path),
            Err(FactsError::MachineIdEmpty { .. })
        ));
    }

    #[test]
    fn the_primary_address_of_a_loopback_server_is_loopback() {
        let url = Url::parse("https://127.0.0.1:8443").unwrap();
        assert!(primary_address(&url).unwrap().is_loopback());
    }

    #[test]
    fn odd_optional_facts_are_left_out_not_fatal() {
        let mut f = Facts {
            hostname: "web-01".into(),
            machine_id: "abc123".into(),
            os: "linux".into(),
            arch: "x86_64".into(),
            os_id: Some("debian".into()),
            os_version: Some("12".into()),
            kernel: Some("6.1 weird kernel".into()),
            scrape_address: "10.0.0.5:12345".into(),
            agent_version: "0.1.0".into(),
        };
        check_dropping_optionals(&mut f).unwrap();
        assert_eq!(f.kernel, None);
        assert_eq!(f.os_id.as_deref(), Some("debian"));
        f.hostname = "a/b".into();
        assert!(check_dropping_optionals(&mut f).is_err());
    }
}
