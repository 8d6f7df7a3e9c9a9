//! The per-source limit on refused admin authentication (issue 10): after
//! `MAX_REFUSALS` refusals a source is answered 429 with `Retry-After`, even
//! with a valid token, and the refusals of one window are not audited one by
//! one.

mod common;

use common::Fixture;
use muster_server::authlimit::MAX_REFUSALS;
use reqwest::StatusCode;

#[tokio::test]
async fn a_guessing_source_is_answered_429_and_audited_once_per_window() {
    let f = Fixture::start();
    let url = format!("{}/v1/admin/hosts", f.server.admin_url());
    let client = f.anonymous_client();
    for i in 0..MAX_REFUSALS {
        let mut req = client.get(&url);
        if i % 2 == 0 {
            req = req.bearer_auth(format!("mta_0123456789ab_guess{i}"));
        }
        let resp = req.send().await.expect("send");
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "attempt {i}");
    }
    // Over the limit: turned away before the token is looked at, even the
    // right one.
    let resp = client
        .get(&url)
        .bearer_auth(f.admin_token.trim())
        .send()
        .await
        .expect("send");
    common::assert_rate_limited(resp, "the right token, over the limit").await;

    // One audit entry for the window so far, not one per guess.
    let refusals: Vec<_> = common::audit_log(&f)
        .into_iter()
        .filter(|a| a.action == "admin.auth")
        .collect();
    assert_eq!(refusals.len(), 1, "{refusals:?}");
    assert_eq!(refusals[0].outcome, "refused");
    assert_eq!(refusals[0].source.as_deref(), Some("127.0.0.1"));
}

#[tokio::test]
async fn refused_console_sign_ins_count_against_the_same_limit() {
    let f = Fixture::start();
    let client = f.anonymous_client();
    let signin = format!("{}/signin", f.server.admin_url());
    for i in 0..MAX_REFUSALS {
        let resp = client
            .post(&signin)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("token=mta_0123456789ab_guess{i}"))
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "sign-in {i}");
    }
    // The console's sign-in and the API are turned away alike.
    let resp = client
        .post(&signin)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={}", f.admin_token.trim()))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(resp.headers().contains_key(reqwest::header::RETRY_AFTER));
    let resp = client
        .get(format!("{}/v1/admin/hosts", f.server.admin_url()))
        .bearer_auth(f.admin_token.trim())
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
}
