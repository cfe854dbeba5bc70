//! Where a call may go: admission (ACL, trunk, numbers, caller ID, limits) and the health of
//! carrier targets (OPTIONS probes).

pub mod admission;
pub mod health;
