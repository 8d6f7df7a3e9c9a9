//! `muster-agent status`: what this agent is (host id, server, certificate
//! expiry) and how its last apply went, for people or as JSON.

use std::path::Path;

use muster_shared::wire::ApplyResult;
use serde::Serialize;

use crate::config::Config;
use crate::identity::{self, IdentityError, StateDir, Validity};
use crate::state::{AgentState, StateError};

/// Everything `status` shows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Status {
    pub enrolled: bool,
    pub host_id: Option<String>,
    pub server: Option<String>,
    pub enrolled_at: Option<i64>,
    pub cert_not_after: Option<i64>,
    pub cert_days_left: Option<i64>,
    pub applied_hash: Option<String>,
    pub last_attempted_hash: Option<String>,
    pub last_result: Option<ApplyResult>,
    pub last_error: Option<String>,
    pub last_warning: Option<String>,
    pub last_apply_at: Option<i64>,
    pub alloy_version: Option<String>,
    pub report_pending: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error(transparent)]
    State(#[from] StateError),
}

/// Reads the state dir named in `config`.
pub fn gather(config: &Config, now: i64) -> Result<Status, StatusError> {
    let dir = StateDir::new(&config.state_dir);
    let identity = dir.load_identity()?;
    let validity = match &identity {
        Some(_) => read_validity(&dir)?,
        None => None,
    };
    let state = AgentState::load(&config.state_dir)?;
    Ok(Status {
        enrolled: identity.is_some(),
        host_id: identity.as_ref().map(|i| i.host_id.clone()),
        server: identity
            .as_ref()
            .map(|i| i.server.clone())
            .or_else(|| config.server.clone()),
        enrolled_at: identity.as_ref().map(|i| i.enrolled_at),
        cert_not_after: validity.map(|v| v.not_after),
        cert_days_left: validity.map(|v| v.days_left(now)),
        applied_hash: state.applied_hash,
        last_attempted_hash: state.last_attempted_hash,
        last_result: state.last_result,
        last_error: state.last_error,
        last_warning: state.last_warning,
        last_apply_at: state.last_apply_at,
        alloy_version: state.alloy_version,
        report_pending: state.pending_report.is_some(),
    })
}

fn read_validity(dir: &StateDir) -> Result<Option<Validity>, IdentityError> {
    let path = dir.file(identity::CERT_FILE);
    let pem = match std::fs::read_to_string(&path) {
        Ok(p) => p,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(IdentityError::Io { path, error }),
    };
    Validity::of_pem(&pem)
        .map(Some)
        .map_err(|problem| IdentityError::Invalid { path, problem })
}

/// The text people read.
pub fn render(status: &Status, config_path: &Path) -> String {
    if !status.enrolled {
        return format!(
            "not enrolled: this host has no Muster identity yet (config {}).\n\
             Enroll it with: muster-agent enroll --server https://HOST:PORT --token TOKEN --pin sha256//...\n",
            config_path.display()
        );
    }
    let none = || "-".to_string();
    let time = |t: Option<i64>| t.map_or_else(none, format_time);
    let mut out = String::new();
    let mut line = |k: &str, v: String| out.push_str(&format!("{k:<16}{v}\n"));
    line("host id", status.host_id.clone().unwrap_or_else(none));
    line("server", status.server.clone().unwrap_or_else(none));
    line("enrolled at", time(status.enrolled_at));
    line(
        "certificate",
        match (status.cert_not_after, status.cert_days_left) {
            (Some(t), Some(d)) if d < 0 => {
                format!("EXPIRED at {}: re-enroll with a new token", format_time(t))
            }
            (Some(t), Some(d)) => format!("expires {} ({d} days left)", format_time(t)),
            _ => "missing".to_string(),
        },
    );
    line(
        "applied config",
        status.applied_hash.clone().unwrap_or_else(none),
    );
    line(
        "last result",
        match (status.last_result, &status.last_attempted_hash) {
            (Some(ApplyResult::Applied), Some(h)) => format!("applied {h}"),
            (Some(ApplyResult::Failed), Some(h)) => format!("FAILED {h}"),
            _ => "no config applied yet".to_string(),
        },
    );
    if let Some(e) = &status.last_error {
        line("last error", e.clone());
    }
    if let Some(w) = &status.last_warning {
        line("warning", w.clone());
    }
    line("last apply", time(status.last_apply_at));
    line("alloy", status.alloy_version.clone().unwrap_or_else(none));
    if status.report_pending {
        line("report", "not yet delivered to the server".to_string());
    }
    out
}

/// A Unix time as RFC 3339 (UTC).
pub fn format_time(t: i64) -> String {
    let when = std::time::UNIX_EPOCH + std::time::Duration::from_secs(t.max(0).unsigned_abs());
    humantime::format_rfc3339_seconds(when).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_enrolled_says_so_and_how_to_fix_it() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            state_dir: dir.path().to_owned(),
            ..Config::default()
        };
        let s = gather(&config, 0).unwrap();
        assert!(!s.enrolled);
        let text = render(&s, Path::new("/etc/muster/agent.toml"));
        assert!(text.starts_with("not enrolled"), "{text}");
        assert!(text.contains("muster-agent enroll"));
    }

    #[test]
    fn renders_an_enrolled_agent() {
        let s = Status {
            enrolled: true,
            host_id: Some("web-01-abc".into()),
            server: Some("https://m:8443".into()),
            enrolled_at: Some(0),
            cert_not_after: Some(86_400 * 30),
            cert_days_left: Some(29),
            applied_hash: Some("aaa".into()),
            last_attempted_hash: Some("bbb".into()),
            last_result: Some(ApplyResult::Failed),
            last_error: Some("validate failed: boom".into()),
            last_warning: None,
            last_apply_at: Some(86_400),
            alloy_version: Some("v1.10.2".into()),
            report_pending: false,
        };
        let text = render(&s, Path::new("x"));
        assert!(text.contains("web-01-abc"));
        assert!(
            text.contains("expires 1970-01-31T00:00:00Z (29 days left)"),
            "{text}"
        );
        assert!(
            text.contains("FAILED bbb") && text.contains("validate failed: boom"),
            "{text}"
        );
        assert!(text.contains("1970-01-02T00:00:00Z"));
    }
}
