//! Who may reach the edge and how much they may make it hold: the platform's allow-list,
//! per-source rates and set-up caps, the connection census, the kernel prefilter, and digest
//! authentication with its lockout. (Who may reach a transaction or dialog of ours is the
//! worker's gate: it needs the worker's tables.)

pub mod auth;
pub mod census;
pub mod lockout;
pub mod platform;
pub mod prefilter;
pub mod source_limit;
