//! Reads for browsing the fleet (the web console): a page of hosts in keyset
//! order without their configs, the hosts a token enrolled, a host's
//! certificates, a config by its hash (the `configs` history). Rows come
//! through the same `host_row` as every other read.

use rusqlite::{params, Connection, OptionalExtension};

use super::hosts::{host_row, HOST_COLUMNS};
use super::{HostRecord, Store, StoreError};
use crate::admin_wire::HostState;

/// The order of a host page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostSort {
    /// By host id (which starts with the hostname), ascending.
    Id,
    /// Most recently seen first.
    LastSeen,
    /// Most recently enrolled first.
    Enrolled,
}

impl HostSort {
    pub fn parse(text: &str) -> Option<HostSort> {
        match text {
            "id" => Some(HostSort::Id),
            "last_seen" => Some(HostSort::LastSeen),
            "enrolled" => Some(HostSort::Enrolled),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            HostSort::Id => "id",
            HostSort::LastSeen => "last_seen",
            HostSort::Enrolled => "enrolled",
        }
    }

    /// The sort key of a host (0 for `Id`, which sorts by id alone).
    pub fn key(self, host: &HostRecord) -> i64 {
        match self {
            HostSort::Id => 0,
            HostSort::LastSeen => host.last_seen,
            HostSort::Enrolled => host.enrolled_at,
        }
    }
}

/// Which hosts a page lists by state, narrowed in SQL through the covering
/// index `hosts_states` (the page still checks each host's shown state, as
/// check-ins not yet written can make a host stale in the database fresh).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StateFilter {
    /// Hosts shown in this state (neither `stale` nor `pending`).
    Shown(HostState),
    /// Active hosts last seen before this time (Unix seconds): `stale`.
    SeenBefore(i64),
    /// Active hosts that applied a config, not the one rendered now.
    Drift,
}

impl StateFilter {
    /// The condition, over `hosts_states`' columns, that every host the
    /// filter keeps meets (a host stale in the database is kept for every
    /// other state: a pending check-in may make it fresh).
    fn condition(self) -> String {
        const ACTIVE: &str = "decommissioned_at IS NULL";
        match self {
            StateFilter::Shown(HostState::Decommissioned) => "decommissioned_at IS NOT NULL".into(),
            StateFilter::Shown(HostState::ConfigApplied) => {
                format!("{ACTIVE} AND state = 'config_applied' AND scrape_state IS NULL")
            }
            StateFilter::Shown(s @ (HostState::ScrapeOk | HostState::ScrapeFailing)) => format!(
                "{ACTIVE} AND state = 'config_applied' AND scrape_state = '{}'",
                s.as_str()
            ),
            StateFilter::Shown(s @ (HostState::Enrolled | HostState::ConfigFailed)) => {
                format!("{ACTIVE} AND state = '{}'", s.as_str())
            }
            StateFilter::Shown(HostState::Pending | HostState::Stale) => "FALSE".into(),
            StateFilter::SeenBefore(t) => format!("{ACTIVE} AND last_seen < {t}"),
            // The index's own expression, compared: so the index covers it.
            StateFilter::Drift => format!(
                "{ACTIVE} AND state = 'config_applied' AND (applied_hash IS rendered_hash) = 0"
            ),
        }
    }
}

/// Where a page starts: after the host with this key and id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cursor {
    pub key: i64,
    pub id: String,
}

/// One page of hosts, and whether more follow.
pub struct HostPage {
    pub hosts: Vec<HostRecord>,
    pub more: bool,
}

/// Columns of `HOST_COLUMNS` with the config and target groups left out:
/// a list never shows them, and they are most of a row.
pub(super) fn light_columns() -> String {
    HOST_COLUMNS
        .replacen("config,", "'' AS config,", 1)
        .replacen(" targets,", " '[]' AS targets,", 1)
}

