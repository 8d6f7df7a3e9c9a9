//! End to end, with detection: the real `muster-server` and `muster-agent`,
//! the Alloy stand-in, a real Prometheus, and stand-in service processes
//! (`fake-service` copied to files named `postgres`, `nginx` and
//! `prometheus-nginx-exporter`, each listening on a loopback port). The
//! agent detects PostgreSQL at enrollment and nginx with its exporter when
//! they start later; its config gains both, and Prometheus scrapes the unix
//! exporter and postgres through Alloy's component paths and nginx's
//! exporter on its own port, each with its `service` label.
//!
//! Detection is hermetic: the agents tests start see only this test
//! process's tree (`muster_e2e::agent_command`). To prove it, `nginx`,
//! `postgres` and `redis-server` processes that belong to the machine (started
//! by a shell that exits, so they are not in the test's tree) listen on
//! their own ports throughout, and the first config still has no nginx and
//! never any redis (issue 12: the suite passes on a machine running them).
//! Likewise the agents' OS facts come from the os-release the test names
//! (`MUSTER_OS_RELEASE`), never the machine's.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use muster_e2e::fleet::{admin, edit_settings, init, new_token, AlloyHost, FAST_CHECKINS};
use muster_e2e::{
    bin_path, os_release_fixture, run_ok, Process, Prometheus, Server, OS_RELEASE_ENV,
};
use serde_json::json;

const DEADLINE: Duration = Duration::from_secs(60);

/// Starts `fake-service` under the name `name` (copied into `dir`, so the
/// kernel's process name is `name`); returns it and its address.
fn fake_service(dir: &Path, name: &str) -> (Process, SocketAddr) {
    let exe = dir.join(name);
    std::fs::copy(bin_path("fake-service"), &exe).expect("copy fake-service");
    let mut p = Process::spawn(&mut Command::new(&exe));
    let line = p.wait_for_line(Duration::from_secs(10), |l| l.starts_with("listening on "));
    let addr = line["listening on ".len()..]
        .trim()
        .parse()
        .expect("address");
    (p, addr)
}

/// A process named `name` that belongs to the machine, not to this test:
/// its shell exits at once, so it is re-parented out of the test's process
/// tree, as a real nginx would be. Killed on drop.
struct MachineProcess(u32);

impl MachineProcess {
    fn start(dir: &Path, name: &str) -> MachineProcess {
        let exe = dir.join(name);
        std::fs::copy(bin_path("fake-service"), &exe).expect("copy fake-service");
        let log = dir.join(format!("{name}.log"));
        let pid = run_ok(Command::new("sh").arg("-c").arg(format!(
            "'{}' >'{}' 2>&1 </dev/null & echo $!",
            exe.display(),
            log.display()
        )));
        let process = MachineProcess(pid.trim().parse().expect("pid"));
        let until = Instant::now() + Duration::from_secs(10);
        while !std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("listening on ")
        {
            assert!(Instant::now() < until, "{name} never listened");
            std::thread::sleep(Duration::from_millis(20));
        }
        process
    }
}

impl Drop for MachineProcess {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.0.to_string()).output();
    }
}

