//! `EdgeConfig`: the compiled, versioned snapshot that every edge pod runs, its number index,
//! and its encoding into the data of Kubernetes Secrets: one when the compressed snapshot fits a
//! Secret, else consecutive parts of it in up to `max_parts` Secrets with fixed names (so that
//! RBAC can name each; see `parts`).

use std::collections::HashMap;
use std::io::{Read, Write};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::digest::DigestCredentials;
use crate::e164::{DialPlan, E164, NumberRange};
use crate::{CallerIdPolicy, DigestAlgorithm, Limits, Media, NumberKind, Transport};

/// Key of the snapshot inside the published Secret (gzip-compressed JSON).
pub const SNAPSHOT_KEY: &str = "snapshot.json.gz";
/// The API server refuses objects over 1 MiB; leave room for metadata. The most one Secret
/// (one part) carries.
pub const MAX_SNAPSHOT_BYTES: usize = 1_000_000;
/// The most JSON a snapshot may decode to (a guard against a gzip bomb; 1,000,000 numbers take
/// about 20 MB).
const MAX_DECODED_BYTES: u64 = 512 << 20;
/// Parts a snapshot may take unless configured otherwise (the chart's `snapshotMaxParts`).
pub const DEFAULT_MAX_PARTS: usize = 8;

/// Everything an edge pod needs, compiled from the valid CarrierTrunks, NumberOwnerships and
/// Secrets. Contains no plaintext password.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct EdgeConfig {
    /// Content hash of everything else: equal snapshots have equal versions.
    pub version: String,
    /// Trunks sorted by `id`.
    pub trunks: Vec<TrunkConfig>,
    /// Number ownerships sorted by `id`.
    pub ownerships: Vec<OwnershipConfig>,
}

/// One trunk as the edge runs it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TrunkConfig {
    /// `namespace/name`: what the X-Trunkgate-Trunk header and metrics carry.
    pub id: String,
    /// The metadata.generation compiled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    pub inbound: InboundConfig,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbound: Option<OutboundConfig>,
    /// Outbound destination prefixes (digits after the `+`) with their priority.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<RouteConfig>,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub media: Media,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
}

/// What the edge expects of a carrier's certificates (`spec.tls`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct TlsConfig {
    /// The CA bundle (PEM) from `caSecretRef`'s `ca.crt`; None: the edge's `--tls-ca` or the
    /// system roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_pem: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    /// Lower-case DNS names or IP addresses a client certificate must carry (one of them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub client_names: Vec<String>,
}

/// Inbound side of a trunk.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InboundConfig {
    pub allowed_cidrs: Vec<IpNet>,
    /// Lower-case Request-URI hosts; empty = any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hostnames: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<DigestCredentials>,
    /// Digest algorithms challenged with, most preferred first (`inbound.auth.algorithms`).
    #[serde(default = "md5_only", skip_serializing_if = "is_md5_only")]
    pub auth_algorithms: Vec<DigestAlgorithm>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dial_plan: Option<DialPlan>,
    pub destination: SipTarget,
}

fn md5_only() -> Vec<DigestAlgorithm> {
    vec![DigestAlgorithm::Md5]
}

fn is_md5_only(a: &[DigestAlgorithm]) -> bool {
    a == [DigestAlgorithm::Md5]
}

/// Outbound side of a trunk.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OutboundConfig {
    /// Sorted by priority (lowest first), as written within one priority; the edge draws the
    /// order within a priority by weight for each call (RFC 2782).
    pub targets: Vec<SipTarget>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<DigestCredentials>,
    pub caller_id_policy: CallerIdPolicy,
    /// Seconds between OPTIONS probes of each target; 0: not probed.
    #[serde(default)]
    pub health_interval_seconds: u32,
    /// Failed probes in a row before a target is tried only after those that are up.
    #[serde(default)]
    pub health_failure_threshold: u32,
    /// The registration with the carrier's registrar, if the trunk has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registration: Option<RegistrationConfig>,
    /// Quality thresholds that demote targets (`outbound.quality`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quality: Option<crate::trunk::Quality>,
    /// The namespace's selection policy as this trunk states it (`outbound.selection`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selection: Option<crate::trunk::Selection>,
}

