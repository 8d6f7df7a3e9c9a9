//! Which services a host's config covers, and with which parameters: the
//! service defaults, overlaid by what the agent detected, overlaid by the
//! operator's overrides file (`overrides.toml` in the data dir: rules per
//! host or per label selector that enable or disable a service and set its
//! parameters). Pure: [`Overrides::from_toml`] parses, [`plan`] resolves.
//!
//! The overrides live in a file, not the database, on purpose: like the
//! templates they are policy an operator reviews and versions, they are read
//! by `muster-server render` to preview a change before a restart applies
//! it, and they need no schema of their own.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;

use muster_shared::facts::ServiceKind;
use muster_shared::labels::Labels;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::settings::ConfigFileError;

/// File name of the overrides inside the data dir.
pub const FILE_NAME: &str = "overrides.toml";

/// Services with a built-in template that no agent detects: enabled only by
/// an override.
pub const OPT_IN: &[&str] = &["files", "otlp", "process"];

/// A service's parameters as templates see them (`service.<name>`).
pub type Params = Map<String, Value>;

/// The parsed overrides file.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Overrides {
    #[serde(default, rename = "rule")]
    pub rules: Vec<Rule>,
}

/// One `[[rule]]`: which hosts it applies to, and what it changes.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Host ids; the rule applies to these only (and after selector rules,
    /// so a host's own rule wins).
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Labels that must all be equal (`match = { env = "prod" }`).
    #[serde(default, rename = "match")]
    pub selector: BTreeMap<String, String>,
    #[serde(default)]
    pub services: BTreeMap<String, ServiceOverride>,
}

/// `[rule.services.<name>]`: `enabled` and parameters.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct ServiceOverride {
    #[serde(default)]
    pub enabled: Option<bool>,
    #[serde(flatten)]
    pub params: BTreeMap<String, toml::Value>,
}

/// The parameters a built-in service starts with, before detection and
/// overrides. Also the list of parameter names an override may set.
pub fn defaults(service: &str) -> Option<Params> {
    let v = match service {
        "postgres" => json!({
            "port": 5432, "address": "127.0.0.1", "user": "alloy", "database": "postgres",
            "sslmode": "disable", "dsn_env": "MUSTER_POSTGRES_DSN", "socket_dir": "",
        }),
        "mysql" => json!({
            "port": 3306, "address": "127.0.0.1", "user": "alloy",
            "dsn_env": "MUSTER_MYSQL_DSN", "socket": "",
        }),
        "redis" => json!({ "port": 6379, "address": "127.0.0.1", "password_file": "" }),
        // No exporter port unless one is detected or an override sets it: a
        // target for an exporter that does not run would only show as down.
        "nginx" => {
            json!({ "port": 80, "address": "127.0.0.1", "exporter_port": null, "metrics_path": "/metrics" })
        }
        "docker" => json!({ "socket": "/var/run/docker.sock" }),
        "journal" => json!({ "max_age": "12h" }),
        "files" => json!({ "paths": ["/var/log/*.log"] }),
        "otlp" => json!({ "grpc": "0.0.0.0:4317", "http": "0.0.0.0:4318", "insecure": false }),
        "process" => json!({ "names": [] }),
        _ => return None,
    };
    match v {
        Value::Object(map) => Some(map),
        _ => None,
    }
}

/// Whether `name` can be a service (and so a template file) name.
fn is_service_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

impl Overrides {
    /// Parses and checks an overrides file's text.
    pub fn from_toml(text: &str) -> Result<Overrides, String> {
        let o: Overrides = toml::from_str(text).map_err(|e| e.to_string())?;
        for (i, rule) in o.rules.iter().enumerate() {
            let at = format!("rule {}", i + 1);
            for id in &rule.hosts {
                if !muster_shared::facts::is_host_id(id) {
                    return Err(format!("{at}: {id:?} is not a host id"));
                }
            }
            for name in rule.selector.keys() {
                muster_shared::labels::check_name(name).map_err(|e| format!("{at}: {e}"))?;
            }
            for (service, over) in &rule.services {
                if !is_service_name(service) {
                    return Err(format!(
                        "{at}: service name {service:?} must be lowercase letters, digits and '_'"
                    ));
                }
                check_params(service, &over.params).map_err(|m| format!("{at}: {m}"))?;
            }
        }
        Ok(o)
    }