/// Polls until the live Alloy config satisfies `pred` and the server shows
/// the host's rendered config applied; returns the config.
async fn wait_applied(
    server: &Server,
    agent: &Process,
    config: &Path,
    pred: impl Fn(&str) -> bool,
) -> String {
    let until = Instant::now() + DEADLINE;
    loop {
        let live = std::fs::read_to_string(config).unwrap_or_default();
        let hosts = admin(server, reqwest::Method::GET, "/v1/admin/hosts", None).await;
        let applied = hosts.as_array().and_then(|a| a.first()).is_some_and(|h| {
            h["applied_hash"].is_string() && h["applied_hash"] == h["rendered_hash"]
        });
        if applied && pred(&live) {
            return live;
        }
        assert!(
            Instant::now() < until,
            "config never got there:\n{live}\n{hosts:#}\n--- agent ---\n{}\n--- server ---\n{}",
            agent.logs(),
            server.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg_attr(
    not(have_prometheus),
    ignore = "SKIPPED: needs prometheus -- apt-get install prometheus"
)]
#[tokio::test]
async fn detected_postgres_and_nginx_are_configured_and_scraped() {
    let root = tempfile::tempdir().expect("temp dir");
    let data = root.path().join("data");
    let pin = init(&data);
    // Check in every second, so a service started later shows up quickly.
    edit_settings(&data, &[FAST_CHECKINS]);
    let prometheus = Prometheus::start(&data.join("targets"), root.path()).await;
    let server = Server::builder(&data)
        .args(["--prometheus-url", prometheus.url()])
        .start();

    // What the machine runs, outside this test's process tree.
    let machine = root.path().join("machine");
    std::fs::create_dir(&machine).expect("machine dir");
    let _machine: Vec<MachineProcess> = ["nginx", "postgres", "redis-server"]
        .iter()
        .map(|name| MachineProcess::start(&machine, name))
        .collect();

    let services = root.path().join("services");
    std::fs::create_dir(&services).expect("services dir");
    let (_postgres, pg_addr) = fake_service(&services, "postgres");

    // The host: machine id, the Alloy stand-in, the agent.
    let host = AlloyHost::new(root.path(), "host", 1).await;
    let token = new_token(&server, json!({"labels": {"env": "e2e"}})).await;
    run_ok(&mut host.enroll(&server, token["token"].as_str().expect("token"), &pin));
    // Look for services every second too (the default is every 5 minutes).
    host.set_agent_option("detect_interval", "\"1s\"");
    let agent = host.run_daemon();

    // PostgreSQL was there at enrollment: its exporter, at its real port.
    let pg_dsn = format!("postgresql://alloy@{pg_addr}/postgres");
    let live = wait_applied(&server, &agent, &host.alloy_config, |c| c.contains(&pg_dsn)).await;
    assert!(
        live.contains("prometheus.exporter.postgres \"default\""),
        "{live}"
    );
    assert!(
        !live.contains("nginx"),
        "the machine's nginx leaked into detection: {live}"
    );

    // nginx and its exporter start later: found by the next detection,
    // reported as changed facts, the next config has them.
    let (_nginx, _) = fake_service(&services, "nginx");
    let (_exporter, exporter_addr) = fake_service(&services, "prometheus-nginx-exporter");
    let port_line = format!(
        "standalone exporter on this host's port {}",
        exporter_addr.port()
    );
    let live = wait_applied(&server, &agent, &host.alloy_config, |c| {
        c.contains(&port_line)
    })
    .await;
    assert!(live.contains(&pg_dsn), "{live}");

    let shown = admin(&server, reqwest::Method::GET, "/v1/admin/hosts", None).await;
    let host_id = shown[0]["id"].as_str().expect("id").to_string();
    let kinds: Vec<&str> = shown[0]["facts"]["services"]
        .as_array()
        .expect("services in the facts")
        .iter()
        .filter_map(|s| s["kind"].as_str())
        .collect();
    assert!(
        kinds.contains(&"postgres") && kinds.contains(&"nginx"),
        "{kinds:?}"
    );
    assert!(
        !kinds.contains(&"redis"),
        "the machine's redis leaked: {kinds:?}"
    );

    // Prometheus scrapes all three target groups, each with the host's labels.
    let up = prometheus
        .wait_for(
            &format!("up{{host_id=\"{host_id}\"}}"),
            |r| r.len() == 3 && r.iter().all(|s| s.1 == 1.0),
            DEADLINE,
        )
        .await;
    let by_service: BTreeMap<String, (String, String)> = up
        .iter()
        .map(|s| {
            let labels = &s.0;
            (
                labels.get("service").cloned().unwrap_or_default(),
                (
                    labels["instance"].clone(),
                    labels.get("env").cloned().unwrap_or_default(),
                ),
            )
        })
        .collect();
    let alloy = host.standin.addr().to_string();
    assert_eq!(by_service[""], (alloy.clone(), "e2e".into()));
    assert_eq!(by_service["postgres"], (alloy, "e2e".into()));
    assert_eq!(
        by_service["nginx"],
        (format!("127.0.0.1:{}", exporter_addr.port()), "e2e".into())
    );
    let targets = prometheus.targets().await.expect("targets");
    let paths: Vec<String> = targets["activeTargets"]
        .as_array()
        .expect("active targets")
        .iter()
        .filter_map(|t| {
            t["discoveredLabels"]["__metrics_path__"]
                .as_str()
                .map(String::from)
        })
        .collect();
    assert!(
        paths.contains(&"/api/v0/component/prometheus.exporter.postgres.default/metrics".into())
            && paths.contains(&"/metrics".into()),
        "{paths:?}"
    );
}

/// Two agents on this machine, one on the Debian 12 of the fixtures (what
/// every test's agent gets) and one told it runs Rocky 8: each reports the
/// os-release its test gave it, so at least one differs from the machine's
/// whatever the machine runs.
#[tokio::test]
async fn the_agents_os_facts_come_from_the_test_never_the_machine() {
    let root = tempfile::tempdir().expect("temp dir");
    let data = root.path().join("data");
    let pin = init(&data);
    let server = Server::start(&data);
    let token = new_token(&server, json!({"labels": {"env": "e2e"}, "uses": 2})).await;
    let token = token["token"].as_str().expect("token");
    let debian = AlloyHost::new(root.path(), "debian", 1).await;
    run_ok(&mut debian.enroll(&server, token, &pin));
    let rocky = AlloyHost::new(root.path(), "rocky", 2).await;
    run_ok(
        rocky
            .enroll(&server, token, &pin)
            .env(OS_RELEASE_ENV, os_release_fixture("rocky-8")),
    );
    let hosts = admin(&server, reqwest::Method::GET, "/v1/admin/hosts", None).await;
    let mut os: Vec<(String, String)> = hosts
        .as_array()
        .expect("hosts")
        .iter()
        .map(|h| {
            (
                h["facts"]["os_id"].as_str().unwrap_or("?").to_string(),
                h["facts"]["os_version"].as_str().unwrap_or("?").to_string(),
            )
        })
        .collect();
    os.sort();
    assert_eq!(
        os,
        [
            ("debian".to_string(), "12".to_string()),
            ("rocky".to_string(), "8.10".to_string())
        ],
        "{hosts}"
    );
}
