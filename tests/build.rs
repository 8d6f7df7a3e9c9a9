//! Checks which of the tests' prerequisites (`src/prereqs.rs`) this machine
//! has and sets `have_<name>` for each one met, so a test that cannot run
//! here is ignored with its reason (`cargo test` prints "ignored, SKIPPED:
//! ..." and counts it in the summary) instead of passing without running.
//! Under `CI=true` every cfg is set: there a missing prerequisite fails.
//!
//! Re-checked when PATH, CI or MUSTER_CROSS_ROOT change, when a PATH
//! directory changes (a package installed), and when the cross toolchain's
//! stamp appears or changes (`packaging/cross-toolchain setup` touches this
//! file when it finishes).

use std::path::{Path, PathBuf};

#[path = "src/prereqs.rs"]
mod prereqs;

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let repo = manifest
        .parent()
        .expect("the tests crate is in the workspace");
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-changed=src/prereqs.rs");
    println!(
        "cargo::rerun-if-changed={}",
        repo.join("packaging/cross-toolchain").display()
    );
    for var in ["PATH", "CI", "MUSTER_CROSS_ROOT"] {
        println!("cargo::rerun-if-env-changed={var}");
    }
    if let Some(path) = std::env::var_os("PATH") {
        // Only directories that exist: a missing one would rerun every build.
        for dir in std::env::split_paths(&path).filter(|d| d.is_dir()) {
            println!("cargo::rerun-if-changed={}", dir.display());
        }
    }
    let stamp = cross_stamp(repo);
    if stamp.is_file() {
        println!("cargo::rerun-if-changed={}", stamp.display());
    }

    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let mut unmet = Vec::new();
    for prereq in prereqs::ALL {
        println!("cargo::rustc-check-cfg=cfg(have_{})", prereq.name);
        let missing = prereq.missing(repo);
        if ci || missing.is_empty() {
            println!("cargo::rustc-cfg=have_{}", prereq.name);
        } else {
            unmet.push(format!(
                "{} (missing {}: {})",
                prereq.name,
                missing.join(", "),
                prereq.fix
            ));
        }
    }
    if !unmet.is_empty() {
        println!(
            "cargo::warning=tests needing these are ignored (SKIPPED) on this machine: {}",
            unmet.join("; ")
        );
    }
}

/// The file `packaging/cross-toolchain setup` writes last.
fn cross_stamp(repo: &Path) -> PathBuf {
    std::env::var_os("MUSTER_CROSS_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo.join("target/cross/trixie"))
        .join(".muster-cross-ready")
}
