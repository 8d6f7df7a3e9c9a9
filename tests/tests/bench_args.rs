//! Every benchmark binary teaches its command line with `--help` and
//! refuses a bad argument with its usage and exit 64, never a panic.

use std::process::Command;

use muster_e2e::bin_path;

const BENCHES: [&str; 5] = [
    "bench-batch",
    "bench-console",
    "bench-enroll",
    "bench-fleet",
    "bench-idle",
];

#[test]
fn benches_answer_help_and_refuse_bad_arguments_with_their_usage() {
    for bench in BENCHES {
        let help = Command::new(bin_path(bench))
            .arg("--help")
            .output()
            .expect("run");
        let stdout = String::from_utf8_lossy(&help.stdout);
        assert!(help.status.success(), "{bench} --help: {help:?}");
        assert!(
            stdout.starts_with(&format!("{bench}: ")) && stdout.contains("USAGE: "),
            "{bench} --help:\n{stdout}"
        );

        let bad = Command::new(bin_path(bench))
            .arg("not-a-number")
            .output()
            .expect("run");
        let stderr = String::from_utf8_lossy(&bad.stderr);
        assert_eq!(bad.status.code(), Some(64), "{bench}: {bad:?}");
        assert!(
            stderr.starts_with(&format!("{bench}: ")) && stderr.contains("USAGE: "),
            "{bench} not-a-number:\n{stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}
