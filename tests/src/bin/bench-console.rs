//! Benchmark: the web console's hosts page for a fleet of 100,000 hosts.
//! Enrolls one host with the real agent, copies it into the database
//! (server stopped) until there are HOSTS hosts, restarts the server, signs
//! in to the console and times the first page and a page half-way down of
//! `/hosts` in every sort order, a state filter no host matches (every host
//! read), and the overview, as the server measured it (its `Server-Timing`
//! header) and as the client saw it.
//!
//! ```text
//! cargo build --release --workspace --bins
//! target/release/bench-console [HOSTS]      # default 100000
//! ```

use std::process::Command;
use std::time::{Duration, Instant};

use muster_e2e::fleet::{admin, init};
use muster_e2e::{bench, bin_path, run_ok, Server};
use serde_json::json;

const RUNS: usize = 20;

const USAGE: &str = "\
bench-console: the web console's hosts pages and overview for a large
fleet, timed by the server (Server-Timing) and by the client.

USAGE: bench-console [HOSTS]
  HOSTS   hosts in the fleet (default 100000)
";

fn main() {
    let hosts: usize = bench::args(USAGE)
        .first()
        .map_or(100_000, |n| bench::number(n, "HOSTS", USAGE));
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let root = tempfile::tempdir().expect("temp dir");
    let data = root.path().join("data");
    let pin = init(&data);
    let server = Server::start(&data);
    let created = runtime.block_on(admin(
        &server,
        reqwest::Method::POST,
        "/v1/admin/tokens",
        Some(json!({"labels": {"env": "bench"}})),
    ));
    let host = root.path().join("host");
    std::fs::create_dir_all(&host).expect("host dir");
    std::fs::write(host.join("machine-id"), format!("{:032x}\n", 1)).expect("machine-id");
    run_ok(
        Command::new(bin_path("muster-agent"))
            .arg("enroll")
            .args(["--server", &server.agent_url()])
            .args(["--token", created["token"].as_str().expect("token")])
            .args(["--pin", &pin])
            .arg("--config")
            .arg(host.join("agent.toml"))
            .arg("--state-dir")
            .arg(host.join("state"))
            .arg("--machine-id-file")
            .arg(host.join("machine-id"))
            .args(["--hostname", "bench-0"])
            .args(["--scrape-address", "127.0.0.1:12345"]),
    );
    drop(server);

    let start = Instant::now();
    let deep = copy_host(&data.join("muster.db"), hosts);
    eprintln!("{hosts} hosts in the database ({:.1?})", start.elapsed());
    let start = Instant::now();
    let server = Server::builder(&data)
        .deadline(Duration::from_secs(900))
        .start();
    eprintln!(
        "server started over {hosts} hosts ({:.1?})",
        start.elapsed()
    );

    // Redirects not followed: the sign-in's 303 carries the session cookie.
    let pem = std::fs::read(data.join("ca.crt")).expect("ca.crt");
    let client = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .tls_certs_only([reqwest::Certificate::from_pem(&pem).expect("CA")])
        .build()
        .expect("client");
    let base = server.admin_url();
    runtime.block_on(async {
        let resp = client
            .post(format!("{base}/signin"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("token={}", server.admin_token().trim()))
            .send()
            .await
            .expect("sign in");
        let cookie = resp
            .headers()
            .get("set-cookie")
            .expect("session cookie")
            .to_str()
            .expect("ascii")
            .split(';')
            .next()
            .expect("cookie")
            .to_string();
        let pages = [
            ("hosts page, by name, first page", "/hosts".to_string()),
            ("hosts page, by name, half-way down", format!("/hosts?after={}", deep[0])),
            ("hosts page, last seen first, first page", "/hosts?sort=last_seen".to_string()),
            ("hosts page, last seen first, half-way down", format!("/hosts?sort=last_seen&after={}", deep[1])),
            ("hosts page, newest first, first page", "/hosts?sort=enrolled".to_string()),
            ("hosts page, newest first, half-way down", format!("/hosts?sort=enrolled&after={}", deep[2])),
            ("hosts page, state filter no host matches", "/hosts?state=config_failed".to_string()),
            ("overview", "/".to_string()),
        ];
        for (what, path) in pages {
            // Full pages, except where no host matches or on the overview.
            let rows = match path.as_str() {
                "/" => None,
                p if p.contains("state=") => Some(0),
                _ => Some(50),
            };
            let mut server_ms = Vec::new();
            let mut client_ms = Vec::new();
            for _ in 0..RUNS {
                let t = Instant::now();
                let resp = client
                    .get(format!("{base}{path}"))
                    .header("cookie", &cookie)
                    .send()
                    .await
                    .expect("hosts page");
                assert!(resp.status().is_success(), "{path}: {}", resp.status());
                let timing = resp.headers()["server-timing"]
                    .to_str()
                    .expect("ascii")
                    .to_string();
                let body = resp.text().await.expect("body");
                if let Some(rows) = rows {
                    assert_eq!(body.matches("data-host=").count(), rows, "{path}: rows");
                }
                client_ms.push(t.elapsed().as_secs_f64() * 1000.0);
                server_ms.push(
                    timing
                        .rsplit("dur=")
                        .next()
                        .and_then(|d| d.parse::<f64>().ok())
                        .expect("render;dur=MS"),
                );
            }
            println!(
                "{what} over {hosts} hosts: server median {:.1} ms, max {:.1} ms; client median {:.1} ms ({RUNS} runs)",
                median(&mut server_ms),
                server_ms.iter().cloned().fold(0.0, f64::max),
                median(&mut client_ms),
            );
        }
    });
    drop(server);
    std::thread::sleep(Duration::from_millis(100));
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Copies the one enrolled host until the database holds `total` hosts:
/// ids `bench-000001`…, each its own machine id and check-in time, enrolled
/// in groups of ten at a time. Returns the cursors (`KEY.ID`) of the host
/// half-way down the list by name, by last seen and by enrollment.
fn copy_host(db: &std::path::Path, total: usize) -> [String; 3] {
    let conn = rusqlite::Connection::open(db).expect("open database");
    let columns: Vec<String> = conn
        .prepare("SELECT name FROM pragma_table_info('hosts')")
        .expect("columns")
        .query_map([], |r| r.get(0))
        .expect("columns")
        .collect::<Result<_, _>>()
        .expect("columns");
    let select: Vec<String> = columns
        .iter()
        .map(|c| match c.as_str() {
            "id" => "printf('bench-%06d', n.i)".to_string(),
            "machine_id" => "printf('%032x', n.i + 1000)".to_string(),
            "last_seen" => "h.last_seen - n.i".to_string(),
            "enrolled_at" => "h.enrolled_at - n.i / 10".to_string(),
            other => format!("h.{other}"),
        })
        .collect();
    conn.execute(
        &format!(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?1)
             INSERT INTO hosts ({}) SELECT {} FROM n, (SELECT * FROM hosts LIMIT 1) h",
            columns.join(", "),
            select.join(", ")
        ),
        [total as i64 - 1],
    )
    .expect("copy hosts");
    let half = (total / 2) as i64;
    [
        "0 AS k, id ORDER BY id",
        "last_seen, id ORDER BY last_seen DESC, id DESC",
        "enrolled_at, id ORDER BY enrolled_at DESC, id DESC",
    ]
    .map(|order| {
        let (select, order) = order.split_once(" ORDER BY ").expect("order");
        conn.query_row(
            &format!("SELECT {select} FROM hosts ORDER BY {order} LIMIT 1 OFFSET ?1"),
            [half],
            |r| {
                Ok(format!(
                    "{}.{}",
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?
                ))
            },
        )
        .expect("cursor")
    })
}
