//! The reconcile pipeline. Watches feed stores; a compiler task turns any change (debounced)
//! into one compile() and publishes the snapshot Secret; two kube `Controller`s then write each
//! CarrierTrunk's and NumberOwnership's status from that compile.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use trunkgate_crds::report::{ObjectKind, Report};
use trunkgate_crds::snapshot::{EdgeConfig, SnapshotError};
use trunkgate_crds::snapshot_secrets::{self, Layout};
use trunkgate_crds::trunk::EdgeEndpoint;
use trunkgate_crds::{CarrierTrunk, Compiled, NumberOwnership, Secrets, compile_shared};

use crate::metrics::Metrics;
use crate::publish::{self, MANAGER};
use crate::rollout::{self, Rollout};
use crate::status;

/// Operator settings (from flags).
#[derive(Clone, Debug)]
pub struct Settings {
    /// Namespace and name of the snapshot Secret.
    pub snapshot_namespace: String,
    pub snapshot_name: String,
    /// Most Secrets one snapshot may take (the head and its parts).
    pub snapshot_max_parts: usize,
    /// Most compressed bytes per Secret.
    pub snapshot_part_bytes: usize,
    /// What trunk status tells carriers about the edge.
    pub edge: EdgeEndpoint,
    /// Quiet time after a change before compiling.
    pub debounce: Duration,
    /// Label selector for the credential Secrets to watch ("" = all).
    pub secret_selector: String,
    /// Label selector of the edge pods in the operator's namespace ("" = no live status).
    pub edge_selector: String,
    /// Admin port of the edge pods (`/snapshot`).
    pub edge_admin_port: u16,
}

/// Errors of one reconcile.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("snapshot: {0}")]
    Snapshot(#[from] SnapshotError),
}

impl Error {
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(kube::Error::Api(_)) => "api",
            Error::Kube(_) => "client",
            Error::Snapshot(e) => e.metric_label(),
        }
    }
}

/// The latest compile and what became of publishing it.
#[derive(Clone, Debug, Default)]
pub struct Published {
    pub compiled: Option<Arc<Compiled>>,
    /// Why the latest compile could not be published (the edge keeps the previous snapshot).
    pub error: Option<String>,
    /// The version the snapshot Secret holds (what the edges run), when known.
    pub running: Option<String>,
}

/// Shared by the compiler and the reconcilers.
pub struct Context {
    pub client: Client,
    pub settings: Settings,
    pub metrics: Metrics,
    pub published: RwLock<Published>,
    pub rollout: RwLock<Option<Rollout>>,
}

impl Context {
    pub fn new(client: Client, settings: Settings, metrics: Metrics) -> Arc<Self> {
        Arc::new(Self {
            client,
            settings,
            metrics,
            published: RwLock::new(Published::default()),
            rollout: RwLock::new(None),
        })
    }

    fn latest(&self) -> Published {
        self.published.read().map(|p| p.clone()).unwrap_or_default()
    }

    fn rollout(&self) -> Option<Rollout> {
        self.rollout.read().ok().and_then(|r| r.clone())
    }

    /// Records what the edge pods run; true when it changed.
    pub fn set_rollout(&self, r: Rollout) -> bool {
        match self.rollout.write() {
            Ok(mut cur) if cur.as_ref() != Some(&r) => {
                *cur = Some(r);
                true
            }
            _ => false,
        }
    }

    /// Installs a compile result (used by the compiler, and by tests).
    pub fn set_compiled(&self, compiled: Arc<Compiled>, error: Option<String>) {
        if let Ok(mut p) = self.published.write() {
            if error.is_none() {
                p.running = Some(compiled.config.version.clone());
            }
            p.compiled = Some(compiled);
            p.error = error;
        }
    }
}

