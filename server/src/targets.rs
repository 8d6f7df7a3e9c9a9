//! Prometheus `file_sd` target files: their content (pure, byte-stable), the
//! atomic write, the rename that retires a decommissioned host's file, and
//! the coalesced Prometheus reload after changes.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::Notify;

use crate::store::HostRecord;

/// One `file_sd` target group. Field order is alphabetical and labels are a
/// sorted map, so the same host always gives the same bytes.
#[derive(Debug, Serialize)]
struct Group {
    labels: BTreeMap<String, String>,
    targets: [String; 1],
}

/// The target file content for a host: one group per declared target, each
/// with the host's labels, its metrics path (Alloy's component path, or a
/// standalone exporter's) and, for application exporters, a `service` label.
/// Alloy's groups target the host's scrape address; a standalone exporter's
/// the same host at its own port.
pub fn file_sd(host: &HostRecord) -> String {
    groups_json(&host.labels(), &host.facts.scrape_address, &host.targets)
}

/// [`file_sd`] from its parts: the host's full label set, its scrape
/// address and its declared target groups.
pub fn groups_json(
    labels: &muster_shared::labels::Labels,
    scrape_address: &str,
    targets: &[crate::render::TargetGroup],
) -> String {
    let mut text = serde_json::to_string_pretty(&groups(labels, scrape_address, targets))
        .expect("plain data always serializes");
    text.push('\n');
    text
}

fn groups(
    labels: &muster_shared::labels::Labels,
    scrape_address: &str,
    targets: &[crate::render::TargetGroup],
) -> Vec<Group> {
    targets
        .iter()
        .map(|t| {
            let mut labels = labels.clone();
            labels.insert("__metrics_path__".into(), t.metrics_path());
            if let Some(service) = &t.service {
                labels.insert("service".into(), service.clone());
            }
            Group {
                labels,
                targets: [t.address(scrape_address)],
            }
        })
        .collect()
}

/// The `http_sd` answer: the groups of every active host's target file, in
/// one list (hosts in the order given).
pub fn http_sd(hosts: &[HostRecord]) -> String {
    let all: Vec<Group> = hosts
        .iter()
        .filter(|h| h.is_active())
        .flat_map(|h| groups(&h.labels(), &h.facts.scrape_address, &h.targets))
        .collect();
    serde_json::to_string(&all).expect("plain data always serializes")
}

/// The target file of a host. Host ids are checked to be file-name safe when
/// they are made; this re-checks, since the result becomes a path.
pub fn path_for(dir: &Path, host_id: &str) -> Option<PathBuf> {
    muster_shared::facts::is_host_id(host_id).then(|| dir.join(format!("{host_id}.json")))
}

/// [`path_for`] for a writer: an unsafe host id is an error.
fn checked_path(dir: &Path, host_id: &str) -> std::io::Result<PathBuf> {
    path_for(dir, host_id).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("host id {host_id:?} is not a safe file name"),
        )
    })
}

/// Replaces `path` with `bytes` atomically: a temp file in the same
/// directory, fsync, rename. A crash leaves the old file or the new one,
/// never a torn one, and Prometheus never reads a partial file. The rename
/// is durable once [`sync_dir`] has run (a writer of many files fsyncs the
/// directory once for all of them).
fn replace_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    // Unique per write: concurrent writers (the server and `targets sync`,
    // or two threads) never share a temp file.
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!(
        ".{name}.tmp-{}-{n}-{}",
        std::process::id(),
        crate::tokens::random_hex(4)
    ));
    let result = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Makes the renames in `dir` durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Writes the target file of `host` into `dir` unless it already holds
/// exactly these bytes. Returns whether the file changed. Durable once
/// [`sync_dir`] has run.
pub fn write_host(dir: &Path, host: &HostRecord) -> std::io::Result<bool> {
    let path = checked_path(dir, &host.id)?;
    let content = file_sd(host);
    if std::fs::read(&path).is_ok_and(|old| old == content.as_bytes()) {
        return Ok(false);
    }
    replace_file(&path, content.as_bytes())?;
    Ok(true)
}

/// `20240102T030405Z`: a UTC timestamp that sorts and is file-name safe.
pub fn compact_utc(t: std::time::SystemTime) -> String {
    humantime::format_rfc3339_seconds(t)
        .to_string()
        .replace(['-', ':'], "")
}

/// The name a decommissioned host's target file is renamed to.
pub fn retired_name(host_id: &str, decommissioned_at: std::time::SystemTime) -> String {
    format!("{host_id}.json.deleted.{}", compact_utc(decommissioned_at))
}

/// Retires a decommissioned host's target file: renames `<id>.json` to
/// `<id>.json.deleted.<UTC timestamp>`, which Prometheus's `*.json` glob no
/// longer matches, so the targets dir keeps every host ever enrolled. A
/// live file put back after the host was retired is removed instead: the
/// file retired first keeps its name and its targets. Returns the retired
/// path, or `None` when there was no live file. Durable once [`sync_dir`]
/// has run.
pub fn retire_host(
    dir: &Path,
    host_id: &str,
    now: std::time::SystemTime,
) -> std::io::Result<Option<PathBuf>> {
    let path = checked_path(dir, host_id)?;
    let retired = dir.join(retired_name(host_id, now));
    let retiring = if retired.exists() {
        std::fs::remove_file(&path)
    } else {
        std::fs::rename(&path, &retired)
    };
    match retiring {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    }
    Ok(Some(retired))
}

