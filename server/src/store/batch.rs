//! Batch pre-registration in the database: a batch and its rows, each row
//! with a one-time enrollment token bound to the row's hostname.

use std::collections::BTreeMap;

use muster_shared::labels::Labels;
use rusqlite::{params, Connection, OptionalExtension, Transaction};

use super::seen::Pending;
use super::{corrupt, host_by_id, to_json, token_state, HostRecord, Store, StoreError, Tx};
use crate::admin_wire::TokenState;
use crate::tokens::{self, Kind, Secret};

/// A validated row to pre-register.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewBatchHost {
    /// Line of the import file the row came from.
    pub line: usize,
    pub hostname: String,
    /// Final labels (schema defaults filled in).
    pub labels: Labels,
    pub address: Option<String>,
}

pub use crate::admin_wire::BatchRecord;

/// One pre-registered host with its token's state and, once enrolled, its host.
#[derive(Clone, Debug)]
pub struct BatchEntry {
    pub line: usize,
    pub hostname: String,
    pub labels: Labels,
    pub address: Option<String>,
    pub token_id: String,
    pub token_state: TokenState,
    pub token_expires_at: i64,
    pub host: Option<HostRecord>,
    /// Why the last enrollment with this row's token was refused.
    pub last_error: Option<String>,
}

/// line, labels, address, token id, host id of a stored row.
type RowParts = (i64, String, Option<String>, String, Option<String>);

/// Inserts a one-time token bound to `hostname` and `batch_id`.
fn insert_bound_token(
    tx: &Transaction<'_>,
    batch_id: &str,
    row: &NewBatchHost,
    expires_at: i64,
    created_by: &str,
    now: i64,
) -> Result<(String, Secret), StoreError> {
    let token = tokens::generate(Kind::Enroll);
    tx.prepare_cached(
        "INSERT INTO enroll_tokens (id, hash, labels, created_at, expires_at, uses_allowed,
         created_by, hostname, batch_id) VALUES (?1, ?2, ?3, ?4, ?5, 1, ?6, ?7, ?8)",
    )?
    .execute(params![
        token.id,
        token.hash,
        to_json(&row.labels),
        now,
        expires_at,
        created_by,
        row.hostname,
        batch_id
    ])?;
    Ok((token.id, token.text))
}

fn hostnames_in_use(
    conn: &Connection,
    names: &[String],
    now: i64,
) -> Result<BTreeMap<String, String>, StoreError> {
    let mut taken = BTreeMap::new();
    let mut hosts = conn.prepare_cached(
        "SELECT lower(json_extract(facts, '$.hostname')), id FROM hosts
         WHERE decommissioned_at IS NULL",
    )?;
    let wanted: std::collections::BTreeSet<String> =
        names.iter().map(|n| n.to_ascii_lowercase()).collect();
    for row in hosts.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))? {
        let (name, id) = row?;
        if wanted.contains(&name) {
            taken.insert(name, format!("already enrolled as host {id}"));
        }
    }
    let mut pending = conn.prepare_cached(
        "SELECT lower(b.hostname), b.batch_id FROM batch_hosts b
         JOIN enroll_tokens t ON t.id = b.token_id
         WHERE b.host_id IS NULL AND t.revoked_at IS NULL AND t.uses < t.uses_allowed
         AND t.expires_at > ?1",
    )?;
    for row in pending.query_map([now], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
    })? {
        let (name, batch) = row?;
        if wanted.contains(&name) {
            taken
                .entry(name)
                .or_insert(format!("already pending in batch {batch}"));
        }
    }
    Ok(taken)
}

