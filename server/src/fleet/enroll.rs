//! Enrollment: the policy deciding which host an attempt becomes (token
//! grant, batch binding, idempotency replay, machine-id conflict,
//! replacement, label precedence), decided on a read, then signed and
//! rendered outside the store's lock, then decided again and stored in
//! one savepoint of a group-committed transaction.

use std::sync::Arc;

use muster_shared::facts::Facts;
use muster_shared::labels::Labels;

use super::{Fleet, FleetError, PollIndex};
use crate::admin_wire::{HostState, TokenState};
use crate::ca::IssuedCert;
use crate::schema::{Problem, SchemaError};
use crate::store::{AuditEntry, HostRecord, Lifecycle, LiveCert, TokenRow, Tx};
use crate::tokens::{self, Kind};

/// One enrollment attempt as a handler hands it over.
pub struct EnrollAttempt<'a> {
    pub token: &'a str,
    pub facts: &'a Facts,
    pub csr_pem: &'a str,
    pub idempotency_key: &'a str,
    /// Labels the host asked for: they fill only names still unset after
    /// the host's and the token's labels.
    pub requested_labels: &'a Labels,
    /// The peer address, for the audit log.
    pub source: &'a str,
    pub now: i64,
}

/// What an accepted attempt was.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Enrollment {
    /// A new host; `previous` is the decommissioned host this machine was.
    New { previous: Option<String> },
    /// The machine's host again, with its own key (a new token, or a replay).
    Again,
    /// A new key took the host over with its replacement token.
    Replaced,
}

#[derive(Debug)]
pub struct Enrolled {
    pub host: HostRecord,
    pub cert: IssuedCert,
    pub what: Enrollment,
    pub token_id: String,
}

fn check_idempotency_key(key: &str) -> Result<(), FleetError> {
    let ok = (8..=128).contains(&key.len())
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(FleetError::BadEdit(
            "idempotency_key must be 8 to 128 characters of letters, digits, '-' and '_'".into(),
        ))
    }
}

/// The token's grant when it may enroll now. A replay of an earlier
/// enrollment (same idempotency key, same token) may use an exhausted token.
fn check_token(row: Option<TokenRow>, secret: &str, replay: bool) -> Result<TokenRow, FleetError> {
    let Some(row) = row else {
        // Spend the same work as a real comparison.
        tokens::verify(secret, &[0u8; 32]);
        return Err(FleetError::Token("unknown"));
    };
    if !tokens::verify(secret, &row.hash) {
        return Err(FleetError::Token("wrong secret"));
    }
    match row.state_at_now {
        TokenState::Revoked => Err(FleetError::Token("revoked")),
        TokenState::Expired => Err(FleetError::Token("expired")),
        TokenState::Exhausted if !replay => Err(FleetError::Token("exhausted")),
        _ => Ok(row),
    }
}

/// The labels a host ends up with: its own, then the token's (which win),
/// then those it asked for, filling only names still unset.
pub fn merge_labels(host: &Labels, token: &Labels, requested: &Labels) -> Labels {
    let mut labels = host.clone();
    labels.extend(token.clone());
    for (name, value) in requested {
        labels.entry(name.clone()).or_insert_with(|| value.clone());
    }
    labels
}

/// Attempts at enrolling before a concurrent change to the same machine,
/// token or key is given up on.
const ROUNDS: usize = 4;

/// What the policy reads of an attempt (owned: the write that re-checks it
/// runs on whichever thread commits the group).
#[derive(Clone)]
struct Claim {
    token: String,
    idempotency_key: String,
    machine_id: String,
    hostname: String,
    now: i64,
}

/// What the store says about an attempt: the token's grant and the
/// machine's hosts. Decided before signing and again inside the write.
#[derive(Debug, PartialEq, Eq)]
struct Decision {
    token_id: String,
    token: TokenRow,
    /// The same idempotency key and token as an earlier enrollment.
    replay: bool,
    /// The machine's active host.
    existing: Option<HostRecord>,
    /// The host an earlier attempt with this key made.
    past_host: Option<HostRecord>,
    /// The decommissioned host this machine was (when it has no active one).
    previous: Option<String>,
}

