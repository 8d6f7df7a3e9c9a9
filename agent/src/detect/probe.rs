//! The IO half of detection: takes a [`Snapshot`] of this host (processes
//! from `/proc` on Linux, from sysinfo elsewhere; listening sockets from
//! `/proc/net/tcp{,6}`, socket ownership from `/proc/<pid>/fd`, a few
//! paths). Every read that fails (permissions, a process that just exited)
//! is skipped: detection works with what it can see.
//!
//! With [`SCOPE_ENV`] set to a process id, detection sees only that
//! process's tree: its descendants, the sockets they hold, no well-known
//! paths. Tests set it so that what runs on the machine (an nginx, a
//! journal) never leaks into what they assert.

use std::collections::BTreeMap;
use std::path::Path;

use super::services::{self, Listener, Proc, Snapshot, PROBE_PATHS};

/// Environment variable naming the process whose tree detection is limited
/// to (tests).
pub const SCOPE_ENV: &str = "MUSTER_DETECT_PROCESS_TREE";

/// A snapshot of this host now (of one process tree under [`SCOPE_ENV`]).
pub fn snapshot() -> Snapshot {
    let scope = std::env::var(SCOPE_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<u32>().ok());
    let (mut processes, parents) = processes();
    let wanted = |p: &Proc| scope.is_some() || services::is_candidate(p);
    for p in processes.iter_mut().filter(|p| wanted(p)) {
        p.socket_inodes = socket_inodes(p.pid);
    }
    let snap = Snapshot {
        processes,
        listeners: listeners(),
        paths: PROBE_PATHS
            .iter()
            .filter(|p| Path::new(p).exists())
            .map(|p| p.to_string())
            .collect(),
    };
    match scope {
        Some(root) => services::scoped(snap, &parents, root),
        None => snap,
    }
}

/// Every process, and each one's parent: read straight from `/proc`, one
/// process at a time, keeping only what detection looks at (a general
/// process table reads and keeps far more: every thread, memory, times).
#[cfg(target_os = "linux")]
fn processes() -> (Vec<Proc>, BTreeMap<u32, u32>) {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        tracing::warn!("cannot read /proc; detecting services from paths only");
        return (Vec::new(), BTreeMap::new());
    };
    let mut parents = BTreeMap::new();
    let mut out = Vec::new();
    for entry in entries.filter_map(Result::ok) {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let dir = entry.path();
        // Gone since the listing: skipped.
        let Some((name, parent)) = std::fs::read_to_string(dir.join("stat"))
            .ok()
            .as_deref()
            .and_then(services::parse_proc_stat)
        else {
            continue;
        };
        parents.insert(pid, parent);
        let cmdline = std::fs::read(dir.join("cmdline"))
            .map(|raw| services::parse_cmdline(&raw))
            .unwrap_or_default();
        let exe = std::fs::read_link(dir.join("exe"))
            .ok()
            .map(|e| e.to_string_lossy().into_owned());
        out.push(Proc {
            pid,
            name,
            exe,
            cmdline,
            socket_inodes: Vec::new(),
        });
    }
    out.sort_by_key(|p| p.pid);
    (out, parents)
}

/// Every process, and each one's parent, from sysinfo.
#[cfg(not(target_os = "linux"))]
fn processes() -> (Vec<Proc>, BTreeMap<u32, u32>) {
    use sysinfo::{ProcessRefreshKind, ProcessesToUpdate, System, UpdateKind};

    let Ok(mut system) = System::new() else {
        tracing::warn!("cannot read the process list; detecting services from sockets only");
        return (Vec::new(), BTreeMap::new());
    };
    system.refresh_processes_specifics(
        ProcessesToUpdate::All,
        true,
        ProcessRefreshKind::nothing()
            .with_cmd(UpdateKind::Always)
            .with_exe(UpdateKind::Always),
    );
    let parents = system
        .processes()
        .values()
        .filter_map(|p| Some((p.pid().as_u32(), p.parent()?.as_u32())))
        .collect();
    let mut out: Vec<Proc> = system
        .processes()
        .values()
        // Threads show up as processes on Linux; their parent is enough.
        .filter(|p| p.thread_kind().is_none())
        .map(|p| Proc {
            pid: p.pid().as_u32(),
            name: p.name().to_string_lossy().into_owned(),
            exe: p.exe().map(|e| e.to_string_lossy().into_owned()),
            cmdline: p
                .cmd()
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect(),
            socket_inodes: Vec::new(),
        })
        .collect();
    out.sort_by_key(|p| p.pid);
    (out, parents)
}

#[cfg(target_os = "linux")]
fn listeners() -> Vec<Listener> {
    let mut out = Vec::new();
    for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
        if let Ok(text) = std::fs::read_to_string(file) {
            out.extend(services::parse_proc_net_tcp(&text));
        }
    }
    out.sort();
    out
}

#[cfg(not(target_os = "linux"))]
fn listeners() -> Vec<Listener> {
    Vec::new()
}

#[cfg(target_os = "linux")]
fn socket_inodes(pid: u32) -> Vec<u64> {
    let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    let mut out: Vec<u64> = entries
        .filter_map(Result::ok)
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter_map(|target| services::socket_inode(&target.to_string_lossy()))
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

#[cfg(not(target_os = "linux"))]
fn socket_inodes(_pid: u32) -> Vec<u64> {
    Vec::new()
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// This test process listening on a port shows up as the port's owner.
    #[test]
    fn a_listening_socket_of_ours_is_found_with_its_owner() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let snap = snapshot();
        let l = snap
            .listeners
            .iter()
            .find(|l| l.addr == addr)
            .expect("our listener is in /proc/net/tcp");
        let ours = socket_inodes(std::process::id());
        assert!(ours.contains(&l.inode), "{ours:?} lacks {}", l.inode);
        assert!(snap.processes.iter().any(|p| p.pid == std::process::id()));
    }

    /// Scoped to this test process: its child and its listening socket are
    /// seen, the machine's other processes and paths are not.
    #[test]
    fn a_scoped_snapshot_sees_our_child_and_our_socket() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let (mut processes, parents) = processes();
        for p in processes.iter_mut() {
            p.socket_inodes = socket_inodes(p.pid);
        }
        let snap = Snapshot {
            processes,
            listeners: listeners(),
            paths: vec!["/run/log/journal".into()],
        };
        let tree = services::scoped(snap, &parents, std::process::id());
        let _ = child.kill();
        let _ = child.wait();
        let pids: Vec<u32> = tree.processes.iter().map(|p| p.pid).collect();
        assert!(pids.contains(&child.id()), "{pids:?} {parents:?}");
        assert!(!pids.contains(&1), "{pids:?}");
        assert!(
            tree.listeners.iter().any(|l| l.addr == addr),
            "{:?}",
            tree.listeners
        );
        assert!(tree.paths.is_empty());
    }
}
