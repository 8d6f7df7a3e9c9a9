//! The reconciler owns everything derived from the database on disk: the
//! Prometheus `file_sd` target files, and the coalesced Prometheus reload.
//! The store says what each file should hold (an active host's targets;
//! nothing live for a decommissioned one); the reconciler makes the
//! targets dir match. Writes are serialized (one lock), each through a
//! temp file with a unique name; stray temp files are removed at start; a
//! host whose file cannot be brought in line (disk full, unwritable dir)
//! is *drifting*: logged, counted, shown by `hosts show`/`hosts list`, and
//! retried with backoff until it is written. A full pass when the
//! background task starts (after the server listens) and every
//! [`FULL_PASS`] also repairs files changed or removed behind the server's
//! back. An enrollment's file is queued ([`Reconciler::queue`]) and
//! written by the background task with those queued meanwhile; the files
//! a queue run or a page of a full pass writes share one fsync of the
//! directory. `muster-server targets sync
//! [--check]` runs the same comparison offline.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::metrics::Metrics;
use crate::store::{HostRecord, Store, StoreError};
use crate::targets::{self, Reloader};

/// How often every file is compared with the database.
pub const FULL_PASS: Duration = Duration::from_secs(60);
/// First retry of a drifting host; doubled per failure up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_millis(500);
pub const MAX_BACKOFF: Duration = Duration::from_secs(8);
/// Hosts read from the store at a time by a full pass (and by `targets
/// sync`).
pub const PAGE: usize = 1000;

/// What a host's file needed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileChange {
    /// It already held the right bytes (or was already retired).
    Unchanged,
    Written,
    /// A decommissioned host's live file was renamed to this.
    Retired(String),
}

/// A host whose file does not match the database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Drift {
    /// Why the last attempt failed.
    pub error: String,
    /// Unix seconds of the first failure.
    pub since: i64,
    attempts: u32,
    next_try: Instant,
}

/// One difference between the targets dir and the database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Difference {
    Missing(String),
    Differs(String),
    /// A decommissioned host's file is still live.
    NotRetired(String),
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Difference::Missing(id) => write!(f, "missing   {id}.json"),
            Difference::Differs(id) => write!(f, "differs   {id}.json"),
            Difference::NotRetired(id) => write!(f, "live      {id}.json (host decommissioned)"),
        }
    }
}

fn unix(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Whether `name` is one of our temp files (`.<id>.json.tmp-...`).
fn is_temp(name: &str) -> bool {
    name.starts_with('.') && name.contains(".json.tmp-")
}

/// Whether a temp file's name carries the pid of a running process (a
/// writer mid-write: the server, or another `targets sync`).
pub fn temp_of_live_process(name: &str) -> bool {
    name.rsplit_once(".json.tmp-")
        .and_then(|(_, rest)| rest.split('-').next())
        .and_then(|pid| pid.parse::<u32>().ok())
        .is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists())
}

/// Removes leftover temp files (a crash between create and rename);
/// their names.
pub fn remove_stray_temps(dir: &Path) -> std::io::Result<Vec<String>> {
    let names = temp_files(dir)?;
    for name in &names {
        std::fs::remove_file(dir.join(name))?;
    }
    Ok(names)
}

/// Brings one host's file in line with its record, without the
/// directory's fsync: the caller runs [`targets::sync_dir`] once after the
/// files it changed.
pub fn sync_file(dir: &Path, host: &HostRecord) -> std::io::Result<FileChange> {
    if host.is_active() {
        return Ok(if targets::write_host(dir, host)? {
            FileChange::Written
        } else {
            FileChange::Unchanged
        });
    }
    Ok(
        match targets::retire_host(dir, &host.id, decommissioned_at(host))? {
            Some(path) => FileChange::Retired(file_name(&path)),
            None => FileChange::Unchanged,
        },
    )
}

