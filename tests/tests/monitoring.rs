//! The monitoring Muster ships in `packaging/`: the Prometheus rules and their
//! promtool unit tests, the example Prometheus configs, the Alertmanager
//! example (amtool), and every PromQL expression of the rules and the Grafana
//! dashboard evaluated by a real Prometheus over scraped data, so a typo in a
//! metric name fails as surely as a syntax error.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use muster_e2e::fleet::{
    admin, disable_detected_services, edit_settings, init, new_token, AlloyHost, FAST_CHECKINS,
};
use muster_e2e::{prereqs, run, run_ok, tools, Prometheus, Server};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

const DEADLINE: Duration = Duration::from_secs(60);

fn packaging() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The files of `dir` ending in `suffix`, sorted; panics on none.
fn files(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    found.sort();
    assert!(!found.is_empty(), "no *{suffix} in {}", dir.display());
    found
}

/// `(kind, name)` of every rule in the rule files: `alert` or `record`.
fn rule_names() -> Vec<(String, String)> {
    files(&packaging().join("prometheus/rules"), ".yml")
        .iter()
        .flat_map(|f| {
            read(f)
                .lines()
                .filter_map(|l| {
                    let l = l.trim_start().strip_prefix("- ")?;
                    let (kind, name) = l.split_once(": ")?;
                    matches!(kind, "alert" | "record")
                        .then(|| (kind.to_string(), name.trim().to_string()))
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

#[cfg_attr(
    not(have_promtool),
    ignore = "SKIPPED: needs promtool -- apt-get install prometheus"
)]
#[test]
fn rules_pass_promtool_check_and_their_unit_tests() {
    tools::require(&[&prereqs::PROMTOOL]);
    let rules = files(&packaging().join("prometheus/rules"), ".yml");
    let out = run_ok(
        Command::new("promtool")
            .arg("check")
            .arg("rules")
            .args(&rules),
    );
    assert!(!out.contains("WARNING"), "{out}");

    let tests = files(&packaging().join("prometheus/tests"), "_test.yml");
    let out = run_ok(
        Command::new("promtool")
            .arg("test")
            .arg("rules")
            .args(&tests),
    );
    assert_eq!(out.matches("SUCCESS").count(), tests.len(), "{out}");

    // Every alert and the last-seen record has a unit test.
    let names = rule_names();
    assert!(names.len() >= 12, "{names:?}");
    let test_text: String = tests.iter().map(|t| read(t)).collect();
    for (kind, name) in &names {
        let tested = match kind.as_str() {
            "alert" => test_text.contains(&format!("alertname: {name}\n")),
            _ => test_text.contains(&format!("expr: {name}\n")),
        };
        assert!(tested, "{kind} {name} has no promtool unit test");
    }
}

#[cfg_attr(
    not(have_promtool),
    ignore = "SKIPPED: needs promtool -- apt-get install prometheus"
)]
#[test]
fn example_prometheus_configs_pass_promtool() {
    tools::require(&[&prereqs::PROMTOOL]);
    for name in ["prometheus-file-sd.yml", "prometheus-http-sd.yml"] {
        // The files the example points at, under a temp dir: the rules, the
        // CA, the token and a target file.
        let root = tempfile::tempdir().expect("temp dir");
        let etc = root.path().join("etc/");
        let rules = etc.join("rules/muster");
        std::fs::create_dir_all(&rules).expect("rules dir");
        for rule in files(&packaging().join("prometheus/rules"), ".yml") {
            std::fs::copy(&rule, rules.join(rule.file_name().expect("name"))).expect("copy");
        }
        std::fs::write(etc.join("muster-ca.crt"), "").expect("ca");
        std::fs::write(etc.join("muster-sd.token"), "mts_x").expect("token");
        let var = root.path().join("var/");
        std::fs::create_dir_all(var.join("targets")).expect("targets dir");
        std::fs::write(var.join("targets/h.json"), "[]").expect("targets");
        let config = read(&packaging().join("prometheus").join(name))
            .replace("/etc/prometheus/", &etc.to_string_lossy())
            .replace("/var/lib/muster-server/", &var.to_string_lossy());
        let file = root.path().join(name);
        std::fs::write(&file, config).expect("config");

        let out = run(Command::new("promtool")
            .arg("check")
            .arg("config")
            .arg(&file));
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{name}: {text}");
        assert!(!text.contains("WARNING"), "{name}: {text}");
        assert!(
            text.contains("SUCCESS: 2 rule files found"),
            "{name}: {text}"
        );
    }
}

#[cfg_attr(
    not(have_alertmanager),
    ignore = "SKIPPED: needs amtool and prometheus-alertmanager -- apt-get install prometheus-alertmanager"
)]
#[test]
fn alertmanager_example_passes_amtool() {
    tools::require(&[&prereqs::ALERTMANAGER]);
    let file = packaging().join("alertmanager/alertmanager.yml");
    let out = run_ok(Command::new("amtool").arg("check-config").arg(&file));
    assert!(out.contains("SUCCESS"), "{out}");
    assert!(out.contains(" - 1 inhibit rules"), "{out}");
}

