//! The console's pages and actions. Reads go to the store; every action
//! calls the fleet core's function for it (the one the admin API calls)
//! with the signed-in admin as the actor, audited inside its transaction.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Extension;
use minijinja::{context, Value};
use muster_shared::labels::{self, Labels};
use serde::Deserialize;

use super::{cookie_value, render, Action, Console, Refusal, User, COOKIE, SESSION_TTL};
use crate::admin_wire::{HostInfo, HostState, LabelEdit, TokenCreate};
use crate::app::App;
use crate::cli::batch::Output;
use crate::fleet::{unix_now, BatchFile, FleetError, LabelTarget};
use crate::http::{blocking, refused_admin, throttle, verify_admin, ApiError, ConnInfo, Shared};
use crate::reconciler::FileChange;
use crate::store::{AuditEntry, AuditFilter, Cursor, HostRecord, HostSort, StateFilter};

/// Hosts per page of the hosts table.
pub const PAGE_SIZE: usize = 50;

type Page = Result<Response, Refusal>;

/// `1700000000` → "3 min ago" (or "in 5 min").
pub fn ago(unix: i64) -> String {
    let delta = unix_now() - unix;
    let (n, future) = if delta < 0 {
        (-delta, true)
    } else {
        (delta, false)
    };
    let text = match n {
        0..=9 => return "just now".into(),
        10..=59 => format!("{n} s"),
        60..=3599 => format!("{} min", n / 60),
        3600..=86_399 => format!("{} h", n / 3600),
        86_400..=172_799 => "1 day".into(),
        _ => format!("{} days", n / 86_400),
    };
    if future {
        format!("in {text}")
    } else {
        format!("{text} ago")
    }
}

/// `1700000000` → "2023-11-14T22:13:20Z".
pub fn time_filter(unix: i64) -> String {
    crate::cli::time(unix)
}

pub fn url_encode(text: &str) -> String {
    serde_urlencoded::to_string([("", text)])
        .map(|s| s.trim_start_matches('=').to_string())
        .unwrap_or_default()
}

fn page(user: &User, nav: &str, extra: Value) -> Value {
    context! {
        user => context! { name => user.name, csrf => user.csrf },
        nav => nav,
        ..extra
    }
}

fn see_other(to: &str) -> Response {
    Redirect::to(to).into_response()
}

fn with_status(status: StatusCode, mut resp: Response) -> Response {
    *resp.status_mut() = status;
    resp
}

fn stale_secs(app: &Shared) -> i64 {
    app.settings.stale_after.as_secs() as i64
}

fn store_err(what: &'static str) -> impl Fn(crate::store::StoreError) -> Refusal {
    move |e| Refusal::Api(ApiError::internal(what, e))
}

/// Runs a fleet transition off the async workers as the signed-in admin
/// (actor and source address), its refusal mapped as the API maps it.
async fn transition<T: Send + 'static>(
    app: &Shared,
    user: &User,
    f: impl FnOnce(&App, &str, &str) -> Result<T, FleetError> + Send + 'static,
) -> Result<T, ApiError> {
    let (actor, source) = (user.name.clone(), user.conn.peer.ip().to_string());
    blocking(app, move |app| f(app, &actor, &source))
        .await?
        .map_err(ApiError::from)
}

/// A host that exists (decommissioned ones too).
async fn load_host(app: &Shared, id: &str) -> Result<HostRecord, Refusal> {
    let lookup = id.to_string();
    blocking(app, move |app| app.store.host(&lookup))
        .await?
        .map_err(store_err("cannot read host"))?
        .ok_or_else(|| ApiError::NotFound(format!("no host {id:?}")).into())
}

/// Back to the host page with what was done.
fn host_done(id: &str, message: &str) -> Response {
    see_other(&format!(
        "/hosts/{}?done={}",
        url_encode(id),
        url_encode(message)
    ))
}

// ---- sign-in ----

#[derive(Deserialize)]
pub struct SignInQuery {
    #[serde(default)]
    next: Option<String>,
}

/// Only local paths: never a redirect to another site.
fn local_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n.into(),
        _ => "/".into(),
    }
}

pub async fn signin_form(Query(q): Query<SignInQuery>) -> Response {
    render(
        "signin.html",
        context! { user => (), nav => "", next => local_next(q.next.as_deref()), error => () },
    )
}

#[derive(Deserialize)]
pub struct SignInForm {
    token: String,
    #[serde(default)]
    next: Option<String>,
}

/// The origin a browser sent, when it is not this page's own.
fn foreign_origin(headers: &HeaderMap) -> Option<String> {
    let origin = headers.get(header::ORIGIN)?.to_str().ok()?;
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    (origin != format!("https://{host}")).then(|| origin.to_string())
}

