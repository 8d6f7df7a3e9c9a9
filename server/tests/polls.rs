//! The agent hot path against the real server binary: an unchanged-config
//! poll is answered from memory (the poll index and the in-memory check-in
//! time), so it needs no database at all; check-in times reach the database
//! in batches and at shutdown; a reconnecting agent resumes its TLS session
//! and is still recognised by its certificate; a kept-alive connection may
//! idle longer than the header timeout, a slow request head may not.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{enrolled, Fixture, TestAgent};
use reqwest::{Method, StatusCode};
use rustls::HandshakeKind;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Generous: every wait below ends far sooner when the server behaves.
const DEADLINE: Duration = Duration::from_secs(30);

fn with_flush(every: &'static str) -> impl FnOnce(&Path) {
    move |data: &Path| {
        let path = data.join("server.toml");
        let mut text = std::fs::read_to_string(&path).expect("server.toml");
        text.push_str(&format!("\nlast_seen_flush = \"{every}\"\n"));
        std::fs::write(&path, text).expect("write server.toml");
    }
}

fn db(f: &Fixture) -> rusqlite::Connection {
    db_in(&f.data_dir())
}

fn db_in(data_dir: &Path) -> rusqlite::Connection {
    let db = rusqlite::Connection::open(data_dir.join("muster.db")).expect("open db");
    db.busy_timeout(Duration::from_secs(10))
        .expect("busy timeout");
    db
}

fn stored_last_seen(db: &rusqlite::Connection, host_id: &str) -> i64 {
    db.query_row(
        "SELECT last_seen FROM hosts WHERE id = ?1",
        [host_id],
        |r| r.get(0),
    )
    .expect("host row")
}

/// An unchanged-config poll; its status.
async fn poll(f: &Fixture, agent: &TestAgent, cert: &str, hash: &str) -> StatusCode {
    agent
        .client(cert, &f.ca_pem)
        .get(format!("{}/v1/agent/config", f.server.agent_url()))
        .header("if-none-match", format!("\"{hash}\""))
        .send()
        .await
        .expect("poll")
        .status()
}

/// Enrolls a host and sets its stored `last_seen` to 0, so any check-in
/// written later shows.
async fn host_never_seen(f: &Fixture, name: &str) -> (TestAgent, String, String, String) {
    let agent = TestAgent::new(name, &format!("m-{name}"));
    let (id, cert, hash) = enrolled(f, &agent, json!({}), &format!("idem-{name}")).await;
    db(f)
        .execute("UPDATE hosts SET last_seen = 0 WHERE id = ?1", [&id])
        .expect("reset last_seen");
    (agent, id, cert, hash)
}