/// Compiles, publishes the snapshot unless the Secret already holds its version (`live`: the
/// version the snapshot Secret holds now, None when it is missing, so a deleted Secret is
/// written again), and records metrics. Returns the publish error, if any: the previous
/// snapshot then stays in place.
pub async fn compile_and_publish(
    ctx: &Context,
    trunks: &[Arc<CarrierTrunk>],
    ownerships: &[Arc<NumberOwnership>],
    secrets: &Secrets,
    previous: Option<&EdgeConfig>,
    live: Option<&str>,
    stale_parts: &[String],
) -> (Arc<Compiled>, Option<String>) {
    let started = Instant::now();
    // The reflector's objects as they are: compile() reads them, it copies none.
    let compiled = Arc::new(compile_shared(trunks, ownerships, secrets, previous));
    ctx.metrics
        .compile_duration
        .observe(started.elapsed().as_secs_f64());
    ctx.metrics.compiles.inc();
    ctx.metrics.objects_with_problems.reset();
    for r in compiled.problems() {
        if let Some(p) = r.problems.first() {
            let kind = r.key.kind.to_string();
            ctx.metrics
                .objects_with_problems
                .with_label_values(&[kind.as_str(), p.reason.metric_label()])
                .inc();
        }
    }
    if live == Some(compiled.config.version.as_str()) {
        return (compiled, None);
    }
    let s = &ctx.settings;
    let result = match snapshot_secrets::build_with_part_size(
        &compiled.config,
        &s.snapshot_namespace,
        &s.snapshot_name,
        s.snapshot_part_bytes,
        s.snapshot_max_parts,
    ) {
        Err(e) => Err(Error::from(e)),
        Ok(secrets) => {
            let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &s.snapshot_namespace);
            publish::publish(&api, secrets, stale_parts)
                .await
                .map_err(Error::from)
        }
    };
    match result {
        Ok(published) => {
            ctx.metrics
                .snapshot_publishes
                .with_label_values(&["ok"])
                .inc();
            ctx.metrics.snapshot_bytes.set(published.bytes as i64);
            ctx.metrics.snapshot_secrets.set(published.secrets as i64);
            ctx.metrics
                .snapshot_numbers
                .set(compiled.number_count() as i64);
            ctx.metrics
                .snapshot_trunks
                .set(compiled.config.trunks.len() as i64);
            tracing::info!(version = %compiled.config.version, bytes = published.bytes, secrets = published.secrets, trunks = compiled.config.trunks.len(), "published edge snapshot");
            (compiled, None)
        }
        Err(e) => {
            ctx.metrics
                .snapshot_publishes
                .with_label_values(&[e.metric_label()])
                .inc();
            tracing::error!(error = %e, version = %compiled.config.version, "could not publish the edge snapshot; edges keep the previous one");
            publish_failed_event(ctx, &e.to_string()).await;
            (compiled, Some(e.to_string()))
        }
    }
}

fn find_report<'a>(c: &'a Compiled, kind: ObjectKind, ns: &str, name: &str) -> Option<&'a Report> {
    c.reports
        .iter()
        .find(|r| r.key.kind == kind && r.key.namespace == ns && r.key.name == name)
}

/// Applies `status` to the status subresource when it differs from what the object has.
async fn apply_status<K, S>(
    api: Api<K>,
    name: &str,
    current: Option<&S>,
    desired: &S,
) -> Result<bool, kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
    S: Serialize + PartialEq,
{
    if current == Some(desired) {
        return Ok(false);
    }
    let body = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": desired,
    });
    api.patch_status(
        name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(body),
    )
    .await?;
    Ok(true)
}

/// The version the snapshot Secrets hold whole (None when the head is missing, or a part is
/// missing or of another version: then it must be written again), and the names of the part
/// Secrets of this head that exist, so that a smaller snapshot can remove the rest.
fn live_snapshot(
    head: Option<&Secret>,
    parts: &[Arc<Secret>],
    head_name: &str,
) -> (Option<String>, Vec<String>) {
    let prefix = format!("{head_name}-part-");
    let mine: Vec<&Secret> = parts
        .iter()
        .map(|p| p.as_ref())
        .filter(|p| {
            p.metadata
                .name
                .as_deref()
                .is_some_and(|n| n.starts_with(&prefix))
        })
        .collect();
    let existing = mine
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    let Some(head) = head else {
        return (None, existing);
    };
    let Some(version) = snapshot_secrets::version_of(head) else {
        return (None, existing);
    };
    let whole = match snapshot_secrets::layout(head) {
        Ok(Layout::Whole) => true,
        Ok(Layout::Parts(names)) => names.iter().all(|n| {
            mine.iter().any(|p| {
                p.metadata.name.as_deref() == Some(n.as_str())
                    && snapshot_secrets::version_of(p) == Some(version)
            })
        }),
        Err(_) => false,
    };
    (whole.then(|| version.to_string()), existing)
}

