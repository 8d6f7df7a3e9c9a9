//! What this machine is called and where other hosts can reach it: its
//! hostname, FQDN and non-loopback addresses, for the server certificate and
//! the default `public_url` that `init` writes. The parsers are pure; only
//! [`Machine::discover`] reads `/proc` and `/etc/hosts`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, UdpSocket};

/// The port agents reach the server on unless configured otherwise.
pub const DEFAULT_AGENT_PORT: u16 = 8443;

/// This machine's names and addresses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Machine {
    pub hostname: Option<String>,
    pub fqdn: Option<String>,
    /// Non-loopback, non-link-local addresses, the primary one first.
    pub addresses: Vec<IpAddr>,
}

impl Machine {
    /// Looks at this machine: `/proc/sys/kernel/hostname`, `/etc/hosts` for
    /// the FQDN, `/proc/net/fib_trie` and `/proc/net/if_inet6` for the
    /// addresses, and the route to a non-local address for the primary one.
    /// Whatever cannot be read is left out.
    pub fn discover() -> Machine {
        let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
        let hostname = Some(read("/proc/sys/kernel/hostname").trim().to_string())
            .filter(|h| !h.is_empty() && h != "localhost");
        let fqdn = hostname
            .as_deref()
            .and_then(|h| fqdn_from_hosts(&read("/etc/hosts"), h));
        let mut addresses: Vec<IpAddr> = parse_fib_trie_locals(&read("/proc/net/fib_trie"))
            .into_iter()
            .map(IpAddr::V4)
            .chain(
                parse_if_inet6(&read("/proc/net/if_inet6"))
                    .into_iter()
                    .map(IpAddr::V6),
            )
            .filter(|ip| reachable(*ip))
            .collect();
        addresses.dedup();
        if let Some(primary) = primary_address() {
            if let Some(at) = addresses.iter().position(|a| *a == primary) {
                addresses.remove(at);
                addresses.insert(0, primary);
            }
        }
        Machine {
            hostname,
            fqdn,
            addresses,
        }
    }

    /// Names for the server certificate: hostname, FQDN, addresses.
    pub fn sans(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for name in self.hostname.iter().chain(self.fqdn.iter()) {
            if rustls_pki_types::DnsName::try_from(name.as_str()).is_ok() && !out.contains(name) {
                out.push(name.clone());
            }
        }
        out.extend(self.addresses.iter().map(IpAddr::to_string));
        out
    }

    /// The URL other hosts most likely reach this one at: the primary
    /// address (the names may not resolve elsewhere), else the FQDN, else
    /// localhost.
    pub fn public_url(&self) -> String {
        let host = match (self.addresses.first(), &self.fqdn) {
            (Some(IpAddr::V6(ip)), _) => format!("[{ip}]"),
            (Some(ip), _) => ip.to_string(),
            (None, Some(fqdn)) => fqdn.clone(),
            (None, None) => "localhost".to_string(),
        };
        format!("https://{host}:{DEFAULT_AGENT_PORT}")
    }
}

/// Whether another host could use `ip` to reach this one.
fn reachable(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !v4.is_loopback() && !v4.is_link_local() && !v4.is_unspecified(),
        IpAddr::V6(v6) => {
            !v6.is_loopback() && !v6.is_unspecified() && (v6.segments()[0] & 0xffc0) != 0xfe80
        }
    }
}

/// The local address of the default route: a UDP socket `connect()`ed to
/// a documentation address picks the route without sending anything.
fn primary_address() -> Option<IpAddr> {
    let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).ok()?;
    socket.connect((Ipv4Addr::new(203, 0, 113, 1), 9)).ok()?;
    Some(socket.local_addr().ok()?.ip())
}

/// The FQDN `/etc/hosts` gives `hostname`: the canonical (first) name of a
/// line listing it, when that name has a dot. `hostname` itself when it
/// already has one.
pub fn fqdn_from_hosts(hosts: &str, hostname: &str) -> Option<String> {
    if hostname.contains('.') {
        return Some(hostname.to_string());
    }
    hosts.lines().find_map(|line| {
        let line = line.split('#').next().unwrap_or_default();
        let mut fields = line.split_whitespace();
        fields.next()?.parse::<IpAddr>().ok()?;
        let names: Vec<&str> = fields.collect();
        let canonical = *names.first()?;
        (names.iter().any(|n| n.eq_ignore_ascii_case(hostname))
            && canonical.contains('.')
            && canonical
                .to_ascii_lowercase()
                .starts_with(&format!("{}.", hostname.to_ascii_lowercase())))
        .then(|| canonical.to_string())
    })
}