/// When `host` was decommissioned (its retired file's name says so).
fn decommissioned_at(host: &HostRecord) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(host.lifecycle.decommissioned_at.unwrap_or(0).max(0) as u64)
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// How `host`'s file in `dir` differs from its record, if it does
/// (decommissioned hosts included; [`temp_files`] lists the other files
/// that differ).
pub fn difference(dir: &Path, host: &HostRecord) -> std::io::Result<Option<Difference>> {
    let Some(path) = targets::path_for(dir, &host.id) else {
        return Ok(None);
    };
    let on_disk = match std::fs::read(&path) {
        Ok(bytes) => Some(bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    let id = host.id.clone();
    Ok(match (host.is_active(), on_disk) {
        (true, None) => Some(Difference::Missing(id)),
        (true, Some(bytes)) if bytes != targets::file_sd(host).as_bytes() => {
            Some(Difference::Differs(id))
        }
        (false, Some(_)) => Some(Difference::NotRetired(id)),
        _ => None,
    })
}

/// The names of the temp files in `dir` (a writer's, or leftovers).
pub fn temp_files(dir: &Path) -> std::io::Result<Vec<String>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if is_temp(&name) {
            out.push(name);
        }
    }
    Ok(out)
}

struct Inner {
    store: Arc<Store>,
    dir: PathBuf,
    reloader: Reloader,
    /// Target file writes by outcome (`/metrics` reads the drifting hosts
    /// from [`Reconciler::drifting_hosts`]).
    metrics: Arc<Metrics>,
    /// Held for every file operation: writes never interleave.
    files: Mutex<()>,
    drift: Mutex<BTreeMap<String, Drift>>,
    /// Times a host started drifting.
    drift_events: AtomicU64,
    /// Hosts queued for the background task ([`Reconciler::queue`]).
    queued: Mutex<BTreeSet<String>>,
    /// Wakes the background task when a host is queued.
    wake: tokio::sync::Notify,
}

/// The handle handlers and start-up use; cheap to clone.
#[derive(Clone)]
pub struct Reconciler {
    inner: Arc<Inner>,
}

