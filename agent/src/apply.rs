//! Installing a config on the host: check the installed Alloy is new enough,
//! write the candidate beside the live file, validate it with the installed
//! Alloy (with the flags Alloy runs with), keep the previous file, swap, and
//! have Alloy itself load it (`POST /-/reload`, which answers 400 with
//! Alloy's error when a component cannot be built); roll back on any failure
//! after the swap. Every failure names its step.
//!
//! The rollback target is the last config Alloy *accepted*
//! (`<live>.muster-accepted`), kept apart from the previous file: after a
//! crash between the swap and the reload, the live file holds a config Alloy
//! never confirmed, and copying it to "previous" on the next attempt must
//! not make it what a failure restores.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tracing::{info, warn};

use crate::alloy::command;
use crate::alloy::env::{validate_flags_from_file, validate_flags_from_service, ENV_FILES};
use crate::alloy::http::{self, ReloadError};
use crate::alloy::version::{check_for, AlloyVersion, Check};
use crate::atomic_file::{self, sibling};
use crate::config::Config;

/// Suffix of the candidate file written beside the live one.
pub const CANDIDATE_SUFFIX: &str = "muster-new";
/// Suffix of the copy of the previous live file.
pub const PREVIOUS_SUFFIX: &str = "muster-prev";
/// Suffix of the copy of the last config Alloy accepted: the rollback target.
pub const ACCEPTED_SUFFIX: &str = "muster-accepted";

/// What applying needs from the agent's config.
#[derive(Clone, Debug)]
pub struct ApplySettings {
    pub alloy_config: PathBuf,
    pub alloy_bin: PathBuf,
    /// Alloy's `/-/reload`: how a config is loaded and judged.
    pub reload_url: String,
    /// The fallback when nothing answers at `reload_url` (Alloy not running
    /// yet): a service reload, which cannot say whether Alloy took the config.
    pub reload_command: Vec<String>,
    pub ready_url: String,
    pub ready_timeout: Duration,
    /// Longest a validate or reload command (or the reload request) may run.
    pub command_timeout: Duration,
    /// Alloy's environment file: `alloy validate` gets the
    /// `--stability.level` and feature flags of its `CUSTOM_ARGS`. Without
    /// one (Windows), they come from Alloy's service `Arguments`.
    pub alloy_env_file: Option<PathBuf>,
}

impl From<&Config> for ApplySettings {
    fn from(c: &Config) -> ApplySettings {
        ApplySettings {
            alloy_config: c.alloy_config.clone(),
            alloy_bin: c.alloy_bin.clone(),
            reload_url: c.reload_url(),
            reload_command: c.reload_command.clone(),
            ready_url: c.ready_url.clone(),
            ready_timeout: c.ready_timeout,
            command_timeout: Duration::from_secs(120),
            alloy_env_file: c
                .alloy_env_file
                .clone()
                .or_else(|| ENV_FILES.iter().map(PathBuf::from).find(|p| p.is_file())),
        }
    }
}

/// The step an apply failed at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    FindAlloy,
    Version,
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
            Step::Version => "check the Alloy version",
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
    /// Something the operator should know although the apply did not fail:
    /// Alloy's `/-/reload` was unreachable and the fallback command reloaded,
    /// or the `alloy` user lacks a group or file the config needs.
    pub warning: Option<String>,
    /// Why Alloy's `/-/reload` was unreachable when the fallback command
    /// reloaded instead (reported to the server).
    pub reload_fallback: Option<String>,
}

/// What an apply notes on the way besides its result.
#[derive(Debug, Default)]
struct Notes {
    warning: Option<String>,
    reload_fallback: Option<String>,
}

/// Applies `content` as the new live config.
pub async fn apply(settings: &ApplySettings, content: &str) -> Outcome {
    let version = match command::version(&settings.alloy_bin, settings.command_timeout).await {
        Ok(v) => v,
        Err(message) => {
            return Outcome {
                alloy_version: None,
                result: Err(without_alloy(content, message)),
                warning: None,
                reload_fallback: None,
            }
        }
    };
    let mut notes = Notes::default();
    let needs = muster_shared::alloy::required_version(content);
    let result = match too_old(&version, needs) {
        Some(e) => Err(e),
        None => apply_with(settings, content, check_for(Some(&version)), &mut notes).await,
    };
    let mut warning = notes.warning;
    // What Alloy's user lacks shows only when Alloy runs the config: say it
    // now, with the fix.
    let access = crate::access::problems(content);
    if !access.is_empty() {
        let text = access.join("; ");
        warn!(problems = %text, "Alloy's user cannot reach what the config needs");
        warning = Some(match warning {
            Some(w) => format!("{w}; {text}"),
            None => text,
        });
    }
    Outcome {
        alloy_version: Some(version.text),
        result,
        warning,
        reload_fallback: notes.reload_fallback,
    }
}

