//! What the console's overview and `/metrics` count: hosts by the state
//! operators see, rollout and drift, counted in SQL over the covering index
//! `hosts_states` (no host row is read), and the hosts that need attention,
//! read through indexes a bounded number at a time. Check-in times not yet
//! written ([`super::seen`]) are merged in while the connection is held, so
//! the counts agree with what the hosts page shows.

use std::collections::{BTreeMap, HashSet};

use rusqlite::params;

use super::hosts::{headline_of, host_row};
use super::{HostRecord, Store, StoreError};
use crate::admin_wire::HostState;

/// Hosts by state, rollout and drift at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StateCounts {
    /// Every host by the state `hosts list` and the hosts page show
    /// (decommissioned included; no state appears with 0).
    pub by_state: BTreeMap<HostState, u64>,
    /// Active hosts whose applied config is the rendered one.
    pub current: u64,
    /// Active hosts with a rendered config they have not applied (yet).
    pub outdated: u64,
    /// Active hosts that applied a config, but not the one rendered for
    /// them now (a subset of `outdated`).
    pub drift: u64,
}

impl StateCounts {
    pub fn of(&self, state: HostState) -> u64 {
        self.by_state.get(&state).copied().unwrap_or(0)
    }

    fn add(&mut self, state: HostState, n: u64) {
        if n > 0 {
            *self.by_state.entry(state).or_insert(0) += n;
        }
    }

    fn take(&mut self, state: HostState, n: u64) {
        if let Some(count) = self.by_state.get_mut(&state) {
            *count = count.saturating_sub(n);
            if *count == 0 {
                self.by_state.remove(&state);
            }
        }
    }
}

/// One pass over `hosts_states` (state, scrape_state, decommissioned_at,
/// last_seen, applied_hash IS rendered_hash): grouped by its first two
/// columns, so the groups come in index order and nothing is sorted.
const COUNT_SQL: &str = "SELECT state, scrape_state, count(*),
        sum(decommissioned_at IS NOT NULL),
        sum(decommissioned_at IS NULL AND last_seen < ?1),
        sum(decommissioned_at IS NULL AND applied_hash IS rendered_hash)
     FROM hosts GROUP BY state, scrape_state";

/// Active hosts stale in the database among `?2` (a JSON array of ids).
const SEEN_SINCE_SQL: &str = "SELECT state, scrape_state FROM hosts
     WHERE id IN (SELECT value FROM json_each(?2))
       AND decommissioned_at IS NULL AND last_seen < ?1";

/// Active hosts with a failed config, failing scrapes or drift, by id:
/// the partial index `hosts_attention` holds exactly these (named, because
/// without statistics SQLite would rather search `hosts_states` for every
/// `config_applied` host).
const TROUBLED_SQL: &str =
    "INDEXED BY hosts_attention WHERE decommissioned_at IS NULL AND (state = 'config_failed'
        OR (state = 'config_applied'
            AND (scrape_state = 'scrape_failing' OR applied_hash IS NOT rendered_hash)))
     ORDER BY id";

/// Active hosts not seen since `?1`, most recently seen first
/// (`hosts_last_seen` read backwards).
const STALE_SQL: &str = "WHERE last_seen < ?1 AND decommissioned_at IS NULL
     ORDER BY last_seen DESC, id DESC";

/// A counting row's stored state (column 0) and scrape check (column 1).
fn state_and_scrape(r: &rusqlite::Row<'_>) -> Result<(HostState, Option<HostState>), StoreError> {
    use super::monitoring::parse_state;
    let state = parse_state(&r.get::<_, String>(0)?)?;
    let scrape = r
        .get::<_, Option<String>>(1)?
        .as_deref()
        .map(parse_state)
        .transpose()?;
    Ok((state, scrape))
}

