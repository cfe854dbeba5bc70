//! What compile() says about each object: problems found, and the status conditions that
//! follow from them.

use std::fmt;

/// Which custom resource an object is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ObjectKind {
    CarrierTrunk,
    NumberOwnership,
}

impl fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ObjectKind::CarrierTrunk => "CarrierTrunk",
            ObjectKind::NumberOwnership => "NumberOwnership",
        })
    }
}

/// Kind, namespace and name of one object.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    pub kind: ObjectKind,
    pub namespace: String,
    pub name: String,
}

impl ObjectKey {
    /// `namespace/name`.
    pub fn id(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}

/// Why an object (or part of it) is not in the snapshot. The CamelCase name is the condition
/// reason; `metric_label()` the Prometheus label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    /// The object contradicts its own schema or rules.
    Invalid,
    /// A referenced Secret does not exist.
    SecretNotFound,
    /// A referenced Secret lacks a key or holds something unusable.
    SecretInvalid,
    /// The NumberOwnership's trunk does not exist in its namespace.
    TrunkNotFound,
    /// The NumberOwnership's trunk exists but is not accepted.
    TrunkNotAccepted,
    /// Another, older NumberOwnership already claims some of the numbers.
    NumberConflict,
    /// Another tenant's trunk accepts calls from the same carrier addresses and nothing tells
    /// the two apart.
    AddressConflict,
}

impl Reason {
    /// The condition reason.
    pub fn as_str(&self) -> &'static str {
        match self {
            Reason::Invalid => "Invalid",
            Reason::SecretNotFound => "SecretNotFound",
            Reason::SecretInvalid => "SecretInvalid",
            Reason::TrunkNotFound => "TrunkNotFound",
            Reason::TrunkNotAccepted => "TrunkNotAccepted",
            Reason::NumberConflict => "NumberConflict",
            Reason::AddressConflict => "AddressConflict",
        }
    }

    /// Low-cardinality metric label.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Reason::Invalid => "invalid",
            Reason::SecretNotFound => "secret_not_found",
            Reason::SecretInvalid => "secret_invalid",
            Reason::TrunkNotFound => "trunk_not_found",
            Reason::TrunkNotAccepted => "trunk_not_accepted",
            Reason::NumberConflict => "number_conflict",
            Reason::AddressConflict => "address_conflict",
        }
    }

    fn is_reference(&self) -> bool {
        matches!(
            self,
            Reason::SecretNotFound
                | Reason::SecretInvalid
                | Reason::TrunkNotFound
                | Reason::TrunkNotAccepted
        )
    }

    /// Problems in the object's own spec, for which the edge keeps the last good version.
    pub fn keeps_last_good(&self) -> bool {
        matches!(
            self,
            Reason::Invalid | Reason::SecretNotFound | Reason::SecretInvalid
        )
    }
}

/// One thing wrong with an object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// JSON path of the offending field, e.g. `spec.inbound.allowedCidrs[1]`.
    pub field: String,
    pub reason: Reason,
    /// What is wrong and what to do, in words a user can act on.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} ({})",
            self.field,
            self.message,
            self.reason.as_str()
        )
    }
}

/// An object refused before compile() could read it (by the schema, in files): compile() reports
/// it under its name and keeps its last good version, the one rule for every invalid object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refused {
    pub key: ObjectKey,
    pub problems: Vec<Problem>,
}

/// A status condition as compile() sees it; the operator adds times and generations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConditionState {
    pub type_: &'static str,
    pub status: bool,
    pub reason: String,
    pub message: String,
}

/// Everything compile() has to say about one object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    pub key: ObjectKey,
    /// metadata.generation of the object compiled.
    pub generation: Option<i64>,
    pub problems: Vec<Problem>,
    /// Facts worth telling the user that are not problems.
    pub notes: Vec<String>,
    /// Things that work but are probably not what the user meant (host bits in a CIDR, ...).
    pub warnings: Vec<String>,
    /// NumberOwnership only: the numbers of this generation in the snapshot when a conflict took
    /// some of them (the rest of the object is served).
    pub partial_numbers: Option<u64>,
    /// The edge keeps running this object's last good generation (it is invalid now).
    pub kept_generation: Option<Option<i64>>,
    /// NumberOwnership only: how many numbers its entries cover.
    pub number_count: Option<u64>,
    /// NumberOwnership only: Platform numbers with verification (None for Byoc).
    pub verified: Option<bool>,
    /// NumberOwnership only: the trunk it names.
    pub trunk: Option<String>,
}

