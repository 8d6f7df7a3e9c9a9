//! Hosts and their certificates.

use muster_shared::facts::{self, Facts};
use muster_shared::labels::Labels;
use muster_shared::wire::{ApplyResult, StatusReport};
use rusqlite::{params, Connection, OptionalExtension, Transaction};

use super::seen::Pending;
use super::{corrupt, to_json, Store, StoreError, Tx};
use crate::admin_wire::{HostInfo, HostState, ScrapeInfo};
use crate::ca::IssuedCert;
use crate::tokens;
use serde::{Deserialize, Serialize};

/// A host as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostRecord {
    pub id: String,
    pub machine_id: String,
    pub public_key_sha256: String,
    pub facts: Facts,
    /// Labels set by operators (the token's preset labels); fact labels are
    /// derived, see [`HostRecord::labels`].
    pub operator_labels: Labels,
    pub state: HostState,
    pub config: String,
    pub rendered_hash: String,
    pub targets: Vec<TargetGroup>,
    pub applied_hash: Option<String>,
    pub last_error: Option<String>,
    pub alloy_version: Option<String>,
    pub enrolled_at: i64,
    pub last_seen: i64,
    pub cert_expires_at: i64,
    /// Everything beyond enrollment and config: scrape check, decommission,
    /// batch, replacement.
    pub lifecycle: Lifecycle,
}

/// The parts of a host that fleet operations add.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Lifecycle {
    pub scrape: Option<ScrapeInfo>,
    pub decommissioned_at: Option<i64>,
    pub previous_host_id: Option<String>,
    pub batch_id: Option<String>,
    /// `hosts replace` lets another key take the host over until then.
    pub replace_until: Option<i64>,
    /// The last refused claim by another key, as text for operators.
    pub last_conflict: Option<String>,
    /// The agent's last apply reloaded Alloy through its fallback: why
    /// Alloy's `/-/reload` was unreachable.
    pub reload_fallback: Option<String>,
}

/// The state an operator sees, from the stored config state and the rest.
/// Order matters: a decommissioned host is that whatever else; a host that
/// stopped checking in is stale whatever it last said; a failed or not yet
/// applied config comes before what Prometheus says.
pub fn headline(host: &HostRecord, now: i64, stale_after: i64) -> HostState {
    headline_of(
        host.lifecycle.decommissioned_at.is_some(),
        host.last_seen,
        host.state,
        host.lifecycle.scrape.as_ref().map(|s| s.state),
        now,
        stale_after,
    )
}

/// [`headline`] from the stored fields it reads (the state counts of
/// `/metrics` read only these).
pub fn headline_of(
    decommissioned: bool,
    last_seen: i64,
    state: HostState,
    scrape: Option<HostState>,
    now: i64,
    stale_after: i64,
) -> HostState {
    if decommissioned {
        return HostState::Decommissioned;
    }
    if now - last_seen > stale_after {
        return HostState::Stale;
    }
    match (state, scrape) {
        (HostState::ConfigApplied, Some(scrape)) => scrape,
        (state, _) => state,
    }
}

impl HostRecord {
    /// The full label set: operator labels plus those derived from facts.
    pub fn labels(&self) -> Labels {
        facts::host_labels(&self.id, &self.facts, &self.operator_labels)
    }

    pub fn is_active(&self) -> bool {
        self.lifecycle.decommissioned_at.is_none()
    }

    /// The admin view, with the state at `now`.
    pub fn info(&self, now: i64, stale_after: i64) -> HostInfo {
        let l = &self.lifecycle;
        HostInfo {
            id: self.id.clone(),
            hostname: self.facts.hostname.clone(),
            state: headline(self, now, stale_after),
            config_state: self.state,
            scrape: l.scrape.clone(),
            decommissioned_at: l.decommissioned_at,
            previous_host_id: l.previous_host_id.clone(),
            batch_id: l.batch_id.clone(),
            replace_until: l.replace_until,
            last_conflict: l.last_conflict.clone(),
            reload_fallback: l.reload_fallback.clone(),
            labels: self.labels(),
            facts: self.facts.clone(),
            rendered_hash: self.rendered_hash.clone(),
            applied_hash: self.applied_hash.clone(),
            last_error: self.last_error.clone(),
            alloy_version: self.alloy_version.clone(),
            alloy_required: muster_shared::alloy::required_version(&self.config)
                .map(|(major, minor, patch)| format!("v{major}.{minor}.{patch}")),
            enrolled_at: self.enrolled_at,
            last_seen: self.last_seen,
            cert_expires_at: self.cert_expires_at,
            target_drift: None,
        }
    }
}