/// The namespace (tenant) of a trunk id `namespace/name`.
pub fn namespace_of_id(id: &str) -> &str {
    id.split_once('/').map_or(id, |(ns, _)| ns)
}

/// `outbound.registration` as the edge runs it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegistrationConfig {
    pub registrar: SipTarget,
    /// The address of record, `sip:USER@DOMAIN`.
    pub aor: String,
    /// Its user part: also the user of the Contact registered, which calls to the contact name.
    pub user: String,
    /// Seconds asked for.
    pub expires: u32,
    pub called_number: crate::trunk::CalledNumberFrom,
}

/// A SIP next hop taken apart: scheme, host, optional port and transport.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SipTarget {
    /// As written by the user.
    pub uri: String,
    /// `sips:` (TLS) rather than `sip:`.
    #[serde(default)]
    pub secure: bool,
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    /// Port when given; otherwise RFC 3263 resolution (or 5060/5061) applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    pub transport: Transport,
    #[serde(default = "one")]
    pub priority: u32,
    #[serde(default = "one")]
    pub weight: u32,
}

fn one() -> u32 {
    1
}

/// An outbound route prefix.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteConfig {
    /// Digits after the `+`; empty matches every number.
    pub prefix: String,
    pub priority: u32,
    /// What calls under this prefix cost (`spec.routes[].rate`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<crate::rate::RateConfig>,
}

/// One NumberOwnership as the edge runs it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OwnershipConfig {
    /// `namespace/name`.
    pub id: String,
    /// Index of the owning trunk in `EdgeConfig::trunks`.
    pub trunk: u32,
    pub kind: NumberKind,
    /// Platform numbers only: the carrier has verified them.
    pub verified: bool,
    /// Sorted, merged blocks, written `+A` or `+A-+B`.
    #[serde(with = "range_strings")]
    pub ranges: Vec<NumberRange>,
}

mod range_strings {
    use serde::{Deserialize, Deserializer, Serializer, de::Error as _, ser::SerializeSeq};

    use crate::e164::{NumberRange, parse_number_spec};

    pub fn serialize<S: Serializer>(v: &[NumberRange], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(v.len()))?;
        for r in v {
            seq.serialize_element(&r.to_string())?;
        }
        seq.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<NumberRange>, D::Error> {
        let raw = Vec::<String>::deserialize(d)?;
        let mut out = Vec::with_capacity(raw.len());
        for s in raw {
            let mut r = parse_number_spec(&s).map_err(D::Error::custom)?;
            if r.len() != 1 {
                return Err(D::Error::custom(format!("'{s}' is not a single block")));
            }
            out.append(&mut r);
        }
        Ok(out)
    }
}

/// Who holds a block of numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Owner {
    /// Index into `EdgeConfig::trunks`.
    pub trunk: u32,
    pub kind: NumberKind,
    pub verified: bool,
}

impl Owner {
    /// Whether this ownership lets the trunk present the number as caller ID.
    pub fn may_present(&self) -> bool {
        self.kind == NumberKind::Byoc || self.verified
    }
}

/// Numbers → owners, as disjoint sorted segments per digit count, so a lookup is one binary
/// search over integers.
#[derive(Clone, Debug, Default)]
pub struct NumberIndex {
    by_len: Vec<Segments>,
    owner_sets: Vec<Vec<Owner>>,
}

#[derive(Clone, Debug, Default)]
struct Segments {
    starts: Vec<u64>,
    ends: Vec<u64>,
    set: Vec<u32>,
}

