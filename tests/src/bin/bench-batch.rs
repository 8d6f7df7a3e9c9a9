//! Benchmark: a batch of N hosts from import to every host `config_applied`
//! on loopback. Real binaries: `muster-server`, N `muster-agent` processes
//! (each `enroll`, then `run --once`, at most CONCURRENCY at a time) and one
//! shared Alloy stand-in that checks every config.
//!
//! ```text
//! cargo build --release --workspace --bins
//! target/release/bench-batch [HOSTS] [CONCURRENCY]     # default 50 50
//! ```

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use muster_e2e::fleet::{
    admin, batch_csv, disable_detected_services, init, PretendHost, SharedAlloy,
};
use muster_e2e::{bench, Server};
use reqwest::Method;
use serde_json::{json, Value};

const USAGE: &str = "\
bench-batch: a batch of hosts from import to every host config_applied,
with the real server, agents and an Alloy stand-in on loopback.

USAGE: bench-batch [HOSTS] [CONCURRENCY]
  HOSTS         hosts in the batch (default 50)
  CONCURRENCY   agents enrolling at once (default HOSTS)
";

fn main() {
    let args = bench::args(USAGE);
    let hosts: usize = args
        .first()
        .map_or(50, |n| bench::number(n, "HOSTS", USAGE));
    let concurrency: usize = args
        .get(1)
        .map_or(hosts, |n| bench::number(n, "CONCURRENCY", USAGE))
        .max(1);
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    runtime.block_on(bench(hosts, concurrency));
}

/// Runs `commands` with at most `limit` alive at once; panics on a failure.
fn run_all(commands: Vec<(String, Command)>, limit: usize) {
    let mut pending = commands.into_iter();
    let mut running: Vec<(String, Child)> = Vec::new();
    loop {
        while running.len() < limit {
            let Some((name, mut cmd)) = pending.next() else {
                break;
            };
            let child = cmd
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start muster-agent");
            running.push((name, child));
        }
        if running.is_empty() {
            return;
        }
        let mut i = 0;
        while i < running.len() {
            if let Some(status) = running[i].1.try_wait().expect("wait") {
                let (name, child) = running.swap_remove(i);
                if !status.success() {
                    let out = child.wait_with_output().expect("output");
                    panic!("{name} failed: {}", String::from_utf8_lossy(&out.stderr));
                }
            } else {
                i += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

async fn bench(hosts: usize, concurrency: usize) {
    let root = tempfile::tempdir().expect("temp dir");
    let data = root.path().join("data");
    let pin = init(&data);
    disable_detected_services(&data);
    let server = Server::start(&data);
    let alloy = SharedAlloy::start(&root.path().join("alloy")).await;
    let names: Vec<String> = (0..hosts).map(|i| format!("bench-{i:04}")).collect();

    let t0 = Instant::now();
    let imported = admin(
        &server,
        Method::POST,
        "/v1/admin/batches",
        Some(json!({"content": batch_csv(&names), "name": "bench.csv"})),
    )
    .await;
    let imported_in = t0.elapsed();
    let batch = imported["batch"]["id"]
        .as_str()
        .expect("batch id")
        .to_string();
    let rows = imported["hosts"].as_array().expect("hosts").clone();
    let pretend: Vec<PretendHost> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| PretendHost::new(root.path(), r["hostname"].as_str().expect("hostname"), i))
        .collect();

    let t1 = Instant::now();
    let server_url = server.agent_url();
    let enrolls = pretend
        .iter()
        .zip(&rows)
        .map(|(h, r)| {
            let token = r["token"].as_str().expect("token");
            (
                format!("enroll {}", h.hostname),
                h.enroll(&server_url, token, &pin, &alloy),
            )
        })
        .collect();
    run_all(enrolls, concurrency);
    let enrolled_in = t1.elapsed();
    let runs = pretend
        .iter()
        .map(|h| (format!("run --once {}", h.hostname), h.run(true)))
        .collect();
    run_all(runs, concurrency);
    loop {
        let status: Value = admin(
            &server,
            Method::GET,
            &format!("/v1/admin/batches/{batch}"),
            None,
        )
        .await;
        let done = status["hosts"]
            .as_array()
            .expect("rows")
            .iter()
            .filter(|r| r["config_current"] == true && r["state"] == "config_applied")
            .count();
        if done == hosts {
            break;
        }
        assert!(
            t1.elapsed() < Duration::from_secs(600),
            "stuck: {}",
            status["totals"]
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let applied_in = t1.elapsed();
    let secs = |d: Duration| d.as_secs_f64();
    println!(
        "batch of {hosts} hosts ({concurrency} agent processes at a time, loopback): \
         import {:.3} s; all enrolled {:.2} s; all config_applied {:.2} s after the first agent started \
         ({:.1} hosts/s)",
        secs(imported_in),
        secs(enrolled_in),
        secs(applied_in),
        hosts as f64 / secs(applied_in)
    );
}
