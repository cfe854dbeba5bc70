//! Where a call may go: admission (ACL, trunk, numbers, caller ID, limits) and the health of
//! carrier targets (OPTIONS probes).

pub mod admission;
pub mod bench;
mod direction;
pub mod fleet_quality;
pub mod health;
pub mod hop;

pub use direction::Direction;
pub use hop::Hop;
