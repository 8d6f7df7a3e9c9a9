//! Service detection as pure functions over a snapshot of the host: its
//! processes, its listening TCP sockets and a few well-known paths. Each
//! detection records its evidence and the parameters a template needs (the
//! port, the address Alloy reaches it at). The snapshot is taken by
//! [`super::probe`]; everything here is table-tested from
//! `tests/fixtures/snapshots/`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use muster_shared::facts::{ServiceFact, ServiceKind};
use serde::{Deserialize, Serialize};

/// What detection looks at.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Snapshot {
    #[serde(default)]
    pub processes: Vec<Proc>,
    /// Listening TCP sockets (v4 and v6).
    #[serde(default)]
    pub listeners: Vec<Listener>,
    /// Those of [`PROBE_PATHS`] that exist.
    #[serde(default)]
    pub paths: Vec<String>,
}

/// One process.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Proc {
    pub pid: u32,
    /// The kernel's name for it (`comm`: at most 15 bytes on Linux).
    pub name: String,
    #[serde(default)]
    pub exe: Option<String>,
    #[serde(default)]
    pub cmdline: Vec<String>,
    /// Inodes of the sockets it holds open; filled for candidate processes
    /// only, and only when the agent may look (root, or the same user).
    #[serde(default)]
    pub socket_inodes: Vec<u64>,
}

/// A listening socket from `/proc/net/tcp{,6}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Listener {
    pub addr: SocketAddr,
    pub inode: u64,
}

/// Paths whose existence is evidence.
pub const PROBE_PATHS: &[&str] = &[
    "/var/run/docker.sock",
    "/run/docker.sock",
    "/run/postgresql/.s.PGSQL.5432",
    "/var/run/postgresql/.s.PGSQL.5432",
    "/tmp/.s.PGSQL.5432",
    "/run/mysqld/mysqld.sock",
    "/var/run/mysqld/mysqld.sock",
    "/var/lib/mysql/mysql.sock",
    "/run/log/journal",
    "/var/log/journal",
];

/// How one service is recognised.
struct Rule {
    kind: ServiceKind,
    /// Program names (process name, executable or argv[0] file name).
    programs: &'static [&'static str],
    /// The port it listens on unless configured otherwise.
    default_port: Option<u16>,
    /// Command-line flags that carry the port.
    port_flags: &'static [&'static str],
    /// Paths that identify it on their own.
    paths: &'static [&'static str],
}

const RULES: &[Rule] = &[
    Rule {
        kind: ServiceKind::Postgres,
        programs: &["postgres", "postmaster"],
        default_port: Some(5432),
        port_flags: &["-p", "--port"],
        // The local socket (its dir goes into the DSN: peer authentication
        // works over it, not over TCP).
        paths: &[
            "/run/postgresql/.s.PGSQL.5432",
            "/var/run/postgresql/.s.PGSQL.5432",
            "/tmp/.s.PGSQL.5432",
        ],
    },
    Rule {
        kind: ServiceKind::Mysql,
        programs: &["mysqld", "mariadbd"],
        default_port: Some(3306),
        port_flags: &["--port", "-P"],
        // Debian's and RHEL's socket (auth_socket / unix_socket work over it).
        paths: &[
            "/run/mysqld/mysqld.sock",
            "/var/run/mysqld/mysqld.sock",
            "/var/lib/mysql/mysql.sock",
        ],
    },
    Rule {
        kind: ServiceKind::Redis,
        programs: &["redis-server", "valkey-server"],
        default_port: Some(6379),
        port_flags: &["--port"],
        paths: &[],
    },
    Rule {
        kind: ServiceKind::Nginx,
        programs: &["nginx"],
        default_port: Some(80),
        port_flags: &[],
        paths: &[],
    },
    Rule {
        kind: ServiceKind::Docker,
        programs: &["dockerd"],
        default_port: None,
        port_flags: &[],
        paths: &["/var/run/docker.sock", "/run/docker.sock"],
    },
    Rule {
        kind: ServiceKind::Journal,
        programs: &["systemd-journald"],
        default_port: None,
        port_flags: &[],
        paths: &["/run/log/journal", "/var/log/journal"],
    },
];

