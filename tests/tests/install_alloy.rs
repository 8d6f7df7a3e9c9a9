//! `muster-agent install-alloy` with the real `apt-get` and `dpkg`: a small
//! local apt repository (built with `dpkg-deb`, `dpkg-scanpackages`, signed
//! with a throw-away `gpg` key) holds a stand-in `alloy` package (the Alloy
//! stand-in as `/usr/bin/alloy`, the packaged env file and unit). The agent's
//! `[alloy_mirror]` points at it, and `--root` keeps every apt and dpkg file
//! in a temp dir: the machine's own sources, lists and dpkg database are
//! untouched (checked).

use std::path::{Path, PathBuf};
use std::process::Command;

use muster_e2e::apt_repo::{build_alloy_repo, ENV_FILE};
use muster_e2e::{agent_command, prereqs, run_fail, run_ok, tools};

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

/// An empty Debian "host" under `root` with the agent's config naming the mirror.
fn prepare_root(root: &Path, repo: &Path, key: &Path) -> PathBuf {
    for dir in [
        "var/lib/dpkg/info",
        "var/lib/dpkg/updates",
        "var/lib/apt/lists/partial",
        "var/cache/apt/archives/partial",
        "var/log/apt",
        "etc/apt/trusted.gpg.d",
        "etc/apt/preferences.d",
    ] {
        std::fs::create_dir_all(root.join(dir)).expect("mkdir");
    }
    write(&root.join("var/lib/dpkg/status"), "");
    write(
        &root.join("etc/os-release"),
        "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\nVERSION_ID=\"12\"\n",
    );
    let config = root.join("etc/muster/agent.toml");
    write(
        &config,
        &format!(
            "[alloy_mirror]\napt = \"file://{}\"\nkey = \"file://{}\"\n",
            repo.display(),
            key.display()
        ),
    );
    config
}

/// What must not change on the machine itself.
fn host_apt_state() -> String {
    let mut out = std::fs::read_to_string("/var/lib/dpkg/status").unwrap_or_default();
    for dir in ["/etc/apt/sources.list.d", "/etc/apt/keyrings"] {
        if let Ok(entries) = std::fs::read_dir(dir) {
            let mut names: Vec<String> = entries
                .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            out.push_str(&format!("{dir}: {names:?}\n"));
        }
    }
    out
}

fn install_alloy(config: &Path, root: &Path) -> Command {
    let mut cmd = agent_command();
    cmd.arg("install-alloy")
        .arg("--config")
        .arg(config)
        .arg("--root")
        .arg(root);
    cmd
}

#[cfg_attr(
    not(have_apt_repo),
    ignore = "SKIPPED: needs root, dpkg-dev, gnupg, curl -- run as root; apt-get install dpkg-dev gnupg curl"
)]
#[test]
fn install_alloy_installs_from_a_signed_mirror_with_real_apt_into_a_private_root() {
    tools::require(&[&prereqs::APT_REPO]);
    let dir = tempfile::tempdir().expect("temp dir");
    let repo = build_alloy_repo(dir.path(), "key");
    let root = dir.path().join("root");
    let config = prepare_root(&root, &repo, &dir.path().join("key.asc"));
    let before = host_apt_state();

    let plan = run_ok(install_alloy(&config, &root).arg("--dry-run"));
    assert!(
        plan.contains("apt-get install") && plan.contains("file://"),
        "{plan}"
    );
    assert!(!root.join("usr/bin/alloy").exists(), "dry run installed");

    let out = run_ok(&mut install_alloy(&config, &root));
    assert!(out.contains("Alloy v1.10.0"), "{out}");
    assert!(out.contains("alloy validate"), "{out}");
    let alloy = root.join("usr/bin/alloy");
    let version = run_ok(Command::new(&alloy).arg("--version"));
    assert!(version.contains("stand-in"), "{version}");
    let status = std::fs::read_to_string(root.join("var/lib/dpkg/status")).expect("status");
    assert!(
        status.contains("Package: alloy") && status.contains("Status: install ok installed"),
        "{status}"
    );
    // Only the listen address changed in the packaged env file.
    let env = std::fs::read_to_string(root.join("etc/default/alloy")).expect("env file");
    assert_eq!(
        env,
        ENV_FILE.replace(
            "CUSTOM_ARGS=\"\"",
            "CUSTOM_ARGS=\"--server.http.listen-addr=0.0.0.0:12345\""
        )
    );
    let list = std::fs::read_to_string(root.join("etc/apt/sources.list.d/grafana.list"))
        .expect("source list");
    assert!(
        list.contains("signed-by=") && list.contains("file://"),
        "{list}"
    );

    // A second run finds Alloy and changes nothing.
    let again = run_ok(&mut install_alloy(&config, &root));
    assert!(again.contains("Alloy is installed"), "{again}");
    assert_eq!(
        std::fs::read_to_string(root.join("etc/default/alloy")).expect("env file"),
        env
    );
    assert_eq!(
        host_apt_state(),
        before,
        "the machine's apt/dpkg state changed"
    );
}

#[cfg_attr(
    not(have_apt_repo),
    ignore = "SKIPPED: needs root, dpkg-dev, gnupg, curl -- run as root; apt-get install dpkg-dev gnupg curl"
)]
#[test]
fn a_mirror_signed_by_another_key_is_refused_by_apt() {
    tools::require(&[&prereqs::APT_REPO]);
    let dir = tempfile::tempdir().expect("temp dir");
    let repo = build_alloy_repo(dir.path(), "key");
    // A second, unrelated key: apt must refuse the repository's signature.
    let other = tempfile::tempdir().expect("temp dir");
    build_alloy_repo(other.path(), "other");
    let root = dir.path().join("root");
    let config = prepare_root(&root, &repo, &other.path().join("other.asc"));
    let out = run_fail(&mut install_alloy(&config, &root));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!root.join("usr/bin/alloy").exists(), "installed anyway");
    assert!(stderr.contains("apt-get"), "{stderr}");
}
