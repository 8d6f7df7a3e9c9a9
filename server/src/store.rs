//! The embedded SQLite store: the only module that talks to the database.
//! Every write is one transaction; the target files and rendered configs are
//! derived from what is here. Split by table group: `store/schema.rs` (the
//! schema and its migrations), `store/tokens.rs` (admin and enrollment
//! tokens), `store/enroll.rs` (the enrollment transaction), `store/hosts.rs`
//! (hosts and their certificates), `store/audit.rs` (the audit log),
//! `store/batch.rs` (batch pre-registration), `store/seen.rs` (`last_seen`
//! kept in memory and written in batches), `store/browse.rs` and
//! `store/overview.rs` (the console's pages and counts), `store/monitoring.rs`
//! (`/metrics` and reader tokens).

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{Connection, Transaction};

/// File name of the database inside the data dir.
pub const FILE_NAME: &str = "muster.db";
/// Prepared statements kept per connection: more than the store's
/// distinct SQL texts, with room for the browse queries' variants.
const STATEMENT_CACHE: usize = 256;

mod audit;
mod batch;
mod browse;
mod enroll;
mod hosts;
mod monitoring;
mod overview;
mod schema;
mod seen;
mod tokens;

pub use audit::{AuditEntry, AuditFilter, AuditRow};
pub use batch::{BatchEntry, BatchRecord, NewBatchHost};
pub use browse::{Cursor, HostCert, HostPage, HostSort, StateFilter};
pub use enroll::PastEnrollment;
pub use hosts::{headline, CertRow, HostRecord, Lifecycle, LiveCert, Rendered, TargetGroup};
pub use overview::StateCounts;
pub use schema::VERSION as SCHEMA_VERSION;
pub use tokens::TokenRow;