pub async fn signin(
    State(app): State<Shared>,
    Extension(conn): Extension<ConnInfo>,
    Extension(console): Extension<Arc<Console>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Page {
    let form: SignInForm = serde_urlencoded::from_bytes(&body)
        .map_err(|e| ApiError::BadRequest(format!("malformed sign-in form: {e}")))?;
    let next = local_next(form.next.as_deref());
    let again = |status: StatusCode, error: String| {
        with_status(
            status,
            render(
                "signin.html",
                context! { user => (), nav => "", next => next.clone(), error => error },
            ),
        )
    };
    if let Some(origin) = foreign_origin(&headers) {
        tracing::warn!(%origin, "console sign-in from another origin refused");
        return Ok(again(
            StatusCode::FORBIDDEN,
            "This sign-in form was sent from another site; open the console's own sign-in page."
                .into(),
        ));
    }
    let source = Some(conn.peer.ip());
    if let Err(e) = throttle(&app, source) {
        let mut resp = again(StatusCode::TOO_MANY_REQUESTS, e.to_string());
        if let ApiError::RateLimited { retry_after_secs } = e {
            if let Ok(v) = HeaderValue::from_str(&retry_after_secs.to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        return Ok(resp);
    }
    let token = form.token.trim().to_string();
    let name = if token.is_empty() {
        None
    } else {
        verify_admin(&app, token).await?
    };
    let Some(name) = name else {
        refused_admin(
            &app,
            source,
            "console sign-in: invalid or revoked admin token",
        );
        return Ok(again(
            StatusCode::UNAUTHORIZED,
            "That is not a valid admin token. Use the token printed by `muster-server init` (saved in <data dir>/admin.token).".into(),
        ));
    };
    let id = console.sessions.start(&name, Instant::now());
    app.audit(AuditEntry {
        at: unix_now(),
        actor: &name,
        action: "console.signin",
        target: None,
        outcome: "ok",
        detail: None,
        source: Some(&conn.peer.ip().to_string()),
    });
    let cookie = format!(
        "{COOKIE}={id}; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age={}",
        SESSION_TTL.as_secs()
    );
    let mut resp = see_other(&next);
    resp.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).map_err(|e| ApiError::internal("cookie", e))?,
    );
    Ok(resp)
}

#[derive(Deserialize)]
pub struct Empty {}

pub async fn signout(
    State(app): State<Shared>,
    Extension(console): Extension<Arc<Console>>,
    headers: HeaderMap,
    action: Action<Empty>,
) -> Page {
    if let Some(id) = cookie_value(&headers, COOKIE) {
        console.sessions.end(id);
    }
    app.audit(AuditEntry {
        at: unix_now(),
        actor: &action.user.name,
        action: "console.signout",
        target: None,
        outcome: "ok",
        detail: None,
        source: Some(&action.user.conn.peer.ip().to_string()),
    });
    let mut resp = see_other("/signin");
    resp.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static(
            "muster_session=; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age=0",
        ),
    );
    Ok(resp)
}

// ---- overview ----

/// The states the overview counts, in display order: every state a host
/// can be in (`pending` is a batch row's, before its host exists).
fn overview_states() -> &'static [HostState] {
    &HostState::ALL[1..]
}

/// Hosts that applied a config, but not the one rendered for them now.
fn drifted(h: &HostInfo) -> bool {
    h.config_state == HostState::ConfigApplied
        && h.decommissioned_at.is_none()
        && h.applied_hash.as_deref() != Some(h.rendered_hash.as_str())
}

/// The badge a host gets in lists: its state, or `drift` when it otherwise
/// looks fine but runs an older config than the server rendered.
fn badge(h: &HostInfo) -> &'static str {
    match h.state {
        HostState::ConfigApplied | HostState::ScrapeOk if drifted(h) => "drift",
        state => state.as_str(),
    }
}

/// Rows of the "needs attention" list the overview shows at most.
const ATTENTION_ROWS: usize = 50;

