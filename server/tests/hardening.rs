//! Connections are a resource under attack, and refusals are cheap and
//! bounded (`[limits]` in server.toml): a slow-body client is cut off by the
//! body timeout, a source holding idle or half-open connections is capped
//! without starving other agents or the admin listener, and a source that
//! keeps failing to enroll is answered 429 and audited once, not per attempt;
//! with `[audit] retention`, old audit entries are deleted.
//! Other loopback addresses (127.0.0.2, ...) are other sources.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{client_from, enrolled, Fixture, TestAgent};
use reqwest::StatusCode;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Generous: every wait below ends far sooner when the server behaves.
const DEADLINE: Duration = Duration::from_secs(30);

fn with_limits(limits: &'static str) -> impl FnOnce(&Path) {
    move |data: &Path| {
        let path = data.join("server.toml");
        let mut text = std::fs::read_to_string(&path).expect("server.toml");
        text.push_str("\n[limits]\n");
        text.push_str(limits);
        std::fs::write(&path, text).expect("write server.toml");
    }
}

fn source(last: u8) -> IpAddr {
    IpAddr::from([127, 0, 0, last])
}

async fn connect_from(local: IpAddr, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.bind(SocketAddr::new(local, 0)).expect("bind");
    socket.connect(to).await.expect("connect")
}

async fn tls_from(
    ca_pem: &str,
    local: IpAddr,
    to: SocketAddr,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.expect("CA PEM")).expect("CA cert");
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocols")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = connect_from(local, to).await;
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::IpAddress(to.ip().into()), tcp)
        .await
        .expect("TLS handshake")
}

