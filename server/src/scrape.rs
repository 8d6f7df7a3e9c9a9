//! Asking Prometheus whether hosts are scraped: `/api/v1/targets` is read
//! every `scrape_check_interval` (when a Prometheus URL is configured) and
//! each active host gets `scrape_ok` or `scrape_failing` with the last scrape
//! error. The verdict is a separate field beside the config state, so it
//! never hides what the agent reported. The parsing is pure; the loop is IO.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::admin_wire::{HostState, ScrapeInfo};
use crate::store::{HostRecord, Store};

/// What Prometheus says about one host's targets.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    pub up: usize,
    pub down: usize,
    pub unknown: usize,
    /// The first down target's scrape URL and error.
    pub error: Option<String>,
}

/// Groups the active targets of a `/api/v1/targets` answer by their
/// `host_id` label (after relabelling, else as discovered).
pub fn parse_targets(body: &Value) -> Result<BTreeMap<String, Observed>, String> {
    if body.get("status").and_then(Value::as_str) != Some("success") {
        return Err(format!("Prometheus answered {body}"));
    }
    let targets = body
        .pointer("/data/activeTargets")
        .and_then(Value::as_array)
        .ok_or_else(|| "the answer has no data.activeTargets".to_string())?;
    let mut hosts: BTreeMap<String, Observed> = BTreeMap::new();
    for t in targets {
        let host_id = t
            .pointer("/labels/host_id")
            .or_else(|| t.pointer("/discoveredLabels/host_id"))
            .and_then(Value::as_str);
        let Some(host_id) = host_id else { continue };
        let seen = hosts.entry(host_id.to_string()).or_default();
        match t.get("health").and_then(Value::as_str) {
            Some("up") => seen.up += 1,
            Some("down") => {
                seen.down += 1;
                if seen.error.is_none() {
                    let url = t.get("scrapeUrl").and_then(Value::as_str).unwrap_or("?");
                    let err = t
                        .get("lastError")
                        .and_then(Value::as_str)
                        .filter(|e| !e.is_empty())
                        .unwrap_or("down");
                    seen.error = Some(format!("{url}: {err}"));
                }
            }
            _ => seen.unknown += 1,
        }
    }
    Ok(hosts)
}

/// The verdict for a host: `None` when there is none yet (targets not
/// scraped yet, or just enrolled and not discovered yet), `Some(None)` to
/// clear an old verdict, `Some(Some(..))` to record one.
pub fn verdict(
    host: &HostRecord,
    observed: Option<&Observed>,
    now: i64,
    grace: i64,
) -> Option<Option<ScrapeInfo>> {
    let info = |state, error| {
        Some(Some(ScrapeInfo {
            state,
            error,
            checked_at: now,
        }))
    };
    match observed {
        Some(o) if o.down > 0 => info(HostState::ScrapeFailing, o.error.clone()),
        Some(o) if o.up > 0 && o.unknown == 0 => info(HostState::ScrapeOk, None),
        Some(_) => None,
        // Target files are written at enrollment: a host Prometheus still
        // does not know after the grace period is not being scraped at all.
        None if now - host.enrolled_at > grace => info(
            HostState::ScrapeFailing,
            Some("no target of this host is among Prometheus's active targets (does its file_sd config read the targets dir?)".into()),
        ),
        None => None,
    }
}

/// Checks every `interval` until the runtime stops.
pub fn spawn(store: Arc<Store>, prometheus_url: String, interval: Duration) {
    let url = format!(
        "{}/api/v1/targets?state=active",
        prometheus_url.trim_end_matches('/')
    );
    let grace = (interval.as_secs() as i64 * 4).max(60);
    tokio::spawn(async move {
        let client = match reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
        {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "cannot build the Prometheus client; no scrape checks");
                return;
            }
        };
        let mut last_failure: Option<String> = None;
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let result = check_once(&client, &url, &store, grace).await;
            match (result, &last_failure) {
                (Ok(()), Some(_)) => {
                    tracing::info!(url = %url, "scrape checks work again");
                    last_failure = None;
                }
                (Ok(()), None) => {}
                (Err(e), last) if last.as_ref() != Some(&e) => {
                    tracing::warn!(url = %url, error = %e, "cannot ask Prometheus about targets");
                    last_failure = Some(e);
                }
                (Err(_), _) => {}
            }
        }
    });
}