    /// Reads `path`; a missing file means no overrides.
    pub fn read(path: &Path) -> Result<Overrides, ConfigFileError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Overrides::default()),
            Err(source) => {
                return Err(ConfigFileError::Read {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        Overrides::from_toml(&text).map_err(|message| ConfigFileError::Invalid {
            path: path.to_path_buf(),
            message,
        })
    }

    /// Every service name the rules mention.
    pub fn services(&self) -> impl Iterator<Item = &str> {
        self.rules
            .iter()
            .flat_map(|r| r.services.keys().map(String::as_str))
    }
}

/// Parameter values are plain data (strings, numbers, booleans, lists of
/// them); a built-in service takes only the parameters it knows, and a typo
/// gets the nearest name suggested.
fn check_params(service: &str, params: &BTreeMap<String, toml::Value>) -> Result<(), String> {
    let known = defaults(service);
    for (name, value) in params {
        let plain = |v: &toml::Value| {
            matches!(
                v,
                toml::Value::String(_) | toml::Value::Integer(_) | toml::Value::Boolean(_)
            )
        };
        let ok = match value {
            toml::Value::Array(items) => items.iter().all(plain),
            v => plain(v),
        };
        if !ok {
            return Err(format!(
                "services.{service}.{name}: only strings, integers, booleans and lists of them"
            ));
        }
        if let Some(known) = &known {
            if !known.contains_key(name) {
                let hint = nearest(name, known.keys().map(String::as_str))
                    .map(|n| format!(" (did you mean {n:?}?)"))
                    .unwrap_or_default();
                let names: Vec<&str> = known.keys().map(String::as_str).collect();
                return Err(format!(
                    "services.{service}: unknown parameter {name:?}{hint}; known: {}",
                    names.join(", ")
                ));
            }
        }
    }
    Ok(())
}

/// The candidate closest to `word` by edit distance, when close enough.
fn nearest<'a>(word: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .map(|c| (distance(word, c), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min()
        .map(|(_, c)| c)
}

fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The rules that apply to a host, in the order [`plan`] applies them
/// (selector rules, then the host's own rules, each in file order), each
/// with its position in the file (from 1).
pub fn applying<'a>(
    host_id: &str,
    labels: &Labels,
    overrides: &'a Overrides,
) -> Vec<(usize, &'a Rule)> {
    let applies = |r: &Rule| {
        (r.hosts.is_empty() || r.hosts.iter().any(|h| h == host_id))
            && r.selector.iter().all(|(k, v)| labels.get(k) == Some(v))
    };
    let (selector, own): (Vec<_>, Vec<_>) = overrides
        .rules
        .iter()
        .enumerate()
        .map(|(i, r)| (i + 1, r))
        .filter(|(_, r)| applies(r))
        .partition(|(_, r)| r.hosts.is_empty());
    selector.into_iter().chain(own).collect()
}

/// What a host's config covers: enabled services and their parameters.
pub type Plan = BTreeMap<String, Params>;

/// Resolves the services of a host from its detected services (facts), its
/// labels and the overrides: defaults, then what detection found, then the
/// selector rules in file order, then the host's own rules in file order.
pub fn plan(
    host_id: &str,
    labels: &Labels,
    detected: &[muster_shared::facts::ServiceFact],
    overrides: &Overrides,
) -> Plan {
    let mut enabled: BTreeMap<String, bool> = BTreeMap::new();
    let mut plan: Plan = BTreeMap::new();
    for fact in detected {
        if fact.kind == ServiceKind::Unknown {
            continue;
        }
        let name = fact.kind.as_str();
        let mut params = defaults(name).unwrap_or_default();
        let mut set = |k: &str, v: Value| {
            params.insert(k.to_string(), v);
        };
        if let Some(p) = fact.port {
            set("port", json!(p));
        }
        if let Some(a) = &fact.address {
            set("address", json!(a));
        }
        if let Some(p) = fact.exporter_port {
            set("exporter_port", json!(p));
        }
        match (&fact.path, fact.kind) {
            (Some(path), ServiceKind::Docker | ServiceKind::Mysql) => set("socket", json!(path)),
            // PostgreSQL's DSN names the socket's directory (`host=DIR`).
            (Some(path), ServiceKind::Postgres) => {
                if let Some((dir, _)) = path.rsplit_once('/').filter(|(d, _)| !d.is_empty()) {
                    set("socket_dir", json!(dir));
                }
            }
            _ => {}
        }
        plan.insert(name.to_string(), params);
        enabled.insert(name.to_string(), true);
    }
    for (_, rule) in applying(host_id, labels, overrides) {
        for (name, over) in &rule.services {
            let params = plan
                .entry(name.clone())
                .or_insert_with(|| defaults(name).unwrap_or_default());
            for (k, v) in &over.params {
                params.insert(
                    k.clone(),
                    serde_json::to_value(v).expect("plain TOML values convert"),
                );
            }
            if let Some(e) = over.enabled {
                enabled.insert(name.clone(), e);
            }
        }
    }
    plan.retain(|name, _| enabled.get(name).copied().unwrap_or(false));
    for params in plan.values_mut() {
        let addr = match (params.get("address"), params.get("port")) {
            (Some(Value::String(a)), Some(Value::Number(p))) => Some(host_port(a, &p.to_string())),
            _ => None,
        };
        if let Some(addr) = addr {
            params.insert("addr".into(), json!(addr));
        }
    }
    plan
}