/// The refusal when `have` is older than the `// Requires Alloy` lines of
/// the config ask for: naming both and how to upgrade.
pub fn too_old(have: &AlloyVersion, needs: Option<(u64, u64, u64)>) -> Option<ApplyError> {
    let needs = needs?;
    if (have.major, have.minor, have.patch) >= needs {
        return None;
    }
    let (major, minor, patch) = needs;
    Some(failed(
        Step::Version,
        format!(
            "this config needs Alloy v{major}.{minor}.{patch} or later (see its `Requires Alloy` \
             lines) and this host has {}: upgrade Alloy (apt-get install --only-upgrade alloy, \
             dnf upgrade alloy, zypper update alloy, or the Windows installer), then restart \
             muster-agent",
            have.text
        ),
    ))
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
    notes: &mut Notes,
) -> Result<(), ApplyError> {
    let live = &settings.alloy_config;
    let candidate = sibling(live, CANDIDATE_SUFFIX);
    let previous = sibling(live, PREVIOUS_SUFFIX);
    let accepted = sibling(live, ACCEPTED_SUFFIX);

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

    let kept = keep_previous(live, &previous, &accepted);
    if let Err(e) = kept {
        let _ = std::fs::remove_file(&candidate);
        return Err(e);
    }
    if let Err(e) = std::fs::rename(&candidate, live) {
        let _ = std::fs::remove_file(&candidate);
        return Err(failed(
            Step::Swap,
            format!("rename {} to {}: {e}", candidate.display(), live.display()),
        ));
    }
    atomic_file::sync_parent(live);

    let after_swap = match reload(settings, notes).await {
        Ok(()) => wait_ready(settings).await,
        Err(e) => Err(e),
    };
    let Err(mut error) = after_swap else {
        // Alloy runs this config now: it is what a later failure restores.
        if let Err(e) = copy_atomic(live, &accepted) {
            warn!(path = %accepted.display(), error = %e, "cannot keep a copy of the accepted config");
        }
        return Ok(());
    };
    warn!(step = %error.step, error = %error.message, "apply failed after the swap: rolling back");
    error.rollback = Some(roll_back(settings, &accepted, notes).await);
    Err(error)
}

/// Copies the live file to `previous` (for people), and, the first time
/// Muster touches this host, to `accepted`: what Alloy ran before Muster is
/// the best rollback target there is until Alloy accepts a config of ours.
fn keep_previous(live: &Path, previous: &Path, accepted: &Path) -> Result<(), ApplyError> {
    let keep = |to: &Path| match std::fs::copy(live, to) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let _ = std::fs::remove_file(to);
            Ok(())
        }
        Err(e) => Err(failed(
            Step::KeepPrevious,
            format!("copy {} to {}: {e}", live.display(), to.display()),
        )),
    };
    if !accepted.exists() {
        // A crash right after would leave `accepted` half written: copy
        // under a temp name and rename.
        let tmp = sibling(accepted, "tmp");
        keep(&tmp)?;
        if tmp.exists() {
            std::fs::rename(&tmp, accepted).map_err(|e| {
                failed(
                    Step::KeepPrevious,
                    format!("rename {} to {}: {e}", tmp.display(), accepted.display()),
                )
            })?;
        }
    }
    keep(previous)
}

/// `to` becomes a copy of `from`, atomically.
fn copy_atomic(from: &Path, to: &Path) -> io::Result<()> {
    let bytes = std::fs::read(from)?;
    atomic_file::write_atomic(to, &bytes, file_mode(from))
}

#[cfg(unix)]
fn file_mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).map_or(0o644, |m| m.permissions().mode() & 0o7777)
}

#[cfg(not(unix))]
fn file_mode(_path: &Path) -> u32 {
    0o644
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
    // The flags Alloy runs with: its environment file's CUSTOM_ARGS, or on
    // Windows (no such file) its service's Arguments.
    let flags = match settings.alloy_env_file.as_deref() {
        Some(path) => validate_flags_from_file(path),
        None => validate_flags_from_service(),
    };
    command::check_file(
        &settings.alloy_bin,
        check,
        &flags,
        candidate,
        settings.command_timeout,
    )
    .await
    .map_err(|m| failed(Step::Validate, m))
}

/// Has Alloy load the live file: `POST /-/reload`, whose answer is Alloy's
/// verdict. Only when nothing answers there (Alloy not running yet, or on
/// another port) does the reload command run instead; `notes` say so.
async fn reload(settings: &ApplySettings, notes: &mut Notes) -> Result<(), ApplyError> {
    let unreachable = match http::reload(&settings.reload_url, settings.command_timeout).await {
        Ok(()) => return Ok(()),
        Err(ReloadError::Unreachable { detail, .. }) => detail,
        Err(e) => return Err(failed(Step::Reload, e.to_string())),
    };
    let command = settings.reload_command.join(" ");
    command::run_command(&settings.reload_command, settings.command_timeout)
        .await
        .map_err(|m| {
            failed(
                Step::Reload,
                format!(
                    "{} was unreachable ({unreachable}), and the fallback {m}",
                    settings.reload_url
                ),
            )
        })?;
    let text = format!(
        "Alloy's {} was unreachable ({unreachable}): reloaded with `{command}` instead, \
         which cannot tell whether Alloy took the config",
        settings.reload_url
    );
    warn!(warning = %text, "reload fallback");
    notes.warning = Some(text);
    notes.reload_fallback = Some(unreachable);
    Ok(())
}

/// Waits until `ready_url` answers 200.
async fn wait_ready(settings: &ApplySettings) -> Result<(), ApplyError> {
    http::wait_ready(&settings.ready_url, settings.ready_timeout)
        .await
        .map_err(|m| failed(Step::Ready, m))
}

/// Puts the last accepted config back (or removes the new one when there
/// was none) and has Alloy load it again.
async fn roll_back(
    settings: &ApplySettings,
    accepted: &Path,
    notes: &mut Notes,
) -> Result<(), String> {
    let live = &settings.alloy_config;
    let restored = if accepted.exists() {
        copy_atomic(accepted, live).map_err(|e| {
            format!(
                "restore {} from {}: {e}",
                live.display(),
                accepted.display()
            )
        })
    } else {
        std::fs::remove_file(live).map_err(|e| format!("remove {}: {e}", live.display()))
    };
    restored?;
    atomic_file::sync_parent(live);
    reload(settings, notes).await.map_err(|e| e.to_string())?;
    info!(path = %live.display(), "restored the last accepted config");
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
