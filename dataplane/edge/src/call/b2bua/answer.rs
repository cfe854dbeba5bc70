//! What leg B's INVITE gets back: provisional and final answers, the carrier's digest
//! challenge, failover, timeouts, the ACK of its 2xx.

use std::time::{Duration, SystemTime};

use trunkgate_sip::Response;

use super::*;
use crate::call::{Attempt, CallState, Direction, LegId, Side};
use crate::sip::message::{Builder, via};
use crate::sip::msg;
use crate::sip::transaction::{T4, TransactionKey};
use crate::worker::{Purpose, Timer, Worker};

impl Worker {
    /// A response to a request we sent.
    pub(crate) fn client_response(&mut self, key: TransactionKey, resp: &Response) {
        let Some(tx) = self.clients.get(&key) else {
            return;
        };
        let (id, leg, purpose, cseq) = (tx.call, tx.leg, tx.purpose.clone(), tx.cseq);
        match purpose {
            Purpose::Setup => self.setup_response(id, key, resp),
            Purpose::Relay(server) => {
                self.relay_response(id, leg, server, key.method(), cseq, resp)
            }
            Purpose::Probe(probe) => {
                self.probe_answered(&probe, resp.status_code.code(), &reason_of(resp))
            }
            Purpose::Refresh => self.refresh_answered(id, leg, resp),
            Purpose::Register(trunk) => self.register_answered(&trunk, resp),
            Purpose::Bye | Purpose::Cancel => {}
        }
    }