/// The example's inhibit rule in a real Alertmanager: while HostDown fires
/// for a host, that host's other alerts are suppressed, another host's are
/// not, and neither are Muster's own alerts (no `host_id`), not even by a
/// HostDown without `host_id` (Alertmanager treats a label missing on both
/// sides as equal, which the rule guards against).
#[cfg_attr(
    not(have_alertmanager),
    ignore = "SKIPPED: needs amtool and prometheus-alertmanager -- apt-get install prometheus-alertmanager"
)]
#[tokio::test]
async fn alertmanager_inhibits_a_down_hosts_other_alerts_only() {
    tools::require(&[&prereqs::ALERTMANAGER]);
    let dir = tempfile::tempdir().expect("temp dir");
    let client = muster_e2e::http_client();
    let mut attempt = 0;
    let (_alertmanager, url) = loop {
        attempt += 1;
        let addr = closed_addr();
        let mut process = muster_e2e::Process::spawn(
            Command::new("prometheus-alertmanager")
                .arg(format!(
                    "--config.file={}",
                    packaging().join("alertmanager/alertmanager.yml").display()
                ))
                .arg(format!(
                    "--storage.path={}",
                    dir.path().join(format!("data-{attempt}")).display()
                ))
                .arg(format!("--web.listen-address={addr}"))
                .arg("--cluster.listen-address="),
        );
        let url = format!("http://{addr}");
        let until = Instant::now() + DEADLINE;
        let mut ready = false;
        while Instant::now() < until && process.try_wait().is_none() {
            if let Ok(r) = client.get(format!("{url}/-/ready")).send().await {
                if r.status().is_success() {
                    ready = true;
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if ready {
            break (process, url);
        }
        assert!(
            attempt < 3,
            "alertmanager did not start\n{}",
            process.logs()
        );
    };
    let alert = |name: &str, host: Option<&str>| {
        let mut labels = json!({"alertname": name, "severity": "warning"});
        if let Some(h) = host {
            labels["host_id"] = json!(h);
            labels["instance"] = json!(format!("{h}:12345"));
        }
        json!({"labels": labels})
    };
    let alerts = json!([
        alert("HostDown", Some("web-1-a1b2c3")),
        alert("HighCPUUsage", Some("web-1-a1b2c3")),
        alert("DiskSpaceLow", Some("web-2-d4e5f6")),
        alert("MusterHostsStale", None),
    ]);
    let mut alerts = alerts;
    let mut foreign = alert("HostDown", None);
    foreign["labels"]["job"] = json!("other");
    alerts.as_array_mut().expect("array").push(foreign);
    let resp = client
        .post(format!("{url}/api/v2/alerts"))
        .json(&alerts)
        .send()
        .await
        .expect("post alerts");
    assert!(resp.status().is_success(), "{}", resp.status());

    let until = Instant::now() + DEADLINE;
    loop {
        let listed: Value = client
            .get(format!("{url}/api/v2/alerts"))
            .send()
            .await
            .expect("alerts")
            .json()
            .await
            .expect("alerts JSON");
        let state = |name: &str| {
            listed
                .as_array()
                .into_iter()
                .flatten()
                .find(|a| a["labels"]["alertname"] == name)
                .map(|a| {
                    let inhibited = a["status"]["inhibitedBy"]
                        .as_array()
                        .is_some_and(|v| !v.is_empty());
                    (a["status"]["state"].clone(), inhibited)
                })
        };
        let expected = [
            ("HostDown", false),
            ("HighCPUUsage", true),
            ("DiskSpaceLow", false),
            ("MusterHostsStale", false),
        ];
        let all = expected.iter().all(|(name, inhibited)| {
            state(name).is_some_and(|(s, i)| {
                i == *inhibited && s == if *inhibited { "suppressed" } else { "active" }
            })
        });
        if all {
            break;
        }
        assert!(Instant::now() < until, "unexpected inhibition: {listed:#}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// What the fixture exporter serves at `path` after `t` seconds: the node
/// exporter series the rules and dashboard read (a host 95% busy, 95% of
/// memory used, / 95% full) and Muster's own families, every counter growing
/// with `t` so `rate` and `increase` have something to say, and every alert
/// condition true.
fn fixture(path: &str, t: f64) -> String {
    match path {
        "/node" => format!(
            "node_cpu_seconds_total{{cpu=\"0\",mode=\"idle\"}} {idle}\n\
             node_cpu_seconds_total{{cpu=\"0\",mode=\"user\"}} {user}\n\
             node_memory_MemAvailable_bytes 5e8\n\
             node_memory_MemTotal_bytes 1e10\n\
             node_filesystem_avail_bytes{{device=\"/dev/sda1\",fstype=\"ext4\",mountpoint=\"/\"}} 5e8\n\
             node_filesystem_size_bytes{{device=\"/dev/sda1\",fstype=\"ext4\",mountpoint=\"/\"}} 1e10\n\
             node_filesystem_avail_bytes{{device=\"tmpfs\",fstype=\"tmpfs\",mountpoint=\"/run\"}} 1e6\n\
             node_filesystem_size_bytes{{device=\"tmpfs\",fstype=\"tmpfs\",mountpoint=\"/run\"}} 1e9\n\
             node_network_receive_bytes_total{{device=\"eth0\"}} {net}\n\
             node_network_transmit_bytes_total{{device=\"eth0\"}} {net}\n",
            idle = 0.05 * t,
            user = 0.95 * t,
            net = 1000.0 * t,
        ),
        "/muster" => {
            let mut text = String::new();
            for (state, n) in [
                ("enrolled", 0),
                ("config_applied", 3),
                ("config_failed", 1),
                ("scrape_ok", 0),
                ("scrape_failing", 0),
                ("stale", 1),
                ("decommissioned", 2),
            ] {
                text += &format!("muster_hosts{{state=\"{state}\"}} {n}\n");
            }
            text += &format!(
                "muster_target_drift_hosts 1\n\
                 muster_certificates_expiring_hosts 1\n\
                 muster_config_rollout_hosts{{status=\"current\"}} 3\n\
                 muster_config_rollout_hosts{{status=\"outdated\"}} 1\n\
                 muster_prometheus_reloads_total{{outcome=\"success\"}} {t}\n\
                 muster_prometheus_reloads_total{{outcome=\"failure\"}} {t}\n\
                 muster_enrollments_total{{outcome=\"enrolled\"}} {t}\n\
                 muster_enrollments_total{{outcome=\"unauthorized\"}} {many}\n\
                 muster_admin_auth_refusals_total {t}\n\
                 muster_agent_requests_total{{route=\"/v1/agent/config\",status=\"304\"}} {t}\n\
                 muster_agent_request_duration_seconds_bucket{{route=\"/v1/agent/config\",le=\"0.005\"}} {t}\n\
                 muster_agent_request_duration_seconds_bucket{{route=\"/v1/agent/config\",le=\"+Inf\"}} {t}\n\
                 muster_agent_request_duration_seconds_sum{{route=\"/v1/agent/config\"}} {sum}\n\
                 muster_agent_request_duration_seconds_count{{route=\"/v1/agent/config\"}} {t}\n",
                many = 100.0 * t,
                sum = 0.001 * t,
            );
            text
        }
        _ => String::new(),
    }
}

/// The `muster_…` family names the fixture serves (histograms by their base
/// name): the real server's `/metrics` must have each (see the end-to-end
/// test), so the fixture cannot drift from what Muster serves.
fn fixture_muster_families() -> Vec<String> {
    let mut names: Vec<String> = fixture("/muster", 1.0)
        .lines()
        .map(|l| {
            let name = l.split(['{', ' ']).next().expect("a name");
            ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(name)
                .to_string()
        })
        .collect();
    names.dedup();
    names
}

/// Serves [`fixture`] over plain HTTP on a loopback port 0 until dropped.
async fn serve_fixture() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let start = Instant::now();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&request);
                let path = text.split(' ').nth(1).unwrap_or_default();
                let body = fixture(path, 1000.0 + start.elapsed().as_secs_f64());
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = conn.write_all(format!("{head}{body}").as_bytes()).await;
            });
        }
    });
    (addr, task)
}

