//! The admin API: bearer admin token, served on the admin listener only.

use std::time::Duration;

use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::{Extension, Json};
use muster_shared::labels;
use serde::Deserialize;

use super::{blocking, unix_now, ApiError, ApiJson, ConnInfo, Shared};
use crate::admin_wire::{HostInfo, HostState, TokenCreate, TokenCreated, TokenInfo};
use crate::http::{refused_admin, throttle, verify_admin};
use crate::store::{AuditEntry, AuditFilter, AuditRow};

/// The name of the admin token a request carries.
pub struct Admin(pub String);

impl FromRequestParts<Shared> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Shared) -> Result<Self, ApiError> {
        const MISSING: &str = "missing or invalid admin token (Authorization: Bearer <token>)";
        let source = parts.extensions.get::<ConnInfo>().map(|c| c.peer.ip());
        throttle(app, source)?;
        let Some(token) = crate::http::bearer_token(&parts.headers) else {
            refused_admin(app, source, "no bearer token");
            return Err(ApiError::Unauthenticated(MISSING));
        };
        match verify_admin(app, token).await? {
            Some(name) => Ok(Admin(name)),
            None => {
                refused_admin(app, source, "invalid or revoked admin token");
                Err(ApiError::Unauthenticated(MISSING))
            }
        }
    }
}

/// `POST /v1/admin/reader-tokens`: a targets-reader token for a Prometheus
/// (`http_sd_configs` → `/v1/sd/targets`, and `/metrics`).
pub async fn create_reader_token(
    State(app): State<Shared>,
    Extension(conn): Extension<ConnInfo>,
    Admin(admin): Admin,
    ApiJson(req): ApiJson<crate::admin_wire::ReaderTokenCreate>,
) -> Result<Json<crate::admin_wire::ReaderTokenCreated>, ApiError> {
    let name = req.name.trim().to_string();
    if name.is_empty() || name.len() > 64 || name.chars().any(char::is_control) {
        return Err(ApiError::BadRequest(
            "name must be 1 to 64 characters without control characters".into(),
        ));
    }
    let (actor, for_store) = (admin.clone(), name.clone());
    let (id, secret) = blocking(&app, move |app| {
        app.store
            .create_reader_token(&for_store, &actor, unix_now())
    })
    .await?
    .map_err(|e| ApiError::internal("cannot create reader token", e))?;
    tracing::info!(token = %id, admin = %admin, name = %name, "created targets-reader token");
    app.audit(AuditEntry {
        at: unix_now(),
        actor: &admin,
        action: "reader_token.create",
        target: Some(&id),
        outcome: "ok",
        detail: Some(&name),
        source: Some(&conn.peer.ip().to_string()),
    });
    Ok(Json(crate::admin_wire::ReaderTokenCreated {
        id,
        name,
        token: secret.expose().to_string(),
    }))
}

/// `GET /v1/admin/reader-tokens`: every targets-reader token, no secrets.
pub async fn list_reader_tokens(
    State(app): State<Shared>,
    Admin(_): Admin,
) -> Result<Json<Vec<crate::admin_wire::ReaderTokenInfo>>, ApiError> {
    let tokens = blocking(&app, |app| app.store.reader_tokens())
        .await?
        .map_err(|e| ApiError::internal("cannot list reader tokens", e))?;
    Ok(Json(tokens))
}

/// `POST /v1/admin/reader-tokens/{id}/revoke`: the token reads nothing more.
pub async fn revoke_reader_token(
    State(app): State<Shared>,
    Extension(conn): Extension<ConnInfo>,
    Admin(admin): Admin,
    Path(id): Path<String>,
) -> Result<Json<crate::admin_wire::ReaderTokenInfo>, ApiError> {
    let lookup = id.clone();
    let info = blocking(&app, move |app| {
        app.store.revoke_reader_token(&lookup, unix_now())
    })
    .await?
    .map_err(|e| ApiError::internal("cannot revoke reader token", e))?
    .ok_or_else(|| ApiError::NotFound(format!("no targets-reader token {id:?}")))?;
    tracing::info!(token = %info.id, admin = %admin, "revoked targets-reader token");
    app.audit(AuditEntry {
        at: unix_now(),
        actor: &admin,
        action: "reader_token.revoke",
        target: Some(&info.id),
        outcome: "ok",
        detail: Some(&info.name),
        source: Some(&conn.peer.ip().to_string()),
    });
    Ok(Json(info))
}

