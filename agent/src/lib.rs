//! The Muster agent: enrolls this host with a Muster server over TLS pinned to
//! the server's key, then pulls its Alloy config over mutual TLS, validates,
//! installs and reloads it, and reports back.
//!
//! The modules form a one-way chain; each imports only those listed before
//! it:
//! * leaves: `access` (what the `alloy` user lacks for a config),
//!   `atomic_file`, `backoff`, `error_text`, `detect` (os-release and
//!   services), `log_file` (the Windows service's log)
//! * `identity` (key, certificates), `tls`, `state`, `config`
//! * `alloy` (version, command runner, HTTP endpoints, environment file)
//! * `client` (the server's routes), `facts`, `install`, `apply`
//! * `enroll`, `run`, `status`, `service` (Windows: the service wrapper
//!   around `run`)
//! * `cli` (clap definitions), `commands` (what each subcommand does)

pub mod access;
pub mod alloy;
pub mod apply;
pub mod atomic_file;
pub mod backoff;
pub mod cli;
pub mod client;
pub mod commands;
pub mod config;
pub mod detect;
pub mod enroll;
pub mod error_text;
pub mod facts;
pub mod identity;
pub mod install;
pub mod log_file;
pub mod run;
#[cfg(windows)]
pub mod service;
pub mod state;
pub mod status;
pub mod tls;
