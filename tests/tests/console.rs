//! The web console (issue 10) driven by a real headless Chromium through
//! chromedriver (WebDriver, `fantoccini`), against the real server binary,
//! real agents and the Alloy stand-in: sign-in and sign-out, a POST without
//! the CSRF token refused, the enroll form (a mistyped label gets a
//! suggestion; valid labels give the line a real agent runs, and the host
//! shows up `config_applied`), a label edit reaching the target file,
//! decommission, a batch upload (a CSV file chosen in the file input) with
//! a bad row (its line number shown), import and live status; framing only
//! from the origins in `console_frame_ancestors`. Every page is checked for
//! JavaScript console errors (CSP violations included) and saved as a
//! screenshot under `target/console-screenshots/`.
//!
//! Needs Debian's `chromium` and `chromium-driver`: without them the tests
//! are ignored ("SKIPPED: needs chromium ...") locally and fail in CI
//! (`CI=true`); see `muster_e2e::prereqs`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use muster_e2e::fleet::{
    self, append_settings, disable_detected_services, edit_settings, PretendHost, SharedAlloy,
    FAST_CHECKINS,
};
use muster_e2e::{prereqs, run_ok, tools, Process, Server};
use serde_json::{json, Value};

const DEADLINE: Duration = Duration::from_secs(60);

/// An overrides.toml rule after the fixture's: hosts labelled
/// `location=rack-7` get the process exporter.
const RACK_7_RULE: &str = "\n[[rule]]\nmatch = { location = \"rack-7\" }\n\
    [rule.services.process]\nenabled = true\nnames = [\"nginx\"]\n";

const SCHEMA: &str =
    "\n[labels]\nrequired = [\"environment\"]\nallowed = [\"location\", \"team\"]\n\
    [labels.rules.environment]\nvalues = [\"production\", \"staging\", \"dev\"]\n\
    [labels.rules.location]\npattern = \"rack-[0-9]+\"\n";

