//! The one-liner end to end. A real `muster-server` serves `/install.sh` and
//! the agent binary; the exact line `token create` prints (the pinned curl
//! piped to `sh`, with `--root DIR` added) runs against a temporary root directory, the
//! "host": the agent is downloaded, checked against its published SHA-256,
//! installed, enrolled, Alloy (the stand-in) configured and the first config
//! applied; the host's target file exists. A second run is a no-op, a wrong
//! pin fails before anything is downloaded, `--uninstall` cleans up. Also:
//! the script is `shellcheck` clean and runs (dry run) under dash and busybox.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use muster_e2e::fleet::{edit_settings, FAST_CHECKINS};
use muster_e2e::{bin_path, hermetic, prereqs, run, run_fail, run_ok, tools, Server, Standin};
use serde_json::{json, Value};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../packaging/install.sh");
const ARCH: &str = std::env::consts::ARCH;

/// A loopback port free right now (the server binds it a moment later).
fn free_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

async fn admin_post(server: &Server, path: &str, body: Value) -> Value {
    let resp = server
        .client()
        .post(format!("{}{path}", server.admin_url()))
        .bearer_auth(server.admin_token())
        .json(&body)
        .send()
        .await
        .expect("admin request");
    assert!(resp.status().is_success(), "{}", server.logs());
    resp.json().await.expect("JSON")
}

async fn hosts(server: &Server) -> Vec<Value> {
    let resp = server
        .client()
        .get(format!("{}/v1/admin/hosts", server.admin_url()))
        .bearer_auth(server.admin_token())
        .send()
        .await
        .expect("hosts");
    resp.json::<Vec<Value>>().await.expect("hosts JSON")
}

/// A server on a known loopback port whose public URL is that port, serving
/// the agent binary built beside the tests.
fn start_server(root: &Path) -> Server {
    start_server_with(root, &[])
}

/// [`start_server`] with `edits` to its server.toml.
fn start_server_with(root: &Path, edits: &[(&str, &str)]) -> Server {
    let data = root.join("data");
    let out = Server::init(&data, &[]);
    assert!(out.status.success(), "init: {out:?}");
    edit_settings(&data, edits);
    let downloads = root.join("downloads");
    std::fs::create_dir_all(&downloads).expect("downloads dir");
    std::fs::copy(
        bin_path("muster-agent"),
        downloads.join(format!("muster-agent-linux-{ARCH}")),
    )
    .expect("copy agent");
    let addr = free_port();
    Server::builder(&data)
        .listen(addr)
        .arg("--public-url")
        .arg(format!("https://{addr}"))
        .arg("--downloads-dir")
        .arg(&downloads)
        .start()
}

/// A bare Debian "host" under `root`, with an Alloy stand-in running on its
/// config, and an agent config pre-seeded with where that stand-in is (what
/// a real host has at fixed paths).
fn prepare_host(root: &Path) -> Standin {
    write(
        &root.join("etc/os-release"),
        "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\nVERSION_ID=\"12\"\n",
    );
    write(
        &root.join("etc/machine-id"),
        "5ca1ab1e5ca1ab1e5ca1ab1e5ca1ab1e\n",
    );
    write(
        &root.join("etc/default/alloy"),
        "CONFIG_FILE=\"/etc/alloy/config.alloy\"\nCUSTOM_ARGS=\"\"\nRESTART_ON_UPGRADE=true\n",
    );
    let alloy_config = root.join("etc/alloy/config.alloy");
    write(&alloy_config, "logging {\n\tlevel = \"info\"\n}\n");
    let standin = Standin::start(&alloy_config);
    write(
        &root.join("etc/muster/agent.toml"),
        &format!(
            "state_dir = \"{root}/var/lib/muster\"\nalloy_config = \"{root}/etc/alloy/config.alloy\"\n\
             alloy_bin = \"{bin}\"\nreload_command = [\"kill\", \"-HUP\", \"{pid}\"]\n\
             ready_url = \"{url}/-/ready\"\nscrape_address = \"{addr}\"\nhostname = \"installed-host\"\n\
             machine_id_file = \"{root}/etc/machine-id\"\n",
            root = root.display(),
            bin = Standin::bin().display(),
            pid = standin.pid(),
            url = standin.url(),
            addr = standin.addr(),
        ),
    );
    standin
}

