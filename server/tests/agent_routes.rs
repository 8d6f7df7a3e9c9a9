//! Agent routes against the real server binary: the client certificate is
//! the only way in, and config, status and renewal work through it.

mod common;

use common::{answer, enrolled, Fixture, TestAgent};
use reqwest::StatusCode;
use serde_json::{json, Value};

#[tokio::test]
async fn config_needs_a_client_certificate_and_answers_304_when_unchanged() {
    let f = Fixture::start();
    let agent = TestAgent::new("routes-host", "m-routes-1");
    let (_, cert, hash) = enrolled(&f, &agent, json!({}), "idem-routes-01").await;
    let url = format!("{}/v1/agent/config", f.server.agent_url());

    for (path, body) in [
        ("/v1/agent/config", None),
        (
            "/v1/agent/status",
            Some(json!({"hash": hash, "result": "applied"})),
        ),
        ("/v1/agent/renew", Some(json!({"csr_pem": agent.csr_pem()}))),
    ] {
        let url = format!("{}{path}", f.server.agent_url());
        let client = f.anonymous_client();
        let req = match body {
            Some(b) => client.post(&url).json(&b),
            None => client.get(&url),
        };
        let (status, answer) = answer(req.send().await.expect("send")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}: {answer}");
        assert_eq!(answer["error"]["code"], "unauthenticated");
    }

    let client = agent.client(&cert, &f.ca_pem);
    let resp = client.get(&url).send().await.expect("config");
    assert_eq!(resp.status(), StatusCode::OK);
    let etag = resp.headers()["etag"].to_str().expect("etag").to_string();
    assert_eq!(etag, format!("\"{hash}\""));
    let (_, config) = answer(resp).await;
    assert_eq!(config["hash"], hash);
    assert_eq!(config["checkin_interval_secs"], 30);

    let resp = client
        .get(&url)
        .header("if-none-match", &etag)
        .send()
        .await
        .expect("conditional config");
    assert_eq!(resp.status(), StatusCode::NOT_MODIFIED);
    assert!(resp.bytes().await.expect("body").is_empty());

    let resp = client
        .get(&url)
        .header("if-none-match", "\"something-else\"")
        .send()
        .await
        .expect("stale conditional config");
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused_at_the_handshake() {
    let f = Fixture::start();
    // A second, unrelated Muster data dir has its own CA.
    let other = tempfile::tempdir().expect("temp dir");
    let out = muster_e2e::Server::init(&other.path().join("data"), &[]);
    assert!(out.status.success());
    let other_server = muster_e2e::Server::start(&other.path().join("data"));
    let other_ca = std::fs::read_to_string(other.path().join("data/ca.crt")).expect("ca");
    let other_fixture_token = {
        let client = common::client(&other_ca, None);
        let admin = std::fs::read_to_string(other.path().join("data/admin.token")).expect("token");
        let resp = client
            .post(format!("{}/v1/admin/tokens", other_server.admin_url()))
            .bearer_auth(admin.trim())
            .json(&json!({}))
            .send()
            .await
            .expect("token");
        answer(resp).await.1["token"]
            .as_str()
            .expect("token")
            .to_string()
    };
    let agent = TestAgent::new("foreign-host", "m-foreign-1");
    let resp = common::client(&other_ca, None)
        .post(format!("{}/v1/enroll", other_server.agent_url()))
        .json(&agent.enroll_body(&other_fixture_token, "idem-foreign-1"))
        .send()
        .await
        .expect("enroll elsewhere");
    let (status, body) = answer(resp).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let foreign_cert = body["certificate_pem"].as_str().expect("cert");

    // Presenting it to our server fails the TLS handshake.
    let result = agent
        .client(foreign_cert, &f.ca_pem)
        .get(format!("{}/v1/agent/config", f.server.agent_url()))
        .send()
        .await;
    assert!(
        result.is_err(),
        "a foreign certificate was accepted: {result:?}"
    );
}

async fn show(f: &Fixture, host_id: &str) -> Value {
    let path = format!("/v1/admin/hosts/{host_id}");
    f.admin(reqwest::Method::GET, &path, None).await.1
}

#[tokio::test]
async fn status_reports_drive_the_host_state() {
    let f = Fixture::start();
    let agent = TestAgent::new("status-host", "m-status-1");
    let (host_id, cert, hash) = enrolled(&f, &agent, json!({}), "idem-routes-01").await;
    let client = agent.client(&cert, &f.ca_pem);
    let url = format!("{}/v1/agent/status", f.server.agent_url());
    // Posts a status report, which is answered 204; the host after it.
    let report = async |body: Value| -> Value {
        let resp = client.post(&url).json(&body).send().await.expect("status");
        assert_eq!(resp.status(), StatusCode::NO_CONTENT, "{body}");
        show(&f, &host_id).await
    };

    let host = report(json!({"hash": hash, "result": "failed", "error": "validate: unknown component \"x\"", "alloy_version": "v1.10.0"})).await;
    assert_eq!(host["state"], "config_failed");
    assert_eq!(host["last_error"], "validate: unknown component \"x\"");
    assert_eq!(host["alloy_version"], "v1.10.0");

    let host = report(json!({"hash": hash, "result": "applied"})).await;
    assert_eq!(host["state"], "config_applied");
    assert_eq!(host["applied_hash"], hash);
    assert_eq!(host["last_error"], Value::Null);

    // Applied through the agent's fallback reload: stored (cleaned like an
    // error text) and shown, until a report without it.
    let host = report(json!({"hash": hash, "result": "applied", "reload_fallback": "connection refused\n\u{1b}[31m"})).await;
    assert_eq!(host["state"], "config_applied");
    assert_eq!(host["reload_fallback"], "connection refused  [31m");
    let host = report(json!({"hash": hash, "result": "applied"})).await;
    assert_eq!(host["reload_fallback"], Value::Null);

    // A malformed report is refused and changes nothing.
    for bad in [
        json!({"hash": "../../x", "result": "applied"}),
        json!({"hash": hash, "result": "exploded"}),
        json!({"hash": hash, "result": "applied", "host_id": "someone-else"}),
    ] {
        let (status, body) = answer(client.post(&url).json(&bad).send().await.expect("send")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
    }
    assert_eq!(show(&f, &host_id).await["state"], "config_applied");
}

#[tokio::test]
async fn renewal_issues_a_working_certificate() {
    let f = Fixture::start();
    let agent = TestAgent::new("renew-host", "m-renew-1");
    let (_, cert, _) = enrolled(&f, &agent, json!({}), "idem-routes-01").await;
    // Renewal opens in the last third of the certificate's validity.
    f.age_certs(70);
    let resp = agent
        .client(&cert, &f.ca_pem)
        .post(format!("{}/v1/agent/renew", f.server.agent_url()))
        .json(&json!({"csr_pem": agent.csr_pem()}))
        .send()
        .await
        .expect("renew");
    let (status, body) = answer(resp).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let renewed = body["certificate_pem"].as_str().expect("cert");
    assert_ne!(renewed, cert);
    let resp = agent
        .client(renewed, &f.ca_pem)
        .get(format!("{}/v1/agent/config", f.server.agent_url()))
        .send()
        .await
        .expect("config with renewed cert");
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn the_admin_api_needs_its_token_and_lives_only_on_the_admin_listener() {
    let f = Fixture::start();
    let client = f.anonymous_client();
    let url = format!("{}/v1/admin/hosts", f.server.admin_url());
    for token in [None, Some("mta_0123456789ab_wrong"), Some("nonsense")] {
        let mut req = client.get(&url);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let (status, body) = answer(req.send().await.expect("send")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{token:?}: {body}");
    }
    let resp = client
        .get(format!("{}/v1/admin/hosts", f.server.agent_url()))
        .bearer_auth(f.admin_token.trim())
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);

    let (status, body) = f
        .admin(
            reqwest::Method::POST,
            "/v1/admin/tokens",
            Some(json!({"labels": {"maintainer": "x\ny"}})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = f
        .admin(
            reqwest::Method::POST,
            "/v1/admin/tokens",
            Some(json!({"labels": {"hostname": "x"}})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = f
        .admin(
            reqwest::Method::POST,
            "/v1/admin/tokens/ffffffffffff/revoke",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
}
