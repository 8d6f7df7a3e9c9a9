//! Renders a host's Alloy config from the templates (minijinja): the base
//! template of its OS family, then one snippet per service the host runs (as
//! detected, and as the operator's overrides say), with every interpolated
//! value written as an escaped Alloy literal. Collects the Prometheus target
//! groups the templates declare, and checks the result with the Alloy syntax
//! checker before anything stores or ships it.

mod assemble;
mod functions;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use minijinja::value::Value;
use minijinja::{AutoEscape, Environment, Error, UndefinedBehavior};
use muster_shared::facts::Facts;
use muster_shared::labels::Labels;

use crate::overrides::{self, Overrides};
use crate::store::HostRecord;
use assemble::{assemble, Part};
use functions::{alloy_formatter, exporter, standalone, Declared, TARGETS};

/// The templates built into the binary: (name, source).
pub const BUILTIN: &[(&str, &str)] = &[
    (
        "linux.alloy.j2",
        include_str!("../../templates/linux.alloy.j2"),
    ),
    (
        "windows.alloy.j2",
        include_str!("../../templates/windows.alloy.j2"),
    ),
    (
        "services/postgres.alloy.j2",
        include_str!("../../templates/services/postgres.alloy.j2"),
    ),
    (
        "services/mysql.alloy.j2",
        include_str!("../../templates/services/mysql.alloy.j2"),
    ),
    (
        "services/redis.alloy.j2",
        include_str!("../../templates/services/redis.alloy.j2"),
    ),
    (
        "services/nginx.alloy.j2",
        include_str!("../../templates/services/nginx.alloy.j2"),
    ),
    (
        "services/docker.alloy.j2",
        include_str!("../../templates/services/docker.alloy.j2"),
    ),
    (
        "services/journal.alloy.j2",
        include_str!("../../templates/services/journal.alloy.j2"),
    ),
    (
        "services/files.alloy.j2",
        include_str!("../../templates/services/files.alloy.j2"),
    ),
    (
        "services/otlp.alloy.j2",
        include_str!("../../templates/services/otlp.alloy.j2"),
    ),
    (
        "services/process.alloy.j2",
        include_str!("../../templates/services/process.alloy.j2"),
    ),
];

/// Folder of the service snippets, in the built-ins and in a templates dir.
const SERVICES_DIR: &str = "services";

pub use crate::store::{Rendered, TargetGroup};

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("cannot read templates from {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("template {name}: {message}")]
    Template { name: String, message: String },
    #[error("template {name} (host {host_id}): {message}")]
    Render {
        name: String,
        host_id: String,
        message: String,
    },
    #[error("no base template for os {os:?} (looked for {name} in {source_name})")]
    NoBase {
        os: String,
        name: String,
        source_name: String,
    },
    #[error("service {service} is enabled for host {host_id} but there is no template services/{service}.alloy.j2")]
    NoServiceTemplate { service: String, host_id: String },
    #[error("templates rendered for host {host_id} declare no exporter; nothing could be scraped")]
    NoTargets { host_id: String },
    #[error("template {name} (host {host_id}) declares {key} again; {first} declared it first")]
    Duplicate {
        name: String,
        host_id: String,
        key: String,
        first: String,
    },
    /// The config is not valid Alloy syntax: the template is broken.
    #[error("template {name} rendered invalid Alloy syntax for host {host_id}: {line}:{col}: {message} (line {config_line} of the config)")]
    Syntax {
        name: String,
        host_id: String,
        /// Line and column within this template's output.
        line: usize,
        col: usize,
        message: String,
        config_line: usize,
    },
}

/// Server-wide values and policy rendering uses.
#[derive(Clone, Debug, Default)]
pub struct RenderSettings {
    pub loki_url: Option<String>,
    pub otlp_endpoint: Option<String>,
    pub overrides: Overrides,
}

pub struct Templates {
    env: Environment<'static>,
    /// `built-in` or the directory they came from, for error messages.
    source: String,
}

impl Templates {
    /// The templates shipped inside the binary.
    pub fn builtin() -> Result<Templates, RenderError> {
        Templates::from_sources(builtin_sources(), "built-in".into())
    }

