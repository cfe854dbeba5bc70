//! `NumberOwnership`: which numbers are served over which trunk, and whether a platform number
//! may be presented as caller ID there.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Numbers served over one CarrierTrunk: BYOC numbers bought from that carrier, or platform
/// numbers that the carrier has verified the customer may present.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "trunkgate.io",
    version = "v1alpha1",
    kind = "NumberOwnership",
    namespaced,
    status = "NumberOwnershipStatus",
    shortname = "numown",
    category = "trunkgate",
    doc = "E.164 numbers and the CarrierTrunk that serves them.",
    printcolumn(name = "Trunk", type_ = "string", json_path = ".spec.trunkRef.name"),
    printcolumn(name = "Kind", type_ = "string", json_path = ".spec.kind"),
    printcolumn(name = "Numbers", type_ = "integer", json_path = ".status.numberCount"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct NumberOwnershipSpec {
    /// The CarrierTrunk, in this namespace, that serves these numbers.
    pub trunk_ref: TrunkRef,
    /// `Byoc`: bought from that trunk's carrier. `Platform`: provided by the platform; may be
    /// sent as caller ID over the trunk only once `verification` is filled in.
    pub kind: NumberKind,
    /// E.164 numbers (`+6498879333`), inclusive ranges of equal length
    /// (`+6498879300-+6498879399`) and prefixes (`+64988793*`).
    #[x_kube(validation = Rule::new("size(self) > 0").message("numbers must list at least one number"))]
    #[schemars(length(max = 5000), inner(length(max = 40)))]
    pub numbers: Vec<String>,
    /// Who verified, with the carrier, that the customer may present these platform numbers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<Verification>,
}

/// The trunk a NumberOwnership belongs to.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct TrunkRef {
    /// Name of a CarrierTrunk in the same namespace.
    pub name: String,
}

/// Where the numbers come from.
#[derive(
    JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord,
)]
pub enum NumberKind {
    /// Bought from the trunk's carrier (bring your own carrier).
    Byoc,
    /// Provided by the platform; the trunk's carrier must verify it before it may be presented.
    Platform,
}

/// Evidence that the carrier verified the numbers.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Verification {
    /// Who at the carrier verified the numbers.
    pub verified_by: String,
    /// When, as an RFC 3339 timestamp.
    pub verified_at: String,
    /// The carrier's ticket or document reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
}

/// Observed state of a NumberOwnership.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct NumberOwnershipStatus {
    /// `Accepted`, `ResolvedRefs`, `Verified`, `Conflicted`, `Programmed` and `Ready`.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// The generation these conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// How many numbers the entries cover (a prefix counts every number up to 15 digits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number_count: Option<u64>,
    /// Version of the edge snapshot that includes this generation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_version: Option<String>,
}
