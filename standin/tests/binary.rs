//! The built `alloy-standin` binary answers as Alloy's CLI does.
//!
//! Being an integration test of this crate, it also makes `cargo test
//! --workspace` build the binary itself (`target/debug/alloy-standin`),
//! which the end-to-end tests in muster-e2e start as Alloy.

use std::process::Command;

#[test]
fn the_binary_prints_alloys_version_line() {
    let out = Command::new(env!("CARGO_BIN_EXE_alloy-standin"))
        .arg("--version")
        .env("ALLOY_STANDIN_VERSION", "v1.8.2")
        .output()
        .expect("run alloy-standin");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim_end(),
        alloy_standin::cli::version_line("v1.8.2")
    );
}
