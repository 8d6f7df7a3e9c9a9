//! Renders a host's Alloy config from the templates (minijinja), with every
//! interpolated value written as an escaped Alloy literal, and collects the
//! Prometheus target groups the templates declare.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use minijinja::value::{Object, Value, ValueKind};
use minijinja::{AutoEscape, Environment, Error, ErrorKind, Output, State, UndefinedBehavior};
use ring::digest::{digest, SHA256};
use serde::{Deserialize, Serialize};

use crate::store::HostRecord;
use crate::tokens::hex;

/// The templates built into the binary: (name, source).
const BUILTIN: &[(&str, &str)] = &[(
    "linux.alloy.j2",
    include_str!("../../templates/linux.alloy.j2"),
)];

/// A Prometheus target group a template declared: scraped through Alloy's
/// component metrics path.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetGroup {
    /// Alloy component id, e.g. `prometheus.exporter.unix.default`.
    pub component: String,
    /// Value of the `service` label, for application exporters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
}

impl TargetGroup {
    pub fn metrics_path(&self) -> String {
        format!("/api/v0/component/{}/metrics", self.component)
    }
}

/// A rendered config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rendered {
    pub config: String,
    /// Hex SHA-256 of `config`: the version agents report back.
    pub hash: String,
    pub targets: Vec<TargetGroup>,
}

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("cannot read templates from {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("template {name}: {message}")]
    Template { name: String, message: String },
    #[error("no base template for os {os:?} (looked for {name} in {source_name})")]
    NoBase {
        os: String,
        name: String,
        source_name: String,
    },
    #[error("template {name} rendered for host {host_id} declares no exporter; nothing could be scraped")]
    NoTargets { name: String, host_id: String },
}

/// Server-wide values templates may use.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RenderSettings {
    pub loki_url: Option<String>,
}

pub struct Templates {
    env: Environment<'static>,
    /// `built-in` or the directory they came from, for error messages.
    source: String,
}

impl Templates {
    /// The templates shipped inside the binary.
    pub fn builtin() -> Result<Templates, RenderError> {
        let owned = BUILTIN
            .iter()
            .map(|(n, s)| (n.to_string(), s.to_string()))
            .collect();
        Templates::from_sources(owned, "built-in".into())
    }

    /// Every `*.j2` file in `dir`.
    pub fn from_dir(dir: &Path) -> Result<Templates, RenderError> {
        let read_err = |source| RenderError::Read {
            path: dir.to_path_buf(),
            source,
        };
        let mut sources = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(read_err)? {
            let path = entry.map_err(read_err)?.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if name.ends_with(".j2") {
                let text = std::fs::read_to_string(&path).map_err(|source| RenderError::Read {
                    path: path.clone(),
                    source,
                })?;
                sources.push((name.to_string(), text));
            }
        }
        Templates::from_sources(sources, dir.display().to_string())
    }

    fn from_sources(
        sources: Vec<(String, String)>,
        source: String,
    ) -> Result<Templates, RenderError> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_keep_trailing_newline(true);
        env.set_auto_escape_callback(|_| AutoEscape::Custom("alloy"));
        env.set_formatter(alloy_formatter);
        env.add_function("exporter", exporter);
        for (name, text) in sources {
            env.add_template_owned(name.clone(), text)
                .map_err(|e| template_error(&name, &e))?;
        }
        Ok(Templates { env, source })
    }

    /// Renders the config for `host`.
    pub fn render(
        &self,
        host: &HostRecord,
        settings: &RenderSettings,
    ) -> Result<Rendered, RenderError> {
        let name = format!("{}.alloy.j2", host.facts.os);
        let template = self
            .env
            .get_template(&name)
            .map_err(|_| RenderError::NoBase {
                os: host.facts.os.clone(),
                name: name.clone(),
                source_name: self.source.clone(),
            })?;
        let context = minijinja::context! {
            host => minijinja::context! {
                id => &host.id,
                hostname => &host.facts.hostname,
                os => &host.facts.os,
                arch => &host.facts.arch,
                os_id => &host.facts.os_id,
                os_version => &host.facts.os_version,
                kernel => &host.facts.kernel,
                scrape_address => &host.facts.scrape_address,
                labels => host.labels(),
            },
            settings => settings,
        };
        let captured = template
            .render_captured(context)
            .map_err(|e| template_error(&name, &e))?;
        let targets = captured
            .state()
            .get_temp(TARGETS)
            .and_then(|v| v.downcast_object::<Declared>())
            .map(|d| d.take())
            .unwrap_or_default();
        if targets.is_empty() {
            return Err(RenderError::NoTargets {
                name,
                host_id: host.id.clone(),
            });
        }
        let config = captured.into_output();
        let hash = hex(digest(&SHA256, config.as_bytes()).as_ref());
        Ok(Rendered {
            config,
            hash,
            targets,
        })
    }
}

