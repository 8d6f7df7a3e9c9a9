//! Installing Grafana Alloy on the host: the *plan* (a list of steps computed
//! from the OS facts and the mirror setting, pure and golden-tested) and the
//! thin executor that carries it out. Repositories and keys are Grafana's
//! (`shared/ALLOY.md`: apt keyring + source line, the dnf/yum repo file, the
//! zypper repo), or the mirror the server names for air-gapped sites.
//!
//! With a `root` other than `/` every file goes under it and apt/dpkg/rpm are
//! pointed at it, so an image build (or a test) never touches the running
//! system's package configuration.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;

use muster_shared::facts::OsFamily;
use muster_shared::mirror::AlloyMirror;

use crate::alloy::env::LISTEN_FLAG;
use crate::atomic_file::write_atomic;
use crate::detect::os_release::OsRelease;

/// Grafana's apt repository, its signing key and suite/component.
pub const GRAFANA_APT: &str = "https://apt.grafana.com";
pub const GRAFANA_APT_KEY: &str = "https://apt.grafana.com/gpg-full.key";
/// Grafana's rpm repository (dnf, yum, zypper) and its key.
pub const GRAFANA_RPM: &str = "https://rpm.grafana.com";
pub const GRAFANA_RPM_KEY: &str = "https://rpm.grafana.com/gpg.key";

/// Where the packages put Alloy's binary, and its unit's name.
pub const ALLOY_BIN: &str = "/usr/bin/alloy";
pub const ALLOY_UNIT: &str = "alloy";
/// Alloy's Windows installer as a mirror serves it (Grafana's releases wrap
/// it in a zip), and the service it registers.
pub const WINDOWS_INSTALLER: &str = "alloy-installer-windows-amd64.exe";
pub const WINDOWS_SERVICE: &str = "Alloy";

/// Which package manager family a host belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// apt: Debian, Ubuntu and derivatives.
    Debian,
    /// dnf or yum: RHEL, CentOS, Rocky, Alma, Oracle, Fedora, Amazon Linux.
    Rhel,
    /// zypper: SLES, openSUSE.
    Suse,
}

/// The family of `os`, by the same rule the server uses for facts
/// ([`OsFamily::classify`]: its `ID` when known, else the first known
/// `ID_LIKE` word); `None` where no plan exists.
pub fn family(os: &OsRelease) -> Option<Family> {
    match os.family() {
        OsFamily::Debian => Some(Family::Debian),
        OsFamily::Rhel => Some(Family::Rhel),
        OsFamily::Suse => Some(Family::Suse),
        OsFamily::Windows | OsFamily::Other => None,
    }
}

/// One thing the plan does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Download `url` to `path` (with curl, which honours `https_proxy`).
    Fetch { url: String, path: PathBuf },
    /// Write `content` to `path` (parent dirs created).
    Write {
        path: PathBuf,
        content: String,
        mode: u32,
    },
    /// Run a program (no shell) with extra environment.
    Run {
        argv: Vec<String>,
        env: Vec<(String, String)>,
    },
    /// Set `--server.http.listen-addr` in `CUSTOM_ARGS` of Alloy's
    /// environment file, keeping its other lines.
    ListenAddr { env_file: PathBuf, addr: String },
    /// `systemctl enable` the unit, then restart it when an earlier step
    /// changed anything (else just start it).
    Service { unit: String },
    /// Windows: set `--server.http.listen-addr` in Alloy's service
    /// arguments (the `Arguments` registry value), keeping the others.
    ServiceArguments { addr: String },
}

impl fmt::Display for Step {
    /// The step as a person would type it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Fetch { url, path } => {
                write!(
                    f,
                    "curl -fsSL -o {} {}",
                    quote(&path.display().to_string()),
                    quote(url)
                )
            }
            Step::Write {
                path,
                content,
                mode,
            } => {
                writeln!(f, "write {} (mode {mode:o}):", path.display())?;
                for line in content.lines() {
                    writeln!(f, "    | {line}")?;
                }
                Ok(())
            }
            Step::ListenAddr { env_file, addr } => write!(
                f,
                "set CUSTOM_ARGS {}={addr} in {}",
                LISTEN_FLAG,
                env_file.display()
            ),
            Step::Service { unit } => write!(
                f,
                "systemctl enable {unit}; systemctl restart {unit} (start, when nothing changed)"
            ),
            Step::ServiceArguments { addr } => write!(
                f,
                "set {LISTEN_FLAG}={addr} in HKLM\\{} Arguments",
                crate::alloy::env::REGISTRY_KEY
            ),
            Step::Run { argv, env } => {
                let words: Vec<String> = env
                    .iter()
                    .map(|(k, v)| format!("{k}={}", quote(v)))
                    .chain(argv.iter().map(|a| quote(a)))
                    .collect();
                write!(f, "{}", words.join(" "))
            }
        }
    }
}

