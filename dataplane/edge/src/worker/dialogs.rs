//! A call once set up (or being torn down): CANCEL, BYE, end-to-end ACK and the in-dialog
//! requests relayed with their answers.

use trunkgate_sip::Request;

use super::{Purpose, Timer, Worker};
use crate::call::{LegId, Side};
use crate::sip::message::{Builder, via};
use crate::sip::transaction::{Role, ServerState, TransactionKey};
use crate::transport::Link;

impl Worker {
    /// CANCEL of leg B's pending INVITE (RFC 3261 §9.1: same branch, Request-URI, Call-ID,
    /// From, To and CSeq number).
    pub(crate) fn send_cancel(&mut self, id: u64) {
        let Some(c) = self.calls.get(&id) else { return };
        let Some(inv) = c.b_invite.clone() else {
            return;
        };
        let Some(tx) = self.clients.get(&inv) else {
            return;
        };
        let hostport = self.shared.hostport_on(tx.side, &tx.dest).to_string();
        let to = format!(
            "<sip:{}@{}>",
            c.b_user,
            c.hops
                .get(c.next_hop.wrapping_sub(1))
                .map(|h| h.uri_host.as_str())
                .unwrap_or_default()
        );
        let bytes = Builder::request_via(
            "CANCEL",
            &tx.ruri,
            &via(tx.dest.transport(), &hostport, inv.branch()),
        )
        .ids(&tx.ident, &to, tx.cseq, "CANCEL")
        .finish();
        let (side, dest, ruri, ident, cseq) = (
            tx.side,
            tx.dest.clone(),
            tx.ruri.clone(),
            tx.ident.clone(),
            tx.cseq,
        );
        self.open_client(
            id,
            LegId::B,
            Purpose::Cancel,
            side,
            dest,
            trunkgate_sip::Method::Cancel,
            inv.branch().to_string(),
            bytes,
            ruri,
            ident,
            cseq,
        );
        // A peer that answers neither the CANCEL nor the INVITE must not hold the call, its
        // limits' slots and its record for ever (RFC 3261 §9.1).
        self.schedule(crate::sip::transaction::TIMEOUT, Timer::CancelGuard(inv));
    }

    /// The edge is stopping: every call still up ends now, with a BYE on both legs once
    /// answered, with 503 to the caller (and CANCEL onward) while it is being set up.
    pub(crate) fn hang_up_all(&mut self) {
        let ids: Vec<u64> = self.calls.keys().copied().collect();
        for id in ids {
            self.drive(id, |c, ctx| c.shut_down(ctx));
        }
    }

    pub(crate) fn on_ack(&mut self, side: Side, src: &Link, req: &Request) {
        let key = TransactionKey::from_request(req, Role::Server);
        if let Some(tx) = self.servers.get_mut(&key)
            && tx.machine.state() == ServerState::Completed
            && tx.peer.addr().ip() == src.addr().ip()
        {
            // Hop-by-hop ACK for our non-2xx (§17.2.1): stop Timers G and H, linger (Timer I).
            if let Some(actions) = tx.machine.on_ack() {
                self.server_acked(&key, &actions);
            }
            return;
        }
        let Some((id, leg)) = self.dialog_of(side, src, req) else {
            return;
        };
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        let Some(sk) = c.leg_mut(leg).awaiting_ack.take() else {
            return;
        };
        // The ACK of our 2xx (end to end, its own branch): stop its retransmission.
        if let Some(actions) = self.servers.get_mut(&sk).and_then(|tx| tx.machine.on_ack()) {
            self.server_acked(&sk, &actions);
        }
        self.drive(id, |c, ctx| c.on_ack(ctx, leg, req));
    }

    pub(crate) fn on_cancel(&mut self, side: Side, src: &Link, req: &Request) {
        // RFC 3261 §9.2: branch and sent-by (the key), source, Call-ID, From tag and CSeq number
        // all match the INVITE.
        let inv = TransactionKey::from_request(req, Role::Server).cancelled();
        let Some(tx) = self
            .servers
            .get(&inv)
            .filter(|_| self.cancel_matches(&inv, src, req))
        else {
            let k = self.open_server(side, src, req, None);
            return self.refuse(&k, 481, "no such transaction to cancel", "");
        };
        let (call, finished) = (tx.call, tx.machine.finished());
        let tag = call
            .and_then(|(id, _)| self.calls.get(&id))
            .map(|c| c.a.local_tag.clone());
        let k = self.open_server(side, src, req, tag.as_deref());
        self.respond(&k, 200, "OK", "", &[]);
        if finished {
            // The final answer crossed the CANCEL: it stands (§9.2).
            return;
        }
        let Some((id, _)) = call else { return };
        self.drive(id, |c, ctx| c.on_cancel(ctx, side, inv));
    }

    pub(crate) fn on_in_dialog(&mut self, side: Side, src: &Link, req: &Request) {
        // Only the dialog's own peer, from its address, continues it (RFC 3261 §12.2.2).
        let Some((id, leg)) = self.dialog_of(side, src, req) else {
            let k = self.open_server(side, src, req, None);
            return self.refuse(&k, 481, "no such call", "");
        };
        let k = self.open_server(side, src, req, None);
        if let Some(tx) = self.servers.get_mut(&k) {
            tx.call = Some((id, leg));
        }
        self.drive(id, |c, ctx| c.on_in_dialog(ctx, leg, k, req));
    }
}
