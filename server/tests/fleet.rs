//! Running a fleet against the real server binary: the label schema and its
//! refusals, label edits that roll out, decommission, clones and `hosts
//! replace`, stale hosts, and the audit log. Issue 4.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{answer, Fixture, TestAgent};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const SCHEMA: &str = r#"
[labels]
required = ["environment", "maintainers"]
allowed = ["location", "team"]
[labels.defaults]
environment = "production"
[labels.rules.environment]
values = ["production", "staging", "dev"]
[labels.rules.location]
pattern = "rack-[0-9]+"
"#;

fn append_settings(data: &Path, text: &str) {
    let path = data.join("server.toml");
    let mut toml = std::fs::read_to_string(&path).expect("server.toml");
    toml.push_str(text);
    std::fs::write(&path, toml).expect("write server.toml");
}

fn with_schema() -> Fixture {
    Fixture::start_with(|data| append_settings(data, SCHEMA))
}

/// An operator template that writes the host's labels into its config (the
/// built-in ones use them only in log pipelines), so label edits show there.
const LABELLED_TEMPLATE: &str =
    "{{ exporter(\"unix\", \"default\") }} {\n}\n// labels: {{ host.labels }}\n";

fn with_schema_and_labelled_config() -> Fixture {
    Fixture::start_with(|data| {
        let templates = data.parent().expect("parent").join("templates");
        std::fs::create_dir_all(&templates).expect("templates dir");
        std::fs::write(templates.join("linux.alloy.j2"), LABELLED_TEMPLATE).expect("template");
        let dir = serde_json::Value::from(templates.display().to_string());
        let settings = format!("templates_dir = {dir}\n{SCHEMA}");
        append_settings(data, &settings);
    })
}

/// Enrolls a new test agent with a fresh token; returns (agent, host id, cert PEM).
async fn enroll(f: &Fixture, hostname: &str, labels: Value) -> (TestAgent, String, String) {
    let agent = TestAgent::new(hostname, &format!("m-{hostname}"));
    let token = f.token(json!({ "labels": labels })).await;
    let (status, body) = f
        .enroll(&agent.enroll_body(&token, &format!("idem-{hostname}")))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let id = body["host_id"].as_str().expect("host id").to_string();
    let cert = body["certificate_pem"].as_str().expect("cert").to_string();
    (agent, id, cert)
}

fn error_message(body: &Value) -> &str {
    body["error"]["message"].as_str().unwrap_or_default()
}

async fn get_config(f: &Fixture, agent: &TestAgent, cert: &str) -> (StatusCode, Value) {
    let resp = agent
        .client(cert, &f.ca_pem)
        .get(format!("{}/v1/agent/config", f.server.agent_url()))
        .send()
        .await
        .expect("config request");
    answer(resp).await
}

