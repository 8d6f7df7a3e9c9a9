//! The installed Alloy and the commands run around it: reading its version,
//! choosing `validate` or `fmt`, and running a command (argv, no shell) with a
//! timeout, its failure described with its exit status and bounded output.

use std::ffi::OsStr;
use std::io;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use tokio::process::Command;

use crate::apply::bounded;

/// Most bytes of a command's output kept in an error.
const MAX_OUTPUT: usize = 2048;

/// An Alloy release number, as `alloy --version` prints it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlloyVersion {
    pub major: u64,
    pub minor: u64,
    pub patch: u64,
    /// As printed, e.g. `v1.10.2`.
    pub text: String,
}

/// Finds the version in `alloy --version` output, e.g.
/// `alloy, version v1.10.2 (branch: HEAD, revision: 1a2b3c)`.
pub fn parse_alloy_version(output: &str) -> Option<AlloyVersion> {
    let words: Vec<&str> = output.split_whitespace().collect();
    let after_version = words
        .windows(2)
        .find(|w| w[0].eq_ignore_ascii_case("version"))
        .and_then(|w| parse_version_word(w[1]));
    after_version.or_else(|| {
        words
            .iter()
            .filter(|w| w.starts_with('v'))
            .find_map(|w| parse_version_word(w))
    })
}

fn parse_version_word(word: &str) -> Option<AlloyVersion> {
    let text = word.trim_matches(|c: char| c == ',' || c == '(' || c == ')');
    let bare = text.strip_prefix('v').unwrap_or(text);
    // `1.11.0-rc.1` or `1.11.0+devel`: the release part decides.
    let release = bare.split(['-', '+']).next()?;
    let mut parts = release.split('.').map(|p| p.parse::<u64>().ok());
    let (major, minor) = (parts.next()??, parts.next()??);
    let patch = parts.next().flatten().unwrap_or(0);
    Some(AlloyVersion {
        major,
        minor,
        patch,
        text: text.to_string(),
    })
}

/// How a candidate is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    /// `alloy validate FILE`: syntax, components, arguments, references (1.9+).
    Validate,
    /// `alloy fmt FILE`: syntax only. Never `fmt -t`, which also fails on
    /// merely unformatted files.
    Fmt,
}

/// `validate` where the Alloy is new enough to have it, else `fmt`.
pub fn check_for(version: Option<&AlloyVersion>) -> Check {
    match version {
        Some(v) if (v.major, v.minor) >= (1, 9) => Check::Validate,
        _ => Check::Fmt,
    }
}

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

/// Checks `file` with the Alloy at `bin`; the error says how it failed.
pub async fn check_file(
    bin: &Path,
    check: Check,
    file: &Path,
    timeout: Duration,
) -> Result<(), String> {
    let verb = match check {
        Check::Validate => "validate",
        Check::Fmt => "fmt",
    };
    let args = [OsStr::new(verb), file.as_os_str()];
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_alloy_version_output() {
        let v = parse_alloy_version(
            "alloy, version v1.10.2 (branch: HEAD, revision: 7bd2b8f1a)\n  build user: root@x\n  go version: go1.24\n",
        )
        .unwrap();
        assert_eq!((v.major, v.minor, v.patch), (1, 10, 2));
        assert_eq!(v.text, "v1.10.2");
        let rc = parse_alloy_version("alloy, version v1.11.0-rc.1 (branch: x)").unwrap();
        assert_eq!((rc.major, rc.minor, rc.patch), (1, 11, 0));
        let old = parse_alloy_version("alloy, version v1.8.3").unwrap();
        assert_eq!((old.major, old.minor), (1, 8));
        assert_eq!(parse_alloy_version("something else entirely"), None);
        assert_eq!(parse_alloy_version(""), None);
    }

    #[test]
    fn validate_from_1_9_else_fmt() {
        let v = |s: &str| parse_alloy_version(s);
        assert_eq!(
            check_for(v("alloy, version v1.9.0").as_ref()),
            Check::Validate
        );
        assert_eq!(
            check_for(v("alloy, version v1.18.1").as_ref()),
            Check::Validate
        );
        assert_eq!(
            check_for(v("alloy, version v2.0.0").as_ref()),
            Check::Validate
        );
        assert_eq!(check_for(v("alloy, version v1.8.9").as_ref()), Check::Fmt);
        assert_eq!(check_for(v("alloy, version v0.30.0").as_ref()), Check::Fmt);
        assert_eq!(check_for(None), Check::Fmt);
    }
}
