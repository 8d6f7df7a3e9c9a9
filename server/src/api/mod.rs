//! The HTTP APIs: agent-facing routes (enrollment, config, status, renewal)
//! and the admin API, with the one error type that maps every failure to a
//! status code and a JSON error body.

pub mod admin;
pub mod agent;
pub mod enroll;
pub mod facts;
pub mod fleet;
pub mod install;
pub mod monitoring;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use muster_shared::wire::{self, ErrorBody, ErrorDetail, MAX_BODY_BYTES};
use serde::de::DeserializeOwned;

use crate::app::App;
use crate::fleet::FleetError;

pub type Shared = Arc<App>;

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
            FleetError::BadEdit(_) | FleetError::RequestedLabels(_) | FleetError::Schema { .. } => {
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

/// `Json<T>` whose rejections (malformed JSON, wrong fields, oversized body)
/// are answered as `ApiError`s.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::TooLarge,
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::Unsupported(rejection.body_text()),
        _ => ApiError::BadRequest(rejection.body_text()),
    }
}

/// Largest batch import body: 10 000 rows of a few hundred bytes.
pub const BATCH_BODY_BYTES: usize = 4 * 1024 * 1024;

/// Where the admin listener serves its OpenAPI description.
pub const OPENAPI_PATH: &str = "/v1/admin/openapi.json";

/// The admin API's OpenAPI 3 description (no token needed: it holds no data).
pub const OPENAPI: &str = include_str!("../../openapi.json");

async fn openapi() -> impl IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        OPENAPI,
    )
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such route".into())
}

/// Routes served on the agent listener.
pub fn agent_router(app: Shared) -> Router {
    Router::new()
        .route(wire::ENROLL_PATH, post(enroll::enroll))
        .route(wire::CONFIG_PATH, get(agent::config))
        .route(wire::STATUS_PATH, post(agent::status))
        .route(wire::RENEW_PATH, post(agent::renew))
        .route(install::SCRIPT_PATH, get(install::script))
        .route(install::DOWNLOAD_PREFIX, get(install::index))
        .route("/v1/download/{name}", get(install::file))
        .route(wire::FACTS_PATH, post(facts::facts))
        .route("/healthz", get(monitoring::healthz))
        .route("/readyz", get(monitoring::readyz))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .route_layer(axum::middleware::from_fn_with_state(
            app.clone(),
            monitoring::track_agent_requests,
        ))
        .with_state(app)
}

/// Routes served on the admin listener.
pub fn admin_router(app: Shared) -> Router {
    Router::new()
        .route(
            "/v1/admin/tokens",
            post(admin::create_token).get(admin::list_tokens),
        )
        .route("/v1/admin/tokens/{id}/revoke", post(admin::revoke_token))
        .route("/v1/admin/hosts", get(admin::list_hosts))
        .route("/v1/admin/hosts/labels", post(fleet::edit_labels))
        .route("/v1/admin/hosts/{id}", get(admin::show_host))
        .route("/v1/admin/hosts/{id}/labels", post(fleet::edit_host_labels))
        .route(
            "/v1/admin/hosts/{id}/decommission",
            post(fleet::decommission),
        )
        .route("/v1/admin/hosts/{id}/replace", post(fleet::replace))
        .route("/v1/admin/labels/check", get(fleet::labels_check))
        .route(
            "/v1/admin/batches",
            post(fleet::import_batch)
                .get(fleet::list_batches)
                .layer(DefaultBodyLimit::max(BATCH_BODY_BYTES)),
        )
        .route("/v1/admin/batches/{id}", get(fleet::batch_status))
        .route("/v1/admin/batches/{id}/retry", post(fleet::retry_batch))
        .route("/v1/admin/audit", get(admin::audit))
        .route(
            "/v1/admin/reader-tokens",
            post(admin::create_reader_token).get(admin::list_reader_tokens),
        )
        .route(
            "/v1/admin/reader-tokens/{id}/revoke",
            post(admin::revoke_reader_token),
        )
        .route(OPENAPI_PATH, get(openapi))
        .route("/v1/sd/targets", get(monitoring::sd_targets))
        .route("/metrics", get(monitoring::metrics))
        .route("/healthz", get(monitoring::healthz))
        .route("/readyz", get(monitoring::readyz))
        .merge(crate::console::router(
            &app.settings.console_frame_ancestors,
        ))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(app)
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

pub use crate::fleet::unix_now;