pub async fn overview(State(app): State<Shared>, user: User) -> Page {
    let stale = stale_secs(&app);
    let now = unix_now();
    let (counts, attention, recent) = blocking(&app, move |app| {
        let counts = app.store.state_counts(now, stale)?;
        let attention = app.store.needs_attention(now, stale, ATTENTION_ROWS)?;
        let recent = app
            .store
            .host_page(HostSort::Enrolled, None, false, None, 10, |_| true)?;
        Ok::<_, crate::store::StoreError>((counts, attention, recent.hosts))
    })
    .await?
    .map_err(store_err("cannot count hosts"))?;
    let ever: u64 = counts.by_state.values().sum();
    let total = ever - counts.of(HostState::Decommissioned);
    let mut cards: Vec<Value> = overview_states()
        .iter()
        .map(|s| context! { state => s.as_str(), count => counts.of(*s) })
        .collect();
    cards.push(context! { state => "drift", count => counts.drift });
    let attention: Vec<Value> = attention
        .iter()
        .map(|h| {
            let h = h.info(now, stale);
            let why = match h.state {
                HostState::Stale => format!("no check-in since {}", ago(h.last_seen)),
                HostState::ScrapeFailing => h
                    .scrape
                    .as_ref()
                    .and_then(|s| s.error.clone())
                    .unwrap_or_else(|| "Prometheus cannot scrape it".into()),
                _ if drifted(&h) => "runs an older config than the server rendered".into(),
                _ => h.last_error.clone().unwrap_or_default(),
            };
            context! { id => h.id, hostname => h.hostname, state => badge(&h), why => why }
        })
        .collect();
    let recent: Vec<Value> = recent
        .iter()
        .map(|h| {
            let h = h.info(now, stale);
            context! { id => h.id, hostname => h.hostname, state => badge(&h), enrolled_at => h.enrolled_at }
        })
        .collect();
    Ok(render(
        "overview.html",
        page(
            &user,
            "overview",
            context! {
                total => total,
                ever => ever,
                counts => cards,
                current => counts.current,
                percent => (counts.current * 100).checked_div(total).unwrap_or(0),
                attention_full => attention.len() == ATTENTION_ROWS,
                attention => attention,
                recent => recent,
            },
        ),
    ))
}

// ---- enroll ----

/// One label field of the enroll form, from the schema.
fn label_fields(app: &Shared) -> Vec<Value> {
    let spec = &app.settings.labels;
    let mut names: Vec<String> = spec.required.clone();
    let mut rest: BTreeSet<String> = spec.rules.keys().cloned().collect();
    rest.extend(spec.defaults.keys().cloned());
    rest.extend(spec.allowed.iter().flatten().cloned());
    rest.retain(|n| !names.contains(n));
    names.extend(rest);
    names
        .iter()
        .map(|name| {
            let rule = spec.rules.get(name);
            context! {
                name => name,
                required => spec.required.contains(name),
                values => rule.and_then(|r| r.values.clone()),
                pattern => rule.and_then(|r| r.pattern.clone()),
                default => spec.defaults.get(name),
            }
        })
        .collect()
}

fn enroll_page(
    app: &Shared,
    user: &User,
    form: &BTreeMap<String, String>,
    error: Option<String>,
) -> Response {
    let ttl = form
        .get("ttl")
        .cloned()
        .unwrap_or_else(|| humantime::format_duration(app.settings.token_ttl).to_string());
    render(
        "enroll.html",
        page(
            user,
            "enroll",
            context! {
                fields => label_fields(app),
                open_names => app.settings.labels.allowed.is_none(),
                form => form,
                ttl => ttl,
                uses => form.get("uses").cloned().unwrap_or_else(|| "1".into()),
                error => error,
            },
        ),
    )
}

pub async fn enroll_form(State(app): State<Shared>, user: User) -> Page {
    Ok(enroll_page(&app, &user, &BTreeMap::new(), None))
}

/// The labels, lifetime and uses an enroll form asks for.
fn token_request(form: &BTreeMap<String, String>) -> Result<TokenCreate, String> {
    let mut wanted = Labels::new();
    for (key, value) in form {
        if let Some(name) = key.strip_prefix("label.") {
            if !value.trim().is_empty() {
                wanted.insert(name.to_string(), value.trim().to_string());
            }
        }
    }
    for (n, line) in form
        .get("extra")
        .into_iter()
        .flat_map(|t| t.lines())
        .enumerate()
    {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let (name, value) = labels::parse_pair(line)
            .map_err(|e| format!("more labels, line {}: {e} (write name=value)", n + 1))?;
        wanted.insert(name, value);
    }
    let ttl = form.get("ttl").map(|t| t.trim()).filter(|t| !t.is_empty());
    let ttl_secs = ttl
        .map(|t| {
            humantime::parse_duration(t)
                .map(|d| d.as_secs())
                .map_err(|e| format!("lifetime {t:?}: {e} (e.g. 24h, 7days)"))
        })
        .transpose()?;
    let uses = form.get("uses").map(|u| u.trim()).filter(|u| !u.is_empty());
    let uses = uses
        .map(|u| {
            u.parse::<u32>()
                .map_err(|_| format!("uses {u:?} is not a whole number"))
        })
        .transpose()?;
    Ok(TokenCreate {
        labels: wanted,
        ttl_secs,
        uses,
    })
}

