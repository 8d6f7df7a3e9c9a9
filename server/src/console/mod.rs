//! The web console on the admin listener at `/`: server-rendered minijinja
//! pages (templates and assets built into the binary) with a little
//! progressive-enhancement JavaScript (`assets/console.js`), no build step.
//!
//! Sign-in takes an admin token and gives a session cookie (`HttpOnly`,
//! `Secure`, `SameSite=Strict`, expiring); refused sign-ins count against the
//! same per-source limit as the API's bearer check (`authlimit`). Every
//! state-changing request is a POST carrying the session's CSRF token
//! (`Action`). Every page is sent with a strict Content-Security-Policy (no
//! inline script or style) whose `frame-ancestors` are the origins in
//! `server.toml`'s `console_frame_ancestors`.
//!
//! Actions call the fleet core's functions (`Fleet::*`, the ones the admin
//! API calls) with the signed-in admin's name, so there is one code path and
//! one audit trail for both.

mod diff;
mod pages;
mod session;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use serde::de::DeserializeOwned;

use crate::http::{ApiError, ConnInfo, Shared, BATCH_BODY_BYTES};
use muster_shared::wire::MAX_BODY_BYTES;
pub use session::{Sessions, SESSION_TTL};

/// The session cookie's name.
pub const COOKIE: &str = "muster_session";

/// What the console keeps beside the app: sessions and its CSP header.
pub struct Console {
    pub sessions: Sessions,
    csp: HeaderValue,
}

const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("templates/base.html")),
    ("signin.html", include_str!("templates/signin.html")),
    ("overview.html", include_str!("templates/overview.html")),
    ("enroll.html", include_str!("templates/enroll.html")),
    ("enrolled.html", include_str!("templates/enrolled.html")),
    (
        "token_hosts.html",
        include_str!("templates/token_hosts.html"),
    ),
    ("hosts.html", include_str!("templates/hosts.html")),
    ("host.html", include_str!("templates/host.html")),
    ("batches.html", include_str!("templates/batches.html")),
    ("batch.html", include_str!("templates/batch.html")),
    ("batch_rows.html", include_str!("templates/batch_rows.html")),
    ("imported.html", include_str!("templates/imported.html")),
    ("tokens.html", include_str!("templates/tokens.html")),
    ("audit.html", include_str!("templates/audit.html")),
    ("error.html", include_str!("templates/error.html")),
];

const SCRIPT: &str = include_str!("assets/console.js");
const STYLE: &str = include_str!("assets/console.css");

fn env() -> &'static minijinja::Environment<'static> {
    static ENV: std::sync::OnceLock<minijinja::Environment<'static>> = std::sync::OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = minijinja::Environment::new();
        for (name, text) in TEMPLATES {
            env.add_template(name, text)
                .unwrap_or_else(|e| panic!("console template {name}: {e}"));
        }
        env.add_filter("ago", pages::ago);
        env.add_filter("time", pages::time_filter);
        env.add_filter("urlencode", |s: String| pages::url_encode(&s));
        env.add_filter("short", |s: String| s.chars().take(12).collect::<String>());
        env
    })
}

/// Renders a template; a template error is a bug, logged and shown as 500.
pub fn render(name: &str, ctx: minijinja::Value) -> Response {
    match env().get_template(name).and_then(|t| t.render(ctx)) {
        Ok(html) => html_response(StatusCode::OK, html),
        Err(e) => {
            tracing::error!(template = name, error = %format!("{e:#}"), "console template failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal error; the server log has the details",
            )
                .into_response()
        }
    }
}

impl Console {
    pub fn new(frame_ancestors: &[String]) -> Console {
        let ancestors = if frame_ancestors.is_empty() {
            "'none'".to_string()
        } else {
            frame_ancestors.join(" ")
        };
        let csp = format!(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
             connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors {ancestors}"
        );
        Console {
            sessions: Sessions::default(),
            csp: HeaderValue::from_str(&csp).expect("CSP is ASCII (origins are checked)"),
        }
    }
}

fn html_response(status: StatusCode, html: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        html,
    )
        .into_response()
}

/// The console's routes, merged into the admin router.
pub fn router(frame_ancestors: &[String]) -> Router<Shared> {
    let console = Arc::new(Console::new(frame_ancestors));
    Router::new()
        .route("/", get(pages::overview))
        .route("/signin", get(pages::signin_form).post(pages::signin))
        .route("/signout", post(pages::signout))
        .route("/enroll", get(pages::enroll_form).post(pages::enroll))
        .route("/enroll/{token}/hosts", get(pages::token_hosts))
        .route("/hosts", get(pages::hosts))
        .route("/hosts/{id}", get(pages::host))
        .route("/hosts/{id}/labels", post(pages::edit_labels))
        .route("/hosts/{id}/decommission", post(pages::decommission))
        .route("/hosts/{id}/replace", post(pages::replace))
        .route(
            "/batches",
            get(pages::batches)
                .post(pages::import)
                .layer(DefaultBodyLimit::max(BATCH_BODY_BYTES * 3)),
        )
        .route("/batches/{id}", get(pages::batch))
        .route("/batches/{id}/rows", get(pages::batch_rows))
        .route("/batches/{id}/retry", post(pages::retry))
        .route("/tokens", get(pages::tokens))
        .route("/tokens/{id}/revoke", post(pages::revoke))
        .route("/audit", get(pages::audit))
        .route("/static/console.js", get(script))
        .route("/static/console.css", get(style))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn(headers))
        .layer(Extension(console))
}

