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

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use trunkgate_crds::Transport;

use crate::call::{LegId, Side};
use crate::route::admission::hop_of;
use crate::sip::message::{Builder, via};
use crate::worker::{Lookup, Purpose, Timer, Worker};

/// How often a worker looks for targets whose probe is due.
pub const TICK: Duration = Duration::from_secs(1);

/// One carrier target's health, shared by every worker.
#[derive(Debug)]
pub struct TargetHealth {
    up: AtomicBool,
    failures: AtomicU32,
    /// When the next probe is due, in milliseconds since the process started.
    due_ms: AtomicU64,
    /// A probe is on its way: the next waits for its result.
    probing: AtomicBool,
}

impl Default for TargetHealth {
    fn default() -> Self {
        Self {
            up: AtomicBool::new(true),
            failures: AtomicU32::new(0),
            due_ms: AtomicU64::new(0),
            probing: AtomicBool::new(false),
        }
    }
}

impl TargetHealth {
    /// Up until probes say otherwise (and always, for trunks that are not probed).
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Records one probe's result; returns `Some(new state)` when the target changed state.
    pub fn record(&self, ok: bool, threshold: u32) -> Option<bool> {
        self.probing.store(false, Ordering::Relaxed);
        if ok {
            self.failures.store(0, Ordering::Relaxed);
            return (!self.up.swap(true, Ordering::Relaxed)).then_some(true);
        }
        let failures = self
            .failures
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        if failures >= threshold.max(1) && self.up.swap(false, Ordering::Relaxed) {
            return Some(false);
        }
        None
    }

    /// Claims the probe due at `now_ms` (and schedules the next one), if one is due.
    fn claim(&self, now_ms: u64, interval_ms: u64) -> bool {
        if self.probing.load(Ordering::Relaxed) || self.due_ms.load(Ordering::Relaxed) > now_ms {
            return false;
        }
        self.due_ms.store(now_ms + interval_ms, Ordering::Relaxed);
        self.probing.store(true, Ordering::Relaxed);
        true
    }
}

/// Milliseconds since the process first asked.
fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
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

impl Worker {
    /// Starts the probes that are due on the trunks this worker probes.
    pub(crate) fn probe_tick(&mut self) {
        self.schedule(TICK, Timer::ProbeTick);
        if self.shared.draining.load(Ordering::Relaxed) {
            return;
        }
        self.restore_pending();
        self.end_orphans();
        let rt = self.shared.runtime.load_full();
        self.registration_tick(&rt);
        let workers = self.shared.handoff.len();
        let now = now_ms();
        for (i, trunk) in rt.config.trunks.iter().enumerate() {
            let Some(out) = trunk.outbound.as_ref() else {
                continue;
            };
            if out.health_interval_seconds == 0 || prober_of(i, workers) != self.index {
                continue;
            }
            let interval_ms = u64::from(out.health_interval_seconds) * 1000;
            for (target, health) in out.targets.iter().zip(rt.health(i as u32)) {
                if !health.claim(now, interval_ms) {
                    continue;
                }
                let probe = Arc::new(Probe {
                    trunk: i as u32,
                    trunk_id: trunk.id.clone(),
                    uri: target.uri.clone(),
                    threshold: out.health_failure_threshold,
                    health: health.clone(),
                    auth: out.auth.clone(),
                });
                let hop = hop_of(target);
                match hop.addr {
                    Some(addr) => self.send_probe(probe, addr, hop.transport, &hop.uri_host),
                    None => {
                        let uri_host = hop.uri_host.clone();
                        self.resolve(&hop, Lookup::Probe { probe, uri_host })
                    }
                }
            }
        }
    }

    pub(crate) fn on_probe_resolved(
        &mut self,
        probe: Arc<Probe>,
        uri_host: &str,
        result: Result<Vec<trunkgate_resolve::Destination>, trunkgate_resolve::Error>,
    ) {
        // The target's first address is the one probed.
        match result.as_deref().map(<[_]>::first) {
            Ok(Some(d)) => {
                self.shared.prefilter.allow_ip(d.addr.ip());
                let transport = crate::call::b2bua::crds_transport(d.transport);
                self.send_probe(probe, d.addr, transport, uri_host)
            }
            Ok(None) => {
                let text = format!("{uri_host}: no address");
                self.probe_done(&probe, false, &text)
            }
            Err(e) => self.probe_done(&probe, false, &e.to_string()),
        }
    }

    /// One OPTIONS out of dialog (RFC 3261 §11.1), from the carrier-facing side.
    fn send_probe(
        &mut self,
        probe: Arc<Probe>,
        addr: SocketAddr,
        transport: Transport,
        uri_host: &str,
    ) {
        let carrier = self.shared.tls.trunk(&probe.trunk_id);
        let dest = match self.link_to(
            Side::Public,
            addr,
            transport,
            host_of_uri_host(uri_host),
            carrier.as_deref(),
        ) {
            Ok(l) => l,
            Err(e) => return self.probe_done(&probe, false, &e.to_string()),
        };
        let branch = self.mint.branch();
        let (tag, call_id) = (self.mint.tag(), self.mint.call_id());
        let hostport = self.shared.hostport_on(Side::Public, &dest).to_string();
        let ruri = format!("sip:{uri_host}");
        let ident = format!("From: <sip:trunkgate@{hostport}>;tag={tag}\r\nCall-ID: {call_id}\r\n");
        let bytes =
            Builder::request_via("OPTIONS", &ruri, &via(dest.transport(), &hostport, &branch))
                .ids(&ident, &format!("<{ruri}>"), 1, "OPTIONS")
                .header("Accept", "application/sdp")
                .body(&[]);
        let key = self.open_client(
            0,
            LegId::B,
            Purpose::Probe(probe),
            Side::Public,
            dest,
            trunkgate_sip::Method::Options,
            branch,
            bytes,
            ruri,
            ident,
            1,
        );
        let after = self.shared.settings.failover_timeout();
        self.schedule(after, Timer::Failover(key));
    }

    /// A final answer to a probe.
    pub(crate) fn probe_answered(&mut self, probe: &Probe, code: u16, reason: &str) {
        match answer_alive(code) {
            None => {}
            Some(true) => self.probe_done(probe, true, ""),
            Some(false) => self.probe_done(probe, false, &format!("answered {code} {reason}")),
        }
    }

    /// Counts a probe's result and publishes a change of state.
    pub(crate) fn probe_done(&mut self, probe: &Probe, ok: bool, why: &str) {
        let m = self.metrics();
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
        let rt = self.shared.runtime.load();
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

/// `order` with the targets that are up first, each group keeping its order.
pub fn up_first<T>(order: Vec<(T, bool)>) -> Vec<T> {
    let (up, down): (Vec<_>, Vec<_>) = order.into_iter().partition(|(_, up)| *up);
    up.into_iter().chain(down).map(|(t, _)| t).collect()
}

/// The host of a URI's `host[:port]` (an IPv6 reference keeps its brackets off).
fn host_of_uri_host(uri_host: &str) -> &str {
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

    #[test]
    fn targets_that_are_up_go_first_in_their_order() {
        let order = vec![("a", false), ("b", true), ("c", false), ("d", true)];
        assert_eq!(up_first(order), vec!["b", "d", "a", "c"]);
    }
}
