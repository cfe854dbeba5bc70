//! The Trunkgate operator: watches CarrierTrunk, NumberOwnership and their Secrets, compiles
//! them into the edge snapshot Secret and writes each object's status.
#![forbid(unsafe_code)]

pub mod check;
pub mod controller;
pub mod leader;
pub mod metrics;
pub mod publish;
pub mod rollout;
pub mod status;
