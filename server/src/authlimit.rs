//! The per-source limit on refusals. One instance limits refused admin
//! authentication, shared by the admin API's bearer token check and the web
//! console's sign-in; another limits refused enrollments (`POST /v1/enroll`,
//! whose refusals the fleet core audits one by one, so only the attempts
//! turned away with 429 are summed, see `Closed::turned_away`). A source that was
//! refused `max` times within one window is answered 429 (with the seconds
//! left in the window as `Retry-After`) until the window ends, whatever it
//! presents. So that a guessing source cannot flood the audit log, the first
//! refusal of a window is audited at once and the rest of that window's are
//! summed into one entry when the window closes (`sweep`). A source is an
//! IPv4 address, or an IPv6 /64 (see [`source_key`]).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Refusals a source gets per window before it is answered 429.
pub const MAX_REFUSALS: u32 = 10;
/// The window refusals are counted (and audited together) in.
pub const WINDOW: Duration = Duration::from_secs(60);

pub struct AuthLimiter {
    max: u32,
    window: Duration,
    sources: Mutex<HashMap<IpAddr, Window>>,
    refused: AtomicU64,
}

struct Window {
    start: Instant,
    refusals: u32,
    turned_away: u32,
}

/// What a source's refusals are counted under: an IPv4 address as it is
/// (an IPv4-mapped IPv6 address as its IPv4 one), an IPv6 address by its
/// /64 (the network address). A /64 is the smallest network a site gets,
/// so a client holding one could otherwise guess from 2^64 addresses, each
/// with a fresh window.
pub fn source_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !(u64::MAX as u128))),
        v4 => v4,
    }
}

/// A window that ended with refusals that were not audited one by one.
#[derive(Debug, PartialEq, Eq)]
pub struct Closed {
    /// The source's [`source_key`].
    pub source: IpAddr,
    /// Refusals after the window's first (which was audited on its own).
    pub further: u32,
    /// Of those, the attempts turned away with 429 (not looked at).
    pub turned_away: u32,
}

/// An attempt turned away by the limit.
#[derive(Debug, PartialEq, Eq)]
pub struct TurnedAway {
    /// Whole seconds left in the source's window (`Retry-After`).
    pub retry_after: Duration,
    /// The first of its window.
    pub first: bool,
}

/// What the caller audits after a refusal.
#[derive(Debug, PartialEq, Eq)]
pub struct Refused {
    /// The first refusal of its window: audit it now.
    pub first: bool,
    /// The source's previous window, when it ended unswept.
    pub closed: Option<Closed>,
}

impl AuthLimiter {
    pub fn new(max: u32, window: Duration) -> AuthLimiter {
        AuthLimiter {
            max,
            window,
            sources: Mutex::new(HashMap::new()),
            refused: AtomicU64::new(0),
        }
    }

