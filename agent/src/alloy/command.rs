//! Running the installed Alloy and the commands around it: one runner (argv,
//! no shell, stdin closed, killed at a timeout) whose failures name the
//! program and carry its exit status and bounded output; `alloy --version`
//! and `alloy validate|fmt` on top of it.

use std::ffi::OsStr;
use std::io;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use tokio::process::Command;

use super::version::{parse_alloy_version, AlloyVersion, Check};
use crate::error_text::bounded;

/// Most bytes of a command's output kept in an error.
const MAX_OUTPUT: usize = 2048;

/// The Alloy version installed at `bin`.
pub async fn version(bin: &Path, timeout: Duration) -> Result<AlloyVersion, String> {
    let output = run(bin, &["--version"], timeout)
        .await
        .map_err(|e| e.describe("alloy", bin))?;
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if !output.status.success() {
        return Err(format!(
            "`{} --version` {}",
            bin.display(),
            describe_exit(&output)
        ));
    }
    parse_alloy_version(&text).ok_or_else(|| {
        format!(
            "cannot find a version in `{} --version` output: {}",
            bin.display(),
            bounded(text.trim(), 200)
        )
    })
}

/// Checks `file` with the Alloy at `bin`; `validate` gets `flags` (those
/// `alloy run` runs with), `fmt` takes none. The error says how it failed.
pub async fn check_file(
    bin: &Path,
    check: Check,
    flags: &[String],
    file: &Path,
    timeout: Duration,
) -> Result<(), String> {
    let (verb, flags) = match check {
        Check::Validate => ("validate", flags),
        Check::Fmt => ("fmt", &[][..]),
    };
    let args: Vec<&OsStr> = std::iter::once(OsStr::new(verb))
        .chain(flags.iter().map(OsStr::new))
        .chain(std::iter::once(file.as_os_str()))
        .collect();
    let output = run(bin, &args, timeout)
        .await
        .map_err(|e| e.describe("alloy", bin))?;
    if output.status.success() {
        return Ok(());
    }
    Err(format!("`alloy {verb}` {}", describe_exit(&output)))
}

/// Runs `argv`; the error names the command and says how it failed.
pub async fn run_command(argv: &[String], timeout: Duration) -> Result<(), String> {
    let Some((program, args)) = argv.split_first() else {
        return Err("the command is empty".into());
    };
    let program = Path::new(program);
    let output = run(program, args, timeout)
        .await
        .map_err(|e| e.describe(&program_name(program), program))?;
    if output.status.success() {
        return Ok(());
    }
    Err(format!("`{}` {}", argv.join(" "), describe_exit(&output)))
}

/// Why a command could not be run at all.
#[derive(Debug)]
enum RunFailure {
    NotFound,
    Io(io::Error),
    TimedOut(Duration),
}

impl RunFailure {
    /// `what` names the program for people: "alloy", or the reload command.
    fn describe(&self, what: &str, program: &Path) -> String {
        match self {
            // A bare name was looked up in PATH: say so, or "alloy not found
            // at alloy" reads like a typo.
            RunFailure::NotFound if program.components().count() == 1 => {
                format!(
                    "{what} not found at {} (looked up in PATH)",
                    program.display()
                )
            }
            RunFailure::NotFound => format!("{what} not found at {}", program.display()),
            RunFailure::Io(e) => format!("cannot run {}: {e}", program.display()),
            RunFailure::TimedOut(d) => format!(
                "{} did not finish within {}",
                program.display(),
                humantime::format_duration(*d)
            ),
        }
    }
}

fn program_name(program: &Path) -> String {
    program.file_name().map_or_else(
        || program.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

async fn run(
    program: &Path,
    args: &[impl AsRef<OsStr>],
    timeout: Duration,
) -> Result<Output, RunFailure> {
    let child = Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(timeout, child).await {
        Err(_) => Err(RunFailure::TimedOut(timeout)),
        Ok(Err(e)) if e.kind() == io::ErrorKind::NotFound => Err(RunFailure::NotFound),
        Ok(Err(e)) => Err(RunFailure::Io(e)),
        Ok(Ok(output)) => Ok(output),
    }
}

/// "exited with status 1: <stderr>", stderr (else stdout) bounded.
fn describe_exit(output: &Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let text = if stderr.trim().is_empty() {
        stdout
    } else {
        stderr
    };
    let status = match output.status.code() {
        Some(code) => format!("exited with status {code}"),
        None => "was killed by a signal".to_string(),
    };
    match text.trim() {
        "" => status,
        text => format!("{status}: {}", bounded(text, MAX_OUTPUT)),
    }
}
