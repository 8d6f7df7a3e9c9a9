//! The admin CLI's client side: `muster-server token …`, `hosts …`,
//! `labels check`, `audit` (and `batch …`, in `cli/batch.rs`) talk to the
//! admin API over TLS (trusting the Muster CA) and print tables for people or
//! JSON for scripts.

pub mod batch;

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use muster_shared::labels::Labels;
use muster_shared::wire::ErrorBody;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::admin_wire::{
    Decommissioned, HostInfo, LabelCheck, LabelEdit, LabelEdited, ReplaceArmed, TokenCreate,
    TokenCreated, TokenInfo,
};
use crate::init::ADMIN_TOKEN_FILE;
use crate::settings::{self, Settings};
use crate::store::AuditRow;
use crate::tokens::Secret;

/// Where the admin API is and how to authenticate to it.
#[derive(Clone, Debug, clap::Args)]
pub struct AdminArgs {
    /// Admin API URL [default: from <data dir>/server.toml's admin_listen]
    #[arg(long, env = "MUSTER_ADMIN_URL")]
    pub admin_url: Option<String>,
    /// Admin bearer token [default: <data dir>/admin.token]
    #[arg(long, env = "MUSTER_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// CA certificate to trust for the admin API [default: <data dir>/ca.crt]
    #[arg(long, env = "MUSTER_ADMIN_CA")]
    pub ca_cert: Option<PathBuf>,
    /// The server's data dir, for the defaults above
    #[arg(long, env = "MUSTER_DATA_DIR", default_value = crate::DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// Print JSON instead of a table
    #[arg(long)]
    pub json: bool,
}

/// The admin CLI cannot tell where the admin API is or how to log in: a
/// configuration problem (exit 64), not a failure of the server.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct NoAdminApi(pub String);

pub struct AdminClient {
    http: reqwest::Client,
    base: String,
    token: Secret,
}

impl AdminClient {
    pub fn new(args: &AdminArgs) -> Result<AdminClient> {
        let base = match &args.admin_url {
            Some(url) => url.trim_end_matches('/').to_string(),
            None => {
                let path = args.data_dir.join(settings::FILE_NAME);
                if !path.exists() {
                    return Err(NoAdminApi(format!(
                        "cannot find the admin API: {} does not exist; give the server's data dir \
                         with --data-dir DIR or MUSTER_DATA_DIR=DIR (default {}), or pass \
                         --admin-url, --admin-token and --ca-cert",
                        path.display(),
                        crate::DEFAULT_DATA_DIR
                    ))
                    .into());
                }
                let settings = Settings::read(&path).map_err(|e| NoAdminApi(e.to_string()))?;
                let mut addr = settings.admin_listen;
                if addr.ip().is_unspecified() {
                    addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
                }
                format!("https://{addr}")
            }
        };
        let token = match &args.admin_token {
            Some(t) => t.trim().to_string(),
            None => {
                let path = args.data_dir.join(ADMIN_TOKEN_FILE);
                std::fs::read_to_string(&path)
                    .map_err(|e| {
                        NoAdminApi(format!(
                            "no admin token: cannot read {} ({e}); pass --admin-token or run as \
                             a user who may read it",
                            path.display()
                        ))
                    })?
                    .trim()
                    .to_string()
            }
        };
        let ca_path = args
            .ca_cert
            .clone()
            .unwrap_or_else(|| args.data_dir.join(crate::ca::CA_CERT));
        let ca = CertificateDer::from_pem_file(&ca_path).map_err(|e| {
            NoAdminApi(format!(
                "cannot read the CA certificate {} ({e}); pass --ca-cert",
                ca_path.display()
            ))
        })?;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca).context("the CA certificate is not usable")?;
        let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .context("TLS setup")?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .timeout(Duration::from_secs(30))
            .build()
            .context("building the HTTP client")?;
        Ok(AdminClient {
            http,
            base,
            token: Secret::new(token),
        })
    }

    async fn call<T: DeserializeOwned>(&self, req: reqwest::RequestBuilder) -> Result<T> {
        let resp = req
            .bearer_auth(self.token.expose())
            .send()
            .await
            .with_context(|| format!("cannot reach the admin API at {}", self.base))?;
        let status = resp.status();
        let bytes = resp.bytes().await.context("reading the answer")?;
        if !status.is_success() {
            match serde_json::from_slice::<ErrorBody>(&bytes) {
                Ok(body) => bail!(
                    "{} (HTTP {}, {})",
                    body.error.message,
                    status.as_u16(),
                    body.error.code
                ),
                Err(_) => bail!("the admin API answered HTTP {status}"),
            }
        }
        serde_json::from_slice(&bytes).context("the admin API sent an answer this CLI cannot read")
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.call(self.http.get(format!("{}{path}", self.base)))
            .await
    }

    pub async fn get_query<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<T> {
        let mut url = reqwest::Url::parse(&format!("{}{path}", self.base))
            .with_context(|| format!("bad admin API URL {}", self.base))?;
        url.query_pairs_mut()
            .extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
        self.call(self.http.get(url)).await
    }

    pub async fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T> {
        self.call(self.http.post(format!("{}{path}", self.base)).json(body))
            .await
    }
}

