//! Synthetic hosts: each a distinct machine id, valid facts, a source
//! address of its own on loopback (127.1.0.0/16 and up) that its scrape
//! address names, and a real ECDSA key whose CSR is enrolled over real TLS,
//! as `muster-agent enroll` does (the agent library's CSR and TLS setups).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use muster_agent::identity::{csr_pem, Enrolled, Identity};
use muster_agent::tls::{mutual_tls, pinned_tls, PinVerifier};
use muster_shared::facts::Facts;
use muster_shared::pin::Pin;
use muster_shared::wire::{EnrollRequest, EnrollResponse, ENROLL_PATH};
use rcgen::KeyPair;
use rustls::client::Resumption;
use rustls::ClientConfig;

use super::http::{post_json, Conn};

/// The loopback address host `i` connects from: 127.1.0.0 + i.
pub fn source_addr(i: usize) -> IpAddr {
    let n = (127u32 << 24) + (1 << 16) + i as u32;
    IpAddr::V4(Ipv4Addr::from(n))
}

/// Host `i`'s hostname (and host id).
pub fn hostname(i: usize) -> String {
    format!("fleet-{i:06}")
}

/// Host `i`'s machine id: 32 hex digits, distinct per `i`.
pub fn machine_id(i: usize) -> String {
    format!("{:032x}", 0xf1ee_7000_0000_0000u128 + i as u128)
}

/// What an agent on a Debian 12 host with no detected services reports.
pub fn facts(i: usize) -> Facts {
    Facts {
        hostname: hostname(i),
        machine_id: machine_id(i),
        os: "linux".into(),
        arch: "x86_64".into(),
        os_id: Some("debian".into()),
        os_version: Some("12".into()),
        kernel: Some("6.1.0-bench".into()),
        scrape_address: format!("{}:12345", source_addr(i)),
        agent_version: env!("CARGO_PKG_VERSION").into(),
        ..Facts::default()
    }
}

/// An enrolled host kept for polling: its mutual-TLS setup (certificate,
/// key, and its own session cache) and the ETag of its config.
pub struct PollHost {
    pub index: usize,
    pub host_id: String,
    pub source: IpAddr,
    pub tls: Arc<ClientConfig>,
    pub etag: Option<String>,
}

/// Enrolls hosts with one server: where it listens, the TLS that trusts it
/// by its pin, and enrollment tokens.
pub struct Enroller {
    addr: SocketAddr,
    pinned: Arc<ClientConfig>,
    tokens: Vec<String>,
    /// Enrollments each token allows.
    uses_per_token: usize,
}

impl Enroller {
    /// `tokens[k]` enrolls hosts `k * uses_per_token ..(k + 1) * uses_per_token`.
    pub fn new(addr: SocketAddr, pin: &str, tokens: Vec<String>, uses_per_token: usize) -> Self {
        crate::install_crypto();
        let pin: Pin = pin.parse().expect("the pin init printed parses");
        let mut tls = pinned_tls(Arc::new(PinVerifier::new(pin))).expect("pinned TLS");
        // Every enrolling agent is a new process: a full handshake each.
        tls.resumption = Resumption::disabled();
        Enroller {
            addr,
            pinned: Arc::new(tls),
            tokens,
            uses_per_token,
        }
    }

    /// Enrolls host `i`: a fresh key, a CSR, `POST /v1/enroll` on a new TLS connection from
    /// the host's source address. Returns the host ready to poll when `keep`.
    pub async fn enroll(&self, i: usize, keep: bool) -> Result<Option<PollHost>, String> {
        let key = KeyPair::generate().map_err(|e| format!("key: {e}"))?;
        let request = EnrollRequest {
            token: self.tokens[i / self.uses_per_token].clone(),
            csr_pem: csr_pem(&key, &hostname(i)).map_err(|e| e.to_string())?,
            facts: facts(i),
            idempotency_key: format!("bench-fleet-{i}"),
            labels: Default::default(),
        };
        let body = serde_json::to_vec(&request).expect("JSON");
        let source = source_addr(i);
        let mut conn = Conn::connect(self.addr, Some(source), Arc::clone(&self.pinned))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let resp = conn
            .send(&post_json(self.addr, ENROLL_PATH, &body))
            .await
            .map_err(|e| format!("enroll: {e}"))?;
        if resp.status != 200 {
            return Err(format!(
                "enroll {}: HTTP {} {}",
                hostname(i),
                resp.status,
                String::from_utf8_lossy(&resp.body)
            ));
        }
        if !keep {
            return Ok(None);
        }
        let answer: EnrollResponse =
            serde_json::from_slice(&resp.body).map_err(|e| format!("enroll answer: {e}"))?;
        let enrolled = Enrolled {
            identity: Identity {
                host_id: answer.host_id.clone(),
                server: String::new(),
                enrolled_at: 0,
            },
            key,
            cert_pem: answer.certificate_pem,
            ca_pem: answer.ca_pem,
        };
        let tls = mutual_tls(&enrolled).map_err(|e| e.to_string())?;
        Ok(Some(PollHost {
            index: i,
            host_id: answer.host_id,
            source,
            tls: Arc::new(tls),
            etag: None,
        }))
    }
}

