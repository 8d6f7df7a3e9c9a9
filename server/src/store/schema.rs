//! The database schema and its migrations. `PRAGMA user_version` is the
//! schema version; a new database is created at version 1 and migrated step
//! by step like an old one, so the migrations are exercised on every start
//! from scratch, and existing data dirs upgrade in place.

use rusqlite::Connection;

use super::StoreError;

/// The version this server writes and understands.
pub const VERSION: i32 = 9;

/// Version 1 (the first release). Never edited: later versions are steps.
const V1: &str = r#"
CREATE TABLE admin_tokens (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    hash BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
);
CREATE TABLE enroll_tokens (
    id TEXT PRIMARY KEY,
    hash BLOB NOT NULL,
    labels TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    uses_allowed INTEGER NOT NULL,
    uses INTEGER NOT NULL DEFAULT 0,
    revoked_at INTEGER,
    created_by TEXT NOT NULL
);
CREATE TABLE hosts (
    id TEXT PRIMARY KEY,
    machine_id TEXT NOT NULL UNIQUE,
    public_key_sha256 TEXT NOT NULL,
    facts TEXT NOT NULL,
    labels TEXT NOT NULL,
    state TEXT NOT NULL,
    config TEXT NOT NULL,
    rendered_hash TEXT NOT NULL,
    targets TEXT NOT NULL,
    applied_hash TEXT,
    last_error TEXT,
    alloy_version TEXT,
    enrolled_at INTEGER NOT NULL,
    last_seen INTEGER NOT NULL,
    cert_expires_at INTEGER NOT NULL
);
CREATE TABLE certs (
    fingerprint TEXT PRIMARY KEY,
    host_id TEXT NOT NULL REFERENCES hosts(id),
    serial TEXT NOT NULL,
    issued_at INTEGER NOT NULL,
    not_after INTEGER NOT NULL,
    revoked_at INTEGER
);
CREATE TABLE enrollments (
    idempotency_key TEXT PRIMARY KEY,
    host_id TEXT NOT NULL REFERENCES hosts(id),
    token_id TEXT NOT NULL,
    at INTEGER NOT NULL
);
CREATE TABLE audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at INTEGER NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT,
    outcome TEXT NOT NULL,
    detail TEXT,
    source TEXT
);
"#;

/// 1 → 2: fleet operations.
/// * `hosts` is rebuilt without `UNIQUE(machine_id)`: a decommissioned host
///   keeps its row while the same machine enrolls again as a new host (linked
///   by `previous_host_id`); uniqueness now holds among active hosts only.
///   New columns: the scrape check, decommission, batch, `hosts replace`.
/// * Enrollment tokens may be bound to a hostname and a batch.
/// * `batches` and `batch_hosts`: pre-registered hosts and their tokens.
/// * The audit log becomes append-only (triggers) and indexed by target.
const V2: &str = r#"
CREATE TABLE hosts_v2 (
    id TEXT PRIMARY KEY,
    machine_id TEXT NOT NULL,
    public_key_sha256 TEXT NOT NULL,
    facts TEXT NOT NULL,
    labels TEXT NOT NULL,
    state TEXT NOT NULL,
    config TEXT NOT NULL,
    rendered_hash TEXT NOT NULL,
    targets TEXT NOT NULL,
    applied_hash TEXT,
    last_error TEXT,
    alloy_version TEXT,
    enrolled_at INTEGER NOT NULL,
    last_seen INTEGER NOT NULL,
    cert_expires_at INTEGER NOT NULL,
    scrape_state TEXT,
    scrape_error TEXT,
    scrape_checked_at INTEGER,
    decommissioned_at INTEGER,
    previous_host_id TEXT,
    batch_id TEXT,
    replace_until INTEGER,
    last_conflict TEXT
);
INSERT INTO hosts_v2 (id, machine_id, public_key_sha256, facts, labels, state, config,
    rendered_hash, targets, applied_hash, last_error, alloy_version, enrolled_at, last_seen,
    cert_expires_at)
  SELECT id, machine_id, public_key_sha256, facts, labels, state, config,
    rendered_hash, targets, applied_hash, last_error, alloy_version, enrolled_at, last_seen,
    cert_expires_at FROM hosts;
DROP TABLE hosts;
ALTER TABLE hosts_v2 RENAME TO hosts;
CREATE UNIQUE INDEX hosts_active_machine ON hosts(machine_id) WHERE decommissioned_at IS NULL;
CREATE INDEX certs_host ON certs(host_id);

ALTER TABLE enroll_tokens ADD COLUMN hostname TEXT;
ALTER TABLE enroll_tokens ADD COLUMN batch_id TEXT;

