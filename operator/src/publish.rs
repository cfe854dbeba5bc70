//! The edge snapshot as one Secret: built from an EdgeConfig, applied with server-side apply,
//! and read back at start-up as the last good snapshot.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use kube::api::{Patch, PatchParams};
use trunkgate_crds::snapshot::{EdgeConfig, SNAPSHOT_KEY, SnapshotError};

/// Field manager of everything the operator writes.
pub const MANAGER: &str = "trunkgate-operator";
/// Annotation carrying the snapshot version, readable without decoding the data.
pub const VERSION_ANNOTATION: &str = "trunkgate.io/snapshot-version";

/// The Secret that carries `config`.
pub fn snapshot_secret(
    config: &EdgeConfig,
    namespace: &str,
    name: &str,
) -> Result<Secret, SnapshotError> {
    let bytes = config.encode()?;
    // No `app.kubernetes.io/managed-by`: the Helm chart creates this Secret (so that `helm
    // uninstall` removes it) and Helm sets that label; applying another value would make every
    // `helm upgrade` conflict with this field manager. The field manager names the operator.
    let mut labels = BTreeMap::new();
    labels.insert(
        "app.kubernetes.io/part-of".to_string(),
        "trunkgate".to_string(),
    );
    let mut annotations = BTreeMap::new();
    annotations.insert(VERSION_ANNOTATION.to_string(), config.version.clone());
    let mut data = BTreeMap::new();
    data.insert(SNAPSHOT_KEY.to_string(), ByteString(bytes));
    Ok(Secret {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(namespace.to_string()),
            labels: Some(labels),
            annotations: Some(annotations),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".to_string()),
        data: Some(data),
        ..Secret::default()
    })
}

/// Applies the snapshot Secret; returns its compressed size.
pub async fn publish(api: &Api<Secret>, secret: &Secret) -> Result<usize, kube::Error> {
    let name = secret.metadata.name.clone().unwrap_or_default();
    let mut body = serde_json::to_value(secret).map_err(kube::Error::SerdeError)?;
    body["apiVersion"] = "v1".into();
    body["kind"] = "Secret".into();
    api.patch(
        &name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(body),
    )
    .await?;
    Ok(secret
        .data
        .as_ref()
        .and_then(|d| d.get(SNAPSHOT_KEY))
        .map_or(0, |b| b.0.len()))
}

/// Decodes a snapshot Secret.
pub fn read_snapshot(secret: &Secret) -> Result<EdgeConfig, SnapshotError> {
    let bytes = secret
        .data
        .as_ref()
        .and_then(|d| d.get(SNAPSHOT_KEY))
        .ok_or(SnapshotError::Missing)?;
    EdgeConfig::decode(&bytes.0)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use trunkgate_crds::{CarrierTrunk, Secrets, compile};

    #[test]
    fn secret_round_trips_and_names_its_version() {
        let c = compile(&[CarrierTrunk::test("a", "t")], &[], &Secrets::new(), None);
        let s = snapshot_secret(&c.config, "trunkgate-system", "trunkgate-edge-config").unwrap();
        assert_eq!(
            s.metadata.annotations.as_ref().unwrap()[VERSION_ANNOTATION],
            c.config.version
        );
        assert_eq!(read_snapshot(&s).unwrap(), c.config);
    }
}
