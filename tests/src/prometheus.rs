//! A real Prometheus (Debian package `prometheus`) in a test: it discovers
//! targets from the `file_sd` files in a targets dir and scrapes every second.
//! Tests that start one are ignored where it is not installed, except in CI
//! (`crate::prereqs::PROMETHEUS`).

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::process::{Process, START_DEADLINE};

/// One series of an instant query: its labels and its value.
pub type Sample = (BTreeMap<String, String>, f64);

/// How often [`Prometheus::wait_for`] asks again.
const POLL: Duration = Duration::from_millis(250);

/// A running Prometheus, killed on drop.
pub struct Prometheus {
    process: Process,
    url: String,
    client: reqwest::Client,
}

impl Prometheus {
    /// Starts Prometheus on a free loopback port with its config and data in
    /// `workdir`, watching `<targets_dir>/*.json`, and waits until it is ready.
    ///
    /// Fails the test when `prometheus` is not on `PATH` (tests that start
    /// one are ignored where build.rs did not find it: `have_prometheus`).
    pub async fn start(targets_dir: &Path, workdir: &Path) -> Prometheus {
        Prometheus::start_with(&prometheus_yml(targets_dir), workdir).await
    }

    /// Like [`Prometheus::start`], with `config` as its `prometheus.yml`
    /// (written into `workdir`; relative paths in it are relative to there).
    pub async fn start_with(config: &str, workdir: &Path) -> Prometheus {
        let bin = find_on_path("prometheus", &std::env::var_os("PATH").unwrap_or_default())
            .expect("prometheus is not on PATH: apt-get install prometheus");
        let config_file = workdir.join("prometheus.yml");
        std::fs::write(&config_file, config)
            .unwrap_or_else(|e| panic!("writing {}: {e}", config_file.display()));
        let client = crate::http_client();
        // The free port is only free until someone else takes it: on a lost
        // race Prometheus exits at once, and another port is tried.
        let mut attempt = 0;
        loop {
            attempt += 1;
            let url = format!("http://127.0.0.1:{}", free_port());
            let process = Process::spawn(
                Command::new(&bin)
                    .arg(format!("--config.file={}", config_file.display()))
                    .arg(format!(
                        "--storage.tsdb.path={}",
                        workdir.join(format!("data-{attempt}")).display()
                    ))
                    .arg(format!(
                        "--web.listen-address={}",
                        url.trim_start_matches("http://")
                    ))
                    .arg("--web.enable-lifecycle"),
            );
            let mut prometheus = Prometheus {
                process,
                url,
                client: client.clone(),
            };
            match prometheus.wait_ready().await {
                Ok(()) => return prometheus,
                Err(e) if attempt < 3 => eprintln!("prometheus did not start ({e}); retrying"),
                Err(e) => panic!("prometheus did not start: {e}\n{}", prometheus.logs()),
            }
        }
    }