fn quote(word: &str) -> String {
    if !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@%+".contains(c))
    {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("no os-release at {} (nor usr/lib/os-release): cannot tell which package manager to use", path.display())]
    NoOsRelease { path: PathBuf },
    #[error("no install plan for {id:?} (ID_LIKE {like:?}): Muster installs Alloy with apt (Debian/Ubuntu), dnf/yum (RHEL family) or zypper (SUSE); install Alloy by hand, then run install-alloy again")]
    Unsupported { id: String, like: String },
    #[error("cannot write {}: {error}", path.display())]
    Write {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("cannot run {program}: {error}")]
    Spawn {
        program: String,
        error: std::io::Error,
    },
    #[error("{message}")]
    Env { message: String },
    #[error("Alloy is not installed and no installer is known: Grafana publishes Alloy's Windows installer zipped; put {WINDOWS_INSTALLER} on a web server and set windows = \"<its URL>\" under [alloy_mirror] in the agent config (or the server's)")]
    NoWindowsInstaller,
    #[error("`{command}` failed ({status}); {hint}")]
    Failed {
        command: String,
        status: String,
        hint: &'static str,
    },
}

fn unsupported(os: &OsRelease) -> InstallError {
    InstallError::Unsupported {
        id: os.id().to_string(),
        like: os.id_like.clone().unwrap_or_default(),
    }
}

/// The os-release under `root`, which decides the plan.
#[cfg(not(windows))]
pub fn read_os(root: &Path) -> Result<OsRelease, InstallError> {
    OsRelease::read(root).map_err(|path| InstallError::NoOsRelease { path })
}

/// Windows has no os-release: the plan only needs to know it is Windows.
#[cfg(windows)]
pub fn read_os(_root: &Path) -> Result<OsRelease, InstallError> {
    Ok(OsRelease {
        id: Some("windows".to_string()),
        ..OsRelease::default()
    })
}

fn run(argv: &[&str]) -> Step {
    Step::Run {
        argv: argv.iter().map(|s| s.to_string()).collect(),
        env: Vec::new(),
    }
}

/// `root`/`path` for an absolute `path`.
pub fn under(root: &Path, path: &str) -> PathBuf {
    root.join(path.trim_start_matches('/'))
}

fn is_root(root: &Path) -> bool {
    root == Path::new("/")
}

/// The steps that install Alloy on a host like `os` from Grafana's
/// repositories or `mirror`. Pure: the same input always gives the same plan.
pub fn install_plan(
    os: &OsRelease,
    mirror: &AlloyMirror,
    root: &Path,
) -> Result<Vec<Step>, InstallError> {
    let Some(family) = family(os) else {
        return Err(unsupported(os));
    };
    Ok(match family {
        Family::Debian => apt_plan(mirror, root),
        Family::Rhel => rhel_plan(os, mirror, root),
        Family::Suse => zypper_plan(mirror, root),
    })
}

