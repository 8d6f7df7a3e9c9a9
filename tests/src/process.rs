//! Running binaries from tests: locating the workspace's built binaries,
//! running a command to completion with a readable panic on failure, and
//! keeping a long-running child whose output is drained in the background so
//! it never blocks on a full pipe.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// How long tests wait for a child to print its readiness line.
pub const START_DEADLINE: Duration = Duration::from_secs(30);

/// Path of a binary built from this workspace (`muster-server`,
/// `muster-agent`, `alloy-standin`), found next to the running test
/// executable: tests run from `target/<profile>/deps/`, binaries sit in
/// `target/<profile>/`.
///
/// `cargo test --workspace` builds every package's binaries; `cargo test -p
/// muster-e2e` alone builds none of them and may find stale ones.
pub fn bin_path(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable has a path");
    let mut dir = exe
        .parent()
        .expect("the test executable is in a directory")
        .to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.is_file(),
        "{} not found: build the binaries first: cargo build --workspace --bins \
         (cargo test --workspace does it)",
        path.display()
    );
    path
}

/// The environment variable that limits the agent's service detection to
/// one process tree (`muster_agent::detect::probe::SCOPE_ENV`).
pub const DETECT_SCOPE_ENV: &str = "MUSTER_DETECT_PROCESS_TREE";

/// The environment variable naming the os-release file the agent reads
/// instead of the machine's (`muster_agent::detect::os_release::FILE_ENV`).
pub const OS_RELEASE_ENV: &str = "MUSTER_OS_RELEASE";

/// An os-release of the fixtures (`tests/fixtures/os-release/<name>`).
pub fn os_release_fixture(name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/os-release")
        .join(name);
    assert!(path.is_file(), "no os-release fixture {}", path.display());
    path
}

/// Makes `cmd` (an agent, or a shell that starts one) detect only what this
/// test process started, on a Debian 12 of the fixtures: the machine's own
/// nginx, postgres, journal or distribution never reach the configs tests
/// assert on.
pub fn hermetic(cmd: &mut Command) -> &mut Command {
    cmd.env(DETECT_SCOPE_ENV, std::process::id().to_string())
        .env(OS_RELEASE_ENV, os_release_fixture("debian-12"))
}

/// `muster-agent`, detecting only what this test process started.
pub fn agent_command() -> Command {
    let mut cmd = Command::new(bin_path("muster-agent"));
    hermetic(&mut cmd);
    cmd
}

/// Runs `cmd` to completion and returns its output, whatever its exit status.
/// Panics only when it cannot be started.
pub fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null());
    cmd.output()
        .unwrap_or_else(|e| panic!("could not start {}: {e}", command_line(cmd)))
}

/// Runs `cmd`, panics with everything it printed unless it succeeds, and
/// returns its stdout.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(out.status.success(), "{}", describe(cmd, &out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `cmd`, panics with everything it printed if it succeeds, and returns
/// its output for the test to inspect the failure.
pub fn run_fail(cmd: &mut Command) -> Output {
    let out = run(cmd);
    assert!(
        !out.status.success(),
        "expected failure, got success\n{}",
        describe(cmd, &out)
    );
    out
}

