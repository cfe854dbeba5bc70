//! Cluster mode against a real kube-apiserver v1.36, with the chart's own RBAC: the operator and
//! the edge run as their ServiceAccounts (tokens from the TokenRequest API, as `kubectl create
//! token` gives), the edge loads the operator's snapshot Secret, takes a sipp call, reloads on an
//! edit, and may read no other Secret.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, ListParams};
use trunkgate_tests::apiserver::{
    ApiServer, apply_yaml, client_from, ensure_namespace, helm_template, install_crds,
    service_account_token,
};
use trunkgate_tests::edge::operator_bin;
use trunkgate_tests::sipp::scenario;
use trunkgate_tests::*;

const NS: &str = "trunkgate-system";
const CALLER: &str = "+6421555123";
const NUMBER: &str = "+6498879333";

const HEAD: &str = "trunkgate-edge-config";

/// An API server with the CRDs, the namespaces, the chart's RBAC and a Secret nobody may read;
/// kubeconfigs for the operator's and the edge's ServiceAccounts.
async fn cluster(lab: &Lab) -> (ApiServer, kube::Client, PathBuf, PathBuf) {
    let server = ApiServer::start(&lab.dir);
    let admin = server.client().await;
    install_crds(&admin).await;
    ensure_namespace(&admin, NS).await;
    ensure_namespace(&admin, "acme").await;
    apply_yaml(
        &admin,
        &helm_template(
            NS,
            &[
                "templates/edge/rbac.yaml",
                "templates/edge/serviceaccount.yaml",
                "templates/operator/rbac.yaml",
                "templates/operator/serviceaccount.yaml",
            ],
        ),
    )
    .await;
    apply_yaml(
        &admin,
        "apiVersion: v1\nkind: Secret\nmetadata: {name: other, namespace: trunkgate-system}\nstringData: {k: v}\n",
    )
    .await;
    let op_token = service_account_token(&admin, NS, "trunkgate-operator").await;
    let edge_token = service_account_token(&admin, NS, "trunkgate-edge").await;
    let op_kubeconfig = server.kubeconfig_with_token("operator", &op_token);
    let edge_kubeconfig = server.kubeconfig_with_token("edge", &edge_token);
    (server, admin, op_kubeconfig, edge_kubeconfig)
}

/// The operator as the identity `kubeconfig` names, logging to `log`.
fn start_operator(kubeconfig: &Path, log: &Path, extra: &[&str]) -> ProcessGroup {
    let file = std::fs::File::create(log).unwrap();
    let mut cmd = Command::new(operator_bin());
    cmd.args([
        "run",
        "--admin",
        &format!("127.0.0.1:{}", free_port()),
        "--debounce-ms",
        "100",
    ])
    .args(extra)
    .env("KUBECONFIG", kubeconfig)
    .env("RUST_LOG", "info,kube=warn")
    .stdout(file.try_clone().unwrap())
    .stderr(file);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("TRUNKGATE_") {
            cmd.env_remove(k);
        }
    }
    cmd.stdin(Stdio::null());
    ProcessGroup::spawn(cmd, "operator")
}

