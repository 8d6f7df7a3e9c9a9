//! `bench-fleet` runs end to end with a tiny fleet, so the benchmark cannot
//! rot: SQL growth, TLS enrollments, both poll modes, the mixed phase, both
//! restarts and (with nginx installed, as `.ci/run` does) the reference.
//! Figures are printed, never asserted: only that every phase ran and that
//! the polls were the conditional ones the server answers 304.

use std::process::Command;

use muster_e2e::tools::on_path;
use muster_e2e::{bin_path, run_ok};

#[test]
fn bench_fleet_runs_every_phase_with_a_tiny_fleet() {
    // The reference run needs nginx, which .ci/run installs: in CI it always
    // runs (bench-fleet fails without nginx); elsewhere only when installed.
    let reference = on_path("nginx") || std::env::var("CI").is_ok_and(|v| v == "true");
    let mut cmd = Command::new(bin_path("bench-fleet"));
    cmd.args([
        "--hosts",
        "20",
        "--pollers",
        "8",
        "--rates",
        "20",
        "--duration",
        "1",
    ])
    .args(["--mixed-rate", "20", "--no-pin"]);
    if reference {
        cmd.arg("--reference");
    }
    let out = run_ok(&mut cmd);
    let mut wants = vec![
        "seeded 11 hosts by SQL copy (and their target files)",
        "enrolled over TLS (16 concurrent): hosts 12..20",
        "start-up with 20 hosts: listening after",
        "muster kept-alive offered 20/s: achieved",
        "muster reconnecting offered 20/s: achieved",
        "muster mixed: kept-alive offered 20/s",
        "start-up after a template change: listening after",
        "| kept-alive polls/s at p99 < 20 ms |",
        "| enroll/s (16 concurrent, last 1,000 to 20 hosts) |",
    ];
    if reference {
        wants.extend([
            "nginx kept-alive offered 20/s: achieved",
            "nginx reconnecting offered 20/s: achieved",
        ]);
    }
    for want in wants {
        assert!(out.contains(want), "{want:?} missing from\n{out}");
    }
    // Every poll after the first carried the ETag: no config was resent.
    for line in out.lines().filter(|l| l.contains(" offered ")) {
        assert!(!line.contains("answered 200"), "{line}");
    }
}