fn apt_plan(mirror: &AlloyMirror, root: &Path) -> Vec<Step> {
    let keyring = under(root, "/etc/apt/keyrings/grafana.asc");
    let list = under(root, "/etc/apt/sources.list.d/grafana.list");
    let repo = mirror.apt.as_deref().unwrap_or(GRAFANA_APT);
    let key = mirror.key.as_deref().unwrap_or(GRAFANA_APT_KEY);
    // Only Grafana's list is refreshed: an unrelated broken source must not
    // stop the install, and the other lists are kept as they are.
    let mut update: Vec<String> = [
        "apt-get",
        "update",
        "-o",
        &format!("Dir::Etc::SourceList={}", list.display()),
        "-o",
        "Dir::Etc::SourceParts=-",
        "-o",
        "APT::Get::List-Cleanup=0",
    ]
    .map(String::from)
    .to_vec();
    let mut install: Vec<String> = ["apt-get", "install", "-y", "--no-install-recommends"]
        .map(String::from)
        .to_vec();
    if !is_root(root) {
        // Every apt and dpkg directory under `root`.
        let r = root.display();
        let private = [
            format!("Dir::State={r}/var/lib/apt"),
            format!("Dir::State::status={r}/var/lib/dpkg/status"),
            format!("Dir::Cache={r}/var/cache/apt"),
            format!("Dir::Log={r}/var/log/apt"),
            format!("Dir::Etc::Trusted={r}/etc/apt/trusted.gpg"),
            format!("Dir::Etc::TrustedParts={r}/etc/apt/trusted.gpg.d"),
            format!("Dir::Etc::Preferences={r}/etc/apt/preferences"),
            format!("Dir::Etc::PreferencesParts={r}/etc/apt/preferences.d"),
            format!("DPkg::Options::=--root={r}"),
            format!("DPkg::Options::=--admindir={r}/var/lib/dpkg"),
            "DPkg::Options::=--force-script-chrootless".to_string(),
            "APT::Sandbox::User=root".to_string(),
        ];
        for o in &private {
            update.extend(["-o".to_string(), o.clone()]);
        }
        install.extend([
            "-o".to_string(),
            format!("Dir::Etc::SourceList={}", list.display()),
        ]);
        install.extend(["-o".to_string(), "Dir::Etc::SourceParts=-".to_string()]);
        for o in &private {
            install.extend(["-o".to_string(), o.clone()]);
        }
    }
    install.push("alloy".to_string());
    vec![
        Step::Fetch {
            url: key.to_string(),
            path: keyring.clone(),
        },
        Step::Write {
            path: list,
            content: format!(
                "# Grafana Alloy, added by muster-agent install-alloy\ndeb [signed-by={}] {repo} stable main\n",
                keyring.display()
            ),
            mode: 0o644,
        },
        Step::Run {
            argv: update,
            env: Vec::new(),
        },
        Step::Run {
            argv: install,
            env: vec![("DEBIAN_FRONTEND".into(), "noninteractive".into())],
        },
    ]
}

/// `rpm --import KEY`, with `--root` when not `/`.
fn rpm_import(key: &str, root: &Path) -> Step {
    let root_arg = format!("--root={}", root.display());
    let mut argv = vec!["rpm"];
    if !is_root(root) {
        argv.push(&root_arg);
    }
    argv.extend(["--import", key]);
    run(&argv)
}

fn rhel_plan(os: &OsRelease, mirror: &AlloyMirror, root: &Path) -> Vec<Step> {
    let repo = mirror.rpm.as_deref().unwrap_or(GRAFANA_RPM);
    let key = mirror.key.as_deref().unwrap_or(GRAFANA_RPM_KEY);
    // dnf from RHEL 8 and Amazon Linux 2023 on; yum before.
    let yum = match (os.id(), os.major_version()) {
        ("amzn", Some(v)) => v < 2022,
        (_, Some(v)) if os.id() != "fedora" => v < 8,
        _ => false,
    };
    let root_arg = format!("--installroot={}", root.display());
    let mut install = vec![if yum { "yum" } else { "dnf" }, "install", "-y"];
    if !is_root(root) {
        install.push(&root_arg);
    }
    install.push("alloy");
    vec![
        rpm_import(key, root),
        Step::Write {
            path: under(root, "/etc/yum.repos.d/grafana.repo"),
            content: format!(
                "# Grafana Alloy, added by muster-agent install-alloy\n\
                 [grafana]\nname=grafana\nbaseurl={repo}\nrepo_gpgcheck=1\nenabled=1\ngpgcheck=1\n\
                 gpgkey={key}\nsslverify=1\nsslcacert=/etc/pki/tls/certs/ca-bundle.crt\n"
            ),
            mode: 0o644,
        },
        run(&install),
    ]
}

