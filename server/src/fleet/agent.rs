//! What an enrolled agent does: present its certificate, fetch its config,
//! renew, report applies and facts.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use muster_shared::facts::Facts;
use muster_shared::wire::{self, StatusReport};

use super::Lookup;
use super::{Fleet, FleetError};
use crate::ca::IssuedCert;
use crate::store::{AuditEntry, CertRow, HostRecord, LiveCert, Tx};

/// Clock skew and agent rounding allowed before the renewal window opens.
const RENEW_SLACK_SECS: i64 = 600;

/// Unix seconds as a time.
pub fn at(now: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(now.max(0) as u64)
}

/// The certificate an agent presented, once it passed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentCert {
    pub host_id: String,
    pub fingerprint: String,
    pub not_after: i64,
    /// The host's current config hash (what a poll compares).
    pub rendered_hash: String,
}

/// The result of a facts report.
#[derive(Debug)]
pub struct FactsUpdate {
    pub host: HostRecord,
    /// The render error when the new facts do not render (the host keeps
    /// its previous config).
    pub render_error: Option<String>,
}

/// Whether `now` is inside a certificate's renewal window: the last third
/// of its validity, opened [`RENEW_SLACK_SECS`] early.
pub fn renewal_opens(issued_at: i64, not_after: i64) -> i64 {
    not_after - (not_after - issued_at) / 3 - RENEW_SLACK_SECS
}

/// The host part of a `host:port` scrape address, as an IP when it is one.
/// The certificate `fingerprint` and its host, read in `tx`: refused when
/// the certificate is unknown, revoked or expired, or its host is gone.
fn live_cert(
    tx: &Tx<'_>,
    fingerprint: &str,
    now: i64,
) -> Result<(CertRow, HostRecord), FleetError> {
    let cert = tx.cert(fingerprint)?.ok_or(FleetError::UnknownCert)?;
    if cert.revoked_at.is_some() {
        return Err(FleetError::Revoked);
    }
    if cert.not_after < now {
        return Err(FleetError::Expired);
    }
    let host = tx
        .host(&cert.host_id)?
        .filter(HostRecord::is_active)
        .ok_or(FleetError::Revoked)?;
    Ok((cert, host))
}

fn address_host(address: &str) -> Option<IpAddr> {
    if let Ok(sa) = address.parse::<SocketAddr>() {
        return Some(sa.ip().to_canonical());
    }
    None
}

