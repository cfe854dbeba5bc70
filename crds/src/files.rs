//! Reads CarrierTrunk, NumberOwnership and Secret manifests from a folder of YAML files, as a
//! GitOps repository or the edge's standalone mode holds them.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use kube::CustomResourceExt;
use serde_json::Value;

use crate::compile::Secrets;
use crate::report::{ObjectKey, ObjectKind};
use crate::schema::{open_api_schema, validate_document};
use crate::{CarrierTrunk, NumberOwnership};

/// A problem with a document, before compile() sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileProblem {
    pub file: PathBuf,
    /// 1-based document number within the file.
    pub document: usize,
    /// `Kind namespace/name` when known.
    pub object: Option<String>,
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for FileProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (document {})", self.file.display(), self.document)?;
        if let Some(o) = &self.object {
            write!(f, " {o}")?;
        }
        write!(f, ": {}: {}", self.field, self.message)
    }
}

/// Everything read from a folder.
#[derive(Clone, Debug, Default)]
pub struct Manifests {
    pub trunks: Vec<CarrierTrunk>,
    pub ownerships: Vec<NumberOwnership>,
    pub secrets: Secrets,
    /// Where each custom resource came from.
    pub sources: HashMap<ObjectKey, PathBuf>,
    /// Documents refused before compiling.
    pub problems: Vec<FileProblem>,
    /// Documents of other kinds, passed over.
    pub skipped: usize,
}

/// Reads every `*.yaml` / `*.yml` below `dir` (sorted, so results do not depend on the file
/// system's order). Each document is checked against the CRD schema; refused documents are
/// reported and left out.
pub fn load_dir(dir: &Path) -> std::io::Result<Manifests> {
    let mut files = Vec::new();
    collect(dir, &mut files)?;
    files.sort();
    let loader = Loader::new();
    let mut m = Manifests::default();
    for file in files {
        let text = std::fs::read_to_string(&file)?;
        loader.load(&file, &text, &mut m);
    }
    Ok(m)
}

/// Reads YAML text into [`Manifests`] against the CRD schemas, built once.
pub struct Loader {
    trunk_schema: Value,
    own_schema: Value,
}

impl Default for Loader {
    fn default() -> Self {
        Self::new()
    }
}

impl Loader {
    pub fn new() -> Self {
        Self {
            trunk_schema: open_api_schema(&CarrierTrunk::crd()),
            own_schema: open_api_schema(&NumberOwnership::crd()),
        }
    }

    /// Adds the documents of one file's `text` (named `file` in problems) to `m`.
    pub fn load(&self, file: &Path, text: &str, m: &mut Manifests) {
        load_text(file, text, &self.trunk_schema, &self.own_schema, m);
    }
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if name.starts_with('.') {
            continue;
        }
        if path.is_dir() {
            collect(&path, out)?;
        } else if name.ends_with(".yaml") || name.ends_with(".yml") {
            out.push(path);
        }
    }
    Ok(())
}

fn load_text(file: &Path, text: &str, trunk_schema: &Value, own_schema: &Value, m: &mut Manifests) {
    let docs: Vec<Value> = match serde_saphyr::from_str_multiple::<Value, Vec<Value>>(text) {
        Ok(d) => d,
        Err(e) => {
            m.problems.push(FileProblem {
                file: file.to_path_buf(),
                document: 1,
                object: None,
                field: "(yaml)".into(),
                message: format!("not valid YAML: {e}"),
            });
            return;
        }
    };
    for (i, doc) in docs.into_iter().enumerate() {
        if doc.is_null() {
            continue;
        }
        let problem = |m: &mut Manifests, object: Option<String>, field: &str, message: String| {
            m.problems.push(FileProblem {
                file: file.to_path_buf(),
                document: i + 1,
                object,
                field: field.to_string(),
                message,
            })
        };
        let api = doc
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let kind = doc.get("kind").and_then(Value::as_str).unwrap_or_default();
        let meta = doc.get("metadata");
        let name = meta
            .and_then(|x| x.get("name"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let ns = meta
            .and_then(|x| x.get("namespace"))
            .and_then(Value::as_str)
            .unwrap_or("default")
            .to_string();
        let label = Some(format!("{kind} {ns}/{name}"));
        if name.is_empty() && (api.starts_with("trunkgate.io/") || kind == "Secret") {
            problem(m, label, "metadata.name", "is required".into());
            continue;
        }
        match (api, kind) {
            ("trunkgate.io/v1alpha1", "CarrierTrunk")
            | ("trunkgate.io/v1alpha1", "NumberOwnership") => {
                let is_trunk = kind == "CarrierTrunk";
                let findings =
                    validate_document(if is_trunk { trunk_schema } else { own_schema }, &doc);
                if !findings.is_empty() {
                    for (field, msg) in findings {
                        problem(m, label.clone(), &field, msg);
                    }
                    continue;
                }
                let key = ObjectKey {
                    kind: if is_trunk {
                        ObjectKind::CarrierTrunk
                    } else {
                        ObjectKind::NumberOwnership
                    },
                    namespace: ns.clone(),
                    name: name.clone(),
                };
                if m.sources.contains_key(&key) {
                    problem(m, label, "metadata.name", "defined twice".into());
                    continue;
                }
                let parsed = if is_trunk {
                    serde_json::from_value::<CarrierTrunk>(doc).map(|mut t| {
                        t.metadata.namespace = Some(ns.clone());
                        m.trunks.push(t);
                    })
                } else {
                    serde_json::from_value::<NumberOwnership>(doc).map(|mut o| {
                        o.metadata.namespace = Some(ns.clone());
                        m.ownerships.push(o);
                    })
                };
                match parsed {
                    Ok(()) => {
                        m.sources.insert(key, file.to_path_buf());
                    }
                    Err(e) => problem(m, label, "spec", e.to_string()),
                }
            }
            (a, _) if a.starts_with("trunkgate.io/") => {
                problem(
                    m,
                    label,
                    "apiVersion",
                    format!(
                        "unknown {a} {kind}; this version knows trunkgate.io/v1alpha1 CarrierTrunk and NumberOwnership"
                    ),
                );
            }
            ("v1", "Secret") => match secret_data(&doc) {
                Ok(data) => {
                    m.secrets.insert((ns, name), data);
                }
                Err(msg) => problem(m, label, "data", msg),
            },
            _ => m.skipped += 1,
        }
    }
}

fn secret_data(doc: &Value) -> Result<BTreeMap<String, Vec<u8>>, String> {
    use base64::Engine as _;
    let mut out = BTreeMap::new();
    if let Some(data) = doc.get("data").and_then(Value::as_object) {
        for (k, v) in data {
            let s = v
                .as_str()
                .ok_or_else(|| format!("data.{k} must be a base64 string"))?;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(s.trim())
                .map_err(|_| {
                    format!("data.{k} is not valid base64 (use stringData for plain text)")
                })?;
            out.insert(k.clone(), bytes);
        }
    }
    if let Some(data) = doc.get("stringData").and_then(Value::as_object) {
        for (k, v) in data {
            let s = v
                .as_str()
                .ok_or_else(|| format!("stringData.{k} must be a string"))?;
            out.insert(k.clone(), s.as_bytes().to_vec());
        }
    }
    Ok(out)
}