/// The query of a host page. Each order reads an index (the primary key,
/// `hosts_last_seen`, `hosts_enrolled`) from the cursor on, so a deep page
/// costs what the first one does and neither sorts the table. A state
/// filter is a set of rowids read once from `hosts_states` alone (named:
/// SQLite would rather range over `hosts_last_seen` for stale hosts and
/// read each one's row; `+rowid`: the order's index still drives), so hosts
/// in other states are passed over in the index without their rows read.
fn page_query(sort: HostSort, after: bool, all: bool, state: Option<StateFilter>) -> String {
    let (order, seek) = match sort {
        HostSort::Id => ("id", "id > ?1"),
        HostSort::LastSeen => ("last_seen DESC, id DESC", "(last_seen, id) < (?1, ?2)"),
        HostSort::Enrolled => ("enrolled_at DESC, id DESC", "(enrolled_at, id) < (?1, ?2)"),
    };
    let seek = if after { seek } else { "TRUE" };
    let filter = match state {
        // The state says whether the host is decommissioned.
        Some(state) => format!(
            "AND +rowid IN (SELECT rowid FROM hosts INDEXED BY hosts_states WHERE {})",
            state.condition()
        ),
        None if all => String::new(),
        None => "AND decommissioned_at IS NULL".into(),
    };
    format!(
        "SELECT {} FROM hosts WHERE {seek} {filter} ORDER BY {order}",
        light_columns()
    )
}

impl Store {
    /// Up to `limit` hosts after `after` in `sort` order that `state` may
    /// keep and `keep` accepts (decommissioned ones only with `all`, or
    /// when `state` asks for them), without configs. Rows are read in index
    /// order and stop as soon as the page is full.
    pub fn host_page(
        &self,
        sort: HostSort,
        after: Option<&Cursor>,
        all: bool,
        state: Option<StateFilter>,
        limit: usize,
        mut keep: impl FnMut(&HostRecord) -> bool,
    ) -> Result<HostPage, StoreError> {
        if sort == HostSort::LastSeen {
            // The order is the database's: write pending check-ins first
            // (if that fails, the page is in slightly older order).
            if let Err(e) = self.flush_seen() {
                tracing::warn!(error = %e, "cannot write check-in times before listing hosts");
            }
        }
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&page_query(sort, after.is_some(), all, state))?;
        let mut rows = match after {
            // `Id` has no ?1: its key is always 0.
            Some(c) if sort == HostSort::Id => stmt.query(params![c.id])?,
            Some(c) => stmt.query(params![c.key, c.id])?,
            None => stmt.query([])?,
        };
        let mut hosts = Vec::new();
        while let Some(row) = rows.next()? {
            let host = self.pending.overlay(host_row(row)??);
            if !keep(&host) {
                continue;
            }
            if hosts.len() == limit {
                return Ok(HostPage { hosts, more: true });
            }
            hosts.push(host);
        }
        Ok(HostPage { hosts, more: false })
    }

    /// Every host (decommissioned too) without configs: what the tests
    /// check pages and counts against.
    #[cfg(test)]
    pub fn hosts_light(&self) -> Result<Vec<HostRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {} FROM hosts ORDER BY id",
            light_columns()
        ))?;
        let rows = stmt.query_map([], host_row)?;
        rows.map(|r| Ok(self.pending.overlay(r??))).collect()
    }

    /// Ids of the hosts that enrolled with enrollment token `token_id`.
    pub fn hosts_enrolled_with(&self, token_id: &str) -> Result<Vec<HostRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {} FROM hosts WHERE id IN
               (SELECT host_id FROM enrollments WHERE token_id = ?1) ORDER BY enrolled_at, id",
            light_columns()
        ))?;
        let rows = stmt.query_map([token_id], host_row)?;
        rows.map(|r| Ok(self.pending.overlay(r??))).collect()
    }

    /// The text of a config some host renders or runs, by its hash (`None`
    /// once no host names it, or for a hash from before the history).
    pub fn config_by_hash(&self, hash: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn()
            .prepare_cached("SELECT config FROM configs WHERE hash = ?1")?
            .query_row([hash], |r| r.get(0))
            .optional()?)
    }

    /// A host's certificates, newest first.
    pub fn host_certs(&self, host_id: &str) -> Result<Vec<HostCert>, StoreError> {
        certs(&self.conn(), host_id)
    }
}