/// A Prometheus target group a template declared: an Alloy exporter
/// component scraped through Alloy's component metrics path, or (for a
/// service Alloy has no exporter for) a standalone exporter's port on the
/// host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetGroup {
    /// Alloy component id, e.g. `prometheus.exporter.unix.default`; empty
    /// for a standalone exporter.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub component: String,
    /// Port of a standalone exporter on the host (scraped directly).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Metrics path of a standalone exporter (`/metrics` when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Value of the `service` label, for application exporters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
}

impl TargetGroup {
    pub fn metrics_path(&self) -> String {
        match self.port {
            Some(_) => self.path.clone().unwrap_or_else(|| "/metrics".into()),
            None => format!("/api/v0/component/{}/metrics", self.component),
        }
    }

    /// Where Prometheus scrapes it: the host's Alloy, or the same host at
    /// the standalone exporter's port.
    pub fn address(&self, scrape_address: &str) -> String {
        match self.port {
            None => scrape_address.to_string(),
            Some(port) => {
                let host = scrape_address
                    .rsplit_once(':')
                    .map_or(scrape_address, |(h, _)| h);
                let host = host.trim_start_matches('[').trim_end_matches(']');
                crate::overrides::host_port(host, &port.to_string())
            }
        }
    }

    /// What makes two groups the same scrape.
    pub(crate) fn key(&self) -> String {
        match self.port {
            Some(p) => format!("port {p}"),
            None => self.component.clone(),
        }
    }
}

/// A rendered config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rendered {
    pub config: String,
    /// Hex SHA-256 of `config`: the version agents report back.
    pub hash: String,
    pub targets: Vec<TargetGroup>,
}

/// A certificate as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertRow {
    pub fingerprint: String,
    pub host_id: String,
    pub issued_at: i64,
    pub not_after: i64,
    pub revoked_at: Option<i64>,
    /// The certificate this one renewed.
    pub replaces: Option<String>,
}

/// An unrevoked certificate of an active host, with the host's rendered
/// hash: a row of the fleet core's poll index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LiveCert {
    pub fingerprint: String,
    pub host_id: String,
    pub not_after: i64,
    pub replaces: Option<String>,
    pub rendered_hash: String,
}

impl Store {
    pub fn host(&self, id: &str) -> Result<Option<HostRecord>, StoreError> {
        let conn = self.conn();
        Ok(host_by_id(&conn, id)?.map(|h| self.pending.overlay(h)))
    }

    /// Active hosts (not decommissioned), by id.
    pub fn hosts(&self) -> Result<Vec<HostRecord>, StoreError> {
        let conn = self.conn();
        query_hosts(&conn, "WHERE decommissioned_at IS NULL", &self.pending)
    }

    /// Every host ever enrolled, decommissioned ones included, by id.
    pub fn hosts_all(&self) -> Result<Vec<HostRecord>, StoreError> {
        let conn = self.conn();
        query_hosts(&conn, "", &self.pending)
    }

