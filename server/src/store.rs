//! The embedded SQLite store: the only module that talks to the database.
//! Every write is one transaction; the target files and rendered configs are
//! derived from what is here. The schema and its migrations are in
//! `store/schema.rs`, batch pre-registration in `store/batch.rs`.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use muster_shared::facts::{self, Facts};
use muster_shared::labels::Labels;
use muster_shared::wire::{
    ApplyResult, HostInfo, HostState, ScrapeInfo, StatusReport, TokenInfo, TokenState,
};
use rusqlite::{params, Connection, OptionalExtension, Transaction};

use crate::ca::{CsrError, IssuedCert};
use crate::render::{RenderError, Rendered, TargetGroup};
use crate::tokens::{self, Kind, Secret};

/// File name of the database inside the data dir.
pub const FILE_NAME: &str = "muster.db";

mod batch;
mod schema;

pub use batch::{BatchEntry, BatchRecord, NewBatchHost};
pub use schema::VERSION as SCHEMA_VERSION;

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
}

/// One enrollment attempt as the handler hands it over.
pub struct EnrollAttempt<'a> {
    pub token: &'a str,
    pub facts: &'a Facts,
    pub idempotency_key: &'a str,
    /// Labels the host asked for: they fill only names still unset after
    /// the token's labels (checked by the caller).
    pub requested_labels: &'a Labels,
    pub now: i64,
}

pub struct Enrolled {
    pub host: HostRecord,
    pub cert: IssuedCert,
    /// False when an existing host was enrolled again.
    pub created: bool,
    /// True when another key took the host over after `hosts replace`; the
    /// old key's certificates are revoked.
    pub replaced: bool,
    /// The token that was used.
    pub token_id: String,
}

#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    /// Unknown, expired, exhausted or revoked: the agent sees one answer, the
    /// audit log sees the reason.
    #[error("invalid enrollment token ({0})")]
    Token(&'static str),
    #[error("machine-id {machine_id} is already enrolled as {host_id} with a different key")]
    MachineConflict { machine_id: String, host_id: String },
    /// A batch token used by a host whose hostname is not the one it was
    /// issued for.
    #[error("the enrollment token is bound to hostname {bound:?}, not {claimed:?}")]
    HostnameMismatch { bound: String, claimed: String },
    #[error(transparent)]
    Csr(#[from] CsrError),
    #[error(transparent)]
    Render(#[from] RenderError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<rusqlite::Error> for EnrollError {
    fn from(e: rusqlite::Error) -> Self {
        EnrollError::Store(StoreError::Db(e))
    }
}

/// A host as stored.
#[derive(Clone, Debug)]
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
}

/// The state an operator sees, from the stored config state and the rest.
/// Order matters: a decommissioned host is that whatever else; a host that
/// stopped checking in is stale whatever it last said; a failed or not yet
/// applied config comes before what Prometheus says.
pub fn headline(host: &HostRecord, now: i64, stale_after: i64) -> HostState {
    if host.lifecycle.decommissioned_at.is_some() {
        return HostState::Decommissioned;
    }
    if now - host.last_seen > stale_after {
        return HostState::Stale;
    }
    match (host.state, &host.lifecycle.scrape) {
        (HostState::ConfigApplied, Some(scrape)) => scrape.state,
        (state, _) => state,
    }
}

impl HostRecord {
    /// The full label set: operator labels plus those derived from facts.
    pub fn labels(&self) -> Labels {
        let mut labels = self.operator_labels.clone();
        labels.insert("host_id".into(), self.id.clone());
        labels.insert("hostname".into(), self.facts.hostname.clone());
        labels.insert("os".into(), self.facts.os.clone());
        labels.insert("arch".into(), self.facts.arch.clone());
        labels
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
            labels: self.labels(),
            facts: self.facts.clone(),
            rendered_hash: self.rendered_hash.clone(),
            applied_hash: self.applied_hash.clone(),
            last_error: self.last_error.clone(),
            alloy_version: self.alloy_version.clone(),
            enrolled_at: self.enrolled_at,
            last_seen: self.last_seen,
            cert_expires_at: self.cert_expires_at,
        }
    }
}

