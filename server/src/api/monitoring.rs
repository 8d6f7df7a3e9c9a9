//! Routes for whatever watches Muster: `/metrics` (admin listener),
//! `/healthz` and `/readyz` (both listeners), the Prometheus `http_sd` view
//! `GET /v1/sd/targets` (admin listener, a targets-reader or admin token),
//! and the layer that counts agent-listener requests.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use muster_shared::wire;
use serde_json::json;

use super::{blocking, unix_now, ApiError, Shared};
use crate::metrics;

/// `GET /metrics`: counters, counts read from the store now, process metrics.
/// No token unless `server.toml` has `[metrics] token_required = true`; then
/// a targets-reader or admin token.
pub async fn metrics(State(app): State<Shared>, parts: axum::http::request::Parts) -> Response {
    if app.settings.metrics.token_required {
        if let Err(e) = reader(&app, &parts).await {
            return e.into_response();
        }
    }
    let counted = blocking(&app, |app| {
        let now = unix_now();
        let window = i64::try_from(metrics::EXPIRY_WINDOW.as_secs()).unwrap_or(i64::MAX);
        app.store.fleet_counts(
            now,
            app.settings.stale_after.as_secs() as i64,
            now.saturating_add(window),
        )
    })
    .await;
    match counted {
        Ok(Ok(fleet)) => (
            [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
            app.metrics.encode(
                &fleet,
                app.reconciler.drifting_hosts(),
                app.auth_limiter.refusals(),
            ),
        )
            .into_response(),
        Ok(Err(e)) => ApiError::internal("counting hosts for /metrics failed", e).into_response(),
        Err(e) => e.into_response(),
    }
}

/// `GET /healthz`: the process answers.
pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// `GET /readyz`: the store answers a query. The CA and the templates are
/// loaded (and every host rendered) before the listeners are bound, so a
/// server that answers has them.
pub async fn readyz(State(app): State<Shared>) -> Response {
    let store = blocking(&app, |app| app.store.ping()).await;
    let (status, store) = match store {
        Ok(Ok(())) => (StatusCode::OK, "ok".to_string()),
        Ok(Err(e)) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "store check failed".into()),
    };
    let body = json!({
        "status": if status == StatusCode::OK { "ready" } else { "not_ready" },
        "checks": {"store": store, "ca": "ok", "templates": "ok"},
    });
    (status, Json(body)).into_response()
}

/// `GET /v1/sd/targets`: the target groups of every active host's target
/// file, in one list, for Prometheus's `http_sd_configs`.
pub async fn sd_targets(State(app): State<Shared>, parts: axum::http::request::Parts) -> Response {
    if let Err(e) = reader(&app, &parts).await {
        return e.into_response();
    }
    match blocking(&app, |app| app.store.hosts()).await {
        Ok(Ok(hosts)) => (
            [(header::CONTENT_TYPE, "application/json")],
            crate::targets::http_sd(&hosts),
        )
            .into_response(),
        Ok(Err(e)) => ApiError::internal("listing hosts for http_sd failed", e).into_response(),
        Err(e) => e.into_response(),
    }
}

/// Checks the request's bearer token: a targets-reader (`mtr_…`) or an
/// admin token. Refusals count against the source's admin authentication
/// limit and are audited, like the admin API's.
async fn reader(app: &Shared, parts: &axum::http::request::Parts) -> Result<(), ApiError> {
    const MISSING: &str =
        "missing or invalid token (Authorization: Bearer <targets-reader or admin token>)";
    let source = parts
        .extensions
        .get::<super::ConnInfo>()
        .map(|c| c.peer.ip());
    crate::http::throttle(app, source)?;
    let Some(token) = crate::http::bearer_token(&parts.headers) else {
        crate::http::refused_admin(app, source, "no bearer token (targets reader)");
        return Err(ApiError::Unauthenticated(MISSING));
    };
    match blocking(app, move |app| app.store.verify_reader_token(&token)).await? {
        Ok(Some(_)) => Ok(()),
        Ok(None) => {
            crate::http::refused_admin(app, source, "invalid or revoked targets-reader token");
            Err(ApiError::Unauthenticated(MISSING))
        }
        Err(e) => Err(ApiError::internal("reader token lookup failed", e)),
    }
}

/// Counts every agent-listener request by route pattern and status, with its
/// latency; enrollments also by outcome.
pub async fn track_agent_requests(State(app): State<Shared>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let start = Instant::now();
    let response = next.run(req).await;
    let status = response.status();
    app.metrics
        .agent_request(&route, status.as_u16(), start.elapsed());
    if route == wire::ENROLL_PATH {
        app.metrics.enrollment(enrollment_outcome(status));
    }
    response
}

/// An enrollment's outcome from its answer's status (the handler answers
/// each refusal with its own).
pub fn enrollment_outcome(status: StatusCode) -> &'static str {
    match status.as_u16() {
        200..=299 => "enrolled",
        401 => "unauthorized",
        403 => "forbidden",
        409 => "conflict",
        429 => "rate_limited",
        400..=499 => "invalid",
        _ => "error",
    }
}
