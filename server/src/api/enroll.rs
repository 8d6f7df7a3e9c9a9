//! `POST /v1/enroll`: a token holder's agent becomes a host with a
//! certificate and its first config.

use axum::extract::State;
use axum::{Extension, Json};
use muster_shared::wire::{AgentConfig, EnrollRequest, EnrollResponse};

use super::{blocking, unix_now, ApiError, ApiJson, ConnInfo, Shared};
use crate::fleet::EnrollAttempt;

pub async fn enroll(
    State(app): State<Shared>,
    Extension(conn): Extension<ConnInfo>,
    ApiJson(req): ApiJson<EnrollRequest>,
) -> Result<Json<EnrollResponse>, ApiError> {
    let source = conn.peer.ip().to_canonical().to_string();
    let enrolled = blocking(&app, move |app| {
        let enrolled = app.fleet().enroll(&EnrollAttempt {
            token: &req.token,
            facts: &req.facts,
            csr_pem: &req.csr_pem,
            idempotency_key: &req.idempotency_key,
            requested_labels: &req.labels,
            source: &source,
            now: unix_now(),
        })?;
        // A failed write leaves the host drifting; the reconciler retries.
        let _ = app.host_changed(&enrolled.host.id);
        Ok::<_, crate::fleet::FleetError>(enrolled)
    })
    .await??;
    let host = &enrolled.host;
    tracing::info!(host = %host.id, hostname = %host.facts.hostname, what = ?enrolled.what, token = %enrolled.token_id, "enrolled");
    Ok(Json(EnrollResponse {
        host_id: host.id.clone(),
        certificate_pem: enrolled.cert.pem,
        ca_pem: app.ca.cert_pem().to_string(),
        config: AgentConfig {
            hash: host.rendered_hash.clone(),
            content: host.config.clone(),
            checkin_interval_secs: app.settings.checkin_interval.as_secs(),
        },
    }))
}