/// The printed one-liner (for root: no sudo, which minimal hosts lack) with
/// `--root` for the temporary host.
fn runnable(line: &str, root: &Path) -> String {
    assert!(line.contains("| sh -s -- --token "), "{line}");
    assert!(!line.contains("sudo"), "{line}");
    format!("{line} --root '{}'", root.display())
}

fn sh(line: &str) -> Command {
    // pipefail so that a failing curl fails the line (plain `sh` would run
    // an empty script and succeed).
    let mut cmd = Command::new("bash");
    cmd.args(["-o", "pipefail", "-c", line])
        .env_remove("https_proxy");
    hermetic(&mut cmd);
    cmd
}

#[cfg_attr(
    not(have_install_sh),
    ignore = "SKIPPED: needs root and curl -- run as root; apt-get install curl"
)]
#[tokio::test]
async fn the_one_liner_installs_enrolls_and_applies_on_a_bare_host() {
    tools::require(&[&prereqs::INSTALL_SH]);
    let dir = tempfile::tempdir().expect("temp dir");
    let server = start_server(dir.path());
    let created = admin_post(
        &server,
        "/v1/admin/tokens",
        json!({"labels": {"env": "install"}}),
    )
    .await;
    let line = created["install_command"]
        .as_str()
        .expect("install_command");
    assert!(
        line.starts_with("curl -fsSk --pinnedpubkey 'sha256//"),
        "{line}"
    );
    let host = dir.path().join("host");
    let standin = prepare_host(&host);
    standin.wait_ready(Duration::from_secs(10)).await;
    let targets = server.data_dir().join("targets");

    // The line, timed until the host's target file exists.
    let start = Instant::now();
    // The host asks for two labels; the token's `env` wins over its own.
    let with_labels = format!("{} --labels role=db,env=ignored", runnable(line, &host));
    let mut child = sh(&with_labels)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run the one-liner");
    let mut to_target = None;
    while to_target.is_none() && start.elapsed() < Duration::from_secs(120) {
        let any = std::fs::read_dir(&targets)
            .map(|d| {
                d.flatten()
                    .any(|e| e.file_name().to_string_lossy().ends_with(".json"))
            })
            .unwrap_or(false);
        if any {
            to_target = Some(start.elapsed());
        } else if child
            .try_wait()
            .expect("wait")
            .is_some_and(|status| !status.success())
        {
            // Failed; a successful line's file may follow its exit (the
            // server writes it just after the enrollment's answer).
            break;
        } else {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    let out = child.wait_with_output().expect("one-liner output");
    let total = start.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let report = format!(
        "--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}\n--- server ---\n{}",
        server.logs()
    );
    assert!(out.status.success(), "{report}");
    let to_target = to_target.unwrap_or_else(|| panic!("no target file\n{report}"));
    println!(
        "one-liner -> target file: {:.0} ms (whole script, with the first apply: {:.0} ms)",
        to_target.as_secs_f64() * 1000.0,
        total.as_secs_f64() * 1000.0
    );

    // Installed, checked, configured.
    let installed = host.join("usr/local/bin/muster-agent");
    assert!(installed.is_file(), "{report}");
    assert!(stdout.contains("sha256 "), "{report}");
    let unit = std::fs::read_to_string(host.join("etc/systemd/system/muster-agent.service"))
        .expect("unit written");
    assert!(
        unit.contains("ExecStart=/usr/local/bin/muster-agent run"),
        "{unit}"
    );
    let env = std::fs::read_to_string(host.join("etc/default/alloy")).expect("env file");
    assert!(
        env.contains(&format!(
            "--server.http.listen-addr=0.0.0.0:{}",
            standin.addr().port()
        )),
        "{env}"
    );
    assert!(env.contains("RESTART_ON_UPGRADE=true"), "{env}");
    let config = std::fs::read_to_string(host.join("etc/muster/agent.toml")).expect("config");
    assert!(config.contains(&server.agent_url()), "{config}");

    // Enrolled, config applied, target file present with the token's labels.
    let all = hosts(&server).await;
    assert_eq!(all.len(), 1, "{all:?}");
    let h = &all[0];
    assert_eq!(h["state"], "config_applied", "{h}\n{report}");
    assert_eq!(h["labels"]["env"], "install");
    assert_eq!(h["labels"]["role"], "db");
    let id = h["id"].as_str().expect("id");
    let target = std::fs::read_to_string(targets.join(format!("{id}.json"))).expect("target");
    assert!(target.contains(&standin.addr().to_string()), "{target}");
    let applied = std::fs::read_to_string(host.join("etc/alloy/config.alloy")).expect("alloy");
    assert!(applied.contains("prometheus.exporter.unix"), "{applied}");

    // Again, with the spent token: nothing new, same host.
    let again = run_ok(&mut sh(&runnable(line, &host)));
    assert!(again.contains("already enrolled"), "{again}");
    assert_eq!(hosts(&server).await.len(), 1);

    // Uninstall removes the agent, its config and state, and names the host.
    let removed = run_ok(&mut sh(&format!(
        "sh '{SCRIPT}' --uninstall --root '{}'",
        host.display()
    )));
    assert!(removed.contains(id), "{removed}");
    assert!(!installed.exists() && !host.join("etc/muster").exists());
    assert!(!host.join("var/lib/muster").exists());
    assert!(
        host.join("etc/alloy/config.alloy").exists(),
        "Alloy's config stays"
    );
}

#[cfg_attr(
    not(have_install_sh),
    ignore = "SKIPPED: needs root and curl -- run as root; apt-get install curl"
)]
#[tokio::test]
async fn a_wrong_pin_fails_before_anything_is_downloaded() {
    tools::require(&[&prereqs::INSTALL_SH]);
    let dir = tempfile::tempdir().expect("temp dir");
    let server = start_server(dir.path());
    let created = admin_post(&server, "/v1/admin/tokens", json!({})).await;
    let line = created["install_command"]
        .as_str()
        .expect("install_command");
    let pin = line
        .split('\'')
        .nth(1)
        .expect("the pin is the first quoted word");
    // A well-formed pin of some other key.
    let wrong = "sha256//AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    assert_ne!(pin, wrong);
    let host = dir.path().join("host");
    std::fs::create_dir_all(&host).expect("host dir");
    let out = run_fail(&mut sh(&runnable(&line.replace(pin, wrong), &host)));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.to_lowercase().contains("pinned"), "{stderr}");
    let left: Vec<PathBuf> = std::fs::read_dir(&host)
        .expect("host dir")
        .map(|e| e.expect("entry").path())
        .collect();
    assert!(left.is_empty(), "something was installed: {left:?}");
    assert!(hosts(&server).await.is_empty());
}