CREATE TABLE batches (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    created_by TEXT NOT NULL
);
CREATE TABLE batch_hosts (
    batch_id TEXT NOT NULL REFERENCES batches(id),
    hostname TEXT NOT NULL,
    line INTEGER NOT NULL,
    labels TEXT NOT NULL,
    address TEXT,
    token_id TEXT NOT NULL,
    host_id TEXT REFERENCES hosts(id),
    last_error TEXT,
    PRIMARY KEY (batch_id, hostname)
);
CREATE INDEX batch_hosts_token ON batch_hosts(token_id);

CREATE INDEX audit_target ON audit(target);
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
  BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
  BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
"#;

/// 2 → 3: the fleet core's invariants.
/// * A renewed certificate names the one it replaces (`certs.replaces`): the
///   old one is revoked when the new one is first used.
/// * `hosts replace` issues a one-time token bound to the host it may take
///   over (`enroll_tokens.replaces_host`).
const V3: &str = r#"
ALTER TABLE certs ADD COLUMN replaces TEXT;
CREATE INDEX certs_replaces ON certs(replaces) WHERE replaces IS NOT NULL;
ALTER TABLE enroll_tokens ADD COLUMN replaces_host TEXT;
"#;

/// 3 → 4: targets-reader tokens (Prometheus's `http_sd` and `/metrics`), in
/// a table of their own so that no reader token can pass as an admin token.
const V4: &str = r#"
CREATE TABLE reader_tokens (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    hash BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    created_by TEXT NOT NULL,
    revoked_at INTEGER
);
"#;

/// 4 → 5: the console's hosts page and config history.
/// * `hosts_last_seen`, `hosts_enrolled`: a page of hosts sorted by last
///   seen or by enrollment (newest first) reads the first rows of an index
///   instead of sorting every host.
/// * `configs`: every config a host was rendered, by its hash, so that the
///   hash an agent reports as applied can be turned back into text (the
///   host page diffs it against the rendered one). Filled and pruned by
///   triggers, whoever writes `hosts`: a config is kept while some host's
///   `rendered_hash` or `applied_hash` names it (both indexed for that).
const V5: &str = r#"
CREATE INDEX hosts_last_seen ON hosts(last_seen, id);
CREATE INDEX hosts_enrolled ON hosts(enrolled_at, id);
CREATE INDEX hosts_rendered_hash ON hosts(rendered_hash);
CREATE INDEX hosts_applied_hash ON hosts(applied_hash) WHERE applied_hash IS NOT NULL;
CREATE TABLE configs (
    hash TEXT PRIMARY KEY,
    config TEXT NOT NULL
) WITHOUT ROWID;
INSERT OR IGNORE INTO configs (hash, config) SELECT rendered_hash, config FROM hosts;
CREATE TRIGGER configs_keep_new AFTER INSERT ON hosts
  BEGIN INSERT OR IGNORE INTO configs (hash, config) VALUES (new.rendered_hash, new.config); END;
CREATE TRIGGER configs_keep_rendered AFTER UPDATE OF rendered_hash ON hosts
  WHEN new.rendered_hash IS NOT old.rendered_hash
  BEGIN INSERT OR IGNORE INTO configs (hash, config) VALUES (new.rendered_hash, new.config); END;
CREATE TRIGGER configs_prune AFTER UPDATE OF rendered_hash, applied_hash ON hosts
  WHEN new.rendered_hash IS NOT old.rendered_hash OR new.applied_hash IS NOT old.applied_hash
  BEGIN
    DELETE FROM configs WHERE hash IN (old.rendered_hash, old.applied_hash)
      AND hash NOT IN (new.rendered_hash, ifnull(new.applied_hash, ''))
      AND NOT EXISTS (SELECT 1 FROM hosts WHERE rendered_hash = configs.hash)
      AND NOT EXISTS (SELECT 1 FROM hosts WHERE applied_hash = configs.hash);
  END;
"#;

/// 5 → 6: why a host's last reload went through the agent's fallback
/// (Alloy's `/-/reload` unreachable), from its status report.
const V6: &str = r#"
ALTER TABLE hosts ADD COLUMN reload_fallback TEXT;
"#;

/// 6 → 7: enrollment cost independent of fleet size, audit retention.
/// * `hosts_machine`: a machine's hosts, active or not, by machine-id (the
///   partial unique index serves only queries about active hosts, so the
///   "previously decommissioned host of this machine" lookup scanned
///   `hosts`). `enrollments_host`, `batch_hosts_host`: the rows pointing
///   at a host (the foreign key checks of a write to `hosts` scanned
///   them). `audit_at`: the audit log by time (`--since`, retention).
/// * The audit log stays append-only except for retention: an entry older
///   than `audit_horizon.before` may be deleted, and the horizon only moves
///   forward.
const V7: &str = r#"
CREATE INDEX hosts_machine ON hosts(machine_id, decommissioned_at);
CREATE INDEX enrollments_host ON enrollments(host_id);
CREATE INDEX batch_hosts_host ON batch_hosts(host_id);
CREATE INDEX audit_at ON audit(at);
CREATE TABLE audit_horizon (before INTEGER NOT NULL);
INSERT INTO audit_horizon (before) VALUES (0);
CREATE TRIGGER audit_horizon_forward BEFORE UPDATE ON audit_horizon WHEN new.before < old.before
  BEGIN SELECT RAISE(ABORT, 'the audit retention horizon only moves forward'); END;
