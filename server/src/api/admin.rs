//! The admin API: bearer admin token, served on the admin listener only.

use std::time::Duration;

use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::header;
use axum::http::request::Parts;
use axum::{Extension, Json};
use muster_shared::labels;
use muster_shared::wire::{HostInfo, TokenCreate, TokenCreated, TokenInfo};
use serde::Deserialize;

use super::{blocking, unix_now, ApiError, ApiJson, ConnInfo, Shared};
use crate::store::{AuditEntry, AuditRow};

/// Longest enrollment token lifetime.
const MAX_TOKEN_TTL: Duration = Duration::from_secs(365 * 86400);
/// Most enrollments one token may allow.
const MAX_TOKEN_USES: u32 = 100_000;

/// The name of the admin token a request carries.
pub struct Admin(pub String);

impl FromRequestParts<Shared> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Shared) -> Result<Self, ApiError> {
        const MISSING: &str = "missing or invalid admin token (Authorization: Bearer <token>)";
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or(ApiError::Unauthenticated(MISSING))?
            .trim()
            .to_string();
        match blocking(app, move |app| app.store.verify_admin_token(&token)).await? {
            Ok(Some(name)) => Ok(Admin(name)),
            Ok(None) => Err(ApiError::Unauthenticated(MISSING)),
            Err(e) => Err(ApiError::internal("admin token lookup failed", e)),
        }
    }
}

pub async fn create_token(
    State(app): State<Shared>,
    Extension(conn): Extension<ConnInfo>,
    Admin(admin): Admin,
    ApiJson(req): ApiJson<TokenCreate>,
) -> Result<Json<TokenCreated>, ApiError> {
    labels::check_operator_labels(&req.labels).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let ttl = req
        .ttl_secs
        .map(Duration::from_secs)
        .unwrap_or(app.settings.token_ttl);
    if ttl.is_zero() || ttl > MAX_TOKEN_TTL {
        return Err(ApiError::BadRequest(
            "ttl must be between 1 second and 365 days".into(),
        ));
    }
    let uses = req.uses.unwrap_or(1);
    if uses == 0 || uses > MAX_TOKEN_USES {
        return Err(ApiError::BadRequest(format!(
            "uses must be between 1 and {MAX_TOKEN_USES}"
        )));
    }
    let actor = admin.clone();
    let (secret, info) = blocking(&app, move |app| {
        let now = unix_now();
        app.store
            .create_enroll_token(&req.labels, now + ttl.as_secs() as i64, uses, &actor, now)
    })
    .await?
    .map_err(|e| ApiError::internal("cannot create token", e))?;
    tracing::info!(token = %info.id, admin = %admin, uses, "created enrollment token");
    app.audit(AuditEntry {
        at: unix_now(),
        actor: &admin,
        action: "token.create",
        target: Some(&info.id),
        outcome: "ok",
        detail: Some(&serde_json::to_string(&info.labels).unwrap_or_default()),
        source: Some(&conn.peer.ip().to_string()),
    });
    let enroll_command = format!(
        "muster-agent enroll --server {} --token {} --pin {}",
        app.settings.public_url,
        secret.expose(),
        app.pin
    );
    let install_command = super::install::one_liner(
        &app.settings.public_url,
        &app.pin.to_string(),
        secret.expose(),
    );
    Ok(Json(TokenCreated {
        token: secret.expose().to_string(),
        info,
        enroll_command,
        install_command,
    }))
}

pub async fn list_tokens(
    State(app): State<Shared>,
    _admin: Admin,
) -> Result<Json<Vec<TokenInfo>>, ApiError> {
    blocking(&app, |app| app.store.list_enroll_tokens(unix_now()))
        .await?
        .map(Json)
        .map_err(|e| ApiError::internal("cannot list tokens", e))
}

pub async fn revoke_token(
    State(app): State<Shared>,
    Extension(conn): Extension<ConnInfo>,
    Admin(admin): Admin,
    Path(id): Path<String>,
) -> Result<Json<TokenInfo>, ApiError> {
    let lookup = id.clone();
    let info = blocking(&app, move |app| {
        app.store.revoke_enroll_token(&lookup, unix_now())
    })
    .await?
    .map_err(|e| ApiError::internal("cannot revoke token", e))?
    .ok_or_else(|| ApiError::NotFound(format!("no enrollment token {id:?}")))?;
    tracing::info!(token = %info.id, admin = %admin, "revoked enrollment token");
    app.audit(AuditEntry {
        at: unix_now(),
        actor: &admin,
        action: "token.revoke",
        target: Some(&info.id),
        outcome: "ok",
        detail: None,
        source: Some(&conn.peer.ip().to_string()),
    });
    Ok(Json(info))
}

pub async fn list_hosts(
    State(app): State<Shared>,
    _admin: Admin,
) -> Result<Json<Vec<HostInfo>>, ApiError> {
    let hosts = blocking(&app, |app| app.store.hosts())
        .await?
        .map_err(|e| ApiError::internal("cannot list hosts", e))?;
    Ok(Json(hosts.iter().map(|h| h.info()).collect()))
}

pub async fn show_host(
    State(app): State<Shared>,
    _admin: Admin,
    Path(id): Path<String>,
) -> Result<Json<HostInfo>, ApiError> {
    let lookup = id.clone();
    blocking(&app, move |app| app.store.host(&lookup))
        .await?
        .map_err(|e| ApiError::internal("cannot read host", e))?
        .map(|h| Json(h.info()))
        .ok_or_else(|| ApiError::NotFound(format!("no host {id:?}")))
}

#[derive(Deserialize)]
pub struct AuditQuery {
    #[serde(default = "default_limit")]
    limit: u32,
}

fn default_limit() -> u32 {
    100
}

/// The newest audit entries, oldest first.
pub async fn audit(
    State(app): State<Shared>,
    _admin: Admin,
    Query(q): Query<AuditQuery>,
) -> Result<Json<Vec<AuditRow>>, ApiError> {
    let limit = q.limit.min(10_000);
    blocking(&app, move |app| app.store.audit_tail(limit))
        .await?
        .map(Json)
        .map_err(|e| ApiError::internal("cannot read audit log", e))
}
