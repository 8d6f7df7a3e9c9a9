//! Render benchmark (prints figures; not a timed test): renders the configs
//! of 10,000 varied hosts with the built-in templates, each checked by the
//! Alloy syntax checker as the server does, plus their target files.
//!
//! `cargo bench -p muster-server --bench render` (`-- 2000` for fewer hosts).

use std::time::{Duration, Instant};

use muster_server::overrides::Overrides;
use muster_server::render::{RenderSettings, Templates};
use muster_server::targets;
use muster_shared::facts::{Facts, ServiceFact, ServiceKind};
use muster_shared::labels::Labels;

/// A host with a mix of services and labels that varies with `i`.
fn host(i: usize) -> (String, Facts, Labels) {
    let service = |kind, port: Option<u16>| ServiceFact {
        kind,
        port,
        address: port.map(|_| "127.0.0.1".to_string()),
        path: None,
        exporter_port: (kind == ServiceKind::Nginx).then_some(9113),
        evidence: vec![format!("process {}", kind.as_str())],
    };
    let all = [
        service(ServiceKind::Postgres, Some(5432)),
        service(ServiceKind::Mysql, Some(3306)),
        service(ServiceKind::Redis, Some(6379)),
        service(ServiceKind::Nginx, Some(80)),
        service(ServiceKind::Docker, None),
        service(ServiceKind::Journal, None),
    ];
    let services = all
        .into_iter()
        .enumerate()
        .filter(|(k, _)| (i >> k) & 1 == 1)
        .map(|(_, s)| s)
        .collect();
    let (os_id, like) = [
        ("debian", None),
        ("ubuntu", Some("debian")),
        ("rhel", Some("fedora")),
        ("sles", Some("suse")),
    ][i % 4];
    let facts = Facts {
        hostname: format!("host-{i:05}.example.com"),
        machine_id: format!("{i:032x}"),
        os: "linux".into(),
        arch: "x86_64".into(),
        os_id: Some(os_id.into()),
        os_version: Some("12".into()),
        os_like: like.map(String::from),
        kernel: Some("6.1.0-18-amd64".into()),
        scrape_address: format!("10.{}.{}.{}:12345", i / 65536, (i / 256) % 256, i % 256),
        agent_version: "0.1.0".into(),
        services,
        alloy: None,
    };
    let id = format!("host-{i:05}-abc123");
    let operator: Labels = [
        ("env", ["prod", "staging", "dev"][i % 3].to_string()),
        ("team", format!("team-{}", i % 17)),
        ("rack", format!("r{}", i % 40)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let labels = muster_shared::facts::host_labels(&id, &facts, &operator);
    (id, facts, labels)
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(10_000);
    let templates = Templates::builtin().expect("built-in templates");
    let settings = RenderSettings {
        loki_url: Some("http://loki.example.com:3100".into()),
        otlp_endpoint: None,
        overrides: Overrides::from_toml(
            "[[rule]]\nmatch = { env = \"prod\" }\n[rule.services.process]\nenabled = true\n",
        )
        .expect("overrides"),
    };
    let hosts: Vec<_> = (0..n).map(host).collect();

    let mut times = Vec::with_capacity(n);
    let mut bytes = 0usize;
    let mut configs = Vec::with_capacity(n);
    let started = Instant::now();
    for (id, facts, labels) in &hosts {
        let t = Instant::now();
        let rendered = templates
            .render_facts(id, facts, labels, &settings)
            .expect("renders");
        let file = targets::groups_json(labels, &facts.scrape_address, &rendered.targets);
        times.push(t.elapsed());
        bytes += rendered.config.len() + file.len();
        configs.push(rendered.config);
    }
    let total = started.elapsed();

    // The syntax check's share, measured alone over the same configs.
    let t = Instant::now();
    for c in &configs {
        assert!(muster_shared::alloy::check(c).is_empty());
    }
    let check = t.elapsed();

    times.sort();
    let pct = |p: f64| times[((times.len() - 1) as f64 * p) as usize];
    println!("render benchmark: {n} hosts, built-in templates, syntax-checked, with target files");
    println!(
        "  total {:.3} s, {:.0} configs/s, {:.1} MB written",
        total.as_secs_f64(),
        n as f64 / total.as_secs_f64(),
        bytes as f64 / 1e6
    );
    println!(
        "  per config: mean {:.1} µs, p50 {:.1} µs, p99 {:.1} µs, max {:.1} µs",
        micros(total) / n as f64,
        micros(pct(0.5)),
        micros(pct(0.99)),
        micros(*times.last().expect("hosts"))
    );
    println!(
        "  of which the Alloy syntax check: {:.1} µs per config",
        micros(check) / n as f64
    );
}
