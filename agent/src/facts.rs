//! Gathering the host facts reported at enrollment and whenever they change:
//! thin IO functions that read the machine id, the hostname, the kernel
//! release, os-release, the address this host uses to reach the server, the
//! installed Alloy, and the services `detect` finds.

use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};

use muster_shared::facts::{AlloyFact, FactError, Facts, Validation};
use reqwest::Url;
use tracing::warn;

use crate::alloy::command;
use crate::alloy::version::{check_for, Check};
use crate::config::{Config, ALLOY_PORT};
use crate::detect::os_release::OsRelease;
#[cfg(not(windows))]
use crate::detect::os_release::FILE_ENV;
use crate::identity::StateDir;
use ring::rand::{SecureRandom, SystemRandom};

#[derive(Debug, thiserror::Error)]
pub enum FactsError {
    #[error("cannot read the machine id from {}: {error}", path.display())]
    MachineId { path: PathBuf, error: io::Error },
    #[error("the machine id file {} is empty", path.display())]
    MachineIdEmpty { path: PathBuf },
    #[error("cannot keep a generated machine id in {}: {error}", path.display())]
    GeneratedMachineId { path: PathBuf, error: io::Error },
    #[error("cannot find this host's name: {0}")]
    Hostname(io::Error),
    #[error("cannot find the local address used to reach {server}: {error} (set scrape_address)")]
    PrimaryAddress { server: String, error: io::Error },
    #[error("{0}")]
    Invalid(#[from] FactError),
}

/// Collects this host's facts and checks them as the server will.
pub fn gather(config: &Config, server: &Url) -> Result<Facts, FactsError> {
    let machine_id = machine_id(config)?;
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
    let os = read_os_release();
    let mut facts = Facts {
        hostname,
        machine_id,
        os: std::env::consts::OS.to_string(),
        arch: std::env::consts::ARCH.to_string(),
        os_id: os.id,
        os_version: os.version_id,
        kernel: kernel_release(),
        os_like: os.id_like,
        scrape_address,
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
        // Detection reads Linux's /proc, /etc and /var/log: nothing to find
        // on Windows (where such a path names a folder on the current drive,
        // or under wine the Linux host's own).
        #[cfg(not(windows))]
        services: crate::detect::services(),
        #[cfg(windows)]
        services: Vec::new(),
        alloy: None,
    };
    check_dropping_optionals(&mut facts)?;
    Ok(facts)
}

/// [`gather`] off the async workers (detection reads `/proc`), plus the
/// installed Alloy.
pub async fn collect(config: &Config, server: &Url) -> Result<Facts, FactsError> {
    let (c, s) = (config.clone(), server.clone());
    let gathered = tokio::task::spawn_blocking(move || gather(&c, &s))
        .await
        .map_err(|e| FactsError::Hostname(io::Error::other(e)))?;
    let mut facts = gathered?;
    facts.alloy = Some(alloy_fact_cached(&config.alloy_bin).await);
    if facts.check().is_err() {
        // An odd version string: leave it out rather than fail.
        if let Some(a) = &mut facts.alloy {
            a.version = None;
        }
    }
    Ok(facts)
}

/// How long a look at the installed Alloy is trusted: facts are gathered
/// every check-in, and running `alloy --version` each time would be waste.
const ALLOY_PROBE_TTL: std::time::Duration = std::time::Duration::from_secs(300);

/// The last [`alloy_fact`] per binary, with when it was taken.
static ALLOY_PROBES: std::sync::Mutex<Vec<(PathBuf, std::time::Instant, AlloyFact)>> =
    std::sync::Mutex::new(Vec::new());

/// [`alloy_fact`], at most once per [`ALLOY_PROBE_TTL`] for the same binary.
pub async fn alloy_fact_cached(bin: &Path) -> AlloyFact {
    let fresh = |probes: &Vec<(PathBuf, std::time::Instant, AlloyFact)>| {
        probes
            .iter()
            .find(|(b, at, _)| b == bin && at.elapsed() < ALLOY_PROBE_TTL)
            .map(|(_, _, f)| f.clone())
    };
    if let Some(f) = fresh(&ALLOY_PROBES.lock().unwrap_or_else(|p| p.into_inner())) {
        return f;
    }
    let fact = alloy_fact(bin).await;
    let mut probes = ALLOY_PROBES.lock().unwrap_or_else(|p| p.into_inner());
    probes.retain(|(b, _, _)| b != bin);
    probes.push((bin.to_path_buf(), std::time::Instant::now(), fact.clone()));
    fact
}

/// Whether Alloy is installed at `bin`, its version, and so how configs are
/// checked before they go live.
pub async fn alloy_fact(bin: &Path) -> AlloyFact {
    match command::version(bin, std::time::Duration::from_secs(20)).await {
        Ok(v) => AlloyFact {
            installed: true,
            validation: match check_for(Some(&v)) {
                Check::Validate => Validation::Validate,
                Check::Fmt => Validation::Fmt,
            },
            version: Some(v.text),
        },
        Err(_) => AlloyFact {
            installed: false,
            version: None,
            validation: Validation::Builtin,
        },
    }
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
        if field.starts_with("services") {
            warn!(
                problem,
                "leaving out detected services the server would refuse"
            );
            facts.services.clear();
            continue;
        }
        let slot = match *field {
            "os_like" => &mut facts.os_like,
            "os_id" => &mut facts.os_id,
            "os_version" => &mut facts.os_version,
            "kernel" => &mut facts.kernel,
            _ => return Err(err),
        };
        warn!(fact = field, value = ?slot, problem, "leaving out a fact the server would refuse");
        *slot = None;
    }
}

