//! The Alloy stand-in binary, driven as Muster's agent and Prometheus drive
//! real Alloy: its CLI (`--version`, `fmt`, `validate`) and `run`'s HTTP API.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use muster_e2e::{run_fail, run_ok, Standin};

const DEADLINE: Duration = Duration::from_secs(10);

const UNIX: &str = "prometheus.exporter.unix \"default\" {\n  set_collectors = [\"cpu\"]\n}\n";
const UNIX_AND_REDIS: &str = "prometheus.exporter.unix \"default\" { }\n\
     prometheus.exporter.redis \"cache\" {\n  redis_addr = \"localhost:6379\"\n}\n";
const UNIX_METRICS: &str = "/api/v0/component/prometheus.exporter.unix.default/metrics";
const REDIS_METRICS: &str = "/api/v0/component/prometheus.exporter.redis.cache/metrics";

fn standin() -> Command {
    Command::new(Standin::bin())
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write config");
    path
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Status and body of a GET (or POST) to the stand-in.
async fn fetch(method: reqwest::Method, url: String) -> (u16, String) {
    let r = muster_e2e::http_client()
        .request(method, &url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    let status = r.status().as_u16();
    (status, r.text().await.expect("body"))
}

async fn get(standin: &Standin, path: &str) -> (u16, String) {
    fetch(reqwest::Method::GET, format!("{}{path}", standin.url())).await
}

/// Polls `path` until it answers `status`; panics with the stand-in's logs.
async fn wait_status(standin: &Standin, path: &str, status: u16) -> String {
    let until = Instant::now() + DEADLINE;
    loop {
        let (got, body) = get(standin, path).await;
        if got == status {
            return body;
        }
        assert!(
            Instant::now() < until,
            "{path} still answers {got}, not {status}\n{}",
            standin.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn version_defaults_to_one_with_validate_and_can_be_overridden() {
    assert_eq!(
        run_ok(standin().arg("--version")),
        "alloy, version v1.10.0 (branch: stand-in, revision: muster-alloy-standin)\n"
    );
    assert_eq!(
        run_ok(
            standin()
                .arg("--version")
                .env("ALLOY_STANDIN_VERSION", "v1.8.2")
        ),
        "alloy, version v1.8.2 (branch: stand-in, revision: muster-alloy-standin)\n"
    );
}

#[test]
fn help_says_it_is_a_stand_in() {
    assert!(run_ok(standin().arg("--help")).contains("stand-in for Grafana Alloy"));
}

#[test]
fn fmt_prints_a_good_file_and_locates_errors() {
    let dir = tempfile::tempdir().expect("temp dir");
    let good = write(dir.path(), "good.alloy", UNIX);
    assert_eq!(run_ok(standin().arg("fmt").arg(&good)), UNIX);

    // fmt checks syntax only: an unknown component passes.
    let unknown = write(dir.path(), "unknown.alloy", "foo.bar \"x\" { }\n");
    run_ok(standin().arg("fmt").arg(&unknown));

    let bad = write(
        dir.path(),
        "bad.alloy",
        "logging { }\nprometheus.exporter.unix \"default\" {\n  set_collectors = [\"cpu]\n}\n",
    );
    let out = run_fail(standin().arg("fmt").arg(&bad));
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let errors = stderr(&out);
    let prefix = format!("{}:", bad.display());
    assert!(
        errors.starts_with(&format!("{prefix}3:21: string literal not terminated\n")),
        "{errors}"
    );
    assert!(errors.lines().all(|l| l.starts_with(&prefix)), "{errors}");
}

#[test]
fn validate_rejects_unknown_components() {
    let dir = tempfile::tempdir().expect("temp dir");
    let good = write(dir.path(), "good.alloy", UNIX_AND_REDIS);
    assert_eq!(run_ok(standin().arg("validate").arg(&good)), "");

    let bad = write(
        dir.path(),
        "bad.alloy",
        "prometheus.exporter.unix \"default\" { }\nprometheus.exporter.nginx \"web\" { }\n",
    );
    let out = run_fail(standin().arg("validate").arg(&bad));
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        format!(
            "{}:2:1: unknown component \"prometheus.exporter.nginx\"\n",
            bad.display()
        )
    );

    let missing = run_fail(standin().arg("validate").arg(dir.path().join("nope.alloy")));
    assert!(
        stderr(&missing).contains("nope.alloy"),
        "{}",
        stderr(&missing)
    );
}

#[tokio::test]
async fn run_serves_ready_health_and_the_exporters_of_its_config() {
    let dir = tempfile::tempdir().expect("temp dir");
    let standin = Standin::start(&write(dir.path(), "config.alloy", UNIX));
    standin.wait_ready(DEADLINE).await;

    assert_eq!(
        get(&standin, "/-/ready").await,
        (200, "Alloy is ready.\n".into())
    );
    assert_eq!(get(&standin, "/-/healthy").await.0, 200);
    let (status, body) = get(&standin, UNIX_METRICS).await;
    assert_eq!(status, 200);
    assert!(body.contains("# TYPE node_uname_info gauge\n"), "{body}");
    assert!(body.contains("node_load1 0.1\n"), "{body}");
    assert!(
        body.contains("alloy_standin_info{component_id=\"prometheus.exporter.unix.default\"} 1\n")
    );

    assert_eq!(get(&standin, REDIS_METRICS).await.0, 404);
    assert_eq!(
        get(
            &standin,
            "/api/v0/component/prometheus.exporter.unix.other/metrics"
        )
        .await
        .0,
        404
    );
    assert!(get(&standin, "/metrics")
        .await
        .1
        .contains("alloy_build_info{"));
}

#[tokio::test]
async fn sighup_loads_the_new_config() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = write(dir.path(), "config.alloy", UNIX);
    let standin = Standin::start(&config);
    standin.wait_ready(DEADLINE).await;
    assert_eq!(get(&standin, REDIS_METRICS).await.0, 404);

    std::fs::write(&config, UNIX_AND_REDIS).expect("write config");
    standin.sighup();
    let body = wait_status(&standin, REDIS_METRICS, 200).await;
    assert!(body.contains("redis_up 1\n"), "{body}");
}

#[tokio::test]
async fn http_reload_loads_the_new_config_and_keeps_the_old_one_on_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = write(dir.path(), "config.alloy", UNIX);
    let standin = Standin::start(&config);
    standin.wait_ready(DEADLINE).await;
    let reload = || fetch(reqwest::Method::POST, format!("{}/-/reload", standin.url()));

    std::fs::write(&config, UNIX_AND_REDIS).expect("write config");
    assert_eq!(reload().await, (200, "config reloaded\n".into()));
    assert_eq!(get(&standin, REDIS_METRICS).await.0, 200);

    // Broken syntax: refused, the last good config (with redis) stays.
    std::fs::write(&config, "prometheus.exporter.unix \"default\" {\n").expect("write config");
    let (status, body) = reload().await;
    assert_eq!(status, 400);
    assert!(
        body.contains("config.alloy:2:1: expected }, got EOF"),
        "{body}"
    );
    assert_eq!(get(&standin, REDIS_METRICS).await.0, 200);
    assert_eq!(get(&standin, "/-/ready").await.0, 200);

    // Same through SIGHUP: logged, not fatal.
    standin.sighup();
    let (status, _) = fetch(reqwest::Method::GET, format!("{}/-/reload", standin.url())).await;
    assert_eq!(status, 400);
    assert_eq!(get(&standin, REDIS_METRICS).await.0, 200);
    assert_eq!(get(&standin, UNIX_METRICS).await.0, 200);
}

#[tokio::test]
async fn a_config_that_validates_can_still_fail_to_load_and_reload_says_why() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = write(dir.path(), "config.alloy", UNIX);
    let alloy = Standin::start(&config);
    alloy.wait_ready(DEADLINE).await;
    let password = dir.path().join("no-such-password");
    let text = format!(
        "{UNIX}\nprometheus.exporter.redis \"cache\" {{\n  redis_addr = \"127.0.0.1:6379\"\n  redis_password_file = \"{}\"\n}}\n",
        password.display()
    );
    std::fs::write(&config, &text).expect("write config");
    // `alloy validate` does not build components: it passes.
    run_ok(standin().arg("validate").arg(&config));
    // Loading builds them: the redis exporter cannot read its password file.
    let (status, body) = fetch(reqwest::Method::POST, format!("{}/-/reload", alloy.url())).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        body,
        format!(
            "error during the initial load: {}:{}:3: Failed to build component: building component: open {}: no such file or directory\n",
            config.display(),
            text.lines().position(|l| l.contains("redis_password_file")).expect("line") + 1,
            password.display()
        )
    );
    assert_eq!(
        get(&alloy, REDIS_METRICS).await.0,
        404,
        "the old config stays"
    );
    assert_eq!(get(&alloy, UNIX_METRICS).await.0, 200);
    // Once the file is there, the same config loads.
    std::fs::write(&password, "secret").expect("password");
    let (status, _) = fetch(reqwest::Method::POST, format!("{}/-/reload", alloy.url())).await;
    assert_eq!(status, 200);
    assert_eq!(get(&alloy, REDIS_METRICS).await.0, 200);
}

#[test]
fn run_exits_when_the_first_load_fails() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = write(dir.path(), "config.alloy", "logging {\n");
    let out = run_fail(
        standin()
            .args(["run", "--server.http.listen-addr=127.0.0.1:0"])
            .arg(&config),
    );
    assert!(
        stderr(&out).contains("could not perform the initial load successfully"),
        "{}",
        stderr(&out)
    );
}