impl Reconciler {
    /// Removes stray temp files and makes a reconciler for `dir`. Call
    /// [`Reconciler::spawn`] (inside a tokio runtime) for retries and full
    /// passes.
    pub fn new(
        store: Arc<Store>,
        dir: PathBuf,
        reloader: Reloader,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Reconciler> {
        for name in remove_stray_temps(&dir)? {
            tracing::warn!(dir = %dir.display(), file = %name, "removed a leftover temp file");
        }
        Ok(Reconciler {
            inner: Arc::new(Inner {
                store,
                dir,
                reloader,
                metrics,
                files: Mutex::new(()),
                drift: Mutex::new(BTreeMap::new()),
                drift_events: AtomicU64::new(0),
                queued: Mutex::new(BTreeSet::new()),
                wake: tokio::sync::Notify::new(),
            }),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Starts the background task: a full pass at once (start-up does not
    /// wait for it: the server listens meanwhile, and a file it has not
    /// reached yet is repaired a little later), then writes queued hosts'
    /// files as soon as they are queued, retries drifting hosts when their
    /// backoff is up, and runs a full pass every [`FULL_PASS`].
    pub fn spawn(&self) {
        let me = self.clone();
        tokio::spawn(async move {
            let mut last_full: Option<tokio::time::Instant> = None;
            loop {
                let full = last_full.is_none_or(|t| t.elapsed() >= FULL_PASS);
                if full {
                    last_full = Some(tokio::time::Instant::now());
                }
                let worker = me.clone();
                let pass = tokio::task::spawn_blocking(move || {
                    worker.write_queued();
                    if full {
                        worker.full_pass()
                    } else {
                        worker.retry_due();
                        Ok(())
                    }
                })
                .await;
                match pass {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        tracing::error!(error = %e, "cannot read hosts for the target files")
                    }
                    Err(e) => tracing::error!(error = %e, "target file pass failed"),
                }
                tokio::select! {
                    _ = tokio::time::sleep(FIRST_BACKOFF) => {}
                    _ = me.inner.wake.notified() => {}
                }
            }
        });
    }

    /// Brings one host's file in line with what the store holds now (read
    /// under the file lock, so the last writer writes the newest state),
    /// and asks for a reload when it changed. Blocking.
    pub fn host_changed(&self, host_id: &str) -> Result<FileChange, String> {
        self.with_host(host_id, |host| self.sync_locked(host))
    }

    /// [`Reconciler::host_changed`] for a host just decommissioned: when
    /// it had no live file to retire (decommissioned before its
    /// enrollment's file was written, or the file was deleted), its retired
    /// file is written from the record, so the targets dir keeps every host
    /// ever enrolled. Full passes never do this: retired files an operator
    /// pruned stay pruned. Blocking.
    pub fn host_decommissioned(&self, host_id: &str) -> Result<FileChange, String> {
        self.with_host(host_id, |host| {
            let change = self.sync_locked(host)?;
            if change != FileChange::Unchanged || host.is_active() {
                return Ok(change);
            }
            match targets::write_retired(&self.inner.dir, host, decommissioned_at(host)) {
                Ok(Some(path)) => {
                    let name = file_name(&path);
                    tracing::info!(host = %host.id, file = %name, "wrote the retired target file of a host that had no live file");
                    Ok(FileChange::Retired(name))
                }
                Ok(None) => Ok(FileChange::Unchanged),
                Err(e) => {
                    self.inner.metrics.target_write(false);
                    tracing::error!(host = %host.id, dir = %self.inner.dir.display(), error = %e, "cannot write the retired target file");
                    Err(e.to_string())
                }
            }
        })
    }

    /// Runs `sync` on what the store holds now for `host_id` (read under
    /// the file lock, so the last writer writes the newest state), then
    /// fsyncs the directory if a file changed.
    fn with_host(
        &self,
        host_id: &str,
        sync: impl FnOnce(&HostRecord) -> Result<FileChange, String>,
    ) -> Result<FileChange, String> {
        let _files = self.inner.files.lock().unwrap_or_else(|p| p.into_inner());
        let host = match self.inner.store.host(host_id) {
            Ok(Some(host)) => host,
            Ok(None) => return Ok(FileChange::Unchanged),
            Err(e) => return Err(e.to_string()),
        };
        let change = sync(&host)?;
        if change != FileChange::Unchanged {
            self.sync_dir_locked(&[&host])?;
        }
        Ok(change)
    }

    /// Queues a host's file for the background task, which writes the
    /// files queued meanwhile together, off the async workers, with one
    /// directory fsync for all of them: an enrollment's answer does not
    /// wait for its file (a failure leaves the host drifting, retried).
    pub fn queue(&self, host_id: &str) {
        self.inner
            .queued
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(host_id.to_string());
        self.inner.wake.notify_one();
    }

    /// Writes the queued hosts' files, each as the store holds it now
    /// (read under the file lock), then fsyncs the directory once.
    /// Blocking; the background task and shutdown call it.
    pub fn write_queued(&self) {
        let queued =
            std::mem::take(&mut *self.inner.queued.lock().unwrap_or_else(|p| p.into_inner()));
        if queued.is_empty() {
            return;
        }
        let _files = self.inner.files.lock().unwrap_or_else(|p| p.into_inner());
        let mut hosts = Vec::with_capacity(queued.len());
        for id in &queued {
            match self.inner.store.host(id) {
                Ok(Some(host)) => hosts.push(host),
                Ok(None) => {}
                Err(e) => self.drifting(id, &e.to_string()),
            }
        }
        self.sync_batch_locked(&hosts);
    }

    /// Brings `hosts`' files in line, with one directory fsync after them;
    /// how many changed. Hold the file lock.
    fn sync_batch_locked(&self, hosts: &[HostRecord]) -> usize {
        let changed: Vec<&HostRecord> = hosts
            .iter()
            .filter(|host| {
                matches!(
                    self.sync_locked(host),
                    Ok(FileChange::Written | FileChange::Retired(_))
                )
            })
            .collect();
        if !changed.is_empty() {
            let _ = self.sync_dir_locked(&changed);
        }
        changed.len()
    }

    /// Fsyncs the directory after `changed` hosts' files were written or
    /// retired; if that fails, they are drifting. Hold the file lock.
    fn sync_dir_locked(&self, changed: &[&HostRecord]) -> Result<(), String> {
        targets::sync_dir(&self.inner.dir).map_err(|e| {
            let error = e.to_string();
            self.inner.metrics.target_write(false);
            for host in changed {
                self.drifting(&host.id, &error);
            }
            error
        })
    }

    /// Brings one host's file in line (the caller fsyncs the directory
    /// after a change). Hold the file lock.
    fn sync_locked(&self, host: &HostRecord) -> Result<FileChange, String> {
        match sync_file(&self.inner.dir, host) {
            Ok(change) => {
                self.settled(&host.id);
                if change == FileChange::Written {
                    self.inner.metrics.target_write(true);
                }
                match &change {
                    FileChange::Written => {
                        tracing::info!(host = %host.id, dir = %self.inner.dir.display(), "wrote target file");
                        self.inner.reloader.request();
                    }
                    FileChange::Retired(name) => {
                        tracing::info!(host = %host.id, file = %name, "retired target file");
                        // Prometheus sees the file go by itself; reloads wait
                        // a little (see `targets::QUIET_AFTER_REMOVAL`).
                        self.inner.reloader.removed();
                    }
                    FileChange::Unchanged => {}
                }
                Ok(change)
            }
            Err(e) => {
                let error = e.to_string();
                self.inner.metrics.target_write(false);
                self.drifting(&host.id, &error);
                Err(error)
            }
        }
    }

    fn settled(&self, host_id: &str) {
        let mut drift = self.inner.drift.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(d) = drift.remove(host_id) {
            tracing::info!(host = %host_id, after = d.attempts, "target file written after drifting");
        }
    }

    fn drifting(&self, host_id: &str, error: &str) {
        let mut drift = self.inner.drift.lock().unwrap_or_else(|p| p.into_inner());
        let entry = drift.entry(host_id.to_string()).or_insert_with(|| {
            self.inner.drift_events.fetch_add(1, Ordering::Relaxed);
            Drift {
                error: String::new(),
                since: unix(SystemTime::now()),
                attempts: 0,
                next_try: Instant::now(),
            }
        });
        entry.attempts += 1;
        entry.error = error.to_string();
        let backoff = FIRST_BACKOFF
            .saturating_mul(1 << entry.attempts.min(8))
            .min(MAX_BACKOFF);
        entry.next_try = Instant::now() + backoff;
        tracing::error!(host = %host_id, dir = %self.inner.dir.display(), error, attempts = entry.attempts, retry_in = ?backoff, "target file drifts from the database; retrying");
    }

    /// Retries the drifting hosts whose backoff is up.
    pub fn retry_due(&self) {
        let due: Vec<String> = {
            let drift = self.inner.drift.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            drift
                .iter()
                .filter(|(_, d)| d.next_try <= now)
                .map(|(id, _)| id.clone())
                .collect()
        };
        for id in due {
            let _ = self.host_changed(&id);
        }
    }

    /// Compares every host's file with the database and repairs what
    /// differs (when the background task starts, and every
    /// [`FULL_PASS`]). Hosts are read a page at a time under the file lock
    /// (the fleet is never held in memory, a page is never older than a
    /// change written meanwhile, and the store is free between pages), the
    /// directory is fsynced once per page.
    fn full_pass(&self) -> Result<(), StoreError> {
        let started = Instant::now();
        let mut after: Option<String> = None;
        let (mut seen, mut changed) = (0, 0);
        loop {
            let _files = self.inner.files.lock().unwrap_or_else(|p| p.into_inner());
            let page = self.inner.store.hosts_page(after.as_deref(), PAGE)?;
            let Some(last) = page.last() else { break };
            after = Some(last.id.clone());
            seen += page.len();
            changed += self.sync_batch_locked(&page);
        }
        tracing::debug!(hosts = seen, changed, took = ?started.elapsed(), "compared every target file with the database");
        if changed > 0 {
            tracing::info!(changed, dir = %self.inner.dir.display(), "synced target files");
        }
        Ok(())
    }

    /// Why a host's file does not match the database, if it does not.
    pub fn drift(&self, host_id: &str) -> Option<Drift> {
        self.inner
            .drift
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(host_id)
            .cloned()
    }

    /// Hosts drifting now.
    pub fn drifting_hosts(&self) -> usize {
        self.inner
            .drift
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    /// How many times a host started drifting since start-up.
    pub fn drift_events(&self) -> u64 {
        self.inner.drift_events.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_temp_names_count_as_temp_files() {
        assert!(is_temp(".web-01-abc.json.tmp-123-4"));
        assert!(!is_temp("web-01-abc.json"));
        assert!(!is_temp(".hidden"));
        assert!(!is_temp("web-01-abc.json.deleted.20240101T000000Z"));
        let mine = format!(".a-1.json.tmp-{}-0-ab", std::process::id());
        assert!(temp_of_live_process(&mine));
        assert!(!temp_of_live_process(".a-1.json.tmp-notapid"));
    }
}
