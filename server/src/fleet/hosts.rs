//! What an operator does to hosts: edit labels (one host or a selector),
//! decommission, replace.

use muster_shared::labels::{self, Labels, Selector};

use super::{Fleet, FleetError};
use crate::store::{AuditEntry, HostRecord};
use crate::tokens::Secret;

/// Which hosts a label edit is for.
#[derive(Clone, Debug)]
pub enum LabelTarget {
    Id(String),
    Selector(Selector),
}

/// A label edit's outcome.
#[derive(Debug)]
pub struct LabelChange {
    /// Hosts the id or selector matched.
    pub matched: usize,
    /// Those whose labels changed (re-rendered and stored).
    pub changed: Vec<HostRecord>,
}

#[derive(Debug)]
pub struct Decommissioned {
    pub host: HostRecord,
    pub revoked_certs: usize,
}

/// `hosts replace`: the one-time token that may take the host over.
#[derive(Debug)]
pub struct Replacement {
    pub host: HostRecord,
    pub token: Secret,
    pub until: i64,
}

/// Checks the shape of an edit before any host is touched.
fn check_edit(set: &Labels, remove: &[String]) -> Result<(), FleetError> {
    if set.is_empty() && remove.is_empty() {
        return Err(FleetError::BadEdit(
            "nothing to do: give labels to set and/or names to remove".into(),
        ));
    }
    for name in set.keys().chain(remove) {
        labels::check_settable(name)?;
    }
    if let Some(both) = remove.iter().find(|n| set.contains_key(*n)) {
        return Err(FleetError::BadEdit(format!(
            "label {both:?} is both set and removed"
        )));
    }
    Ok(())
}

fn edit_text(set: &Labels, remove: &[String]) -> String {
    let mut parts: Vec<String> = set.iter().map(|(k, v)| format!("{k}={v}")).collect();
    parts.extend(remove.iter().map(|k| format!("-{k}")));
    parts.join(" ")
}

impl Fleet<'_> {
    /// Sets and removes labels on one host or every active host a selector
    /// matches, re-rendering each changed host, in one transaction with one
    /// audit entry per changed host: a refusal for any host changes none.
    pub fn edit_labels(
        &self,
        target: &LabelTarget,
        set: &Labels,
        remove: &[String],
        actor: &str,
        source: &str,
        now: i64,
    ) -> Result<LabelChange, FleetError> {
        check_edit(set, remove)?;
        let schema = self
            .settings
            .label_schema()
            .map_err(FleetError::SchemaSetting)?;
        let detail = edit_text(set, remove);
        let publish = |change: &LabelChange| {
            for host in &change.changed {
                self.index.set_hash(&host.id, &host.rendered_hash);
            }
        };
        let change = self.store.write_then(
            |tx| {
                let mut matched = 0;
                let mut changed = Vec::new();
                for mut host in tx.active_hosts()? {
                    let hit = match target {
                        LabelTarget::Id(id) => host.id == *id,
                        LabelTarget::Selector(s) => labels::matches(s, &host.labels()),
                    };
                    if !hit {
                        continue;
                    }
                    matched += 1;
                    let mut wanted = host.operator_labels.clone();
                    for name in remove {
                        wanted.remove(name);
                    }
                    wanted.extend(set.clone());
                    let full = schema.check(&wanted).map_err(|error| FleetError::Schema {
                        host: host.id.clone(),
                        error,
                    })?;
                    if full == host.operator_labels {
                        continue;
                    }
                    host.operator_labels = full;
                    self.rerender(&mut host)
                        .map_err(|error| FleetError::Render {
                            host: host.id.clone(),
                            error: Box::new(error),
                        })?;
                    tx.put_host(&host)?;
                    tx.audit(&AuditEntry {
                        at: now,
                        actor,
                        action: "host.label",
                        target: Some(&host.id),
                        outcome: "ok",
                        detail: Some(&detail),
                        source: Some(source),
                    })?;
                    changed.push(host);
                }
                Ok::<_, FleetError>(LabelChange { matched, changed })
            },
            publish,
        )?;
        if let (LabelTarget::Id(id), 0) = (target, change.matched) {
            return Err(FleetError::NotFound(format!(
                "no active host {id:?} (decommissioned hosts cannot be edited)"
            )));
        }
        for host in &change.changed {
            tracing::info!(host = %host.id, admin = %actor, hash = %host.rendered_hash, "labels changed");
        }
        Ok(change)
    }

    /// Retires a host: marks it, revokes every certificate it has and every
    /// unused replacement token, in one transaction. Renewals serialize with
    /// it, so once this returns no certificate of the host passes.
    pub fn decommission(
        &self,
        host_id: &str,
        actor: &str,
        source: &str,
        now: i64,
    ) -> Result<Decommissioned, FleetError> {
        let publish = |done: &Decommissioned| self.index.revoke_host(&done.host.id);
        self.store.write_then(|tx| {
            let mut host = tx
                .host(host_id)?
                .ok_or_else(|| FleetError::NotFound(format!("no host {host_id:?}")))?;
            if let Some(at) = host.lifecycle.decommissioned_at {
                return Err(FleetError::AlreadyDecommissioned {
                    host_id: host.id,
                    at,
                });
            }
            let revoked = tx.revoke_host_certs(&host.id, now)?;
            let tokens = tx.revoke_replacement_tokens(&host.id, now)?;
            host.lifecycle.decommissioned_at = Some(now);
            host.lifecycle.replace_until = None;
            tx.put_host(&host)?;
            tx.audit(&AuditEntry {
                at: now,
                actor,
                action: "host.decommission",
                target: Some(&host.id),
                outcome: "ok",
                detail: Some(&format!(
                    "revoked {revoked} certificate(s) and {tokens} replacement token(s); target file {}.json is retired as {}",
                    host.id,
                    crate::targets::retired_name(&host.id, super::agent::at(now))
                )),
                source: Some(source),
            })?;
            tracing::info!(host = %host.id, admin = %actor, revoked, "host decommissioned");
            Ok(Decommissioned {
                host,
                revoked_certs: revoked,
            })
        }, publish)
    }

    /// Issues the one-time token that lets a new key take the host over (a
    /// reinstalled machine keeping its machine-id) within `token_ttl`;
    /// earlier unused replacement tokens of the host are revoked.
    pub fn replace(
        &self,
        host_id: &str,
        actor: &str,
        source: &str,
        now: i64,
    ) -> Result<Replacement, FleetError> {
        let until = now + self.settings.token_ttl.as_secs() as i64;
        self.store.write(|tx| {
            let mut host = tx
                .host(host_id)?
                .filter(HostRecord::is_active)
                .ok_or_else(|| FleetError::NotFound(format!("no active host {host_id:?}")))?;
            tx.revoke_replacement_tokens(&host.id, now)?;
            let (token, info) = tx.create_replacement_token(&host.id, until, actor, now)?;
            host.lifecycle.replace_until = Some(until);
            tx.put_host(&host)?;
            tx.audit(&AuditEntry {
                at: now,
                actor,
                action: "host.replace",
                target: Some(&host.id),
                outcome: "ok",
                detail: Some(&format!(
                    "replacement token {} may take this host over until {}",
                    info.id,
                    crate::cli::time(until)
                )),
                source: Some(source),
            })?;
            tracing::info!(host = %host.id, admin = %actor, until, "replacement token issued");
            Ok(Replacement { host, token, until })
        })
    }
}
