//! A signed apt repository holding the Alloy stand-in as the `alloy`
//! package (`/usr/bin/alloy`, the env file and unit Grafana's deb installs),
//! built with `dpkg-deb`, `dpkg-scanpackages` and a throw-away `gpg` key:
//! what `[alloy_mirror]` points at in the install tests.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The environment file Grafana's deb installs.
pub const ENV_FILE: &str = "## Path:\n## Description: Grafana Alloy settings\n\
    CONFIG_FILE=\"/etc/alloy/config.alloy\"\n\n\
    # User-defined arguments to pass to the run command.\n\
    CUSTOM_ARGS=\"\"\n\n\
    # Restart on system upgrade. Defaults to true.\n\
    RESTART_ON_UPGRADE=true\n";

/// Its unit.
const UNIT: &str = "[Unit]\nDescription=Vendor-agnostic OpenTelemetry Collector distribution with programmable pipelines\n\
    [Service]\nUser=alloy\nEnvironmentFile=/etc/default/alloy\n\
    ExecStart=/usr/bin/alloy run $CUSTOM_ARGS --storage.path=/var/lib/alloy/data $CONFIG_FILE\n\
    ExecReload=/usr/bin/env kill -HUP $MAINPID\nRestart=always\n\
    [Install]\nWantedBy=multi-user.target\n";

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

/// A signed apt repository at `dir/repo` with the stand-in `alloy`, and its
/// key at `dir/<key_name>.asc`.
pub fn build_alloy_repo(dir: &Path, key_name: &str) -> PathBuf {
    let arch = crate::tools::dpkg_arch();
    let pkg = dir.join("pkg");
    std::fs::create_dir_all(pkg.join("usr/bin")).expect("mkdir");
    std::fs::copy(crate::Standin::bin(), pkg.join("usr/bin/alloy")).expect("copy stand-in");
    write(&pkg.join("etc/default/alloy"), ENV_FILE);
    write(
        &pkg.join("etc/alloy/config.alloy"),
        "logging {\n\tlevel = \"info\"\n}\n",
    );
    write(&pkg.join("usr/lib/systemd/system/alloy.service"), UNIT);
    write(
        &pkg.join("DEBIAN/control"),
        &format!(
            "Package: alloy\nVersion: 1.10.0-1\nArchitecture: {arch}\n\
             Maintainer: Muster tests <tests@muster.invalid>\n\
             Description: Grafana Alloy stand-in for Muster's tests (not Alloy)\n"
        ),
    );
    write(
        &pkg.join("DEBIAN/conffiles"),
        "/etc/default/alloy\n/etc/alloy/config.alloy\n",
    );
    let repo = dir.join("repo");
    std::fs::create_dir_all(repo.join("pool")).expect("mkdir");
    crate::run_ok(
        Command::new("dpkg-deb")
            .args(["-Zgzip", "-z1", "--root-owner-group", "--build"])
            .arg(&pkg)
            .arg(repo.join(format!("pool/alloy_1.10.0-1_{arch}.deb"))),
    );
    let packages = crate::run_ok(
        Command::new("dpkg-scanpackages")
            .args(["--multiversion", "pool"])
            .current_dir(&repo),
    );
    let index = format!("main/binary-{arch}/Packages");
    let dists = repo.join("dists/stable");
    write(&dists.join(&index), &packages);
    let sum = crate::run_ok(Command::new("sha256sum").arg(dists.join(&index)));
    let date = crate::run_ok(Command::new("date").arg("-Ru"));
    write(
        &dists.join("Release"),
        &format!(
            "Origin: Muster tests\nLabel: Muster tests\nSuite: stable\nCodename: stable\n\
             Architectures: {arch}\nComponents: main\nDate: {}\nSHA256:\n {} {} {index}\n",
            date.trim(),
            sum.split_whitespace().next().expect("hash"),
            packages.len()
        ),
    );
    // A throw-away signing key in a private GNUPGHOME.
    let home = dir.join("gnupg");
    std::fs::create_dir_all(&home).expect("gnupg dir");
    std::fs::set_permissions(&home, std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .expect("chmod");
    let gpg = |args: &[&str]| {
        let mut cmd = Command::new("gpg");
        cmd.env("GNUPGHOME", &home)
            .args(["--batch", "--quiet"])
            .args(args);
        cmd
    };
    crate::run_ok(&mut gpg(&[
        "--passphrase",
        "",
        "--quick-gen-key",
        "Muster test repo <repo@muster.invalid>",
        "ed25519",
        "sign",
        "never",
    ]));
    let key = crate::run_ok(&mut gpg(&["--armor", "--export"]));
    write(&dir.join(format!("{key_name}.asc")), &key);
    crate::run_ok(
        gpg(&["--yes", "--clearsign", "-o"])
            .arg(dists.join("InRelease"))
            .arg(dists.join("Release")),
    );
    let _ = Command::new("gpgconf")
        .env("GNUPGHOME", &home)
        .args(["--kill", "gpg-agent"])
        .status();
    repo
}
