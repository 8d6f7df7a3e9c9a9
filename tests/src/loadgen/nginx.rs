//! The reference: Debian's nginx doing the physical minimum of a config
//! poll. TLS 1.3 only, with the Muster server's own certificate and key, the
//! client certificate verified against the Muster CA (`ssl_verify_client
//! on`), and one static file at the config path whose ETag makes
//! `If-None-Match` answer 304. One worker process, no access log; configured
//! in a temp dir of its own on a loopback port.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use muster_shared::wire::CONFIG_PATH;

use crate::process::Process;

/// Where Debian installs it.
const NGINX: &str = "/usr/sbin/nginx";

/// A running nginx, stopped on drop.
pub struct Nginx {
    process: Process,
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Nginx {
    /// The nginx binary, when installed.
    pub fn binary() -> Option<PathBuf> {
        Some(PathBuf::from(NGINX)).filter(|p| p.is_file())
    }

    /// Starts nginx serving `body` at the config path, with the certificate,
    /// key and CA of the Muster data dir `data`, pinned to `cpu` when given.
    pub fn start(data: &Path, body: &[u8], cpu: Option<usize>) -> Nginx {
        let binary = Nginx::binary().expect("nginx is installed (apt-get install nginx)");
        let dir = tempfile::tempdir().expect("temp dir");
        let www = dir.path().join("www");
        std::fs::create_dir_all(&www).expect("www dir");
        std::fs::write(www.join("config.json"), body).expect("config file");
        // A free port: nginx cannot report one it chose; retried if taken
        // in between.
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port();
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let conf = dir.path().join("nginx.conf");
            std::fs::write(&conf, config(dir.path(), data, &www, addr)).expect("nginx.conf");
            let mut cmd = match cpu {
                Some(cpu) => {
                    let mut c = Command::new("taskset");
                    c.args(["-c", &cpu.to_string()]).arg(&binary);
                    c
                }
                None => Command::new(&binary),
            };
            cmd.arg("-p")
                .arg(dir.path())
                .arg("-c")
                .arg(&conf)
                .arg("-e")
                .arg(dir.path().join("error.log"));
            let mut process = Process::spawn(&mut cmd);
            let until = Instant::now() + Duration::from_secs(10);
            loop {
                if TcpStream::connect(addr).is_ok() {
                    return Nginx {
                        process,
                        addr,
                        _dir: dir,
                    };
                }
                if process.try_wait().is_some() || Instant::now() > until {
                    let log =
                        std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default();
                    if log.contains("Address already in use") {
                        break;
                    }
                    panic!("nginx did not start\n{}\n{log}", process.logs());
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        panic!("nginx found no free port in five tries");
    }

    /// The master process and its worker.
    pub fn pids(&self) -> Vec<u32> {
        super::procfs::with_children(self.process.pid())
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGQUIT: graceful stop; the Process then kills and reaps it.
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.process.pid() as i32, libc::SIGQUIT) };
        self.process.wait_exit(Duration::from_secs(5));
    }
}

fn config(dir: &Path, data: &Path, www: &Path, addr: SocketAddr) -> String {
    let d = dir.display();
    let crt = data.join("server.crt");
    let key = data.join("server.key");
    let ca = data.join("ca.crt");
    let file = www.join("config.json");
    format!(
        "user root;
worker_processes 1;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
worker_rlimit_nofile 65536;
events {{ worker_connections 32768; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    keepalive_timeout 75s;
    keepalive_requests 1000000;
    server {{
        listen {addr} ssl;
        ssl_protocols TLSv1.3;
        ssl_certificate {crt};
        ssl_certificate_key {key};
        ssl_client_certificate {ca};
        ssl_verify_client on;
        location = {CONFIG_PATH} {{
            default_type application/json;
            alias {file};
        }}
    }}
}}
",
        crt = crt.display(),
        key = key.display(),
        ca = ca.display(),
        file = file.display(),
    )
}
