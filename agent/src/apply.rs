//! Installing a config on the host: write the candidate beside the live file,
//! validate it with the installed Alloy, keep the previous file, swap, reload,
//! wait for ready, and roll back on any failure after the swap. Every failure
//! names its step.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tracing::{info, warn};

use crate::alloy::command;
use crate::alloy::http;
use crate::alloy::version::{check_for, Check};
use crate::atomic_file::{self, sibling};
use crate::config::Config;

/// Suffix of the candidate file written beside the live one.
pub const CANDIDATE_SUFFIX: &str = "muster-new";
/// Suffix of the copy of the previous live file.
pub const PREVIOUS_SUFFIX: &str = "muster-prev";

/// What applying needs from the agent's config.
#[derive(Clone, Debug)]
pub struct ApplySettings {
    pub alloy_config: PathBuf,
    pub alloy_bin: PathBuf,
    pub reload_command: Vec<String>,
    pub ready_url: String,
    pub ready_timeout: Duration,
    /// Longest a validate or reload command may run.
    pub command_timeout: Duration,
}

impl From<&Config> for ApplySettings {
    fn from(c: &Config) -> ApplySettings {
        ApplySettings {
            alloy_config: c.alloy_config.clone(),
            alloy_bin: c.alloy_bin.clone(),
            reload_command: c.reload_command.clone(),
            ready_url: c.ready_url.clone(),
            ready_timeout: c.ready_timeout,
            command_timeout: Duration::from_secs(120),
        }
    }
}

/// The step an apply failed at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    FindAlloy,
    WriteCandidate,
    Validate,
    KeepPrevious,
    Swap,
    Reload,
    Ready,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Step::FindAlloy => "find alloy",
            Step::WriteCandidate => "write candidate",
            Step::Validate => "validate",
            Step::KeepPrevious => "keep previous config",
            Step::Swap => "swap",
            Step::Reload => "reload",
            Step::Ready => "wait for ready",
        })
    }
}

/// Why an apply failed, and what the rollback did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApplyError {
    pub step: Step,
    pub message: String,
    /// `None`: the live file was never touched. `Some(Ok)`: the previous
    /// config was restored and reloaded. `Some(Err)`: the rollback failed too.
    pub rollback: Option<Result<(), String>>,
}

impl fmt::Display for ApplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} failed: {}", self.step, self.message)?;
        match &self.rollback {
            None => Ok(()),
            Some(Ok(())) => write!(f, " (previous config restored)"),
            Some(Err(e)) => write!(f, " (rollback failed too: {e})"),
        }
    }
}

impl std::error::Error for ApplyError {}

fn failed(step: Step, message: impl Into<String>) -> ApplyError {
    ApplyError {
        step,
        message: message.into(),
        rollback: None,
    }
}

/// The result of one apply, with the Alloy version found on the way.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub alloy_version: Option<String>,
    pub result: Result<(), ApplyError>,
}

/// Applies `content` as the new live config.
pub async fn apply(settings: &ApplySettings, content: &str) -> Outcome {
    let version = match command::version(&settings.alloy_bin, settings.command_timeout).await {
        Ok(v) => v,
        Err(message) => {
            return Outcome {
                alloy_version: None,
                result: Err(without_alloy(content, message)),
            }
        }
    };
    let result = apply_with(settings, content, check_for(Some(&version))).await;
    Outcome {
        alloy_version: Some(version.text),
        result,
    }
}

/// No usable Alloy yet (not installed, or `--version` fails): the built-in
/// syntax checker (the server's own) still says whether the config is
/// sound, so a broken template shows up as a validation failure with its
/// diagnostic rather than as a missing binary. Nothing is installed: there
/// is no Alloy to load it; the failed config is applied again when the agent
/// restarts (after Alloy is installed).
fn without_alloy(content: &str, find_error: String) -> ApplyError {
    let diagnostics = muster_shared::alloy::check(content);
    match diagnostics.first() {
        Some(d) => failed(
            Step::Validate,
            format!(
                "built-in Alloy syntax check ({find_error}): {d}{}",
                if diagnostics.len() > 1 {
                    format!(" (and {} more)", diagnostics.len() - 1)
                } else {
                    String::new()
                }
            ),
        ),
        None => failed(
            Step::FindAlloy,
            format!("{find_error}; the config passed the built-in syntax check and is applied once Alloy is installed and the agent restarted"),
        ),
    }
}

