//! Enrollments by idempotency key: which host an agent's earlier attempt
//! made, so a retried enrollment finds it again.

use rusqlite::{params, OptionalExtension};

use super::{StoreError, Tx};

/// An earlier enrollment with the same idempotency key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PastEnrollment {
    pub host_id: String,
    pub token_id: String,
}

impl Tx<'_> {
    /// The enrollment made with `key`, when its host is still active.
    pub fn enrollment(&self, key: &str) -> Result<Option<PastEnrollment>, StoreError> {
        Ok(self
            .tx
            .prepare_cached(
                "SELECT e.host_id, e.token_id FROM enrollments e JOIN hosts h ON h.id = e.host_id
                 WHERE e.idempotency_key = ?1 AND h.decommissioned_at IS NULL",
            )?
            .query_row([key], |r| {
                Ok(PastEnrollment {
                    host_id: r.get(0)?,
                    token_id: r.get(1)?,
                })
            })
            .optional()?)
    }

    /// Remembers that `key` enrolled `host_id` with `token_id`.
    pub fn record_enrollment(
        &self,
        key: &str,
        host_id: &str,
        token_id: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        self.tx.prepare_cached("INSERT INTO enrollments (idempotency_key, host_id, token_id, at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(idempotency_key) DO UPDATE SET host_id = excluded.host_id,
             token_id = excluded.token_id, at = excluded.at")?
.execute(params![key, host_id, token_id, now],
        )?;
        Ok(())
    }
}
