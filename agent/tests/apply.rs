//! The real apply path against stand-ins: small shell scripts play `alloy` and
//! the fallback reload command, and a tiny HTTP listener plays Alloy's
//! `/-/ready` and `/-/reload` (which, like Alloy's, loads the live file and
//! answers 400 with the error when a component cannot be built: here, when
//! the file contains LOADFAIL).

#![cfg(unix)]

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use muster_agent::apply::{apply, ApplySettings, Step};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The stand-in scripts, written once before any test spawns a process:
/// writing an executable while another thread forks can make exec fail with
/// "text file busy".
struct Scripts {
    _dir: tempfile::TempDir,
    alloy_new: PathBuf,
    alloy_old: PathBuf,
    reload: PathBuf,
}

/// `alloy`: `--version` prints the version; `validate|fmt [FLAGS] FILE` logs
/// its arguments beside FILE and fails when FILE contains BROKEN.
fn alloy_script(version: &str) -> String {
    format!(
        r#"#!/bin/sh
if [ "$1" = "--version" ]; then
  echo "alloy, version {version} (branch: HEAD, revision: 0123abc)"
  exit 0
fi
for file; do :; done
echo "$@" >> "$(dirname "$file")/alloy.log"
if grep -q BROKEN "$file"; then
  echo "$file:3:7: unexpected token BROKEN" >&2
  exit 1
fi
exit 0
"#
    )
}

/// `reload DIR LIVE`: logs the live file's content at reload time; fails when
/// DIR/fail-reload exists, or once when DIR/fail-reload-once exists.
const RELOAD: &str = r#"#!/bin/sh
cat "$2" >> "$1/reload.log" 2>/dev/null || echo "<no live file>" >> "$1/reload.log"
echo "--" >> "$1/reload.log"
if [ -f "$1/fail-reload" ]; then echo "alloy.service is not active" >&2; exit 1; fi
if [ -f "$1/fail-reload-once" ]; then rm "$1/fail-reload-once"; echo "reload refused" >&2; exit 3; fi
exit 0
"#;

fn scripts() -> &'static Scripts {
    static SCRIPTS: OnceLock<Scripts> = OnceLock::new();
    SCRIPTS.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
            path
        };
        Scripts {
            alloy_new: write("alloy-new", &alloy_script("v1.10.2")),
            alloy_old: write("alloy-old", &alloy_script("v1.8.3")),
            reload: write("reload", RELOAD),
            _dir: dir,
        }
    })
}

/// A pretend Alloy: `/-/ready` answers with the status in `ready`;
/// `/-/reload` logs the live file's content to `http-reload.log` in `dir`
/// and answers 400 with an error when it contains LOADFAIL, else 200.
/// Returns its base URL.
async fn alloy_http(ready: Arc<AtomicU16>, dir: PathBuf, live: PathBuf) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let status = ready.load(Ordering::SeqCst);
            let (dir, live) = (dir.clone(), live.clone());
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let n = socket.read(&mut buf).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]).into_owned();
                let (status, body) = if head.starts_with("POST /-/reload ") {
                    let content =
                        std::fs::read_to_string(&live).unwrap_or_else(|_| "<no live file>".into());
                    let mut log =
                        std::fs::read_to_string(dir.join("http-reload.log")).unwrap_or_default();
                    log.push_str(&format!("{}\n--\n", content.trim_end()));
                    std::fs::write(dir.join("http-reload.log"), log).unwrap();
                    if content.contains("LOADFAIL") {
                        (400, format!("{}:1:1: Failed to build component: building component: open /etc/redis/password: permission denied\n", live.display()))
                    } else {
                        (200, "config reloaded\n".to_string())
                    }
                } else if status == 200 {
                    (200, "Alloy is ready.".to_string())
                } else {
                    (status, "Alloy is not ready.".to_string())
                };
                let reply = format!(
                    "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(reply.as_bytes()).await;
            });
        }
    });
    format!("http://{addr}")
}

/// A URL on a port nothing listens on.
fn dead_url(path: &str) -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("http://127.0.0.1:{port}{path}")
}

struct Host {
    dir: tempfile::TempDir,
    settings: ApplySettings,
    ready: Arc<AtomicU16>,
    /// Alloy's `/-/reload`, which `settings` uses only after
    /// [`Host::with_http_reload`].
    reload_url: String,
}

