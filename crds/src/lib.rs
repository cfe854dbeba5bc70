//! The Trunkgate API: the `CarrierTrunk` and `NumberOwnership` custom resources, the compiled
//! `EdgeConfig` snapshot that edge pods run, and `compile()` that turns one into the other.
#![forbid(unsafe_code)]
// kube's `printcolumn(...)` attributes repeat `type_ =` by design.
#![allow(clippy::duplicated_attributes)]

pub mod e164;
pub mod numbers;
pub mod quality;
pub mod trunk;

pub use numbers::*;
pub use trunk::*;
pub mod acl;
pub mod compile;
pub mod digest;
pub mod files;
pub mod fixtures;
pub mod rate;
pub mod report;
pub mod schema;
pub mod snapshot;
pub mod snapshot_secrets;

pub use compile::{Compiled, Secrets, compile, compile_shared, compile_with_refused};
pub use report::{ObjectKey, ObjectKind, Problem, Reason, Refused, Report};
pub use snapshot::EdgeConfig;