/// The policy's reads and the checks that need no key.
fn decide(tx: &Tx<'_>, a: &Claim) -> Result<Decision, FleetError> {
    let (id, secret) =
        tokens::parse(Kind::Enroll, &a.token).ok_or(FleetError::Token("malformed"))?;
    let past = tx.enrollment(&a.idempotency_key)?;
    let replay = past.as_ref().is_some_and(|p| p.token_id == id);
    let token = check_token(tx.enroll_token(id, a.now)?, secret, replay)?;
    if let Some(bound) = &token.hostname {
        if !crate::batch::hostname_matches(bound, &a.hostname) {
            return Err(FleetError::HostnameMismatch {
                bound: bound.clone(),
                claimed: a.hostname.clone(),
            });
        }
    }
    // `last_seen` moves with every check-in and the enrollment sets it
    // anyway: left out, so a poll in between does not make a decision stale.
    let unseen = |mut host: HostRecord| {
        host.last_seen = 0;
        host
    };
    let existing = tx.active_host_by_machine(&a.machine_id)?.map(unseen);
    // A key already used names its host: only that machine may use it again.
    let past_host = match &past {
        Some(p) => tx.host(&p.host_id)?.map(unseen),
        None => None,
    };
    if let Some(host) = &past_host {
        let same_machine =
            host.machine_id == a.machine_id && existing.as_ref().is_some_and(|e| e.id == host.id);
        if !same_machine {
            return Err(FleetError::ReplayMismatch {
                host_id: host.id.clone(),
            });
        }
    }
    if let Some(target) = &token.replaces_host {
        if existing.as_ref().is_none_or(|e| &e.id != target) {
            return Err(FleetError::ReplacementMismatch {
                host_id: target.clone(),
                machine_id: a.machine_id.clone(),
            });
        }
    }
    let previous = match existing {
        Some(_) => None,
        None => tx.retired_host_of_machine(&a.machine_id)?,
    };
    Ok(Decision {
        token_id: id.to_string(),
        token,
        replay,
        existing,
        past_host,
        previous,
    })
}

impl Decision {
    /// The checks that need the request's key.
    fn what(&self, key_sha256: &str) -> Result<Enrollment, FleetError> {
        if let Some(host) = &self.past_host {
            if host.public_key_sha256 != key_sha256 {
                return Err(FleetError::ReplayMismatch {
                    host_id: host.id.clone(),
                });
            }
        }
        match &self.existing {
            None => Ok(Enrollment::New {
                previous: self.previous.clone(),
            }),
            Some(host) if host.public_key_sha256 == key_sha256 => Ok(Enrollment::Again),
            Some(host) if self.token.replaces_host.as_deref() == Some(host.id.as_str()) => {
                Ok(Enrollment::Replaced)
            }
            Some(host) => Err(FleetError::MachineConflict {
                machine_id: host.machine_id.clone(),
                host_id: host.id.clone(),
            }),
        }
    }

    /// The host record the enrollment stores (its config not yet rendered).
    fn host(
        &self,
        host_id: String,
        what: &Enrollment,
        cert: &IssuedCert,
        a: &EnrollAttempt<'_>,
    ) -> HostRecord {
        let mut host = match &self.existing {
            Some(host) => host.clone(),
            None => HostRecord {
                id: host_id,
                machine_id: a.facts.machine_id.clone(),
                public_key_sha256: cert.public_key_sha256.clone(),
                facts: a.facts.clone(),
                operator_labels: Labels::new(),
                state: HostState::Enrolled,
                config: String::new(),
                rendered_hash: String::new(),
                targets: Vec::new(),
                applied_hash: None,
                last_error: None,
                alloy_version: None,
                enrolled_at: a.now,
                last_seen: a.now,
                cert_expires_at: cert.not_after,
                lifecycle: Lifecycle {
                    previous_host_id: self.previous.clone(),
                    ..Lifecycle::default()
                },
            },
        };
        if *what == Enrollment::Replaced {
            // A new machine behind the same host: nothing it reports yet.
            host.public_key_sha256 = cert.public_key_sha256.clone();
            host.state = HostState::Enrolled;
            host.applied_hash = None;
            host.last_error = None;
            host.lifecycle.last_conflict = None;
            host.lifecycle.scrape = None;
        }
        if self.token.replaces_host.is_some() {
            host.lifecycle.replace_until = None;
        }
        host.facts = a.facts.clone();
        host.operator_labels = merge_labels(
            &host.operator_labels,
            &self.token.labels,
            a.requested_labels,
        );
        host.last_seen = a.now;
        host.cert_expires_at = cert.not_after;
        if self.token.batch_id.is_some() {
            host.lifecycle.batch_id = self.token.batch_id.clone();
        }
        host
    }
}

/// Every earlier certificate of the host is revoked; the new one is live.
fn publish_enrolled(index: &PollIndex, e: &Enrolled) {
    index.revoke_host(&e.host.id);
    index.upsert(&LiveCert {
        fingerprint: e.cert.fingerprint.clone(),
        host_id: e.host.id.clone(),
        not_after: e.cert.not_after,
        replaces: None,
        rendered_hash: e.host.rendered_hash.clone(),
    });
}

