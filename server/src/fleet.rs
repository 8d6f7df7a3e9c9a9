//! The fleet core: one function per lifecycle transition of a host (enroll,
//! authenticate, renew, report status, report facts, edit labels,
//! decommission, replace, batch import and retry) and per operator action
//! on enrollment tokens (issue, revoke). Each runs in one store
//! transaction, enforces the invariants inside it, writes its audit entry
//! in the same transaction and returns what changed. Handlers (the admin API and the console) only
//! extract, call one function and map [`FleetError`]; nothing here knows
//! about HTTP, and nothing here touches the filesystem: the target files
//! follow the store through the reconciler.
//!
//! `fleet/enroll.rs` holds the enrollment policy, `fleet/agent.rs` the agent
//! routes (certificate → host, renewal, reports), `fleet/hosts.rs` the
//! operator's transitions, `fleet/batch.rs` batch enrollment,
//! `fleet/tokens.rs` enrollment tokens, `fleet/hot.rs` the poll index: what
//! agent authentication and the 304 decision read, in memory, updated by
//! each transition in the critical section of its commit.

use std::sync::Arc;

use muster_shared::labels::LabelError;

use crate::ca::{Ca, CsrError};
use crate::render::{RenderError, RenderSettings, Templates};
use crate::schema::SchemaError;
use crate::settings::Settings;
use crate::store::{AuditEntry, HostRecord, Store, StoreError};

mod agent;
mod batch;
mod enroll;
mod hosts;
mod hot;
mod tokens;

pub use agent::{at, AgentCert, FactsUpdate};
pub use batch::{BatchFile, BatchImported, BatchRetried, RowToken};
pub use enroll::{EnrollAttempt, Enrolled, Enrollment};
pub use hosts::{Decommissioned, LabelChange, LabelTarget, Replacement};
pub use hot::{Lookup, PollIndex};
pub use tokens::token_ttl;

/// Now, in Unix seconds.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// What the fleet core works with: borrowed from the server's state.
#[derive(Clone, Copy)]
pub struct Fleet<'a> {
    pub store: &'a Store,
    pub ca: &'a Ca,
    pub templates: &'a Templates,
    pub render: &'a RenderSettings,
    pub settings: &'a Settings,
    /// Mirrors the certificates and rendered hashes of the store.
    pub index: &'a Arc<PollIndex>,
}

/// Why a transition was refused or failed. A refusal stores nothing but
/// its audit entry.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// Unknown, malformed, expired, exhausted or revoked: the agent sees one
    /// answer, the audit log the reason.
    #[error("invalid enrollment token ({0})")]
    Token(&'static str),
    #[error("machine-id {machine_id} is already enrolled as {host_id} with a different key")]
    MachineConflict { machine_id: String, host_id: String },
    /// A batch token used by a host whose hostname is not its row's.
    #[error("the enrollment token is bound to hostname {bound:?}, not {claimed:?}")]
    HostnameMismatch { bound: String, claimed: String },
    /// A replacement token used by another machine than the host's.
    #[error("this replacement token may take over host {host_id} only, which machine-id {machine_id} is not")]
    ReplacementMismatch { host_id: String, machine_id: String },
    /// An idempotency key replayed by another machine or key.
    #[error("idempotency key already used by host {host_id} with another machine-id or key")]
    ReplayMismatch { host_id: String },
    #[error("requested labels: {0}")]
    RequestedLabels(SchemaError),
    #[error("this client certificate belongs to no enrolled host")]
    UnknownCert,
    #[error("this agent's certificate is revoked")]
    Revoked,
    #[error("this agent's certificate has expired: re-enroll with a new token")]
    Expired,
    #[error("renewal refused: the certificate may be renewed from {} on (the last third of its validity)", crate::cli::time(*opens))]
    RenewTooEarly { opens: i64 },
    #[error("renewal refused: the request's key is not this host's key; a new key enrolls (after `hosts replace`)")]
    RenewKeyMismatch,
    #[error("machine_id may not change after enrollment (enrolled as {enrolled}); re-enroll this machine")]
    MachineIdChanged { enrolled: String },
    #[error("scrape_address {address:?} is not on the address this agent connects from ({from}); an operator may allow it with agents_may_move_targets = true in server.toml")]
    TargetMoved { address: String, from: String },
    #[error("{0}")]
    NotFound(String),
    #[error("host {host_id} was already decommissioned at {at}")]
    AlreadyDecommissioned { host_id: String, at: i64 },
    #[error("{0}")]
    BadEdit(String),
    /// A batch file with bad rows: the summary, and each row's problem.
    #[error("{summary}")]
    InvalidRows {
        summary: String,
        rows: Vec<crate::batch::RowError>,
    },
    #[error("host {hostname} is {state}{}: only rows that failed to enroll or whose token expired get a new token",
        if *valid_token { " with a valid token" } else { "" })]
    NotRetryable {
        hostname: String,
        state: &'static str,
        valid_token: bool,
    },
    /// A token request out of bounds or with labels the schema refuses.
    #[error("{0}")]
    BadToken(String),
    #[error("host {host}: {error}; nothing was changed")]
    Schema { host: String, error: SchemaError },
    #[error(transparent)]
    Csr(#[from] CsrError),
    #[error("host {host}: {error}")]
    Render {
        host: String,
        error: Box<RenderError>,
    },
    #[error("the label schema does not compile: {0}")]
    SchemaSetting(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<LabelError> for FleetError {
    fn from(e: LabelError) -> Self {
        FleetError::BadEdit(e.to_string())
    }
}

impl From<rusqlite::Error> for FleetError {
    fn from(e: rusqlite::Error) -> Self {
        FleetError::Store(StoreError::Db(e))
    }
}

impl Fleet<'_> {
    /// Writes an audit entry on its own (for refusals: the transaction
    /// that would have changed something rolled back). A failure is logged.
    pub fn audit(&self, entry: &AuditEntry<'_>) {
        if let Err(e) = self.store.audit(entry) {
            tracing::error!(error = %e, action = entry.action, "cannot write audit entry");
        }
    }

    /// Renders `host` from the current templates into its config, rendered
    /// hash and target groups (left as they were when rendering fails).
    fn rerender(&self, host: &mut HostRecord) -> Result<(), RenderError> {
        let rendered = self.templates.render(host, self.render)?;
        host.config = rendered.config;
        host.rendered_hash = rendered.hash;
        host.targets = rendered.targets;
        Ok(())
    }
}

#[cfg(test)]
mod query_plans;
#[cfg(test)]
mod tests;
