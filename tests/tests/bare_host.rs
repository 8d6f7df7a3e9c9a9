//! Issue 12, end to end on a real bare host: a minimal Debian 12 root
//! (`debootstrap --variant=minbase`: no sudo, no systemd, no machine id)
//! entered as the host, in a network namespace whose only link is a veth
//! pair to the server. The server runs as the README says (`serve --init`,
//! here on the veth address), hands out the agent beside its executable, and
//! `token create` prints the one-liner that is pasted as is:
//!
//! 1. Grafana's repository is unreachable and the server has no mirror: the
//!    one-liner stops before changing anything and names `--no-alloy` and
//!    `[alloy_mirror]`.
//! 2. With `[alloy_mirror]` (a signed apt repository inside the host holding
//!    the Alloy stand-in as `alloy`): agent installed, machine id generated,
//!    enrolled, Alloy installed, the host's target file on the server carries
//!    its veth address; no init system, so it ends with exit 0, the command
//!    that starts the agent, and the wait for a running Alloy.
//! 3. `--uninstall`: clean, with the decommission hint.
//! 4. `--no-alloy` with a new token: exit 0 and a clear wait.

use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Output};
use std::time::Instant;

use muster_e2e::bare_host::BareHost;
use muster_e2e::{apt_repo, bin_path, prereqs, run, run_ok, tools, Server};
use serde_json::Value;

