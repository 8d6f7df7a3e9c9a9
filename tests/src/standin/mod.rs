//! The Alloy stand-in: a small program answering the parts of the `alloy` CLI
//! and HTTP API Muster uses (Grafana Alloy cannot be installed where the tests
//! run), and [`Standin`], the handle tests use to run it.

pub mod check;
pub mod cli;
pub mod exposition;
mod handle;
pub mod http;

pub use handle::Standin;
