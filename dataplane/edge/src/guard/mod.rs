//! Who may reach the edge and how much they may make it hold: the ACL gate, the platform's
//! allow-list, per-source rates and set-up caps, connection census, the kernel prefilter, and
//! digest authentication with its lockout.

pub mod auth;
pub mod census;
pub mod gate;
pub mod lockout;
pub mod platform;
pub mod prefilter;
pub mod source_limit;