#[tokio::test]
async fn an_unknown_label_is_refused_with_the_nearest_allowed_name_and_nothing_is_stored() {
    let f = with_schema();
    let (status, body) = f
        .admin(
            Method::POST,
            "/v1/admin/tokens",
            Some(json!({"labels": {"maintainer": "ops"}})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let message = error_message(&body);
    assert!(
        message.contains("label \"maintainer\" is not allowed by the label schema; did you mean \"maintainers\"?"),
        "{message}"
    );
    let (_, tokens) = f.admin(Method::GET, "/v1/admin/tokens", None).await;
    assert_eq!(tokens, json!([]), "a refused token is not stored");
}

#[tokio::test]
async fn a_bad_value_names_the_rule_it_broke_and_defaults_fill_in() {
    let f = with_schema();
    for (labels, rule) in [
        (
            json!({"maintainers": "ops", "environment": "prod"}),
            "labels.rules.environment.values",
        ),
        (
            json!({"maintainers": "ops", "location": "r2"}),
            "labels.rules.location.pattern",
        ),
        (
            json!({"team": "db"}),
            "required label \"maintainers\" is missing",
        ),
        (json!({"maintainers": "ops", "__x": "y"}), "reserves"),
    ] {
        let (status, body) = f
            .admin(
                Method::POST,
                "/v1/admin/tokens",
                Some(json!({ "labels": labels })),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{labels}: {body}");
        assert!(error_message(&body).contains(rule), "{rule}: {body}");
    }
    let (status, created) = f
        .admin(
            Method::POST,
            "/v1/admin/tokens",
            Some(json!({"labels": {"maintainers": "ops"}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{created}");
    assert_eq!(created["info"]["labels"]["environment"], "production");
}

#[tokio::test]
async fn a_label_change_rolls_out_to_config_target_file_and_audit() {
    let f = with_schema_and_labelled_config();
    let (agent, id, cert) = enroll(&f, "roll-01", json!({"maintainers": "ops"})).await;
    let (_, before) = get_config(&f, &agent, &cert).await;

    // Refused edits change nothing.
    for (edit, want) in [
        (
            json!({"set": {"maintaner": "x"}}),
            "did you mean \"maintainers\"?",
        ),
        (
            json!({"set": {"environment": "qa"}}),
            "labels.rules.environment.values",
        ),
        (
            json!({"remove": ["maintainers"]}),
            "required label \"maintainers\"",
        ),
        (json!({"set": {"hostname": "x"}}), "set by Muster"),
        (json!({}), "nothing to do"),
    ] {
        let (status, body) = f
            .admin(
                Method::POST,
                &format!("/v1/admin/hosts/{id}/labels"),
                Some(edit.clone()),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{edit}: {body}");
        assert!(error_message(&body).contains(want), "{want}: {body}");
    }
    let (_, unchanged) = get_config(&f, &agent, &cert).await;
    assert_eq!(unchanged["hash"], before["hash"]);

    let (status, body) = f
        .admin(
            Method::POST,
            &format!("/v1/admin/hosts/{id}/labels"),
            Some(json!({"set": {"location": "rack-7", "team": "web"}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["matched"], 1);
    let host = &body["hosts"][0];
    assert_eq!(host["labels"]["location"], "rack-7");
    assert_ne!(host["rendered_hash"], before["hash"]);

    // The target file carries the new labels ...
    let text = std::fs::read_to_string(f.targets_dir().join(format!("{id}.json"))).expect("file");
    let groups: Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(groups[0]["labels"]["location"], "rack-7");
    // ... the agent gets the new config on its next poll ...
    let (status, after) = get_config(&f, &agent, &cert).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(after["hash"], host["rendered_hash"]);
    assert!(after["content"]
        .as_str()
        .expect("content")
        .contains("rack-7"));
    // ... and the host shows it has not applied it yet.
    let (_, shown) = f
        .admin(Method::GET, &format!("/v1/admin/hosts/{id}"), None)
        .await;
    assert_ne!(shown["applied_hash"], shown["rendered_hash"]);
    // Removing a label works too.
    let (status, body) = f
        .admin(
            Method::POST,
            &format!("/v1/admin/hosts/{id}/labels"),
            Some(json!({"remove": ["team"]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["hosts"][0]["labels"].get("team").is_none(), "{body}");

    let audit = f.audit().await;
    let edits: Vec<&Value> = audit
        .iter()
        .filter(|a| a["action"] == "host.label")
        .collect();
    assert_eq!(edits.len(), 2, "{audit:?}");
    assert_eq!(edits[0]["target"], id.as_str());
    assert_eq!(edits[0]["detail"], "location=rack-7 team=web");
    assert_eq!(edits[0]["source"], "127.0.0.1");
    assert!(edits[0]["actor"].as_str().is_some_and(|a| !a.is_empty()));

    let (status, body) = f
        .admin(
            Method::POST,
            "/v1/admin/hosts/nope-123/labels",
            Some(json!({"set": {"team": "x"}})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
}

#[tokio::test]
async fn selectors_pick_hosts_for_list_and_label_all_or_nothing() {
    let f = with_schema();
    let (_, a, _) = enroll(
        &f,
        "sel-a",
        json!({"maintainers": "ops", "location": "rack-1"}),
    )
    .await;
    let (_, b, _) = enroll(
        &f,
        "sel-b",
        json!({"maintainers": "ops", "location": "rack-2", "environment": "staging"}),
    )
    .await;
    let (_, c, _) = enroll(
        &f,
        "sel-c",
        json!({"maintainers": "dba", "location": "rack-2"}),
    )
    .await;

    let list = |selector: &str| {
        let f = &f;
        let path = format!("/v1/admin/hosts?selector={selector}");
        async move {
            let (status, hosts) = f.admin(Method::GET, &path, None).await;
            assert_eq!(status, StatusCode::OK, "{hosts}");
            let mut ids: Vec<String> = hosts
                .as_array()
                .expect("list")
                .iter()
                .map(|h| h["id"].as_str().expect("id").to_string())
                .collect();
            ids.sort();
            ids
        }
    };
    assert_eq!(list("location=rack-2").await, vec![b.clone(), c.clone()]);
    assert_eq!(
        list("environment=production,location=rack-2").await,
        vec![c.clone()]
    );
    assert_eq!(list("hostname=sel-a").await, vec![a.clone()]);
    let (status, body) = f
        .admin(Method::GET, "/v1/admin/hosts?selector=nonsense", None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    // One host of the selection would break the schema: nobody changes.
    let (status, body) = f
        .admin(
            Method::POST,
            "/v1/admin/hosts/labels",
            Some(json!({"selector": "location=rack-2", "remove": ["location"], "set": {"maintainers": "x"}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "removing location is fine: {body}");
    let (status, body) = f
        .admin(
            Method::POST,
            "/v1/admin/hosts/labels",
            Some(json!({"selector": "maintainers=x", "set": {"location": "bad"}})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        error_message(&body).contains("nothing was changed"),
        "{body}"
    );
    assert_eq!(list("maintainers=x").await, vec![b.clone(), c.clone()]);
    assert!(list("location=bad").await.is_empty());
}

#[tokio::test]
async fn a_host_decommissioned_without_a_live_file_still_leaves_its_retired_file() {
    let f = Fixture::start();
    let (_, id, _) = enroll(&f, "unwritten-01", json!({"team": "web"})).await;
    let text = f.target_file(&id).await;
    // As if decommissioned before the reconciler had written its
    // enrollment's file (or the file was deleted behind the server's back).
    std::fs::remove_file(f.targets_dir().join(format!("{id}.json"))).expect("remove");
    let (status, done) = f.decommission(&id).await;
    assert_eq!(status, StatusCode::OK, "{done}");
    let retired = done["target_file"]
        .as_str()
        .expect("a retired file is named");
    assert!(
        retired.starts_with(&format!("{id}.json.deleted.")),
        "{retired}"
    );
    assert_eq!(f.target_files(), vec![retired.to_string()]);
    let kept = std::fs::read_to_string(f.targets_dir().join(retired)).expect("retired file");
    assert_eq!(
        kept, text,
        "the record's targets, as the live file had them"
    );
}

#[tokio::test]
async fn decommission_revokes_the_agent_retires_the_target_file_and_keeps_the_history() {
    let f = Fixture::start();
    let (agent, id, cert) = enroll(&f, "retire-01", json!({"team": "web"})).await;
    f.target_file(&id).await;
    let (status, _) = get_config(&f, &agent, &cert).await;
    assert_eq!(status, StatusCode::OK);

    let (status, done) = f.decommission(&id).await;
    assert_eq!(status, StatusCode::OK, "{done}");
    assert_eq!(done["host"]["state"], "decommissioned");
    assert_eq!(done["revoked_certs"], 1);
    let renamed = done["target_file"].as_str().expect("renamed file");
    assert!(
        renamed.starts_with(&format!("{id}.json.deleted.")) && renamed.ends_with('Z'),
        "{renamed}"
    );
    assert_eq!(f.target_files(), vec![renamed.to_string()]);

    // The agent is refused at once, with a code that tells it to stop.
    let (status, body) = get_config(&f, &agent, &cert).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["code"], "certificate_revoked");

    // Listed only with --all; a second decommission is a conflict.
    assert!(f.hosts().await.is_empty());
    let (_, all) = f.admin(Method::GET, "/v1/admin/hosts?all=true", None).await;
    assert_eq!(all[0]["id"], id.as_str());
    let (_, only) = f
        .admin(Method::GET, "/v1/admin/hosts?state=decommissioned", None)
        .await;
    assert_eq!(only.as_array().map(Vec::len), Some(1));
    let (status, _) = f.decommission(&id).await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, _) = f
        .admin(Method::POST, "/v1/admin/hosts/nope-1/decommission", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Re-enrolling the same machine needs a new token and makes a new host
    // linked to the old one.
    let token = f.token(json!({})).await;
    let (status, body) = f.enroll(&agent.enroll_body(&token, "idem-retire-02")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let new_id = body["host_id"].as_str().expect("id");
    assert_ne!(new_id, id);
    let (_, shown) = f
        .admin(Method::GET, &format!("/v1/admin/hosts/{new_id}"), None)
        .await;
    assert_eq!(shown["previous_host_id"], id.as_str());
    assert!(
        shown["labels"].get("team").is_none(),
        "labels come from the new token"
    );
    f.target_file(new_id).await;
    let mut files = f.target_files();
    files.sort();
    assert_eq!(files.len(), 2, "{files:?}");
    assert!(files.contains(&format!("{new_id}.json")));

    let audit = f.audit().await;
    let entry = audit
        .iter()
        .find(|a| a["action"] == "host.decommission")
        .expect("audited");
    assert_eq!(entry["target"], id.as_str());
    assert!(entry["detail"].as_str().expect("detail").contains(renamed));
    assert!(audit.iter().any(|a| a["action"] == "enroll"
        && a["detail"]
            .as_str()
            .is_some_and(|d| d.contains(&format!("this machine was {id}")))));
}

#[tokio::test]
async fn a_cloned_machine_is_refused_until_hosts_replace_then_takes_over() {
    let f = Fixture::start();
    let (original, id, old_cert) = enroll(&f, "clone-01", json!({"team": "db"})).await;
    let clone = TestAgent::new("clone-01", "m-clone-01");
    let token = f.token(json!({"uses": 2})).await;

    let (status, body) = f.enroll(&clone.enroll_body(&token, "idem-clone-02")).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        error_message(&body).contains(&format!("muster-server hosts replace {id}")),
        "{body}"
    );
    let (_, shown) = f
        .admin(Method::GET, &format!("/v1/admin/hosts/{id}"), None)
        .await;
    assert!(
        shown["last_conflict"]
            .as_str()
            .expect("conflict noted")
            .contains("127.0.0.1"),
        "{shown}"
    );
    let (status, _) = get_config(&f, &original, &old_cert).await;
    assert_eq!(status, StatusCode::OK, "the original keeps working");

    let (status, armed) = f
        .admin(Method::POST, &format!("/v1/admin/hosts/{id}/replace"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{armed}");
    // Only the replacement token takes the host over; the clone's own
    // token is still refused.
    let (status, body) = f.enroll(&clone.enroll_body(&token, "idem-clone-03")).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let replacement = armed["token"].as_str().expect("replacement token");
    assert!(
        armed["enroll_command"]
            .as_str()
            .expect("command")
            .contains(replacement),
        "{armed}"
    );
    let (status, body) = f
        .enroll(&clone.enroll_body(replacement, "idem-clone-04"))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["host_id"], id.as_str(), "same host, new key");
    let new_cert = body["certificate_pem"].as_str().expect("cert");

    let (status, body) = get_config(&f, &original, &old_cert).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["code"], "certificate_revoked");
    let (status, _) = get_config(&f, &clone, new_cert).await;
    assert_eq!(status, StatusCode::OK);
    let hosts = f.hosts().await;
    assert_eq!(hosts.len(), 1);
    assert_eq!(hosts[0]["labels"]["team"], "db", "labels kept");
    assert!(
        hosts[0].get("replace_until").is_none(),
        "used up: {}",
        hosts[0]
    );

    let audit = f.audit().await;
    for action in ["host.replace", "enroll"] {
        assert!(audit.iter().any(|a| a["action"] == action), "{action}");
    }
    assert!(audit
        .iter()
        .any(|a| a["outcome"] == "refused" && a["target"] == id.as_str()));
}

#[tokio::test]
async fn a_host_that_stops_checking_in_becomes_stale() {
    let f = Fixture::start_with(|data| {
        let path = data.join("server.toml");
        let text = std::fs::read_to_string(&path)
            .expect("server.toml")
            .replace("stale_after = \"5m\"", "stale_after = \"1s\"");
        std::fs::write(&path, text).expect("write");
    });
    let (agent, id, cert) = enroll(&f, "stale-01", json!({})).await;
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, hosts) = f
            .admin(Method::GET, "/v1/admin/hosts?state=stale", None)
            .await;
        if hosts.as_array().is_some_and(|h| h.len() == 1) {
            assert_eq!(hosts[0]["id"], id.as_str());
            assert_eq!(hosts[0]["config_state"], "enrolled");
            break;
        }
        assert!(Instant::now() < until, "never stale: {hosts}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A check-in makes it fresh again.
    get_config(&f, &agent, &cert).await;
    let (_, shown) = f
        .admin(Method::GET, &format!("/v1/admin/hosts/{id}"), None)
        .await;
    assert_eq!(shown["state"], "enrolled", "{shown}");
    let (status, body) = f
        .admin(Method::GET, "/v1/admin/hosts?state=pending", None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(error_message(&body).contains("batch status"), "{body}");
    let (status, body) = f
        .admin(Method::GET, "/v1/admin/hosts?state=nope", None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(error_message(&body).contains("scrape_failing"), "{body}");
}

#[tokio::test]
async fn labels_check_lists_hosts_the_new_schema_does_not_fit() {
    let mut f = Fixture::start();
    enroll(
        &f,
        "fit-01",
        json!({"maintainers": "ops", "environment": "dev"}),
    )
    .await;
    let (_, misfit, _) = enroll(&f, "misfit-01", json!({"maintainer": "ops"})).await;
    let (_, checked) = f.admin(Method::GET, "/v1/admin/labels/check", None).await;
    assert_eq!(
        checked["misfits"],
        json!([]),
        "no schema yet: everything fits"
    );

    // The schema changes; existing hosts are checked against it.
    let data = f.data_dir();
    append_settings(&data, SCHEMA);
    f.server = muster_e2e::Server::start(&data);
    let (status, checked) = f.admin(Method::GET, "/v1/admin/labels/check", None).await;
    assert_eq!(status, StatusCode::OK, "{checked}");
    assert_eq!(checked["checked"], 2);
    let misfits = checked["misfits"].as_array().expect("misfits");
    assert_eq!(misfits.len(), 1, "{checked}");
    assert_eq!(misfits[0]["host_id"], misfit.as_str());
    let problems = misfits[0]["problems"].to_string();
    assert!(
        problems.contains("did you mean \\\"maintainers\\\"?"),
        "{problems}"
    );
    assert!(
        problems.contains("required label \\\"environment\\\""),
        "{problems}"
    );
}

#[tokio::test]
async fn the_audit_log_filters_by_host_and_time_and_records_refused_admins() {
    let f = Fixture::start();
    let (_, id, _) = enroll(&f, "audit-01", json!({})).await;
    enroll(&f, "audit-02", json!({})).await;
    let (status, rows) = f
        .admin(Method::GET, &format!("/v1/admin/audit?host={id}"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let rows = rows.as_array().expect("rows");
    assert!(!rows.is_empty());
    assert!(rows
        .iter()
        .all(|r| r["target"] == id.as_str() || r["actor"] == id.as_str()));
    assert!(rows.iter().all(|r| r["source"] == "127.0.0.1"), "{rows:?}");
    let (_, future) = f
        .admin(Method::GET, "/v1/admin/audit?since=99999999999", None)
        .await;
    assert_eq!(future, json!([]));
    // By actor: exactly that actor's entries (the actor of this host's
    // enrollment entry, whoever it is), and none for an unknown one.
    let actor = rows[0]["actor"].as_str().expect("an actor").to_string();
    let (status, by_actor) = f
        .admin(Method::GET, &format!("/v1/admin/audit?actor={actor}"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let by_actor = by_actor.as_array().expect("rows");
    assert!(!by_actor.is_empty());
    assert!(
        by_actor.iter().all(|r| r["actor"] == actor.as_str()),
        "{by_actor:?}"
    );
    let (_, nobody) = f
        .admin(Method::GET, "/v1/admin/audit?actor=no-such-actor", None)
        .await;
    assert_eq!(nobody, json!([]));

    // A wrong admin token is refused and audited, without the token.
    let resp = f
        .anonymous_client()
        .get(format!("{}/v1/admin/hosts", f.server.admin_url()))
        .bearer_auth("mta_0123456789ab_notthesecret")
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let audit = f.audit().await;
    let refused = audit
        .iter()
        .find(|a| a["action"] == "admin.auth")
        .expect("refusal audited");
    assert_eq!(refused["outcome"], "refused");
    assert_eq!(refused["source"], "127.0.0.1");
    assert!(!audit.iter().any(|a| a.to_string().contains("notthesecret")));
}
