//! Injection: hostile values in every place a value reaches a config (label
//! values, facts, override parameters, server settings) render to a config
//! the Alloy syntax checker accepts, and reading the config back gives the
//! exact value. Validation would refuse some of these values (newlines in
//! labels, quotes in hostnames); they are fed straight to the renderer here,
//! so escaping is shown to hold on its own.

use muster_server::overrides::Overrides;
use muster_server::render::{RenderSettings, Templates};
use muster_shared::alloy::{self, ast, unquote};
use muster_shared::facts::{Facts, ServiceFact, ServiceKind};
use muster_shared::labels::Labels;

fn hostile() -> Vec<String> {
    vec![
        "\"".into(),
        "\\".into(),
        "}".into(),
        "a\nb".into(),
        "${HOME}".into(),
        "x\" } loki.write \"evil\" { url = \"${HOME}\\".into(),
        "// comment */ /* open".into(),
        "\r\t\u{0}\u{1b}[31m\u{feff}\u{202e}".into(),
        "`raw`".into(),
        "ünïcödé ✓".into(),
        format!("{}\"}}\n", "x".repeat(100_000)),
    ]
}

/// Every string literal's value in the parsed config.
fn strings(file: &ast::File) -> Vec<String> {
    fn expr(e: &ast::Expr, out: &mut Vec<String>) {
        match e {
            ast::Expr::Literal {
                kind: ast::LiteralKind::String,
                raw,
                ..
            } => out.push(unquote(raw).expect("a literal the parser accepted unquotes")),
            ast::Expr::Literal { .. } | ast::Expr::Ident { .. } => {}
            ast::Expr::Array { elements, .. } => elements.iter().for_each(|e| expr(e, out)),
            ast::Expr::Object { fields, .. } => {
                for f in fields {
                    out.push(f.name.clone());
                    expr(&f.value, out);
                }
            }
            ast::Expr::Access { value, .. } => expr(value, out),
            ast::Expr::Index { value, index, .. } => {
                expr(value, out);
                expr(index, out);
            }
            ast::Expr::Call { func, args, .. } => {
                expr(func, out);
                args.iter().for_each(|a| expr(a, out));
            }
            ast::Expr::Unary { value, .. } => expr(value, out),
            ast::Expr::Binary { left, right, .. } => {
                expr(left, out);
                expr(right, out);
            }
            ast::Expr::Paren { inner, .. } => expr(inner, out),
        }
    }
    fn stmts(body: &[ast::Stmt], out: &mut Vec<String>) {
        for s in body {
            match s {
                ast::Stmt::Attribute { value, .. } => expr(value, out),
                ast::Stmt::Block { body, .. } => stmts(body, out),
            }
        }
    }
    let mut out = Vec::new();
    stmts(&file.body, &mut out);
    out
}

fn facts() -> Facts {
    Facts {
        hostname: "web-01".into(),
        machine_id: "0123456789abcdef".into(),
        os: "linux".into(),
        arch: "x86_64".into(),
        os_id: Some("debian".into()),
        os_version: Some("12".into()),
        scrape_address: "10.0.0.5:12345".into(),
        agent_version: "0.1.0".into(),
        services: vec![ServiceFact {
            kind: ServiceKind::Journal,
            port: None,
            address: None,
            path: Some("/var/log/journal".into()),
            exporter_port: None,
            evidence: vec![],
        }],
        ..Facts::default()
    }
}

fn labels(facts: &Facts, extra: &[(&str, &str)]) -> Labels {
    let operator: Labels = extra
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    muster_shared::facts::host_labels("web-01-abc123", facts, &operator)
}

/// Renders and parses; the value must come back out of some literal.
fn assert_preserved(config: &str, value: &str, what: &str) {
    let file = alloy::parse(config)
        .unwrap_or_else(|d| panic!("{what}: {value:.80?} made invalid syntax: {}", d[0]));
    assert!(
        strings(&file).iter().any(|s| s == value),
        "{what}: {value:.80?} not found as a literal"
    );
}

fn settings(overrides: &str) -> RenderSettings {
    RenderSettings {
        loki_url: Some("http://loki:3100".into()),
        otlp_endpoint: Some("otel:4317".into()),
        overrides: Overrides::from_toml(overrides).expect("overrides"),
    }
}

#[test]
fn hostile_label_values_render_valid_and_preserved() {
    let t = Templates::builtin().expect("templates");
    let f = facts();
    for value in hostile() {
        let l = labels(&f, &[("team", &value)]);
        let r = t
            .render_facts("web-01-abc123", &f, &l, &settings(""))
            .unwrap_or_else(|e| panic!("{value:.80?}: {e}"));
        assert_preserved(&r.config, &value, "label");
    }
}

#[test]
fn hostile_override_parameters_render_valid_and_preserved() {
    let t = Templates::builtin().expect("templates");
    let mut f = facts();
    f.services.push(ServiceFact {
        kind: ServiceKind::Redis,
        port: Some(6379),
        address: Some("127.0.0.1".into()),
        path: None,
        exporter_port: None,
        evidence: vec![],
    });
    for value in hostile() {
        // TOML basic strings: escape as JSON does (a subset TOML accepts).
        let toml_str = serde_json::to_string(&value).expect("json string");
        let overrides = format!(
            "[[rule]]\n[rule.services.redis]\npassword_file = {toml_str}\n\
             [rule.services.postgres]\nenabled = true\ndsn_env = {toml_str}\nuser = {toml_str}\n\
             [rule.services.files]\nenabled = true\npaths = [{toml_str}]\n\
             [rule.services.otlp]\nenabled = true\ngrpc = {toml_str}\n\
             [rule.services.process]\nenabled = true\nnames = [{toml_str}]\n"
        );
        let l = labels(&f, &[]);
        let r = t
            .render_facts("web-01-abc123", &f, &l, &settings(&overrides))
            .unwrap_or_else(|e| panic!("{value:.80?}: {e}"));
        for what in [
            "redis password_file",
            "files path",
            "otlp grpc",
            "postgres dsn_env",
        ] {
            assert_preserved(&r.config, &value, what);
        }
    }
}

#[test]
fn hostile_facts_and_settings_render_valid_and_preserved() {
    let t = Templates::builtin().expect("templates");
    for value in hostile() {
        let mut f = facts();
        // Refused by Facts::check; escaping must hold regardless.
        f.hostname = value.clone();
        f.services.push(ServiceFact {
            kind: ServiceKind::Docker,
            port: None,
            address: None,
            path: Some(value.clone()),
            exporter_port: None,
            evidence: vec![],
        });
        let l = labels(&f, &[]);
        let mut s = settings("");
        s.loki_url = Some(value.clone());
        let r = t
            .render_facts("web-01-abc123", &f, &l, &s)
            .unwrap_or_else(|e| panic!("{value:.80?}: {e}"));
        assert_preserved(&r.config, &value, "hostname label");
        assert_preserved(&r.config, &format!("unix://{value}"), "docker socket");
        assert_preserved(&r.config, &format!("{value}/loki/api/v1/push"), "loki url");
    }
}

#[test]
fn the_real_validation_refuses_what_it_should_and_keeps_the_rest() {
    let mut f = facts();
    for bad in ["a\"b", "a\nb", "a}b", "${x}", "a\\b"] {
        f.hostname = bad.into();
        assert!(f.check().is_err(), "{bad:?} accepted as a hostname");
    }
    assert!(muster_shared::labels::check_value("team", "a\nb").is_err());
    assert!(muster_shared::labels::check_value("team", "a\"} ${x} \\").is_ok());
}
