//! End to end: the real `muster-server` and `muster-agent` binaries, the
//! Alloy stand-in, and a real Prometheus (Debian's `prometheus`), all on
//! loopback. A host enrolls with a token, applies its config, and Prometheus
//! scrapes it with the token's labels; a config Alloy rejects is rolled back.

use std::process::Command;
use std::time::{Duration, Instant};

use muster_e2e::fleet::{admin, init, AlloyHost, FIRST_ALLOY_CONFIG};
use muster_e2e::{bin_path, run_ok, Process, Prometheus, Server};
use serde_json::{json, Value};

const DEADLINE: Duration = Duration::from_secs(60);

/// Polls the admin API until the host with `hostname` is in `state`.
async fn wait_for_state(server: &Server, agent: &Process, state: &str) -> Value {
    let until = Instant::now() + DEADLINE;
    loop {
        let hosts = admin(server, reqwest::Method::GET, "/v1/admin/hosts", None).await;
        if let Some(h) = hosts.as_array().and_then(|a| a.first()) {
            if h["state"] == state {
                return h.clone();
            }
        }
        assert!(
            Instant::now() < until,
            "no host reached {state}: {hosts}\n--- agent ---\n{}\n--- server ---\n{}",
            agent.logs(),
            server.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_host_enrolls_applies_its_config_and_prometheus_scrapes_it() {
    let root = tempfile::tempdir().expect("temp dir");
    let data = root.path().join("data");
    let pin = init(&data);
    let Some(prometheus) = Prometheus::start(&data.join("targets"), root.path()).await else {
        return;
    };
    let server = Server::builder(&data)
        .args(["--prometheus-url", prometheus.url()])
        .start();
    let created = admin(
        &server,
        reqwest::Method::POST,
        "/v1/admin/tokens",
        Some(json!({"labels": {"env": "e2e", "team": "db \"core\" {x}"}})),
    )
    .await;
    let token = created["token"].as_str().expect("token");

    let host = AlloyHost::new(root.path(), "host-a", 1).await;
    let out = run_ok(&mut host.enroll(&server, token, &pin));
    assert!(out.contains("enrolled as "), "{out}");
    let mut agent = host.run_daemon();

    let shown = wait_for_state(&server, &agent, "config_applied").await;
    assert_eq!(shown["applied_hash"], shown["rendered_hash"]);
    let hostname = shown["hostname"].as_str().expect("hostname").to_string();
    let host_id = shown["id"].as_str().expect("id").to_string();
    assert!(data
        .join("targets")
        .join(format!("{host_id}.json"))
        .exists());
    let applied = std::fs::read_to_string(&host.alloy_config).expect("alloy config");
    assert!(
        applied.contains("prometheus.exporter.unix \"default\""),
        "{applied}"
    );

    let up = prometheus
        .wait_for(
            // The unix exporter's group (services this machine happens to
            // run would add groups with a `service` label).
            &format!("up{{hostname=\"{hostname}\",service=\"\"}}"),
            |r| r.len() == 1 && r[0].1 == 1.0,
            DEADLINE,
        )
        .await;
    let labels = &up[0].0;
    assert_eq!(labels["env"], "e2e");
    assert_eq!(labels["team"], "db \"core\" {x}");
    assert_eq!(labels["host_id"], host_id);
    assert_eq!(labels["instance"], host.standin.addr().to_string());

    // The agent's own view agrees.
    let status = run_ok(
        Command::new(bin_path("muster-agent"))
            .args(["status", "--json", "--config"])
            .arg(host.agent_config()),
    );
    let status: Value = serde_json::from_str(&status).expect("status JSON");
    assert_eq!(status["host_id"], host_id);

    // Enrolling the same machine again keeps the same host and file.
    let again = admin(
        &server,
        reqwest::Method::POST,
        "/v1/admin/tokens",
        Some(json!({})),
    )
    .await;
    run_ok(&mut host.enroll(&server, again["token"].as_str().expect("token"), &pin));
    let hosts = admin(&server, reqwest::Method::GET, "/v1/admin/hosts", None).await;
    assert_eq!(hosts.as_array().map(Vec::len), Some(1));
    let files = std::fs::read_dir(data.join("targets"))
        .expect("targets")
        .count();
    assert_eq!(files, 1);

    // SIGTERM stops the agent cleanly.
    let pid = libc::pid_t::try_from(agent.pid()).expect("pid");
    // SAFETY: kill(2) on our own child process.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let exit = agent
        .wait_exit(Duration::from_secs(10))
        .expect("agent exits on SIGTERM");
    assert!(exit.success(), "{exit:?}\n{}", agent.logs());
}

#[tokio::test]
async fn a_config_alloy_rejects_is_rolled_back_and_reported() {
    let root = tempfile::tempdir().expect("temp dir");
    let data = root.path().join("data");
    let pin = init(&data);
    // An operator template that Alloy's syntax accepts but `alloy validate`
    // rejects: a component that does not exist.
    let templates = root.path().join("templates");
    std::fs::create_dir(&templates).expect("templates dir");
    std::fs::write(
        templates.join("linux.alloy.j2"),
        "{{ exporter(\"unix\", \"default\") }} { }\n\nprometheus.exporter.nonexistent \"x\" { }\n",
    )
    .expect("template");
    let server = Server::builder(&data)
        .arg("--templates-dir")
        .arg(&templates)
        .start();
    let created = admin(
        &server,
        reqwest::Method::POST,
        "/v1/admin/tokens",
        Some(json!({})),
    )
    .await;
    let host = AlloyHost::new(root.path(), "host-b", 2).await;
    run_ok(&mut host.enroll(&server, created["token"].as_str().expect("token"), &pin));
    let agent = host.run_daemon();

    let shown = wait_for_state(&server, &agent, "config_failed").await;
    let error = shown["last_error"].as_str().expect("error text");
    assert!(error.contains("nonexistent"), "{error}");
    assert_eq!(shown["applied_hash"], Value::Null);
    // The live file is the previous one, untouched, and no candidate is left.
    assert_eq!(
        std::fs::read_to_string(&host.alloy_config).expect("alloy config"),
        FIRST_ALLOY_CONFIG
    );
    let leftovers: Vec<_> = std::fs::read_dir(&host.dir)
        .expect("host dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("config.alloy.") && n != "config.alloy.muster-prev")
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
