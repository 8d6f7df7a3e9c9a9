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

pub use crate::http::{blocking, ApiError, ConnInfo, Shared, BATCH_BODY_BYTES};

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, Request};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use muster_shared::wire::{self, MAX_BODY_BYTES};
use serde::de::DeserializeOwned;

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

/// The admin API's routes (served on the admin listener beside the
/// console: `serve` mounts both).
pub fn admin_router() -> Router<Shared> {
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
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
}

pub use crate::fleet::unix_now;
