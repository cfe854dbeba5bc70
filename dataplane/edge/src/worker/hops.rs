//! Leg B's targets in turn: RFC 3263 resolution, the INVITE per hop, failure of leg A.

use std::net::SocketAddr;

use super::Worker;
use crate::call::Side;

impl Worker {
    /// The call's next hop ([`Call::next_hop`](crate::call::Call::next_hop)).
    pub(crate) fn next_hop(&mut self, id: u64) {
        self.drive(id, |c, ctx| c.next_hop(ctx));
    }

    pub(crate) fn on_resolved(
        &mut self,
        id: u64,
        result: Result<Vec<trunkgate_resolve::Destination>, trunkgate_resolve::Error>,
    ) {
        self.drive(id, |c, ctx| c.on_resolved(ctx, result));
    }

    /// Leg B's INVITE to `addr` of the hop being tried: over a connection of this worker's
    /// (found or opened), or the next hop when none can be had.
    pub(crate) fn send_b_invite(&mut self, id: u64, addr: SocketAddr) {
        let Some(c) = self.calls.get(&id) else {
            return;
        };
        let Some((transport, host)) = c.current_hop().map(|h| (h.transport, h.host.clone())) else {
            return self.fail_a(id, 500, "no next hop to send the call to");
        };
        let side = c.b.side;
        let carrier = (side == Side::Public)
            .then(|| self.shared.tls.trunk(c.trunk_id()))
            .flatten();
        match self.link_to(side, addr, transport, &host, carrier.as_deref()) {
            Ok(dest) => self.drive(id, |c, ctx| c.send_invite(ctx, dest)),
            Err(e) => self.drive(id, |c, ctx| {
                c.link_failed(ctx, e.metric_label(), e.to_string())
            }),
        };
    }

    /// Answers leg A's INVITE with a failure and ends the call.
    pub(super) fn fail_a(&mut self, id: u64, code: u16, text: &str) {
        self.drive(id, |c, ctx| c.fail_a(ctx, code, text));
    }
}
