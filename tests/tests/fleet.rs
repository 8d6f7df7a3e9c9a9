//! Running a fleet end to end (issue 4): the real `muster-server`, fifty
//! `muster-agent` processes, the Alloy stand-in and a real Prometheus.
//! A batch of 50 hosts enrolls concurrently and every host reaches
//! `config_applied`, `scrape_ok` and `up == 1`; a label change reaches the
//! target file, Prometheus and the agent's applied config; a decommissioned
//! host's agent stops and Prometheus no longer scrapes it.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use muster_e2e::fleet::{
    self, admin, append_settings, batch_csv, disable_detected_services, edit_settings, new_token,
    PretendHost, SharedAlloy, FAST_CHECKINS,
};
use muster_e2e::{Process, Prometheus, Server};
use reqwest::Method;
use serde_json::{json, Value};

const DEADLINE: Duration = Duration::from_secs(90);
const HOSTS: usize = 50;

/// Initialises a data dir with fast check-ins, reloads and scrape checks,
/// plus `extra_settings`; returns the pin.
fn init(data: &Path, extra_settings: &str) -> String {
    let pin = fleet::init(data);
    edit_settings(
        data,
        &[
            FAST_CHECKINS,
            (
                "scrape_check_interval = \"15s\"",
                "scrape_check_interval = \"1s\"",
            ),
            ("reload_window = \"2s\"", "reload_window = \"200ms\""),
        ],
    );
    append_settings(data, extra_settings);
    disable_detected_services(data);
    pin
}