/// `token create`.
pub async fn token_create(
    args: &AdminArgs,
    labels: Labels,
    ttl: Option<Duration>,
    uses: Option<u32>,
) -> Result<()> {
    let client = AdminClient::new(args)?;
    let req = TokenCreate {
        labels,
        ttl_secs: ttl.map(|d| d.as_secs()),
        uses,
    };
    let created: TokenCreated = client.post("/v1/admin/tokens", &req).await?;
    if args.json {
        return print_json(&created);
    }
    let info = &created.info;
    println!(
        "Enrollment token {} ({} use{}, expires {})",
        info.id,
        info.uses_allowed,
        if info.uses_allowed == 1 { "" } else { "s" },
        time(info.expires_at)
    );
    if !info.labels.is_empty() {
        println!("  labels: {}", labels_text(&info.labels));
    }
    println!("Token (shown only now): {}", created.token);
    if !created.install_command.is_empty() {
        println!("Install the agent (and Alloy) on a bare host and enroll it, as root:");
        println!("  {}", created.install_command);
        println!("(not root: put sudo before sh, i.e. `| sudo sh -s -- --token ...`)");
        println!("Or, where muster-agent is already installed, run this on the host:");
    } else {
        if let Some(why) = &created.install_unavailable {
            eprintln!("warning: no install one-liner: {why}");
        }
        println!("Enroll a host by running this on it:");
    }
    println!("  {}", created.enroll_command);
    Ok(())
}

/// `token create-reader`: prints only the token (so it can go straight into
/// Prometheus's `credentials_file`), or the JSON answer with `--json`.
pub async fn token_create_reader(args: &AdminArgs, name: &str) -> Result<()> {
    let req = crate::admin_wire::ReaderTokenCreate {
        name: name.to_string(),
    };
    let created: crate::admin_wire::ReaderTokenCreated = AdminClient::new(args)?
        .post("/v1/admin/reader-tokens", &req)
        .await?;
    if args.json {
        return print_json(&created);
    }
    println!("{}", created.token);
    Ok(())
}

/// `token list-readers`.
pub async fn token_list_readers(args: &AdminArgs) -> Result<()> {
    let tokens: Vec<crate::admin_wire::ReaderTokenInfo> = AdminClient::new(args)?
        .get("/v1/admin/reader-tokens")
        .await?;
    if args.json {
        return print_json(&tokens);
    }
    let rows = tokens
        .iter()
        .map(|t| {
            vec![
                t.id.clone(),
                t.name.clone(),
                time(t.created_at),
                t.created_by.clone(),
                t.revoked_at.map_or_else(|| "-".to_string(), time),
            ]
        })
        .collect();
    print!(
        "{}",
        table(&["ID", "NAME", "CREATED", "BY", "REVOKED"], rows)
    );
    Ok(())
}

/// `token revoke-reader ID`.
pub async fn token_revoke_reader(args: &AdminArgs, id: &str) -> Result<()> {
    let path = format!("/v1/admin/reader-tokens/{}/revoke", path_segment(id)?);
    let info: crate::admin_wire::ReaderTokenInfo = AdminClient::new(args)?.post(&path, &()).await?;
    if args.json {
        return print_json(&info);
    }
    println!("revoked targets-reader token {} ({})", info.id, info.name);
    Ok(())
}

