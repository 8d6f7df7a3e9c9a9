//! The server's state, assembled at start-up from the data dir and settings:
//! store, CA, templates, and the reconciler (target files, Prometheus
//! reload). Start-up also re-renders every host when the render inputs
//! changed (templates, overrides, settings: their hash is stored); the
//! reconciler brings the target files in line in the background.

use std::path::Path;
use std::sync::Arc;

use muster_shared::pin::Pin;

use crate::admin_wire::{HostInfo, IssuedToken, TokenCreated, TokenInfo};
use crate::authlimit::{AuthLimiter, Closed};
use crate::bootstrap;
use crate::ca::{self, Ca};
use crate::downloads::{agent_beside_executable, Downloads};
use crate::fleet::{Fleet, PollIndex, RowToken};
use crate::metrics::Metrics;
use crate::reconciler::{FileChange, Reconciler};
use crate::render::{RenderError, RenderSettings, Templates};
use crate::settings::Settings;
use crate::store::{AuditEntry, HostRecord, Rendered, Store};
use crate::targets;
use crate::tokens::Secret;

/// The `server_state` entry holding [`Templates::inputs_hash`] of the
/// stored configs.
const RENDER_INPUTS: &str = "render_inputs";
/// Hosts read (and rendered together) at a time by the start-up re-render.
const RENDER_PAGE: usize = 1000;

pub struct App {
    pub store: Arc<Store>,
    pub ca: Ca,
    pub pin: Pin,
    pub templates: Templates,
    pub render_settings: RenderSettings,
    pub settings: Settings,
    /// Owns the target files and the Prometheus reload.
    pub reconciler: Reconciler,
    /// Agent binaries served at `/v1/download/`.
    pub downloads: Downloads,
    /// Refused admin authentication per source (API and console sign-in).
    pub auth_limiter: Arc<AuthLimiter>,
    /// Refused enrollments per source (`[limits] enroll_refusals_per_minute`).
    pub enroll_limiter: Arc<AuthLimiter>,
    /// Muster's own metrics (`/metrics`).
    pub metrics: Arc<Metrics>,
    /// What agent authentication and the 304 decision read (`fleet/hot.rs`).
    pub index: Arc<PollIndex>,
}

impl App {
    /// Loads everything from `data_dir`; must run inside a tokio runtime (the
    /// reloader is a task).
    pub fn load(data_dir: &Path, settings: Settings) -> anyhow::Result<App> {
        use anyhow::Context as _;
        let store = Arc::new(
            Store::open(&data_dir.join(crate::store::FILE_NAME)).context("opening the database")?,
        );
        let ca = Ca::load(data_dir).context("loading the CA")?;
        let pin = ca::server_pin(data_dir).context("reading the server certificate")?;
        let templates = match &settings.templates_dir {
            Some(dir) => Templates::from_dir(dir)?,
            None => Templates::builtin()?,
        };
        let targets_dir = settings
            .targets_dir
            .clone()
            .unwrap_or_else(|| data_dir.join("targets"));
        std::fs::create_dir_all(&targets_dir)
            .with_context(|| format!("creating targets dir {}", targets_dir.display()))?;
        let metrics = Arc::new(Metrics::new());
        let audit_store = store.clone();
        let reload_metrics = metrics.clone();
        let reloader = targets::Reloader::spawn(
            settings.prometheus_url.clone(),
            settings.reload_window,
            move |result| {
                reload_metrics.reload(result.is_ok());
                if let Err(error) = result {
                    let _ = audit_store.audit(&AuditEntry {
                        at: crate::fleet::unix_now(),
                        actor: "server",
                        action: "prometheus.reload",
                        target: None,
                        outcome: "failed",
                        detail: Some(error),
                        source: None,
                    });
                }
            },
        );
        let overrides_path = settings
            .overrides_file
            .clone()
            .unwrap_or_else(|| data_dir.join(crate::overrides::FILE_NAME));
        let overrides = crate::overrides::Overrides::read(&overrides_path)?;
        templates
            .check_overrides(&overrides)
            .map_err(|m| anyhow::anyhow!("{}: {m}", overrides_path.display()))?;
        let downloads_dir = settings.downloads_dir(data_dir);
        let downloads = Downloads::load(&downloads_dir, agent_beside_executable())?;
        let files = downloads.names();
        if files.is_empty() {
            tracing::warn!(dir = %downloads_dir.display(), "no agent binaries to serve: /install.sh cannot install an agent until muster-agent-<os>-<arch> files are put there, or muster-agent beside muster-server");
        } else {
            tracing::info!(dir = %downloads_dir.display(), beside = ?downloads.beside, files = ?files, "serving agent binaries");
        }
        let reconciler = Reconciler::new(
            store.clone(),
            targets_dir.clone(),
            reloader,
            metrics.clone(),
        )
        .with_context(|| format!("cleaning targets dir {}", targets_dir.display()))?;
        let render_settings = RenderSettings {
            loki_url: settings.loki_url.clone(),
            otlp_endpoint: settings.otlp_endpoint.clone(),
            overrides,
        };
        let auth_limiter = Arc::new(AuthLimiter::default());
        spawn_sweep(auth_limiter.clone(), store.clone(), "admin.auth", |c, w| {
            Some(crate::authlimit::summary(c, w))
        });
        let enroll_limiter = Arc::new(AuthLimiter::new(
            settings.limits.enroll_refusals_per_minute,
            crate::authlimit::WINDOW,
        ));
        spawn_sweep(
            enroll_limiter.clone(),
            store.clone(),
            "enroll",
            crate::authlimit::enroll_summary,
        );
        let app = App {
            auth_limiter,
            enroll_limiter,
            store,
            ca,
            pin,
            templates,
            render_settings,
            settings,
            reconciler,
            downloads,
            metrics,
            index: Arc::default(),
        };
        app.sync_hosts()?;
        let started = std::time::Instant::now();
        let certs = app
            .index
            .load(&app.store)
            .context("loading the poll index")?;
        tracing::info!(certs, took = ?started.elapsed(), "poll index loaded");
        spawn_seen_flush(app.store.clone(), app.settings.last_seen_flush);
        app.reconciler.spawn();
        if let Some(retention) = app.settings.audit.retention {
            spawn_audit_retention(app.store.clone(), retention);
        }
        if let Some(url) = &app.settings.prometheus_url {
            crate::scrape::spawn(
                app.store.clone(),
                url.clone(),
                app.settings.scrape_check_interval,
            );
        }
        Ok(app)
    }