    /// The built-in templates overlaid with every `*.j2` file in `dir` and
    /// `dir/services/`: a file of the same name replaces a built-in one, a
    /// new one adds a base (`<family>.alloy.j2`) or a service.
    pub fn from_dir(dir: &Path) -> Result<Templates, RenderError> {
        let mut sources = builtin_sources();
        for sub in [None, Some(SERVICES_DIR)] {
            let folder = sub.map_or_else(|| dir.to_path_buf(), |s| dir.join(s));
            let read_err = |source| RenderError::Read {
                path: folder.clone(),
                source,
            };
            let entries = match std::fs::read_dir(&folder) {
                Ok(e) => e,
                Err(e) if sub.is_some() && e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(read_err(e)),
            };
            for entry in entries {
                let path = entry.map_err(read_err)?.path();
                let Some(file) = path.file_name().and_then(|n| n.to_str()) else {
                    continue;
                };
                if !file.ends_with(".j2") {
                    continue;
                }
                let text = std::fs::read_to_string(&path).map_err(|source| RenderError::Read {
                    path: path.clone(),
                    source,
                })?;
                let name = sub.map_or_else(|| file.to_string(), |s| format!("{s}/{file}"));
                sources.retain(|(n, _)| *n != name);
                sources.push((name, text));
            }
        }
        Templates::from_sources(sources, format!("{} over the built-ins", dir.display()))
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
        env.add_function("standalone", standalone);
        for (name, text) in sources {
            env.add_template_owned(name.clone(), text)
                .map_err(|e| template_error(&name, &e))?;
        }
        Ok(Templates { env, source })
    }

    /// A hash of everything a render reads besides the host: this server's
    /// version, every template's name and text, and `settings`. Stored
    /// configs made from the same inputs need no re-render at start-up.
    pub fn inputs_hash(&self, settings: &RenderSettings) -> String {
        let mut templates: Vec<(&str, String)> = self
            .env
            .templates()
            .map(|(name, t)| (name, t.source().to_string()))
            .collect();
        templates.sort();
        let inputs = serde_json::json!({
            "server": env!("CARGO_PKG_VERSION"),
            "templates": templates,
            "loki_url": settings.loki_url,
            "otlp_endpoint": settings.otlp_endpoint,
            "overrides": format!("{:?}", settings.overrides),
        });
        crate::ca::sha256_hex(inputs.to_string().as_bytes())
    }

    /// Names of the services there is a template for.
    pub fn services(&self) -> BTreeSet<String> {
        self.env
            .templates()
            .filter_map(|(name, _)| {
                name.strip_prefix("services/")?
                    .strip_suffix(".alloy.j2")
                    .map(String::from)
            })
            .collect()
    }

    /// Checks that every service the overrides mention has a template, so a
    /// typo fails at start-up rather than at a host's next render.
    pub fn check_overrides(&self, overrides: &Overrides) -> Result<(), String> {
        let have = self.services();
        for name in overrides.services() {
            if !have.contains(name) {
                let list: Vec<&str> = have.iter().map(String::as_str).collect();
                return Err(format!(
                    "overrides mention service {name:?}, which has no template (services/{name}.alloy.j2); services with templates: {}",
                    list.join(", ")
                ));
            }
        }
        Ok(())
    }

    /// The base template for a host: `<family>.alloy.j2`, else `<os>.alloy.j2`.
    fn base_for(&self, facts: &Facts) -> Result<String, RenderError> {
        let family = format!("{}.alloy.j2", facts.os_family().as_str());
        let os = format!("{}.alloy.j2", facts.os);
        [family, os.clone()]
            .into_iter()
            .find(|n| self.env.get_template(n).is_ok())
            .ok_or_else(|| RenderError::NoBase {
                os: facts.os.clone(),
                name: os,
                source_name: self.source.clone(),
            })
    }

