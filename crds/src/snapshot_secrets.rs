//! The snapshot as Kubernetes Secrets, written by the operator and read by the edge.
//!
//! A snapshot that fits one Secret is the head Secret alone, its gzip JSON under
//! `snapshot.json.gz`. A larger one is cut into parts (`EdgeConfig::encode_parts`): part 0 in the
//! head under `snapshot.json.gz.0`, part *i* in the Secret `<head>-part-<i>` under
//! `snapshot.json.gz.<i>`. Every Secret names the snapshot version it belongs to in an
//! annotation and the head names the part count, so a reader that meets parts of two versions
//! (a publish in progress) knows it and waits; the content hash checked by
//! `EdgeConfig::decode` catches anything else. Part names are fixed so that RBAC can grant the
//! edge exactly those names (`snapshotMaxParts` in the chart), and parts are owned by the head
//! (ownerReferences), so deleting the head (`helm uninstall`) removes them.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use crate::snapshot::{EdgeConfig, MAX_SNAPSHOT_BYTES, SNAPSHOT_KEY, SnapshotError};

/// Annotation carrying the snapshot version, readable without decoding the data.
pub const VERSION_ANNOTATION: &str = "trunkgate.io/snapshot-version";
/// Annotation of the head Secret: how many parts the snapshot has (absent: one).
pub const PARTS_ANNOTATION: &str = "trunkgate.io/snapshot-parts";
/// Label of every part Secret but the head (value `true`), so the operator can watch them.
pub const PART_LABEL: &str = "trunkgate.io/snapshot-part";

/// Name of part `i` (1 and up) of the snapshot whose head Secret is `head`.
pub fn part_name(head: &str, i: usize) -> String {
    format!("{head}-part-{i}")
}

/// Data key of part `i` of a snapshot in several parts.
pub fn part_key(i: usize) -> String {
    format!("{SNAPSHOT_KEY}.{i}")
}

/// The Secrets that carry one snapshot: the head and, for a large one, its other parts.
#[derive(Clone, Debug)]
pub struct SnapshotSecrets {
    pub head: Secret,
    /// Parts 1.. in order (empty when the head carries the whole snapshot).
    pub parts: Vec<Secret>,
    /// Compressed size of the whole snapshot.
    pub bytes: usize,
}

/// The Secrets for `config` in `namespace`, the head named `name`.
pub fn build(
    config: &EdgeConfig,
    namespace: &str,
    name: &str,
    max_parts: usize,
) -> Result<SnapshotSecrets, SnapshotError> {
    build_with_part_size(config, namespace, name, MAX_SNAPSHOT_BYTES, max_parts)
}

/// `build` with another part size (tests make several parts of a small snapshot).
pub fn build_with_part_size(
    config: &EdgeConfig,
    namespace: &str,
    name: &str,
    part_bytes: usize,
    max_parts: usize,
) -> Result<SnapshotSecrets, SnapshotError> {
    let chunks = config.encode_parts(part_bytes, max_parts)?;
    let bytes = chunks.iter().map(Vec::len).sum();
    let count = chunks.len();
    let mut chunks = chunks.into_iter();
    let first = chunks.next().unwrap_or_default();
    let mut head = secret(namespace, name, &config.version);
    let head_key = if count == 1 {
        SNAPSHOT_KEY.to_string()
    } else {
        part_key(0)
    };
    if count > 1 {
        head.metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(PARTS_ANNOTATION.to_string(), count.to_string());
    }
    head.data = Some(BTreeMap::from([(head_key, ByteString(first))]));
    let parts = chunks
        .enumerate()
        .map(|(k, chunk)| {
            let i = k + 1;
            let mut s = secret(namespace, &part_name(name, i), &config.version);
            s.metadata
                .labels
                .get_or_insert_with(BTreeMap::new)
                .insert(PART_LABEL.to_string(), "true".to_string());
            s.data = Some(BTreeMap::from([(part_key(i), ByteString(chunk))]));
            s
        })
        .collect();
    Ok(SnapshotSecrets { head, parts, bytes })
}