/// An enrollment signed and rendered, waiting for its transaction.
struct Write {
    claim: Claim,
    decision: Decision,
    host: HostRecord,
    cert: IssuedCert,
    what: Enrollment,
    source: String,
}

impl Write {
    /// Decides again inside the transaction; stores the enrollment when
    /// the decision still holds (`None` when it changed: start over).
    fn commit(self, tx: &Tx<'_>) -> Result<Option<Enrolled>, FleetError> {
        let now = decide(tx, &self.claim)?;
        if now != self.decision {
            return Ok(None);
        }
        let Write {
            claim,
            decision,
            host,
            cert,
            what,
            source,
        } = self;
        if decision.existing.is_none() && tx.host(&host.id)?.is_some() {
            return Ok(None);
        }
        let id = decision.token_id.as_str();
        // Every earlier certificate of the host goes: the old key's after a
        // replacement, and those of earlier attempts whose answer the agent
        // never got.
        tx.revoke_host_certs(&host.id, claim.now)?;
        tx.put_host(&host)?;
        tx.add_cert(&host.id, &cert, None, claim.now)?;
        if !decision.replay {
            tx.spend_token(id)?;
            tx.record_enrollment(&claim.idempotency_key, &host.id, id, claim.now)?;
        }
        tx.bind_batch_row(id, &host.id)?;
        let text = match &what {
            Enrollment::Replaced => "existing host taken over by a new key (hosts replace)".into(),
            Enrollment::New {
                previous: Some(previous),
            } => format!("new host; this machine was {previous}"),
            Enrollment::New { previous: None } => "new host".into(),
            Enrollment::Again if decision.replay => "existing host (replayed attempt)".into(),
            Enrollment::Again => "existing host".to_string(),
        };
        tx.audit(&AuditEntry {
            at: claim.now,
            actor: &host.id,
            action: "enroll",
            target: Some(&host.id),
            outcome: "accepted",
            detail: Some(&format!("{text}; token {id}")),
            source: Some(&source),
        })?;
        Ok(Some(Enrolled {
            host,
            cert,
            what,
            token_id: decision.token_id,
        }))
    }
}

