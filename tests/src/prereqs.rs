//! What the tests that use this machine's tools need, in one table read
//! twice: by `tests/build.rs`, which sets a `have_<name>` cfg for each
//! prerequisite found here (so a test that cannot run is marked
//! `#[cfg_attr(not(have_<name>), ignore = "SKIPPED: ...")]` and cargo's
//! summary counts it), and by the test itself at its start
//! ([`crate::tools::require`]), which fails with what is missing.
//!
//! Under `CI=true` build.rs sets every cfg: CI installs everything
//! (`.ci/run`), so a missing prerequisite fails its test instead.
//!
//! Plain std only: `build.rs` compiles this file as its own module.

use std::path::Path;

/// One prerequisite: tools on PATH, root, the cross toolchain.
pub struct Prereq {
    /// The cfg build.rs sets when it is met: `have_<name>`.
    pub name: &'static str,
    pub tools: &'static [&'static str],
    pub root: bool,
    /// `packaging/cross-toolchain ready` must succeed.
    pub cross_toolchain: bool,
    /// What makes it met.
    pub fix: &'static str,
}

pub const PROMETHEUS: Prereq = Prereq {
    name: "prometheus",
    tools: &["prometheus"],
    root: false,
    cross_toolchain: false,
    fix: "apt-get install prometheus",
};

pub const PROMTOOL: Prereq = Prereq {
    name: "promtool",
    tools: &["promtool"],
    root: false,
    cross_toolchain: false,
    fix: "apt-get install prometheus",
};

pub const ALERTMANAGER: Prereq = Prereq {
    name: "alertmanager",
    tools: &["amtool", "prometheus-alertmanager"],
    root: false,
    cross_toolchain: false,
    fix: "apt-get install prometheus-alertmanager",
};

pub const CHROMIUM: Prereq = Prereq {
    name: "chromium",
    tools: &["chromium", "chromedriver"],
    root: false,
    cross_toolchain: false,
    fix: "apt-get install chromium chromium-driver",
};

/// A minimal Debian root made with debootstrap, entered in a network
/// namespace, with a signed apt repository inside.
pub const BARE_HOST: Prereq = Prereq {
    name: "bare_host",
    tools: &[
        "debootstrap",
        "ip",
        "unshare",
        "chroot",
        "cp",
        "dpkg",
        "dpkg-deb",
        "dpkg-scanpackages",
        "gpg",
        "gpgconf",
        "sha256sum",
    ],
    root: true,
    cross_toolchain: false,
    fix: "run as root; apt-get install debootstrap iproute2 dpkg-dev gnupg",
};

/// `install-alloy` with real apt into a private root, from a signed repository.
pub const APT_REPO: Prereq = Prereq {
    name: "apt_repo",
    tools: &[
        "apt-get",
        "dpkg",
        "dpkg-deb",
        "dpkg-scanpackages",
        "gpg",
        "gpgconf",
        "sha256sum",
        "curl",
    ],
    root: true,
    cross_toolchain: false,
    fix: "run as root; apt-get install dpkg-dev gnupg curl",
};

/// install.sh run for real (it installs into a private root, as root).
pub const INSTALL_SH: Prereq = Prereq {
    name: "install_sh",
    tools: &["curl", "sh", "bash", "sha256sum"],
    root: true,
    cross_toolchain: false,
    fix: "run as root; apt-get install curl",
};

pub const SHELLCHECK: Prereq = Prereq {
    name: "shellcheck",
    tools: &["shellcheck"],
    root: false,
    cross_toolchain: false,
    fix: "apt-get install shellcheck",
};

/// Other shells install.sh must run under.
pub const SHELLS: Prereq = Prereq {
    name: "shells",
    tools: &["dash", "busybox"],
    root: false,
    cross_toolchain: false,
    fix: "apt-get install dash busybox",
};

/// Building the .deb and .rpm, and installing the .deb on this machine.
pub const PACKAGING: Prereq = Prereq {
    name: "packaging",
    tools: &[
        "dpkg",
        "dpkg-deb",
        "dpkg-query",
        "rpm",
        "rpmbuild",
        "sha256sum",
    ],
    root: true,
    cross_toolchain: false,
    fix: "run as root; apt-get install rpm",
};

pub const SYSTEMD_ANALYZE: Prereq = Prereq {
    name: "systemd_analyze",
    tools: &["systemd-analyze"],
    root: false,
    cross_toolchain: false,
    fix: "apt-get install systemd",
};

/// The aarch64 agent, cross-built in the trixie root, under qemu.
pub const CROSS_AARCH64: Prereq = Prereq {
    name: "cross_aarch64",
    tools: &["qemu-aarch64-static", "file"],
    root: true,
    cross_toolchain: true,
    fix: "run as root; apt-get install qemu-user-static; packaging/cross-toolchain setup",
};

/// The Windows agent, cross-built in the trixie root, under wine.
pub const CROSS_WINDOWS: Prereq = Prereq {
    name: "cross_windows",
    tools: &["wine", "wineserver", "wineboot", "file"],
    root: true,
    cross_toolchain: true,
    fix: "run as root; apt-get install wine wine64 file; packaging/cross-toolchain setup",
};

/// packaging/build --cross-only (the aarch64 .deb and .rpm, the MSI), the
/// MSI read with msitools and installed under wine.
pub const CROSS_PACKAGES: Prereq = Prereq {
    name: "cross_packages",
    tools: &[
        "wine",
        "wineserver",
        "wineboot",
        "wixl",
        "msiinfo",
        "dpkg-deb",
        "rpm",
        "rpmbuild",
        "file",
        "sha256sum",
    ],
    root: true,
    cross_toolchain: true,
    fix: "run as root; apt-get install wine wine64 wixl msitools rpm file; packaging/cross-toolchain setup",
};

/// Every prerequisite, for build.rs.
pub const ALL: &[&Prereq] = &[
    &PROMETHEUS,
    &PROMTOOL,
    &ALERTMANAGER,
    &CHROMIUM,
    &BARE_HOST,
    &APT_REPO,
    &INSTALL_SH,
    &SHELLCHECK,
    &SHELLS,
    &PACKAGING,
    &SYSTEMD_ANALYZE,
    &CROSS_AARCH64,
    &CROSS_WINDOWS,
    &CROSS_PACKAGES,
];

impl Prereq {
    /// What of it this machine lacks (empty: met). `repo` is the
    /// workspace root (for the cross toolchain's script).
    pub fn missing(&self, repo: &Path) -> Vec<String> {
        let mut missing: Vec<String> = self
            .tools
            .iter()
            .filter(|t| !on_path(t))
            .map(|t| t.to_string())
            .collect();
        if self.root && !is_root() {
            missing.push("root".into());
        }
        if self.cross_toolchain && !cross_toolchain_ready(repo) {
            missing.push("the cross toolchain".into());
        }
        missing
    }
}

/// Whether `tool` is an executable file in a PATH directory.
pub fn on_path(tool: &str) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            std::fs::metadata(dir.join(tool))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    })
}

/// Whether this process's effective user is root (from /proc, so that
/// build.rs needs no crate for it).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            == Some("0")
    })
}

fn cross_toolchain_ready(repo: &Path) -> bool {
    std::process::Command::new(repo.join("packaging/cross-toolchain"))
        .arg("ready")
        .status()
        .is_ok_and(|s| s.success())
}
