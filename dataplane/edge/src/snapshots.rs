//! Where snapshots come from: a folder of CR YAML (standalone mode), compiled with the same
//! compile() the operator uses, or the operator's snapshot Secret (cluster mode). Either way a
//! new snapshot is swapped in whole for new calls, and one that fails keeps the last good one.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use trunkgate_crds::files::load_dir;
use trunkgate_crds::snapshot::{EdgeConfig, SnapshotError};
use trunkgate_crds::snapshot_secrets::{self, Layout};
use trunkgate_crds::{ObjectKey, Problem, Reason, Refused};

use crate::config::Runtime;
use crate::worker::Shared;

/// Installs `config` unless it is the version already running. Returns whether it changed.
pub fn install(shared: &Shared, ready: &std::sync::atomic::AtomicBool, config: EdgeConfig) -> bool {
    let current = shared.runtime.load();
    let first = !ready.load(Ordering::Acquire);
    if !first && current.config.version == config.version {
        shared
            .metrics
            .snapshot_reloads
            .with_label_values(&["unchanged"])
            .inc();
        return false;
    }
    let version = config.version.clone();
    let trunks = config.trunks.len();
    // Widen the kernel filter before the snapshot that needs it runs.
    shared.prefilter.allow_snapshot(&config);
    // The trunks' TLS expectations (CA bundles, names) before the calls that need them.
    for (trunk, error) in shared.tls.apply_trunks(&config.trunks) {
        tracing::warn!(%trunk, %error, "spec.tls cannot be used: its TLS calls are refused");
    }
    // Registration trunks: the fleet elects a holder for each.
    shared.fleet.want_registrations(
        config
            .trunks
            .iter()
            .filter(|t| {
                t.outbound
                    .as_ref()
                    .is_some_and(|o| o.registration.is_some())
            })
            .map(|t| t.id.clone())
            .collect(),
    );
    let next = Runtime::build(config, Some(&current), &shared.metrics);
    shared.runtime.store(Arc::new(next));
    shared.metrics.snapshot_info.reset();
    shared
        .metrics
        .snapshot_info
        .with_label_values(&[version.as_str()])
        .set(1);
    shared
        .metrics
        .snapshot_reloads
        .with_label_values(&["ok"])
        .inc();
    if !shared.draining.load(Ordering::Acquire) {
        ready.store(true, Ordering::Release);
    }
    tracing::info!(%version, trunks, "snapshot loaded");
    true
}

/// What the files under `dir` look like now (paths, sizes, modification times).
fn fingerprint(dir: &Path) -> Vec<(PathBuf, u64, Option<SystemTime>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(m) = e.metadata() {
                out.push((p, m.len(), m.modified().ok()));
            }
        }
    }
    out.sort();
    out
}

/// Where each object was read from at the last load, so that the objects of a file that stops
/// being valid YAML keep their last good version instead of vanishing.
pub type Sources = HashMap<ObjectKey, PathBuf>;

/// Objects that had problems at the last load: one that no longer has any is said to be fixed.
pub type Troubled = std::collections::HashSet<ObjectKey>;

/// Compiles the folder; logs every problem. None when the folder cannot be read. Objects the
/// schema refuses, and those of a file that is no longer YAML, keep their last good version
/// (the same rule as the operator's and `check`'s).
pub fn compile_dir(
    dir: &Path,
    previous: Option<&EdgeConfig>,
    sources: &mut Sources,
    troubled: &mut Troubled,
    shared: &Shared,
) -> Option<EdgeConfig> {
    let mut m = match load_dir(dir) {
        Ok(m) => m,
        Err(e) => {
            tracing::error!(dir = %dir.display(), error = %e, "cannot read the config folder; keeping the last good snapshot");
            shared
                .metrics
                .snapshot_reloads
                .with_label_values(&["unreadable"])
                .inc();
            return None;
        }
    };
    for p in &m.problems {
        tracing::warn!(problem = %p, "document refused");
    }
    for (key, file) in sources.iter() {
        if m.unreadable.contains(file) && !m.sources.contains_key(key) {
            m.refused.push(Refused {
                key: key.clone(),
                problems: vec![Problem {
                    field: "(yaml)".into(),
                    reason: Reason::Invalid,
                    message: format!("{} is not valid YAML", file.display()),
                }],
            });
            m.sources.insert(key.clone(), file.clone());
        }
    }
    *sources = m.sources.clone();
    let compiled = trunkgate_crds::compile_with_refused(
        &m.trunks,
        &m.ownerships,
        &m.refused,
        &m.secrets,
        previous,
    );
    for r in &compiled.reports {
        for w in &r.warnings {
            tracing::warn!(object = %r.key, warning = %w, "object compiled with a warning");
        }
    }
    for r in compiled.problems() {
        for p in &r.problems {
            tracing::warn!(object = %r.key, problem = %p, kept_last_good = r.kept_generation.is_some(), partial = r.partial_numbers.is_some(), "object not compiled as written");
        }
    }
    let now_troubled: Troubled = compiled.problems().map(|r| r.key.clone()).collect();
    for key in troubled.iter().filter(|k| !now_troubled.contains(*k)) {
        if let Some(file) = m.sources.get(key) {
            tracing::info!(object = %key, file = %file.display(), "object valid again: it runs as written");
        }
    }
    *troubled = now_troubled;
    if !m.problems.is_empty() || compiled.problems().next().is_some() {
        shared
            .metrics
            .snapshot_reloads
            .with_label_values(&["with_problems"])
            .inc();
    }
    Some(compiled.config)
}

