//! `last_seen` behind the writes: a check-in marks its host seen in memory
//! only ([`Store::seen`]); [`Store::flush_seen`] writes every pending time in
//! one transaction (every few seconds, and at shutdown). Every read of a
//! host overlays the pending time while it holds the connection, so no
//! reader sees an older `last_seen` than a check-in that already returned,
//! and a check-in never waits on (or fails with) the database.

use std::collections::HashMap;
use std::sync::Mutex;

use rusqlite::params;

use super::{HostRecord, Store, StoreError};

/// Host id → the newest check-in time not yet written.
#[derive(Default)]
pub(super) struct Pending {
    times: Mutex<HashMap<String, i64>>,
}

impl Pending {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, i64>> {
        self.times.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn mark(&self, host_id: &str, now: i64) {
        let mut times = self.lock();
        match times.get_mut(host_id) {
            Some(t) => *t = (*t).max(now),
            None => {
                times.insert(host_id.to_string(), now);
            }
        }
    }

    /// The stored `last_seen` of `host_id`, or its pending time when newer.
    pub(super) fn last_seen(&self, host_id: &str, stored: i64) -> i64 {
        match self.lock().get(host_id) {
            Some(&t) => t.max(stored),
            None => stored,
        }
    }

    /// Overlays the pending time on a host read from the database.
    pub(super) fn overlay(&self, mut host: HostRecord) -> HostRecord {
        host.last_seen = self.last_seen(&host.id, host.last_seen);
        host
    }

    /// Puts back times whose write failed (a newer check-in since wins).
    fn restore(&self, batch: HashMap<String, i64>) {
        let mut times = self.lock();
        for (id, t) in batch {
            let slot = times.entry(id).or_insert(t);
            *slot = (*slot).max(t);
        }
    }
}

impl Store {
    /// Marks a host seen at `now`, in memory: written by the next
    /// [`Store::flush_seen`], visible to every read at once.
    pub fn seen(&self, host_id: &str, now: i64) {
        self.pending.mark(host_id, now);
    }

    /// Writes every pending check-in time in one transaction (never moving
    /// a `last_seen` back); how many hosts. On failure the times stay
    /// pending for the next flush.
    pub fn flush_seen(&self) -> Result<usize, StoreError> {
        let mut conn = self.conn();
        let batch = std::mem::take(&mut *self.pending.lock());
        if batch.is_empty() {
            return Ok(0);
        }
        let written = (|| {
            let tx = conn.transaction()?;
            {
                let mut stmt = tx.prepare_cached(
                    "UPDATE hosts SET last_seen = max(last_seen, ?2) WHERE id = ?1",
                )?;
                for (id, t) in &batch {
                    stmt.execute(params![id, t])?;
                }
            }
            tx.commit()?;
            Ok::<_, StoreError>(batch.len())
        })();
        if written.is_err() {
            self.pending.restore(batch);
        }
        written
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_times_only_move_forward_and_survive_a_failed_write() {
        let p = Pending::default();
        p.mark("a", 10);
        p.mark("a", 5);
        assert_eq!(p.last_seen("a", 7), 10);
        assert_eq!(p.last_seen("a", 12), 12);
        assert_eq!(p.last_seen("b", 3), 3);
        let batch = std::mem::take(&mut *p.lock());
        p.mark("a", 11);
        p.restore(batch);
        assert_eq!(p.last_seen("a", 0), 11);
    }
}
