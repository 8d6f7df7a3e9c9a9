//! Tests that need system tools (`.ci/run` installs them): a missing tool
//! fails the test in CI (`CI=true`) and skips it, loudly, elsewhere.

use std::path::Path;
use std::process::Command;

/// Whether every tool in `tools` is on PATH (and, with `need_root`, whether
/// this process is root). When not: panics in CI, else prints `SKIPPED` and
/// returns false.
pub fn require(test: &str, tools: &[&str], need_root: bool) -> bool {
    let missing: Vec<&str> = tools.iter().copied().filter(|t| !on_path(t)).collect();
    let mut problems = Vec::new();
    if !missing.is_empty() {
        problems.push(format!("missing tools: {}", missing.join(", ")));
    }
    if need_root && !is_root() {
        problems.push("needs root".to_string());
    }
    if problems.is_empty() {
        return true;
    }
    let message = format!(
        "{test}: {} (.ci/run installs the tools; CI runs as root)",
        problems.join("; ")
    );
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{message}");
    }
    eprintln!("SKIPPED {message}");
    false
}

/// Whether `tool` is an executable file in a PATH directory.
pub fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            let p = dir.join(tool);
            p.is_file() && is_executable(&p)
        })
    })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o111 != 0)
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// `dpkg --print-architecture` (e.g. `amd64`).
pub fn dpkg_arch() -> String {
    crate::run_ok(Command::new("dpkg").arg("--print-architecture"))
        .trim()
        .to_string()
}
