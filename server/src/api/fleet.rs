//! Admin routes for running a fleet: label edits that roll out, decommission,
//! `hosts replace`, the label schema check, and batch enrollment. Every
//! change is audited with the admin token's name and the source address.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::{Extension, Json};
use muster_shared::labels;

use super::admin::{token_ttl, Admin};
use super::{blocking, unix_now, ApiError, ApiJson, ConnInfo, Shared};
use crate::admin_wire::{
    BatchImport, BatchImported, BatchRetried, BatchRetry, BatchStatus, Decommissioned, IssuedToken,
    LabelCheck, LabelEdit, LabelEdited, LabelMisfit, ReplaceArmed,
};
use crate::app::App;
use crate::batch::{self, Format, RowError};
use crate::fleet::LabelTarget;
use crate::reconciler::FileChange;
use crate::schema::LabelSchema;
use crate::store::AuditEntry;
use crate::tokens::Secret;

fn schema(app: &App) -> Result<LabelSchema, ApiError> {
    app.settings
        .label_schema()
        .map_err(|e| ApiError::internal("the label schema does not compile", e))
}

fn source(conn: &ConnInfo) -> String {
    conn.peer.ip().to_string()
}

async fn apply_edit(
    app: Shared,
    conn: ConnInfo,
    admin: String,
    target: LabelTarget,
    edit: LabelEdit,
) -> Result<Json<LabelEdited>, ApiError> {
    let source = source(&conn);
    let edited = blocking(&app, move |app| {
        let change = app.fleet().edit_labels(
            &target,
            &edit.set,
            &edit.remove,
            &admin,
            &source,
            unix_now(),
        )?;
        let now = unix_now();
        let mut target_file_errors = BTreeMap::new();
        for host in &change.changed {
            if let Err(e) = app.host_changed(&host.id) {
                target_file_errors.insert(host.id.clone(), e);
            }
        }
        Ok::<_, crate::fleet::FleetError>(LabelEdited {
            matched: change.matched,
            hosts: change
                .changed
                .iter()
                .map(|h| app.host_info(h, now))
                .collect(),
            target_file_errors,
        })
    })
    .await??;
    Ok(Json(edited))
}

/// `POST /v1/admin/hosts/{id}/labels`.
pub async fn edit_host_labels(
    State(app): State<Shared>,
    Extension(conn): Extension<ConnInfo>,
    Admin(admin): Admin,
    Path(id): Path<String>,
    ApiJson(edit): ApiJson<LabelEdit>,
) -> Result<Json<LabelEdited>, ApiError> {
    if edit.selector.is_some() {
        return Err(ApiError::BadRequest(
            "a selector belongs on POST /v1/admin/hosts/labels, not on one host".into(),
        ));
    }
    apply_edit(app, conn, admin, LabelTarget::Id(id), edit).await
}

/// `POST /v1/admin/hosts/labels`: every active host the selector matches.
pub async fn edit_labels(
    State(app): State<Shared>,
    Extension(conn): Extension<ConnInfo>,
    Admin(admin): Admin,
    ApiJson(edit): ApiJson<LabelEdit>,
) -> Result<Json<LabelEdited>, ApiError> {
    let text = edit.selector.clone().ok_or_else(|| {
        ApiError::BadRequest("give a selector (name=value[,name=value]) choosing the hosts".into())
    })?;
    let selector =
        labels::parse_selector(&text).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    apply_edit(app, conn, admin, LabelTarget::Selector(selector), edit).await
}

/// `POST /v1/admin/hosts/{id}/decommission`.
pub async fn decommission(
    State(app): State<Shared>,
    Extension(conn): Extension<ConnInfo>,
    Admin(admin): Admin,
    Path(id): Path<String>,
) -> Result<Json<Decommissioned>, ApiError> {
    let source = source(&conn);
    let answer = blocking(&app, move |app| {
        let done = app.fleet().decommission(&id, &admin, &source, unix_now())?;
        let file = app.host_changed(&done.host.id);
        Ok::<_, crate::fleet::FleetError>(Decommissioned {
            host: app.host_info(&done.host, unix_now()),
            revoked_certs: done.revoked_certs,
            target_file: match &file {
                Ok(FileChange::Retired(name)) => Some(name.clone()),
                _ => None,
            },
            target_file_error: file.err(),
        })
    })
    .await??;
    Ok(Json(answer))
}