#[cfg_attr(
    not(all(have_shellcheck, have_shells)),
    ignore = "SKIPPED: needs shellcheck, dash and busybox -- apt-get install shellcheck dash busybox"
)]
#[test]
fn the_script_is_shellcheck_clean_and_runs_under_dash_and_busybox() {
    tools::require(&[&prereqs::SHELLCHECK, &prereqs::SHELLS]);
    run_ok(Command::new("shellcheck").args(["-s", "sh", SCRIPT]));
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().join("host");
    write(
        &root.join("etc/os-release"),
        "ID=rocky\nID_LIKE=\"rhel centos fedora\"\n",
    );
    // Alloy is there, so the prerequisite checks never ask the network
    // whether Grafana's repository answers: the same result on any machine.
    let alloy = root.join("usr/bin/alloy");
    write(&alloy, "#!/bin/sh\n");
    std::fs::set_permissions(&alloy, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    for shell in [&["dash"][..], &["busybox", "sh"][..]] {
        let mut cmd = Command::new(shell[0]);
        cmd.args(&shell[1..])
            .arg(SCRIPT)
            .args([
                "--dry-run",
                "--token",
                "mte_x_y",
                "--labels",
                "role=db,team=a b",
            ])
            .arg("--root")
            .arg(&root)
            .args([
                "--server",
                "https://muster.example:8443",
                "--pin",
                "sha256//abc=",
            ]);
        let out = run_ok(&mut cmd);
        for want in [
            "host: rocky (rhel)",
            "would download https://muster.example:8443/v1/download/muster-agent-linux-",
            "would write",
            "install-alloy",
            "--label role=db --label team=a b",
            "check: curl:",
            "check: machine id: none here",
            "check: init system: none found",
            "check: Grafana Alloy: installed",
            "dry run: nothing was changed",
        ] {
            assert!(out.contains(want), "{shell:?}: {want:?} missing in\n{out}");
        }
        assert!(
            !root.join("etc/muster").exists(),
            "{shell:?} wrote files in a dry run"
        );
        // Every failure says what failed and exits non-zero.
        let out = run(Command::new(shell[0])
            .args(&shell[1..])
            .arg(SCRIPT)
            .args(["--bogus"]));
        assert_eq!(out.status.code(), Some(1), "{shell:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("unknown option: --bogus"));
    }
}

#[cfg_attr(
    not(have_shellcheck),
    ignore = "SKIPPED: needs shellcheck -- apt-get install shellcheck"
)]
#[tokio::test]
async fn downloads_are_listed_with_their_hashes_and_unknown_names_are_json_404s() {
    tools::require(&[&prereqs::SHELLCHECK]);
    let dir = tempfile::tempdir().expect("temp dir");
    let server = start_server(dir.path());
    let client = server.client();
    let base = server.agent_url();
    let name = format!("muster-agent-linux-{ARCH}");
    let index = server.download_index().await;
    assert_eq!(index.len(), 1, "{index:?}");
    assert_eq!(index[0]["name"], name.as_str());
    let sum = client
        .get(format!("{base}/v1/download/{name}.sha256"))
        .send()
        .await
        .expect("sha256")
        .text()
        .await
        .expect("text");
    assert_eq!(
        sum,
        format!("{}  {name}\n", index[0]["sha256"].as_str().expect("hash"))
    );
    let resp = client
        .get(format!("{base}/v1/download/muster-agent-linux-vax"))
        .send()
        .await
        .expect("404");
    assert_eq!(resp.status(), 404);
    let body: Value = resp.json().await.expect("error JSON");
    assert_eq!(body["error"]["code"], "not_found");
    assert!(
        body["error"]["message"]
            .as_str()
            .expect("message")
            .contains(&name),
        "{body}"
    );
    let script = client
        .get(format!("{base}/install.sh"))
        .send()
        .await
        .expect("script")
        .text()
        .await
        .expect("text");
    assert!(
        script.contains(&format!("\nMUSTER_SERVER='{base}'\n")),
        "{script}"
    );
    assert!(script.contains("\nMUSTER_PIN='sha256//"), "{script}");
    // The rendered script is as clean as the template.
    let file = dir.path().join("served-install.sh");
    std::fs::write(&file, &script).expect("write script");
    run_ok(Command::new("shellcheck").args(["-s", "sh"]).arg(&file));
}

