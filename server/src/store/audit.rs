//! The audit log (append-only: the schema's triggers refuse UPDATE, and
//! DELETE of any entry newer than the retention horizon).

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

    /// Audit retention: deletes the entries older than `before` (Unix
    /// seconds), a few thousand per transaction so that other writers wait
    /// little, and audits how many went. The schema lets an entry be
    /// deleted only once the retention horizon has passed it, and the
    /// horizon only moves forward. Returns how many were deleted.
    pub fn prune_audit(&self, before: i64, now: i64) -> Result<usize, StoreError> {
        const CHUNK: usize = 5000;
        let mut deleted = 0;
        loop {
            let mut conn = self.conn();
            let tx = conn.transaction()?;
            tx.execute(
                "UPDATE audit_horizon SET before = max(before, ?1)",
                [before],
            )?;
            let n = tx.execute(
                "DELETE FROM audit WHERE id IN
                 (SELECT id FROM audit WHERE at < ?1 ORDER BY at LIMIT ?2)",
                params![before, CHUNK as i64],
            )?;
            deleted += n;
            let last = n < CHUNK;
            if last && deleted > 0 {
                insert(
                    &tx,
                    &AuditEntry {
                        at: now,
                        actor: "server",
                        action: "audit.prune",
                        target: None,
                        outcome: "ok",
                        detail: Some(&format!(
                            "{deleted} audit entries older than {} deleted (audit retention)",
                            crate::cli::time(before)
                        )),
                        source: None,
                    },
                )?;
            }
            tx.commit()?;
            if last {
                return Ok(deleted);
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(at: i64) -> AuditEntry<'static> {
        AuditEntry {
            at,
            actor: "admin",
            action: "token.create",
            target: None,
            outcome: "ok",
            detail: None,
            source: None,
        }
    }

    fn ats(store: &Store) -> Vec<(i64, String)> {
        store
            .audit_query(&AuditFilter {
                limit: 100,
                ..AuditFilter::default()
            })
            .expect("audit")
            .into_iter()
            .map(|r| (r.at, r.action))
            .collect()
    }

    #[test]
    fn retention_deletes_only_entries_older_than_the_horizon_and_says_so() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(&dir.path().join("muster.db")).expect("store");
        for at in [100, 200, 300, 400] {
            store.audit(&entry(at)).expect("append");
        }
        assert_eq!(store.prune_audit(250, 1000).expect("prune"), 2);
        let left = ats(&store);
        assert_eq!(
            left[..2],
            [(300, "token.create".into()), (400, "token.create".into())]
        );
        assert_eq!(left[2].1, "audit.prune");
        // Nothing older left: no further entry about it.
        assert_eq!(store.prune_audit(250, 1001).expect("again"), 0);
        assert_eq!(ats(&store).len(), 3);
        // Entries newer than the horizon stay append-only, and the horizon
        // does not move back.
        let conn = store.conn();
        let err = conn
            .execute("DELETE FROM audit WHERE at = 300", [])
            .expect_err("refused");
        assert!(err.to_string().contains("append-only"), "{err}");
        let err = conn
            .execute("UPDATE audit_horizon SET before = 0", [])
            .expect_err("refused");
        assert!(err.to_string().contains("only moves forward"), "{err}");
    }
}
