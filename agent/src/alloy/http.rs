//! Alloy's own HTTP endpoints on this host (plain `http://`, Alloy's
//! default): `/-/reload`, which loads the config file and says whether it
//! took it, and `/-/ready`.
//!
//! `/-/reload` (grafana/alloy `internal/service/http/http.go`): GET or POST
//! calls the runtime's reload function, which reads the config file, parses
//! it and builds its components; on error it answers 400 with the error text
//! (`http.Error`) and keeps running the last good config, else 200 "config
//! reloaded". `/-/ready` only says the first config ever loaded, so it
//! cannot tell whether a reload worked.

use std::time::Duration;

use rustls::{ClientConfig, RootCertStore};
use tokio::time::Instant;

use crate::error_text::{bounded, error_chain};
use crate::tls::provider;

/// How often the readiness URL is asked.
const READY_POLL: Duration = Duration::from_millis(200);
/// Most bytes of Alloy's error text kept.
const MAX_ERROR: usize = 3072;

/// Why Alloy did not confirm a reload.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReloadError {
    /// Nothing answers at the URL: Alloy is not running, or listens
    /// elsewhere. Only then is another way of reloading worth trying.
    #[error("{url} is unreachable: {detail}")]
    Unreachable { url: String, detail: String },
    /// Alloy answered, and did not take the config: its own error text.
    #[error("Alloy refused the config (HTTP {status} from {url}): {text}")]
    Refused {
        url: String,
        status: u16,
        text: String,
    },
    /// Alloy took the request but no answer came (in time).
    #[error("{url}: {detail}")]
    NoAnswer { url: String, detail: String },
}

/// Asks Alloy to load its config file again (`POST url`); `Ok` only when it
/// answers 2xx, i.e. it built every component of the new config.
pub async fn reload(url: &str, timeout: Duration) -> Result<(), ReloadError> {
    let client = local_client().map_err(|detail| ReloadError::NoAnswer {
        url: url.to_string(),
        detail,
    })?;
    let response = client.post(url).timeout(timeout).send().await;
    let response = match response {
        Ok(r) => r,
        Err(e) if e.is_connect() => {
            return Err(ReloadError::Unreachable {
                url: url.to_string(),
                detail: error_chain(&e),
            })
        }
        Err(e) => {
            return Err(ReloadError::NoAnswer {
                url: url.to_string(),
                detail: error_chain(&e),
            })
        }
    };
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let text = match response.text().await {
        Ok(text) => bounded(text.trim(), MAX_ERROR),
        Err(e) => format!("(the error text could not be read: {})", error_chain(&e)),
    };
    Err(ReloadError::Refused {
        url: url.to_string(),
        status: status.as_u16(),
        text,
    })
}

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
