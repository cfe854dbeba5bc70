//! Reconcile steps against a mocked API server that asserts the exact requests
//! (the kube-rs controller-rs pattern).
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use k8s_openapi::api::coordination::v1::Lease;
use kube::client::Body;
use kube::{Api, Client};
use serde_json::{Value, json};
use trunkgate_crds::trunk::EdgeEndpoint;
use trunkgate_crds::{CarrierTrunk, NumberOwnership, Secrets, compile};
use trunkgate_operator::controller::{self, Context, Settings};
use trunkgate_operator::leader::LeaseLock;
use trunkgate_operator::metrics::Metrics;

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

fn mock_ctx() -> (Arc<Context>, Handle) {
    let (svc, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(svc, "default");
    let settings = Settings {
        snapshot_namespace: "trunkgate-system".into(),
        snapshot_name: "trunkgate-edge-config".into(),
        snapshot_max_parts: 8,
        snapshot_part_bytes: 1_000_000,
        edge: EdgeEndpoint {
            fqdn: Some("sip.example.net".into()),
            addresses: vec!["192.0.2.10".into()],
        },
        debounce: Duration::from_millis(10),
        secret_selector: String::new(),
        edge_selector: String::new(),
        edge_admin_port: 9091,
    };
    (Context::new(client, settings, Metrics::new()), handle)
}

/// Expects one request, checks method and path+query, returns its JSON body, answers `reply`.
async fn expect(
    handle: &mut Handle,
    method: Method,
    uri: &str,
    status: StatusCode,
    reply: Value,
) -> Value {
    let (req, send) = tokio::time::timeout(Duration::from_secs(5), handle.next_request())
        .await
        .expect("the controller made no request in time")
        .expect("service alive");
    assert_eq!(req.method(), method);
    assert_eq!(req.uri().to_string(), uri);
    let body = req.into_body().collect_bytes().await.unwrap();
    let json = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&body).unwrap()
    };
    send.send_response(
        Response::builder()
            .status(status)
            .body(Body::from(serde_json::to_vec(&reply).unwrap()))
            .unwrap(),
    );
    json
}

async fn no_request(handle: &mut Handle) {
    let r = tokio::time::timeout(Duration::from_millis(200), handle.next_request()).await;
    assert!(!matches!(r, Ok(Some(_))), "expected no API request");
}

fn condition<'a>(status: &'a Value, t: &str) -> &'a Value {
    status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == t)
        .unwrap_or_else(|| panic!("no {t} condition in {status}"))
}

#[tokio::test]
async fn publishes_snapshot_secret_with_server_side_apply_once_per_version() {
    let (ctx, mut handle) = mock_ctx();
    let trunks = [Arc::new(CarrierTrunk::test("acme", "t"))];
    let owns = [Arc::new(NumberOwnership::test(
        "acme",
        "n",
        "t",
        &["+6498879300-+6498879399"],
    ))];
    let server = tokio::spawn(async move {
        let body = expect(
            &mut handle,
            Method::PATCH,
            "/api/v1/namespaces/trunkgate-system/secrets/trunkgate-edge-config?&force=true&fieldManager=trunkgate-operator",
            StatusCode::OK,
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "trunkgate-edge-config"}}),
        )
        .await;
        (body, handle)
    });
    let (compiled, err) =
        controller::compile_and_publish(&ctx, &trunks, &owns, &Secrets::new(), None, None, &[])
            .await;
    assert_eq!(err, None);
    let (body, mut handle) = server.await.unwrap();
    assert_eq!(body["kind"], "Secret");
    assert_eq!(
        body["metadata"]["annotations"]["trunkgate.io/snapshot-version"],
        compiled.config.version.as_str()
    );
    use base64::Engine as _;
    let data = base64::engine::general_purpose::STANDARD
        .decode(body["data"]["snapshot.json.gz"].as_str().unwrap())
        .unwrap();
    let decoded = trunkgate_crds::EdgeConfig::decode(&data).unwrap();
    assert_eq!(decoded, compiled.config);
    // Same content again: nothing to publish.
    let (_, err) = controller::compile_and_publish(
        &ctx,
        &trunks,
        &owns,
        &Secrets::new(),
        Some(&compiled.config),
        Some(compiled.config.version.as_str()),
        &[],
    )
    .await;
    assert_eq!(err, None);
    no_request(&mut handle).await;
}

#[tokio::test]
async fn publish_failure_is_reported_not_fatal() {
    let (ctx, mut handle) = mock_ctx();
    let server = tokio::spawn(async move {
        expect(
            &mut handle,
            Method::PATCH,
            "/api/v1/namespaces/trunkgate-system/secrets/trunkgate-edge-config?&force=true&fieldManager=trunkgate-operator",
            StatusCode::FORBIDDEN,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": "forbidden", "reason": "Forbidden", "code": 403}),
        )
        .await;
    });
    let (_, err) = controller::compile_and_publish(
        &ctx,
        &[Arc::new(CarrierTrunk::test("a", "t"))],
        &[],
        &Secrets::new(),
        None,
        None,
        &[],
    )
    .await;
    server.await.unwrap();
    assert!(err.unwrap().contains("forbidden"));
}