impl Report {
    pub(crate) fn new(key: ObjectKey, generation: Option<i64>) -> Self {
        Self {
            key,
            generation,
            problems: Vec::new(),
            notes: Vec::new(),
            warnings: Vec::new(),
            partial_numbers: None,
            kept_generation: None,
            number_count: None,
            verified: None,
            trunk: None,
        }
    }

    pub(crate) fn problem(
        &mut self,
        field: impl Into<String>,
        reason: Reason,
        message: impl Into<String>,
    ) {
        self.problems.push(Problem {
            field: field.into(),
            reason,
            message: message.into(),
        });
    }

    /// Whether the object's current generation is in the snapshot.
    pub fn is_ready(&self) -> bool {
        self.problems.is_empty()
    }

    /// Whether the object's current generation is in the snapshot, whole or (a NumberOwnership
    /// that lost a number conflict) with the numbers nobody older claims.
    pub fn in_snapshot(&self) -> bool {
        self.is_ready() || self.partial_numbers.is_some()
    }

    fn first(&self, pick: impl Fn(&Reason) -> bool) -> Option<&Problem> {
        self.problems.iter().find(|p| pick(&p.reason))
    }

    /// `Accepted`, `ResolvedRefs`, (`Conflicted`, `Verified` for NumberOwnership) and `Ready`.
    pub fn conditions(&self, snapshot_version: &str) -> Vec<ConditionState> {
        let mut out = Vec::with_capacity(5);
        let spec_problem = self.first(|r| matches!(r, Reason::Invalid | Reason::AddressConflict));
        let remarks: Vec<String> = self
            .warnings
            .iter()
            .map(|w| format!("Warning: {w}"))
            .chain(self.notes.iter().cloned())
            .collect();
        out.push(match spec_problem {
            Some(p) => cond("Accepted", false, p.reason.as_str(), &p.to_string()),
            None if remarks.is_empty() => cond("Accepted", true, "Accepted", "The spec is valid."),
            None => cond("Accepted", true, "Accepted", &remarks.join(" ")),
        });
        out.push(match self.first(Reason::is_reference) {
            Some(p) => cond("ResolvedRefs", false, p.reason.as_str(), &p.to_string()),
            None => cond(
                "ResolvedRefs",
                true,
                "ResolvedRefs",
                "Every reference resolves.",
            ),
        });
        if self.key.kind == ObjectKind::NumberOwnership {
            out.push(match self.first(|r| *r == Reason::NumberConflict) {
                Some(p) => cond("Conflicted", true, "NumberConflict", &p.message),
                None => cond(
                    "Conflicted",
                    false,
                    "NoConflict",
                    "No other NumberOwnership claims these numbers.",
                ),
            });
            let trunk = self.trunk.as_deref().unwrap_or("its trunk");
            out.push(match self.verified {
                None => cond("Verified", true, "Byoc", "BYOC numbers need no verification."),
                Some(true) => cond(
                    "Verified",
                    true,
                    "Verified",
                    &format!("May be presented as caller ID over {trunk}."),
                ),
                Some(false) => cond(
                    "Verified",
                    false,
                    "NotVerified",
                    &format!(
                        "Platform numbers are not presented as caller ID over {trunk} until spec.verification records the carrier's verification."
                    ),
                ),
            });
        }
        out.push(match self.problems.first() {
            None => cond(
                "Ready",
                true,
                "Compiled",
                &format!("Included in edge snapshot {snapshot_version}."),
            ),
            Some(p) => {
                let kept = match (self.partial_numbers, self.kept_generation) {
                    (Some(n), _) => {
                        format!(" The other {n} numbers are in edge snapshot {snapshot_version}.")
                    }
                    (None, Some(Some(g))) => format!(" The edge keeps running generation {g}."),
                    (None, Some(None)) => {
                        " The edge keeps running the last good version.".to_string()
                    }
                    (None, None) => " Not in the edge snapshot.".to_string(),
                };
                cond("Ready", false, p.reason.as_str(), &format!("{p}.{kept}"))
            }
        });
        out
    }
}

fn cond(type_: &'static str, status: bool, reason: &str, message: &str) -> ConditionState {
    ConditionState {
        type_,
        status,
        reason: reason.to_string(),
        message: message.to_string(),
    }
}
