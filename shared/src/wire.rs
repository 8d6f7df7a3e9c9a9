//! The JSON bodies exchanged between agent, server and admin CLI. Times are
//! Unix seconds (UTC).

use serde::{Deserialize, Serialize};

use crate::facts::Facts;
use crate::labels::Labels;

/// Largest request body any route accepts.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

pub const ENROLL_PATH: &str = "/v1/enroll";
pub const CONFIG_PATH: &str = "/v1/agent/config";
pub const STATUS_PATH: &str = "/v1/agent/status";
pub const RENEW_PATH: &str = "/v1/agent/renew";
/// `POST` [`crate::facts::Facts`]: the agent's facts changed (a service was
/// installed, say). Answered with [`FactsAccepted`]. Older servers answer
/// 404, which agents take as "not supported" and carry on.
pub const FACTS_PATH: &str = "/v1/agent/facts";

/// The error code of a 403 to an agent whose certificate was revoked (its
/// host decommissioned or taken over): the agent stops instead of retrying.
pub const CODE_REVOKED: &str = "certificate_revoked";

/// Every error answer: `{"error": {"code": "...", "message": "..."}}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
}

/// `POST /v1/enroll`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    pub token: String,
    /// PEM PKCS#10 request for the agent's locally generated key.
    pub csr_pem: String,
    pub facts: Facts,
    /// Chosen by the agent once per enrollment attempt and reused on retries,
    /// so a retried enroll returns the same host.
    pub idempotency_key: String,
    /// Labels the host asks for (`install.sh --labels`, `enroll --label`).
    /// Checked like operator labels; they only fill names the token and the
    /// host record leave unset (the token's preset labels win).
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    pub labels: Labels,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EnrollResponse {
    pub host_id: String,
    pub certificate_pem: String,
    pub ca_pem: String,
    pub config: AgentConfig,
}

/// `GET /v1/agent/config` (200; the hash is also the ETag).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentConfig {
    /// Hex SHA-256 of `content`.
    pub hash: String,
    /// The rendered Alloy config.
    pub content: String,
    /// How often the agent should poll.
    pub checkin_interval_secs: u64,
}

/// How an apply ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApplyResult {
    Applied,
    Failed,
}

/// `POST /v1/agent/status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusReport {
    /// The hash the agent tried to apply.
    pub hash: String,
    pub result: ApplyResult,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alloy_version: Option<String>,
    /// Alloy's `/-/reload` could not be reached, so the agent reloaded with
    /// its fallback (a service reload or signal, which cannot tell whether
    /// Alloy took the config): why it was unreachable. Cleaned and capped
    /// like `error`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reload_fallback: Option<String>,
}

/// Longest error text of a status report the server keeps.
pub const MAX_STATUS_ERROR_LEN: usize = 4096;

/// A status report's error text as the server stores it: control characters
/// (newlines and tabs included) become spaces, and text beyond
/// [`MAX_STATUS_ERROR_LEN`] bytes is cut at a character boundary and marked.
pub fn clean_status_error(text: &str) -> String {
    let mut out: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if out.len() > MAX_STATUS_ERROR_LEN {
        let mut cut = MAX_STATUS_ERROR_LEN;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push_str(" [truncated]");
    }
    out
}

/// The answer to `POST /v1/agent/facts`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FactsAccepted {
    /// Hash of the config the server now has for the host: when it differs
    /// from the agent's, the next config fetch brings the new one.
    pub hash: String,
}

/// `POST /v1/agent/renew`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenewRequest {
    pub csr_pem: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RenewResponse {
    pub certificate_pem: String,
    pub ca_pem: String,
}

/// Admin: `POST /v1/admin/tokens`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenCreate {
    #[serde(default)]
    pub labels: Labels,
    /// Lifetime in seconds; the server's default when absent.
    #[serde(default)]
    pub ttl_secs: Option<u64>,
    /// How many enrollments it allows; 1 when absent.
    #[serde(default)]
    pub uses: Option<u32>,
}

/// Admin: the answer to a token creation. The only time the secret is shown.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TokenCreated {
    pub token: String,
    pub info: TokenInfo,
    /// A ready-to-paste `muster-agent enroll ...` line.
    pub enroll_command: String,
    /// A ready-to-paste one-liner that installs the agent (and Alloy) on a
    /// bare host and enrolls it, run as root: `curl … /install.sh | sh -s --
    /// --token …`. Empty when the server has no agent binary to hand out.
    #[serde(default)]
    pub install_command: String,
    /// Why there is no `install_command`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub install_unavailable: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenState {
    Active,
    Expired,
    Exhausted,
    Revoked,
}

/// Admin: a token as listed (never its secret).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TokenInfo {
    pub id: String,
    pub state: TokenState,
    pub labels: Labels,
    pub created_at: i64,
    pub expires_at: i64,
    pub uses_allowed: u32,
    pub uses: u32,
    #[serde(default)]
    pub revoked_at: Option<i64>,
}

