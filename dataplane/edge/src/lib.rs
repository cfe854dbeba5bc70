//! The Trunkgate SIP edge: per-core workers running a B2BUA between carriers and the platform.
#![forbid(unsafe_code)]

mod admission;
mod auth;
mod b2bua;
mod call;
mod cdr;
mod census;
mod challenge;
mod config;
pub mod edge;
mod gate;
mod health;
mod ids;
mod kernel;
mod lifeline;
mod lockout;
mod media;
mod message;
mod metrics;
mod msg;
// Issue 21: only media uses the platform allow-list so far; the signalling side's enforcement
// (in progress elsewhere) uses the rest. Drop this allow when it lands.
#[allow(dead_code)]
mod platform;
mod prefilter;
pub mod settings;
mod source;
mod source_limit;
mod tcp;
mod timers;
mod tls;
mod tls_peer;
mod transaction;
mod worker;
