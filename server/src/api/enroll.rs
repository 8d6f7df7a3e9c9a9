//! `POST /v1/enroll`: a token holder's agent becomes a host with a
//! certificate and its first config.

use std::time::Instant;

use axum::extract::State;
use axum::{Extension, Json};
use muster_shared::wire::{AgentConfig, EnrollRequest, EnrollResponse};

use super::{blocking, unix_now, ApiError, ApiJson, ConnInfo, Shared};
use crate::fleet::{EnrollAttempt, FleetError};

pub async fn enroll(
    State(app): State<Shared>,
    Extension(conn): Extension<ConnInfo>,
    ApiJson(req): ApiJson<EnrollRequest>,
) -> Result<Json<EnrollResponse>, ApiError> {
    let ip = conn.peer.ip().to_canonical();
    // A source with too many refusals this window is not even looked at;
    // the first such attempt is audited, the rest summed when it ends.
    if let Err(turned_away) = app.enroll_limiter.admit(ip, Instant::now()) {
        if turned_away.first {
            let detail = crate::authlimit::enroll_turned_away(app.enroll_limiter.window());
            audit_refusal(&app, ip, &detail);
        }
        return Err(ApiError::RateLimited {
            retry_after_secs: turned_away.retry_after.as_secs(),
        });
    }
    let source = ip.to_string();
    let result = blocking(&app, move |app| {
        let enrolled = app.fleet().enroll(&EnrollAttempt {
            token: &req.token,
            facts: &req.facts,
            csr_pem: &req.csr_pem,
            idempotency_key: &req.idempotency_key,
            requested_labels: &req.labels,
            source: &source,
            now: unix_now(),
        })?;
        // The reconciler writes the target file in the background, with
        // those of concurrent enrollments; the answer does not wait for it.
        app.reconciler.queue(&enrolled.host.id);
        Ok::<_, crate::fleet::FleetError>(enrolled)
    })
    .await?;
    let enrolled = result.inspect_err(|e| {
        if is_refusal(e) {
            refused(&app, ip);
        }
    })?;
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

/// Whether an enrollment failed because of what the client sent (counted
/// against its source), not because of the server.
fn is_refusal(e: &FleetError) -> bool {
    !matches!(e, FleetError::Store(_) | FleetError::Render { .. })
}

/// Counts a refused enrollment against its source (the fleet core audited
/// it); a window that closed with attempts turned away is audited now.
fn refused(app: &Shared, ip: std::net::IpAddr) {
    let refused = app.enroll_limiter.refuse(ip, Instant::now());
    let window = app.enroll_limiter.window();
    if let Some(detail) = refused
        .closed
        .as_ref()
        .and_then(|c| crate::authlimit::enroll_summary(c, window))
    {
        audit_refusal(app, ip, &detail);
    }
}

fn audit_refusal(app: &Shared, ip: std::net::IpAddr, detail: &str) {
    let source = ip.to_string();
    app.audit(crate::store::AuditEntry {
        at: unix_now(),
        actor: "anonymous",
        action: "enroll",
        target: None,
        outcome: "refused",
        detail: Some(detail),
        source: Some(&source),
    });
}
