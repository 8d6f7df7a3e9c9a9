//! The packages `packaging/build` makes, built cheaply from the debug
//! binaries beside the tests (`--bin-dir`, `--fast`): the `.rpm`'s contents
//! and scriptlets (`rpm -qlp`), the server `.deb`'s contents, and the agent
//! `.deb` installed for real with `dpkg -i`, checked (files, unit, config,
//! no enrollment without a token) and purged again. Also: the unit install.sh
//! writes is the packaged one, and every packaging script is shellcheck clean.

use std::path::{Path, PathBuf};
use std::process::Command;

use muster_e2e::{bin_path, prereqs, run, run_ok, tools};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .to_path_buf()
}

/// Runs `packaging/build --bin-dir <debug bins> --fast` into `out`.
fn build(out: &Path) {
    let bins = bin_path("muster-agent")
        .parent()
        .expect("bin dir")
        .to_path_buf();
    assert!(
        bins.join("muster-server").is_file(),
        "muster-server not built"
    );
    let text = run_ok(
        Command::new(repo().join("packaging/build"))
            .arg("--bin-dir")
            .arg(&bins)
            .arg("--out")
            .arg(out)
            .arg("--fast"),
    );
    assert!(text.contains("artifacts in"), "{text}");
}

fn only(dir: &Path, suffix: &str, prefix: &str) -> PathBuf {
    let found: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("out dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| {
            let name = p.file_name().unwrap_or_default().to_string_lossy();
            name.ends_with(suffix) && name.starts_with(prefix)
        })
        .collect();
    assert_eq!(
        found.len(),
        1,
        "{prefix}*{suffix} in {}: {found:?}",
        dir.display()
    );
    found.into_iter().next().expect("one")
}

/// Purges the package on drop, so a failing test leaves nothing behind.
struct Purge(&'static str);

impl Drop for Purge {
    fn drop(&mut self) {
        let _ = Command::new("dpkg").args(["--purge", self.0]).output();
    }
}

#[cfg_attr(
    not(have_packaging),
    ignore = "SKIPPED: needs root, dpkg and rpm -- run as root; apt-get install rpm"
)]
#[test]
fn packages_hold_the_binaries_units_and_config_and_the_agent_deb_installs_and_purges() {
    tools::require(&[&prereqs::PACKAGING]);
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("dist");
    build(&out);

    // The rpm: files, config file, scriptlets.
    let rpm = only(&out, ".rpm", "muster-agent-");
    let files = run_ok(Command::new("rpm").arg("-qlp").arg(&rpm));
    for want in [
        "/usr/bin/muster-agent",
        "/usr/lib/systemd/system/muster-agent.service",
        "/etc/muster/agent.toml",
        "/var/lib/muster",
        "/usr/lib/muster-agent/postinstall",
    ] {
        assert!(files.lines().any(|l| l == want), "{want} not in\n{files}");
    }
    let config = run_ok(Command::new("rpm").arg("-qcp").arg(&rpm));
    assert_eq!(config.trim(), "/etc/muster/agent.toml");
    let scripts = run_ok(Command::new("rpm").arg("-qp").arg("--scripts").arg(&rpm));
    assert!(
        scripts.contains("/usr/lib/muster-agent/postinstall"),
        "{scripts}"
    );

    // The server deb ships the agent binary /install.sh serves.
    let server_deb = only(&out, ".deb", "muster-server_");
    let listing = run_ok(Command::new("dpkg-deb").arg("-c").arg(&server_deb));
    for want in [
        "./usr/bin/muster-server",
        "./lib/systemd/system/muster-server.service",
        &format!(
            "./usr/lib/muster-server/downloads/muster-agent-linux-{}",
            std::env::consts::ARCH
        ),
    ] {
        assert!(listing.contains(want), "{want} not in\n{listing}");
    }

    // The agent deb, installed for real.
    let status = run(Command::new("dpkg").args(["-s", "muster-agent"]));
    assert!(
        !status.status.success(),
        "muster-agent is already installed on this machine: this test would replace and purge it"
    );
    for path in ["/etc/muster", "/var/lib/muster", "/usr/bin/muster-agent"] {
        assert!(
            !Path::new(path).exists(),
            "{path} exists on this machine: this test would purge it"
        );
    }
    let deb = only(&out, ".deb", "muster-agent_");
    let _purge = Purge("muster-agent");
    let installed = run_ok(Command::new("dpkg").arg("-i").arg(&deb));
    assert!(installed.contains("not enrolled"), "{installed}");
    let version = run_ok(Command::new("/usr/bin/muster-agent").arg("--version"));
    assert!(version.starts_with("muster-agent "), "{version}");
    let unit = std::fs::read_to_string("/lib/systemd/system/muster-agent.service").expect("unit");
    assert_eq!(
        unit,
        std::fs::read_to_string(repo().join("packaging/systemd/muster-agent.service"))
            .expect("source unit")
    );
    let conffiles =
        run_ok(Command::new("dpkg-query").args(["-W", "-f=${Conffiles}", "muster-agent"]));
    assert!(conffiles.contains("/etc/muster/agent.toml"), "{conffiles}");
    // The shipped config parses (status reads it) and nothing is enrolled.
    let status = run(Command::new("/usr/bin/muster-agent").args([
        "status",
        "--config",
        "/etc/muster/agent.toml",
    ]));
    assert_eq!(status.status.code(), Some(1), "{status:?}");
    assert!(
        String::from_utf8_lossy(&status.stdout).contains("not enrolled"),
        "{status:?}"
    );
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata("/var/lib/muster")
        .expect("state dir")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700);

    run_ok(Command::new("dpkg").args(["--purge", "muster-agent"]));
    for path in ["/usr/bin/muster-agent", "/etc/muster", "/var/lib/muster"] {
        assert!(!Path::new(path).exists(), "{path} left after purge");
    }
}