    /// Up to `limit` hosts (decommissioned ones included) with ids after
    /// `after`, by id: a pass over the fleet a page at a time.
    pub fn hosts_page(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<HostRecord>, StoreError> {
        hosts_page(&self.conn(), after, limit, false, &self.pending)
    }

    /// Calls `f` with every unrevoked certificate of an active host, row
    /// by row (nothing is collected); how many.
    pub fn for_each_live_cert(&self, mut f: impl FnMut(LiveCert)) -> Result<usize, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT c.fingerprint, c.host_id, c.not_after, c.replaces, h.rendered_hash
             FROM certs c JOIN hosts h ON h.id = c.host_id
             WHERE c.revoked_at IS NULL AND h.decommissioned_at IS NULL",
        )?;
        let mut rows = stmt.query([])?;
        let mut n = 0;
        while let Some(r) = rows.next()? {
            f(LiveCert {
                fingerprint: r.get(0)?,
                host_id: r.get(1)?,
                not_after: r.get(2)?,
                replaces: r.get(3)?,
                rendered_hash: r.get(4)?,
            });
            n += 1;
        }
        Ok(n)
    }

    /// A small value the server keeps between starts (`server_state`).
    pub fn server_state(&self, name: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn()
            .prepare_cached("SELECT value FROM server_state WHERE name = ?1")?
            .query_row([name], |r| r.get(0))
            .optional()?)
    }

    /// Remembers a refused claim of the host's machine-id, for `hosts show`.
    pub fn note_conflict(&self, host_id: &str, text: &str) -> Result<(), StoreError> {
        self.conn()
            .prepare_cached("UPDATE hosts SET last_conflict = ?2 WHERE id = ?1")?
            .execute(params![host_id, text])?;
        Ok(())
    }

    /// Records what Prometheus said about hosts: `Some` sets the scrape
    /// result, `None` clears it (no target of the host is known to
    /// Prometheus). Unchanged rows are not rewritten. Returns the ids whose
    /// scrape state changed.
    pub fn record_scrape(
        &self,
        results: &[(String, Option<ScrapeInfo>)],
    ) -> Result<Vec<String>, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let mut changed = Vec::new();
        for (host_id, scrape) in results {
            let old: Option<(Option<String>, Option<String>)> = tx
                .prepare_cached("SELECT scrape_state, scrape_error FROM hosts WHERE id = ?1")?
                .query_row([host_id], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            let Some((old_state, old_error)) = old else {
                continue;
            };
            let new_state = scrape.as_ref().map(|s| s.state.as_str().to_string());
            let new_error = scrape.as_ref().and_then(|s| s.error.clone());
            if old_state != new_state {
                changed.push(host_id.clone());
            }
            if old_state == new_state && old_error == new_error {
                // Keep checked_at moving only when something changed: fewer writes.
                continue;
            }
            tx.prepare_cached(
                "UPDATE hosts SET scrape_state = ?2, scrape_error = ?3, scrape_checked_at = ?4
                 WHERE id = ?1",
            )?
            .execute(params![
                host_id,
                new_state,
                new_error,
                scrape.as_ref().map(|s| s.checked_at)
            ])?;
        }
        tx.commit()?;
        Ok(changed)
    }
}

