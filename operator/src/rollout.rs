//! Live status: which edge pods run which snapshot. The operator lists the edge pods (one label
//! selector, its own namespace) and asks each pod's admin endpoint for `/snapshot`; objects of the
//! current snapshot then get `Programmed` with "N of M edge pods".

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::ListParams;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use trunkgate_crds::trunk::RegistrationStatus;

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
    /// Per probed trunk, over the pods that run `version`: the fewest targets any pod finds
    /// answering its probes, and how many targets there are.
    pub targets: BTreeMap<String, (u32, u32)>,
    /// Per registration trunk: the registration as the pod that holds it reports it.
    pub registrations: BTreeMap<String, RegistrationStatus>,
    /// Pods that cannot reach the fleet's state store (each enforces its share of the limits).
    pub store_fallback: u32,
    /// Per trunk tried lately, over the pods that run `version`: its targets' windows (the
    /// fleet's when the pods share a store, else the pods' summed) and demoted targets.
    pub quality: BTreeMap<String, QualityCounts>,
}

/// A trunk's quality window as `/snapshot` reports it: the edge's counters in their order
/// (attempts, answered, callee refusals, failed, PDD ms and samples, talk ms and samples, MOS
/// thousandths and samples) and its demoted targets.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QualityCounts {
    pub counts: [u64; trunkgate_crds::quality::Counts::FIELDS],
    pub demoted: u32,
}

/// What one edge pod's `/snapshot` says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodSnapshot {
    pub version: String,
    /// Per probed trunk: targets answering, targets.
    pub targets: BTreeMap<String, (u32, u32)>,
    /// Per registration trunk this pod holds: where its registration stands.
    pub registrations: BTreeMap<String, RegistrationStatus>,
    /// The pod cannot reach the fleet's state store.
    pub store_fallback: bool,
    /// The pod shares a store with the fleet (its quality figures are the fleet's).
    pub store_shared: bool,
    pub quality: BTreeMap<String, QualityCounts>,
}

impl PodSnapshot {
    /// Reads a `/snapshot` body.
    pub fn parse(body: &str) -> Option<Self> {
        let v: serde_json::Value = serde_json::from_str(body.trim()).ok()?;
        let version = v.get("version")?.as_str()?.to_string();
        let mut targets = BTreeMap::new();
        if let Some(map) = v.get("targets").and_then(|t| t.as_object()) {
            for (id, t) in map {
                let n = |k: &str| t.get(k).and_then(|x| x.as_u64()).map(|x| x as u32);
                if let (Some(h), Some(total)) = (n("healthy"), n("total")) {
                    targets.insert(id.clone(), (h, total));
                }
            }
        }
        let mut registrations = BTreeMap::new();
        if let Some(map) = v.get("registrations").and_then(|t| t.as_object()) {
            for (id, r) in map {
                let text = |k: &str| r.get(k).and_then(|x| x.as_str()).map(str::to_string);
                registrations.insert(
                    id.clone(),
                    RegistrationStatus {
                        registered: r
                            .get("registered")
                            .and_then(|x| x.as_bool())
                            .unwrap_or(false),
                        expires: text("expires"),
                        registrant: text("registrant"),
                        last_error: text("lastError"),
                    },
                );
            }
        }
        let store_fallback = v
            .pointer("/stateStore/fallback")
            .and_then(|f| f.as_bool())
            .unwrap_or(false);
        let store_shared = v
            .pointer("/stateStore/shared")
            .and_then(|f| f.as_bool())
            .unwrap_or(false);
        let mut quality = BTreeMap::new();
        if let Some(map) = v.get("quality").and_then(|q| q.as_object()) {
            for (id, q) in map {
                let Some(list) = q.get("counts").and_then(|c| c.as_array()) else {
                    continue;
                };
                let mut counts = [0u64; trunkgate_crds::quality::Counts::FIELDS];
                for (slot, n) in counts.iter_mut().zip(list) {
                    *slot = n.as_u64().unwrap_or(0);
                }
                let demoted = q.get("demoted").and_then(|d| d.as_u64()).unwrap_or(0);
                quality.insert(
                    id.clone(),
                    QualityCounts {
                        counts,
                        demoted: u32::try_from(demoted).unwrap_or(u32::MAX),
                    },
                );
            }
        }
        Some(Self {
            version,
            targets,
            registrations,
            store_fallback,
            store_shared,
            quality,
        })
    }
}

/// `/snapshot` of one edge pod: its running version, or None when it does not answer.
pub async fn pod_version(addr: SocketAddr, timeout: Duration) -> Option<String> {
    pod_snapshot(addr, timeout).await.map(|s| s.version)
}