/// Asks `f` every 100 ms, up to `times` times, until it answers Some.
async fn poll<T, F, Fut>(times: usize, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    for _ in 0..times {
        if let Some(v) = f().await {
            return Some(v);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// The edge in cluster mode on the snapshot Secrets, as the identity `kubeconfig` names.
fn cluster_edge(lab: &Lab, kubeconfig: &Path) -> Edge {
    Edge::start(
        lab,
        EdgeOptions {
            extra_args: vec!["--snapshot-secret".into(), format!("{NS}/{HEAD}")],
            env: vec![("KUBECONFIG".into(), kubeconfig.display().to_string())],
            ..EdgeOptions::default()
        },
    )
}

/// A call from the lab carrier to `number` through the edge, answered by the platform.
fn call_through(lab: &Lab, edge: &Edge, platform: std::net::SocketAddr, number: &str) {
    let uas = Sipp::answering(lab, "platform", platform).start();
    Sipp::uac(
        lab,
        "carrier",
        scenario(
            lab,
            "uac_call.xml",
            &[("RURI", &edge.public_uri(number)), ("FROM_USER", CALLER)],
        ),
        CARRIER,
        edge.public,
    )
    .run()
    .assert_ok();
    uas.wait().assert_ok();
    edge.wait_cdr("the call", |c| c["callee"] == number);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_and_operator_as_their_service_accounts_load_call_and_reload() {
    let lab = Lab::new("apiserver-cluster");
    let (_server, admin, op_kubeconfig, edge_kubeconfig) = cluster(&lab).await;

    let platform = Sipp::reserve(PLATFORM);
    let trunk = Trunk::new("acme", "pacific", "127.0.0.10/32", platform);
    apply_yaml(&admin, &trunk.yaml()).await;
    apply_yaml(
        &admin,
        &Numbers::byoc("acme", "numbers", "pacific", &["+6498879300-+6498879399"]).yaml(),
    )
    .await;
    // The operator, as its ServiceAccount.
    let op_log = lab.path("operator.log");
    let _operator = start_operator(&op_kubeconfig, &op_log, &[]);
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), NS);
    let published = poll(200, || async { secrets.get_opt(HEAD).await.ok().flatten() })
        .await
        .is_some();
    let log = || std::fs::read_to_string(&op_log).unwrap_or_default();
    assert!(published, "the operator published; its log:\n{}", log());

    // The edge, as its ServiceAccount, on the snapshot Secret.
    let edge = cluster_edge(&lab, &edge_kubeconfig);
    let version = edge.snapshot_version();
    call_through(&lab, &edge, platform, NUMBER);

    // An edit reaches the edge.
    let t0 = Instant::now();
    apply_yaml(
        &admin,
        &Numbers::byoc("acme", "numbers", "pacific", &["+6498879300-+6498879499"]).yaml(),
    )
    .await;
    assert_eventually!(
        edge.snapshot_version() != version,
        Duration::from_secs(10),
        "the edge reloads the edited snapshot"
    );
    eprintln!("edit to edge reload: {:?}", t0.elapsed());

    // RBAC: the edge reads its Secret and nothing else.
    let edge_client = client_from(&edge_kubeconfig).await;
    let edge_secrets: Api<Secret> = Api::namespaced(edge_client, NS);
    assert!(edge_secrets.get(HEAD).await.is_ok());
    let forbidden =
        |r: Result<_, kube::Error>| matches!(r, Err(kube::Error::Api(e)) if e.code == 403);
    assert!(
        forbidden(edge_secrets.get("other").await.map(|_| ())),
        "another Secret"
    );
    assert!(
        forbidden(edge_secrets.list(&ListParams::default()).await.map(|_| ())),
        "a list of all Secrets"
    );
    let text = log();
    assert!(
        !text.contains("forbidden") && !text.contains("Forbidden"),
        "the operator has every right it needs:\n{text}"
    );
    assert!(
        !edge.log_tail(2000).contains("orbidden"),
        "the edge has every right it needs"
    );
}

fn annotation(s: &Secret, key: &str) -> Option<String> {
    s.metadata.annotations.as_ref()?.get(key).cloned()
}

/// `count` numbers spread over +64 9 888 xxxx, none next to another, so they stay single.
fn scattered(count: usize) -> Vec<String> {
    (0..count)
        .map(|i| format!("+6498880{:04}", (i * 37) % 10_000))
        .collect()
}

/// A snapshot larger than one Secret (here: parts of 1,024 bytes, the operator's smallest) is
/// published in parts that the edge, with the chart's RBAC, reads by name; a smaller one
/// removes the parts it no longer needs; a deleted part is written again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_in_parts_is_published_read_by_the_edge_and_kept_whole() {
    use trunkgate_crds::snapshot_secrets::{PARTS_ANNOTATION, VERSION_ANNOTATION};
    let lab = Lab::new("apiserver-parts");
    let (_server, admin, op_kubeconfig, edge_kubeconfig) = cluster(&lab).await;
    let platform = Sipp::reserve(PLATFORM);
    apply_yaml(
        &admin,
        &Trunk::new("acme", "pacific", "127.0.0.10/32", platform).yaml(),
    )
    .await;
    let mut numbers = scattered(3_000);
    numbers.push(NUMBER.to_string());
    let list: Vec<&str> = numbers.iter().map(String::as_str).collect();
    apply_yaml(
        &admin,
        &Numbers::byoc("acme", "numbers", "pacific", &list).yaml(),
    )
    .await;

    let op_log = lab.path("operator.log");
    let _operator = start_operator(&op_kubeconfig, &op_log, &["--snapshot-part-bytes", "1024"]);
    let log = || std::fs::read_to_string(&op_log).unwrap_or_default();
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), NS);
    let head = poll(200, || async { secrets.get_opt(HEAD).await.ok().flatten() })
        .await
        .unwrap_or_else(|| panic!("the operator published; its log:\n{}", log()));
    let count: usize = annotation(&head, PARTS_ANNOTATION)
        .expect("a snapshot over 1,024 bytes has parts")
        .parse()
        .unwrap();
    assert!(count >= 3, "{count} parts");
    let version = annotation(&head, VERSION_ANNOTATION).unwrap();
    let head_uid = head.metadata.uid.clone().unwrap();
    for i in 1..count {
        let part = secrets.get(&format!("{HEAD}-part-{i}")).await.unwrap();
        assert_eq!(
            annotation(&part, VERSION_ANNOTATION).as_ref(),
            Some(&version)
        );
    }
    // On the first publish the head's uid exists only once the head does, so the parts get
    // their ownerReferences in a second write right after it.
    let owned = poll(100, || async {
        for i in 1..count {
            let part = secrets.get_opt(&format!("{HEAD}-part-{i}")).await.ok()??;
            let owner = part.metadata.owner_references?.into_iter().next()?;
            if (owner.name.as_str(), owner.uid.as_str()) != (HEAD, head_uid.as_str()) {
                return None;
            }
        }
        Some(())
    })
    .await;
    assert!(
        owned.is_some(),
        "every part owned by the head; log:\n{}",
        log()
    );

    // The edge, with the chart's RBAC, reads every part and runs the snapshot.
    let edge = cluster_edge(&lab, &edge_kubeconfig);
    assert_eq!(edge.snapshot_version(), version);
    call_through(&lab, &edge, platform, NUMBER);

    // A deleted part is written again, and the edge keeps running.
    secrets
        .delete(&format!("{HEAD}-part-1"), &DeleteParams::default())
        .await
        .unwrap();
    let rewritten = poll(100, || async {
        let p = secrets
            .get_opt(&format!("{HEAD}-part-1"))
            .await
            .ok()
            .flatten()?;
        (annotation(&p, VERSION_ANNOTATION).as_ref() == Some(&version)).then_some(())
    })
    .await;
    assert!(rewritten.is_some(), "part 1 written again; log:\n{}", log());

    // Smaller: one Secret again; the parts go, the edge follows.
    apply_yaml(
        &admin,
        &Numbers::byoc("acme", "numbers", "pacific", &[NUMBER]).yaml(),
    )
    .await;
    let gone = poll(100, || async {
        let head = secrets.get_opt(HEAD).await.ok().flatten()?;
        let whole = annotation(&head, PARTS_ANNOTATION).is_none()
            && annotation(&head, VERSION_ANNOTATION) != Some(version.clone());
        let left = secrets
            .get_opt(&format!("{HEAD}-part-1"))
            .await
            .ok()
            .flatten();
        (whole && left.is_none()).then_some(())
    })
    .await;
    assert!(gone.is_some(), "one Secret, parts removed; log:\n{}", log());
    assert_eventually!(
        edge.snapshot_version() != version,
        Duration::from_secs(10),
        "the edge runs the smaller snapshot"
    );
    call_through(&lab, &edge, platform, NUMBER);
    let text = log();
    assert!(
        !text.contains("orbidden"),
        "the operator has every right it needs:\n{text}"
    );
    assert!(
        !edge.log_tail(2000).contains("orbidden"),
        "the edge has every right it needs"
    );
}
