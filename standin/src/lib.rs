//! The Alloy stand-in: a small program answering the parts of the `alloy` CLI
//! and HTTP API Muster uses (Grafana Alloy cannot be installed where the tests
//! run). The `alloy-standin` binary is `main.rs`; the test harness
//! (`muster_e2e::Standin`) runs it. It builds for Linux and Windows.

pub mod check;
pub mod cli;
pub mod exposition;
pub mod http;