/// One certificate issued to a host.
#[derive(Clone, Debug, serde::Serialize)]
pub struct HostCert {
    pub serial: String,
    pub fingerprint: String,
    pub issued_at: i64,
    pub not_after: i64,
    pub revoked_at: Option<i64>,
}

fn certs(conn: &Connection, host_id: &str) -> Result<Vec<HostCert>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT serial, fingerprint, issued_at, not_after, revoked_at FROM certs
         WHERE host_id = ?1 ORDER BY issued_at DESC, serial",
    )?;
    let rows = stmt.query_map([host_id], |r| {
        Ok(HostCert {
            serial: r.get(0)?,
            fingerprint: r.get(1)?,
            issued_at: r.get(2)?,
            not_after: r.get(3)?,
            revoked_at: r.get(4)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store_with_hosts(n: usize) -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("muster.db")).expect("store");
        {
            let conn = store.conn();
            let facts = serde_json::json!({
                "hostname": "web", "machine_id": "m", "os": "linux", "arch": "x86_64",
                "scrape_address": "10.0.0.5:12345", "agent_version": "0.1.0",
            })
            .to_string();
            for i in 0..n {
                // Ties on both keys, so the id has to break them.
                conn.execute(
                    "INSERT INTO hosts (id, machine_id, public_key_sha256, facts, labels, state,
                     config, rendered_hash, targets, enrolled_at, last_seen, cert_expires_at,
                     decommissioned_at)
                     VALUES (?1, ?2, 'k', ?6, '{}', 'enrolled', '', 'h', '[]', ?3, ?4, 1, ?5)",
                    params![
                        format!("web-{i:03}-abc"),
                        format!("m{i}"),
                        (i / 3) as i64,
                        (i % 7) as i64,
                        (i % 10 == 0).then_some(1),
                        facts,
                    ],
                )
                .expect("host");
            }
        }
        (dir, store)
    }

    /// The ids of every page of `sort`, `limit` at a time, each page
    /// starting after the last one's final host.
    fn walk(
        store: &Store,
        sort: HostSort,
        all: bool,
        state: Option<StateFilter>,
        limit: usize,
        mut keep: impl FnMut(&HostRecord) -> bool,
    ) -> Vec<String> {
        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let page = store
                .host_page(sort, after.as_ref(), all, state, limit, &mut keep)
                .expect("page");
            seen.extend(page.hosts.iter().map(|h| h.id.clone()));
            if !page.more {
                return seen;
            }
            let last = page.hosts.last().expect("a full page");
            after = Some(Cursor {
                key: sort.key(last),
                id: last.id.clone(),
            });
        }
    }

    #[test]
    fn pages_walk_every_order_without_gaps_or_repeats() {
        let (_dir, store) = store_with_hosts(120);
        for sort in [HostSort::Id, HostSort::LastSeen, HostSort::Enrolled] {
            for all in [false, true] {
                let mut expected: Vec<HostRecord> = store
                    .hosts_light()
                    .expect("hosts")
                    .into_iter()
                    .filter(|h| all || h.lifecycle.decommissioned_at.is_none())
                    .collect();
                expected.sort_by(|a, b| match sort {
                    HostSort::Id => a.id.cmp(&b.id),
                    _ => (sort.key(b), &b.id).cmp(&(sort.key(a), &a.id)),
                });
                let seen = walk(&store, sort, all, None, 25, |_| true);
                let want: Vec<String> = expected.iter().map(|h| h.id.clone()).collect();
                assert_eq!(seen, want, "{sort:?}, all={all}");
            }
        }
    }

    #[test]
    fn every_page_reads_an_index_in_order() {
        let (_dir, store) = store_with_hosts(3);
        let conn = store.conn();
        for sort in [HostSort::Id, HostSort::LastSeen, HostSort::Enrolled] {
            for after in [false, true] {
                let sql = page_query(sort, after, false, None);
                let mut stmt = conn
                    .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                    .expect("explain");
                let unbound = rusqlite::params_from_iter(std::iter::repeat_n(
                    rusqlite::types::Null,
                    stmt.parameter_count(),
                ));
                let plan: Vec<String> = stmt
                    .query_map(unbound, |r| r.get(3))
                    .expect("plan")
                    .map(|r| r.expect("row"))
                    .collect();
                let plan = plan.join("; ");
                assert!(!plan.contains("TEMP B-TREE"), "{sort:?} sorts: {plan}");
                assert!(plan.contains("INDEX"), "{sort:?} reads no index: {plan}");
            }
        }
    }

    #[test]
    fn state_filters_page_like_the_shown_state_through_hosts_states() {
        use crate::store::hosts::headline;
        const NOW: i64 = 1000;
        const STALE_AFTER: i64 = 300;
        let (_dir, store) = store_with_hosts(120);
        {
            let conn = store.conn();
            // States, scrape results, applied configs and check-ins spread
            // over the hosts (last_seen 0..6 from the fixture: stale at NOW).
            conn.execute_batch(
                "UPDATE hosts SET state = 'config_applied', applied_hash = 'h'
                   WHERE CAST(substr(id, 5, 3) AS INTEGER) % 3 = 1;
                 UPDATE hosts SET state = 'config_failed'
                   WHERE CAST(substr(id, 5, 3) AS INTEGER) % 3 = 2;
                 UPDATE hosts SET scrape_state = 'scrape_ok'
                   WHERE CAST(substr(id, 5, 3) AS INTEGER) % 4 = 1;
                 UPDATE hosts SET scrape_state = 'scrape_failing'
                   WHERE CAST(substr(id, 5, 3) AS INTEGER) % 4 = 2;
                 UPDATE hosts SET applied_hash = 'old'
                   WHERE CAST(substr(id, 5, 3) AS INTEGER) % 5 = 1;
                 UPDATE hosts SET last_seen = 990
                   WHERE CAST(substr(id, 5, 3) AS INTEGER) % 2 = 0;",
            )
            .expect("spread");
        }
        // Stale in the database, seen since in memory.
        for i in [1, 7, 13, 25, 61] {
            store.seen(&format!("web-{i:03}-abc"), NOW - 1);
        }
        let every = store.hosts_light().expect("hosts");
        let drifting = |h: &HostRecord| {
            h.is_active()
                && h.state == HostState::ConfigApplied
                && h.applied_hash.as_deref() != Some(h.rendered_hash.as_str())
        };
        let mut filters: Vec<StateFilter> = HostState::ALL[1..]
            .iter()
            .filter(|s| **s != HostState::Stale)
            .map(|s| StateFilter::Shown(*s))
            .collect();
        filters.extend([
            StateFilter::SeenBefore(NOW - STALE_AFTER),
            StateFilter::Drift,
        ]);
        for filter in filters {
            let wanted = |h: &HostRecord| match filter {
                StateFilter::Shown(s) => headline(h, NOW, STALE_AFTER) == s,
                StateFilter::SeenBefore(_) => headline(h, NOW, STALE_AFTER) == HostState::Stale,
                StateFilter::Drift => drifting(h),
            };
            let all = filter == StateFilter::Shown(HostState::Decommissioned);
            for sort in [HostSort::Id, HostSort::LastSeen, HostSort::Enrolled] {
                let mut expected: Vec<&HostRecord> = every.iter().filter(|h| wanted(h)).collect();
                expected.sort_by(|a, b| match sort {
                    HostSort::Id => a.id.cmp(&b.id),
                    _ => (sort.key(b), &b.id).cmp(&(sort.key(a), &a.id)),
                });
                let seen = walk(&store, sort, all, Some(filter), 7, |h| wanted(h));
                let want: Vec<String> = expected.iter().map(|h| h.id.clone()).collect();
                assert!(!want.is_empty(), "{filter:?}: the fixture has such hosts");
                assert_eq!(seen, want, "{filter:?}, {sort:?}");
                let sql = page_query(sort, true, all, Some(filter));
                let plan = store.query_plan(&sql).join("; ");
                assert!(
                    plan.contains("LIST SUBQUERY")
                        && plan.contains("USING COVERING INDEX hosts_states"),
                    "{filter:?}: {plan}"
                );
                assert!(!plan.contains("TEMP B-TREE"), "{filter:?} sorts: {plan}");
            }
        }
    }
}
