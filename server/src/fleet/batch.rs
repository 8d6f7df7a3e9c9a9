//! Batch enrollment: importing a file of hosts to pre-register (each row
//! with its own one-time token bound to its hostname), a batch's status,
//! and new tokens for the rows that failed or expired.

use super::{Fleet, FleetError};
use crate::admin_wire::{BatchRecord, BatchStatus, HostState};
use crate::batch::{self, Format, RowError};
use crate::store::{AuditEntry, Tx};
use crate::tokens::Secret;

/// An import file as a handler hands it over.
pub struct BatchFile<'a> {
    pub name: &'a str,
    /// Sniffed from the content when `None`.
    pub format: Option<Format>,
    pub content: &'a str,
    /// Import the valid rows and list the others, instead of refusing all.
    pub skip_invalid: bool,
}

/// A token issued to one batch row. The only time its secret is known.
#[derive(Debug)]
pub struct RowToken {
    pub line: usize,
    pub hostname: String,
    pub token: Secret,
}

/// What an import created.
#[derive(Debug)]
pub struct BatchImported {
    pub batch: BatchRecord,
    pub tokens: Vec<RowToken>,
    /// Rows left out (with `skip_invalid`).
    pub invalid: Vec<RowError>,
}

/// What a retry issued.
#[derive(Debug)]
pub struct BatchRetried {
    pub batch: BatchRecord,
    pub tokens: Vec<RowToken>,
}

/// A batch name: 1 to 128 printable characters.
fn check_name(name: &str) -> Result<(), FleetError> {
    if name.is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
        return Err(FleetError::BadEdit(
            "name must be 1 to 128 printable characters".into(),
        ));
    }
    Ok(())
}

fn invalid(summary: String, rows: Vec<RowError>) -> FleetError {
    FleetError::InvalidRows { summary, rows }
}

impl Fleet<'_> {
    /// Validates the whole file, then pre-registers each valid row with its
    /// own one-time token bound to its hostname, expiring at `expires_at`.
    /// The hostnames already taken are read in the transaction that creates
    /// the batch, so two imports racing for one hostname cannot both have it.
    pub fn import_batch(
        &self,
        file: &BatchFile<'_>,
        expires_at: i64,
        actor: &str,
        source: &str,
        now: i64,
    ) -> Result<BatchImported, FleetError> {
        check_name(file.name)?;
        let schema = self
            .settings
            .label_schema()
            .map_err(FleetError::SchemaSetting)?;
        let format = file.format.unwrap_or_else(|| Format::sniff(file.content));
        let rows = batch::parse(format, file.content).map_err(|rows| {
            invalid("the file cannot be read; nothing was imported".into(), rows)
        })?;
        let total = rows.len();
        let names: Vec<String> = rows.iter().map(|r| r.hostname.clone()).collect();
        let imported = self.store.write(|tx| {
            let taken = tx.hostnames_in_use(&names, now)?;
            let validated = batch::validate(rows, &schema, &taken);
            let bad = validated.errors.len();
            if bad > 0 && !file.skip_invalid {
                return Err(invalid(
                    format!(
                        "{bad} of {total} rows are invalid; nothing was imported (fix them, or import the {} valid rows with --skip-invalid)",
                        total - bad
                    ),
                    validated.errors,
                ));
            }
            if validated.rows.is_empty() {
                return Err(invalid(
                    "no row is valid; nothing was imported".into(),
                    validated.errors,
                ));
            }
            let (batch, secrets) =
                tx.create_batch(file.name, &validated.rows, expires_at, actor, now)?;
            tx.audit(&AuditEntry {
                at: now,
                actor,
                action: "batch.import",
                target: Some(&batch.id),
                outcome: "ok",
                detail: Some(&format!(
                    "{} hosts pre-registered from {:?}; {bad} invalid rows skipped",
                    validated.rows.len(),
                    batch.name
                )),
                source: Some(source),
            })?;
            let tokens = validated
                .rows
                .iter()
                .zip(secrets)
                .map(|(row, token)| RowToken {
                    line: row.line,
                    hostname: row.hostname.clone(),
                    token,
                })
                .collect();
            Ok(BatchImported {
                batch,
                tokens,
                invalid: validated.errors,
            })
        })?;
        tracing::info!(batch = %imported.batch.id, admin = %actor, hosts = imported.tokens.len(),
            skipped = imported.invalid.len(), "imported batch");
        Ok(imported)
    }

    /// A batch's rows and their states at `now`.
    pub fn batch_status(&self, id: &str, now: i64) -> Result<BatchStatus, FleetError> {
        self.store.write(|tx| self.status_in(tx, id, now))
    }

    fn status_in(&self, tx: &Tx<'_>, id: &str, now: i64) -> Result<BatchStatus, FleetError> {
        let batch = tx
            .batch(id)?
            .ok_or_else(|| FleetError::NotFound(format!("no batch {id:?}")))?;
        let stale = self.settings.stale_after.as_secs() as i64;
        let hosts: Vec<_> = tx
            .batch_entries(id, now)?
            .iter()
            .map(|e| batch::entry_status(e, now, stale))
            .collect();
        Ok(BatchStatus {
            totals: batch::totals(&hosts),
            batch,
            scrape_checks: self.settings.prometheus_url.is_some(),
            hosts,
        })
    }

    /// New tokens, expiring at `expires_at`, for the rows of a batch that
    /// failed to enroll or whose token expired: all of them, or the one
    /// named by `host` (refused when that row is not retryable). Each row's
    /// old token is revoked in the same transaction.
    pub fn retry_batch(
        &self,
        id: &str,
        host: Option<&str>,
        expires_at: i64,
        actor: &str,
        source: &str,
        now: i64,
    ) -> Result<BatchRetried, FleetError> {
        let retried = self.store.write(|tx| {
            let status = self.status_in(tx, id, now)?;
            let wanted: Vec<String> = match host {
                Some(host) => {
                    let entry = status
                        .hosts
                        .iter()
                        .find(|e| e.hostname.eq_ignore_ascii_case(host))
                        .ok_or_else(|| {
                            FleetError::NotFound(format!("batch {id} has no host {host:?}"))
                        })?;
                    if !entry.retryable {
                        return Err(FleetError::NotRetryable {
                            hostname: entry.hostname.clone(),
                            state: entry.state.as_str(),
                            valid_token: entry.state == HostState::Pending,
                        });
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
            let issued = tx.reissue_batch_tokens(id, &wanted, expires_at, actor, now)?;
            let names: Vec<&str> = issued.iter().map(|(h, _)| h.as_str()).collect();
            tx.audit(&AuditEntry {
                at: now,
                actor,
                action: "batch.retry",
                target: Some(&status.batch.id),
                outcome: "ok",
                detail: Some(&format!("new tokens for: {}", names.join(", "))),
                source: Some(source),
            })?;
            let tokens = issued
                .into_iter()
                .map(|(hostname, token)| RowToken {
                    line: status
                        .hosts
                        .iter()
                        .find(|e| e.hostname == hostname)
                        .map_or(0, |e| e.line),
                    hostname,
                    token,
                })
                .collect();
            Ok(BatchRetried {
                batch: status.batch,
                tokens,
            })
        })?;
        tracing::info!(batch = %retried.batch.id, admin = %actor, hosts = retried.tokens.len(), "new batch tokens");
        Ok(retried)
    }
}
