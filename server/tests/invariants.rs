//! The fleet core's invariants, each tried the way an attacker or a race
//! would, against the real server binary: renewal against decommission and
//! replacement, the replacement token, idempotency replays, reserved label
//! names, agents moving their target, agent error texts, `public_url`, and
//! the database's file modes.

mod common;

use std::process::Command;

use common::{join_all, post, Fixture, TestAgent};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

async fn enroll(f: &Fixture, agent: &TestAgent, token: &str, key: &str) -> (StatusCode, Value) {
    f.enroll(&agent.enroll_body(token, key)).await
}

/// Enrolls a new agent; (agent, host id, cert).
async fn enrolled(f: &Fixture, name: &str) -> (TestAgent, String, String) {
    let agent = TestAgent::new(name, &format!("m-{name}"));
    let token = f.token(json!({})).await;
    let (status, body) = enroll(f, &agent, &token, &format!("idem-{name}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    (
        agent,
        body["host_id"].as_str().expect("id").to_string(),
        body["certificate_pem"].as_str().expect("cert").to_string(),
    )
}

async fn config_status(f: &Fixture, agent: &TestAgent, cert: &str) -> StatusCode {
    agent
        .client(cert, &f.ca_pem)
        .get(format!("{}/v1/agent/config", f.server.agent_url()))
        .send()
        .await
        .map(|r| r.status())
        .unwrap_or(StatusCode::SERVICE_UNAVAILABLE)
}

async fn renew(f: &Fixture, agent: &TestAgent, cert: &str) -> (StatusCode, Value) {
    post(
        &agent.client(cert, &f.ca_pem),
        &format!("{}/v1/agent/renew", f.server.agent_url()),
        &json!({"csr_pem": agent.csr_pem()}),
    )
    .await
}

/// Renews `count` times at once with `cert`, while `during` runs; the
/// certificates the renewals got.
async fn renewals_racing(
    f: &Fixture,
    agent: &TestAgent,
    cert: &str,
    count: usize,
    during: impl std::future::Future<Output = ()>,
) -> Vec<String> {
    let renewals = (0..count).map(|_| renew(f, agent, cert));
    let (answers, ()) = tokio::join!(join_all(renewals), during);
    answers
        .into_iter()
        .filter(|(s, _)| *s == StatusCode::OK)
        .map(|(_, b)| b["certificate_pem"].as_str().expect("cert").to_string())
        .collect()
}

#[tokio::test]
async fn no_certificate_survives_a_decommission_however_many_renewals_race_it() {
    let f = Fixture::start();
    let (agent, id, cert) = enrolled(&f, "race-dec").await;
    f.age_certs(70);
    let decommission = async {
        let (status, body) = f.decommission(&id).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    };
    let renewed = renewals_racing(&f, &agent, &cert, 12, decommission).await;
    // After the decommission returned, nothing of the host passes: neither
    // the old certificate nor any renewal that raced it.
    assert_eq!(
        config_status(&f, &agent, &cert).await,
        StatusCode::FORBIDDEN
    );
    for c in &renewed {
        assert_eq!(
            config_status(&f, &agent, c).await,
            StatusCode::FORBIDDEN,
            "a renewal outlived the decommission"
        );
    }
    let (status, _) = renew(&f, &agent, &cert).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn after_hosts_replace_no_certificate_of_the_old_key_passes() {
    let f = Fixture::start();
    let (old, id, cert) = enrolled(&f, "race-rep").await;
    f.age_certs(70);
    let (status, armed) = f
        .admin(Method::POST, &format!("/v1/admin/hosts/{id}/replace"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{armed}");
    let replacement = armed["token"].as_str().expect("token").to_string();
    let new = TestAgent::new("race-rep", "m-race-rep");
    let takeover = async {
        let (status, body) = enroll(&f, &new, &replacement, "idem-race-rep-new").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["host_id"], id.as_str());
    };
    let renewed = renewals_racing(&f, &old, &cert, 12, takeover).await;
    assert_eq!(config_status(&f, &old, &cert).await, StatusCode::FORBIDDEN);
    for c in &renewed {
        assert_eq!(
            config_status(&f, &old, c).await,
            StatusCode::FORBIDDEN,
            "a renewal of the old key outlived the takeover"
        );
    }
    // The old key cannot move the host either.
    let mut facts = old.facts.clone();
    facts.hostname = "evil".into();
    for c in std::iter::once(&cert).chain(&renewed) {
        let (status, _) = post(
            &old.client(c, &f.ca_pem),
            &format!("{}/v1/agent/facts", f.server.agent_url()),
            &json!(facts),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
    }
    let (_, shown) = f
        .admin(Method::GET, &format!("/v1/admin/hosts/{id}"), None)
        .await;
    assert_eq!(shown["hostname"], "race-rep");
}

#[tokio::test]
async fn renewal_needs_the_window_the_same_key_and_revokes_what_it_replaces() {
    let f = Fixture::start();
    let (agent, _id, cert) = enrolled(&f, "renew-rules").await;
    let (status, body) = renew(&f, &agent, &cert).await;
    assert_eq!(status, StatusCode::CONFLICT, "too early: {body}");
    assert!(body["error"]["message"]
        .as_str()
        .expect("message")
        .contains("last third"));
    f.age_certs(70);

    // Another key cannot renew into this host.
    let other = TestAgent::new("renew-rules", "m-renew-rules");
    let (status, body) = post(
        &agent.client(&cert, &f.ca_pem),
        &format!("{}/v1/agent/renew", f.server.agent_url()),
        &json!({"csr_pem": other.csr_pem()}),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");

    // Two renewals: the second revokes the first, unused one; the old
    // certificate works until the new one is used.
    let (status, first) = renew(&f, &agent, &cert).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let first = first["certificate_pem"].as_str().expect("cert").to_string();
    let (status, second) = renew(&f, &agent, &cert).await;
    assert_eq!(status, StatusCode::OK, "{second}");
    let second = second["certificate_pem"]
        .as_str()
        .expect("cert")
        .to_string();
    assert_eq!(
        config_status(&f, &agent, &first).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(config_status(&f, &agent, &cert).await, StatusCode::OK);
    assert_eq!(config_status(&f, &agent, &second).await, StatusCode::OK);
    assert_eq!(
        config_status(&f, &agent, &cert).await,
        StatusCode::FORBIDDEN
    );
    let audit = f.audit().await;
    assert!(audit.iter().any(|a| a["action"] == "cert.revoke"));
}

#[tokio::test]
async fn only_the_replacement_token_takes_a_host_over_once() {
    let f = Fixture::start();
    let (_victim, id, _) = enrolled(&f, "victim").await;
    let (status, armed) = f
        .admin(Method::POST, &format!("/v1/admin/hosts/{id}/replace"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{armed}");
    let replacement = armed["token"].as_str().expect("token").to_string();

    // An unrelated token holder with the victim's machine-id (no secret).
    let attacker = TestAgent::new("victim", "m-victim");
    let other = f.token(json!({"labels": {"team": "evil"}})).await;
    let (status, body) = enroll(&f, &attacker, &other, "idem-attack-1").await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    // The replacement token on another machine.
    let stranger = TestAgent::new("stranger", "m-stranger");
    let (status, body) = enroll(&f, &stranger, &replacement, "idem-attack-2").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");

    // The real reinstall.
    let reinstall = TestAgent::new("victim", "m-victim");
    let (status, body) = enroll(&f, &reinstall, &replacement, "idem-reinstall").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["host_id"], id.as_str());
    let (_, shown) = f
        .admin(Method::GET, &format!("/v1/admin/hosts/{id}"), None)
        .await;
    assert!(shown["labels"].get("team").is_none(), "{shown}");
    // Spent: a second takeover with it fails.
    let again = TestAgent::new("victim", "m-victim");
    let (status, body) = enroll(&f, &again, &replacement, "idem-reinstall-2").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
}

#[tokio::test]
async fn an_idempotency_replay_from_another_machine_or_key_is_refused() {
    let f = Fixture::start();
    let token = f.token(json!({"uses": 5})).await;
    let agent = TestAgent::new("replayed", "m-replayed");
    let (status, first) = enroll(&f, &agent, &token, "idem-replay-1").await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let id = first["host_id"].as_str().expect("id").to_string();

    // The same machine and key: the same host.
    let (status, again) = enroll(&f, &agent, &token, "idem-replay-1").await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["host_id"], id.as_str());

    // Same token and key, another machine and key.
    let thief = TestAgent::new("thief", "m-thief");
    let (status, body) = enroll(&f, &thief, &token, "idem-replay-1").await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    // Same machine-id, another key.
    let rekey = TestAgent::new("replayed", "m-replayed");
    let (status, body) = enroll(&f, &rekey, &token, "idem-replay-1").await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");

    let hosts = f.hosts().await;
    assert_eq!(hosts.len(), 1, "{hosts:?}");
    assert_eq!(hosts[0]["hostname"], "replayed");
    assert_eq!(hosts[0]["facts"]["machine_id"], "m-replayed");
    let refused = f
        .audit()
        .await
        .into_iter()
        .filter(|a| a["action"] == "enroll" && a["outcome"] == "refused")
        .count();
    assert_eq!(refused, 2);
}

#[tokio::test]
async fn reserved_label_names_are_refused_everywhere() {
    let f = Fixture::start();
    for name in [
        "job", "instance", "service", "host_id", "hostname", "os", "arch", "__meta",
    ] {
        let (status, body) = f
            .admin(
                Method::POST,
                "/v1/admin/tokens",
                Some(json!({"labels": {name: "x"}})),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "token {name}: {body}");
    }
    let (agent, id, _) = enrolled(&f, "reserved").await;
    for name in ["job", "instance", "service", "__meta"] {
        let (status, body) = f
            .admin(
                Method::POST,
                &format!("/v1/admin/hosts/{id}/labels"),
                Some(json!({"set": {name: "x"}})),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "edit {name}: {body}");
        let token = f.token(json!({})).await;
        let mut req = agent.enroll_body(&token, &format!("idem-reserved-{}", name.len()));
        req["labels"] = json!({name: "x"});
        let (status, body) = f.enroll(&req).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "requested {name}: {body}");
        let (status, body) = f
            .admin(
                Method::POST,
                "/v1/admin/batches",
                Some(json!({"content": format!("hostname,{name}\nb-01,x\n"), "format": "csv"})),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "batch {name}: {body}");
    }
}

#[tokio::test]
async fn an_agent_cannot_move_its_target_to_another_host() {
    let f = Fixture::start();
    let (agent, id, cert) = enrolled(&f, "mover").await;
    let url = format!("{}/v1/agent/facts", f.server.agent_url());
    let mut facts = agent.facts.clone();
    facts.scrape_address = "10.9.9.9:9100".into();
    let (status, body) = post(&agent.client(&cert, &f.ca_pem), &url, &json!(facts)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .expect("message")
        .contains("agents_may_move_targets"));
    // Another port on the address it connects from is its own business.
    facts.scrape_address = "127.0.0.1:9999".into();
    let (status, body) = post(&agent.client(&cert, &f.ca_pem), &url, &json!(facts)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let targets =
        std::fs::read_to_string(f.targets_dir().join(format!("{id}.json"))).expect("file");
    assert!(targets.contains("127.0.0.1:9999"), "{targets}");
    assert!(!targets.contains("10.9.9.9"), "{targets}");
    let audit = f.audit().await;
    assert!(audit
        .iter()
        .any(|a| a["action"] == "facts" && a["outcome"] == "refused"));
    assert!(audit
        .iter()
        .any(|a| a["action"] == "facts.scrape_address" && a["outcome"] == "accepted"));
}

#[tokio::test]
async fn an_operator_may_let_agents_behind_nat_move_their_target() {
    let f = Fixture::start_with(|data| {
        let path = data.join("server.toml");
        let mut toml = std::fs::read_to_string(&path).expect("server.toml");
        toml.push_str("agents_may_move_targets = true\n");
        std::fs::write(&path, toml).expect("write");
    });
    let (agent, _, cert) = enrolled(&f, "natted").await;
    let mut facts = agent.facts.clone();
    facts.scrape_address = "10.9.9.9:9100".into();
    let (status, body) = post(
        &agent.client(&cert, &f.ca_pem),
        &format!("{}/v1/agent/facts", f.server.agent_url()),
        &json!(facts),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let audit = f.audit().await;
    let moved = audit
        .iter()
        .find(|a| a["action"] == "facts.scrape_address")
        .expect("audited");
    assert!(moved["detail"]
        .as_str()
        .expect("detail")
        .contains("10.9.9.9:9100"));
}

#[tokio::test]
async fn agent_error_texts_are_stored_without_control_characters() {
    let f = Fixture::start();
    let (agent, id, cert) = enrolled(&f, "noisy").await;
    let (status, body) = post(
        &agent.client(&cert, &f.ca_pem),
        &format!("{}/v1/agent/status", f.server.agent_url()),
        &json!({"hash": "a".repeat(64), "result": "failed",
                "error": "line 1\nline 2\u{1b}[2J\u{7}\r"}),
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (_, shown) = f
        .admin(Method::GET, &format!("/v1/admin/hosts/{id}"), None)
        .await;
    let error = shown["last_error"].as_str().expect("error kept");
    assert!(error.starts_with("line 1 line 2"), "{error:?}");
    assert!(!error.chars().any(char::is_control), "{error:?}");
}

#[test]
fn serve_refuses_a_public_url_that_is_not_a_plain_https_origin() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    assert!(muster_e2e::Server::init(&data, &[]).status.success());
    for bad in [
        "https://x:8443/$(id)",
        "https://x:8443'; id #",
        "http://x:8443",
    ] {
        let out = Command::new(muster_e2e::bin_path("muster-server"))
            .args(["serve", "--data-dir"])
            .arg(&data)
            .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .args(["--public-url", bad])
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(64), "{bad}: {out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("public_url"), "{bad}: {stderr}");
    }
}

#[tokio::test]
async fn the_database_files_are_readable_by_the_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let f = Fixture::start();
    let _ = enrolled(&f, "modes").await;
    for name in ["muster.db", "muster.db-wal", "muster.db-shm"] {
        let path = f.data_dir().join(name);
        let mode = std::fs::metadata(&path).expect(name).permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{name}: {mode:o}");
    }
}
