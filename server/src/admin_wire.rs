//! JSON bodies of the fleet part of the admin API (label edits, decommission,
//! replacement, label checks, batches, audit) and of targets-reader tokens,
//! shared by the handlers and the
//! admin CLI. The token and host bodies are in `muster_shared::wire`.

use std::collections::BTreeMap;

use muster_shared::labels::Labels;
use muster_shared::wire::HostInfo;
use serde::{Deserialize, Serialize};

use crate::batch::{EntryStatus, Format, RowError};

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
