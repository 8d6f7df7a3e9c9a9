//! The load generator's HTTP/1.1 client: one request at a time over one TLS
//! connection, just enough of the protocol for the agent's config poll and
//! enrollment (Content-Length bodies, keep-alive or `Connection: close`).
//! Hand-written rather than reqwest so that each connection carries its own
//! host's certificate and the client's own cost per request stays small next
//! to the server's.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// Largest response head or body accepted.
const MAX_RESPONSE: usize = 1 << 20;

/// One TLS connection to a server.
pub struct Conn {
    stream: TlsStream<TcpStream>,
    buf: Vec<u8>,
    /// Whether this connection's handshake resumed an earlier session.
    pub resumed: bool,
}

/// A response: status, the `ETag` header, the body, and whether the server
/// will close the connection after it.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub etag: Option<String>,
    pub body: Vec<u8>,
    pub close: bool,
}

impl Conn {
    /// TCP from `source` (any local address when `None`) to `addr`, then a
    /// TLS handshake with `tls` (which carries the client certificate, if
    /// any, and the session cache for resumption).
    pub async fn connect(
        addr: SocketAddr,
        source: Option<IpAddr>,
        tls: Arc<ClientConfig>,
    ) -> io::Result<Conn> {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        if let Some(ip) = source {
            socket.bind(SocketAddr::new(ip, 0))?;
        }
        let tcp = socket.connect(addr).await?;
        tcp.set_nodelay(true)?;
        let name = ServerName::IpAddress(addr.ip().into());
        let stream = TlsConnector::from(tls).connect(name, tcp).await?;
        let resumed = stream.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
        Ok(Conn {
            stream,
            buf: Vec::with_capacity(4096),
            resumed,
        })
    }

    /// Sends `request` (a whole HTTP/1.1 request, head and body) and reads
    /// one response.
    pub async fn send(&mut self, request: &[u8]) -> io::Result<Response> {
        self.stream.write_all(request).await?;
        self.stream.flush().await?;
        self.read_response().await
    }

    async fn read_response(&mut self) -> io::Result<Response> {
        let head_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i + 4;
            }
            if self.buf.len() > MAX_RESPONSE {
                return Err(bad("response head too long"));
            }
            self.fill().await?;
        };
        let head = std::str::from_utf8(&self.buf[..head_end])
            .map_err(|_| bad("response head is not UTF-8"))?;
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse::<u16>().ok())
            .ok_or_else(|| bad("no status line"))?;
        let (mut length, mut etag, mut close) = (0usize, None, false);
        for line in lines {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = value.parse().map_err(|_| bad("bad Content-Length"))?;
            } else if name.eq_ignore_ascii_case("etag") {
                etag = Some(value.to_string());
            } else if name.eq_ignore_ascii_case("connection") {
                close = value.eq_ignore_ascii_case("close");
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                return Err(bad("chunked responses are not supported"));
            }
        }
        if length > MAX_RESPONSE {
            return Err(bad("response body too long"));
        }
        while self.buf.len() < head_end + length {
            self.fill().await?;
        }
        let body = self.buf[head_end..head_end + length].to_vec();
        self.buf.drain(..head_end + length);
        Ok(Response {
            status,
            etag,
            body,
            close,
        })
    }

    async fn fill(&mut self) -> io::Result<()> {
        let mut chunk = [0u8; 8192];
        let n = self.stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the server closed the connection",
            ));
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

/// `GET path` with `If-None-Match: etag` when given; `Connection: close`
/// when `close`.
pub fn get(addr: SocketAddr, path: &str, etag: Option<&str>, close: bool) -> Vec<u8> {
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: bench-fleet\r\n");
    if let Some(tag) = etag {
        req.push_str(&format!("If-None-Match: {tag}\r\n"));
    }
    if close {
        req.push_str("Connection: close\r\n");
    }
    req.push_str("\r\n");
    req.into_bytes()
}

/// `POST path` with a JSON body, `Connection: close`.
pub fn post_json(addr: SocketAddr, path: &str, body: &[u8]) -> Vec<u8> {
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: bench-fleet\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    req
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_carry_the_etag_and_close_only_when_asked() {
        let addr: SocketAddr = "127.0.0.1:8443".parse().expect("addr");
        let keep = String::from_utf8(get(addr, "/p", Some("\"abc\""), false)).expect("utf8");
        assert!(keep.starts_with("GET /p HTTP/1.1\r\nHost: 127.0.0.1:8443\r\n"));
        assert!(keep.contains("If-None-Match: \"abc\"\r\n"));
        assert!(!keep.contains("Connection"));
        assert!(keep.ends_with("\r\n\r\n"));
        let close = String::from_utf8(get(addr, "/p", None, true)).expect("utf8");
        assert!(close.contains("Connection: close\r\n") && !close.contains("If-None"));
        let post = post_json(addr, "/e", b"{}");
        assert!(post.ends_with(b"Content-Length: 2\r\nConnection: close\r\n\r\n{}"));
    }
}
