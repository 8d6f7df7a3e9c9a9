//! Benchmark: one Muster server under a fleet's load, and the same poll
//! load against nginx as a reference. See `bench-fleet --help` and the
//! README's benchmark section.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use muster_e2e::fleet::{admin, edit_settings, init};
use muster_e2e::loadgen::hosts::{enroll_many, EnrollRun, Enroller, PollHost};
use muster_e2e::loadgen::nginx::Nginx;
use muster_e2e::loadgen::polls::{self, Mode, PhaseResult, Slot};
use muster_e2e::loadgen::procfs::{cpu_us, cpu_us_of, pin_self, raise_open_files, rss_kib_of};
use muster_e2e::loadgen::{http, seed};
use muster_e2e::{bench, Server};
use muster_shared::wire::CONFIG_PATH;
use serde_json::json;

const HELP: &str = "\
bench-fleet: enroll a fleet of synthetic hosts into a real muster-server and
measure enrollments, config polls, CPU, memory and start-up.

USAGE: bench-fleet [OPTIONS]
  --hosts N              fleet size (default 5000)
  --pollers K            hosts that enroll last over TLS, keep their keys in
                         memory and poll (default 1000)
  --grow sql|tls         how the first N-K hosts get into the database
                         (default sql, see below)
  --rates R,R,..         offered poll rates per second, swept in order until
                         p99 exceeds the limit (default 1000,2000,5000,10000,20000)
  --duration S           seconds per rate and for the mixed phase (default 10)
  --modes M,M            kept-alive,reconnecting (default both)
  --mixed-rate R         kept-alive polls/s while 16 hosts enroll (default 1000)
  --concurrency C        enrollments in flight (default 16)
  --p99-limit-ms L       a rate passes with p99 below this (default 20)
  --reference            run the same polls against Debian's nginx
                         (/usr/sbin/nginx: apt-get install nginx)
  --server-cpu C         CPU for the server and nginx (default 0)
  --load-cpu C           CPU for this load generator (default 1)
  --no-pin               no CPU pinning (the default with fewer than 2 CPUs)