fn secret(namespace: &str, name: &str, version: &str) -> Secret {
    // No `app.kubernetes.io/managed-by`: the Helm chart creates the head Secret (so that `helm
    // uninstall` removes it) and Helm sets that label; applying another value would make every
    // `helm upgrade` conflict with the operator's field manager.
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(namespace.to_string()),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/part-of".to_string(),
                "trunkgate".to_string(),
            )])),
            annotations: Some(BTreeMap::from([(
                VERSION_ANNOTATION.to_string(),
                version.to_string(),
            )])),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".to_string()),
        ..Secret::default()
    }
}

/// Makes `part` owned by the head Secret `head_uid` names (garbage-collected with it).
pub fn owned_by_head(part: &mut Secret, head_name: &str, head_uid: &str) {
    part.metadata.owner_references = Some(vec![OwnerReference {
        api_version: "v1".into(),
        kind: "Secret".into(),
        name: head_name.to_string(),
        uid: head_uid.to_string(),
        ..OwnerReference::default()
    }]);
}

fn annotation<'a>(s: &'a Secret, key: &str) -> Option<&'a str> {
    s.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .map(String::as_str)
}

/// The snapshot version a Secret (head or part) belongs to.
pub fn version_of(s: &Secret) -> Option<&str> {
    annotation(s, VERSION_ANNOTATION)
}

/// What a head Secret says about the snapshot's parts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Layout {
    /// The head holds the whole snapshot.
    Whole,
    /// The head holds part 0; these Secrets (in order) hold the rest.
    Parts(Vec<String>),
}

/// Reads the head's layout; an error when the part count is not a number of at least 2.
pub fn layout(head: &Secret) -> Result<Layout, SnapshotError> {
    let Some(raw) = annotation(head, PARTS_ANNOTATION) else {
        return Ok(Layout::Whole);
    };
    let name = head.metadata.name.as_deref().unwrap_or_default();
    match raw.parse::<usize>() {
        Ok(1) => Ok(Layout::Whole),
        Ok(n) if (2..=1024).contains(&n) => {
            Ok(Layout::Parts((1..n).map(|i| part_name(name, i)).collect()))
        }
        _ => Err(SnapshotError::Parts(format!(
            "the head Secret's {PARTS_ANNOTATION} annotation is '{raw}', not a part count"
        ))),
    }
}

