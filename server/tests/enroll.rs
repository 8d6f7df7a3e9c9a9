//! `POST /v1/enroll` against the real server binary: tokens, idempotency,
//! re-enrollment, and every kind of bad input.

mod common;

use common::{Fixture, TestAgent};
use reqwest::StatusCode;
use serde_json::{json, Value};

fn assert_invalid_token(status: StatusCode, body: &Value) {
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(
        body,
        &json!({"error": {"code": "invalid_token", "message": "invalid enrollment token"}})
    );
}

#[tokio::test]
async fn enroll_creates_host_config_and_target_file() {
    let f = Fixture::start();
    let token = f
        .token(json!({"labels": {"env": "prod", "team": "a\"}b"}}))
        .await;
    let agent = TestAgent::new("web-01.example.com", "m-enroll-1");
    let (status, body) = f.enroll(&agent.enroll_body(&token, "idem-key-0001")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let host_id = body["host_id"].as_str().expect("host id");
    assert!(host_id.starts_with("web-01-"), "{host_id}");
    assert!(body["certificate_pem"]
        .as_str()
        .expect("cert")
        .contains("BEGIN CERTIFICATE"));
    assert!(body["ca_pem"]
        .as_str()
        .expect("ca")
        .contains("BEGIN CERTIFICATE"));
    let config = body["config"]["content"].as_str().expect("config");
    assert!(
        config.contains("prometheus.exporter.unix \"default\""),
        "{config}"
    );
    assert_eq!(body["config"]["hash"].as_str().map(str::len), Some(64));

    let text = f.target_file(host_id).await;
    assert_eq!(f.target_files(), vec![format!("{host_id}.json")]);
    let groups: Value = serde_json::from_str(&text).expect("target file is JSON");
    let labels = &groups[0]["labels"];
    assert_eq!(labels["env"], "prod");
    assert_eq!(labels["team"], "a\"}b");
    assert_eq!(labels["hostname"], "web-01.example.com");
    assert_eq!(labels["host_id"], host_id);
    assert_eq!(
        labels["__metrics_path__"],
        "/api/v0/component/prometheus.exporter.unix.default/metrics"
    );
    assert_eq!(groups[0]["targets"], json!(["127.0.0.1:12345"]));

    let hosts = f.hosts().await;
    assert_eq!(hosts.len(), 1);
    assert_eq!(hosts[0]["state"], "enrolled");
    let audit = f.audit().await;
    assert!(
        audit
            .iter()
            .any(|a| a["action"] == "enroll" && a["outcome"] == "accepted"),
        "{audit:?}"
    );
}

#[tokio::test]
async fn label_values_with_quotes_and_braces_render_escaped() {
    let f = Fixture::start_with(|data| {
        let path = data.join("server.toml");
        let mut text = std::fs::read_to_string(&path).expect("server.toml");
        text.push_str("loki_url = \"http://127.0.0.1:3100\"\n");
        std::fs::write(&path, text).expect("write server.toml");
    });
    let evil = "x\" } loki.write \"evil\" { url = \"${HOME}\\";
    let token = f.token(json!({"labels": {"team": evil}})).await;
    let mut agent = TestAgent::new("db-01", "m-escape-1");
    // The journal pipeline, which carries the labels, is rendered for hosts
    // that report a journal.
    agent.facts.services =
        serde_json::from_value(json!([{"kind": "journal", "path": "/var/log/journal"}]))
            .expect("service facts");
    let (status, body) = f.enroll(&agent.enroll_body(&token, "idem-escape-01")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let config = body["config"]["content"].as_str().expect("config");
    let escaped = r#""team" = "x\" } loki.write \"evil\" { url = \"${HOME}\\""#;
    assert!(config.contains(escaped), "{config}");
    assert_eq!(config.matches("loki.write \"").count(), 1, "{config}");
}

#[tokio::test]
async fn unknown_malformed_exhausted_and_revoked_tokens_get_the_same_401() {
    let f = Fixture::start();
    let a = TestAgent::new("a-host", "m-tokens-a");
    let b = TestAgent::new("b-host", "m-tokens-b");

    // Unknown and malformed.
    for token in [
        "mte_0123456789ab_notarealsecretatall".to_string(),
        "garbage".to_string(),
        String::new(),
    ] {
        let (status, body) = f.enroll(&a.enroll_body(&token, "idem-tokens-01")).await;
        assert_invalid_token(status, &body);
    }
    // A right id with a wrong secret.
    let real = f.token(json!({})).await;
    let wrong_secret = format!("{}x", &real[..real.len() - 1]);
    let (status, body) = f
        .enroll(&a.enroll_body(&wrong_secret, "idem-tokens-02"))
        .await;
    assert_invalid_token(status, &body);

    // Exhausted: one use, spent by `a`, refused for `b`.
    let (status, body) = f.enroll(&a.enroll_body(&real, "idem-tokens-03")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = f.enroll(&b.enroll_body(&real, "idem-tokens-04")).await;
    assert_invalid_token(status, &body);

    // Revoked.
    let revoked = f.token(json!({"uses": 5})).await;
    let id = revoked.split('_').nth(1).expect("id");
    let (status, info) = f
        .admin(
            reqwest::Method::POST,
            &format!("/v1/admin/tokens/{id}/revoke"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{info}");
    assert_eq!(info["state"], "revoked");
    let (status, body) = f.enroll(&b.enroll_body(&revoked, "idem-tokens-05")).await;
    assert_invalid_token(status, &body);

    let hosts = f.hosts().await;
    assert_eq!(hosts.len(), 1, "only `a` enrolled");
    f.target_file(hosts[0]["id"].as_str().expect("id")).await;
    assert_eq!(f.target_files().len(), 1);
    let reasons: Vec<String> = f
        .audit()
        .await
        .iter()
        .filter(|a| a["outcome"] == "refused")
        .map(|a| a["detail"].as_str().unwrap_or_default().to_string())
        .collect();
    for reason in [
        "token malformed",
        "token unknown",
        "token wrong secret",
        "token exhausted",
        "token revoked",
    ] {
        assert!(
            reasons.iter().any(|r| r.starts_with(reason)),
            "{reason} not audited: {reasons:?}"
        );
        // The token id may follow; its secret never does.
        assert!(
            reasons.iter().all(|r| !r.contains("notarealsecret")),
            "a secret reached the audit log: {reasons:?}"
        );
    }
}

#[tokio::test]
async fn expired_tokens_are_refused() {
    let f = Fixture::start();
    let token = f.token(json!({"ttl_secs": 1})).await;
    // The only way to let a token expire is to let time pass.
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let agent = TestAgent::new("late-host", "m-expired-1");
    let (status, body) = f.enroll(&agent.enroll_body(&token, "idem-expired-1")).await;
    assert_invalid_token(status, &body);
    assert!(f.hosts().await.is_empty());
    assert!(f.target_files().is_empty());
}

#[tokio::test]
async fn a_retried_enroll_with_the_same_idempotency_key_returns_the_same_host() {
    let f = Fixture::start();
    let token = f.token(json!({})).await; // one use
    let agent = TestAgent::new("retry-host", "m-retry-1");
    let body = agent.enroll_body(&token, "idem-retry-0001");
    let (s1, first) = f.enroll(&body).await;
    let (s2, second) = f.enroll(&body).await;
    assert_eq!(
        (s1, s2),
        (StatusCode::OK, StatusCode::OK),
        "{first} {second}"
    );
    assert_eq!(first["host_id"], second["host_id"]);
    assert_eq!(f.hosts().await.len(), 1);
    let (_, tokens) = f
        .admin(reqwest::Method::GET, "/v1/admin/tokens", None)
        .await;
    assert_eq!(tokens[0]["uses"], 1, "{tokens}");
}

#[tokio::test]
async fn the_same_machine_enrolling_again_keeps_its_host() {
    let f = Fixture::start();
    let agent = TestAgent::new("again-host", "m-again-1");
    let t1 = f.token(json!({"labels": {"env": "staging"}})).await;
    let t2 = f.token(json!({"labels": {"env": "prod"}})).await;
    let (_, first) = f.enroll(&agent.enroll_body(&t1, "idem-again-01")).await;
    let (status, second) = f.enroll(&agent.enroll_body(&t2, "idem-again-02")).await;
    assert_eq!(status, StatusCode::OK, "{second}");
    assert_eq!(first["host_id"], second["host_id"]);
    assert_eq!(f.hosts().await.len(), 1);
    f.target_file(second["host_id"].as_str().expect("id")).await;
    assert_eq!(f.target_files().len(), 1, "no duplicate target file");
    assert_eq!(f.hosts().await[0]["labels"]["env"], "prod");

    // Another key claiming the same machine-id (a cloned VM) is refused.
    let clone = TestAgent::new("again-host", "m-again-1");
    let t3 = f.token(json!({})).await;
    let (status, body) = f.enroll(&clone.enroll_body(&t3, "idem-again-03")).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(f.hosts().await.len(), 1);
}

#[tokio::test]
async fn a_garbage_csr_is_a_400_and_spends_nothing() {
    let f = Fixture::start();
    let token = f.token(json!({})).await;
    let agent = TestAgent::new("csr-host", "m-csr-1");
    for csr in [
        "not a csr",
        "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
    ] {
        let mut body = agent.enroll_body(&token, "idem-csr-0001");
        body["csr_pem"] = json!(csr);
        let (status, answer) = f.enroll(&body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
        assert_eq!(answer["error"]["code"], "bad_request");
    }
    assert!(f.hosts().await.is_empty());
    assert!(f.target_files().is_empty());
    // The token was not spent: a good CSR still enrolls.
    let (status, body) = f.enroll(&agent.enroll_body(&token, "idem-csr-0002")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn hostile_hostnames_never_reach_a_file_or_a_host() {
    let f = Fixture::start();
    let token = f.token(json!({"uses": 10})).await;
    for (i, hostname) in ["../../etc/x", "web\n01", "web\"01", "a/b", "x'}{"]
        .iter()
        .enumerate()
    {
        let agent = TestAgent::new(hostname, &format!("m-hostile-{i}"));
        let (status, body) = f
            .enroll(&agent.enroll_body(&token, &format!("idem-hostile-{i}")))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{hostname:?}: {body}");
        let message = body["error"]["message"].as_str().expect("message");
        assert!(message.contains("hostname"), "{message}");
    }
    assert!(f.hosts().await.is_empty());
    assert!(f.target_files().is_empty());
    assert!(!f.data_dir().join("etc").exists());
}

#[tokio::test]
async fn malformed_and_oversized_bodies_get_json_errors() {
    let f = Fixture::start();
    let url = format!("{}/v1/enroll", f.server.agent_url());
    let client = f.anonymous_client();

    let resp = client
        .post(&url)
        .header("content-type", "application/json")
        .body("{\"token\": ")
        .send()
        .await
        .expect("send");
    let (status, body) = common::answer(resp).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "bad_request");

    let big = format!("{{\"token\": \"{}\"}}", "x".repeat(70 * 1024));
    let resp = client
        .post(&url)
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .expect("send");
    let (status, body) = common::answer(resp).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(body["error"]["code"], "payload_too_large");

    let resp = client.post(&url).body("{}").send().await.expect("send");
    let (status, body) = common::answer(resp).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{body}");

    let resp = client
        .get(format!("{}/nope", f.server.agent_url()))
        .send()
        .await
        .expect("send");
    let (status, body) = common::answer(resp).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "not_found");
    assert!(f.hosts().await.is_empty());
}
