//! The Trunkgate SIP edge: per-core workers running a B2BUA between carriers and the platform.
//! The folders follow the architecture (`ARCHITECTURE.md` beside `src/`):
//! [`sip`] the protocol, [`guard`] who may reach the edge, [`transport`] the wire below SIP,
//! [`route`] where a call may go, [`call`] the B2BUA, [`config`] what the edge runs on,
//! [`fleet`] what the edges of one deployment share, [`register`] trunk registrations,
//! [`worker`] the demultiplexer that ties them together on each core.
#![forbid(unsafe_code)]

mod call;
mod config;
pub mod edge;
mod fleet;
mod guard;
mod lifeline;
mod metrics;
mod quality;
mod register;
mod route;
mod sip;
mod snapshots;
mod table;
mod transport;
mod worker;

pub use config::settings;
/// For `examples/route_bench.rs`: the routing decision at scale.
#[doc(hidden)]
pub use route::bench as route_bench;
