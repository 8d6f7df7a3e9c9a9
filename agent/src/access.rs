//! What Alloy's own user (`alloy`) must be able to reach for a config to
//! work, and whether it can: the groups a component needs (cAdvisor reads
//! the Docker socket, owned by group `docker`) and the files components
//! read (a redis password file, `local.file`, log files such as RHEL's
//! root-only `/var/log/messages`). Alloy only finds out when it runs the
//! config, so the agent reports what is missing, with the fix, after an
//! apply. The requirements are read from the config text (pure); the check
//! takes the account database and file owners and modes as data (pure);
//! [`problems`] does the reading.

use std::collections::BTreeSet;
use std::path::Path;

use muster_shared::alloy::{self, ast};

/// The user Grafana's packages run Alloy as.
pub const ALLOY_USER: &str = "alloy";

/// Something a component of the config needs from the host.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Need {
    /// Membership of a group, and which component needs it.
    Group { name: String, component: String },
    /// Read access to a file, and which component reads it.
    File { path: String, component: String },
}

/// Attributes whose string value is a file a component reads.
const FILE_ATTRS: &[(&str, &str)] = &[
    ("prometheus.exporter.redis", "redis_password_file"),
    ("local.file", "filename"),
];

/// What `config` needs of the `alloy` user. Globs (`*.log`) are left out:
/// which files they match is known only on the host at run time.
pub fn needs(config: &str) -> Vec<Need> {
    let Ok(file) = alloy::parse(config) else {
        return Vec::new();
    };
    let mut out = BTreeSet::new();
    for stmt in &file.body {
        let ast::Stmt::Block {
            name, label, body, ..
        } = stmt
        else {
            continue;
        };
        let block = name.join(".");
        let component = match label {
            Some(l) => format!("{block}.{l}"),
            None => block.clone(),
        };
        for attr in body {
            let ast::Stmt::Attribute {
                name: attr, value, ..
            } = attr
            else {
                continue;
            };
            let text = string(value);
            if block == "prometheus.exporter.cadvisor" && attr == "docker_host" {
                if text.as_deref().is_some_and(|t| t.starts_with("unix://")) {
                    out.insert(Need::Group {
                        name: "docker".into(),
                        component: component.clone(),
                    });
                }
            } else if FILE_ATTRS.contains(&(block.as_str(), attr.as_str())) {
                if let Some(path) = text.filter(|p| p.starts_with('/')) {
                    out.insert(Need::File {
                        path,
                        component: component.clone(),
                    });
                }
            } else if block == "local.file_match" && attr == "path_targets" {
                for path in paths_of(value) {
                    out.insert(Need::File {
                        path,
                        component: component.clone(),
                    });
                }
            }
        }
    }
    out.into_iter().collect()
}

fn string(expr: &ast::Expr) -> Option<String> {
    match expr {
        ast::Expr::Literal {
            kind: ast::LiteralKind::String,
            raw,
            ..
        } => alloy::unquote(raw).ok(),
        _ => None,
    }
}

/// The literal, glob-free `__path__` values of a `path_targets` list.
fn paths_of(expr: &ast::Expr) -> Vec<String> {
    let ast::Expr::Array { elements, .. } = expr else {
        return Vec::new();
    };
    elements
        .iter()
        .filter_map(|e| match e {
            ast::Expr::Object { fields, .. } => fields.iter().find(|f| f.name == "__path__"),
            _ => None,
        })
        .filter_map(|f| string(&f.value))
        .filter(|p| p.starts_with('/') && !p.contains(['*', '?', '[', '{']))
        .collect()
}

/// The `alloy` account as the check needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    pub uid: u32,
    /// Its primary and supplementary groups, by id and name.
    pub groups: Vec<(u32, String)>,
}

/// Owner, group and permission bits of a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileMode {
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
}

/// Reads `/etc/passwd` and `/etc/group` text for `user`'s account.
pub fn account(passwd: &str, group: &str, user: &str) -> Option<Account> {
    let fields = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() >= 4 && f[0] == user)?;
    let (uid, gid) = (fields[2].parse().ok()?, fields[3].parse::<u32>().ok()?);
    let groups = group
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|f| f.len() >= 4)
        .filter_map(|f| {
            let id = f[2].parse::<u32>().ok()?;
            let member = id == gid || f[3].split(',').any(|m| m.trim() == user);
            member.then(|| (id, f[0].to_string()))
        })
        .collect();
    Some(Account { uid, groups })
}

/// What stands between `account` and `needs`, each with its fix; `stat`
/// gives a file's owner and mode (`None`: it does not exist).
pub fn check(
    account: &Account,
    needs: &[Need],
    stat: impl Fn(&Path) -> Option<FileMode>,
) -> Vec<String> {
    let in_group = |name: &str| account.groups.iter().any(|(_, n)| n == name);
    let mut out = Vec::new();
    for need in needs {
        match need {
            Need::Group { name, component } if !in_group(name) => out.push(format!(
                "{component} needs user {ALLOY_USER} in group {name}: usermod -aG {name} {ALLOY_USER}, then restart Alloy"
            )),
            Need::Group { .. } => {}
            Need::File { path, component } => match stat(Path::new(path)) {
                None => out.push(format!("{component} reads {path}, which does not exist")),
                Some(f) if !readable(account, f) => out.push(format!(
                    "{component} reads {path}, which user {ALLOY_USER} cannot read (owner {}, group {}, mode {:o}): \
                     grant it, e.g. setfacl -m u:{ALLOY_USER}:r {path} (for a rotated log, in the rotation's \
                     create line too)",
                    f.uid,
                    f.gid,
                    f.mode & 0o7777
                )),
                Some(_) => {}
            },
        }
    }
    out
}