fn template_error(name: &str, e: &Error) -> RenderError {
    let mut message = e.to_string();
    if let Some(line) = e.line() {
        message = format!("line {line}: {message}");
    }
    RenderError::Template {
        name: name.to_string(),
        message,
    }
}

const TARGETS: &str = "muster.targets";

/// Target groups declared during one render.
#[derive(Debug, Default)]
struct Declared(Mutex<Vec<TargetGroup>>);

impl Declared {
    fn take(&self) -> Vec<TargetGroup> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl Object for Declared {}

/// `exporter(kind, label, service=none)`: writes the block header
/// `prometheus.exporter.<kind> "<label>"` and declares its target group.
fn exporter(
    state: &State,
    kind: String,
    label: String,
    service: Option<String>,
) -> Result<Value, Error> {
    let ident = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    };
    if !ident(&kind) || !ident(&label) {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("exporter({kind:?}, {label:?}): kind and label must be lowercase identifiers"),
        ));
    }
    let group = TargetGroup {
        component: format!("prometheus.exporter.{kind}.{label}"),
        service,
    };
    let declared = state.get_or_set_temp_object(TARGETS, Declared::default);
    let mut groups = declared.0.lock().unwrap_or_else(|p| p.into_inner());
    if groups.iter().any(|g| g.component == group.component) {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("exporter {} declared twice", group.component),
        ));
    }
    groups.push(group);
    Ok(Value::from_safe_string(format!(
        "prometheus.exporter.{kind} \"{label}\""
    )))
}

/// Writes values as Alloy literals unless marked safe.
fn alloy_formatter(out: &mut Output, _state: &State, value: &Value) -> Result<(), Error> {
    let mut text = String::new();
    if value.is_safe() {
        write!(text, "{value}").map_err(Error::from)?;
    } else {
        write_literal(&mut text, value)?;
    }
    out.write_str(&text).map_err(Error::from)
}

fn write_literal(out: &mut String, value: &Value) -> Result<(), Error> {
    match value.kind() {
        ValueKind::Undefined => {
            return Err(Error::new(
                ErrorKind::UndefinedError,
                "an undefined value cannot be written into a config",
            ))
        }
        ValueKind::None => out.push_str("null"),
        ValueKind::Bool | ValueKind::Number => write!(out, "{value}").map_err(Error::from)?,
        ValueKind::String => out.push_str(&escape_string(value.as_str().unwrap_or_default())),
        ValueKind::Map => {
            out.push('{');
            for (i, key) in value.try_iter()?.enumerate() {
                out.push_str(if i == 0 { " " } else { ", " });
                out.push_str(&escape_string(&key.to_string()));
                out.push_str(" = ");
                write_literal(out, &value.get_item(&key)?)?;
            }
            out.push_str(" }");
        }
        ValueKind::Seq | ValueKind::Iterable => {
            out.push('[');
            for (i, item) in value.try_iter()?.enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_literal(out, &item)?;
            }
            out.push(']');
        }
        _ => {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                format!("a {} value cannot be written into a config", value.kind()),
            ))
        }
    }
    Ok(())
}