use hosts::host_by_id;
use tokens::token_state;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open database {path}: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("database: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("database holds a malformed {what}: {message}")]
    Corrupt { what: &'static str, message: String },
    #[error(
        "database schema version {0} is newer than this server understands ({SCHEMA_VERSION})"
    )]
    TooNew(i32),
    /// The commit of a group of writes failed (each writer gets this).
    #[error("database: commit failed: {0}")]
    Commit(String),
    #[error("cannot make {path} readable by its owner only: {source}")]
    Mode {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Creates `path` with mode 0600, or sets an existing file (and its WAL
/// files) to it.
fn owner_only(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)?;
        for suffix in ["", "-wal", "-shm"] {
            let mut name = path.as_os_str().to_owned();
            name.push(suffix);
            match std::fs::set_permissions(&name, std::fs::Permissions::from_mode(0o600)) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                other => other?,
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

pub struct Store {
    conn: Mutex<Connection>,
    /// Check-in times not yet written (`store/seen.rs`).
    pending: seen::Pending,
    /// Writes waiting for the next group commit ([`Store::write_grouped`]).
    queue: Mutex<Vec<Box<dyn Queued>>>,
}

/// One write transaction. The fleet core runs each lifecycle transition in
/// one: it reads, decides and writes (audit entry included) through the
/// methods each table group adds here, and [`Store::write`] commits only
/// when it returns `Ok`.
pub struct Tx<'c> {
    tx: Transaction<'c>,
    pending: &'c seen::Pending,
}

fn corrupt(what: &'static str) -> impl Fn(serde_json::Error) -> StoreError {
    move |e| StoreError::Corrupt {
        what,
        message: e.to_string(),
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("plain data always serializes")
}

impl Store {
    /// Opens (creating if needed) the database at `path` and brings its
    /// schema up to date.
    /// The database and its WAL files are readable by the owner only
    /// (SQLite gives the `-wal` and `-shm` files the main file's mode).
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        owner_only(path).map_err(|source| StoreError::Mode {
            path: path.to_path_buf(),
            source,
        })?;
        let conn = Connection::open(path).map_err(|source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        Store::setup(conn)
    }

    fn setup(mut conn: Connection) -> Result<Store, StoreError> {
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // FULL: a commit that returned survives a power cut, not only a crash.
        conn.pragma_update(None, "synchronous", "FULL")?;
        // Statement journals (a group commit's savepoints) and sorts stay
        // in memory: no temp file created and deleted per write.
        conn.pragma_update(None, "temp_store", "MEMORY")?;
        // Every statement is prepared once per connection (each store
        // function runs its SQL through `prepare_cached`).
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        schema::migrate(&mut conn)?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        Ok(Store {
            conn: Mutex::new(conn),
            pending: seen::Pending::default(),
            queue: Mutex::new(Vec::new()),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite half-written
        // (transactions roll back on drop), so a poisoned lock is still usable.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` in one transaction, committed when it returns `Ok` and
    /// rolled back otherwise. Transactions are serialized (one connection).
    pub fn write<T, E: From<StoreError>>(
        &self,
        f: impl FnOnce(&Tx<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        self.write_then(f, |_| {})
    }

    /// [`Store::write`], then `publish` with the result once the commit
    /// succeeded, before the next transaction may start: what mirrors the
    /// store in memory (the fleet core's poll index) changes in commit
    /// order, and before the caller returns.
    pub fn write_then<T, E: From<StoreError>>(
        &self,
        f: impl FnOnce(&Tx<'_>) -> Result<T, E>,
        publish: impl FnOnce(&T),
    ) -> Result<T, E> {
        let mut conn = self.conn();
        let tx = Tx {
            tx: conn.transaction().map_err(StoreError::from)?,
            pending: &self.pending,
        };
        let out = f(&tx)?;
        tx.tx.commit().map_err(StoreError::from)?;
        publish(&out);
        Ok(out)
    }

    /// Group commit: [`Store::write_then`], but `f` is queued and committed
    /// together with the writes queued beside it, in one transaction and
    /// one fsync. Each write runs in its own savepoint: one that fails is
    /// rolled back alone and the others are committed. Whoever gets the
    /// connection next (this caller or another grouped writer) runs the
    /// queue; after the commit, every write's `publish` runs in queue
    /// order before the connection is let go (what mirrors the store
    /// changes in commit order, as with `write_then`), then each caller
    /// gets its own result.
    pub fn write_grouped<T, E>(
        &self,
        f: impl FnOnce(&Tx<'_>) -> Result<T, E> + Send + 'static,
        publish: impl FnOnce(&T) + Send + 'static,
    ) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        let (reply, answer) = std::sync::mpsc::sync_channel(1);
        self.queue().push(Box::new(Grouped { f, publish, reply }));
        let mut conn = self.conn();
        // The queue is taken only by a holder of the connection, which
        // answers the whole group before letting it go: holding it now,
        // our write was either answered or is still queued.
        if let Ok(out) = answer.try_recv() {
            return out;
        }
        let queued = std::mem::take(&mut *self.queue());
        commit_group(&mut conn, &self.pending, queued);
        drop(conn);
        answer.recv().unwrap_or_else(|_| {
            Err(StoreError::Commit("the writer running it stopped".into()).into())
        })
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, Vec<Box<dyn Queued>>> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Runs `f` in a savepoint: rolled back alone when it fails.
fn in_savepoint<T, E: From<StoreError>>(
    tx: &Tx<'_>,
    f: impl FnOnce(&Tx<'_>) -> Result<T, E>,
) -> Result<T, E> {
    let run = |sql: &str| -> Result<(), StoreError> {
        tx.tx.prepare_cached(sql)?.execute([])?;
        Ok(())
    };
    run("SAVEPOINT grouped")?;
    let out = f(tx);
    if out.is_err() {
        run("ROLLBACK TO grouped")?;
    }
    run("RELEASE grouped")?;
    out
}

/// One transaction for `queued`, committed when any write succeeded; every
/// write is published (when it succeeded and the commit did) and answered.
fn commit_group(conn: &mut Connection, pending: &seen::Pending, queued: Vec<Box<dyn Queued>>) {
    let tx = match conn.transaction() {
        Ok(tx) => Tx { tx, pending },
        Err(e) => {
            let e = StoreError::from(e);
            for q in queued {
                q.fail(&e);
            }
            return;
        }
    };
    let ran: Vec<Box<dyn Ran>> = queued.into_iter().map(|q| q.run(&tx)).collect();
    let committed = if ran.iter().any(|r| r.ok()) {
        tx.tx
            .commit()
            .map_err(|e| StoreError::Commit(e.to_string()))
    } else {
        drop(tx);
        Ok(())
    };
    for r in ran {
        r.answer(committed.as_ref().map(|_| ()));
    }
}

/// A write waiting in the queue.
trait Queued: Send {
    /// Runs the write (in its savepoint) inside the group's transaction.
    fn run(self: Box<Self>, tx: &Tx<'_>) -> Box<dyn Ran>;
    /// The group's transaction could not even begin.
    fn fail(self: Box<Self>, error: &StoreError);
}

/// A write that ran, waiting for the commit.
trait Ran {
    fn ok(&self) -> bool;
    /// Publishes (after a commit) and answers the caller.
    fn answer(self: Box<Self>, committed: Result<(), &StoreError>);
}

type Reply<T, E> = std::sync::mpsc::SyncSender<Result<T, E>>;

struct Grouped<F, P, T, E> {
    f: F,
    publish: P,
    reply: Reply<T, E>,
}

struct Answer<P, T, E> {
    out: Result<T, E>,
    publish: P,
    reply: Reply<T, E>,
}

impl<F, P, T, E> Queued for Grouped<F, P, T, E>
where
    F: FnOnce(&Tx<'_>) -> Result<T, E> + Send + 'static,
    P: FnOnce(&T) + Send + 'static,
    T: Send + 'static,
    E: From<StoreError> + Send + 'static,
{
    fn run(self: Box<Self>, tx: &Tx<'_>) -> Box<dyn Ran> {
        Box::new(Answer {
            out: in_savepoint(tx, self.f),
            publish: self.publish,
            reply: self.reply,
        })
    }

    fn fail(self: Box<Self>, error: &StoreError) {
        let _ = self
            .reply
            .send(Err(StoreError::Commit(error.to_string()).into()));
    }
}

impl<P, T, E> Ran for Answer<P, T, E>
where
    P: FnOnce(&T) + Send + 'static,
    T: Send + 'static,
    E: From<StoreError> + Send + 'static,
{
    fn ok(&self) -> bool {
        self.out.is_ok()
    }

    fn answer(self: Box<Self>, committed: Result<(), &StoreError>) {
        let out = match (self.out, committed) {
            (Ok(value), Ok(())) => {
                (self.publish)(&value);
                Ok(value)
            }
            (Ok(_), Err(e)) => Err(StoreError::Commit(e.to_string()).into()),
            (Err(e), _) => Err(e),
        };
        // The caller may have given up (a panic): nobody to answer.
        let _ = self.reply.send(out);
    }
}

/// Every statement the store runs while tracing is on (tests only: the
/// query-plan test records what a transition runs, then asks SQLite how it
/// would run each).
#[cfg(test)]
static TRACED: Mutex<Vec<String>> = Mutex::new(Vec::new());

#[cfg(test)]
impl Store {
    /// Runs `f` and returns the distinct statements the store ran meanwhile
    /// (triggers' subprograms left out).
    pub fn traced<T>(&self, f: impl FnOnce() -> T) -> (T, Vec<String>) {
        fn record(event: rusqlite::trace::TraceEvent<'_>) {
            if let rusqlite::trace::TraceEvent::Stmt(stmt, _) = event {
                let sql = stmt.sql().to_string();
                let mut traced = TRACED.lock().unwrap_or_else(|p| p.into_inner());
                if !sql.starts_with("--") && !traced.contains(&sql) {
                    traced.push(sql);
                }
            }
        }
        TRACED.lock().unwrap_or_else(|p| p.into_inner()).clear();
        self.conn().trace_v2(
            rusqlite::trace::TraceEventCodes::SQLITE_TRACE_STMT,
            Some(record),
        );
        let out = f();
        self.conn()
            .trace_v2(rusqlite::trace::TraceEventCodes::empty(), None);
        let traced = std::mem::take(&mut *TRACED.lock().unwrap_or_else(|p| p.into_inner()));
        (out, traced)
    }

    /// How SQLite would run `sql`: the `EXPLAIN QUERY PLAN` detail lines.
    pub fn query_plan(&self, sql: &str) -> Vec<String> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .unwrap_or_else(|e| panic!("cannot explain {sql}: {e}"));
        // Parameters stay unbound (NULL): the plan does not depend on them.
        let mut rows = stmt.raw_query();
        let mut plan = Vec::new();
        while let Some(row) = rows.next().expect("plan row") {
            plan.push(row.get::<_, String>(3).expect("plan detail"));
        }
        plan
    }
}

#[cfg(test)]
mod group_commit_tests {
    use super::*;
    use std::sync::Arc;

    #[derive(Debug)]
    enum Failed {
        OnPurpose(usize),
        Store(StoreError),
    }

    impl From<StoreError> for Failed {
        fn from(e: StoreError) -> Self {
            Failed::Store(e)
        }
    }

    #[test]
    fn concurrent_writes_commit_together_and_a_failing_one_loses_only_itself() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Arc::new(Store::open(&dir.path().join("muster.db")).expect("db"));
        let published = Arc::new(Mutex::new(Vec::new()));
        let threads: Vec<_> = (0..24)
            .map(|i| {
                let (store, published) = (store.clone(), published.clone());
                std::thread::spawn(move || {
                    let write = move |tx: &Tx<'_>| {
                        tx.audit(&AuditEntry {
                            at: i as i64,
                            actor: "test",
                            action: "grouped",
                            target: None,
                            outcome: "ok",
                            detail: None,
                            source: None,
                        })?;
                        if i % 3 == 0 {
                            return Err(Failed::OnPurpose(i));
                        }
                        Ok(i)
                    };
                    // Some through `write`, which takes turns with the groups.
                    if i % 4 == 1 {
                        store.write(write)
                    } else {
                        store.write_grouped(write, move |n: &usize| {
                            published.lock().expect("published").push(*n)
                        })
                    }
                })
            })
            .collect();
        for (i, t) in threads.into_iter().enumerate() {
            match t.join().expect("thread") {
                Ok(n) => assert_eq!(n, i),
                Err(Failed::OnPurpose(n)) => assert_eq!((n, n % 3), (i, 0)),
                Err(Failed::Store(e)) => panic!("write {i}: {e}"),
            }
        }
        let mut kept: Vec<i64> = store
            .audit_query(&AuditFilter {
                limit: 100,
                ..AuditFilter::default()
            })
            .expect("audit")
            .into_iter()
            .map(|r| r.at)
            .collect();
        kept.sort();
        let want: Vec<i64> = (0..24).filter(|i| i % 3 != 0).collect();
        assert_eq!(kept, want, "the failed writes alone were rolled back");
        // Published: the grouped writes that were committed, and only those.
        let mut published = published.lock().expect("published").clone();
        published.sort();
        let want: Vec<usize> = (0..24).filter(|i| i % 3 != 0 && i % 4 != 1).collect();
        assert_eq!(published, want);
    }
}

#[cfg(test)]
mod connection_tests {
    use super::*;

    #[test]
    fn temp_data_stays_in_memory() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(&dir.path().join("muster.db")).expect("db");
        // 2 = MEMORY: a savepoint's statement journal is no temp file.
        let temp_store: i64 = store
            .conn()
            .pragma_query_value(None, "temp_store", |r| r.get(0))
            .expect("pragma");
        assert_eq!(temp_store, 2);
    }
}
