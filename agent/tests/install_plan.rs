//! Golden tests of the Alloy install plans: for every os-release fixture in
//! `tests/fixtures/os-release/`, the plan `muster-agent install-alloy` would
//! carry out (Grafana's repositories, and a mirror), compared with
//! `tests/golden/install-plan/<fixture>.txt`. `MUSTER_BLESS=1` rewrites them (the one bless variable of every golden test).

use std::path::{Path, PathBuf};

use muster_agent::detect::os_release::OsRelease;
use muster_agent::install::{alloy_plan, Request};
use muster_shared::mirror::AlloyMirror;

/// The workspace root, where the one fixtures and goldens root is
/// (`tests/fixtures/`, `tests/golden/`).
fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the agent crate is in the workspace")
        .to_path_buf()
}

fn plan_text(os: &OsRelease, mirror: &AlloyMirror, present: bool) -> String {
    let plan = alloy_plan(&Request {
        os,
        mirror,
        root: Path::new("/"),
        alloy_present: present,
        listen_addr: "0.0.0.0:12345",
        systemd: true,
        groups: &[],
        downloads: Path::new("/var/lib/muster"),
    })
    .expect("a plan for every fixture");
    plan.iter()
        .map(|s| format!("{}\n", s.to_string().trim_end()))
        .collect()
}

fn render(os: &OsRelease) -> String {
    let mirror = AlloyMirror {
        apt: Some("https://mirror.example.com/grafana/apt".into()),
        rpm: Some("https://mirror.example.com/grafana/rpm".into()),
        key: Some("https://mirror.example.com/grafana/gpg.key".into()),
        windows: None,
    };
    format!(
        "## Grafana's repositories\n{}\n## mirror\n{}\n## Alloy already installed\n{}",
        plan_text(os, &AlloyMirror::default(), false),
        plan_text(os, &mirror, false),
        plan_text(os, &AlloyMirror::default(), true),
    )
}

#[test]
fn install_plans_match_their_golden_files() {
    let fixtures = repo().join("tests/fixtures/os-release");
    let golden_dir = repo().join("tests/golden/install-plan");
    let update = std::env::var_os("MUSTER_BLESS").is_some();
    let mut names: Vec<String> = std::fs::read_dir(&fixtures)
        .expect("fixtures dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert!(names.len() >= 10, "fixtures missing: {names:?}");
    let mut failures = Vec::new();
    for name in &names {
        let text = std::fs::read_to_string(fixtures.join(name)).expect("fixture");
        let got = render(&OsRelease::parse(&text));
        let golden = golden_dir.join(format!("{name}.txt"));
        if update {
            std::fs::create_dir_all(&golden_dir).expect("golden dir");
            std::fs::write(&golden, &got).expect("write golden");
            continue;
        }
        let want = std::fs::read_to_string(&golden).unwrap_or_default();
        if want != got {
            failures.push(format!(
                "{} differs (MUSTER_BLESS=1 rewrites it)\n--- want ---\n{want}\n--- got ---\n{got}",
                golden.display()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn families_get_their_package_manager() {
    let fixtures = repo().join("tests/fixtures/os-release");
    for (name, tool) in [
        ("debian-12", "apt-get install"),
        ("ubuntu-24.04", "apt-get install"),
        ("rhel-9", "dnf install"),
        ("rocky-8", "dnf install"),
        ("centos-7", "yum install"),
        ("amzn-2", "yum install"),
        ("amzn-2023", "dnf install"),
        ("sles-15", "zypper --non-interactive install"),
        ("opensuse-leap-15.6", "zypper --non-interactive install"),
    ] {
        let text = std::fs::read_to_string(fixtures.join(name)).expect("fixture");
        let plan = plan_text(&OsRelease::parse(&text), &AlloyMirror::default(), false);
        assert!(plan.contains(tool), "{name}: {plan}");
    }
}
