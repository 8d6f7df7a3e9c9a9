//! What the stand-in's `fmt`, `validate` and config loads check: syntax (with
//! Muster's own Alloy-syntax checker, `muster_shared::alloy`), then (for
//! `validate` and loads) that every top-level block is a component or config
//! block Alloy knows, as real `alloy validate` does; and, for loads only,
//! building the components, where the files they name are read (a config can
//! pass `validate` and still fail to load, as with real Alloy).

use muster_shared::alloy::{self, ast, Diagnostic};

/// Top-level blocks Alloy accepts: the components Muster's templates use
/// (ALLOY.md) plus Alloy's config blocks. Anything else is an unknown
/// component, which real `alloy validate` rejects.
pub const KNOWN_BLOCKS: &[&str] = &[
    "prometheus.exporter.unix",
    "prometheus.exporter.windows",
    "prometheus.exporter.postgres",
    "prometheus.exporter.mysql",
    "prometheus.exporter.redis",
    "prometheus.exporter.process",
    "prometheus.exporter.cadvisor",
    "prometheus.scrape",
    "prometheus.remote_write",
    "prometheus.relabel",
    "discovery.relabel",
    "loki.source.journal",
    "loki.source.file",
    "loki.write",
    "loki.process",
    "loki.relabel",
    "local.file",
    "local.file_match",
    "otelcol.receiver.otlp",
    "otelcol.receiver.nginx",
    "otelcol.exporter.otlp",
    "otelcol.processor.batch",
    "logging",
    "tracing",
    "livedebugging",
    "http",
    "remotecfg",
    "declare",
    "import.file",
];

/// The prefix of the components that serve `/api/v0/component/<id>/metrics`.
pub const EXPORTER_PREFIX: &str = "prometheus.exporter.";

/// A config that passed the checks.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub file: ast::File,
}

impl Config {
    /// Component ids (`<name>.<label>`) of the exporter blocks, in file order.
    pub fn exporters(&self) -> impl Iterator<Item = String> + '_ {
        alloy::blocks(&self.file)
            .filter(|(name, _)| name.starts_with(EXPORTER_PREFIX))
            .map(|(name, label)| match label {
                Some(label) => format!("{name}.{label}"),
                None => name,
            })
    }
}

/// `alloy fmt`: syntax only.
pub fn syntax(text: &str) -> Result<Config, Vec<Diagnostic>> {
    alloy::parse(text).map(|file| Config { file })
}

/// `alloy validate` and config loads: syntax, then unknown components, each
/// reported where its name starts.
pub fn validate(text: &str) -> Result<Config, Vec<Diagnostic>> {
    let config = syntax(text)?;
    let unknown: Vec<Diagnostic> = config
        .file
        .body
        .iter()
        .filter_map(|stmt| match stmt {
            ast::Stmt::Block {
                name, name_offset, ..
            } => Some((name.join("."), *name_offset)),
            ast::Stmt::Attribute { .. } => None,
        })
        .filter(|(name, _)| !KNOWN_BLOCKS.contains(&name.as_str()))
        .map(|(name, offset)| {
            let (line, col) = line_col(text, offset);
            Diagnostic {
                line,
                col,
                offset,
                message: format!("unknown component {name:?}"),
            }
        })
        .collect();
    if unknown.is_empty() {
        Ok(config)
    } else {
        Err(unknown)
    }
}

/// Attributes naming a file a component reads when it is built, not when
/// the config is validated: `local.file`'s `filename` (read by its
/// constructor) and the redis exporter's `redis_password_file` (read when
/// the exporter is created). An unreadable one fails the load.
const FILES_READ_AT_BUILD: &[(&str, &str)] = &[
    ("local.file", "filename"),
    ("prometheus.exporter.redis", "redis_password_file"),
];

/// A config load (`alloy run`, SIGHUP, `/-/reload`): [`validate`], then
/// building each component. A file a component needs that cannot be read is
/// reported at its attribute as Alloy reports a component that fails to
/// build: `<line>:<col>: Failed to build component: building component: open
/// <file>: <reason>`.
pub fn load(text: &str) -> Result<Config, Vec<Diagnostic>> {
    let config = validate(text)?;
    let mut failures = Vec::new();
    for stmt in &config.file.body {
        let ast::Stmt::Block { name, body, .. } = stmt else {
            continue;
        };
        let name = name.join(".");
        for attr in body {
            let ast::Stmt::Attribute {
                name: attr_name,
                name_offset,
                value: ast::Expr::Literal { raw, .. },
            } = attr
            else {
                continue;
            };
            let reads_file = FILES_READ_AT_BUILD
                .iter()
                .any(|(block, a)| *block == name && a == attr_name);
            let Ok(path) = alloy::unquote(raw) else {
                continue;
            };
            if !reads_file {
                continue;
            }
            if let Err(e) = std::fs::read(&path) {
                let (line, col) = line_col(text, *name_offset);
                failures.push(Diagnostic {
                    line,
                    col,
                    offset: *name_offset,
                    message: format!(
                        "Failed to build component: building component: open {path}: {}",
                        go_io_error(&e)
                    ),
                });
            }
        }
    }
    if failures.is_empty() {
        Ok(config)
    } else {
        Err(failures)
    }
}

/// An IO error as Go's `os` package words it.
fn go_io_error(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file or directory".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        std::io::ErrorKind::IsADirectory => "is a directory".into(),
        _ => e.to_string(),
    }
}

/// 1-based line and byte column of a byte offset, as the checker counts them.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text.as_bytes()[..offset.min(text.len())];
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    (line, offset - line_start + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"
prometheus.exporter.unix "default" { }
prometheus.exporter.postgres "main" {
  data_source_names = [sys.env("PG_DSN")]
}
prometheus.scrape "self" {
  targets    = prometheus.exporter.unix.default.targets
  forward_to = []
}
"#;

    #[test]
    fn exporters_are_named_by_component_id() {
        let config = validate(CONFIG).expect("valid");
        let ids: Vec<String> = config.exporters().collect();
        assert_eq!(
            ids,
            [
                "prometheus.exporter.unix.default",
                "prometheus.exporter.postgres.main"
            ]
        );
    }

    #[test]
    fn syntax_errors_come_from_the_shared_checker() {
        let diags = syntax("logging {\n").expect_err("unclosed block");
        assert_eq!(diags[0].to_string(), "2:1: expected }, got EOF");
    }

    #[test]
    fn a_file_read_at_build_fails_the_load_but_not_validate() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("redis-password");
        let text = format!(
            "prometheus.exporter.redis \"default\" {{\n  redis_addr = \"127.0.0.1:6379\"\n  redis_password_file = \"{}\"\n}}\n",
            missing.display()
        );
        assert!(
            validate(&text).is_ok(),
            "validate does not build components"
        );
        let diags = load(&text).expect_err("the file is missing");
        assert_eq!(
            diags[0].to_string(),
            format!(
                "3:3: Failed to build component: building component: open {}: no such file or directory",
                missing.display()
            )
        );
        std::fs::write(&missing, "secret").unwrap();
        assert!(load(&text).is_ok());
    }

    #[test]
    fn validate_rejects_unknown_components_where_they_start() {
        let text = "logging { }\n\n  prometheus.exporter.nginx \"web\" { }\n";
        assert!(syntax(text).is_ok(), "fmt checks syntax only");
        let diags = validate(text).expect_err("unknown component");
        assert_eq!(
            diags[0].to_string(),
            "3:3: unknown component \"prometheus.exporter.nginx\""
        );
    }
}