/// `POST /v1/admin/hosts/{id}/replace`: a one-time token with which a new
/// key (a reinstalled machine with the same machine-id) takes the host over
/// within the token lifetime.
pub async fn replace(
    State(app): State<Shared>,
    Extension(conn): Extension<ConnInfo>,
    Admin(admin): Admin,
    Path(id): Path<String>,
) -> Result<Json<ReplaceArmed>, ApiError> {
    let source = source(&conn);
    let done = blocking(&app, move |app| {
        app.fleet().replace(&id, &admin, &source, unix_now())
    })
    .await??;
    let issued = issued(&app, 0, &done.host.facts.hostname, &done.token);
    Ok(Json(ReplaceArmed {
        host: app.host_info(&done.host, unix_now()),
        until: done.until,
        token: issued.token,
        enroll_command: issued.enroll_command,
    }))
}

/// `GET /v1/admin/labels/check`: every active host against the schema.
pub async fn labels_check(
    State(app): State<Shared>,
    _admin: Admin,
) -> Result<Json<LabelCheck>, ApiError> {
    blocking(&app, |app| {
        let schema = schema(app)?;
        let hosts = app
            .store
            .hosts()
            .map_err(|e| ApiError::internal("cannot list hosts", e))?;
        let misfits = hosts
            .iter()
            .filter_map(|h| {
                let problems = schema.audit(&h.operator_labels);
                (!problems.is_empty()).then(|| LabelMisfit {
                    host_id: h.id.clone(),
                    hostname: h.facts.hostname.clone(),
                    problems: problems.iter().map(ToString::to_string).collect(),
                })
            })
            .collect();
        Ok(Json(LabelCheck {
            checked: hosts.len(),
            misfits,
        }))
    })
    .await?
}

fn issued(app: &App, line: usize, hostname: &str, token: &Secret) -> IssuedToken {
    IssuedToken {
        line,
        hostname: hostname.to_string(),
        token: token.expose().to_string(),
        enroll_command: format!(
            "muster-agent enroll --server {} --token {} --pin {}",
            app.settings.public_url,
            token.expose(),
            app.pin
        ),
    }
}

fn rows_error(summary: String, rows: Vec<RowError>) -> ApiError {
    ApiError::InvalidRows { summary, rows }
}

/// `POST /v1/admin/batches`: validates the whole file, then pre-registers
/// each row with its own one-time token bound to its hostname.
pub async fn import_batch(
    State(app): State<Shared>,
    Extension(conn): Extension<ConnInfo>,
    Admin(admin): Admin,
    ApiJson(req): ApiJson<BatchImport>,
) -> Result<Json<BatchImported>, ApiError> {
    let ttl = token_ttl(&app, req.ttl_secs)?;
    let name = req.name.clone().unwrap_or_else(|| "batch".into());
    if name.is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
        return Err(ApiError::BadRequest(
            "name must be 1 to 128 printable characters".into(),
        ));
    }
    let actor = admin.clone();
    let (imported, skipped) = blocking(&app, move |app| {
        let now = unix_now();
        let format = req.format.unwrap_or_else(|| Format::sniff(&req.content));
        let rows = batch::parse(format, &req.content)
            .map_err(|rows| rows_error("the file cannot be read; nothing was imported".into(), rows))?;
        let total = rows.len();
        let names: Vec<String> = rows.iter().map(|r| r.hostname.clone()).collect();
        let taken = app
            .store
            .hostnames_in_use(&names, now)
            .map_err(|e| ApiError::internal("cannot check hostnames", e))?;
        let validated = batch::validate(rows, &schema(app)?, &taken);
        let bad = validated.errors.len();
        if bad > 0 && !req.skip_invalid {
            return Err(rows_error(
                format!(
                    "{bad} of {total} rows are invalid; nothing was imported (fix them, or import the {} valid rows with --skip-invalid)",
                    total - bad
                ),
                validated.errors,
            ));
        }
        if validated.rows.is_empty() {
            return Err(rows_error(
                "no row is valid; nothing was imported".into(),
                validated.errors,
            ));
        }
        let (batch, secrets) = app
            .store
            .create_batch(&name, &validated.rows, now + ttl.as_secs() as i64, &actor, now)
            .map_err(|e| ApiError::internal("cannot create batch", e))?;
        let hosts = validated
            .rows
            .iter()
            .zip(&secrets)
            .map(|(row, secret)| issued(app, row.line, &row.hostname, secret))
            .collect();
        Ok::<_, ApiError>((
            BatchImported {
                batch,
                server: app.settings.public_url.clone(),
                pin: app.pin.to_string(),
                hosts,
                invalid: validated.errors,
            },
            bad,
        ))
    })
    .await??;
    tracing::info!(batch = %imported.batch.id, admin = %admin, hosts = imported.hosts.len(), skipped, "imported batch");
    app.audit(AuditEntry {
        at: unix_now(),
        actor: &admin,
        action: "batch.import",
        target: Some(&imported.batch.id),
        outcome: "ok",
        detail: Some(&format!(
            "{} hosts pre-registered from {:?}; {skipped} invalid rows skipped",
            imported.hosts.len(),
            imported.batch.name
        )),
        source: Some(&source(&conn)),
    });
    Ok(Json(imported))
}

