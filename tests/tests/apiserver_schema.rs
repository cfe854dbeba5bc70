//! The API server and `trunkgate-operator check` must agree on every object: a differential test
//! over tests/corpus/*.yaml against a real kube-apiserver v1.36 (see tests/src/apiserver.rs).
//! Also: the CRDs install without warnings, and every file in examples/ is accepted.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::Value;
use trunkgate_crds::files::{Loader, Manifests};
use trunkgate_crds::{Reason, compile_with_refused};
use trunkgate_tests::Lab;
use trunkgate_tests::apiserver::{ApiServer, ensure_namespace, install_crds};

fn docs(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_saphyr::from_str_multiple::<Value, Vec<Value>>(&text)
        .unwrap()
        .into_iter()
        .filter(|d| !d.is_null())
        .collect()
}

/// `check`'s verdict on one object's own validity: refused by the schema, or a problem compile()
/// finds in the object itself (references to other objects are not the server's business).
fn check_verdict(doc: &Value) -> Result<(), String> {
    let mut m = Manifests::default();
    let text = serde_json::to_string(doc).unwrap();
    Loader::new().load(Path::new("case.yaml"), &text, &mut m);
    if let Some(p) = m.problems.first() {
        return Err(p.to_string());
    }
    let c = compile_with_refused(&m.trunks, &m.ownerships, &m.refused, &m.secrets, None);
    let own: Vec<String> = c
        .reports
        .iter()
        .flat_map(|r| r.problems.iter())
        .filter(|p| p.reason == Reason::Invalid)
        .map(ToString::to_string)
        .collect();
    if own.is_empty() {
        Ok(())
    } else {
        Err(own.join("; "))
    }
}

fn api_for(client: &kube::Client, kind: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("trunkgate.io", "v1alpha1", kind);
    let plural = if kind == "CarrierTrunk" {
        "carriertrunks"
    } else {
        "numberownerships"
    };
    let ar = ApiResource::from_gvk_with_plural(&gvk, plural);
    Api::namespaced_with(client.clone(), "corpus", &ar)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_and_check_agree_on_every_corpus_object() {
    let lab = Lab::new("apiserver-corpus");
    let server = ApiServer::start(&lab.dir);
    let client = server.client().await;
    install_crds(&client).await;
    ensure_namespace(&client, "corpus").await;
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let mut cases = Vec::new();
    for f in ["carriertrunks.yaml", "numberownerships.yaml"] {
        cases.extend(docs(&corpus.join(f)));
    }
    assert!(
        cases.len() >= 40,
        "the corpus holds {} objects",
        cases.len()
    );
    let (mut accepted, mut refused, mut disagree) = (0, 0, Vec::new());
    for doc in &cases {
        let kind = doc["kind"].as_str().unwrap();
        let name = doc["metadata"]["name"].as_str().unwrap();
        let server_verdict = api_for(&client, kind)
            .patch(
                name,
                &PatchParams::apply("corpus").dry_run().validation_strict(),
                &Patch::Apply(doc.clone()),
            )
            .await
            .map(|_| ())
            .map_err(|e| e.to_string());
        let check = check_verdict(doc);
        match &server_verdict {
            Ok(()) => accepted += 1,
            Err(_) => refused += 1,
        }
        if server_verdict.is_ok() != check.is_ok() {
            disagree.push(format!(
                "{kind} {name}: server {server_verdict:?}, check {check:?}"
            ));
        }
    }
    eprintln!(
        "corpus: {} objects, server accepted {accepted}, refused {refused}",
        cases.len()
    );
    assert!(
        disagree.is_empty(),
        "{} disagreement(s):\n{}",
        disagree.len(),
        disagree.join("\n")
    );
    assert!(accepted >= 10 && refused >= 20, "a corpus of both kinds");
}