fn readable(account: &Account, f: FileMode) -> bool {
    if account.uid == 0 {
        return true;
    }
    if f.uid == account.uid {
        return f.mode & 0o400 != 0;
    }
    if account.groups.iter().any(|(id, _)| *id == f.gid) {
        return f.mode & 0o040 != 0;
    }
    f.mode & 0o004 != 0
}

/// On this host: what the `alloy` user lacks for `config`. Empty where
/// there is no `alloy` account (Alloy runs as another user, or on Windows)
/// or nothing is missing.
pub fn problems(config: &str) -> Vec<String> {
    let needs = needs(config);
    if needs.is_empty() {
        return Vec::new();
    }
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let Some(account) = account(&read("/etc/passwd"), &read("/etc/group"), ALLOY_USER) else {
        return Vec::new();
    };
    check(&account, &needs, stat)
}

#[cfg(unix)]
fn stat(path: &Path) -> Option<FileMode> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some(FileMode {
        uid: m.uid(),
        gid: m.gid(),
        mode: m.mode(),
    })
}

#[cfg(not(unix))]
fn stat(path: &Path) -> Option<FileMode> {
    std::fs::metadata(path).ok().map(|_| FileMode {
        uid: 0,
        gid: 0,
        mode: 0o444,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"
prometheus.exporter.cadvisor "default" {
	docker_host = "unix:///var/run/docker.sock"
}
prometheus.exporter.redis "default" {
	redis_addr          = "127.0.0.1:6379"
	redis_password_file = "/etc/alloy/redis.pass"
}
local.file_match "files" {
	path_targets = [
		{"__path__" = "/var/log/messages", "host" = "a"},
		{"__path__" = "/var/log/app/*.log"},
	]
}
"#;

    const PASSWD: &str =
        "root:x:0:0:root:/root:/bin/bash\nalloy:x:998:997::/var/lib/alloy:/sbin/nologin\n";
    const GROUP: &str = "root:x:0:\nadm:x:4:syslog,alloy\nsystemd-journal:x:101:alloy\nalloy:x:997:\ndocker:x:996:\n";

    #[test]
    fn needs_come_from_the_components_of_the_config() {
        let n = needs(CONFIG);
        let cadvisor = "prometheus.exporter.cadvisor.default".to_string();
        assert_eq!(
            n,
            [
                Need::Group {
                    name: "docker".into(),
                    component: cadvisor
                },
                Need::File {
                    path: "/etc/alloy/redis.pass".into(),
                    component: "prometheus.exporter.redis.default".into()
                },
                Need::File {
                    path: "/var/log/messages".into(),
                    component: "local.file_match.files".into()
                },
            ]
        );
        assert!(needs("prometheus.exporter.unix \"default\" { }\n").is_empty());
        assert!(needs("not alloy {").is_empty());
    }

    #[test]
    fn the_account_has_its_primary_and_listed_groups() {
        let a = account(PASSWD, GROUP, "alloy").expect("alloy");
        assert_eq!(a.uid, 998);
        let names: Vec<&str> = a.groups.iter().map(|(_, n)| n.as_str()).collect();
        assert_eq!(names, ["adm", "systemd-journal", "alloy"]);
        assert_eq!(account(PASSWD, GROUP, "nobody"), None);
    }

    #[test]
    fn each_problem_says_what_to_do() {
        let a = account(PASSWD, GROUP, "alloy").expect("alloy");
        let stat = |p: &Path| match p.to_str() {
            // RHEL: root-only.
            Some("/var/log/messages") => Some(FileMode {
                uid: 0,
                gid: 0,
                mode: 0o100600,
            }),
            // Readable through group alloy.
            Some("/etc/alloy/redis.pass") => Some(FileMode {
                uid: 0,
                gid: 997,
                mode: 0o100640,
            }),
            _ => None,
        };
        let problems = check(&a, &needs(CONFIG), stat);
        assert_eq!(problems.len(), 2, "{problems:#?}");
        assert!(
            problems[0].contains("in group docker: usermod -aG docker alloy, then restart Alloy"),
            "{}",
            problems[0]
        );
        assert!(
            problems[1].starts_with("local.file_match.files reads /var/log/messages, which user alloy cannot read (owner 0, group 0, mode 600): grant it, e.g. setfacl -m u:alloy:r /var/log/messages"),
            "{}",
            problems[1]
        );
        // In group docker and with the log readable: nothing left.
        let mut a = a;
        a.groups.push((996, "docker".into()));
        let fine = |p: &Path| {
            Some(FileMode {
                uid: 0,
                gid: if p.ends_with("messages") { 4 } else { 997 },
                mode: 0o100640,
            })
        };
        a.groups.push((4, "adm".into()));
        assert!(check(&a, &needs(CONFIG), fine).is_empty());
        // A missing password file is named as such.
        let none = check(&a, &needs(CONFIG), |_| None);
        assert!(none
            .iter()
            .any(|p| p.ends_with("reads /etc/alloy/redis.pass, which does not exist")));
    }
}
