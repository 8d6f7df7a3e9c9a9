//! When to check in again. After a success: the check-in interval with ±10%
//! jitter. After a failure: a wait drawn uniformly from half the interval to
//! the whole of it, never longer. A fleet whose server is down thus knocks at
//! most twice as often as when all is well (4/3 on average), never a retry
//! storm of quick exponential steps, and every agent is back within one
//! interval of the server returning; the draws keep the agents spread out,
//! so they do not come back as a thundering herd.

use std::time::Duration;

use ring::rand::{SecureRandom, SystemRandom};

/// Shortest wait ever, whatever the interval.
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

    /// Records a failure and returns how long to wait: uniform in
    /// `[interval / 2, interval]` but not below the floor. `unit` is a
    /// random number in `[0, 1)`.
    pub fn fail(&mut self, interval: Duration, unit: f64) -> Duration {
        self.failures = self.failures.saturating_add(1);
        interval
            .mul_f64(0.5 + 0.5 * unit.clamp(0.0, 1.0))
            .max(BACKOFF_FLOOR)
    }

    /// Forgets the failures after a success.
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// Failures since the last success.
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
    fn a_failure_waits_half_to_one_interval_and_never_longer() {
        let interval = Duration::from_secs(30);
        let mut b = Backoff::new();
        assert_eq!(b.fail(interval, 0.0), Duration::from_secs(15));
        assert_eq!(b.fail(interval, 0.5), Duration::from_millis(22_500));
        assert_eq!(b.fail(interval, 1.0), interval);
        for _ in 0..1000 {
            let wait = b.fail(interval, 0.999_999);
            assert!(wait <= interval && wait >= interval / 2, "{wait:?}");
        }
        assert_eq!(b.failures(), 1003);
        b.reset();
        assert_eq!(b.failures(), 0);
        // The floor, for the shortest intervals.
        assert_eq!(b.fail(Duration::from_secs(1), 0.0), BACKOFF_FLOOR);
        assert_eq!(b.fail(Duration::ZERO, 0.7), BACKOFF_FLOOR);
        assert_eq!(
            b.fail(Duration::from_secs(3600), 1.0),
            Duration::from_secs(3600)
        );
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

    /// A deterministic stream of numbers in `[0, 1)` (splitmix64), so the
    /// fleet below behaves the same on every run.
    struct Draws(u64);

    impl Draws {
        fn next(&mut self) -> f64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            (z >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    /// What `run`'s loop does, for a fleet: `agents` agents with a
    /// 30 s interval and random phases check in for 40 intervals; the server
    /// is down from interval 10 to interval 20. Returns the check-in times
    /// (ms) and, per agent, its first success after the outage.
    fn fleet(agents: usize, outage: std::ops::Range<u64>, seed: u64) -> (Vec<u64>, Vec<u64>) {
        let interval = Duration::from_secs(30);
        let mut draws = Draws(seed);
        let mut times = Vec::new();
        let mut back = Vec::new();
        for _ in 0..agents {
            let mut backoff = Backoff::new();
            let mut now = interval.mul_f64(draws.next()).as_millis() as u64;
            let mut came_back = None;
            while now < 40 * 30_000 {
                times.push(now);
                let wait = if outage.contains(&now) {
                    backoff.fail(interval, draws.next())
                } else {
                    if now >= outage.end && came_back.is_none() {
                        came_back = Some(now);
                    }
                    backoff.reset();
                    jittered(interval, draws.next())
                };
                now += wait.as_millis() as u64;
            }
            back.push(came_back.expect("back before the end"));
        }
        (times, back)
    }

    /// The outage never more than doubles the request rate (during or after:
    /// every 30 s window, sliding by 3 s, against the steady state of one
    /// check-in per agent per interval), and every agent is back within two
    /// intervals of the server's return.
    #[test]
    fn an_outage_at_most_doubles_the_rate_and_every_agent_is_back_within_two_intervals() {
        let agents = 2000;
        let outage = 10 * 30_000..20 * 30_000;
        for seed in [1, 2, 3] {
            let (mut times, back) = fleet(agents, outage.clone(), seed);
            times.sort_unstable();
            let window = 30_000;
            let mut worst = 0;
            // From the first full window to the last.
            let mut start = window;
            while start + window <= 39 * 30_000 {
                let lo = times.partition_point(|&t| t < start);
                let hi = times.partition_point(|&t| t < start + window);
                worst = worst.max(hi - lo);
                start += 3_000;
            }
            assert!(
                worst <= 2 * agents,
                "seed {seed}: {worst} check-ins in one interval for {agents} agents"
            );
            // The average over the outage: 4/3 of the steady state.
            let during = times.iter().filter(|t| outage.contains(t)).count();
            let per_interval = during as f64 / 10.0;
            assert!(
                (1.2..1.45).contains(&(per_interval / agents as f64)),
                "seed {seed}: {per_interval} per interval during the outage"
            );
            let latest = back.iter().max().expect("agents") - outage.end;
            assert!(
                latest <= 2 * 30_000,
                "seed {seed}: the last agent came back {latest} ms after the server"
            );
        }
    }
}