/// Standalone mode: load now, then poll the folder for changes.
pub async fn watch_dir(
    dir: PathBuf,
    every: Duration,
    shared: Arc<Shared>,
    ready: Arc<std::sync::atomic::AtomicBool>,
) {
    let mut seen = Vec::new();
    let mut sources = Sources::new();
    let mut troubled = Troubled::new();
    loop {
        let now = fingerprint(&dir);
        if now != seen {
            seen = now;
            let previous = ready
                .load(Ordering::Acquire)
                .then(|| shared.runtime.load().config.clone());
            if let Some(cfg) = compile_dir(
                &dir,
                previous.as_ref(),
                &mut sources,
                &mut troubled,
                &shared,
            ) {
                install(&shared, &ready, cfg);
            }
        }
        tokio::time::sleep(every).await;
    }
}

/// The snapshot that the head Secret `head` and its parts carry, the parts read by name
/// (`trunkgate_crds::snapshot_secrets`). Parts of another version mean the operator is writing
/// a new snapshot: read again, a few times, before giving up until the next change of the head.
async fn read_secrets(
    api: &kube::Api<k8s_openapi::api::core::v1::Secret>,
    head: &k8s_openapi::api::core::v1::Secret,
) -> Result<EdgeConfig, SnapshotError> {
    let names = match snapshot_secrets::layout(head)? {
        Layout::Whole => return snapshot_secrets::assemble(head, &[]),
        Layout::Parts(names) => names,
    };
    let mut attempt = 0;
    loop {
        let mut parts = Vec::with_capacity(names.len());
        for name in &names {
            let part = api.get_opt(name).await.map_err(|e| {
                SnapshotError::Parts(format!("cannot read part Secret {name}: {e}"))
            })?;
            parts.push(part);
        }
        match snapshot_secrets::assemble(head, &parts) {
            Err(e @ SnapshotError::PartsOfAnotherVersion { .. }) if attempt < 5 => {
                tracing::info!(error = %e, "snapshot parts are being written; reading again");
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            other => return other,
        }
    }
}

/// Cluster mode: watch the snapshot's head Secret and read its parts (RBAC: get/list/watch on
/// that name, get on the part names only).
pub async fn watch_secret(
    ns_name: String,
    shared: Arc<Shared>,
    ready: Arc<std::sync::atomic::AtomicBool>,
) -> anyhow::Result<()> {
    use futures::StreamExt;
    use k8s_openapi::api::core::v1::Secret;
    use kube::runtime::watcher;
    let (ns, name) = ns_name
        .split_once('/')
        .ok_or_else(|| anyhow::anyhow!("--snapshot-secret must be NAMESPACE/NAME"))?;
    let client = kube::Client::try_default().await?;
    let api: kube::Api<Secret> = kube::Api::namespaced(client, ns);
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut stream = watcher::watcher(api.clone(), config).boxed();
    while let Some(ev) = stream.next().await {
        let secret = match ev {
            Ok(watcher::Event::Apply(s)) | Ok(watcher::Event::InitApply(s)) => s,
            Ok(_) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "snapshot Secret watch error");
                tokio::time::sleep(Duration::from_secs(2)).await;
                continue;
            }
        };
        let decoded = read_secrets(&api, &secret).await;
        match decoded {
            Ok(cfg) => {
                install(&shared, &ready, cfg);
            }
            Err(e) => {
                shared
                    .metrics
                    .snapshot_reloads
                    .with_label_values(&[e.metric_label()])
                    .inc();
                tracing::error!(error = %e, "snapshot refused; keeping the last good one");
            }
        }
    }
    Ok(())
}