impl Fleet<'_> {
    /// Maps a presented client certificate (already verified against the
    /// CA by TLS) to its host from the poll index alone: `None` when the
    /// index cannot decide and [`Fleet::authenticate`] must ask the store.
    pub fn authenticate_cached(
        &self,
        fingerprint: &str,
        now: i64,
    ) -> Option<Result<AgentCert, FleetError>> {
        match self.index.get(fingerprint, now) {
            Lookup::Pass(cert) => Some(Ok(cert)),
            Lookup::Expired => Some(Err(FleetError::Expired)),
            Lookup::Ask => None,
        }
    }

    /// Maps a presented client certificate (already verified against the
    /// CA by TLS) to its host: it must be known, unrevoked, unexpired and
    /// its host active. From the poll index when it can decide, else from
    /// the store, where the first use of a renewed certificate revokes the
    /// one it replaced.
    pub fn authenticate(&self, fingerprint: &str, now: i64) -> Result<AgentCert, FleetError> {
        if let Some(known) = self.authenticate_cached(fingerprint, now) {
            return known;
        }
        let publish = |(cert, revoked): &(AgentCert, Option<String>)| {
            if let Some(old) = revoked {
                self.index.revoke_cert(old);
            }
            self.index.upsert(&LiveCert {
                fingerprint: cert.fingerprint.clone(),
                host_id: cert.host_id.clone(),
                not_after: cert.not_after,
                replaces: None,
                rendered_hash: cert.rendered_hash.clone(),
            });
        };
        let write = self.store.write_then(
            |tx| {
                let (cert, host) = live_cert(tx, fingerprint, now)?;
                let mut revoked = None;
                if let Some(old) = &cert.replaces {
                    if tx.revoke_cert(old, now)? {
                        tx.audit(&AuditEntry {
                            at: now,
                            actor: &host.id,
                            action: "cert.revoke",
                            target: Some(&host.id),
                            outcome: "ok",
                            detail: Some(&format!(
                                "certificate {old} replaced by its renewal, now in use"
                            )),
                            source: None,
                        })?;
                    }
                    revoked = Some(old.clone());
                }
                Ok((
                    AgentCert {
                        host_id: host.id,
                        fingerprint: cert.fingerprint,
                        not_after: cert.not_after,
                        rendered_hash: host.rendered_hash,
                    },
                    revoked,
                ))
            },
            publish,
        );
        write.map(|(cert, _)| cert)
    }

    /// Marks a host seen now, in memory (the store writes check-in times
    /// in batches): an unchanged-config poll touches no database.
    pub fn seen(&self, host_id: &str, now: i64) {
        self.store.seen(host_id, now);
    }

    /// The host's record for a config fetch, marking it seen.
    pub fn config(&self, host_id: &str, now: i64) -> Result<HostRecord, FleetError> {
        self.seen(host_id, now);
        self.store
            .host(host_id)?
            .filter(HostRecord::is_active)
            .ok_or(FleetError::Revoked)
    }

    /// Signs a new certificate for the host of the presented one. Inside
    /// one transaction the presented certificate must be unrevoked,
    /// unexpired, of an active host, inside its renewal window, and the CSR
    /// must carry the host's key. The presented certificate stays valid
    /// until the new one is first used (see [`Fleet::authenticate`]): an
    /// agent that never got the answer can still renew again, and that
    /// renewal revokes the unused one.
    pub fn renew(
        &self,
        fingerprint: &str,
        csr_pem: &str,
        source: &str,
        now: i64,
    ) -> Result<(String, IssuedCert), FleetError> {
        let publish = |(host, issued): &(HostRecord, IssuedCert)| {
            self.index.revoke_renewals_of(&host.id, fingerprint);
            self.index.upsert(&LiveCert {
                fingerprint: issued.fingerprint.clone(),
                host_id: host.id.clone(),
                not_after: issued.not_after,
                replaces: Some(fingerprint.to_string()),
                rendered_hash: host.rendered_hash.clone(),
            });
        };
        let write = self.store.write_then(
            |tx| {
                let (cert, mut host) = live_cert(tx, fingerprint, now)?;
                let opens = renewal_opens(cert.issued_at, cert.not_after);
                if now < opens {
                    return Err(FleetError::RenewTooEarly { opens });
                }
                let issued =
                    self.ca
                        .sign_csr(csr_pem, &host.id, at(now), self.settings.cert_validity)?;
                if issued.public_key_sha256 != host.public_key_sha256 {
                    return Err(FleetError::RenewKeyMismatch);
                }
                let dropped = tx.revoke_renewals_of(fingerprint, now)?;
                tx.add_cert(&host.id, &issued, Some(fingerprint), now)?;
                host.cert_expires_at = issued.not_after;
                tx.put_host(&host)?;
                tx.audit(&AuditEntry {
                    at: now,
                    actor: &host.id,
                    action: "renew",
                    target: Some(&host.id),
                    outcome: "accepted",
                    detail: Some(&format!(
                        "serial {}; replaces {fingerprint} once used{}",
                        issued.serial,
                        if dropped > 0 {
                            format!("; revoked {dropped} unused earlier renewal(s)")
                        } else {
                            String::new()
                        }
                    )),
                    source: Some(source),
                })?;
                Ok((host, issued))
            },
            publish,
        );
        write.map(|(host, issued)| (host.id, issued))
    }

    /// Records the result of an apply. The error text is cleaned (control
    /// characters out, length capped) before it is stored.
    pub fn report_status(
        &self,
        host_id: &str,
        report: &StatusReport,
        now: i64,
    ) -> Result<(), FleetError> {
        let hex64 = report.hash.len() == 64 && report.hash.bytes().all(|b| b.is_ascii_hexdigit());
        if !hex64 {
            return Err(FleetError::BadEdit("hash must be 64 hex digits".into()));
        }
        if let Some(v) = &report.alloy_version {
            let ok = v.len() <= 64 && v.chars().all(|c| c.is_ascii_graphic());
            if !ok {
                return Err(FleetError::BadEdit(
                    "alloy_version must be at most 64 printable characters".into(),
                ));
            }
        }
        let clean = StatusReport {
            error: report.error.as_deref().map(wire::clean_status_error),
            reload_fallback: report
                .reload_fallback
                .as_deref()
                .map(wire::clean_status_error),
            ..report.clone()
        };
        self.store.write(|tx| {
            tx.host(host_id)?
                .filter(HostRecord::is_active)
                .ok_or(FleetError::Revoked)?;
            tx.record_status(host_id, &clean, now)?;
            Ok(())
        })
    }

    /// Takes an enrolled host's new facts (checked like at enrollment) and
    /// re-renders its config, in one transaction so a concurrent label edit
    /// cannot be lost. The machine id may not change, and the scrape
    /// address may move only to the address the agent connects from (unless
    /// `agents_may_move_targets`); a move is audited. The facts are stored
    /// even when the render fails: the host then keeps its previous config.
    pub fn report_facts(
        &self,
        host_id: &str,
        facts: &Facts,
        source: IpAddr,
        now: i64,
    ) -> Result<FactsUpdate, FleetError> {
        let source_text = source.to_canonical().to_string();
        let refused = |outcome_detail: &str| {
            self.audit(&AuditEntry {
                at: now,
                actor: host_id,
                action: "facts",
                target: Some(host_id),
                outcome: "refused",
                detail: Some(outcome_detail),
                source: Some(&source_text),
            })
        };
        if let Err(e) = facts.check() {
            tracing::warn!(host = %host_id, source = %source_text, error = %e, "refused untrusted facts");
            refused(&e.to_string());
            return Err(FleetError::BadEdit(format!("invalid facts: {e}")));
        }
        let publish = |update: &FactsUpdate| {
            self.index
                .set_hash(&update.host.id, &update.host.rendered_hash)
        };
        let result = self.store.write_then(
            |tx| {
                let mut host = tx
                    .host(host_id)?
                    .filter(HostRecord::is_active)
                    .ok_or(FleetError::Revoked)?;
                if host.facts.machine_id != facts.machine_id {
                    return Err(FleetError::MachineIdChanged {
                        enrolled: host.facts.machine_id.clone(),
                    });
                }
                let moved = host.facts.scrape_address != facts.scrape_address;
                if moved {
                    let here = address_host(&facts.scrape_address) == Some(source.to_canonical());
                    if !here && !self.settings.agents_may_move_targets {
                        return Err(FleetError::TargetMoved {
                            address: facts.scrape_address.clone(),
                            from: source_text.clone(),
                        });
                    }
                    tx.audit(&AuditEntry {
                        at: now,
                        actor: host_id,
                        action: "facts.scrape_address",
                        target: Some(host_id),
                        outcome: "accepted",
                        detail: Some(&format!(
                            "{} -> {}{}",
                            host.facts.scrape_address,
                            facts.scrape_address,
                            if here {
                                ""
                            } else {
                                " (not the source address; allowed by agents_may_move_targets)"
                            }
                        )),
                        source: Some(&source_text),
                    })?;
                }
                host.facts = facts.clone();
                let render_error = self.rerender(&mut host).err().map(|e| e.to_string());
                tx.put_host(&host)?;
                let services: Vec<&str> = host
                    .facts
                    .services
                    .iter()
                    .map(|s| s.kind.as_str())
                    .collect();
                let detail = match &render_error {
                    None => format!(
                        "services [{}]; config {}",
                        services.join(", "),
                        host.rendered_hash
                    ),
                    Some(e) => format!("services [{}]; render failed: {e}", services.join(", ")),
                };
                tx.audit(&AuditEntry {
                    at: now,
                    actor: host_id,
                    action: "facts",
                    target: Some(host_id),
                    outcome: "accepted",
                    detail: Some(&detail),
                    source: Some(&source_text),
                })?;
                Ok(FactsUpdate { host, render_error })
            },
            publish,
        );
        if let Err(e @ (FleetError::TargetMoved { .. } | FleetError::MachineIdChanged { .. })) =
            &result
        {
            tracing::warn!(host = %host_id, source = %source_text, error = %e, "refused facts");
            refused(&e.to_string());
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_renewal_window_is_the_last_third() {
        let day = 86_400;
        let opens = renewal_opens(0, 30 * day);
        assert_eq!(opens, 20 * day - RENEW_SLACK_SECS);
    }

    #[test]
    fn scrape_address_hosts_compare_as_ips() {
        assert_eq!(
            address_host("10.0.0.5:9100"),
            Some("10.0.0.5".parse().expect("ip"))
        );
        assert_eq!(
            address_host("[::ffff:10.0.0.5]:9100"),
            Some("10.0.0.5".parse().expect("ip"))
        );
        assert_eq!(address_host("web-01:9100"), None);
    }
}