    pub(super) fn setup_response(&mut self, id: u64, key: TransactionKey, resp: &Response) {
        let code = resp.status_code.code();
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        if c.b_invite.as_ref() != Some(&key) {
            // An abandoned attempt (failover) answered late: accept and hang up at once.
            if (200..300).contains(&code) {
                self.ack_and_bye_stray(id, &key, resp, true);
            }
            return;
        }
        if code == 100 {
            return;
        }
        let to = msg::header(resp, "To").unwrap_or_default().to_string();
        if code < 200 {
            if c.state == CallState::Proceeding(Attempt::Calling) {
                let ringing = Duration::from_secs(self.shared.settings.ringing_seconds.max(1));
                self.schedule(ringing, Timer::Ringing(id, key.clone()));
            }
            let Some(c) = self.calls.get_mut(&id) else {
                return;
            };
            let first = match &mut c.state {
                CallState::Proceeding(a) | CallState::Cancelling(a) => {
                    std::mem::replace(a, Attempt::Ringing) == Attempt::Calling
                }
                _ => false,
            };
            if msg::header_param(&to, "tag").is_some() {
                learn_dialog(&mut c.b, resp);
            }
            if c.state.cancelled() {
                // Cancelled before leg B rang: its CANCEL goes now (RFC 3261 §9.1).
                if first {
                    self.send_cancel(id);
                }
                return;
            }
            let a_key = c.a_invite.clone();
            let lines = answer_lines(&self.shared, &c.a, resp);
            // Early media (183): its SDP goes through the relay; a body we cannot read is
            // dropped rather than passed with the far side's addresses in it.
            let body = self
                .relay_body(
                    id,
                    LegId::B,
                    &resp.body,
                    crate::call::media::response_exchange(trunkgate_sip::Method::Invite, resp),
                )
                .unwrap_or_default();
            return self.respond(&a_key, code, &reason_of(resp), &lines, &body);
        }
        c.b_invite = None;
        if code < 300 {
            learn_dialog(&mut c.b, resp);
            if !matches!(c.state, CallState::Proceeding(_)) {
                // Leg A is already gone (CANCEL raced the answer): confirm and end leg B.
                self.ack_b(id, resp);
                self.send_bye(id, LegId::B);
                return self.finish_call(id);
            }
            let body = match self.relay_body(
                id,
                LegId::B,
                &resp.body,
                crate::call::media::response_exchange(trunkgate_sip::Method::Invite, resp),
            ) {
                Ok(b) => b,
                Err(r) => {
                    // The answer cannot be relayed: confirm leg B and hang it up, refuse leg A.
                    self.ack_b(id, resp);
                    self.send_bye(id, LegId::B);
                    return self.fail_a(id, r.code, &r.text);
                }
            };
            let Some(c) = self.calls.get_mut(&id) else {
                return;
            };
            c.state = CallState::Confirmed;
            c.answered = Some(SystemTime::now());
            c.final_code = Some(code);
            // What re-sending the INVITE (failover, digest) needed is not needed any more:
            // an answered call holds only its dialogs (memory per active call).
            c.b_lines = String::new();
            c.b_body = Vec::new();
            c.hops = Vec::new();
            // `auth_line` stays for the ACK (RFC 3261 §13.2.2.4: same credentials as the INVITE).
            c.last_failure = None;
            let a_key = c.a_invite.clone();
            c.a.awaiting_ack = Some(a_key.clone());
            let lines = answer_lines(&self.shared, &c.a, resp);
            if c.a.side == Side::Public {
                self.await_ack(id);
            }
            // RFC 4028: each leg's session timer, from the 2xx the edge got (UAC on leg B)
            // and the one it sends on (UAS on leg A).
            self.session_negotiated(id, LegId::B, resp, true);
            self.session_negotiated(id, LegId::A, resp, false);
            self.respond(&a_key, code, &reason_of(resp), &lines, &body);
            // Answered: from here a restarted edge must find it (crate::fleet::restore).
            return self.checkpoint(id);
        }
        // 3xx-6xx.
        if c.state.cancelled() {
            return self.finish_call(id);
        }
        let trunk = c.trunk;
        if (code == 401 || code == 407) && c.b.side == Side::Public {
            // The carrier challenges the trunk (RFC 3261 §22.2): answer once, once more only
            // after `stale=true`, then give up naming the real cause.
            let creds =
                c.rt.trunk(trunk)
                    .outbound
                    .as_ref()
                    .and_then(|o| o.auth.clone());
            let tries = c.auth_tries;
            let ruri = c.b.remote_target.clone();
            let trunk_id = c.trunk_id().to_string();
            let outcome = match creds {
                None => Err(crate::call::challenge::Unanswered::NoCredentials),
                Some(creds) => match self.auth.answer(resp, "INVITE", &ruri, &creds) {
                    Err(why) => Err(crate::call::challenge::Unanswered::Unusable(why)),
                    Ok((line, stale)) if tries == 0 || (stale && tries < 2) => Ok(line),
                    Ok(_) => Err(crate::call::challenge::Unanswered::Refused {
                        username: creds.username.clone(),
                        realm: creds.realm.clone(),
                    }),
                },
            };
            let label = outcome
                .as_ref()
                .map_or_else(|e| e.metric_label(), |_| "answered");
            self.shared
                .metrics
                .carrier_challenges
                .with_label_values(&[trunk_id.as_str(), "INVITE", label])
                .inc();
            let Some(c) = self.calls.get_mut(&id) else {
                return;
            };
            return match outcome {
                Ok(line) => {
                    c.auth_tries = tries + 1;
                    c.auth_line = Some(line);
                    // Same hop again (RFC 3261 §22.2): `next_hop` already points past it.
                    let dest = c.b.peer.addr();
                    self.send_b_invite(id, dest)
                }
                Err(why) => {
                    let text = why.text(&trunk_id, "INVITE");
                    tracing::warn!(call = id, trunk = trunk_id, "{text}");
                    self.fail_a(id, 403, &text)
                }
            };
        }
        if c.direction == Direction::Outbound && (300..400).contains(&code) {
            return self.redirected(id, resp);
        }
        let retryable = code == 408 || (500..600).contains(&code);
        if c.direction == Direction::Outbound && retryable && c.next_hop < c.hops.len() {
            let label = crate::metrics::code_class(code);
            self.shared
                .metrics
                .failovers
                .with_label_values(&[c.trunk_id(), label])
                .inc();
            c.last_failure = Some((code, reason_of(resp)));
            c.auth_tries = 0;
            c.auth_line = None;
            return self.next_hop(id);
        }
        c.final_code = Some(code);
        let a_key = c.a_invite.clone();
        let lines = msg::copied_lines(resp)
            + &msg::header(resp, "Retry-After")
                .map(|v| format!("Retry-After: {v}\r\n"))
                .unwrap_or_default();
        self.respond(&a_key, code, &reason_of(resp), &lines, &[]);
        self.finish_call(id);
    }

