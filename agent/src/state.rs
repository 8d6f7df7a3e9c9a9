//! What the agent remembers between runs about applying configs
//! (`state.json` in the state dir): the hash applied and the one last
//! attempted, how that ended, and a status report still owed to the server.

use std::io;
use std::path::{Path, PathBuf};

use muster_shared::wire::{ApplyResult, StatusReport};
use serde::{Deserialize, Serialize};

use crate::atomic_file::write_atomic;

pub const STATE_FILE: &str = "state.json";

/// What to do about a state file that cannot be read.
const FIX: &str = "remove it and the agent starts with empty apply state (it applies the server's current config once more and reports it)";

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot read {}: {error}", path.display())]
    Read { path: PathBuf, error: io::Error },
    #[error("{} is not valid agent state ({error}); {FIX}", path.display())]
    Parse {
        path: PathBuf,
        error: serde_json::Error,
    },
    #[error("{} is empty; {FIX}", path.display())]
    Empty { path: PathBuf },
    #[error("cannot write {}: {error}", path.display())]
    Write { path: PathBuf, error: io::Error },
}

/// The persisted apply state. Unknown fields are ignored so an older agent
/// can read a newer agent's file after a downgrade.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentState {
    /// Hash of the config now live (applied and ready).
    #[serde(default)]
    pub applied_hash: Option<String>,
    /// Hash of the last config the agent tried to apply, whatever the result.
    #[serde(default)]
    pub last_attempted_hash: Option<String>,
    #[serde(default)]
    pub last_result: Option<ApplyResult>,
    #[serde(default)]
    pub last_error: Option<String>,
    /// What the operator should know about the last apply although it did
    /// not fail (Alloy's `/-/reload` was unreachable: a fallback reloaded).
    #[serde(default)]
    pub last_warning: Option<String>,
    /// Unix seconds.
    #[serde(default)]
    pub last_apply_at: Option<i64>,
    #[serde(default)]
    pub alloy_version: Option<String>,
    /// From the last config received; the poll interval.
    #[serde(default)]
    pub checkin_interval_secs: Option<u64>,
    /// A report the server has not acknowledged yet; sent on the next loop,
    /// even after a restart.
    #[serde(default)]
    pub pending_report: Option<StatusReport>,
}

impl AgentState {
    pub fn path(state_dir: &Path) -> PathBuf {
        state_dir.join(STATE_FILE)
    }

    /// The saved state; the empty state when there is none yet.
    pub fn load(state_dir: &Path) -> Result<AgentState, StateError> {
        let path = AgentState::path(state_dir);
        match std::fs::read(&path) {
            Ok(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => {
                Err(StateError::Empty { path })
            }
            Ok(bytes) => {
                serde_json::from_slice(&bytes).map_err(|error| StateError::Parse { path, error })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(AgentState::default()),
            Err(error) => Err(StateError::Read { path, error }),
        }
    }

    pub fn save(&self, state_dir: &Path) -> Result<(), StateError> {
        let path = AgentState::path(state_dir);
        let json = serde_json::to_vec_pretty(self).map_err(|error| StateError::Parse {
            path: path.clone(),
            error,
        })?;
        write_atomic(&path, &json, 0o644).map_err(|error| StateError::Write { path, error })
    }

    /// The hash to send as `If-None-Match`: the last one attempted, except
    /// right after a start when that attempt failed. Then the config is fetched
    /// and tried again once, so fixing the host (installing Alloy, say) and
    /// restarting the agent is enough to retry.
    pub fn etag_on_start(&self) -> Option<String> {
        match self.last_result {
            Some(ApplyResult::Applied) => self.last_attempted_hash.clone(),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_starts_empty() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(AgentState::load(dir.path()).unwrap(), AgentState::default());
        let state = AgentState {
            applied_hash: Some("abc".into()),
            last_attempted_hash: Some("abc".into()),
            last_result: Some(ApplyResult::Applied),
            last_apply_at: Some(5),
            pending_report: Some(StatusReport {
                hash: "abc".into(),
                result: ApplyResult::Applied,
                error: None,
                alloy_version: Some("v1.10.2".into()),
                reload_fallback: Some("connection refused".into()),
            }),
            ..AgentState::default()
        };
        state.save(dir.path()).unwrap();
        assert_eq!(AgentState::load(dir.path()).unwrap(), state);
        std::fs::write(AgentState::path(dir.path()), "{").unwrap();
        let msg = AgentState::load(dir.path()).unwrap_err().to_string();
        assert!(msg.contains("state.json"), "{msg}");
        assert!(msg.contains("remove it"), "{msg}");
        std::fs::write(AgentState::path(dir.path()), "").unwrap();
        let msg = AgentState::load(dir.path()).unwrap_err().to_string();
        assert!(
            msg.contains("state.json is empty") && msg.contains("remove it"),
            "{msg}"
        );
    }

    #[test]
    fn a_failed_attempt_is_fetched_again_after_a_start() {
        let mut s = AgentState {
            last_attempted_hash: Some("h".into()),
            last_result: Some(ApplyResult::Applied),
            ..AgentState::default()
        };
        assert_eq!(s.etag_on_start().as_deref(), Some("h"));
        s.last_result = Some(ApplyResult::Failed);
        assert_eq!(s.etag_on_start(), None);
    }
}