/// A double-quoted Alloy string literal for `s`.
pub fn escape_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use muster_shared::facts::Facts;
    use muster_shared::labels::Labels;
    use muster_shared::wire::HostState;

    pub(crate) fn host(labels: &[(&str, &str)]) -> HostRecord {
        HostRecord {
            id: "web-01-abc123".into(),
            machine_id: "m1".into(),
            public_key_sha256: "k".into(),
            facts: Facts {
                hostname: "web-01".into(),
                machine_id: "m1".into(),
                os: "linux".into(),
                arch: "x86_64".into(),
                os_id: Some("debian".into()),
                os_version: Some("12".into()),
                kernel: None,
                scrape_address: "10.0.0.5:12345".into(),
                agent_version: "0.1.0".into(),
            },
            operator_labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Labels>(),
            state: HostState::Enrolled,
            config: String::new(),
            rendered_hash: String::new(),
            targets: Vec::new(),
            applied_hash: None,
            last_error: None,
            alloy_version: None,
            enrolled_at: 0,
            last_seen: 0,
            cert_expires_at: 0,
        }
    }

    #[test]
    fn builtin_linux_template_declares_the_unix_exporter() {
        let t = Templates::builtin().expect("built-in templates load");
        let r = t
            .render(&host(&[]), &RenderSettings::default())
            .expect("renders");
        assert!(r.config.contains("prometheus.exporter.unix \"default\" {"));
        assert_eq!(
            r.targets,
            vec![TargetGroup {
                component: "prometheus.exporter.unix.default".into(),
                service: None
            }]
        );
        assert_eq!(r.hash.len(), 64);
        assert!(!r.config.contains("loki"));
    }

    #[test]
    fn hostile_label_values_are_escaped_not_interpreted() {
        let t = Templates::builtin().expect("load");
        let settings = RenderSettings {
            loki_url: Some("http://loki:3100".into()),
        };
        let evil = r#"a" } evil.block "x" { y = "\${env}"#;
        let r = t
            .render(&host(&[("team", evil)]), &settings)
            .expect("renders");
        let expected = format!("\"team\" = {}", escape_string(evil));
        assert!(r.config.contains(&expected), "{}", r.config);
        assert!(!r.config.contains("evil.block \"x\" {\n"));
    }

    #[test]
    fn rendering_is_deterministic() {
        let t = Templates::builtin().expect("load");
        let a = t.render(&host(&[("b", "2"), ("a", "1")]), &RenderSettings::default());
        let b = t.render(&host(&[("a", "1"), ("b", "2")]), &RenderSettings::default());
        assert_eq!(a.expect("a").hash, b.expect("b").hash);
    }

    #[test]
    fn escapes_every_special_character() {
        assert_eq!(
            escape_string("a\"b\\c\nd\te\u{1}"),
            r#""a\"b\\c\nd\te\u0001""#
        );
        assert_eq!(escape_string("}${x}"), r#""}${x}""#);
    }

    #[test]
    fn template_errors_name_the_template_and_line() {
        let t = Templates::from_sources(
            vec![(
                "linux.alloy.j2".into(),
                "{{ exporter(\"unix\", \"a\") }}\n{{ host.nope }}\n".into(),
            )],
            "test".into(),
        )
        .expect("parses");
        let err = t
            .render(&host(&[]), &RenderSettings::default())
            .expect_err("undefined");
        let text = err.to_string();
        assert!(
            text.contains("linux.alloy.j2") && text.contains("line 2"),
            "{text}"
        );
    }

    #[test]
    fn a_template_without_an_exporter_is_refused() {
        let t = Templates::from_sources(
            vec![("linux.alloy.j2".into(), "// nothing\n".into())],
            "test".into(),
        )
        .expect("parses");
        assert!(matches!(
            t.render(&host(&[]), &RenderSettings::default()),
            Err(RenderError::NoTargets { .. })
        ));
    }

    #[test]
    fn a_host_without_a_base_template_is_refused() {
        let t = Templates::builtin().expect("load");
        let mut h = host(&[]);
        h.facts.os = "windows".into();
        assert!(matches!(
            t.render(&h, &RenderSettings::default()),
            Err(RenderError::NoBase { .. })
        ));
    }
}
