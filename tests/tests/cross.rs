//! The agents for other platforms, cross-built with `packaging/cross-toolchain`
//! (a Debian trixie root under `target/cross/`, which `.ci/run` makes), run
//! for real against the real server on loopback: the aarch64 Linux agent under
//! `qemu-aarch64-static`, the Windows agent under `wine` with a Windows build
//! of the Alloy stand-in validating, and `packaging/build --cross-only`'s
//! artifacts: the aarch64 `.deb` and `.rpm` read back, the MSI's tables read
//! with `msiinfo` and the MSI installed with `wine msiexec /qn`.
//!
//! The cross builds are cargo builds in the root (no-ops when up to date).
//! Without the toolchain or the emulators these tests fail under `CI=true`
//! and are ignored elsewhere ("SKIPPED: needs ..."; see
//! `muster_e2e::prereqs`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use muster_e2e::fleet::{admin, init, new_token, AlloyHost};
use muster_e2e::{http_client, prereqs, run, run_fail, run_ok, tools, Server, Standin};
use serde_json::{json, Value};

const AARCH64: &str = "aarch64-unknown-linux-gnu";
const WINDOWS: &str = "x86_64-win7-windows-gnu";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .to_path_buf()
}

fn toolchain() -> Command {
    Command::new(repo().join("packaging/cross-toolchain"))
}

/// Builds `bin` of `package` for the Linux `target` in the dist profile
/// (what packaging/build ships) and returns its path.
fn cross_build(target: &str, package: &str, bin: &str) -> PathBuf {
    run_ok(toolchain().args([
        "build",
        target,
        "--profile",
        "dist",
        "--locked",
        "-p",
        package,
    ]));
    let exe = if target.contains("windows") {
        format!("{bin}.exe")
    } else {
        bin.to_string()
    };
    let path = repo()
        .join("target/cross/build")
        .join(target)
        .join("dist")
        .join(exe);
    assert!(path.is_file(), "{} not built", path.display());
    path
}

/// A server on loopback with a fresh data dir (serving the agents in
/// `downloads`, when given), one enrollment token and the server key pin.
async fn server_with_token(root: &Path, downloads: Option<&Path>) -> (Server, String, String) {
    let data = root.join("data");
    let pin = init(&data);
    let mut builder = Server::builder(&data);
    if let Some(dir) = downloads {
        builder = builder.arg("--downloads-dir").arg(dir);
    }
    let server = builder.start();
    let created = new_token(&server, json!({"labels": {"env": "cross"}})).await;
    let token = created["token"].as_str().expect("token").to_string();
    (server, token, pin)
}

/// `method url` over plain HTTP (the stand-in): status and body.
async fn http(method: reqwest::Method, url: String) -> (u16, String) {
    let resp = http_client()
        .request(method, &url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap_or_default())
}

/// The only host the server knows.
async fn only_host(server: &Server) -> Value {
    let hosts = admin(server, reqwest::Method::GET, "/v1/admin/hosts", None).await;
    assert_eq!(hosts.as_array().map(Vec::len), Some(1), "{hosts}");
    hosts[0].clone()
}

