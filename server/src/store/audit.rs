//! The audit log (append-only: the schema's triggers refuse UPDATE and DELETE).

use rusqlite::{params, Connection};

use super::{Store, StoreError, Tx};

/// One audit log entry.
pub struct AuditEntry<'a> {
    pub at: i64,
    /// Admin token name, host id, or `server`.
    pub actor: &'a str,
    pub action: &'a str,
    pub target: Option<&'a str>,
    pub outcome: &'a str,
    pub detail: Option<&'a str>,
    pub source: Option<&'a str>,
}

fn insert(conn: &Connection, entry: &AuditEntry<'_>) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO audit (at, actor, action, target, outcome, detail, source)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            entry.at,
            entry.actor,
            entry.action,
            entry.target,
            entry.outcome,
            entry.detail,
            entry.source
        ],
    )?;
    Ok(())
}

impl Tx<'_> {
    /// An audit entry in the same transaction as the change it describes.
    pub fn audit(&self, entry: &AuditEntry<'_>) -> Result<(), StoreError> {
        insert(&self.tx, entry)
    }
}

impl Store {
    /// An audit entry on its own (a refusal, which changes nothing else).
    pub fn audit(&self, entry: &AuditEntry<'_>) -> Result<(), StoreError> {
        insert(&self.conn(), entry)
    }

    /// The newest `limit` audit entries matching `filter`, oldest first.
    pub fn audit_query(&self, filter: &AuditFilter) -> Result<Vec<AuditRow>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT id, at, actor, action, target, outcome, detail, source FROM
             (SELECT * FROM audit
              WHERE (?1 IS NULL OR target = ?1 OR actor = ?1) AND (?2 IS NULL OR at >= ?2)
              ORDER BY id DESC LIMIT ?3)
             ORDER BY id",
        )?;
        let rows = stmt.query_map(params![filter.host, filter.since, filter.limit], |r| {
            Ok(AuditRow {
                id: r.get(0)?,
                at: r.get(1)?,
                actor: r.get(2)?,
                action: r.get(3)?,
                target: r.get(4)?,
                outcome: r.get(5)?,
                detail: r.get(6)?,
                source: r.get(7)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

/// Which audit entries to read.
#[derive(Clone, Debug, Default)]
pub struct AuditFilter {
    /// Entries about this host (as target) or by it (as actor).
    pub host: Option<String>,
    /// Unix seconds; entries at or after.
    pub since: Option<i64>,
    pub limit: u32,
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct AuditRow {
    pub id: i64,
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub target: Option<String>,
    pub outcome: String,
    pub detail: Option<String>,
    /// The peer address of the request, when there was one.
    pub source: Option<String>,
}
