//! `muster-agent enroll`: gather and check facts, make or load the key, send
//! token + CSR + facts + idempotency key to a server trusted by its pin, retry
//! what is worth retrying, and store the identity that comes back.

use std::time::Duration;

use muster_shared::labels::Labels;
use muster_shared::pin::Pin;
use muster_shared::wire::EnrollRequest;
use tracing::{info, warn};

use crate::backoff::random_unit;
use crate::client::{ClientError, ServerClient};
use crate::config::{Config, ConfigError};
use crate::facts::{self, FactsError};
use crate::identity::{self, Identity, IdentityError, StateDir};

/// An enrollment token: a secret, never logged.
#[derive(Clone)]
pub struct Token(pub String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Facts(#[from] FactsError),
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error("the server refused the enrollment: {message} (HTTP {status}{})", code.as_deref().map(|c| format!(", {c}")).unwrap_or_default())]
    Refused {
        status: u16,
        code: Option<String>,
        message: String,
    },
    #[error(transparent)]
    Client(ClientError),
    #[error("the token is empty")]
    EmptyToken,
}

impl EnrollError {
    /// A problem with what was given (flags, config, this host's facts)
    /// rather than with the server or the network.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            EnrollError::Config(_) | EnrollError::Facts(_) | EnrollError::EmptyToken
        )
    }
}

impl From<ClientError> for EnrollError {
    fn from(e: ClientError) -> EnrollError {
        match e {
            ClientError::Status {
                status,
                code,
                message,
                ..
            } if (400..500).contains(&status) => EnrollError::Refused {
                status,
                code,
                message,
            },
            other => EnrollError::Client(other),
        }
    }
}

/// How hard to try.
#[derive(Clone, Debug)]
pub struct Retry {
    pub attempts: u32,
    pub first_wait: Duration,
}

impl Default for Retry {
    fn default() -> Retry {
        Retry {
            attempts: 5,
            first_wait: Duration::from_secs(1),
        }
    }
}

/// Enrolls this host with the server in `config` (already merged and written
/// by the caller), trusting the server by `pin`. `labels` are the ones the
/// host asks for (the token's own labels win on the server).
pub async fn enroll(
    config: &Config,
    token: &Token,
    pin: Pin,
    labels: &Labels,
    retry: &Retry,
) -> Result<Identity, EnrollError> {
    if token.0.trim().is_empty() {
        return Err(EnrollError::EmptyToken);
    }
    let server = match &config.server {
        Some(s) => crate::config::parse_server(s)?,
        None => {
            return Err(ConfigError::Value {
                field: "server",
                problem: "is required to enroll (--server)".into(),
            }
            .into())
        }
    };
    let facts = facts::collect(config, &server).await?;
    let state = StateDir::new(&config.state_dir);
    let key = state.load_or_generate_key()?;
    let request = EnrollRequest {
        token: token.0.trim().to_string(),
        csr_pem: identity::csr_pem(&key, &facts.hostname)?,
        facts,
        idempotency_key: state.attempt_key()?,
        labels: labels.clone(),
    };
    let client = ServerClient::pinned(&server, pin)?;

    let mut wait = retry.first_wait;
    let mut attempt = 1;
    let response = loop {
        match client.enroll(&request).await {
            Ok(response) => break response,
            Err(e) if e.is_transient() && attempt < retry.attempts => {
                // Jitter keeps a fleet enrolled by one script from retrying in step.
                let pause = wait.mul_f64(0.5 + random_unit() / 2.0);
                warn!(attempt, error = %e, retry_in = ?pause, "enrollment attempt failed; retrying with the same idempotency key");
                tokio::time::sleep(pause).await;
                wait = wait.saturating_mul(2);
                attempt += 1;
            }
            Err(e) => return Err(e.into()),
        }
    };

    let identity = Identity {
        host_id: response.host_id,
        server: config.server.clone().unwrap_or_default(),
        enrolled_at: identity::unix_now(),
    };
    state.store_enrollment(&key, &identity, &response.certificate_pem, &response.ca_pem)?;
    state.clear_attempt()?;
    info!(host = %identity.host_id, server = %identity.server, "enrolled");
    Ok(identity)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_never_shows_in_debug_output() {
        let t = Token("secret-token".into());
        assert_eq!(format!("{t:?}"), "***");
    }

    #[test]
    fn client_4xx_becomes_a_refusal_with_the_servers_message() {
        let e: EnrollError = ClientError::Status {
            url: "https://m/v1/enroll".into(),
            status: 401,
            code: Some("invalid_token".into()),
            message: "invalid enrollment token".into(),
        }
        .into();
        assert_eq!(
            e.to_string(),
            "the server refused the enrollment: invalid enrollment token (HTTP 401, invalid_token)"
        );
        assert!(!e.is_usage());
    }

    #[tokio::test]
    async fn bad_facts_fail_before_any_network_or_key() {
        let dir = tempfile::tempdir().unwrap();
        // A missing machine id is no longer a bad fact (the agent generates
        // one); a hostname the server would refuse is.
        let id_file = dir.path().join("machine-id");
        std::fs::write(&id_file, "0123456789abcdef0123456789abcdef\n").unwrap();
        let config = Config {
            server: Some("https://127.0.0.1:1".into()),
            state_dir: dir.path().join("state"),
            machine_id_file: id_file,
            hostname: Some("no such host!".into()),
            ..Config::default()
        };
        let pin = Pin::of_spki(b"x");
        let err = enroll(
            &config,
            &Token("t".into()),
            pin,
            &Labels::new(),
            &Retry::default(),
        )
        .await
        .unwrap_err();
        assert!(err.is_usage(), "{err}");
        assert!(err.to_string().contains("hostname"), "{err}");
        assert!(!config.state_dir.exists());
    }

    #[tokio::test]
    async fn an_unreachable_server_is_retried_then_reported_keeping_the_attempt_key() {
        let dir = tempfile::tempdir().unwrap();
        let id_file = dir.path().join("machine-id");
        std::fs::write(&id_file, "abc123\n").unwrap();
        // A port nothing listens on: bind, note the port, close.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = Config {
            server: Some(format!("https://127.0.0.1:{port}")),
            state_dir: dir.path().join("state"),
            machine_id_file: id_file,
            hostname: Some("web-01".into()),
            ..Config::default()
        };
        let retry = Retry {
            attempts: 2,
            first_wait: Duration::from_millis(10),
        };
        let err = enroll(
            &config,
            &Token("t".into()),
            Pin::of_spki(b"x"),
            &Labels::new(),
            &retry,
        )
        .await
        .unwrap_err();
        assert!(
            matches!(err, EnrollError::Client(ClientError::Connect { .. })),
            "{err}"
        );
        let state = StateDir::new(&config.state_dir);
        let key = std::fs::read_to_string(state.file(identity::ATTEMPT_FILE)).unwrap();
        assert_eq!(
            state.attempt_key().unwrap(),
            key,
            "a rerun must reuse the idempotency key"
        );
        assert!(state.load_identity().unwrap().is_none());
    }
}
