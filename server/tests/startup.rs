//! Start-up re-renders the stored configs only when what they are made of
//! changed (templates, overrides, render settings: their hash is kept in
//! the database), so a restart over a large fleet renders nothing; the
//! poll index starts from the re-rendered hashes.

mod common;

use common::TestAgent;
use muster_e2e::fleet::admin;
use muster_e2e::Server;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const RENDERED: &str = "render inputs changed: re-rendered configs";

async fn rendered_hash(server: &Server, id: &str) -> String {
    let host: Value = admin(server, Method::GET, &format!("/v1/admin/hosts/{id}"), None).await;
    host["rendered_hash"].as_str().expect("hash").to_string()
}

/// The status of a config poll carrying `hash` as its `If-None-Match`.
async fn poll(server: &Server, agent: &TestAgent, enrolled: &Value, hash: &str) -> StatusCode {
    agent
        .client(
            enrolled["certificate_pem"].as_str().expect("certificate"),
            enrolled["ca_pem"].as_str().expect("ca"),
        )
        .get(format!("{}/v1/agent/config", server.agent_url()))
        .header("if-none-match", format!("\"{hash}\""))
        .send()
        .await
        .expect("poll")
        .status()
}

/// Whether the server logged a line matching `pred` (its stderr is read
/// on a thread of its own: a line may arrive a little after "listening").
async fn logged(server: &Server, pred: impl Fn(&str) -> bool) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        if server.logs().lines().any(&pred) {
            return true;
        }
        if std::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_restart_re_renders_only_after_the_templates_changed() {
    muster_e2e::install_crypto();
    let root = tempfile::tempdir().expect("temp dir");
    let data = root.path().join("data");
    let templates = root.path().join("templates");
    std::fs::create_dir_all(&templates).expect("templates dir");
    let template = templates.join("linux.alloy.j2");
    std::fs::write(
        &template,
        "{{ exporter(\"unix\", \"default\") }} {\n}\n// one\n",
    )
    .expect("template");
    let out = Server::init(&data, &[]);
    assert!(out.status.success(), "init: {out:?}");
    muster_e2e::fleet::append_settings(
        &data,
        &format!(
            "templates_dir = {}\n",
            Value::from(templates.display().to_string())
        ),
    );

    // A new data dir has no stored inputs: the first start renders (no host).
    let server = Server::start(&data);
    assert!(
        logged(&server, |l| l.contains(RENDERED)).await,
        "{}",
        server.logs()
    );
    let created = admin(&server, Method::POST, "/v1/admin/tokens", Some(json!({}))).await;
    let agent = TestAgent::new("web-01", "m-startup");
    let (status, body) = common::post(
        &server.client(),
        &format!("{}/v1/enroll", server.agent_url()),
        &agent.enroll_body(created["token"].as_str().expect("token"), "idem-startup"),
    )
    .await;
    assert!(status.is_success(), "{body}");
    let id = body["host_id"].as_str().expect("id").to_string();
    let first = rendered_hash(&server, &id).await;
    drop(server);

    // Same inputs: nothing re-rendered.
    let server = Server::start(&data);
    assert_eq!(rendered_hash(&server, &id).await, first);
    assert!(!server.logs().contains(RENDERED), "{}", server.logs());
    drop(server);

    // A template changed: every host re-rendered, once.
    std::fs::write(
        &template,
        "{{ exporter(\"unix\", \"default\") }} {\n}\n// two\n",
    )
    .expect("template");
    let server = Server::start(&data);
    assert!(
        logged(&server, |l| l.contains(RENDERED)
            && l.contains("hosts=1")
            && l.contains("changed=1"))
        .await,
        "{}",
        server.logs()
    );
    let second = rendered_hash(&server, &id).await;
    assert_ne!(second, first);
    // The poll index answers from the new hash, not the one it had before.
    assert_eq!(poll(&server, &agent, &body, &first).await, StatusCode::OK);
    assert_eq!(
        poll(&server, &agent, &body, &second).await,
        StatusCode::NOT_MODIFIED
    );
    drop(server);
    let server = Server::start(&data);
    assert_eq!(rendered_hash(&server, &id).await, second);
    assert!(!server.logs().contains(RENDERED), "{}", server.logs());
}

#[tokio::test]
async fn the_start_up_pass_repairs_target_files_in_the_background() {
    muster_e2e::install_crypto();
    let root = tempfile::tempdir().expect("temp dir");
    let data = root.path().join("data");
    let out = Server::init(&data, &[]);
    assert!(out.status.success(), "init: {out:?}");
    let server = Server::start(&data);
    let mut ids = Vec::new();
    for name in ["kept-01", "gone-01"] {
        let created = admin(&server, Method::POST, "/v1/admin/tokens", Some(json!({}))).await;
        let token = created["token"].as_str().expect("token").to_string();
        let agent = TestAgent::new(name, &format!("m-{name}"));
        let (status, body) = common::post(
            &server.client(),
            &format!("{}/v1/enroll", server.agent_url()),
            &agent.enroll_body(&token, &format!("idem-{name}")),
        )
        .await;
        assert!(status.is_success(), "{body}");
        ids.push(body["host_id"].as_str().expect("id").to_string());
    }
    let (kept, gone) = (&ids[0], &ids[1]);
    let targets = data.join("targets");
    let kept_file = targets.join(format!("{kept}.json"));
    let gone_file = targets.join(format!("{gone}.json"));
    let want = server.written(&kept_file).await;
    admin(
        &server,
        Method::POST,
        &format!("/v1/admin/hosts/{gone}/decommission"),
        None,
    )
    .await;
    drop(server);

    // Behind the stopped server's back: one file deleted, a decommissioned
    // host's file live again.
    std::fs::remove_file(&kept_file).expect("remove");
    std::fs::write(&gone_file, "[]").expect("live again");
    let server = Server::start(&data);
    assert_eq!(server.written(&kept_file).await, want);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while gone_file.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "never retired\n{}",
            server.logs()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