fn zypper_plan(mirror: &AlloyMirror, root: &Path) -> Vec<Step> {
    let repo = mirror.rpm.as_deref().unwrap_or(GRAFANA_RPM);
    let key = mirror.key.as_deref().unwrap_or(GRAFANA_RPM_KEY);
    let root_arg = root.display().to_string();
    let mut zypper = vec!["zypper", "--non-interactive"];
    if !is_root(root) {
        zypper.extend(["--root", &root_arg]);
    }
    let mut install = zypper.clone();
    install.extend(["install", "--repo", "grafana", "alloy"]);
    // The repo as a file, as `zypper addrepo URL grafana` would write it,
    // so a second run does not fail on an existing alias.
    vec![
        rpm_import(key, root),
        Step::Write {
            path: under(root, "/etc/zypp/repos.d/grafana.repo"),
            content: format!(
                "# Grafana Alloy, added by muster-agent install-alloy\n\
                 [grafana]\nname=grafana\nenabled=1\nautorefresh=1\nbaseurl={repo}\ntype=rpm-md\n\
                 gpgcheck=1\ngpgkey={key}\n"
            ),
            mode: 0o644,
        },
        run(&install),
    ]
}

/// What `muster-agent install-alloy` is asked to do.
#[derive(Clone, Debug)]
pub struct Request<'a> {
    pub os: &'a OsRelease,
    pub mirror: &'a AlloyMirror,
    pub root: &'a Path,
    /// Alloy is installed already: no install steps.
    pub alloy_present: bool,
    /// Where Alloy's HTTP server should listen.
    pub listen_addr: &'a str,
    /// systemd runs this host (and `root` is `/`): enable and (re)start Alloy.
    pub systemd: bool,
    /// Groups the `alloy` user must join for the services detected here
    /// (`docker` for cAdvisor).
    pub groups: &'a [String],
    /// Where a downloaded installer goes (Windows: the agent's state dir).
    pub downloads: &'a Path,
}

/// The groups the `alloy` user needs for `services` (detected on the host):
/// the Docker socket belongs to group `docker`, which cAdvisor reads.
/// (Journal access needs `adm`/`systemd-journal`, which Alloy's package
/// grants itself.)
pub fn groups_for(services: &[muster_shared::facts::ServiceFact]) -> Vec<String> {
    let mut groups: Vec<String> = services
        .iter()
        .filter(|s| s.kind == muster_shared::facts::ServiceKind::Docker)
        .map(|_| "docker".to_string())
        .collect();
    groups.dedup();
    groups
}

/// The whole plan: install Alloy when it is missing, set its listen address,
/// enable and start its service. Pure.
pub fn alloy_plan(req: &Request<'_>) -> Result<Vec<Step>, InstallError> {
    // The os-release model's family is Linux's; Windows says its id instead.
    if req.os.id() == "windows" {
        return windows_plan(req);
    }
    let family = family(req.os).ok_or_else(|| unsupported(req.os))?;
    let mut steps = if req.alloy_present {
        Vec::new()
    } else {
        install_plan(req.os, req.mirror, req.root)?
    };
    steps.push(Step::ListenAddr {
        env_file: env_file(family, req.root),
        addr: req.listen_addr.to_string(),
    });
    for group in req.groups {
        let mut argv = vec!["usermod".to_string()];
        if !is_root(req.root) {
            argv.extend(["--root".to_string(), req.root.display().to_string()]);
        }
        argv.extend(["-aG", group, crate::access::ALLOY_USER].map(String::from));
        steps.push(Step::Run {
            argv,
            env: Vec::new(),
        });
    }
    if req.systemd {
        steps.push(Step::Service {
            unit: ALLOY_UNIT.to_string(),
        });
    }
    Ok(steps)
}

