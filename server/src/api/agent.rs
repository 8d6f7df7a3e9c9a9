//! Agent routes, all behind the client certificate: the host id comes from
//! the certificate the TLS layer verified, never from the request.

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use muster_shared::wire::{
    self, AgentConfig, ApplyResult, RenewRequest, RenewResponse, StatusReport,
};

use super::{blocking, unix_now, ApiError, ApiJson, ConnInfo, Shared};
use crate::fleet::AgentCert;
use crate::tls::fingerprint;

/// The certificate an authenticated agent request came with, and its host.
pub struct AgentHost(pub AgentCert);

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
        // The poll index answers without the database; only a certificate
        // it cannot decide on (revoked, a renewal's first use) goes to the
        // store, on a blocking thread.
        if let Some(known) = app.fleet().authenticate_cached(&fp, unix_now()) {
            return Ok(AgentHost(known?));
        }
        let cert = blocking(app, move |app| app.fleet().authenticate(&fp, unix_now())).await??;
        Ok(AgentHost(cert))
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
/// already has it. The 304 is decided from the poll index and marks the
/// host seen in memory: it never waits on (or fails with) the database.
pub async fn config(
    State(app): State<Shared>,
    AgentHost(cert): AgentHost,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if matches_etag(&headers, &cert.rendered_hash) {
        app.fleet().seen(&cert.host_id, unix_now());
        let tag = HeaderValue::from_str(&etag(&cert.rendered_hash))
            .map_err(|e| ApiError::internal("bad etag", e))?;
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, tag)]).into_response());
    }
    let host = blocking(&app, move |app| {
        app.fleet().config(&cert.host_id, unix_now())
    })
    .await??;
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

/// `POST /v1/agent/status`: the result of an apply.
pub async fn status(
    State(app): State<Shared>,
    AgentHost(cert): AgentHost,
    ApiJson(report): ApiJson<StatusReport>,
) -> Result<StatusCode, ApiError> {
    let host_id = cert.host_id;
    match report.result {
        ApplyResult::Applied => {
            tracing::info!(host = %host_id, hash = %report.hash, "agent applied config")
        }
        ApplyResult::Failed => tracing::warn!(
            host = %host_id,
            hash = %report.hash,
            error = report.error.as_deref().map(wire::clean_status_error).unwrap_or_default(),
            "agent failed to apply config"
        ),
    }
    blocking(&app, move |app| {
        app.fleet().report_status(&host_id, &report, unix_now())
    })
    .await??;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/agent/renew`: a new certificate for the same host and key,
/// inside the renewal window.
pub async fn renew(
    State(app): State<Shared>,
    Extension(conn): Extension<ConnInfo>,
    AgentHost(cert): AgentHost,
    ApiJson(req): ApiJson<RenewRequest>,
) -> Result<Json<RenewResponse>, ApiError> {
    let source = conn.peer.ip().to_canonical().to_string();
    let (host_id, issued) = blocking(&app, move |app| {
        app.fleet()
            .renew(&cert.fingerprint, &req.csr_pem, &source, unix_now())
    })
    .await??;
    tracing::info!(host = %host_id, not_after = issued.not_after, "renewed certificate");
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
}