pub async fn token_list(args: &AdminArgs) -> Result<()> {
    let tokens: Vec<TokenInfo> = AdminClient::new(args)?.get("/v1/admin/tokens").await?;
    if args.json {
        return print_json(&tokens);
    }
    let rows = tokens
        .iter()
        .map(|t| {
            vec![
                t.id.clone(),
                enum_text(&t.state),
                format!("{}/{}", t.uses, t.uses_allowed),
                time(t.expires_at),
                labels_text(&t.labels),
            ]
        })
        .collect();
    print!(
        "{}",
        table(&["ID", "STATE", "USES", "EXPIRES", "LABELS"], rows)
    );
    Ok(())
}

pub async fn token_revoke(args: &AdminArgs, id: &str) -> Result<()> {
    let path = format!("/v1/admin/tokens/{}/revoke", path_segment(id)?);
    let info: TokenInfo = AdminClient::new(args)?.post(&path, &()).await?;
    if args.json {
        return print_json(&info);
    }
    println!("revoked enrollment token {}", info.id);
    Ok(())
}

/// `hosts list` filters.
#[derive(Clone, Debug, Default)]
pub struct HostFilter {
    pub selector: Option<String>,
    pub state: Option<String>,
    pub all: bool,
}

pub async fn hosts_list(args: &AdminArgs, filter: &HostFilter) -> Result<()> {
    let mut query = Vec::new();
    if let Some(s) = &filter.selector {
        query.push(("selector", s.clone()));
    }
    if let Some(s) = &filter.state {
        query.push(("state", s.clone()));
    }
    if filter.all {
        query.push(("all", "true".into()));
    }
    let hosts: Vec<HostInfo> = AdminClient::new(args)?
        .get_query("/v1/admin/hosts", &query)
        .await?;
    if args.json {
        return print_json(&hosts);
    }
    let rows = hosts
        .iter()
        .map(|h| {
            vec![
                h.id.clone(),
                h.hostname.clone(),
                enum_text(&h.state),
                applied_text(h),
                time(h.last_seen),
                h.alloy_version.clone().unwrap_or_else(|| "-".into()),
                os_text(h),
                if h.target_drift.is_some() {
                    "DRIFT (hosts show)".into()
                } else {
                    "ok".into()
                },
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &[
                "ID",
                "HOSTNAME",
                "STATE",
                "CONFIG",
                "LAST SEEN",
                "ALLOY",
                "OS",
                "TARGET FILE"
            ],
            rows
        )
    );
    Ok(())
}

fn os_text(h: &HostInfo) -> String {
    match (&h.facts.os_id, &h.facts.os_version) {
        (Some(id), Some(v)) => format!("{id} {v}"),
        (Some(id), None) => id.clone(),
        _ => h.facts.os.clone(),
    }
}

pub async fn hosts_show(args: &AdminArgs, id: &str) -> Result<()> {
    let path = format!("/v1/admin/hosts/{}", path_segment(id)?);
    let h: HostInfo = AdminClient::new(args)?.get(&path).await?;
    if args.json {
        return print_json(&h);
    }
    print_host(&h);
    Ok(())
}

/// What the host's config needs of Alloy, and, when the host's Alloy is
/// older, why the agent refuses the config and what to do.
fn alloy_requirement(h: &HostInfo) -> Option<String> {
    let required = h.alloy_required.as_deref()?;
    let have = h
        .alloy_version
        .as_deref()
        .or_else(|| h.facts.alloy.as_ref()?.version.as_deref());
    let parse = muster_shared::alloy::parse_version;
    Some(match have {
        Some(have) if parse(have).zip(parse(required)).is_some_and(|(h, r)| h < r) => format!(
            "{required} or later, and this host has {have}: the agent refuses this config \
             (`Requires Alloy` lines of its templates) until Alloy is upgraded on the host"
        ),
        _ => format!("{required} or later"),
    })
}

/// How the host's last config was reloaded, when not by Alloy's own
/// `/-/reload` (which confirms it took the config).
fn reload_note(h: &HostInfo) -> Option<String> {
    h.reload_fallback
        .as_ref()
        .map(|why| format!("applied via fallback reload (Alloy's /-/reload unreachable: {why})"))
}

fn print_host(h: &HostInfo) {
    let os = match (&h.facts.os_id, &h.facts.os_version) {
        (Some(id), Some(v)) => format!("{} ({id} {v})", h.facts.os),
        _ => h.facts.os.clone(),
    };
    let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let scrape = match &h.scrape {
        Some(s) => format!(
            "{} at {}{}",
            s.state.as_str(),
            time(s.checked_at),
            s.error
                .as_deref()
                .map(|e| format!(": {e}"))
                .unwrap_or_default()
        ),
        None => "-".into(),
    };
    let mut lines = vec![
        ("id", h.id.clone()),
        ("hostname", h.hostname.clone()),
        ("state", enum_text(&h.state)),
        ("config state", enum_text(&h.config_state)),
        ("config", applied_text(h)),
        ("rendered hash", h.rendered_hash.clone()),
        ("applied hash", dash(&h.applied_hash)),
        ("last error", dash(&h.last_error)),
        ("scrape", scrape),
        ("labels", labels_text(&h.labels)),
        ("os", os),
        ("arch", h.facts.arch.clone()),
        ("scrape address", h.facts.scrape_address.clone()),
        ("alloy", dash(&h.alloy_version)),
        (
            "needs alloy",
            alloy_requirement(h).unwrap_or_else(|| "-".into()),
        ),
        ("agent", h.facts.agent_version.clone()),
        ("enrolled", time(h.enrolled_at)),
        ("last seen", time(h.last_seen)),
        ("cert expires", time(h.cert_expires_at)),
    ];
    if let Some(b) = &h.batch_id {
        lines.push(("batch", b.clone()));
    }
    if let Some(p) = &h.previous_host_id {
        lines.push(("previously", p.clone()));
    }
    if let Some(t) = h.replace_until {
        lines.push(("replace until", time(t)));
    }
    if let Some(c) = &h.last_conflict {
        lines.push(("refused claim", c.clone()));
    }
    if let Some(note) = reload_note(h) {
        lines.push(("reload", note));
    }
    if let Some(t) = h.decommissioned_at {
        lines.push(("decommissioned", time(t)));
    }
    if let Some(d) = &h.target_drift {
        lines.push(("target file", format!("DRIFT: {d}")));
    }
    for (k, v) in lines {
        println!("{:<15} {v}", format!("{k}:"));
    }
}

/// Where a label edit applies.
pub enum LabelTarget {
    Host(String),
    Selector(String),
}

pub async fn hosts_label(
    args: &AdminArgs,
    target: LabelTarget,
    set: Labels,
    remove: Vec<String>,
) -> Result<()> {
    let client = AdminClient::new(args)?;
    let (path, selector) = match target {
        LabelTarget::Host(id) => (
            format!("/v1/admin/hosts/{}/labels", path_segment(&id)?),
            None,
        ),
        LabelTarget::Selector(s) => ("/v1/admin/hosts/labels".to_string(), Some(s)),
    };
    let edit = LabelEdit {
        set,
        remove,
        selector,
    };
    let done: LabelEdited = client.post(&path, &edit).await?;
    if args.json {
        return print_json(&done);
    }
    let failed = done.target_file_errors.len();
    println!(
        "{} host(s) matched, {} changed: configs re-rendered, {} target file(s) rewritten, Prometheus reload requested",
        done.matched,
        done.hosts.len(),
        done.hosts.len() - failed
    );
    for (id, e) in &done.target_file_errors {
        println!("  {id}: target file NOT written ({e}); the server retries, `hosts show {id}` tells when it is");
    }
    for h in &done.hosts {
        println!(
            "  {}  {}  rendered {} (agents pick it up on their next poll; `hosts show` tells when applied)",
            h.id,
            labels_text(&h.labels),
            short(&h.rendered_hash)
        );
    }
    Ok(())
}

pub async fn hosts_decommission(args: &AdminArgs, id: &str) -> Result<()> {
    let path = format!("/v1/admin/hosts/{}/decommission", path_segment(id)?);
    let done: Decommissioned = AdminClient::new(args)?.post(&path, &()).await?;
    if args.json {
        return print_json(&done);
    }
    println!("decommissioned {}", done.host.id);
    println!(
        "  revoked {} certificate(s): the agent is refused from now on",
        done.revoked_certs
    );
    match (&done.target_file, &done.target_file_error) {
        (_, Some(e)) => {
            println!("  target file NOT renamed yet ({e}); the server retries until it is")
        }
        (Some(f), None) => {
            println!("  target file renamed to {f}: Prometheus stops scraping it")
        }
        (None, None) => println!("  there was no target file to rename"),
    }
    println!("  still listed with `hosts list --all`; its audit trail stays");
    Ok(())
}

pub async fn hosts_replace(args: &AdminArgs, id: &str) -> Result<()> {
    let path = format!("/v1/admin/hosts/{}/replace", path_segment(id)?);
    let armed: ReplaceArmed = AdminClient::new(args)?.post(&path, &()).await?;
    if args.json {
        return print_json(&armed);
    }
    println!(
        "{}: the machine with machine-id {} may take this host over with a new key, using this one-time token until {}:",
        armed.host.id,
        armed.host.facts.machine_id,
        time(armed.until)
    );
    println!("  {}", armed.enroll_command);
    println!("  The old key's certificates are revoked when that happens. No other token can take this host over.");
    Ok(())
}

/// `labels check`: exits 1 when a host does not fit.
pub async fn labels_check(args: &AdminArgs) -> Result<bool> {
    let check: LabelCheck = AdminClient::new(args)?
        .get("/v1/admin/labels/check")
        .await?;
    if args.json {
        print_json(&check)?;
        return Ok(check.misfits.is_empty());
    }
    if check.misfits.is_empty() {
        println!("all {} active hosts fit the label schema", check.checked);
        return Ok(true);
    }
    let rows = check
        .misfits
        .iter()
        .map(|m| vec![m.host_id.clone(), m.hostname.clone(), m.problems.join("; ")])
        .collect();
    print!("{}", table(&["ID", "HOSTNAME", "PROBLEMS"], rows));
    println!(
        "{} of {} hosts do not fit; fix them with `muster-server hosts label ID name=value [--remove name]`",
        check.misfits.len(),
        check.checked
    );
    Ok(false)
}

/// Parses `--since`: a duration ago (`1h`, `30m`) or an RFC 3339 time.
pub fn parse_since(text: &str, now: SystemTime) -> Result<i64, String> {
    let at = match humantime::parse_duration(text) {
        Ok(ago) => now.checked_sub(ago).unwrap_or(UNIX_EPOCH),
        Err(_) => humantime::parse_rfc3339_weak(text).map_err(|_| {
            format!(
                "{text:?} is neither a duration (30m, 2h, 7days) nor a time (2024-05-01T12:00:00Z)"
            )
        })?,
    };
    Ok(at
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64))
}

