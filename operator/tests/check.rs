//! `trunkgate-operator check`: the examples are valid; broken files are reported per object.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use trunkgate_operator::check::check;

#[test]
fn every_example_validates_against_the_crd_schema_and_compiles() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut out = Vec::new();
    let ok = check(&dir, &mut out, None).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(ok, "{text}");
    assert!(text.contains("0 problem(s)"), "{text}");
    // The realistic deployment: two carriers, one shared by two tenants, told apart by hostname.
    assert!(text.contains("told apart by hostnames"), "{text}");
    assert!(
        text.contains("5 trunks") || text.contains("trunks"),
        "{text}"
    );
}

#[test]
fn the_snapshot_check_would_publish_is_written_on_request_and_decodes() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let file = std::env::temp_dir().join(format!("trunkgate-snap-{}.gz", std::process::id()));
    let mut out = Vec::new();
    assert!(check(&dir, &mut out, Some(&file)).unwrap());
    let bytes = std::fs::read(&file).unwrap();
    let _ = std::fs::remove_file(&file);
    let snap = trunkgate_crds::EdgeConfig::decode(&bytes).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains(&snap.version), "{text}");
    assert!(!snap.trunks.is_empty());
}

#[test]
fn problems_name_file_kind_object_field_and_reason() {
    let dir = std::env::temp_dir().join(format!("trunkgate-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("bad.yaml"),
        r#"
apiVersion: trunkgate.io/v1alpha1
kind: CarrierTrunk
metadata: {name: typo, namespace: t1}
spec:
  inbound: {alowedCidrs: ["10.0.0.0/8"], destination: "sip:x"}
---
apiVersion: trunkgate.io/v1alpha1
kind: CarrierTrunk
metadata: {name: ok, namespace: t1}
spec:
  inbound:
    allowedCidrs: ["10.0.0.0/8"]
    destination: "sip:x"
    auth: {realm: r, secretRef: {name: missing}}
---
apiVersion: trunkgate.io/v1alpha1
kind: NumberOwnership
metadata: {name: nums, namespace: t1}
spec: {trunkRef: {name: nowhere}, kind: Byoc, numbers: ["+6498879333"]}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: ignored}
"#,
    )
    .unwrap();
    let mut out = Vec::new();
    let ok = check(&dir, &mut out, None).unwrap();
    let text = String::from_utf8(out).unwrap();
    std::fs::remove_dir_all(&dir).ok();
    assert!(!ok);
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert!(
        text.contains(
            "bad.yaml (document 1) CarrierTrunk t1/typo: spec.inbound.alowedCidrs: unknown field"
        ),
        "{text}"
    );
    assert!(
        text.contains("spec.inbound.allowedCidrs: is required"),
        "{text}"
    );
    assert!(text.contains("CarrierTrunk t1/ok: spec.inbound.auth.secretRef: Secret t1/missing does not exist (SecretNotFound)"), "{text}");
    assert!(
        text.contains("NumberOwnership t1/nums: spec.trunkRef.name"),
        "{text}"
    );
    assert!(text.contains("(TrunkNotFound)"), "{text}");
}

#[test]
fn an_object_defined_in_two_files_names_the_first_file() {
    let dir = std::env::temp_dir().join(format!("trunkgate-check-dup-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let trunk = r#"
apiVersion: trunkgate.io/v1alpha1
kind: CarrierTrunk
metadata: {name: twice, namespace: t1}
spec:
  inbound: {allowedCidrs: ["10.0.0.0/8"], destination: "sip:x"}
"#;
    std::fs::write(dir.join("a.yaml"), trunk).unwrap();
    std::fs::write(dir.join("b.yaml"), trunk).unwrap();
    let mut out = Vec::new();
    let _ = check(&dir, &mut out, None).unwrap();
    let text = String::from_utf8(out).unwrap();
    std::fs::remove_dir_all(&dir).ok();
    assert!(
        text.contains("b.yaml")
            && text.contains("defined twice: first in")
            && text.contains("a.yaml"),
        "{text}"
    );
}
