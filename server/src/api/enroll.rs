//! `POST /v1/enroll`: a token holder's agent becomes a host with a
//! certificate and its first config.

use axum::extract::State;
use axum::{Extension, Json};
use muster_shared::labels::Labels;
use muster_shared::wire::{AgentConfig, EnrollRequest, EnrollResponse};

use super::{blocking, unix_now, ApiError, ApiJson, ConnInfo, Shared};
use crate::schema::{Problem, SchemaError};
use crate::store::{AuditEntry, EnrollAttempt, EnrollError};
use crate::tokens::{self, Kind};

/// Labels a host asks for obey the label schema (names, values); required
/// labels are the token's business, so their absence here is no problem.
fn check_requested_labels(app: &Shared, requested: &Labels) -> Result<(), ApiError> {
    if requested.is_empty() {
        return Ok(());
    }
    let schema = app
        .settings
        .label_schema()
        .map_err(|e| ApiError::internal("the label schema does not compile", e))?;
    match schema.check(requested) {
        Ok(_) => Ok(()),
        Err(SchemaError(mut problems)) => {
            problems.retain(|p| !matches!(p, Problem::Missing { .. }));
            if problems.is_empty() {
                Ok(())
            } else {
                Err(ApiError::BadRequest(format!(
                    "requested labels: {}",
                    SchemaError(problems)
                )))
            }
        }
    }
}

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
    check_requested_labels(&app, &req.labels)?;

    let result = blocking(&app, move |app| {
        let now = unix_now();
        let attempt = EnrollAttempt {
            token: &req.token,
            facts: &req.facts,
            idempotency_key: &req.idempotency_key,
            requested_labels: &req.labels,
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
        let token_id = tokens::parse(Kind::Enroll, &req.token).map(|(id, _)| id.to_string());
        (outcome, req.facts.hostname, token_id)
    })
    .await?;

    let (outcome, hostname, token_id) = result;
    let enrolled = match outcome {
        Ok(enrolled) => enrolled,
        Err(e) => return Err(refused(&app, &source, &hostname, token_id, e).await),
    };
    let host = &enrolled.host;
    let what = match (
        &host.lifecycle.previous_host_id,
        enrolled.created,
        enrolled.replaced,
    ) {
        (_, _, true) => "existing host taken over by a new key (hosts replace)".to_string(),
        (Some(previous), true, _) => format!("new host; this machine was {previous}"),
        (None, true, _) => "new host".to_string(),
        (_, false, _) => "existing host".to_string(),
    };
    let detail = format!("{what}; token {}", enrolled.token_id);
    tracing::info!(host = %host.id, hostname = %hostname, source = %source, detail = %detail, "enrolled");
    app.audit(AuditEntry {
        at: unix_now(),
        actor: &host.id,
        action: "enroll",
        target: Some(&host.id),
        outcome: "accepted",
        detail: Some(&detail),
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
async fn refused(
    app: &Shared,
    source: &str,
    hostname: &str,
    token_id: Option<String>,
    e: EnrollError,
) -> ApiError {
    let mut target = hostname.to_string();
    // Only a holder of the token's secret may mark its batch row as failed.
    let secret_checked = !matches!(
        e,
        EnrollError::Token("malformed" | "unknown" | "wrong secret")
    );
    let (reason, answer) = match e {
        EnrollError::Token(why) => (format!("token {why}"), ApiError::InvalidToken),
        EnrollError::MachineConflict {
            ref machine_id,
            ref host_id,
        } => {
            // Refused, not merged: the host keeps its key until an admin
            // decides. Shown on the host so the admin sees the claim.
            let note = format!(
                "{} from {source}: another key claimed this machine-id (hostname {hostname:?}); refused",
                crate::cli::time(unix_now())
            );
            let (store, id) = (app.store.clone(), host_id.clone());
            let _ = blocking(app, move |_| store.note_conflict(&id, &note)).await;
            target = host_id.clone();
            (
                format!("machine-id {machine_id} claimed by a different key"),
                ApiError::Conflict(format!(
                    "{e}. If this machine is a reinstall of {host_id}, an admin runs \
                     `muster-server hosts replace {host_id}` and you enroll again; if it is a \
                     clone, give it its own machine-id (systemd-machine-id-setup) and enroll again"
                )),
            )
        }
        EnrollError::HostnameMismatch { .. } => (
            e.to_string(),
            ApiError::Forbidden(
                "this enrollment token was issued for another hostname (batch enrollment): use the token issued for this host",
            ),
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
    let reason = match &token_id {
        Some(id) => format!("{reason}; token {id}"),
        None => reason,
    };
    tracing::warn!(hostname = %hostname, source = %source, reason = %reason, "enrollment refused");
    if let Some(id) = token_id.filter(|_| secret_checked) {
        // A batch row remembers why its host is not enrolled.
        let (store, why) = (app.store.clone(), reason.clone());
        let _ = blocking(app, move |_| store.note_token_refusal(&id, &why)).await;
    }
    refuse(app, source, &target, &reason).await;
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
