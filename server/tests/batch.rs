//! Batch enrollment against the real server binary: whole-file validation
//! with line numbers, `--skip-invalid`, tokens bound to hostnames, per-host
//! status, retries, and the CLI's renderings. Issue 4.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{Fixture, TestAgent};
use muster_e2e::{bin_path, run, run_fail, run_ok};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const SCHEMA: &str = r#"
[labels]
required = ["environment"]
allowed = ["maintainers", "location"]
[labels.rules.environment]
values = ["production", "staging"]
"#;

fn with_schema() -> Fixture {
    Fixture::start_with(|data| {
        let path = data.join("server.toml");
        let mut toml = std::fs::read_to_string(&path).expect("server.toml");
        toml.push_str(SCHEMA);
        std::fs::write(&path, toml).expect("write");
    })
}

async fn import(f: &Fixture, body: Value) -> (StatusCode, Value) {
    f.admin(Method::POST, "/v1/admin/batches", Some(body)).await
}

async fn batch_status(f: &Fixture, id: &str) -> Value {
    let (status, body) = f
        .admin(Method::GET, &format!("/v1/admin/batches/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

fn entry<'a>(status: &'a Value, hostname: &str) -> &'a Value {
    status["hosts"]
        .as_array()
        .expect("hosts")
        .iter()
        .find(|h| h["hostname"] == hostname)
        .unwrap_or_else(|| panic!("no row {hostname} in {status}"))
}

const GOOD_AND_BAD: &str = "hostname,environment,maintainer,address\n\
    web-01,production,,10.0.0.1\n\
    web-02,prod,,\n\
    web-03,staging,ops,\n\
    web-01,staging,,\n\
    db-01,staging,,\n";

#[tokio::test]
async fn an_invalid_row_refuses_the_whole_file_with_its_line_number() {
    let f = with_schema();
    // The header names a misspelt label: every row using it is refused.
    let (status, body) = import(&f, json!({"content": GOOD_AND_BAD, "name": "fleet.csv"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], "invalid_rows");
    let message = body["error"]["message"].as_str().expect("message");
    assert!(
        message.starts_with("3 of 5 rows are invalid; nothing was imported"),
        "{message}"
    );
    assert!(
        message.contains("line 3 (web-02): label \"environment\": value \"prod\" breaks rule labels.rules.environment.values"),
        "{message}"
    );
    assert!(message.contains("line 4 (web-03): label \"maintainer\" is not allowed by the label schema; did you mean \"maintainers\"?"), "{message}");
    assert!(
        message.contains("line 5 (web-01): hostname is already on line 2"),
        "{message}"
    );
    let lines: Vec<u64> = body["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| r["line"].as_u64().expect("line"))
        .collect();
    assert_eq!(lines, vec![3, 4, 5]);

    // JSON: the line where the entry starts.
    let json_file = "[\n  {\"hostname\": \"a-01\", \"labels\": {\"environment\": \"staging\"}},\n  {\"hostname\": \"a 02\", \"labels\": {\"environment\": \"staging\"}}\n]\n";
    let (status, body) = import(&f, json!({"content": json_file})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["rows"][0]["line"], 3, "{body}");
    assert!(body["rows"][0]["message"]
        .as_str()
        .expect("m")
        .contains("hostname"));
    let (status, body) = import(
        &f,
        json!({"content": "hostname,environment\n", "format": "csv"}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    // Nothing was stored: no batch, no token.
    let (_, batches) = f.admin(Method::GET, "/v1/admin/batches", None).await;
    assert_eq!(batches, json!([]));
    let (_, tokens) = f.admin(Method::GET, "/v1/admin/tokens", None).await;
    assert_eq!(tokens, json!([]));
}

/// The hostnames already taken are read inside the transaction that
/// creates the batch: imports racing for one hostname pre-register it once.
#[tokio::test]
async fn concurrent_imports_of_one_hostname_pre_register_it_once() {
    let f = with_schema();
    let attempts = (0..8).map(|i| {
        import(
            &f,
            json!({"content": "hostname,environment\nrace-01,staging\n", "name": format!("r{i}")}),
        )
    });
    let answers = common::join_all(attempts).await;
    let ok = answers.iter().filter(|(s, _)| *s == StatusCode::OK).count();
    assert_eq!(ok, 1, "{answers:?}");
    for (status, body) in answers.iter().filter(|(s, _)| *s != StatusCode::OK) {
        assert_eq!(*status, StatusCode::BAD_REQUEST, "{body}");
        let message = body["rows"][0]["message"].as_str().expect("message");
        assert!(
            message.starts_with("hostname is already pending in batch"),
            "{body}"
        );
    }
    let (_, batches) = f.admin(Method::GET, "/v1/admin/batches", None).await;
    assert_eq!(batches.as_array().map(Vec::len), Some(1), "{batches}");
}

#[tokio::test]
async fn skip_invalid_imports_the_valid_rows_and_bound_tokens_enroll_only_their_host() {
    let f = with_schema();
    let (status, imported) = import(
        &f,
        json!({"content": GOOD_AND_BAD, "name": "fleet.csv", "skip_invalid": true}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{imported}");
    let hosts = imported["hosts"].as_array().expect("hosts");
    let names: Vec<&str> = hosts
        .iter()
        .map(|h| h["hostname"].as_str().expect("h"))
        .collect();
    assert_eq!(names, vec!["web-01", "db-01"]);
    assert_eq!(imported["invalid"].as_array().map(Vec::len), Some(3));
    let batch = imported["batch"]["id"]
        .as_str()
        .expect("batch id")
        .to_string();
    let token_web = hosts[0]["token"].as_str().expect("token").to_string();
    assert!(hosts[0]["enroll_command"]
        .as_str()
        .expect("cmd")
        .contains(&format!("--token {token_web} --pin sha256//")));

    let status = batch_status(&f, &batch).await;
    assert_eq!(status["totals"]["pending"], 2, "{status}");
    assert_eq!(entry(&status, "web-01")["address"], "10.0.0.1");

    // Another host presenting web-01's token is refused and spends nothing.
    let intruder = TestAgent::new("db-01", "m-intruder");
    let (code, body) = f
        .enroll(&intruder.enroll_body(&token_web, "idem-batch-01"))
        .await;
    assert_eq!(code, StatusCode::FORBIDDEN, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .expect("m")
        .contains("another hostname"));
    assert!(f.hosts().await.is_empty());
    let status = batch_status(&f, &batch).await;
    let web = entry(&status, "web-01");
    assert_eq!(web["state"], "pending");
    assert!(
        web["problem"]
            .as_str()
            .expect("problem")
            .contains("bound to hostname \"web-01\", not \"db-01\""),
        "{web}"
    );
    assert_eq!(web["retryable"], true);

    // The right host (FQDN form) enrolls with exactly its row's labels.
    let agent = TestAgent::new("web-01.example.com", "m-web-01");
    let (code, body) = f
        .enroll(&agent.enroll_body(&token_web, "idem-batch-02"))
        .await;
    assert_eq!(code, StatusCode::OK, "{body}");
    let host_id = body["host_id"].as_str().expect("id");
    let host = &f.hosts().await[0];
    assert_eq!(host["batch_id"], batch.as_str());
    let mut labels = host["labels"].as_object().expect("labels").clone();
    for fact in ["host_id", "hostname", "os", "arch"] {
        labels.remove(fact);
    }
    assert_eq!(Value::Object(labels), json!({"environment": "production"}));
    let status = batch_status(&f, &batch).await;
    let web = entry(&status, "web-01");
    assert_eq!(web["state"], "enrolled");
    assert_eq!(web["host_id"], host_id);
    assert!(web.get("problem").is_none(), "{web}");
    assert_eq!(status["totals"], json!({"enrolled": 1, "pending": 1}));

    // The same hostname cannot be imported again while it is enrolled.
    let (code, body) = import(
        &f,
        json!({"content": "hostname,environment\nweb-01.example.com,staging\n"}),
    )
    .await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .expect("m")
        .contains(&format!("already enrolled as host {host_id}")));
}

#[tokio::test]
async fn retry_reissues_tokens_only_for_failed_or_expired_rows() {
    let f = with_schema();
    let csv = "hostname,environment\nr-01,staging\nr-02,staging\nr-03,staging\n";
    let (status, imported) = import(&f, json!({"content": csv, "ttl_secs": 2})).await;
    assert_eq!(status, StatusCode::OK, "{imported}");
    let batch = imported["batch"]["id"].as_str().expect("id").to_string();
    let token = |name: &str| {
        imported["hosts"]
            .as_array()
            .expect("hosts")
            .iter()
            .find(|h| h["hostname"] == name)
            .expect("row")["token"]
            .as_str()
            .expect("token")
            .to_string()
    };
    // r-01 enrolls in time.
    let r1 = TestAgent::new("r-01", "m-r-01");
    let (code, body) = f
        .enroll(&r1.enroll_body(&token("r-01"), "idem-retry-1"))
        .await;
    assert_eq!(code, StatusCode::OK, "{body}");

    // A pending row with a live token is not retried.
    let (code, body) = f
        .admin(
            Method::POST,
            &format!("/v1/admin/batches/{batch}/retry"),
            Some(json!({"host": "r-02"})),
        )
        .await;
    assert_eq!(code, StatusCode::CONFLICT, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .expect("m")
        .contains("pending with a valid token"));

    // Wait (poll) until the other tokens have expired.
    let until = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let status = batch_status(&f, &batch).await;
        if entry(&status, "r-02")["retryable"] == true {
            assert!(entry(&status, "r-02")["problem"]
                .as_str()
                .expect("p")
                .contains("expired"));
            break;
        }
        assert!(std::time::Instant::now() < until, "never expired: {status}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (code, body) = f
        .admin(
            Method::POST,
            &format!("/v1/admin/batches/{batch}/retry"),
            Some(json!({"host": "r-01"})),
        )
        .await;
    assert_eq!(
        code,
        StatusCode::CONFLICT,
        "an enrolled row is never retried: {body}"
    );

    let (code, retried) = f
        .admin(
            Method::POST,
            &format!("/v1/admin/batches/{batch}/retry"),
            Some(json!({})),
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{retried}");
    let names: Vec<&str> = retried["hosts"]
        .as_array()
        .expect("hosts")
        .iter()
        .map(|h| h["hostname"].as_str().expect("h"))
        .collect();
    assert_eq!(names, vec!["r-02", "r-03"]);
    // The old token is revoked; the new one works.
    let r2 = TestAgent::new("r-02", "m-r-02");
    let (code, _) = f
        .enroll(&r2.enroll_body(&token("r-02"), "idem-retry-2"))
        .await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    let new_token = retried["hosts"][0]["token"].as_str().expect("token");
    let (code, body) = f.enroll(&r2.enroll_body(new_token, "idem-retry-3")).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    let status = batch_status(&f, &batch).await;
    assert_eq!(status["totals"]["enrolled"], 2, "{status}");
    let audit = f.audit().await;
    assert!(audit
        .iter()
        .any(|a| a["action"] == "batch.retry" && a["target"] == batch.as_str()));
    assert!(audit.iter().any(|a| a["action"] == "batch.import"));
}

fn cli(f: &Fixture, args: &[&str]) -> Command {
    let mut cmd = Command::new(bin_path("muster-server"));
    cmd.args(args)
        .arg("--data-dir")
        .arg(f.data_dir())
        .arg("--admin-url")
        .arg(f.server.admin_url());
    cmd
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write file");
    path
}

#[tokio::test]
async fn the_cli_imports_renders_and_follows_a_batch() {
    let f = with_schema();
    let dir = f.dir.path();
    let bad = write(dir, "bad.csv", GOOD_AND_BAD);
    let out = run_fail(cli(&f, &["batch", "import"]).arg(&bad));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("nothing was imported"), "{stderr}");
    assert!(
        stderr.contains("line 4 (web-03)") && stderr.contains("did you mean \"maintainers\"?"),
        "{stderr}"
    );

    let good = write(
        dir,
        "good.csv",
        "hostname,environment,location\nc-01,staging,rack-1\nc-02,production,\n",
    );
    let out = run_ok(cli(&f, &["batch", "import", "--format", "cloud-init"]).arg(&good));
    assert_eq!(out.matches("#cloud-config\n").count(), 2, "{out}");
    assert!(
        out.contains("\"muster-agent\", \"enroll\", \"--server\""),
        "{out}"
    );

    let out = run_ok(cli(&f, &["batch", "import", "--format", "csv"]).arg(write(
        dir,
        "more.csv",
        "hostname,environment\nc-03,staging\n",
    )));
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("hostname,line,token,enroll_command"));
    assert!(
        lines.next().expect("row").starts_with("c-03,2,mte_"),
        "{out}"
    );

    let out = run_ok(&mut cli(&f, &["batch", "list"]));
    assert!(
        out.contains("good.csv") && out.contains("more.csv"),
        "{out}"
    );
    let batches: Value =
        serde_json::from_str(&run_ok(&mut cli(&f, &["batch", "list", "--json"]))).expect("JSON");
    let id = batches
        .as_array()
        .expect("batches")
        .iter()
        .find(|b| b["name"] == "good.csv")
        .expect("good.csv batch")["id"]
        .as_str()
        .expect("id");
    let out = run_ok(&mut cli(&f, &["batch", "status", id]));
    assert!(out.contains("c-01") && out.contains("pending"), "{out}");
    assert!(out.contains("0/2 config_applied"), "{out}");
    let out = run_ok(&mut cli(&f, &["batch", "retry", id]));
    assert!(out.contains("Nothing to retry"), "{out}");

    // --watch follows until every row settles; expired tokens are a
    // failure (exit 1) that names `batch retry`.
    let short = write(dir, "short.csv", "hostname,environment\nw-01,staging\n");
    let out = run_ok(cli(&f, &["batch", "import", "--ttl", "1s", "--json"]).arg(&short));
    let short_id = serde_json::from_str::<Value>(&out).expect("JSON")["batch"]["id"]
        .as_str()
        .expect("id")
        .to_string();
    let out = run_fail(&mut cli(
        &f,
        &[
            "batch",
            "status",
            &short_id,
            "--watch",
            "--interval",
            "200ms",
        ],
    ));
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("[------------------------------] 0/1 config_applied"),
        "{stdout}"
    );
    assert!(
        stdout.contains("token expired") && stdout.contains("(batch retry)"),
        "{stdout}"
    );

    let out = run(&mut cli(&f, &["batch", "status", "b-nope"]));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no batch"));
}

#[tokio::test]
async fn the_cli_labels_decommissions_checks_and_audits() {
    let f = with_schema();
    let token = f.token(json!({"labels": {"environment": "staging"}})).await;
    let agent = TestAgent::new("cli-01", "m-cli-01");
    let (_, body) = f.enroll(&agent.enroll_body(&token, "idem-cli-01")).await;
    let id = body["host_id"].as_str().expect("id").to_string();

    let out = run_fail(&mut cli(&f, &["hosts", "label", &id, "maintainer=ops"]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("did you mean \"maintainers\"?"), "{stderr}");
    let out = run_ok(&mut cli(
        &f,
        &["hosts", "label", &id, "maintainers=ops", "location=rack-9"],
    ));
    assert!(out.contains("1 host(s) matched, 1 changed"), "{out}");
    let out = run_ok(&mut cli(
        &f,
        &[
            "hosts",
            "label",
            "--selector",
            "location=rack-9",
            "--remove",
            "location",
        ],
    ));
    assert!(out.contains("1 changed"), "{out}");
    let out = run_fail(&mut cli(&f, &["hosts", "label", "maintainers=ops"]));
    assert_eq!(out.status.code(), Some(64));

    let out = run_ok(&mut cli(
        &f,
        &["hosts", "list", "--selector", "maintainers=ops"],
    ));
    assert!(out.contains(&id) && out.contains("ALLOY"), "{out}");
    let out = run_ok(&mut cli(&f, &["hosts", "show", &id]));
    assert!(
        out.contains("maintainers=ops") && out.contains("config state:"),
        "{out}"
    );
    let out = run(&mut cli(&f, &["labels", "check"]));
    assert!(out.status.success(), "{out:?}");

    let out = run_fail(&mut cli(&f, &["hosts", "decommission", &id]));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--yes"),
        "{out:?}"
    );
    assert_eq!(f.hosts().await.len(), 1, "not decommissioned without --yes");
    let out = run_ok(&mut cli(&f, &["hosts", "decommission", &id, "--yes"]));
    assert!(
        out.contains(&format!("target file renamed to {id}.json.deleted.")),
        "{out}"
    );
    let out = run_ok(&mut cli(&f, &["hosts", "list", "--all"]));
    assert!(out.contains("decommissioned"), "{out}");

    let out = run_ok(&mut cli(&f, &["audit", "--host", &id, "--since", "1h"]));
    for want in [
        "host.label",
        "host.decommission",
        "enroll",
        "127.0.0.1",
        "SOURCE",
    ] {
        assert!(out.contains(want), "{want}: {out}");
    }
    let rows: Value =
        serde_json::from_str(&run_ok(&mut cli(&f, &["audit", "--json", "--limit", "2"])))
            .expect("JSON");
    assert_eq!(rows.as_array().map(Vec::len), Some(2));
    let out = run_fail(&mut cli(&f, &["audit", "--since", "someday"]));
    assert_eq!(out.status.code(), Some(64));

    let help = run_ok(Command::new(bin_path("muster-server")).args(["batch", "import", "--help"]));
    assert!(
        help.contains("hostname,address,environment,location") && help.contains("--skip-invalid"),
        "{help}"
    );
    let help = run_ok(Command::new(bin_path("muster-server")).arg("--help"));
    for noun in ["batch", "labels", "audit", "hosts"] {
        assert!(help.contains(noun), "{help}");
    }
}

#[tokio::test]
async fn a_file_larger_than_the_default_body_limit_imports() {
    let f = with_schema();
    let mut csv = String::from("hostname,environment,maintainers\n");
    for i in 0..1500 {
        csv.push_str(&format!(
            "big-{i:04}.rack-a.example.com,staging,operations-team-{i:04};database-team\n"
        ));
    }
    assert!(csv.len() > 64 * 1024, "{} bytes", csv.len());
    let (status, imported) = import(&f, json!({"content": csv})).await;
    assert_eq!(status, StatusCode::OK, "{imported}");
    assert_eq!(imported["hosts"].as_array().map(Vec::len), Some(1500));
    let id = imported["batch"]["id"].as_str().expect("id");
    assert_eq!(batch_status(&f, id).await["totals"]["pending"], 1500);
}
