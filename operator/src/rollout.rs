//! Live status: which edge pods run which snapshot. The operator lists the edge pods (one label
//! selector, its own namespace) and asks each pod's admin endpoint for `/snapshot`; objects of the
//! current snapshot then get `Programmed` with "N of M edge pods".

use std::net::SocketAddr;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::ListParams;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How far the current snapshot has reached.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rollout {
    /// The version the counts are about.
    pub version: String,
    /// Edge pods that answered with this version.
    pub programmed: u32,
    /// Running edge pods.
    pub total: u32,
    /// Pods that did not answer (unreachable or not ready yet).
    pub unreachable: u32,
}

/// `/snapshot` of one edge pod: its running version, or None when it does not answer.
pub async fn pod_version(addr: SocketAddr, timeout: Duration) -> Option<String> {
    let fetch = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        s.write_all(b"GET /snapshot HTTP/1.0\r\nHost: edge\r\n\r\n")
            .await
            .ok()?;
        let mut buf = Vec::with_capacity(512);
        s.take(64 * 1024).read_to_end(&mut buf).await.ok()?;
        let text = String::from_utf8_lossy(&buf);
        let (head, body) = text.split_once("\r\n\r\n")?;
        if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
            return None;
        }
        let v: serde_json::Value = serde_json::from_str(body.trim()).ok()?;
        v.get("version")?.as_str().map(str::to_string)
    };
    tokio::time::timeout(timeout, fetch).await.ok().flatten()
}

/// Lists the edge pods and asks each for its version.
pub async fn observe(
    pods: &Api<Pod>,
    selector: &str,
    admin_port: u16,
    version: &str,
) -> Result<Rollout, kube::Error> {
    let list = pods.list(&ListParams::default().labels(selector)).await?;
    let mut r = Rollout {
        version: version.to_string(),
        ..Rollout::default()
    };
    for p in list.items {
        let status = p.status.unwrap_or_default();
        if status.phase.as_deref() != Some("Running") || p.metadata.deletion_timestamp.is_some() {
            continue;
        }
        r.total += 1;
        let ip = status.pod_ip.and_then(|ip| ip.parse().ok());
        match ip {
            Some(ip) => {
                match pod_version(SocketAddr::new(ip, admin_port), Duration::from_secs(2)).await {
                    Some(v) if v == version => r.programmed += 1,
                    Some(_) => {}
                    None => r.unreachable += 1,
                }
            }
            None => r.unreachable += 1,
        }
    }
    Ok(r)
}

impl Rollout {
    /// The `Programmed` condition for an object that is part of `version`.
    pub fn condition(&self) -> (&'static str, &'static str, String) {
        if self.total == 0 {
            return (
                "Unknown",
                "NoEdgePods",
                "No running edge pod was found yet.".to_string(),
            );
        }
        let mut msg = format!(
            "Snapshot {} runs on {} of {} edge pods.",
            self.version, self.programmed, self.total
        );
        if self.unreachable > 0 {
            msg.push_str(&format!(
                " {} did not answer on their admin port.",
                self.unreachable
            ));
        }
        if self.programmed == self.total {
            ("True", "Programmed", msg)
        } else {
            ("False", "RollingOut", msg)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn condition_table() {
        let r = |p, t, u| Rollout {
            version: "v1".into(),
            programmed: p,
            total: t,
            unreachable: u,
        };
        assert_eq!(r(0, 0, 0).condition().0, "Unknown");
        assert_eq!(r(3, 3, 0).condition().0, "True");
        assert!(r(3, 3, 0).condition().2.contains("3 of 3"));
        let (s, reason, msg) = r(1, 3, 1).condition();
        assert_eq!((s, reason), ("False", "RollingOut"));
        assert!(msg.contains("1 of 3") && msg.contains("1 did not answer"));
    }
}
