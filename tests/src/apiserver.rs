//! A real kube-apiserver v1.36 + etcd on loopback for the tests that need the API server's own
//! verdicts (schema, CEL, server-side apply, watches, RBAC): started from `../shared/k8s`
//! (`start-apiserver.sh`) on free ports in the test's own folder, stopped when dropped.
//!
//! Binaries, as the script takes them: `KUBE_APISERVER` and `ETCD`; else a `KUBEBUILDER_ASSETS`
//! folder (`kube-apiserver`, `etcd`, as `setup-envtest` downloads them); else those of
//! `../shared/k8s`. `TRUNKGATE_K8S_DIR` points at another copy of that folder.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use crate::free_ports;

/// One running API server with its etcd.
pub struct ApiServer {
    pub dir: PathBuf,
    pub kubeconfig: PathBuf,
    pub port: u16,
    script: PathBuf,
    /// How long the start took (for the closing figures).
    pub started_in: std::time::Duration,
}

/// The folder holding `start-apiserver.sh`.
pub fn k8s_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("TRUNKGATE_K8S_DIR") {
        return PathBuf::from(d);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/k8s")
}

impl ApiServer {
    /// Starts etcd and the API server in a fresh folder below `parent`; panics (naming the log)
    /// when they do not become ready.
    pub fn start(parent: &Path) -> Self {
        let script = k8s_dir().join("start-apiserver.sh");
        assert!(
            script.is_file(),
            "{} is missing: the real-API-server tests need ../shared/k8s beside the repository (or TRUNKGATE_K8S_DIR)",
            script.display()
        );
        let dir = parent.join("apiserver");
        std::fs::create_dir_all(&dir).expect("create the API server folder");
        let first = free_ports(3);
        let mut cmd = Command::new("bash");
        cmd.arg(&script)
            .arg("start")
            .arg(&dir)
            .env("ETCD_PORT", first.to_string())
            .env("ETCD_PEER_PORT", (first + 1).to_string())
            .env("APISERVER_PORT", (first + 2).to_string());
        if let Some(assets) = std::env::var_os("KUBEBUILDER_ASSETS") {
            let assets = PathBuf::from(assets);
            if std::env::var_os("KUBE_APISERVER").is_none() {
                cmd.env("KUBE_APISERVER", assets.join("kube-apiserver"));
            }
            if std::env::var_os("ETCD").is_none() {
                cmd.env("ETCD", assets.join("etcd"));
            }
        }
        let t0 = Instant::now();
        let out = cmd.output().expect("run start-apiserver.sh");
        let server = Self {
            kubeconfig: dir.join("kubeconfig"),
            dir,
            port: first + 2,
            script,
            started_in: t0.elapsed(),
        };
        assert!(
            out.status.success(),
            "the API server did not start:\n{}\n{}\nlogs in {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            server.dir.display()
        );
        server
    }

    /// A client with the admin identity (`system:masters`).
    pub async fn client(&self) -> kube::Client {
        client_from(&self.kubeconfig).await
    }

    /// The admin bearer token the script made.
    pub fn admin_token(&self) -> String {
        std::fs::read_to_string(self.dir.join("pki/admin.token"))
            .expect("admin token")
            .trim()
            .to_string()
    }

    /// A kubeconfig for the same server with another bearer token (a ServiceAccount's).
    pub fn kubeconfig_with_token(&self, name: &str, token: &str) -> PathBuf {
        let text = std::fs::read_to_string(&self.kubeconfig).expect("read kubeconfig");
        let admin = self.admin_token();
        let path = self.dir.join(format!("kubeconfig-{name}"));
        std::fs::write(&path, text.replace(&admin, token)).expect("write kubeconfig");
        path
    }

