//! Muster's own metrics (`GET /metrics` on the admin listener), in the
//! Prometheus text format. Counters are incremented where the events happen
//! (enrollments, agent requests, Prometheus reloads, target file writes);
//! everything that is a count of stored things (hosts by state, rollout,
//! tokens, certificates) is read from the store at scrape time, so it cannot
//! drift from the database.
//!
//! The `prometheus` crate rather than `prometheus-client`: the latter writes
//! only OpenMetrics, whose counter families are named without `_total`, which
//! `promtool check metrics` (Prometheus 2.42, Debian 12) reports as counters
//! without help text; `prometheus` writes the classic text format and has the
//! process collector.

use std::time::Duration;

use prometheus::{
    Encoder as _, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

use crate::admin_wire::HostState;

/// Content type of [`Metrics::encode`]'s text.
pub const CONTENT_TYPE: &str = prometheus::TEXT_FORMAT;

/// Certificates expiring within this window are counted by
/// `muster_certificates_expiring_hosts`.
pub const EXPIRY_WINDOW: Duration = Duration::from_secs(7 * 86400);

/// Counts read from the store at scrape time.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FleetCounts {
    /// Hosts by the state `hosts list` shows (pending: batch rows not
    /// enrolled yet).
    pub by_state: Vec<(HostState, u64)>,
    /// Active hosts whose applied config hash is the rendered one.
    pub rollout_current: u64,
    /// Active hosts with a rendered config they have not applied (yet).
    pub rollout_outdated: u64,
    /// Active hosts whose newest certificate expires within [`EXPIRY_WINDOW`].
    pub certs_expiring: u64,
    /// Enrollment tokens that can still enroll (unexpired, unspent, unrevoked).
    pub enroll_tokens: u64,
    /// Unrevoked admin tokens.
    pub admin_tokens: u64,
    /// Unrevoked targets-reader tokens.
    pub reader_tokens: u64,
}