WHAT IT DOES
  1. Grows the fleet to N hosts. Every host has a real ECDSA key, a CSR and
     valid facts (distinct machine id, its own loopback source address
     127.1.x.y, which its scrape address names).
     --grow tls: all N enroll over TLS (POST /v1/enroll), C at a time.
     --grow sql (fast): host 0 enrolls over TLS; the server is stopped and
     that host is copied in SQL into hosts 1..N-K-1 (each its own id,
     hostname, machine id, scrape address and a certificate row with a
     synthetic fingerprint: these hosts are loaded, rendered and listed but
     never connect; their target files are the template's with the same
     replacements); the server starts again (timed apart), then the last K
     hosts enroll over TLS, C at a time.
     Either way enroll/s is measured over the last 1,000 (at most) TLS
     enrollments, which bring the fleet from N-1,000 to N hosts.
  2. Start-up with N hosts: SIGTERM, start again; time to the listening
     lines and to the first answered config poll.
  3. For each mode, a sweep of offered rates: the K hosts poll
     GET /v1/agent/config with If-None-Match (the agent's config poll,
     answered 304), each over its own mTLS connection with its own
     certificate: kept alive, or a new connection per poll (TLS session
     resumption when the server offers it). Open loop: host j of K polls at
     t0 + (j + k*K)/rate; latency is measured from that scheduled time, so
     queueing in the server is not hidden. Prints achieved polls/s,
     p50/p99/max, errors, server CPU per poll (utime+stime from
     /proc/PID/stat over the phase / answered polls), the load generator's
     own CPU per poll, and server RSS.
  4. Mixed: kept-alive polls at --mixed-rate while C hosts at a time enroll
     over TLS for --duration seconds: poll p50/p99/max and enroll/s.
  5. Start-up after a template change (templates_dir set to a copy of the
     repository's templates with one line added to linux.alloy.j2).
  6. --reference: the server is stopped; nginx (one worker, TLS 1.3 only,
     the server's certificate and key, ssl_verify_client on against the
     Muster CA, the config body as a static file with an ETag) gets the same
     sweeps from the same hosts; a summary table gives the ratios.

PINNING
  With 2+ CPUs the server (through taskset -c) and nginx run on
  --server-cpu and this process on --load-cpu; --no-pin turns it off.
";

struct Args {
    hosts: usize,
    pollers: usize,
    grow_sql: bool,
    rates: Vec<f64>,
    duration: Duration,
    modes: Vec<Mode>,
    mixed_rate: f64,
    concurrency: usize,
    p99_limit_ms: f64,
    reference: bool,
    /// (server CPU, load CPU)
    pin: Option<(usize, usize)>,
}

fn parse_args() -> Args {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut a = Args {
        hosts: 5000,
        pollers: 1000,
        grow_sql: true,
        rates: vec![1000.0, 2000.0, 5000.0, 10000.0, 20000.0],
        duration: Duration::from_secs(10),
        modes: vec![Mode::KeptAlive, Mode::Reconnect],
        mixed_rate: 1000.0,
        concurrency: 16,
        p99_limit_ms: 20.0,
        reference: false,
        pin: (cpus >= 2).then_some((0, 1)),
    };
    let mut it = bench::args(HELP).into_iter();
    let fail = |msg: String| -> ! { bench::refuse(&msg, HELP) };
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .unwrap_or_else(|| fail(format!("{flag} needs a value")))
        };
        let number = |v: String| -> f64 {
            v.parse()
                .unwrap_or_else(|_| fail(format!("{flag}: {v:?} is not a number")))
        };
        match flag.as_str() {
            "--hosts" => a.hosts = number(value()) as usize,
            "--pollers" => a.pollers = number(value()) as usize,
            "--grow" => {
                a.grow_sql = match value().as_str() {
                    "sql" => true,
                    "tls" => false,
                    v => fail(format!("--grow {v}: sql or tls")),
                }
            }
            "--rates" => a.rates = value().split(',').map(|r| number(r.to_string())).collect(),
            "--duration" => a.duration = Duration::from_secs_f64(number(value())),
            "--modes" => {
                a.modes = value()
                    .split(',')
                    .map(|m| match m {
                        "kept-alive" => Mode::KeptAlive,
                        "reconnecting" => Mode::Reconnect,
                        m => fail(format!("--modes {m}: kept-alive or reconnecting")),
                    })
                    .collect()
            }
            "--mixed-rate" => a.mixed_rate = number(value()),
            "--concurrency" => a.concurrency = number(value()) as usize,
            "--p99-limit-ms" => a.p99_limit_ms = number(value()),
            "--reference" => a.reference = true,
            "--server-cpu" => a.pin = Some((number(value()) as usize, a.pin.map_or(1, |p| p.1))),
            "--load-cpu" => a.pin = Some((a.pin.map_or(0, |p| p.0), number(value()) as usize)),
            "--no-pin" => a.pin = None,
            other => fail(format!("unknown argument {other}")),
        }
    }
    if a.hosts == 0 || a.rates.iter().any(|r| *r <= 0.0) {
        fail("--hosts and every rate must be positive".into());
    }
    a.pollers = a.pollers.clamp(1, a.hosts);
    a
}