pub async fn enroll(State(app): State<Shared>, action: Action<BTreeMap<String, String>>) -> Page {
    let Action { user, form } = action;
    let req = match token_request(&form) {
        Ok(req) => req,
        Err(e) => {
            return Ok(with_status(
                StatusCode::BAD_REQUEST,
                enroll_page(&app, &user, &form, Some(e)),
            ))
        }
    };
    let created = transition(&app, &user, move |app, actor, source| {
        let ttl = crate::fleet::token_ttl(&app.settings, req.ttl_secs)?;
        let uses = req.uses.unwrap_or(1);
        let (secret, info) =
            app.fleet()
                .create_token(&req.labels, ttl, uses, actor, source, unix_now())?;
        Ok(app.token_created(&secret, info))
    })
    .await;
    match created {
        Ok(created) => Ok(render(
            "enrolled.html",
            page(
                &user,
                "enroll",
                context! { created => Value::from_serialize(&created) },
            ),
        )),
        Err(ApiError::BadRequest(message)) => Ok(with_status(
            StatusCode::BAD_REQUEST,
            enroll_page(&app, &user, &form, Some(message)),
        )),
        Err(e) => Err(e.into()),
    }
}

/// The hosts that enrolled with a token (polled by the enroll result page).
pub async fn token_hosts(
    State(app): State<Shared>,
    _user: User,
    Path(token): Path<String>,
) -> Page {
    let stale = stale_secs(&app);
    let hosts = blocking(&app, move |app| app.store.hosts_enrolled_with(&token))
        .await?
        .map_err(store_err("cannot list hosts"))?;
    let now = unix_now();
    let infos: Vec<HostInfo> = hosts.iter().map(|h| h.info(now, stale)).collect();
    Ok(render(
        "token_hosts.html",
        context! { hosts => Value::from_serialize(&infos) },
    ))
}

// ---- hosts ----

#[derive(Deserialize)]
pub struct HostsQuery {
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    selector: Option<String>,
    #[serde(default)]
    sort: Option<String>,
    #[serde(default)]
    after: Option<String>,
    #[serde(default)]
    all: Option<String>,
}

fn cursor_text(sort: HostSort, h: &HostRecord) -> String {
    format!("{}.{}", sort.key(h), h.id)
}

fn parse_cursor(text: &str) -> Option<Cursor> {
    let (key, id) = text.split_once('.')?;
    Some(Cursor {
        key: key.parse().ok()?,
        id: id.to_string(),
    })
}

pub async fn hosts(State(app): State<Shared>, user: User, Query(q): Query<HostsQuery>) -> Page {
    let selector_text = q.selector.clone().unwrap_or_default();
    let state_text = q.state.clone().unwrap_or_default();
    let mut problems = Vec::new();
    let selector = match selector_text.trim() {
        "" => None,
        text => match labels::parse_selector(text) {
            Ok(s) => Some(s),
            Err(e) => {
                problems.push(format!("selector: {e} (write name=value[,name=value])"));
                None
            }
        },
    };
    // `drift` is no state of its own: config applied, not the rendered one.
    let drift = state_text == "drift";
    let state = match state_text.as_str() {
        "" | "drift" => None,
        text => match HostState::parse(text) {
            Some(s) if s != HostState::Pending => Some(s),
            _ => {
                problems.push(format!("unknown state {text:?}"));
                None
            }
        },
    };
    let sort = q
        .sort
        .as_deref()
        .and_then(HostSort::parse)
        .unwrap_or(HostSort::Id);
    let after = q.after.as_deref().and_then(parse_cursor);
    let all = q.all.is_some() || state == Some(HostState::Decommissioned);
    let stale = stale_secs(&app);
    let now = unix_now();
    let filter_selector = selector.clone();
    // The state narrows the rows SQLite hands over; each host's shown
    // state (pending check-ins included) is still checked below.
    let narrow = match state {
        _ if drift => Some(StateFilter::Drift),
        Some(HostState::Stale) => Some(StateFilter::SeenBefore(now - stale)),
        Some(s) => Some(StateFilter::Shown(s)),
        None => None,
    };
    let page_hosts = blocking(&app, move |app| {
        app.store
            .host_page(sort, after.as_ref(), all, narrow, PAGE_SIZE, |h| {
                filter_selector
                    .as_ref()
                    .is_none_or(|s| labels::matches(s, &h.labels()))
                    && ((state.is_none() && !drift) || {
                        let info = h.info(now, stale);
                        state.is_none_or(|s| info.state == s) && (!drift || drifted(&info))
                    })
            })
    })
    .await?
    .map_err(store_err("cannot list hosts"))?;
    let next = if page_hosts.more {
        page_hosts.hosts.last().map(|h| cursor_text(sort, h))
    } else {
        None
    };
    let rows: Vec<Value> = page_hosts
        .hosts
        .iter()
        .map(|h| {
            let info = h.info(now, stale);
            context! {
                id => info.id,
                hostname => info.hostname,
                state => badge(&info),
                last_seen => info.last_seen,
                enrolled_at => info.enrolled_at,
                os => format!("{} {}", h.facts.os_id.as_deref().unwrap_or(&h.facts.os), h.facts.os_version.as_deref().unwrap_or("")).trim().to_string(),
                alloy => info.alloy_version,
                current => info.applied_hash.as_deref() == Some(info.rendered_hash.as_str()),
                applied => info.applied_hash,
                rendered => info.rendered_hash,
                labels => h.operator_labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>(),
            }
        })
        .collect();
    let mut states: Vec<&str> = overview_states().iter().map(|s| s.as_str()).collect();
    states.push("drift");
    Ok(render(
        "hosts.html",
        page(
            &user,
            "hosts",
            context! {
                rows => rows,
                states => states,
                state => state_text,
                selector => selector_text,
                sort => sort.as_str(),
                all => all,
                next => next,
                paged => q.after.is_some(),
                problems => problems,
            },
        ),
    ))
}