/// What the certificate an agent presented maps to.
#[derive(Debug, PartialEq, Eq)]
pub enum CertLookup {
    Host(String),
    Revoked,
    Expired,
    Unknown,
}

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

pub struct Store {
    conn: Mutex<Connection>,
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
    pub fn open(path: &Path) -> Result<Store, StoreError> {
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
        schema::migrate(&mut conn)?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        Ok(Store {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite half-written
        // (transactions roll back on drop), so a poisoned lock is still usable.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    // ---- admin tokens ----

    pub fn create_admin_token(&self, name: &str, now: i64) -> Result<Secret, StoreError> {
        let token = tokens::generate(Kind::Admin);
        self.conn().execute(
            "INSERT INTO admin_tokens (id, name, hash, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![token.id, name, token.hash, now],
        )?;
        Ok(token.text)
    }

    /// The name of the admin token `text`, when it is valid and not revoked.
    pub fn verify_admin_token(&self, text: &str) -> Result<Option<String>, StoreError> {
        let Some((id, secret)) = tokens::parse(Kind::Admin, text) else {
            return Ok(None);
        };
        let row: Option<(String, Vec<u8>, Option<i64>)> = self
            .conn()
            .query_row(
                "SELECT name, hash, revoked_at FROM admin_tokens WHERE id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        Ok(match row {
            Some((name, hash, None)) if tokens::verify(secret, &hash) => Some(name),
            _ => None,
        })
    }

    // ---- enrollment tokens ----

    pub fn create_enroll_token(
        &self,
        labels: &Labels,
        expires_at: i64,
        uses: u32,
        created_by: &str,
        now: i64,
    ) -> Result<(Secret, TokenInfo), StoreError> {
        let token = tokens::generate(Kind::Enroll);
        self.conn().execute(
            "INSERT INTO enroll_tokens (id, hash, labels, created_at, expires_at, uses_allowed, created_by)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![token.id, token.hash, to_json(labels), now, expires_at, uses, created_by],
        )?;
        let info = TokenInfo {
            id: token.id,
            state: TokenState::Active,
            labels: labels.clone(),
            created_at: now,
            expires_at,
            uses_allowed: uses,
            uses: 0,
            revoked_at: None,
        };
        Ok((token.text, info))
    }

    pub fn list_enroll_tokens(&self, now: i64) -> Result<Vec<TokenInfo>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT id, labels, created_at, expires_at, uses_allowed, uses, revoked_at
             FROM enroll_tokens WHERE batch_id IS NULL ORDER BY created_at, id",
        )?;
        let rows = stmt.query_map([], |r| token_row(r, now))?;
        rows.map(|r| r?).collect()
    }

    /// Revokes a token; `None` when there is no such token.
    pub fn revoke_enroll_token(&self, id: &str, now: i64) -> Result<Option<TokenInfo>, StoreError> {
        let conn = self.conn();
        conn.execute(
            "UPDATE enroll_tokens SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
            params![id, now],
        )?;
        let row = conn
            .query_row(
                "SELECT id, labels, created_at, expires_at, uses_allowed, uses, revoked_at
                 FROM enroll_tokens WHERE id = ?1",
                [id],
                |r| token_row(r, now),
            )
            .optional()?;
        row.transpose()
    }

    // ---- enrollment ----