/// The standalone nginx exporter (Debian: `prometheus-nginx-exporter`).
const NGINX_EXPORTER: Rule = Rule {
    kind: ServiceKind::Nginx,
    programs: &["prometheus-nginx-exporter", "nginx-prometheus-exporter"],
    default_port: Some(9113),
    port_flags: &["--web.listen-address", "-web.listen-address"],
    paths: &[],
};

/// Process names that own a port on behalf of a container, so a well-known
/// port they hold still says which service is behind it.
const PORT_PROXIES: &[&str] = &["docker-proxy", "rootlessport", "conmon"];

/// Longest process name the Linux kernel keeps (`comm`).
const COMM_LEN: usize = 15;

/// The program name in a path, without a Windows `.exe`.
fn file_name(path: &str) -> &str {
    let name = path.rsplit(['/', '\\']).next().unwrap_or(path);
    name.strip_suffix(".exe").unwrap_or(name)
}

/// Whether `p` runs one of `programs`: by its name (which the kernel cuts to
/// 15 bytes), its executable, or its argv[0] (which some servers rewrite to
/// `redis-server 127.0.0.1:6379`).
fn runs(p: &Proc, programs: &[&str]) -> bool {
    let argv0 = p
        .cmdline
        .first()
        .and_then(|a| a.split_whitespace().next())
        .map(file_name);
    let exe = p.exe.as_deref().map(file_name);
    let name = file_name(&p.name);
    programs.iter().any(|prog| {
        name == *prog
            || (name.len() == COMM_LEN && prog.starts_with(name))
            || exe == Some(*prog)
            || argv0 == Some(*prog)
    })
}

/// Whether the agent should look up `p`'s open sockets (only processes that
/// detection cares about, to keep the scan cheap).
pub fn is_candidate(p: &Proc) -> bool {
    RULES
        .iter()
        .any(|r| r.default_port.is_some() && runs(p, r.programs))
        || runs(p, NGINX_EXPORTER.programs)
        || runs(p, PORT_PROXIES)
}

/// The part of `snap` one process tree accounts for: the processes
/// descended from `root` (itself included; `parents` maps each process to
/// its parent), only the listening sockets they hold, and no paths (those
/// belong to the machine, not to a process).
pub fn scoped(snap: Snapshot, parents: &BTreeMap<u32, u32>, root: u32) -> Snapshot {
    let in_tree = |mut pid: u32| {
        // Bounded: a parent map with a cycle must not hang detection.
        for _ in 0..parents.len() + 1 {
            if pid == root {
                return true;
            }
            match parents.get(&pid) {
                Some(&parent) if parent != pid => pid = parent,
                _ => return false,
            }
        }
        false
    };
    let processes: Vec<Proc> = snap
        .processes
        .into_iter()
        .filter(|p| in_tree(p.pid))
        .collect();
    let held: BTreeSet<u64> = processes
        .iter()
        .flat_map(|p| p.socket_inodes.iter().copied())
        .collect();
    Snapshot {
        listeners: snap
            .listeners
            .into_iter()
            .filter(|l| held.contains(&l.inode))
            .collect(),
        processes,
        paths: Vec::new(),
    }
}

/// The port given on a command line: `--port 6380`, `--port=6380`, `-p6380`,
/// `--web.listen-address=:9113`, or redis's rewritten `redis-server *:6380`.
fn cmdline_port(p: &Proc, flags: &[&str]) -> Option<u16> {
    let words: Vec<&str> = p
        .cmdline
        .iter()
        .flat_map(|a| a.split_whitespace())
        .collect();
    let port_of = |v: &str| v.rsplit(':').next().and_then(|p| p.parse::<u16>().ok());
    for (i, w) in words.iter().enumerate() {
        for flag in flags {
            if w == flag {
                if let Some(port) = words.get(i + 1).and_then(|v| port_of(v)) {
                    return Some(port);
                }
            } else if let Some(v) = w.strip_prefix(flag) {
                let v = v.strip_prefix('=').unwrap_or(v);
                if let Some(port) = port_of(v).filter(|_| !v.is_empty()) {
                    return Some(port);
                }
            }
        }
    }
    // `redis-server 127.0.0.1:6380` / `*:6380` as the process retitled itself.
    words
        .iter()
        .skip(1)
        .find(|w| w.contains(':') && !w.starts_with('-'))
        .and_then(|w| port_of(w))
        .filter(|_| flags.contains(&"--port") && runs(p, &["redis-server", "valkey-server"]))
}

