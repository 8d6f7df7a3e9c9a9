//! What the server's API tests share: a server in a fresh data dir, an admin
//! client, and test agents with their own keys, CSRs and mTLS clients.

#![allow(dead_code)] // each test file uses a different part

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use muster_e2e::Server;
use muster_shared::facts::Facts;
use reqwest::StatusCode;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{json, Value};

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub server: Server,
    pub ca_pem: String,
    pub admin_token: String,
}

impl Fixture {
    pub fn start() -> Fixture {
        Fixture::start_with(|_| {})
    }

    /// Initialises a data dir, lets `edit` change it (server.toml, ...),
    /// then starts the server.
    pub fn start_with(edit: impl FnOnce(&Path)) -> Fixture {
        muster_e2e::install_crypto();
        let dir = tempfile::tempdir().expect("temp dir");
        let data = dir.path().join("data");
        let out = Server::init(&data, &[]);
        assert!(out.status.success(), "init failed: {out:?}");
        edit(&data);
        let server = Server::start(&data);
        let ca_pem = std::fs::read_to_string(data.join("ca.crt")).expect("ca.crt");
        let admin_token = std::fs::read_to_string(data.join("admin.token")).expect("admin.token");
        Fixture {
            dir,
            server,
            ca_pem,
            admin_token,
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.server.data_dir().to_path_buf()
    }

    pub fn targets_dir(&self) -> PathBuf {
        self.data_dir().join("targets")
    }

    /// The text of `host_id`'s target file once the reconciler has written
    /// it (an enrollment's file is written just after the answer).
    pub async fn target_file(&self, host_id: &str) -> String {
        self.server.target_file(host_id).await
    }

    /// Names of the files in the targets dir, sorted.
    pub fn target_files(&self) -> Vec<String> {
        file_names(&self.targets_dir())
    }

    /// Lets time pass for the certificates: every stored certificate's
    /// issue and expiry times move back by `percent` of its validity, as if
    /// that much of it had gone by (renewal is allowed in the last third).
    /// The certificates themselves do not change; the server decides from
    /// these records.
    pub fn age_certs(&self, percent: i64) {
        let db = rusqlite::Connection::open(self.data_dir().join("muster.db")).expect("open db");
        db.busy_timeout(Duration::from_secs(10))
            .expect("busy timeout");
        db.execute(
            "UPDATE certs SET issued_at = issued_at - (not_after - issued_at) * ?1 / 100,
             not_after = not_after - (not_after - issued_at) * ?1 / 100",
            [percent],
        )
        .expect("age certs");
    }

    /// A client that trusts the Muster CA and presents no certificate.
    pub fn anonymous_client(&self) -> reqwest::Client {
        client(&self.ca_pem, None)
    }

    /// `POST /v1/admin/hosts/{host_id}/decommission`.
    pub async fn decommission(&self, host_id: &str) -> (StatusCode, Value) {
        let path = format!("/v1/admin/hosts/{host_id}/decommission");
        self.admin(reqwest::Method::POST, &path, None).await
    }

    pub async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .anonymous_client()
            .request(method, format!("{}{path}", self.server.admin_url()))
            .bearer_auth(self.admin_token.trim());
        if let Some(body) = body {
            req = req.json(&body);
        }
        answer(req.send().await.expect("admin request")).await
    }

    /// Creates an enrollment token; returns its text.
    pub async fn token(&self, body: Value) -> String {
        let (status, created) = self
            .admin(reqwest::Method::POST, "/v1/admin/tokens", Some(body))
            .await;
        assert_eq!(status, StatusCode::OK, "{created}");
        created["token"].as_str().expect("token text").to_string()
    }

    pub async fn hosts(&self) -> Vec<Value> {
        let (status, hosts) = self
            .admin(reqwest::Method::GET, "/v1/admin/hosts", None)
            .await;
        assert_eq!(status, StatusCode::OK, "{hosts}");
        hosts.as_array().expect("list").clone()
    }

    pub async fn audit(&self) -> Vec<Value> {
        let (status, rows) = self
            .admin(reqwest::Method::GET, "/v1/admin/audit", None)
            .await;
        assert_eq!(status, StatusCode::OK, "{rows}");
        rows.as_array().expect("list").clone()
    }

    pub async fn enroll(&self, body: &Value) -> (StatusCode, Value) {
        let resp = self
            .anonymous_client()
            .post(format!("{}/v1/enroll", self.server.agent_url()))
            .json(body)
            .send()
            .await
            .expect("enroll request");
        answer(resp).await
    }
}