// ---- one host ----

#[derive(Deserialize)]
pub struct HostQuery {
    #[serde(default)]
    done: Option<String>,
}

/// An `overrides.toml` rule as the host page lists it.
fn override_rule(number: usize, rule: &crate::overrides::Rule) -> Value {
    let pairs = |m: &BTreeMap<String, String>| {
        m.iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let scope = if !rule.hosts.is_empty() {
        "for this host by id".to_string()
    } else if rule.selector.is_empty() {
        "for every host".to_string()
    } else {
        format!("for hosts with {}", pairs(&rule.selector))
    };
    let changes: Vec<String> = rule
        .services
        .iter()
        .map(|(name, o)| {
            let mut what: Vec<String> = o
                .enabled
                .map(|on| if on { "enabled" } else { "disabled" }.to_string())
                .into_iter()
                .collect();
            what.extend(o.params.iter().map(|(k, v)| format!("{k}={v}")));
            format!("{name}: {}", what.join(", "))
        })
        .collect();
    context! { number => number, scope => scope, changes => changes }
}

async fn host_page(
    app: &Shared,
    user: &User,
    id: String,
    notice: Option<String>,
    error: Option<String>,
) -> Page {
    let stale = stale_secs(app);
    let lookup = id.clone();
    let (host, certs, trail, applied) = blocking(app, move |app| {
        let host = app.store.host(&lookup)?;
        // The applied config's text, when it is not the rendered one.
        let applied = match host
            .as_ref()
            .and_then(|h| h.applied_hash.clone().filter(|a| *a != h.rendered_hash))
        {
            Some(hash) => app.store.config_by_hash(&hash)?,
            None => None,
        };
        let certs = app.store.host_certs(&lookup)?;
        let trail = app.store.audit_query(&AuditFilter {
            host: Some(lookup.clone()),
            actor: None,
            since: None,
            limit: 100,
        })?;
        Ok::<_, crate::store::StoreError>((host, certs, trail, applied))
    })
    .await?
    .map_err(store_err("cannot read host"))?;
    let host = host.ok_or_else(|| ApiError::NotFound(format!("no host {id:?}")))?;
    let info = host.info(unix_now(), stale);
    let target_file = crate::targets::path_for(app.reconciler.dir(), &host.id)
        .and_then(|p| std::fs::read_to_string(p).ok());
    let mut trail = trail;
    trail.reverse();
    let labels = host.labels();
    let overrides = &app.render_settings.overrides;
    let plan = crate::overrides::plan(&host.id, &labels, &host.facts.services, overrides);
    let services: Vec<Value> = plan
        .iter()
        .map(|(name, params)| {
            context! {
                name => name,
                detected => host.facts.services.iter().any(|s| s.kind.as_str() == name),
                params => params
                    .iter()
                    .filter(|(k, _)| k.as_str() != "addr")
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>(),
            }
        })
        .collect();
    let disabled: BTreeSet<&str> = host
        .facts
        .services
        .iter()
        .map(|s| s.kind.as_str())
        .filter(|k| *k != "unknown" && !plan.contains_key(*k))
        .collect();
    let rules: Vec<Value> = crate::overrides::applying(&host.id, &labels, overrides)
        .into_iter()
        .map(|(number, rule)| override_rule(number, rule))
        .collect();
    let diff = applied.map(|text| super::diff::config_diff(&text, &host.config));
    Ok(render(
        "host.html",
        page(
            user,
            "hosts",
            context! {
                host => Value::from_serialize(&info),
                badge => badge(&info),
                operator_labels => Value::from_serialize(&host.operator_labels),
                config => host.config,
                diff => diff.map(|d| Value::from_serialize(&d)),
                services => services,
                disabled => disabled,
                rules => rules,
                targets => Value::from_serialize(&host.targets),
                target_file => target_file,
                current => info.applied_hash.as_deref() == Some(info.rendered_hash.as_str()),
                certs => Value::from_serialize(&certs),
                trail => Value::from_serialize(&trail),
                fields => label_fields(app),
                notice => notice,
                error => error,
            },
        ),
    ))
}

pub async fn host(
    State(app): State<Shared>,
    user: User,
    Path(id): Path<String>,
    Query(q): Query<HostQuery>,
) -> Page {
    host_page(&app, &user, id, q.done, None).await
}

/// The edit a host's label form asks for: changed values set, ticked
/// names removed, the new name/value pair added.
fn label_edit(current: &Labels, form: &BTreeMap<String, String>) -> LabelEdit {
    let mut edit = LabelEdit::default();
    for (key, value) in form {
        if let Some(name) = key.strip_prefix("set.") {
            let value = value.trim();
            if current.get(name).map(String::as_str) != Some(value) && !value.is_empty() {
                edit.set.insert(name.to_string(), value.to_string());
            }
        } else if let Some(name) = key.strip_prefix("remove.") {
            edit.remove.push(name.to_string());
        }
    }
    let new_name = form.get("new_name").map(|s| s.trim()).unwrap_or("");
    if !new_name.is_empty() {
        let value = form.get("new_value").map(|s| s.trim()).unwrap_or("");
        edit.set.insert(new_name.to_string(), value.to_string());
    }
    for name in &edit.remove {
        edit.set.remove(name);
    }
    edit
}

pub async fn edit_labels(
    State(app): State<Shared>,
    Path(id): Path<String>,
    action: Action<BTreeMap<String, String>>,
) -> Page {
    let Action { user, form } = action;
    let current = load_host(&app, &id).await?.operator_labels;
    let edit = label_edit(&current, &form);
    if edit.set.is_empty() && edit.remove.is_empty() {
        return host_page(&app, &user, id, Some("Nothing changed.".into()), None).await;
    }
    let target = LabelTarget::Id(id.clone());
    let result = transition(&app, &user, move |app, actor, source| {
        let change =
            app.fleet()
                .edit_labels(&target, &edit.set, &edit.remove, actor, source, unix_now())?;
        Ok(change
            .changed
            .iter()
            .filter_map(|h| app.host_changed(&h.id).err())
            .collect::<Vec<_>>())
    })
    .await;
    match result {
        Ok(failed) if failed.is_empty() => Ok(host_done(
            &id,
            "Labels saved: the config was re-rendered and the target file rewritten.",
        )),
        Ok(failed) => Ok(host_done(
            &id,
            &format!(
                "Labels saved and the config re-rendered, but the target file could not be written yet (retried in the background): {}",
                failed.join("; ")
            ),
        )),
        Err(ApiError::BadRequest(message)) => Ok(with_status(
            StatusCode::BAD_REQUEST,
            host_page(&app, &user, id, None, Some(message)).await?,
        )),
        Err(e) => Err(e.into()),
    }
}

#[derive(Deserialize)]
pub struct Decommission {
    #[serde(default)]
    confirm: String,
}

pub async fn decommission(
    State(app): State<Shared>,
    Path(id): Path<String>,
    action: Action<Decommission>,
) -> Page {
    let Action { user, form } = action;
    let host = load_host(&app, &id).await?;
    if form.confirm.trim() != host.facts.hostname {
        let message = format!(
            "Type the hostname {:?} exactly to decommission this host; nothing was changed.",
            host.facts.hostname
        );
        return Ok(with_status(
            StatusCode::BAD_REQUEST,
            host_page(&app, &user, id, None, Some(message)).await?,
        ));
    }
    let (revoked, file) = transition(&app, &user, move |app, actor, source| {
        let done = app.fleet().decommission(&id, actor, source, unix_now())?;
        Ok((
            done.revoked_certs,
            app.reconciler.host_decommissioned(&done.host.id),
        ))
    })
    .await?;
    let message = format!(
        "Decommissioned: {revoked} certificate(s) revoked; {}.",
        match file {
            Ok(FileChange::Retired(name)) => format!("target file retired as {name}"),
            Ok(_) => "there was no target file".into(),
            Err(e) =>
                format!("the target file could not be retired yet (retried in the background): {e}"),
        }
    );
    Ok(host_done(&host.id, &message))
}

pub async fn replace(
    State(app): State<Shared>,
    Path(id): Path<String>,
    action: Action<Empty>,
) -> Page {
    let user = action.user;
    let lookup = id.clone();
    let armed = transition(&app, &user, move |app, actor, source| {
        app.fleet().replace(&lookup, actor, source, unix_now())
    })
    .await?;
    let message = format!(
        "Another key may now enroll as this host (a reinstall) until {}.",
        time_filter(armed.until)
    );
    Ok(host_done(&id, &message))
}

// ---- batches ----

async fn batches_page(
    app: &Shared,
    user: &User,
    form: &BTreeMap<String, String>,
    report: Option<Value>,
) -> Page {
    let list = blocking(app, |app| app.store.batches())
        .await?
        .map_err(store_err("cannot list batches"))?;
    Ok(render(
        "batches.html",
        page(
            user,
            "batches",
            context! {
                batches => Value::from_serialize(&list),
                form => form,
                report => report,
                required => app.settings.labels.required.clone(),
            },
        ),
    ))
}

pub async fn batches(State(app): State<Shared>, user: User) -> Page {
    batches_page(&app, &user, &BTreeMap::new(), None).await
}

/// The batch page again with what is wrong with the file (nothing stored).
async fn batch_refused(
    app: &Shared,
    user: &User,
    form: &BTreeMap<String, String>,
    summary: &str,
    rows: &[crate::batch::RowError],
    valid: usize,
) -> Page {
    let report = context! {
        summary => summary,
        rows => Value::from_serialize(rows),
        valid => valid,
    };
    Ok(with_status(
        StatusCode::BAD_REQUEST,
        batches_page(app, user, form, Some(report)).await?,
    ))
}

/// The tokens of an import or a retry, each with its line, and the same
/// lines as downloads (rendered by the CLI's own `batch` output).
fn issued_page(
    app: &App,
    user: &User,
    batch: &crate::store::BatchRecord,
    tokens: &[crate::fleet::RowToken],
    invalid: &[crate::batch::RowError],
    retried: bool,
) -> Response {
    use base64::Engine as _;
    let hosts = app.issued(tokens);
    let (server, pin) = (&app.settings.public_url, app.pin.to_string());
    let link = |output: Output, kind: &str| {
        let text = crate::cli::batch::render(output, server, &pin, &hosts);
        format!(
            "data:{kind};base64,{}",
            base64::engine::general_purpose::STANDARD.encode(text)
        )
    };
    render(
        "imported.html",
        page(
            user,
            "batches",
            context! {
                batch => Value::from_serialize(batch),
                hosts => Value::from_serialize(&hosts),
                invalid => Value::from_serialize(invalid),
                downloads => context! {
                    lines => link(Output::Lines, "text/plain"),
                    csv => link(Output::Csv, "text/csv"),
                    cloud_init => link(Output::CloudInit, "text/yaml"),
                },
                retried => retried,
            },
        ),
    )
}

pub async fn import(State(app): State<Shared>, action: Action<BTreeMap<String, String>>) -> Page {
    let Action { user, form } = action;
    let content = form.get("content").cloned().unwrap_or_default();
    if content.trim().is_empty() {
        let summary = "Choose a CSV file (or paste its rows) first.";
        return batch_refused(&app, &user, &form, summary, &[], 0).await;
    }
    let name = form
        .get("name")
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "batch".into());
    let skip_invalid = form.contains_key("skip_invalid");
    let text = content.clone();
    let result = transition(&app, &user, move |app, actor, source| {
        let now = unix_now();
        let ttl = crate::fleet::token_ttl(&app.settings, None)?;
        let file = BatchFile {
            name: &name,
            format: None,
            content: &text,
            skip_invalid,
        };
        app.fleet()
            .import_batch(&file, now + ttl.as_secs() as i64, actor, source, now)
    })
    .await;
    match result {
        Ok(imported) => Ok(issued_page(
            &app,
            &user,
            &imported.batch,
            &imported.tokens,
            &imported.invalid,
            false,
        )),
        Err(ApiError::InvalidRows { summary, rows }) => {
            let bad: BTreeSet<usize> = rows.iter().map(|r| r.line).collect();
            let total = crate::batch::parse(crate::batch::Format::sniff(&content), &content)
                .map(|r| r.len())
                .unwrap_or(0);
            // The fleet's summary names the CLI flag; here it is a button.
            let summary = summary.replace("with --skip-invalid", "with the button below");
            let valid = total.saturating_sub(bad.len());
            batch_refused(&app, &user, &form, &summary, &rows, valid).await
        }
        Err(ApiError::BadRequest(message)) => {
            batch_refused(&app, &user, &form, &message, &[], 0).await
        }
        Err(e) => Err(e.into()),
    }
}