/// What [`enroll_many`] measured.
pub struct EnrollRun {
    /// Hosts kept for polling, in index order.
    pub kept: Vec<PollHost>,
    /// When each enrollment completed, from the start, in completion order.
    pub done_at: Vec<Duration>,
    pub errors: Vec<String>,
}

impl EnrollRun {
    /// Enrollments per second over the last `last` enrollments (all of
    /// them when fewer): completions / time between the first of them and
    /// the last.
    pub fn rate_of_last(&self, last: usize) -> f64 {
        let n = self.done_at.len();
        if n < 2 {
            return 0.0;
        }
        let first = n.saturating_sub(last.saturating_add(1));
        let span = (self.done_at[n - 1] - self.done_at[first]).as_secs_f64();
        (n - 1 - first) as f64 / span.max(1e-9)
    }
}

/// Enrolls hosts `range` with `concurrency` enrollments in flight, keeping
/// (for polling) those with index `>= keep_from`; stops taking new hosts at
/// `until` when given. Must run inside a tokio runtime.
pub async fn enroll_many(
    enroller: Arc<Enroller>,
    range: std::ops::Range<usize>,
    concurrency: usize,
    keep_from: usize,
    until: Option<Instant>,
) -> EnrollRun {
    let next = Arc::new(AtomicUsize::new(range.start));
    let start = Instant::now();
    let run = Arc::new(Mutex::new(EnrollRun {
        kept: Vec::new(),
        done_at: Vec::new(),
        errors: Vec::new(),
    }));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let (enroller, next, run) = (Arc::clone(&enroller), Arc::clone(&next), Arc::clone(&run));
        let end = range.end;
        tasks.spawn(async move {
            loop {
                if until.is_some_and(|u| Instant::now() >= u) {
                    return;
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= end {
                    return;
                }
                let result = enroller.enroll(i, i >= keep_from).await;
                let mut run = run.lock().expect("enroll results");
                match result {
                    Ok(kept) => {
                        run.done_at.push(start.elapsed());
                        run.kept.extend(kept);
                    }
                    Err(e) => run.errors.push(e),
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let mut run = Arc::try_unwrap(run)
        .ok()
        .expect("every enrolling task ended")
        .into_inner()
        .expect("enroll results");
    run.kept.sort_by_key(|h| h.index);
    run
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_host_has_its_own_valid_identity() {
        assert_eq!(source_addr(0).to_string(), "127.1.0.0");
        assert_eq!(source_addr(70_000).to_string(), "127.2.17.112");
        assert_eq!(machine_id(5), "0000000000000000f1ee700000000005");
        assert_ne!(machine_id(1), machine_id(2));
        for i in [0, 1, 149_999] {
            let f = facts(i);
            f.check().expect("valid facts");
            assert!(f
                .scrape_address
                .starts_with(&format!("{}:", source_addr(i))));
        }
    }

    #[test]
    fn enroll_rate_counts_the_last_enrollments_only() {
        let run = EnrollRun {
            kept: Vec::new(),
            done_at: [0, 10, 20, 1020, 1520].map(Duration::from_millis).to_vec(),
            errors: Vec::new(),
        };
        // The last 2: 2 enrollments between 20 ms and 1,520 ms.
        assert!((run.rate_of_last(2) - 2.0 / 1.5).abs() < 1e-9);
        assert!((run.rate_of_last(usize::MAX) - 4.0 / 1.52).abs() < 1e-9);
    }
}