/// `GET /v1/admin/batches`.
pub async fn list_batches(
    State(app): State<Shared>,
    _admin: Admin,
) -> Result<Json<Vec<crate::store::BatchRecord>>, ApiError> {
    blocking(&app, |app| app.store.batches())
        .await?
        .map(Json)
        .map_err(|e| ApiError::internal("cannot list batches", e))
}

fn status_of(app: &App, id: &str) -> Result<BatchStatus, ApiError> {
    let now = unix_now();
    let batch = app
        .store
        .batch(id)
        .map_err(|e| ApiError::internal("cannot read batch", e))?
        .ok_or_else(|| ApiError::NotFound(format!("no batch {id:?}")))?;
    let entries = app
        .store
        .batch_entries(id, now)
        .map_err(|e| ApiError::internal("cannot read batch", e))?;
    let stale = app.settings.stale_after.as_secs() as i64;
    let hosts: Vec<_> = entries
        .iter()
        .map(|e| batch::entry_status(e, now, stale))
        .collect();
    Ok(BatchStatus {
        totals: batch::totals(&hosts),
        batch,
        scrape_checks: app.settings.prometheus_url.is_some(),
        hosts,
    })
}

/// `GET /v1/admin/batches/{id}`.
pub async fn batch_status(
    State(app): State<Shared>,
    _admin: Admin,
    Path(id): Path<String>,
) -> Result<Json<BatchStatus>, ApiError> {
    blocking(&app, move |app| status_of(app, &id).map(Json)).await?
}

/// `POST /v1/admin/batches/{id}/retry`: new tokens for rows that failed to
/// enroll or whose token expired (all of them, or the one named).
pub async fn retry_batch(
    State(app): State<Shared>,
    Extension(conn): Extension<ConnInfo>,
    Admin(admin): Admin,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<BatchRetry>,
) -> Result<Json<BatchRetried>, ApiError> {
    let ttl = token_ttl(&app, req.ttl_secs)?;
    let actor = admin.clone();
    let retried = blocking(&app, move |app| {
        let status = status_of(app, &id)?;
        let wanted: Vec<String> = match &req.host {
            Some(host) => {
                let entry = status
                    .hosts
                    .iter()
                    .find(|e| e.hostname.eq_ignore_ascii_case(host))
                    .ok_or_else(|| ApiError::NotFound(format!("batch {id} has no host {host:?}")))?;
                if !entry.retryable {
                    return Err(ApiError::Conflict(format!(
                        "host {} is {}{}: only rows that failed to enroll or whose token expired get a new token",
                        entry.hostname,
                        entry.state.as_str(),
                        if entry.state == muster_shared::wire::HostState::Pending {
                            " with a valid token"
                        } else {
                            ""
                        }
                    )));
                }
                vec![entry.hostname.clone()]
            }
            None => status
                .hosts
                .iter()
                .filter(|e| e.retryable)
                .map(|e| e.hostname.clone())
                .collect(),
        };
        let now = unix_now();
        let issued_tokens = app
            .store
            .reissue_batch_tokens(&id, &wanted, now + ttl.as_secs() as i64, &actor, now)
            .map_err(|e| ApiError::internal("cannot reissue tokens", e))?;
        let hosts = issued_tokens
            .iter()
            .map(|(hostname, secret)| {
                let line = status
                    .hosts
                    .iter()
                    .find(|e| e.hostname == *hostname)
                    .map_or(0, |e| e.line);
                issued(app, line, hostname, secret)
            })
            .collect();
        Ok(BatchRetried {
            batch: status.batch,
            server: app.settings.public_url.clone(),
            pin: app.pin.to_string(),
            hosts,
        })
    })
    .await??;
    let names: Vec<&str> = retried.hosts.iter().map(|h| h.hostname.as_str()).collect();
    app.audit(AuditEntry {
        at: unix_now(),
        actor: &admin,
        action: "batch.retry",
        target: Some(&retried.batch.id),
        outcome: "ok",
        detail: Some(&format!("new tokens for: {}", names.join(", "))),
        source: Some(&source(&conn)),
    });
    Ok(Json(retried))
}