/// Whether the server ends the connection (EOF or reset) within `wait`.
async fn closed_within(stream: &mut (impl AsyncRead + Unpin), wait: Duration) -> bool {
    let mut buf = [0u8; 256];
    matches!(
        tokio::time::timeout(wait, stream.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

#[tokio::test]
async fn a_slow_body_client_is_cut_off_by_the_body_timeout_while_another_is_served() {
    let f = Fixture::start_with(with_limits("body_timeout = \"2s\"\n"));
    let mut slow = tls_from(&f.ca_pem, source(2), f.server.agent_addr()).await;
    slow.write_all(
        b"POST /v1/enroll HTTP/1.1\r\nhost: muster\r\ncontent-type: application/json\r\ncontent-length: 1000000\r\n\r\n{",
    )
    .await
    .expect("headers");

    // Another client enrolls meanwhile.
    let agent = TestAgent::new("web-1", "m-1");
    enrolled(&f, &agent, json!({}), "idem-key-1").await;

    // A byte every 200 ms (far from the megabyte announced) until the
    // server ends the connection.
    let started = Instant::now();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        assert!(
            started.elapsed() < DEADLINE,
            "the slow body was not cut off within {DEADLINE:?}"
        );
        match tokio::time::timeout(Duration::from_millis(200), slow.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => break,
            Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
            Err(_) => {
                if slow.write_all(b" ").await.is_err() || slow.flush().await.is_err() {
                    break;
                }
            }
        }
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 4"),
        "{answer}"
    );
    // The other client is still served.
    assert_eq!(f.hosts().await.len(), 1);
}

#[tokio::test]
async fn idle_and_half_open_connections_from_one_source_do_not_starve_others() {
    let f = Fixture::start_with(with_limits(
        "max_connections_per_source = 8\nhandshake_timeout = \"120s\"\nheader_timeout = \"120s\"\n",
    ));
    let agent = TestAgent::new("web-1", "m-1");
    let (_, cert, _) = enrolled(&f, &agent, json!({}), "idem-key-1").await;

    for listener in [f.server.agent_addr(), f.server.admin_addr()] {
        // 127.0.0.2 holds its cap: idle TLS connections and half-open ones.
        let mut idle = Vec::new();
        for _ in 0..4 {
            idle.push(tls_from(&f.ca_pem, source(2), listener).await);
        }
        let mut half_open = Vec::new();
        for _ in 0..4 {
            half_open.push(connect_from(source(2), listener).await);
        }
        // Past the cap its connections are closed at once.
        for i in 0..20 {
            let mut extra = connect_from(source(2), listener).await;
            assert!(
                closed_within(&mut extra, DEADLINE).await,
                "connection {i} over the per-source cap stayed open"
            );
        }
        // The ones within the cap stay open (the timeouts are long).
        for c in &mut half_open {
            assert!(!closed_within(c, Duration::from_millis(100)).await);
        }
        for c in &mut idle {
            assert!(!closed_within(c, Duration::from_millis(100)).await);
        }
    }

    // Meanwhile the agent polls and the admin API answers, from 127.0.0.1.
    let poller = client_from(
        &f.ca_pem,
        Some((&cert, &agent.key.serialize_pem())),
        Some(source(1)),
    );
    let resp = poller
        .get(format!("{}/v1/agent/config", f.server.agent_url()))
        .send()
        .await
        .expect("poll");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(f.hosts().await.len(), 1);
}

#[tokio::test]
async fn the_listener_wide_cap_closes_new_connections_until_some_end() {
    let f = Fixture::start_with(with_limits(
        "max_connections = 6\nhandshake_timeout = \"120s\"\n",
    ));
    let listener = f.server.agent_addr();
    let mut held = Vec::new();
    for i in 0..6u8 {
        held.push(connect_from(source(10 + i), listener).await);
    }
    for c in &mut held {
        assert!(!closed_within(c, Duration::from_millis(100)).await);
    }
    let mut over = connect_from(source(1), listener).await;
    assert!(closed_within(&mut over, DEADLINE).await, "over the cap");
    // The admin listener has its own cap.
    assert!(f.hosts().await.is_empty());

    // Once they go, new connections are served again.
    drop(held);
    let client = client_from(&f.ca_pem, None, Some(source(1)));
    let started = Instant::now();
    loop {
        let served = client
            .get(format!("{}/healthz", f.server.agent_url()))
            .send()
            .await
            .is_ok_and(|r| r.status() == StatusCode::OK);
        if served {
            break;
        }
        assert!(started.elapsed() < DEADLINE, "never served again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_source_failing_to_enroll_is_answered_429_and_audited_once() {
    let f = Fixture::start_with(with_limits("enroll_refusals_per_minute = 3\n"));
    let token = f.token(json!({"uses": 5})).await;
    let agent = TestAgent::new("web-1", "m-1");
    let guess = "mte_0123456789ab_notthetoken";
    for i in 0..3 {
        let (status, body) = f
            .enroll(&agent.enroll_body(guess, &format!("idem-key-{i}")))
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "attempt {i}: {body}");
    }
    // Over the limit: turned away before the token is looked at, even the
    // right one.
    for i in 0..5 {
        let (body, token) = if i == 4 {
            (agent.enroll_body(&token, "idem-right"), "right")
        } else {
            (agent.enroll_body(guess, &format!("idem-over-{i}")), "guess")
        };
        let resp = common::client(&f.ca_pem, None)
            .post(format!("{}/v1/enroll", f.server.agent_url()))
            .json(&body)
            .send()
            .await
            .expect("send");
        common::assert_rate_limited(resp, token).await;
    }
    // Another source enrolls with the token.
    let agent = TestAgent::new("web-2", "m-2");
    let other = client_from(&f.ca_pem, None, Some(source(2)));
    let (status, body) = common::post(
        &other,
        &format!("{}/v1/enroll", f.server.agent_url()),
        &agent.enroll_body(&token, "idem-other"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // Three refusals audited one by one, the five turned away as one entry.
    let refusals: Vec<_> = common::audit_log(&f)
        .into_iter()
        .filter(|a| a.action == "enroll" && a.outcome == "refused")
        .collect();
    assert_eq!(refusals.len(), 4, "{refusals:?}");
    let turned_away: Vec<_> = refusals
        .iter()
        .filter(|a| a.detail.as_deref().is_some_and(|d| d.contains("429")))
        .collect();
    assert_eq!(turned_away.len(), 1, "{refusals:?}");
    assert_eq!(turned_away[0].source.as_deref(), Some("127.0.0.1"));

    // /metrics counts the attempts turned away.
    let metrics = f
        .anonymous_client()
        .get(format!("{}/metrics", f.server.admin_url()))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics
            .lines()
            .any(|l| l == "muster_enrollments_total{outcome=\"rate_limited\"} 5"),
        "{metrics}"
    );
}

#[tokio::test]
async fn audit_entries_older_than_the_retention_are_deleted_and_that_is_audited() {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    let f = Fixture::start_with(|data: &Path| {
        let path = data.join("server.toml");
        let mut text = std::fs::read_to_string(&path).expect("server.toml");
        text.push_str("\n[audit]\nretention = \"30days\"\n");
        std::fs::write(&path, text).expect("write server.toml");
        let store = muster_server::store::Store::open(&data.join(muster_server::store::FILE_NAME))
            .expect("db");
        for (age_days, action) in [(400, "ancient"), (31, "old"), (29, "recent")] {
            store
                .audit(&muster_server::store::AuditEntry {
                    at: now - age_days * 86400,
                    actor: "admin",
                    action,
                    target: None,
                    outcome: "ok",
                    detail: None,
                    source: None,
                })
                .expect("seed");
        }
    });
    let start = Instant::now();
    loop {
        let audit = f.audit().await;
        let actions: Vec<&str> = audit.iter().filter_map(|a| a["action"].as_str()).collect();
        if actions.contains(&"audit.prune") {
            assert!(
                !actions.contains(&"ancient") && !actions.contains(&"old"),
                "{actions:?}"
            );
            assert!(actions.contains(&"recent"), "{actions:?}");
            let prune = audit
                .iter()
                .find(|a| a["action"] == "audit.prune")
                .expect("prune entry");
            assert!(
                prune["detail"]
                    .as_str()
                    .is_some_and(|d| d.starts_with("2 audit entries")),
                "{prune}"
            );
            break;
        }
        assert!(start.elapsed() < DEADLINE, "no retention pass: {actions:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