fn main() {
    let args = parse_args();
    if args.reference && Nginx::binary().is_none() {
        eprintln!("bench-fleet: --reference needs nginx: apt-get install nginx");
        std::process::exit(69);
    }
    raise_open_files();
    if let Some((_, load)) = args.pin {
        pin_self(load).unwrap_or_else(|e| panic!("pinning to CPU {load}: {e}"));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let mut bench = Bench::new(args);
    runtime.block_on(bench.run());
}

/// A phase's measurements and the server CPU µs per poll.
type Phase = (PhaseResult, f64);

/// Figures for the summary table.
#[derive(Default)]
struct Figures {
    enroll_rate: f64,
    startup: Option<(Duration, Duration)>,
    startup_template: Option<(Duration, Duration)>,
    /// Of the server with no hosts, then with N hosts after start-up.
    rss_kib_empty: u64,
    rss_kib: u64,
    rss_kib_polled: u64,
    mixed: Option<(PhaseResult, f64)>,
    /// Per target (0 Muster, 1 nginx): per mode, the sweep's phases with
    /// server CPU µs per poll.
    sweeps: [Vec<(Mode, Vec<Phase>)>; 2],
}

impl Figures {
    /// RSS per host over the empty server's.
    fn per_host_kib(&self, hosts: usize) -> f64 {
        self.rss_kib.saturating_sub(self.rss_kib_empty) as f64 / hosts as f64
    }
}

struct Bench {
    args: Args,
    _root: tempfile::TempDir,
    data: std::path::PathBuf,
    pin: String,
    agent_addr: Option<std::net::SocketAddr>,
    figures: Figures,
}

impl Bench {
    fn new(args: Args) -> Bench {
        let root = tempfile::tempdir().expect("temp dir");
        let data = root.path().join("data");
        let pin = init(&data);
        Bench {
            args,
            data,
            _root: root,
            pin,
            agent_addr: None,
            figures: Figures::default(),
        }
    }

    /// Starts the server; after the first start, on the same agent address
    /// (the enroller and the polling hosts keep it).
    fn start_server(&mut self) -> Server {
        let mut b = Server::builder(&self.data).deadline(Duration::from_secs(1800));
        if let Some(addr) = self.agent_addr {
            b = b.listen(addr);
        }
        if let Some((cpu, _)) = self.args.pin {
            b = b.cpus(&cpu.to_string());
        }
        let server = b.start();
        self.agent_addr = Some(server.agent_addr());
        server
    }

    async fn run(&mut self) {
        let a = &self.args;
        println!(
            "bench-fleet: {} hosts ({} polling), growth by {}, pinning {}",
            a.hosts,
            a.pollers,
            if a.grow_sql { "SQL copy + TLS" } else { "TLS" },
            a.pin.map_or("off".to_string(), |(s, l)| format!(
                "server CPU {s}, load CPU {l}"
            ))
        );
        let mut server = self.start_server();
        self.figures.rss_kib_empty = rss_kib_of(&[server.pid()]);
        let enroller = Arc::new(self.enroller(&server).await);
        let (hosts, pollers) = (self.args.hosts, self.args.pollers);
        let keep_from = hosts - pollers;
        let conc = self.args.concurrency;
        if self.args.grow_sql && keep_from > 1 {
            let template = enroller
                .enroll(0, true)
                .await
                .unwrap_or_else(|e| panic!("the template host: {e}"))
                .expect("kept");
            server.terminate(Duration::from_secs(60));
            let t = Instant::now();
            seed::seed_hosts(
                &self.data.join("muster.db"),
                0,
                &template.host_id,
                1,
                keep_from - 1,
            );
            seed::seed_target_files(
                &self.data.join("targets"),
                0,
                &template.host_id,
                1,
                keep_from - 1,
            );
            println!(
                "seeded {} hosts by SQL copy (and their target files) in {:.1} s",
                keep_from - 1,
                t.elapsed().as_secs_f64()
            );
            let t = Instant::now();
            server = self.start_server();
            println!(
                "first start after seeding ({keep_from} hosts): listening after {:.2} s",
                t.elapsed().as_secs_f64()
            );
        }
        let first = if self.args.grow_sql { keep_from } else { 0 };
        let grown = enroll_many(Arc::clone(&enroller), first..hosts, conc, keep_from, None).await;
        fail_on_errors("growth", &grown);
        let last = grown.done_at.len().min(1000);
        self.figures.enroll_rate = grown.rate_of_last(last);
        println!(
            "enrolled over TLS ({conc} concurrent): hosts {first}..{hosts}, {:.0}/s over the last {last} (fleet {}..{hosts})",
            self.figures.enroll_rate,
            hosts - last
        );
        let mut slots: Vec<Slot> = grown.kept.into_iter().map(Slot::new).collect();

        let (server, startup) = self.restart(server, &slots[0].host).await;
        self.figures.startup = Some(startup);
        print_startup(&format!("start-up with {hosts} hosts"), startup);
        self.figures.rss_kib = rss_kib_of(&[server.pid()]);
        println!(
            "server RSS after start-up: {:.1} MiB ({:.1} MiB with no hosts): {:.2} KiB per host",
            self.figures.rss_kib as f64 / 1024.0,
            self.figures.rss_kib_empty as f64 / 1024.0,
            self.figures.per_host_kib(hosts)
        );

        let addr = server.agent_addr();
        let mut body = Vec::new();
        for mode in self.args.modes.clone() {
            let (back, phases, first_body) = self
                .sweep("muster", slots, addr, mode, &[server.pid()])
                .await;
            slots = back;
            if body.is_empty() {
                body = first_body;
            }
            if mode == Mode::KeptAlive {
                self.figures.rss_kib_polled = rss_kib_of(&[server.pid()]);
                println!(
                    "server RSS with {} kept-alive connections: {:.1} MiB",
                    slots.len(),
                    self.figures.rss_kib_polled as f64 / 1024.0
                );
            }
            self.figures.sweeps[0].push((mode, phases));
        }

        slots = self.mixed(slots, &server, enroller).await;

        let (server, startup) = self.template_change(server, &slots[0].host).await;
        self.figures.startup_template = Some(startup);
        print_startup("start-up after a template change", startup);

        if self.args.reference {
            server.terminate(Duration::from_secs(60));
            if body.is_empty() {
                body = b"{}".to_vec();
            }
            let nginx = Nginx::start(&self.data, &body, self.args.pin.map(|p| p.0));
            println!("nginx reference on {}", nginx.addr);
            for mode in self.args.modes.clone() {
                let pids = nginx.pids();
                let (back, phases, _) = self.sweep("nginx", slots, nginx.addr, mode, &pids).await;
                slots = back;
                self.figures.sweeps[1].push((mode, phases));
            }
        }
        self.summary();
    }

    /// One admin-made token per 100,000 enrollments, enough for the fleet
    /// and the mixed phase.
    async fn enroller(&self, server: &Server) -> Enroller {
        const USES: usize = 100_000;
        let mut tokens = Vec::new();
        for _ in 0..(self.args.hosts + 200_000).div_ceil(USES) {
            let created = admin(
                server,
                reqwest::Method::POST,
                "/v1/admin/tokens",
                Some(json!({"uses": USES, "ttl_secs": 7 * 86400})),
            )
            .await;
            tokens.push(created["token"].as_str().expect("token").to_string());
        }
        Enroller::new(server.agent_addr(), &self.pin, tokens, USES)
    }

    /// SIGTERM, start again; (to the listening lines, to the first answered
    /// config poll of `host`).
    async fn restart(&mut self, server: Server, host: &PollHost) -> (Server, (Duration, Duration)) {
        server.terminate(Duration::from_secs(120));
        let t = Instant::now();
        let server = self.start_server();
        let listening = t.elapsed();
        let addr = server.agent_addr();
        loop {
            let answered = async {
                let mut conn = http::Conn::connect(addr, Some(host.source), Arc::clone(&host.tls))
                    .await
                    .ok()?;
                let resp = conn
                    .send(&http::get(addr, CONFIG_PATH, None, true))
                    .await
                    .ok()?;
                (resp.status == 200 || resp.status == 304).then_some(())
            }
            .await;
            if answered.is_some() {
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(1800),
                "no config poll answered\n{}",
                server.logs()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        (server, (listening, t.elapsed()))
    }

    async fn template_change(
        &mut self,
        server: Server,
        host: &PollHost,
    ) -> (Server, (Duration, Duration)) {
        let dir = self.data.join("bench-templates");
        copy_dir(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("../templates"),
            &dir,
        );
        let base = dir.join("linux.alloy.j2");
        let mut text = std::fs::read_to_string(&base).expect("linux.alloy.j2");
        text.push_str("\n// bench-fleet: template changed\n");
        std::fs::write(&base, text).expect("linux.alloy.j2");
        edit_settings(
            &self.data,
            &[(
                "# templates_dir = \"/etc/muster-server/templates\"",
                &format!("templates_dir = {:?}", dir.display().to_string()),
            )],
        );
        self.restart(server, host).await
    }

    /// Learns every host's ETag, then polls at each rate until one fails
    /// the p99 limit or loses more than 1% of its polls.
    async fn sweep(
        &self,
        target: &str,
        mut slots: Vec<Slot>,
        addr: std::net::SocketAddr,
        mode: Mode,
        pids: &[u32],
    ) -> (Vec<Slot>, Vec<Phase>, Vec<u8>) {
        slots.iter_mut().for_each(|s| {
            s.disconnect();
            s.host.etag = None;
        });
        let (back, body) = polls::learn(slots, addr, mode)
            .await
            .unwrap_or_else(|e| panic!("{target}: first poll of every host: {e}"));
        slots = back;
        let mut phases = Vec::new();
        for &rate in &self.args.rates {
            let (cpu0, me0) = (cpu_us_of(pids), cpu_us(std::process::id()).unwrap_or(0));
            let (back, r) = polls::run(slots, addr, mode, rate, self.args.duration).await;
            slots = back;
            let (cpu1, me1) = (cpu_us_of(pids), cpu_us(std::process::id()).unwrap_or(0));
            let per = |us: u64| us as f64 / r.answered().max(1) as f64;
            let server_cpu = per(cpu1 - cpu0);
            // Above 90% of its core the load generator, not the server, may
            // be what limits the rate.
            let busy = (me1 - me0) as f64 / r.elapsed.as_secs_f64() / 1e6;
            println!(
                "{target} {} {}: client CPU {:.0} µs/poll{}, server RSS {:.1} MiB",
                mode.name(),
                phase_line(&r, Some(server_cpu)),
                per(me1 - me0),
                if busy > 0.9 {
                    format!(" (load generator {:.0}% busy: saturated)", busy * 100.0)
                } else {
                    String::new()
                },
                rss_kib_of(pids) as f64 / 1024.0
            );
            let failed = !self.passes(&r);
            phases.push((r, server_cpu));
            if failed {
                break;
            }
        }
        (slots, phases, body)
    }

    fn passes(&self, r: &PhaseResult) -> bool {
        r.answered() > 0
            && r.quantile_ms(0.99) < self.args.p99_limit_ms
            && r.errors * 100 <= r.answered()
    }

    async fn mixed(
        &mut self,
        mut slots: Vec<Slot>,
        server: &Server,
        enroller: Arc<Enroller>,
    ) -> Vec<Slot> {
        let addr = server.agent_addr();
        slots.iter_mut().for_each(Slot::disconnect);
        let (slots, _) = polls::learn(slots, addr, Mode::KeptAlive)
            .await
            .unwrap_or_else(|e| panic!("mixed: first polls: {e}"));
        let hosts = self.args.hosts;
        let until = Instant::now() + self.args.duration;
        let cpu0 = cpu_us_of(&[server.pid()]);
        let ((back, r), run) = tokio::join!(
            polls::run(
                slots,
                addr,
                Mode::KeptAlive,
                self.args.mixed_rate,
                self.args.duration
            ),
            enroll_many(
                enroller,
                hosts..usize::MAX,
                self.args.concurrency,
                usize::MAX,
                Some(until)
            ),
        );
        let cpu = cpu_us_of(&[server.pid()]) - cpu0;
        fail_on_errors("mixed phase", &run);
        let rate = run.rate_of_last(usize::MAX);
        println!(
            "muster mixed: kept-alive {} while enrolling {:.0}/s ({} enrollments; server CPU {:.1} s)",
            phase_line(&r, None),
            rate,
            run.done_at.len(),
            cpu as f64 / 1e6
        );
        self.figures.mixed = Some((r, rate));
        back
    }

    fn summary(&self) {
        let f = &self.figures;
        let limit = self.args.p99_limit_ms;
        println!(
            "\n## bench-fleet summary: {} hosts, {} polling\n",
            self.args.hosts, self.args.pollers
        );
        println!("| figure | Muster | nginx | Muster/nginx |\n|---|---|---|---|");
        let ms = |d: Duration| format!("{:.2} s", d.as_secs_f64());
        for mode in &self.args.modes {
            let best = |t: usize| {
                f.sweeps[t]
                    .iter()
                    .find(|(m, _)| m == mode)
                    .and_then(|(_, ph)| ph.iter().rfind(|(r, _)| self.passes(r)))
            };
            let (m, n) = (best(0), best(1));
            let rate = |t: usize, p: Option<&Phase>| {
                if f.sweeps[t].is_empty() {
                    return "-".to_string();
                }
                p.map_or("none passed".to_string(), |(r, _)| {
                    format!("{:.0}/s (p99 {:.1} ms)", r.achieved(), r.quantile_ms(0.99))
                })
            };
            let ratio = match (m, n) {
                (Some((a, _)), Some((b, _))) => format!("{:.2}", a.achieved() / b.achieved()),
                _ => "-".into(),
            };
            println!(
                "| {} polls/s at p99 < {limit} ms | {} | {} | {ratio} |",
                mode.name(),
                rate(0, m),
                rate(1, n),
            );
            // CPU per poll compared at the highest offered rate both passed.
            let common = |t: usize, offered: f64| {
                f.sweeps[t]
                    .iter()
                    .find(|(m, _)| m == mode)
                    .and_then(|(_, ph)| ph.iter().find(|(r, _)| r.offered == offered))
            };
            let at = match (m, n) {
                (Some((a, _)), Some((b, _))) => Some(a.offered.min(b.offered)),
                (Some((a, _)), None) => Some(a.offered),
                _ => None,
            };
            if let Some(offered) = at {
                let (cm, cn) = (common(0, offered), common(1, offered));
                let cpu =
                    |p: Option<&Phase>| p.map_or("-".to_string(), |(_, c)| format!("{c:.0} µs"));
                let ratio = match (cm, cn) {
                    (Some((_, a)), Some((_, b))) => format!("{:.2}", a / b),
                    _ => "-".into(),
                };
                println!(
                    "| server CPU per {} poll at {offered:.0}/s offered | {} | {} | {ratio} |",
                    mode.name(),
                    cpu(cm),
                    cpu(cn)
                );
            }
        }
        println!(
            "| enroll/s ({} concurrent, last 1,000 to {} hosts) | {:.0} | - | - |",
            self.args.concurrency, self.args.hosts, f.enroll_rate
        );
        if let Some((r, rate)) = &f.mixed {
            println!(
                "| poll p99 while enrolling ({:.0} polls/s, {rate:.0} enroll/s) | {:.1} ms (p50 {:.1}, max {:.1}, {} errors) | - | - |",
                r.offered,
                r.quantile_ms(0.99),
                r.quantile_ms(0.5),
                r.max_ms(),
                r.errors
            );
        }
        println!(
            "| server RSS after start-up / per host (over the empty server's {:.1} MiB) | {:.1} MiB / {:.2} KiB | - | - |",
            f.rss_kib_empty as f64 / 1024.0,
            f.rss_kib as f64 / 1024.0,
            f.per_host_kib(self.args.hosts)
        );
        println!(
            "| server RSS with {} kept-alive connections | {:.1} MiB | - | - |",
            self.args.pollers,
            f.rss_kib_polled as f64 / 1024.0
        );
        for (what, s) in [
            ("start-up", f.startup),
            ("start-up after a template change", f.startup_template),
        ] {
            if let Some((listen, poll)) = s {
                println!(
                    "| {what}, {} hosts (listening / first poll answered) | {} / {} | - | - |",
                    self.args.hosts,
                    ms(listen),
                    ms(poll)
                );
            }
        }
    }
}

fn phase_line(r: &PhaseResult, server_cpu: Option<f64>) -> String {
    let mut s = format!(
        "offered {:.0}/s: achieved {:.0}/s, p50 {:.2} ms, p99 {:.2} ms, max {:.1} ms, {} errors",
        r.offered,
        r.achieved(),
        r.quantile_ms(0.5),
        r.quantile_ms(0.99),
        r.max_ms(),
        r.errors
    );
    if let Some(e) = &r.first_error {
        s.push_str(&format!(" (first: {e})"));
    }
    if r.changed > 0 {
        s.push_str(&format!(", {} answered 200", r.changed));
    }
    if r.handshakes > 0 {
        s.push_str(&format!(
            ", {} handshakes ({} resumed)",
            r.handshakes, r.resumed
        ));
    }
    if let Some(cpu) = server_cpu {
        s.push_str(&format!(", server CPU {cpu:.0} µs/poll"));
    }
    s
}

fn print_startup(what: &str, (listening, polled): (Duration, Duration)) {
    println!(
        "{what}: listening after {:.2} s, first config poll answered after {:.2} s",
        listening.as_secs_f64(),
        polled.as_secs_f64()
    );
}

fn fail_on_errors(what: &str, run: &EnrollRun) {
    assert!(
        run.errors.is_empty(),
        "{what}: {} enrollments failed, first: {}",
        run.errors.len(),
        run.errors[0]
    );
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("templates copy");
    for entry in std::fs::read_dir(from).unwrap_or_else(|e| panic!("{}: {e}", from.display())) {
        let entry = entry.expect("dir entry");
        let dest = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &dest);
        } else {
            std::fs::copy(entry.path(), &dest).expect("copy template");
        }
    }
}
