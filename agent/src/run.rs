//! `muster-agent run`: the daemon loop. Poll the server for this host's
//! config, apply what changed, report the result, renew the certificate in
//! time, send the host's facts when they changed (looked at on their own,
//! slower cadence), and back off (with jitter, within the check-in
//! interval) while the server is unreachable.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use muster_shared::wire::{AgentConfig, ApplyResult, StatusReport};
use reqwest::Url;
use tracing::{debug, error, info, warn};

use crate::apply::{self, ApplySettings};
use crate::backoff::{jittered, random_unit, Backoff};
use crate::client::{ClientError, ServerClient};
use crate::config::{Config, ConfigError};
use crate::error_text::bounded;
use crate::identity::{self, Enrolled, IdentityError, StateDir, Validity};
use crate::state::{AgentState, StateError};

/// Poll interval until the server names one.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
/// The range the server's `checkin_interval` is clamped to (the server's
/// own bounds): a server (or a typo in its settings) can neither make the
/// fleet hammer it nor go silent.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);
pub const MAX_INTERVAL: Duration = Duration::from_secs(3600);
/// Longest error text sent in a status report.
pub const MAX_REPORT_ERROR: usize = 4096;
/// Exit code of `run` when the server revoked this agent's certificate.
pub const EXIT_REVOKED: u8 = 3;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("not enrolled: {} does not exist; run `muster-agent enroll` first", path.display())]
    NotEnrolled { path: PathBuf },
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("config {hash} was not applied: {error}")]
    ApplyFailed { hash: String, error: String },
    #[error("the status report for config {hash} could not be delivered yet")]
    ReportPending { hash: String },
    /// The server revoked this agent's certificate: polling stops.
    #[error("host {host_id} was decommissioned or replaced: the server revoked this agent's certificate ({source}); polling stopped. To bring the host back, re-enroll it with a new token (muster-agent enroll)")]
    Revoked {
        host_id: String,
        source: ClientError,
    },
}

impl RunError {
    /// Fixable by the operator before starting again (exit code 64).
    pub fn is_usage(&self) -> bool {
        matches!(self, RunError::Config(_) | RunError::NotEnrolled { .. })
    }

    /// The certificate is revoked: the agent must stop, not retry.
    pub fn is_revoked(&self) -> bool {
        matches!(self, RunError::Revoked { .. })
    }
}

/// A running agent: its identity, its client and its apply state.
pub struct Agent {
    config: Config,
    server: Url,
    state_dir: StateDir,
    enrolled: Enrolled,
    validity: Validity,
    client: ServerClient,
    state: AgentState,
    /// The hash sent as `If-None-Match`.
    etag: Option<String>,
    /// The facts the server last took (`None` until the first check-in,
    /// which always sends them: an upgraded agent may know more).
    reported_facts: Option<muster_shared::facts::Facts>,
    /// Facts gathered that differ from those and are not sent yet.
    unreported_facts: Option<muster_shared::facts::Facts>,
    /// When the facts are gathered again.
    detect: Cadence,
}

/// Something done at start and then every `every`: gathering the facts,
/// which walks every process on the host, is kept off most check-ins.
#[derive(Debug)]
struct Cadence {
    every: Duration,
    next: Option<Instant>,
}

impl Cadence {
    fn new(every: Duration) -> Cadence {
        Cadence { every, next: None }
    }

    /// Whether it is due at `now` (always the first time); when it is, the
    /// next time is `every` later.
    fn due(&mut self, now: Instant) -> bool {
        if self.next.is_some_and(|next| now < next) {
            return false;
        }
        self.next = Some(now + self.every);
        true
    }
}

impl Agent {
    /// Loads the identity and state; fails when the host is not enrolled.
    pub fn load(config: Config, config_path: &Path) -> Result<Agent, RunError> {
        let server = config.server_url(config_path)?;
        let state_dir = StateDir::new(&config.state_dir);
        let Some(enrolled) = state_dir.load()? else {
            return Err(RunError::NotEnrolled {
                path: state_dir.file(identity::IDENTITY_FILE),
            });
        };
        let validity =
            Validity::of_pem(&enrolled.cert_pem).map_err(|problem| IdentityError::Invalid {
                path: state_dir.file(identity::CERT_FILE),
                problem,
            })?;
        let client = ServerClient::mutual(&server, &enrolled)?;
        let state = match AgentState::load(&config.state_dir) {
            Ok(s) => s,
            Err(e) => {
                // Losing the state only costs one re-apply of the current config.
                warn!(error = %e, "starting with empty apply state");
                AgentState::default()
            }
        };
        let etag = state.etag_on_start();
        let detect = Cadence::new(config.detect_interval);
        Ok(Agent {
            config,
            server,
            state_dir,
            enrolled,
            validity,
            client,
            state,
            etag,
            reported_facts: None,
            unreported_facts: None,
            detect,
        })
    }

