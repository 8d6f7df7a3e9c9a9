//! The `muster-server` command line: init, serve's refusals, and the admin
//! CLI's tables and JSON against a running server.

mod common;

use std::process::Command;
use std::time::Duration;

use common::Fixture;
use muster_e2e::{bin_path, run, run_fail, run_ok, Process};

fn server_cmd() -> Command {
    Command::new(bin_path("muster-server"))
}

#[test]
fn init_prints_the_pin_and_token_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let out = run_ok(
        server_cmd()
            .args(["init", "--san", "muster.example", "--data-dir"])
            .arg(&data),
    );
    assert!(out.contains("server public-key pin: sha256//"), "{out}");
    let token = std::fs::read_to_string(data.join("admin.token")).expect("admin.token");
    assert!(
        out.contains(token.trim()),
        "the admin token is printed once: {out}"
    );
    assert!(out.contains("https://muster.example:8443"), "{out}");
    let before = std::fs::read(data.join("ca.key")).expect("ca.key");

    let out = run_fail(server_cmd().args(["init", "--data-dir"]).arg(&data));
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("refusing to overwrite"), "{stderr}");
    assert_eq!(std::fs::read(data.join("ca.key")).expect("ca.key"), before);
}

#[test]
fn serve_explains_a_missing_data_dir_and_a_bad_setting() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("nothing-here");
    let out = run_fail(server_cmd().args(["serve", "--data-dir"]).arg(&data));
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("muster-server init") && stderr.contains("--init"),
        "{stderr}"
    );
    assert!(
        !data.exists(),
        "serve without --init must not create anything"
    );

    let data = dir.path().join("data");
    run_ok(server_cmd().args(["init", "--data-dir"]).arg(&data));
    let path = data.join("server.toml");
    let mut text = std::fs::read_to_string(&path).expect("server.toml");
    text.push_str("listen_adress = \"0.0.0.0:1\"\n");
    std::fs::write(&path, text).expect("write");
    let out = run_fail(server_cmd().args(["serve", "--data-dir"]).arg(&data));
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("listen_adress"), "{stderr}");
}

#[test]
fn serve_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    run_ok(server_cmd().args(["init", "--data-dir"]).arg(&data));
    let mut server = Process::spawn(
        server_cmd()
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
            ])
            .arg("--data-dir")
            .arg(&data),
    );
    server.wait_for_line(Duration::from_secs(30), |l| l.ends_with("(admin)"));
    run_ok(Command::new("kill").args(["-TERM", &server.pid().to_string()]));
    let status = server
        .wait_exit(Duration::from_secs(10))
        .unwrap_or_else(|| panic!("no exit after SIGTERM\n{}", server.logs()));
    assert!(status.success(), "{status:?}\n{}", server.logs());
    assert!(
        server.stderr().contains("shutting down"),
        "{}",
        server.logs()
    );
}

#[test]
fn usage_errors_exit_64_and_help_teaches() {
    let out = run_fail(server_cmd().args(["token", "create", "--label", "no-equals-sign"]));
    assert_eq!(out.status.code(), Some(64));
    let help = run_ok(server_cmd().arg("--help"));
    for word in ["init", "serve", "token", "hosts"] {
        assert!(help.contains(word), "{help}");
    }
    let help = run_ok(server_cmd().args(["token", "create", "--help"]));
    assert!(
        help.contains("--label") && help.contains("--ttl") && help.contains("--uses"),
        "{help}"
    );
}

