//! Prometheus reloads after target changes: coalesced into one per window,
//! and a failed reload is reported in the audit log without hurting
//! enrollment.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Fixture, TestAgent};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A minimal HTTP endpoint on loopback that counts `POST /-/reload`.
async fn fake_reload_endpoint() -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let n = sock.read(&mut buf).await.unwrap_or(0);
                if String::from_utf8_lossy(&buf[..n]).starts_with("POST /-/reload ") {
                    seen.fetch_add(1, Ordering::SeqCst);
                }
                let _ = sock
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .await;
            });
        }
    });
    (url, count)
}

fn with_settings(extra: String) -> impl FnOnce(&std::path::Path) {
    move |data| {
        let path = data.join("server.toml");
        let text = std::fs::read_to_string(&path).expect("server.toml");
        let text = text.replace("reload_window = \"2s\"", "reload_window = \"300ms\"");
        std::fs::write(&path, format!("{text}{extra}")).expect("write");
    }
}

#[tokio::test]
async fn a_burst_of_enrollments_causes_one_reload() {
    let (url, count) = fake_reload_endpoint().await;
    let f = Fixture::start_with(with_settings(format!("prometheus_url = \"{url}\"\n")));
    let token = f.token(json!({"uses": 5})).await;
    // Sent at once, so that the burst fits one window however slow the
    // machine: one at a time on a loaded machine, five enrollments can
    // outlast a 300 ms window.
    let bodies: Vec<Value> = (0..5)
        .map(|i| {
            TestAgent::new(&format!("burst-{i}"), &format!("m-burst-{i}"))
                .enroll_body(&token, &format!("idem-burst-{i}"))
        })
        .collect();
    let answers = tokio::join!(
        f.enroll(&bodies[0]),
        f.enroll(&bodies[1]),
        f.enroll(&bodies[2]),
        f.enroll(&bodies[3]),
        f.enroll(&bodies[4]),
    );
    for (status, body) in [answers.0, answers.1, answers.2, answers.3, answers.4] {
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let until = Instant::now() + Duration::from_secs(10);
    while count.load(Ordering::SeqCst) == 0 {
        assert!(
            Instant::now() < until,
            "no reload was sent\n{}",
            f.server.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Let a second window pass: the burst must not cause more reloads.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let reloads = count.load(Ordering::SeqCst);
    assert!(
        reloads <= 2,
        "{reloads} reloads for one burst of 5 enrollments"
    );
}

#[tokio::test]
async fn a_failed_reload_is_audited_and_enrollment_still_succeeds() {
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", closed.local_addr().expect("addr"));
    drop(closed);
    let f = Fixture::start_with(with_settings(format!("prometheus_url = \"{url}\"\n")));
    let token = f.token(json!({})).await;
    let agent = TestAgent::new("reload-fail", "m-reload-fail");
    let (status, body) = f
        .enroll(&agent.enroll_body(&token, "idem-reload-fail"))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let audit = f.audit().await;
        if let Some(entry) = audit.iter().find(|a| a["action"] == "prometheus.reload") {
            assert_eq!(entry["outcome"], "failed");
            assert!(entry["detail"]
                .as_str()
                .unwrap_or_default()
                .contains("reload failed"));
            break;
        }
        assert!(
            Instant::now() < until,
            "reload failure not audited: {audit:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(f.target_files().len(), 1);
}
