//! A bare host for the install tests: a minimal Debian 12 root file system
//! (`debootstrap --variant=minbase`, plus curl and ca-certificates: no sudo,
//! no systemd, no machine id), built once and cached in
//! `target/bare-host/bookworm-minbase`, copied per test and entered with
//! `chroot` inside a network namespace of its own: a veth pair whose host end
//! the server listens on, so the host reaches the server, and is scraped, at
//! a real non-loopback address. It has no route anywhere else (no Grafana
//! repositories). Needs root, `debootstrap` (first run only), `ip`
//! (iproute2), `unshare` and `chroot`.

use std::fs::File;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::process::{bin_path, run, run_ok};

/// The Debian release and what is added to minbase.
const SUITE: &str = "bookworm";
const INCLUDE: &str = "curl,ca-certificates";
const MIRROR: &str = "http://deb.debian.org/debian";

/// `target/bare-host/bookworm-minbase`, built by the first caller (others
/// wait on a lock file) and kept for later runs.
pub fn cached_root() -> PathBuf {
    // bin_path is target/<profile>/<bin>: the cache sits in target/.
    let target = bin_path("muster-agent")
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .to_path_buf();
    let dir = target.join("bare-host");
    std::fs::create_dir_all(&dir).expect("bare-host dir");
    let root = dir.join(format!("{SUITE}-minbase"));
    let lock = File::create(dir.join("lock")).expect("lock file");
    lock.lock().expect("lock");
    if !root.join("usr/bin/curl").is_file() {
        let tmp = dir.join(format!("{SUITE}-minbase.tmp"));
        let _ = std::fs::remove_dir_all(&tmp);
        eprintln!(
            "building the bare Debian root once: debootstrap into {}",
            root.display()
        );
        run_ok(
            Command::new("debootstrap")
                .args(["--variant=minbase", &format!("--include={INCLUDE}"), SUITE])
                .arg(&tmp)
                .arg(MIRROR),
        );
        // A bare host has no machine id; debootstrap writes none, but be sure.
        let _ = std::fs::remove_file(tmp.join("etc/machine-id"));
        let _ = std::fs::remove_file(tmp.join("var/lib/dbus/machine-id"));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::rename(&tmp, &root).expect("move the root into place");
    }
    root
}

/// A copy of the cached root, with a network namespace and a veth pair.
pub struct BareHost {
    pub root: PathBuf,
    netns: String,
    /// The host end of the veth pair (the server listens here).
    pub server_ip: Ipv4Addr,
    /// The bare host's own address.
    pub host_ip: Ipv4Addr,
    _dir: tempfile::TempDir,
}

impl BareHost {
    /// Copies the cached root and wires its namespace. Addresses come from
    /// 198.18.0.0/15 (reserved for network tests), one /30 per process.
    pub fn create() -> BareHost {
        let cached = cached_root();
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().join("root");
        run_ok(Command::new("cp").arg("-a").arg(&cached).arg(&root));
        let pid = std::process::id();
        let base = 0xC612_0000u32 + ((pid % (1 << 15)) << 2);
        let (server_ip, host_ip) = (Ipv4Addr::from(base + 1), Ipv4Addr::from(base + 2));
        let netns = format!("muster-bare-{pid}");
        let (outer, inner) = (format!("mb{pid}a"), format!("mb{pid}b"));
        let _ = run(Command::new("ip").args(["netns", "del", &netns]));
        let host = BareHost {
            root,
            netns: netns.clone(),
            server_ip,
            host_ip,
            _dir: dir,
        };
        let ip = |args: &[&str]| run_ok(Command::new("ip").args(args));
        ip(&["netns", "add", &netns]);
        ip(&[
            "link", "add", &outer, "type", "veth", "peer", "name", &inner,
        ]);
        ip(&["link", "set", &inner, "netns", &netns]);
        ip(&["addr", "add", &format!("{server_ip}/30"), "dev", &outer]);
        ip(&["link", "set", &outer, "up"]);
        let inside = |args: &[&str]| {
            run_ok(
                Command::new("ip")
                    .args(["netns", "exec", &netns, "ip"])
                    .args(args),
            )
        };
        inside(&["addr", "add", &format!("{host_ip}/30"), "dev", &inner]);
        inside(&["link", "set", &inner, "up"]);
        inside(&["link", "set", "lo", "up"]);
        host
    }

    /// `sh -c script` as root inside the bare host: its own network, mount,
    /// UTS (hostname `bare-host`) and PID namespaces (so it sees only its own
    /// processes), `/proc` and `/dev` mounted, a clean environment.
    pub fn sh(&self, script: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.netns])
            .args([
                "unshare",
                "--mount",
                "--uts",
                "--pid",
                "--fork",
                "--kill-child",
            ])
            .args([
                "sh",
                "-c",
                "hostname bare-host && mount -t proc proc \"$1/proc\" \
                 && mount --rbind /dev \"$1/dev\" && exec chroot \"$1\" /bin/sh -c \"$2\"",
                "enter",
            ])
            .arg(&self.root)
            .arg(script)
            .env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .env("HOME", "/root")
            .env("LANG", "C.UTF-8");
        cmd
    }

    /// `path` (absolute, as the host sees it) in the host's file system.
    pub fn path(&self, path: &str) -> PathBuf {
        self.root.join(path.trim_start_matches('/'))
    }
}

impl Drop for BareHost {
    fn drop(&mut self) {
        // Deleting the namespace deletes the veth pair with it.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .output();
    }
}