/// The address Alloy on the host uses to reach a socket listening on `ip`.
fn reach(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    }
}

/// Orders candidate listeners: the default port first, then IPv4 before
/// IPv6, then the lowest port.
fn best_listener(listeners: &[Listener], default_port: Option<u16>) -> Option<Listener> {
    listeners.iter().copied().min_by_key(|l| {
        (
            Some(l.addr.port()) != default_port,
            l.addr.is_ipv6(),
            l.addr.port(),
            l.addr.ip(),
        )
    })
}

/// What one rule found: evidence, the port and its address.
#[derive(Default)]
struct Found {
    evidence: BTreeSet<String>,
    listener: Option<Listener>,
    port: Option<u16>,
}

fn apply_rule(rule: &Rule, snap: &Snapshot) -> Option<Found> {
    let procs: Vec<&Proc> = snap
        .processes
        .iter()
        .filter(|p| runs(p, rule.programs))
        .collect();
    let mut found = Found::default();
    for p in &procs {
        found.evidence.insert(format!("process {}", p.name));
    }
    for path in rule.paths {
        if snap.paths.iter().any(|p| p == path) {
            found.evidence.insert(format!("path {path}"));
        }
    }
    if rule.default_port.is_some() {
        let owned: Vec<Listener> = snap
            .listeners
            .iter()
            .filter(|l| procs.iter().any(|p| p.socket_inodes.contains(&l.inode)))
            .copied()
            .collect();
        if let Some(l) = best_listener(&owned, rule.default_port) {
            found.listener = Some(l);
        } else if let Some(port) = procs.iter().find_map(|p| cmdline_port(p, rule.port_flags)) {
            found.evidence.insert(format!("command line port {port}"));
            found.port = Some(port);
        } else if let Some(default) = rule.default_port {
            // Not owned by anything visible (another user's process while the
            // agent is not root, or a container's published port): the
            // well-known port still counts, unless a process we can see owns
            // it for something else.
            let unowned = |l: &&Listener| {
                !snap
                    .processes
                    .iter()
                    .any(|p| p.socket_inodes.contains(&l.inode) && !runs(p, PORT_PROXIES))
                    || procs.iter().any(|p| p.socket_inodes.contains(&l.inode))
            };
            let on_default: Vec<Listener> = snap
                .listeners
                .iter()
                .filter(|l| l.addr.port() == default)
                .filter(unowned)
                .copied()
                .collect();
            found.listener = best_listener(&on_default, Some(default));
            if procs.is_empty() && found.listener.is_none() {
                return None;
            }
        }
    }
    if let Some(l) = found.listener {
        found.evidence.insert(format!("listen {}", l.addr));
    }
    (!found.evidence.is_empty()).then_some(found)
}

/// The services `snap` shows, sorted by kind.
pub fn detect(snap: &Snapshot) -> Vec<ServiceFact> {
    let mut out = Vec::new();
    for rule in RULES {
        let Some(found) = apply_rule(rule, snap) else {
            continue;
        };
        let mut fact = ServiceFact {
            kind: rule.kind,
            port: found.listener.map(|l| l.addr.port()).or(found.port),
            address: found.listener.map(|l| reach(l.addr.ip()).to_string()),
            path: rule
                .paths
                .iter()
                .find(|p| snap.paths.iter().any(|s| s == *p))
                .map(|p| p.to_string()),
            exporter_port: None,
            evidence: found.evidence.into_iter().collect(),
        };
        if rule.kind == ServiceKind::Nginx {
            // The port nginx serves on is not what Prometheus scrapes; its
            // exporter's is.
            if let Some(exp) = apply_rule(&NGINX_EXPORTER, snap) {
                fact.exporter_port = exp.listener.map(|l| l.addr.port()).or(exp.port);
                fact.evidence.extend(
                    exp.evidence
                        .into_iter()
                        .filter(|e| e.starts_with("process"))
                        .map(|e| format!("exporter {e}")),
                );
                if let Some(l) = exp.listener {
                    fact.evidence.push(format!("exporter listen {}", l.addr));
                }
            }
        }
        fact.evidence.truncate(muster_shared::facts::MAX_EVIDENCE);
        out.push(fact);
    }
    out.sort_by_key(|s| s.kind);
    out
}

