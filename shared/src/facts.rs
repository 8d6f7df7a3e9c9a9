//! Host facts as the agent reports them, and the rules the server applies to
//! them: facts are untrusted input, so every string is checked and bounded
//! before it can reach a file name, a label or a template. Also the host-id
//! rule, since a host id is derived from a fact (the hostname) and becomes a
//! file name.

use serde::{Deserialize, Serialize};

/// What an agent tells the server about its host.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Facts {
    pub hostname: String,
    /// `/etc/machine-id` on Linux: stable across reboots, unique per install.
    pub machine_id: String,
    /// `linux`, `windows`, ... (Rust's `std::env::consts::OS`).
    pub os: String,
    /// `x86_64`, `aarch64`, ... (Rust's `std::env::consts::ARCH`).
    pub arch: String,
    /// `ID` from os-release (`debian`, `rhel`, ...), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_id: Option<String>,
    /// `VERSION_ID` from os-release, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<String>,
    /// `ID_LIKE` from os-release (`"rhel centos fedora"`), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_like: Option<String>,
    /// Where Prometheus reaches this host's Alloy: `host:port`.
    pub scrape_address: String,
    pub agent_version: String,
    /// Services the agent detected, each with its evidence and the
    /// parameters a template needs. Absent from agents before detection.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<ServiceFact>,
    /// The Alloy installed on the host, when the agent looked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alloy: Option<AlloyFact>,
}

/// OS family: decides the base template and, on the agent, the install plan.
/// Derived from other facts ([`Facts::os_family`]), never sent, so an agent
/// cannot claim one its os-release contradicts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OsFamily {
    Debian,
    Rhel,
    Suse,
    Windows,
    Other,
}

impl OsFamily {
    pub fn as_str(self) -> &'static str {
        match self {
            OsFamily::Debian => "debian",
            OsFamily::Rhel => "rhel",
            OsFamily::Suse => "suse",
            OsFamily::Windows => "windows",
            OsFamily::Other => "other",
        }
    }

    /// The family of an OS (`std::env::consts::OS`) with os-release `ID` and
    /// `ID_LIKE`: the ID decides when it is known, else the first known
    /// `ID_LIKE` word (Rocky says `rhel centos fedora`, Amazon Linux says
    /// `fedora`).
    pub fn classify(os: &str, id: Option<&str>, id_like: Option<&str>) -> OsFamily {
        if os == "windows" {
            return OsFamily::Windows;
        }
        let of = |word: &str| match word {
            "debian" | "ubuntu" | "raspbian" | "linuxmint" | "pop" | "kali" => {
                Some(OsFamily::Debian)
            }
            "rhel" | "centos" | "fedora" | "rocky" | "almalinux" | "ol" | "amzn" => {
                Some(OsFamily::Rhel)
            }
            "suse" | "sles" | "sles_sap" | "sled" | "opensuse" => Some(OsFamily::Suse),
            w if w.starts_with("opensuse") => Some(OsFamily::Suse),
            _ => None,
        };
        id.into_iter()
            .chain(id_like.into_iter().flat_map(str::split_whitespace))
            .find_map(|w| of(&w.to_ascii_lowercase()))
            .unwrap_or(OsFamily::Other)
    }
}

/// A service the agent found on the host. Every field is untrusted like the
/// rest of the facts; [`Facts::check`] bounds them all.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceFact {
    pub kind: ServiceKind,
    /// The TCP port the service listens on, when found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// The IP address Alloy on the host reaches it at (loopback when the
    /// service listens on every address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// A socket or directory that identifies it (Docker's socket, the
    /// journal's directory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// nginx: the port of the standalone Prometheus exporter, when one runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exporter_port: Option<u16>,
    /// What gave it away, for people: `process postgres`, `listen 127.0.0.1:5432`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub evidence: Vec<String>,
}