    /// Checks the token, maps the machine to its host (new or existing),
    /// signs the agent's CSR for it and renders its config, all in one
    /// transaction: a refusal or failure at any step stores nothing.
    ///
    /// The machine maps to its active host. A different key claiming that
    /// machine-id is refused unless an admin ran `hosts replace` for the
    /// host; then the new key takes the host over and the old key's
    /// certificates are revoked. A machine whose host was decommissioned
    /// becomes a new host, linked to the old one.
    pub fn enroll(
        &self,
        attempt: &EnrollAttempt<'_>,
        sign: impl FnOnce(&str) -> Result<IssuedCert, CsrError>,
        render: impl FnOnce(&HostRecord) -> Result<Rendered, RenderError>,
    ) -> Result<Enrolled, EnrollError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let (id, secret) =
            tokens::parse(Kind::Enroll, attempt.token).ok_or(EnrollError::Token("malformed"))?;
        let replay: Option<(String, String)> = tx
            .query_row(
                "SELECT e.host_id, e.token_id FROM enrollments e JOIN hosts h ON h.id = e.host_id
                 WHERE e.idempotency_key = ?1 AND h.decommissioned_at IS NULL",
                [attempt.idempotency_key],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let replay_host = match &replay {
            Some((host_id, token_id)) if token_id == id => Some(host_id.clone()),
            _ => None,
        };
        // A replay (same key, same token) may reuse a spent token and
        // spends nothing; any other attempt is a fresh use.
        let is_replay = replay_host.is_some();
        let grant = check_enroll_token(&tx, id, secret, is_replay, attempt.now)?;
        if let Some(bound) = &grant.hostname {
            if !batch::hostname_matches(bound, &attempt.facts.hostname) {
                return Err(EnrollError::HostnameMismatch {
                    bound: bound.clone(),
                    claimed: attempt.facts.hostname.clone(),
                });
            }
        }

        let existing = active_host_by_machine_id(&tx, &attempt.facts.machine_id)?;
        let host_id = match (&existing, replay_host) {
            (Some(host), _) => host.id.clone(),
            (None, Some(host_id)) => host_id,
            (None, None) => new_host_id(&tx, &attempt.facts.hostname)?,
        };
        let cert = sign(&host_id)?;
        let mut replaced = false;
        if let Some(host) = &existing {
            if host.public_key_sha256 != cert.public_key_sha256 {
                let armed = host
                    .lifecycle
                    .replace_until
                    .is_some_and(|until| until >= attempt.now);
                if !armed {
                    return Err(EnrollError::MachineConflict {
                        machine_id: host.machine_id.clone(),
                        host_id: host.id.clone(),
                    });
                }
                replaced = true;
            }
        }
        let created = existing.is_none();
        let previous_host_id = if created {
            tx.query_row(
                "SELECT id FROM hosts WHERE machine_id = ?1 AND decommissioned_at IS NOT NULL
                 ORDER BY decommissioned_at DESC LIMIT 1",
                [&attempt.facts.machine_id],
                |r| r.get(0),
            )
            .optional()?
        } else {
            None
        };
        let mut host = existing.unwrap_or_else(|| HostRecord {
            id: host_id.clone(),
            machine_id: attempt.facts.machine_id.clone(),
            public_key_sha256: cert.public_key_sha256.clone(),
            facts: attempt.facts.clone(),
            operator_labels: Labels::new(),
            state: HostState::Enrolled,
            config: String::new(),
            rendered_hash: String::new(),
            targets: Vec::new(),
            applied_hash: None,
            last_error: None,
            alloy_version: None,
            enrolled_at: attempt.now,
            last_seen: attempt.now,
            cert_expires_at: cert.not_after,
            lifecycle: Lifecycle {
                previous_host_id,
                ..Lifecycle::default()
            },
        });
        if replaced {
            // A new machine behind the same host: nothing it reports yet.
            tx.execute(
                "UPDATE certs SET revoked_at = ?2 WHERE host_id = ?1 AND revoked_at IS NULL",
                params![host.id, attempt.now],
            )?;
            host.public_key_sha256 = cert.public_key_sha256.clone();
            host.state = HostState::Enrolled;
            host.applied_hash = None;
            host.last_error = None;
            host.lifecycle.replace_until = None;
            host.lifecycle.last_conflict = None;
            host.lifecycle.scrape = None;
        }
        host.facts = attempt.facts.clone();
        host.operator_labels.extend(grant.labels);
        for (name, value) in attempt.requested_labels {
            host.operator_labels
                .entry(name.clone())
                .or_insert_with(|| value.clone());
        }
        host.last_seen = attempt.now;
        host.cert_expires_at = cert.not_after;
        if grant.batch_id.is_some() {
            host.lifecycle.batch_id = grant.batch_id;
        }
        let rendered = render(&host)?;
        set_rendered(&mut host, rendered);

        upsert_host(&tx, &host)?;
        insert_cert(&tx, &host.id, &cert, attempt.now)?;
        if !is_replay {
            tx.execute(
                "UPDATE enroll_tokens SET uses = uses + 1 WHERE id = ?1",
                [id],
            )?;
            tx.execute(
                "INSERT INTO enrollments (idempotency_key, host_id, token_id, at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(idempotency_key) DO UPDATE SET host_id = excluded.host_id,
                 token_id = excluded.token_id, at = excluded.at",
                params![attempt.idempotency_key, host.id, id, attempt.now],
            )?;
        }
        tx.execute(
            "UPDATE batch_hosts SET host_id = ?2, last_error = NULL WHERE token_id = ?1",
            params![id, host.id],
        )?;
        tx.commit()?;
        Ok(Enrolled {
            host,
            cert,
            created,
            replaced,
            token_id: id.to_string(),
        })
    }