/// Waits for all children; panics with the output of the first failure.
fn wait_all(children: Vec<(String, Child)>) {
    for (name, child) in children {
        let out = child.wait_with_output().expect("wait for agent");
        assert!(
            out.status.success(),
            "{name} failed: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn spawn(mut cmd: Command) -> Child {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start muster-agent")
}

/// Polls the batch until `done` holds for every row.
async fn wait_for_batch(
    server: &Server,
    batch: &str,
    what: &str,
    done: fn(&Value) -> bool,
) -> Value {
    let until = Instant::now() + DEADLINE;
    loop {
        let status = admin(
            server,
            Method::GET,
            &format!("/v1/admin/batches/{batch}"),
            None,
        )
        .await;
        let rows = status["hosts"].as_array().expect("rows");
        if rows.len() == HOSTS && rows.iter().all(done) {
            return status;
        }
        assert!(
            Instant::now() < until,
            "not every host reached {what}: {}\nfirst problems: {:?}\n{}",
            status["totals"],
            rows.iter()
                .filter_map(|r| r["problem"].as_str())
                .take(3)
                .collect::<Vec<_>>(),
            server.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The host runs the config rendered for it (`scrape_ok` may follow at once).
fn applied(row: &Value) -> bool {
    row["config_current"] == true
        && ["config_applied", "scrape_ok", "scrape_failing"]
            .contains(&row["state"].as_str().unwrap_or(""))
}

#[cfg_attr(
    not(have_prometheus),
    ignore = "SKIPPED: needs prometheus -- apt-get install prometheus"
)]
#[tokio::test]
async fn fifty_hosts_enroll_from_a_batch_and_prometheus_scrapes_every_one() {
    let root = tempfile::tempdir().expect("temp dir");
    let data = root.path().join("data");
    let pin = init(&data, "");
    let prometheus = Prometheus::start(&data.join("targets"), root.path()).await;
    let server = Server::builder(&data)
        .args(["--prometheus-url", prometheus.url()])
        .start();
    let alloy = SharedAlloy::start(&root.path().join("alloy")).await;

    let names: Vec<String> = (0..HOSTS).map(|i| format!("fleet-{i:02}")).collect();
    let imported = admin(
        &server,
        Method::POST,
        "/v1/admin/batches",
        Some(json!({"content": batch_csv(&names), "name": "fleet.csv"})),
    )
    .await;
    let batch = imported["batch"]["id"]
        .as_str()
        .expect("batch id")
        .to_string();
    let tokens: Vec<(String, String)> = imported["hosts"]
        .as_array()
        .expect("hosts")
        .iter()
        .map(|h| {
            (
                h["hostname"].as_str().expect("hostname").to_string(),
                h["token"].as_str().expect("token").to_string(),
            )
        })
        .collect();
    assert_eq!(tokens.len(), HOSTS);

    // Fifty agent processes enroll at once, then each checks in once.
    let hosts: Vec<PretendHost> = tokens
        .iter()
        .enumerate()
        .map(|(i, (name, _))| PretendHost::new(root.path(), name, i))
        .collect();
    let started = Instant::now();
    let enrolls = hosts
        .iter()
        .zip(&tokens)
        .map(|(h, (_, token))| {
            (
                format!("enroll {}", h.hostname),
                spawn(h.enroll(&server.agent_url(), token, &pin, &alloy)),
            )
        })
        .collect();
    wait_all(enrolls);
    let runs = hosts
        .iter()
        .map(|h| (format!("run --once {}", h.hostname), spawn(h.run(true))))
        .collect();
    wait_all(runs);
    wait_for_batch(&server, &batch, "config_applied", applied).await;
    eprintln!(
        "{HOSTS} hosts enrolled and config_applied in {:.2?}",
        started.elapsed()
    );

    // Prometheus scrapes every host with its row's labels, and the server
    // learns it from /api/v1/targets.
    let up = prometheus
        .wait_for(
            "up{job=\"muster\",environment=\"batch-test\"} == 1",
            |r| r.len() == HOSTS,
            DEADLINE,
        )
        .await;
    let mut seen: Vec<&str> = up.iter().map(|(l, _)| l["hostname"].as_str()).collect();
    seen.sort();
    assert_eq!(seen, names.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(up.iter().all(|(l, _)| l["location"].starts_with("rack-")));
    let status = wait_for_batch(&server, &batch, "scrape_ok", |r| r["state"] == "scrape_ok").await;
    assert_eq!(status["scrape_checks"], true);
    let hosts = admin(
        &server,
        Method::GET,
        "/v1/admin/hosts?state=scrape_ok",
        None,
    )
    .await;
    assert_eq!(hosts.as_array().map(Vec::len), Some(HOSTS));
}

/// Whether the host runs the config the server rendered for it; the host.
async fn current(server: &Server, host_id: &str) -> (bool, Value) {
    let h = admin(
        server,
        Method::GET,
        &format!("/v1/admin/hosts/{host_id}"),
        None,
    )
    .await;
    let done = h["applied_hash"] == h["rendered_hash"] && h["config_state"] == "config_applied";
    (done, h)
}

#[cfg_attr(
    not(have_prometheus),
    ignore = "SKIPPED: needs prometheus -- apt-get install prometheus"
)]
#[tokio::test]
async fn a_label_change_reaches_prometheus_and_the_agent_and_decommission_cuts_the_host_off() {
    let root = tempfile::tempdir().expect("temp dir");
    let data = root.path().join("data");
    // An operator template writing the labels into the config, so the label
    // change is visible in what the agent applies (the built-in templates
    // use labels in log pipelines only).
    let templates = root.path().join("templates");
    std::fs::create_dir_all(&templates).expect("templates");
    std::fs::write(
        templates.join("linux.alloy.j2"),
        "{{ exporter(\"unix\", \"default\") }} {\n}\n// labels: {{ host.labels }}\n",
    )
    .expect("template");
    let dir = Value::from(templates.display().to_string());
    let pin = init(&data, &format!("templates_dir = {dir}\n"));
    let prometheus = Prometheus::start(&data.join("targets"), root.path()).await;
    let server = Server::builder(&data)
        .args(["--prometheus-url", prometheus.url()])
        .start();
    let alloy = SharedAlloy::start(&root.path().join("alloy")).await;
    let created = new_token(&server, json!({"labels": {"location": "rack-1"}})).await;
    let host = PretendHost::new(root.path(), "rolling-01", 0);
    let out = muster_e2e::run_ok(&mut host.enroll(
        &server.agent_url(),
        created["token"].as_str().expect("token"),
        &pin,
        &alloy,
    ));
    let host_id = out
        .trim()
        .strip_prefix("enrolled as ")
        .expect("enrolled line")
        .to_string();
    let mut agent = Process::spawn(host.run(false).env("MUSTER_LOG", "info"));

    let until = Instant::now() + DEADLINE;
    while !current(&server, &host_id).await.0 {
        assert!(Instant::now() < until, "never applied\n{}", agent.logs());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    prometheus
        .wait_for(
            &format!("up{{host_id=\"{host_id}\",location=\"rack-1\"}}"),
            |r| r.len() == 1 && r[0].1 == 1.0,
            DEADLINE,
        )
        .await;

    // The label change: target file, Prometheus, agent.
    admin(
        &server,
        Method::POST,
        &format!("/v1/admin/hosts/{host_id}/labels"),
        Some(json!({"set": {"location": "rack-9"}})),
    )
    .await;
    let file = data.join("targets").join(format!("{host_id}.json"));
    let text = std::fs::read_to_string(&file).expect("target file");
    assert!(text.contains("\"location\": \"rack-9\""), "{text}");
    prometheus
        .wait_for(
            &format!("up{{host_id=\"{host_id}\",location=\"rack-9\"}}"),
            |r| r.len() == 1 && r[0].1 == 1.0,
            DEADLINE,
        )
        .await;
    let until = Instant::now() + DEADLINE;
    loop {
        let (done, h) = current(&server, &host_id).await;
        if done {
            assert!(h["labels"]["location"] == "rack-9", "{h}");
            break;
        }
        assert!(
            Instant::now() < until,
            "new config never applied: {h}\n{}",
            agent.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let applied = std::fs::read_to_string(&host.alloy_config).expect("applied config");
    assert!(applied.contains("\"location\" = \"rack-9\""), "{applied}");

    // Decommission: the agent stops with a clear error, the file is retired,
    // Prometheus drops the target.
    let done = admin(
        &server,
        Method::POST,
        &format!("/v1/admin/hosts/{host_id}/decommission"),
        None,
    )
    .await;
    let retired = done["target_file"].as_str().expect("renamed");
    assert!(data.join("targets").join(retired).exists());
    assert!(!file.exists());
    let exit = agent
        .wait_exit(DEADLINE)
        .unwrap_or_else(|| panic!("the agent kept polling\n{}", agent.logs()));
    assert_eq!(exit.code(), Some(3), "{}", agent.logs());
    let stderr = agent.stderr();
    assert!(
        stderr.contains(&format!("host {host_id} was decommissioned or replaced")),
        "{stderr}"
    );
    prometheus
        .wait_for(
            &format!("up{{host_id=\"{host_id}\"}}"),
            |r| r.is_empty(),
            DEADLINE,
        )
        .await;
    let targets = prometheus.targets().await.expect("targets");
    assert!(
        !targets.to_string().contains(&host_id),
        "still a target: {targets}"
    );
}
