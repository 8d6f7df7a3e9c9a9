//! The host's Grafana Alloy, as the agent drives it: its version and how
//! configs are checked (`version`), running it and other commands with a
//! timeout (`command`), its HTTP endpoints (`http`), and its environment
//! file (`env`).

pub mod command;
pub mod env;
pub mod http;
pub mod version;
