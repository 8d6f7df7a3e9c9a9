//! JSON bodies of the admin API (enrollment and targets-reader tokens, hosts
//! and their states, label edits, decommission, replacement, label checks,
//! batches, audit), shared by the handlers, the console and the admin CLI.
//! The agent's bodies are in `muster_shared::wire`.

use std::collections::BTreeMap;

use muster_shared::facts::Facts;
use muster_shared::labels::Labels;
use serde::{Deserialize, Serialize};

/// `POST /v1/admin/reader-tokens`: a token that can read Prometheus targets
/// (`/v1/sd/targets`) and `/metrics`, nothing else.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReaderTokenCreate {
    /// What it is for, e.g. the Prometheus that uses it.
    pub name: String,
}

/// The token, shown this once.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReaderTokenCreated {
    pub id: String,
    pub name: String,
    pub token: String,
}

/// A targets-reader token as `GET /v1/admin/reader-tokens` lists it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReaderTokenInfo {
    pub id: String,
    pub name: String,
    pub created_at: i64,
    /// The admin token (name) that created it.
    pub created_by: String,
    pub revoked_at: Option<i64>,
}

/// A batch as listed (`GET /v1/admin/batches`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BatchRecord {
    pub id: String,
    pub name: String,
    pub created_at: i64,
    pub created_by: String,
    pub hosts: usize,
}

/// `POST /v1/admin/hosts/{id}/labels` and `POST /v1/admin/hosts/labels`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelEdit {
    /// Labels to set (added or overwritten).
    #[serde(default)]
    pub set: Labels,
    /// Label names to remove.
    #[serde(default)]
    pub remove: Vec<String>,
    /// For the bulk route only: `name=value[,name=value]` picking the hosts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
}

/// The hosts a label edit changed (re-rendered, target files rewritten).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LabelEdited {
    /// Hosts the selector (or id) matched.
    pub matched: usize,
    /// Those whose labels changed.
    pub hosts: Vec<HostInfo>,
    /// Changed hosts whose target file could not be written (yet): host id
    /// → error. The server keeps retrying; `hosts show` tells when it is.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub target_file_errors: BTreeMap<String, String>,
}

/// The answer to a decommission.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Decommissioned {
    pub host: HostInfo,
    /// Certificates revoked now.
    pub revoked_certs: usize,
    /// What the target file was renamed to, when there was one.
    #[serde(default)]
    pub target_file: Option<String>,
    /// Why the target file could not be renamed (yet); the server retries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_file_error: Option<String>,
}

/// The answer to `hosts replace`. The only time the token is shown.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReplaceArmed {
    pub host: HostInfo,
    /// The replacement token is valid until then.
    pub until: i64,
    /// A one-time enrollment token that may take over this host only (the
    /// machine with this host's machine-id, with a new key).
    pub token: String,
    /// The line to run on the reinstalled machine.
    pub enroll_command: String,
}

/// One host that does not fit the label schema.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LabelMisfit {
    pub host_id: String,
    pub hostname: String,
    pub problems: Vec<String>,
}

/// `GET /v1/admin/labels/check`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LabelCheck {
    pub checked: usize,
    pub misfits: Vec<LabelMisfit>,
}

/// `POST /v1/admin/batches`: the import file's text and how to read it.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchImport {
    /// `csv` or `json`; sniffed from the content when absent.
    #[serde(default)]
    pub format: Option<Format>,
    pub content: String,
    /// A name for the batch (e.g. the file name).
    #[serde(default)]
    pub name: Option<String>,
    /// Import the valid rows and list the others, instead of refusing all.
    #[serde(default)]
    pub skip_invalid: bool,
    /// Lifetime of the tokens; the server's `token_ttl` when absent.
    #[serde(default)]
    pub ttl_secs: Option<u64>,
}

/// A token issued to one batch row. The only time its secret is shown.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IssuedToken {
    pub line: usize,
    pub hostname: String,
    pub token: String,
    pub enroll_command: String,
}

/// The answer to an import.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BatchImported {
    pub batch: BatchRecord,
    /// Server URL and pin, for cloud-init and other renderings.
    pub server: String,
    pub pin: String,
    pub hosts: Vec<IssuedToken>,
    /// Rows left out (with `skip_invalid`).
    pub invalid: Vec<RowError>,
}

/// `GET /v1/admin/batches/{id}`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BatchStatus {
    pub batch: BatchRecord,
    /// Whether the server asks Prometheus about targets (so `scrape_ok` is
    /// the last step).
    pub scrape_checks: bool,
    pub hosts: Vec<EntryStatus>,
    /// Rows per state, plus `failed` for rows with a problem.
    pub totals: BTreeMap<String, usize>,
}

/// `POST /v1/admin/batches/{id}/retry`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchRetry {
    /// Only this row's hostname.
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub ttl_secs: Option<u64>,
}

/// The answer to a retry: new tokens for the rows that needed one.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BatchRetried {
    pub batch: BatchRecord,
    pub server: String,
    pub pin: String,
    pub hosts: Vec<IssuedToken>,
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
}

/// An import file's format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    Csv,
    Json,
}

impl Format {
    /// JSON when the text starts with `[` (after whitespace), else CSV.
    pub fn sniff(text: &str) -> Format {
        if text.trim_start().starts_with('[') {
            Format::Json
        } else {
            Format::Csv
        }
    }
}

/// Why a row (or the whole file, line 0 or the header's line) is refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowError {
    pub line: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    pub message: String,
}

impl std::fmt::Display for RowError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}", self.line)?;
        if let Some(h) = &self.hostname {
            write!(f, " ({h})")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// A batch row's state for `batch status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryStatus {
    pub line: usize,
    pub hostname: String,
    /// `pending` until enrolled, then the host's state.
    pub state: HostState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_id: Option<String>,
    /// Why the row is stuck or failed, when it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    /// `batch retry` would issue it a new token.
    pub retryable: bool,
    pub labels: Labels,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// The config the host runs is the one the server rendered.
    pub config_current: bool,
}

impl EntryStatus {
    /// Nothing more will happen without someone acting (or it is done).
    pub fn settled(&self, scrape_checks: bool) -> bool {
        match self.state {
            HostState::ScrapeOk | HostState::Decommissioned => true,
            HostState::ConfigApplied => !scrape_checks,
            HostState::Pending => self.retryable,
            _ => self.problem.is_some(),
        }
    }
}