/// Names of the files in `dir`, sorted.
pub fn file_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Enrolls `agent` with a new token made from `token_body`; returns (host
/// id, certificate PEM, config hash).
pub async fn enrolled(
    f: &Fixture,
    agent: &TestAgent,
    token_body: Value,
    idempotency_key: &str,
) -> (String, String, String) {
    let token = f.token(token_body).await;
    let (status, body) = f.enroll(&agent.enroll_body(&token, idempotency_key)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    (
        body["host_id"].as_str().expect("id").to_string(),
        body["certificate_pem"].as_str().expect("cert").to_string(),
        body["config"]["hash"].as_str().expect("hash").to_string(),
    )
}

/// POSTs `body` as JSON with `client`; the answer's status and JSON.
pub async fn post(client: &reqwest::Client, url: &str, body: &Value) -> (StatusCode, Value) {
    answer(client.post(url).json(body).send().await.expect("send")).await
}

pub async fn answer(resp: reqwest::Response) -> (StatusCode, Value) {
    let status = resp.status();
    let bytes = resp.bytes().await.expect("body");
    let value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&bytes)))
    };
    (status, value)
}

/// A reqwest client trusting `ca_pem`, optionally presenting a client
/// certificate.
pub fn client(ca_pem: &str, identity: Option<(&str, &str)>) -> reqwest::Client {
    client_from(ca_pem, identity, None)
}

/// `client`, connecting from `local` (another loopback address is another
/// source to the server's per-source limits).
pub fn client_from(
    ca_pem: &str,
    identity: Option<(&str, &str)>,
    local: Option<std::net::IpAddr>,
) -> reqwest::Client {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.expect("CA PEM")).expect("CA cert");
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocols")
    .with_root_certificates(roots);
    let tls = match identity {
        Some((cert_pem, key_pem)) => {
            let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .expect("cert PEM");
            let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).expect("key PEM");
            builder
                .with_client_auth_cert(chain, key)
                .expect("client auth")
        }
        None => builder.with_no_client_auth(),
    };
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .local_address(local)
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

/// A pretend host: its own key, facts, and CSRs.
pub struct TestAgent {
    pub key: rcgen::KeyPair,
    pub facts: Facts,
}

impl TestAgent {
    pub fn new(hostname: &str, machine_id: &str) -> TestAgent {
        TestAgent {
            key: rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key"),
            facts: Facts {
                hostname: hostname.into(),
                machine_id: machine_id.into(),
                os: "linux".into(),
                arch: "x86_64".into(),
                os_id: Some("debian".into()),
                os_version: Some("12".into()),
                kernel: None,
                scrape_address: "127.0.0.1:12345".into(),
                agent_version: "0.1.0".into(),
                ..Facts::default()
            },
        }
    }

    pub fn csr_pem(&self) -> String {
        rcgen::CertificateParams::new(Vec::<String>::new())
            .expect("params")
            .serialize_request(&self.key)
            .expect("csr")
            .pem()
            .expect("pem")
    }

    pub fn enroll_body(&self, token: &str, idempotency_key: &str) -> Value {
        json!({
            "token": token,
            "csr_pem": self.csr_pem(),
            "facts": self.facts,
            "idempotency_key": idempotency_key,
        })
    }

    /// An mTLS client presenting `cert_pem` with this agent's key.
    pub fn client(&self, cert_pem: &str, ca_pem: &str) -> reqwest::Client {
        client(ca_pem, Some((cert_pem, &self.key.serialize_pem())))
    }
}

/// Runs every future concurrently on this task (`join_all` without another
/// crate); their outputs in order.
pub async fn join_all<F: std::future::Future>(futures: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut pending: Vec<_> = futures.map(|f| Some(Box::pin(f))).collect();
    let mut results: Vec<Option<F::Output>> = (0..pending.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut all = true;
        for (i, slot) in pending.iter_mut().enumerate() {
            if let Some(fut) = slot {
                match fut.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => {
                        results[i] = Some(v);
                        *slot = None;
                    }
                    std::task::Poll::Pending => all = false,
                }
            }
        }
        if all {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    results.into_iter().map(|r| r.expect("ready")).collect()
}

/// Every audit entry (up to 1000), read from `f`'s database.
pub fn audit_log(f: &Fixture) -> Vec<muster_server::store::AuditRow> {
    let path = f.data_dir().join(muster_server::store::FILE_NAME);
    muster_server::store::Store::open(&path)
        .expect("db")
        .audit_query(&muster_server::store::AuditFilter {
            limit: 1000,
            ..Default::default()
        })
        .expect("audit")
}

/// Asserts that `resp` is a source turned away by a refusal limit: 429
/// with a `Retry-After` of 1 to 60 s and the `rate_limited` error code.
pub async fn assert_rate_limited(resp: reqwest::Response, what: &str) {
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS, "{what}");
    let retry: u64 = resp.headers()[reqwest::header::RETRY_AFTER]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((1..=60).contains(&retry), "{what}: Retry-After {retry}");
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["error"]["code"], "rate_limited", "{what}");
}