async fn batch_status(app: &Shared, id: String) -> Result<Value, Refusal> {
    let status = blocking(app, move |app| app.fleet().batch_status(&id, unix_now()))
        .await?
        .map_err(ApiError::from)?;
    let settled = status.hosts.iter().all(|h| h.settled(status.scrape_checks));
    let retryable = status.hosts.iter().filter(|h| h.retryable).count();
    Ok(context! {
        status => Value::from_serialize(&status),
        settled => settled,
        retryable => retryable,
    })
}

pub async fn batch(State(app): State<Shared>, user: User, Path(id): Path<String>) -> Page {
    let status = batch_status(&app, id).await?;
    Ok(render("batch.html", page(&user, "batches", status)))
}

pub async fn batch_rows(State(app): State<Shared>, user: User, Path(id): Path<String>) -> Page {
    let status = batch_status(&app, id).await?;
    Ok(render("batch_rows.html", page(&user, "batches", status)))
}

#[derive(Deserialize)]
pub struct Retry {
    #[serde(default)]
    host: Option<String>,
}

pub async fn retry(
    State(app): State<Shared>,
    Path(id): Path<String>,
    action: Action<Retry>,
) -> Page {
    let Action { user, form } = action;
    let host = form.host.filter(|h| !h.is_empty());
    let retried = transition(&app, &user, move |app, actor, source| {
        let now = unix_now();
        let ttl = crate::fleet::token_ttl(&app.settings, None)?;
        app.fleet().retry_batch(
            &id,
            host.as_deref(),
            now + ttl.as_secs() as i64,
            actor,
            source,
            now,
        )
    })
    .await?;
    Ok(issued_page(
        &app,
        &user,
        &retried.batch,
        &retried.tokens,
        &[],
        true,
    ))
}