#[tokio::test]
async fn admin_cli_creates_lists_and_revokes_tokens_and_shows_hosts() {
    let f = Fixture::start();
    let data = f.data_dir();
    let admin = |args: &[&str]| {
        let mut cmd = server_cmd();
        cmd.args(args)
            .arg("--data-dir")
            .arg(&data)
            .arg("--admin-url")
            .arg(f.server.admin_url());
        cmd
    };
    let out = run_ok(&mut admin(&[
        "token", "create", "--label", "env=prod", "--ttl", "2h", "--uses", "2",
    ]));
    // init's default public_url (this machine's primary address), whatever
    // the machine.
    let settings = std::fs::read_to_string(data.join("server.toml")).expect("server.toml");
    let public_url = settings
        .lines()
        .find_map(|l| l.strip_prefix("public_url = \""))
        .and_then(|rest| rest.strip_suffix('"'))
        .expect("public_url in server.toml");
    assert!(
        out.contains(&format!(
            "muster-agent enroll --server {public_url} --token mte_"
        )),
        "{out}"
    );
    assert!(out.contains("--pin sha256//"), "{out}");
    assert!(out.contains("labels: env=prod"), "{out}");

    let json = run_ok(&mut admin(&["token", "list", "--json"]));
    let tokens: serde_json::Value = serde_json::from_str(&json).expect("JSON");
    let id = tokens[0]["id"].as_str().expect("id").to_string();
    assert_eq!(tokens[0]["uses_allowed"], 2);
    assert!(
        !json.contains("mte_"),
        "token list must never show secrets: {json}"
    );

    let table = run_ok(&mut admin(&["token", "list"]));
    assert!(table.starts_with("ID"), "{table}");
    assert!(table.contains(&id) && table.contains("active"), "{table}");

    run_ok(&mut admin(&["token", "revoke", &id]));
    assert!(run_ok(&mut admin(&["token", "list"])).contains("revoked"));

    let out = run(&mut admin(&["hosts", "show", "no-such-host"]));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no host"),
        "{out:?}"
    );
    assert!(run_ok(&mut admin(&["hosts", "list"])).starts_with("ID"));

    let out = run(server_cmd()
        .args([
            "hosts",
            "list",
            "--admin-token",
            "mta_0123456789ab_wrong",
            "--data-dir",
        ])
        .arg(&data)
        .arg("--admin-url")
        .arg(f.server.admin_url()));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("admin token"),
        "{out:?}"
    );
}

/// `path` as a copy of `from` (a hard link when the file system allows).
fn place_binary(from: &std::path::Path, path: &std::path::Path) {
    if std::fs::hard_link(from, path).is_err() {
        std::fs::copy(from, path).expect("copy binary");
    }
}

/// Issue 12: a fresh server hands out the agent beside its executable; with
/// none, `token create` warns instead of printing a one-liner that would 404,
/// and an agent built after start-up is found without a restart.
#[test]
fn token_create_warns_without_an_agent_and_finds_one_built_later() {
    let dir = tempfile::tempdir().expect("temp dir");
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).expect("bin dir");
    place_binary(&bin_path("muster-server"), &bin.join("muster-server"));
    let data = dir.path().join("data");
    run_ok(server_cmd().args(["init", "--data-dir"]).arg(&data));
    let server = muster_e2e::Server::builder(&data)
        .program(&bin.join("muster-server"))
        .start();
    let create = || {
        run(server_cmd()
            .args(["token", "create", "--data-dir"])
            .arg(&data)
            .arg("--admin-url")
            .arg(server.admin_url()))
    };
    let out = create();
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stdout.contains("curl"),
        "no one-liner that would fail: {stdout}"
    );
    assert!(stdout.contains("muster-agent enroll --server"), "{stdout}");
    assert!(
        stderr.contains("warning: no install one-liner")
            && stderr.contains("cargo build --release -p muster-agent"),
        "{stderr}"
    );

    place_binary(&bin_path("muster-agent"), &bin.join("muster-agent"));
    let out = create();
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("/install.sh | sh -s -- --token 'mte_"),
        "root's one-liner, no sudo: {stdout}\n{}",
        server.logs()
    );
    assert!(!String::from_utf8_lossy(&out.stderr).contains("warning"));
}

/// Issue 12: an admin command that cannot find the server's data dir says
/// where it looked and how to point it elsewhere, once, and exits 64.
#[test]
fn admin_commands_without_a_data_dir_say_where_they_looked_and_exit_64() {
    let dir = tempfile::tempdir().expect("temp dir");
    let nowhere = dir.path().join("nowhere");
    for (args, env) in [
        (vec!["hosts", "list"], true),
        (vec!["labels", "check", "--data-dir"], false),
    ] {
        let mut cmd = server_cmd();
        cmd.args(&args)
            .env_remove("MUSTER_ADMIN_URL")
            .env_remove("MUSTER_ADMIN_TOKEN")
            .env_remove("MUSTER_ADMIN_CA");
        if env {
            cmd.env("MUSTER_DATA_DIR", &nowhere);
        } else {
            cmd.arg(&nowhere).env_remove("MUSTER_DATA_DIR");
        }
        let out = run_fail(&mut cmd);
        assert_eq!(out.status.code(), Some(64), "{out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.matches("error").count(), 1, "printed once: {stderr}");
        assert!(
            stderr.contains(&nowhere.join("server.toml").display().to_string())
                && stderr.contains("MUSTER_DATA_DIR")
                && stderr.contains("--data-dir"),
            "{stderr}"
        );
    }
}
