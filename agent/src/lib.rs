//! The Muster agent: enrolls this host with a Muster server over TLS pinned to
//! the server's key, then pulls its Alloy config over mutual TLS, validates,
//! installs and reloads it, and reports back.

pub mod alloy;
pub mod alloy_env;
pub mod apply;
pub mod atomic_file;
pub mod backoff;
pub mod client;
pub mod config;
pub mod detect;
pub mod enroll;
pub mod facts;
pub mod identity;
pub mod install;
pub mod run;
pub mod state;
pub mod status;
pub mod tls;