/// `host:port`, with brackets around an IPv6 address.
pub fn host_port(host: &str, port: &str) -> String {
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V6(_)) => format!("[{host}]:{port}"),
        _ => format!("{host}:{port}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use muster_shared::facts::ServiceFact;

    fn fact(kind: ServiceKind, port: Option<u16>) -> ServiceFact {
        ServiceFact {
            kind,
            port,
            address: Some("::1".into()),
            path: None,
            exporter_port: None,
            evidence: vec![],
        }
    }

    const FILE: &str = r#"
[[rule]]
hosts = ["db-01-abc123"]
[rule.services.postgres]
port = 6543

[[rule]]
match = { env = "prod" }
[rule.services.postgres]
port = 5433
dsn_env = "PG_DSN"
[rule.services.redis]
enabled = false
[rule.services.otlp]
enabled = true
"#;

    #[test]
    fn detection_then_selectors_then_hosts() {
        let o = Overrides::from_toml(FILE).expect("parses");
        let prod = Labels::from([("env".to_string(), "prod".to_string())]);
        let detected = [
            fact(ServiceKind::Postgres, Some(5432)),
            fact(ServiceKind::Redis, Some(6379)),
        ];
        let p = plan("db-01-abc123", &prod, &detected, &o);
        assert_eq!(p.keys().collect::<Vec<_>>(), ["otlp", "postgres"]);
        // The host rule comes first in the file but wins over the selector.
        assert_eq!(p["postgres"]["port"], 6543);
        assert_eq!(p["postgres"]["dsn_env"], "PG_DSN");
        assert_eq!(p["postgres"]["addr"], "[::1]:6543");
        let other = plan("db-02-abc123", &Labels::new(), &detected, &o);
        assert_eq!(other.keys().collect::<Vec<_>>(), ["postgres", "redis"]);
        assert_eq!(other["postgres"]["port"], 5432);
        assert_eq!(other["redis"]["addr"], "[::1]:6379");
    }

    #[test]
    fn an_override_alone_enables_nothing_unless_it_says_so() {
        let o = Overrides::from_toml("[[rule]]\n[rule.services.mysql]\nport = 3307\n").unwrap();
        assert!(plan("h-1", &Labels::new(), &[], &o).is_empty());
        let o = Overrides::from_toml("[[rule]]\n[rule.services.mysql]\nenabled = true\n").unwrap();
        let p = plan("h-1", &Labels::new(), &[], &o);
        assert_eq!(p["mysql"]["addr"], "127.0.0.1:3306");
    }

    #[test]
    fn bad_files_are_refused_with_a_hint() {
        let err = Overrides::from_toml("[[rule]]\n[rule.services.postgres]\nprot = 1\n")
            .expect_err("typo");
        assert!(err.contains("did you mean \"port\""), "{err}");
        let err = Overrides::from_toml("[[rule]]\nhosts = [\"../x\"]\n").expect_err("bad id");
        assert!(err.contains("not a host id"), "{err}");
        let err =
            Overrides::from_toml("[[rule]]\n[rule.services.\"Bad-Name\"]\n").expect_err("name");
        assert!(err.contains("lowercase"), "{err}");
        let err = Overrides::from_toml("[[rule]]\n[rule.services.x]\nt = { a = 1 }\n")
            .expect_err("table value");
        assert!(err.contains("only strings"), "{err}");
        let err = Overrides::from_toml("[[rules]]\n").expect_err("unknown key");
        assert!(err.contains("rules"), "{err}");
        // Operator services take any plain parameter.
        Overrides::from_toml("[[rule]]\n[rule.services.myapp]\nenabled = true\nport = 8080\n")
            .expect("custom service");
    }

    #[test]
    fn a_missing_file_is_no_overrides() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            Overrides::read(&dir.path().join(FILE_NAME)).unwrap(),
            Overrides::default()
        );
    }
}