async fn apply_with(
    settings: &ApplySettings,
    content: &str,
    check: Check,
) -> Result<(), ApplyError> {
    let live = &settings.alloy_config;
    let candidate = sibling(live, CANDIDATE_SUFFIX);
    let previous = sibling(live, PREVIOUS_SUFFIX);

    write_candidate(&candidate, live, content).map_err(|e| {
        failed(
            Step::WriteCandidate,
            format!("{}: {e}", candidate.display()),
        )
    })?;
    if let Err(e) = validate(settings, &candidate, check).await {
        let _ = std::fs::remove_file(&candidate);
        return Err(e);
    }

    let had_previous = match std::fs::copy(live, &previous) {
        Ok(_) => true,
        Err(e) if e.kind() == io::ErrorKind::NotFound => false,
        Err(e) => {
            let _ = std::fs::remove_file(&candidate);
            return Err(failed(
                Step::KeepPrevious,
                format!("copy {} to {}: {e}", live.display(), previous.display()),
            ));
        }
    };
    if let Err(e) = std::fs::rename(&candidate, live) {
        let _ = std::fs::remove_file(&candidate);
        return Err(failed(
            Step::Swap,
            format!("rename {} to {}: {e}", candidate.display(), live.display()),
        ));
    }
    atomic_file::sync_parent(live);

    let after_swap = match reload(settings).await {
        Ok(()) => wait_ready(settings).await,
        Err(e) => Err(e),
    };
    let Err(mut error) = after_swap else {
        return Ok(());
    };
    warn!(step = %error.step, error = %error.message, "apply failed after the swap: rolling back");
    error.rollback = Some(roll_back(settings, &previous, had_previous).await);
    Err(error)
}

/// Writes the candidate with the live file's permissions and, when allowed,
/// its owner (Alloy runs as its own user and must be able to read it).
fn write_candidate(candidate: &Path, live: &Path, content: &str) -> io::Result<()> {
    let live_meta = std::fs::metadata(live).ok();
    #[cfg(unix)]
    let mode = {
        use std::os::unix::fs::PermissionsExt;
        live_meta
            .as_ref()
            .map_or(0o644, |m| m.permissions().mode() & 0o7777)
    };
    #[cfg(not(unix))]
    let mode = 0o644;
    atomic_file::write_atomic(candidate, content.as_bytes(), mode)?;
    #[cfg(unix)]
    if let Some(meta) = &live_meta {
        use std::os::unix::fs::MetadataExt;
        // Only root may give a file away; otherwise it is already ours.
        let _ = std::os::unix::fs::chown(candidate, Some(meta.uid()), Some(meta.gid()));
    }
    #[cfg(not(unix))]
    let _ = live_meta;
    Ok(())
}

async fn validate(
    settings: &ApplySettings,
    candidate: &Path,
    check: Check,
) -> Result<(), ApplyError> {
    command::check_file(
        &settings.alloy_bin,
        check,
        candidate,
        settings.command_timeout,
    )
    .await
    .map_err(|m| failed(Step::Validate, m))
}

async fn reload(settings: &ApplySettings) -> Result<(), ApplyError> {
    command::run_command(&settings.reload_command, settings.command_timeout)
        .await
        .map_err(|m| failed(Step::Reload, m))
}

/// Waits until `ready_url` answers 200.
async fn wait_ready(settings: &ApplySettings) -> Result<(), ApplyError> {
    http::wait_ready(&settings.ready_url, settings.ready_timeout)
        .await
        .map_err(|m| failed(Step::Ready, m))
}

/// Puts the previous live file back (or removes the new one when there was
/// none) and reloads again.
async fn roll_back(
    settings: &ApplySettings,
    previous: &Path,
    had_previous: bool,
) -> Result<(), String> {
    let live = &settings.alloy_config;
    let restored = if had_previous {
        std::fs::rename(previous, live).map_err(|e| {
            format!(
                "restore {} from {}: {e}",
                live.display(),
                previous.display()
            )
        })
    } else {
        std::fs::remove_file(live).map_err(|e| format!("remove {}: {e}", live.display()))
    };
    restored?;
    atomic_file::sync_parent(live);
    reload(settings).await.map_err(|e| e.to_string())?;
    info!(path = %live.display(), "restored the previous config");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_alloy_the_builtin_checker_judges_the_config() {
        let e = without_alloy(
            "logging {\n\tlevel = \"info\"\n}\n",
            "alloy not found at x".into(),
        );
        assert_eq!(e.step, Step::FindAlloy);
        assert!(
            e.message.contains("passed the built-in syntax check"),
            "{e}"
        );
        let e = without_alloy(
            "logging {\n\tlevel = info\"\n}\n",
            "alloy not found at x".into(),
        );
        assert_eq!(e.step, Step::Validate);
        assert!(
            e.message
                .starts_with("built-in Alloy syntax check (alloy not found at x): 2:"),
            "{e}"
        );
    }

    #[test]
    fn errors_say_step_and_rollback() {
        let mut e = failed(Step::Reload, "exited with status 1: boom");
        assert_eq!(e.to_string(), "reload failed: exited with status 1: boom");
        e.rollback = Some(Ok(()));
        assert!(e.to_string().ends_with("(previous config restored)"));
        e.rollback = Some(Err("disk full".into()));
        assert!(e.to_string().ends_with("(rollback failed too: disk full)"));
    }
}
