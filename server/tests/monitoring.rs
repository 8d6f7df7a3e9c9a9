//! The routes that watch Muster, against the real binary: `/metrics` with and
//! without `[metrics] token_required`, targets-reader tokens from the CLI,
//! and that a reader token opens nothing but `/v1/sd/targets` and `/metrics`.
//! Issue 11.

mod common;

use std::path::Path;
use std::process::Command;

use common::Fixture;
use muster_e2e::{bin_path, run_ok};
use reqwest::{Method, StatusCode};

/// `muster-server token create-reader` against the fixture's server: prints
/// the token and nothing else.
fn create_reader(f: &Fixture) -> String {
    let out = run_ok(
        Command::new(bin_path("muster-server"))
            .args(["token", "create-reader", "--name", "prom-1", "--data-dir"])
            .arg(f.data_dir())
            .args(["--admin-url", &f.server.admin_url()]),
    );
    let token = out.trim().to_string();
    assert_eq!(out, format!("{token}\n"), "only the token is printed");
    assert!(token.starts_with("mtr_"), "{out}");
    token
}

async fn get(f: &Fixture, path: &str, bearer: Option<&str>) -> (StatusCode, String) {
    let mut req = f
        .anonymous_client()
        .get(format!("{}{path}", f.server.admin_url()));
    if let Some(b) = bearer {
        req = req.bearer_auth(b);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status();
    (status, resp.text().await.expect("body"))
}

#[tokio::test]
async fn metrics_are_open_by_default_and_a_reader_token_reads_only_targets() {
    let f = Fixture::start();
    let (status, text) = get(&f, "/metrics", None).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert!(
        text.contains("muster_hosts{state=\"enrolled\"} 0\n"),
        "{text}"
    );
    assert!(
        text.contains("muster_tokens_active{kind=\"reader\"} 0\n"),
        "{text}"
    );

    let token = create_reader(&f);
    let (status, body) = get(&f, "/v1/sd/targets", Some(&token)).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "[]"));
    let (_, text) = get(&f, "/metrics", None).await;
    assert!(
        text.contains("muster_tokens_active{kind=\"reader\"} 1\n"),
        "{text}"
    );
    // Nothing of the admin API, reading or writing.
    let (status, _) = get(&f, "/v1/admin/tokens", Some(&token)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let resp = f
        .anonymous_client()
        .post(format!("{}/v1/admin/reader-tokens", f.server.admin_url()))
        .bearer_auth(&token)
        .json(&serde_json::json!({"name": "more"}))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    // The same secret under the admin prefix is no admin token either.
    let as_admin = token.replacen("mtr_", "mta_", 1);
    let (status, _) = get(&f, "/v1/admin/hosts", Some(&as_admin)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // An admin token reads targets too.
    let (status, _) = get(&f, "/v1/sd/targets", Some(f.admin_token.trim())).await;
    assert_eq!(status, StatusCode::OK);

    let audit = f.audit().await;
    assert!(
        audit.iter().any(|e| e["action"] == "reader_token.create"
            && e["detail"] == "prom-1"
            && e["outcome"] == "ok"),
        "{audit:?}"
    );
    let (status, body) = f
        .admin(
            Method::POST,
            "/v1/admin/reader-tokens",
            Some(serde_json::json!({"name": ""})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    // Listed without its secret, revoked from the CLI: it reads nothing more.
    let cli = |args: &[&str]| {
        run_ok(
            Command::new(bin_path("muster-server"))
                .args(args)
                .arg("--data-dir")
                .arg(f.data_dir())
                .args(["--admin-url", &f.server.admin_url()]),
        )
    };
    let listed = cli(&["token", "list-readers", "--json"]);
    let listed: serde_json::Value = serde_json::from_str(&listed).expect("JSON");
    let id = token.split('_').nth(1).expect("id");
    assert_eq!(listed[0]["id"], id, "{listed}");
    assert_eq!(listed[0]["name"], "prom-1");
    assert!(listed[0]["revoked_at"].is_null());
    assert!(!listed.to_string().contains(&token), "no secret listed");
    let out = cli(&["token", "revoke-reader", id]);
    assert!(out.contains("revoked targets-reader token"), "{out}");
    let (status, _) = get(&f, "/v1/sd/targets", Some(&token)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (_, text) = get(&f, "/metrics", None).await;
    assert!(
        text.contains("muster_tokens_active{kind=\"reader\"} 0\n"),
        "{text}"
    );
    let table = cli(&["token", "list-readers"]);
    assert!(
        table.contains("prom-1") && table.contains("REVOKED"),
        "{table}"
    );
}

#[tokio::test]
async fn metrics_can_require_a_token() {
    let f = Fixture::start_with(|data: &Path| {
        muster_e2e::fleet::append_settings(data, "\n[metrics]\ntoken_required = true\n");
    });
    let (status, _) = get(&f, "/metrics", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = get(&f, "/metrics", Some("mtr_000000000000_wrong")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let token = create_reader(&f);
    let (status, text) = get(&f, "/metrics", Some(&token)).await;
    assert_eq!(status, StatusCode::OK);
    // The two refusals above were counted (and are audited).
    assert!(
        text.contains("\nmuster_admin_auth_refusals_total 2\n"),
        "{text}"
    );
    // Health stays open.
    let (status, _) = get(&f, "/readyz", None).await;
    assert_eq!(status, StatusCode::OK);
}
