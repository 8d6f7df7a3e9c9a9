//! The JSON bodies exchanged between agent and server (the admin API's are
//! the server's `admin_wire`). Times are Unix seconds (UTC).

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

#[cfg(test)]
mod tests {
    use super::*;

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
