//! What this host is and runs: OS facts from os-release, services from a
//! snapshot of processes and sockets. Parsing and detection are pure
//! (`os_release`, `services`); `probe` does the reading.

pub mod os_release;
pub mod probe;
pub mod services;

use muster_shared::facts::ServiceFact;

/// The services running on this host now.
pub fn services() -> Vec<ServiceFact> {
    services::detect(&probe::snapshot())
}