impl Store {
    /// Hosts by state at `now` (stale: not seen for more than
    /// `stale_after` seconds), rollout and drift.
    pub fn state_counts(&self, now: i64, stale_after: i64) -> Result<StateCounts, StoreError> {
        // Held throughout: no flush of check-in times runs in between.
        let conn = self.conn();
        let seen_by = now - stale_after;
        let mut counts = StateCounts::default();
        let mut stmt = conn.prepare_cached(COUNT_SQL)?;
        let mut rows = stmt.query([seen_by])?;
        while let Some(r) = rows.next()? {
            let (state, scrape) = state_and_scrape(r)?;
            let [all, decommissioned, stale, current]: [u64; 4] =
                [r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?];
            let active = all - decommissioned;
            counts.add(HostState::Decommissioned, decommissioned);
            counts.add(HostState::Stale, stale);
            let fresh = headline_of(false, now, state, scrape, now, stale_after);
            counts.add(fresh, active - stale);
            counts.current += current;
            counts.outdated += active - current;
            if state == HostState::ConfigApplied {
                counts.drift += active - current;
            }
        }
        // Hosts whose check-in since is still in memory: stale in the
        // database, not on the hosts page.
        let fresh_ids: Vec<String> = self.pending.seen_since(seen_by);
        if !fresh_ids.is_empty() {
            let ids = serde_json::to_string(&fresh_ids).expect("ids serialize");
            let mut stmt = conn.prepare_cached(SEEN_SINCE_SQL)?;
            let mut rows = stmt.query(params![seen_by, ids])?;
            while let Some(r) = rows.next()? {
                let (state, scrape) = state_and_scrape(r)?;
                counts.take(HostState::Stale, 1);
                counts.add(headline_of(false, now, state, scrape, now, stale_after), 1);
            }
        }
        Ok(counts)
    }