/// The services Muster has templates for. A kind this server does not know
/// (from a newer agent) parses as `Unknown` and is ignored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceKind {
    Postgres,
    Mysql,
    Redis,
    Nginx,
    Docker,
    Journal,
    #[serde(other)]
    Unknown,
}

impl ServiceKind {
    pub const KNOWN: [ServiceKind; 6] = [
        ServiceKind::Postgres,
        ServiceKind::Mysql,
        ServiceKind::Redis,
        ServiceKind::Nginx,
        ServiceKind::Docker,
        ServiceKind::Journal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ServiceKind::Postgres => "postgres",
            ServiceKind::Mysql => "mysql",
            ServiceKind::Redis => "redis",
            ServiceKind::Nginx => "nginx",
            ServiceKind::Docker => "docker",
            ServiceKind::Journal => "journal",
            ServiceKind::Unknown => "unknown",
        }
    }
}

/// The host's Alloy as the agent found it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlloyFact {
    pub installed: bool,
    /// As `alloy --version` prints it, e.g. `v1.10.2`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// How the agent checks a config before installing it.
    pub validation: Validation,
}

/// `alloy validate` (1.9+), `alloy fmt` (older), or the built-in syntax
/// checker (no Alloy binary yet).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Validation {
    Validate,
    Fmt,
    Builtin,
    #[serde(other)]
    Unknown,
}

/// Longest hostname accepted (the DNS limit).
pub const MAX_HOSTNAME_LEN: usize = 253;
/// Longest short fact (ids, versions) accepted.
pub const MAX_FACT_LEN: usize = 128;
/// Most services one host may report.
pub const MAX_SERVICES: usize = 32;
/// Most evidence lines per service.
pub const MAX_EVIDENCE: usize = 8;
/// Longest evidence line or path.
pub const MAX_PATH_LEN: usize = 256;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FactError {
    #[error("fact {field}: {problem}")]
    Invalid {
        field: &'static str,
        problem: &'static str,
    },
}

fn invalid(field: &'static str, problem: &'static str) -> FactError {
    FactError::Invalid { field, problem }
}

impl Facts {
    /// Checks every field; the first problem found is returned.
    pub fn check(&self) -> Result<(), FactError> {
        check_hostname(&self.hostname)?;
        check_token("machine_id", &self.machine_id, |c| {
            c.is_ascii_alphanumeric() || c == '-'
        })?;
        check_token("os", &self.os, |c| c.is_ascii_alphanumeric() || c == '_')?;
        check_token("arch", &self.arch, |c| {
            c.is_ascii_alphanumeric() || c == '_'
        })?;
        let version_char = |c: char| c.is_ascii_alphanumeric() || "._-+~".contains(c);
        if let Some(id) = &self.os_id {
            check_token("os_id", id, version_char)?;
        }
        if let Some(v) = &self.os_version {
            check_token("os_version", v, version_char)?;
        }
        if let Some(k) = &self.kernel {
            check_token("kernel", k, version_char)?;
        }
        if let Some(like) = &self.os_like {
            check_token("os_like", like, |c| version_char(c) || c == ' ')?;
        }
        check_token("agent_version", &self.agent_version, version_char)?;
        check_scrape_address(&self.scrape_address)?;
        check_services(&self.services)?;
        if let Some(alloy) = &self.alloy {
            if let Some(v) = &alloy.version {
                check_token("alloy.version", v, version_char)?;
            }
        }
        Ok(())
    }

    /// The OS family these facts describe.
    pub fn os_family(&self) -> OsFamily {
        OsFamily::classify(&self.os, self.os_id.as_deref(), self.os_like.as_deref())
    }

    /// The detected service of `kind`, if any.
    pub fn service(&self, kind: ServiceKind) -> Option<&ServiceFact> {
        self.services.iter().find(|s| s.kind == kind)
    }
}

