//! Golden files for rendering: every host fixture in `tests/fixtures/hosts/`
//! (facts as an agent reports them, labels, server settings, overrides)
//! rendered with the built-in templates, compared byte for byte with
//! `tests/golden/render/<fixture>.alloy` and `<fixture>.targets.json`.
//! `MUSTER_BLESS=1 cargo test -p muster-server --test golden` rewrites them;
//! a mismatch shows a line diff. Together the fixtures must use every
//! built-in template.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use muster_server::overrides::{self, Overrides};
use muster_server::render::{RenderSettings, Templates, BUILTIN};
use muster_server::targets;
use muster_shared::facts::{self, Facts};
use muster_shared::labels::Labels;
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Fixture {
    #[allow(dead_code)]
    about: String,
    facts: Facts,
    labels: Labels,
    settings: FixtureSettings,
    /// overrides.toml text.
    overrides: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FixtureSettings {
    loki_url: Option<String>,
    otlp_endpoint: Option<String>,
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A short line diff: the differing region with a little context.
fn diff(want: &str, got: &str) -> String {
    let (w, g): (Vec<&str>, Vec<&str>) = (want.lines().collect(), got.lines().collect());
    let prefix = w.iter().zip(&g).take_while(|(a, b)| a == b).count();
    let suffix = w[prefix..]
        .iter()
        .rev()
        .zip(g[prefix..].iter().rev())
        .take_while(|(a, b)| a == b)
        .count();
    let from = prefix.saturating_sub(3);
    let mut out = format!("@@ line {} @@\n", from + 1);
    for line in &w[from..prefix] {
        out.push_str(&format!("  {line}\n"));
    }
    for line in &w[prefix..w.len() - suffix] {
        out.push_str(&format!("- {line}\n"));
    }
    for line in &g[prefix..g.len() - suffix] {
        out.push_str(&format!("+ {line}\n"));
    }
    for line in w[w.len() - suffix..].iter().take(3) {
        out.push_str(&format!("  {line}\n"));
    }
    out
}

/// Compares `got` with the golden file, or rewrites it when blessing.
/// Returns a failure description.
fn compare(path: &Path, got: &str) -> Option<String> {
    if std::env::var_os("MUSTER_BLESS").is_some() {
        std::fs::write(path, got).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        return None;
    }
    let want = std::fs::read_to_string(path).unwrap_or_default();
    (want != got).then(|| {
        format!(
            "{} differs (MUSTER_BLESS=1 rewrites it):\n{}",
            path.display(),
            diff(&want, got)
        )
    })
}

#[test]
fn every_fixture_renders_as_its_golden_files() {
    let fixtures = root().join("tests/fixtures/hosts");
    let golden = root().join("tests/golden/render");
    let templates = Templates::builtin().expect("built-in templates load");
    let mut names: Vec<PathBuf> = std::fs::read_dir(&fixtures)
        .unwrap_or_else(|e| panic!("{}: {e}", fixtures.display()))
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    names.sort();
    assert!(
        names.len() >= 6,
        "found only {} fixtures in {}",
        names.len(),
        fixtures.display()
    );

    let mut used: BTreeSet<String> = BTreeSet::new();
    let mut failures = Vec::new();
    for path in &names {
        let stem = path.file_stem().and_then(|s| s.to_str()).expect("name");
        let text = std::fs::read_to_string(path).expect("fixture");
        let fx: Fixture =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        fx.facts.check().unwrap_or_else(|e| {
            panic!(
                "{}: the server would refuse these facts: {e}",
                path.display()
            )
        });
        let overrides = Overrides::from_toml(&fx.overrides)
            .unwrap_or_else(|e| panic!("{}: overrides: {e}", path.display()));
        let id = facts::host_id(&fx.facts.hostname, "preview");
        let labels = facts::host_labels(&id, &fx.facts, &fx.labels);

        let family = format!("{}.alloy.j2", fx.facts.os_family().as_str());
        let base = if BUILTIN.iter().any(|(n, _)| *n == family) {
            family
        } else {
            format!("{}.alloy.j2", fx.facts.os)
        };
        used.insert(base);
        for service in overrides::plan(&id, &labels, &fx.facts.services, &overrides).keys() {
            used.insert(format!("services/{service}.alloy.j2"));
        }

        let settings = RenderSettings {
            loki_url: fx.settings.loki_url,
            otlp_endpoint: fx.settings.otlp_endpoint,
            overrides,
        };
        let rendered = templates
            .render_facts(&id, &fx.facts, &labels, &settings)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let targets = targets::groups_json(&labels, &fx.facts.scrape_address, &rendered.targets);
        failures.extend(compare(
            &golden.join(format!("{stem}.alloy")),
            &rendered.config,
        ));
        failures.extend(compare(
            &golden.join(format!("{stem}.targets.json")),
            &targets,
        ));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    let all: BTreeSet<String> = BUILTIN.iter().map(|(n, _)| n.to_string()).collect();
    let unused: Vec<&String> = all.difference(&used).collect();
    assert!(unused.is_empty(), "no fixture uses {unused:?}");
}

#[test]
fn golden_configs_pass_the_syntax_checker() {
    let golden = root().join("tests/golden/render");
    let mut seen = 0;
    for entry in std::fs::read_dir(&golden).expect("golden dir") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "alloy") {
            let text = std::fs::read_to_string(&path).expect("golden");
            let diags = muster_shared::alloy::check(&text);
            assert!(diags.is_empty(), "{}: {diags:?}", path.display());
            seen += 1;
        }
    }
    assert!(
        seen >= 6,
        "found {seen} golden configs in {}",
        golden.display()
    );
}
