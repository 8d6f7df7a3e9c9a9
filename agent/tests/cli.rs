//! The real `muster-agent` binary: help, exit codes and messages for the
//! mistakes an operator makes first. Each test has its own temp dir.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

struct Run {
    args: Vec<String>,
    out: Output,
}

impl Run {
    fn code(&self) -> i32 {
        self.out.status.code().unwrap_or(-1)
    }
    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.out.stdout).into_owned()
    }
    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.out.stderr).into_owned()
    }
    /// Panics showing the command and its output.
    fn expect(&self, code: i32, ok: bool, what: &str) {
        if self.code() != code || !ok {
            panic!(
                "{what}\ncommand: muster-agent {}\nexit: {}\nstdout:\n{}\nstderr:\n{}",
                self.args.join(" "),
                self.code(),
                self.stdout(),
                self.stderr()
            );
        }
    }
}

fn agent(args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_muster-agent"))
        .args(args)
        .env_remove("MUSTER_AGENT_CONFIG")
        .env_remove("MUSTER_ENROLL_TOKEN")
        .env("MUSTER_LOG", "warn")
        .output()
        .expect("the muster-agent binary runs");
    Run {
        args: args.iter().map(|s| s.to_string()).collect(),
        out,
    }
}

fn config_in(dir: &Path) -> PathBuf {
    dir.join("etc/agent.toml")
}

#[test]
fn help_lists_the_commands_and_enroll_flags() {
    let r = agent(&["--help"]);
    let out = r.stdout();
    r.expect(
        0,
        ["enroll", "run", "status", "--config"]
            .iter()
            .all(|w| out.contains(w)),
        "help",
    );
    let r = agent(&["enroll", "--help"]);
    let out = r.stdout();
    let flags = [
        "--server",
        "--token",
        "--pin",
        "--state-dir",
        "--alloy-config",
        "--alloy-bin",
        "--reload-command",
        "--ready-url",
        "--scrape-address",
        "--hostname",
        "--machine-id-file",
    ];
    r.expect(
        0,
        flags.iter().all(|f| out.contains(f)),
        "enroll --help names every flag",
    );
    let r = agent(&["run", "--help"]);
    r.expect(0, r.stdout().contains("--once"), "run --help");
}

#[test]
fn enroll_with_a_malformed_pin_exits_64_and_explains_the_form() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_in(dir.path());
    let r = agent(&[
        "enroll",
        "--server",
        "https://127.0.0.1:1",
        "--token",
        "t",
        "--pin",
        "md5//abc",
        "--config",
        config.to_str().unwrap(),
    ]);
    let err = r.stderr();
    r.expect(
        64,
        err.contains("--pin") && err.contains("sha256//"),
        "malformed pin",
    );
    assert!(!config.exists(), "nothing may be written on a usage error");
}

#[test]
fn enroll_with_a_plain_http_server_exits_64_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_in(dir.path());
    let pin = format!("sha256//{}", "A".repeat(43) + "=");
    let r = agent(&[
        "enroll",
        "--server",
        "http://127.0.0.1:1",
        "--token",
        "t",
        "--pin",
        &pin,
        "--config",
        config.to_str().unwrap(),
    ]);
    let err = r.stderr();
    r.expect(
        64,
        err.contains("server") && err.contains("https://"),
        "http server",
    );
}

#[test]
fn run_with_an_unknown_config_field_exits_64_and_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_in(dir.path());
    std::fs::create_dir_all(config.parent().unwrap()).unwrap();
    std::fs::write(
        &config,
        "server = \"https://muster:8443\"\nreload_comand = [\"true\"]\n",
    )
    .unwrap();
    let r = agent(&["run", "--once", "--config", config.to_str().unwrap()]);
    let err = r.stderr();
    r.expect(
        64,
        err.contains("reload_comand") && err.contains("line 2") && err.contains("agent.toml"),
        "unknown field",
    );
}

#[test]
fn run_without_a_config_or_an_identity_exits_64() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_in(dir.path());
    let r = agent(&["run", "--config", config.to_str().unwrap()]);
    r.expect(
        64,
        r.stderr().contains("cannot read config file"),
        "missing config",
    );

    std::fs::create_dir_all(config.parent().unwrap()).unwrap();
    let state = dir.path().join("state");
    let text = format!(
        "server = \"https://muster:8443\"\nstate_dir = {:?}\n",
        state.display().to_string()
    );
    std::fs::write(&config, text).unwrap();
    let r = agent(&["run", "--once", "--config", config.to_str().unwrap()]);
    r.expect(64, r.stderr().contains("not enrolled"), "not enrolled");
}

#[test]
fn status_before_enrolling_says_not_enrolled() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_in(dir.path());
    let r = agent(&["status", "--config", config.to_str().unwrap()]);
    r.expect(
        1,
        r.stdout().starts_with("not enrolled"),
        "status without a config file",
    );

    std::fs::create_dir_all(config.parent().unwrap()).unwrap();
    let state = dir.path().join("state");
    std::fs::write(
        &config,
        format!("state_dir = {:?}\n", state.display().to_string()),
    )
    .unwrap();
    let r = agent(&["status", "--config", config.to_str().unwrap()]);
    r.expect(
        1,
        r.stdout().contains("not enrolled") && r.stdout().contains("muster-agent enroll"),
        "status",
    );

    let r = agent(&["status", "--json", "--config", config.to_str().unwrap()]);
    let json: serde_json::Value = serde_json::from_str(&r.stdout()).unwrap_or_default();
    r.expect(
        1,
        json["enrolled"] == serde_json::Value::Bool(false),
        "status --json",
    );
}

#[test]
fn an_unknown_flag_is_a_usage_error() {
    let r = agent(&["run", "--onse"]);
    r.expect(64, r.stderr().contains("--onse"), "unknown flag");
}
