//! The reconciler against the real server binary: parallel writers never
//! expose a partial target file, a full targets dir leaves hosts drifting
//! (visible, and repaired without a restart once space returns), and
//! `targets sync [--check]` compares files with the database and repairs
//! them.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{join_all, post, Fixture, TestAgent};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

async fn enrolled(f: &Fixture, name: &str) -> (TestAgent, String, String) {
    let agent = TestAgent::new(name, &format!("m-{name}"));
    let token = f.token(json!({})).await;
    let (status, body) = f
        .enroll(&agent.enroll_body(&token, &format!("idem-{name}")))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    (
        agent,
        body["host_id"].as_str().expect("id").to_string(),
        body["certificate_pem"].as_str().expect("cert").to_string(),
    )
}

fn futures_box<'a>(
    f: impl std::future::Future<Output = ()> + 'a,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + 'a>> {
    Box::pin(f)
}

fn sync_check(data: &Path) -> std::process::Output {
    sync(data, &["--check"])
}

fn sync(data: &Path, options: &[&str]) -> std::process::Output {
    Command::new(muster_e2e::bin_path("muster-server"))
        .args(["targets", "sync", "--data-dir"])
        .arg(data)
        .args(options)
        .output()
        .expect("run targets sync")
}

#[tokio::test]
async fn targets_sync_lists_and_repairs_what_differs_with_the_server_stopped() {
    let f = Fixture::start();
    let mut ids = Vec::new();
    for name in ["sync-a", "sync-b", "sync-c"] {
        let (_, id, _) = enrolled(&f, name).await;
        f.target_file(&id).await;
        ids.push(id);
    }
    let (a, b, c) = (&ids[0], &ids[1], &ids[2]);
    let (status, body) = f.decommission(c).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let data = f.data_dir();
    let dir = f.targets_dir();
    let file = |id: &str| dir.join(format!("{id}.json"));
    let (a_text, b_text) = (f.target_file(a).await, f.target_file(b).await);
    let retired_c = body["target_file"].as_str().expect("retired").to_string();
    let c_text = std::fs::read_to_string(dir.join(&retired_c)).expect("retired file");
    let Fixture {
        server, dir: _root, ..
    } = f;
    drop(server);

    // Behind the stopped server's back: a file deleted, one edited, a
    // decommissioned host's file live again, a crashed writer's temp file
    // (no process has pid 999999999).
    std::fs::remove_file(file(a)).expect("remove");
    std::fs::write(file(b), "[]").expect("edit");
    std::fs::write(file(c), "[]").expect("live again");
    let temp = format!(".{a}.json.tmp-999999999-0");
    std::fs::write(dir.join(&temp), "[").expect("temp");

    let out = sync_check(&data);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let listed = String::from_utf8_lossy(&out.stdout).into_owned();
    for line in [
        format!("missing   {a}.json"),
        format!("differs   {b}.json"),
        format!("live      {c}.json (host decommissioned)"),
        format!("temp file {temp}"),
        "4 target file(s) differ".to_string(),
    ] {
        assert!(listed.contains(&line), "{line:?} in:\n{listed}");
    }
    assert!(!file(a).exists(), "--check changes nothing");

    let out = sync(&data, &[]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("4 target file(s) repaired"));
    assert_eq!(std::fs::read_to_string(file(a)).expect("a"), a_text);
    assert_eq!(std::fs::read_to_string(file(b)).expect("b"), b_text);
    assert!(!file(c).exists() && !dir.join(&temp).exists());
    // The file retired at the decommission keeps its name and targets.
    let retired: Vec<String> = common::file_names(&dir)
        .into_iter()
        .filter(|name| name.starts_with(&format!("{c}.json.")))
        .collect();
    assert_eq!(retired, std::slice::from_ref(&retired_c));
    assert_eq!(
        std::fs::read_to_string(dir.join(&retired_c)).expect("retired"),
        c_text
    );

    let out = sync_check(&data);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("0 target file(s) differ"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_label_edits_and_fact_reports_never_expose_a_partial_file() {
    let f = Fixture::start();
    let (agent, id, cert) = enrolled(&f, "busy").await;
    f.target_file(&id).await;
    let file = f.targets_dir().join(format!("{id}.json"));
    let stop = Arc::new(AtomicBool::new(false));
    let (reads, bad) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let reader = {
        let (stop, reads, bad, file) = (stop.clone(), reads.clone(), bad.clone(), file.clone());
        std::thread::spawn(move || {
            let mut first_bad = None;
            while !stop.load(Ordering::Relaxed) {
                let text = std::fs::read_to_string(&file).unwrap_or_default();
                reads.fetch_add(1, Ordering::Relaxed);
                let ok =
                    serde_json::from_str::<Value>(&text).is_ok_and(|v| v[0]["targets"].is_array());
                if !ok {
                    bad.fetch_add(1, Ordering::Relaxed);
                    first_bad.get_or_insert(text);
                }
            }
            first_bad
        })
    };
    let edits = (0..8).map(|worker| {
        let f = &f;
        let id = id.clone();
        async move {
            for i in 0..20 {
                let (status, body) = f
                    .admin(
                        Method::POST,
                        &format!("/v1/admin/hosts/{id}/labels"),
                        Some(json!({"set": {"round": format!("w{worker}-{i}")}})),
                    )
                    .await;
                assert_eq!(status, StatusCode::OK, "{body}");
                assert!(body.get("target_file_errors").is_none(), "{body}");
            }
        }
    });
    let facts = (0..4).map(|worker| {
        let (f, agent, cert) = (&f, &agent, &cert);
        async move {
            for i in 0..20u16 {
                let mut facts = agent.facts.clone();
                facts.scrape_address = format!("127.0.0.1:{}", 20000 + worker * 100 + i);
                let (status, body) = post(
                    &agent.client(cert, &f.ca_pem),
                    &format!("{}/v1/agent/facts", f.server.agent_url()),
                    &json!(facts),
                )
                .await;
                assert_eq!(status, StatusCode::OK, "{body}");
            }
        }
    });
    let edits: Vec<_> = edits.map(futures_box).collect();
    let facts: Vec<_> = facts.map(futures_box).collect();
    join_all(edits.into_iter().chain(facts)).await;
    stop.store(true, Ordering::Relaxed);
    let first_bad = reader.join().expect("reader");
    let (reads, bad) = (reads.load(Ordering::Relaxed), bad.load(Ordering::Relaxed));
    assert_eq!(
        bad, 0,
        "{bad} of {reads} reads saw a partial file: {first_bad:?}"
    );
    assert!(reads > 100, "only {reads} reads");
    let out = sync_check(&f.data_dir());
    assert!(
        out.status.success(),
        "the file ended as the database says: {out:?}"
    );
}

/// A tiny tmpfs mounted for one test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a `size` tmpfs on `dir`. Needs root (CI runs as root); a
    /// failure fails the test rather than skipping it.
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).expect("mount point");
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(dir)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "this test fills a small tmpfs and needs root to mount it: {out:?}"
        );
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the filesystem of `dir` with one file; its path.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).expect("filler");
    let chunk = vec![0u8; 4096];
    while file.write_all(&chunk).is_ok() {}
    let _ = file.sync_all();
    path
}

