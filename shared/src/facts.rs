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
    /// Where Prometheus reaches this host's Alloy: `host:port`.
    pub scrape_address: String,
    pub agent_version: String,
}

/// Longest hostname accepted (the DNS limit).
pub const MAX_HOSTNAME_LEN: usize = 253;
/// Longest short fact (ids, versions) accepted.
pub const MAX_FACT_LEN: usize = 128;

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
        check_token("arch", &self.arch, |c| c.is_ascii_alphanumeric() || c == '_')?;
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
        check_token("agent_version", &self.agent_version, version_char)?;
        check_scrape_address(&self.scrape_address)
    }
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
            scrape_address: "10.0.0.5:12345".into(),
            agent_version: "0.1.0".into(),
        }
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
