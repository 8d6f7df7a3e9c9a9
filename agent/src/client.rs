//! Talking to the Muster server: one method per route of the wire contract,
//! each with timeouts, bounded bodies and typed errors (the TLS setups they
//! run over are in `tls`).

use std::sync::Arc;
use std::time::Duration;

use muster_shared::facts::Facts;
use muster_shared::pin::Pin;
use muster_shared::wire::{
    AgentConfig, EnrollRequest, EnrollResponse, ErrorBody, RenewRequest, RenewResponse,
    StatusReport, CONFIG_PATH, ENROLL_PATH, RENEW_PATH, STATUS_PATH,
};
use muster_shared::wire::{FactsAccepted, FACTS_PATH};
use reqwest::{header, Response, StatusCode, Url};
use rustls::ClientConfig;
use serde::de::DeserializeOwned;

use crate::error_text::{bounded, error_chain};
use crate::identity::Enrolled;
use crate::tls::{mutual_tls, pinned_tls, PinVerifier, TlsError};

/// Largest response body read (a rendered config is the biggest).
pub const MAX_RESPONSE_BYTES: usize = 8 * 1024 * 1024;
/// Time allowed to open a connection, TLS included.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long an idle connection to the server is kept for the next request:
/// longer than a check-in interval plus jitter (33 s by default), so
/// check-ins share one connection, and shorter than the server's
/// `idle_timeout` (120 s by default), so the agent, not the server, closes
/// an idle connection and no request races the server's close. A new
/// connection resumes the TLS session (rustls' client session cache keeps
/// the server's tickets).
pub const IDLE_CONNECTION: Duration = Duration::from_secs(90);
/// Time allowed for an ordinary request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Time allowed for the config request, which the server may hold open (long poll).
pub const CONFIG_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(
        "the server's key does not match the pin: expected {expected}, the server presented {presented}"
    )]
    PinMismatch { expected: Pin, presented: Pin },
    #[error("cannot reach {url}: {detail}")]
    Connect { url: String, detail: String },
    #[error("{url}: the server answered {status}: {message}")]
    Status {
        url: String,
        status: u16,
        code: Option<String>,
        message: String,
    },
    #[error("{url}: unusable answer: {problem}")]
    BadResponse { url: String, problem: String },
}

impl ClientError {
    /// Worth trying again later: the network, a timeout, or a 5xx/429.
    pub fn is_transient(&self) -> bool {
        match self {
            ClientError::Connect { .. } => true,
            ClientError::Status { status, .. } => *status >= 500 || *status == 429,
            _ => false,
        }
    }

    /// The server refused this agent's certificate (revoked or unknown).
    pub fn is_refused(&self) -> bool {
        matches!(
            self,
            ClientError::Status {
                status: 401 | 403,
                ..
            }
        )
    }

    /// The server revoked this agent's certificate (its host was
    /// decommissioned or taken over): retrying cannot help.
    pub fn is_revoked(&self) -> bool {
        matches!(
            self,
            ClientError::Status { status: 403, code: Some(code), .. }
                if code == muster_shared::wire::CODE_REVOKED
        )
    }
}

/// A connection to one Muster server.
#[derive(Clone, Debug)]
pub struct ServerClient {
    http: reqwest::Client,
    base: Url,
    pin: Option<Arc<PinVerifier>>,
}

impl ServerClient {
    /// For enrollment: trusts the server by `pin` alone.
    pub fn pinned(base: &Url, pin: Pin) -> Result<ServerClient, ClientError> {
        let verifier = Arc::new(PinVerifier::new(pin));
        let tls = pinned_tls(verifier.clone())?;
        Ok(ServerClient {
            http: build_http(tls)?,
            base: base.clone(),
            pin: Some(verifier),
        })
    }

    /// For everything after enrollment: mutual TLS.
    pub fn mutual(base: &Url, enrolled: &Enrolled) -> Result<ServerClient, ClientError> {
        Ok(ServerClient {
            http: build_http(mutual_tls(enrolled)?)?,
            base: base.clone(),
            pin: None,
        })
    }

