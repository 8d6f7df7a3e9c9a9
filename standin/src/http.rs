//! The stand-in's `alloy run`: the loaded config (kept on a failed reload, like
//! Alloy), the routes Muster and Prometheus use, and a minimal HTTP/1.1 server
//! (one request per connection, `Connection: close`).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::check;
use crate::exposition;

/// Requests larger than this (head plus body) are refused.
const MAX_REQUEST: usize = 64 * 1024;
/// A client that sends nothing for this long is dropped.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
const COMPONENT_PREFIX: &str = "/api/v0/component/";

/// The running stand-in: where its config lives and what it last loaded.
pub struct App {
    config_path: PathBuf,
    version: String,
    hostname: String,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Component ids of the exporters of the last good config; `None` until
    /// the first load succeeds.
    exporters: Option<BTreeSet<String>>,
    last_load_ok: bool,
    load_failures: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

impl App {
    pub fn new(config_path: PathBuf, version: String, hostname: String) -> App {
        App {
            config_path,
            version,
            hostname,
            state: Mutex::new(State::default()),
        }
    }

    /// Reads and loads the config file ([`check::load`]: validate, then build
    /// the components); swaps it in when good, keeps the last good one
    /// otherwise. The error names the file and reads as Alloy's does.
    pub fn reload(&self) -> Result<(), String> {
        let path = self.config_path.display();
        let loaded = std::fs::read_to_string(&self.config_path)
            .map_err(|e| format!("reading config path \"{path}\": {e}"))
            .and_then(|text| {
                check::load(&text).map_err(|diags| {
                    let lines: Vec<String> = diags.iter().map(|d| format!("{path}:{d}")).collect();
                    format!("error during the initial load: {}", lines.join("\n"))
                })
            });
        let mut state = self.state();
        match loaded {
            Ok(config) => {
                state.exporters = Some(config.exporters().collect());
                state.last_load_ok = true;
                Ok(())
            }
            Err(e) => {
                state.last_load_ok = false;
                state.load_failures += 1;
                Err(e)
            }
        }
    }

