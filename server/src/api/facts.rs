//! `POST /v1/agent/facts`: an enrolled agent's facts changed (a service was
//! installed or removed, the OS was upgraded). The facts are untrusted: they
//! are checked and bounded like at enrollment, the machine id may not
//! change, and only then are they stored and the host's config re-rendered.
//! The agent's next config fetch (in the same check-in) brings the result.

use axum::extract::State;
use axum::{Extension, Json};
use muster_shared::facts::Facts;
use muster_shared::wire::FactsAccepted;

use super::agent::AgentHost;
use super::{blocking, unix_now, ApiError, ApiJson, ConnInfo, Shared};
use crate::store::AuditEntry;

pub async fn facts(
    State(app): State<Shared>,
    Extension(conn): Extension<ConnInfo>,
    AgentHost(host_id): AgentHost,
    ApiJson(facts): ApiJson<Facts>,
) -> Result<Json<FactsAccepted>, ApiError> {
    let source = conn.peer.ip().to_string();
    if let Err(e) = facts.check() {
        tracing::warn!(host = %host_id, source = %source, error = %e, "refused untrusted facts");
        audit(&app, &host_id, &source, "refused", &e.to_string());
        return Err(ApiError::BadRequest(format!("invalid facts: {e}")));
    }
    let id = host_id.clone();
    let updated = blocking(&app, move |app| {
        let host = app
            .store
            .host(&id)
            .map_err(|e| ApiError::internal("host lookup failed", e))?
            .ok_or(ApiError::Forbidden("this host no longer exists"))?;
        if host.facts.machine_id != facts.machine_id {
            return Err(ApiError::Conflict(format!(
                "machine_id may not change after enrollment (enrolled as {}); re-enroll this machine",
                host.facts.machine_id
            )));
        }
        app.store
            .update_facts(&id, &facts, |h| {
                app.templates.render(h, &app.render_settings)
            })
            .map_err(|e| ApiError::internal("cannot store facts", e))?
            .ok_or(ApiError::Forbidden("this host no longer exists"))
    })
    .await??;
    let (host, rendered) = updated;
    let services: Vec<&str> = host
        .facts
        .services
        .iter()
        .map(|s| s.kind.as_str())
        .collect();
    match &rendered {
        Ok(()) => {
            tracing::info!(host = %host.id, hash = %host.rendered_hash, services = ?services, "took untrusted facts (checked) and re-rendered");
            if app.write_target_file(&host) {
                app.reloader.request();
            }
        }
        Err(e) => {
            tracing::error!(host = %host.id, error = %e, "took facts, but the config does not render; the host keeps its previous config")
        }
    }
    let detail = match &rendered {
        Ok(()) => format!(
            "services [{}]; config {}",
            services.join(", "),
            host.rendered_hash
        ),
        Err(e) => format!("services [{}]; render failed: {e}", services.join(", ")),
    };
    audit(&app, &host.id, &source, "accepted", &detail);
    Ok(Json(FactsAccepted {
        hash: host.rendered_hash,
    }))
}

fn audit(app: &Shared, host_id: &str, source: &str, outcome: &str, detail: &str) {
    app.audit(AuditEntry {
        at: unix_now(),
        actor: host_id,
        action: "facts",
        target: Some(host_id),
        outcome,
        detail: Some(detail),
        source: Some(source),
    });
}
