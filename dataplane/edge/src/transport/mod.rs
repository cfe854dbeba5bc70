//! The wire below SIP: TCP and TLS connections, TLS peers' certificates, and what the kernel
//! says it dropped.

pub mod kernel;
mod link;
pub mod tcp;
pub mod tls;
pub mod tls_peer;

pub use link::Link;
