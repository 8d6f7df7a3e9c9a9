//! `last_seen` behind the writes: a check-in marks its host seen in memory
//! only ([`Store::seen`]); [`Store::flush_seen`] writes the pending times
//! (every few seconds, and at shutdown) in transactions of at most
//! [`CHUNK`] hosts, letting other writes in between. Every read of a host
//! overlays the pending time while it holds the connection, and a chunk
//! leaves memory only while its transaction holds the connection, so no
//! reader sees an older `last_seen` than a check-in that already returned,
//! and a check-in never waits on (or fails with) the database.

use std::collections::HashMap;
use std::sync::Mutex;

use rusqlite::params;

use super::{HostRecord, Store, StoreError};

/// Hosts written per transaction by a flush: the store is held for one
/// chunk at a time (a few milliseconds), never for a whole flush of a large
/// fleet's check-ins.
const CHUNK: usize = 1000;

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

    /// The hosts with a pending time at or after `since`.
    pub(super) fn seen_since(&self, since: i64) -> Vec<String> {
        let times = self.lock();
        times
            .iter()
            .filter(|(_, &t)| t >= since)
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Overlays the pending time on a host read from the database.
    pub(super) fn overlay(&self, mut host: HostRecord) -> HostRecord {
        host.last_seen = self.last_seen(&host.id, host.last_seen);
        host
    }

    /// Takes up to `n` pending times out (in no particular order).
    fn take(&self, n: usize) -> HashMap<String, i64> {
        let mut times = self.lock();
        if times.len() <= n {
            return std::mem::take(&mut *times);
        }
        let ids: Vec<String> = times.keys().take(n).cloned().collect();
        ids.into_iter()
            .filter_map(|id| times.remove_entry(&id))
            .collect()
    }

    fn len(&self) -> usize {
        self.lock().len()
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

    /// Writes the check-in times pending when called (never moving a
    /// `last_seen` back), [`CHUNK`] hosts per transaction, the connection
    /// released between chunks; how many hosts. On failure the unwritten
    /// times stay pending for the next flush.
    pub fn flush_seen(&self) -> Result<usize, StoreError> {
        self.flush_seen_in(CHUNK)
    }

    fn flush_seen_in(&self, chunk: usize) -> Result<usize, StoreError> {
        // Check-ins arriving meanwhile wait for the next flush: a busy
        // fleet cannot keep one flush going forever.
        let due = self.pending.len();
        let mut written = 0;
        while written < due {
            let mut conn = self.conn();
            let batch = self.pending.take(chunk.min(due - written));
            if batch.is_empty() {
                break;
            }
            let wrote = (|| {
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
            match wrote {
                Ok(n) => written += n,
                Err(e) => {
                    self.pending.restore(batch);
                    return Err(e);
                }
            }
        }
        Ok(written)
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

    #[test]
    fn a_flush_writes_every_pending_time_a_chunk_at_a_time() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("muster.db")).expect("store");
        let stored = |id: &str| -> i64 {
            store
                .conn()
                .query_row("SELECT last_seen FROM hosts WHERE id = ?1", [id], |r| {
                    r.get(0)
                })
                .expect("host")
        };
        let ids: Vec<String> = (0..7).map(|i| format!("web-{i}-abc")).collect();
        for (i, id) in ids.iter().enumerate() {
            store
                .conn()
                .execute(
                    "INSERT INTO hosts (id, machine_id, public_key_sha256, facts, labels, state,
                     config, rendered_hash, targets, enrolled_at, last_seen, cert_expires_at)
                     VALUES (?1, ?2, 'k', '{}', '{}', 'enrolled', '', 'h', '[]', 0, 5, 1)",
                    params![id, format!("m{i}")],
                )
                .expect("host");
            store.seen(id, 100 + i as i64);
        }
        // A pending time older than the stored one never moves it back.
        store
            .conn()
            .execute("UPDATE hosts SET last_seen = 1000 WHERE id = ?1", [&ids[6]])
            .expect("newer");
        assert_eq!(store.flush_seen_in(3).expect("flush"), 7);
        for (i, id) in ids.iter().enumerate().take(6) {
            assert_eq!(stored(id), 100 + i as i64, "{id}");
        }
        assert_eq!(stored(&ids[6]), 1000);
        assert_eq!(store.pending.len(), 0);
        assert_eq!(store.flush_seen_in(3).expect("nothing to flush"), 0);
    }
}
