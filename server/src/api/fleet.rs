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
    BatchImport, BatchImported, BatchRetried, BatchRetry, BatchStatus, Decommissioned, LabelCheck,
    LabelEdit, LabelEdited, LabelMisfit, ReplaceArmed,
};
use crate::app::App;
use crate::fleet::{BatchFile, LabelTarget};
use crate::reconciler::FileChange;
use crate::schema::LabelSchema;

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
        let file = app.reconciler.host_decommissioned(&done.host.id);
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
    let issued = app.issued_token(0, &done.host.facts.hostname, &done.token);
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

/// `POST /v1/admin/batches`: validates the whole file, then pre-registers
/// each row with its own one-time token bound to its hostname.
pub async fn import_batch(
    State(app): State<Shared>,
    Extension(conn): Extension<ConnInfo>,
    Admin(admin): Admin,
    ApiJson(req): ApiJson<BatchImport>,
) -> Result<Json<BatchImported>, ApiError> {
    let ttl = token_ttl(&app, req.ttl_secs)?;
    let source = source(&conn);
    let imported = blocking(&app, move |app| {
        let now = unix_now();
        let file = BatchFile {
            name: req.name.as_deref().unwrap_or("batch"),
            format: req.format,
            content: &req.content,
            skip_invalid: req.skip_invalid,
        };
        app.fleet()
            .import_batch(&file, now + ttl.as_secs() as i64, &admin, &source, now)
    })
    .await??;
    Ok(Json(BatchImported {
        hosts: app.issued(&imported.tokens),
        batch: imported.batch,
        server: app.settings.public_url.clone(),
        pin: app.pin.to_string(),
        invalid: imported.invalid,
    }))
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

/// `GET /v1/admin/batches/{id}`.
pub async fn batch_status(
    State(app): State<Shared>,
    _admin: Admin,
    Path(id): Path<String>,
) -> Result<Json<BatchStatus>, ApiError> {
    let status = blocking(&app, move |app| app.fleet().batch_status(&id, unix_now())).await??;
    Ok(Json(status))
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
    let source = source(&conn);
    let retried = blocking(&app, move |app| {
        let now = unix_now();
        app.fleet().retry_batch(
            &id,
            req.host.as_deref(),
            now + ttl.as_secs() as i64,
            &admin,
            &source,
            now,
        )
    })
    .await??;
    Ok(Json(BatchRetried {
        hosts: app.issued(&retried.tokens),
        batch: retried.batch,
        server: app.settings.public_url.clone(),
        pin: app.pin.to_string(),
    }))
}
