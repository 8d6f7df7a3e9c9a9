//! Benchmark: the agent's memory when idle. A real server (check-in interval
//! 1 s instead of 30 s), one enrolled agent with the Alloy stand-in, and
//! `muster-agent run` left polling; after N check-ins (default 120: an hour
//! at the default 30 s interval) it prints the agent's resident set size
//! (VmRSS) and peak (VmHWM), and the size of the agent binary.
//!
//! ```text
//! cargo build --release --workspace --bins
//! target/release/bench-idle [POLLS]      # default 120
//! ```

use std::path::Path;
use std::time::{Duration, Instant};

use muster_e2e::fleet::{admin, edit_settings, init, AlloyHost, FAST_CHECKINS};
use muster_e2e::{bin_path, run_ok, Server};
use serde_json::json;

fn main() {
    let polls: usize = std::env::args()
        .nth(1)
        .map(|n| n.parse().expect("POLLS must be a number"))
        .unwrap_or(120);
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let root = tempfile::tempdir().expect("temp dir");
    let data = root.path().join("data");
    let pin = init(&data);
    edit_settings(&data, &[FAST_CHECKINS]);
    let server = Server::start(&data);
    let token = runtime.block_on(admin(
        &server,
        reqwest::Method::POST,
        "/v1/admin/tokens",
        Some(json!({})),
    ))["token"]
        .as_str()
        .expect("token")
        .to_string();

    let host = runtime.block_on(AlloyHost::new(root.path(), "host", 1));
    run_ok(&mut host.enroll(&server, &token, &pin));
    let agent = host.run_daemon();
    let start = Instant::now();
    let mut after_first = None;
    loop {
        let done = agent.stderr().matches("next check-in").count();
        if done >= 1 && after_first.is_none() {
            after_first = Some(memory(agent.pid()));
        }
        if done >= polls {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(polls as u64 * 3 + 60),
            "only {done} check-ins\n{}",
            agent.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let (rss, hwm) = memory(agent.pid());
    let (first_rss, _) = after_first.expect("a first check-in");
    let size = std::fs::metadata(bin_path("muster-agent"))
        .expect("agent binary")
        .len();
    println!(
        "agent idle after {polls} check-ins ({:.0} s): RSS {:.1} MiB (after the first: {:.1} MiB), peak {:.1} MiB; binary {} ({:.1} MiB)",
        start.elapsed().as_secs_f64(),
        kib(rss),
        kib(first_rss),
        kib(hwm),
        bin_path("muster-agent").display(),
        size as f64 / 1048576.0
    );
}

fn kib(k: u64) -> f64 {
    k as f64 / 1024.0
}

/// `(VmRSS, VmHWM)` in KiB from `/proc/<pid>/status`.
fn memory(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("status"))
        .expect("/proc status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}