    pub fn base(&self) -> &Url {
        &self.base
    }

    /// `POST /v1/enroll`.
    pub async fn enroll(&self, request: &EnrollRequest) -> Result<EnrollResponse, ClientError> {
        let url = self.url(ENROLL_PATH);
        let response = self
            .send(
                self.http.post(url.clone()).json(request),
                &url,
                REQUEST_TIMEOUT,
            )
            .await?;
        expect_json(response, &url).await
    }

    /// `GET /v1/agent/config`: `None` when the config is still `etag` (304).
    pub async fn fetch_config(
        &self,
        etag: Option<&str>,
    ) -> Result<Option<AgentConfig>, ClientError> {
        let url = self.url(CONFIG_PATH);
        let mut request = self.http.get(url.clone());
        if let Some(hash) = etag {
            request = request.header(header::IF_NONE_MATCH, format!("\"{hash}\""));
        }
        let response = self.send(request, &url, CONFIG_TIMEOUT).await?;
        if response.status() == StatusCode::NOT_MODIFIED {
            return Ok(None);
        }
        let config: AgentConfig = expect_json(response, &url).await?;
        let actual = hex_sha256(config.content.as_bytes());
        if !actual.eq_ignore_ascii_case(&config.hash) {
            return Err(ClientError::BadResponse {
                url: url.to_string(),
                problem: format!(
                    "config hash {} does not match its content ({actual})",
                    config.hash
                ),
            });
        }
        Ok(Some(config))
    }

    /// `POST /v1/agent/status`.
    pub async fn report(&self, report: &StatusReport) -> Result<(), ClientError> {
        let url = self.url(STATUS_PATH);
        let response = self
            .send(
                self.http.post(url.clone()).json(report),
                &url,
                REQUEST_TIMEOUT,
            )
            .await?;
        check_status(response, &url).await.map(drop)
    }

    /// `POST /v1/agent/renew`.
    /// `POST /v1/agent/facts`: the host's facts changed.
    pub async fn report_facts(&self, facts: &Facts) -> Result<FactsAccepted, ClientError> {
        let url = self.url(FACTS_PATH);
        let response = self
            .send(
                self.http.post(url.clone()).json(facts),
                &url,
                REQUEST_TIMEOUT,
            )
            .await?;
        expect_json(response, &url).await
    }

    pub async fn renew(&self, csr_pem: String) -> Result<RenewResponse, ClientError> {
        let url = self.url(RENEW_PATH);
        let body = RenewRequest { csr_pem };
        let response = self
            .send(
                self.http.post(url.clone()).json(&body),
                &url,
                REQUEST_TIMEOUT,
            )
            .await?;
        expect_json(response, &url).await
    }

    fn url(&self, path: &str) -> Url {
        let mut url = self.base.clone();
        url.set_path(path);
        url
    }

    async fn send(
        &self,
        request: reqwest::RequestBuilder,
        url: &Url,
        timeout: Duration,
    ) -> Result<Response, ClientError> {
        request.timeout(timeout).send().await.map_err(|e| {
            if let Some(verifier) = &self.pin {
                if let Some(presented) = verifier.mismatch() {
                    return ClientError::PinMismatch {
                        expected: verifier.pin(),
                        presented,
                    };
                }
            }
            ClientError::Connect {
                url: url.to_string(),
                detail: error_chain(&e),
            }
        })
    }
}