/// The local IPv4 addresses in `/proc/net/fib_trie`: each `|-- ADDR`
/// followed by a `/32 host LOCAL` line.
pub fn parse_fib_trie_locals(text: &str) -> Vec<Ipv4Addr> {
    let mut out = Vec::new();
    let mut last: Option<Ipv4Addr> = None;
    for line in text.lines() {
        let line = line.trim();
        if let Some(addr) = line.strip_prefix("|-- ") {
            last = addr.parse().ok();
        } else if line.starts_with("/32 host LOCAL") {
            if let Some(ip) = last.take() {
                if !out.contains(&ip) {
                    out.push(ip);
                }
            }
        }
    }
    out
}

/// The IPv6 addresses in `/proc/net/if_inet6` (32 hex digits, then index,
/// prefix length, scope, flags, interface).
pub fn parse_if_inet6(text: &str) -> Vec<Ipv6Addr> {
    text.lines()
        .filter_map(|line| {
            let hex = line.split_whitespace().next()?;
            let bits = u128::from_str_radix(hex, 16)
                .ok()
                .filter(|_| hex.len() == 32)?;
            Some(Ipv6Addr::from(bits))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIB_TRIE: &str = "Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 0.0.0.0\n        /0 universe UNICAST\n     +-- 127.0.0.0/8 2 0 2\n        +-- 127.0.0.0/31 1 0 0\n           |-- 127.0.0.0\n              /8 host LOCAL\n           |-- 127.0.0.1\n              /32 host LOCAL\n        |-- 127.255.255.255\n           /32 link BROADCAST\n     +-- 10.0.2.0/24 2 0 2\n           |-- 10.0.2.0\n              /24 link UNICAST\n           |-- 10.0.2.15\n              /32 host LOCAL\n        |-- 10.0.2.255\n           /32 link BROADCAST\nLocal:\n           |-- 10.0.2.15\n              /32 host LOCAL\n";

    #[test]
    fn local_ipv4_addresses_come_from_the_fib_trie_once_each() {
        assert_eq!(
            parse_fib_trie_locals(FIB_TRIE),
            vec![Ipv4Addr::LOCALHOST, Ipv4Addr::new(10, 0, 2, 15)]
        );
    }

    #[test]
    fn ipv6_addresses_come_from_if_inet6() {
        let text = "fe8000000000000000fc00fffe000001 04 40 20 80     eth0\n\
                    fd000000000000000000000000000002 04 40 00 82     eth0\n\
                    00000000000000000000000000000001 01 80 10 80       lo\n";
        let got = parse_if_inet6(text);
        assert_eq!(got.len(), 3);
        assert_eq!(got[1], "fd00::2".parse::<Ipv6Addr>().unwrap());
        let reachable: Vec<_> = got
            .into_iter()
            .filter(|ip| reachable((*ip).into()))
            .collect();
        assert_eq!(reachable, vec!["fd00::2".parse::<Ipv6Addr>().unwrap()]);
    }

    #[test]
    fn the_fqdn_is_the_canonical_name_of_the_hostname_line() {
        let hosts = "127.0.0.1 localhost\n# 10.0.0.9 web-01.old.example web-01\n127.0.1.1\tweb-01.example.com web-01\n";
        assert_eq!(
            fqdn_from_hosts(hosts, "web-01").as_deref(),
            Some("web-01.example.com")
        );
        assert_eq!(fqdn_from_hosts(hosts, "db-01"), None);
        assert_eq!(fqdn_from_hosts("127.0.0.1 localhost vm\n", "vm"), None);
        assert_eq!(
            fqdn_from_hosts("", "db.example.org").as_deref(),
            Some("db.example.org")
        );
    }

    #[test]
    fn sans_and_public_url_use_names_and_the_primary_address() {
        let m = Machine {
            hostname: Some("web-01".into()),
            fqdn: Some("web-01.example.com".into()),
            addresses: vec!["10.0.2.15".parse().unwrap(), "fd00::2".parse().unwrap()],
        };
        assert_eq!(
            m.sans(),
            ["web-01", "web-01.example.com", "10.0.2.15", "fd00::2"]
        );
        assert_eq!(m.public_url(), "https://10.0.2.15:8443");
        let v6 = Machine {
            addresses: vec!["fd00::2".parse().unwrap()],
            ..m.clone()
        };
        assert_eq!(v6.public_url(), "https://[fd00::2]:8443");
        let names_only = Machine {
            addresses: vec![],
            ..m
        };
        assert_eq!(names_only.public_url(), "https://web-01.example.com:8443");
        assert_eq!(Machine::default().public_url(), "https://localhost:8443");
        let odd = Machine {
            hostname: Some("bad name".into()),
            ..Machine::default()
        };
        assert!(
            odd.sans().is_empty(),
            "a hostname that is no DNS name is left out"
        );
    }
}