/// An Event on the snapshot Secret: publishing failed (the objects themselves may be valid).
async fn publish_failed_event(ctx: &Context, error: &str) {
    use kube::runtime::events::{Event, EventType, Recorder, Reporter};
    let reporter = Reporter {
        controller: MANAGER.into(),
        instance: None,
    };
    let recorder = Recorder::new(ctx.client.clone(), reporter);
    let reference = k8s_openapi::api::core::v1::ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Secret".into()),
        name: Some(ctx.settings.snapshot_name.clone()),
        namespace: Some(ctx.settings.snapshot_namespace.clone()),
        ..Default::default()
    };
    let event = Event {
        type_: EventType::Warning,
        reason: "SnapshotNotPublished".into(),
        note: Some(format!(
            "The edge snapshot could not be published; edges keep the previous one: {error}"
        )),
        action: "Publish".into(),
        secondary: None,
    };
    if let Err(e) = recorder.publish(&event, &reference).await {
        tracing::warn!(error = %e, "could not record the SnapshotNotPublished event");
    }
}

/// What a reconcile needs from the latest compile for one object: its report, the snapshot it
/// belongs to and, when that snapshot could not be published, why. None while the compile has
/// not caught up with the object: the compiler triggers every reconcile again when it has.
fn report_for(
    ctx: &Context,
    kind: ObjectKind,
    ns: &str,
    name: &str,
    generation: Option<i64>,
) -> Option<(Report, Arc<Compiled>, Option<status::Unpublished>)> {
    let latest = ctx.latest();
    let compiled = latest.compiled?;
    let report = find_report(&compiled, kind, ns, name)?;
    if report.generation != generation {
        return None;
    }
    let unpublished = latest.error.map(|error| status::Unpublished {
        error,
        running: latest.running.clone(),
    });
    Some((report.clone(), compiled, unpublished))
}

/// Writes one object's status from the latest compile: `desired` builds it from the object's
/// report, the snapshot, the live rollout and the time; it is applied when it differs.
async fn reconcile_status<K, S>(
    ctx: &Context,
    obj: &K,
    kind: ObjectKind,
    current: Option<&S>,
    desired: impl FnOnce(
        &Report,
        &EdgeConfig,
        Option<&Rollout>,
        Option<&status::Unpublished>,
        &Time,
    ) -> S,
) -> Result<Action, Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
    S: Serialize + PartialEq,
{
    ctx.metrics
        .reconciles
        .with_label_values(&[K::kind(&()).as_ref()])
        .inc();
    let (ns, name) = (obj.namespace().unwrap_or_default(), obj.name_any());
    let Some((report, compiled, unpublished)) =
        report_for(ctx, kind, &ns, &name, obj.meta().generation)
    else {
        return Ok(Action::await_change());
    };
    let now = Time(jiff::Timestamp::now());
    let rollout = ctx.rollout();
    let desired = desired(
        &report,
        &compiled.config,
        rollout.as_ref(),
        unpublished.as_ref(),
        &now,
    );
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &ns);
    if apply_status(api, &name, current, &desired).await? {
        ctx.metrics
            .status_writes
            .with_label_values(&[K::kind(&()).as_ref()])
            .inc();
    }
    Ok(Action::requeue(Duration::from_secs(600)))
}

/// Writes one CarrierTrunk's status from the latest compile.
pub async fn reconcile_trunk(obj: Arc<CarrierTrunk>, ctx: Arc<Context>) -> Result<Action, Error> {
    let current = obj.status.as_ref();
    reconcile_status(
        &ctx,
        obj.as_ref(),
        ObjectKind::CarrierTrunk,
        current,
        |report, config, rollout, unpublished, now| {
            status::trunk_status(
                report,
                config,
                rollout,
                unpublished,
                &ctx.settings.edge,
                current,
                now,
            )
        },
    )
    .await
}

/// Writes one NumberOwnership's status from the latest compile.
pub async fn reconcile_ownership(
    obj: Arc<NumberOwnership>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let current = obj.status.as_ref();
    reconcile_status(
        &ctx,
        obj.as_ref(),
        ObjectKind::NumberOwnership,
        current,
        |report, config, rollout, unpublished, now| {
            status::ownership_status(report, config, rollout, unpublished, current, now)
        },
    )
    .await
}