pub async fn audit(
    args: &AdminArgs,
    host: Option<&str>,
    actor: Option<&str>,
    since: Option<i64>,
    limit: u32,
) -> Result<()> {
    let mut query = vec![("limit", limit.to_string())];
    if let Some(h) = host {
        query.push(("host", h.to_string()));
    }
    if let Some(a) = actor {
        query.push(("actor", a.to_string()));
    }
    if let Some(s) = since {
        query.push(("since", s.to_string()));
    }
    let rows: Vec<AuditRow> = AdminClient::new(args)?
        .get_query("/v1/admin/audit", &query)
        .await?;
    if args.json {
        return print_json(&rows);
    }
    let cells = rows
        .iter()
        .map(|r| {
            let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
            vec![
                time(r.at),
                r.actor.clone(),
                r.action.clone(),
                dash(&r.target),
                r.outcome.clone(),
                dash(&r.source),
                dash(&r.detail),
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &["TIME", "WHO", "ACTION", "TARGET", "OUTCOME", "SOURCE", "DETAIL"],
            cells
        )
    );
    Ok(())
}

/// Ids go into URL paths: refuse anything that is not a plain id.
pub fn path_segment(id: &str) -> Result<&str> {
    if id.is_empty()
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        bail!("{id:?} is not an id");
    }
    Ok(id)
}

