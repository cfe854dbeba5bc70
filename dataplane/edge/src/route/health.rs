//! OPTIONS health probes of carrier targets (RFC 3261 §11) for trunks with
//! `outbound.healthCheck`.
//!
//! Each trunk is probed by one worker (trunk index modulo the worker count), every
//! `intervalSeconds` per target. Any final answer but 503 means a SIP server is there (a carrier
//! may well answer 403 or 405 to OPTIONS); no answer within `--failover-seconds`, a transport
//! error, a failed DNS lookup or 503 (RFC 3261 §21.5.4) is a failure. After
//! `failureThreshold` failures in a row a target is down: outbound calls try it only after every
//! target that is up, whatever its priority, so a dead carrier server no longer costs each call
//! a failover timeout. One answer brings it back. The state is a few atomics that every worker
//! reads without a lock and that survive reloads for as long as the trunk keeps the target URI.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crate::route::admission::hop_of;
use crate::sip::message::{Builder, via};

/// How often a worker looks for targets whose probe is due.
pub const TICK: Duration = Duration::from_secs(1);

pub use crate::config::health::TargetHealth;

/// Milliseconds since the process first asked.
pub fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// Seconds on the quality windows' clock (this process's, [`now_ms`]).
pub fn quality_clock() -> u64 {
    now_ms() / 1000
}

/// One probe on its way.
#[derive(Debug)]
pub struct Probe {
    pub trunk: u32,
    pub trunk_id: String,
    pub uri: String,
    pub threshold: u32,
    pub health: Arc<TargetHealth>,
    /// The trunk's outbound credentials, for a carrier that challenges OPTIONS.
    pub auth: Option<trunkgate_crds::digest::DigestCredentials>,
}

/// Which worker probes trunk `index`.
pub fn prober_of(index: usize, workers: usize) -> usize {
    index % workers.max(1)
}

/// The prober of one worker: which trunks it probes (one worker each: [`prober_of`]), which
/// probes are due, what each sends, and what each result does to its target's health. Sans
/// I/O: the worker sends, resolves and times out for it.
#[derive(Debug, Clone, Copy)]
pub struct Prober {
    index: usize,
    workers: usize,
}

/// A probe to start: to an address, or to a name to look up first (RFC 3263).
#[derive(Debug)]
pub struct Due {
    pub probe: Arc<Probe>,
    pub hop: crate::route::Hop,
}

/// The OPTIONS of one probe (RFC 3261 §11.1).
#[derive(Debug)]
pub struct ProbeRequest {
    pub bytes: Vec<u8>,
    pub ruri: String,
    /// The From and Call-ID lines, for a challenged probe sent again.
    pub ident: String,
}

impl Prober {
    /// Worker `index` of `workers`.
    pub fn new(index: usize, workers: usize) -> Self {
        Prober { index, workers }
    }

    /// The probes due at `now_ms` (milliseconds since the process started) on the trunks this
    /// worker probes; each is claimed, so no other call of `due` starts it again before its
    /// result and its interval.
    pub fn due(&self, rt: &crate::config::Runtime, now_ms: u64) -> Vec<Due> {
        let mut due = Vec::new();
        for (i, trunk) in rt.config.trunks.iter().enumerate() {
            let Some(out) = trunk.outbound.as_ref() else {
                continue;
            };
            if out.health_interval_seconds == 0 || prober_of(i, self.workers) != self.index {
                continue;
            }
            let interval_ms = u64::from(out.health_interval_seconds) * 1000;
            for (target, health) in out.targets.iter().zip(rt.health(i as u32)) {
                if !health.claim(now_ms, interval_ms) {
                    continue;
                }
                due.push(Due {
                    probe: Arc::new(Probe {
                        trunk: i as u32,
                        trunk_id: trunk.id.clone(),
                        uri: target.uri.clone(),
                        threshold: out.health_failure_threshold,
                        health: health.clone(),
                        auth: out.auth.clone(),
                    }),
                    hop: hop_of(target),
                });
            }
        }
        due
    }

    /// The OPTIONS to `uri_host` over `transport`, sent from `hostport` with our `branch`,
    /// `tag` and `call_id`.
    pub fn request(
        uri_host: &str,
        transport: &str,
        hostport: &str,
        branch: &str,
        tag: &str,
        call_id: &str,
    ) -> ProbeRequest {
        let ruri = format!("sip:{uri_host}");
        let ident = format!("From: <sip:trunkgate@{hostport}>;tag={tag}\r\nCall-ID: {call_id}\r\n");
        let bytes = Builder::request_via("OPTIONS", &ruri, &via(transport, hostport, branch))
            .ids(&ident, &format!("<{ruri}>"), 1, "OPTIONS")
            .header("Accept", "application/sdp")
            .body(&[]);
        ProbeRequest { bytes, ruri, ident }
    }