fn batches(conn: &Connection, only: Option<&str>) -> Result<Vec<BatchRecord>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT b.id, b.name, b.created_at, b.created_by,
         (SELECT count(*) FROM batch_hosts h WHERE h.batch_id = b.id)
         FROM batches b WHERE ?1 IS NULL OR b.id = ?1 ORDER BY b.created_at, b.id",
    )?;
    let rows = stmt.query_map([only], |r| {
        Ok(BatchRecord {
            id: r.get(0)?,
            name: r.get(1)?,
            created_at: r.get(2)?,
            created_by: r.get(3)?,
            hosts: r.get::<_, i64>(4)? as usize,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The rows of a batch, by line, with their tokens and hosts.
fn batch_entries(
    conn: &Connection,
    pending: &Pending,
    batch_id: &str,
    now: i64,
) -> Result<Vec<BatchEntry>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT b.line, b.hostname, b.labels, b.address, b.token_id, b.host_id, b.last_error,
         t.expires_at, t.uses_allowed, t.uses, t.revoked_at IS NOT NULL
         FROM batch_hosts b JOIN enroll_tokens t ON t.id = b.token_id
         WHERE b.batch_id = ?1 ORDER BY b.line, b.hostname",
    )?;
    struct Raw {
        line: i64,
        hostname: String,
        labels: String,
        address: Option<String>,
        token_id: String,
        host_id: Option<String>,
        last_error: Option<String>,
        expires_at: i64,
        uses_allowed: u32,
        uses: u32,
        revoked: bool,
    }
    let raws = stmt
        .query_map([batch_id], |r| {
            Ok(Raw {
                line: r.get(0)?,
                hostname: r.get(1)?,
                labels: r.get(2)?,
                address: r.get(3)?,
                token_id: r.get(4)?,
                host_id: r.get(5)?,
                last_error: r.get(6)?,
                expires_at: r.get(7)?,
                uses_allowed: r.get(8)?,
                uses: r.get(9)?,
                revoked: r.get(10)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let mut entries = Vec::with_capacity(raws.len());
    for raw in raws {
        let host = match &raw.host_id {
            Some(id) => host_by_id(conn, id)?.map(|h| pending.overlay(h)),
            None => None,
        };
        entries.push(BatchEntry {
            line: raw.line.max(0) as usize,
            hostname: raw.hostname,
            labels: serde_json::from_str(&raw.labels).map_err(corrupt("batch labels"))?,
            address: raw.address,
            token_id: raw.token_id,
            token_state: token_state(raw.expires_at, raw.uses_allowed, raw.uses, raw.revoked, now),
            token_expires_at: raw.expires_at,
            host,
            last_error: raw.last_error,
        });
    }
    Ok(entries)
}

impl Store {
    pub fn batches(&self) -> Result<Vec<BatchRecord>, StoreError> {
        batches(&self.conn(), None)
    }

    pub fn batch(&self, id: &str) -> Result<Option<BatchRecord>, StoreError> {
        Ok(batches(&self.conn(), Some(id))?.pop())
    }

    /// The rows of a batch, by line, with their tokens and hosts.
    pub fn batch_entries(&self, batch_id: &str, now: i64) -> Result<Vec<BatchEntry>, StoreError> {
        batch_entries(&self.conn(), &self.pending, batch_id, now)
    }

    /// Remembers why an enrollment with a batch row's token was refused, so
    /// `batch status` can say why the host is not there.
    pub fn note_token_refusal(&self, token_id: &str, reason: &str) -> Result<(), StoreError> {
        self.conn()
            .prepare_cached(
                "UPDATE batch_hosts SET last_error = ?2 WHERE token_id = ?1 AND host_id IS NULL",
            )?
            .execute(params![token_id, reason])?;
        Ok(())
    }
}

impl Tx<'_> {
    /// Hostnames (lowercased) among `names` already taken by an active host
    /// or by a row of another batch still waiting with a live token, with
    /// what takes them.
    pub fn hostnames_in_use(
        &self,
        names: &[String],
        now: i64,
    ) -> Result<BTreeMap<String, String>, StoreError> {
        hostnames_in_use(&self.tx, names, now)
    }

    pub fn batch(&self, id: &str) -> Result<Option<BatchRecord>, StoreError> {
        Ok(batches(&self.tx, Some(id))?.pop())
    }

    pub fn batch_entries(&self, batch_id: &str, now: i64) -> Result<Vec<BatchEntry>, StoreError> {
        batch_entries(&self.tx, self.pending, batch_id, now)
    }

    /// Creates a batch and one bound one-time token per row. Returns the
    /// batch and each row's token text, in order.
    pub fn create_batch(
        &self,
        name: &str,
        rows: &[NewBatchHost],
        expires_at: i64,
        created_by: &str,
        now: i64,
    ) -> Result<(BatchRecord, Vec<Secret>), StoreError> {
        let tx = &self.tx;
        let id = loop {
            let id = format!("b-{}", tokens::random_hex(4));
            let taken: bool = tx
                .prepare_cached("SELECT EXISTS(SELECT 1 FROM batches WHERE id = ?1)")?
                .query_row([&id], |r| r.get(0))?;
            if !taken {
                break id;
            }
        };
        tx.prepare_cached(
            "INSERT INTO batches (id, name, created_at, created_by) VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![id, name, now, created_by])?;
        let mut secrets = Vec::with_capacity(rows.len());
        for row in rows {
            let (token_id, secret) = insert_bound_token(tx, &id, row, expires_at, created_by, now)?;
            tx.prepare_cached(
                "INSERT INTO batch_hosts (batch_id, hostname, line, labels, address, token_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                id,
                row.hostname,
                row.line as i64,
                to_json(&row.labels),
                row.address,
                token_id
            ])?;
            secrets.push(secret);
        }
        let record = BatchRecord {
            id,
            name: name.to_string(),
            created_at: now,
            created_by: created_by.to_string(),
            hosts: rows.len(),
        };
        Ok((record, secrets))
    }

    /// New tokens for the named rows of a batch: each row's old token is
    /// revoked and its last error cleared. Rows already enrolled are left
    /// alone (and not returned).
    pub fn reissue_batch_tokens(
        &self,
        batch_id: &str,
        hostnames: &[String],
        expires_at: i64,
        created_by: &str,
        now: i64,
    ) -> Result<Vec<(String, Secret)>, StoreError> {
        let tx = &self.tx;
        let mut issued = Vec::new();
        for hostname in hostnames {
            let row: Option<RowParts> = tx
                .prepare_cached(
                    "SELECT line, labels, address, token_id, host_id FROM batch_hosts
                     WHERE batch_id = ?1 AND hostname = ?2",
                )?
                .query_row(params![batch_id, hostname], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
                })
                .optional()?;
            let Some((line, labels, address, old_token, None)) = row else {
                continue;
            };
            let row = NewBatchHost {
                line: line.max(0) as usize,
                hostname: hostname.clone(),
                labels: serde_json::from_str(&labels).map_err(corrupt("batch labels"))?,
                address,
            };
            tx.prepare_cached(
                "UPDATE enroll_tokens SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
            )?
            .execute(params![old_token, now])?;
            let (token_id, secret) =
                insert_bound_token(tx, batch_id, &row, expires_at, created_by, now)?;
            tx.prepare_cached(
                "UPDATE batch_hosts SET token_id = ?3, last_error = NULL
                 WHERE batch_id = ?1 AND hostname = ?2",
            )?
            .execute(params![batch_id, hostname, token_id])?;
            issued.push((hostname.clone(), secret));
        }
        Ok(issued)
    }

    /// Marks the batch row of `token_id` (if any) as enrolled as `host_id`.
    pub fn bind_batch_row(&self, token_id: &str, host_id: &str) -> Result<(), StoreError> {
        self.tx
            .prepare_cached(
                "UPDATE batch_hosts SET host_id = ?2, last_error = NULL WHERE token_id = ?1",
            )?
            .execute(params![token_id, host_id])?;
        Ok(())
    }
}