fn build_http(tls: ClientConfig) -> Result<reqwest::Client, ClientError> {
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .https_only(true)
        .connect_timeout(CONNECT_TIMEOUT)
        .pool_idle_timeout(IDLE_CONNECTION)
        .user_agent(concat!("muster-agent/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| ClientError::Tls(TlsError(error_chain(&e))))
}

/// A 2xx response's body, or the server's error as a [`ClientError::Status`].
async fn check_status(response: Response, url: &Url) -> Result<Vec<u8>, ClientError> {
    let status = response.status();
    let body = read_limited(response, url).await?;
    if status.is_success() {
        return Ok(body);
    }
    let (code, message) = match serde_json::from_slice::<ErrorBody>(&body) {
        Ok(e) => (Some(e.error.code), e.error.message),
        Err(_) => {
            let text = String::from_utf8_lossy(&body);
            let text = bounded(text.trim(), 300);
            let reason = status.canonical_reason().unwrap_or("error").to_string();
            (None, if text.is_empty() { reason } else { text })
        }
    };
    Err(ClientError::Status {
        url: url.to_string(),
        status: status.as_u16(),
        code,
        message,
    })
}

async fn expect_json<T: DeserializeOwned>(response: Response, url: &Url) -> Result<T, ClientError> {
    let body = check_status(response, url).await?;
    serde_json::from_slice(&body).map_err(|e| ClientError::BadResponse {
        url: url.to_string(),
        problem: e.to_string(),
    })
}

async fn read_limited(mut response: Response, url: &Url) -> Result<Vec<u8>, ClientError> {
    let mut body = Vec::new();
    loop {
        let chunk = response.chunk().await.map_err(|e| ClientError::Connect {
            url: url.to_string(),
            detail: error_chain(&e),
        })?;
        let Some(chunk) = chunk else { return Ok(body) };
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(ClientError::BadResponse {
                url: url.to_string(),
                problem: format!("the body is larger than {MAX_RESPONSE_BYTES} bytes"),
            });
        }
        body.extend_from_slice(&chunk);
    }
}

/// Lowercase hex SHA-256, the form config hashes take.
pub fn hex_sha256(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::tests::{server_cert, server_config};
    use rcgen::{KeyPair, PublicKeyData};
    use rustls::ServerConnection;

    #[test]
    fn clients_build_with_the_ring_provider() {
        let url = Url::parse("https://127.0.0.1:1").unwrap();
        let pin = Pin::of_spki(b"x");
        ServerClient::pinned(&url, pin).unwrap();
    }

    #[test]
    fn a_mismatching_pin_fails_the_request_naming_both_pins() {
        let key = KeyPair::generate().unwrap();
        let cert = server_cert(&key);
        let tls = server_config(cert, &key);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let port = listener.local_addr().unwrap().port();
            // A server doing TLS by hand that records whether any
            // application data (the HTTP request) ever arrived.
            let server = std::thread::spawn(move || {
                let (mut tcp, _) = listener.accept().unwrap();
                let mut conn = ServerConnection::new(tls).unwrap();
                for _ in 0..20 {
                    match conn.complete_io(&mut tcp) {
                        Ok((0, 0)) | Err(_) => return false,
                        Ok(_) => {
                            let mut buf = [0u8; 64];
                            if std::io::Read::read(&mut conn.reader(), &mut buf)
                                .is_ok_and(|n| n > 0)
                            {
                                return true;
                            }
                        }
                    }
                }
                false
            });
            let url = Url::parse(&format!("https://127.0.0.1:{port}")).unwrap();
            let expected = Pin::of_spki(b"not the server's key");
            let client = ServerClient::pinned(&url, expected).unwrap();
            let err = client.fetch_config(None).await.unwrap_err();
            match &err {
                ClientError::PinMismatch {
                    expected: e,
                    presented,
                } => {
                    assert_eq!(*e, expected);
                    assert_eq!(*presented, Pin::of_spki(&key.subject_public_key_info()));
                }
                other => panic!("wrong error: {other}"),
            }
            assert!(!err.is_transient());
            assert!(
                !server.join().unwrap(),
                "the request was sent despite the pin mismatch"
            );
        });
    }

    #[test]
    fn transient_and_refused_errors_are_told_apart() {
        let status = |status| ClientError::Status {
            url: "u".into(),
            status,
            code: None,
            message: "m".into(),
        };
        assert!(status(503).is_transient() && status(429).is_transient());
        assert!(!status(401).is_transient() && status(401).is_refused());
        assert!(status(403).is_refused() && !status(400).is_refused());
    }
}