    /// Renders the config for `host`: the base template, then each enabled
    /// service's snippet in name order, checked as Alloy syntax.
    pub fn render(
        &self,
        host: &HostRecord,
        settings: &RenderSettings,
    ) -> Result<Rendered, RenderError> {
        self.render_facts(&host.id, &host.facts, &host.labels(), settings)
    }

    /// [`Templates::render`] for a host given by its parts (also one that
    /// does not exist yet: `muster-server render --facts`). `labels` is the
    /// full label set, fact labels included.
    pub fn render_facts(
        &self,
        host_id: &str,
        facts: &Facts,
        labels: &Labels,
        settings: &RenderSettings,
    ) -> Result<Rendered, RenderError> {
        let base = self.base_for(facts)?;
        let plan = overrides::plan(host_id, labels, &facts.services, &settings.overrides);
        let host_ctx = minijinja::context! {
            id => host_id,
            hostname => &facts.hostname,
            os => &facts.os,
            family => facts.os_family().as_str(),
            arch => &facts.arch,
            os_id => &facts.os_id,
            os_version => &facts.os_version,
            kernel => &facts.kernel,
            scrape_address => &facts.scrape_address,
            labels => labels,
            services => plan.keys().collect::<Vec<_>>(),
        };
        let otlp = settings.otlp_endpoint.as_deref().map(otlp_target);
        let settings_ctx = minijinja::context! {
            loki_url => settings.loki_url.as_deref().map(loki_base),
            otlp_endpoint => otlp.as_ref().map(|(target, _)| target),
            otlp_insecure => otlp.as_ref().is_some_and(|(_, plaintext)| *plaintext),
        };
        let mut parts = vec![self.render_part(
            &base,
            host_id,
            minijinja::context! { host => &host_ctx, settings => &settings_ctx },
        )?];
        for (name, params) in &plan {
            let template = format!("{SERVICES_DIR}/{name}.alloy.j2");
            if self.env.get_template(&template).is_err() {
                return Err(RenderError::NoServiceTemplate {
                    service: name.clone(),
                    host_id: host_id.to_string(),
                });
            }
            let mut service = params.clone();
            service.insert("name".into(), name.clone().into());
            parts.push(self.render_part(
                &template,
                host_id,
                minijinja::context! {
                    host => &host_ctx,
                    settings => &settings_ctx,
                    service => Value::from_serialize(&service),
                },
            )?);
        }
        assemble(host_id, parts)
    }

    fn render_part(&self, name: &str, host_id: &str, context: Value) -> Result<Part, RenderError> {
        let render_err = |e: &Error| RenderError::Render {
            name: name.to_string(),
            host_id: host_id.to_string(),
            message: describe(e),
        };
        let template = self.env.get_template(name).map_err(|e| render_err(&e))?;
        let captured = template
            .render_captured(context)
            .map_err(|e| render_err(&e))?;
        let targets = captured
            .state()
            .get_temp(TARGETS)
            .and_then(|v| v.downcast_object::<Declared>())
            .map(|d| d.take())
            .unwrap_or_default();
        Ok(Part {
            name: name.to_string(),
            text: captured.into_output(),
            targets,
        })
    }
}

/// The path Loki takes pushes on, which templates append to `loki_url`.
const LOKI_PUSH_PATH: &str = "/loki/api/v1/push";

/// `loki_url` as the base templates append [`LOKI_PUSH_PATH`] to: without
/// trailing slashes, and without the push path when it was given whole, so
/// `http://loki:3100/` never renders `…3100//loki/api/v1/push`.
pub fn loki_base(url: &str) -> String {
    let url = url.trim_end_matches('/');
    url.strip_suffix(LOKI_PUSH_PATH)
        .unwrap_or(url)
        .trim_end_matches('/')
        .to_string()
}

/// The OTLP endpoint as Alloy's gRPC exporter (`otelcol.exporter.otlp`)
/// takes it, `host:port` without scheme or trailing slash, and whether the
/// collector speaks plaintext (`http://`): the exporter uses TLS unless
/// told `tls { insecure = true }`, so a plaintext collector otherwise fails
/// only at run time.
pub fn otlp_target(endpoint: &str) -> (String, bool) {
    let endpoint = endpoint.trim().trim_end_matches('/');
    match endpoint.strip_prefix("http://") {
        Some(rest) => (rest.to_string(), true),
        None => (
            endpoint
                .strip_prefix("https://")
                .unwrap_or(endpoint)
                .to_string(),
            false,
        ),
    }
}