    pub fn host_id(&self) -> &str {
        &self.enrolled.identity.host_id
    }

    fn interval(&self) -> Duration {
        self.state
            .checkin_interval_secs
            .map_or(DEFAULT_INTERVAL, |s| {
                Duration::from_secs(s).clamp(MIN_INTERVAL, MAX_INTERVAL)
            })
    }

    /// Renews the certificate when less than a third of its validity is
    /// left. Failure is logged and retried on the next loop.
    async fn renew_if_due(&mut self) {
        let now = identity::unix_now();
        if !self.validity.renew_due(now) {
            return;
        }
        info!(host = %self.host_id(), days_left = self.validity.days_left(now), "renewing the certificate");
        if let Err(e) = self.renew().await {
            warn!(error = %e, "certificate renewal failed; will retry");
        }
    }

    async fn renew(&mut self) -> Result<(), RunError> {
        let csr = identity::csr_pem(&self.enrolled.key, &self.enrolled.identity.host_id)?;
        let answer = self.client.renew(csr).await?;
        self.state_dir.store_certificates(
            &self.enrolled.key,
            &answer.certificate_pem,
            &answer.ca_pem,
        )?;
        let validity = Validity::of_pem(&answer.certificate_pem).map_err(|problem| {
            IdentityError::BadResponse {
                what: "certificate",
                problem,
            }
        })?;
        self.enrolled.cert_pem = answer.certificate_pem;
        self.enrolled.ca_pem = answer.ca_pem;
        self.validity = validity;
        self.client = ServerClient::mutual(&self.server, &self.enrolled)?;
        info!(host = %self.host_id(), not_after = validity.not_after, "renewed the certificate");
        Ok(())
    }

    /// Sends the report still owed, if any. A report the server refuses as
    /// malformed (4xx other than 401/403) is dropped: resending cannot help.
    async fn flush_report(&mut self) -> Result<(), RunError> {
        let Some(report) = self.state.pending_report.clone() else {
            return Ok(());
        };
        match self.client.report(&report).await {
            Ok(()) => debug!(hash = %report.hash, "status reported"),
            Err(e)
                if !e.is_transient()
                    && !e.is_refused()
                    && !matches!(e, ClientError::Connect { .. }) =>
            {
                error!(hash = %report.hash, error = %e, "the server refused the status report; dropping it");
            }
            Err(e) => return Err(e.into()),
        }
        self.state.pending_report = None;
        self.state.save(&self.state_dir.dir)?;
        Ok(())
    }

    /// At start and every `detect_interval`, gathers the facts again and
    /// queues them when they changed, so a service installed since gets its
    /// config on this check-in; then sends what is queued. A failed send is
    /// retried on the next check-in without gathering again; a server
    /// without the route (404: older than this agent) is not asked again
    /// until they change.
    async fn report_facts(&mut self) {
        if self.detect.due(Instant::now()) {
            match crate::facts::collect(&self.config, &self.server).await {
                Ok(facts) if self.reported_facts.as_ref() == Some(&facts) => {
                    self.unreported_facts = None;
                }
                Ok(facts) => self.unreported_facts = Some(facts),
                Err(e) => warn!(error = %e, "cannot gather facts; the server keeps the last ones"),
            }
        }
        let Some(facts) = self.unreported_facts.take() else {
            return;
        };
        match self.client.report_facts(&facts).await {
            Ok(accepted) => {
                let services: Vec<&str> = facts.services.iter().map(|s| s.kind.as_str()).collect();
                info!(hash = %accepted.hash, services = ?services, "facts reported");
                self.reported_facts = Some(facts);
            }
            Err(ClientError::Status { status: 404, .. }) => {
                debug!("the server does not take fact updates");
                self.reported_facts = Some(facts);
            }
            Err(e) => {
                warn!(error = %e, "cannot report facts; will retry");
                self.unreported_facts = Some(facts);
            }
        }
    }