/// chromedriver on a free loopback port and a WebDriver session with a
/// fresh profile that trusts exactly the server's key.
struct Browser {
    client: Client,
    driver_url: String,
    _driver: Process,
    _profile: tempfile::TempDir,
    base: String,
    shots: PathBuf,
    test: &'static str,
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

impl Browser {
    async fn start(test: &'static str, server: &Server, pin: &str) -> Browser {
        let port = free_port();
        let driver = Process::spawn(
            Command::new("chromedriver")
                .arg(format!("--port={port}"))
                .stdin(Stdio::null()),
        );
        let driver_url = format!("http://127.0.0.1:{port}");
        let http = muster_e2e::http_client();
        let until = Instant::now() + DEADLINE;
        loop {
            if let Ok(resp) = http.get(format!("{driver_url}/status")).send().await {
                if resp.status().is_success() {
                    break;
                }
            }
            assert!(Instant::now() < until, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = tempfile::tempdir().expect("profile dir");
        let spki = pin.strip_prefix("sha256//").expect("sha256// pin");
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--window-size=1280,900",
                    format!("--user-data-dir={}", profile.path().display()),
                    format!("--ignore-certificate-errors-spki-list={spki}"),
                ],
            }),
        );
        caps.insert("goog:loggingPrefs".into(), json!({"browser": "ALL"}));
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&driver_url)
            .await
            .expect("WebDriver session");
        let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/console-screenshots");
        std::fs::create_dir_all(&shots).expect("screenshot dir");
        Browser {
            client,
            driver_url,
            _driver: driver,
            _profile: profile,
            base: server.admin_url(),
            shots,
            test,
        }
    }

    async fn goto(&self, path: &str) {
        self.client
            .goto(&format!("{}{path}", self.base))
            .await
            .unwrap_or_else(|e| panic!("goto {path}: {e}"));
    }

    async fn path(&self) -> String {
        let url = self.client.current_url().await.expect("url");
        let mut p = url.path().to_string();
        if let Some(q) = url.query() {
            p.push('?');
            p.push_str(q);
        }
        p
    }

    async fn find(&self, css: &str) -> fantoccini::elements::Element {
        self.client
            .wait()
            .at_most(DEADLINE)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no element {css}: {e}"))
    }

    async fn text(&self, css: &str) -> String {
        self.find(css).await.text().await.expect("text")
    }

    async fn fill(&self, css: &str, text: &str) {
        let el = self.find(css).await;
        el.clear().await.expect("clear");
        el.send_keys(text).await.expect("type");
    }

    async fn click(&self, css: &str) {
        self.find(css).await.click().await.expect("click");
    }

    async fn select(&self, css: &str, value: &str) {
        self.find(css)
            .await
            .select_by_value(value)
            .await
            .unwrap_or_else(|e| panic!("select {value} in {css}: {e}"));
    }

    /// Waits until the page's text contains `needle`.
    async fn wait_text(&self, css: &str, needle: &str) -> String {
        let until = Instant::now() + DEADLINE;
        loop {
            let text = match self.client.find(Locator::Css(css)).await {
                Ok(el) => el.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            };
            if text.contains(needle) {
                return text;
            }
            assert!(
                Instant::now() < until,
                "{needle:?} never appeared in {css}; last text:\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// The browser's console messages since the last call.
    async fn browser_log(&self) -> Vec<Value> {
        let session = self
            .client
            .session_id()
            .await
            .expect("session")
            .expect("id");
        let logs: Value = muster_e2e::http_client()
            .post(format!("{}/session/{session}/se/log", self.driver_url))
            .json(&json!({"type": "browser"}))
            .send()
            .await
            .expect("browser log")
            .json()
            .await
            .expect("log JSON");
        logs["value"].as_array().expect("log entries").clone()
    }

    /// The current value of a form field.
    async fn value(&self, css: &str) -> String {
        self.find(css)
            .await
            .prop("value")
            .await
            .expect("value")
            .unwrap_or_default()
    }

    /// Waits until a form field's value contains `needle`.
    async fn wait_text_value(&self, css: &str, needle: &str) {
        let until = Instant::now() + DEADLINE;
        loop {
            let value = self.value(css).await;
            if value.contains(needle) {
                return;
            }
            assert!(
                Instant::now() < until,
                "{needle:?} never appeared in {css}; last value:\n{value}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Saves a screenshot and fails on any console message of level SEVERE
    /// (JavaScript errors, CSP violations, failed loads) since the last call.
    async fn check_page(&self, name: &str) {
        let png = self.client.screenshot().await.expect("screenshot");
        self.save_shot(name, png);
        let severe: Vec<Value> = self
            .browser_log()
            .await
            .into_iter()
            .filter(|e| e["level"] == "SEVERE")
            // A form answered 4xx on purpose is logged as a failed load.
            .filter(|e| !e["message"].as_str().unwrap_or("").contains("status of 4"))
            .collect();
        assert!(severe.is_empty(), "console errors on {name}: {severe:#?}");
    }

    /// Saves a screenshot of one element (below the fold too).
    async fn shoot_element(&self, css: &str, name: &str) {
        let png = self.find(css).await.screenshot().await.expect("screenshot");
        self.save_shot(name, png);
    }

    fn save_shot(&self, name: &str, png: Vec<u8>) {
        let file = self.shots.join(format!("{}-{name}.png", self.test));
        std::fs::write(&file, png).expect("write screenshot");
    }

    /// Loads `page` (another site that shows the console's sign-in page in
    /// an iframe) and says whether the console showed in the frame; when it
    /// did not, the browser must have logged the `frame-ancestors` refusal.
    async fn console_shows_in_frame(&self, page: &str) -> bool {
        self.client.goto(page).await.expect("framing page");
        self.find("iframe#console").await;
        let until = Instant::now() + DEADLINE;
        loop {
            let refusals: Vec<String> = self
                .browser_log()
                .await
                .iter()
                .filter_map(|e| e["message"].as_str())
                .filter(|m| m.contains("frame-ancestors"))
                .map(String::from)
                .collect();
            self.client.enter_frame(0).await.expect("into the frame");
            let signin = self.client.find(Locator::Css("#token")).await.is_ok();
            self.client
                .enter_parent_frame()
                .await
                .expect("out of the frame");
            match (signin, refusals.is_empty()) {
                (true, true) => return true,
                (false, false) => return false,
                (true, false) => panic!("the console showed in a frame it refused: {refusals:?}"),
                (false, true) => {}
            }
            assert!(
                Instant::now() < until,
                "the frame on {page} neither showed the console nor was refused"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn sign_in(&self, token: &str) {
        self.goto("/").await;
        assert!(
            self.path().await.starts_with("/signin"),
            "not sent to sign in"
        );
        self.fill("#token", token).await;
        self.click("form button[type=submit]").await;
        self.find("header form.signout").await;
    }
}

/// The session cookie the browser holds.
async fn session_cookie(browser: &Browser) -> String {
    let cookie = browser
        .client
        .get_named_cookie("muster_session")
        .await
        .expect("session cookie");
    assert_eq!(cookie.http_only(), Some(true));
    assert_eq!(cookie.secure(), Some(true));
    assert_eq!(format!("{:?}", cookie.same_site()), "Some(Strict)");
    format!("muster_session={}", cookie.value())
}

/// Another site on loopback (plain HTTP on its own port: another origin)
/// whose page `/frame/PORT` shows the console on admin port PORT in an
/// iframe, as a Grafana panel would.
struct FramingSite {
    origin: String,
    task: tokio::task::JoinHandle<()>,
}

impl FramingSite {
    async fn start() -> FramingSite {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let origin = format!("http://{}", listener.local_addr().expect("addr"));
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 2048];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&head);
                    let path = head.split_whitespace().nth(1).unwrap_or("/");
                    let (status, body) = match path.strip_prefix("/frame/") {
                        Some(port) if port.parse::<u16>().is_ok() => (
                            "200 OK",
                            format!(
                                "<!doctype html><title>Another site</title><h1>Another site</h1>\
                                 <iframe id=\"console\" src=\"https://127.0.0.1:{port}/signin\" \
                                 width=\"900\" height=\"500\"></iframe>"
                            ),
                        ),
                        _ => ("404 Not Found", String::new()),
                    };
                    let _ = stream
                        .write_all(
                            format!(
                                "HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\n\
                                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                                body.len()
                            )
                            .as_bytes(),
                        )
                        .await;
                });
            }
        });
        FramingSite { origin, task }
    }

    /// Its page framing `server`'s console.
    fn page(&self, server: &Server) -> String {
        format!("{}/frame/{}", self.origin, server.admin_addr().port())
    }
}

impl Drop for FramingSite {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    server: Server,
    pin: String,
    alloy: SharedAlloy,
}

async fn fixture() -> Fixture {
    tools::require(&[&prereqs::CHROMIUM]);
    muster_e2e::install_crypto();
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().to_path_buf();
    let data = root.join("data");
    let pin = fleet::init(&data);
    edit_settings(&data, &[FAST_CHECKINS]);
    append_settings(&data, SCHEMA);
    disable_detected_services(&data);
    let mut overrides = std::fs::read_to_string(data.join("overrides.toml")).expect("overrides");
    overrides.push_str(RACK_7_RULE);
    std::fs::write(data.join("overrides.toml"), overrides).expect("overrides.toml");
    let server = Server::start(&data);
    let alloy = SharedAlloy::start(&root.join("alloy")).await;
    Fixture {
        _dir: dir,
        root,
        server,
        pin,
        alloy,
    }
}

/// The value after `flag` in a command line.
fn flag_value<'a>(line: &'a str, flag: &str) -> &'a str {
    let mut words = line.split_whitespace();
    words
        .by_ref()
        .find(|w| *w == flag)
        .unwrap_or_else(|| panic!("{flag} not in {line}"));
    words.next().expect("flag value")
}

