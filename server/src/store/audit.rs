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
    conn.prepare_cached(
        "INSERT INTO audit (at, actor, action, target, outcome, detail, source)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        entry.at,
        entry.actor,
        entry.action,
        entry.target,
        entry.outcome,
        entry.detail,
        entry.source
    ])?;
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
            tx.prepare_cached("UPDATE audit_horizon SET before = max(before, ?1)")?
                .execute([before])?;
            let n = tx
                .prepare_cached(
                    "DELETE FROM audit WHERE id IN
                 (SELECT id FROM audit WHERE at < ?1 ORDER BY at LIMIT ?2)",
                )?
                .execute(params![before, CHUNK as i64])?;
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
        let mut stmt = conn.prepare_cached(&audit_sql(filter))?;
        let mut params: Vec<(&str, &dyn rusqlite::ToSql)> = vec![(":limit", &filter.limit)];
        if let Some(host) = &filter.host {
            params.push((":host", host));
        }
        if let Some(actor) = &filter.actor {
            params.push((":actor", actor));
        }
        if let Some(since) = &filter.since {
            params.push((":since", since));
        }
        let rows = stmt.query_map(params.as_slice(), |r| {
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

/// The query for `filter` with only the conditions it sets (named
/// `:host`, `:actor`, `:since`, `:limit`), so that a host or actor filter
/// reads its index (`audit_target` with `audit_actor`, `audit_actor`)
/// instead of every entry; without them the newest entries are read first
/// and the read stops at the limit.
fn audit_sql(filter: &AuditFilter) -> String {
    let mut conditions = vec!["TRUE"];
    if filter.host.is_some() {
        conditions.push("(target = :host OR actor = :host)");
    }
    if filter.actor.is_some() {
        conditions.push("actor = :actor");
    }
    if filter.since.is_some() {
        conditions.push("at >= :since");
    }
    format!(
        "SELECT id, at, actor, action, target, outcome, detail, source FROM
         (SELECT * FROM audit WHERE {} ORDER BY id DESC LIMIT :limit)
         ORDER BY id",
        conditions.join(" AND ")
    )
}

/// Which audit entries to read.
#[derive(Clone, Debug, Default)]
pub struct AuditFilter {
    /// Entries about this host (as target) or by it (as actor).
    pub host: Option<String>,
    /// Entries by this admin (or host, or `server`).
    pub actor: Option<String>,
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

    #[test]
    fn filters_by_host_actor_and_time_in_sql_through_indexes() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(&dir.path().join("muster.db")).expect("store");
        let actors = ["alice", "bob", "web-01-abc", "server"];
        for i in 0..400i64 {
            store
                .audit(&AuditEntry {
                    at: i,
                    actor: actors[(i % 4) as usize],
                    action: "host.label",
                    target: Some(if i % 3 == 0 {
                        "web-01-abc"
                    } else {
                        "db-02-def"
                    }),
                    outcome: "ok",
                    detail: None,
                    source: None,
                })
                .expect("audit");
        }
        let read = |host: Option<&str>, actor: Option<&str>, since: Option<i64>, limit| {
            store
                .audit_query(&AuditFilter {
                    host: host.map(String::from),
                    actor: actor.map(String::from),
                    since,
                    limit,
                })
                .expect("audit")
                .into_iter()
                .map(|r| r.at)
                .collect::<Vec<i64>>()
        };
        let want = |keep: &dyn Fn(i64) -> bool, limit: usize| {
            let all: Vec<i64> = (0..400).filter(|i| keep(*i)).collect();
            all[all.len().saturating_sub(limit)..].to_vec()
        };
        // The newest `limit` of bob's, though most entries are not his.
        assert_eq!(read(None, Some("bob"), None, 30), want(&|i| i % 4 == 1, 30));
        assert_eq!(
            read(Some("web-01-abc"), None, None, 500),
            want(&|i| i % 3 == 0 || i % 4 == 2, 500)
        );
        assert_eq!(
            read(Some("web-01-abc"), Some("alice"), Some(200), 500),
            want(&|i| i % 3 == 0 && i % 4 == 0 && i >= 200, 500)
        );
        assert_eq!(read(None, Some("nobody"), None, 10), Vec::<i64>::new());
        for (filter, index) in [
            (
                AuditFilter {
                    actor: Some("a".into()),
                    ..AuditFilter::default()
                },
                "audit_actor",
            ),
            (
                AuditFilter {
                    host: Some("h".into()),
                    ..AuditFilter::default()
                },
                "audit_target",
            ),
        ] {
            let plan = store.query_plan(&audit_sql(&filter)).join("; ");
            assert!(plan.contains(index), "{filter:?}: {plan}");
            assert!(
                !plan.contains("SCAN audit"),
                "{filter:?} reads every entry: {plan}"
            );
        }
    }
}