// ---- tokens ----

#[derive(Deserialize)]
pub struct Done {
    #[serde(default)]
    done: Option<String>,
}

pub async fn tokens(State(app): State<Shared>, user: User, Query(q): Query<Done>) -> Page {
    let mut list = blocking(&app, |app| app.store.list_enroll_tokens(unix_now()))
        .await?
        .map_err(store_err("cannot list tokens"))?;
    list.reverse();
    Ok(render(
        "tokens.html",
        page(
            &user,
            "tokens",
            context! { tokens => Value::from_serialize(&list), notice => q.done },
        ),
    ))
}

pub async fn revoke(
    State(app): State<Shared>,
    Path(id): Path<String>,
    action: Action<Empty>,
) -> Page {
    let info = transition(&app, &action.user, move |app, actor, source| {
        app.fleet().revoke_token(&id, actor, source, unix_now())
    })
    .await?;
    Ok(see_other(&format!(
        "/tokens?done={}",
        url_encode(&format!(
            "Token {} revoked: it enrolls nothing more.",
            info.id
        ))
    )))
}

// ---- audit ----

/// Entries the audit page shows at most (the newest).
const AUDIT_ROWS: usize = 500;

#[derive(Deserialize)]
pub struct AuditQuery {
    #[serde(default)]
    host: Option<String>,
    #[serde(default)]
    actor: Option<String>,
    #[serde(default)]
    since: Option<String>,
}

