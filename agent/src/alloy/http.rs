//! Alloy's own HTTP endpoints on this host (plain `http://`, Alloy's
//! default): `/-/ready`, polled after a reload.

use std::time::Duration;

use rustls::{ClientConfig, RootCertStore};
use tokio::time::Instant;

use crate::error_text::error_chain;
use crate::tls::provider;

/// How often the readiness URL is asked.
const READY_POLL: Duration = Duration::from_millis(200);

/// An HTTP client for Alloy's local endpoints. HTTPS URLs would need a root
/// store, which the agent has no use for otherwise, so they fail
/// verification.
pub fn local_client() -> Result<reqwest::Client, String> {
    let tls = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("cannot set up TLS: {e}"))?
        .with_root_certificates(RootCertStore::empty())
        .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .no_proxy()
        .connect_timeout(Duration::from_secs(2))
        .build()
        .map_err(|e| format!("cannot set up an HTTP client: {}", error_chain(&e)))
}

/// Asks `url` until it answers 200 or `timeout` has passed; the error says
/// what it answered last.
pub async fn wait_ready(url: &str, timeout: Duration) -> Result<(), String> {
    let client = local_client()?;
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let attempt = client
            .get(url)
            .timeout(left.clamp(Duration::from_millis(50), Duration::from_secs(5)))
            .send()
            .await;
        let last = match attempt {
            Ok(r) if r.status() == reqwest::StatusCode::OK => return Ok(()),
            Ok(r) => format!("answered {}", r.status()),
            Err(e) => error_chain(&e),
        };
        if Instant::now() + READY_POLL >= deadline {
            return Err(format!(
                "{url} not ready after {}: {last}",
                humantime::format_duration(timeout)
            ));
        }
        tokio::time::sleep(READY_POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_address_nobody_listens_on_is_not_ready_and_says_why() {
        local_client().unwrap();
        // Bound and dropped: nothing listens there now.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("http://127.0.0.1:{port}/-/ready");
        let err = wait_ready(&url, Duration::from_millis(300))
            .await
            .unwrap_err();
        assert!(
            err.starts_with(&format!("{url} not ready after 300ms: ")),
            "{err}"
        );
    }
}