    /// What a final answer `code` to a probe says: None for a provisional answer, else whether
    /// the target is alive and, if not, why.
    pub fn answered(code: u16, reason: &str) -> Option<(bool, String)> {
        answer_alive(code).map(|ok| {
            (
                ok,
                if ok {
                    String::new()
                } else {
                    format!("answered {code} {reason}")
                },
            )
        })
    }

    /// Counts a probe's result in `metrics` and publishes a change of its target's state (a
    /// log line, the trunk's healthy-target gauge while `rt` still has the trunk).
    pub fn done(
        probe: &Probe,
        ok: bool,
        why: &str,
        rt: &crate::config::Runtime,
        m: &crate::metrics::Metrics,
    ) {
        m.target_probes
            .with_label_values(&[probe.trunk_id.as_str(), if ok { "ok" } else { "failed" }])
            .inc();
        let Some(up) = probe.health.record(ok, probe.threshold) else {
            if !ok {
                tracing::debug!(trunk = %probe.trunk_id, target = %probe.uri, why, "probe failed");
            }
            return;
        };
        if up {
            tracing::info!(trunk = %probe.trunk_id, target = %probe.uri, "carrier target answers OPTIONS again: back in rotation");
        } else {
            tracing::warn!(trunk = %probe.trunk_id, target = %probe.uri, why, failures = probe.threshold, "carrier target down: tried only after the targets that are up");
        }
        if rt
            .config
            .trunks
            .get(probe.trunk as usize)
            .is_some_and(|t| t.id == probe.trunk_id)
        {
            let healthy = rt.health(probe.trunk).iter().filter(|h| h.is_up()).count();
            m.targets_healthy
                .with_label_values(&[probe.trunk_id.as_str()])
                .set(healthy as i64);
        }
    }
}

/// What an answer to a probe says: nothing yet (1xx), alive (any other final answer: a SIP
/// server is there, even one that refuses OPTIONS with 403 or 405), or down (503, RFC 3261
/// §21.5.4).
fn answer_alive(code: u16) -> Option<bool> {
    match code {
        0..=199 => None,
        503 => Some(false),
        _ => Some(true),
    }
}

