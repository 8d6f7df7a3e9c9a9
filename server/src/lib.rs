//! Muster's central server.

pub mod ca;
pub mod tls;