/// The snapshot that `head` and its `parts` (in the order `layout` named them; None where a
/// part is missing) carry. A part of another version is `SnapshotError::PartsOfAnotherVersion`:
/// a publish is in progress, so reading again shortly succeeds.
pub fn assemble(head: &Secret, parts: &[Option<Secret>]) -> Result<EdgeConfig, SnapshotError> {
    let data = |s: &Secret, key: &str| -> Option<Vec<u8>> {
        s.data
            .as_ref()
            .and_then(|d| d.get(key))
            .map(|b| b.0.clone())
    };
    match layout(head)? {
        Layout::Whole => {
            let bytes = data(head, SNAPSHOT_KEY).ok_or(SnapshotError::Missing)?;
            EdgeConfig::decode(&bytes)
        }
        Layout::Parts(names) => {
            if parts.len() != names.len() {
                return Err(SnapshotError::Parts(format!(
                    "{} of {} parts given",
                    parts.len(),
                    names.len()
                )));
            }
            let version = version_of(head).unwrap_or_default();
            let mut chunks = vec![data(head, &part_key(0)).ok_or(SnapshotError::Missing)?];
            for (k, (part, name)) in parts.iter().zip(&names).enumerate() {
                let Some(part) = part else {
                    return Err(SnapshotError::Parts(format!(
                        "part Secret {name} is missing"
                    )));
                };
                if version_of(part) != Some(version) {
                    return Err(SnapshotError::PartsOfAnotherVersion {
                        part: name.clone(),
                        head: version.to_string(),
                        found: version_of(part).unwrap_or("none").to_string(),
                    });
                }
                chunks.push(data(part, &part_key(k + 1)).ok_or_else(|| {
                    SnapshotError::Parts(format!(
                        "part Secret {name} has no '{}' key",
                        part_key(k + 1)
                    ))
                })?);
            }
            let refs: Vec<&[u8]> = chunks.iter().map(Vec::as_slice).collect();
            EdgeConfig::decode_parts(&refs)
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::{CarrierTrunk, NumberOwnership, Secrets, compile};

    fn config(numbers: usize) -> EdgeConfig {
        let trunk = CarrierTrunk::test("a", "t");
        let list: Vec<String> = (0..numbers)
            .map(|i| format!("+6491{:07}", i * 7919 % 9_999_991))
            .collect();
        let list: Vec<&str> = list.iter().map(String::as_str).collect();
        let own = NumberOwnership::test("a", "n", "t", &list);
        compile(&[trunk], &[own], &Secrets::new(), None).config
    }

    #[test]
    fn a_small_snapshot_is_the_head_alone() {
        let c = config(10);
        let s = build(&c, "ns", "edge-config", 8).unwrap();
        assert!(s.parts.is_empty());
        assert_eq!(layout(&s.head).unwrap(), Layout::Whole);
        assert_eq!(version_of(&s.head), Some(c.version.as_str()));
        assert_eq!(assemble(&s.head, &[]).unwrap(), c);
    }

    #[test]
    fn a_large_snapshot_takes_named_parts_that_assemble_in_order() {
        let c = config(3_000);
        let s = build_with_part_size(&c, "ns", "edge-config", 2_000, 64).unwrap();
        assert!(s.parts.len() >= 2, "{} parts", s.parts.len());
        let Layout::Parts(names) = layout(&s.head).unwrap() else {
            panic!("one part");
        };
        let got: Vec<String> = s
            .parts
            .iter()
            .map(|p| p.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(names, got);
        assert_eq!(names[0], "edge-config-part-1");
        assert!(
            s.parts
                .iter()
                .all(|p| p.metadata.labels.as_ref().unwrap()[PART_LABEL] == "true")
        );
        let parts: Vec<Option<Secret>> = s.parts.iter().cloned().map(Some).collect();
        assert_eq!(assemble(&s.head, &parts).unwrap(), c);

        // A missing part, or one of another version (a publish in progress), is named.
        let mut missing = parts.clone();
        missing[0] = None;
        assert_eq!(
            assemble(&s.head, &missing).unwrap_err().to_string(),
            "snapshot in parts: part Secret edge-config-part-1 is missing"
        );
        let other = build_with_part_size(&config(2_900), "ns", "edge-config", 2_000, 64).unwrap();
        let mut mixed = parts.clone();
        mixed[0] = Some(other.parts[0].clone());
        let e = assemble(&s.head, &mixed).unwrap_err();
        assert!(
            matches!(e, SnapshotError::PartsOfAnotherVersion { .. }),
            "{e}"
        );
        assert_eq!(e.metric_label(), "parts_of_another_version");
    }

    #[test]
    fn a_bad_part_count_is_refused() {
        let c = config(10);
        let mut s = build(&c, "ns", "edge-config", 8).unwrap();
        s.head
            .metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert(PARTS_ANNOTATION.into(), "many".into());
        assert_eq!(
            layout(&s.head).unwrap_err().to_string(),
            "snapshot in parts: the head Secret's trunkgate.io/snapshot-parts annotation is 'many', not a part count"
        );
    }

    #[test]
    fn parts_are_owned_by_the_head() {
        let c = config(3_000);
        let mut s = build_with_part_size(&c, "ns", "edge-config", 2_000, 64).unwrap();
        owned_by_head(&mut s.parts[0], "edge-config", "uid-1");
        let o = &s.parts[0].metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (o.kind.as_str(), o.name.as_str(), o.uid.as_str()),
            ("Secret", "edge-config", "uid-1")
        );
    }
}