/// The host of a URI's `host[:port]` (an IPv6 reference keeps its brackets off).
pub fn host_of_uri_host(uri_host: &str) -> &str {
    if let Some(rest) = uri_host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match uri_host.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => uri_host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three trunks, two of them probed every 30 s (three targets in all), on `workers` workers.
    fn runtime() -> crate::config::Runtime {
        use trunkgate_crds::{CarrierTrunk, Secrets, compile};
        let probed = |name: &str, targets: &[&str]| {
            let mut t = CarrierTrunk::test("acme", name).with_targets(targets);
            if let Some(o) = t.spec.outbound.as_mut() {
                o.health_check = Some(
                    serde_json::from_value(
                        serde_json::json!({"intervalSeconds": 30, "failureThreshold": 2}),
                    )
                    .expect("health check"),
                );
            }
            t
        };
        let trunks = [
            probed("a", &["sip:192.0.2.10:5060", "sip:carrier.example"]),
            CarrierTrunk::test("acme", "b").with_targets(&["sip:192.0.2.20"]),
            probed("c", &["sip:192.0.2.30;transport=tcp"]),
        ];
        let c = compile(&trunks, &[], &Secrets::default(), None);
        crate::config::Runtime::build(c.config, None, &crate::metrics::Metrics::new())
    }

    #[test]
    fn a_worker_probes_only_its_trunks_with_a_health_check_once_per_interval() {
        let rt = runtime();
        let uris = |due: &[Due]| due.iter().map(|d| d.probe.uri.clone()).collect::<Vec<_>>();
        // Trunk 0 (a) goes to worker 0 of 2, trunk 2 (c) too; trunk 1 (b) is not probed.
        assert!(Prober::new(1, 2).due(&rt, 1_000).is_empty());
        let p = Prober::new(0, 2);
        let due = p.due(&rt, 1_000);
        assert_eq!(
            uris(&due),
            [
                "sip:192.0.2.10:5060",
                "sip:carrier.example",
                "sip:192.0.2.30;transport=tcp"
            ]
        );
        assert!(due[0].hop.addr.is_some(), "an address is probed at once");
        assert!(due[1].hop.addr.is_none(), "a name is looked up first");
        assert_eq!(due[2].hop.transport, trunkgate_crds::Transport::Tcp);
        assert!(p.due(&rt, 2_000).is_empty(), "in flight");
        for d in &due {
            Prober::done(&d.probe, true, "", &rt, &crate::metrics::Metrics::new());
        }
        assert!(p.due(&rt, 20_000).is_empty(), "not due yet");
        assert_eq!(p.due(&rt, 31_000).len(), 3);
    }

    #[test]
    fn failed_probes_take_a_target_out_and_one_answer_brings_it_back() {
        let rt = runtime();
        let m = crate::metrics::Metrics::new();
        let due = Prober::new(0, 1).due(&rt, 0);
        let probe = &due[0].probe;
        let healthy = || m.targets_healthy.with_label_values(&["acme/a"]).get();
        Prober::done(probe, false, "answered 503 Service Unavailable", &rt, &m);
        assert!(probe.health.is_up(), "one failure of two");
        Prober::done(probe, false, "timeout", &rt, &m);
        assert!(!probe.health.is_up());
        assert_eq!(healthy(), 1, "one of trunk a's two targets left");
        Prober::done(probe, true, "", &rt, &m);
        assert!(probe.health.is_up());
        assert_eq!(healthy(), 2);
        let failed = m
            .target_probes
            .with_label_values(&["acme/a", "failed"])
            .get();
        assert_eq!(failed, 2);
    }

    #[test]
    fn a_probe_is_an_options_with_our_identifiers() {
        let req = Prober::request(
            "carrier.example:5061",
            "TLS",
            "edge.example:5061",
            "z9hG4bKx",
            "t1",
            "c1",
        );
        let text = String::from_utf8(req.bytes).expect("utf-8");
        assert!(
            text.starts_with("OPTIONS sip:carrier.example:5061 SIP/2.0\r\n"),
            "{text}"
        );
        assert!(
            text.contains("Via: SIP/2.0/TLS edge.example:5061;branch=z9hG4bKx"),
            "{text}"
        );
        assert!(
            text.contains("From: <sip:trunkgate@edge.example:5061>;tag=t1\r\n"),
            "{text}"
        );
        assert!(text.contains("Call-ID: c1\r\n"), "{text}");
        assert!(text.contains("CSeq: 1 OPTIONS\r\n"), "{text}");
        assert!(text.contains("Accept: application/sdp\r\n"), "{text}");
        assert_eq!(req.ruri, "sip:carrier.example:5061");
        assert_eq!(
            Prober::answered(503, "Service Unavailable"),
            Some((false, "answered 503 Service Unavailable".into()))
        );
        assert_eq!(
            Prober::answered(405, "Method Not Allowed"),
            Some((true, String::new()))
        );
        assert_eq!(Prober::answered(180, "Ringing"), None);
    }

    #[test]
    fn down_after_threshold_failures_in_a_row_up_after_one_answer() {
        let h = TargetHealth::default();
        assert!(h.is_up());
        assert_eq!(h.record(false, 3), None);
        assert_eq!(h.record(true, 3), None, "an answer resets the count");
        assert_eq!(h.record(false, 3), None);
        assert_eq!(h.record(false, 3), None);
        assert_eq!(h.record(false, 3), Some(false));
        assert!(!h.is_up());
        assert_eq!(h.record(false, 3), None, "stays down, no new change");
        assert_eq!(h.record(true, 3), Some(true));
        assert!(h.is_up());
    }

    #[test]
    fn a_probe_is_claimed_once_per_interval_and_not_while_one_is_out() {
        let h = TargetHealth::default();
        assert!(h.claim(1_000, 30_000));
        assert!(!h.claim(1_000, 30_000), "in flight");
        h.record(true, 3);
        assert!(!h.claim(20_000, 30_000), "not due yet");
        assert!(h.claim(31_000, 30_000));
    }

    #[test]
    fn any_final_answer_but_503_means_alive() {
        let table = [
            (100, None),
            (183, None),
            (200, Some(true)),
            (403, Some(true)),
            (404, Some(true)),
            (405, Some(true)),
            (500, Some(true)),
            (503, Some(false)),
            (603, Some(true)),
        ];
        for (code, want) in table {
            assert_eq!(answer_alive(code), want, "{code}");
        }
    }

    #[test]
    fn probers_spread_trunks_over_workers() {
        assert_eq!(prober_of(0, 2), 0);
        assert_eq!(prober_of(3, 2), 1);
        assert_eq!(prober_of(5, 1), 0);
        assert_eq!(prober_of(5, 0), 0);
    }
}