#[test]
fn install_sh_writes_the_packaged_unit_with_its_own_binary_path() {
    let script = std::fs::read_to_string(repo().join("packaging/install.sh")).expect("install.sh");
    let start = script.find("<<'EOF_UNIT'\n").expect("unit heredoc") + "<<'EOF_UNIT'\n".len();
    let end = script[start..].find("EOF_UNIT\n").expect("heredoc end") + start;
    let packaged = std::fs::read_to_string(repo().join("packaging/systemd/muster-agent.service"))
        .expect("unit");
    assert_eq!(
        &script[start..end],
        packaged.replace("/usr/bin/muster-agent", "/usr/local/bin/muster-agent")
    );
}

#[cfg_attr(
    not(have_shellcheck),
    ignore = "SKIPPED: needs shellcheck -- apt-get install shellcheck"
)]
#[test]
fn packaging_scripts_are_shellcheck_clean() {
    tools::require(&[&prereqs::SHELLCHECK]);
    let p = repo().join("packaging");
    let mut scripts = vec![
        p.join("build"),
        p.join("cross-toolchain"),
        p.join("install.sh"),
        p.join("common/agent-postinstall"),
    ];
    for pkg in ["muster-agent", "muster-server"] {
        for s in ["postinst", "prerm", "postrm"] {
            scripts.push(p.join("deb").join(pkg).join(s));
        }
    }
    scripts.push(repo().join(".ci/run"));
    for s in &scripts {
        assert!(s.is_file(), "{}", s.display());
    }
    run_ok(Command::new("shellcheck").args(&scripts));
}

#[cfg_attr(
    not(have_systemd_analyze),
    ignore = "SKIPPED: needs systemd-analyze -- apt-get install systemd"
)]
#[test]
fn units_pass_systemd_analyze_verify() {
    tools::require(&[&prereqs::SYSTEMD_ANALYZE]);
    let dir = tempfile::tempdir().expect("temp dir");
    for (unit, bin) in [
        ("muster-agent.service", "/usr/bin/muster-agent"),
        ("muster-server.service", "/usr/bin/muster-server"),
    ] {
        let text = std::fs::read_to_string(repo().join("packaging/systemd").join(unit))
            .expect("unit")
            // verify wants the program to exist.
            .replace(bin, "/bin/true");
        let path = dir.path().join(unit);
        std::fs::write(&path, text).expect("write unit");
        let out = run(Command::new("systemd-analyze").arg("verify").arg(&path));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stderr.trim().is_empty(),
            "{unit}: {stderr}"
        );
    }
}
