//! `POST /v1/agent/facts`: an enrolled agent's facts changed (a service was
//! installed or removed, the OS was upgraded). The fleet core checks them
//! like at enrollment, stores them and re-renders; the agent's next config
//! fetch (in the same check-in) brings the result.

use axum::extract::State;
use axum::{Extension, Json};
use muster_shared::facts::Facts;
use muster_shared::wire::FactsAccepted;

use super::agent::AgentHost;
use super::{blocking, unix_now, ApiError, ApiJson, ConnInfo, Shared};

pub async fn facts(
    State(app): State<Shared>,
    Extension(conn): Extension<ConnInfo>,
    AgentHost(cert): AgentHost,
    ApiJson(facts): ApiJson<Facts>,
) -> Result<Json<FactsAccepted>, ApiError> {
    let source = conn.peer.ip();
    let id = cert.host_id.clone();
    let update = blocking(&app, move |app| {
        let update = app.fleet().report_facts(&id, &facts, source, unix_now())?;
        if update.render_error.is_none() {
            // A failed write leaves the host drifting; the reconciler retries.
            let _ = app.host_changed(&id);
        }
        Ok::<_, crate::fleet::FleetError>(update)
    })
    .await??;
    let host = &update.host;
    match &update.render_error {
        None => {
            tracing::info!(host = %host.id, hash = %host.rendered_hash, "took untrusted facts (checked) and re-rendered");
        }
        Some(e) => {
            tracing::error!(host = %host.id, error = %e, "took facts, but the config does not render; the host keeps its previous config")
        }
    }
    Ok(Json(FactsAccepted {
        hash: update.host.rendered_hash,
    }))
}
