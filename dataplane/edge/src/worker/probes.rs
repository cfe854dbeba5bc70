//! The worker's side of the carrier targets' OPTIONS probes ([`crate::route::health`]): it
//! sends what the [`Prober`] asks, looks names up, and brings the answers back.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use trunkgate_crds::Transport;

use super::{Lookup, Purpose, Timer, Worker};
use crate::call::{LegId, Side};
use crate::route::health::{Probe, Prober, TICK, host_of_uri_host, now_ms};

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
        for due in self.prober.due(&rt, now_ms()) {
            let (probe, hop) = (due.probe, due.hop);
            match hop.addr {
                Some(addr) => self.send_probe(probe, addr, hop.transport, &hop.uri_host),
                None => {
                    let uri_host = hop.uri_host.clone();
                    self.resolve(&hop, Lookup::Probe { probe, uri_host })
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
                let transport = crate::route::hop::crds_transport(d.transport);
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
        let req = Prober::request(
            uri_host,
            dest.transport(),
            &hostport,
            &branch,
            &tag,
            &call_id,
        );
        let key = self.open_client(
            0,
            LegId::B,
            Purpose::Probe(probe),
            Side::Public,
            dest,
            trunkgate_sip::Method::Options,
            branch,
            req.bytes,
            req.ruri,
            req.ident,
            1,
        );
        let after = self.shared.settings.failover_timeout();
        self.schedule(after, Timer::Failover(key));
    }

    /// A final answer to a probe.
    pub(crate) fn probe_answered(&mut self, probe: &Probe, code: u16, reason: &str) {
        if let Some((ok, why)) = Prober::answered(code, reason) {
            self.probe_done(probe, ok, &why)
        }
    }

    /// Counts a probe's result and publishes a change of state.
    pub(crate) fn probe_done(&mut self, probe: &Probe, ok: bool, why: &str) {
        let rt = self.shared.runtime.load();
        Prober::done(probe, ok, why, &rt, &self.shared.metrics);
    }
}