impl Tx<'_> {
    pub fn host(&self, id: &str) -> Result<Option<HostRecord>, StoreError> {
        Ok(host_by_id(&self.tx, id)?.map(|h| self.pending.overlay(h)))
    }

    /// Active hosts (not decommissioned), by id.
    pub fn active_hosts(&self) -> Result<Vec<HostRecord>, StoreError> {
        query_hosts(&self.tx, "WHERE decommissioned_at IS NULL", self.pending)
    }

    /// Up to `limit` active hosts with ids after `after`, by id: a pass over
    /// the fleet a page at a time.
    pub fn active_hosts_page(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<HostRecord>, StoreError> {
        hosts_page(&self.tx, after, limit, true, self.pending)
    }

    /// Stores a newly rendered config for a host.
    pub fn set_rendered(&self, host_id: &str, rendered: &Rendered) -> Result<(), StoreError> {
        self.tx
            .prepare_cached(
                "UPDATE hosts SET config = ?2, rendered_hash = ?3, targets = ?4 WHERE id = ?1",
            )?
            .execute(params![
                host_id,
                rendered.config,
                rendered.hash,
                to_json(&rendered.targets)
            ])?;
        Ok(())
    }

    /// Sets a value kept between starts (`server_state`).
    pub fn set_server_state(&self, name: &str, value: &str) -> Result<(), StoreError> {
        self.tx
            .prepare_cached(
                "INSERT INTO server_state (name, value) VALUES (?1, ?2)
             ON CONFLICT(name) DO UPDATE SET value = excluded.value",
            )?
            .execute(params![name, value])?;
        Ok(())
    }

    /// The active host of a machine.
    pub fn active_host_by_machine(
        &self,
        machine_id: &str,
    ) -> Result<Option<HostRecord>, StoreError> {
        self.tx
            .prepare_cached(&format!(
                    "SELECT {HOST_COLUMNS} FROM hosts WHERE machine_id = ?1 AND decommissioned_at IS NULL"
                ))?
.query_row([machine_id],
                host_row,
            )
            .optional()?
            .transpose()
            .map(|h| h.map(|h| self.pending.overlay(h)))
    }

    /// The most recently decommissioned host of a machine.
    pub fn retired_host_of_machine(&self, machine_id: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .tx
            .prepare_cached(
                "SELECT id FROM hosts WHERE machine_id = ?1 AND decommissioned_at IS NOT NULL
                 ORDER BY decommissioned_at DESC LIMIT 1",
            )?
            .query_row([machine_id], |r| r.get(0))
            .optional()?)
    }

    /// A host id for `hostname` that no host has had.
    pub fn new_host_id(&self, hostname: &str) -> Result<String, StoreError> {
        loop {
            let id = facts::host_id(hostname, &tokens::random_hex(3));
            let taken: bool = self
                .tx
                .prepare_cached("SELECT EXISTS(SELECT 1 FROM hosts WHERE id = ?1)")?
                .query_row([&id], |r| r.get(0))?;
            if !taken {
                return Ok(id);
            }
        }
    }

    /// Inserts a host or updates everything about it but its id, machine
    /// and enrollment time.
    pub fn put_host(&self, host: &HostRecord) -> Result<(), StoreError> {
        upsert_host(&self.tx, host)
    }

    pub fn touch(&self, host_id: &str, now: i64) -> Result<(), StoreError> {
        self.tx
            .prepare_cached("UPDATE hosts SET last_seen = ?2 WHERE id = ?1")?
            .execute(params![host_id, now])?;
        Ok(())
    }

    pub fn cert(&self, fingerprint: &str) -> Result<Option<CertRow>, StoreError> {
        Ok(self
            .tx
            .prepare_cached(
                "SELECT fingerprint, host_id, issued_at, not_after, revoked_at, replaces
                 FROM certs WHERE fingerprint = ?1",
            )?
            .query_row([fingerprint], |r| {
                Ok(CertRow {
                    fingerprint: r.get(0)?,
                    host_id: r.get(1)?,
                    issued_at: r.get(2)?,
                    not_after: r.get(3)?,
                    revoked_at: r.get(4)?,
                    replaces: r.get(5)?,
                })
            })
            .optional()?)
    }

    pub fn add_cert(
        &self,
        host_id: &str,
        cert: &IssuedCert,
        replaces: Option<&str>,
        now: i64,
    ) -> Result<(), StoreError> {
        self.tx
            .prepare_cached(
                "INSERT INTO certs (fingerprint, host_id, serial, issued_at, not_after, replaces)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                cert.fingerprint,
                host_id,
                cert.serial,
                now,
                cert.not_after,
                replaces
            ])?;
        Ok(())
    }

    /// Revokes every unrevoked certificate of a host; how many.
    pub fn revoke_host_certs(&self, host_id: &str, now: i64) -> Result<usize, StoreError> {
        Ok(self
            .tx
            .prepare_cached(
                "UPDATE certs SET revoked_at = ?2 WHERE host_id = ?1 AND revoked_at IS NULL",
            )?
            .execute(params![host_id, now])?)
    }

    /// Revokes one certificate unless it already is; whether it was revoked now.
    pub fn revoke_cert(&self, fingerprint: &str, now: i64) -> Result<bool, StoreError> {
        Ok(self
            .tx
            .prepare_cached(
                "UPDATE certs SET revoked_at = ?2 WHERE fingerprint = ?1 AND revoked_at IS NULL",
            )?
            .execute(params![fingerprint, now])?
            > 0)
    }

    /// Revokes the certificates that renewed `fingerprint`; how many.
    pub fn revoke_renewals_of(&self, fingerprint: &str, now: i64) -> Result<usize, StoreError> {
        Ok(self
            .tx
            .prepare_cached(
                "UPDATE certs SET revoked_at = ?2 WHERE replaces = ?1 AND revoked_at IS NULL",
            )?
            .execute(params![fingerprint, now])?)
    }

    /// Records an agent's apply report (the error text already cleaned).
    pub fn record_status(
        &self,
        host_id: &str,
        report: &StatusReport,
        now: i64,
    ) -> Result<(), StoreError> {
        match report.result {
            ApplyResult::Applied => self
                .tx
                .prepare_cached(
                    "UPDATE hosts SET state = ?2, applied_hash = ?3, last_error = NULL,
                 alloy_version = COALESCE(?4, alloy_version), last_seen = ?5,
                 reload_fallback = ?6 WHERE id = ?1",
                )?
                .execute(params![
                    host_id,
                    HostState::ConfigApplied.as_str(),
                    report.hash,
                    report.alloy_version,
                    now,
                    report.reload_fallback
                ])?,
            ApplyResult::Failed => self
                .tx
                .prepare_cached(
                    "UPDATE hosts SET state = ?2, last_error = ?3,
                 alloy_version = COALESCE(?4, alloy_version), last_seen = ?5,
                 reload_fallback = ?6 WHERE id = ?1",
                )?
                .execute(params![
                    host_id,
                    HostState::ConfigFailed.as_str(),
                    report
                        .error
                        .as_deref()
                        .unwrap_or("the agent gave no error text"),
                    report.alloy_version,
                    now,
                    report.reload_fallback
                ])?,
        };
        Ok(())
    }
}