async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}

fn asset(kind: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// Security headers on every console response.
async fn headers(
    Extension(console): Extension<Arc<Console>>,
    req: Request,
    next: Next,
) -> Response {
    let started = std::time::Instant::now();
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    // How long the server took (the benchmark reads it).
    if let Ok(v) = HeaderValue::from_str(&format!(
        "render;dur={:.1}",
        started.elapsed().as_secs_f64() * 1000.0
    )) {
        h.insert("server-timing", v);
    }
    h.insert(header::CONTENT_SECURITY_POLICY, console.csp.clone());
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        header::STRICT_TRANSPORT_SECURITY,
        HeaderValue::from_static("max-age=31536000"),
    );
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    resp
}

/// The signed-in admin of a console request.
#[derive(Clone, Debug)]
pub struct User {
    pub name: String,
    pub csrf: String,
    pub conn: ConnInfo,
}

fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Why a console request was refused.
pub enum Refusal {
    /// Not signed in: pages go to the sign-in form, fragments get 401.
    SignIn { next: String, fragment: bool },
    /// A POST without the session's CSRF token.
    Csrf,
    /// Anything an API handler refused, shown as a page.
    Api(ApiError),
}

impl From<ApiError> for Refusal {
    fn from(e: ApiError) -> Self {
        Refusal::Api(e)
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::SignIn { fragment: true, .. } => {
                (StatusCode::UNAUTHORIZED, "signed out: reload the page").into_response()
            }
            Refusal::SignIn { next, .. } => {
                let to = format!("/signin?next={}", pages::url_encode(&next));
                Redirect::to(&to).into_response()
            }
            Refusal::Csrf => error_page(
                StatusCode::FORBIDDEN,
                "This form is out of date or did not come from this console (missing or wrong CSRF token). Go back, reload the page and try again.",
            ),
            Refusal::Api(e) => {
                let status = e.status();
                let mut resp = error_page(status, &e.to_string());
                if let ApiError::RateLimited { retry_after_secs } = e {
                    if let Ok(v) = HeaderValue::from_str(&retry_after_secs.to_string()) {
                        resp.headers_mut().insert(header::RETRY_AFTER, v);
                    }
                }
                resp
            }
        }
    }
}

/// A plain error page (no session needed to render it).
fn error_page(status: StatusCode, message: &str) -> Response {
    let mut resp = render(
        "error.html",
        minijinja::context! { status => status.as_u16(), message => message, user => () },
    );
    *resp.status_mut() = status;
    resp
}

impl FromRequestParts<Shared> for User {
    type Rejection = Refusal;

    async fn from_request_parts(parts: &mut Parts, _app: &Shared) -> Result<Self, Refusal> {
        let console = parts
            .extensions
            .get::<Arc<Console>>()
            .cloned()
            .ok_or_else(|| Refusal::Api(ApiError::internal("console", "no console state")))?;
        let conn = parts
            .extensions
            .get::<ConnInfo>()
            .cloned()
            .ok_or_else(|| Refusal::Api(ApiError::internal("console", "no connection info")))?;
        let fragment = parts.headers.contains_key("x-muster-fragment");
        let next = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into());
        let session = cookie_value(&parts.headers, COOKIE)
            .and_then(|id| console.sessions.get(id, std::time::Instant::now()));
        match session {
            Some(s) => Ok(User {
                name: s.admin,
                csrf: s.csrf,
                conn,
            }),
            None => Err(Refusal::SignIn { next, fragment }),
        }
    }
}

/// A state-changing console request: the signed-in admin and the form,
/// whose `csrf` field must be the session's token (checked before the rest
/// of the form is read).
pub struct Action<T> {
    pub user: User,
    pub form: T,
}

impl<T: DeserializeOwned> FromRequest<Shared> for Action<T> {
    type Rejection = Refusal;

    async fn from_request(req: Request, app: &Shared) -> Result<Self, Refusal> {
        let (mut parts, body) = req.into_parts();
        let user = User::from_request_parts(&mut parts, app).await?;
        let req = Request::from_parts(parts, body);
        let bytes = axum::body::Bytes::from_request(req, app)
            .await
            .map_err(|e| {
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    Refusal::Api(ApiError::TooLarge)
                } else {
                    Refusal::Api(ApiError::BadRequest(e.body_text()))
                }
            })?;
        let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(&bytes)
            .map_err(|e| Refusal::Api(ApiError::BadRequest(format!("malformed form: {e}"))))?;
        let given = pairs
            .iter()
            .find(|(k, _)| k == "csrf")
            .map(|(_, v)| v.as_str());
        if !given.is_some_and(|g| session::same(g, &user.csrf)) {
            tracing::warn!(admin = %user.name, "console POST refused: missing or wrong CSRF token");
            return Err(Refusal::Csrf);
        }
        let rest: Vec<(String, String)> = pairs.into_iter().filter(|(k, _)| k != "csrf").collect();
        let encoded = serde_urlencoded::to_string(&rest)
            .map_err(|e| Refusal::Api(ApiError::BadRequest(e.to_string())))?;
        let form = serde_urlencoded::from_str(&encoded)
            .map_err(|e| Refusal::Api(ApiError::BadRequest(format!("malformed form: {e}"))))?;
        Ok(Action { user, form })
    }
}