/// systemd's machine id, where the agent looks first.
pub const ETC_MACHINE_ID: &str = "/etc/machine-id";
/// D-Bus's copy, on hosts without systemd's.
pub const DBUS_MACHINE_ID: &str = "/var/lib/dbus/machine-id";
/// The id the agent generates, in its state dir, for a host with neither
/// (minimal images, containers).
pub const GENERATED_MACHINE_ID: &str = "machine-id";

/// This host's machine id: `machine_id_file`; when that is the default
/// `/etc/machine-id` and missing or empty, D-Bus's `/var/lib/dbus/machine-id`;
/// else one generated once (128 random bits, hex) and kept in the state dir,
/// which a warning says.
pub fn machine_id(config: &Config) -> Result<String, FactsError> {
    let first = read_machine_id(&config.machine_id_file);
    if first.is_ok() {
        return first;
    }
    if config.machine_id_file == Path::new(ETC_MACHINE_ID) {
        if let Ok(id) = read_machine_id(Path::new(DBUS_MACHINE_ID)) {
            return Ok(id);
        }
    }
    let kept = config.state_dir.join(GENERATED_MACHINE_ID);
    if let Ok(id) = read_machine_id(&kept) {
        return Ok(id);
    }
    let io_error = |error| FactsError::GeneratedMachineId {
        path: kept.clone(),
        error,
    };
    let mut bytes = [0u8; 16];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| io_error(io::Error::other("no random numbers")))?;
    let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    StateDir::new(&config.state_dir)
        .create()
        .map_err(|e| io_error(io::Error::other(e.to_string())))?;
    // Of two agents racing, the first file wins; both use it.
    crate::atomic_file::create_atomic(&kept, format!("{id}\n").as_bytes(), 0o644)
        .map_err(io_error)?;
    let id = read_machine_id(&kept)?;
    warn!(
        path = %kept.display(),
        looked_in = %config.machine_id_file.display(),
        "this host has no machine id; generated one and kept it in the agent's state dir"
    );
    Ok(id)
}

/// The machine id in `path`, trimmed.
pub fn read_machine_id(path: &Path) -> Result<String, FactsError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        #[cfg(windows)]
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            machine_guid().map_err(|error| FactsError::MachineId {
                path: path.to_owned(),
                error,
            })?
        }
        Err(error) => {
            return Err(FactsError::MachineId {
                path: path.to_owned(),
                error,
            })
        }
    };
    let id = text.trim();
    if id.is_empty() {
        return Err(FactsError::MachineIdEmpty {
            path: path.to_owned(),
        });
    }
    Ok(id.to_string())
}

/// Windows' own id for this installation (set up by Windows' setup, changed
/// by sysprep): `HKLM\SOFTWARE\Microsoft\Cryptography`, `MachineGuid`.
#[cfg(windows)]
fn machine_guid() -> io::Result<String> {
    let key = winreg::RegKey::predef(winreg::enums::HKEY_LOCAL_MACHINE)
        .open_subkey(r"SOFTWARE\Microsoft\Cryptography")?;
    key.get_value("MachineGuid")
}

/// This host's os-release: see [`os_release_from`].
#[cfg(not(windows))]
fn read_os_release() -> OsRelease {
    os_release_from(std::env::var_os(FILE_ENV).map(PathBuf::from))
}

/// The file `named` by [`FILE_ENV`] (tests: a fixture, never the
/// machine's; unreadable, no OS id), else `/etc/os-release`, falling back to
/// `/usr/lib/os-release`; where neither exists (macOS), what os_info says.
#[cfg(not(windows))]
fn os_release_from(named: Option<PathBuf>) -> OsRelease {
    let Some(path) = named else {
        return OsRelease::read(Path::new("/")).unwrap_or_else(|_| os_info_release());
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => OsRelease::parse(&text),
        Err(error) => {
            warn!(path = %path.display(), %error, "cannot read the os-release {FILE_ENV} names; reporting no OS id");
            OsRelease::default()
        }
    }
}

