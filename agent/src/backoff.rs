//! When to try again: the check-in interval with ±10% jitter, and exponential
//! backoff with full jitter after failures, so a fleet that lost its server
//! does not come back as a thundering herd.

use std::time::Duration;

use ring::rand::{SecureRandom, SystemRandom};

/// First backoff ceiling.
pub const BACKOFF_BASE: Duration = Duration::from_secs(1);
/// Largest backoff ceiling.
pub const BACKOFF_CAP: Duration = Duration::from_secs(300);
/// Shortest wait ever: full jitter may draw zero, which would busy-loop.
pub const BACKOFF_FLOOR: Duration = Duration::from_millis(500);

/// Consecutive failures, and the wait they call for.
#[derive(Clone, Debug, Default)]
pub struct Backoff {
    failures: u32,
}

impl Backoff {
    pub fn new() -> Backoff {
        Backoff::default()
    }

    /// The upper bound of the next wait: 1 s, 2 s, 4 s ... capped at 5 min.
    pub fn ceiling(&self) -> Duration {
        let exp = self.failures.saturating_sub(1).min(20);
        BACKOFF_BASE.saturating_mul(1 << exp).min(BACKOFF_CAP)
    }

    /// Records a failure and returns how long to wait: uniform in
    /// `[0, ceiling]` (full jitter) but not below the floor. `unit` is a
    /// random number in `[0, 1)`.
    pub fn fail(&mut self, unit: f64) -> Duration {
        self.failures = self.failures.saturating_add(1);
        self.ceiling()
            .mul_f64(unit.clamp(0.0, 1.0))
            .max(BACKOFF_FLOOR)
    }

    /// Forgets the failures after a success.
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    pub fn failures(&self) -> u32 {
        self.failures
    }
}

/// `interval` scaled by a factor in `[0.9, 1.1)`; `unit` is random in `[0, 1)`.
pub fn jittered(interval: Duration, unit: f64) -> Duration {
    interval.mul_f64(0.9 + 0.2 * unit.clamp(0.0, 1.0))
}

/// A random number in `[0, 1)` from the OS (0.5 if it has none to give).
pub fn random_unit() -> f64 {
    let mut bytes = [0u8; 8];
    if SystemRandom::new().fill(&mut bytes).is_err() {
        return 0.5;
    }
    // 53 random bits: every such value is exact in an f64.
    (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_from_1s_to_5min_and_resets() {
        let mut b = Backoff::new();
        let mut ceilings = Vec::new();
        for _ in 0..12 {
            let wait = b.fail(0.999_999);
            ceilings.push(b.ceiling());
            assert!(wait <= b.ceiling() && wait >= BACKOFF_FLOOR);
        }
        let secs: Vec<u64> = ceilings.iter().map(Duration::as_secs).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
        for _ in 0..1000 {
            b.fail(0.999);
        }
        assert_eq!(b.ceiling(), BACKOFF_CAP);
        assert_eq!(b.fail(0.0), BACKOFF_FLOOR);
        b.reset();
        assert_eq!(b.failures(), 0);
        assert_eq!(b.fail(1.0), BACKOFF_BASE);
    }

    #[test]
    fn jitter_stays_within_ten_percent() {
        let base = Duration::from_secs(30);
        assert_eq!(jittered(base, 0.0), Duration::from_secs(27));
        assert_eq!(jittered(base, 0.5), base);
        assert!(jittered(base, 0.999_999) < Duration::from_secs(33));
        for _ in 0..1000 {
            let u = random_unit();
            assert!((0.0..1.0).contains(&u));
            let j = jittered(base, u);
            assert!(j >= Duration::from_secs(27) && j < Duration::from_secs(33));
        }
    }
}