impl Host {
    /// A host whose `/-/reload` is unreachable, so the reload command (the
    /// fallback) reloads.
    async fn new() -> Host {
        let s = scripts();
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("config.alloy");
        let ready = Arc::new(AtomicU16::new(200));
        let alloy = alloy_http(ready.clone(), dir.path().to_path_buf(), live.clone()).await;
        let settings = ApplySettings {
            alloy_config: live.clone(),
            alloy_bin: s.alloy_new.clone(),
            reload_command: vec![
                s.reload.display().to_string(),
                dir.path().display().to_string(),
                live.display().to_string(),
            ],
            reload_url: dead_url("/-/reload"),
            ready_url: format!("{alloy}/-/ready"),
            ready_timeout: Duration::from_secs(2),
            command_timeout: Duration::from_secs(10),
            alloy_env_file: None,
        };
        Host {
            dir,
            settings,
            ready,
            reload_url: format!("{alloy}/-/reload"),
        }
    }

    /// A host whose Alloy answers `/-/reload`.
    async fn with_http_reload() -> Host {
        let mut host = Host::new().await;
        host.settings.reload_url = host.reload_url.clone();
        host
    }

    /// The live content each `/-/reload` saw, in order.
    fn http_reloads(&self) -> Vec<String> {
        self.read("http-reload.log")
            .split("--\n")
            .filter(|s| !s.is_empty())
            .map(|s| s.trim_end().to_string())
            .collect()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn live(&self) -> Option<String> {
        std::fs::read_to_string(&self.settings.alloy_config).ok()
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).unwrap_or_default()
    }

    /// The live content each reload saw, in order.
    fn reloads(&self) -> Vec<String> {
        self.read("reload.log")
            .split("--\n")
            .filter(|s| !s.is_empty())
            .map(|s| s.trim_end().to_string())
            .collect()
    }

    fn leftovers(&self) -> bool {
        self.path("config.alloy.muster-new").exists()
    }
}

#[tokio::test]
async fn success_swaps_the_file_keeps_the_previous_and_reloads_once() {
    let host = Host::new().await;
    std::fs::write(&host.settings.alloy_config, "old").unwrap();
    let outcome = apply(&host.settings, "new").await;
    assert_eq!(outcome.result, Ok(()));
    assert_eq!(outcome.alloy_version.as_deref(), Some("v1.10.2"));
    assert_eq!(host.live().as_deref(), Some("new"));
    assert_eq!(host.read("config.alloy.muster-prev"), "old");
    assert!(!host.leftovers());
    assert_eq!(host.reloads(), ["new"]);
    let candidate = host.path("config.alloy.muster-new");
    assert_eq!(
        host.read("alloy.log").trim(),
        format!("validate {}", candidate.display())
    );
}

#[tokio::test]
async fn alloy_before_1_9_checks_with_fmt_never_fmt_t() {
    let mut host = Host::new().await;
    host.settings.alloy_bin = scripts().alloy_old.clone();
    let outcome = apply(&host.settings, "first").await;
    assert_eq!(outcome.result, Ok(()));
    assert_eq!(outcome.alloy_version.as_deref(), Some("v1.8.3"));
    let log = host.read("alloy.log");
    let candidate = host.path("config.alloy.muster-new");
    assert_eq!(log.trim(), format!("fmt {}", candidate.display()));
    assert!(!log.contains("-t"), "{log}");
}

#[tokio::test]
async fn a_validation_failure_leaves_the_live_file_untouched() {
    let host = Host::new().await;
    std::fs::write(&host.settings.alloy_config, "old").unwrap();
    let outcome = apply(&host.settings, "x = BROKEN").await;
    let err = outcome.result.unwrap_err();
    assert_eq!(err.step, Step::Validate);
    assert_eq!(err.rollback, None);
    let text = err.to_string();
    assert!(text.contains("unexpected token BROKEN"), "{text}");
    assert!(text.contains("exited with status 1"), "{text}");
    assert_eq!(host.live().as_deref(), Some("old"));
    assert!(!host.leftovers());
    assert!(!host.path("config.alloy.muster-prev").exists());
    assert!(host.reloads().is_empty(), "nothing to reload");
}

#[tokio::test]
async fn a_reload_failure_restores_the_previous_file_and_reloads_again() {
    let host = Host::new().await;
    std::fs::write(&host.settings.alloy_config, "old").unwrap();
    std::fs::write(host.path("fail-reload-once"), "").unwrap();
    let err = apply(&host.settings, "new").await.result.unwrap_err();
    assert_eq!(err.step, Step::Reload);
    assert_eq!(err.rollback, Some(Ok(())));
    let text = err.to_string();
    assert!(
        text.contains("exited with status 3: reload refused"),
        "{text}"
    );
    assert!(text.contains("previous config restored"), "{text}");
    assert_eq!(host.live().as_deref(), Some("old"));
    assert_eq!(host.reloads(), ["new", "old"]);
    assert!(!host.leftovers());
}