fn check_services(services: &[ServiceFact]) -> Result<(), FactError> {
    if services.len() > MAX_SERVICES {
        return Err(invalid("services", "lists more than 32 services"));
    }
    for (i, s) in services.iter().enumerate() {
        let known = s.kind != ServiceKind::Unknown;
        if known && services[..i].iter().any(|o| o.kind == s.kind) {
            return Err(invalid("services", "lists a service kind twice"));
        }
        if s.port == Some(0) || s.exporter_port == Some(0) {
            return Err(invalid("services.port", "must be 1 to 65535"));
        }
        if let Some(a) = &s.address {
            if a.len() > 64 || a.parse::<std::net::IpAddr>().is_err() {
                return Err(invalid("services.address", "must be an IP address"));
            }
        }
        if let Some(p) = &s.path {
            check_path("services.path", p)?;
        }
        if s.evidence.len() > MAX_EVIDENCE {
            return Err(invalid("services.evidence", "has more than 8 entries"));
        }
        for e in &s.evidence {
            if e.is_empty() || e.len() > MAX_PATH_LEN || e.chars().any(char::is_control) {
                return Err(invalid(
                    "services.evidence",
                    "entries must be 1 to 256 bytes without control characters",
                ));
            }
        }
    }
    Ok(())
}

/// An absolute path of plain characters: it may end up in a config.
fn check_path(field: &'static str, path: &str) -> Result<(), FactError> {
    let plain = path
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "._/-+@:".contains(c));
    if !path.starts_with('/') || path.len() > MAX_PATH_LEN || !plain || path.contains("..") {
        return Err(invalid(
            field,
            "must be an absolute path of letters, digits and ._/-+@: (no ..)",
        ));
    }
    Ok(())
}

fn check_token(
    field: &'static str,
    value: &str,
    allowed: impl Fn(char) -> bool,
) -> Result<(), FactError> {
    if value.is_empty() {
        return Err(invalid(field, "is empty"));
    }
    if value.len() > MAX_FACT_LEN {
        return Err(invalid(field, "is longer than 128 bytes"));
    }
    if !value.chars().all(allowed) {
        return Err(invalid(field, "contains a character that is not allowed"));
    }
    Ok(())
}

/// A hostname: 1 to 253 bytes of letters, digits, `.`, `-` and `_`, starting
/// with a letter or digit. Anything else (slashes, quotes, whitespace,
/// newlines) is refused rather than cleaned up.
pub fn check_hostname(name: &str) -> Result<(), FactError> {
    const FIELD: &str = "hostname";
    if name.is_empty() {
        return Err(invalid(FIELD, "is empty"));
    }
    if name.len() > MAX_HOSTNAME_LEN {
        return Err(invalid(FIELD, "is longer than 253 bytes"));
    }
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(invalid(FIELD, "must start with a letter or digit"));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
    {
        return Err(invalid(
            FIELD,
            "may contain only letters, digits, '.', '-' and '_'",
        ));
    }
    Ok(())
}

/// `host:port` or `[v6]:port`, with a host made of hostname characters.
pub fn check_scrape_address(addr: &str) -> Result<(), FactError> {
    const FIELD: &str = "scrape_address";
    if addr.parse::<std::net::SocketAddr>().is_ok() {
        return Ok(());
    }
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| invalid(FIELD, "must be host:port"))?;
    if port.parse::<u16>().map_or(true, |p| p == 0) {
        return Err(invalid(FIELD, "has no valid port"));
    }
    check_hostname(host).map_err(|_| invalid(FIELD, "has an invalid host part"))
}

/// A host's full label set, the one its target file, its config and every
/// preview carry: the operator's labels plus those Muster derives from the
/// host (`host_id`, `hostname`, `os`, `arch`; see `labels::FACT_LABELS`).
pub fn host_labels(
    host_id: &str,
    facts: &Facts,
    operator: &crate::labels::Labels,
) -> crate::labels::Labels {
    let mut labels = operator.clone();
    labels.insert("host_id".into(), host_id.to_string());
    labels.insert("hostname".into(), facts.hostname.clone());
    labels.insert("os".into(), facts.os.clone());
    labels.insert("arch".into(), facts.arch.clone());
    labels
}