/// The registry and the metrics updated as things happen.
pub struct Metrics {
    registry: Registry,
    enrollments: IntCounterVec,
    agent_requests: IntCounterVec,
    agent_latency: HistogramVec,
    reloads: IntCounterVec,
    target_writes: IntCounterVec,
    admin_auth_refusals: IntCounter,
    hosts: IntGaugeVec,
    rollout: IntGaugeVec,
    target_drift: IntGauge,
    certs_expiring: IntGauge,
    tokens: IntGaugeVec,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels)
                .expect("metric names and labels are valid");
            registry
                .register(Box::new(c.clone()))
                .expect("each metric is registered once");
            c
        };
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            let g = IntGaugeVec::new(Opts::new(name, help), labels)
                .expect("metric names and labels are valid");
            registry
                .register(Box::new(g.clone()))
                .expect("each metric is registered once");
            g
        };
        let enrollments = counter(
            "muster_enrollments_total",
            "Enrollment attempts by outcome (enrolled, or the error code answered).",
            &["outcome"],
        );
        let agent_requests = counter(
            "muster_agent_requests_total",
            "Requests on the agent listener by route and HTTP status.",
            &["route", "status"],
        );
        let agent_latency = HistogramVec::new(
            HistogramOpts::new(
                "muster_agent_request_duration_seconds",
                "Time to answer requests on the agent listener, by route.",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            &["route"],
        )
        .expect("metric names and labels are valid");
        registry
            .register(Box::new(agent_latency.clone()))
            .expect("each metric is registered once");
        let reloads = counter(
            "muster_prometheus_reloads_total",
            "Prometheus reloads Muster sent, by outcome (success, failure).",
            &["outcome"],
        );
        let target_writes = counter(
            "muster_target_file_writes_total",
            "Target file writes that changed a file, by outcome (success, failure).",
            &["outcome"],
        );
        let admin_auth_refusals = IntCounter::new(
            "muster_admin_auth_refusals_total",
            "Refused admin authentications: wrong or missing token, failed console sign-in, or turned away by the per-source limit (429).",
        )
        .expect("metric names are valid");
        registry
            .register(Box::new(admin_auth_refusals.clone()))
            .expect("each metric is registered once");
        let hosts = gauge(
            "muster_hosts",
            "Hosts by state, as `muster-server hosts list` shows it (pending: batch rows not enrolled yet).",
            &["state"],
        );
        let rollout = gauge(
            "muster_config_rollout_hosts",
            "Active hosts whose applied config is the rendered one (current) or not yet (outdated).",
            &["status"],
        );
        let single = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("metric names are valid");
            registry
                .register(Box::new(g.clone()))
                .expect("each metric is registered once");
            g
        };
        let target_drift = single(
            "muster_target_drift_hosts",
            "Active hosts whose target file could not be written as the database says.",
        );
        let certs_expiring = single(
            "muster_certificates_expiring_hosts",
            "Active hosts whose newest agent certificate expires within 7 days.",
        );
        let tokens = gauge(
            "muster_tokens_active",
            "Tokens that can still be used, by kind (enroll, admin, reader).",
            &["kind"],
        );
        let build = gauge(
            "muster_build_info",
            "The Muster server's version; always 1.",
            &["version"],
        );
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        #[cfg(target_os = "linux")]
        registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("the process collector is registered once");
        // Every label value exists from the start: a count of 0 reads 0,
        // not "no data".
        for outcome in ["success", "failure"] {
            reloads.with_label_values(&[outcome]);
            target_writes.with_label_values(&[outcome]);
        }
        enrollments.with_label_values(&["enrolled"]);
        Metrics {
            registry,
            enrollments,
            agent_requests,
            agent_latency,
            reloads,
            target_writes,
            admin_auth_refusals,
            hosts,
            rollout,
            target_drift,
            certs_expiring,
            tokens,
        }
    }

    /// An enrollment attempt ended with `outcome` (`enrolled` or an error code).
    pub fn enrollment(&self, outcome: &str) {
        self.enrollments.with_label_values(&[outcome]).inc();
    }

    /// A request on the agent listener: its route pattern (never the raw
    /// path: `/v1/download/{name}`), status and duration.
    pub fn agent_request(&self, route: &str, status: u16, elapsed: Duration) {
        self.agent_requests
            .with_label_values(&[route, &status.to_string()])
            .inc();
        self.agent_latency
            .with_label_values(&[route])
            .observe(elapsed.as_secs_f64());
    }

    /// A Prometheus reload was sent.
    pub fn reload(&self, ok: bool) {
        self.reloads.with_label_values(&[outcome(ok)]).inc();
    }

    /// A host's target file was written (`ok`) or could not be.
    pub fn target_write(&self, ok: bool) {
        self.target_writes.with_label_values(&[outcome(ok)]).inc();
    }

    /// The text for `/metrics`: the counters, `fleet` as gauges, the hosts
    /// whose target file drifts now (the reconciler knows), the refused admin
    /// authentications so far (the limiter keeps that total), and the process
    /// metrics.
    pub fn encode(
        &self,
        fleet: &FleetCounts,
        drifting_hosts: usize,
        admin_auth_refusals: u64,
    ) -> String {
        for state in HostState::ALL {
            let n = fleet
                .by_state
                .iter()
                .find(|(s, _)| *s == state)
                .map_or(0, |(_, n)| *n);
            self.hosts
                .with_label_values(&[state.as_str()])
                .set(gauge_value(n));
        }
        self.rollout
            .with_label_values(&["current"])
            .set(gauge_value(fleet.rollout_current));
        self.rollout
            .with_label_values(&["outdated"])
            .set(gauge_value(fleet.rollout_outdated));
        self.certs_expiring.set(gauge_value(fleet.certs_expiring));
        for (kind, n) in [
            ("enroll", fleet.enroll_tokens),
            ("admin", fleet.admin_tokens),
            ("reader", fleet.reader_tokens),
        ] {
            self.tokens.with_label_values(&[kind]).set(gauge_value(n));
        }
        self.target_drift
            .set(i64::try_from(drifting_hosts).unwrap_or(i64::MAX));
        let seen = self.admin_auth_refusals.get();
        if admin_auth_refusals > seen {
            self.admin_auth_refusals.inc_by(admin_auth_refusals - seen);
        }
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("encoding into memory cannot fail");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}

