//! A stand-in for a service process in end-to-end tests: copied to a file
//! named like the real program (`postgres`, `nginx`,
//! `prometheus-nginx-exporter`) so the agent's detection sees that process
//! name, it listens on a loopback port (`--port N`, else any free one),
//! prints `listening on ADDR`, and answers every HTTP request with a tiny
//! Prometheus exposition, so it can also stand in for an exporter.
//! It is named as a stand-in; no real PostgreSQL or nginx is involved.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

const BODY: &str = "# HELP fake_service_up A stand-in service answering.\n# TYPE fake_service_up gauge\nfake_service_up 1\n";

fn answer(stream: TcpStream) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut reader = BufReader::new(&stream);
    let mut line = String::new();
    // Read the request head; the body (if any) is ignored.
    while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
        if line == "\r\n" || line == "\n" {
            break;
        }
        line.clear();
    }
    let mut out = &stream;
    let _ = write!(
        out,
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{BODY}",
        BODY.len()
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let port = args
        .iter()
        .position(|a| a == "--port")
        .and_then(|i| args.get(i + 1))
        .map_or(0, |p| p.parse::<u16>().expect("--port takes a number"));
    let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind a loopback port");
    println!(
        "listening on {}",
        listener.local_addr().expect("bound address")
    );
    let _ = std::io::stdout().flush();
    for stream in listener.incoming().flatten() {
        std::thread::spawn(move || answer(stream));
    }
}