pub(super) const HOST_COLUMNS: &str =
    "id, machine_id, public_key_sha256, facts, labels, state, config,
    rendered_hash, targets, applied_hash, last_error, alloy_version, enrolled_at, last_seen,
    cert_expires_at, scrape_state, scrape_error, scrape_checked_at, decommissioned_at,
    previous_host_id, batch_id, replace_until, last_conflict, reload_fallback";

pub(super) fn host_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Result<HostRecord, StoreError>> {
    let facts: String = r.get(3)?;
    let labels: String = r.get(4)?;
    let state: String = r.get(5)?;
    let targets: String = r.get(8)?;
    let scrape_state: Option<String> = r.get(15)?;
    let parsed = (|| {
        let state_of = |text: &str| {
            HostState::parse(text).ok_or(StoreError::Corrupt {
                what: "host state",
                message: text.to_string(),
            })
        };
        Ok::<_, StoreError>((
            serde_json::from_str(&facts).map_err(corrupt("host facts"))?,
            serde_json::from_str(&labels).map_err(corrupt("host labels"))?,
            state_of(&state)?,
            serde_json::from_str(&targets).map_err(corrupt("host targets"))?,
            scrape_state.as_deref().map(state_of).transpose()?,
        ))
    })();
    let (facts, operator_labels, state, targets, scrape_state) = match parsed {
        Ok(parts) => parts,
        Err(e) => return Ok(Err(e)),
    };
    let scrape = match scrape_state {
        Some(state) => Some(ScrapeInfo {
            state,
            error: r.get(16)?,
            checked_at: r.get::<_, Option<i64>>(17)?.unwrap_or(0),
        }),
        None => None,
    };
    Ok(Ok(HostRecord {
        id: r.get(0)?,
        machine_id: r.get(1)?,
        public_key_sha256: r.get(2)?,
        facts,
        operator_labels,
        state,
        config: r.get(6)?,
        rendered_hash: r.get(7)?,
        targets,
        applied_hash: r.get(9)?,
        last_error: r.get(10)?,
        alloy_version: r.get(11)?,
        enrolled_at: r.get(12)?,
        last_seen: r.get(13)?,
        cert_expires_at: r.get(14)?,
        lifecycle: Lifecycle {
            scrape,
            decommissioned_at: r.get(18)?,
            previous_host_id: r.get(19)?,
            batch_id: r.get(20)?,
            replace_until: r.get(21)?,
            last_conflict: r.get(22)?,
            reload_fallback: r.get(23)?,
        },
    }))
}