    /// A carrier target answered 3xx (RFC 3261 §8.1.3.4). Its Contacts are followed only
    /// where the trunk already sends or takes calls (one of its targets' host and port, or an
    /// address inside its `allowedCidrs`): a 3xx cannot steer a call, and its caller ID, to a
    /// place the trunk's owner never named. Else the next target is tried; after the last the
    /// platform gets the 3xx with its Contacts and decides.
    fn redirected(&mut self, id: u64, resp: &Response) {
        let code = resp.status_code.code();
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        let trunk = c.rt.trunk(c.trunk);
        let follow = (c.redirects < MAX_REDIRECTS)
            .then(|| {
                msg::list(resp, "Contact")
                    .iter()
                    .map(|v| msg::uri_of(v).to_string())
                    .filter_map(|uri| trunkgate_crds::compile::parse_target(&uri, None, 1, 1).ok())
                    .find(|t| trunk_takes(trunk, t))
            })
            .flatten();
        let trunk_id = trunk.id.clone();
        c.last_failure = Some((code, reason_of(resp)));
        c.auth_tries = 0;
        c.auth_line = None;
        if let Some(target) = follow {
            c.redirects += 1;
            let hop = crate::route::admission::hop_of(&target);
            let at = c.next_hop.min(c.hops.len());
            c.hops.insert(at, hop);
            tracing::info!(call = id, trunk = trunk_id, target = %target.uri, "following a carrier's {code}");
            self.shared
                .metrics
                .failovers
                .with_label_values(&[trunk_id.as_str(), "3xx_followed"])
                .inc();
            return self.next_hop(id);
        }
        if c.next_hop < c.hops.len() {
            self.shared
                .metrics
                .failovers
                .with_label_values(&[trunk_id.as_str(), "3xx"])
                .inc();
            return self.next_hop(id);
        }
        c.final_code = Some(code);
        let a_key = c.a_invite.clone();
        let lines = msg::copied_lines(resp) + &crate::worker::header_lines(resp, "Contact");
        self.respond(&a_key, code, &reason_of(resp), &lines, &[]);
        self.finish_call(id);
    }

    /// A request of ours that timed out or was abandoned.
    /// A request we sent got no answer (`cause`: `timeout`, or `connect_failed` when its TCP
    /// or TLS connection could not be opened): a call's next hop is tried, counted by cause.
    pub(crate) fn client_failed(
        &mut self,
        key: TransactionKey,
        code: u16,
        cause: &'static str,
        text: String,
    ) {
        let Some(tx) = self.clients.get_mut(&key) else {
            return;
        };
        tx.machine.give_up();
        let (id, purpose) = (tx.call, tx.purpose.clone());
        self.schedule(T4, Timer::ClientForget(key.clone()));
        match purpose {
            Purpose::Setup => {
                let Some(c) = self.calls.get_mut(&id) else {
                    return;
                };
                if c.b_invite.as_ref() != Some(&key) {
                    return;
                }
                c.b_invite = None;
                if c.state.cancelled() {
                    return self.finish_call(id);
                }
                if c.direction == Direction::Outbound && c.next_hop < c.hops.len() {
                    self.shared
                        .metrics
                        .failovers
                        .with_label_values(&[c.trunk_id(), cause])
                        .inc();
                    c.last_failure = Some((code, text));
                    c.auth_tries = 0;
                    c.auth_line = None;
                    return self.next_hop(id);
                }
                self.fail_a(id, code, &text);
            }
            Purpose::Relay(server) => self.refuse(&server, code, &text, ""),
            Purpose::Probe(probe) => self.probe_done(&probe, false, &text),
            Purpose::Refresh => self.refresh_failed(id, 408),
            Purpose::Register(trunk) => self.register_failed(&trunk, &text),
            Purpose::Bye | Purpose::Cancel => {}
        }
    }

