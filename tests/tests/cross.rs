//! The agents for other platforms, cross-built with `packaging/cross-toolchain`
//! (a Debian trixie root under `target/cross/`, which `.ci/run` makes), run
//! for real against the real server on loopback: the aarch64 Linux agent under
//! `qemu-aarch64-static`.
//!
//! The cross builds are cargo builds in the root (no-ops when up to date).
//! Without the toolchain or the emulators these tests fail under `CI=true`
//! and are ignored elsewhere ("SKIPPED: needs ..."; see
//! `muster_e2e::prereqs`).

use std::path::{Path, PathBuf};
use std::process::Command;

use muster_e2e::fleet::{admin, init, AlloyHost};
use muster_e2e::{http_client, prereqs, run_ok, tools, Server};
use serde_json::{json, Value};

const AARCH64: &str = "aarch64-unknown-linux-gnu";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .to_path_buf()
}

fn toolchain() -> Command {
    Command::new(repo().join("packaging/cross-toolchain"))
}

/// Builds `bin` of `package` for the Linux `target` in the dist profile
/// (what packaging/build ships) and returns its path.
fn cross_build(target: &str, package: &str, bin: &str) -> PathBuf {
    run_ok(toolchain().args([
        "build",
        target,
        "--profile",
        "dist",
        "--locked",
        "-p",
        package,
        "--bin",
        bin,
    ]));
    let path = repo()
        .join("target/cross/build")
        .join(target)
        .join("dist")
        .join(bin);
    assert!(path.is_file(), "{} not built", path.display());
    path
}

/// A server on loopback with a fresh data dir, one enrollment token and
/// the server key pin.
async fn server_with_token(root: &Path) -> (Server, String, String) {
    let data = root.join("data");
    let pin = init(&data);
    let server = Server::start(&data);
    let created = admin(
        &server,
        reqwest::Method::POST,
        "/v1/admin/tokens",
        Some(json!({"labels": {"env": "cross"}})),
    )
    .await;
    let token = created["token"].as_str().expect("token").to_string();
    (server, token, pin)
}

/// `method url` over plain HTTP (the stand-in): status and body.
async fn http(method: reqwest::Method, url: String) -> (u16, String) {
    let resp = http_client()
        .request(method, &url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap_or_default())
}

/// The only host the server knows.
async fn only_host(server: &Server) -> Value {
    let hosts = admin(server, reqwest::Method::GET, "/v1/admin/hosts", None).await;
    assert_eq!(hosts.as_array().map(Vec::len), Some(1), "{hosts}");
    hosts[0].clone()
}

#[cfg_attr(
    not(have_cross_aarch64),
    ignore = "SKIPPED: needs root, qemu-user-static and the cross toolchain -- run as root; apt-get install qemu-user-static; packaging/cross-toolchain setup"
)]
#[tokio::test]
async fn the_aarch64_agent_enrolls_and_applies_its_config_under_qemu() {
    tools::require(&[&prereqs::CROSS_AARCH64]);
    let agent_bin = cross_build(AARCH64, "muster-agent", "muster-agent");
    let file = run_ok(Command::new("file").arg(&agent_bin));
    assert!(file.contains("ARM aarch64"), "{file}");
    // The aarch64 C library and loader of the toolchain root.
    let sysroot =
        PathBuf::from(run_ok(toolchain().arg("path")).trim()).join("usr/aarch64-linux-gnu");
    let agent = || {
        let mut cmd = Command::new("qemu-aarch64-static");
        cmd.env("QEMU_LD_PREFIX", &sysroot).arg(&agent_bin);
        cmd
    };
    let version = run_ok(agent().arg("--version"));
    assert_eq!(
        version.trim(),
        format!("muster-agent {}", env!("CARGO_PKG_VERSION"))
    );

    let root = tempfile::tempdir().expect("temp dir");
    let (server, token, pin) = server_with_token(root.path()).await;
    // Alloy is the (x86_64) stand-in: the emulated agent starts it natively
    // to validate, and reloads it over HTTP.
    let host = AlloyHost::new(root.path(), "arm-host", 1).await;
    let out = run_ok(&mut host.enroll_with(agent(), &server, &token, &pin));
    assert!(out.contains("enrolled as "), "{out}");
    run_ok(&mut host.run_once_with(agent()));

    let shown = only_host(&server).await;
    assert_eq!(shown["state"], "config_applied", "{shown}");
    assert_eq!(shown["applied_hash"], shown["rendered_hash"]);
    assert_eq!(shown["facts"]["arch"], "aarch64", "{shown}");
    let host_id = shown["id"].as_str().expect("id");
    let target_file = server
        .data_dir()
        .join("targets")
        .join(format!("{host_id}.json"));
    let targets = std::fs::read_to_string(&target_file).expect("target file");
    assert!(targets.contains("\"env\": \"cross\""), "{targets}");
    let applied = std::fs::read_to_string(&host.alloy_config).expect("alloy config");
    assert!(
        applied.contains("prometheus.exporter.unix \"default\""),
        "{applied}"
    );
    // The reloaded stand-in serves what the agent installed.
    let metrics = http(
        reqwest::Method::GET,
        format!(
            "{}/api/v0/component/prometheus.exporter.unix.default/metrics",
            host.standin.url()
        ),
    )
    .await;
    assert_eq!(metrics.0, 200, "{}", metrics.1);
}
