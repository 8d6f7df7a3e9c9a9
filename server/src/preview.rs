//! The operator's offline tools: `muster-server render` prints the config and
//! target groups a host gets (or would get, from a facts file) with the
//! templates and overrides on disk, so a change can be previewed before a
//! restart applies it; `muster-server alloy check` runs the syntax check the
//! server runs on every render over any Alloy file.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use muster_shared::alloy;
use muster_shared::facts::{self, Facts};
use muster_shared::labels::{self, Labels};

use crate::overrides::{self, Overrides};
use crate::render::{RenderSettings, Rendered, Templates};
use crate::settings::{self, Settings};
use crate::store::{self, Store};

#[derive(clap::Args)]
pub struct RenderArgs {
    /// Data dir whose settings, overrides and database are used
    #[arg(long, env = "MUSTER_DATA_DIR", default_value = crate::DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// An enrolled host, as `hosts list` shows it
    #[arg(
        long,
        value_name = "ID",
        required_unless_present = "facts",
        conflicts_with = "facts"
    )]
    pub host: Option<String>,
    /// A facts file (JSON, as an agent reports them) for a host that does not exist yet
    #[arg(long, value_name = "FILE")]
    pub facts: Option<PathBuf>,
    /// With --facts: a label the host would have, as name=value; repeatable
    #[arg(long = "label", value_name = "NAME=VALUE", requires = "facts", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// Templates to render with [default: server.toml's templates_dir, else the built-in ones]
    #[arg(long, value_name = "DIR")]
    pub templates_dir: Option<PathBuf>,
    /// Overrides file [default: server.toml's overrides_file, else <data dir>/overrides.toml]
    #[arg(long, value_name = "FILE")]
    pub overrides: Option<PathBuf>,
    /// Print JSON (host_id, hash, config, targets) for scripts
    #[arg(long)]
    pub json: bool,
}

fn parse_label(text: &str) -> Result<(String, String), String> {
    labels::parse_pair(text).map_err(|e| e.to_string())
}