    /// Applies a config the server sent, records the result and queues the
    /// report. Not cancelled by shutdown: an apply is never left half done.
    async fn take_config(&mut self, config: AgentConfig) -> Result<(), RunError> {
        self.state.checkin_interval_secs = Some(config.checkin_interval_secs);
        self.etag = Some(config.hash.clone());
        let unchanged = self.state.applied_hash.as_deref() == Some(config.hash.as_str());
        let already_reported = unchanged
            && self.state.last_attempted_hash.as_deref() == Some(config.hash.as_str())
            && self.state.last_result == Some(ApplyResult::Applied);
        let mut reload_fallback = None;
        let result = if already_reported {
            debug!(hash = %config.hash, "config unchanged");
            self.state.save(&self.state_dir.dir)?;
            return Ok(());
        } else if unchanged {
            // Already live (an admin went back to it): just say so.
            Ok(())
        } else {
            let outcome = apply::apply(&ApplySettings::from(&self.config), &config.content).await;
            if outcome.alloy_version.is_some() {
                self.state.alloy_version = outcome.alloy_version;
            }
            self.state.last_warning = outcome.warning;
            reload_fallback = outcome.reload_fallback;
            self.state.last_apply_at = Some(identity::unix_now());
            outcome.result.map_err(|e| e.to_string())
        };
        match &result {
            Ok(()) => {
                info!(hash = %config.hash, "applied config");
                self.state.applied_hash = Some(config.hash.clone());
            }
            Err(e) => error!(hash = %config.hash, error = %e, "config not applied"),
        }
        self.state.last_attempted_hash = Some(config.hash.clone());
        self.state.last_result = Some(if result.is_ok() {
            ApplyResult::Applied
        } else {
            ApplyResult::Failed
        });
        self.state.last_error = result.as_ref().err().cloned();
        self.state.pending_report = Some(StatusReport {
            hash: config.hash.clone(),
            result: self.state.last_result.unwrap_or(ApplyResult::Failed),
            error: result.as_ref().err().map(|e| bounded(e, MAX_REPORT_ERROR)),
            alloy_version: self.state.alloy_version.clone(),
            reload_fallback: reload_fallback.map(|why| bounded(&why, MAX_REPORT_ERROR)),
        });
        self.state.save(&self.state_dir.dir)?;
        result.map_err(|error| RunError::ApplyFailed {
            hash: config.hash,
            error,
        })
    }

    /// One check-in: renew if due, send an owed report, fetch, apply, report.
    /// `None` when `shutdown` fired first.
    async fn check_in<S>(&mut self, shutdown: &mut S) -> Option<Result<(), RunError>>
    where
        S: Future<Output = ()> + Unpin,
    {
        cancellable(shutdown, self.renew_if_due()).await?;
        if let Err(e) = cancellable(shutdown, self.flush_report()).await? {
            return Some(Err(e));
        }
        cancellable(shutdown, self.report_facts()).await?;
        let etag = self.etag.clone();
        let fetched = match cancellable(shutdown, self.client.fetch_config(etag.as_deref())).await?
        {
            Ok(f) => f,
            Err(e) => return Some(Err(e.into())),
        };
        let Some(config) = fetched else {
            debug!("config not modified");
            return Some(Ok(()));
        };
        let applied = self.take_config(config).await;
        let reported = cancellable(shutdown, self.flush_report()).await?;
        Some(applied.and(reported))
    }