/// Windows: Alloy's installer from the mirror, run silently (`/S`; it
/// registers and starts the `Alloy` service), the listen address in the
/// service's arguments, then the service restarted to read them. Pure.
fn windows_plan(req: &Request<'_>) -> Result<Vec<Step>, InstallError> {
    let mut steps = Vec::new();
    if !req.alloy_present {
        let url = req
            .mirror
            .windows
            .clone()
            .ok_or(InstallError::NoWindowsInstaller)?;
        let installer = req.downloads.join(WINDOWS_INSTALLER);
        steps.push(Step::Fetch {
            url,
            path: installer.clone(),
        });
        steps.push(Step::Run {
            argv: vec![
                installer.display().to_string(),
                "/S".to_string(),
                "/DISABLEREPORTING=yes".to_string(),
            ],
            env: Vec::new(),
        });
    }
    steps.push(Step::ServiceArguments {
        addr: req.listen_addr.to_string(),
    });
    steps.push(run(&[
        "powershell.exe",
        "-NoProfile",
        "-NonInteractive",
        "-Command",
        &format!("Restart-Service -Name {WINDOWS_SERVICE}"),
    ]));
    Ok(steps)
}

/// Where the Alloy environment file is for `family` (`CUSTOM_ARGS` lives there).
pub fn env_file(family: Family, root: &Path) -> PathBuf {
    match family {
        Family::Debian => under(root, "/etc/default/alloy"),
        Family::Rhel | Family::Suse => under(root, "/etc/sysconfig/alloy"),
    }
}

/// Carries out `steps` in order, stopping at the first failure. Output of
/// the commands goes to this process's stdout/stderr.
pub fn execute(steps: &[Step]) -> Result<(), InstallError> {
    let mut changed = false;
    for step in steps {
        tracing::info!(step = %step.to_string().lines().next().unwrap_or_default(), "install step");
        match step {
            Step::Fetch { url, path } => {
                create_parent(path)?;
                let argv: Vec<String> = [
                    "curl",
                    "-fsSL",
                    "--retry",
                    "3",
                    "--connect-timeout",
                    "20",
                    "-o",
                    &path.display().to_string(),
                    url,
                ]
                .map(String::from)
                .to_vec();
                command(
                    &argv,
                    &[],
                    "check that the key URL is reachable (proxy: https_proxy)",
                )?;
            }
            Step::Write {
                path,
                content,
                mode,
            } => {
                create_parent(path)?;
                write_atomic(path, content.as_bytes(), *mode).map_err(|error| {
                    InstallError::Write {
                        path: path.clone(),
                        error,
                    }
                })?;
            }
            Step::Run { argv, env } => command(
                argv,
                env,
                "its output is above; fix the cause and run `muster-agent install-alloy` again",
            )?,
            Step::ListenAddr { env_file, addr } => {
                let edited = crate::alloy::env::update_file(env_file, addr).map_err(|e| {
                    InstallError::Env {
                        message: e.to_string(),
                    }
                })?;
                if edited {
                    tracing::info!(file = %env_file.display(), addr = %addr, "set Alloy's listen address");
                }
                changed |= edited;
                continue;
            }
            Step::ServiceArguments { addr } => {
                changed |= service_arguments(addr)?;
                continue;
            }
            Step::Service { unit } => {
                let hint = "see: systemctl status alloy; journalctl -u alloy";
                command(&argv(&["systemctl", "enable", unit]), &[], hint)?;
                let verb = if changed { "restart" } else { "start" };
                command(&argv(&["systemctl", verb, unit]), &[], hint)?;
                continue;
            }
        }
        changed = true;
    }
    Ok(())
}

/// Sets the listen address in Alloy's Windows service arguments.
#[cfg(windows)]
fn service_arguments(addr: &str) -> Result<bool, InstallError> {
    crate::alloy::env::update_registry(addr).map_err(|e| InstallError::Env {
        message: e.to_string(),
    })
}

/// Only Windows plans have this step.
#[cfg(not(windows))]
fn service_arguments(_addr: &str) -> Result<bool, InstallError> {
    Err(InstallError::Env {
        message: "Alloy's service arguments are in the registry, which only Windows has"
            .to_string(),
    })
}

fn argv(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| w.to_string()).collect()
}

/// The Alloy binary: `bin` when it is a path, else looked up under `root`'s
/// `/usr/bin` (where the packages put it) and, for `/`, in `PATH`.
pub fn locate_alloy(bin: &Path, root: &Path) -> Option<PathBuf> {
    let is_file = |p: &Path| p.is_file();
    if bin.components().count() > 1 {
        return Some(bin.to_path_buf()).filter(|p| is_file(p));
    }
    let packaged = under(root, ALLOY_BIN);
    if is_file(&packaged) {
        return Some(packaged);
    }
    if !is_root(root) {
        return None;
    }
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(bin))
            .find(|p| is_file(p))
    })
}

