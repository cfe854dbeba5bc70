//! Reads CarrierTrunk, NumberOwnership and Secret manifests from a folder of YAML files, as a
//! GitOps repository or the edge's standalone mode holds them.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::compile::Secrets;
use crate::report::{ObjectKey, ObjectKind, Problem, Reason, Refused};
use crate::schema::{schema_of, validate_document};
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
    /// CarrierTrunks and NumberOwnerships refused by the schema, by name: compile() reports
    /// them and keeps their last good version, as it does for objects it refuses itself.
    pub refused: Vec<Refused>,
    /// Files that are not valid YAML: nothing in them could be read.
    pub unreadable: Vec<PathBuf>,
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
            trunk_schema: schema_of("CarrierTrunk"),
            own_schema: schema_of("NumberOwnership"),
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
            let (document, message) = yaml_error(text, &e);
            m.problems.push(FileProblem {
                file: file.to_path_buf(),
                document,
                object: None,
                field: "(yaml)".into(),
                message,
            });
            m.unreadable.push(file.to_path_buf());
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
                let key = ObjectKey {
                    kind: if is_trunk {
                        ObjectKind::CarrierTrunk
                    } else {
                        ObjectKind::NumberOwnership
                    },
                    namespace: ns.clone(),
                    name: name.clone(),
                };
                if let Some(first) = m.sources.get(&key) {
                    // Name the other place, so the user sees which of the two to remove.
                    let text = format!(
                        "defined twice: first in {}; this one is ignored",
                        first.display()
                    );
                    problem(m, label, "metadata.name", text);
                    continue;
                }
                if !findings.is_empty() {
                    let mut problems = Vec::with_capacity(findings.len());
                    for (field, msg) in findings {
                        problem(m, label.clone(), &field, msg.clone());
                        problems.push(Problem {
                            field,
                            reason: Reason::Invalid,
                            message: msg,
                        });
                    }
                    m.sources.insert(key.clone(), file.to_path_buf());
                    m.refused.push(Refused { key, problems });
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

/// Which document of `text` a parse error is in, and a message in our words (the parser's own
/// hints name its options, which a user cannot set).
fn yaml_error(text: &str, e: &serde_saphyr::Error) -> (usize, String) {
    let e = e.without_snippet();
    let at = e.location().map(|l| (l.line(), l.column()));
    let what = match e {
        serde_saphyr::Error::DuplicateMappingKey { key: Some(k), .. } => {
            format!("the key '{k}' appears twice in one mapping; keep one")
        }
        serde_saphyr::Error::DuplicateMappingKey { key: None, .. } => {
            "a key appears twice in one mapping; keep one".to_string()
        }
        other => other.to_string(),
    };
    let Some((line, column)) = at.filter(|(l, _)| *l > 0) else {
        return (1, format!("not valid YAML: {what}"));
    };
    (
        document_at(text, line),
        format!("not valid YAML at line {line}, column {column}: {what}"),
    )
}

/// The 1-based document that 1-based `line` falls in (documents start after `---` lines).
fn document_at(text: &str, line: u64) -> usize {
    let mut document = 1;
    let mut seen_content = false;
    for (i, l) in text.lines().enumerate() {
        if (i as u64) + 1 >= line {
            break;
        }
        if l.starts_with("---") {
            if seen_content {
                document += 1;
            }
            seen_content = false;
        } else if !l.trim().is_empty() && !l.trim_start().starts_with('#') {
            seen_content = true;
        }
    }
    document
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn duplicate_key_names_the_key_the_line_and_the_right_document() {
        let text = "apiVersion: v1\nkind: Secret\nmetadata: {name: a}\n---\n# second\napiVersion: trunkgate.io/v1alpha1\nkind: NumberOwnership\nmetadata: {name: n}\nspec:\n  kind: Byoc\n  kind: Byoc\n";
        let mut m = Manifests::default();
        Loader::new().load(Path::new("f.yaml"), text, &mut m);
        let p = &m.problems[0];
        assert_eq!(p.document, 2, "{p}");
        assert!(
            p.message.contains("'kind' appears twice") && p.message.contains("line 11"),
            "{p}"
        );
        assert!(!p.message.contains("DuplicateKeyPolicy"), "{p}");
        assert_eq!(m.unreadable, vec![PathBuf::from("f.yaml")]);
    }

    #[test]
    fn schema_refused_objects_are_kept_by_name() {
        let text = "apiVersion: trunkgate.io/v1alpha1\nkind: CarrierTrunk\nmetadata: {name: t, namespace: a}\nspec:\n  inbound: {allowedCidrs: [\"10.0.0.0/8\", \"10.0.0.300/8\"], destination: \"sip:p\"}\n";
        let mut m = Manifests::default();
        Loader::new().load(Path::new("f.yaml"), text, &mut m);
        assert!(m.trunks.is_empty());
        assert_eq!(m.refused.len(), 1);
        let r = &m.refused[0];
        assert_eq!(r.key.id(), "a/t");
        assert_eq!(r.problems[0].field, "spec.inbound.allowedCidrs[1]");
        assert!(r.problems[0].message.contains("'10.0.0.300/8'"));
    }
}
