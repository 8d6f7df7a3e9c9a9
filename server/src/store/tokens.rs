//! Admin and enrollment tokens.

use muster_shared::labels::Labels;
use rusqlite::{params, OptionalExtension};

use super::{corrupt, to_json, Store, StoreError, Tx};
use crate::admin_wire::{TokenInfo, TokenState};
use crate::tokens::{self, Kind, Secret};

impl Store {
    // ---- admin tokens ----

    pub fn create_admin_token(&self, name: &str, now: i64) -> Result<Secret, StoreError> {
        let token = tokens::generate(Kind::Admin);
        self.conn()
            .prepare_cached(
                "INSERT INTO admin_tokens (id, name, hash, created_at) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![token.id, name, token.hash, now])?;
        Ok(token.text)
    }

    /// The name of the admin token `text`, when it is valid and not revoked.
    pub fn verify_admin_token(&self, text: &str) -> Result<Option<String>, StoreError> {
        let Some((id, secret)) = tokens::parse(Kind::Admin, text) else {
            return Ok(None);
        };
        self.verify_named_token(NamedTokens::Admin, id, secret)
    }

    /// The name of token `id` of `table` when `secret` is its secret and it
    /// is not revoked.
    pub(super) fn verify_named_token(
        &self,
        table: NamedTokens,
        id: &str,
        secret: &str,
    ) -> Result<Option<String>, StoreError> {
        let row: Option<(String, Vec<u8>, Option<i64>)> = self
            .conn()
            .prepare_cached(&format!(
                "SELECT name, hash, revoked_at FROM {} WHERE id = ?1",
                table.table()
            ))?
            .query_row([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .optional()?;
        Ok(match row {
            Some((name, hash, None)) if tokens::verify(secret, &hash) => Some(name),
            _ => None,
        })
    }

    // ---- enrollment tokens ----

    pub fn list_enroll_tokens(&self, now: i64) -> Result<Vec<TokenInfo>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT id, labels, created_at, expires_at, uses_allowed, uses, revoked_at
             FROM enroll_tokens WHERE batch_id IS NULL ORDER BY created_at, id",
        )?;
        let rows = stmt.query_map([], |r| token_row(r, now))?;
        rows.map(|r| r?).collect()
    }
}

/// The tables of tokens that carry a name (who or what holds them).
#[derive(Clone, Copy)]
pub(super) enum NamedTokens {
    Admin,
    Reader,
}

impl NamedTokens {
    fn table(self) -> &'static str {
        match self {
            NamedTokens::Admin => "admin_tokens",
            NamedTokens::Reader => "reader_tokens",
        }
    }
}

pub(super) fn token_state(
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

pub(super) fn token_row(
    r: &rusqlite::Row<'_>,
    now: i64,
) -> rusqlite::Result<Result<TokenInfo, StoreError>> {
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

/// An enrollment token as stored (its secret only as a hash).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRow {
    pub hash: Vec<u8>,
    pub labels: Labels,
    pub state_at_now: TokenState,
    /// Set for batch tokens: only this hostname may use it.
    pub hostname: Option<String>,
    pub batch_id: Option<String>,
    /// Set for `hosts replace` tokens: the only host it may take over.
    pub replaces_host: Option<String>,
}

fn insert_enroll_token(
    conn: &rusqlite::Connection,
    labels: &Labels,
    expires_at: i64,
    uses: u32,
    created_by: &str,
    replaces_host: Option<&str>,
    now: i64,
) -> Result<(Secret, TokenInfo), StoreError> {
    let token = tokens::generate(Kind::Enroll);
    conn.prepare_cached(
        "INSERT INTO enroll_tokens (id, hash, labels, created_at, expires_at, uses_allowed,
         created_by, replaces_host) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        token.id,
        token.hash,
        to_json(labels),
        now,
        expires_at,
        uses,
        created_by,
        replaces_host
    ])?;
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

impl Tx<'_> {
    pub fn create_enroll_token(
        &self,
        labels: &Labels,
        expires_at: i64,
        uses: u32,
        created_by: &str,
        now: i64,
    ) -> Result<(Secret, TokenInfo), StoreError> {
        insert_enroll_token(&self.tx, labels, expires_at, uses, created_by, None, now)
    }

    /// Revokes a token; `None` when there is no such token.
    pub fn revoke_enroll_token(&self, id: &str, now: i64) -> Result<Option<TokenInfo>, StoreError> {
        self.tx
            .prepare_cached(
                "UPDATE enroll_tokens SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
            )?
            .execute(params![id, now])?;
        let row = self
            .tx
            .prepare_cached(
                "SELECT id, labels, created_at, expires_at, uses_allowed, uses, revoked_at
                 FROM enroll_tokens WHERE id = ?1",
            )?
            .query_row([id], |r| token_row(r, now))
            .optional()?;
        row.transpose()
    }

    /// The enrollment token with this id, its state at `now`.
    pub fn enroll_token(&self, id: &str, now: i64) -> Result<Option<TokenRow>, StoreError> {
        self.tx
            .prepare_cached(
                "SELECT hash, labels, expires_at, uses_allowed, uses, revoked_at IS NOT NULL,
                 hostname, batch_id, replaces_host FROM enroll_tokens WHERE id = ?1",
            )?
            .query_row([id], |r| {
                let labels: String = r.get(1)?;
                Ok((
                    labels,
                    TokenRow {
                        hash: r.get(0)?,
                        labels: Labels::new(),
                        state_at_now: token_state(r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, now),
                        hostname: r.get(6)?,
                        batch_id: r.get(7)?,
                        replaces_host: r.get(8)?,
                    },
                ))
            })
            .optional()?
            .map(|(labels, row)| {
                Ok(TokenRow {
                    labels: serde_json::from_str(&labels).map_err(corrupt("token labels"))?,
                    ..row
                })
            })
            .transpose()
    }

    /// Counts one use of a token.
    pub fn spend_token(&self, id: &str) -> Result<(), StoreError> {
        self.tx
            .prepare_cached("UPDATE enroll_tokens SET uses = uses + 1 WHERE id = ?1")?
            .execute([id])?;
        Ok(())
    }

    /// A one-time token that may take over `host_id` only (`hosts replace`).
    pub fn create_replacement_token(
        &self,
        host_id: &str,
        expires_at: i64,
        created_by: &str,
        now: i64,
    ) -> Result<(Secret, TokenInfo), StoreError> {
        insert_enroll_token(
            &self.tx,
            &Labels::new(),
            expires_at,
            1,
            created_by,
            Some(host_id),
            now,
        )
    }

    /// Revokes the unused replacement tokens of a host; how many.
    pub fn revoke_replacement_tokens(&self, host_id: &str, now: i64) -> Result<usize, StoreError> {
        Ok(self
            .tx
            .prepare_cached(
                "UPDATE enroll_tokens SET revoked_at = ?2
             WHERE replaces_host = ?1 AND revoked_at IS NULL AND uses < uses_allowed",
            )?
            .execute(params![host_id, now])?)
    }
}