fn create_parent(path: &Path) -> Result<(), InstallError> {
    match path.parent() {
        Some(dir) => std::fs::create_dir_all(dir).map_err(|error| InstallError::Write {
            path: dir.to_path_buf(),
            error,
        }),
        None => Ok(()),
    }
}

/// Runs `argv` with inherited output; an error names it and its status.
pub fn command(
    argv: &[String],
    env: &[(String, String)],
    hint: &'static str,
) -> Result<(), InstallError> {
    let (program, args) = argv.split_first().expect("a command has a program");
    let status = Command::new(program)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(std::process::Stdio::null())
        .status()
        .map_err(|error| InstallError::Spawn {
            program: program.clone(),
            error,
        })?;
    if status.success() {
        return Ok(());
    }
    Err(InstallError::Failed {
        command: argv.join(" "),
        status: status.to_string(),
        hint,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_runs_the_mirrors_installer_then_sets_the_listen_address_and_restarts_alloy() {
        let windows = OsRelease {
            id: Some("windows".into()),
            ..OsRelease::default()
        };
        let mirror = AlloyMirror {
            windows: Some("https://mirror.example/alloy-installer-windows-amd64.exe".into()),
            ..AlloyMirror::default()
        };
        let downloads = Path::new(r"C:\ProgramData\Muster\state");
        let request = Request {
            os: &windows,
            mirror: &mirror,
            root: Path::new("/"),
            alloy_present: false,
            listen_addr: "0.0.0.0:12345",
            systemd: false,
            groups: &[],
            downloads,
        };
        let plan = alloy_plan(&request).expect("plan");
        let installer = downloads.join(WINDOWS_INSTALLER);
        let restart = run(&[
            "powershell.exe",
            "-NoProfile",
            "-NonInteractive",
            "-Command",
            "Restart-Service -Name Alloy",
        ]);
        assert_eq!(
            plan,
            vec![
                Step::Fetch {
                    url: "https://mirror.example/alloy-installer-windows-amd64.exe".into(),
                    path: installer.clone(),
                },
                Step::Run {
                    argv: vec![
                        installer.display().to_string(),
                        "/S".into(),
                        "/DISABLEREPORTING=yes".into()
                    ],
                    env: Vec::new(),
                },
                Step::ServiceArguments {
                    addr: "0.0.0.0:12345".into()
                },
                restart.clone(),
            ]
        );
        assert_eq!(
            plan[2].to_string(),
            r"set --server.http.listen-addr=0.0.0.0:12345 in HKLM\Software\GrafanaLabs\Alloy Arguments"
        );

        let present = alloy_plan(&Request {
            alloy_present: true,
            mirror: &AlloyMirror::default(),
            ..request.clone()
        })
        .expect("plan");
        assert_eq!(
            present,
            vec![
                Step::ServiceArguments {
                    addr: "0.0.0.0:12345".into()
                },
                restart
            ]
        );
        let missing = alloy_plan(&Request {
            mirror: &AlloyMirror::default(),
            ..request
        })
        .unwrap_err();
        assert!(
            matches!(missing, InstallError::NoWindowsInstaller),
            "{missing}"
        );
        assert!(missing.to_string().contains("[alloy_mirror]"), "{missing}");
    }

    fn os(id: &str, like: &str, version: &str) -> OsRelease {
        let some = |v: &str| Some(v.to_string()).filter(|v| !v.is_empty());
        OsRelease {
            id: some(id),
            id_like: some(like),
            version_id: some(version),
            pretty_name: None,
        }
    }

    #[test]
    fn families_from_id_then_id_like() {
        assert_eq!(family(&os("debian", "", "12")), Some(Family::Debian));
        assert_eq!(
            family(&os("ubuntu", "debian", "24.04")),
            Some(Family::Debian)
        );
        assert_eq!(
            family(&os("rocky", "rhel centos fedora", "9.4")),
            Some(Family::Rhel)
        );
        assert_eq!(family(&os("amzn", "fedora", "2023")), Some(Family::Rhel));
        assert_eq!(family(&os("sles", "suse", "15-SP5")), Some(Family::Suse));
        assert_eq!(
            family(&os("opensuse-leap", "suse opensuse", "15.6")),
            Some(Family::Suse)
        );
        assert_eq!(
            family(&os("myrhelclone", "centos", "9")),
            Some(Family::Rhel)
        );
        assert_eq!(family(&os("alpine", "", "3.20")), None);
    }

    #[test]
    fn an_unknown_os_has_no_plan_and_says_what_to_do() {
        let err = install_plan(
            &os("alpine", "", "3.20"),
            &AlloyMirror::default(),
            Path::new("/"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("alpine") && err.contains("by hand"), "{err}");
    }

    #[test]
    fn yum_before_rhel_8_and_amazon_linux_2023() {
        let last = |o: OsRelease| {
            install_plan(&o, &AlloyMirror::default(), Path::new("/"))
                .unwrap()
                .last()
                .unwrap()
                .to_string()
        };
        assert!(last(os("centos", "rhel fedora", "7")).starts_with("yum install"));
        assert!(last(os("amzn", "centos rhel fedora", "2")).starts_with("yum install"));
        assert!(last(os("rhel", "fedora", "9.4")).starts_with("dnf install"));
        assert!(last(os("amzn", "fedora", "2023")).starts_with("dnf install"));
        assert!(last(os("fedora", "", "40")).starts_with("dnf install"));
    }

    #[test]
    fn a_mirror_replaces_grafanas_repository_and_key() {
        let mirror = AlloyMirror {
            apt: Some("https://mirror.example/apt".into()),
            rpm: Some("https://mirror.example/rpm".into()),
            key: Some("https://mirror.example/key.asc".into()),
            windows: None,
        };
        for o in [
            os("debian", "", "12"),
            os("rhel", "", "9"),
            os("sles", "", "15"),
        ] {
            let text: String = install_plan(&o, &mirror, Path::new("/"))
                .unwrap()
                .iter()
                .map(|s| s.to_string() + "\n")
                .collect();
            assert!(!text.contains("grafana.com"), "{text}");
            assert!(text.contains("https://mirror.example/key.asc"), "{text}");
        }
    }

    #[test]
    fn alloy_joins_the_groups_detected_services_need_before_it_restarts() {
        use muster_shared::facts::{ServiceFact, ServiceKind};
        let fact = |kind| ServiceFact {
            kind,
            port: None,
            address: None,
            path: None,
            exporter_port: None,
            evidence: vec![],
        };
        let groups = groups_for(&[fact(ServiceKind::Journal), fact(ServiceKind::Docker)]);
        assert_eq!(groups, ["docker"]);
        assert!(groups_for(&[fact(ServiceKind::Postgres)]).is_empty());
        let debian = os("debian", "", "12");
        let plan = alloy_plan(&Request {
            os: &debian,
            mirror: &AlloyMirror::default(),
            root: Path::new("/"),
            alloy_present: true,
            listen_addr: "0.0.0.0:12345",
            systemd: true,
            groups: &groups,
            downloads: Path::new("/var/lib/muster"),
        })
        .unwrap();
        let text: Vec<String> = plan.iter().map(|s| s.to_string()).collect();
        assert_eq!(text[1], "usermod -aG docker alloy", "{text:?}");
        assert!(text[2].starts_with("systemctl enable alloy"), "{text:?}");
    }

    #[test]
    fn a_private_root_keeps_every_path_under_it() {
        let plan = install_plan(
            &os("debian", "", "12"),
            &AlloyMirror::default(),
            Path::new("/r"),
        )
        .unwrap();
        for step in &plan {
            match step {
                Step::Fetch { path, .. } | Step::Write { path, .. } => {
                    assert!(path.starts_with("/r"), "{step}")
                }
                Step::ListenAddr { env_file: path, .. } => assert!(path.starts_with("/r")),
                Step::Service { .. } | Step::ServiceArguments { .. } => {
                    panic!("no service under a private root")
                }
                Step::Run { argv, .. } => {
                    let text = argv.join(" ");
                    assert!(
                        text.contains("--root=/r") && text.contains("Dir::State=/r/"),
                        "{text}"
                    );
                }
            }
        }
    }
}