    /// ACK for leg B's 2xx (a new transaction: RFC 3261 §13.2.2.4).
    pub(super) fn ack_b(&mut self, id: u64, resp: &Response) {
        let branch = self.mint.branch();
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        let hostport = self.shared.hostport_on(c.b.side, &c.b.peer).to_string();
        let to = msg::header(resp, "To").unwrap_or_default();
        let (ruri, routes) = dialog_route(&c.b);
        let mut b =
            Builder::request_via("ACK", &ruri, &via(c.b.peer.transport(), &hostport, &branch));
        for r in routes {
            if r.starts_with('<') {
                b.push("Route", r);
            } else {
                b.push("Route", &format!("<{r}>"));
            }
        }
        let bytes = b
            .header("From", &format!("{};tag={}", c.b.local, c.b.local_tag))
            .header("To", to)
            .header("Call-ID", &c.b.call_id)
            .header("CSeq", &format!("{} ACK", c.b.invite_cseq))
            .finish();
        c.b_ack = Some(bytes);
        if let Some(ack) = &c.b_ack {
            self.out.send(c.b.side, &c.b.peer, ack);
        }
    }

    /// ACKs a 2xx that no call wants (a late answer of an abandoned attempt, another fork's
    /// answer) and, with `bye`, hangs its dialog up.
    pub(crate) fn ack_and_bye_stray(
        &mut self,
        _id: u64,
        key: &TransactionKey,
        resp: &Response,
        bye: bool,
    ) {
        let Some(tx) = self.clients.get(key) else {
            return;
        };
        let (side, dest, ruri, ident, cseq) = (
            tx.side,
            tx.dest.clone(),
            tx.ruri.clone(),
            tx.ident.clone(),
            tx.cseq,
        );
        let to = msg::header(resp, "To").unwrap_or_default().to_string();
        let target = msg::header(resp, "Contact")
            .map(msg::uri_of)
            .map(str::to_string)
            .unwrap_or(ruri);
        let hostport = self.shared.hostport_on(side, &dest).to_string();
        let requests: &[(&str, u32)] = if bye {
            &[("ACK", cseq), ("BYE", cseq + 1)]
        } else {
            &[("ACK", cseq)]
        };
        for &(method, n) in requests {
            let branch = self.mint.branch();
            let bytes =
                Builder::request_via(method, &target, &via(dest.transport(), &hostport, &branch))
                    .ids(&ident, &to, n, method)
                    .finish();
            // No transaction: an ACK of a 2xx has none (§13.2.2.4); this BYE is sent once.
            self.send(side, &dest, &bytes);
        }
    }
}

/// Whether `t` is a place trunk `trunk` already sends to (one of its outbound targets' host and
/// port) or takes calls from (an address inside its `allowedCidrs`).
fn trunk_takes(
    trunk: &trunkgate_crds::snapshot::TrunkConfig,
    t: &trunkgate_crds::snapshot::SipTarget,
) -> bool {
    let port = |p: Option<u16>, secure: bool| p.unwrap_or(if secure { 5061 } else { 5060 });
    let known = trunk
        .outbound
        .iter()
        .flat_map(|o| &o.targets)
        .any(|o| o.host == t.host && port(o.port, o.secure) == port(t.port, t.secure));
    known
        || t.host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| trunk.inbound.allowed_cidrs.iter().any(|n| n.contains(&ip)))
}