fn builtin_sources() -> Vec<(String, String)> {
    BUILTIN
        .iter()
        .map(|(n, s)| (n.to_string(), s.to_string()))
        .collect()
}

/// A minijinja error with its line, for people.
fn describe(e: &Error) -> String {
    let mut message = e.to_string();
    if let Some(line) = e.line() {
        message = format!("line {line}: {message}");
    }
    message
}

fn template_error(name: &str, e: &Error) -> RenderError {
    RenderError::Template {
        name: name.to_string(),
        message: describe(e),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::admin_wire::HostState;
    use muster_shared::alloy::escape_string;
    use muster_shared::facts::{Facts, ServiceFact, ServiceKind};
    use muster_shared::labels::Labels;

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
                scrape_address: "10.0.0.5:12345".into(),
                agent_version: "0.1.0".into(),
                ..Facts::default()
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
            lifecycle: Default::default(),
        }
    }

    pub(crate) fn service(kind: ServiceKind, port: Option<u16>) -> ServiceFact {
        ServiceFact {
            kind,
            port,
            address: port.map(|_| "127.0.0.1".into()),
            path: None,
            exporter_port: None,
            evidence: vec![],
        }
    }

    fn unix() -> TargetGroup {
        TargetGroup {
            component: "prometheus.exporter.unix.default".into(),
            port: None,
            path: None,
            service: None,
        }
    }

    fn templates(sources: &[(&str, &str)]) -> Templates {
        Templates::from_sources(
            sources
                .iter()
                .map(|(n, s)| (n.to_string(), s.to_string()))
                .collect(),
            "test".into(),
        )
        .expect("parses")
    }

    #[test]
    fn the_inputs_hash_follows_templates_and_settings_only() {
        let base = "{{ exporter(\"unix\", \"default\") }} {\n}\n";
        let a = templates(&[("linux.alloy.j2", base)]);
        let settings = RenderSettings::default();
        let hash = a.inputs_hash(&settings);
        assert_eq!(
            templates(&[("linux.alloy.j2", base)]).inputs_hash(&settings),
            hash
        );
        let changed = format!("{base}// changed\n");
        assert_ne!(
            templates(&[("linux.alloy.j2", &changed)]).inputs_hash(&settings),
            hash
        );
        let loki = RenderSettings {
            loki_url: Some("http://loki:3100".into()),
            ..RenderSettings::default()
        };
        assert_ne!(a.inputs_hash(&loki), hash);
        let overrides = RenderSettings {
            overrides: crate::overrides::Overrides {
                rules: vec![crate::overrides::Rule::default()],
            },
            ..RenderSettings::default()
        };
        assert_ne!(a.inputs_hash(&overrides), hash);
    }

    #[test]
    fn builtin_linux_template_declares_the_unix_exporter() {
        let t = Templates::builtin().expect("built-in templates load");
        let r = t
            .render(&host(&[]), &RenderSettings::default())
            .expect("renders");
        assert!(r.config.contains("prometheus.exporter.unix \"default\" {"));
        assert_eq!(r.targets, vec![unix()]);
        assert_eq!(r.hash.len(), 64);
        assert!(!r.config.contains("loki"));
    }

    #[test]
    fn detected_services_add_their_snippets_and_target_groups() {
        let t = Templates::builtin().expect("load");
        let mut h = host(&[]);
        h.facts.services = vec![
            service(ServiceKind::Postgres, Some(5433)),
            ServiceFact {
                exporter_port: Some(9114),
                ..service(ServiceKind::Nginx, Some(80))
            },
        ];
        let r = t.render(&h, &RenderSettings::default()).expect("renders");
        assert!(r
            .config
            .contains("prometheus.exporter.postgres \"default\" {"));
        assert!(r
            .config
            .contains("postgresql://alloy@127.0.0.1:5433/postgres"));
        assert!(r
            .config
            .contains("standalone exporter on this host's port 9114"));
        let services: Vec<_> = r
            .targets
            .iter()
            .map(|g| (g.service.as_deref(), g.port, g.metrics_path()))
            .collect();
        assert_eq!(
            services,
            [
                (None, None, unix().metrics_path()),
                (Some("nginx"), Some(9114), "/metrics".into()),
                (
                    Some("postgres"),
                    None,
                    "/api/v0/component/prometheus.exporter.postgres.default/metrics".into()
                ),
            ]
        );
        assert_eq!(r.targets[1].address("10.0.0.5:12345"), "10.0.0.5:9114");
        assert_eq!(r.targets[1].address("[fd00::5]:12345"), "[fd00::5]:9114");
    }

    #[test]
    fn overrides_disable_detected_services_and_enable_others() {
        let t = Templates::builtin().expect("load");
        let mut h = host(&[("env", "prod")]);
        h.facts.services = vec![service(ServiceKind::Redis, Some(6379))];
        let settings = RenderSettings {
            otlp_endpoint: Some("otel.example:4317".into()),
            overrides: Overrides::from_toml(
                "[[rule]]\nmatch = { env = \"prod\" }\n[rule.services.redis]\nenabled = false\n[rule.services.otlp]\nenabled = true\n",
            )
            .expect("overrides"),
            ..RenderSettings::default()
        };
        let r = t.render(&h, &settings).expect("renders");
        assert!(!r.config.contains("redis"), "{}", r.config);
        assert!(r.config.contains("otelcol.receiver.otlp \"default\""));
        assert!(r.config.contains("endpoint = \"otel.example:4317\""));
    }

    #[test]
    fn endpoints_are_normalized_for_the_templates() {
        for (given, want) in [
            ("http://loki:3100", "http://loki:3100"),
            ("http://loki:3100/", "http://loki:3100"),
            ("https://logs.example.com//", "https://logs.example.com"),
            ("http://loki:3100/loki/api/v1/push", "http://loki:3100"),
            ("http://loki:3100/loki/api/v1/push/", "http://loki:3100"),
            (
                "https://gw.example.com/tenant-a/",
                "https://gw.example.com/tenant-a",
            ),
        ] {
            assert_eq!(loki_base(given), want, "{given}");
        }
        for (given, target, plaintext) in [
            ("otel.example:4317", "otel.example:4317", false),
            ("https://otel.example:4317/", "otel.example:4317", false),
            ("http://otel.example:4317", "otel.example:4317", true),
            ("http://10.0.0.9:4317/", "10.0.0.9:4317", true),
        ] {
            assert_eq!(
                otlp_target(given),
                (target.to_string(), plaintext),
                "{given}"
            );
        }
    }

    #[test]
    fn a_plaintext_otlp_collector_gets_tls_insecure_and_a_tls_one_does_not() {
        let t = Templates::builtin().expect("load");
        let h = host(&[]);
        let render = |endpoint: &str| {
            let settings = RenderSettings {
                otlp_endpoint: Some(endpoint.into()),
                overrides: Overrides::from_toml("[[rule]]\n[rule.services.otlp]\nenabled = true\n")
                    .expect("overrides"),
                ..RenderSettings::default()
            };
            t.render(&h, &settings).expect("renders").config
        };
        let plain = render("http://otel.example:4317/");
        assert!(
            plain.contains("endpoint = \"otel.example:4317\""),
            "{plain}"
        );
        assert!(
            plain.contains("tls {\n\t\t\tinsecure = true\n\t\t}"),
            "{plain}"
        );
        for secure in ["https://otel.example:4317", "otel.example:4317"] {
            let config = render(secure);
            assert!(
                config.contains("endpoint = \"otel.example:4317\""),
                "{config}"
            );
            assert!(!config.contains("insecure"), "{config}");
        }
        // Or per host, by the otlp service's `insecure` parameter.
        let settings = RenderSettings {
            otlp_endpoint: Some("otel.example:4317".into()),
            overrides: Overrides::from_toml(
                "[[rule]]\n[rule.services.otlp]\nenabled = true\ninsecure = true\n",
            )
            .expect("overrides"),
            ..RenderSettings::default()
        };
        let config = t.render(&h, &settings).expect("renders").config;
        assert!(config.contains("insecure = true"), "{config}");
    }

    #[test]
    fn process_matchers_never_shadow_each_other() {
        let t = Templates::builtin().expect("load");
        let h = host(&[]);
        let render = |overrides: &str| {
            let settings = RenderSettings {
                overrides: Overrides::from_toml(overrides).expect("overrides"),
                ..RenderSettings::default()
            };
            t.render(&h, &settings).expect("renders").config
        };
        let named = render(
            "[[rule]]\n[rule.services.process]\nenabled = true\nnames = [\"postgres\", \"nginx\"]\n",
        );
        assert!(
            named.contains(
                "\tmatcher {\n\t\tname = \"postgres\"\n\t\tcomm = [\"postgres\"]\n\t}\n\tmatcher {\n\t\tname = \"nginx\"\n\t\tcomm = [\"nginx\"]\n\t}"
            ),
            "{named}"
        );
        assert!(
            !named.contains("cmdline"),
            "a catch-all would shadow: {named}"
        );
        let all = render("[[rule]]\n[rule.services.process]\nenabled = true\n");
        assert_eq!(all.matches("matcher {").count(), 1, "{all}");
        assert!(
            all.contains("name    = \"{{.Comm}}\"\n\t\tcmdline = [\".+\"]"),
            "{all}"
        );
    }

    #[test]
    fn hostile_label_values_are_escaped_not_interpreted() {
        let t = Templates::builtin().expect("load");
        let settings = RenderSettings {
            loki_url: Some("http://loki:3100".into()),
            ..RenderSettings::default()
        };
        let evil = r#"a" } evil.block "x" { y = "\${env}"#;
        let mut h = host(&[("team", evil)]);
        h.facts.services = vec![service(ServiceKind::Journal, None)];
        let r = t.render(&h, &settings).expect("renders");
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
    fn template_errors_name_the_template_host_and_line() {
        let t = templates(&[(
            "linux.alloy.j2",
            "{{ exporter(\"unix\", \"a\") }}\n{{ host.nope }}\n",
        )]);
        let err = t
            .render(&host(&[]), &RenderSettings::default())
            .expect_err("undefined");
        let text = err.to_string();
        assert!(
            text.contains("linux.alloy.j2")
                && text.contains("line 2")
                && text.contains("web-01-abc123"),
            "{text}"
        );
    }

    #[test]
    fn invalid_syntax_names_the_template_host_and_line_within_it() {
        let t = templates(&[
            ("linux.alloy.j2", "{{ exporter(\"unix\", \"default\") }} { }\n"),
            (
                "services/redis.alloy.j2",
                "// fine\n{{ exporter(\"redis\", \"default\") }} {\n\tredis_addr = 127.0.0.1:6379\n}\n",
            ),
        ]);
        let mut h = host(&[]);
        h.facts.services = vec![service(ServiceKind::Redis, Some(6379))];
        let err = t
            .render(&h, &RenderSettings::default())
            .expect_err("bad syntax");
        let RenderError::Syntax {
            name,
            host_id,
            line,
            config_line,
            ..
        } = &err
        else {
            panic!("{err}");
        };
        assert_eq!(
            (name.as_str(), host_id.as_str()),
            ("services/redis.alloy.j2", "web-01-abc123")
        );
        assert_eq!((*line, *config_line), (3, 5), "{err}");
        let text = err.to_string();
        assert!(
            text.contains("rendered invalid Alloy syntax for host web-01-abc123: 3:"),
            "{text}"
        );
    }

    #[test]
    fn a_block_defined_twice_is_refused() {
        let t = templates(&[(
            "linux.alloy.j2",
            "{{ exporter(\"unix\", \"default\") }} { }\nlogging { }\nlogging { }\n",
        )]);
        let err = t
            .render(&host(&[]), &RenderSettings::default())
            .expect_err("twice");
        assert!(
            err.to_string()
                .contains("3:1: block logging is defined twice"),
            "{err}"
        );
    }

    #[test]
    fn a_config_without_an_exporter_is_refused() {
        let t = templates(&[("linux.alloy.j2", "// nothing\n")]);
        assert!(matches!(
            t.render(&host(&[]), &RenderSettings::default()),
            Err(RenderError::NoTargets { .. })
        ));
    }

    #[test]
    fn two_templates_declaring_the_same_scrape_are_refused() {
        let t = templates(&[
            ("linux.alloy.j2", "{{ standalone(\"a\", 9100) }}\n"),
            (
                "services/nginx.alloy.j2",
                "{{ standalone(\"nginx\", 9100) }}\n",
            ),
        ]);
        let mut h = host(&[]);
        h.facts.services = vec![service(ServiceKind::Nginx, Some(80))];
        let err = t.render(&h, &RenderSettings::default()).expect_err("twice");
        assert!(matches!(err, RenderError::Duplicate { .. }), "{err}");
        assert!(err.to_string().contains("services/nginx.alloy.j2"), "{err}");
    }

    #[test]
    fn bad_template_function_arguments_are_errors() {
        for src in [
            "{{ exporter(\"Unix\", \"a\") }}",
            "{{ exporter(\"unix\", \"a\", service=\"x y\") }}",
            "{{ standalone(\"nginx\", 0) }}",
            "{{ standalone(\"nginx\", 9113, \"metrics\") }}",
            "{{ standalone(\"nginx\", 9113, \"/m\\n\") }}",
        ] {
            let t = templates(&[("linux.alloy.j2", src)]);
            assert!(
                t.render(&host(&[]), &RenderSettings::default()).is_err(),
                "{src} rendered"
            );
        }
    }

    #[test]
    fn hosts_get_the_base_of_their_family_else_their_os() {
        let t = templates(&[
            (
                "linux.alloy.j2",
                "// linux\n{{ exporter(\"unix\", \"default\") }} { }\n",
            ),
            (
                "rhel.alloy.j2",
                "// rhel\n{{ exporter(\"unix\", \"default\") }} { }\n",
            ),
        ]);
        let mut h = host(&[]);
        let r = t.render(&h, &RenderSettings::default()).expect("debian");
        assert!(r.config.starts_with("// linux"));
        h.facts.os_id = Some("rocky".into());
        h.facts.os_like = Some("rhel centos fedora".into());
        let r = t.render(&h, &RenderSettings::default()).expect("rocky");
        assert!(r.config.starts_with("// rhel"));
        h.facts.os = "windows".into();
        assert!(matches!(
            t.render(&h, &RenderSettings::default()),
            Err(RenderError::NoBase { .. })
        ));
        let windows = Templates::builtin()
            .expect("load")
            .render(&h, &RenderSettings::default())
            .expect("windows base");
        assert!(windows
            .config
            .contains("prometheus.exporter.windows \"default\""));
    }

    #[test]
    fn operator_templates_overlay_the_builtins() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("services")).expect("mkdir");
        std::fs::write(
            dir.path().join("services/myapp.alloy.j2"),
            "{{ standalone(\"myapp\", service.port) }}\n",
        )
        .expect("write");
        let t = Templates::from_dir(dir.path()).expect("load");
        assert!(t.services().contains("myapp") && t.services().contains("postgres"));
        let overrides =
            Overrides::from_toml("[[rule]]\n[rule.services.myapp]\nenabled = true\nport = 8080\n")
                .expect("overrides");
        t.check_overrides(&overrides).expect("myapp has a template");
        let settings = RenderSettings {
            overrides,
            ..RenderSettings::default()
        };
        let r = t.render(&host(&[]), &settings).expect("renders");
        assert_eq!(r.targets[1].port, Some(8080));
        let typo = Overrides::from_toml("[[rule]]\n[rule.services.mypap]\nenabled = true\n")
            .expect("parses");
        assert!(t.check_overrides(&typo).is_err());
    }
}