fn text(out: &Output) -> String {
    format!(
        "exit: {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `token create` as the README runs it; returns the printed one-liner.
fn one_liner(server: &Server) -> String {
    let out = run_ok(
        Command::new(bin_path("muster-server"))
            .args(["token", "create", "--label", "env=bare"])
            .arg("--admin-url")
            .arg(server.admin_url())
            .env("MUSTER_DATA_DIR", server.data_dir()),
    );
    out.lines()
        .map(str::trim)
        .find(|l| l.starts_with("curl "))
        .unwrap_or_else(|| panic!("no one-liner in\n{out}"))
        .to_string()
}

fn start_server(data: &std::path::Path, addr: SocketAddr) -> Server {
    Server::builder(data)
        .listen(addr)
        .args(["--init", "--public-url", &format!("https://{addr}")])
        .start()
}

async fn hosts(server: &Server) -> Vec<Value> {
    server
        .client()
        .get(format!("{}/v1/admin/hosts", server.admin_url()))
        .bearer_auth(server.admin_token())
        .send()
        .await
        .expect("hosts")
        .json()
        .await
        .expect("hosts JSON")
}

#[cfg_attr(
    not(have_bare_host),
    ignore = "SKIPPED: needs root, debootstrap, iproute2, dpkg-dev, gnupg -- run as root; apt-get install debootstrap iproute2 dpkg-dev gnupg"
)]
#[tokio::test]
async fn the_one_liner_on_a_bare_debian_host() {
    tools::require(&[&prereqs::BARE_HOST]);
    let started = Instant::now();
    let host = BareHost::create();
    println!("bare root ready: {:.1} s", started.elapsed().as_secs_f64());
    for absent in [
        "/usr/bin/sudo",
        "/etc/machine-id",
        "/run/systemd/system",
        "/usr/bin/alloy",
    ] {
        assert!(!host.path(absent).exists(), "{absent} in a bare host");
    }

    // The server on the host end of the veth pair, as the README runs it.
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let addr = {
        let l = TcpListener::bind((host.server_ip, 0)).expect("bind the veth address");
        l.local_addr().expect("addr")
    };
    let server = start_server(&data, addr);
    let cert = std::fs::read_to_string(data.join("server.crt")).expect("server.crt");
    assert!(cert.contains("BEGIN CERTIFICATE"), "{cert}");

    // 1. No route to Grafana, no mirror: stops before changing anything.
    let line = one_liner(&server);
    assert!(!line.contains("sudo"), "{line}");
    assert!(
        line.contains(&format!("https://{addr}/install.sh")),
        "{line}"
    );
    let t = Instant::now();
    let out = run(&mut host.sh(&line));
    let report = text(&out);
    println!(
        "offline Alloy: stopped after {:.1} s",
        t.elapsed().as_secs_f64()
    );
    assert!(!out.status.success(), "{report}");
    for want in ["--no-alloy", "[alloy_mirror]", "nothing was changed"] {
        assert!(report.contains(want), "{want:?} missing:\n{report}");
    }
    for untouched in [
        "/usr/local/bin/muster-agent",
        "/etc/muster",
        "/var/lib/muster",
        "/etc/apt/sources.list.d/grafana.list",
    ] {
        assert!(
            !host.path(untouched).exists(),
            "{untouched} written:\n{report}"
        );
    }
    assert!(hosts(&server).await.is_empty(), "enrolled anyway");

    // 2. A mirror inside the host: the whole install.
    let mirror = host.path("/srv/alloy-mirror");
    apt_repo::build_alloy_repo(&mirror, "alloy");
    drop(server);
    let mut settings = std::fs::read_to_string(data.join("server.toml")).expect("settings");
    settings.push_str(
        "\n[alloy_mirror]\napt = \"file:///srv/alloy-mirror/repo\"\nkey = \"file:///srv/alloy-mirror/alloy.asc\"\n",
    );
    std::fs::write(data.join("server.toml"), settings).expect("settings");
    let server = start_server(&data, addr);
    let line = one_liner(&server);
    let t = Instant::now();
    let out = run(&mut host.sh(&line));
    let report = format!("{}\n--- server ---\n{}", text(&out), server.logs());
    println!(
        "one-liner -> enrolled, Alloy installed: {:.1} s",
        t.elapsed().as_secs_f64()
    );
    assert!(out.status.success(), "{report}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    for want in [
        "init system: none",
        "machine id: none here",
        "installed /usr/local/bin/muster-agent",
        "nohup /usr/local/bin/muster-agent run",
        "it waits for Grafana Alloy",
    ] {
        assert!(stdout.contains(want), "{want:?} missing:\n{report}");
    }
    assert!(
        host.path("/usr/bin/alloy").is_file(),
        "Alloy not installed:\n{report}"
    );
    let id = std::fs::read_to_string(host.path("/var/lib/muster/machine-id"))
        .expect("generated machine id");
    assert_eq!(id.trim().len(), 32, "{id}");
    let config = std::fs::read_to_string(host.path("/etc/muster/agent.toml")).expect("config");
    assert!(
        config.contains("/-/reload"),
        "reload fallback for no init system:\n{config}"
    );
    let all = hosts(&server).await;
    assert_eq!(all.len(), 1, "{all:?}");
    let host_id = all[0]["id"].as_str().expect("id").to_string();
    assert_eq!(all[0]["labels"]["env"], "bare");
    assert!(host_id.starts_with("bare-host-"), "{host_id}");
    let scrape = format!("{}:12345", host.host_ip);
    assert_eq!(all[0]["facts"]["scrape_address"], scrape.as_str());
    let target = server.target_file(&host_id).await;
    assert!(target.contains(&scrape), "{target}");

    // 3. Uninstall: clean, and the hint that finishes it on the server.
    let uninstall = line
        .split(" --token ")
        .next()
        .map(|l| format!("{l} --uninstall"))
        .expect("line");
    let out = run(&mut host.sh(&uninstall));
    let report = text(&out);
    assert!(out.status.success(), "{report}");
    assert!(
        report.contains(&format!("muster-server hosts decommission {host_id}")),
        "{report}"
    );
    for gone in [
        "/usr/local/bin/muster-agent",
        "/etc/muster",
        "/var/lib/muster",
    ] {
        assert!(!host.path(gone).exists(), "{gone} left:\n{report}");
    }

    // 4. --no-alloy: enrolled, exit 0, waiting for Alloy.
    let line = format!("{} --no-alloy", one_liner(&server));
    let out = run(&mut host.sh(&line));
    let report = text(&out);
    assert!(out.status.success(), "{report}");
    assert!(report.contains("--no-alloy"), "{report}");
    assert!(report.contains("it waits for Grafana Alloy"), "{report}");
    assert!(!report.contains("error"), "{report}");
    assert_eq!(hosts(&server).await.len(), 2);
    println!(
        "bare host, all four runs: {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
