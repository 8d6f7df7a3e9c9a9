//! The fleet load benchmark's parts (`bench-fleet`): synthetic hosts that
//! enroll over real TLS, the fast SQL growth path, the open-loop poll
//! driver and its HTTP/1.1 client, the nginx reference, and `/proc` readings.

pub mod hosts;
pub mod http;
pub mod nginx;
pub mod polls;
pub mod procfs;
pub mod seed;
