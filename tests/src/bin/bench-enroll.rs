//! Benchmark: how long one enrollment takes end to end on loopback, from
//! starting `muster-agent enroll` to the host's target file existing in the
//! server's targets dir. Runs the real binaries built beside it.
//!
//! ```text
//! cargo build --release --workspace --bins
//! target/release/bench-enroll [RUNS]      # default 20
//! ```

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use muster_e2e::fleet::{admin, init};
use muster_e2e::{bin_path, Server};
use serde_json::json;

fn main() {
    let runs: usize = std::env::args()
        .nth(1)
        .map(|n| n.parse().expect("RUNS must be a number"))
        .unwrap_or(20);
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