/// `/snapshot` of one edge pod, or None when it does not answer.
pub async fn pod_snapshot(addr: SocketAddr, timeout: Duration) -> Option<PodSnapshot> {
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
        PodSnapshot::parse(body)
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
                match pod_snapshot(SocketAddr::new(ip, admin_port), Duration::from_secs(2)).await {
                    Some(s) if s.version == version => {
                        r.programmed += 1;
                        r.add_pod_targets(&s.targets);
                        r.add_pod_registrations(s.registrations);
                        r.store_fallback += u32::from(s.store_fallback);
                        r.add_pod_quality(&s.quality, s.store_shared && !s.store_fallback);
                    }
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
    /// Folds one pod's target health in: the fewest answering targets wins.
    pub fn add_pod_targets(&mut self, pod: &BTreeMap<String, (u32, u32)>) {
        for (id, (up, total)) in pod {
            self.targets
                .entry(id.clone())
                .and_modify(|(u, t)| {
                    *u = (*u).min(*up);
                    *t = (*t).max(*total);
                })
                .or_insert((*up, *total));
        }
    }

    /// Folds one pod's quality windows in: a pod that shares the fleet's store reports the
    /// fleet's figures (the fullest report wins); pods on their own add up.
    pub fn add_pod_quality(&mut self, pod: &BTreeMap<String, QualityCounts>, fleet: bool) {
        for (id, q) in pod {
            let entry = self.quality.entry(id.clone()).or_default();
            if fleet {
                if q.counts[0] >= entry.counts[0] {
                    *entry = q.clone();
                }
            } else {
                for (sum, n) in entry.counts.iter_mut().zip(q.counts) {
                    *sum = sum.saturating_add(n);
                }
                entry.demoted = entry.demoted.max(q.demoted);
            }
        }
    }

    /// Folds one pod's registrations in: a pod that holds a binding wins over one that failed.
    pub fn add_pod_registrations(&mut self, pod: BTreeMap<String, RegistrationStatus>) {
        for (id, r) in pod {
            let keep = self
                .registrations
                .get(&id)
                .is_some_and(|old| old.registered && !r.registered);
            if !keep {
                self.registrations.insert(id, r);
            }
        }
    }

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
        if self.store_fallback > 0 {
            msg.push_str(&format!(
                " {} cannot reach the state store: each enforces its share of the trunk limits (the limit divided by the edges it last saw) until the store answers.",
                self.store_fallback
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
    fn a_pods_registrations_are_read_from_its_snapshot() {
        let s = PodSnapshot::parse(
            r#"{"version":"v1","registrations":{"acme/t":{"registered":true,"expires":"2026-12-07T13:00:00Z","registrant":"edge-0"},"acme/u":{"registered":false,"registrant":"edge-0","lastError":"403 Forbidden"}}}"#,
        )
        .expect("parsed");
        assert!(s.registrations["acme/t"].registered);
        assert_eq!(
            s.registrations["acme/t"].registrant.as_deref(),
            Some("edge-0")
        );
        assert_eq!(
            s.registrations["acme/u"].last_error.as_deref(),
            Some("403 Forbidden")
        );
        let old = PodSnapshot::parse(r#"{"version":"v1"}"#).expect("an older edge");
        assert!(old.registrations.is_empty());
        assert!(!old.store_fallback);
        let cut_off =
            PodSnapshot::parse(r#"{"version":"v1","stateStore":{"shared":true,"fallback":true}}"#)
                .expect("parsed");
        assert!(cut_off.store_fallback);
        let r = Rollout {
            version: "v1".into(),
            programmed: 2,
            total: 2,
            store_fallback: 1,
            ..Rollout::default()
        };
        let (status, _, msg) = r.condition();
        assert_eq!(status, "True");
        assert!(msg.contains("1 cannot reach the state store"), "{msg}");
    }

    #[test]
    fn condition_table() {
        let r = |p, t, u| Rollout {
            version: "v1".into(),
            programmed: p,
            total: t,
            unreachable: u,
            targets: BTreeMap::new(),
            registrations: BTreeMap::new(),
            store_fallback: 0,
            quality: BTreeMap::new(),
        };
        assert_eq!(r(0, 0, 0).condition().0, "Unknown");
        assert_eq!(r(3, 3, 0).condition().0, "True");
        assert!(r(3, 3, 0).condition().2.contains("3 of 3"));
        let (s, reason, msg) = r(1, 3, 1).condition();
        assert_eq!((s, reason), ("False", "RollingOut"));
        assert!(msg.contains("1 of 3") && msg.contains("1 did not answer"));
    }

    #[test]
    fn pod_snapshot_and_the_fewest_answering_targets() {
        let s = PodSnapshot::parse(
            r#"{"version":"v1","targets":{"acme/t":{"healthy":1,"total":2}},"trunks":1}"#,
        )
        .expect("parses");
        assert_eq!(s.version, "v1");
        let mut r = Rollout::default();
        r.add_pod_targets(&s.targets);
        r.add_pod_targets(&BTreeMap::from([("acme/t".to_string(), (2, 2))]));
        assert_eq!(r.targets["acme/t"], (1, 2));
        // Quality windows: a pod on its own adds to the others; a pod sharing the fleet's
        // store reports the fleet's figures, which are not added twice.
        let counts = r#"{"version":"v1","stateStore":{"shared":SHARED},"quality":{"acme/t":{"counts":[10,6,1,2,9000,9,600000,6,25200,6],"demoted":1}}}"#;
        let pod = |shared: &str| {
            PodSnapshot::parse(&counts.replace("SHARED", shared)).expect("a snapshot")
        };
        let (alone, fleet) = (pod("false"), pod("true"));
        assert!(fleet.store_shared && !alone.store_shared);
        let mut sum = Rollout::default();
        sum.add_pod_quality(&alone.quality, false);
        sum.add_pod_quality(&alone.quality, false);
        assert_eq!(sum.quality["acme/t"].counts[0], 20);
        let mut one = Rollout::default();
        one.add_pod_quality(&fleet.quality, true);
        one.add_pod_quality(&fleet.quality, true);
        assert_eq!(one.quality["acme/t"].counts[0], 10);
        assert_eq!(one.quality["acme/t"].demoted, 1);
        assert_eq!(
            PodSnapshot::parse(r#"{"version":"v2"}"#).map(|s| s.targets.len()),
            Some(0)
        );
    }
}
