//! Open-loop config polls: each host's requests are scheduled on a clock
//! (host `j` of `H` at offered rate `R` polls at `t0 + (j + k·H) / R`) and
//! latency is measured from the scheduled time, not from when the request
//! went out, so a server that falls behind shows its queueing instead of
//! slowing the load down (no coordinated omission). Each host polls over its
//! own TLS connection with its own certificate, as the agent's config poll
//! with `If-None-Match`, kept alive between polls or a new connection each
//! time (resuming its TLS session when the server allows).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use muster_shared::wire::CONFIG_PATH;

use super::hosts::PollHost;
use super::http::{get, Conn};

/// A poll not answered within this is an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// How each poll reaches the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// One connection per host, kept open between polls.
    KeptAlive,
    /// A new TLS connection per poll (resumed when the server allows),
    /// closed after the answer.
    Reconnect,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::KeptAlive => "kept-alive",
            Mode::Reconnect => "reconnecting",
        }
    }
}

/// A polling host and its open connection, if any.
pub struct Slot {
    pub host: PollHost,
    conn: Option<Conn>,
}

impl Slot {
    pub fn new(host: PollHost) -> Slot {
        Slot { host, conn: None }
    }

    /// Drops the open connection (a new server, or another mode).
    pub fn disconnect(&mut self) {
        self.conn = None;
    }
}

/// What one phase measured.
#[derive(Default)]
pub struct PhaseResult {
    pub offered: f64,
    /// From the first scheduled poll to the last answer.
    pub elapsed: Duration,
    /// 304 answers.
    pub not_modified: usize,
    /// 200 answers (the config changed: the host takes the new ETag).
    pub changed: usize,
    pub errors: usize,
    pub first_error: Option<String>,
    /// TLS handshakes made, and how many of them resumed a session.
    pub handshakes: usize,
    pub resumed: usize,
    /// Sorted latencies of answered polls, microseconds from the scheduled time.
    pub latencies_us: Vec<u64>,
}

impl PhaseResult {
    pub fn answered(&self) -> usize {
        self.not_modified + self.changed
    }

    /// Answered polls per second.
    pub fn achieved(&self) -> f64 {
        self.answered() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Latency at quantile `q` (0..=1), milliseconds.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        let n = self.latencies_us.len();
        if n == 0 {
            return f64::NAN;
        }
        let i = ((n as f64 * q).ceil() as usize).clamp(1, n) - 1;
        self.latencies_us[i] as f64 / 1000.0
    }

    pub fn max_ms(&self) -> f64 {
        self.latencies_us
            .last()
            .map_or(f64::NAN, |&us| us as f64 / 1000.0)
    }

    fn merge(&mut self, other: PhaseResult) {
        self.not_modified += other.not_modified;
        self.changed += other.changed;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.handshakes += other.handshakes;
        self.resumed += other.resumed;
        self.latencies_us.extend(other.latencies_us);
    }
}

/// One poll from `slot`'s host.
async fn poll(
    slot: &mut Slot,
    addr: SocketAddr,
    mode: Mode,
    r: &mut PhaseResult,
) -> Result<(), String> {
    let close = mode == Mode::Reconnect;
    let request = get(addr, CONFIG_PATH, slot.host.etag.as_deref(), close);
    // A kept-alive connection the server closed while idle is reopened once.
    for attempt in 0..2 {
        let reused = slot.conn.is_some();
        if slot.conn.is_none() {
            let conn = Conn::connect(addr, Some(slot.host.source), Arc::clone(&slot.host.tls))
                .await
                .map_err(|e| format!("connect: {e}"))?;
            r.handshakes += 1;
            r.resumed += usize::from(conn.resumed);
            slot.conn = Some(conn);
        }
        let conn = slot.conn.as_mut().expect("connected above");
        match conn.send(&request).await {
            Ok(resp) => {
                if resp.close || close {
                    slot.conn = None;
                }
                return match resp.status {
                    304 => {
                        r.not_modified += 1;
                        Ok(())
                    }
                    200 => {
                        r.changed += 1;
                        slot.host.etag = resp.etag;
                        Ok(())
                    }
                    s => Err(format!("HTTP {s}: {}", String::from_utf8_lossy(&resp.body))),
                };
            }
            Err(e) => {
                slot.conn = None;
                if !(reused && attempt == 0) {
                    return Err(format!("poll: {e}"));
                }
            }
        }
    }
    unreachable!("the loop returns on its second attempt")
}

/// How many hosts [`learn`] polls at once.
const LEARN_CONCURRENCY: usize = 16;

