//! `POST /v1/enroll`: a token holder's agent becomes a host with a
//! certificate and its first config.

use axum::extract::State;
use axum::{Extension, Json};
use muster_shared::wire::{AgentConfig, EnrollRequest, EnrollResponse};

use super::{blocking, unix_now, ApiError, ApiJson, ConnInfo, Shared};
use crate::store::{AuditEntry, EnrollAttempt, EnrollError};

fn check_idempotency_key(key: &str) -> Result<(), ApiError> {
    let ok = (8..=128).contains(&key.len())
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(ApiError::BadRequest(
            "idempotency_key must be 8 to 128 characters of letters, digits, '-' and '_'".into(),
        ))
    }
}

pub async fn enroll(
    State(app): State<Shared>,
    Extension(conn): Extension<ConnInfo>,
    ApiJson(req): ApiJson<EnrollRequest>,
) -> Result<Json<EnrollResponse>, ApiError> {
    let source = conn.peer.ip().to_string();
    if let Err(e) = req.facts.check() {
        refuse(&app, &source, "invalid facts", &e.to_string()).await;
        return Err(ApiError::BadRequest(format!("invalid facts: {e}")));
    }
    check_idempotency_key(&req.idempotency_key)?;

    let result = blocking(&app, move |app| {
        let now = unix_now();
        let attempt = EnrollAttempt {
            token: &req.token,
            facts: &req.facts,
            idempotency_key: &req.idempotency_key,
            now,
        };
        let validity = app.settings.cert_validity;
        let outcome = app.store.enroll(
            &attempt,
            |host_id| {
                app.ca.sign_csr(
                    &req.csr_pem,
                    host_id,
                    std::time::SystemTime::now(),
                    validity,
                )
            },
            |host| app.templates.render(host, &app.render_settings),
        );
        (outcome, req.facts.hostname)
    })
    .await?;

    let (outcome, hostname) = result;
    let enrolled = match outcome {
        Ok(enrolled) => enrolled,
        Err(e) => return Err(refused(&app, &source, &hostname, e).await),
    };
    let host = &enrolled.host;
    let detail = if enrolled.created {
        "new host"
    } else {
        "existing host"
    };
    tracing::info!(host = %host.id, hostname = %hostname, source = %source, detail, "enrolled");
    app.audit(AuditEntry {
        at: unix_now(),
        actor: &host.id,
        action: "enroll",
        target: Some(&host.id),
        outcome: "accepted",
        detail: Some(detail),
        source: Some(&source),
    });
    if app.write_target_file(host) {
        app.reloader.request();
    }
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

/// Audits a refused enrollment and turns its cause into the answer. Every
/// token problem gets the same answer; the audit log keeps the reason.
async fn refused(app: &Shared, source: &str, hostname: &str, e: EnrollError) -> ApiError {
    let (reason, answer) = match e {
        EnrollError::Token(why) => (format!("token {why}"), ApiError::InvalidToken),
        EnrollError::MachineConflict { .. } => (
            e.to_string(),
            ApiError::Conflict(format!(
                "{e}; if this is a reinstall or a cloned machine, an operator must decide"
            )),
        ),
        EnrollError::Csr(csr) if csr.is_bad_request() => (
            format!("bad CSR: {csr}"),
            ApiError::BadRequest(format!("certificate signing request refused: {csr}")),
        ),
        EnrollError::Csr(csr) => {
            let reason = format!("signing failed: {csr:#}");
            (
                reason.clone(),
                ApiError::internal("cannot sign agent certificate", reason),
            )
        }
        EnrollError::Render(render) => {
            let reason = format!("render failed: {render}");
            (
                reason.clone(),
                ApiError::internal("cannot render config for enrolling host", reason),
            )
        }
        EnrollError::Store(store) => {
            let reason = format!("store: {store}");
            (
                reason.clone(),
                ApiError::internal("enrollment failed", reason),
            )
        }
    };
    tracing::warn!(hostname = %hostname, source = %source, reason = %reason, "enrollment refused");
    refuse(app, source, hostname, &reason).await;
    answer
}

async fn refuse(app: &Shared, source: &str, claimed: &str, reason: &str) {
    app.audit(AuditEntry {
        at: unix_now(),
        actor: "anonymous",
        action: "enroll",
        target: Some(claimed),
        outcome: "refused",
        detail: Some(reason),
        source: Some(source),
    });
}