    /// Up to `limit` active hosts that need attention at `now`: a failed
    /// config, failing scrapes or drift (by id), then stale ones (most
    /// recently seen first). Without configs; rows are read through indexes
    /// and stop once the list is full.
    pub fn needs_attention(
        &self,
        now: i64,
        stale_after: i64,
        limit: usize,
    ) -> Result<Vec<HostRecord>, StoreError> {
        let conn = self.conn();
        let seen_by = now - stale_after;
        let columns = super::browse::light_columns();
        let mut hosts: Vec<HostRecord> = Vec::new();
        let mut stmt =
            conn.prepare_cached(&format!("SELECT {columns} FROM hosts {TROUBLED_SQL}"))?;
        let mut rows = stmt.query([])?;
        while hosts.len() < limit {
            let Some(row) = rows.next()? else { break };
            hosts.push(self.pending.overlay(host_row(row)??));
        }
        let listed: HashSet<String> = hosts.iter().map(|h| h.id.clone()).collect();
        let mut stmt = conn.prepare_cached(&format!("SELECT {columns} FROM hosts {STALE_SQL}"))?;
        let mut rows = stmt.query([seen_by])?;
        while hosts.len() < limit {
            let Some(row) = rows.next()? else { break };
            let host = self.pending.overlay(host_row(row)??);
            // Seen since, in memory only: not stale.
            if host.last_seen >= seen_by || listed.contains(&host.id) {
                continue;
            }
            hosts.push(host);
        }
        Ok(hosts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::hosts::headline;

    const NOW: i64 = 1_000_000;
    const STALE_AFTER: i64 = 300;

    /// Hosts in every combination the counts tell apart: stored state,
    /// scrape check, applied config (none, current, older), seen recently or
    /// long ago, decommissioned or not.
    fn fleet() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("muster.db")).expect("store");
        let facts = serde_json::json!({
            "hostname": "web", "machine_id": "m", "os": "linux", "arch": "x86_64",
            "scrape_address": "10.0.0.5:12345", "agent_version": "0.1.0",
        })
        .to_string();
        let conn = store.conn();
        let mut n = 0;
        for state in ["enrolled", "config_applied", "config_failed"] {
            for scrape in [None, Some("scrape_ok"), Some("scrape_failing")] {
                for applied in [None, Some("h"), Some("old")] {
                    for last_seen in [NOW - 10, NOW - 1000] {
                        for decommissioned in [None, Some(NOW - 5)] {
                            n += 1;
                            conn.execute(
                                "INSERT INTO hosts (id, machine_id, public_key_sha256, facts,
                                 labels, state, config, rendered_hash, targets, enrolled_at,
                                 last_seen, cert_expires_at, decommissioned_at, scrape_state,
                                 applied_hash)
                                 VALUES (?1, ?2, 'k', ?3, '{}', ?4, '', 'h', '[]', 0, ?5, 1,
                                 ?6, ?7, ?8)",
                                params![
                                    format!("web-{n:03}"),
                                    format!("m{n}"),
                                    facts,
                                    state,
                                    last_seen,
                                    decommissioned,
                                    scrape,
                                    applied
                                ],
                            )
                            .expect("host");
                        }
                    }
                }
            }
        }
        drop(conn);
        (dir, store)
    }

    /// The counts as the hosts page sees them: every host read, pending
    /// check-ins overlaid, its headline state computed in Rust.
    fn counted_one_by_one(store: &Store) -> StateCounts {
        let mut want = StateCounts::default();
        for h in store.hosts_light().expect("hosts") {
            want.add(headline(&h, NOW, STALE_AFTER), 1);
            if h.is_active() {
                if h.applied_hash.as_deref() == Some(h.rendered_hash.as_str()) {
                    want.current += 1;
                } else {
                    want.outdated += 1;
                    if h.state == HostState::ConfigApplied {
                        want.drift += 1;
                    }
                }
            }
        }
        want
    }

    #[test]
    fn counts_in_sql_agree_with_the_hosts_page_including_unwritten_check_ins() {
        let (_dir, store) = fleet();
        let counts = store.state_counts(NOW, STALE_AFTER).expect("counts");
        assert_eq!(counts, counted_one_by_one(&store));
        assert!(
            counts.of(HostState::Stale) > 0 && counts.drift > 0,
            "{counts:?}"
        );
        // Check-ins kept in memory: stale hosts seen again, and one seen
        // long ago (still stale).
        for id in ["web-003", "web-015", "web-027", "web-051"] {
            store.seen(id, NOW - 1);
        }
        store.seen("web-007", NOW - 900);
        let seen = store.state_counts(NOW, STALE_AFTER).expect("counts");
        assert_eq!(seen, counted_one_by_one(&store));
        assert_eq!(
            seen.of(HostState::Stale),
            counts.of(HostState::Stale) - 4,
            "{seen:?}"
        );
        // Written: the same counts.
        store.flush_seen().expect("flush");
        assert_eq!(store.state_counts(NOW, STALE_AFTER).expect("counts"), seen);
    }

    #[test]
    fn needs_attention_is_bounded_and_leaves_out_hosts_seen_since() {
        let (_dir, store) = fleet();
        let troubled = |h: &HostRecord| {
            let state = headline(h, NOW, STALE_AFTER);
            h.is_active()
                && (matches!(
                    state,
                    HostState::ConfigFailed | HostState::ScrapeFailing | HostState::Stale
                ) || (h.state == HostState::ConfigApplied
                    && h.applied_hash.as_deref() != Some(h.rendered_hash.as_str())))
        };
        let every: Vec<HostRecord> = store.hosts_light().expect("hosts");
        let mut want: Vec<String> = every
            .iter()
            .filter(|h| troubled(h))
            .map(|h| h.id.clone())
            .collect();
        want.sort();
        let mut all: Vec<String> = store
            .needs_attention(NOW, STALE_AFTER, 1000)
            .expect("attention")
            .into_iter()
            .map(|h| h.id)
            .collect();
        all.sort();
        assert_eq!(all, want);
        assert_eq!(
            store
                .needs_attention(NOW, STALE_AFTER, 5)
                .expect("few")
                .len(),
            5
        );
        // A stale enrolled host seen since (in memory) needs nothing.
        let quiet = every
            .iter()
            .find(|h| {
                h.is_active() && h.state == HostState::Enrolled && h.last_seen < NOW - STALE_AFTER
            })
            .expect("a stale enrolled host");
        store.seen(&quiet.id, NOW);
        let listed = store
            .needs_attention(NOW, STALE_AFTER, 1000)
            .expect("again");
        assert!(listed.iter().all(|h| h.id != quiet.id));
        assert_eq!(listed.len(), want.len() - 1);
    }

    #[test]
    fn counts_and_attention_read_indexes_only() {
        let (_dir, store) = fleet();
        let columns = super::super::browse::light_columns();
        for (sql, index) in [
            (COUNT_SQL.to_string(), "COVERING INDEX hosts_states"),
            (SEEN_SINCE_SQL.to_string(), "sqlite_autoindex_hosts_1"),
            (
                format!("SELECT {columns} FROM hosts {TROUBLED_SQL}"),
                "INDEX hosts_attention",
            ),
            (
                format!("SELECT {columns} FROM hosts {STALE_SQL}"),
                "INDEX hosts_last_seen",
            ),
        ] {
            let plan = store.query_plan(&sql).join("; ");
            assert!(plan.contains(index), "{sql}\n  -> {plan}");
            assert!(!plan.contains("TEMP B-TREE"), "{sql} sorts: {plan}");
            assert!(
                !plan.contains("SCAN hosts;") && !plan.ends_with("SCAN hosts"),
                "{sql} reads every host: {plan}"
            );
        }
    }
}
