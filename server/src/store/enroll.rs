//! The enrollment transaction: token check, machine -> host mapping,
//! signing and rendering, all or nothing.

use muster_shared::facts::{self, Facts};
use muster_shared::labels::Labels;
use muster_shared::wire::{HostState, TokenState};
use rusqlite::{params, OptionalExtension, Transaction};

use super::hosts::{active_host_by_machine_id, insert_cert, set_rendered, upsert_host};
use super::{batch, corrupt, token_state, HostRecord, Lifecycle, Store, StoreError};
use crate::ca::{CsrError, IssuedCert};
use crate::render::{RenderError, Rendered};
use crate::tokens::{self, Kind};

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

impl Store {
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
