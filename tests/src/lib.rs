//! Muster's end-to-end harness: runs the real `muster-server`, the Alloy
//! stand-in and a real Prometheus as child processes, each on a loopback port
//! 0 and killed on drop, for the cross-binary tests in `tests/tests/`.
//! The stand-in itself (`alloy-standin`) is a crate of its own, `standin/`.
//!
//! ```no_run
//! # async fn demo() {
//! use muster_e2e::{Prometheus, Server, Standin};
//! let dir = tempfile::tempdir().expect("temp dir");
//! let server = Server::start(dir.path());
//! // A test that starts one is marked
//! // #[cfg_attr(not(have_prometheus), ignore = "SKIPPED: needs prometheus ...")].
//! let prometheus = Prometheus::start(&dir.path().join("targets"), dir.path()).await;
//! # }
//! ```

pub mod apt_repo;
pub mod bare_host;
pub mod bench;
pub mod fleet;
pub mod loadgen;
pub mod prereqs;
pub mod process;
pub mod prometheus;
pub mod server;
pub mod standin;
#[cfg(unix)]
pub mod tools;

pub use process::{
    agent_command, bin_path, hermetic, os_release_fixture, run, run_fail, run_ok, Process,
    OS_RELEASE_ENV,
};
pub use prometheus::{Prometheus, Sample};
pub use server::{Server, ServerBuilder};
pub use standin::Standin;

use std::time::Duration;

/// An HTTP client for loopback test traffic: no proxy, short timeout. It has
/// no TLS roots; for the server's HTTPS listeners build a client with
/// `tls_certs_only` and the server's CA, after calling [`install_crypto`].
pub fn http_client() -> reqwest::Client {
    install_crypto();
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("a client with no TLS settings builds")
}

/// Installs rustls' ring provider as the process default (reqwest is built
/// without one). Idempotent.
pub fn install_crypto() {
    // Err only means a provider is already installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
