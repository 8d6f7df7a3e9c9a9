//! Agent routes, all behind the client certificate: the host id comes from
//! the certificate the TLS layer verified, never from the request.

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use muster_shared::wire::{AgentConfig, ApplyResult, RenewRequest, RenewResponse, StatusReport};

use super::{blocking, unix_now, ApiError, ApiJson, ConnInfo, Shared};
use crate::store::{AuditEntry, CertLookup};
use crate::tls::fingerprint;

/// Longest error text kept from an agent report.
const MAX_ERROR_LEN: usize = 4096;

/// The host an authenticated agent request comes from.
pub struct AgentHost(pub String);

impl FromRequestParts<Shared> for AgentHost {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Shared) -> Result<Self, ApiError> {
        let cert = parts
            .extensions
            .get::<ConnInfo>()
            .and_then(|c| c.client_cert.clone())
            .ok_or(ApiError::Unauthenticated(
                "this route needs the agent's client certificate",
            ))?;
        let fp = fingerprint(&cert);
        match blocking(app, move |app| app.store.host_for_cert(&fp, unix_now())).await? {
            Ok(CertLookup::Host(id)) => Ok(AgentHost(id)),
            Ok(CertLookup::Revoked) => Err(ApiError::Revoked),
            Ok(CertLookup::Expired) => Err(ApiError::Forbidden(
                "this agent's certificate has expired: re-enroll with a new token",
            )),
            Ok(CertLookup::Unknown) => Err(ApiError::Unauthenticated(
                "this client certificate belongs to no enrolled host",
            )),
            Err(e) => Err(ApiError::internal("certificate lookup failed", e)),
        }
    }
}

fn etag(hash: &str) -> String {
    format!("\"{hash}\"")
}

/// Whether an `If-None-Match` header names `hash` (quoted or not, weak or not).
fn matches_etag(headers: &HeaderMap, hash: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|tag| tag.trim().trim_start_matches("W/").trim_matches('"'))
        .any(|tag| tag == hash || tag == "*")
}

/// `GET /v1/agent/config`: the host's current config, or 304 when the agent
/// already has it.
pub async fn config(
    State(app): State<Shared>,
    AgentHost(host_id): AgentHost,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let host = blocking(&app, move |app| app.store.touch_host(&host_id, unix_now()))
        .await?
        .map_err(|e| ApiError::internal("host lookup failed", e))?
        .ok_or(ApiError::Forbidden("this host no longer exists"))?;
    let tag = HeaderValue::from_str(&etag(&host.rendered_hash))
        .map_err(|e| ApiError::internal("bad etag", e))?;
    if matches_etag(&headers, &host.rendered_hash) {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, tag)]).into_response());
    }
    let body = AgentConfig {
        hash: host.rendered_hash,
        content: host.config,
        checkin_interval_secs: app.settings.checkin_interval.as_secs(),
    };
    Ok(([(header::ETAG, tag)], Json(body)).into_response())
}

fn check_report(report: &mut StatusReport) -> Result<(), ApiError> {
    let hex64 = report.hash.len() == 64 && report.hash.bytes().all(|b| b.is_ascii_hexdigit());
    if !hex64 {
        return Err(ApiError::BadRequest("hash must be 64 hex digits".into()));
    }
    if let Some(v) = &report.alloy_version {
        let ok = v.len() <= 64 && v.chars().all(|c| c.is_ascii_graphic());
        if !ok {
            return Err(ApiError::BadRequest(
                "alloy_version must be at most 64 printable characters".into(),
            ));
        }
    }
    if let Some(error) = &mut report.error {
        if error.len() > MAX_ERROR_LEN {
            let mut cut = MAX_ERROR_LEN;
            while !error.is_char_boundary(cut) {
                cut -= 1;
            }
            error.truncate(cut);
            error.push_str(" [truncated]");
        }
    }
    Ok(())
}

/// `POST /v1/agent/status`: the result of an apply.
pub async fn status(
    State(app): State<Shared>,
    AgentHost(host_id): AgentHost,
    ApiJson(mut report): ApiJson<StatusReport>,
) -> Result<StatusCode, ApiError> {
    check_report(&mut report)?;
    match report.result {
        ApplyResult::Applied => {
            tracing::info!(host = %host_id, hash = %report.hash, "agent applied config")
        }
        ApplyResult::Failed => tracing::warn!(
            host = %host_id,
            hash = %report.hash,
            error = report.error.as_deref().unwrap_or(""),
            "agent failed to apply config"
        ),
    }
    blocking(&app, move |app| {
        app.store.record_status(&host_id, &report, unix_now())
    })
    .await?
    .map_err(|e| ApiError::internal("cannot record status", e))?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/agent/renew`: a new certificate for the same host.
pub async fn renew(
    State(app): State<Shared>,
    Extension(conn): Extension<ConnInfo>,
    AgentHost(host_id): AgentHost,
    ApiJson(req): ApiJson<RenewRequest>,
) -> Result<Json<RenewResponse>, ApiError> {
    let id = host_id.clone();
    let issued = blocking(&app, move |app| {
        let now = std::time::SystemTime::now();
        let cert = app
            .ca
            .sign_csr(&req.csr_pem, &id, now, app.settings.cert_validity)
            .map_err(|e| {
                if e.is_bad_request() {
                    ApiError::BadRequest(format!("certificate signing request refused: {e}"))
                } else {
                    ApiError::internal("cannot sign renewed certificate", e)
                }
            })?;
        app.store
            .add_cert(&id, &cert, unix_now())
            .map_err(|e| ApiError::internal("cannot store renewed certificate", e))?;
        Ok::<_, ApiError>(cert)
    })
    .await??;
    tracing::info!(host = %host_id, not_after = issued.not_after, "renewed certificate");
    app.audit(AuditEntry {
        at: unix_now(),
        actor: &host_id,
        action: "renew",
        target: Some(&host_id),
        outcome: "accepted",
        detail: Some(&issued.serial),
        source: Some(&conn.peer.ip().to_string()),
    });
    Ok(Json(RenewResponse {
        certificate_pem: issued.pem,
        ca_pem: app.ca.cert_pem().to_string(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_none_match_accepts_quoted_weak_and_lists() {
        let hash = "ab".repeat(32);
        for value in [
            format!("\"{hash}\""),
            hash.clone(),
            format!("W/\"{hash}\""),
            format!("\"x\", \"{hash}\""),
        ] {
            let mut h = HeaderMap::new();
            h.insert(
                header::IF_NONE_MATCH,
                HeaderValue::from_str(&value).expect("ascii"),
            );
            assert!(matches_etag(&h, &hash), "{value}");
        }
        let mut h = HeaderMap::new();
        h.insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"other\""));
        assert!(!matches_etag(&h, &hash));
        assert!(!matches_etag(&HeaderMap::new(), &hash));
    }

    #[test]
    fn reports_are_checked_and_long_errors_cut() {
        let mut r = StatusReport {
            hash: "a".repeat(64),
            result: ApplyResult::Failed,
            error: Some("é".repeat(5000)),
            alloy_version: Some("v1.10.0".into()),
        };
        check_report(&mut r).expect("valid");
        let error = r.error.clone().expect("kept");
        assert!(error.len() <= MAX_ERROR_LEN + 20 && error.ends_with("[truncated]"));
        r.hash = "../x".into();
        assert!(check_report(&mut r).is_err());
    }
}