#[cfg_attr(
    not(have_cross_aarch64),
    ignore = "SKIPPED: needs root, qemu-user-static and the cross toolchain -- run as root; apt-get install qemu-user-static; packaging/cross-toolchain setup"
)]
#[tokio::test]
async fn the_aarch64_agent_enrolls_and_applies_its_config_under_qemu() {
    tools::require(&[&prereqs::CROSS_AARCH64]);
    let agent_bin = cross_build(AARCH64, "muster-agent", "muster-agent");
    let file = run_ok(Command::new("file").arg(&agent_bin));
    assert!(file.contains("ARM aarch64"), "{file}");
    // The aarch64 C library and loader of the toolchain root.
    let sysroot =
        PathBuf::from(run_ok(toolchain().arg("path")).trim()).join("usr/aarch64-linux-gnu");
    let agent = || {
        let mut cmd = Command::new("qemu-aarch64-static");
        cmd.env("QEMU_LD_PREFIX", &sysroot).arg(&agent_bin);
        cmd
    };
    let version = run_ok(agent().arg("--version"));
    assert_eq!(
        version.trim(),
        format!("muster-agent {}", env!("CARGO_PKG_VERSION"))
    );

    let root = tempfile::tempdir().expect("temp dir");
    let (server, token, pin) = server_with_token(root.path(), None).await;
    // Alloy is the (x86_64) stand-in: the emulated agent starts it natively
    // to validate, and reloads it over HTTP.
    let host = AlloyHost::new(root.path(), "arm-host", 1).await;
    let out = run_ok(&mut host.enroll_with(agent(), &server, &token, &pin));
    assert!(out.contains("enrolled as "), "{out}");
    run_ok(&mut host.run_once_with(agent()));

    let shown = only_host(&server).await;
    assert_eq!(shown["state"], "config_applied", "{shown}");
    assert_eq!(shown["applied_hash"], shown["rendered_hash"]);
    assert_eq!(shown["facts"]["arch"], "aarch64", "{shown}");
    let host_id = shown["id"].as_str().expect("id");
    let targets = server.target_file(host_id).await;
    assert!(targets.contains("\"env\": \"cross\""), "{targets}");
    let applied = std::fs::read_to_string(&host.alloy_config).expect("alloy config");
    assert!(
        applied.contains("prometheus.exporter.unix \"default\""),
        "{applied}"
    );
    // The reloaded stand-in serves what the agent installed.
    let metrics = http(
        reqwest::Method::GET,
        format!(
            "{}/api/v0/component/prometheus.exporter.unix.default/metrics",
            host.standin.url()
        ),
    )
    .await;
    assert_eq!(metrics.0, 200, "{}", metrics.1);
}

/// A wine prefix of its own (made on first use) and its wineserver, kept
/// running until drop.
struct Wine {
    prefix: PathBuf,
}

impl Wine {
    /// Makes the prefix, then keeps its wine session up until drop: a
    /// persistent (`-p`) wineserver and the session's system processes
    /// (services.exe and the services it runs). Without it the session ends
    /// a few seconds after the last program, services.exe and its services
    /// with it, and the next `wine` command starts a new session in which
    /// services.exe starts the auto-start services again: a service
    /// installed by msiexec would not run between two commands, and
    /// `sc stop` would race the service's own start. The session is booted
    /// with its output to a file: its system processes keep the standard
    /// handles of the program that started them, and a pipe they hold
    /// would never reach its end for a later command's output.
    fn new(dir: &Path) -> Wine {
        let wine = Wine {
            prefix: dir.join("wine"),
        };
        let log = dir.join("wineboot.log");
        wine.logged("wineboot", &["--init"], &log);
        wine.logged("wineserver", &["--wait"], &log);
        wine.logged("wineserver", &["--persistent"], &log);
        wine.logged("wineboot", &[], &log);
        wine
    }

    /// Runs `program args` in this prefix with its output appended to `log`
    /// (shown when it fails).
    fn logged(&self, program: &str, args: &[&str], log: &Path) {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("wine log");
        let status = self
            .command(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("wine log"))
            .stderr(file)
            .status()
            .unwrap_or_else(|e| panic!("{program}: {e}"));
        assert!(
            status.success(),
            "{program} {args:?}: {status}\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
    }

    /// `program` with this prefix, quiet, without Mono/Gecko install prompts
    /// and without a display.
    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.env("WINEPREFIX", &self.prefix)
            .env("WINEDEBUG", "-all")
            .env("WINEDLLOVERRIDES", "mscoree,mshtml=")
            .env_remove("DISPLAY");
        cmd
    }

    /// `wine <exe>`.
    fn run(&self, exe: &Path) -> Command {
        let mut cmd = self.command("wine");
        cmd.arg(exe);
        cmd
    }

    /// The Unix path of a folder or file on the prefix's C: drive.
    fn c_drive(&self, windows_path: &str) -> PathBuf {
        let mut path = self.prefix.join("drive_c");
        for part in windows_path.split('\\').filter(|p| !p.is_empty()) {
            path.push(part);
        }
        path
    }

