//! Smoke tests of the harness: the real server comes up on two loopback
//! ports; a real Prometheus discovers a hand-written `file_sd` target file and
//! scrapes the Alloy stand-in's exporter path.

use std::net::TcpStream;
use std::time::Duration;

use muster_e2e::{Prometheus, Server, Standin};

#[cfg_attr(
    not(have_prometheus),
    ignore = "SKIPPED: needs prometheus -- apt-get install prometheus"
)]
#[tokio::test]
async fn prometheus_scrapes_the_standin_through_file_sd() {
    let dir = tempfile::tempdir().expect("temp dir");
    let targets = dir.path().join("targets");
    std::fs::create_dir(&targets).expect("targets dir");
    let prometheus = Prometheus::start(&targets, dir.path()).await;

    let config = dir.path().join("config.alloy");
    std::fs::write(&config, "prometheus.exporter.unix \"default\" { }\n").expect("write config");
    let standin = Standin::start(&config);
    standin.wait_ready(Duration::from_secs(10)).await;

    let group = serde_json::json!([{
        "targets": [standin.addr().to_string()],
        "labels": {
            "__metrics_path__": "/api/v0/component/prometheus.exporter.unix.default/metrics",
            "hostname": "smoke",
        },
    }]);
    // Written aside and renamed in, as the server does, so Prometheus never
    // reads half a file.
    let tmp = targets.join(".smoke.json.tmp");
    std::fs::write(&tmp, group.to_string()).expect("write target file");
    std::fs::rename(&tmp, targets.join("smoke.json")).expect("rename target file");

    let up = prometheus
        .wait_for(
            "up{hostname=\"smoke\"}",
            |r| r.len() == 1 && r[0].1 == 1.0,
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(up[0].0["job"], "muster");
    assert_eq!(up[0].0["instance"], standin.addr().to_string());

    let uname = prometheus
        .wait_for(
            "node_uname_info{hostname=\"smoke\"}",
            |r| r.len() == 1,
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(uname[0].0["sysname"], "Linux");
}

#[tokio::test]
async fn server_starts_on_two_loopback_ports() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let init = Server::init(&data, &[]);
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );

    let server = Server::start(&data);
    let (agent, admin) = (server.agent_addr(), server.admin_addr());
    assert!(agent.ip().is_loopback() && admin.ip().is_loopback());
    assert_ne!(agent.port(), admin.port());
    assert_eq!(server.agent_url(), format!("https://{agent}"));
    for addr in [agent, admin] {
        TcpStream::connect(addr).unwrap_or_else(|e| panic!("{addr}: {e}\n{}", server.logs()));
    }

    let hosts = server
        .client()
        .get(format!("{}/v1/admin/hosts", server.admin_url()))
        .bearer_auth(server.admin_token())
        .send()
        .await
        .unwrap_or_else(|e| panic!("admin API: {e}\n{}", server.logs()));
    assert_eq!(hosts.status(), 200, "{}", server.logs());
}
