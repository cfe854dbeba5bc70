//! Publishing the edge snapshot: its Secrets (`trunkgate_crds::snapshot_secrets`) applied with
//! server-side apply, parts before the head so that a reader never meets a head whose parts are
//! not there yet, and read back at start-up as the last good snapshot.

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams};
use trunkgate_crds::snapshot::{EdgeConfig, SnapshotError};
use trunkgate_crds::snapshot_secrets::{self, Layout, SnapshotSecrets};

pub use trunkgate_crds::snapshot_secrets::VERSION_ANNOTATION;

/// Field manager of everything the operator writes.
pub const MANAGER: &str = "trunkgate-operator";

async fn apply(api: &Api<Secret>, secret: &Secret) -> Result<Secret, kube::Error> {
    let name = secret.metadata.name.clone().unwrap_or_default();
    let mut body = serde_json::to_value(secret).map_err(kube::Error::SerdeError)?;
    body["apiVersion"] = "v1".into();
    body["kind"] = "Secret".into();
    api.patch(
        &name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(body),
    )
    .await
}

/// What was published.
#[derive(Clone, Copy, Debug)]
pub struct Published {
    /// Compressed size.
    pub bytes: usize,
    /// Secrets written (the head and its parts).
    pub secrets: usize,
}

/// Applies the snapshot's Secrets: its parts (owned by the head), then the head; then removes
/// parts left over from a larger snapshot (`stale`: names of part Secrets that exist).
pub async fn publish(
    api: &Api<Secret>,
    mut secrets: SnapshotSecrets,
    stale: &[String],
) -> Result<Published, kube::Error> {
    let head_name = secrets.head.metadata.name.clone().unwrap_or_default();
    if !secrets.parts.is_empty() {
        // The head's uid, for the parts' ownerReferences; a head that does not exist yet gets
        // them on the next write (below).
        let uid = api.get_opt(&head_name).await?.and_then(|h| h.metadata.uid);
        for part in &mut secrets.parts {
            if let Some(uid) = &uid {
                snapshot_secrets::owned_by_head(part, &head_name, uid);
            }
            apply(api, part).await?;
        }
        let head = apply(api, &secrets.head).await?;
        if uid.is_none()
            && let Some(uid) = head.metadata.uid
        {
            for part in &mut secrets.parts {
                snapshot_secrets::owned_by_head(part, &head_name, &uid);
                apply(api, part).await?;
            }
        }
    } else {
        apply(api, &secrets.head).await?;
    }
    let wanted: Vec<String> = secrets
        .parts
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    for name in stale.iter().filter(|n| !wanted.contains(n)) {
        match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => {
                tracing::warn!(secret = %name, error = %e, "could not remove a part Secret of an older snapshot")
            }
        }
    }
    Ok(Published {
        bytes: secrets.bytes,
        secrets: secrets.parts.len() + 1,
    })
}

/// Reads the snapshot the Secrets hold now (None when the head does not exist).
pub async fn read_snapshot(api: &Api<Secret>, head: &str) -> Result<Option<EdgeConfig>, ReadError> {
    let Some(head) = api.get_opt(head).await? else {
        return Ok(None);
    };
    Ok(Some(assemble(api, &head).await?))
}

/// The snapshot of `head`, its parts fetched by name.
pub async fn assemble(api: &Api<Secret>, head: &Secret) -> Result<EdgeConfig, ReadError> {
    let mut parts = Vec::new();
    if let Layout::Parts(names) = snapshot_secrets::layout(head)? {
        for name in names {
            parts.push(api.get_opt(&name).await?);
        }
    }
    Ok(snapshot_secrets::assemble(head, &parts)?)
}

/// Why the published snapshot could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use trunkgate_crds::{CarrierTrunk, Secrets, compile};

    #[test]
    fn secret_round_trips_and_names_its_version() {
        let c = compile(&[CarrierTrunk::test("a", "t")], &[], &Secrets::new(), None);
        let s = snapshot_secrets::build(&c.config, "trunkgate-system", "trunkgate-edge-config", 8)
            .unwrap();
        assert_eq!(
            s.head.metadata.annotations.as_ref().unwrap()[VERSION_ANNOTATION],
            c.config.version
        );
        assert_eq!(snapshot_secrets::assemble(&s.head, &[]).unwrap(), c.config);
    }
}
