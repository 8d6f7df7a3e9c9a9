//! Reads for browsing the fleet (the web console): a page of hosts in keyset
//! order without their configs, the hosts a token enrolled, a host's
//! certificates. Rows come through the same `host_row` as every other read.

use rusqlite::{params, Connection};

use super::hosts::{host_row, HOST_COLUMNS};
use super::{HostRecord, Store, StoreError};

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
fn light_columns() -> String {
    HOST_COLUMNS
        .replacen("config,", "'' AS config,", 1)
        .replacen(" targets,", " '[]' AS targets,", 1)
}

impl Store {
    /// Up to `limit` hosts after `after` in `sort` order that `keep`
    /// accepts (decommissioned ones only with `all`), without configs.
    /// Rows are read in index order and stop as soon as the page is full.
    pub fn host_page(
        &self,
        sort: HostSort,
        after: Option<&Cursor>,
        all: bool,
        limit: usize,
        mut keep: impl FnMut(&HostRecord) -> bool,
    ) -> Result<HostPage, StoreError> {
        let conn = self.conn();
        let active = if all {
            ""
        } else {
            "AND decommissioned_at IS NULL"
        };
        let (order, seek) = match sort {
            HostSort::Id => ("id", "(?1 IS NULL OR id > ?2)"),
            HostSort::LastSeen => (
                "last_seen DESC, id DESC",
                "(?1 IS NULL OR last_seen < ?1 OR (last_seen = ?1 AND id < ?2))",
            ),
            HostSort::Enrolled => (
                "enrolled_at DESC, id DESC",
                "(?1 IS NULL OR enrolled_at < ?1 OR (enrolled_at = ?1 AND id < ?2))",
            ),
        };
        let mut stmt = conn.prepare(&format!(
            "SELECT {} FROM hosts WHERE {seek} {active} ORDER BY {order}",
            light_columns()
        ))?;
        let (key, id) = match after {
            Some(c) => (Some(c.key), Some(c.id.as_str())),
            // ?1 NULL means "from the start" for every order.
            None => (None, None),
        };
        // `Id` seeks on the id alone; keep ?1 non-NULL so the id applies.
        let key = match (sort, after) {
            (HostSort::Id, Some(_)) => Some(0),
            _ => key,
        };
        let mut rows = stmt.query(params![key, id])?;
        let mut hosts = Vec::new();
        while let Some(row) = rows.next()? {
            let host = host_row(row)??;
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

    /// Every host (decommissioned too) without configs, for counting.
    pub fn hosts_light(&self) -> Result<Vec<HostRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {} FROM hosts ORDER BY id",
            light_columns()
        ))?;
        let rows = stmt.query_map([], host_row)?;
        rows.map(|r| r?).collect()
    }

    /// Ids of the hosts that enrolled with enrollment token `token_id`.
    pub fn hosts_enrolled_with(&self, token_id: &str) -> Result<Vec<HostRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {} FROM hosts WHERE id IN
               (SELECT host_id FROM enrollments WHERE token_id = ?1) ORDER BY enrolled_at, id",
            light_columns()
        ))?;
        let rows = stmt.query_map([token_id], host_row)?;
        rows.map(|r| r?).collect()
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
    let mut stmt = conn.prepare(
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