/// Windows has no os-release (a Unix path there names a file on the
/// current drive, or under wine the Linux host's own): what os_info says.
#[cfg(windows)]
fn read_os_release() -> OsRelease {
    os_info_release()
}

#[cfg(target_os = "linux")]
fn os_info_release() -> OsRelease {
    OsRelease::default()
}

/// The OS name and version from os_info, shaped like os-release's `ID` and
/// `VERSION_ID` (`windows`, `10.0.20348`); odd values are dropped later by
/// the same check as everything else.
#[cfg(not(target_os = "linux"))]
fn os_info_release() -> OsRelease {
    let info = os_info::get();
    let id = info.os_type().to_string().to_lowercase().replace(' ', "_");
    let version = info.version().to_string();
    OsRelease {
        id: Some(id),
        version_id: (version != "Unknown").then_some(version),
        id_like: None,
        pretty_name: Some(info.to_string()),
    }
}

/// The kernel release (`uname -r`), which Linux exposes as a file.
#[cfg(target_os = "linux")]
fn kernel_release() -> Option<String> {
    let text = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
    Some(text.trim().to_string()).filter(|k| !k.is_empty())
}

/// Other systems: none (os_info's version stands for it on Windows).
#[cfg(not(target_os = "linux"))]
fn kernel_release() -> Option<String> {
    None
}

/// The OS hostname: the kernel's on Linux, else what `hostname` prints.
fn os_hostname() -> io::Result<String> {
    #[cfg(target_os = "linux")]
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
    fn the_os_release_named_by_the_environment_replaces_the_machines() {
        let fixtures =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/os-release");
        let rocky = os_release_from(Some(fixtures.join("rocky-8")));
        assert_eq!(
            (rocky.id.as_deref(), rocky.version_id.as_deref()),
            (Some("rocky"), Some("8.10"))
        );
        let missing = os_release_from(Some(fixtures.join("no-such-release")));
        assert_eq!(missing, OsRelease::default());
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

    #[tokio::test]
    async fn alloy_probes_are_cached_per_binary() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("alloy");
        let missing = alloy_fact_cached(&bin).await;
        assert!(!missing.installed);
        assert_eq!(missing.validation, Validation::Builtin);
        // Installed now, but the probe is still fresh: the cached answer
        // (not run: the file is not even executable).
        std::fs::write(&bin, "#!/bin/sh\necho 'alloy, version v1.10.2'\n").unwrap();
        assert_eq!(alloy_fact_cached(&bin).await, missing);
        // Another binary is probed on its own.
        let other = alloy_fact_cached(&dir.path().join("other")).await;
        assert!(!other.installed);
        assert!(ALLOY_PROBES.lock().unwrap().len() >= 2);
    }

    #[test]
    fn without_a_machine_id_one_is_generated_once_in_the_state_dir() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            machine_id_file: dir.path().join("etc/machine-id"),
            state_dir: dir.path().join("state"),
            ..Config::default()
        };
        let id = machine_id(&config).expect("generated");
        assert_eq!(id.len(), 32);
        assert!(id.chars().all(|c| c.is_ascii_hexdigit()), "{id}");
        let kept = dir.path().join("state").join(GENERATED_MACHINE_ID);
        assert_eq!(std::fs::read_to_string(&kept).unwrap().trim(), id);
        assert_eq!(machine_id(&config).unwrap(), id, "the same id every time");
        // The configured file, once it exists, wins.
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        std::fs::write(
            &config.machine_id_file,
            "feedfacefeedfacefeedfacefeedface\n",
        )
        .unwrap();
        assert_eq!(
            machine_id(&config).unwrap(),
            "feedfacefeedfacefeedfacefeedface"
        );
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
            os_like: None,
            scrape_address: "10.0.0.5:12345".into(),
            agent_version: "0.1.0".into(),
            services: vec![muster_shared::facts::ServiceFact {
                kind: muster_shared::facts::ServiceKind::Redis,
                port: Some(0),
                address: None,
                path: None,
                exporter_port: None,
                evidence: vec![],
            }],
            alloy: None,
        };
        check_dropping_optionals(&mut f).unwrap();
        assert_eq!(f.kernel, None);
        assert!(f.services.is_empty());
        assert_eq!(f.os_id.as_deref(), Some("debian"));
        f.hostname = "a/b".into();
        assert!(check_dropping_optionals(&mut f).is_err());
    }
}