/// A loopback address nothing listens on (a scrape of it fails: `up == 0`).
fn closed_addr() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind")
}

/// Every PromQL expression of the dashboard (panels and template variables,
/// variables substituted as Grafana would with "All" selected) with where it
/// comes from.
fn dashboard_expressions(dashboard: &Value) -> Vec<(String, String)> {
    fn walk(panels: &Value, out: &mut Vec<(String, String)>) {
        for panel in panels.as_array().into_iter().flatten() {
            let title = panel["title"].as_str().unwrap_or_default();
            for target in panel["targets"].as_array().into_iter().flatten() {
                let expr = target["expr"].as_str().expect("every target has an expr");
                out.push((format!("panel {title:?}"), expr.to_string()));
            }
            walk(&panel["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    for var in dashboard["templating"]["list"]
        .as_array()
        .expect("templating")
    {
        if var["type"] == "query" {
            let query = var["query"]["query"].as_str().expect("variable query");
            // label_values(SELECTOR, label): Prometheus evaluates SELECTOR.
            let selector = query
                .strip_prefix("label_values(")
                .and_then(|q| q.rsplit_once(','))
                .map(|(s, _)| s)
                .unwrap_or_else(|| panic!("unexpected variable query {query}"));
            out.push((format!("variable {}", var["name"]), selector.to_string()));
        }
    }
    out.into_iter()
        .map(|(from, expr)| {
            let expr = expr
                .replace("$__rate_interval", "1m")
                .replace("$environment", ".*")
                .replace("$hostname", ".*")
                .replace("$instance", ".*");
            assert!(
                !expr.contains('$'),
                "{from}: unsubstituted variable in {expr}"
            );
            (from, expr)
        })
        .collect()
}

#[test]
fn dashboard_is_importable_with_the_datasource_as_an_input() {
    let dashboard: Value =
        serde_json::from_str(&read(&packaging().join("grafana/muster-fleet.json")))
            .expect("dashboard JSON");
    assert_eq!(dashboard["__inputs"][0]["name"], "DS_PROMETHEUS");
    assert_eq!(dashboard["__inputs"][0]["pluginId"], "prometheus");
    let text = dashboard.to_string();
    assert!(
        !text.contains("\"uid\":\"prometheus\""),
        "a hard-coded datasource"
    );
    let variables: Vec<&str> = dashboard["templating"]["list"]
        .as_array()
        .expect("templating")
        .iter()
        .map(|v| v["name"].as_str().expect("name"))
        .collect();
    assert_eq!(
        variables,
        ["environment", "hostname", "instance", "filters"]
    );
    let mut ids: Vec<i64> = Vec::new();
    fn walk(panels: &Value, ids: &mut Vec<i64>) {
        for p in panels.as_array().into_iter().flatten() {
            ids.push(p["id"].as_i64().expect("panel id"));
            if p["type"] != "row" {
                assert_eq!(p["datasource"]["uid"], "${DS_PROMETHEUS}", "{}", p["title"]);
            }
            walk(&p["panels"], ids);
        }
    }
    walk(&dashboard["panels"], &mut ids);
    let count = ids.len();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), count, "panel ids are unique");
}

#[cfg_attr(
    not(have_prometheus),
    ignore = "SKIPPED: needs prometheus -- apt-get install prometheus"
)]
#[tokio::test]
async fn every_rule_and_dashboard_expression_evaluates_to_data_in_prometheus() {
    let root = tempfile::tempdir().expect("temp dir");
    let (addr, _server) = serve_fixture().await;
    let host = |id: &str, name: &str, target: String, path: &str| {
        json!({"targets": [target], "labels": {
            "__metrics_path__": path, "host_id": id, "hostname": name,
            "environment": "production", "maintainers": "ops", "os": "linux", "arch": "x86_64"}})
    };
    let targets = json!([
        host("web-1-a1b2c3", "web-1", addr.to_string(), "/node"),
        host("web-2-d4e5f6", "web-2", closed_addr().to_string(), "/node"),
    ]);
    std::fs::write(root.path().join("hosts.json"), targets.to_string()).expect("targets");
    let rules: Vec<String> = files(&packaging().join("prometheus/rules"), ".yml")
        .iter()
        .map(|p| Value::from(p.to_string_lossy()).to_string())
        .collect();
    let config = format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
         rule_files: [{rules}]\n\
         scrape_configs:\n\
         \x20 - job_name: muster\n    file_sd_configs:\n      - files: [hosts.json]\n        refresh_interval: 1s\n\
         \x20 - job_name: muster-server\n    metrics_path: /muster\n    static_configs:\n      - targets: [\"{addr}\", \"{down}\"]\n",
        rules = rules.join(", "),
        down = closed_addr(),
    );
    let prometheus = Prometheus::start_with(&config, root.path()).await;
    // Two scrapes of each target, so rate() and increase() answer.
    prometheus
        .wait_for("count_over_time(up[1m]) >= 3", |r| r.len() == 4, DEADLINE)
        .await;

    // Every rule loaded, evaluated without error, and its expression (the
    // alert conditions all hold in the fixture) has data.
    let until = Instant::now() + DEADLINE;
    let loaded = loop {
        let data = prometheus.rules().await.expect("rules API");
        let rules: Vec<Value> = data["groups"]
            .as_array()
            .expect("groups")
            .iter()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect();
        let evaluated = rules.iter().all(|r| {
            r["lastEvaluation"]
                .as_str()
                .is_some_and(|t| !t.starts_with("0001"))
        });
        if evaluated && !rules.is_empty() {
            break rules;
        }
        assert!(Instant::now() < until, "rules not evaluated: {data:#}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let expected = rule_names();
    assert_eq!(loaded.len(), expected.len(), "{loaded:#?}");
    for rule in &loaded {
        let name = rule["name"].as_str().expect("name");
        assert_eq!(rule["health"], "ok", "rule {name}: {rule:#}");
        let query = rule["query"].as_str().expect("query");
        let samples = prometheus
            .try_query(query)
            .await
            .unwrap_or_else(|e| panic!("rule {name}: {query}: {e}"));
        assert!(!samples.is_empty(), "rule {name}: {query} has no data");
    }
    let last_seen = prometheus.query("node_last_seen_timestamp").await;
    assert_eq!(last_seen.len(), 1, "only web-1 was ever up: {last_seen:?}");
    assert_eq!(last_seen[0].0["hostname"], "web-1");

    let dashboard: Value =
        serde_json::from_str(&read(&packaging().join("grafana/muster-fleet.json")))
            .expect("dashboard JSON");
    let exprs = dashboard_expressions(&dashboard);
    assert!(exprs.len() >= 20, "{exprs:?}");
    for (from, expr) in exprs {
        // `X or vector(0)` always has data: X itself must too.
        let parts = match expr.strip_suffix(" or vector(0)") {
            Some(x) => vec![expr.clone(), x.to_string()],
            None => vec![expr],
        };
        for expr in parts {
            let samples = prometheus
                .try_query(&expr)
                .await
                .unwrap_or_else(|e| panic!("{from}: {expr}: {e}"));
            assert!(!samples.is_empty(), "{from}: {expr} has no data");
        }
    }
}

/// End to end: the real server, a real agent with the Alloy stand-in, and a
/// real Prometheus that finds the host through `http_sd_configs` (a
/// targets-reader token, Muster's CA) and scrapes Muster's own `/metrics`.
#[cfg_attr(
    not(all(have_prometheus, have_promtool)),
    ignore = "SKIPPED: needs prometheus and promtool -- apt-get install prometheus"
)]
#[tokio::test]
async fn prometheus_finds_hosts_over_http_sd_and_watches_muster() {
    tools::require(&[&prereqs::PROMTOOL]);
    let root = tempfile::tempdir().expect("temp dir");
    let data = root.path().join("data");
    let pin = init(&data);
    edit_settings(&data, &[FAST_CHECKINS]);
    disable_detected_services(&data);
    // No --prometheus-url: this Prometheus is "on another machine" and no
    // scrape check turns config_applied into scrape_ok.
    let server = Server::start(&data);
    let client = server.client();

    // Health on both listeners, without a token.
    for base in [server.agent_url(), server.admin_url()] {
        for (path, status) in [("/healthz", "ok"), ("/readyz", "ready")] {
            let resp = client
                .get(format!("{base}{path}"))
                .send()
                .await
                .expect(path);
            assert_eq!(resp.status(), 200, "{base}{path}");
            let body: Value = resp.json().await.expect("JSON");
            assert_eq!(body["status"], status, "{base}{path}: {body}");
        }
    }

    // A targets-reader token reads targets and nothing else.
    let reader = admin(
        &server,
        reqwest::Method::POST,
        "/v1/admin/reader-tokens",
        Some(json!({"name": "prometheus"})),
    )
    .await;
    let token = reader["token"].as_str().expect("token").to_string();
    assert!(token.starts_with("mtr_"), "{reader}");
    let sd = format!("{}/v1/sd/targets", server.admin_url());
    for (bearer, status) in [
        (None, 401),
        (Some("mtr_000000000000_nope"), 401),
        (Some(token.as_str()), 200),
    ] {
        let mut req = client.get(&sd);
        if let Some(b) = bearer {
            req = req.bearer_auth(b);
        }
        assert_eq!(req.send().await.expect("sd").status(), status, "{bearer:?}");
    }
    for path in ["/v1/admin/hosts", "/v1/admin/audit"] {
        let resp = client
            .get(format!("{}{path}", server.admin_url()))
            .bearer_auth(&token)
            .send()
            .await
            .expect("admin route");
        assert_eq!(resp.status(), 401, "a reader token on {path}");
    }
    let token_file = root.path().join("muster-sd.token");
    std::fs::write(&token_file, &token).expect("token file");

    let quoted = |p: &Path| Value::from(p.to_string_lossy()).to_string();
    let config = format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
         scrape_configs:\n\
         \x20 - job_name: muster\n    http_sd_configs:\n      - url: {url}\n        refresh_interval: 1s\n\
         \x20       authorization:\n          type: Bearer\n          credentials_file: {token}\n\
         \x20       tls_config:\n          ca_file: {ca}\n\
         \x20 - job_name: muster-server\n    scheme: https\n    tls_config:\n      ca_file: {ca}\n\
         \x20   static_configs:\n      - targets: [\"{admin}\"]\n",
        url = Value::from(sd.clone()),
        token = quoted(&token_file),
        ca = quoted(&data.join("ca.crt")),
        admin = server.admin_addr(),
    );
    let prometheus = Prometheus::start_with(&config, root.path()).await;

    // Muster's /metrics: promtool-clean, and every family the rules and the
    // dashboard read (the fixture above) is there.
    let text = client
        .get(format!("{}/metrics", server.admin_url()))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    for family in fixture_muster_families() {
        assert!(
            text.contains(&format!("\n{family}")),
            "{family} missing:\n{text}"
        );
    }
    assert!(text.contains("process_resident_memory_bytes"), "{text}");
    // The refused token requests above (two on /v1/sd/targets, two on admin
    // routes) count as refused admin authentications.
    assert!(
        text.contains("\nmuster_admin_auth_refusals_total 4\n"),
        "{text}"
    );
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool");
    use std::io::Write as _;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write metrics");
    let out = child.wait_with_output().expect("promtool");
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // A host enrolls and applies its config.
    let created = new_token(&server, json!({"labels": {"env": "e2e"}})).await;
    let host = AlloyHost::new(root.path(), "sd-host", 11).await;
    run_ok(&mut host.enroll(&server, created["token"].as_str().expect("token"), &pin));
    let _agent = host.run_daemon();

    let up = prometheus
        .wait_for(
            "up{job=\"muster\", service=\"\"}",
            |r| r.len() == 1 && r[0].1 == 1.0,
            DEADLINE,
        )
        .await;
    let host_id = up[0].0["host_id"].clone();
    assert_eq!(up[0].0["env"], "e2e");
    assert_eq!(up[0].0["instance"], host.standin.addr().to_string());
    // The http_sd answer is exactly the target file's groups.
    let file: Value =
        serde_json::from_str(&read(&data.join("targets").join(format!("{host_id}.json"))))
            .expect("target file");
    let served: Value = client
        .get(&sd)
        .bearer_auth(&token)
        .send()
        .await
        .expect("sd")
        .json()
        .await
        .expect("sd JSON");
    assert_eq!(served, file);

    prometheus
        .wait_for(
            "muster_hosts{job=\"muster-server\", state=\"config_applied\"} == 1",
            |r| r.len() == 1,
            DEADLINE,
        )
        .await;
    prometheus
        .wait_for(
            "muster_enrollments_total{job=\"muster-server\", outcome=\"enrolled\"} >= 1",
            |r| r.len() == 1,
            DEADLINE,
        )
        .await;
    prometheus
        .wait_for(
            "muster_config_rollout_hosts{job=\"muster-server\", status=\"current\"} == 1",
            |r| r.len() == 1,
            DEADLINE,
        )
        .await;

    // Decommission: Prometheus loses the target, Muster's metrics follow.
    admin(
        &server,
        reqwest::Method::POST,
        &format!("/v1/admin/hosts/{host_id}/decommission"),
        None,
    )
    .await;
    let served: Value = client
        .get(&sd)
        .bearer_auth(&token)
        .send()
        .await
        .expect("sd")
        .json()
        .await
        .expect("sd JSON");
    assert_eq!(served, json!([]));
    prometheus
        .wait_for("up{job=\"muster\"}", |r| r.is_empty(), DEADLINE)
        .await;
    prometheus
        .wait_for(
            "muster_hosts{job=\"muster-server\", state=\"decommissioned\"} == 1 \
             and on() muster_hosts{job=\"muster-server\", state=\"config_applied\"} == 0",
            |r| r.len() == 1,
            DEADLINE,
        )
        .await;
}