impl NumberIndex {
    /// Builds the index by sweeping every block's boundaries; adjacent segments with the same
    /// owners are merged.
    pub fn build(entries: impl IntoIterator<Item = (NumberRange, Owner)>) -> Self {
        let mut events: Vec<Vec<(u64, bool, Owner)>> =
            vec![Vec::new(); crate::e164::MAX_DIGITS + 1];
        for (r, o) in entries {
            let ev = &mut events[r.len as usize];
            ev.push((r.start, true, o));
            // `end + 1` cannot overflow: 15 digits stay far below u64::MAX.
            ev.push((r.end + 1, false, o));
        }
        let mut index = NumberIndex {
            by_len: vec![Segments::default(); crate::e164::MAX_DIGITS + 1],
            owner_sets: Vec::new(),
        };
        let mut interned: HashMap<Vec<Owner>, u32> = HashMap::new();
        for (len, mut ev) in events.into_iter().enumerate() {
            if ev.is_empty() {
                continue;
            }
            ev.sort_unstable_by_key(|e| e.0);
            let seg = &mut index.by_len[len];
            let mut active: Vec<Owner> = Vec::new();
            let mut i = 0;
            while i < ev.len() {
                let pos = ev[i].0;
                while i < ev.len() && ev[i].0 == pos {
                    let (_, open, o) = ev[i];
                    if open {
                        active.push(o);
                    } else if let Some(k) = active.iter().position(|a| *a == o) {
                        active.swap_remove(k);
                    }
                    i += 1;
                }
                if active.is_empty() || i == ev.len() {
                    continue;
                }
                let next = ev[i].0;
                let mut set = active.clone();
                set.sort_unstable();
                set.dedup();
                let id = *interned.entry(set.clone()).or_insert_with(|| {
                    index.owner_sets.push(set);
                    (index.owner_sets.len() - 1) as u32
                });
                let end = next - 1;
                match (seg.ends.last_mut(), seg.set.last()) {
                    (Some(last_end), Some(&last_set)) if *last_end + 1 == pos && last_set == id => {
                        *last_end = end;
                    }
                    _ => {
                        seg.starts.push(pos);
                        seg.ends.push(end);
                        seg.set.push(id);
                    }
                }
            }
        }
        index
    }

    /// Builds the index of a snapshot.
    pub fn of(config: &EdgeConfig) -> Self {
        Self::build(config.ownerships.iter().flat_map(|o| {
            let owner = Owner {
                trunk: o.trunk,
                kind: o.kind,
                verified: o.verified,
            };
            o.ranges.iter().map(move |r| (*r, owner))
        }))
    }

    /// Every ownership of the number (empty when nobody owns it).
    pub fn owners(&self, n: E164) -> &[Owner] {
        let Some(seg) = self.by_len.get(n.len as usize) else {
            return &[];
        };
        let i = seg.starts.partition_point(|s| *s <= n.value);
        if i == 0 || seg.ends[i - 1] < n.value {
            return &[];
        }
        &self.owner_sets[seg.set[i - 1] as usize]
    }

    /// Segments whose owners include both trunks (used to tell whether numbers disambiguate
    /// two trunks).
    pub fn shared_by(&self, a: u32, b: u32) -> Option<NumberRange> {
        for (len, seg) in self.by_len.iter().enumerate() {
            for k in 0..seg.starts.len() {
                let set = &self.owner_sets[seg.set[k] as usize];
                if set.iter().any(|o| o.trunk == a) && set.iter().any(|o| o.trunk == b) {
                    return Some(NumberRange {
                        len: len as u8,
                        start: seg.starts[k],
                        end: seg.ends[k],
                    });
                }
            }
        }
        None
    }

    /// Number of disjoint segments.
    pub fn segments(&self) -> usize {
        self.by_len.iter().map(|s| s.starts.len()).sum()
    }
}

/// Why a snapshot could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error(
        "snapshot is {bytes} bytes compressed, over the {max_parts} parts of {part}-byte Secrets allowed (snapshotMaxParts / --snapshot-max-parts)"
    )]
    TooLarge {
        bytes: usize,
        part: usize,
        max_parts: usize,
    },
    #[error("snapshot Secret has no '{SNAPSHOT_KEY}' key")]
    Missing,
    #[error("snapshot is not valid gzip: {0}")]
    Gzip(#[source] std::io::Error),
    #[error("snapshot is not a valid EdgeConfig: {0}")]
    Json(#[from] serde_json::Error),
    #[error("snapshot in parts: {0}")]
    Parts(String),
    #[error(
        "snapshot in parts: {part} belongs to snapshot {found}, the head to {head} (a publish in progress)"
    )]
    PartsOfAnotherVersion {
        part: String,
        head: String,
        found: String,
    },
    #[error("snapshot version {stated} does not match its content ({actual})")]
    VersionMismatch { stated: String, actual: String },
}

