//! What the admin API and the web console share below both of them: the
//! connection info the TLS layer attaches to every request, [`ApiError`]
//! (every failure mapped to a status and a message, [`FleetError`]s
//! included), running blocking work off the async workers, and admin
//! authentication (the token check and the per-source limit on refusals,
//! shared by the API's bearer check and the console's sign-in). `serve`
//! mounts the API's and the console's routes side by side; neither imports
//! the other.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use muster_shared::wire::{self, ErrorBody, ErrorDetail, MAX_BODY_BYTES};

use crate::app::App;
use crate::fleet::{unix_now, FleetError};
use crate::store::AuditEntry;

pub type Shared = Arc<App>;

/// Largest batch import body: 10 000 rows of a few hundred bytes.
pub const BATCH_BODY_BYTES: usize = 4 * 1024 * 1024;

/// What the TLS layer knows about a connection, attached to every request.
#[derive(Clone, Debug)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    /// DER of the client certificate, verified against the Muster CA during
    /// the handshake; `None` when the client presented none.
    pub client_cert: Option<Arc<Vec<u8>>>,
}

/// Every error an API answers with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("invalid enrollment token")]
    InvalidToken,
    #[error("{0}")]
    Unauthenticated(&'static str),
    #[error("{0}")]
    Forbidden(&'static str),
    /// A 403 whose reason depends on the request.
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// The agent's certificate was revoked (host decommissioned or taken
    /// over): the agent must stop, not retry.
    #[error("this agent's certificate is revoked (the host was decommissioned or replaced): stop, and re-enroll with a new token if the host should come back")]
    Revoked,
    /// A batch file with bad rows: the summary, and each row's problem.
    #[error("{summary}")]
    InvalidRows {
        summary: String,
        rows: Vec<crate::batch::RowError>,
    },
    #[error("request body is larger than {MAX_BODY_BYTES} bytes")]
    TooLarge,
    #[error("{0}")]
    Unsupported(String),
    /// Too many refused admin authentications from this source.
    #[error("too many refused admin authentications from this address; try again in {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },
    /// Details are logged, never sent.
    #[error("internal error; the server log has the details")]
    Internal,
}

impl ApiError {
    /// Logs `err` and answers with a bare 500.
    pub fn internal(context: &str, err: impl std::fmt::Display) -> ApiError {
        tracing::error!(error = %err, "{context}");
        ApiError::Internal
    }

    /// The HTTP status this error is answered with.
    pub fn status(&self) -> StatusCode {
        self.status_and_code().0
    }

    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::InvalidToken => (StatusCode::UNAUTHORIZED, "invalid_token"),
            ApiError::Unauthenticated(_) => (StatusCode::UNAUTHORIZED, "unauthenticated"),
            ApiError::Forbidden(_) | ApiError::Refused(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::Revoked => (StatusCode::FORBIDDEN, wire::CODE_REVOKED),
            ApiError::InvalidRows { .. } => (StatusCode::BAD_REQUEST, "invalid_rows"),
            ApiError::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            ApiError::Unsupported(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            ApiError::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            ApiError::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let mut message = self.to_string();
        if let ApiError::InvalidRows { rows, .. } = &self {
            // The message alone tells a person everything; `rows` is for scripts.
            for row in rows {
                message.push_str(&format!("\n  {row}"));
            }
            let body = serde_json::json!({
                "error": {"code": code, "message": message},
                "rows": rows,
            });
            return (status, Json(body)).into_response();
        }
        let body = ErrorBody {
            error: ErrorDetail {
                code: code.to_string(),
                message,
            },
        };
        if let ApiError::RateLimited { retry_after_secs } = &self {
            let retry = [(
                axum::http::header::RETRY_AFTER,
                retry_after_secs.to_string(),
            )];
            return (status, retry, Json(body)).into_response();
        }
        (status, Json(body)).into_response()
    }
}

impl From<FleetError> for ApiError {
    fn from(e: FleetError) -> ApiError {
        match e {
            FleetError::Token(_) => ApiError::InvalidToken,
            FleetError::MachineConflict { ref host_id, .. } => ApiError::Conflict(format!(
                "{e}. If this machine is a reinstall of {host_id}, an admin runs \
                 `muster-server hosts replace {host_id}` and you enroll again with the token it \
                 prints; if it is a clone, give it its own machine-id (systemd-machine-id-setup) \
                 and enroll again"
            )),
            FleetError::HostnameMismatch { .. } => ApiError::Forbidden(
                "this enrollment token was issued for another hostname (batch enrollment): use the token issued for this host",
            ),
            FleetError::ReplacementMismatch { .. } | FleetError::TargetMoved { .. } => {
                ApiError::Refused(e.to_string())
            }
            FleetError::ReplayMismatch { .. }
            | FleetError::RenewTooEarly { .. }
            | FleetError::RenewKeyMismatch
            | FleetError::MachineIdChanged { .. } => ApiError::Conflict(e.to_string()),
            FleetError::AlreadyDecommissioned { host_id, at } => ApiError::Conflict(format!(
                "host {host_id} was already decommissioned at {}",
                crate::cli::time(at)
            )),
            FleetError::UnknownCert => {
                ApiError::Unauthenticated("this client certificate belongs to no enrolled host")
            }
            FleetError::Revoked => ApiError::Revoked,
            FleetError::Expired => ApiError::Forbidden(
                "this agent's certificate has expired: re-enroll with a new token",
            ),
            FleetError::NotFound(m) => ApiError::NotFound(m),
            FleetError::InvalidRows { summary, rows } => ApiError::InvalidRows { summary, rows },
            FleetError::NotRetryable { .. } => ApiError::Conflict(e.to_string()),
            FleetError::BadEdit(_)
            | FleetError::BadToken(_)
            | FleetError::RequestedLabels(_)
            | FleetError::Schema { .. } => {
                ApiError::BadRequest(e.to_string())
            }
            FleetError::Csr(csr) if csr.is_bad_request() => {
                ApiError::BadRequest(format!("certificate signing request refused: {csr}"))
            }
            other @ (FleetError::Csr(_)
            | FleetError::Render { .. }
            | FleetError::SchemaSetting(_)
            | FleetError::Store(_)) => ApiError::internal("fleet operation failed", other),
        }
    }
}

/// Runs a blocking closure (database, signing, rendering) off the async
/// workers.
pub async fn blocking<T: Send + 'static>(
    app: &Shared,
    f: impl FnOnce(&App) -> T + Send + 'static,
) -> Result<T, ApiError> {
    let app = app.clone();
    tokio::task::spawn_blocking(move || f(&app))
        .await
        .map_err(|e| ApiError::internal("blocking task failed", e))
}

/// The token of an `Authorization: Bearer <token>` header, trimmed.
pub fn bearer_token(headers: &axum::http::HeaderMap) -> Option<String> {
    headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_string())
}

