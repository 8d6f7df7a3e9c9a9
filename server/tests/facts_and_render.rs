//! Against the real `muster-server` binary: an enrolled agent reports new
//! facts (a service installed after enrollment) and its next config and
//! target file carry the service; hostile or identity-changing facts are
//! refused. Also the offline commands `render` and `alloy check`.

mod common;

use std::process::Command;

use common::{answer, enrolled, post, Fixture, TestAgent};
use reqwest::StatusCode;
use serde_json::{json, Value};

fn server_bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_muster-server"))
}

#[tokio::test]
async fn changed_facts_re_render_the_config_and_the_target_file() {
    let f = Fixture::start();
    let agent = TestAgent::new("db-02", "m-facts-1");
    let (host_id, cert, first_hash) = enrolled(
        &f,
        &agent,
        json!({"labels": {"env": "prod"}}),
        "idem-facts-0001",
    )
    .await;
    let client = agent.client(&cert, &f.ca_pem);
    let facts_url = format!("{}/v1/agent/facts", f.server.agent_url());

    // PostgreSQL was installed after enrollment.
    let mut facts = serde_json::to_value(&agent.facts).expect("facts");
    facts["services"] = json!([
        {"kind": "postgres", "port": 5433, "address": "127.0.0.1", "evidence": ["process postgres"]}
    ]);
    let (status, body) = post(&client, &facts_url, &facts).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let new_hash = body["hash"].as_str().expect("hash").to_string();
    assert_ne!(new_hash, first_hash);

    let config_url = format!("{}/v1/agent/config", f.server.agent_url());
    let resp = client
        .get(&config_url)
        .header("if-none-match", format!("\"{first_hash}\""))
        .send()
        .await
        .expect("config");
    let (status, config) = answer(resp).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(config["hash"], new_hash);
    let content = config["content"].as_str().expect("content");
    assert!(
        content.contains("prometheus.exporter.postgres \"default\""),
        "{content}"
    );
    assert!(content.contains("127.0.0.1:5433"), "{content}");

    let target_file = f.targets_dir().join(format!("{host_id}.json"));
    let targets: Value =
        serde_json::from_str(&std::fs::read_to_string(&target_file).expect("target file"))
            .expect("json");
    let services: Vec<&str> = targets
        .as_array()
        .expect("groups")
        .iter()
        .filter_map(|g| g["labels"]["service"].as_str())
        .collect();
    assert_eq!(services, ["postgres"]);

    // The same facts again: same hash.
    let (_, again) = post(&client, &facts_url, &facts).await;
    assert_eq!(again["hash"], new_hash);

    // Untrusted facts are checked: a hostile evidence line, a machine-id change.
    let mut bad = facts.clone();
    bad["services"][0]["evidence"] = json!(["a\nb"]);
    let (status, body) = post(&client, &facts_url, &bad).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let mut moved = facts.clone();
    moved["machine_id"] = json!("fedcba9876543210");
    let (status, body) = post(&client, &facts_url, &moved).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    // Without a client certificate, nothing.
    let (status, _) = post(&f.anonymous_client(), &facts_url, &facts).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let audit = f.audit().await;
    assert!(audit
        .iter()
        .any(|a| a["action"] == "facts" && a["outcome"] == "refused"));

    // `render --host` shows what the host has, read from the data dir.
    let out = server_bin()
        .args(["render", "--json", "--host", &host_id, "--data-dir"])
        .arg(f.data_dir())
        .output()
        .expect("run render");
    assert!(out.status.success(), "{out:?}");
    let shown: Value = serde_json::from_slice(&out.stdout).expect("render JSON");
    assert_eq!(shown["hash"], new_hash);
    assert_eq!(shown["targets"][1]["labels"]["env"], "prod");
}

#[test]
fn render_previews_a_host_from_a_facts_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let facts = dir.path().join("facts.json");
    std::fs::write(
        &facts,
        json!({
            "hostname": "web-5", "machine_id": "abc123", "os": "linux", "arch": "x86_64",
            "os_id": "ubuntu", "os_like": "debian", "scrape_address": "10.1.1.1:12345",
            "agent_version": "0.1.0",
            "services": [{"kind": "nginx", "port": 80, "exporter_port": 9113}]
        })
        .to_string(),
    )
    .expect("facts file");
    let out = server_bin()
        .args(["render", "--label", "env=dev", "--data-dir"])
        .arg(dir.path())
        .arg("--facts")
        .arg(&facts)
        .output()
        .expect("run render");
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("prometheus.exporter.unix \"default\""),
        "{text}"
    );
    assert!(text.contains("\"10.1.1.1:9113\""), "{text}");
    assert!(text.contains("\"env\": \"dev\""), "{text}");

    // Facts the server would refuse are refused here too.
    std::fs::write(&facts, json!({"hostname": "a\"b"}).to_string()).expect("facts");
    let out = server_bin()
        .args(["render", "--data-dir"])
        .arg(dir.path())
        .arg("--facts")
        .arg(&facts)
        .output()
        .expect("run render");
    assert!(!out.status.success());
}

#[test]
fn alloy_check_prints_file_line_col_and_fails_on_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = dir.path().join("good.alloy");
    let bad = dir.path().join("bad.alloy");
    std::fs::write(&good, "prometheus.exporter.unix \"default\" { }\n").expect("write");
    std::fs::write(&bad, "logging {\n\tlevel = info\"\n}\n").expect("write");
    let out = server_bin()
        .args(["alloy", "check"])
        .arg(&good)
        .output()
        .expect("run");
    assert!(out.status.success(), "{out:?}");
    assert!(out.stdout.is_empty());
    let out = server_bin()
        .args(["alloy", "check"])
        .arg(&good)
        .arg(&bad)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let first = stdout.lines().next().expect("a diagnostic");
    assert!(
        first.starts_with(&format!("{}:2:", bad.display())),
        "{stdout}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("syntax error"));
}

#[test]
fn serve_refuses_an_overrides_file_with_a_typo() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let out = server_bin()
        .args(["init", "--data-dir"])
        .arg(&data)
        .output()
        .expect("init");
    assert!(out.status.success(), "{out:?}");
    std::fs::write(
        data.join("overrides.toml"),
        "[[rule]]\nmatch = { env = \"prod\" }\n[rule.services.postgres]\nprot = 5433\n",
    )
    .expect("overrides");
    let mut child = server_bin()
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(&data)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("serve");
    let until = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if std::time::Instant::now() > until {
            let _ = child.kill();
            panic!("serve started despite a bad overrides file");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr)
        .expect("stderr");
    assert_eq!(status.code(), Some(64), "{stderr}");
    assert!(
        stderr.contains("overrides.toml") && stderr.contains("did you mean \"port\""),
        "{stderr}"
    );
}
