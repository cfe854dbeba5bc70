//! Cluster mode against a real kube-apiserver v1.36, with the chart's own RBAC: the operator and
//! the edge run as their ServiceAccounts (tokens from the TokenRequest API, as `kubectl create
//! token` gives), the edge loads the operator's snapshot Secret, takes a sipp call, reloads on an
//! edit, and may read no other Secret.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kube::api::{Api, ListParams};
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_and_operator_as_their_service_accounts_load_call_and_reload() {
    let lab = Lab::new("apiserver-cluster");
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
    let op_token = service_account_token(&admin, NS, "trunkgate-operator").await;
    let edge_token = service_account_token(&admin, NS, "trunkgate-edge").await;
    let op_kubeconfig = server.kubeconfig_with_token("operator", &op_token);
    let edge_kubeconfig = server.kubeconfig_with_token("edge", &edge_token);

    let platform = Sipp::reserve(PLATFORM);
    let trunk = Trunk::new("acme", "pacific", "127.0.0.10/32", platform);
    apply_yaml(&admin, &trunk.yaml()).await;
    apply_yaml(
        &admin,
        &Numbers::byoc("acme", "numbers", "pacific", &["+6498879300-+6498879399"]).yaml(),
    )
    .await;
    apply_yaml(
        &admin,
        "apiVersion: v1\nkind: Secret\nmetadata: {name: other, namespace: trunkgate-system}\nstringData: {k: v}\n",
    )
    .await;

    // The operator, as its ServiceAccount.
    let op_log = lab.path("operator.log");
    let file = std::fs::File::create(&op_log).unwrap();
    let mut cmd = Command::new(operator_bin());
    cmd.args([
        "run",
        "--admin",
        &format!("127.0.0.1:{}", free_port()),
        "--debounce-ms",
        "100",
    ])
    .env("KUBECONFIG", &op_kubeconfig)
    .env("RUST_LOG", "info,kube=warn")
    .stdout(file.try_clone().unwrap())
    .stderr(file);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("TRUNKGATE_") {
            cmd.env_remove(k);
        }
    }
    cmd.stdin(Stdio::null());
    let _operator = ProcessGroup::spawn(cmd, "operator");
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(admin.clone(), NS);
    let mut published = false;
    for _ in 0..200 {
        if secrets
            .get_opt("trunkgate-edge-config")
            .await
            .ok()
            .flatten()
            .is_some()
        {
            published = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = || std::fs::read_to_string(&op_log).unwrap_or_default();
    assert!(published, "the operator published; its log:\n{}", log());

    // The edge, as its ServiceAccount, on the snapshot Secret.
    let edge = Edge::start(
        &lab,
        EdgeOptions {
            extra_args: vec![
                "--snapshot-secret".into(),
                format!("{NS}/trunkgate-edge-config"),
            ],
            env: vec![("KUBECONFIG".into(), edge_kubeconfig.display().to_string())],
            ..EdgeOptions::default()
        },
    );
    let version = edge.snapshot_version();
    let uas = Sipp::answering(&lab, "platform", platform).start();
    Sipp::uac(
        &lab,
        "carrier",
        scenario(
            &lab,
            "uac_call.xml",
            &[("RURI", &edge.public_uri(NUMBER)), ("FROM_USER", CALLER)],
        ),
        CARRIER,
        edge.public,
    )
    .run()
    .assert_ok();
    uas.wait().assert_ok();
    edge.wait_cdr("the call", |c| c["callee"] == NUMBER);

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
    let edge_secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(edge_client, NS);
    assert!(edge_secrets.get("trunkgate-edge-config").await.is_ok());
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