/// Polls once from every host, [`LEARN_CONCURRENCY`] at a time, with no
/// ETag condition: learns each host's ETag (a 200) and, kept alive, leaves
/// its connection open (learning quickly keeps the first connections from
/// sitting idle into the server's keep-alive timeout). Returns the slots
/// and the body of the first host's config (the reference serves the same
/// bytes).
pub async fn learn(
    slots: Vec<Slot>,
    addr: SocketAddr,
    mode: Mode,
) -> Result<(Vec<Slot>, Vec<u8>), String> {
    let mut groups: Vec<Vec<(usize, Slot)>> = (0..LEARN_CONCURRENCY).map(|_| Vec::new()).collect();
    for (j, slot) in slots.into_iter().enumerate() {
        groups[j % LEARN_CONCURRENCY].push((j, slot));
    }
    let mut tasks = tokio::task::JoinSet::new();
    for group in groups {
        tasks.spawn(async move {
            let mut out = Vec::with_capacity(group.len());
            for (j, mut slot) in group {
                let body = learn_one(&mut slot, addr, mode).await?;
                out.push((j, slot, body));
            }
            Ok::<_, String>(out)
        });
    }
    let mut all = Vec::new();
    while let Some(done) = tasks.join_next().await {
        all.extend(done.expect("a learning task panicked")?);
    }
    all.sort_by_key(|(j, _, _)| *j);
    let body = all.first().map(|(_, _, b)| b.clone()).unwrap_or_default();
    Ok((all.into_iter().map(|(_, s, _)| s).collect(), body))
}

async fn learn_one(slot: &mut Slot, addr: SocketAddr, mode: Mode) -> Result<Vec<u8>, String> {
    let request = get(addr, CONFIG_PATH, None, mode == Mode::Reconnect);
    if slot.conn.is_none() {
        let conn = Conn::connect(addr, Some(slot.host.source), Arc::clone(&slot.host.tls))
            .await
            .map_err(|e| format!("{}: connect: {e}", slot.host.host_id))?;
        slot.conn = Some(conn);
    }
    let conn = slot.conn.as_mut().expect("connected above");
    let resp = conn
        .send(&request)
        .await
        .map_err(|e| format!("{}: poll: {e}", slot.host.host_id))?;
    if resp.status != 200 {
        return Err(format!("{}: HTTP {}", slot.host.host_id, resp.status));
    }
    slot.host.etag = Some(resp.etag.ok_or("no ETag in a config answer")?);
    if resp.close || mode == Mode::Reconnect {
        slot.conn = None;
    }
    Ok(resp.body)
}

/// Polls at `rate` per second in all, spread over the hosts of `slots`,
/// for `duration`; returns the slots (kept-alive connections still open)
/// and the measurements.
pub async fn run(
    slots: Vec<Slot>,
    addr: SocketAddr,
    mode: Mode,
    rate: f64,
    duration: Duration,
) -> (Vec<Slot>, PhaseResult) {
    let hosts = slots.len();
    let t0 = Instant::now() + Duration::from_millis(20);
    let end = t0 + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for (j, mut slot) in slots.into_iter().enumerate() {
        tasks.spawn(async move {
            let mut r = PhaseResult::default();
            let mut last = t0;
            for k in 0.. {
                let at = t0 + Duration::from_secs_f64((j + k * hosts) as f64 / rate);
                if at >= end {
                    break;
                }
                tokio::time::sleep_until(at.into()).await;
                let outcome =
                    tokio::time::timeout(REQUEST_TIMEOUT, poll(&mut slot, addr, mode, &mut r))
                        .await;
                last = Instant::now();
                match outcome {
                    Ok(Ok(())) => r.latencies_us.push((last - at).as_micros() as u64),
                    Ok(Err(e)) => {
                        r.errors += 1;
                        r.first_error.get_or_insert(e);
                    }
                    Err(_) => {
                        slot.conn = None;
                        r.errors += 1;
                        r.first_error
                            .get_or_insert_with(|| format!("no answer within {REQUEST_TIMEOUT:?}"));
                    }
                }
            }
            (j, slot, r, last)
        });
    }
    let mut total = PhaseResult {
        offered: rate,
        ..PhaseResult::default()
    };
    let mut back = Vec::with_capacity(hosts);
    let mut last = t0;
    while let Some(done) = tasks.join_next().await {
        let (j, slot, r, at) = done.expect("a polling task panicked");
        total.merge(r);
        last = last.max(at);
        back.push((j, slot));
    }
    back.sort_by_key(|(j, _)| *j);
    total.elapsed = last
        .saturating_duration_since(t0)
        .max(Duration::from_millis(1));
    total.latencies_us.sort_unstable();
    (back.into_iter().map(|(_, s)| s).collect(), total)
}