impl SnapshotError {
    /// Low-cardinality label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            SnapshotError::TooLarge { .. } => "too_large",
            SnapshotError::Missing => "missing",
            SnapshotError::Gzip(_) => "gzip",
            SnapshotError::Json(_) => "json",
            SnapshotError::VersionMismatch { .. } => "version_mismatch",
            SnapshotError::Parts(_) => "parts",
            SnapshotError::PartsOfAnotherVersion { .. } => "parts_of_another_version",
        }
    }
}

impl EdgeConfig {
    /// The content hash of this snapshot (ignoring the `version` field itself).
    pub fn content_version(&self) -> String {
        let mut unversioned = self.clone();
        unversioned.version.clear();
        let json = serde_json::to_vec(&unversioned).unwrap_or_default();
        hex::encode(&Sha256::digest(&json)[..8])
    }

    /// Stamps `version` with the content hash.
    pub fn stamped(mut self) -> Self {
        self.version = self.content_version();
        self
    }

    /// gzip-compressed JSON: what the snapshot Secrets carry, whole or in parts.
    pub fn encode(&self) -> Result<Vec<u8>, SnapshotError> {
        let json = serde_json::to_vec(self)?;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&json).map_err(SnapshotError::Gzip)?;
        gz.finish().map_err(SnapshotError::Gzip)
    }

    /// `encode()` cut into consecutive parts of at most `part` bytes, one per Secret; an error
    /// when more than `max_parts` would be needed.
    pub fn encode_parts(
        &self,
        part: usize,
        max_parts: usize,
    ) -> Result<Vec<Vec<u8>>, SnapshotError> {
        let bytes = self.encode()?;
        let part = part.max(1);
        let needed = bytes.len().div_ceil(part).max(1);
        if needed > max_parts {
            return Err(SnapshotError::TooLarge {
                bytes: bytes.len(),
                part,
                max_parts,
            });
        }
        if needed == 1 {
            return Ok(vec![bytes]);
        }
        Ok(bytes.chunks(part).map(<[u8]>::to_vec).collect())
    }

    /// Reads what `encode_parts` wrote, parts in order.
    pub fn decode_parts(parts: &[&[u8]]) -> Result<Self, SnapshotError> {
        if let [one] = parts {
            return Self::decode(one);
        }
        Self::decode(&parts.concat())
    }

    /// Reads what `encode` wrote and checks the version against the content.
    pub fn decode(bytes: &[u8]) -> Result<Self, SnapshotError> {
        let mut json = Vec::new();
        flate2::read::GzDecoder::new(bytes)
            .take(MAX_DECODED_BYTES)
            .read_to_end(&mut json)
            .map_err(SnapshotError::Gzip)?;
        let config: EdgeConfig = serde_json::from_slice(&json)?;
        let actual = config.content_version();
        if actual != config.version {
            return Err(SnapshotError::VersionMismatch {
                stated: config.version,
                actual,
            });
        }
        Ok(config)
    }

    /// Trunk by `namespace/name`.
    pub fn trunk(&self, id: &str) -> Option<(u32, &TrunkConfig)> {
        self.trunks
            .binary_search_by(|t| t.id.as_str().cmp(id))
            .ok()
            .map(|i| (i as u32, &self.trunks[i]))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::e164::parse_number_spec;

    fn owner(trunk: u32, kind: NumberKind, verified: bool) -> Owner {
        Owner {
            trunk,
            kind,
            verified,
        }
    }

    fn r(s: &str) -> NumberRange {
        parse_number_spec(s).unwrap()[0]
    }

    #[test]
    fn index_answers_owners_and_merges_adjacent_blocks() {
        let a = owner(0, NumberKind::Byoc, false);
        let p = owner(1, NumberKind::Platform, true);
        let idx = NumberIndex::build([
            (r("+6498879300-+6498879349"), a),
            (r("+6498879350-+6498879399"), a),
            (r("+6498879333"), p),
            (r("+14155550100"), p),
        ]);
        let q = |s: &str| idx.owners(E164::parse(s).unwrap()).to_vec();
        assert_eq!(q("+6498879300"), vec![a]);
        assert_eq!(q("+6498879399"), vec![a]);
        assert_eq!(q("+6498879333"), vec![a, p]);
        assert_eq!(q("+6498879400"), vec![]);
        assert_eq!(q("+649887930"), vec![], "other length");
        assert_eq!(q("+14155550100"), vec![p]);
        // [300-332] a, [333] a+p, [334-399] a, and the US number.
        assert_eq!(idx.segments(), 4);
        assert_eq!(idx.shared_by(0, 1), Some(r("+6498879333")));
        assert_eq!(idx.shared_by(0, 2), None);
    }

    /// A stamped config with one BYOC ownership of `ranges`.
    fn one_ownership(ranges: Vec<NumberRange>) -> EdgeConfig {
        EdgeConfig {
            version: String::new(),
            trunks: vec![],
            ownerships: vec![OwnershipConfig {
                id: "a/b".into(),
                trunk: 0,
                kind: NumberKind::Byoc,
                verified: false,
                ranges,
            }],
        }
        .stamped()
    }

    #[test]
    fn encode_decode_round_trip_checks_version() {
        let cfg = one_ownership(vec![r("+6498879300-+6498879399")]);
        let bytes = cfg.encode().unwrap();
        assert_eq!(EdgeConfig::decode(&bytes).unwrap(), cfg);
        let mut tampered = cfg.clone();
        tampered.ownerships[0].verified = true;
        let bytes = tampered.encode().unwrap();
        assert!(matches!(
            EdgeConfig::decode(&bytes),
            Err(SnapshotError::VersionMismatch { .. })
        ));
        assert!(matches!(
            EdgeConfig::decode(b"not gzip"),
            Err(SnapshotError::Gzip(_))
        ));
    }

    /// A config with `n` single numbers in one ownership: gzip cannot fold them into little.
    fn numbers(n: u64) -> EdgeConfig {
        one_ownership(
            (0..n)
                .map(|i| {
                    let at = 64_900_000_000 + i * 7919 % 99_999_989;
                    NumberRange {
                        len: 11,
                        start: at,
                        end: at,
                    }
                })
                .collect(),
        )
    }

    #[test]
    fn a_small_snapshot_is_one_part_a_large_one_several_in_order() {
        let small = numbers(10);
        let parts = small.encode_parts(MAX_SNAPSHOT_BYTES, 8).unwrap();
        assert_eq!(parts, vec![small.encode().unwrap()]);

        let large = numbers(5_000);
        let whole = large.encode().unwrap();
        let parts = large.encode_parts(4_096, 64).unwrap();
        assert_eq!(parts.len(), whole.len().div_ceil(4_096));
        assert!(parts.iter().all(|p| p.len() <= 4_096));
        let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        assert_eq!(EdgeConfig::decode_parts(&refs).unwrap(), large);
        // Parts out of order, or one missing, never decode to a snapshot.
        let mut swapped = refs.clone();
        swapped.swap(0, 1);
        assert!(EdgeConfig::decode_parts(&swapped).is_err());
        assert!(EdgeConfig::decode_parts(&refs[..refs.len() - 1]).is_err());
    }

    #[test]
    fn more_parts_than_allowed_is_an_error_naming_the_sizes() {
        let large = numbers(5_000);
        let bytes = large.encode().unwrap().len();
        let e = large.encode_parts(1_000, 2).unwrap_err();
        assert_eq!(e.metric_label(), "too_large");
        assert_eq!(
            e.to_string(),
            format!(
                "snapshot is {bytes} bytes compressed, over the 2 parts of 1000-byte Secrets allowed (snapshotMaxParts / --snapshot-max-parts)"
            )
        );
    }
}