    /// Stops the API server and etcd (also done on drop).
    pub fn stop(&self) {
        let _ = Command::new("bash")
            .arg(&self.script)
            .arg("stop")
            .arg(&self.dir)
            .output();
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A client from a kubeconfig file.
pub async fn client_from(kubeconfig: &Path) -> kube::Client {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).expect("read kubeconfig");
    let config =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await
            .expect("kubeconfig");
    kube::Client::try_from(config).expect("client")
}

/// Applies the CRDs (server-side) and waits until both are established.
pub async fn install_crds(client: &kube::Client) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::api::{Api, Patch, PatchParams};
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in trunkgate_crds::schema::crds() {
        let name = crd.metadata.name.clone().expect("CRD name");
        let mut body = serde_json::to_value(&crd).expect("CRD JSON");
        body["apiVersion"] = "apiextensions.k8s.io/v1".into();
        body["kind"] = "CustomResourceDefinition".into();
        api.patch(
            &name,
            &PatchParams::apply("trunkgate-tests").force(),
            &Patch::Apply(body),
        )
        .await
        .unwrap_or_else(|e| panic!("apply CRD {name}: {e}"));
    }
    for crd in trunkgate_crds::schema::crds() {
        let name = crd.metadata.name.clone().expect("CRD name");
        let deadline = Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let c = api.get(&name).await.expect("get CRD");
            let established = c
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True");
            if established {
                break;
            }
            assert!(Instant::now() < deadline, "CRD {name} not established");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
}

/// Creates a namespace (no error when it exists).
pub async fn ensure_namespace(client: &kube::Client, name: &str) {
    use k8s_openapi::api::core::v1::Namespace;
    use kube::api::{Api, Patch, PatchParams};
    let api: Api<Namespace> = Api::all(client.clone());
    let body =
        serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
    api.patch(
        name,
        &PatchParams::apply("trunkgate-tests"),
        &Patch::Apply(body),
    )
    .await
    .unwrap_or_else(|e| panic!("namespace {name}: {e}"));
}

/// The API of one of the kinds tests apply (Namespace, Secret and both custom resources).
pub fn api_of(
    client: &kube::Client,
    kind: &str,
    namespace: Option<&str>,
) -> kube::Api<kube::api::DynamicObject> {
    use kube::core::{ApiResource, GroupVersionKind};
    let (group, version, plural) = match kind {
        "Namespace" => ("", "v1", "namespaces"),
        "Secret" => ("", "v1", "secrets"),
        "ServiceAccount" => ("", "v1", "serviceaccounts"),
        "Event" => ("events.k8s.io", "v1", "events"),
        "Role" => ("rbac.authorization.k8s.io", "v1", "roles"),
        "RoleBinding" => ("rbac.authorization.k8s.io", "v1", "rolebindings"),
        "ClusterRole" => ("rbac.authorization.k8s.io", "v1", "clusterroles"),
        "ClusterRoleBinding" => ("rbac.authorization.k8s.io", "v1", "clusterrolebindings"),
        "CarrierTrunk" => ("trunkgate.io", "v1alpha1", "carriertrunks"),
        "NumberOwnership" => ("trunkgate.io", "v1alpha1", "numberownerships"),
        other => panic!("tests do not apply {other}"),
    };
    let ar =
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
    match namespace {
        Some(ns) => kube::Api::namespaced_with(client.clone(), ns, &ar),
        None => kube::Api::all_with(client.clone(), &ar),
    }
}

/// Applies every document of a YAML text (server-side apply, strict field validation).
pub async fn apply_yaml(client: &kube::Client, text: &str) {
    use kube::api::{Patch, PatchParams};
    let docs: Vec<serde_json::Value> =
        serde_saphyr::from_str_multiple(text).expect("YAML to apply");
    for doc in docs.into_iter().filter(|d| !d.is_null()) {
        let kind = doc["kind"].as_str().expect("kind").to_string();
        let name = doc["metadata"]["name"].as_str().expect("name").to_string();
        let ns = doc["metadata"]["namespace"].as_str().map(str::to_string);
        let api = api_of(
            client,
            &kind,
            if matches!(
                kind.as_str(),
                "Namespace" | "ClusterRole" | "ClusterRoleBinding"
            ) {
                None
            } else {
                Some(ns.as_deref().unwrap_or("default"))
            },
        );
        api.patch(
            &name,
            &PatchParams::apply("trunkgate-tests")
                .force()
                .validation_strict(),
            &Patch::Apply(&doc),
        )
        .await
        .unwrap_or_else(|e| panic!("apply {kind} {name}: {e}"));
    }
}

/// A token for a ServiceAccount (what `kubectl create token SA -n NS` gives).
pub async fn service_account_token(client: &kube::Client, namespace: &str, name: &str) -> String {
    use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
    use k8s_openapi::api::core::v1::ServiceAccount;
    let api: kube::Api<ServiceAccount> = kube::Api::namespaced(client.clone(), namespace);
    let req = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec![],
            expiration_seconds: Some(3600),
            ..Default::default()
        },
        ..Default::default()
    };
    api.create_token_request(name, &Default::default(), &req)
        .await
        .unwrap_or_else(|e| panic!("token for {namespace}/{name}: {e}"))
        .status
        .expect("token status")
        .token
}

/// `helm template` of the chart (release `trunkgate`), only the given templates.
pub fn helm_template(namespace: &str, templates: &[&str]) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let local = root.join(".tools/bin/helm");
    let helm = if local.is_file() {
        local
    } else {
        PathBuf::from("helm")
    };
    let mut cmd = Command::new(&helm);
    cmd.args(["template", "trunkgate"])
        .arg(root.join("charts/trunkgate"))
        .args(["--namespace", namespace]);
    for t in templates {
        cmd.args(["--show-only", t]);
    }
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("run {} (make test-deps installs it): {e}", helm.display()));
    assert!(
        out.status.success(),
        "helm template: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
