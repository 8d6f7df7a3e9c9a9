//! Benchmark: the agent when idle, on a host with ~500 processes. A real
//! server (check-in interval 1 s instead of 30 s), one enrolled agent with
//! the Alloy stand-in, and `muster-agent run` left polling with detection
//! looking at the whole machine, as on a real host (not scoped to a process
//! tree); sleeping child processes top the machine up to `--procs`
//! processes. After N check-ins (default 120: an hour at the default 30 s
//! interval) it prints the agent's CPU per check-in (the median over blocks
//! of 10 check-ins, from `/proc/<pid>/stat`, whose clock ticks make 1 ms
//! steps; and the mean over all check-ins), its CPU from start to the end
//! of the first check-in (which detects services), its resident set size
//! (VmRSS), peak (VmHWM) and threads, and the size of the agent binary.
//!
//! ```text
//! cargo build --release --workspace --bins
//! target/release/bench-idle [POLLS]      # default 120
//!     [--procs N]                        # processes on the host, default 500
//!     [--agent PATH]                     # e.g. target/dist/muster-agent
//!     [--detect-every DURATION]          # detect_interval, default the agent's
//! ```

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use muster_e2e::fleet::{admin, edit_settings, init, AlloyHost, FAST_CHECKINS};
use muster_e2e::process::DETECT_SCOPE_ENV;
use muster_e2e::{bench, bin_path, run_ok, Server};
use serde_json::json;

/// Check-ins per CPU sample.
const BLOCK: usize = 10;

struct Args {
    polls: usize,
    procs: usize,
    agent: PathBuf,
    detect_every: Option<String>,
}

const USAGE: &str = "\
bench-idle: the agent's CPU per check-in and memory when idle, on a host
with ~500 processes, against a real server checking in every second.

USAGE: bench-idle [POLLS] [OPTIONS]
  POLLS                    check-ins to measure (default 120)
  --procs N                processes on the host (default 500)
  --agent PATH             the agent binary (default the one built beside
                           this), e.g. target/dist/muster-agent
  --detect-every DURATION  the agent's detect_interval (default its own)
";

fn args() -> Args {
    let mut args = Args {
        polls: 120,
        procs: 500,
        agent: bin_path("muster-agent"),
        detect_every: None,
    };
    let mut it = bench::args(USAGE).into_iter();
    while let Some(arg) = it.next() {
        let mut value = || {
            it.next()
                .unwrap_or_else(|| bench::refuse(&format!("{arg} needs a value"), USAGE))
        };
        match arg.as_str() {
            "--procs" => args.procs = bench::number(&value(), "--procs", USAGE),
            "--agent" => args.agent = value().into(),
            "--detect-every" => args.detect_every = Some(value()),
            n if n.starts_with('-') => bench::refuse(&format!("unknown option {n}"), USAGE),
            n => args.polls = bench::number(n, "POLLS", USAGE),
        }
    }
    args
}

fn main() {
    let args = args();
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
    run_ok(&mut host.enroll_with(Command::new(&args.agent), &server, &token, &pin));
    if let Some(every) = &args.detect_every {
        host.set_agent_option("detect_interval", &format!("{every:?}"));
    }
    let _sleepers = Sleepers::top_up(args.procs);
    let processes = count_processes();

    // The whole machine, as a real host's agent sees it.
    let mut cmd = Command::new(&args.agent);
    cmd.env_remove(DETECT_SCOPE_ENV);
    let agent = host.run_daemon_with(cmd, "muster_agent=debug");
    let start = Instant::now();
    let mut first = None;
    let mut marks: Vec<(usize, u64)> = Vec::new();
    loop {
        let done = agent.stderr().matches("next check-in").count();
        if done >= 1 && first.is_none() {
            first = Some((memory(agent.pid()), cpu_ms(agent.pid())));
            marks.push((done, cpu_ticks(agent.pid())));
        }
        if first.is_some() && done >= marks.last().map_or(0, |m| m.0) + BLOCK {
            marks.push((done, cpu_ticks(agent.pid())));
        }
        if done >= args.polls {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(args.polls as u64 * 3 + 60),
            "only {done} check-ins\n{}",
            agent.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let (rss, hwm, threads) = memory(agent.pid());
    let ((first_rss, _, _), first_cpu) = first.expect("a first check-in");
    let mean = match (marks.first(), marks.last()) {
        (Some(a), Some(b)) if b.0 > a.0 => ticks_ms(b.1 - a.1) / (b.0 - a.0) as f64,
        _ => f64::NAN,
    };
    let mut per_checkin: Vec<f64> = marks
        .windows(2)
        .map(|w| ticks_ms(w[1].1 - w[0].1) / (w[1].0 - w[0].0) as f64)
        .collect();
    per_checkin.sort_by(f64::total_cmp);
    let median = per_checkin
        .get(per_checkin.len() / 2)
        .copied()
        .unwrap_or(f64::NAN);
    let size = std::fs::metadata(&args.agent).expect("agent binary").len();
    println!(
        "host: {processes} processes; agent {} ({:.1} MiB, {size} bytes); detect_interval {}",
        args.agent.display(),
        size as f64 / 1048576.0,
        args.detect_every.as_deref().unwrap_or("default"),
    );
    println!(
        "CPU per check-in: median {median:.1} ms over {} blocks of {BLOCK} (min {:.1}, max {:.1}; mean {mean:.2}); start to first check-in {first_cpu:.0} ms",
        per_checkin.len(),
        per_checkin.first().copied().unwrap_or(f64::NAN),
        per_checkin.last().copied().unwrap_or(f64::NAN),
    );
    println!(
        "agent idle after {} check-ins ({:.0} s): RSS {:.1} MiB ({rss} KiB; after the first: {:.1} MiB), peak {:.1} MiB, {threads} threads",
        args.polls,
        start.elapsed().as_secs_f64(),
        kib(rss),
        kib(first_rss),
        kib(hwm),
    );
}

/// Sleeping children that make the host's process count up to a figure;
/// killed on drop.
struct Sleepers(Vec<Child>);

impl Sleepers {
    fn top_up(total: usize) -> Sleepers {
        let missing = total.saturating_sub(count_processes());
        let children = (0..missing)
            .map(|_| {
                Command::new("sleep")
                    .arg("3600")
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("start sleep")
            })
            .collect();
        Sleepers(children)
    }
}

impl Drop for Sleepers {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Processes on this machine (threads not counted).
fn count_processes() -> usize {
    std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .count()
}

fn kib(k: u64) -> f64 {
    k as f64 / 1024.0
}

/// `(VmRSS, VmHWM)` in KiB and the thread count from `/proc/<pid>/status`.
fn memory(pid: u32) -> (u64, u64, u64) {
    let status = std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("status"))
        .expect("/proc status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"), field("Threads:"))
}

/// User plus system CPU time of the process (all its threads, live and
/// exited), in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("stat"))
        .expect("/proc stat");
    // Fields after the command name (which may hold spaces): state is the
    // first, utime the 12th, stime the 13th.
    let after = &stat[stat.rfind(')').expect("stat has a command") + 1..];
    let fields: Vec<u64> = after
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    fields[10] + fields[11]
}

fn cpu_ms(pid: u32) -> f64 {
    ticks_ms(cpu_ticks(pid))
}

fn ticks_ms(ticks: u64) -> f64 {
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1);
    ticks as f64 * 1000.0 / hz as f64
}