    /// Sets Alloy's service `Arguments` (REG_MULTI_SZ, one argument per
    /// string), as Alloy's Windows installer writes them.
    fn set_alloy_arguments(&self, args: &[&str]) {
        run_ok(self.command("wine").args([
            "reg",
            "add",
            r"HKLM\Software\GrafanaLabs\Alloy",
            "/v",
            "Arguments",
            "/t",
            "REG_MULTI_SZ",
            "/d",
            &args.join(r"\0"),
            "/f",
        ]));
    }
}

impl Drop for Wine {
    fn drop(&mut self) {
        let _ = self.command("wineserver").arg("--kill").output();
    }
}

#[cfg_attr(
    not(have_cross_windows),
    ignore = "SKIPPED: needs root, wine and the cross toolchain -- run as root; apt-get install wine wine64 file; packaging/cross-toolchain setup"
)]
#[tokio::test]
async fn the_windows_agent_enrolls_and_writes_alloys_config_under_wine() {
    tools::require(&[&prereqs::CROSS_WINDOWS]);
    let agent_exe = cross_build(WINDOWS, "muster-agent", "muster-agent");
    let standin_exe = cross_build(WINDOWS, "alloy-standin", "alloy-standin");
    let file = run_ok(Command::new("file").arg(&agent_exe));
    assert!(
        file.contains("PE32+ executable") && file.contains("x86-64"),
        "{file}"
    );
    let root = tempfile::tempdir().expect("temp dir");
    let wine = Wine::new(root.path());

    let version = run_ok(wine.run(&agent_exe).arg("--version"));
    assert_eq!(
        version.trim(),
        format!("muster-agent {}", env!("CARGO_PKG_VERSION"))
    );

    // Alloy as its Windows installer lays it out: the binary and its config
    // in %ProgramFiles%\GrafanaLabs\Alloy (the stand-in's Windows build
    // plays alloy-windows-amd64.exe), its service arguments in the registry.
    let alloy_dir = wine.c_drive(r"Program Files\GrafanaLabs\Alloy");
    std::fs::create_dir_all(&alloy_dir).expect("alloy dir");
    std::fs::copy(&standin_exe, alloy_dir.join("alloy-windows-amd64.exe")).expect("alloy exe");
    let live = alloy_dir.join("config.alloy");
    let first = "logging {\n\tlevel = \"info\"\n}\n";
    std::fs::write(&live, first).expect("first config");
    let installed = [
        "run",
        r"C:\Program Files\GrafanaLabs\Alloy\config.alloy",
        r"--storage.path=C:\ProgramData\GrafanaLabs\Alloy\data",
    ];
    // A stability level Alloy does not know: `alloy validate` must get it
    // (the agent reads the flags Alloy runs with from this value) and fail.
    let bogus: Vec<&str> = installed
        .iter()
        .copied()
        .chain(["--stability.level=bogus-level"])
        .collect();
    wine.set_alloy_arguments(&bogus);
    // Alloy's HTTP side: a stand-in on this machine reading that same file.
    let alloy = Standin::start(&live);
    alloy.wait_ready(Duration::from_secs(10)).await;

    let (server, token, pin) = server_with_token(root.path(), None).await;
    // Every path is the Windows default (config and state under
    // %ProgramData%\Muster, Alloy's files as above, the machine id from the
    // registry); only the ready URL points at the stand-in, and with it the
    // reload URL, so Alloy is reloaded over HTTP (the fallback, restarting
    // the Alloy service, is never needed).
    let out = run_ok(
        wine.run(&agent_exe)
            .args([
                "enroll",
                "--server",
                &server.agent_url(),
                "--token",
                &token,
                "--pin",
                &pin,
            ])
            .args(["--ready-url", &format!("{}/-/ready", alloy.url())])
            .args(["--scrape-address", &alloy.addr().to_string()]),
    );
    assert!(out.contains("enrolled as "), "{out}");
    let agent_toml = std::fs::read_to_string(wine.c_drive(r"ProgramData\Muster\agent.toml"))
        .expect("agent.toml in %ProgramData%\\Muster");
    assert!(
        agent_toml.contains(r"C:\\Program Files\\GrafanaLabs\\Alloy\\config.alloy")
            || agent_toml.contains(r"C:\Program Files\GrafanaLabs\Alloy\config.alloy"),
        "{agent_toml}"
    );
    assert!(
        wine.c_drive(r"ProgramData\Muster\state").is_dir(),
        "no state dir"
    );

    // Validation with the bogus level fails: reported, the live file kept.
    run_fail(wine.run(&agent_exe).args(["run", "--once"]));
    let shown = only_host(&server).await;
    assert_eq!(shown["state"], "config_failed", "{shown}");
    let error = shown["last_error"].as_str().unwrap_or_default();
    assert!(error.contains("invalid stability level"), "{shown}");
    assert_eq!(std::fs::read_to_string(&live).expect("live"), first);

    // The level Alloy runs with fixed: the config goes in.
    let preview: Vec<&str> = installed
        .iter()
        .copied()
        .chain(["--stability.level=public-preview"])
        .collect();
    wine.set_alloy_arguments(&preview);
    run_ok(wine.run(&agent_exe).args(["run", "--once"]));
    let shown = only_host(&server).await;
    assert_eq!(shown["state"], "config_applied", "{shown}");
    assert_eq!(shown["applied_hash"], shown["rendered_hash"]);
    // Facts from Windows itself, none from the Linux host wine runs on.
    assert_eq!(shown["facts"]["os"], "windows", "{shown}");
    assert_eq!(shown["facts"]["os_id"], "windows", "{shown}");
    assert!(shown["facts"].get("kernel").is_none(), "{shown}");
    assert!(shown["facts"].get("services").is_none(), "{shown}");
    let host_id = shown["id"].as_str().expect("id");
    server.target_file(host_id).await;
    // The Windows template, validated by alloy-windows-amd64.exe, is where
    // Windows Alloy reads it, and the reloaded stand-in serves it.
    let applied = std::fs::read_to_string(&live).expect("alloy config");
    assert!(
        applied.contains("prometheus.exporter.windows \"default\""),
        "{applied}"
    );
    let metrics = http(
        reqwest::Method::GET,
        format!(
            "{}/api/v0/component/prometheus.exporter.windows.default/metrics",
            alloy.url()
        ),
    )
    .await;
    assert_eq!(metrics.0, 200, "{}\n{}", metrics.1, alloy.logs());

    // The agent's own view, from the state under %ProgramData%.
    let status = run_ok(wine.run(&agent_exe).args(["status", "--json"]));
    let status: Value = serde_json::from_str(&status).expect("status JSON");
    assert_eq!(status["host_id"], host_id, "{status}");
}