fn outcome(ok: bool) -> &'static str {
    if ok {
        "success"
    } else {
        "failure"
    }
}

fn gauge_value(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample<'a>(text: &'a str, series: &str) -> Option<&'a str> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
    }

    #[test]
    fn counts_become_gauges_with_every_state_present() {
        let metrics = Metrics::new();
        let fleet = FleetCounts {
            by_state: vec![(HostState::ConfigApplied, 3), (HostState::Stale, 1)],
            rollout_current: 3,
            rollout_outdated: 1,
            certs_expiring: 2,
            enroll_tokens: 5,
            admin_tokens: 1,
            reader_tokens: 0,
        };
        let text = metrics.encode(&fleet, 0, 0);
        assert_eq!(
            sample(&text, "muster_hosts{state=\"config_applied\"}"),
            Some("3")
        );
        assert_eq!(sample(&text, "muster_hosts{state=\"stale\"}"), Some("1"));
        assert_eq!(
            sample(&text, "muster_hosts{state=\"config_failed\"}"),
            Some("0")
        );
        assert_eq!(
            sample(&text, "muster_config_rollout_hosts{status=\"outdated\"}"),
            Some("1")
        );
        assert_eq!(
            sample(&text, "muster_certificates_expiring_hosts"),
            Some("2")
        );
        assert_eq!(
            sample(&text, "muster_tokens_active{kind=\"enroll\"}"),
            Some("5")
        );
        assert_eq!(
            sample(
                &text,
                "muster_prometheus_reloads_total{outcome=\"failure\"}"
            ),
            Some("0")
        );
        assert!(text.contains("muster_build_info{version=\""), "{text}");
        assert!(
            text.contains("# TYPE muster_enrollments_total counter"),
            "{text}"
        );
    }

    #[test]
    fn events_count_and_the_live_figures_are_shown() {
        let metrics = Metrics::new();
        metrics.enrollment("enrolled");
        metrics.enrollment("invalid_token");
        metrics.enrollment("invalid_token");
        metrics.agent_request("/v1/agent/config", 304, Duration::from_millis(2));
        metrics.reload(false);
        metrics.target_write(false);
        metrics.target_write(false);
        metrics.target_write(true);
        let text = metrics.encode(&FleetCounts::default(), 1, 4);
        assert_eq!(
            sample(&text, "muster_enrollments_total{outcome=\"invalid_token\"}"),
            Some("2")
        );
        assert_eq!(
            sample(
                &text,
                "muster_agent_requests_total{route=\"/v1/agent/config\",status=\"304\"}"
            ),
            Some("1")
        );
        assert_eq!(
            sample(
                &text,
                "muster_agent_request_duration_seconds_bucket{route=\"/v1/agent/config\",le=\"0.0025\"}"
            ),
            Some("1")
        );
        assert_eq!(
            sample(
                &text,
                "muster_target_file_writes_total{outcome=\"failure\"}"
            ),
            Some("2")
        );
        assert_eq!(sample(&text, "muster_target_drift_hosts"), Some("1"));
        assert_eq!(sample(&text, "muster_admin_auth_refusals_total"), Some("4"));
        let text = metrics.encode(&FleetCounts::default(), 0, 4);
        assert_eq!(sample(&text, "muster_target_drift_hosts"), Some("0"));
        assert_eq!(sample(&text, "muster_admin_auth_refusals_total"), Some("4"));
    }
}