CREATE TRIGGER audit_horizon_kept BEFORE DELETE ON audit_horizon
  BEGIN SELECT RAISE(ABORT, 'the audit retention horizon is kept'); END;
CREATE TRIGGER audit_horizon_single BEFORE INSERT ON audit_horizon
  BEGIN SELECT RAISE(ABORT, 'the audit retention horizon is kept'); END;
DROP TRIGGER audit_no_delete;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
  WHEN old.at >= (SELECT before FROM audit_horizon)
  BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
"#;

/// 7 → 8: `server_state`, small named values the server keeps between
/// starts (the hash of the render inputs the stored configs were made
/// from, so a restart re-renders only when they changed).
const V8: &str = r#"
CREATE TABLE server_state (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
"#;

/// 8 → 9: the console's overview and audit filters, without reading every
/// row.
/// * `hosts_states`: covers what the state counts read (the state operators
///   see, rollout and drift are counted over this index alone).
/// * `hosts_attention`: the active hosts with a failed config, failing
///   scrapes or drift, by id (few, so the "needs attention" list reads them
///   directly; stale ones come from `hosts_last_seen`).
/// * `audit_actor`: the audit log by who did it, newest first.
const V9: &str = r#"
CREATE INDEX hosts_states ON hosts(state, scrape_state, decommissioned_at, last_seen,
  applied_hash IS rendered_hash);
CREATE INDEX hosts_attention ON hosts(id) WHERE decommissioned_at IS NULL AND (state = 'config_failed'
  OR (state = 'config_applied'
      AND (scrape_state = 'scrape_failing' OR applied_hash IS NOT rendered_hash)));
CREATE INDEX audit_actor ON audit(actor);
"#;

/// Brings the database to [`VERSION`], one transaction per step.
pub fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let version: i32 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version > VERSION {
        return Err(StoreError::TooNew(version));
    }
    let steps: [(i32, &str); 9] = [
        (1, V1),
        (2, V2),
        (3, V3),
        (4, V4),
        (5, V5),
        (6, V6),
        (7, V7),
        (8, V8),
        (9, V9),
    ];
    for (to, sql) in steps {
        if version >= to {
            continue;
        }
        // A table rebuild needs foreign keys off (they cannot change inside a
        // transaction); the check below stands in for them.
        conn.pragma_update(None, "foreign_keys", "OFF")?;
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        let broken: i64 =
            tx.query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| {
                r.get(0)
            })?;
        if broken > 0 {
            return Err(StoreError::Corrupt {
                what: "foreign keys after migration",
                message: format!("{broken} rows point at nothing (migration to {to})"),
            });
        }
        tx.pragma_update(None, "user_version", to)?;
        tx.commit()?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        if version > 0 {
            tracing::info!(from = to - 1, to, "migrated the database schema");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::params;

    #[test]
    fn a_version_1_database_upgrades_keeping_its_data() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("muster.db");
        {
            let conn = Connection::open(&path).expect("open");
            conn.execute_batch(&format!("BEGIN; {V1} PRAGMA user_version = 1; COMMIT;"))
                .expect("v1");
            conn.execute(
                "INSERT INTO hosts VALUES ('web-01-abc', 'm1', 'k', '{}', '{\"env\":\"prod\"}',
                 'config_applied', 'cfg', 'h', '[]', 'h', NULL, 'v1.9.0', 1, 2, 3)",
                [],
            )
            .expect("host");
            conn.execute(
                "INSERT INTO certs VALUES ('fp', 'web-01-abc', '01', 1, 99, NULL)",
                [],
            )
            .expect("cert");
            conn.execute(
                "INSERT INTO audit (at, actor, action, outcome) VALUES (1, 'a', 'x', 'ok')",
                [],
            )
            .expect("audit");
        }
        let mut conn = Connection::open(&path).expect("reopen");
        migrate(&mut conn).expect("migrates");
        let version: i32 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .expect("version");
        assert_eq!(version, VERSION);
        let (labels, alloy, decommissioned): (String, String, Option<i64>) = conn
            .query_row(
                "SELECT labels, alloy_version, decommissioned_at FROM hosts WHERE id = 'web-01-abc'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .expect("host kept");
        assert_eq!(
            (labels.as_str(), alloy.as_str(), decommissioned),
            ("{\"env\":\"prod\"}", "v1.9.0", None)
        );
        let fk: String = conn
            .query_row("SELECT host_id FROM certs", [], |r| r.get(0))
            .expect("cert kept");
        assert_eq!(fk, "web-01-abc");
        // Migrating again is a no-op.
        migrate(&mut conn).expect("idempotent");
        // Foreign keys still hold against the rebuilt table.
        conn.pragma_update(None, "foreign_keys", "ON").expect("fk");
        assert!(conn
            .execute(
                "INSERT INTO certs VALUES ('fp2', 'nobody', '02', 1, 99, NULL)",
                []
            )
            .is_err());
        // Two active hosts cannot share a machine id; a decommissioned one can.
        let insert = "INSERT INTO hosts (id, machine_id, public_key_sha256, facts, labels, state,
            config, rendered_hash, targets, enrolled_at, last_seen, cert_expires_at,
            decommissioned_at) VALUES (?1, 'm1', 'k', '{}', '{}', 'enrolled', '', '', '[]', 1, 1, 1, ?2)";
        assert!(conn.execute(insert, params!["dup", None::<i64>]).is_err());
        conn.execute(
            "UPDATE hosts SET decommissioned_at = 5 WHERE id = 'web-01-abc'",
            [],
        )
        .expect("decommission");
        conn.execute(insert, params!["web-01-new", None::<i64>])
            .expect("same machine again");
    }

    #[test]
    fn configs_are_kept_while_a_host_renders_or_runs_them() {
        let mut conn = Connection::open_in_memory().expect("open");
        migrate(&mut conn).expect("schema");
        conn.execute(
            "INSERT INTO hosts (id, machine_id, public_key_sha256, facts, labels, state, config,
             rendered_hash, targets, enrolled_at, last_seen, cert_expires_at)
             VALUES ('h1', 'm1', 'k', '{}', '{}', 'enrolled', 'config A', 'A', '[]', 1, 1, 1)",
            [],
        )
        .expect("host");
        let kept = |conn: &Connection| -> Vec<(String, String)> {
            let mut stmt = conn
                .prepare("SELECT hash, config FROM configs ORDER BY hash")
                .expect("query");
            let rows = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .expect("rows");
            rows.map(|r| r.expect("row")).collect()
        };
        let pair = |h: &str, c: &str| (h.to_string(), c.to_string());
        assert_eq!(kept(&conn), vec![pair("A", "config A")]);
        let set = |conn: &Connection, sql: &str| {
            conn.execute(&format!("UPDATE hosts SET {sql} WHERE id = 'h1'"), [])
                .expect(sql)
        };
        // The agent runs A while B is rendered: both are kept.
        set(&conn, "applied_hash = 'A'");
        set(&conn, "config = 'config B', rendered_hash = 'B'");
        assert_eq!(
            kept(&conn),
            vec![pair("A", "config A"), pair("B", "config B")]
        );
        // Rewriting the same values (an upsert) keeps them.
        set(
            &conn,
            "config = 'config B', rendered_hash = 'B', applied_hash = 'A'",
        );
        assert_eq!(kept(&conn).len(), 2);
        // Once the agent runs B, nothing names A any more.
        set(&conn, "applied_hash = 'B'");
        assert_eq!(kept(&conn), vec![pair("B", "config B")]);
        // A config another host still renders is kept.
        conn.execute(
            "INSERT INTO hosts (id, machine_id, public_key_sha256, facts, labels, state, config,
             rendered_hash, targets, enrolled_at, last_seen, cert_expires_at)
             VALUES ('h2', 'm2', 'k', '{}', '{}', 'enrolled', 'config B', 'B', '[]', 1, 1, 1)",
            [],
        )
        .expect("second host");
        set(
            &conn,
            "config = 'config C', rendered_hash = 'C', applied_hash = 'C'",
        );
        assert_eq!(
            kept(&conn),
            vec![pair("B", "config B"), pair("C", "config C")]
        );
    }

    #[test]
    fn the_audit_log_is_append_only() {
        let mut conn = Connection::open_in_memory().expect("open");
        migrate(&mut conn).expect("schema");
        conn.execute(
            "INSERT INTO audit (at, actor, action, outcome) VALUES (1, 'a', 'x', 'ok')",
            [],
        )
        .expect("append");
        for sql in ["UPDATE audit SET outcome = 'forged'", "DELETE FROM audit"] {
            let err = conn.execute(sql, []).expect_err(sql);
            assert!(err.to_string().contains("append-only"), "{err}");
        }
    }

    #[test]
    fn a_newer_database_is_refused() {
        let mut conn = Connection::open_in_memory().expect("open");
        conn.pragma_update(None, "user_version", VERSION + 1)
            .expect("version");
        assert!(matches!(migrate(&mut conn), Err(StoreError::TooNew(_))));
    }
}