/// Longest host id.
pub const MAX_HOST_ID_LEN: usize = 63;

/// Derives a host id from a hostname and a random suffix: the hostname's first
/// label, lowercased, with anything outside `[a-z0-9-]` turned into `-`,
/// bounded, then `-<suffix>`. Readable for operators, and always a safe file
/// name whatever the hostname was.
pub fn host_id(hostname: &str, suffix: &str) -> String {
    let first = hostname.split('.').next().unwrap_or_default();
    let mut slug: String = first
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9') => c,
            _ => '-',
        })
        .take(40)
        .collect();
    slug = slug.trim_matches('-').to_string();
    if slug.is_empty() {
        slug.push_str("host");
    }
    let suffix: String = suffix
        .chars()
        .filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        .take(MAX_HOST_ID_LEN - slug.len() - 1)
        .collect();
    format!("{slug}-{suffix}")
}

/// Whether `id` has the shape [`host_id`] produces: safe as a file name,
/// a certificate subject and a URL path segment.
pub fn is_host_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_HOST_ID_LEN
        && id.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> Facts {
        Facts {
            hostname: "web-01.example.com".into(),
            machine_id: "0123456789abcdef0123456789abcdef".into(),
            os: "linux".into(),
            arch: "x86_64".into(),
            os_id: Some("debian".into()),
            os_version: Some("12".into()),
            kernel: Some("6.1.0-18-amd64".into()),
            os_like: None,
            scrape_address: "10.0.0.5:12345".into(),
            agent_version: "0.1.0".into(),
            services: vec![ServiceFact {
                kind: ServiceKind::Postgres,
                port: Some(5432),
                address: Some("127.0.0.1".into()),
                path: None,
                exporter_port: None,
                evidence: vec!["process postgres".into(), "listen 127.0.0.1:5432".into()],
            }],
            alloy: Some(AlloyFact {
                installed: true,
                version: Some("v1.10.2".into()),
                validation: Validation::Validate,
            }),
        }
    }

    #[test]
    fn os_families_come_from_id_then_id_like() {
        let c = OsFamily::classify;
        assert_eq!(c("linux", Some("debian"), None), OsFamily::Debian);
        assert_eq!(c("linux", Some("ubuntu"), Some("debian")), OsFamily::Debian);
        assert_eq!(
            c("linux", Some("rocky"), Some("rhel centos fedora")),
            OsFamily::Rhel
        );
        assert_eq!(c("linux", Some("amzn"), Some("fedora")), OsFamily::Rhel);
        assert_eq!(c("linux", Some("sles"), Some("suse")), OsFamily::Suse);
        assert_eq!(c("linux", Some("opensuse-leap"), None), OsFamily::Suse);
        assert_eq!(
            c("linux", Some("weird"), Some("nothing known")),
            OsFamily::Other
        );
        assert_eq!(c("linux", None, None), OsFamily::Other);
        assert_eq!(c("windows", None, None), OsFamily::Windows);
    }

    #[test]
    fn service_facts_are_bounded() {
        let ok = sample();
        assert_eq!(ok.check(), Ok(()));
        let mutate = |f: &dyn Fn(&mut ServiceFact)| {
            let mut facts = sample();
            f(&mut facts.services[0]);
            facts.check()
        };
        assert!(mutate(&|s| s.port = Some(0)).is_err());
        assert!(mutate(&|s| s.address = Some("localhost\"".into())).is_err());
        assert!(mutate(&|s| s.path = Some("/run/../etc/shadow".into())).is_err());
        assert!(mutate(&|s| s.path = Some("relative".into())).is_err());
        assert!(mutate(&|s| s.path = Some("/a\"b".into())).is_err());
        assert!(mutate(&|s| s.evidence = vec!["a\nb".into()]).is_err());
        assert!(mutate(&|s| s.evidence = vec!["x".repeat(257)]).is_err());
        assert!(mutate(&|s| s.evidence = vec!["x".into(); 9]).is_err());
        assert!(mutate(&|s| s.path = Some("/var/run/docker.sock".into())).is_ok());
        let mut twice = sample();
        twice.services.push(twice.services[0].clone());
        assert!(twice.check().is_err());
        let mut many = sample();
        many.services = vec![
            ServiceFact {
                kind: ServiceKind::Unknown,
                port: None,
                address: None,
                path: None,
                exporter_port: None,
                evidence: vec![],
            };
            33
        ];
        assert!(many.check().is_err());
        let mut bad_alloy = sample();
        bad_alloy.alloy.as_mut().unwrap().version = Some("v1 \"x\"".into());
        assert!(bad_alloy.check().is_err());
    }

    #[test]
    fn unknown_service_kinds_parse_and_old_facts_still_parse() {
        let json = r#"{"hostname":"a","machine_id":"m","os":"linux","arch":"x86_64",
            "scrape_address":"10.0.0.1:12345","agent_version":"0.1.0",
            "services":[{"kind":"cassandra","port":9042}]}"#;
        let f: Facts = serde_json::from_str(json).expect("parses");
        assert_eq!(f.services[0].kind, ServiceKind::Unknown);
        assert_eq!(f.check(), Ok(()));
        let old = r#"{"hostname":"a","machine_id":"m","os":"linux","arch":"x86_64",
            "scrape_address":"10.0.0.1:12345","agent_version":"0.1.0"}"#;
        let f: Facts = serde_json::from_str(old).expect("issue-2 facts parse");
        assert!(f.services.is_empty() && f.alloy.is_none());
    }

    #[test]
    fn accepts_ordinary_facts() {
        assert_eq!(sample().check(), Ok(()));
        let mut v6 = sample();
        v6.scrape_address = "[fd00::5]:12345".into();
        assert_eq!(v6.check(), Ok(()));
    }

    #[test]
    fn refuses_hostile_hostnames() {
        for bad in [
            "../../etc/x",
            "web\n01",
            "web\"01",
            "web'01",
            "a/b",
            "",
            " web",
            "-web",
            "web 01",
            "we}b",
        ] {
            let mut f = sample();
            f.hostname = bad.into();
            assert!(f.check().is_err(), "{bad:?} was accepted");
        }
        let mut f = sample();
        f.hostname = "a".repeat(254);
        assert!(f.check().is_err());
    }

    #[test]
    fn refuses_bad_scrape_addresses_and_ids() {
        for bad in ["10.0.0.5", "host:0", "host:http", "../x:80", "a\"b:80"] {
            let mut f = sample();
            f.scrape_address = bad.into();
            assert!(f.check().is_err(), "{bad:?} was accepted");
        }
        let mut f = sample();
        f.machine_id = "../x".into();
        assert!(f.check().is_err());
        f = sample();
        f.os_version = Some("1\n2".into());
        assert!(f.check().is_err());
    }

    #[test]
    fn host_ids_are_safe_whatever_the_hostname() {
        assert_eq!(host_id("Web-01.example.com", "a1b2c3"), "web-01-a1b2c3");
        for hostile in ["../../etc/x", "\n\"}", "", "....", "ÄÖÜ"] {
            let id = host_id(hostile, "a1b2c3");
            assert!(is_host_id(&id), "{hostile:?} gave {id:?}");
            assert!(!id.contains('/') && !id.contains('.'));
        }
        let long = host_id(&"x".repeat(300), &"f".repeat(40));
        assert!(long.len() <= MAX_HOST_ID_LEN && is_host_id(&long));
        assert!(!is_host_id("../x") && !is_host_id("A") && !is_host_id(""));
    }
}