/// Muster's `/metrics` (admin listener, no token).
async fn metrics_text(f: &Fixture) -> String {
    f.anonymous_client()
        .get(format!("{}/metrics", f.server.admin_url()))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text")
}

fn drifting(hosts: &[Value]) -> Vec<String> {
    hosts
        .iter()
        .filter(|h| h.get("target_drift").is_some())
        .map(|h| h["id"].as_str().expect("id").to_string())
        .collect()
}

#[tokio::test]
async fn a_full_targets_dir_leaves_hosts_drifting_until_space_returns() {
    let root = tempfile::tempdir().expect("temp dir");
    let targets = root.path().join("targets");
    let _tmpfs = Tmpfs::mount(&targets, "256k");
    let dir = serde_json::Value::from(targets.display().to_string());
    let f = Fixture::start_with(|data| {
        let path = data.join("server.toml");
        let mut toml = std::fs::read_to_string(&path).expect("server.toml");
        toml.push_str(&format!("targets_dir = {dir}\n"));
        std::fs::write(&path, toml).expect("write");
    });
    let (_, first, _) = enrolled(&f, "before-full").await;
    f.server
        .written(&targets.join(format!("{first}.json")))
        .await;

    let filler = fill(&targets);
    // Enrollments and label edits go on; nothing claims a file was written.
    let mut late = Vec::new();
    for i in 0..4 {
        let (_, id, _) = enrolled(&f, &format!("while-full-{i}")).await;
        late.push(id);
    }
    let (status, edited) = f
        .admin(
            Method::POST,
            &format!("/v1/admin/hosts/{first}/labels"),
            Some(json!({"set": {"team": "storage"}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{edited}");
    assert!(
        edited["target_file_errors"][&first].is_string(),
        "the edit says the file was not written: {edited}"
    );
    let mut want: Vec<String> = late.clone();
    want.push(first.clone());
    want.sort();
    // Enrollments' files are written in the background: their drift shows
    // once the reconciler has tried.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut shown = drifting(&f.hosts().await);
        shown.sort();
        if shown == want {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "drift is visible in hosts list: {shown:?}, want {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let metrics = metrics_text(&f).await;
    assert!(
        metrics.contains(&format!("\nmuster_target_drift_hosts {}\n", want.len())),
        "and in /metrics: {metrics}"
    );
    assert!(
        !metrics.contains("\nmuster_target_file_writes_total{outcome=\"failure\"} 0\n"),
        "{metrics}"
    );
    let (_, one) = f
        .admin(Method::GET, &format!("/v1/admin/hosts/{}", late[0]), None)
        .await;
    assert!(
        one["target_drift"]
            .as_str()
            .expect("drift")
            .contains("not written"),
        "{one}"
    );
    let out = sync_check(&f.data_dir());
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(f.server.logs().contains("target file drifts"));

    // Space returns: every file appears without a restart.
    std::fs::remove_file(&filler).expect("free space");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let hosts = f.hosts().await;
        let files_ok = want
            .iter()
            .all(|id| targets.join(format!("{id}.json")).exists());
        if drifting(&hosts).is_empty() && files_ok {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still drifting: {:?}",
            drifting(&hosts)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let out = sync_check(&f.data_dir());
    assert!(out.status.success(), "{out:?}");
    let metrics = metrics_text(&f).await;
    assert!(
        metrics.contains("\nmuster_target_drift_hosts 0\n"),
        "{metrics}"
    );
    let text = std::fs::read_to_string(targets.join(format!("{first}.json"))).expect("file");
    assert!(
        text.contains("storage"),
        "the edit reached the file: {text}"
    );
    drop(f);
}