async fn check_once(
    client: &reqwest::Client,
    url: &str,
    store: &Arc<Store>,
    grace: i64,
) -> Result<(), String> {
    let body: Value = client
        .get(url)
        .send()
        .await
        .map_err(|e| e.to_string())?
        .json()
        .await
        .map_err(|e| e.to_string())?;
    let observed = parse_targets(&body)?;
    let store = store.clone();
    tokio::task::spawn_blocking(move || {
        let now = crate::fleet::unix_now();
        let hosts = store.hosts().map_err(|e| e.to_string())?;
        let results: Vec<(String, Option<ScrapeInfo>)> = hosts
            .iter()
            .filter_map(|h| verdict(h, observed.get(&h.id), now, grace).map(|v| (h.id.clone(), v)))
            .collect();
        let changed = store.record_scrape(&results).map_err(|e| e.to_string())?;
        for (id, scrape) in results.iter().filter(|(id, _)| changed.contains(id)) {
            match scrape {
                Some(s) if s.state == HostState::ScrapeOk => {
                    tracing::info!(host = %id, "Prometheus scrapes the host")
                }
                Some(s) => tracing::warn!(host = %id, error = s.error.as_deref().unwrap_or(""), "Prometheus cannot scrape the host"),
                None => {}
            }
        }
        Ok::<(), String>(())
    })
    .await
    .map_err(|e| e.to_string())?
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn answer() -> Value {
        json!({"status": "success", "data": {"activeTargets": [
            {"labels": {"host_id": "a-1", "job": "muster"}, "health": "up", "lastError": "",
             "scrapeUrl": "http://10.0.0.1:12345/x"},
            {"labels": {"host_id": "a-1"}, "health": "up", "lastError": ""},
            {"labels": {"host_id": "b-2"}, "health": "up", "lastError": ""},
            {"labels": {"host_id": "b-2"}, "health": "down",
             "lastError": "server returned HTTP status 404 Not Found",
             "scrapeUrl": "http://10.0.0.2:12345/api/v0/component/x/metrics"},
            {"labels": {"job": "other"}, "discoveredLabels": {"host_id": "c-3"}, "health": "unknown"},
            {"labels": {"job": "prometheus"}, "health": "up"}
        ]}})
    }

    #[test]
    fn targets_are_grouped_by_host_id() {
        let hosts = parse_targets(&answer()).expect("parses");
        assert_eq!(hosts.len(), 3);
        assert_eq!((hosts["a-1"].up, hosts["a-1"].down), (2, 0));
        assert_eq!(hosts["b-2"].down, 1);
        assert_eq!(
            hosts["b-2"].error.as_deref(),
            Some("http://10.0.0.2:12345/api/v0/component/x/metrics: server returned HTTP status 404 Not Found")
        );
        assert_eq!(hosts["c-3"].unknown, 1);
        assert!(parse_targets(&json!({"status": "error"})).is_err());
        assert!(parse_targets(&json!({"status": "success", "data": {}})).is_err());
    }

    #[test]
    fn verdicts_wait_for_a_scrape_and_flag_unknown_hosts_after_grace() {
        let hosts = parse_targets(&answer()).expect("parses");
        let mut host = crate::render::tests::host(&[]);
        host.enrolled_at = 1000;
        let ok = verdict(&host, hosts.get("a-1"), 1010, 60).expect("verdict");
        assert_eq!(ok.map(|s| s.state), Some(HostState::ScrapeOk));
        let failing = verdict(&host, hosts.get("b-2"), 1010, 60)
            .flatten()
            .expect("failing");
        assert_eq!(failing.state, HostState::ScrapeFailing);
        assert!(failing.error.expect("error").contains("404"));
        assert_eq!(
            verdict(&host, hosts.get("c-3"), 1010, 60),
            None,
            "not scraped yet"
        );
        assert_eq!(verdict(&host, None, 1010, 60), None, "just enrolled");
        let lost = verdict(&host, None, 1100, 60).flatten().expect("lost");
        assert!(lost.error.expect("error").contains("active targets"));
    }
}
