//! What the stand-in's `fmt`, `validate` and config loads check: syntax, then
//! (for `validate` and loads) that every top-level block is a component or
//! config block Alloy knows, as real `alloy validate` does.

use super::syntax::{self, Block, Diagnostic};

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

/// A config that passed the checks: its top-level blocks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub blocks: Vec<Block>,
}

impl Config {
    /// Component ids (`<name>.<label>`) of the exporter blocks, in file order.
    pub fn exporters(&self) -> impl Iterator<Item = String> + '_ {
        self.blocks
            .iter()
            .filter(|b| b.name.starts_with(EXPORTER_PREFIX))
            .map(component_id)
    }
}

/// `alloy fmt`: syntax only.
pub fn syntax(text: &str) -> Result<Config, Vec<Diagnostic>> {
    syntax::parse(text).map(|blocks| Config { blocks })
}

/// `alloy validate` and config loads: syntax, then unknown components.
pub fn validate(text: &str) -> Result<Config, Vec<Diagnostic>> {
    let config = syntax(text)?;
    let unknown: Vec<Diagnostic> = config
        .blocks
        .iter()
        .filter(|b| !KNOWN_BLOCKS.contains(&b.name.as_str()))
        .map(|b| Diagnostic {
            line: b.line,
            col: b.col,
            message: format!("unknown component {:?}", b.name),
        })
        .collect();
    if unknown.is_empty() {
        Ok(config)
    } else {
        Err(unknown)
    }
}

fn component_id(block: &Block) -> String {
    match &block.label {
        Some(label) => format!("{}.{}", block.name, label),
        None => block.name.clone(),
    }
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
