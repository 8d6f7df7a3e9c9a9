//! Muster's central server: private CA, enrollment, config rendering,
//! Prometheus target files, the admin API and its CLI client.

pub mod admin_wire;
pub mod api;
pub mod app;
pub mod args;
pub mod authlimit;
pub mod batch;
pub mod bootstrap;
pub mod ca;
pub mod cli;
pub mod commands;
pub mod console;
pub mod downloads;
pub mod fleet;
pub mod http;
pub mod init;
pub mod machine;
pub mod metrics;
pub mod overrides;
pub mod preview;
pub mod reconciler;
pub mod render;
pub mod schema;
pub mod scrape;
pub mod serve;
pub mod settings;
pub mod store;
pub mod targets;
pub mod tls;
pub mod tokens;

/// Where the server keeps its state when `--data-dir` is not given.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/muster-server";
