//! Tests that need system tools (`.ci/run` installs them). Each such test
//! is marked `#[cfg_attr(not(have_<name>), ignore = "SKIPPED: needs ...")]`
//! (the cfg comes from `tests/build.rs`, see [`crate::prereqs`]) and calls
//! [`require`] first, which fails it with what is missing: it runs only
//! where build.rs found the prerequisite, under `CI=true`, or with
//! `--ignored`.

use std::path::Path;
use std::process::Command;

use crate::prereqs::Prereq;
pub use crate::prereqs::{is_root, on_path};

/// Fails the test, naming what is missing and what installs it, unless
/// this machine meets every one of `prereqs`.
pub fn require(prereqs: &[&Prereq]) {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate is in the workspace");
    let problems: Vec<String> = prereqs
        .iter()
        .filter_map(|p| {
            let missing = p.missing(repo);
            (!missing.is_empty())
                .then(|| format!("{}: missing {} ({})", p.name, missing.join(", "), p.fix))
        })
        .collect();
    assert!(
        problems.is_empty(),
        "this test needs {} (.ci/run installs everything; CI runs as root)",
        problems.join("; ")
    );
}

/// `dpkg --print-architecture` (e.g. `amd64`).
pub fn dpkg_arch() -> String {
    crate::run_ok(Command::new("dpkg").arg("--print-architecture"))
        .trim()
        .to_string()
}