    /// Re-renders every active host when the render inputs (templates,
    /// overrides, settings, server version) changed since the stored
    /// configs were made (the reconciler's first full pass, once it runs,
    /// brings the target files in line). The re-render is one transaction (one fsync), reads the
    /// hosts a page at a time and renders each page on every core. A host
    /// whose render fails keeps its previous config, and the failure is
    /// logged with the host id. Runs before the poll index loads, so the
    /// index starts from the new hashes.
    pub fn sync_hosts(&self) -> anyhow::Result<()> {
        let inputs = self.templates.inputs_hash(&self.render_settings);
        if self.store.server_state(RENDER_INPUTS)?.as_deref() != Some(inputs.as_str()) {
            let started = std::time::Instant::now();
            let (seen, changed) = self.store.write(|tx| {
                let (mut seen, mut changed) = (0, 0);
                let mut after: Option<String> = None;
                loop {
                    let page = tx.active_hosts_page(after.as_deref(), RENDER_PAGE)?;
                    let Some(last) = page.last() else { break };
                    after = Some(last.id.clone());
                    seen += page.len();
                    for (host, rendered) in page.iter().zip(self.render_all(&page)) {
                        match rendered {
                            Ok(rendered) if rendered.hash != host.rendered_hash => {
                                tx.set_rendered(&host.id, &rendered)?;
                                tracing::debug!(host = %host.id, hash = %rendered.hash, "re-rendered config");
                                changed += 1;
                            }
                            Ok(_) => {}
                            Err(e) => {
                                tracing::error!(host = %host.id, error = %e, "cannot render config; the host keeps its previous one")
                            }
                        }
                    }
                }
                tx.set_server_state(RENDER_INPUTS, &inputs)?;
                Ok::<_, crate::store::StoreError>((seen, changed))
            })?;
            tracing::info!(hosts = seen, changed, took = ?started.elapsed(), "render inputs changed: re-rendered configs");
        }
        Ok(())
    }