/// Writes a decommissioned host's retired file from its record, for a host
/// that had no live file to rename (decommissioned before its enrollment's
/// file was written, or the file was deleted), so the targets dir still
/// keeps every host ever enrolled. Returns the retired path, or `None` when
/// a file of that name exists already. Durable once [`sync_dir`] has run.
pub fn write_retired(
    dir: &Path,
    host: &HostRecord,
    decommissioned_at: std::time::SystemTime,
) -> std::io::Result<Option<PathBuf>> {
    checked_path(dir, &host.id)?;
    let retired = dir.join(retired_name(&host.id, decommissioned_at));
    if retired.exists() {
        return Ok(None);
    }
    replace_file(&retired, file_sd(host).as_bytes())?;
    Ok(Some(retired))
}

/// Asks Prometheus to reload after target changes, at most once per window:
/// many enrollments in a burst cause one reload. Each outcome is handed to
/// `on_result`; a failed reload is logged, never fatal (Prometheus also
/// re-reads `file_sd` files by itself).
#[derive(Clone)]
pub struct Reloader {
    notify: Arc<Notify>,
    /// When a target file was last removed (decommission).
    removed_at: Arc<std::sync::Mutex<Option<tokio::time::Instant>>>,
}

/// How long reloads are held back after a target file is removed.
/// Prometheus before 2.51 keeps a removed `file_sd` target for good when a
/// reload lands before its discovery manager has passed the removal on to
/// the scrape manager (every 5 s): prometheus/prometheus#12007, fixed by
/// #13622. Prometheus notices the removal by itself (it watches the files).
pub const QUIET_AFTER_REMOVAL: Duration = Duration::from_secs(10);

/// How much longer a reload due at `now` must wait after a removal at
/// `removed_at`.
pub fn hold_back(now: tokio::time::Instant, removed_at: Option<tokio::time::Instant>) -> Duration {
    removed_at.map_or(Duration::ZERO, |at| {
        (at + QUIET_AFTER_REMOVAL).saturating_duration_since(now)
    })
}

