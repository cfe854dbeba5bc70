//! Leg B's targets in turn: RFC 3263 resolution, the INVITE per hop, failure of leg A.

use std::net::SocketAddr;

use super::*;
use crate::call::{Attempt, CallState, Direction, LegId, Side};
use crate::sip::message::{Builder, via};
use crate::worker::{Lookup, Purpose, Timer, Worker};

impl Worker {
    /// Tries the next B-leg hop, resolving its host when needed.
    pub(crate) fn next_hop(&mut self, id: u64) {
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        if c.state.cancelled() {
            return self.finish_call(id);
        }
        let Some(hop) = c.hops.get(c.next_hop).cloned() else {
            let (code, text) = c
                .last_failure
                .clone()
                .unwrap_or((503, "no carrier target answered".to_string()));
            return self.fail_a(id, code, &text);
        };
        c.next_hop += 1;
        if let Some(addr) = hop.addr {
            return self.send_b_invite(id, addr);
        }
        self.resolve(&hop, Lookup::Call(id));
    }

    /// The addresses of the hop being tried replace it, in order (RFC 3263 §4.3: try each).
    pub(crate) fn on_resolved(
        &mut self,
        id: u64,
        result: Result<Vec<trunkgate_resolve::Destination>, trunkgate_resolve::Error>,
    ) {
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        let at = c.next_hop.wrapping_sub(1);
        let Some(hop) = c.hops.get(at).cloned() else {
            return;
        };
        match result {
            Ok(dests) if !dests.is_empty() => {
                if c.b.side == Side::Public {
                    // Their answers must pass the kernel filter.
                    for d in &dests {
                        self.shared.prefilter.allow_ip(d.addr.ip());
                    }
                }
                let expanded = dests.into_iter().map(|d| crate::call::Hop {
                    addr: Some(d.addr),
                    transport: crds_transport(d.transport),
                    ..hop.clone()
                });
                c.hops.splice(at..=at, expanded);
                c.next_hop = at;
                self.next_hop(id);
            }
            Ok(_) => {
                c.last_failure = Some((503, format!("{}: no address", hop.host)));
                self.next_hop(id);
            }
            Err(e) => {
                c.last_failure = Some((503, e.to_string()));
                self.next_hop(id);
            }
        }
    }

    /// Sends (or re-sends, on failover and digest) the B-leg INVITE to `dest`.
    pub(super) fn send_b_invite(&mut self, id: u64, addr: SocketAddr) {
        let branch = self.mint.branch();
        let Some((transport, host)) = self
            .calls
            .get(&id)
            .and_then(|c| c.hops.get(c.next_hop.wrapping_sub(1)))
            .map(|h| (h.transport, h.host.clone()))
        else {
            return self.fail_a(id, 500, "no next hop to send the call to");
        };
        let (side, carrier) = match self.calls.get(&id) {
            Some(c) => (
                c.b.side,
                (c.b.side == Side::Public)
                    .then(|| self.shared.tls.trunk(c.trunk_id()))
                    .flatten(),
            ),
            None => return,
        };
        let dest = match self.link_to(side, addr, transport, &host, carrier.as_deref()) {
            Ok(l) => l,
            Err(e) => {
                if let Some(c) = self.calls.get_mut(&id) {
                    if c.direction == Direction::Outbound && c.next_hop < c.hops.len() {
                        self.shared
                            .metrics
                            .failovers
                            .with_label_values(&[c.trunk_id(), e.metric_label()])
                            .inc();
                    }
                    c.last_failure = Some((503, e.to_string()));
                }
                return self.next_hop(id);
            }
        };
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        let Some(hop) = c.hops.get(c.next_hop.wrapping_sub(1)) else {
            return;
        };
        let ruri = format!("sip:{}@{}", c.b_user, hop.uri_host);
        c.b.peer = dest.clone();
        c.b.remote = format!("<sip:{}@{}>", c.b_user, hop.uri_host);
        c.b.remote_target = ruri.clone();
        c.b.remote_tag = None;
        let cseq = c.b.local_cseq;
        c.b.local_cseq += 1;
        c.b.invite_cseq = cseq;
        if let CallState::Proceeding(a) = &mut c.state {
            *a = Attempt::Calling;
        }
        let side = c.b.side;
        let hostport = self.shared.hostport_on(side, &dest);
        let ident = format!(
            "From: {};tag={}\r\nCall-ID: {}\r\n",
            c.b.local, c.b.local_tag, c.b.call_id
        );
        let mut b = Builder::request("INVITE", &ruri)
            .header("Via", &via(dest.transport(), hostport, &branch))
            .ids(&ident, &c.b.remote, cseq, "INVITE")
            .header("Contact", &contact(hostport, &dest))
            .raw(&c.b_lines);
        if let Some(auth) = &c.auth_line {
            b = b.raw(auth);
        }
        let bytes = b.body(&c.b_body);
        let outbound = c.direction == Direction::Outbound;
        let more = c.next_hop < c.hops.len();
        let key = self.open_client(
            id,
            LegId::B,
            Purpose::Setup,
            side,
            dest,
            trunkgate_sip::Method::Invite,
            branch,
            bytes,
            ruri,
            ident,
            cseq,
        );
        if let Some(c) = self.calls.get_mut(&id) {
            c.b_invite = Some(key.clone());
        }
        if outbound && more {
            let after = self.shared.settings.failover_timeout();
            self.schedule(after, Timer::Failover(key));
        }
    }

    /// Answers leg A's INVITE with a failure and ends the call.
    pub(super) fn fail_a(&mut self, id: u64, code: u16, text: &str) {
        self.drive(id, |c, ctx| c.fail_a(ctx, code, text));
    }
}