/// Stops an agent an init script started (its pid file), whatever happens.
struct StopAgent(PathBuf);

impl Drop for StopAgent {
    fn drop(&mut self) {
        if let Some(pid) = std::fs::read_to_string(&self.0)
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok())
        {
            // SAFETY: kill has no memory-safety preconditions; the pid is the
            // agent this test started.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
    }
}

/// OpenRC and SysV hosts (issue 12): the one-liner installs an init script
/// for the agent (with `--root`, the image's init system is given with
/// `--init`, and the command that starts it is printed). The SysV script
/// is run for real, its paths moved under the test's root: `start` runs the
/// agent, which checks in; `status`; `stop` ends it. `--uninstall` removes
/// the script.
#[cfg_attr(
    not(all(have_install_sh, have_shellcheck)),
    ignore = "SKIPPED: needs root, curl and shellcheck -- run as root; apt-get install curl shellcheck"
)]
#[tokio::test]
async fn openrc_and_sysv_hosts_get_an_init_script_that_runs_the_agent() {
    tools::require(&[&prereqs::INSTALL_SH, &prereqs::SHELLCHECK]);
    let dir = tempfile::tempdir().expect("temp dir");
    // Check-ins every second: the started agent shows up at once.
    let server = start_server_with(dir.path(), &[FAST_CHECKINS]);
    let created = admin_post(
        &server,
        "/v1/admin/tokens",
        json!({"labels": {"env": "install"}}),
    )
    .await;
    let line = created["install_command"]
        .as_str()
        .expect("install_command");
    let host = dir.path().join("host");
    let standin = prepare_host(&host);
    standin.wait_ready(Duration::from_secs(10)).await;
    let script = host.join("etc/init.d/muster-agent");

    // OpenRC: a supervised service, and the commands that start it.
    let out = run_ok(&mut sh(&format!("{} --init openrc", runnable(line, &host))));
    assert!(
        out.contains("on the host, start the agent with:")
            && out
                .contains("rc-update add muster-agent default && rc-service muster-agent restart"),
        "{out}"
    );
    let openrc = std::fs::read_to_string(&script).expect("OpenRC script");
    assert!(openrc.starts_with("#!/sbin/openrc-run\n"), "{openrc}");
    for line in [
        "supervisor=supervise-daemon",
        "command=/usr/local/bin/muster-agent",
        "command_args=\"run --config /etc/muster/agent.toml\"",
    ] {
        assert!(openrc.contains(line), "{line}:\n{openrc}");
    }
    run_ok(Command::new("sh").arg("-n").arg(&script));

    // SysV, on the same (already enrolled) host.
    let out = run_ok(&mut sh(&format!("{} --init sysv", runnable(line, &host))));
    assert!(out.contains("already enrolled"), "{out}");
    assert!(
        out.contains("service muster-agent restart"),
        "the start command is printed: {out}"
    );
    let sysv = std::fs::read_to_string(&script).expect("SysV script");
    assert!(sysv.contains("### BEGIN INIT INFO"), "{sysv}");
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&script)
        .expect("mode")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755);
    run_ok(Command::new("shellcheck").arg(&script));

    // Run it, with its paths under the host root.
    let moved: String = sysv
        .lines()
        .map(|l| match l.split_once("=/") {
            Some((name, path)) if name.chars().all(|c| c.is_ascii_uppercase()) => {
                format!("{name}={}/{path}\n", host.display())
            }
            _ => format!("{l}\n"),
        })
        .collect();
    let runnable_script = dir.path().join("muster-agent.init");
    write(&runnable_script, &moved);
    let pidfile = host.join("var/run/muster-agent.pid");
    std::fs::create_dir_all(pidfile.parent().expect("dir")).expect("var/run");
    std::fs::create_dir_all(host.join("var/log")).expect("var/log");
    let init = |action: &str| {
        let mut cmd = Command::new("sh");
        cmd.arg(&runnable_script).arg(action);
        hermetic(&mut cmd);
        cmd
    };
    let _stop = StopAgent(pidfile.clone());
    let before = hosts(&server).await[0]["last_seen"].clone();
    let started = run_ok(&mut init("start"));
    assert!(started.contains("Starting muster-agent"), "{started}");
    let status = run_ok(&mut init("status"));
    assert!(status.contains("muster-agent is running"), "{status}");
    // The agent it started checks in.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let h = hosts(&server).await[0].clone();
        if h["last_seen"] != before && h["state"] == "config_applied" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the agent the init script started never checked in: {h}\n{}",
            std::fs::read_to_string(host.join("var/log/muster-agent.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    run_ok(&mut init("stop"));
    let stopped = run(&mut init("status"));
    assert_eq!(stopped.status.code(), Some(3), "{stopped:?}");
    assert!(!pidfile.exists());

    let removed = run_ok(&mut sh(&format!(
        "sh '{SCRIPT}' --uninstall --root '{}' --init sysv",
        host.display()
    )));
    assert!(removed.contains("removed the agent"), "{removed}");
    assert!(!script.exists(), "{removed}");
}