    /// One check-in for `--once`: Ok only when the config is live and the
    /// server knows it.
    pub async fn run_once(&mut self) -> Result<(), RunError> {
        let mut never = std::future::pending::<()>();
        let result = self.check_in(&mut never).await.unwrap_or(Ok(()));
        let result = self.revoked(result);
        self.explain(&result);
        result?;
        match &self.state.pending_report {
            Some(r) => Err(RunError::ReportPending {
                hash: r.hash.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Checks in until `shutdown` completes.
    pub async fn run(&mut self, shutdown: impl Future<Output = ()>) -> Result<(), RunError> {
        let mut shutdown = std::pin::pin!(shutdown);
        let mut backoff = Backoff::new();
        info!(host = %self.host_id(), server = %self.server, "agent started");
        loop {
            let Some(result) = self.check_in(&mut shutdown).await else {
                break;
            };
            let result = self.revoked(result);
            self.explain(&result);
            if let Err(e @ RunError::Revoked { .. }) = result {
                return Err(e);
            }
            let interval = self.interval();
            let wait = match result {
                Err(RunError::Client(_)) => backoff.fail(interval, random_unit()),
                // Apply failures are reported; the server decides what comes next.
                Ok(()) | Err(RunError::ApplyFailed { .. }) => {
                    backoff.reset();
                    jittered(interval, random_unit())
                }
                Err(e @ (RunError::State(_) | RunError::Identity(_))) => {
                    warn!(error = %e, "local state problem");
                    backoff.fail(interval, random_unit())
                }
                Err(_) => backoff.fail(interval, random_unit()),
            };
            debug!(wait = ?wait, failures = backoff.failures(), "next check-in");
            if cancellable(&mut shutdown, tokio::time::sleep(wait))
                .await
                .is_none()
            {
                break;
            }
        }
        info!("agent stopped");
        Ok(())
    }

    /// Turns a refusal for a revoked certificate into [`RunError::Revoked`].
    fn revoked(&self, result: Result<(), RunError>) -> Result<(), RunError> {
        match result {
            Err(RunError::Client(e)) if e.is_revoked() => Err(RunError::Revoked {
                host_id: self.host_id().to_string(),
                source: e,
            }),
            other => other,
        }
    }

    /// Logs what an operator should do about a failed check-in.
    fn explain(&self, result: &Result<(), RunError>) {
        if let Err(e @ RunError::Revoked { .. }) = result {
            error!(error = %e, "certificate revoked; stopping");
            return;
        }
        let Err(RunError::Client(e)) = result else {
            return;
        };
        if e.is_refused() {
            error!(error = %e, "the server refused this agent's certificate (revoked or unknown): re-enroll with a new token");
        } else if self.validity.not_after < identity::unix_now() {
            error!(error = %e, not_after = self.validity.not_after, "this agent's certificate has expired: re-enroll with a new token");
        } else {
            warn!(error = %e, "check-in failed; keeping the last good config");
        }
    }
}

/// Runs `work` unless `shutdown` completes first (then `None`).
async fn cancellable<S, F>(shutdown: &mut S, work: F) -> Option<F::Output>
where
    S: Future<Output = ()> + Unpin,
    F: Future,
{
    tokio::select! {
        () = shutdown => None,
        out = work => Some(out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::hex_sha256;
    use crate::identity::Identity;

    /// An enrolled agent in a temp dir whose Alloy does not exist, so any
    /// attempt to apply shows up as a failure.
    fn agent(dir: &Path) -> Agent {
        let state = StateDir::new(&dir.join("state"));
        let key = state.load_or_generate_key().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["agent".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap()
            .pem();
        let identity = Identity {
            host_id: "web-01-abc".into(),
            server: "https://127.0.0.1:1".into(),
            enrolled_at: 0,
        };
        state
            .store_enrollment(&key, &identity, &cert, &cert)
            .unwrap();
        let config = Config {
            server: Some("https://127.0.0.1:1".into()),
            state_dir: state.dir.clone(),
            alloy_config: dir.join("config.alloy"),
            alloy_bin: dir.join("no-alloy"),
            ..Config::default()
        };
        Agent::load(config, &dir.join("agent.toml")).unwrap()
    }

    fn config(content: &str) -> AgentConfig {
        AgentConfig {
            hash: hex_sha256(content.as_bytes()),
            content: content.into(),
            checkin_interval_secs: 7,
        }
    }

    #[tokio::test]
    async fn a_new_config_is_applied_and_its_failure_queued_for_the_server() {
        let dir = tempfile::tempdir().unwrap();
        let mut agent = agent(dir.path());
        let c = config("a");
        let err = agent.take_config(c.clone()).await.unwrap_err();
        assert!(matches!(err, RunError::ApplyFailed { .. }), "{err}");
        let report = agent.state.pending_report.clone().unwrap();
        assert_eq!(report.hash, c.hash);
        assert_eq!(report.result, ApplyResult::Failed);
        assert!(report.error.unwrap().contains("alloy not found at"));
        assert_eq!(agent.etag.as_deref(), Some(c.hash.as_str()));
        assert_eq!(agent.interval(), Duration::from_secs(7));
        // Persisted, so a restart still owes the report, and refetches the
        // failed config once.
        let reloaded = AgentState::load(&agent.state_dir.dir).unwrap();
        assert_eq!(reloaded, agent.state);
        assert_eq!(reloaded.etag_on_start(), None);
    }

    #[test]
    fn the_servers_checkin_interval_is_clamped() {
        let dir = tempfile::tempdir().unwrap();
        let mut agent = agent(dir.path());
        assert_eq!(agent.interval(), DEFAULT_INTERVAL);
        for (secs, want) in [
            (0, 1),
            (1, 1),
            (7, 7),
            (600, 600),
            (3600, 3600),
            (3601, 3600),
            (u64::MAX, 3600),
        ] {
            agent.state.checkin_interval_secs = Some(secs);
            assert_eq!(agent.interval(), Duration::from_secs(want), "{secs}");
        }
    }

    #[tokio::test]
    async fn the_live_config_is_not_applied_again_only_reported() {
        let dir = tempfile::tempdir().unwrap();
        let mut agent = agent(dir.path());
        let live = config("live");
        agent.state.applied_hash = Some(live.hash.clone());
        agent.state.last_attempted_hash = Some("f".repeat(64));
        agent.state.last_result = Some(ApplyResult::Failed);
        // The server went back to the live config: no apply (Alloy is
        // missing, so one would fail), just an "applied" report.
        agent.take_config(live.clone()).await.unwrap();
        let report = agent.state.pending_report.take().unwrap();
        assert_eq!(
            (report.hash.as_str(), report.result),
            (live.hash.as_str(), ApplyResult::Applied)
        );
        assert_eq!(agent.state.last_result, Some(ApplyResult::Applied));
        assert_eq!(agent.state.last_error, None);
        // Sent again unchanged: nothing at all.
        agent.take_config(live).await.unwrap();
        assert_eq!(agent.state.pending_report, None);
    }

    #[test]
    fn facts_are_gathered_at_start_then_every_detect_interval() {
        let secs = Duration::from_secs;
        let t0 = Instant::now();
        let mut c = Cadence::new(secs(300));
        assert!(c.due(t0), "at start");
        for s in [1, 30, 299] {
            assert!(!c.due(t0 + secs(s)), "{s}");
        }
        assert!(c.due(t0 + secs(300)));
        assert!(!c.due(t0 + secs(330)));
        // Late (the host slept): the next one counts from now.
        assert!(c.due(t0 + secs(700)));
        assert!(!c.due(t0 + secs(999)));
        assert!(c.due(t0 + secs(1000)));
    }

    #[tokio::test]
    async fn facts_the_server_did_not_take_are_sent_again_without_detecting_again() {
        let dir = tempfile::tempdir().unwrap();
        let mut agent = agent(dir.path());
        assert_eq!(agent.detect.every, agent.config.detect_interval);
        // Gathered a moment ago, so not due; the server (port 1) is down.
        assert!(agent.detect.due(Instant::now()));
        let facts = muster_shared::facts::Facts {
            hostname: "web-01".into(),
            machine_id: "abc123".into(),
            os: "linux".into(),
            arch: "x86_64".into(),
            os_id: None,
            os_version: None,
            kernel: None,
            os_like: None,
            scrape_address: "10.0.0.5:12345".into(),
            agent_version: "0.1.0".into(),
            services: Vec::new(),
            alloy: None,
        };
        agent.unreported_facts = Some(facts.clone());
        for _ in 0..2 {
            agent.report_facts().await;
            assert_eq!(agent.unreported_facts.as_ref(), Some(&facts));
            assert_eq!(agent.reported_facts, None);
        }
    }

    #[test]
    fn usage_errors_are_told_apart() {
        let not_enrolled = RunError::NotEnrolled {
            path: "/x/identity.json".into(),
        };
        assert!(not_enrolled.is_usage());
        assert!(not_enrolled.to_string().contains("muster-agent enroll"));
        let failed = RunError::ApplyFailed {
            hash: "h".into(),
            error: "e".into(),
        };
        assert!(!failed.is_usage());
    }

    #[test]
    fn only_a_revoked_certificate_stops_the_agent() {
        let dir = tempfile::tempdir().unwrap();
        let agent = agent(dir.path());
        let status = |status, code: Option<&str>| {
            Err(RunError::Client(ClientError::Status {
                url: "u".into(),
                status,
                code: code.map(str::to_string),
                message: "m".into(),
            }))
        };
        let revoked = agent.revoked(status(403, Some(muster_shared::wire::CODE_REVOKED)));
        let err = revoked.unwrap_err();
        assert!(err.is_revoked());
        assert!(
            err.to_string().contains("web-01-abc was decommissioned"),
            "{err}"
        );
        for other in [
            status(403, Some("forbidden")),
            status(401, None),
            status(503, None),
        ] {
            assert!(!agent.revoked(other).unwrap_err().is_revoked());
        }
    }
}