/// The name of the admin token `token`, if it is valid and not revoked.
pub async fn verify_admin(app: &Shared, token: String) -> Result<Option<String>, ApiError> {
    blocking(app, move |app| app.store.verify_admin_token(&token))
        .await?
        .map_err(|e| ApiError::internal("admin token lookup failed", e))
}

/// Turns `source` away (429) while it is over its refused-authentication
/// limit; checked before any credential is looked at.
pub fn throttle(app: &Shared, source: Option<IpAddr>) -> Result<(), ApiError> {
    let Some(ip) = source else { return Ok(()) };
    app.auth_limiter
        .check(ip, Instant::now())
        .map_err(|retry_after| ApiError::RateLimited {
            retry_after_secs: retry_after.as_secs(),
        })
}

/// Counts a refused admin authentication against its source and audits it:
/// the first of the source's window at once, the rest summed when the window
/// closes (never the token itself).
pub fn refused_admin(app: &Shared, source: Option<IpAddr>, reason: &str) {
    let text = source.map(|s| s.to_string());
    tracing::warn!(
        source = text.as_deref().unwrap_or("-"),
        reason,
        "admin authentication refused"
    );
    let Some(ip) = source else {
        app.audit(refusal(None, reason));
        return;
    };
    let refused = app.auth_limiter.refuse(ip, Instant::now());
    if let Some(closed) = &refused.closed {
        let detail = crate::authlimit::summary(closed, app.auth_limiter.window());
        app.audit(refusal(text.as_deref(), &detail));
    }
    if refused.first {
        app.audit(refusal(text.as_deref(), reason));
    }
}

fn refusal<'a>(source: Option<&'a str>, detail: &'a str) -> AuditEntry<'a> {
    AuditEntry {
        at: unix_now(),
        actor: "anonymous",
        action: "admin.auth",
        target: None,
        outcome: "refused",
        detail: Some(detail),
        source,
    }
}
