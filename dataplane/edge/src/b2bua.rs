//! The B2BUA: a call's two legs and what passes between them — setup with failover and digest,
//! provisional and final answers, end-to-end ACK, CANCEL, BYE, and in-dialog requests
//! (re-INVITE, UPDATE, PRACK, INFO) relayed with their answers.

use std::net::SocketAddr;
use std::time::SystemTime;

use trunkgate_sip::{Request, Response};

use crate::admission;
use crate::call::{Call, CallState, Direction, Leg, LegId, Side};
use crate::message::{Builder, reason_phrase, via};
use crate::msg;
use crate::transaction::{Role, ServerState, T4, TransactionKey};
use crate::worker::{Link, Lookup, Purpose, Timer, Worker};

fn strip_tag(value: &str) -> String {
    value
        .split(';')
        .filter(|p| !p.trim().to_ascii_lowercase().starts_with("tag="))
        .collect::<Vec<_>>()
        .join(";")
}

fn reason_of(resp: &Response) -> String {
    resp.wire_reason
        .clone()
        .unwrap_or_else(|| reason_phrase(resp.status_code.code()).to_string())
}

impl Worker {
    pub(crate) fn on_new_invite(&mut self, side: Side, src: &Link, req: &Request) {
        let tag = self.mint.tag();
        let key = self.open_server(side, src, req, Some(&tag));
        if self.draining() {
            return self.refuse(
                &key,
                503,
                "edge is draining for maintenance",
                "Retry-After: 30\r\n",
            );
        }
        let rt = self.shared.runtime.load_full();
        let host = self.hostport(side.other()).to_string();
        let admitted = match side {
            Side::Public => admission::inbound(&rt, &mut self.auth, src.addr(), req, &host),
            Side::Internal => admission::outbound(&rt, req, &host),
        };
        let adm = match admitted {
            Ok(a) => a,
            Err(r) => {
                let trunk = r.trunk.map_or("", |t| rt.trunk(t).id.as_str());
                let dir = if side == Side::Public {
                    "inbound"
                } else {
                    "outbound"
                };
                self.metrics()
                    .refusals
                    .with_label_values(&[trunk, dir, r.reason])
                    .inc();
                if side == Side::Public
                    && (r.code == 403 || r.code == 401 && r.reason != "challenge")
                {
                    self.metrics()
                        .auth_failures
                        .with_label_values(&[trunk, r.reason])
                        .inc();
                }
                return self.refuse(&key, r.code, &r.text, &r.extra);
            }
        };
        let dir = if side == Side::Public {
            "inbound"
        } else {
            "outbound"
        };
        let trunk_cfg = rt.trunk(adm.trunk);
        let max_setup = trunk_cfg
            .limits
            .max_calls_in_setup
            .unwrap_or(self.shared.settings.max_calls_in_setup);
        let setup = match rt.state[adm.trunk as usize].begin_setup(max_setup) {
            Ok(s) => s,
            Err(n) => {
                self.metrics()
                    .refusals
                    .with_label_values(&[trunk_cfg.id.as_str(), dir, "max_calls_in_setup"])
                    .inc();
                let text = format!("trunk is at its limit of {n} calls in set-up");
                return self.refuse(&key, 503, &text, "Retry-After: 5\r\n");
            }
        };
        let setup_source = if side == Side::Public {
            match self.shared.setup_sources.admit(Some(src.addr().ip())) {
                Ok(a) => Some(a),
                Err(_) => {
                    self.metrics()
                        .refusals
                        .with_label_values(&[trunk_cfg.id.as_str(), dir, "source_calls_in_setup"])
                        .inc();
                    let text = "this address has its most calls in set-up";
                    return self.refuse(&key, 503, text, "Retry-After: 5\r\n");
                }
            }
        } else {
            None
        };
        // One trunk cannot take the ports every trunk needs: under pressure it gets its share.
        if trunk_cfg.media.relay
            && let Some(engine) = self.media.as_ref()
        {
            let mine = self.rtp_by_trunk.get(&trunk_cfg.id).copied().unwrap_or(0);
            if !crate::media::may_take_ports(
                engine.ports_available(),
                engine.port_pairs(),
                mine,
                rt.relay_trunks,
            ) {
                self.metrics()
                    .refusals
                    .with_label_values(&[trunk_cfg.id.as_str(), dir, "rtp_share"])
                    .inc();
                return self.refuse(
                    &key,
                    503,
                    "trunk holds its share of this edge's RTP ports",
                    "Retry-After: 5\r\n",
                );
            }
        }
        let id = self.next_call;
        self.next_call += 1;
        // Media: the offer goes through this worker's relay unless the trunk says otherwise.
        let trunk_media = &rt.trunk(adm.trunk).media;
        let (media, b_body) = if trunk_media.relay {
            match crate::media::open(
                &mut self.media,
                id,
                side,
                &req.body,
                &trunk_media.codecs,
                trunk_media.behind_nat,
            ) {
                Ok((session, body)) => {
                    *self
                        .rtp_by_trunk
                        .entry(rt.trunk(adm.trunk).id.clone())
                        .or_insert(0) += 1;
                    (Some(session), body)
                }
                Err(r) => {
                    let trunk = rt.trunk(adm.trunk).id.as_str();
                    let dir = if side == Side::Public {
                        "inbound"
                    } else {
                        "outbound"
                    };
                    self.shared
                        .metrics
                        .refusals
                        .with_label_values(&[trunk, dir, r.label])
                        .inc();
                    return self.refuse(&key, r.code, &r.text, "");
                }
            }
        } else {
            (None, req.body.clone())
        };
        // RFC 3261 §17.2.1: the B2BUA will take more than 200 ms to answer.
        self.respond(&key, 100, "Trying", "", &[]);
        let call_id = trunkgate_sip::call_id(req).unwrap_or_default().to_string();
        let from = msg::header(req, "From").unwrap_or_default().to_string();
        let to = msg::header(req, "To").unwrap_or_default().to_string();
        let (cseq, _) = trunkgate_sip::cseq(req).unwrap_or((1, "INVITE"));
        let a = Leg {
            side,
            peer: src.clone(),
            call_id,
            local_tag: tag,
            remote_tag: trunkgate_sip::from_tag(req).map(str::to_string),
            local: strip_tag(&to),
            remote: from,
            remote_target: msg::header(req, "Contact")
                .map(msg::uri_of)
                .unwrap_or_default()
                .to_string(),
            // RFC 3261 §12.1.1: the UAS's route set is the Record-Route list in order.
            route_set: msg::list(req, "Record-Route"),
            local_cseq: 1,
            invite_cseq: cseq,
            awaiting_ack: None,
            reinvite_cseq: None,
        };
        let b = Leg {
            side: side.other(),
            peer: src.clone(),
            call_id: self.mint.call_id(),
            local_tag: self.mint.tag(),
            remote_tag: None,
            local: adm.from.clone(),
            remote: String::new(),
            remote_target: String::new(),
            route_set: Vec::new(),
            local_cseq: 1,
            invite_cseq: 1,
            awaiting_ack: None,
            reinvite_cseq: None,
        };
        let max_forwards = trunkgate_sip::max_forwards(req)
            .unwrap_or(70)
            .saturating_sub(1)
            .max(1);
        let mut b_lines = format!("Max-Forwards: {max_forwards}\r\n");
        b_lines.push_str(&adm.identity_lines);
        b_lines.push_str(&msg::copied_lines(req));
        self.dialogs
            .insert((a.call_id.clone(), a.local_tag.clone()), (id, LegId::A));
        self.dialogs
            .insert((b.call_id.clone(), b.local_tag.clone()), (id, LegId::B));
        if let Some(tx) = self.servers.get_mut(&key) {
            tx.call = Some((id, LegId::A));
        }
        let call = Call {
            rt,
            trunk: adm.trunk,
            direction: adm.direction,
            a,
            b,
            state: CallState::Proceeding,
            a_invite: key,
            b_invite: None,
            hops: adm.hops,
            next_hop: 0,
            b_user: adm.callee_user,
            b_lines,
            b_body,
            auth_line: None,
            auth_tries: 0,
            b_provisional: false,
            cancel_pending: false,
            cancelled: false,
            b_ack: None,
            caller: adm.caller,
            callee: adm.callee,
            started: SystemTime::now(),
            answered: None,
            final_code: None,
            ended_by: None,
            last_failure: None,
            slot: Some(adm.slot),
            setup: Some(setup),
            setup_source,
            media,
            media_stats: Vec::new(),
            bye_lines: String::new(),
        };
        self.calls.insert(id, call);
        self.next_hop(id);
    }