    /// Renders `hosts` on every core, results in their order.
    fn render_all(&self, hosts: &[HostRecord]) -> Vec<Result<Rendered, RenderError>> {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let chunk = hosts.len().div_ceil(threads).max(1);
        std::thread::scope(|scope| {
            let workers: Vec<_> = hosts
                .chunks(chunk)
                .map(|part| {
                    scope.spawn(move || {
                        part.iter()
                            .map(|h| self.templates.render(h, &self.render_settings))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            workers
                .into_iter()
                .flat_map(|w| w.join().expect("a render does not panic"))
                .collect()
        })
    }

    /// Brings a changed host's target file in line with the store (a
    /// failure leaves the host drifting, retried in the background).
    /// Blocking.
    pub fn host_changed(&self, host_id: &str) -> Result<FileChange, String> {
        self.reconciler.host_changed(host_id)
    }

    /// The admin view of a host, with its target file's drift.
    pub fn host_info(&self, host: &HostRecord, now: i64) -> HostInfo {
        let mut info = host.info(now, self.settings.stale_after.as_secs() as i64);
        info.target_drift = self.reconciler.drift(&host.id).map(|d| {
            format!(
                "target file not written since {}: {}",
                crate::cli::time(d.since),
                d.error
            )
        });
        info
    }

    /// A new enrollment token with the lines that enroll a host with it:
    /// the `muster-agent enroll` line, and the pinned install one-liner
    /// when this server has an agent binary to hand out (looked for on disk
    /// again: an agent built after start-up counts; an unreadable downloads
    /// dir is logged and counts as none).
    pub fn token_created(&self, token: &Secret, info: TokenInfo) -> TokenCreated {
        let public_url = &self.settings.public_url;
        let pin = self.pin.to_string();
        let agents = self.downloads.refresh().unwrap_or_else(|e| {
            tracing::error!(error = %e, "cannot read the downloads dir");
            0
        });
        let (install_command, install_unavailable) = if agents == 0 {
            (
                String::new(),
                Some(format!(
                    "this server has no agent binary to hand out, so the install one-liner would fail: \
                     build it (cargo build --release -p muster-agent puts it beside muster-server) \
                     or put muster-agent-<os>-<arch> files in {}",
                    self.downloads.dir.display()
                )),
            )
        } else {
            (bootstrap::one_liner(public_url, &pin, token.expose()), None)
        };
        TokenCreated {
            token: token.expose().to_string(),
            info,
            enroll_command: bootstrap::enroll_command(public_url, token.expose(), &pin),
            install_command,
            install_unavailable,
        }
    }

    /// A one-time token (a batch row's, or `hosts replace`'s) with the line
    /// that enrolls with it.
    pub fn issued_token(&self, line: usize, hostname: &str, token: &Secret) -> IssuedToken {
        IssuedToken {
            line,
            hostname: hostname.to_string(),
            token: token.expose().to_string(),
            enroll_command: bootstrap::enroll_command(
                &self.settings.public_url,
                token.expose(),
                &self.pin.to_string(),
            ),
        }
    }

    /// The tokens of batch rows, with their lines.
    pub fn issued(&self, tokens: &[RowToken]) -> Vec<IssuedToken> {
        tokens
            .iter()
            .map(|t| self.issued_token(t.line, &t.hostname, &t.token))
            .collect()
    }

    /// The fleet core over this server's state.
    pub fn fleet(&self) -> Fleet<'_> {
        Fleet {
            store: &self.store,
            ca: &self.ca,
            templates: &self.templates,
            render: &self.render_settings,
            settings: &self.settings,
            index: &self.index,
        }
    }

    pub fn audit(&self, entry: AuditEntry<'_>) {
        if let Err(e) = self.store.audit(&entry) {
            tracing::error!(error = %e, action = entry.action, "cannot write audit entry");
        }
    }
}

/// Writes the check-in times agents' polls left in memory, every `every`
/// (a failure, such as a full disk, keeps them for the next round).
fn spawn_seen_flush(store: Arc<Store>, every: std::time::Duration) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let store = store.clone();
            match tokio::task::spawn_blocking(move || store.flush_seen()).await {
                Ok(Ok(n)) => tracing::trace!(hosts = n, "check-in times written"),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "cannot write check-in times; kept for the next try")
                }
                Err(e) => tracing::error!(error = %e, "check-in time writer failed"),
            }
        }
    });
}

/// Audits, once per source and window, the refusals an `AuthLimiter`
/// summed up (`summarize` gives the detail, or `None` for nothing to audit).
fn spawn_sweep(
    limiter: Arc<AuthLimiter>,
    store: Arc<Store>,
    action: &'static str,
    summarize: fn(&Closed, std::time::Duration) -> Option<String>,
) {
    tokio::spawn(async move {
        let window = limiter.window();
        let mut tick = tokio::time::interval(window / 4);
        loop {
            tick.tick().await;
            for closed in limiter.sweep(std::time::Instant::now()) {
                let Some(detail) = summarize(&closed, window) else {
                    continue;
                };
                let source = closed.source_label();
                let _ = store.audit(&AuditEntry {
                    at: crate::fleet::unix_now(),
                    actor: "anonymous",
                    action,
                    target: None,
                    outcome: "refused",
                    detail: Some(&detail),
                    source: Some(&source),
                });
            }
        }
    });
}

/// Audit retention: deletes entries older than `retention` now and every
/// [`AuditSettings::PRUNE_EVERY`](crate::settings::AuditSettings::PRUNE_EVERY).
fn spawn_audit_retention(store: Arc<Store>, retention: std::time::Duration) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(crate::settings::AuditSettings::PRUNE_EVERY);
        loop {
            tick.tick().await;
            let store = store.clone();
            let pruned = tokio::task::spawn_blocking(move || {
                let now = crate::fleet::unix_now();
                store.prune_audit(now - retention.as_secs() as i64, now)
            })
            .await;
            match pruned {
                Ok(Ok(0)) => {}
                Ok(Ok(deleted)) => {
                    tracing::info!(deleted, retention = ?retention, "deleted old audit entries")
                }
                Ok(Err(e)) => tracing::error!(error = %e, "cannot delete old audit entries"),
                Err(e) => tracing::error!(error = %e, "audit retention task failed"),
            }
        }
    });
}
