//! `trunkgate-operator check DIR`: what a GitOps repository's CI runs before the operator ever
//! sees the files. Schema (with CEL rules) and compile() problems, per object; exit 1 on any.

use std::io::Write;
use std::path::Path;

use trunkgate_crds::compile_with_refused;
use trunkgate_crds::files::load_dir;
use trunkgate_crds::snapshot::{DEFAULT_MAX_PARTS, MAX_SNAPSHOT_BYTES, SnapshotError};

/// Checks a folder and writes the findings; returns whether everything is valid. With
/// `snapshot_out`, the snapshot the operator would publish (the Secret's gzip JSON) is written
/// there, for a GitOps pipeline to keep or an edge to be started on.
pub fn check(
    dir: &Path,
    out: &mut impl Write,
    snapshot_out: Option<&Path>,
) -> std::io::Result<bool> {
    let m = load_dir(dir)?;
    let mut problems = 0usize;
    for p in &m.problems {
        writeln!(out, "error: {p}")?;
        problems += 1;
    }
    let compiled = compile_with_refused(&m.trunks, &m.ownerships, &m.refused, &m.secrets, None);
    let refused: std::collections::HashSet<_> = m.refused.iter().map(|r| &r.key).collect();
    for r in compiled.problems() {
        let file = m
            .sources
            .get(&r.key)
            .map(|f| f.display().to_string())
            .unwrap_or_else(|| "?".into());
        for p in &r.problems {
            if refused.contains(&r.key) {
                // Already written above, with its document.
                continue;
            }
            writeln!(
                out,
                "error: {file} {}: {}: {} ({})",
                r.key,
                p.field,
                p.message,
                p.reason.as_str()
            )?;
            problems += 1;
        }
    }
    for r in &compiled.reports {
        let file = m
            .sources
            .get(&r.key)
            .map(|f| f.display().to_string())
            .unwrap_or_else(|| "?".into());
        for w in &r.warnings {
            writeln!(out, "warning: {file} {}: {w}", r.key)?;
        }
        for n in &r.notes {
            writeln!(out, "note: {}: {n}", r.key)?;
        }
        if r.verified == Some(false) && r.is_ready() {
            writeln!(
                out,
                "note: {}: Platform numbers without verification are not presented as caller ID",
                r.key
            )?;
        }
    }
    let encoded = compiled.config.encode();
    if let (Some(path), Ok(b)) = (snapshot_out, &encoded) {
        std::fs::write(path, b)?;
    }
    let parts = encoded.and_then(|b| {
        let parts = b.len().div_ceil(MAX_SNAPSHOT_BYTES).max(1);
        if parts > DEFAULT_MAX_PARTS {
            Err(SnapshotError::TooLarge {
                bytes: b.len(),
                part: MAX_SNAPSHOT_BYTES,
                max_parts: DEFAULT_MAX_PARTS,
            })
        } else {
            Ok((b.len(), parts))
        }
    });
    let size = match &parts {
        Ok((b, 1)) => format!("{b} bytes compressed"),
        Ok((b, n)) => format!("{b} bytes compressed, in {n} Secrets"),
        Err(e) => {
            problems += 1;
            format!("NOT PUBLISHABLE: {e}")
        }
    };
    writeln!(
        out,
        "snapshot {}: {} trunks, {} number ownerships, {} numbers, {} Secrets read, {size}; {} problem(s)",
        compiled.config.version,
        compiled.config.trunks.len(),
        compiled.config.ownerships.len(),
        compiled.number_count(),
        m.secrets.len(),
        problems
    )?;
    Ok(problems == 0)
}