pub(super) fn host_by_id(conn: &Connection, id: &str) -> Result<Option<HostRecord>, StoreError> {
    conn.prepare_cached(&format!("SELECT {HOST_COLUMNS} FROM hosts WHERE id = ?1"))?
        .query_row([id], host_row)
        .optional()?
        .transpose()
}

/// A page of hosts by id (keyset: through the primary key's index), with
/// their pending check-in times.
fn hosts_page(
    conn: &Connection,
    after: Option<&str>,
    limit: usize,
    active_only: bool,
    pending: &Pending,
) -> Result<Vec<HostRecord>, StoreError> {
    let active = if active_only {
        "AND decommissioned_at IS NULL"
    } else {
        ""
    };
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {HOST_COLUMNS} FROM hosts WHERE id > ?1 {active} ORDER BY id LIMIT ?2"
    ))?;
    let rows = stmt.query_map(params![after.unwrap_or(""), limit as i64], host_row)?;
    rows.map(|r| Ok(pending.overlay(r??))).collect()
}

/// Hosts matching `filter`, by id, with their pending check-in times.
fn query_hosts(
    conn: &Connection,
    filter: &str,
    pending: &Pending,
) -> Result<Vec<HostRecord>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {HOST_COLUMNS} FROM hosts {filter} ORDER BY id"
    ))?;
    let rows = stmt.query_map([], host_row)?;
    rows.map(|r| Ok(pending.overlay(r??))).collect()
}

/// Inserts a host or updates everything about it but its id, machine and
/// enrollment time.
fn upsert_host(tx: &Transaction<'_>, h: &HostRecord) -> Result<(), StoreError> {
    let l = &h.lifecycle;
    tx.prepare_cached(&format!(
        "INSERT INTO hosts ({HOST_COLUMNS})
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16,
                     ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24)
             ON CONFLICT(id) DO UPDATE SET public_key_sha256 = excluded.public_key_sha256,
             facts = excluded.facts, labels = excluded.labels, state = excluded.state,
             config = excluded.config, rendered_hash = excluded.rendered_hash,
             targets = excluded.targets, applied_hash = excluded.applied_hash,
             last_error = excluded.last_error, alloy_version = excluded.alloy_version,
             last_seen = excluded.last_seen, cert_expires_at = excluded.cert_expires_at,
             scrape_state = excluded.scrape_state, scrape_error = excluded.scrape_error,
             scrape_checked_at = excluded.scrape_checked_at,
             decommissioned_at = excluded.decommissioned_at,
             previous_host_id = excluded.previous_host_id, batch_id = excluded.batch_id,
             replace_until = excluded.replace_until, last_conflict = excluded.last_conflict,
             reload_fallback = excluded.reload_fallback"
    ))?
    .execute(params![
        h.id,
        h.machine_id,
        h.public_key_sha256,
        to_json(&h.facts),
        to_json(&h.operator_labels),
        h.state.as_str(),
        h.config,
        h.rendered_hash,
        to_json(&h.targets),
        h.applied_hash,
        h.last_error,
        h.alloy_version,
        h.enrolled_at,
        h.last_seen,
        h.cert_expires_at,
        l.scrape.as_ref().map(|s| s.state.as_str()),
        l.scrape.as_ref().and_then(|s| s.error.clone()),
        l.scrape.as_ref().map(|s| s.checked_at),
        l.decommissioned_at,
        l.previous_host_id,
        l.batch_id,
        l.replace_until,
        l.last_conflict,
        l.reload_fallback,
    ])?;
    Ok(())
}