/// Waits until the file at `path` exists and its text satisfies `done`.
async fn wait_for_file(path: &Path, done: impl Fn(&str) -> bool) -> String {
    let until = Instant::now() + DEADLINE;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if done(&text) {
            return text;
        }
        assert!(
            Instant::now() < until,
            "{} never got there:\n{text}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn target_file(f: &Fixture, host_id: &str) -> PathBuf {
    f.server
        .data_dir()
        .join("targets")
        .join(format!("{host_id}.json"))
}

#[cfg_attr(
    not(have_chromium),
    ignore = "SKIPPED: needs chromium and chromedriver -- apt-get install chromium chromium-driver"
)]
#[tokio::test]
async fn enroll_in_the_browser_then_edit_labels_and_decommission() {
    let f = fixture().await;
    let b = Browser::start("host", &f.server, &f.pin).await;

    // Sign-in: a wrong token is refused and says what to use.
    b.goto("/hosts").await;
    assert_eq!(b.path().await, "/signin?next=%2Fhosts");
    b.check_page("signin").await;
    b.fill("#token", "mta_0123456789ab_wrong").await;
    b.click("form button[type=submit]").await;
    assert!(b
        .text("#signin-error")
        .await
        .contains("not a valid admin token"));
    b.check_page("signin-refused").await;
    b.fill("#token", f.server.admin_token().trim()).await;
    b.click("form button[type=submit]").await;
    b.find("header form.signout").await;
    assert_eq!(b.path().await, "/hosts", "back where the sign-in started");
    assert!(b.text("main").await.contains("No hosts yet"));
    b.check_page("hosts-empty").await;
    b.goto("/").await;
    assert!(b.text("main").await.contains("Enroll the first one"));
    b.check_page("overview-empty").await;

    // Enroll: a mistyped label name gets the nearest allowed one.
    b.goto("/enroll").await;
    b.check_page("enroll-form").await;
    b.select("#label-environment", "staging").await;
    b.fill("#extra", "locaton=rack-4").await;
    b.click("#enroll-form button[type=submit]").await;
    let error = b.text("#enroll-error").await;
    assert!(error.contains("did you mean \"location\"?"), "{error}");
    b.check_page("enroll-suggestion").await;
    b.fill("#extra", "").await;
    b.fill("#label-location", "rack-4").await;
    b.select("#label-environment", "staging").await;
    b.click("#enroll-form button[type=submit]").await;
    let line = b.text("#enroll-command").await;
    assert!(line.starts_with("muster-agent enroll --server "), "{line}");
    let install = b.text("#install-command").await;
    assert!(
        install.contains("--pinnedpubkey") && install.contains(&f.pin),
        "{install}"
    );
    b.check_page("enroll-lines").await;

    // A real agent runs the line; the page shows the host by itself.
    let host = PretendHost::new(&f.root.join("hosts"), "web-console-1", 1);
    run_ok(&mut host.enroll(
        &f.server.agent_url(),
        flag_value(&line, "--token"),
        flag_value(&line, "--pin"),
        &f.alloy,
    ));
    run_ok(&mut host.run(true));
    b.wait_text("#token-hosts", "config_applied").await;
    b.check_page("enroll-host-appeared").await;

    b.goto("/hosts").await;
    let row = b.wait_text("table.hosts", "web-console-1").await;
    assert!(row.contains("config_applied"), "{row}");
    assert!(
        row.contains("environment=staging") && row.contains("location=rack-4"),
        "{row}"
    );
    b.check_page("hosts").await;
    b.click("table.hosts a").await;
    let host_id = b.path().await.trim_start_matches("/hosts/").to_string();
    b.check_page("host").await;

    // Inline label edit: the target file follows.
    b.fill("#set-location", "rack-7").await;
    b.fill("input[name=new_name]", "team").await;
    b.fill("input[name=new_value]", "core").await;
    b.click("#labels-form button[type=submit]").await;
    assert!(b.text("#notice").await.contains("Labels saved"));
    b.check_page("host-labels-saved").await;
    let targets = wait_for_file(&target_file(&f, &host_id), |t| {
        (t.contains("\"location\": \"rack-7\"") || t.contains("\"location\":\"rack-7\""))
            && t.contains("core")
    })
    .await;
    assert!(targets.contains("staging"), "{targets}");
    // A value the schema refuses is shown and changes nothing.
    b.fill("#set-location", "the-basement").await;
    b.click("#labels-form button[type=submit]").await;
    assert!(b.text("#host-error").await.contains("rack-[0-9]+"));
    b.check_page("host-labels-refused").await;

    // The edit re-rendered the config (the overrides rule for rack-7 adds
    // the process exporter) while the agent still runs the one it applied:
    // the host page shows the rule, the service and the line diff, and the
    // overview counts the drift.
    b.goto(&format!("/hosts/{host_id}")).await;
    let rules = b.text("#overrides").await;
    assert!(
        rules.contains("Rule 2")
            && rules.contains("location=rack-7")
            && rules.contains("process: enabled"),
        "{rules}"
    );
    let services = b.text("#services").await;
    assert!(
        services.contains("process") && services.contains("enabled by overrides.toml"),
        "{services}"
    );
    let mut added = Vec::new();
    for line in b
        .client
        .find_all(Locator::Css("#config-diff .diff-add"))
        .await
        .expect("diff lines")
    {
        added.push(line.text().await.expect("text"));
    }
    assert!(
        added
            .iter()
            .any(|l| l.contains("prometheus.exporter.process")),
        "the diff adds the process exporter: {added:?}"
    );
    assert_eq!(b.text("h1 .badge").await, "drift");
    b.check_page("host-config-diff").await;
    b.shoot_element("#config-diff", "host-config-diff-lines")
        .await;
    b.goto("/").await;
    assert_eq!(b.text(".card.state-drift .count").await, "1");
    let attention = b.text("#attention").await;
    assert!(
        attention.contains("web-console-1") && attention.contains("older config"),
        "{attention}"
    );
    // The host runs a config, but not the rendered one: its badge says so,
    // and the rollout at 0 % says it in words, not as an empty bar.
    assert_eq!(b.text("#attention .badge").await, "drift");
    assert_eq!(b.text("#recent .badge").await, "drift");
    assert_eq!(b.text("#rollout-percent").await, "0 %");
    b.goto("/hosts?state=drift").await;
    let drifting = b.text("table.hosts").await;
    assert!(drifting.contains("web-console-1"), "{drifting}");
    b.goto("/hosts?state=scrape_ok").await;
    assert!(b.text("main").await.contains("No host matches"));
    b.goto("/").await;
    b.check_page("overview-drift").await;

    // A state-changing request with the session but without the CSRF token
    // is refused and changes nothing.
    let cookie = session_cookie(&b).await;
    let resp = f
        .server
        .client()
        .post(format!(
            "{}/hosts/{host_id}/decommission",
            f.server.admin_url()
        ))
        .header("cookie", &cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("confirm=web-console-1")
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), reqwest::StatusCode::FORBIDDEN);
    let csp = resp.headers()["content-security-policy"]
        .to_str()
        .expect("csp")
        .to_string();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert!(target_file(&f, &host_id).exists(), "nothing decommissioned");

    // With no console_frame_ancestors, no other site may show the console
    // in a frame.
    let other = FramingSite::start().await;
    assert!(
        !b.console_shows_in_frame(&other.page(&f.server)).await,
        "framed by {} without console_frame_ancestors",
        other.origin
    );
    b.check_page("framing-refused").await;

    // Decommission, confirmed by typing the hostname.
    b.goto(&format!("/hosts/{host_id}")).await;
    let button = b.find("#decommission-button").await;
    assert!(
        !button.is_enabled().await.expect("enabled?"),
        "disabled until typed"
    );
    b.fill("#confirm", "web-console-1").await;
    assert!(button.is_enabled().await.expect("enabled?"));
    button.click().await.expect("click");
    assert!(b.text("#notice").await.contains("Decommissioned"));
    b.check_page("host-decommissioned").await;
    let until = Instant::now() + DEADLINE;
    while target_file(&f, &host_id).exists() {
        assert!(Instant::now() < until, "the target file was never retired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The audit log shows who did it.
    let who = b.text("header .who").await;
    b.goto(&format!("/audit?actor={who}")).await;
    b.check_page("audit").await;
    let audit = b.text("main table").await;
    assert!(
        audit.contains("host.decommission") && audit.contains("host.label"),
        "{audit}"
    );
    // The audit log by host and time; a time it cannot read says how.
    b.goto(&format!("/audit?host={host_id}&since=1h")).await;
    let by_host = b.text("main table").await;
    assert!(
        by_host.contains("host.decommission") && !by_host.contains("console.signin"),
        "{by_host}"
    );
    b.goto("/audit?since=lately").await;
    assert!(b.text("p.error").await.contains("e.g. 30m, 24h"));
    b.check_page("audit-refused").await;

    // Tokens: a second one, revoked on the tokens page, enrolls nothing.
    b.goto("/enroll").await;
    b.select("#label-environment", "dev").await;
    b.fill("#uses", "5").await;
    b.click("#enroll-form button[type=submit]").await;
    let line = b.text("#enroll-command").await;
    let token = flag_value(&line, "--token").to_string();
    let token_id = token.split('_').nth(1).expect("token id").to_string();
    b.goto("/tokens").await;
    b.check_page("tokens").await;
    b.click(&format!("tr[data-token='{token_id}'] button"))
        .await;
    assert!(b.text("p.notice").await.contains("revoked"));
    assert_eq!(
        b.text(&format!("tr[data-token='{token_id}'] .badge")).await,
        "revoked"
    );
    b.check_page("tokens-revoked").await;
    let late = PretendHost::new(&f.root.join("hosts"), "web-console-2", 2);
    let refused = late
        .enroll(&f.server.agent_url(), &token, &f.pin, &f.alloy)
        .output()
        .expect("run the agent");
    assert!(!refused.status.success(), "a revoked token enrolled a host");
    b.goto("/").await;
    b.check_page("overview").await;

    // On a phone.
    b.client.set_window_size(390, 844).await.expect("resize");
    b.goto("/hosts?all=1").await;
    b.check_page("hosts-phone").await;
    b.goto(&format!("/hosts/{host_id}")).await;
    b.check_page("host-phone").await;
    b.goto("/").await;
    b.check_page("overview-phone").await;
    b.goto("/audit").await;
    b.check_page("audit-phone").await;
    b.client.set_window_size(1280, 900).await.expect("resize");

    // Sign-out ends the session.
    b.click("header form.signout button").await;
    b.find("#token").await;
    b.goto("/hosts").await;
    assert!(b.path().await.starts_with("/signin"));
    let resp = f
        .server
        .client()
        .get(format!("{}/hosts", f.server.admin_url()))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("get");
    assert_eq!(resp.url().path(), "/signin", "the old cookie is signed out");
    b.client.close().await.expect("close");
}

#[cfg_attr(
    not(have_chromium),
    ignore = "SKIPPED: needs chromium and chromedriver -- apt-get install chromium chromium-driver"
)]
#[tokio::test]
async fn batch_upload_reports_the_bad_line_then_imports_with_live_status() {
    let f = fixture().await;
    let b = Browser::start("batch", &f.server, &f.pin).await;
    b.sign_in(f.server.admin_token().trim()).await;
    b.goto("/batches").await;
    b.check_page("batches-empty").await;

    let csv = "hostname,environment,location\n\
               db-console-1,production,rack-1\n\
               db-console-2,prod,rack-2\n\
               db-console-3,staging,rack-3\n";
    // The file chosen in the form's file input (read into the rows field
    // by the page's script, the batch named after the file).
    let file = f.root.join("console-rows.csv");
    std::fs::write(&file, csv).expect("csv file");
    b.find("#file")
        .await
        .send_keys(&file.display().to_string())
        .await
        .expect("choose the file");
    b.wait_text_value("#content", "db-console-3,staging,rack-3")
        .await;
    assert_eq!(b.value("#name").await, "console-rows.csv");
    b.fill("#name", "console rows").await;
    b.click("#import").await;
    let report = b.text("#report").await;
    assert!(report.contains("nothing was imported"), "{report}");
    let line = b.text("#report td.line").await;
    assert_eq!(line, "3", "the bad row's line number: {report}");
    assert!(
        report.contains("must be one of production, staging, dev"),
        "{report}"
    );
    b.check_page("batch-report").await;

    b.click("#import-valid").await;
    b.find("#batch-rows").await;
    b.check_page("batch-imported").await;
    let status = b.wait_text("#batch-rows", "pending").await;
    assert!(
        status.contains("db-console-1") && status.contains("db-console-3"),
        "{status}"
    );
    assert!(!status.contains("db-console-2"), "{status}");

    // The rows' agents enroll with their own tokens (the page lists their
    // enroll lines in row order); the live status follows without a reload.
    let page = b.client.source().await.expect("source");
    let tokens: Vec<&str> = page
        .split("--token ")
        .skip(1)
        .filter_map(|rest| rest.split_whitespace().next())
        .collect();
    assert_eq!(tokens.len(), 2, "one enroll line per valid row");
    let mut hosts = Vec::new();
    for (i, (name, token)) in ["db-console-1", "db-console-3"]
        .iter()
        .zip(&tokens)
        .enumerate()
    {
        let host = PretendHost::new(&f.root.join("hosts"), name, 10 + i);
        run_ok(&mut host.enroll(&f.server.agent_url(), token, &f.pin, &f.alloy));
        run_ok(&mut host.run(true));
        hosts.push(host);
    }
    let until = Instant::now() + DEADLINE;
    loop {
        let rows = b
            .client
            .find_all(Locator::Css("#batch-rows tr[data-state=config_applied]"))
            .await
            .expect("rows");
        if rows.len() == 2 {
            break;
        }
        assert!(
            Instant::now() < until,
            "rows never reached config_applied without a reload"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    b.check_page("batch-live").await;
    b.click("#batch-rows a").await;
    b.check_page("batch-host").await;
    b.goto("/batches").await;
    b.check_page("batches").await;
    b.client.close().await.expect("close");
}

#[cfg_attr(
    not(have_chromium),
    ignore = "SKIPPED: needs chromium and chromedriver -- apt-get install chromium chromium-driver"
)]
#[tokio::test]
async fn only_the_configured_origins_may_frame_the_console() {
    tools::require(&[&prereqs::CHROMIUM]);
    muster_e2e::install_crypto();
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let pin = fleet::init(&data);
    // Two other sites: the dashboard listed in server.toml, and another.
    let dashboard = FramingSite::start().await;
    let other = FramingSite::start().await;
    edit_settings(
        &data,
        &[(
            "# console_frame_ancestors = [\"https://grafana.example.com\"]",
            &format!("console_frame_ancestors = [\"{}\"]", dashboard.origin),
        )],
    );
    let server = Server::start(&data);
    let resp = server
        .client()
        .get(format!("{}/signin", server.admin_url()))
        .send()
        .await
        .expect("sign-in page");
    let csp = resp.headers()["content-security-policy"]
        .to_str()
        .expect("csp")
        .to_string();
    assert!(
        csp.ends_with(&format!("frame-ancestors {}", dashboard.origin)),
        "{csp}"
    );

    let b = Browser::start("framing", &server, &pin).await;
    assert!(
        b.console_shows_in_frame(&dashboard.page(&server)).await,
        "{} is listed in console_frame_ancestors",
        dashboard.origin
    );
    b.check_page("framed-by-listed-origin").await;
    assert!(
        !b.console_shows_in_frame(&other.page(&server)).await,
        "{} is not listed in console_frame_ancestors",
        other.origin
    );
    b.check_page("framing-refused-other-origin").await;
    b.client.close().await.expect("close");
}