/// `msiinfo export MSI TABLE`: the table's rows, tab-separated.
fn msi_table(msi: &Path, table: &str) -> String {
    run_ok(Command::new("msiinfo").arg("export").arg(msi).arg(table))
}

#[cfg_attr(
    not(have_cross_packages),
    ignore = "SKIPPED: needs root, wine, wixl, msitools, rpm and the cross toolchain -- run as root; apt-get install wine wine64 wixl msitools rpm file; packaging/cross-toolchain setup"
)]
#[tokio::test]
async fn packaging_builds_the_aarch64_packages_and_an_msi_that_installs_the_service_under_wine() {
    tools::require(&[&prereqs::CROSS_PACKAGES]);
    let root = tempfile::tempdir().expect("temp dir");
    let out = root.path().join("dist");
    let built = run_ok(
        Command::new(repo().join("packaging/build"))
            .args(["--cross-only", "--fast", "--out"])
            .arg(&out),
    );
    let version = env!("CARGO_PKG_VERSION");
    let deb = format!("muster-agent_{version}_arm64.deb");
    let rpm = format!("muster-agent-{version}-1.aarch64.rpm");
    for artifact in [
        "muster-agent-linux-aarch64",
        "muster-agent-windows-x86_64.exe",
        "muster-agent-windows-x86_64.msi",
        &deb,
        &rpm,
    ] {
        assert!(built.contains(artifact), "{artifact} missing from\n{built}");
        assert!(
            out.join(artifact).is_file(),
            "{artifact} not in {}",
            out.display()
        );
    }
    // What each says it is.
    let file = run_ok(Command::new("file").arg(out.join("muster-agent-linux-aarch64")));
    assert!(file.contains("ARM aarch64"), "{file}");
    let file = run_ok(Command::new("file").arg(out.join("muster-agent-windows-x86_64.exe")));
    assert!(
        file.contains("PE32+ executable") && file.contains("x86-64"),
        "{file}"
    );
    let control = run_ok(Command::new("dpkg-deb").arg("-f").arg(out.join(&deb)));
    assert!(control.contains("Package: muster-agent\n"), "{control}");
    assert!(control.contains("Architecture: arm64\n"), "{control}");
    let contents = run_ok(Command::new("dpkg-deb").arg("-c").arg(out.join(&deb)));
    assert!(contents.contains("./usr/bin/muster-agent"), "{contents}");
    let rpm_arch = run_ok(
        Command::new("rpm")
            .args(["-qp", "--queryformat", "%{NAME} %{ARCH}"])
            .arg(out.join(&rpm)),
    );
    assert_eq!(rpm_arch.trim(), "muster-agent aarch64");
    // The packaged binaries are the aarch64 build.
    let extracted = root.path().join("deb");
    run_ok(
        Command::new("dpkg-deb")
            .arg("-x")
            .arg(out.join(&deb))
            .arg(&extracted),
    );
    let file = run_ok(Command::new("file").arg(extracted.join("usr/bin/muster-agent")));
    assert!(file.contains("ARM aarch64"), "{file}");

    // The MSI's service table: MusterAgent, own process, auto start, run
    // as LocalSystem with the argument `service`; stopped on uninstall; the
    // enrollment values reach `enroll` as properties.
    let msi = out.join("muster-agent-windows-x86_64.msi");
    let services = msi_table(&msi, "ServiceInstall");
    let row = services
        .lines()
        .find(|l| l.starts_with("AgentService\t"))
        .unwrap_or_else(|| panic!("no service row in\n{services}"));
    let fields: Vec<&str> = row.split('\t').collect();
    assert_eq!(fields[1], "MusterAgent", "{row}");
    assert_eq!(fields[3], "16", "own process: {row}");
    assert_eq!(fields[4], "2", "auto start: {row}");
    assert_eq!(fields[8], "LocalSystem", "{row}");
    // The config path (and with it the log beside it) is the folder
    // Windows Installer resolved, not the service's %ProgramData%.
    assert_eq!(
        fields[10], r#"--config "[DATADIR]agent.toml" service"#,
        "{row}"
    );
    let control = msi_table(&msi, "ServiceControl");
    assert!(control.contains("MusterAgent"), "{control}");
    let actions = msi_table(&msi, "CustomAction");
    assert!(
        actions.contains(
            r#"--config "[DATADIR]agent.toml" enroll --state-dir "[DATADIR]state" --server "[MUSTER_SERVER]" --pin "[MUSTER_PIN]""#
        ),
        "{actions}"
    );
    let properties = msi_table(&msi, "Property");
    assert!(
        properties.contains("MsiHiddenProperties\tMUSTER_ENROLL_TOKEN"),
        "{properties}"
    );

    // The server serves the cross-built agents beside the Linux one, each
    // byte for byte, with its hash.
    let (server, token, pin) = server_with_token(root.path(), Some(&out)).await;
    let client = server.client();
    let base = server.agent_url();
    let index = server.download_index().await;
    for name in [
        "muster-agent-linux-aarch64",
        "muster-agent-windows-x86_64.exe",
        "muster-agent-windows-x86_64.msi",
    ] {
        let listed = index
            .iter()
            .find(|d| d["name"] == name)
            .unwrap_or_else(|| panic!("{name} not listed: {index:?}"));
        let resp = client
            .get(format!("{base}/v1/download/{name}"))
            .send()
            .await
            .expect("download");
        assert_eq!(resp.status(), 200, "{name}");
        let body = resp.bytes().await.expect("body");
        assert_eq!(
            body,
            std::fs::read(out.join(name)).expect("artifact"),
            "{name}"
        );
        let sum = run_ok(Command::new("sha256sum").arg(out.join(name)));
        assert_eq!(
            listed["sha256"].as_str(),
            sum.split_whitespace().next(),
            "{name}"
        );
    }

    // Installed for real, with the enrollment values as MSI properties.
    let wine = Wine::new(root.path());
    let install = run(wine
        .command("wine")
        .args(["msiexec", "/i"])
        .arg(&msi)
        .arg("/qn")
        .arg(format!("MUSTER_SERVER={}", server.agent_url()))
        .arg(format!("MUSTER_PIN={pin}"))
        .arg(format!("MUSTER_ENROLL_TOKEN={token}")));
    assert!(install.status.success(), "msiexec: {install:?}");
    let exe = wine.c_drive(r"Program Files\Muster\muster-agent.exe");
    assert!(exe.is_file(), "{} not installed", exe.display());
    let version_line = run_ok(wine.run(&exe).arg("--version"));
    assert_eq!(version_line.trim(), format!("muster-agent {version}"));
    // The custom action enrolled the host: config and state in
    // %ProgramData%\Muster, the host on the server.
    assert!(wine.c_drive(r"ProgramData\Muster\agent.toml").is_file());
    let host = only_host(&server).await;
    assert_eq!(host["facts"]["os_id"], "windows", "{host}");

    // The service is registered to run `muster-agent.exe service` at boot,
    // and runs.
    let key = r"HKLM\System\CurrentControlSet\Services\MusterAgent";
    let query = run_ok(wine.command("wine").args(["reg", "query", key]));
    assert!(
        query.contains(r#"Program Files\Muster\muster-agent.exe --config "C:\ProgramData\Muster\agent.toml" service"#),
        "{query}"
    );
    let start = query
        .lines()
        .find(|l| l.trim_start().starts_with("Start"))
        .unwrap_or_else(|| panic!("no Start in {query}"));
    assert!(start.trim_end().ends_with("0x2"), "auto start: {start}");
    let state = run_ok(wine.command("wine").args(["sc", "query", "MusterAgent"]));
    assert!(state.contains("RUNNING"), "{state}");
    // The service checks in: with no Alloy installed in this prefix, its
    // apply fails and says so; it logs to %ProgramData%\Muster\agent.log
    // (its stderr goes nowhere).
    let log = wine.c_drive(r"ProgramData\Muster\agent.log");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut host = only_host(&server).await;
    while host["state"] != "config_failed" && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        host = only_host(&server).await;
    }
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(host["state"], "config_failed", "{host}\n{text}");
    let error = host["last_error"].as_str().unwrap_or_default();
    assert!(error.contains("alloy-windows-amd64.exe"), "{host}");
    assert!(
        text.contains("alloy-windows-amd64.exe"),
        "{}: {text}",
        log.display()
    );
    // It answers the service manager's stop: the control handler reports
    // STOP_PENDING before it returns (what `sc stop` prints), then the
    // check-in loop ends, the service reports STOPPED and logs it.
    let stop = run_ok(wine.command("wine").args(["sc", "stop", "MusterAgent"]));
    assert!(
        stop.contains("STOP_PENDING") || stop.contains("STOPPED"),
        "{stop}"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut state = run_ok(wine.command("wine").args(["sc", "query", "MusterAgent"]));
    while !state.contains("STOPPED") && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        state = run_ok(wine.command("wine").args(["sc", "query", "MusterAgent"]));
    }
    assert!(state.contains("STOPPED"), "{state}");
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(text.contains("agent stopped"), "{}: {text}", log.display());
}