    /// Tries the next B-leg hop, resolving its host when needed.
    fn next_hop(&mut self, id: u64) {
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        if c.cancelled {
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
    fn send_b_invite(&mut self, id: u64, addr: SocketAddr) {
        let branch = self.mint.branch();
        let Some(transport) = self
            .calls
            .get(&id)
            .and_then(|c| c.hops.get(c.next_hop.wrapping_sub(1)))
            .map(|h| h.transport)
        else {
            return self.fail_a(id, 500, "no next hop to send the call to");
        };
        let side = match self.calls.get(&id) {
            Some(c) => c.b.side,
            None => return,
        };
        let dest = match self.link_to(side, addr, transport) {
            Ok(l) => l,
            Err(text) => {
                if let Some(c) = self.calls.get_mut(&id) {
                    c.last_failure = Some((503, text));
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
        c.b_provisional = false;
        let side = c.b.side;
        let hostport = match side {
            Side::Public => self.shared.public_hostport.as_str(),
            Side::Internal => self.shared.internal_hostport.as_str(),
        };
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
    fn fail_a(&mut self, id: u64, code: u16, text: &str) {
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        c.final_code = Some(code);
        let key = c.a_invite.clone();
        self.refuse(&key, code, text, "");
        self.finish_call(id);
    }

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
            Purpose::Bye | Purpose::Cancel => {}
        }
    }

    fn setup_response(&mut self, id: u64, key: TransactionKey, resp: &Response) {
        let code = resp.status_code.code();
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        if c.b_invite.as_ref() != Some(&key) {
            // An abandoned attempt (failover) answered late: accept and hang up at once.
            if (200..300).contains(&code) {
                self.ack_and_bye_stray(id, &key, resp);
            }
            return;
        }
        if code == 100 {
            return;
        }
        let to = msg::header(resp, "To").unwrap_or_default().to_string();
        if code < 200 {
            c.b_provisional = true;
            if msg::param(&to, "tag").is_some() {
                learn_dialog(&mut c.b, resp);
            }
            if c.cancel_pending {
                c.cancel_pending = false;
                return self.send_cancel(id);
            }
            if c.cancelled {
                return;
            }
            let a_key = c.a_invite.clone();
            let lines = answer_lines(&self.shared, &c.a, resp);
            // Early media (183): its SDP goes through the relay; a body we cannot read is
            // dropped rather than passed with the far side's addresses in it.
            let body = self
                .relay_body(id, LegId::B, &resp.body)
                .unwrap_or_default();
            return self.respond(&a_key, code, &reason_of(resp), &lines, &body);
        }
        c.b_invite = None;
        if code < 300 {
            learn_dialog(&mut c.b, resp);
            if c.cancelled || c.state != CallState::Proceeding {
                // Leg A is already gone (CANCEL raced the answer): confirm and end leg B.
                self.ack_b(id, resp);
                self.send_bye(id, LegId::B);
                return self.finish_call(id);
            }
            let body = match self.relay_body(id, LegId::B, &resp.body) {
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
            return self.respond(&a_key, code, &reason_of(resp), &lines, &body);
        }
        // 3xx-6xx.
        if c.cancelled {
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
                None => Err(crate::challenge::Unanswered::NoCredentials),
                Some(creds) => match self.auth.answer(resp, "INVITE", &ruri, &creds) {
                    Err(why) => Err(crate::challenge::Unanswered::Unusable(why)),
                    Ok((line, stale)) if tries == 0 || (stale && tries < 2) => Ok(line),
                    Ok(_) => Err(crate::challenge::Unanswered::Refused {
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

    /// A request of ours that timed out or was abandoned.
    pub(crate) fn client_failed(&mut self, key: TransactionKey, code: u16, text: String) {
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
                if c.cancelled {
                    return self.finish_call(id);
                }
                if c.direction == Direction::Outbound && c.next_hop < c.hops.len() {
                    self.shared
                        .metrics
                        .failovers
                        .with_label_values(&[c.trunk_id(), "timeout"])
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
            Purpose::Bye | Purpose::Cancel => {}
        }
    }

    /// ACK for leg B's 2xx (a new transaction: RFC 3261 §13.2.2.4).
    fn ack_b(&mut self, id: u64, resp: &Response) {
        let branch = self.mint.branch();
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        let hostport = match c.b.side {
            Side::Public => self.shared.public_hostport.clone(),
            Side::Internal => self.shared.internal_hostport.clone(),
        };
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
            self.net.send(c.b.side, &c.b.peer, ack);
        }
    }

    fn ack_and_bye_stray(&mut self, _id: u64, key: &TransactionKey, resp: &Response) {
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
        let hostport = self.hostport(side).to_string();
        for (method, n) in [("ACK", cseq), ("BYE", cseq + 1)] {
            let branch = self.mint.branch();
            let bytes =
                Builder::request_via(method, &target, &via(dest.transport(), &hostport, &branch))
                    .ids(&ident, &to, n, method)
                    .finish();
            // No transaction: an ACK of a 2xx has none (§13.2.2.4); this BYE is sent once.
            self.send(side, &dest, &bytes);
        }
    }

    /// CANCEL of leg B's pending INVITE (RFC 3261 §9.1: same branch, Request-URI, Call-ID,
    /// From, To and CSeq number).
    fn send_cancel(&mut self, id: u64) {
        let Some(c) = self.calls.get(&id) else { return };
        let Some(inv) = c.b_invite.clone() else {
            return;
        };
        let Some(tx) = self.clients.get(&inv) else {
            return;
        };
        let hostport = self.hostport(tx.side).to_string();
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
            self_hostport(&self.shared, l.side),
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
        if matches!(c.state, CallState::Ended | CallState::Ending) {
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
                CallState::Proceeding => {
                    c.final_code = Some(503);
                    let key = c.a_invite.clone();
                    self.refuse(&key, 503, "edge shutting down", "Retry-After: 5\r\n");
                    self.end_call(id, None, "shutdown");
                }
                CallState::Confirmed => {
                    c.bye_lines = "Reason: SIP;cause=503;text=\"edge shutting down\"\r\n".into();
                    self.end_call(id, None, "shutdown");
                }
                CallState::Ending | CallState::Ended => {}
            }
        }
    }

    pub(crate) fn on_ack(&mut self, side: Side, src: &Link, req: &Request) {
        let key = TransactionKey::from_request(req, Role::Server);
        if let Some(tx) = self.servers.get_mut(&key)
            && tx.machine.state() == ServerState::Completed
            && (side == Side::Internal || tx.peer.addr().ip() == src.addr().ip())
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
        let body = self.relay_body(id, leg, &req.body).unwrap_or_default();
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
            self_hostport(&self.shared, l.side),
        );
        self.net.send(side, &peer, &bytes);
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
        c.cancelled = true;
        c.final_code = Some(487);
        c.ended_by = Some(side.party());
        c.state = CallState::Ending;
        if c.b_invite.is_some() {
            if c.b_provisional {
                self.send_cancel(id);
            } else {
                c.cancel_pending = true;
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
    fn relay_request(&mut self, id: u64, from: LegId, server: TransactionKey, req: &Request) {
        let branch = self.mint.branch();
        let to = from.other();
        let method = req.method;
        let body = match self.relay_body(id, from, &req.body) {
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
        let hp = self_hostport(&self.shared, l.side);
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
    fn relay_response(
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
        let body = match self.relay_body(id, sent_on, &resp.body) {
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
                contact(&self_hostport(&self.shared, l.side), &l.peer)
            );
        }
        if matches!(method, M::Invite | M::Update) && (200..300).contains(&code) {
            refresh_target(c.leg_mut(sent_on), resp);
        }
        if method == M::Invite && (200..300).contains(&code) {
            c.leg_mut(sent_on).reinvite_cseq = Some(cseq);
            c.leg_mut(from).awaiting_ack = Some(server.clone());
        }
        self.respond(&server, code, &reason_of(resp), &lines, &body);
    }
}

/// The resolver's name for a configured transport.
pub(crate) fn resolve_transport(t: trunkgate_crds::Transport) -> trunkgate_resolve::Transport {
    match t {
        trunkgate_crds::Transport::Udp => trunkgate_resolve::Transport::Udp,
        trunkgate_crds::Transport::Tcp => trunkgate_resolve::Transport::Tcp,
        trunkgate_crds::Transport::Tls => trunkgate_resolve::Transport::Tls,
    }
}

pub(crate) fn crds_transport(t: trunkgate_resolve::Transport) -> trunkgate_crds::Transport {
    match t {
        trunkgate_resolve::Transport::Udp => trunkgate_crds::Transport::Udp,
        trunkgate_resolve::Transport::Tcp => trunkgate_crds::Transport::Tcp,
        trunkgate_resolve::Transport::Tls => trunkgate_crds::Transport::Tls,
    }
}

/// What a provisional or 2xx answer on leg B teaches about its dialog: the remote tag, target
/// (Contact) and route set (Record-Route reversed, RFC 3261 §12.1.2).
fn learn_dialog(b: &mut Leg, resp: &Response) {
    let to = msg::header(resp, "To").unwrap_or_default();
    b.remote_tag = msg::param(to, "tag").map(str::to_string);
    b.remote = to.to_string();
    if let Some(ct) = msg::header(resp, "Contact") {
        b.remote_target = msg::uri_of(ct).to_string();
    }
    b.route_set = msg::list(resp, "Record-Route");
    b.route_set.reverse();
}

/// The Request-URI and Route values of a request inside a leg's dialog (RFC 3261 §12.2.1.1):
/// with a loose router first (`lr`), the remote target and the route set as it is; with a strict
/// router, that router's URI as Request-URI and the remote target as the last Route.
fn dialog_route(l: &Leg) -> (String, Vec<&str>) {
    let target = if l.remote_target.is_empty() {
        format!("sip:{}", crate::settings::host_port(l.peer.addr()))
    } else {
        l.remote_target.clone()
    };
    match l.route_set.split_first() {
        Some((first, rest)) if msg::param(msg::uri_of(first), "lr").is_none() => {
            let mut routes: Vec<&str> = rest.iter().map(String::as_str).collect();
            routes.push(&l.remote_target);
            (msg::uri_of(first).to_string(), routes)
        }
        _ => (target, l.route_set.iter().map(String::as_str).collect()),
    }
}

/// RFC 3261 §12.2.2 target refresh: a re-INVITE or UPDATE (or its 2xx) with a Contact moves
/// the peer's remote target.
fn refresh_target(l: &mut Leg, m: &impl trunkgate_sip::HasHeaders) {
    if let Some(ct) = msg::header(m, "Contact") {
        let uri = msg::uri_of(ct);
        if !uri.is_empty() {
            l.remote_target = uri.to_string();
        }
    }
}

/// Headers of an answer relayed to leg A: our Contact and the copied ones.
fn answer_lines(shared: &crate::worker::Shared, a: &Leg, resp: &Response) -> String {
    format!(
        "Contact: {}\r\n{}",
        contact(shared.hostport(a.side), &a.peer),
        msg::copied_lines(resp)
    )
}

/// Our Contact on a leg: a `sip:` URI means UDP (RFC 3263 §4.1), so a leg over TCP says so, or
/// the peer's in-dialog requests would come back over UDP.
fn contact(hostport: &str, link: &Link) -> String {
    if link.reliable() {
        format!("<sip:{hostport};transport=tcp>")
    } else {
        format!("<sip:{hostport}>")
    }
}

fn self_hostport(shared: &crate::worker::Shared, side: Side) -> String {
    match side {
        Side::Public => shared.public_hostport.clone(),
        Side::Internal => shared.internal_hostport.clone(),
    }
}

/// A request inside a leg's dialog (RFC 3261 §12.2.1.1).
#[allow(clippy::too_many_arguments)]
fn in_dialog_request(
    l: &Leg,
    method: &str,
    branch: &str,
    cseq: u32,
    contact_hostport: Option<&str>,
    lines: &str,
    body: &[u8],
    hostport: String,
) -> (Vec<u8>, String, String, Side, Link) {
    let (ruri, routes) = dialog_route(l);
    let ident = format!(
        "From: {};tag={}\r\nCall-ID: {}\r\n",
        l.local, l.local_tag, l.call_id
    );
    let mut b = Builder::request_via(method, &ruri, &via(l.peer.transport(), &hostport, branch));
    for r in routes {
        if r.starts_with('<') {
            b.push("Route", r);
        } else {
            b.push("Route", &format!("<{r}>"));
        }
    }
    b = b
        .raw(&ident)
        .header("To", &l.remote)
        .header("CSeq", &format!("{cseq} {method}"));
    if let Some(hp) = contact_hostport {
        b.push("Contact", &contact(hp, &l.peer));
    }
    let bytes = b.raw(lines).body(body);
    (bytes, ruri, ident, l.side, l.peer.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leg(routes: &[&str]) -> Leg {
        Leg {
            side: Side::Public,
            peer: Link::Udp("192.0.2.7:5060".parse().expect("an address")),
            call_id: "c1".into(),
            local_tag: "tg1".into(),
            remote_tag: Some("r1".into()),
            local: "<sip:+6498879333@edge.example>".into(),
            remote: "<sip:+6421555123@carrier.example>;tag=r1".into(),
            remote_target: "sip:ua@198.51.100.9:5070".into(),
            route_set: routes.iter().map(|r| r.to_string()).collect(),
            local_cseq: 1,
            invite_cseq: 1,
            awaiting_ack: None,
            reinvite_cseq: None,
        }
    }

    #[test]
    fn loose_routers_keep_the_remote_target_and_the_route_set() {
        let l = leg(&["<sip:p1.example;lr;ftag=x>", "<sip:p2.example;lr=on>"]);
        let (ruri, routes) = dialog_route(&l);
        assert_eq!(ruri, "sip:ua@198.51.100.9:5070");
        assert_eq!(
            routes,
            ["<sip:p1.example;lr;ftag=x>", "<sip:p2.example;lr=on>"]
        );
    }

    #[test]
    fn a_strict_router_first_takes_the_request_uri_and_the_target_goes_last() {
        // RFC 3261 §12.2.1.1: Request-URI = first route's URI, Route = the rest + remote target.
        let l = leg(&["<sip:strict.example>", "<sip:p2.example;lr>"]);
        let (ruri, routes) = dialog_route(&l);
        assert_eq!(ruri, "sip:strict.example");
        assert_eq!(routes, ["<sip:p2.example;lr>", "sip:ua@198.51.100.9:5070"]);
    }

    #[test]
    fn no_route_set_sends_to_the_target_or_the_peer() {
        let mut l = leg(&[]);
        assert_eq!(dialog_route(&l).0, "sip:ua@198.51.100.9:5070");
        l.remote_target.clear();
        assert_eq!(dialog_route(&l).0, "sip:192.0.2.7:5060");
    }

    #[test]
    fn a_contact_in_a_reinvite_or_its_answer_moves_the_remote_target() {
        let mut l = leg(&[]);
        let req = trunkgate_sip::parse(
            b"INVITE sip:x@e SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.9;branch=z9hG4bK1\r\nFrom: <sip:a@c>;tag=r1\r\nTo: <sip:b@e>;tag=tg1\r\nCall-ID: c1\r\nCSeq: 2 INVITE\r\nMax-Forwards: 70\r\nContact: <sip:ua@198.51.100.10:5080;transport=tcp>\r\nContent-Length: 0\r\n\r\n",
        )
        .expect("a valid request");
        let trunkgate_sip::SipMessage::Request(req) = req else {
            panic!("a request");
        };
        refresh_target(&mut l, &req);
        assert_eq!(l.remote_target, "sip:ua@198.51.100.10:5080;transport=tcp");
    }
}