fn error_policy<K>(kind: &'static str) -> impl Fn(Arc<K>, &Error, Arc<Context>) -> Action {
    move |_obj, err, ctx| {
        ctx.metrics
            .reconcile_failures
            .with_label_values(&[kind, err.metric_label()])
            .inc();
        tracing::warn!(kind, error = %err, "reconcile failed; retrying");
        Action::requeue(Duration::from_secs(5))
    }
}

/// Reflects a kind into a store and bumps `changes` whenever something that compile() reads
/// changed (the spec generation for custom resources, the resource version for Secrets) —
/// not on our own status writes. The stream (objects touched) drives the store: the status
/// controllers run on it and on the same store, so each object is held once. Stored objects
/// drop their managedFields, which nothing here reads.
fn reflect<K>(
    api: Api<K>,
    config: watcher::Config,
    fingerprint: fn(&K) -> String,
    changes: watch::Sender<u64>,
) -> (
    Store<K>,
    impl Stream<Item = Result<K, watcher::Error>> + Send + 'static,
)
where
    K: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let mut seen: HashMap<String, String> = HashMap::new();
    let events = watcher::watcher(api, config)
        .default_backoff()
        .modify(|o: &mut K| o.meta_mut().managed_fields = None);
    let stream = reflector::reflector(writer, events)
        .inspect(move |ev| {
            let bump = match ev {
                Ok(Event::Apply(o)) | Ok(Event::InitApply(o)) => {
                    let uid = o.meta().uid.clone().unwrap_or_default();
                    let fp = fingerprint(o);
                    seen.insert(uid, fp.clone()).as_ref() != Some(&fp)
                }
                Ok(Event::Delete(o)) => {
                    seen.remove(&o.meta().uid.clone().unwrap_or_default());
                    true
                }
                Ok(Event::InitDone) => true,
                Ok(Event::Init) => false,
                Err(e) => {
                    tracing::warn!(resource = %K::plural(&()), error = %e, "watch error");
                    false
                }
            };
            if bump {
                changes.send_modify(|n| *n += 1);
            }
        })
        .touched_objects();
    (reader, stream)
}

/// A reflected stream that only keeps its store current.
fn unit<K>(
    s: impl Stream<Item = Result<K, watcher::Error>> + Send + 'static,
) -> std::pin::Pin<Box<dyn Stream<Item = ()> + Send>> {
    s.map(|_| ()).boxed()
}

fn generation_fingerprint<K: Resource>(o: &K) -> String {
    format!("{:?}", o.meta().generation)
}

fn secret_fingerprint(s: &Secret) -> String {
    s.metadata.resource_version.clone().unwrap_or_default()
}

fn secrets_map(store: &Store<Secret>, skip: (&str, &str)) -> Secrets {
    let mut out = Secrets::new();
    for s in store.state() {
        let ns = s.namespace().unwrap_or_default();
        let name = s.name_any();
        if (ns.as_str(), name.as_str()) == skip {
            continue;
        }
        let data = s
            .data
            .as_ref()
            .map(|d| d.iter().map(|(k, v)| (k.clone(), v.0.clone())).collect())
            .unwrap_or_default();
        out.insert((ns, name), data);
    }
    out
}

