//! [`Standin`]: `alloy-standin run` in a test, on a loopback port 0.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::process::{bin_path, Process, START_DEADLINE};

/// A running `alloy-standin run`, killed on drop.
pub struct Standin {
    process: Process,
    addr: SocketAddr,
}

impl Standin {
    /// The stand-in binary (crate `alloy-standin`), built next to the tests
    /// by `cargo test --workspace`.
    pub fn bin() -> PathBuf {
        bin_path("alloy-standin")
    }

    /// `alloy-standin run --server.http.listen-addr=127.0.0.1:0 CONFIG`, once
    /// it prints the address it bound. It loads CONFIG right after: use
    /// [`Standin::wait_ready`] before relying on the config.
    pub fn start(config: &Path) -> Standin {
        let mut process = Process::spawn(
            Command::new(Standin::bin())
                .arg("run")
                .arg("--server.http.listen-addr=127.0.0.1:0")
                .arg(config),
        );
        let line = process.wait_for_line(START_DEADLINE, |l| l.starts_with("listening on "));
        let addr = line
            .trim_start_matches("listening on ")
            .parse()
            .unwrap_or_else(|e| panic!("bad listening line {line:?}: {e}\n{}", process.logs()));
        Standin { process, addr }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Sends SIGHUP, as `systemctl reload alloy` does.
    #[cfg(unix)]
    pub fn sighup(&self) {
        let pid = libc::pid_t::try_from(self.pid()).expect("pids fit in pid_t");
        // SAFETY: kill(2) has no memory-safety preconditions; the pid is our
        // own child, which is not reaped before `self` drops.
        let rc = unsafe { libc::kill(pid, libc::SIGHUP) };
        assert_eq!(
            rc,
            0,
            "kill -HUP {pid}: {}",
            std::io::Error::last_os_error()
        );
    }

    /// Polls `/-/ready` until it answers 200; panics with the logs after
    /// `deadline`.
    pub async fn wait_ready(&self, deadline: Duration) {
        let client = crate::http_client();
        let url = format!("{}/-/ready", self.url());
        let until = Instant::now() + deadline;
        loop {
            if let Ok(r) = client.get(&url).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            assert!(
                Instant::now() < until,
                "stand-in not ready within {deadline:?}\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The command line, stdout and stderr so far: for panic messages.
    pub fn logs(&self) -> String {
        self.process.logs()
    }
}