#[tokio::test]
async fn trunk_status_applied_with_conditions_and_edge_endpoint() {
    let (ctx, mut handle) = mock_ctx();
    let trunk = CarrierTrunk::test("acme", "t").generation(3);
    let compiled = compile(std::slice::from_ref(&trunk), &[], &Secrets::new(), None);
    let version = compiled.config.version.clone();
    ctx.set_compiled(Arc::new(compiled), None);
    let reply = serde_json::to_value(&trunk).unwrap();
    let server = tokio::spawn(async move {
        let body = expect(
            &mut handle,
            Method::PATCH,
            "/apis/trunkgate.io/v1alpha1/namespaces/acme/carriertrunks/t/status?&force=true&fieldManager=trunkgate-operator",
            StatusCode::OK,
            reply,
        )
        .await;
        (body, handle)
    });
    controller::reconcile_trunk(Arc::new(trunk.clone()), ctx.clone())
        .await
        .unwrap();
    let (body, mut handle) = server.await.unwrap();
    assert_eq!(body["apiVersion"], "trunkgate.io/v1alpha1");
    assert_eq!(body["kind"], "CarrierTrunk");
    let status = &body["status"];
    assert_eq!(status["observedGeneration"], 3);
    assert_eq!(status["edge"]["fqdn"], "sip.example.net");
    assert_eq!(status["edge"]["addresses"][0], "192.0.2.10");
    assert_eq!(status["snapshotVersion"], version.as_str());
    for t in ["Accepted", "ResolvedRefs", "Ready"] {
        assert_eq!(condition(status, t)["status"], "True", "{t}");
        assert_eq!(condition(status, t)["observedGeneration"], 3);
    }
    // With that status in place, reconciling again writes nothing.
    let mut current = trunk;
    current.status = Some(serde_json::from_value(status.clone()).unwrap());
    controller::reconcile_trunk(Arc::new(current), ctx)
        .await
        .unwrap();
    no_request(&mut handle).await;
}

#[tokio::test]
async fn conflicted_ownership_status_names_the_other_object() {
    let (ctx, mut handle) = mock_ctx();
    let trunks = [CarrierTrunk::test("acme", "t")];
    let old = NumberOwnership::test("acme", "old", "t", &["+6498879300-+6498879399"]).created_at(1);
    let new = NumberOwnership::test("acme", "new", "t", &["+6498879350"]).created_at(2);
    ctx.set_compiled(
        Arc::new(compile(&trunks, &[old, new.clone()], &Secrets::new(), None)),
        None,
    );
    let reply = serde_json::to_value(&new).unwrap();
    let server = tokio::spawn(async move {
        expect(
            &mut handle,
            Method::PATCH,
            "/apis/trunkgate.io/v1alpha1/namespaces/acme/numberownerships/new/status?&force=true&fieldManager=trunkgate-operator",
            StatusCode::OK,
            reply,
        )
        .await
    });
    controller::reconcile_ownership(Arc::new(new), ctx)
        .await
        .unwrap();
    let body = server.await.unwrap();
    let status = &body["status"];
    let conflicted = condition(status, "Conflicted");
    assert_eq!(conflicted["status"], "True");
    assert!(conflicted["message"].as_str().unwrap().contains("acme/old"));
    assert_eq!(condition(status, "Ready")["status"], "False");
    assert_eq!(condition(status, "Ready")["reason"], "NumberConflict");
    assert_eq!(status["numberCount"], 1);
    assert!(status.get("snapshotVersion").is_none());
}

#[tokio::test]
async fn object_newer_than_the_compile_waits() {
    let (ctx, mut handle) = mock_ctx();
    let trunk = CarrierTrunk::test("acme", "t");
    ctx.set_compiled(
        Arc::new(compile(
            std::slice::from_ref(&trunk),
            &[],
            &Secrets::new(),
            None,
        )),
        None,
    );
    controller::reconcile_trunk(Arc::new(trunk.generation(2)), ctx)
        .await
        .unwrap();
    no_request(&mut handle).await;
}