#[tokio::test]
async fn a_rollback_whose_reload_fails_too_says_so() {
    let host = Host::new().await;
    std::fs::write(&host.settings.alloy_config, "old").unwrap();
    std::fs::write(host.path("fail-reload"), "").unwrap();
    let err = apply(&host.settings, "new").await.result.unwrap_err();
    assert_eq!(err.step, Step::Reload);
    assert!(matches!(err.rollback, Some(Err(_))), "{err}");
    assert!(err.to_string().contains("rollback failed too"), "{err}");
    assert!(
        err.to_string().contains("alloy.service is not active"),
        "{err}"
    );
    assert_eq!(
        host.live().as_deref(),
        Some("old"),
        "the file is restored even so"
    );
}

#[tokio::test]
async fn not_ready_in_time_restores_the_previous_file() {
    let host = Host::new().await;
    let mut settings = host.settings.clone();
    settings.ready_timeout = Duration::from_millis(600);
    host.ready.store(503, Ordering::SeqCst);
    std::fs::write(&settings.alloy_config, "old").unwrap();
    let started = std::time::Instant::now();
    let err = apply(&settings, "new").await.result.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(err.step, Step::Ready);
    assert_eq!(err.rollback, Some(Ok(())));
    assert!(err.to_string().contains("503"), "{err}");
    assert_eq!(host.live().as_deref(), Some("old"));
    assert_eq!(host.reloads(), ["new", "old"]);
}

#[tokio::test]
async fn with_no_previous_file_a_failure_removes_the_new_one() {
    let host = Host::new().await;
    std::fs::write(host.path("fail-reload-once"), "").unwrap();
    let err = apply(&host.settings, "new").await.result.unwrap_err();
    assert_eq!(err.step, Step::Reload);
    assert_eq!(err.rollback, Some(Ok(())));
    assert_eq!(host.live(), None);
    assert_eq!(host.reloads(), ["new", "<no live file>"]);
}

#[tokio::test]
async fn a_missing_alloy_is_reported_by_path() {
    let mut host = Host::new().await;
    let missing = host.path("no-such-alloy");
    host.settings.alloy_bin = missing.clone();
    std::fs::write(&host.settings.alloy_config, "old").unwrap();
    // A config the built-in syntax checker accepts: the missing binary is
    // what fails.
    let outcome = apply(&host.settings, "logging { }\n").await;
    assert_eq!(outcome.alloy_version, None);
    let err = outcome.result.unwrap_err();
    assert_eq!(err.step, Step::FindAlloy);
    assert!(
        err.to_string()
            .contains(&format!("alloy not found at {}", missing.display())),
        "{err}"
    );
    assert_eq!(host.live().as_deref(), Some("old"));
    assert!(!host.leftovers());
}

#[tokio::test]
async fn a_dead_ready_port_times_out_within_the_limit() {
    let mut host = Host::new().await;
    // A port with nothing listening: connection refused on every poll.
    host.settings.ready_url = dead_url("/-/ready");
    host.settings.ready_timeout = Duration::from_millis(500);
    let started = std::time::Instant::now();
    let err = apply(&host.settings, "new").await.result.unwrap_err();
    assert_eq!(err.step, Step::Ready);
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(host.live(), None);
}

#[tokio::test]
async fn alloy_confirms_the_reload_over_http_and_the_config_becomes_the_rollback_target() {
    let host = Host::with_http_reload().await;
    std::fs::write(&host.settings.alloy_config, "old").unwrap();
    let outcome = apply(&host.settings, "new").await;
    assert_eq!(outcome.result, Ok(()));
    assert_eq!(outcome.warning, None);
    assert_eq!(host.http_reloads(), ["new"]);
    assert!(host.reloads().is_empty(), "the fallback command never ran");
    assert_eq!(host.read("config.alloy.muster-accepted"), "new");
    assert_eq!(host.read("config.alloy.muster-prev"), "old");
}