    async fn wait_ready(&mut self) -> Result<(), String> {
        let until = Instant::now() + START_DEADLINE;
        let ready = format!("{}/-/ready", self.url);
        loop {
            if let Some(status) = self.process.try_wait() {
                return Err(format!("exited with {status}"));
            }
            if let Ok(r) = self.client.get(&ready).send().await {
                if r.status().is_success() {
                    return Ok(());
                }
            }
            if Instant::now() >= until {
                return Err(format!("not ready within {START_DEADLINE:?}"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// An instant query; panics if Prometheus refuses it.
    pub async fn query(&self, promql: &str) -> Vec<Sample> {
        self.try_query(promql)
            .await
            .unwrap_or_else(|e| panic!("query {promql:?} failed: {e}\n{}", self.logs()))
    }

    /// Repeats `promql` every 250 ms until `pred` holds for its result and
    /// returns that result; on timeout panics with the last result and
    /// Prometheus's view of its targets.
    pub async fn wait_for(
        &self,
        promql: &str,
        pred: impl Fn(&[Sample]) -> bool,
        deadline: Duration,
    ) -> Vec<Sample> {
        let until = Instant::now() + deadline;
        loop {
            let last = self.try_query(promql).await;
            if let Ok(samples) = &last {
                if pred(samples) {
                    return samples.clone();
                }
            }
            if Instant::now() >= until {
                let targets = self
                    .targets()
                    .await
                    .map_or_else(|e| e, |t| format!("{t:#}"));
                panic!(
                    "{promql:?} did not match within {deadline:?}\nlast result: {last:?}\n\
                     /api/v1/targets: {targets}\n{}",
                    self.logs()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The `data` of `/api/v1/targets`: active and dropped targets, their
    /// labels, health and last error.
    pub async fn targets(&self) -> Result<Value, String> {
        self.api("/api/v1/targets", &[]).await
    }

    /// The `data` of `/api/v1/rules`: rule groups, each rule's query, health
    /// and last error.
    pub async fn rules(&self) -> Result<Value, String> {
        self.api("/api/v1/rules", &[]).await
    }

    /// An instant query: its samples, or Prometheus's error (a PromQL parse
    /// or evaluation error) as text.
    pub async fn try_query(&self, promql: &str) -> Result<Vec<Sample>, String> {
        let data = self.api("/api/v1/query", &[("query", promql)]).await?;
        parse_vector(&data)
    }

    /// GETs an API path and returns the `data` of a `success` answer.
    async fn api(&self, path: &str, params: &[(&str, &str)]) -> Result<Value, String> {
        let mut url = reqwest::Url::parse(&format!("{}{path}", self.url))
            .map_err(|e| format!("bad url: {e}"))?;
        url.query_pairs_mut().extend_pairs(params);
        let body: Value = self
            .client
            .get(url)
            .send()
            .await
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        match body.get("status").and_then(Value::as_str) {
            Some("success") => Ok(body.get("data").cloned().unwrap_or(Value::Null)),
            _ => Err(format!("prometheus answered {body}")),
        }
    }

    /// The command line, stdout and stderr so far: for panic messages.
    pub fn logs(&self) -> String {
        self.process.logs()
    }
}

/// The config: scrape and evaluate every second, one job `muster` fed by
/// `file_sd` from `targets_dir`.
pub fn prometheus_yml(targets_dir: &Path) -> String {
    // A JSON string is a valid YAML double-quoted scalar, whatever the path.
    let files = Value::from(format!("{}/*.json", targets_dir.display()));
    format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
         scrape_configs:\n  - job_name: muster\n    file_sd_configs:\n      \
         - files: [{files}]\n        refresh_interval: 1s\n"
    )
}

/// Samples of an instant query's `data` (`vector`, or `scalar` as one
/// unlabelled sample).
pub fn parse_vector(data: &Value) -> Result<Vec<Sample>, String> {
    let bad = || format!("unexpected query result {data}");
    let value_of = |pair: &Value| -> Result<f64, String> {
        pair.get(1)
            .and_then(Value::as_str)
            .and_then(|v| v.parse().ok())
            .ok_or_else(bad)
    };
    match data.get("resultType").and_then(Value::as_str) {
        Some("vector") => data
            .get("result")
            .and_then(Value::as_array)
            .ok_or_else(bad)?
            .iter()
            .map(|series| {
                let labels = series
                    .get("metric")
                    .and_then(Value::as_object)
                    .ok_or_else(bad)?
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect();
                Ok((labels, value_of(series.get("value").ok_or_else(bad)?)?))
            })
            .collect(),
        Some("scalar") => Ok(vec![(
            BTreeMap::new(),
            value_of(data.get("result").ok_or_else(bad)?)?,
        )]),
        _ => Err(bad()),
    }
}

/// `name` in one of the directories of `path` (a `PATH` value).
pub fn find_on_path(name: &str, path: &std::ffi::OsStr) -> Option<PathBuf> {
    std::env::split_paths(path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// A loopback port nobody listens on right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("binding 127.0.0.1:0 to find a free port")
        .port()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn config_watches_the_targets_dir() {
        let yml = prometheus_yml(Path::new("/tmp/a \"b\"/targets"));
        assert!(yml.contains("scrape_interval: 1s\n"));
        assert!(
            yml.contains(r#"- files: ["/tmp/a \"b\"/targets/*.json"]"#),
            "{yml}"
        );
        assert!(yml.contains("refresh_interval: 1s\n"));
    }

    #[test]
    fn parses_vectors_and_scalars() {
        let data = json!({"resultType": "vector", "result": [
            {"metric": {"__name__": "up", "hostname": "smoke"}, "value": [1.5, "1"]}
        ]});
        let samples = parse_vector(&data).expect("vector");
        assert_eq!(samples.len(), 1);
        assert_eq!(samples[0].0["hostname"], "smoke");
        assert_eq!(samples[0].1, 1.0);

        let scalar = json!({"resultType": "scalar", "result": [1.5, "NaN"]});
        assert!(parse_vector(&scalar).expect("scalar")[0].1.is_nan());
        assert!(parse_vector(&json!({"resultType": "matrix", "result": []})).is_err());
    }

    #[test]
    fn finds_programs_on_path() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("prometheus"), "").expect("write");
        let path = std::env::join_paths(["/nonexistent".as_ref(), dir.path()]).expect("join");
        assert_eq!(
            find_on_path("prometheus", &path),
            Some(dir.path().join("prometheus"))
        );
        assert_eq!(find_on_path("promtool", &path), None);
    }
}
