//! A call once set up (or being torn down): CANCEL, BYE, end-to-end ACK and the in-dialog
//! requests relayed with their answers.

use trunkgate_sip::{Request, Response};

use super::*;
use crate::call::{Attempt, CallState, LegId, Side};
use crate::sip::message::{Builder, via};
use crate::sip::msg;
use crate::sip::transaction::{Role, ServerState, TransactionKey};
use crate::transport::Link;
use crate::worker::{Purpose, Timer, Worker};

impl Worker {
    /// CANCEL of leg B's pending INVITE (RFC 3261 §9.1: same branch, Request-URI, Call-ID,
    /// From, To and CSeq number).
    pub(super) fn send_cancel(&mut self, id: u64) {
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

    /// BYE on one leg of a confirmed call.
    pub(crate) fn send_bye(&mut self, id: u64, leg: LegId) {
        let branch = self.mint.branch();
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        let lines = c.bye_lines.clone();
        let l = c.leg_mut(leg);
        l.local_cseq += 1;
        let cseq = l.local_cseq;
        let (bytes, ruri, ident, side, peer) = in_dialog_request(
            l,
            "BYE",
            &branch,
            cseq,
            None,
            &lines,
            &[],
            self_hostport(&self.shared, l),
        );
        self.open_client(
            id,
            leg,
            Purpose::Bye,
            side,
            peer,
            trunkgate_sip::Method::Bye,
            branch,
            bytes,
            ruri,
            ident,
            cseq,
        );
    }

    /// Ends a call from one leg (or from the edge itself when `from` is None): the other leg
    /// gets a BYE when confirmed, a CANCEL while its INVITE is pending.
    pub(crate) fn end_call(&mut self, id: u64, from: Option<LegId>, why: &'static str) {
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        if matches!(
            c.state,
            CallState::Ended | CallState::Ending | CallState::Cancelling(_)
        ) {
            return;
        }
        let confirmed = c.state == CallState::Confirmed;
        c.state = CallState::Ending;
        if c.ended_by.is_none() {
            c.ended_by = Some(match from {
                Some(l) => c.leg(l).side.party(),
                None => "edge",
            });
        }
        tracing::debug!(call = id, why, "ending call");
        for leg in [LegId::A, LegId::B] {
            if Some(leg) == from {
                continue;
            }
            if confirmed {
                self.send_bye(id, leg);
            } else if leg == LegId::B {
                let pending = self.calls.get(&id).is_some_and(|c| c.b_invite.is_some());
                if pending {
                    self.send_cancel(id);
                }
            }
        }
        self.finish_call(id);
    }

    /// The edge is stopping: every call still up ends now, with a BYE on both legs once
    /// answered, with 503 to the caller (and CANCEL onward) while it is being set up.
    pub(crate) fn hang_up_all(&mut self) {
        let ids: Vec<u64> = self.calls.keys().copied().collect();
        for id in ids {
            let Some(c) = self.calls.get_mut(&id) else {
                continue;
            };
            match c.state {
                CallState::Proceeding(_) => {
                    c.final_code = Some(503);
                    let key = c.a_invite.clone();
                    self.refuse(&key, 503, "edge shutting down", "Retry-After: 5\r\n");
                    self.end_call(id, None, "shutdown");
                }
                CallState::Confirmed => {
                    c.bye_lines = "Reason: SIP;cause=503;text=\"edge shutting down\"\r\n".into();
                    self.end_call(id, None, "shutdown");
                }
                CallState::Cancelling(_) | CallState::Ending | CallState::Ended => {}
            }
        }
    }

    /// Leg B has rung for `--ringing-seconds` without a final answer: CANCEL it and answer the
    /// caller 408 (RFC 3261 §16.6 Timer C plays this part in a proxy).
    pub(crate) fn ringing_too_long(&mut self, id: u64, key: &TransactionKey) {
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        let CallState::Proceeding(attempt) = c.state else {
            return;
        };
        if c.b_invite.as_ref() != Some(key) {
            return;
        }
        c.final_code = Some(408);
        c.ended_by = Some("edge");
        c.state = CallState::Cancelling(attempt);
        let a_key = c.a_invite.clone();
        let trunk = c.trunk_id().to_string();
        let secs = self.shared.settings.ringing_seconds;
        self.shared
            .metrics
            .ringing_timeouts
            .with_label_values(&[trunk.as_str()])
            .inc();
        self.refuse(
            &a_key,
            408,
            &format!("no final answer after {secs} s of ringing"),
            "",
        );
        self.send_cancel(id);
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
        let (ack_cseq, _) = trunkgate_sip::cseq(req).unwrap_or((0, "ACK"));
        // The ACK of our 2xx (end to end, its own branch): stop its retransmission.
        if let Some(actions) = self.servers.get_mut(&sk).and_then(|tx| tx.machine.on_ack()) {
            self.server_acked(&sk, &actions);
        }
        // End-to-end ACK: pass it to the other leg (RFC 3261 §13.2.2.4 on that leg).
        let other = leg.other();
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        let initial = leg == LegId::A && ack_cseq == c.a.invite_cseq && c.b_ack.is_none();
        if leg == LegId::A && ack_cseq == c.a.invite_cseq {
            // Set up: the caller acknowledged the answer.
            c.setup = None;
            c.setup_source = None;
        }
        let cseq = if initial {
            Some(c.b.invite_cseq)
        } else {
            c.leg_mut(other).reinvite_cseq.take()
        };
        let Some(cseq) = cseq else { return };
        let branch = self.mint.branch();
        let body = self
            .relay_body(
                id,
                leg,
                &req.body,
                crate::call::media::request_exchange(req),
            )
            .unwrap_or_default();
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        let mut lines = msg::copied_lines(req);
        if initial && let Some(auth) = c.auth_line.take() {
            // RFC 3261 §13.2.2.4: the ACK carries the INVITE's credentials.
            lines.push_str(&auth);
        }
        let l = c.leg(other);
        let (bytes, _, _, side, peer) = in_dialog_request(
            l,
            "ACK",
            &branch,
            cseq,
            None,
            &lines,
            &body,
            self_hostport(&self.shared, l),
        );
        self.out.send(side, &peer, &bytes);
        if initial {
            c.b_ack = Some(bytes);
        }
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
        self.respond(&inv, 487, "Request Terminated", "", &[]);
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        let attempt = match c.state {
            CallState::Proceeding(a) | CallState::Cancelling(a) => a,
            _ => Attempt::Calling,
        };
        c.final_code = Some(487);
        c.ended_by = Some(side.party());
        c.state = CallState::Cancelling(attempt);
        if c.b_invite.is_some() {
            // Before leg B rang, its CANCEL waits for a provisional answer (RFC 3261 §9.1).
            if attempt == Attempt::Ringing {
                self.send_cancel(id);
            }
        } else {
            self.finish_call(id);
        }
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
        // Transfer policy: the edge does not carry REFER (RFC 3515). Passed on, its Refer-To
        // would send the other side to an address of this side (a platform pod, a carrier's
        // SBC) and its NOTIFYs back through a dialog neither leg owns; refused 405 with Allow,
        // the platform transfers by re-INVITE, which the edge relays with its media.
        if req.method == trunkgate_sip::Method::Refer {
            let lines = format!("Allow: {}\r\n", crate::worker::ALLOW);
            return self.refuse(
                &k,
                405,
                "the edge does not carry REFER: transfer with a re-INVITE",
                &lines,
            );
        }
        if matches!(
            req.method,
            trunkgate_sip::Method::Invite | trunkgate_sip::Method::Update
        ) && let Some(c) = self.calls.get_mut(&id)
        {
            refresh_target(c.leg_mut(leg), req);
        }
        if req.method == trunkgate_sip::Method::Bye {
            self.respond(&k, 200, "OK", "", &[]);
            return self.end_call(id, Some(leg), "BYE");
        }
        self.relay_request(id, leg, k, req);
    }

    /// Passes an in-dialog request to the other leg; its answer comes back to `server`.
    pub(super) fn relay_request(
        &mut self,
        id: u64,
        from: LegId,
        server: TransactionKey,
        req: &Request,
    ) {
        let branch = self.mint.branch();
        let to = from.other();
        let method = req.method;
        let body = match self.relay_body(
            id,
            from,
            &req.body,
            crate::call::media::request_exchange(req),
        ) {
            Ok(b) => b,
            Err(r) => return self.refuse(&server, r.code, &r.text, ""),
        };
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        let invite_cseq_to = c.leg(to).invite_cseq;
        let l = c.leg_mut(to);
        if l.remote_tag.is_none() {
            return self.refuse(&server, 491, "the other leg has no dialog yet", "");
        }
        l.local_cseq += 1;
        let cseq = l.local_cseq;
        let mut lines = msg::copied_lines(req);
        if req.method == trunkgate_sip::Method::PRack {
            // RFC 3262 §7.2: RAck names the INVITE of the leg it is sent on.
            if let Some(rack) = msg::header(req, "RAck") {
                let rseq = rack.split_whitespace().next().unwrap_or("1");
                lines.push_str(&format!("RAck: {rseq} {invite_cseq_to} INVITE\r\n"));
            }
        }
        let contact = matches!(
            req.method,
            trunkgate_sip::Method::Invite | trunkgate_sip::Method::Update
        );
        let hp = self_hostport(&self.shared, l);
        let (bytes, ruri, ident, side, peer) = in_dialog_request(
            l,
            msg::method_name(&method),
            &branch,
            cseq,
            contact.then_some(hp.as_str()),
            &lines,
            &body,
            hp.clone(),
        );
        self.open_client(
            id,
            to,
            Purpose::Relay(server),
            side,
            peer,
            method,
            branch,
            bytes,
            ruri,
            ident,
            cseq,
        );
    }

    /// The answer to a relayed request goes back on the leg it came from.
    pub(super) fn relay_response(
        &mut self,
        id: u64,
        sent_on: LegId,
        server: TransactionKey,
        method: trunkgate_sip::Method,
        cseq: u32,
        resp: &Response,
    ) {
        use trunkgate_sip::Method as M;
        let code = resp.status_code.code();
        if code == 100 {
            return;
        }
        let body = match self.relay_body(
            id,
            sent_on,
            &resp.body,
            crate::call::media::response_exchange(method, resp),
        ) {
            Ok(b) => b,
            Err(r) => return self.refuse(&server, r.code, &r.text, ""),
        };
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        let from = sent_on.other();
        let mut lines = msg::copied_lines(resp);
        if matches!(method, M::Invite | M::Update) {
            let l = c.leg(from);
            lines = format!(
                "Contact: {}\r\n{lines}",
                contact(&self_hostport(&self.shared, l), &l.peer)
            );
        }
        if matches!(method, M::Invite | M::Update) && (200..300).contains(&code) {
            refresh_target(c.leg_mut(sent_on), resp);
        }
        if method == M::Invite && (200..300).contains(&code) {
            c.leg_mut(sent_on).reinvite_cseq = Some(cseq);
            c.leg_mut(from).awaiting_ack = Some(server.clone());
        }
        if matches!(method, M::Invite | M::Update) && (200..300).contains(&code) {
            // A refresh crossed the edge: both legs' session timers start again.
            self.session_negotiated(id, sent_on, resp, true);
            self.session_negotiated(id, from, resp, false);
        }
        self.respond(&server, code, &reason_of(resp), &lines, &body);
        if matches!(method, M::Invite | M::Update) && (200..300).contains(&code) {
            // The dialog or its media moved: a new checkpoint.
            self.checkpoint(id);
        }
    }
}