/// The command line, exit status, stdout and stderr of a finished command.
pub fn describe(cmd: &Command, out: &Output) -> String {
    format!(
        "command: {}\nstatus: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        command_line(cmd),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    )
}

/// `cmd` as one would type it: environment overrides, program, arguments.
pub fn command_line(cmd: &Command) -> String {
    let envs = cmd.get_envs().filter_map(|(k, v)| {
        v.map(|v| format!("{}={}", k.to_string_lossy(), quote(&v.to_string_lossy())))
    });
    let program = std::iter::once(cmd.get_program().to_string_lossy().into_owned());
    let args = cmd.get_args().map(|a| quote(&a.to_string_lossy()));
    envs.chain(program)
        .chain(args)
        .collect::<Vec<_>>()
        .join(" ")
}

fn quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@%+".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// A long-running child. Its stdout and stderr are drained by background
/// threads into buffers ([`Process::logs`]); stdout lines can be awaited with
/// [`Process::wait_for_line`]. Killed on drop.
pub struct Process {
    command_line: String,
    child: Child,
    stdout: Arc<Captured>,
    stderr: Arc<Captured>,
    lines: Mutex<Receiver<String>>,
}

#[derive(Default)]
struct Captured {
    text: Mutex<String>,
    /// Set when the stream reached its end.
    done: AtomicBool,
}

impl Captured {
    fn push(&self, s: &str) {
        self.text
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_str(s);
    }

    fn snapshot(&self) -> String {
        self.text.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Process {
    /// Starts `cmd` with stdin closed and stdout/stderr captured.
    pub fn spawn(cmd: &mut Command) -> Process {
        let command_line = command_line(cmd);
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("could not start {command_line}: {e}"));
        let (stdout, stderr) = (Arc::<Captured>::default(), Arc::<Captured>::default());
        let (tx, rx) = mpsc::channel();
        if let Some(pipe) = child.stdout.take() {
            drain(pipe, Arc::clone(&stdout), Some(tx));
        }
        if let Some(pipe) = child.stderr.take() {
            drain(pipe, Arc::clone(&stderr), None);
        }
        Process {
            command_line,
            child,
            stdout,
            stderr,
            lines: Mutex::new(rx),
        }
    }

    /// Waits for the next stdout line for which `pred` holds (earlier lines are
    /// skipped, but stay in [`Process::logs`]) and returns it. Panics with the
    /// logs if the deadline passes or the child closes its stdout first.
    pub fn wait_for_line(&mut self, deadline: Duration, pred: impl Fn(&str) -> bool) -> String {
        let until = Instant::now() + deadline;
        loop {
            let remaining = until.saturating_duration_since(Instant::now());
            let next = self
                .lines
                .get_mut()
                .unwrap_or_else(|e| e.into_inner())
                .recv_timeout(remaining);
            match next {
                Ok(line) if pred(&line) => return line,
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => {
                    panic!("no expected line within {deadline:?}\n{}", self.logs())
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.wait_exit(Duration::from_secs(5));
                    panic!(
                        "stdout closed before the expected line (exit status: {})\n{}",
                        status.map_or("still running".to_string(), |s| s.to_string()),
                        self.logs()
                    )
                }
            }
        }
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Exit status if the child has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Polls until the child exits or `deadline` passes; also lets the drain
    /// threads catch up so [`Process::logs`] is complete.
    pub fn wait_exit(&mut self, deadline: Duration) -> Option<ExitStatus> {
        let until = Instant::now() + deadline;
        loop {
            let status = self.try_wait();
            let drained = self.stdout.done.load(Ordering::Acquire)
                && self.stderr.done.load(Ordering::Acquire);
            if (status.is_some() && drained) || Instant::now() >= until {
                return status;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything captured so far, with the command line, for panic messages.
    pub fn logs(&self) -> String {
        format!(
            "command: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.command_line,
            self.stdout.snapshot(),
            self.stderr.snapshot()
        )
    }

    /// Stdout captured so far.
    pub fn stdout(&self) -> String {
        self.stdout.snapshot()
    }

    /// Stderr captured so far.
    pub fn stderr(&self) -> String {
        self.stderr.snapshot()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        // Already exited is fine; either way reap it so no zombie is left.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Copies `pipe` into `into` line by line (and to `lines` if given) on a
/// thread of its own, until the child closes it.
fn drain(pipe: impl Read + Send + 'static, into: Arc<Captured>, lines: Option<Sender<String>>) {
    thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf);
                    into.push(&line);
                    if let Some(tx) = &lines {
                        // The receiver may be gone (the handle is dropping):
                        // keep draining anyway.
                        let _ = tx.send(line.trim_end_matches(['\r', '\n']).to_string());
                    }
                }
            }
        }
        into.done.store(true, Ordering::Release);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_quotes_what_a_shell_would_split() {
        let mut cmd = Command::new("prog");
        cmd.args(["--a=b", "two words", "it's"]).env("X", "1");
        assert_eq!(command_line(&cmd), r"X=1 prog --a=b 'two words' 'it'\''s'");
    }

    #[test]
    fn run_ok_shows_the_command_and_output_on_failure() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo out; echo err >&2; exit 3"]);
        let err = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_ok(&mut cmd)))
            .expect_err("exit 3 fails");
        let msg = err
            .downcast_ref::<String>()
            .expect("formatted panic message");
        for want in [
            "command: sh -c 'echo out;",
            "status: exit status: 3",
            "out\n",
            "err\n",
        ] {
            assert!(msg.contains(want), "{want:?} in {msg}");
        }
    }

    #[test]
    fn wait_for_line_skips_lines_and_reports_early_exit() {
        let mut p = Process::spawn(Command::new("sh").args([
            "-c",
            "echo noise; echo 'listening on 127.0.0.1:1'; echo oops >&2",
        ]));
        let line = p.wait_for_line(START_DEADLINE, |l| l.starts_with("listening on "));
        assert_eq!(line, "listening on 127.0.0.1:1");
        let err = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            p.wait_for_line(START_DEADLINE, |l| l == "never")
        }))
        .expect_err("stdout closes");
        let msg = err
            .downcast_ref::<String>()
            .expect("formatted panic message");
        assert!(msg.contains("exit status: 0"), "{msg}");
        assert!(msg.contains("noise\n") && msg.contains("oops\n"), "{msg}");
    }
}