/// Waits until the API server serves both custom resources: a CRD installed after the operator
/// started is picked up within a second, and the wait is logged once, naming what is missing.
pub async fn wait_for_crds(client: &Client) {
    use kube::api::ListParams;
    let mut logged = false;
    loop {
        let trunks = Api::<CarrierTrunk>::all(client.clone())
            .list_metadata(&ListParams::default().limit(1))
            .await;
        let owns = Api::<NumberOwnership>::all(client.clone())
            .list_metadata(&ListParams::default().limit(1))
            .await;
        let missing: Vec<String> = [
            ("carriertrunks.trunkgate.io", trunks.err()),
            ("numberownerships.trunkgate.io", owns.err()),
        ]
        .into_iter()
        .filter_map(|(name, e)| e.map(|e| format!("{name} ({e})")))
        .collect();
        if missing.is_empty() {
            if logged {
                tracing::info!("the custom resources are served; starting");
            }
            return;
        }
        if !logged {
            tracing::warn!(
                missing = %missing.join(", "),
                "waiting for the CustomResourceDefinitions: install crds/crds.yaml (the Helm chart does)"
            );
            logged = true;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Names of Secrets that exist without the credentials label (so a reference to one can say
/// so, instead of "does not exist").
fn unlabelled(
    store: &Store<kube::core::PartialObjectMeta<Secret>>,
    labelled: &Secrets,
) -> Vec<(String, String)> {
    store
        .state()
        .iter()
        .map(|m| (m.namespace().unwrap_or_default(), m.name_any()))
        .filter(|k| !labelled.contains_key(k))
        .collect()
}

/// Rewrites "Secret X does not exist" where X exists but lacks the label the operator selects.
pub fn explain_unlabelled(
    compiled: &mut Compiled,
    unlabelled: &[(String, String)],
    selector: &str,
) {
    for r in &mut compiled.reports {
        for p in &mut r.problems {
            if p.reason != trunkgate_crds::Reason::SecretNotFound {
                continue;
            }
            if let Some((ns, name)) = unlabelled
                .iter()
                .find(|(ns, name)| p.message == format!("Secret {ns}/{name} does not exist"))
            {
                p.message = format!(
                    "Secret {ns}/{name} exists but the operator reads only Secrets labelled {selector} (--secret-selector); label it"
                );
            }
        }
    }
}

/// Runs the operator until the returned future is dropped or a watch ends.
pub async fn run(ctx: Arc<Context>) {
    let client = ctx.client.clone();
    let s = ctx.settings.clone();
    wait_for_crds(&client).await;
    let (changes_tx, mut changes_rx) = watch::channel(0u64);
    let (trunks, trunk_events) = reflect(
        Api::<CarrierTrunk>::all(client.clone()),
        watcher::Config::default(),
        generation_fingerprint,
        changes_tx.clone(),
    );
    let (owns, own_events) = reflect(
        Api::<NumberOwnership>::all(client.clone()),
        watcher::Config::default(),
        generation_fingerprint,
        changes_tx.clone(),
    );
    let (trunk_store, own_store) = (trunks.clone(), owns.clone());
    let mut secret_config = watcher::Config::default();
    if !s.secret_selector.is_empty() {
        secret_config = secret_config.labels(&s.secret_selector);
    }
    let (secrets, secret_events) = reflect(
        Api::<Secret>::all(client.clone()),
        secret_config,
        secret_fingerprint,
        changes_tx.clone(),
    );
    // The snapshot Secret itself: deleted or overwritten, it is written again.
    let (snapshot, snapshot_events) = reflect(
        Api::<Secret>::namespaced(client.clone(), &s.snapshot_namespace),
        watcher::Config::default().fields(&format!("metadata.name={}", s.snapshot_name)),
        secret_fingerprint,
        changes_tx.clone(),
    );
    // Its parts, when a snapshot takes several Secrets.
    let (parts, parts_events) = reflect(
        Api::<Secret>::namespaced(client.clone(), &s.snapshot_namespace),
        watcher::Config::default().labels(&format!("{}=true", snapshot_secrets::PART_LABEL)),
        secret_fingerprint,
        changes_tx.clone(),
    );
    // Names (metadata only) of every Secret, when a selector narrows the main watch: to tell
    // "missing" from "not labelled".
    let (all_secret_names, all_secret_events) = {
        let (reader, writer) = reflector::store();
        let stream = if s.secret_selector.is_empty() {
            futures::stream::pending().boxed()
        } else {
            let changes = changes_tx.clone();
            reflector::reflector(
                writer,
                watcher::watcher(
                    Api::<kube::core::PartialObjectMeta<Secret>>::all(client.clone()),
                    watcher::Config::default(),
                )
                .default_backoff(),
            )
            .filter_map(move |ev| {
                if matches!(
                    ev,
                    Ok(Event::Apply(_)) | Ok(Event::Delete(_)) | Ok(Event::InitDone)
                ) {
                    changes.send_modify(|n| *n += 1);
                }
                std::future::ready(Some(()))
            })
            .boxed()
        };
        (reader, stream)
    };
    let (compiled_tx, compiled_rx) = watch::channel(());
    let compiled_tx = std::sync::Arc::new(compiled_tx);
    let rollout_tx = compiled_tx.clone();

    let compiler = {
        let ctx = ctx.clone();
        async move {
            let _ = tokio::join!(
                trunks.wait_until_ready(),
                owns.wait_until_ready(),
                secrets.wait_until_ready(),
                snapshot.wait_until_ready(),
                parts.wait_until_ready()
            );
            let snap_api: Api<Secret> =
                Api::namespaced(ctx.client.clone(), &ctx.settings.snapshot_namespace);
            let mut previous =
                match publish::read_snapshot(&snap_api, &ctx.settings.snapshot_name).await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(error = %e, "existing snapshot unreadable; starting afresh");
                        None
                    }
                };
            loop {
                tokio::time::sleep(ctx.settings.debounce).await;
                changes_rx.borrow_and_update();
                let skip = (
                    ctx.settings.snapshot_namespace.as_str(),
                    ctx.settings.snapshot_name.as_str(),
                );
                let (live, stale) = live_snapshot(
                    snapshot.state().first().map(|s| s.as_ref()),
                    &parts.state(),
                    &ctx.settings.snapshot_name,
                );
                let labelled = secrets_map(&secrets, skip);
                let (compiled, error) = compile_and_publish(
                    &ctx,
                    &trunks.state(),
                    &owns.state(),
                    &labelled,
                    previous.as_ref(),
                    live.as_deref(),
                    &stale,
                )
                .await;
                let mut compiled = compiled;
                if !ctx.settings.secret_selector.is_empty() {
                    // The only reference: changed in place, not copied.
                    explain_unlabelled(
                        Arc::make_mut(&mut compiled),
                        &unlabelled(&all_secret_names, &labelled),
                        &ctx.settings.secret_selector,
                    );
                }
                if error.is_none() {
                    previous = Some(compiled.config.clone());
                }
                let retry = error.is_some();
                ctx.set_compiled(compiled, error);
                compiled_tx.send_replace(());
                if retry {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    continue;
                }
                if changes_rx.changed().await.is_err() {
                    return;
                }
            }
        }
    };

    // Live status: poll the edge pods; a change re-reconciles every object.
    let rollout_task = {
        let ctx = ctx.clone();
        let tx = rollout_tx;
        async move {
            if ctx.settings.edge_selector.is_empty() {
                return std::future::pending::<()>().await;
            }
            let pods: Api<k8s_openapi::api::core::v1::Pod> =
                Api::namespaced(ctx.client.clone(), &ctx.settings.snapshot_namespace);
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                let Some(version) = ctx.latest().compiled.map(|c| c.config.version.clone()) else {
                    continue;
                };
                match rollout::observe(
                    &pods,
                    &ctx.settings.edge_selector,
                    ctx.settings.edge_admin_port,
                    &version,
                )
                .await
                {
                    Ok(r) => {
                        if ctx.set_rollout(r) {
                            tx.send_replace(());
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "could not list edge pods"),
                }
            }
        }
    };
    let trigger = |rx: watch::Receiver<()>| {
        futures::stream::unfold(rx, |mut rx| async move {
            rx.changed().await.ok()?;
            Some(((), rx))
        })
    };
    let config = kube::runtime::controller::Config::default().debounce(Duration::from_millis(200));
    let trunk_ctrl = Controller::for_stream(trunk_events, trunk_store)
        .with_config(config.clone())
        .reconcile_all_on(trigger(compiled_rx.clone()))
        .run(reconcile_trunk, error_policy("CarrierTrunk"), ctx.clone())
        .for_each(|_| std::future::ready(()));
    let own_ctrl = Controller::for_stream(own_events, own_store)
        .with_config(config)
        .reconcile_all_on(trigger(compiled_rx))
        .run(
            reconcile_ownership,
            error_policy("NumberOwnership"),
            ctx.clone(),
        )
        .for_each(|_| std::future::ready(()));
    let drain = |s: std::pin::Pin<Box<dyn Stream<Item = ()> + Send>>| {
        s.for_each(|_| std::future::ready(()))
    };
    tokio::select! {
        _ = compiler => tracing::warn!("compiler stopped"),
        _ = rollout_task => tracing::warn!("rollout poller stopped"),
        _ = trunk_ctrl => tracing::warn!("CarrierTrunk controller stopped"),
        _ = own_ctrl => tracing::warn!("NumberOwnership controller stopped"),
        _ = drain(unit(secret_events)) => tracing::warn!("Secret watch ended"),
        _ = drain(unit(snapshot_events)) => tracing::warn!("snapshot Secret watch ended"),
        _ = drain(unit(parts_events)) => tracing::warn!("snapshot part Secrets watch ended"),
        _ = drain(all_secret_events) => tracing::warn!("Secret names watch ended"),
    }
}