#[tokio::test]
async fn an_unchanged_config_poll_is_answered_while_the_database_is_locked() {
    let f = Fixture::start();
    let (agent, id, cert, hash) = host_never_seen(&f, "locked-01").await;
    // This process holds the database's write lock: every write of the
    // server (a `last_seen` update per poll, before) waits, then fails.
    let lock = db(&f);
    lock.execute_batch("BEGIN EXCLUSIVE").expect("lock");
    for _ in 0..3 {
        assert_eq!(
            poll(&f, &agent, &cert, &hash).await,
            StatusCode::NOT_MODIFIED
        );
    }
    // The check-in is visible at once (read through memory) although
    // nothing could be written.
    let (status, shown) = f
        .admin(Method::GET, &format!("/v1/admin/hosts/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{shown}");
    assert!(
        shown["last_seen"].as_i64().expect("last_seen") > 0,
        "{shown}"
    );
    lock.execute_batch("ROLLBACK").expect("unlock");
}

#[tokio::test]
async fn last_seen_reaches_the_database_in_a_batched_flush() {
    let f = Fixture::start_with(with_flush("1s"));
    let (agent, id, cert, hash) = host_never_seen(&f, "flush-01").await;
    assert_eq!(
        poll(&f, &agent, &cert, &hash).await,
        StatusCode::NOT_MODIFIED
    );
    let db = db(&f);
    let until = Instant::now() + DEADLINE;
    while stored_last_seen(&db, &id) == 0 {
        assert!(
            Instant::now() < until,
            "last_seen never written\n{}",
            f.server.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn last_seen_reaches_the_database_at_shutdown() {
    // No periodic flush during the test: only the shutdown writes.
    let f = Fixture::start_with(with_flush("1h"));
    let (agent, id, cert, hash) = host_never_seen(&f, "shutdown-01").await;
    assert_eq!(
        poll(&f, &agent, &cert, &hash).await,
        StatusCode::NOT_MODIFIED
    );
    let (_, shown) = f
        .admin(Method::GET, &format!("/v1/admin/hosts/{id}"), None)
        .await;
    let seen = shown["last_seen"].as_i64().expect("last_seen");
    assert!(seen > 0, "{shown}");
    assert_eq!(stored_last_seen(&db(&f), &id), 0, "written before shutdown");
    let data = f.data_dir();
    let Fixture {
        dir: _dir, server, ..
    } = f;
    let status = server.terminate(DEADLINE).expect("exit after SIGTERM");
    assert!(status.success(), "{status:?}");
    assert_eq!(stored_last_seen(&db_in(&data), &id), seen);
}

/// One HTTP/1.1 request on a fresh TLS connection made with `config`; the
/// handshake's kind and the response's status line.
async fn request_once(
    config: &Arc<rustls::ClientConfig>,
    to: std::net::SocketAddr,
    request: &str,
) -> (HandshakeKind, String) {
    let tcp = TcpStream::connect(to).await.expect("connect");
    let mut tls = tokio_rustls::TlsConnector::from(config.clone())
        .connect(ServerName::IpAddress(to.ip().into()), tcp)
        .await
        .expect("TLS handshake");
    let kind = tls.get_ref().1.handshake_kind().expect("handshake done");
    tls.write_all(request.as_bytes()).await.expect("request");
    let mut response = Vec::new();
    tokio::time::timeout(DEADLINE, tls.read_to_end(&mut response))
        .await
        .expect("response in time")
        .expect("response");
    let text = String::from_utf8_lossy(&response);
    (kind, text.lines().next().unwrap_or_default().to_string())
}

/// A rustls client config presenting the agent's certificate; the default
/// session store keeps the server's tickets.
fn agent_tls(f: &Fixture, agent: &TestAgent, cert: &str) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(f.ca_pem.as_bytes()) {
        roots.add(c.expect("CA PEM")).expect("CA cert");
    }
    let chain = CertificateDer::pem_slice_iter(cert.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .expect("cert PEM");
    let key = PrivateKeyDer::from_pem_slice(agent.key.serialize_pem().as_bytes()).expect("key");
    Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("protocols")
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .expect("client auth"),
    )
}

#[tokio::test]
async fn a_reconnecting_agent_resumes_its_tls_session_and_keeps_its_identity() {
    let f = Fixture::start();
    let agent = TestAgent::new("resume-01", "m-resume-01");
    let (_, cert, hash) = enrolled(&f, &agent, json!({}), "idem-resume-01").await;
    let config = agent_tls(&f, &agent, &cert);
    let request = format!(
        "GET /v1/agent/config HTTP/1.1\r\nHost: muster\r\nIf-None-Match: \"{hash}\"\r\nConnection: close\r\n\r\n"
    );
    let to = f.server.agent_addr();
    let (first, status) = request_once(&config, to, &request).await;
    assert_eq!(first, HandshakeKind::Full);
    assert_eq!(status, "HTTP/1.1 304 Not Modified");
    let (again, status) = request_once(&config, to, &request).await;
    assert_eq!(again, HandshakeKind::Resumed);
    // The resumed session still carries the agent's certificate.
    assert_eq!(status, "HTTP/1.1 304 Not Modified");
}

/// Reads one response head (the 304s here have no body); its status line,
/// or `None` when the server closed the connection first.
async fn response_head(tls: &mut tokio_rustls::client::TlsStream<TcpStream>) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match tls.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => return None,
        }
    }
    let text = String::from_utf8_lossy(&head);
    Some(text.lines().next().unwrap_or_default().to_string())
}

#[tokio::test]
async fn a_kept_alive_connection_outlives_the_header_timeout_but_a_slow_head_does_not() {
    let f = Fixture::start_with(|data| {
        let path = data.join("server.toml");
        let mut text = std::fs::read_to_string(&path).expect("server.toml");
        text.push_str("\n[limits]\nheader_timeout = \"1s\"\nidle_timeout = \"1h\"\n");
        std::fs::write(&path, text).expect("write server.toml");
    });
    let agent = TestAgent::new("idle-01", "m-idle-01");
    let (_, cert, hash) = enrolled(&f, &agent, json!({}), "idem-idle-01").await;
    let config = agent_tls(&f, &agent, &cert);
    let to = f.server.agent_addr();
    let tcp = TcpStream::connect(to).await.expect("connect");
    let mut kept = tokio_rustls::TlsConnector::from(config.clone())
        .connect(ServerName::IpAddress(to.ip().into()), tcp)
        .await
        .expect("TLS handshake");
    let request = format!(
        "GET /v1/agent/config HTTP/1.1\r\nHost: muster\r\nIf-None-Match: \"{hash}\"\r\n\r\n"
    );
    kept.write_all(request.as_bytes()).await.expect("request");
    assert_eq!(
        response_head(&mut kept).await.as_deref(),
        Some("HTTP/1.1 304 Not Modified")
    );
    // A request head sent slowly (its first line, then nothing) is cut off
    // by the header timeout, although the idle timeout is an hour.
    let tcp = TcpStream::connect(to).await.expect("connect");
    let mut slow = tokio_rustls::TlsConnector::from(config.clone())
        .connect(ServerName::IpAddress(to.ip().into()), tcp)
        .await
        .expect("TLS handshake");
    slow.write_all(b"GET /v1/agent/config HTTP/1.1\r\n")
        .await
        .expect("first line");
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(DEADLINE, slow.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "a slow request head was never cut off");
    // Meanwhile (several header timeouts) the idle connection stayed open
    // and serves the next check-in.
    kept.write_all(request.as_bytes()).await.expect("request");
    assert_eq!(
        response_head(&mut kept).await.as_deref(),
        Some("HTTP/1.1 304 Not Modified")
    );
}
