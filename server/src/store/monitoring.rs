//! What monitoring reads: the counts of Muster's `/metrics` (at scrape time,
//! with narrow queries: no configs or facts are loaded; hosts by state come
//! from `store/overview.rs`, as on the console's overview), the readiness ping,
//! and targets-reader tokens (`mtr_…`: `/v1/sd/targets` and `/metrics`, nothing
//! else; their own table, so no reader token can pass as an admin token).

use rusqlite::OptionalExtension as _;

use super::tokens::NamedTokens;
use super::{Store, StoreError};
use crate::admin_wire::{HostState, ReaderTokenInfo};
use crate::metrics::FleetCounts;
use crate::tokens::{self, Kind, Secret};

impl Store {
    /// Hosts by state at `now`, config rollout, certificates of active hosts
    /// expiring before `expiring_before`, and usable tokens.
    pub fn fleet_counts(
        &self,
        now: i64,
        stale_after: i64,
        expiring_before: i64,
    ) -> Result<FleetCounts, StoreError> {
        let hosts = self.state_counts(now, stale_after)?;
        let mut counts = FleetCounts {
            rollout_current: hosts.current,
            rollout_outdated: hosts.outdated,
            ..FleetCounts::default()
        };
        let mut by_state = hosts.by_state;
        let conn = self.conn();
        let pending: u64 = conn
            .prepare_cached("SELECT count(*) FROM batch_hosts WHERE host_id IS NULL")?
            .query_row([], |r| r.get(0))?;
        if pending > 0 {
            by_state.insert(HostState::Pending, pending);
        }
        counts.by_state = by_state.into_iter().collect();
        // A renewal leaves the older certificate valid until it expires: only
        // each active host's newest one counts.
        counts.certs_expiring = conn
            .prepare_cached(
                "SELECT count(*) FROM (
                SELECT max(c.not_after) AS newest FROM certs c
                JOIN hosts h ON h.id = c.host_id
                WHERE h.decommissioned_at IS NULL AND c.revoked_at IS NULL
                GROUP BY c.host_id)
             WHERE newest < ?1",
            )?
            .query_row([expiring_before], |r| r.get(0))?;
        counts.enroll_tokens = conn
            .prepare_cached(
                "SELECT count(*) FROM enroll_tokens
             WHERE revoked_at IS NULL AND expires_at > ?1 AND uses < uses_allowed",
            )?
            .query_row([now], |r| r.get(0))?;
        counts.admin_tokens = conn
            .prepare_cached("SELECT count(*) FROM admin_tokens WHERE revoked_at IS NULL")?
            .query_row([], |r| r.get(0))?;
        counts.reader_tokens = conn
            .prepare_cached("SELECT count(*) FROM reader_tokens WHERE revoked_at IS NULL")?
            .query_row([], |r| r.get(0))?;
        Ok(counts)
    }

    /// Whether the database answers a query (`/readyz`).
    pub fn ping(&self) -> Result<(), StoreError> {
        self.conn()
            .prepare_cached("SELECT 1")?
            .query_row([], |_| Ok(()))?;
        Ok(())
    }

    /// A new targets-reader token named `name`; the text is shown once.
    pub fn create_reader_token(
        &self,
        name: &str,
        created_by: &str,
        now: i64,
    ) -> Result<(String, Secret), StoreError> {
        let token = tokens::generate(Kind::Reader);
        self.conn()
            .prepare_cached(
                "INSERT INTO reader_tokens (id, name, hash, created_at, created_by)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(rusqlite::params![
                token.id, name, token.hash, now, created_by
            ])?;
        Ok((token.id, token.text))
    }

    /// Every targets-reader token, newest first (never a secret).
    pub fn reader_tokens(&self) -> Result<Vec<ReaderTokenInfo>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT id, name, created_at, created_by, revoked_at FROM reader_tokens
             ORDER BY created_at DESC, id",
        )?;
        let rows = stmt.query_map([], reader_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Revokes a targets-reader token (again: no change); `None` when there
    /// is no such token.
    pub fn revoke_reader_token(
        &self,
        id: &str,
        now: i64,
    ) -> Result<Option<ReaderTokenInfo>, StoreError> {
        let conn = self.conn();
        conn.prepare_cached(
            "UPDATE reader_tokens SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
        )?
        .execute(rusqlite::params![id, now])?;
        let token = conn
            .prepare_cached(
                "SELECT id, name, created_at, created_by, revoked_at FROM reader_tokens
                 WHERE id = ?1",
            )?
            .query_row([id], reader_row)
            .optional()?;
        Ok(token)
    }

    /// The name of the token `text` when it may read targets: an unrevoked
    /// targets-reader token, or an admin token.
    pub fn verify_reader_token(&self, text: &str) -> Result<Option<String>, StoreError> {
        let Some((id, secret)) = tokens::parse(Kind::Reader, text) else {
            return self.verify_admin_token(text);
        };
        self.verify_named_token(NamedTokens::Reader, id, secret)
    }
}

pub(super) fn parse_state(text: &str) -> Result<HostState, StoreError> {
    HostState::parse(text).ok_or(StoreError::Corrupt {
        what: "host state",
        message: text.to_string(),
    })
}

fn reader_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ReaderTokenInfo> {
    Ok(ReaderTokenInfo {
        id: r.get(0)?,
        name: r.get(1)?,
        created_at: r.get(2)?,
        created_by: r.get(3)?,
        revoked_at: r.get(4)?,
    })
}