#[derive(clap::Subcommand)]
pub enum AlloyCommand {
    /// Check Alloy files' syntax as the server checks every rendered config;
    /// prints FILE:LINE:COL: message for each error and exits 1 when there are any
    Check {
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
}

/// What `render` prints.
pub struct Preview {
    pub host_id: String,
    pub rendered: Rendered,
    /// The host's target file content.
    pub targets: String,
}

impl Preview {
    pub fn text(&self, json: bool) -> String {
        if json {
            let targets: serde_json::Value =
                serde_json::from_str(&self.targets).expect("file_sd output is JSON");
            let body = serde_json::json!({
                "host_id": self.host_id,
                "hash": self.rendered.hash,
                "config": self.rendered.config,
                "targets": targets,
            });
            return format!(
                "{}\n",
                serde_json::to_string_pretty(&body).expect("plain data always serializes")
            );
        }
        format!(
            "// ----- config for host {} (hash {}) -----\n{}// ----- Prometheus target groups ({}.json) -----\n{}",
            self.host_id, self.rendered.hash, self.rendered.config, self.host_id, self.targets
        )
    }
}

/// Renders as `args` asks, with the data dir's settings when it has them.
pub fn render(args: &RenderArgs) -> Result<Preview> {
    let settings_path = args.data_dir.join(settings::FILE_NAME);
    let settings = if settings_path.exists() {
        Some(Settings::read(&settings_path).context("reading settings")?)
    } else {
        None
    };
    let templates_dir = args
        .templates_dir
        .clone()
        .or_else(|| settings.as_ref().and_then(|s| s.templates_dir.clone()));
    let templates = match &templates_dir {
        Some(dir) => Templates::from_dir(dir)?,
        None => Templates::builtin()?,
    };
    let overrides_path = args
        .overrides
        .clone()
        .or_else(|| settings.as_ref().and_then(|s| s.overrides_file.clone()))
        .unwrap_or_else(|| args.data_dir.join(overrides::FILE_NAME));
    let overrides = Overrides::read(&overrides_path)?;
    templates
        .check_overrides(&overrides)
        .map_err(|m| anyhow::anyhow!("{}: {m}", overrides_path.display()))?;
    let render_settings = RenderSettings {
        loki_url: settings.as_ref().and_then(|s| s.loki_url.clone()),
        otlp_endpoint: settings.as_ref().and_then(|s| s.otlp_endpoint.clone()),
        overrides,
    };
    let (host_id, facts, labels) = match (&args.host, &args.facts) {
        (Some(id), _) => enrolled_host(&args.data_dir, id)?,
        (None, Some(path)) => facts_file(path, &args.labels)?,
        (None, None) => bail!("give --host ID or --facts FILE"),
    };
    let rendered = templates.render_facts(&host_id, &facts, &labels, &render_settings)?;
    let targets = crate::targets::groups_json(&labels, &facts.scrape_address, &rendered.targets);
    Ok(Preview {
        host_id,
        rendered,
        targets,
    })
}

fn enrolled_host(data_dir: &Path, id: &str) -> Result<(String, Facts, Labels)> {
    let db = data_dir.join(store::FILE_NAME);
    if !db.exists() {
        bail!(
            "{} has no database: is it a server's data dir? (--data-dir)",
            data_dir.display()
        );
    }
    let store = Store::open(&db).context("opening the database")?;
    let host = store
        .host(id)?
        .with_context(|| format!("no host {id:?} (see `muster-server hosts list`)"))?;
    Ok((host.id.clone(), host.facts.clone(), host.labels()))
}

/// A facts file is checked like an agent's facts; the host it describes
/// gets a made-up id and the labels Muster derives from facts.
fn facts_file(path: &Path, extra: &[(String, String)]) -> Result<(String, Facts, Labels)> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let facts: Facts = serde_json::from_str(&text)
        .with_context(|| format!("{}: not facts JSON", path.display()))?;
    facts
        .check()
        .with_context(|| format!("{}: facts the server would refuse", path.display()))?;
    let operator: Labels = extra.iter().cloned().collect();
    labels::check_operator_labels(&operator)?;
    let id = facts::host_id(&facts.hostname, "preview");
    let labels = facts::host_labels(&id, &facts, &operator);
    Ok((id, facts, labels))
}

/// Checks `files`, writing `FILE:LINE:COL: message` lines to `out`; returns
/// how many errors were found (an unreadable file counts as one).
pub fn check_files(files: &[PathBuf], out: &mut impl Write) -> std::io::Result<usize> {
    let mut errors = 0;
    for file in files {
        let bytes = match std::fs::read(file) {
            Ok(b) => b,
            Err(e) => {
                writeln!(out, "{}: cannot read: {e}", file.display())?;
                errors += 1;
                continue;
            }
        };
        for d in alloy::check_bytes(&bytes) {
            writeln!(out, "{}:{d}", file.display())?;
            errors += 1;
        }
    }
    Ok(errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_prints_file_line_col_and_counts() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.alloy");
        let bad = dir.path().join("bad.alloy");
        std::fs::write(&good, "logging {\n\tlevel = \"info\"\n}\n").unwrap();
        std::fs::write(&bad, "logging {\n\tlevel = \"info\n}\n").unwrap();
        let missing = dir.path().join("missing.alloy");
        let mut out = Vec::new();
        let n = check_files(std::slice::from_ref(&good), &mut out).unwrap();
        assert_eq!((n, out.len()), (0, 0));
        let n = check_files(&[good, bad.clone(), missing.clone()], &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(n >= 2, "{text}");
        assert!(
            text.starts_with(&format!("{}:2:10: ", bad.display())),
            "{text}"
        );
        assert!(text.contains(&format!("{}: cannot read", missing.display())));
    }
}