fn applied_text(h: &HostInfo) -> String {
    match &h.applied_hash {
        Some(a) if *a == h.rendered_hash => format!("current ({})", short(a)),
        Some(a) => format!(
            "outdated (applied {}, rendered {})",
            short(a),
            short(&h.rendered_hash)
        ),
        None => format!("not applied yet (rendered {})", short(&h.rendered_hash)),
    }
}

pub fn short(hash: &str) -> &str {
    hash.get(..12).unwrap_or(hash)
}

pub fn enum_text<T: Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

pub fn labels_text(labels: &Labels) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Unix seconds as RFC 3339 UTC.
pub fn time(unix: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_secs(unix.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

pub fn print_json<T: Serialize>(value: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Left-aligned columns separated by two spaces.
pub fn table(headers: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header_row: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header_row).chain(rows.iter()) {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_show_says_when_the_config_was_applied_through_the_fallback_reload() {
        let host = |fallback: Option<&str>| -> HostInfo {
            serde_json::from_value(serde_json::json!({
                "id": "db-01-abc", "hostname": "db-01", "state": "config_applied",
                "labels": {}, "rendered_hash": "h", "enrolled_at": 0, "last_seen": 0,
                "cert_expires_at": 0, "reload_fallback": fallback,
                "facts": {
                    "hostname": "db-01", "machine_id": "m", "os": "linux", "arch": "x86_64",
                    "scrape_address": "10.0.0.5:12345", "agent_version": "0.1.0",
                },
            }))
            .expect("a host")
        };
        assert_eq!(
            reload_note(&host(Some("connection refused"))).as_deref(),
            Some("applied via fallback reload (Alloy's /-/reload unreachable: connection refused)")
        );
        assert_eq!(reload_note(&host(None)), None);
    }

    #[test]
    fn hosts_show_says_why_an_older_alloy_refuses_the_config() {
        let host = |required: Option<&str>, have: Option<&str>| -> HostInfo {
            serde_json::from_value(serde_json::json!({
                "id": "db-01-abc", "hostname": "db-01", "state": "config_failed",
                "labels": {}, "rendered_hash": "h", "enrolled_at": 0, "last_seen": 0,
                "cert_expires_at": 0, "alloy_version": have, "alloy_required": required,
                "facts": {
                    "hostname": "db-01", "machine_id": "m", "os": "linux", "arch": "x86_64",
                    "scrape_address": "10.0.0.5:12345", "agent_version": "0.1.0",
                },
            }))
            .expect("a host")
        };
        let old = alloy_requirement(&host(Some("v1.4.0"), Some("v1.3.2"))).expect("text");
        assert!(
            old.starts_with("v1.4.0 or later, and this host has v1.3.2: the agent refuses"),
            "{old}"
        );
        assert!(old.contains("until Alloy is upgraded"), "{old}");
        assert_eq!(
            alloy_requirement(&host(Some("v1.4.0"), Some("v1.10.2"))).as_deref(),
            Some("v1.4.0 or later")
        );
        assert_eq!(
            alloy_requirement(&host(Some("v1.4.0"), None)).as_deref(),
            Some("v1.4.0 or later")
        );
        assert_eq!(alloy_requirement(&host(None, Some("v1.3.2"))), None);
    }

    #[test]
    fn tables_align_columns() {
        let t = table(
            &["ID", "STATE"],
            vec![
                vec!["a".into(), "active".into()],
                vec!["long-id".into(), "x".into()],
            ],
        );
        assert_eq!(t, "ID       STATE\na        active\nlong-id  x\n");
    }

    #[test]
    fn ids_with_path_characters_are_refused() {
        assert!(path_segment("../x").is_err());
        assert!(path_segment("a/b").is_err());
        assert_eq!(path_segment("web-01-abc").ok(), Some("web-01-abc"));
    }

    #[test]
    fn since_takes_a_duration_ago_or_a_time() {
        let now = UNIX_EPOCH + Duration::from_secs(10_000);
        assert_eq!(parse_since("1h", now), Ok(10_000 - 3600));
        assert_eq!(parse_since("1970-01-01T00:01:40Z", now), Ok(100));
        assert!(parse_since("yesterday", now)
            .unwrap_err()
            .contains("neither a duration"));
    }

    #[test]
    fn times_print_as_rfc3339() {
        assert_eq!(time(0), "1970-01-01T00:00:00Z");
    }
}