    /// Answers one request. Only `/-/reload` has a side effect. It follows
    /// Alloy's handler (grafana/alloy `internal/service/http/http.go`): GET or
    /// POST runs the reload; a failure answers 400 with the error text
    /// (`http.Error`) and keeps the last good config; success answers 200
    /// "config reloaded"; other methods get 405.
    pub fn respond(&self, method: &str, path: &str) -> Response {
        let path = path.split('?').next().unwrap_or_default();
        let reload = path == "/-/reload";
        if method != "GET" && !(reload && method == "POST") {
            return text(405, "method not allowed\n");
        }
        if reload {
            return match self.reload() {
                Ok(()) => text(200, "config reloaded\n"),
                Err(e) => {
                    eprintln!("level=error msg=\"failed to reload config\" err={e:?}");
                    text(400, &format!("{e}\n"))
                }
            };
        }
        let state = self.state();
        match path {
            "/-/ready" if state.exporters.is_some() => text(200, "Alloy is ready.\n"),
            "/-/ready" => text(503, "Alloy is not ready.\n"),
            "/-/healthy" => text(200, "All Alloy components are healthy.\n"),
            "/metrics" => metrics(exposition::alloy_metrics(
                &self.version,
                state.last_load_ok,
                state.load_failures,
            )),
            _ => match path
                .strip_prefix(COMPONENT_PREFIX)
                .and_then(|rest| rest.strip_suffix("/metrics"))
            {
                Some(id) if state.exporters.as_ref().is_some_and(|e| e.contains(id)) => {
                    metrics(exposition::component_metrics(id, &self.hostname))
                }
                Some(id) => text(404, &format!("component {id:?} not found\n")),
                None => text(404, "404 page not found\n"),
            },
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // The state stays consistent even if a holder panicked: every update
        // is a plain assignment.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn text(status: u16, body: &str) -> Response {
    Response {
        status,
        content_type: "text/plain; charset=utf-8",
        body: body.to_string(),
    }
}

fn metrics(body: String) -> Response {
    Response {
        status: 200,
        content_type: "text/plain; version=0.0.4; charset=utf-8",
        body,
    }
}

/// Accepts connections until the task is dropped.
pub async fn serve(listener: TcpListener, app: Arc<App>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let app = Arc::clone(&app);
                tokio::spawn(async move {
                    if let Err(e) = handle(stream, &app).await {
                        eprintln!("level=debug msg=\"connection failed\" err=\"{e}\"");
                    }
                });
            }
            Err(e) => {
                eprintln!("level=warn msg=\"accept failed\" err=\"{e}\"");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn handle(mut stream: TcpStream, app: &App) -> std::io::Result<()> {
    let response = match tokio::time::timeout(READ_TIMEOUT, read_request(&mut stream)).await {
        Ok(Ok(Some((method, path)))) => app.respond(&method, &path),
        Ok(Ok(None)) => text(400, "bad request\n"),
        Ok(Err(e)) => return Err(e),
        Err(_) => return Ok(()),
    };
    stream.write_all(&encode(&response)).await?;
    stream.shutdown().await
}

/// Reads one request (head and `Content-Length` body) and returns its method
/// and target; `None` when it is not HTTP/1.x or too large.
async fn read_request(stream: &mut TcpStream) -> std::io::Result<Option<(String, String)>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos + 4;
        }
        if buf.len() > MAX_REQUEST {
            return Ok(None);
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let Some((method, path, body_len)) = parse_head(&buf[..head_end]) else {
        return Ok(None);
    };
    if body_len > MAX_REQUEST {
        return Ok(None);
    }
    // Drain the body so closing the socket does not reset the connection
    // before the client reads the answer.
    let mut remaining = body_len.saturating_sub(buf.len() - head_end);
    while remaining > 0 {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        remaining = remaining.saturating_sub(n);
    }
    Ok(Some((method, path)))
}

/// Method, target and `Content-Length` of a request head.
pub fn parse_head(head: &[u8]) -> Option<(String, String, usize)> {
    let head = std::str::from_utf8(head).ok()?;
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next()?.split(' ');
    let (method, path, version) = (
        request_line.next()?,
        request_line.next()?,
        request_line.next()?,
    );
    if !version.starts_with("HTTP/1.") || !path.starts_with('/') {
        return None;
    }
    let mut body_len = 0;
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            if name.trim().eq_ignore_ascii_case("content-length") {
                body_len = value.trim().parse().ok()?;
            }
        }
    }
    Some((method.to_string(), path.to_string(), body_len))
}

pub fn encode(response: &Response) -> Vec<u8> {
    let reason = match response.status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Service Unavailable",
    };
    let mut out = format!(
        "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        response.status,
        response.content_type,
        response.body.len()
    )
    .into_bytes();
    out.extend_from_slice(response.body.as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app_with(config: &str) -> (tempfile::TempDir, App) {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("config.alloy");
        std::fs::write(&path, config).expect("write config");
        let app = App::new(path, "v1.10.0".into(), "host-a".into());
        (dir, app)
    }

    #[test]
    fn not_ready_until_a_config_loads() {
        let (_dir, app) = app_with("prometheus.exporter.unix \"default\" { }\n");
        assert_eq!(app.respond("GET", "/-/ready").status, 503);
        app.reload().expect("loads");
        assert_eq!(app.respond("GET", "/-/ready").body, "Alloy is ready.\n");
    }

    #[test]
    fn serves_metrics_only_for_loaded_exporters() {
        let (_dir, app) = app_with("prometheus.exporter.unix \"default\" { }\nlogging { }\n");
        app.reload().expect("loads");
        let ok = app.respond(
            "GET",
            "/api/v0/component/prometheus.exporter.unix.default/metrics",
        );
        assert_eq!(ok.status, 200);
        assert!(ok.body.contains("nodename=\"host-a\""));
        for path in [
            "/api/v0/component/prometheus.exporter.unix.other/metrics",
            "/api/v0/component/logging/metrics",
            "/nope",
        ] {
            assert_eq!(app.respond("GET", path).status, 404, "{path}");
        }
        assert_eq!(app.respond("DELETE", "/-/ready").status, 405);
    }

    #[test]
    fn failed_reload_keeps_the_last_good_config() {
        let (dir, app) = app_with("prometheus.exporter.unix \"a\" { }\n");
        app.reload().expect("loads");
        std::fs::write(
            dir.path().join("config.alloy"),
            "prometheus.exporter.unix \"b\" {\n",
        )
        .expect("write");
        let r = app.respond("POST", "/-/reload");
        assert_eq!(r.status, 400);
        assert!(
            r.body.contains("config.alloy:2:1: expected }, got EOF"),
            "{}",
            r.body
        );
        assert_eq!(
            app.respond(
                "GET",
                "/api/v0/component/prometheus.exporter.unix.a/metrics"
            )
            .status,
            200
        );
        assert!(app
            .respond("GET", "/metrics")
            .body
            .contains("alloy_config_last_load_successful 0\n"));
    }

    #[test]
    fn parses_request_heads() {
        let head = b"POST /-/reload?x=1 HTTP/1.1\r\nHost: a\r\ncontent-length: 12\r\n\r\n";
        assert_eq!(
            parse_head(head),
            Some(("POST".into(), "/-/reload?x=1".into(), 12))
        );
        assert_eq!(parse_head(b"GET / SPDY/3\r\n\r\n"), None);
        assert_eq!(parse_head(b"garbage\r\n\r\n"), None);
    }
}