    // ---- agents ----

    /// Maps a presented client certificate (by fingerprint) to its host.
    pub fn host_for_cert(&self, fingerprint: &str, now: i64) -> Result<CertLookup, StoreError> {
        let row: Option<(String, Option<i64>, i64)> = self
            .conn()
            .query_row(
                "SELECT host_id, revoked_at, not_after FROM certs WHERE fingerprint = ?1",
                [fingerprint],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        Ok(match row {
            None => CertLookup::Unknown,
            Some((_, Some(_), _)) => CertLookup::Revoked,
            Some((_, None, not_after)) if not_after < now => CertLookup::Expired,
            Some((host_id, None, _)) => CertLookup::Host(host_id),
        })
    }

    /// The host, after marking it seen now.
    pub fn touch_host(&self, host_id: &str, now: i64) -> Result<Option<HostRecord>, StoreError> {
        let conn = self.conn();
        conn.execute(
            "UPDATE hosts SET last_seen = ?2 WHERE id = ?1",
            params![host_id, now],
        )?;
        host_by_id(&conn, host_id)
    }

    pub fn record_status(
        &self,
        host_id: &str,
        report: &StatusReport,
        now: i64,
    ) -> Result<(), StoreError> {
        let conn = self.conn();
        match report.result {
            ApplyResult::Applied => conn.execute(
                "UPDATE hosts SET state = ?2, applied_hash = ?3, last_error = NULL,
                 alloy_version = COALESCE(?4, alloy_version), last_seen = ?5 WHERE id = ?1",
                params![
                    host_id,
                    HostState::ConfigApplied.as_str(),
                    report.hash,
                    report.alloy_version,
                    now
                ],
            )?,
            ApplyResult::Failed => conn.execute(
                "UPDATE hosts SET state = ?2, last_error = ?3,
                 alloy_version = COALESCE(?4, alloy_version), last_seen = ?5 WHERE id = ?1",
                params![
                    host_id,
                    HostState::ConfigFailed.as_str(),
                    report
                        .error
                        .as_deref()
                        .unwrap_or("the agent gave no error text"),
                    report.alloy_version,
                    now
                ],
            )?,
        };
        Ok(())
    }

    /// Records a renewed certificate; the host's key is the renewed one's.
    pub fn add_cert(&self, host_id: &str, cert: &IssuedCert, now: i64) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        insert_cert(&tx, host_id, cert, now)?;
        tx.execute(
            "UPDATE hosts SET cert_expires_at = ?2, public_key_sha256 = ?3 WHERE id = ?1",
            params![host_id, cert.not_after, cert.public_key_sha256],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Takes an enrolled host's new facts and re-renders its config with
    /// them, holding the database for the whole read-render-write so a
    /// concurrent label change cannot be lost. The facts are stored even
    /// when the render fails (the host then keeps its previous config; the
    /// render error is returned beside the host). `None`: no such host.
    #[allow(clippy::type_complexity)]
    pub fn update_facts(
        &self,
        host_id: &str,
        facts: &Facts,
        render: impl FnOnce(&HostRecord) -> Result<Rendered, RenderError>,
    ) -> Result<Option<(HostRecord, Result<(), RenderError>)>, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let Some(mut host) = host_by_id(&tx, host_id)? else {
            return Ok(None);
        };
        host.facts = facts.clone();
        let rendered = render(&host);
        tx.execute(
            "UPDATE hosts SET facts = ?2 WHERE id = ?1",
            params![host_id, to_json(&host.facts)],
        )?;
        let outcome = match rendered {
            Ok(r) => {
                tx.execute(
                    "UPDATE hosts SET config = ?2, rendered_hash = ?3, targets = ?4 WHERE id = ?1",
                    params![host_id, r.config, r.hash, to_json(&r.targets)],
                )?;
                set_rendered(&mut host, r);
                Ok(())
            }
            Err(e) => Err(e),
        };
        tx.commit()?;
        Ok(Some((host, outcome)))
    }

    // ---- hosts ----

    pub fn host(&self, id: &str) -> Result<Option<HostRecord>, StoreError> {
        host_by_id(&self.conn(), id)
    }

    /// Active hosts (not decommissioned), by id.
    pub fn hosts(&self) -> Result<Vec<HostRecord>, StoreError> {
        query_hosts(&self.conn(), "WHERE decommissioned_at IS NULL")
    }

    /// Every host ever enrolled, decommissioned ones included, by id.
    pub fn hosts_all(&self) -> Result<Vec<HostRecord>, StoreError> {
        query_hosts(&self.conn(), "")
    }

    /// Stores a newly rendered config for a host.
    pub fn set_rendered(&self, host_id: &str, rendered: &Rendered) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE hosts SET config = ?2, rendered_hash = ?3, targets = ?4 WHERE id = ?1",
            params![
                host_id,
                rendered.config,
                rendered.hash,
                to_json(&rendered.targets)
            ],
        )?;
        Ok(())
    }

    /// Applies `edit` to every active host `select` picks, in one
    /// transaction: the first error from `edit` stores nothing at all.
    /// `edit` returns whether it changed the host; changed hosts are written
    /// and returned.
    pub fn update_hosts<E: From<StoreError>>(
        &self,
        select: impl Fn(&HostRecord) -> bool,
        mut edit: impl FnMut(&mut HostRecord) -> Result<bool, E>,
    ) -> Result<Vec<HostRecord>, E> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(StoreError::from)?;
        let mut changed = Vec::new();
        for mut host in query_hosts(&tx, "WHERE decommissioned_at IS NULL")? {
            if select(&host) && edit(&mut host)? {
                upsert_host(&tx, &host)?;
                changed.push(host);
            }
        }
        tx.commit().map_err(StoreError::from)?;
        Ok(changed)
    }

    /// Decommissions a host: marks it, revokes every certificate it has.
    pub fn decommission(&self, host_id: &str, now: i64) -> Result<Decommission, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let Some(mut host) = host_by_id(&tx, host_id)? else {
            return Ok(Decommission::NotFound);
        };
        if !host.is_active() {
            return Ok(Decommission::Already(host));
        }
        let revoked = tx.execute(
            "UPDATE certs SET revoked_at = ?2 WHERE host_id = ?1 AND revoked_at IS NULL",
            params![host_id, now],
        )?;
        host.lifecycle.decommissioned_at = Some(now);
        host.lifecycle.replace_until = None;
        upsert_host(&tx, &host)?;
        tx.commit()?;
        Ok(Decommission::Done { host, revoked })
    }

    /// Lets another key take over an active host until `until`
    /// (`hosts replace`). `None` when there is no such active host.
    pub fn arm_replace(&self, host_id: &str, until: i64) -> Result<Option<HostRecord>, StoreError> {
        let conn = self.conn();
        conn.execute(
            "UPDATE hosts SET replace_until = ?2 WHERE id = ?1 AND decommissioned_at IS NULL",
            params![host_id, until],
        )?;
        Ok(host_by_id(&conn, host_id)?.filter(HostRecord::is_active))
    }

    /// Remembers a refused claim of the host's machine-id, for `hosts show`.
    pub fn note_conflict(&self, host_id: &str, text: &str) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE hosts SET last_conflict = ?2 WHERE id = ?1",
            params![host_id, text],
        )?;
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
                .query_row(
                    "SELECT scrape_state, scrape_error FROM hosts WHERE id = ?1",
                    [host_id],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
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
            tx.execute(
                "UPDATE hosts SET scrape_state = ?2, scrape_error = ?3, scrape_checked_at = ?4
                 WHERE id = ?1",
                params![
                    host_id,
                    new_state,
                    new_error,
                    scrape.as_ref().map(|s| s.checked_at)
                ],
            )?;
        }
        tx.commit()?;
        Ok(changed)
    }

    // ---- audit ----

    pub fn audit(&self, entry: &AuditEntry<'_>) -> Result<(), StoreError> {
        self.conn().execute(
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

/// The outcome of [`Store::decommission`].
#[derive(Debug)]
pub enum Decommission {
    Done { host: HostRecord, revoked: usize },
    Already(HostRecord),
    NotFound,
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

fn token_state(
    expires_at: i64,
    uses_allowed: u32,
    uses: u32,
    revoked: bool,
    now: i64,
) -> TokenState {
    if revoked {
        TokenState::Revoked
    } else if uses >= uses_allowed {
        TokenState::Exhausted
    } else if expires_at <= now {
        TokenState::Expired
    } else {
        TokenState::Active
    }
}

fn token_row(r: &rusqlite::Row<'_>, now: i64) -> rusqlite::Result<Result<TokenInfo, StoreError>> {
    let labels: String = r.get(1)?;
    let expires_at: i64 = r.get(3)?;
    let uses_allowed: u32 = r.get(4)?;
    let uses: u32 = r.get(5)?;
    let revoked_at: Option<i64> = r.get(6)?;
    let id: String = r.get(0)?;
    let created_at: i64 = r.get(2)?;
    Ok(serde_json::from_str(&labels)
        .map_err(corrupt("token labels"))
        .map(|labels| TokenInfo {
            id,
            state: token_state(expires_at, uses_allowed, uses, revoked_at.is_some(), now),
            labels,
            created_at,
            expires_at,
            uses_allowed,
            uses,
            revoked_at,
        }))
}

/// What a valid enrollment token grants.
struct Grant {
    labels: Labels,
    /// Set for batch tokens: only this hostname may use it.
    hostname: Option<String>,
    batch_id: Option<String>,
}

/// What the token grants when it may enroll now. A replay of an earlier
/// enrollment (same idempotency key, same token) may use an exhausted token.
fn check_enroll_token(
    tx: &Transaction<'_>,
    id: &str,
    secret: &str,
    replay: bool,
    now: i64,
) -> Result<Grant, EnrollError> {
    struct Row {
        hash: Vec<u8>,
        labels: String,
        expires_at: i64,
        uses_allowed: u32,
        uses: u32,
        revoked: bool,
        hostname: Option<String>,
        batch_id: Option<String>,
    }
    let row = tx
        .query_row(
            "SELECT hash, labels, expires_at, uses_allowed, uses, revoked_at IS NOT NULL,
             hostname, batch_id FROM enroll_tokens WHERE id = ?1",
            [id],
            |r| {
                Ok(Row {
                    hash: r.get(0)?,
                    labels: r.get(1)?,
                    expires_at: r.get(2)?,
                    uses_allowed: r.get(3)?,
                    uses: r.get(4)?,
                    revoked: r.get(5)?,
                    hostname: r.get(6)?,
                    batch_id: r.get(7)?,
                })
            },
        )
        .optional()?;
    let Some(row) = row else {
        // Spend the same work as a real comparison.
        tokens::verify(secret, &[0u8; 32]);
        return Err(EnrollError::Token("unknown"));
    };
    if !tokens::verify(secret, &row.hash) {
        return Err(EnrollError::Token("wrong secret"));
    }
    match token_state(row.expires_at, row.uses_allowed, row.uses, row.revoked, now) {
        TokenState::Revoked => return Err(EnrollError::Token("revoked")),
        TokenState::Expired => return Err(EnrollError::Token("expired")),
        TokenState::Exhausted if !replay => return Err(EnrollError::Token("exhausted")),
        _ => {}
    }
    Ok(Grant {
        labels: serde_json::from_str(&row.labels).map_err(corrupt("token labels"))?,
        hostname: row.hostname,
        batch_id: row.batch_id,
    })
}

fn new_host_id(tx: &Transaction<'_>, hostname: &str) -> Result<String, StoreError> {
    loop {
        let id = facts::host_id(hostname, &tokens::random_hex(3));
        let taken: bool = tx.query_row(
            "SELECT EXISTS(SELECT 1 FROM hosts WHERE id = ?1)",
            [&id],
            |r| r.get(0),
        )?;
        if !taken {
            return Ok(id);
        }
    }
}

fn set_rendered(host: &mut HostRecord, rendered: Rendered) {
    host.config = rendered.config;
    host.rendered_hash = rendered.hash;
    host.targets = rendered.targets;
}

const HOST_COLUMNS: &str = "id, machine_id, public_key_sha256, facts, labels, state, config,
    rendered_hash, targets, applied_hash, last_error, alloy_version, enrolled_at, last_seen,
    cert_expires_at, scrape_state, scrape_error, scrape_checked_at, decommissioned_at,
    previous_host_id, batch_id, replace_until, last_conflict";

fn host_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Result<HostRecord, StoreError>> {
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
        },
    }))
}