impl Reloader {
    /// Starts the background task. Without a Prometheus URL, `request` does
    /// nothing.
    pub fn spawn(
        prometheus_url: Option<String>,
        window: Duration,
        on_result: impl Fn(Result<(), &str>) + Send + 'static,
    ) -> Reloader {
        let notify = Arc::new(Notify::new());
        let removed_at = Arc::new(std::sync::Mutex::new(None));
        if let Some(base) = prometheus_url {
            let url = format!("{}/-/reload", base.trim_end_matches('/'));
            let wake = notify.clone();
            let removed = removed_at.clone();
            tokio::spawn(async move {
                let client = reqwest::Client::builder()
                    .timeout(Duration::from_secs(10))
                    .build();
                let client = match client {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot build the Prometheus reload client");
                        return;
                    }
                };
                loop {
                    wake.notified().await;
                    tokio::time::sleep(window).await;
                    loop {
                        let last = *removed.lock().unwrap_or_else(|p| p.into_inner());
                        let wait = hold_back(tokio::time::Instant::now(), last);
                        if wait.is_zero() {
                            break;
                        }
                        tracing::debug!(wait = ?wait, "holding the Prometheus reload back after a target file removal");
                        tokio::time::sleep(wait).await;
                    }
                    match client.post(&url).send().await {
                        Ok(r) if r.status().is_success() => {
                            tracing::info!(url = %url, "reloaded Prometheus");
                            on_result(Ok(()));
                        }
                        Ok(r) => {
                            let msg = format!("Prometheus reload answered {}", r.status());
                            tracing::warn!(url = %url, "{msg}");
                            on_result(Err(&msg));
                        }
                        Err(e) => {
                            let msg = format!("Prometheus reload failed: {e}");
                            tracing::warn!(url = %url, "{msg}");
                            on_result(Err(&msg));
                        }
                    }
                }
            });
        }
        Reloader { notify, removed_at }
    }

    /// Asks for a reload within the window.
    pub fn request(&self) {
        self.notify.notify_one();
    }

    /// A target file was removed: reloads wait [`QUIET_AFTER_REMOVAL`].
    pub fn removed(&self) {
        *self.removed_at.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(tokio::time::Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::TargetGroup;

    fn host() -> HostRecord {
        let mut h = crate::render::tests::host(&[("team", r#"db"}"#)]);
        h.targets = vec![TargetGroup {
            component: "prometheus.exporter.unix.default".into(),
            port: None,
            path: None,
            service: None,
        }];
        h
    }

    #[test]
    fn standalone_exporters_are_scraped_on_their_own_port() {
        let mut h = host();
        h.targets.push(TargetGroup {
            component: String::new(),
            port: Some(9113),
            path: None,
            service: Some("nginx".into()),
        });
        let json: serde_json::Value = serde_json::from_str(&file_sd(&h)).expect("valid JSON");
        let nginx = &json[1];
        assert_eq!(nginx["targets"][0], "10.0.0.5:9113");
        assert_eq!(nginx["labels"]["__metrics_path__"], "/metrics");
        assert_eq!(nginx["labels"]["service"], "nginx");
        assert_eq!(nginx["labels"]["host_id"], "web-01-abc123");
        assert!(json[0]["labels"].get("service").is_none());
    }

    #[test]
    fn http_sd_is_the_file_sd_groups_of_active_hosts() {
        let mut a = host();
        a.targets.push(TargetGroup {
            component: String::new(),
            port: Some(9113),
            path: None,
            service: Some("nginx".into()),
        });
        let mut b = host();
        b.id = "web-02-def456".into();
        let mut gone = host();
        gone.id = "web-03-aaaaaa".into();
        gone.lifecycle.decommissioned_at = Some(1);
        let sd: serde_json::Value =
            serde_json::from_str(&http_sd(&[a.clone(), gone, b.clone()])).expect("JSON");
        let mut expected: Vec<serde_json::Value> = Vec::new();
        for h in [&a, &b] {
            let file: serde_json::Value = serde_json::from_str(&file_sd(h)).expect("JSON");
            expected.extend(file.as_array().expect("groups").iter().cloned());
        }
        assert_eq!(sd, serde_json::Value::Array(expected));
        assert_eq!(http_sd(&[]), "[]");
    }

    #[test]
    fn target_groups_stored_by_older_servers_still_read() {
        let old: Vec<TargetGroup> =
            serde_json::from_str(r#"[{"component":"prometheus.exporter.unix.default"}]"#)
                .expect("issue-2 rows parse");
        assert_eq!(old[0].port, None);
        assert_eq!(
            old[0].metrics_path(),
            "/api/v0/component/prometheus.exporter.unix.default/metrics"
        );
    }

    #[test]
    fn file_sd_has_one_group_with_labels_and_metrics_path() {
        let text = file_sd(&host());
        let json: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
        let group = &json[0];
        assert_eq!(group["targets"][0], "10.0.0.5:12345");
        assert_eq!(
            group["labels"]["__metrics_path__"],
            "/api/v0/component/prometheus.exporter.unix.default/metrics"
        );
        assert_eq!(group["labels"]["team"], r#"db"}"#);
        assert_eq!(group["labels"]["hostname"], "web-01");
        assert_eq!(json.as_array().map(Vec::len), Some(1));
    }

    #[test]
    fn file_sd_bytes_are_stable_and_sorted() {
        let a = file_sd(&host());
        assert_eq!(a, file_sd(&host()));
        let labels_at = a.find("\"labels\"").expect("labels");
        let targets_at = a.find("\"targets\"").expect("targets");
        assert!(labels_at < targets_at);
        let arch = a.find("\"arch\"").expect("arch");
        let team = a.find("\"team\"").expect("team");
        assert!(arch < team);
    }

    #[test]
    fn hostile_host_ids_never_become_paths() {
        let dir = Path::new("/srv/targets");
        assert!(path_for(dir, "../../etc/x").is_none());
        assert!(path_for(dir, "a/b").is_none());
        assert_eq!(
            path_for(dir, "web-01-abc"),
            Some(PathBuf::from("/srv/targets/web-01-abc.json"))
        );
    }

    #[test]
    fn write_host_is_atomic_and_skips_unchanged_content() {
        let dir = tempfile::tempdir().expect("tempdir");
        let h = host();
        assert!(write_host(dir.path(), &h).expect("first write"));
        assert!(!write_host(dir.path(), &h).expect("second write"));
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("read dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("web-01-abc123.json")]);
    }

    #[test]
    fn retiring_renames_the_file_out_of_prometheus_glob() {
        let dir = tempfile::tempdir().expect("tempdir");
        let h = host();
        write_host(dir.path(), &h).expect("write");
        let at = std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let retired = retire_host(dir.path(), &h.id, at)
            .expect("rename")
            .expect("there was a file");
        assert_eq!(
            retired.file_name().and_then(|n| n.to_str()),
            Some("web-01-abc123.json.deleted.20231114T221320Z")
        );
        assert!(retired.exists());
        assert!(!dir.path().join("web-01-abc123.json").exists());
        assert_eq!(retire_host(dir.path(), &h.id, at).expect("no file"), None);
        assert!(retire_host(dir.path(), "../x", at).is_err());
    }

    #[test]
    fn reloads_are_held_back_after_a_removal() {
        let now = tokio::time::Instant::now();
        assert_eq!(hold_back(now, None), Duration::ZERO);
        assert_eq!(hold_back(now, Some(now)), QUIET_AFTER_REMOVAL);
        let later = now + Duration::from_secs(4);
        assert_eq!(hold_back(later, Some(now)), Duration::from_secs(6));
        assert_eq!(
            hold_back(now + QUIET_AFTER_REMOVAL, Some(now)),
            Duration::ZERO
        );
    }
}
