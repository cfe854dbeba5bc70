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
mod fleet;
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
mod platform;
mod prefilter;
mod register;
pub mod settings;
mod source;
mod source_limit;
mod tcp;
mod timers;
mod tls;
mod tls_peer;
mod transaction;
mod worker;