fn host_by_id(conn: &Connection, id: &str) -> Result<Option<HostRecord>, StoreError> {
    conn.query_row(
        &format!("SELECT {HOST_COLUMNS} FROM hosts WHERE id = ?1"),
        [id],
        host_row,
    )
    .optional()?
    .transpose()
}

fn active_host_by_machine_id(
    conn: &Connection,
    machine_id: &str,
) -> Result<Option<HostRecord>, StoreError> {
    conn.query_row(
        &format!(
            "SELECT {HOST_COLUMNS} FROM hosts WHERE machine_id = ?1 AND decommissioned_at IS NULL"
        ),
        [machine_id],
        host_row,
    )
    .optional()?
    .transpose()
}

fn query_hosts(conn: &Connection, filter: &str) -> Result<Vec<HostRecord>, StoreError> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {HOST_COLUMNS} FROM hosts {filter} ORDER BY id"
    ))?;
    let rows = stmt.query_map([], host_row)?;
    rows.map(|r| r?).collect()
}

/// Inserts a host or updates everything about it but its id, machine and
/// enrollment time.
fn upsert_host(tx: &Transaction<'_>, h: &HostRecord) -> Result<(), StoreError> {
    let l = &h.lifecycle;
    tx.execute(
        &format!(
            "INSERT INTO hosts ({HOST_COLUMNS})
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16,
                     ?17, ?18, ?19, ?20, ?21, ?22, ?23)
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
             replace_until = excluded.replace_until, last_conflict = excluded.last_conflict"
        ),
        params![
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
        ],
    )?;
    Ok(())
}

fn insert_cert(
    tx: &Transaction<'_>,
    host_id: &str,
    cert: &IssuedCert,
    now: i64,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO certs (fingerprint, host_id, serial, issued_at, not_after) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![cert.fingerprint, host_id, cert.serial, now, cert.not_after],
    )?;
    Ok(())
}
