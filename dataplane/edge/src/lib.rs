//! The Trunkgate SIP edge: per-core workers running a B2BUA between carriers and the platform.
#![forbid(unsafe_code)]

pub mod admission;
pub mod auth;
pub mod b2bua;
pub mod call;
pub mod cdr;
pub mod census;
pub mod challenge;
pub mod config;
pub mod edge;
pub mod gate;
pub mod health;
pub mod ids;
pub mod kernel;
pub mod lifeline;
pub mod lockout;
pub mod media;
pub mod message;
pub mod metrics;
pub mod msg;
pub mod prefilter;
pub mod settings;
pub mod source;
pub mod source_limit;
pub mod tcp;
pub mod timers;
pub mod worker;
