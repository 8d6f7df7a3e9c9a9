//! Enrollment tokens an operator issues and revokes (the API's `token
//! create`/`token revoke` and the console's enroll form and tokens page).

use std::time::Duration;

use muster_shared::labels::Labels;

use super::{Fleet, FleetError};
use crate::admin_wire::TokenInfo;
use crate::settings::Settings;
use crate::store::AuditEntry;
use crate::tokens::Secret;

/// Longest enrollment token lifetime.
const MAX_TOKEN_TTL: Duration = Duration::from_secs(365 * 86400);
/// Most enrollments one token may allow.
const MAX_TOKEN_USES: u32 = 100_000;

/// The token lifetime asked for (the server's default when absent), within
/// bounds.
pub fn token_ttl(settings: &Settings, secs: Option<u64>) -> Result<Duration, FleetError> {
    let ttl = secs.map(Duration::from_secs).unwrap_or(settings.token_ttl);
    if ttl.is_zero() || ttl > MAX_TOKEN_TTL {
        return Err(FleetError::BadToken(
            "ttl must be between 1 second and 365 days".into(),
        ));
    }
    Ok(ttl)
}

impl Fleet<'_> {
    /// Issues an enrollment token for up to `uses` hosts, valid for `ttl`,
    /// carrying `labels` as the schema completes them (defaults filled in:
    /// the token carries the labels its hosts get). Audited in the same
    /// transaction.
    pub fn create_token(
        &self,
        labels: &Labels,
        ttl: Duration,
        uses: u32,
        actor: &str,
        source: &str,
        now: i64,
    ) -> Result<(Secret, TokenInfo), FleetError> {
        let schema = self
            .settings
            .label_schema()
            .map_err(FleetError::SchemaSetting)?;
        let labels = schema
            .check(labels)
            .map_err(|e| FleetError::BadToken(e.to_string()))?;
        if uses == 0 || uses > MAX_TOKEN_USES {
            return Err(FleetError::BadToken(format!(
                "uses must be between 1 and {MAX_TOKEN_USES}"
            )));
        }
        self.store.write(|tx| {
            let (secret, info) =
                tx.create_enroll_token(&labels, now + ttl.as_secs() as i64, uses, actor, now)?;
            tx.audit(&AuditEntry {
                at: now,
                actor,
                action: "token.create",
                target: Some(&info.id),
                outcome: "ok",
                detail: Some(&serde_json::to_string(&info.labels).unwrap_or_default()),
                source: Some(source),
            })?;
            tracing::info!(token = %info.id, admin = %actor, uses, "created enrollment token");
            Ok((secret, info))
        })
    }

    /// Revokes an enrollment token: it enrolls nothing more. Audited in the
    /// same transaction.
    pub fn revoke_token(
        &self,
        id: &str,
        actor: &str,
        source: &str,
        now: i64,
    ) -> Result<TokenInfo, FleetError> {
        self.store.write(|tx| {
            let info = tx
                .revoke_enroll_token(id, now)?
                .ok_or_else(|| FleetError::NotFound(format!("no enrollment token {id:?}")))?;
            tx.audit(&AuditEntry {
                at: now,
                actor,
                action: "token.revoke",
                target: Some(&info.id),
                outcome: "ok",
                detail: None,
                source: Some(source),
            })?;
            tracing::info!(token = %info.id, admin = %actor, "revoked enrollment token");
            Ok(info)
        })
    }
}