/// A host's state. The server stores the config state (`enrolled`,
/// `config_applied`, `config_failed`) as reported by the agent; the state
/// shown to operators (`HostInfo::state`) is derived from it together with
/// the scrape check, check-ins and decommission, see `HostInfo`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HostState {
    /// Pre-registered by a batch import; not enrolled yet.
    Pending,
    Enrolled,
    ConfigApplied,
    ConfigFailed,
    /// Config applied and Prometheus scrapes every target of the host.
    ScrapeOk,
    /// Config applied but Prometheus reports a target down.
    ScrapeFailing,
    /// No check-in for longer than the server's `stale_after`.
    Stale,
    Decommissioned,
}

impl HostState {
    pub const ALL: [HostState; 8] = [
        HostState::Pending,
        HostState::Enrolled,
        HostState::ConfigApplied,
        HostState::ConfigFailed,
        HostState::ScrapeOk,
        HostState::ScrapeFailing,
        HostState::Stale,
        HostState::Decommissioned,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            HostState::Pending => "pending",
            HostState::Enrolled => "enrolled",
            HostState::ConfigApplied => "config_applied",
            HostState::ConfigFailed => "config_failed",
            HostState::ScrapeOk => "scrape_ok",
            HostState::ScrapeFailing => "scrape_failing",
            HostState::Stale => "stale",
            HostState::Decommissioned => "decommissioned",
        }
    }

    pub fn parse(text: &str) -> Option<HostState> {
        HostState::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

/// What Prometheus said about a host's targets at the last check.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScrapeInfo {
    /// `scrape_ok` or `scrape_failing`.
    pub state: HostState,
    /// Prometheus's `lastError` of a failing target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub checked_at: i64,
}

/// Admin: a host as listed and shown.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HostInfo {
    pub id: String,
    pub hostname: String,
    /// The state at a glance: `decommissioned`, else `stale`, else
    /// `config_failed` / `enrolled`, else (config applied) `scrape_ok` /
    /// `scrape_failing` when Prometheus was asked, else `config_applied`.
    pub state: HostState,
    /// The last apply result the agent reported (or `enrolled`).
    #[serde(default = "enrolled")]
    pub config_state: HostState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scrape: Option<ScrapeInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decommissioned_at: Option<i64>,
    /// The decommissioned host this machine was enrolled as before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_host_id: Option<String>,
    /// The batch that pre-registered it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_id: Option<String>,
    /// Until when `hosts replace` lets another key take this host over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replace_until: Option<i64>,
    /// The last refused claim of this host's machine-id by another key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_conflict: Option<String>,
    /// The full label set, fact labels included.
    pub labels: Labels,
    pub facts: Facts,
    /// Hash of the config the server has rendered for it.
    pub rendered_hash: String,
    /// Hash of the config the agent last reported applied.
    #[serde(default)]
    pub applied_hash: Option<String>,
    #[serde(default)]
    pub last_error: Option<String>,
    #[serde(default)]
    pub alloy_version: Option<String>,
    /// The oldest Alloy the rendered config works with (`v1.4.0`), from the
    /// `// Requires Alloy` lines its templates declare.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alloy_required: Option<String>,
    /// The agent's last report says its reload went through the fallback,
    /// not Alloy's `/-/reload`: why that was unreachable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reload_fallback: Option<String>,
    pub enrolled_at: i64,
    pub last_seen: i64,
    pub cert_expires_at: i64,
    /// Set while the host's target file does not match the database (it
    /// could not be written): why, as the server last saw it. The server
    /// keeps retrying.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_drift: Option<String>,
}

fn enrolled() -> HostState {
    HostState::Enrolled
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enums_use_snake_case_on_the_wire() {
        let json = serde_json::to_string(&HostState::ConfigFailed).unwrap();
        assert_eq!(json, "\"config_failed\"");
        assert_eq!(
            HostState::parse("config_applied"),
            Some(HostState::ConfigApplied)
        );
        assert_eq!(HostState::parse("nope"), None);
        for state in HostState::ALL {
            let json = serde_json::to_string(&state).unwrap();
            assert_eq!(json, format!("\"{}\"", state.as_str()));
            assert_eq!(HostState::parse(state.as_str()), Some(state));
        }
    }

    #[test]
    fn unknown_fields_in_agent_requests_are_refused() {
        let body = r#"{"hash":"x","result":"applied","extra":1}"#;
        assert!(serde_json::from_str::<StatusReport>(body).is_err());
    }

    #[test]
    fn status_errors_lose_control_characters_and_long_ones_are_cut() {
        let cut = clean_status_error(&"é".repeat(5000));
        assert!(cut.len() <= MAX_STATUS_ERROR_LEN + 20 && cut.ends_with("[truncated]"));
        assert_eq!(
            clean_status_error("line 1\nline\t2\u{1b}[31m\u{7}"),
            "line 1 line 2 [31m "
        );
    }
}
