//! Benchmark: how long one enrollment takes end to end on loopback, from
//! starting `muster-agent enroll` to the host's target file existing in the
//! server's targets dir; or (`--rate`) how many enrollments per second the
//! server takes from 16 concurrent clients as the fleet grows. Runs the real
//! binaries built beside it.
//!
//! ```text
//! cargo build --release --workspace --bins
//! target/release/bench-enroll [RUNS]              # default 20
//! target/release/bench-enroll --rate 5000 20000   # enroll/s at each fleet size
//! ```
//!
//! `--rate` grows the fleet by enrolling (POST /v1/enroll over TLS, one
//! CSR made with `openssl`, a distinct machine-id per host) and prints the
//! rate of the last [`WINDOW`] enrollments before each size.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use muster_e2e::fleet::{admin, init};
use muster_e2e::{bench, bin_path, Server};
use serde_json::json;

/// Enrollments the rate at a fleet size is measured over.
const WINDOW: usize = 1000;
/// Clients enrolling at once.
const CONCURRENT: usize = 16;

const USAGE: &str = "\
bench-enroll: one enrollment end to end (agent start to target file), or
enrollments per second from 16 concurrent clients as the fleet grows.

USAGE: bench-enroll [RUNS]          enrollments timed one by one (default 20)
       bench-enroll --rate SIZE...  enroll/s over the last 1000 enrollments
                                    before each fleet size
";

fn main() {
    let args = bench::args(USAGE);
    if args.first().map(String::as_str) == Some("--rate") {
        let sizes: Vec<usize> = args[1..]
            .iter()
            .map(|n| bench::number(n, "--rate", USAGE))
            .collect();
        if sizes.is_empty() {
            bench::refuse("--rate takes fleet sizes", USAGE);
        }
        return rate(&sizes);
    }
    let runs: usize = args.first().map_or(20, |n| bench::number(n, "RUNS", USAGE));
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let root = tempfile::tempdir().expect("temp dir");
    let data = root.path().join("data");
    let pin = init(&data);
    let server = Server::start(&data);
    let targets = data.join("targets");

    let mut samples = Vec::with_capacity(runs);
    for i in 0..runs {
        let created = runtime.block_on(admin(
            &server,
            reqwest::Method::POST,
            "/v1/admin/tokens",
            Some(json!({})),
        ));
        let token = created["token"].as_str().expect("token");
        let host = root.path().join(format!("host-{i}"));
        std::fs::create_dir_all(&host).expect("host dir");
        std::fs::write(host.join("machine-id"), format!("{i:032x}\n")).expect("machine-id");
        let before = count(&targets);
        let mut cmd = Command::new(bin_path("muster-agent"));
        cmd.arg("enroll")
            .args([
                "--server",
                &server.agent_url(),
                "--token",
                token,
                "--pin",
                &pin,
            ])
            .arg("--config")
            .arg(host.join("agent.toml"))
            .arg("--state-dir")
            .arg(host.join("state"))
            .arg("--machine-id-file")
            .arg(host.join("machine-id"))
            .args(["--hostname", &format!("bench-{i}")])
            .args(["--scrape-address", "127.0.0.1:12345"]);
        let start = Instant::now();
        let mut child = cmd
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start muster-agent");
        while count(&targets) == before {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "no target file after 30 s"
            );
            std::thread::sleep(Duration::from_micros(200));
        }
        samples.push(start.elapsed());
        let status = child.wait().expect("agent exit");
        assert!(status.success(), "enroll {i} failed");
    }
    report(&mut samples);
}

/// Enrolls hosts with [`CONCURRENT`] clients until the fleet has each size
/// in `sizes`, printing the rate over the last [`WINDOW`] before each.
fn rate(sizes: &[usize]) {
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let root = tempfile::tempdir().expect("temp dir");
    let data = root.path().join("data");
    init(&data);
    let server = Server::start(&data);
    let key = root.path().join("key.pem");
    let csr = root.path().join("csr.pem");
    let out = Command::new("openssl")
        .args(["req", "-new", "-newkey", "ec", "-pkeyopt"])
        .args([
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            "/CN=bench",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&csr)
        .output()
        .expect("run openssl");
    assert!(out.status.success(), "openssl: {out:?}");
    let csr = std::fs::read_to_string(&csr).expect("csr");
    runtime.block_on(async {
        let client = server.client();
        let url = format!("{}/v1/enroll", server.agent_url());
        let mut enrolled = 0;
        for &size in sizes {
            assert!(size > enrolled + WINDOW, "sizes must grow by more than {WINDOW}");
            // Unmeasured growth, then the measured window.
            for (n, timed) in [(size - WINDOW - enrolled, false), (WINDOW, true)] {
                let created = admin(
                    &server,
                    reqwest::Method::POST,
                    "/v1/admin/tokens",
                    Some(json!({"uses": n.max(1)})),
                )
                .await;
                let token = created["token"].as_str().expect("token").to_string();
                let start = Instant::now();
                let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
                let workers: Vec<_> = (0..CONCURRENT)
                    .map(|_| {
                        let (client, url, token, csr, next) =
                            (client.clone(), url.clone(), token.clone(), csr.clone(), next.clone());
                        let base = enrolled;
                        tokio::spawn(async move {
                            loop {
                                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                if i >= n {
                                    break;
                                }
                                let host = base + i;
                                let body = json!({
                                    "token": token,
                                    "csr_pem": csr,
                                    "idempotency_key": format!("bench-key-{host:08}"),
                                    "facts": {
                                        "hostname": format!("bench-{host}"),
                                        "machine_id": format!("{host:032x}"),
                                        "os": "linux",
                                        "arch": "x86_64",
                                        "scrape_address": "127.0.0.1:12345",
                                        "agent_version": "0.1.0",
                                    },
                                });
                                let resp = client.post(&url).json(&body).send().await.expect("enroll");
                                let status = resp.status();
                                assert!(
                                    status.is_success(),
                                    "host {host}: {status} {}",
                                    resp.text().await.unwrap_or_default()
                                );
                            }
                        })
                    })
                    .collect();
                for w in workers {
                    w.await.expect("worker");
                }
                enrolled += n;
                if timed {
                    let took = start.elapsed();
                    println!(
                        "{} hosts: {WINDOW} enrollments by {CONCURRENT} clients in {:.2} s = {:.0} enroll/s",
                        enrolled,
                        took.as_secs_f64(),
                        WINDOW as f64 / took.as_secs_f64()
                    );
                }
            }
        }
    });
}

fn count(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

fn report(samples: &mut [Duration]) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let n = samples.len();
    let mean = samples.iter().map(|d| ms(*d)).sum::<f64>() / n as f64;
    let pct = |p: f64| ms(samples[((n as f64 * p).ceil() as usize).clamp(1, n) - 1]);
    println!(
        "enroll end to end (agent start -> target file), {n} runs: min {:.1} ms, median {:.1} ms, mean {:.1} ms, p95 {:.1} ms, max {:.1} ms",
        ms(samples[0]),
        pct(0.5),
        mean,
        pct(0.95),
        ms(samples[n - 1]),
    );
}
