//! SIP itself: reading and writing messages, the identifiers the edge mints, transactions
//! (RFC 3261 §17) and the timers that drive them. Knows nothing of calls.

pub mod ids;
pub mod message;
pub mod msg;
pub mod timers;
pub mod transaction;
