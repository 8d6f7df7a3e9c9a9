//! The per-source limit on refused admin authentication, shared by the admin
//! API's bearer token check and the web console's sign-in: a source that was
//! refused `max` times within one window is answered 429 (with the seconds
//! left in the window as `Retry-After`) until the window ends, whatever it
//! presents. So that a guessing source cannot flood the audit log, the first
//! refusal of a window is audited at once and the rest of that window's are
//! summed into one entry when the window closes (`sweep`).

use std::collections::HashMap;
use std::net::IpAddr;
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
}

/// A window that ended with refusals that were not audited one by one.
#[derive(Debug, PartialEq, Eq)]
pub struct Closed {
    pub source: IpAddr,
    /// Refusals after the window's first (which was audited on its own).
    pub further: u32,
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
        let mut sources = self.sources();
        let Some(w) = sources.get_mut(&source) else {
            return Ok(());
        };
        let end = w.start + self.window;
        if now >= end || w.refusals < self.max {
            return Ok(());
        }
        w.refusals = w.refusals.saturating_add(1);
        self.refused.fetch_add(1, Ordering::Relaxed);
        // Whole seconds, rounded up, at least one.
        let left = end - now;
        Err(
            Duration::from_secs(left.as_secs() + u64::from(left.subsec_nanos() > 0))
                .max(Duration::from_secs(1)),
        )
    }

    /// Records a refused attempt from `source`.
    pub fn refuse(&self, source: IpAddr, now: Instant) -> Refused {
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
            });
        }
        sources.insert(
            source,
            Window {
                start: now,
                refusals: 1,
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
                });
            }
            false
        });
        closed.sort_by_key(|c| c.source);
        closed
    }

    /// Every refused admin authentication since start-up (wrong or missing
    /// token, failed console sign-in, or turned away with 429).
    pub fn refusals(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// The window length, for audit messages.
    pub fn window(&self) -> Duration {
        self.window
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
                    further: 3
                })
            }
        );
        assert_eq!(limiter.refusals(), 5);
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
                further: 1
            }]
        );
        assert_eq!(limiter.sweep(at), vec![]);
        assert_eq!(
            limiter.sweep(t0 + Duration::from_secs(91)),
            vec![Closed {
                source: ip(3),
                further: 1
            }]
        );
    }
}
