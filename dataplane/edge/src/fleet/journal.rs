//! Where calls' checkpoints are kept so that a restarted edge finds them: the shared store (a
//! Redis hash per edge identity, written by the store task in batches) or, standalone, an
//! append-only file in `--state-dir` (a writer thread batches lines and fsyncs every
//! [`SYNC_EVERY`]; the file is rewritten with only the live calls when it has grown four times
//! past them). The worker never waits for either.

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc as std_mpsc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How often the file journal is synced to disk (and so the most a crash loses of it).
pub const SYNC_EVERY: Duration = Duration::from_millis(50);

/// One change to the journal: a call's checkpoint, or its end (`json` None).
#[derive(Debug)]
pub struct Entry {
    pub key: String,
    pub json: Option<String>,
}

/// A line of the file journal.
#[derive(Serialize, Deserialize)]
struct Line {
    key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    call: Option<serde_json::Value>,
}

/// One line of the journal: a call's checkpoint, or its end (`json` None).
fn line(key: &str, json: Option<&str>) -> String {
    let key = serde_json::Value::from(key);
    match json {
        Some(json) => format!("{{\"key\":{key},\"call\":{json}}}\n"),
        None => format!("{{\"key\":{key}}}\n"),
    }
}

/// The calls a file journal holds (the last checkpoint of each call not ended).
pub fn read_file(path: &Path) -> std::io::Result<HashMap<String, String>> {
    let mut live = HashMap::new();
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(live),
        Err(e) => return Err(e),
    };
    for line in std::io::BufReader::new(file).lines() {
        let line = line?;
        // A line cut short by the crash is the only one that may not parse: skipped.
        let Ok(l) = serde_json::from_str::<Line>(&line) else {
            continue;
        };
        match l.call {
            Some(c) => {
                live.insert(l.key, c.to_string());
            }
            None => {
                live.remove(&l.key);
            }
        }
    }
    Ok(live)
}

/// Rewrites the journal at `path` with only `live` (atomically: a new file renamed over).
fn compact(path: &Path, live: &HashMap<String, String>) -> std::io::Result<u64> {
    let tmp = path.with_extension("jsonl.tmp");
    let mut out = std::io::BufWriter::new(private(&tmp, false)?);
    let mut bytes = 0u64;
    for (key, json) in live {
        let line = line(key, Some(json));
        bytes += line.len() as u64;
        out.write_all(line.as_bytes())?;
    }
    let file = out.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(bytes)
}

/// The file journal in `dir`: the checkpoints it held when the process started, and the sender the
/// workers write to. The file is compacted first.
pub fn open_file(dir: &Path) -> std::io::Result<(Vec<String>, std_mpsc::Sender<Entry>)> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join("calls.jsonl");
    let live = read_file(&path)?;
    let size = compact(&path, &live)?;
    let records = live.values().cloned().collect();
    let (tx, rx) = std_mpsc::channel::<Entry>();
    std::thread::Builder::new()
        .name("trunkgate-journal".into())
        .spawn(move || writer(path, live, size, rx))?;
    Ok((records, tx))
}

/// The journal holds calls' SRTP keys: readable by the edge's user only (0600).
fn private(p: &Path, append: bool) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .append(append)
        .truncate(!append)
        .create(true)
        .mode(0o600)
        .open(p)
}

fn writer(
    path: PathBuf,
    mut live: HashMap<String, String>,
    mut size: u64,
    rx: std_mpsc::Receiver<Entry>,
) {
    let open = |p: &Path| private(p, true);
    let mut file = match open(&path) {
        Ok(f) => std::io::BufWriter::new(f),
        Err(e) => {
            tracing::error!(error = %e, path = %path.display(), "call journal: cannot write; calls will not survive a restart");
            return;
        }
    };
    let mut live_bytes: u64 = live.values().map(|v| v.len() as u64 + 32).sum();
    loop {
        // Block for the first entry, then take what else came within the sync period.
        let Ok(first) = rx.recv() else {
            let _ = file.flush();
            return;
        };
        let deadline = std::time::Instant::now() + SYNC_EVERY;
        let mut next = Some(first);
        while let Some(e) = next.take() {
            let line = line(&e.key, e.json.as_deref());
            size += line.len() as u64;
            if file.write_all(line.as_bytes()).is_err() {
                tracing::warn!("call journal: a write failed");
            }
            match e.json {
                Some(json) => {
                    live_bytes += json.len() as u64 + 32;
                    if let Some(old) = live.insert(e.key, json) {
                        live_bytes = live_bytes.saturating_sub(old.len() as u64 + 32);
                    }
                }
                None => {
                    if let Some(old) = live.remove(&e.key) {
                        live_bytes = live_bytes.saturating_sub(old.len() as u64 + 32);
                    }
                }
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            next = rx.recv_timeout(left).ok();
        }
        let _ = file.flush();
        let _ = file.get_ref().sync_data();
        if size > 4 * live_bytes + (1 << 20) {
            match compact(&path, &live).and_then(|n| Ok((n, open(&path)?))) {
                Ok((n, f)) => {
                    size = n;
                    file = std::io::BufWriter::new(f);
                }
                Err(e) => tracing::warn!(error = %e, "call journal: compaction failed"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_journal_keeps_the_last_checkpoint_of_each_live_call() {
        let dir = std::env::temp_dir().join(format!("tg-journal-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("calls.jsonl");
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(
            &path,
            concat!(
                "{\"key\":\"a\",\"call\":{\"v\":1}}\n",
                "{\"key\":\"b\",\"call\":{\"v\":1}}\n",
                "{\"key\":\"a\",\"call\":{\"v\":2}}\n",
                "{\"key\":\"b\"}\n",
                "{\"key\":\"c\",\"ca"
            ),
        )
        .expect("write");
        let live = read_file(&path).expect("read");
        assert_eq!(live.len(), 1, "b ended, c was cut short by the crash");
        assert_eq!(live["a"], "{\"v\":2}");
        let n = compact(&path, &live).expect("compact");
        assert_eq!(read_file(&path).expect("read"), live);
        assert_eq!(n, std::fs::metadata(&path).expect("meta").len());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
