//! The worker's side of the carrier targets' OPTIONS probes ([`crate::route::health`]): it
//! sends what the [`Prober`] asks, looks names up, and brings the answers back.

use std::net::SocketAddr;
use std::sync::Arc;

use trunkgate_crds::Transport;

use super::io::Io;
use super::transactions::NewClient;
use super::{Lookup, Purpose, Timer};
use crate::call::{LegId, Side};
use crate::config::Runtime;
use crate::route::health::{Probe, Prober, host_of_uri_host, now_ms};

/// Starts the probes that are due on the trunks `prober` probes.
pub fn tick(io: &mut Io, prober: &mut Prober, rt: &Runtime) {
    for due in prober.due(rt, now_ms()) {
        let (probe, hop) = (due.probe, due.hop);
        match hop.addr {
            Some(addr) => send(io, probe, addr, hop.transport, &hop.uri_host),
            None => {
                let uri_host = hop.uri_host.clone();
                let lookup = Lookup::Probe {
                    probe: probe.clone(),
                    uri_host,
                };
                if let Err(e) = io.resolve(&hop, lookup) {
                    done(io, &probe, false, &e.to_string());
                }
            }
        }
    }
}

/// The probed target's addresses came back (or did not): its first one is probed.
pub fn on_resolved(
    io: &mut Io,
    probe: Arc<Probe>,
    uri_host: &str,
    result: Result<Vec<trunkgate_resolve::Destination>, trunkgate_resolve::Error>,
) {
    match result.as_deref().map(<[_]>::first) {
        Ok(Some(d)) => {
            io.shared.prefilter.allow_ip(d.addr.ip());
            let transport = crate::route::hop::crds_transport(d.transport);
            send(io, probe, d.addr, transport, uri_host)
        }
        Ok(None) => done(io, &probe, false, &format!("{uri_host}: no address")),
        Err(e) => done(io, &probe, false, &e.to_string()),
    }
}

/// One OPTIONS out of dialog (RFC 3261 §11.1), from the carrier-facing side.
fn send(io: &mut Io, probe: Arc<Probe>, addr: SocketAddr, transport: Transport, uri_host: &str) {
    let carrier = io.shared.tls.trunk(&probe.trunk_id);
    let host = host_of_uri_host(uri_host);
    let dest = match io.link_to(Side::Public, addr, transport, host, carrier.as_deref()) {
        Ok(l) => l,
        Err(e) => return done(io, &probe, false, &e.to_string()),
    };
    let branch = io.mint.branch();
    let (tag, call_id) = (io.mint.tag(), io.mint.call_id());
    let hostport = io.shared.hostport_on(Side::Public, &dest);
    let req = Prober::request(
        uri_host,
        dest.transport(),
        hostport,
        &branch,
        &tag,
        &call_id,
    );
    let key = io.open_client(NewClient {
        call: 0,
        leg: LegId::B,
        purpose: Purpose::Probe(probe),
        side: Side::Public,
        dest,
        method: trunkgate_sip::Method::Options,
        branch,
        bytes: req.bytes,
        ruri: req.ruri,
        ident: req.ident,
        cseq: 1,
    });
    let after = io.shared.settings.failover_timeout();
    io.schedule(after, Timer::Failover(key));
}

/// A final answer to a probe.
pub fn answered(io: &Io, probe: &Probe, code: u16, reason: &str) {
    if let Some((ok, why)) = Prober::answered(code, reason) {
        done(io, probe, ok, &why)
    }
}

/// Counts a probe's result and publishes a change of state.
pub fn done(io: &Io, probe: &Probe, ok: bool, why: &str) {
    let rt = io.shared.runtime.load();
    Prober::done(probe, ok, why, &rt, &io.shared.metrics);
}
