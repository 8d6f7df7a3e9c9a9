//! The admin API's OpenAPI document (`server/openapi.json`, served at
//! `/v1/admin/openapi.json`) against the routes: every documented operation
//! is served by the real binary, and every admin route in the router is
//! documented. Issue 4.

mod common;

use std::collections::BTreeSet;

use common::{answer, Fixture};
use reqwest::{Method, StatusCode};
use serde_json::Value;

/// (method, path) of every operation the document describes.
fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    let paths = doc["paths"].as_object().expect("paths");
    let mut ops = BTreeSet::new();
    for (path, item) in paths {
        for method in item.as_object().expect("path item").keys() {
            ops.insert((method.to_uppercase(), path.clone()));
        }
    }
    ops
}

/// (method, path) of every `.route(...)` in `admin_router`, read from the
/// source so a route added without documentation fails this test.
fn routed() -> BTreeSet<(String, String)> {
    let source = include_str!("../src/api/mod.rs");
    let start = source
        .find("pub fn admin_router")
        .expect("admin_router in api/mod.rs");
    let body = &source[start..];
    let body = &body[..body.find("\n}\n").expect("end of admin_router")];
    let method = regex::Regex::new(r"\b(get|post|put|patch|delete)\(").expect("regex");
    let literal = regex::Regex::new(r#""([^"]+)""#).expect("regex");
    let mut ops = BTreeSet::new();
    let mut rest = body;
    while let Some(at) = rest.find(".route(") {
        let call = &rest[at + ".route(".len()..];
        let mut depth = 1;
        let end = call
            .char_indices()
            .find_map(|(i, c)| {
                match c {
                    '(' => depth += 1,
                    ')' => depth -= 1,
                    _ => {}
                }
                (depth == 0).then_some(i)
            })
            .expect("balanced route call");
        let call = &call[..end];
        let (first, _) = call.split_once(',').expect("route(path, handler)");
        let path = match literal.captures(first) {
            Some(c) => c[1].to_string(),
            None if first.trim() == "OPENAPI_PATH" => "/v1/admin/openapi.json".to_string(),
            None => panic!("cannot read the path of route {call}"),
        };
        for m in method.captures_iter(call) {
            ops.insert((m[1].to_uppercase(), path.clone()));
        }
        rest = &rest[at + 1..];
    }
    assert!(ops.len() > 10, "found too few routes: {ops:?}");
    ops
}

#[tokio::test]
async fn the_openapi_document_matches_the_admin_routes() {
    let f = Fixture::start();
    let resp = f
        .anonymous_client()
        .get(format!("{}/v1/admin/openapi.json", f.server.admin_url()))
        .send()
        .await
        .expect("fetch document");
    let (status, doc) = answer(resp).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(doc["openapi"], "3.0.3");
    let on_disk: Value =
        serde_json::from_str(include_str!("../openapi.json")).expect("openapi.json parses");
    assert_eq!(doc, on_disk, "the server serves the checked-in document");

    let documented = documented(&doc);
    let routed = routed();
    assert_eq!(
        documented, routed,
        "documented (left) and routed (right) operations differ"
    );

    // Each documented operation is really served: not 404 "no such route",
    // not 405.
    for (method, path) in &documented {
        let url = format!(
            "{}{}",
            f.server.admin_url(),
            path.replace("{id}", "x-probe")
        );
        let method = Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = f
            .anonymous_client()
            .request(method.clone(), url)
            .bearer_auth(f.admin_token.trim());
        if method == Method::POST {
            req = req.json(&serde_json::json!({}));
        }
        let resp = req.send().await.expect("probe");
        if path == "/metrics" {
            // Prometheus text, not JSON.
            assert_eq!(resp.status(), StatusCode::OK, "{method} {path}");
            continue;
        }
        let (status, body) = answer(resp).await;
        assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        assert!(
            !(status == StatusCode::NOT_FOUND && body["error"]["message"] == "no such route"),
            "{method} {path} is documented but not routed"
        );
    }
    // The probe can tell: an undocumented path is "no such route".
    let (status, body) = f.admin(Method::GET, "/v1/admin/nope", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["message"], "no such route");

    // Every operation points at schemas that exist.
    let schemas = doc["components"]["schemas"].as_object().expect("schemas");
    let text = doc.to_string();
    for part in text.split("#/components/schemas/").skip(1) {
        let name: String = part.chars().take_while(|c| c.is_alphanumeric()).collect();
        assert!(schemas.contains_key(&name), "missing schema {name}");
    }
}