/// Parses `/proc/net/tcp` or `/proc/net/tcp6`: the sockets in state LISTEN
/// (`0A`), with their inodes.
pub fn parse_proc_net_tcp(text: &str) -> Vec<Listener> {
    let mut out: Vec<Listener> = text
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 10 || fields[3] != "0A" {
                return None;
            }
            let addr = parse_hex_addr(fields[1])?;
            let inode = fields[9].parse().ok()?;
            Some(Listener { addr, inode })
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// `0100007F:1538` (v4) or 32 hex digits `:port` (v6): the kernel prints the
/// address as 32-bit words in host byte order (little-endian here).
fn parse_hex_addr(text: &str) -> Option<SocketAddr> {
    let (ip, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |s: &str| u32::from_str_radix(s, 16).ok().map(u32::swap_bytes);
    let ip = match ip.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(ip)?)),
        32 => {
            let mut bytes = [0u8; 16];
            for i in 0..4 {
                let w = word(&ip[i * 8..i * 8 + 8])?;
                bytes[i * 4..i * 4 + 4].copy_from_slice(&w.to_be_bytes());
            }
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// The name (`comm`) and parent pid in `/proc/<pid>/stat`:
/// `1234 (name) S 1 ...`. The name may hold spaces and parentheses, so it
/// ends at the last `)`.
pub fn parse_proc_stat(text: &str) -> Option<(String, u32)> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let name = text.get(open + 1..close)?;
    let mut rest = text[close + 1..].split_whitespace();
    let _state = rest.next()?;
    let parent = rest.next()?.parse().ok()?;
    Some((name.to_string(), parent))
}

/// The arguments in `/proc/<pid>/cmdline`: NUL-separated, NUL-terminated
/// (empty for kernel threads).
pub fn parse_cmdline(raw: &[u8]) -> Vec<String> {
    let raw = raw.strip_suffix(b"\0").unwrap_or(raw);
    if raw.is_empty() {
        return Vec::new();
    }
    raw.split(|&b| b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

/// The inode of a `/proc/<pid>/fd/<n>` link target `socket:[12345]`.
pub fn socket_inode(link: &str) -> Option<u64> {
    link.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proc(pid: u32, name: &str, cmdline: &[&str], inodes: &[u64]) -> Proc {
        Proc {
            pid,
            name: name.into(),
            exe: None,
            cmdline: cmdline.iter().map(|s| s.to_string()).collect(),
            socket_inodes: inodes.to_vec(),
        }
    }

    fn listen(addr: &str, inode: u64) -> Listener {
        Listener {
            addr: addr.parse().unwrap(),
            inode,
        }
    }

    #[test]
    fn parses_proc_net_tcp_listeners_only() {
        let v4 = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1538 00000000:0000 0A 00000000:00000000 00:00000000 00000000   108        0 21641 1 0000000000000000 100 0 0 10 0
   1: 00000000:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 23571 1 0000000000000000 100 0 0 10 0
   2: 0500000A:D3B2 0600000A:01BB 01 00000000:00000000 00:00000000 00000000  1000        0 99999 1 0000000000000000 20 4 30 10 -1
";
        assert_eq!(
            parse_proc_net_tcp(v4),
            vec![listen("0.0.0.0:80", 23571), listen("127.0.0.1:5432", 21641)]
        );
        let v6 = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:1538 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000   108        0 21643 1 0000000000000000 100 0 0 10 0
   1: 00000000000000000000000000000000:0050 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 23572 1 0000000000000000 100 0 0 10 0
";
        assert_eq!(
            parse_proc_net_tcp(v6),
            vec![listen("[::]:80", 23572), listen("[::1]:5432", 21643)]
        );
        assert!(parse_proc_net_tcp("header only\n").is_empty());
        assert!(parse_proc_net_tcp("h\n 0: zz:1 0 0A a b c d e f\n").is_empty());
    }

    #[test]
    fn parses_proc_stat_and_cmdline() {
        assert_eq!(
            parse_proc_stat("1234 (nginx) S 1 1234 1234 0 -1 4194560 2 0"),
            Some(("nginx".into(), 1))
        );
        assert_eq!(
            parse_proc_stat("77 (a) b (c)) R 42 77 77 0"),
            Some(("a) b (c)".into(), 42))
        );
        assert_eq!(
            parse_proc_stat("77 (kworker/0:1) I 2"),
            Some(("kworker/0:1".into(), 2))
        );
        assert_eq!(parse_proc_stat("77 (cut"), None);
        assert_eq!(parse_proc_stat(""), None);
        assert_eq!(
            parse_cmdline(b"redis-server\0--port\x006380\0"),
            ["redis-server", "--port", "6380"]
        );
        // Rewritten by the process itself: one argument, spaces kept.
        assert_eq!(
            parse_cmdline(b"redis-server *:6379"),
            ["redis-server *:6379"]
        );
        assert!(parse_cmdline(b"").is_empty());
    }

    #[test]
    fn socket_links() {
        assert_eq!(socket_inode("socket:[21641]"), Some(21641));
        assert_eq!(socket_inode("pipe:[1]"), None);
        assert_eq!(socket_inode("/dev/null"), None);
    }

    #[test]
    fn owned_listeners_give_port_and_address() {
        let snap = Snapshot {
            processes: vec![
                proc(
                    10,
                    "postgres",
                    &["/usr/lib/postgresql/15/bin/postgres", "-D", "/x"],
                    &[1, 2],
                ),
                proc(11, "postgres", &["postgres: checkpointer"], &[]),
            ],
            listeners: vec![listen("[::1]:5433", 2), listen("127.0.0.1:5433", 1)],
            paths: vec![],
        };
        let s = detect(&snap);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].kind, ServiceKind::Postgres);
        assert_eq!(s[0].port, Some(5433));
        assert_eq!(s[0].address.as_deref(), Some("127.0.0.1"));
        assert_eq!(s[0].evidence, ["listen 127.0.0.1:5433", "process postgres"]);
    }

    #[test]
    fn database_sockets_are_reported_as_the_service_path() {
        let snap = Snapshot {
            processes: vec![
                proc(
                    10,
                    "postgres",
                    &["/usr/lib/postgresql/15/bin/postgres"],
                    &[],
                ),
                proc(11, "mariadbd", &["/usr/sbin/mariadbd"], &[]),
            ],
            listeners: vec![],
            paths: vec![
                "/run/postgresql/.s.PGSQL.5432".into(),
                "/var/lib/mysql/mysql.sock".into(),
            ],
        };
        let s = detect(&snap);
        let path = |kind| {
            s.iter()
                .find(|f| f.kind == kind)
                .and_then(|f| f.path.clone())
        };
        assert_eq!(
            path(ServiceKind::Postgres).as_deref(),
            Some("/run/postgresql/.s.PGSQL.5432")
        );
        assert_eq!(
            path(ServiceKind::Mysql).as_deref(),
            Some("/var/lib/mysql/mysql.sock")
        );
    }

    #[test]
    fn command_line_ports_and_truncated_names() {
        let snap = Snapshot {
            processes: vec![
                proc(
                    5,
                    "redis-server",
                    &["/usr/bin/redis-server 127.0.0.1:6380"],
                    &[],
                ),
                proc(6, "mysqld", &["/usr/sbin/mysqld", "--port=3307"], &[]),
                proc(
                    7,
                    "systemd-journal",
                    &["/lib/systemd/systemd-journald"],
                    &[],
                ),
            ],
            listeners: vec![],
            paths: vec!["/run/log/journal".into()],
        };
        let s = detect(&snap);
        let kinds: Vec<_> = s.iter().map(|s| (s.kind, s.port)).collect();
        assert_eq!(
            kinds,
            [
                (ServiceKind::Mysql, Some(3307)),
                (ServiceKind::Redis, Some(6380)),
                (ServiceKind::Journal, None)
            ]
        );
        assert_eq!(s[2].path.as_deref(), Some("/run/log/journal"));
    }

    #[test]
    fn windows_program_names_match_without_exe() {
        let mut p = proc(4, "postgres.exe", &[], &[]);
        p.exe = Some("C:\\Program Files\\PostgreSQL\\16\\bin\\postgres.exe".into());
        let s = detect(&Snapshot {
            processes: vec![p],
            ..Snapshot::default()
        });
        assert_eq!((s[0].kind, s[0].port), (ServiceKind::Postgres, None));
    }

    #[test]
    fn a_well_known_port_owned_by_another_program_is_not_evidence() {
        let snap = Snapshot {
            processes: vec![proc(3, "java", &["java"], &[9])],
            listeners: vec![listen("0.0.0.0:6379", 9)],
            paths: vec![],
        };
        assert!(detect(&snap).is_empty());
        // ... but an unowned one (a container's published port) is.
        let snap = Snapshot {
            processes: vec![proc(3, "docker-proxy", &["docker-proxy"], &[9])],
            listeners: vec![listen("0.0.0.0:6379", 9)],
            paths: vec![],
        };
        let s = detect(&snap);
        assert_eq!((s[0].kind, s[0].port), (ServiceKind::Redis, Some(6379)));
        assert_eq!(s[0].address.as_deref(), Some("127.0.0.1"));
    }

    #[test]
    fn nginx_records_its_exporters_port() {
        let snap = Snapshot {
            processes: vec![
                proc(
                    20,
                    "nginx",
                    &["nginx: master process /usr/sbin/nginx"],
                    &[30],
                ),
                proc(
                    21,
                    "prometheus-ngin",
                    &["/usr/bin/prometheus-nginx-exporter"],
                    &[31],
                ),
            ],
            listeners: vec![listen("0.0.0.0:80", 30), listen("[::]:9114", 31)],
            paths: vec![],
        };
        let s = detect(&snap);
        assert_eq!(s.len(), 1);
        assert_eq!((s[0].port, s[0].exporter_port), (Some(80), Some(9114)));
        assert!(s[0]
            .evidence
            .contains(&"exporter process prometheus-ngin".to_string()));
    }

    #[test]
    fn a_scoped_snapshot_sees_one_process_tree_and_its_sockets_only() {
        let proc_ = |pid, name: &str, inodes: Vec<u64>| Proc {
            pid,
            name: name.into(),
            socket_inodes: inodes,
            ..Proc::default()
        };
        let listen = |port, inode| Listener {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            inode,
        };
        let snap = Snapshot {
            processes: vec![
                proc_(1, "init", vec![]),
                proc_(10, "nginx", vec![100]),
                proc_(20, "cargo-test", vec![]),
                proc_(21, "postgres", vec![200]),
                proc_(22, "sh", vec![]),
                proc_(23, "redis-server", vec![300]),
            ],
            listeners: vec![
                listen(80, 100),
                listen(5432, 200),
                listen(6379, 300),
                listen(6380, 999),
            ],
            paths: vec!["/run/log/journal".into()],
        };
        let parents: BTreeMap<u32, u32> = [(10, 1), (20, 1), (21, 20), (22, 20), (23, 22)]
            .into_iter()
            .collect();
        let machine: Vec<ServiceKind> = detect(&snap).iter().map(|s| s.kind).collect();
        assert!(machine.contains(&ServiceKind::Nginx) && machine.contains(&ServiceKind::Journal));
        let tree = scoped(snap, &parents, 20);
        let pids: Vec<u32> = tree.processes.iter().map(|p| p.pid).collect();
        assert_eq!(pids, [20, 21, 22, 23]);
        assert_eq!(tree.listeners, [listen(5432, 200), listen(6379, 300)]);
        assert!(tree.paths.is_empty());
        let kinds: Vec<ServiceKind> = detect(&tree).iter().map(|s| s.kind).collect();
        assert_eq!(kinds, [ServiceKind::Postgres, ServiceKind::Redis]);
        let cycle: BTreeMap<u32, u32> = [(5, 6), (6, 5)].into_iter().collect();
        let none = scoped(
            Snapshot {
                processes: vec![proc_(5, "nginx", vec![])],
                ..Snapshot::default()
            },
            &cycle,
            20,
        );
        assert!(none.processes.is_empty());
    }
}

/// Every snapshot in `tests/fixtures/snapshots/` against the services it
/// must give (its `expect`).
#[cfg(test)]
mod fixtures {
    use super::*;

    #[derive(Deserialize)]
    struct Fixture {
        #[allow(dead_code)]
        about: String,
        snapshot: Snapshot,
        expect: Vec<ServiceFact>,
    }

    #[test]
    fn snapshot_fixtures() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/snapshots");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let fixture: Fixture =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let got = detect(&fixture.snapshot);
            assert_eq!(
                got,
                fixture.expect,
                "{}:\n got {}",
                path.display(),
                serde_json::to_string_pretty(&got).unwrap()
            );
            seen += 1;
        }
        assert!(
            seen >= 3,
            "found {seen} snapshot fixtures in {}",
            dir.display()
        );
    }
}