pub async fn audit(State(app): State<Shared>, user: User, Query(q): Query<AuditQuery>) -> Page {
    let given = |text: &Option<String>| {
        text.as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(String::from)
    };
    let (host, actor) = (given(&q.host), given(&q.actor));
    let since_text = q.since.clone().unwrap_or_default();
    let mut problems = Vec::new();
    let since = match since_text.trim() {
        "" => None,
        text => match humantime::parse_duration(text) {
            Ok(d) => Some(unix_now() - d.as_secs() as i64),
            Err(e) => {
                problems.push(format!("since {text:?}: {e} (e.g. 30m, 24h, 7days)"));
                None
            }
        },
    };
    let filter = AuditFilter {
        host: host.clone(),
        actor: actor.clone(),
        since,
        limit: AUDIT_ROWS as u32,
    };
    let mut rows = blocking(&app, move |app| app.store.audit_query(&filter))
        .await?
        .map_err(store_err("cannot read audit log"))?;
    rows.reverse();
    Ok(render(
        "audit.html",
        page(
            &user,
            "audit",
            context! {
                full => rows.len() == AUDIT_ROWS,
                rows => Value::from_serialize(&rows),
                host => host,
                actor => actor,
                since => since_text,
                problems => problems,
            },
        ),
    ))
}
