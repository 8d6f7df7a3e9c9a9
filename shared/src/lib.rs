//! What the Muster server and agent agree on: the JSON wire types, the rules for
//! labels, hostnames and host ids, the server public-key pin, and the Alloy
//! package mirror setting. Pure data and pure functions: no IO, no async
//! runtime.

pub mod alloy;
pub mod facts;
pub mod labels;
pub mod mirror;
pub mod pin;
pub mod wire;