impl Fleet<'_> {
    /// Labels a host asks for obey the label schema (names, values);
    /// required labels are the token's business.
    fn check_requested(&self, requested: &Labels) -> Result<(), FleetError> {
        if requested.is_empty() {
            return Ok(());
        }
        let schema = self
            .settings
            .label_schema()
            .map_err(FleetError::SchemaSetting)?;
        match schema.check(requested) {
            Ok(_) => Ok(()),
            Err(SchemaError(mut problems)) => {
                problems.retain(|p| !matches!(p, Problem::Missing { .. }));
                if problems.is_empty() {
                    Ok(())
                } else {
                    Err(FleetError::RequestedLabels(SchemaError(problems)))
                }
            }
        }
    }

    /// Enrolls a machine: checks the token, maps the machine to its host
    /// (new or existing), signs the CSR for it, renders its config and
    /// stores it all with the audit entry, in one transaction. A refusal
    /// stores nothing but its audit entry (and, for a conflict or a batch
    /// row, a note operators see).
    ///
    /// The expensive parts run outside the store's lock: the policy is
    /// decided on a read of the store; the CSR is checked, the certificate
    /// signed and the config rendered from that decision;
    /// then the write, queued for the store's group commit, decides again
    /// inside its transaction and stores the result only if the decision
    /// is still the same (otherwise, a concurrent change, it starts over).
    pub fn enroll(&self, a: &EnrollAttempt<'_>) -> Result<Enrolled, FleetError> {
        let token_id = tokens::parse(Kind::Enroll, a.token).map(|(id, _)| id.to_string());
        let result = a
            .facts
            .check()
            .map_err(|e| FleetError::BadEdit(format!("invalid facts: {e}")))
            .and_then(|()| check_idempotency_key(a.idempotency_key))
            .and_then(|()| self.check_requested(a.requested_labels))
            .and_then(|()| self.enroll_checked(a));
        match result {
            Ok(enrolled) => Ok(enrolled),
            Err(e) => {
                self.enroll_refused(a, token_id.as_deref(), &e);
                Err(e)
            }
        }
    }

    fn enroll_checked(&self, a: &EnrollAttempt<'_>) -> Result<Enrolled, FleetError> {
        let mut verified = None;
        let claim = Claim {
            token: a.token.to_string(),
            idempotency_key: a.idempotency_key.to_string(),
            machine_id: a.facts.machine_id.clone(),
            hostname: a.facts.hostname.clone(),
            now: a.now,
        };
        // A decision goes stale only when the same machine, token or key
        // changed in between; a few rounds settle any realistic race.
        for _ in 0..ROUNDS {
            let (decision, new_id) = self.store.write(|tx| {
                let decision = decide(tx, &claim)?;
                let new_id = match decision.existing {
                    Some(_) => None,
                    None => Some(tx.new_host_id(&a.facts.hostname)?),
                };
                Ok::<_, FleetError>((decision, new_id))
            })?;
            // After the token check: only a holder of the token's secret
            // gets as far as a CSR refusal (which notes its batch row).
            if verified.is_none() {
                verified = Some(crate::ca::verify_csr(a.csr_pem)?);
            }
            let csr = verified.as_ref().expect("verified above");
            let what = decision.what(&csr.public_key_sha256)?;
            let host_id = match (&decision.existing, new_id) {
                (Some(host), _) => host.id.clone(),
                (None, Some(id)) => id,
                (None, None) => unreachable!("a new host gets an id"),
            };
            let cert = self.ca.sign_verified(
                csr,
                &host_id,
                crate::fleet::agent::at(a.now),
                self.settings.cert_validity,
            )?;
            let mut host = decision.host(host_id, &what, &cert, a);
            self.rerender(&mut host)
                .map_err(|error| FleetError::Render {
                    host: host.id.clone(),
                    error: Box::new(error),
                })?;
            let write = Write {
                claim: claim.clone(),
                decision,
                host,
                cert,
                what,
                source: a.source.to_string(),
            };
            let index = Arc::clone(self.index);
            let stored = self.store.write_grouped(
                move |tx| write.commit(tx),
                move |stored| {
                    if let Some(enrolled) = stored {
                        publish_enrolled(&index, enrolled);
                    }
                },
            )?;
            if let Some(enrolled) = stored {
                return Ok(enrolled);
            }
        }
        Err(FleetError::Store(crate::store::StoreError::Commit(
            format!(
                "machine-id {} kept changing during enrollment; try again",
                a.facts.machine_id
            ),
        )))
    }

    /// Audits a refused enrollment; a conflict is noted on the host and a
    /// batch row remembers why its host is not enrolled.
    fn enroll_refused(&self, a: &EnrollAttempt<'_>, token_id: Option<&str>, e: &FleetError) {
        let hostname = &a.facts.hostname;
        let mut target = hostname.to_string();
        let reason = match e {
            FleetError::Token(why) => format!("token {why}"),
            FleetError::MachineConflict {
                machine_id,
                host_id,
            } => {
                // Refused, not merged: the host keeps its key until an admin
                // decides. Shown on the host so the admin sees the claim.
                let note = format!(
                    "{} from {}: another key claimed this machine-id (hostname {hostname:?}); refused",
                    crate::cli::time(a.now),
                    a.source
                );
                if let Err(e) = self.store.note_conflict(host_id, &note) {
                    tracing::error!(error = %e, host = %host_id, "cannot note a conflict");
                }
                target = host_id.clone();
                format!("machine-id {machine_id} claimed by a different key")
            }
            FleetError::ReplayMismatch { host_id }
            | FleetError::ReplacementMismatch { host_id, .. } => {
                target = host_id.clone();
                e.to_string()
            }
            FleetError::Csr(csr) => format!("bad CSR: {csr}"),
            other => other.to_string(),
        };
        let reason = match token_id {
            Some(id) => format!("{reason}; token {id}"),
            None => reason,
        };
        tracing::warn!(hostname = %hostname, source = %a.source, reason = %reason, "enrollment refused");
        // Only a holder of the token's secret may mark its batch row as failed.
        let secret_checked = !matches!(
            e,
            FleetError::Token("malformed" | "unknown" | "wrong secret")
        );
        if let Some(id) = token_id.filter(|_| secret_checked) {
            if let Err(e) = self.store.note_token_refusal(id, &reason) {
                tracing::error!(error = %e, "cannot note a batch row's refusal");
            }
        }
        self.audit(&AuditEntry {
            at: a.now,
            actor: "anonymous",
            action: "enroll",
            target: Some(&target),
            outcome: "refused",
            detail: Some(&reason),
            source: Some(a.source),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn token_labels_win_and_requested_labels_only_fill_gaps() {
        let host = labels(&[("env", "staging"), ("team", "web")]);
        let token = labels(&[("env", "production")]);
        let requested = labels(&[("env", "dev"), ("team", "db"), ("rack", "r2")]);
        assert_eq!(
            merge_labels(&host, &token, &requested),
            labels(&[("env", "production"), ("rack", "r2"), ("team", "web")])
        );
    }
}