    fn sources(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Window>> {
        self.sources.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Before any credential is looked at: `Err(retry_after)` when `source`
    /// has used up its refusals for the current window. A turned-away
    /// attempt counts as a refusal too.
    pub fn check(&self, source: IpAddr, now: Instant) -> Result<(), Duration> {
        self.admit(source, now).map_err(|t| t.retry_after)
    }

    /// `check`, also telling whether this is the window's first attempt
    /// turned away (for callers that audit that one at once).
    pub fn admit(&self, source: IpAddr, now: Instant) -> Result<(), TurnedAway> {
        let source = source_key(source);
        let mut sources = self.sources();
        let Some(w) = sources.get_mut(&source) else {
            return Ok(());
        };
        let end = w.start + self.window;
        if now >= end || w.refusals < self.max {
            return Ok(());
        }
        w.refusals = w.refusals.saturating_add(1);
        w.turned_away = w.turned_away.saturating_add(1);
        self.refused.fetch_add(1, Ordering::Relaxed);
        // Whole seconds, rounded up, at least one.
        let left = end - now;
        Err(TurnedAway {
            retry_after: Duration::from_secs(left.as_secs() + u64::from(left.subsec_nanos() > 0))
                .max(Duration::from_secs(1)),
            first: w.turned_away == 1,
        })
    }

    /// Records a refused attempt from `source`.
    pub fn refuse(&self, source: IpAddr, now: Instant) -> Refused {
        let source = source_key(source);
        self.refused.fetch_add(1, Ordering::Relaxed);
        let mut sources = self.sources();
        let mut closed = None;
        if let Some(w) = sources.get_mut(&source) {
            if now < w.start + self.window {
                w.refusals = w.refusals.saturating_add(1);
                return Refused {
                    first: false,
                    closed: None,
                };
            }
            closed = (w.refusals > 1).then_some(Closed {
                source,
                further: w.refusals - 1,
                turned_away: w.turned_away,
            });
        }
        sources.insert(
            source,
            Window {
                start: now,
                refusals: 1,
                turned_away: 0,
            },
        );
        Refused {
            first: true,
            closed,
        }
    }

    /// Forgets the windows that ended; those with refusals not yet audited.
    pub fn sweep(&self, now: Instant) -> Vec<Closed> {
        let mut closed = Vec::new();
        self.sources().retain(|source, w| {
            if now < w.start + self.window {
                return true;
            }
            if w.refusals > 1 {
                closed.push(Closed {
                    source: *source,
                    further: w.refusals - 1,
                    turned_away: w.turned_away,
                });
            }
            false
        });
        closed.sort_by_key(|c| c.source);
        closed
    }

    /// Every refusal since start-up (for admin authentication: wrong or
    /// missing token, failed console sign-in, or turned away with 429).
    pub fn refusals(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// The window length, for audit messages.
    pub fn window(&self) -> Duration {
        self.window
    }
}

impl Closed {
    /// The source as the audit log shows it: the address, or `<net>/64`.
    pub fn source_label(&self) -> String {
        match self.source {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => format!("{v6}/64"),
        }
    }
}

/// The audit detail of a closed window.
pub fn summary(closed: &Closed, window: Duration) -> String {
    format!(
        "{} further refusal(s) from this source within {} s of the one audited before",
        closed.further,
        window.as_secs()
    )
}

/// The audit detail of the first enrollment attempt of a window turned away
/// with 429.
pub fn enroll_turned_away(window: Duration) -> String {
    format!(
        "too many refused enrollments from this source: answered 429 until its {} s window ends (further attempts are summed then)",
        window.as_secs()
    )
}

/// The audit detail of a closed enrollment window: the attempts turned away
/// with 429 after the first (each other refusal has its own entry, and so
/// has the first turned away). `None` when there were none.
pub fn enroll_summary(closed: &Closed, window: Duration) -> Option<String> {
    (closed.turned_away > 1).then(|| {
        format!(
            "{} further enrollment attempt(s) from this source answered 429 within {} s of the one audited before",
            closed.turned_away - 1,
            window.as_secs()
        )
    })
}

impl Default for AuthLimiter {
    fn default() -> Self {
        AuthLimiter::new(MAX_REFUSALS, WINDOW)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn a_source_is_turned_away_after_max_refusals_until_its_window_ends() {
        let limiter = AuthLimiter::new(3, Duration::from_secs(60));
        let t0 = Instant::now();
        assert_eq!(limiter.check(ip(1), t0), Ok(()));
        assert!(limiter.refuse(ip(1), t0).first);
        assert!(!limiter.refuse(ip(1), t0).first);
        assert_eq!(limiter.check(ip(1), t0), Ok(()));
        assert!(!limiter.refuse(ip(1), t0).first);
        // Three refusals: the fourth attempt is not even looked at.
        let at = t0 + Duration::from_millis(20_500);
        assert_eq!(limiter.check(ip(1), at), Err(Duration::from_secs(40)));
        // Other sources are not affected.
        assert_eq!(limiter.check(ip(2), at), Ok(()));
        // The window ends: allowed again, and the next refusal opens a new
        // window, reporting the old one (3 refusals + 1 turned away).
        let later = t0 + Duration::from_secs(60);
        assert_eq!(limiter.check(ip(1), later), Ok(()));
        assert_eq!(
            limiter.refuse(ip(1), later),
            Refused {
                first: true,
                closed: Some(Closed {
                    source: ip(1),
                    further: 3,
                    turned_away: 1
                })
            }
        );
        assert_eq!(limiter.refusals(), 5);
    }

    #[test]
    fn an_ipv6_source_is_its_64_and_an_ipv4_one_its_address() {
        let v6 = |s: &str| s.parse::<IpAddr>().expect("address");
        let limiter = AuthLimiter::new(2, Duration::from_secs(60));
        let t0 = Instant::now();
        // Two addresses of one /64 share a window ...
        limiter.refuse(v6("2001:db8:1:2::1"), t0);
        limiter.refuse(v6("2001:db8:1:2:ffff:ffff:ffff:ffff"), t0);
        assert!(limiter.admit(v6("2001:db8:1:2:abcd::9"), t0).is_err());
        // ... the next /64 has its own, and so has every IPv4 address.
        assert_eq!(limiter.check(v6("2001:db8:1:3::1"), t0), Ok(()));
        limiter.refuse(ip(1), t0);
        limiter.refuse(ip(1), t0);
        assert!(limiter.check(ip(1), t0).is_err());
        assert_eq!(limiter.check(ip(2), t0), Ok(()));
        // An IPv4-mapped IPv6 address is its IPv4 address.
        assert!(limiter.check(v6("::ffff:10.0.0.1"), t0).is_err());
        let closed = limiter.sweep(t0 + Duration::from_secs(60));
        let labels: Vec<String> = closed.iter().map(Closed::source_label).collect();
        assert_eq!(labels, ["10.0.0.1", "2001:db8:1:2::/64"]);
    }

    #[test]
    fn the_first_attempt_turned_away_is_marked_and_the_rest_summed() {
        let limiter = AuthLimiter::new(1, Duration::from_secs(60));
        let t0 = Instant::now();
        limiter.refuse(ip(1), t0);
        assert!(limiter.admit(ip(1), t0).expect_err("limited").first);
        assert!(!limiter.admit(ip(1), t0).expect_err("limited").first);
        assert!(!limiter.admit(ip(1), t0).expect_err("limited").first);
        let closed = limiter.sweep(t0 + Duration::from_secs(60));
        assert_eq!(
            closed,
            vec![Closed {
                source: ip(1),
                further: 3,
                turned_away: 3
            }]
        );
        assert_eq!(
            enroll_summary(&closed[0], limiter.window()).as_deref(),
            Some("2 further enrollment attempt(s) from this source answered 429 within 60 s of the one audited before")
        );
        let single = Closed {
            source: ip(1),
            further: 1,
            turned_away: 1,
        };
        assert_eq!(enroll_summary(&single, limiter.window()), None);
    }

    #[test]
    fn sweep_reports_each_ended_window_once_and_skips_single_refusals() {
        let limiter = AuthLimiter::new(10, Duration::from_secs(60));
        let t0 = Instant::now();
        limiter.refuse(ip(1), t0);
        limiter.refuse(ip(1), t0);
        limiter.refuse(ip(2), t0);
        limiter.refuse(ip(3), t0 + Duration::from_secs(30));
        limiter.refuse(ip(3), t0 + Duration::from_secs(30));
        let at = t0 + Duration::from_secs(61);
        assert_eq!(
            limiter.sweep(at),
            vec![Closed {
                source: ip(1),
                further: 1,
                turned_away: 0
            }]
        );
        assert_eq!(limiter.sweep(at), vec![]);
        assert_eq!(
            limiter.sweep(t0 + Duration::from_secs(91)),
            vec![Closed {
                source: ip(3),
                further: 1,
                turned_away: 0
            }]
        );
    }
}