/// The token lifetime a request asks for (the server's default when absent),
/// within bounds.
pub fn token_ttl(app: &Shared, secs: Option<u64>) -> Result<Duration, ApiError> {
    Ok(crate::fleet::token_ttl(&app.settings, secs)?)
}

pub async fn create_token(
    State(app): State<Shared>,
    Extension(conn): Extension<ConnInfo>,
    Admin(admin): Admin,
    ApiJson(req): ApiJson<TokenCreate>,
) -> Result<Json<TokenCreated>, ApiError> {
    let ttl = token_ttl(&app, req.ttl_secs)?;
    let source = conn.peer.ip().to_string();
    let created = blocking(&app, move |app| {
        let (secret, info) = app.fleet().create_token(
            &req.labels,
            ttl,
            req.uses.unwrap_or(1),
            &admin,
            &source,
            unix_now(),
        )?;
        Ok::<_, crate::fleet::FleetError>(app.token_created(&secret, info))
    })
    .await??;
    Ok(Json(created))
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
    let source = conn.peer.ip().to_string();
    let info = blocking(&app, move |app| {
        app.fleet().revoke_token(&id, &admin, &source, unix_now())
    })
    .await??;
    Ok(Json(info))
}

/// `GET /v1/admin/hosts` filters.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostsQuery {
    /// `name=value[,name=value]` over the full label set.
    #[serde(default)]
    selector: Option<String>,
    /// Only hosts in this state (as shown).
    #[serde(default)]
    state: Option<String>,
    /// Include decommissioned hosts.
    #[serde(default)]
    all: bool,
}

pub async fn list_hosts(
    State(app): State<Shared>,
    _admin: Admin,
    Query(q): Query<HostsQuery>,
) -> Result<Json<Vec<HostInfo>>, ApiError> {
    let selector = q
        .selector
        .as_deref()
        .map(labels::parse_selector)
        .transpose()
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let state = match q.state.as_deref() {
        None => None,
        Some("pending") => {
            return Err(ApiError::BadRequest(
                "pending hosts are batch rows that have not enrolled yet: see `muster-server batch status BATCH` (GET /v1/admin/batches/{id})".into(),
            ))
        }
        Some(text) => Some(HostState::parse(text).ok_or_else(|| {
            let names: Vec<&str> = HostState::ALL.iter().map(|s| s.as_str()).collect();
            ApiError::BadRequest(format!(
                "unknown state {text:?}; states are {}",
                names.join(", ")
            ))
        })?),
    };
    // Asking for decommissioned hosts implies including them.
    let all = q.all || state == Some(HostState::Decommissioned);
    let hosts = blocking(&app, move |app| {
        if all {
            app.store.hosts_all()
        } else {
            app.store.hosts()
        }
    })
    .await?
    .map_err(|e| ApiError::internal("cannot list hosts", e))?;
    let now = unix_now();
    Ok(Json(
        hosts
            .iter()
            .filter(|h| {
                selector
                    .as_ref()
                    .is_none_or(|s| labels::matches(s, &h.labels()))
            })
            .map(|h| app.host_info(h, now))
            .filter(|h| state.is_none_or(|s| h.state == s))
            .collect(),
    ))
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
        .map(|h| Json(app.host_info(&h, unix_now())))
        .ok_or_else(|| ApiError::NotFound(format!("no host {id:?}")))
}

/// `GET /v1/admin/audit` filters.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    #[serde(default = "default_limit")]
    limit: u32,
    /// Entries about or by this host (or batch, or token: any target).
    #[serde(default)]
    host: Option<String>,
    /// Entries by this actor (an admin token's name, a host id, `server`).
    #[serde(default)]
    actor: Option<String>,
    /// Unix seconds: entries at or after.
    #[serde(default)]
    since: Option<i64>,
}

fn default_limit() -> u32 {
    100
}

/// The newest matching audit entries, oldest first.
pub async fn audit(
    State(app): State<Shared>,
    _admin: Admin,
    Query(q): Query<AuditQuery>,
) -> Result<Json<Vec<AuditRow>>, ApiError> {
    let filter = AuditFilter {
        host: q.host,
        actor: q.actor,
        since: q.since,
        limit: q.limit.clamp(1, 10_000),
    };
    blocking(&app, move |app| app.store.audit_query(&filter))
        .await?
        .map(Json)
        .map_err(|e| ApiError::internal("cannot read audit log", e))
}
