//! Smoke test of the harness: a real Prometheus discovers a hand-written
//! `file_sd` target file and scrapes the Alloy stand-in's exporter path.

use std::time::Duration;

use muster_e2e::{Prometheus, Standin};

#[tokio::test]
async fn prometheus_scrapes_the_standin_through_file_sd() {
    let dir = tempfile::tempdir().expect("temp dir");
    let targets = dir.path().join("targets");
    std::fs::create_dir(&targets).expect("targets dir");
    let Some(prometheus) = Prometheus::start(&targets, dir.path()).await else {
        return;
    };

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