#[tokio::test]
async fn leader_lease_created_when_absent_and_respected_when_held() {
    let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(svc, "default");
    let lock = LeaseLock {
        api: Api::<Lease>::namespaced(client, "trunkgate-system"),
        name: "trunkgate-operator".into(),
        identity: "pod-a".into(),
        duration: Duration::from_secs(15),
        retry: Duration::from_secs(1),
    };
    let lease_path = "/apis/coordination.k8s.io/v1/namespaces/trunkgate-system/leases";
    let server = tokio::spawn(async move {
        expect(
            &mut handle,
            Method::GET,
            &format!("{lease_path}/trunkgate-operator"),
            StatusCode::NOT_FOUND,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found"}),
        )
        .await;
        let created = expect(&mut handle, Method::POST, &format!("{lease_path}?"), StatusCode::CREATED, json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "trunkgate-operator"}
        }))
        .await;
        assert_eq!(created["spec"]["holderIdentity"], "pod-a");
        // Held by a live replica: no takeover.
        let now = jiff::Timestamp::now().to_string();
        expect(
            &mut handle,
            Method::GET,
            &format!("{lease_path}/trunkgate-operator"),
            StatusCode::OK,
            json!({
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": "trunkgate-operator", "resourceVersion": "7"},
                "spec": {"holderIdentity": "pod-b", "leaseDurationSeconds": 15, "renewTime": now}
            }),
        )
        .await;
        handle
    });
    assert!(lock.try_acquire_or_renew().await.unwrap());
    assert!(!lock.try_acquire_or_renew().await.unwrap());
    let mut handle = server.await.unwrap();
    no_request(&mut handle).await;
}

/// A one-shot fake edge admin endpoint answering `/snapshot` with `version`.
async fn fake_edge(version: &'static str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        for _ in 0..4 {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            let mut buf = [0u8; 1024];
            let n = s.read(&mut buf).await.unwrap_or(0);
            assert!(String::from_utf8_lossy(&buf[..n]).starts_with("GET /snapshot "));
            let body = format!("{{\"version\":\"{version}\",\"trunks\":1}}\n");
            let resp = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
            let _ = s.write_all(resp.as_bytes()).await;
        }
    });
    port
}

#[tokio::test]
async fn live_status_counts_edge_pods_running_the_snapshot() {
    use k8s_openapi::api::core::v1::Pod;
    use trunkgate_operator::rollout;
    let port = fake_edge("v-current").await;
    let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let pods: Api<Pod> = Api::namespaced(Client::new(svc, "default"), "trunkgate-system");
    let server = tokio::spawn(async move {
        expect(
            &mut handle,
            Method::GET,
            "/api/v1/namespaces/trunkgate-system/pods?&labelSelector=app.kubernetes.io%2Fcomponent%3Dedge",
            StatusCode::OK,
            json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": [
                {"metadata": {"name": "edge-0"}, "status": {"phase": "Running", "podIP": "127.0.0.1"}},
                {"metadata": {"name": "edge-1"}, "status": {"phase": "Running", "podIP": "127.0.0.2"}},
                {"metadata": {"name": "edge-2"}, "status": {"phase": "Pending"}},
            ]}),
        )
        .await;
    });
    let r = rollout::observe(&pods, "app.kubernetes.io/component=edge", port, "v-current")
        .await
        .unwrap();
    server.await.unwrap();
    // edge-0 answers with the current version; nothing listens for edge-1; edge-2 is not running.
    assert_eq!((r.programmed, r.total, r.unreachable), (1, 2, 1));
    let (status, reason, msg) = r.condition();
    assert_eq!((status, reason), ("False", "RollingOut"));
    assert!(msg.contains("1 of 2 edge pods"), "{msg}");
}

#[tokio::test]
async fn programmed_condition_written_from_the_rollout() {
    let (ctx, mut handle) = mock_ctx();
    let trunk = CarrierTrunk::test("acme", "t");
    let compiled = compile(std::slice::from_ref(&trunk), &[], &Secrets::new(), None);
    let version = compiled.config.version.clone();
    ctx.set_compiled(Arc::new(compiled), None);
    ctx.set_rollout(trunkgate_operator::rollout::Rollout {
        version,
        programmed: 3,
        total: 3,
        unreachable: 0,
        targets: Default::default(),
        registrations: Default::default(),
        store_fallback: 0,
        quality: Default::default(),
    });
    let reply = serde_json::to_value(&trunk).unwrap();
    let server = tokio::spawn(async move {
        expect(
            &mut handle,
            Method::PATCH,
            "/apis/trunkgate.io/v1alpha1/namespaces/acme/carriertrunks/t/status?&force=true&fieldManager=trunkgate-operator",
            StatusCode::OK,
            reply,
        )
        .await
    });
    controller::reconcile_trunk(Arc::new(trunk), ctx)
        .await
        .unwrap();
    let body = server.await.unwrap();
    let types: Vec<&str> = body["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        vec!["Accepted", "ResolvedRefs", "Programmed", "Ready"]
    );
    let p = condition(&body["status"], "Programmed");
    assert_eq!(p["status"], "True");
    assert!(p["message"].as_str().unwrap().contains("3 of 3 edge pods"));
}