#[tokio::test]
async fn a_config_alloy_refuses_at_load_is_reported_with_alloys_text_and_rolled_back() {
    let host = Host::with_http_reload().await;
    std::fs::write(&host.settings.alloy_config, "old").unwrap();
    // The stand-in `alloy validate` passes it: only loading it fails.
    let err = apply(&host.settings, "new LOADFAIL")
        .await
        .result
        .unwrap_err();
    assert_eq!(err.step, Step::Reload);
    assert_eq!(err.rollback, Some(Ok(())));
    let text = err.to_string();
    assert!(
        text.contains("Alloy refused the config (HTTP 400"),
        "{text}"
    );
    assert!(
        text.contains("Failed to build component: building component: open /etc/redis/password: permission denied"),
        "{text}"
    );
    assert_eq!(host.live().as_deref(), Some("old"));
    assert_eq!(host.http_reloads(), ["new LOADFAIL", "old"]);
    assert!(host.reloads().is_empty(), "the fallback command never ran");
}

#[tokio::test]
async fn after_a_crash_between_swap_and_reload_the_rejected_config_is_not_the_rollback_target() {
    let host = Host::with_http_reload().await;
    std::fs::write(&host.settings.alloy_config, "old").unwrap();
    apply(&host.settings, "good").await.result.unwrap();
    // The agent died right after swapping in a config Alloy will refuse:
    // the live file holds it, and Alloy never loaded it.
    std::fs::write(&host.settings.alloy_config, "bad LOADFAIL").unwrap();
    // Restarted, the agent applies it again: it fails again, and the
    // rollback restores what Alloy last accepted, not the rejected file
    // that was live when this attempt began.
    let err = apply(&host.settings, "bad LOADFAIL")
        .await
        .result
        .unwrap_err();
    assert_eq!(err.rollback, Some(Ok(())), "{err}");
    assert_eq!(host.live().as_deref(), Some("good"));
    assert_eq!(host.read("config.alloy.muster-prev"), "bad LOADFAIL");
    assert_eq!(host.read("config.alloy.muster-accepted"), "good");
    assert_eq!(host.http_reloads(), ["good", "bad LOADFAIL", "good"]);
}

#[tokio::test]
async fn an_unreachable_reload_endpoint_falls_back_to_the_command_and_says_so() {
    let host = Host::new().await;
    let outcome = apply(&host.settings, "new").await;
    assert_eq!(outcome.result, Ok(()));
    let warning = outcome.warning.expect("a warning");
    assert!(
        warning.contains(&host.settings.reload_url) && warning.contains("unreachable"),
        "{warning}"
    );
    assert!(
        warning.contains("cannot tell whether Alloy took the config"),
        "{warning}"
    );
    // What the status report carries to the server: why it was unreachable.
    let why = outcome.reload_fallback.expect("the fallback is reported");
    assert!(
        !why.is_empty() && warning.contains(&why),
        "{why} / {warning}"
    );
    assert_eq!(host.reloads(), ["new"]);
}

#[tokio::test]
async fn validate_runs_with_the_flags_alloy_runs_with() {
    let mut host = Host::with_http_reload().await;
    let env = host.path("alloy.env");
    std::fs::write(
        &env,
        "CONFIG_FILE=\"/etc/alloy/config.alloy\"\nCUSTOM_ARGS=\"--server.http.listen-addr=0.0.0.0:12345 --stability.level=public-preview --feature.community-components.enabled=true\"\n",
    )
    .unwrap();
    host.settings.alloy_env_file = Some(env);
    apply(&host.settings, "new").await.result.unwrap();
    let candidate = host.path("config.alloy.muster-new");
    assert_eq!(
        host.read("alloy.log").trim(),
        format!(
            "validate --stability.level=public-preview --feature.community-components.enabled=true {}",
            candidate.display()
        )
    );
}

#[tokio::test]
async fn a_config_that_needs_a_newer_alloy_is_refused_naming_both_versions() {
    let host = Host::with_http_reload().await;
    std::fs::write(&host.settings.alloy_config, "old").unwrap();
    let content = "// Requires Alloy v1.11.0 or later: a newer component\nnew\n";
    let outcome = apply(&host.settings, content).await;
    let err = outcome.result.unwrap_err();
    assert_eq!(err.step, Step::Version);
    assert_eq!(err.rollback, None);
    let text = err.to_string();
    assert!(
        text.contains("needs Alloy v1.11.0 or later") && text.contains("this host has v1.10.2"),
        "{text}"
    );
    assert!(text.contains("upgrade Alloy"), "{text}");
    assert_eq!(host.live().as_deref(), Some("old"));
    assert!(host.read("alloy.log").is_empty(), "nothing validated");
    assert!(host.http_reloads().is_empty());
    // The same requirement on a new enough Alloy applies.
    let ok = apply(
        &host.settings,
        "// Requires Alloy v1.10.0 or later: x\nnew\n",
    )
    .await;
    assert_eq!(ok.result, Ok(()));
}
