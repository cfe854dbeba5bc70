//! Receiving: datagrams and TCP messages checked against the allow-lists and rate limits,
//! parsed, handed to the worker that owns them, and sorted into requests and responses.

use std::net::SocketAddr;

use trunkgate_sip::{HasHeaders, Request, SipMessage};

use super::*;
use crate::call::Side;
use crate::call::b2bua::session_timer::{MIN_SE, session_expires};
use crate::guard::source_limit::{Class, Verdict};
use crate::sip::ids::owner;
use crate::sip::message::Builder;
use crate::sip::msg;
use crate::sip::transaction::{Role, TransactionKey};

impl Worker {
    // ---- receiving -------------------------------------------------------------------------

    pub(super) fn on_datagram(&mut self, side: Side, src: SocketAddr, data: &[u8]) {
        // One snapshot for the ACL and the source's budget (a datagram's hot path).
        let rt = self.shared.runtime.load();
        let allowed = match side {
            Side::Public => rt.source_allowed(src.ip()),
            Side::Internal => self.shared.platform.allows(src.ip()),
        };
        if allowed {
            let class = if crate::sip::ids::may_carry_ours(data) {
                Class::Ongoing
            } else {
                Class::New
            };
            if side == Side::Public && self.over_rate(&rt, src.ip(), class) {
                return;
            }
        } else if !crate::sip::ids::may_carry_ours(data) && !self.shared.settings.acl_reply_403 {
            // Outside the allow-lists only a message of ours may go on, and it carries one
            // of our tags or branches: anything else is dropped unparsed (a flood of them
            // then costs a look-up and a scan, not a parse).
            return self.count_acl_drop(side);
        }
        match trunkgate_sip::parse(data) {
            Ok(m) => self.on_message(side, &Link::Udp(src), m, true),
            Err(trunkgate_sip::CodecError::KeepAlive) => {}
            Err(e) => {
                self.metrics()
                    .malformed
                    .with_label_values(&[side.label(), e.metric_label()])
                    .inc();
                if !allowed {
                    self.metrics()
                        .acl_drops
                        .with_label_values(&[side.label()])
                        .inc();
                    return;
                }
                if let Some(mut reply) = e.reply() {
                    reply.headers.push(trunkgate_sip::warning(
                        &self.shared.public_hostport,
                        e.reason(),
                    ));
                    self.send(side, &Link::Udp(src), &trunkgate_sip::serialize(&reply));
                }
            }
        }
    }

    /// Whether a datagram of `class` from `ip` (an allowed carrier-side source) is over its
    /// budget (`rt`'s trunks size it, `--source-rate` is the floor): then it is shed (counted;
    /// the first of an episode logged).
    pub(crate) fn over_rate(&self, rt: &Arc<Runtime>, ip: std::net::IpAddr, class: Class) -> bool {
        // The snapshot's identity: a source is sized again when a new one is loaded.
        let sized_by = Arc::as_ptr(rt) as usize;
        match self
            .shared
            .source_limit
            .check_sized(ip, class, self.now, sized_by, || rt.source_budget(ip))
        {
            Verdict::Pass => false,
            Verdict::Shed { first } => {
                let m = self.metrics();
                m.source_dropped.inc();
                if first {
                    m.source_shedding.with_label_values(&["public"]).inc();
                    tracing::warn!(
                        source = %ip,
                        rate = rt.source_budget(ip).max(self.shared.settings.source_rate),
                        "carrier-side source over its request rate: its excess is dropped unanswered (logged once per episode)"
                    );
                }
                true
            }
        }
    }

    /// Whether any CarrierTrunk's `allowedCidrs` holds `src` (the carrier ACL).
    pub(crate) fn source_allowed(&self, src: SocketAddr) -> bool {
        self.shared.runtime.load().source_allowed(src.ip())
    }

    /// Whether `src` may speak on `side`: a carrier some trunk allows, or the platform
    /// (`--platform-cidrs`). Default deny on both sides.
    pub(crate) fn side_allows(&self, side: Side, src: SocketAddr) -> bool {
        match side {
            Side::Public => self.source_allowed(src),
            Side::Internal => self.shared.platform.allows(src.ip()),
        }
    }

    pub(super) fn hand_off(&mut self, to: usize, side: Side, src: &Link, m: SipMessage) {
        self.out.push(Output::HandOff {
            to,
            handoff: Handoff {
                side,
                src: src.clone(),
                msg: Box::new(m),
            },
        });
    }

    pub fn on_message(&mut self, side: Side, src: &Link, m: SipMessage, may_hand_off: bool) {
        // Messages of calls already up pass even when a reload has since removed the carrier's
        // addresses (the call keeps the configuration it started with): they carry a branch or
        // tag we minted, and are dropped later if they match nothing.
        // The worker named by our branch (responses) or our To tag (in-dialog requests).
        let minted = match &m {
            SipMessage::Response(r) => trunkgate_sip::top_via_branch(r).and_then(owner),
            SipMessage::Request(r) => trunkgate_sip::to_tag(r).and_then(owner),
            SipMessage::Extension(_) => None,
        };
        // A source outside every trunk's allowedCidrs gets nothing back: only a message of a
        // transaction or dialog of ours, from the very address that one uses, goes on (the
        // checks are in `on_response` and `gate::expected`).
        let allowed = self.side_allows(side, src.addr());
        if !allowed && minted.is_none() {
            self.metrics()
                .acl_drops
                .with_label_values(&[side.label()])
                .inc();
            if self.shared.settings.acl_reply_403
                && let SipMessage::Request(r) = &m
                && r.method != trunkgate_sip::Method::Ack
            {
                let key = self.open_server(side, src, r, None);
                let why = match side {
                    Side::Public => "source address not allowed by any CarrierTrunk",
                    Side::Internal => "source address not in --platform-cidrs",
                };
                self.refuse(&key, 403, why, "");
            }
            return;
        }
        match m {
            SipMessage::Response(r) => match minted {
                Some(w) if may_hand_off && w != self.index => {
                    self.hand_off(w, side, src, SipMessage::Response(r))
                }
                _ => self.on_response(side, src, &r, allowed),
            },
            SipMessage::Request(r) => {
                // Our To tag names the owner; a request without one (a new INVITE, its CANCEL
                // and retransmissions) belongs to the worker its Call-ID hashes to, so one
                // carrier's calls spread over every core although the kernel hands all of its
                // datagrams (one source address) to the same socket.
                let workers = self.shared.handoff.len();
                let to =
                    minted.or_else(|| trunkgate_sip::call_id(&r).map(|c| home_worker(c, workers)));
                match to {
                    Some(w) if may_hand_off && w != self.index => {
                        self.hand_off(w, side, src, SipMessage::Request(r))
                    }
                    _ => self.on_request(side, src, &r, allowed),
                }
            }
            SipMessage::Extension(r) => {
                // RFC 3261 §8.2.1: a method we do not know gets 501.
                let prefix = response_prefix_of(&r, src.addr(), None);
                let bytes = Builder::response(501, "Not Implemented")
                    .raw(&prefix)
                    .header("Allow", ALLOW)
                    .finish();
                self.send(side, src, &bytes);
            }
        }
    }

    pub(super) fn on_request(&mut self, side: Side, src: &Link, req: &Request, allowed: bool) {
        use trunkgate_sip::Method as M;
        if !allowed && !self.expected(side, src, req) {
            // A forged tag or branch from outside the allow-lists: silence (default deny).
            return self.count_acl_drop(side);
        }
        if req.method == M::Ack {
            return self.on_ack(side, src, req);
        }
        if req.method == M::Cancel {
            return self.on_cancel(side, src, req);
        }
        let key = TransactionKey::from_request(req, Role::Server);
        if let Some(tx) = self.servers.get(&key) {
            // A retransmission: repeat the last response (§17.2.1, §17.2.2).
            if tx.machine.on_retransmission().resend
                && let Some(bytes) = &tx.last
            {
                self.out.send(tx.side, &tx.peer, bytes);
            }
            self.hot.retransmissions[side.index()].inc();
            return;
        }
        if trunkgate_sip::max_forwards(req) == Some(0) && req.method != M::Options {
            let k = self.open_server(side, src, req, None);
            return self.refuse(&k, 483, "Max-Forwards reached 0", "");
        }
        if self.is_loop(req) {
            let k = self.open_server(side, src, req, None);
            return self.refuse(&k, 482, "request already passed through this edge", "");
        }
        // RFC 4028 §6: a session interval below our Min-SE (90 s, §4's floor) is refused 422.
        if matches!(req.method, M::Invite | M::Update)
            && session_expires(req).is_some_and(|(s, _)| s < MIN_SE)
        {
            let k = self.open_server(side, src, req, None);
            let lines = format!("Min-SE: {MIN_SE}\r\n");
            return self.refuse(&k, 422, "Session-Expires below 90 s (RFC 4028)", &lines);
        }
        if trunkgate_sip::to_tag(req).is_some() {
            return self.on_in_dialog(side, src, req);
        }
        match req.method {
            M::Invite => self.on_new_invite(side, src, req),
            M::Options => {
                let k = self.open_server(side, src, req, None);
                self.metrics().options_answered.inc();
                let lines = format!(
                    "Allow: {ALLOW}\r\nAccept: application/sdp\r\nSupported: 100rel, timer\r\n"
                );
                self.respond(&k, 200, "OK", &lines, &[]);
            }
            M::Register | M::Subscribe | M::Publish | M::Message | M::Refer | M::Notify => {
                let k = self.open_server(side, src, req, None);
                let lines = format!("Allow: {ALLOW}\r\n");
                self.refuse(&k, 405, "the edge only carries calls", &lines);
            }
            _ => {
                let k = self.open_server(side, src, req, None);
                self.refuse(&k, 481, "no such call", "");
            }
        }
    }

    /// RFC 3261 §16.3 item 4 in spirit: a request carrying a Via we minted came back to us.
    pub(super) fn is_loop(&self, req: &Request) -> bool {
        msg::headers(req, "Via")
            .flat_map(trunkgate_sip::list_entries)
            .any(|v| {
                msg::via_param(v, "branch").and_then(owner).is_some()
                    && (v.contains(self.shared.public_hostport.as_str())
                        || v.contains(self.shared.internal_hostport.as_str()))
            })
    }

    pub(super) fn on_event(&mut self, e: Event) {
        match e {
            Event::Resolved {
                lookup: Lookup::Call(call),
                result,
            } => self.on_resolved(call, result),
            Event::Resolved {
                lookup: Lookup::Probe { probe, uri_host },
                result,
            } => self.on_probe_resolved(probe, &uri_host, result),
            Event::Resolved {
                lookup:
                    Lookup::Register {
                        trunk,
                        cseq,
                        expires,
                    },
                result,
            } => self.on_register_resolved(trunk, cseq, expires, result),
            Event::Message { side, src, msg } => {
                let class = match &*msg {
                    SipMessage::Response(_) => Class::Ongoing,
                    SipMessage::Request(r) if trunkgate_sip::to_tag(r).is_some() => Class::Ongoing,
                    _ => Class::New,
                };
                if side == Side::Public
                    && self.over_rate(&self.shared.runtime.load(), src.addr().ip(), class)
                {
                    return;
                }
                self.on_message(side, &src, *msg, true)
            }
            Event::LinkFailed { addr } => self.on_link_failed(addr),
            Event::Claimed { call, verdict } => self.on_claimed(call, verdict),
        }
    }
}

/// The lines every response to `req` repeats: Via (top one with received/rport, RFC 3581),
/// From, To (with our tag), Call-ID, CSeq.
pub fn response_prefix(req: &Request, src: SocketAddr, tag: Option<&str>) -> String {
    response_prefix_of(req, src, tag)
}

pub fn response_prefix_of(m: &impl HasHeaders, src: SocketAddr, tag: Option<&str>) -> String {
    let mut s = String::with_capacity(512);
    for (i, via) in msg::headers(m, "Via").enumerate() {
        s.push_str("Via: ");
        if i == 0 {
            s.push_str(&with_received(via, src));
        } else {
            s.push_str(via);
        }
        s.push_str("\r\n");
    }
    for name in ["From", "To", "Call-ID", "CSeq"] {
        if let Some(v) = msg::header(m, name) {
            s.push_str(name);
            s.push_str(": ");
            s.push_str(v);
            if name == "To"
                && msg::header_param(v, "tag").is_none()
                && let Some(t) = tag
            {
                s.push_str(";tag=");
                s.push_str(t);
            }
            s.push_str("\r\n");
        }
    }
    s
}

/// RFC 3261 §18.2.1 `received` and RFC 3581 `rport` on the top Via.
pub(super) fn with_received(via: &str, src: SocketAddr) -> String {
    let mut parts: Vec<String> = Vec::new();
    for (i, p) in via.split(';').enumerate() {
        let name = p.split('=').next().unwrap_or("").trim();
        if i > 0 && name.eq_ignore_ascii_case("rport") {
            parts.push(format!("rport={}", src.port()));
        } else if i > 0 && name.eq_ignore_ascii_case("received") {
            continue;
        } else {
            parts.push(p.to_string());
        }
    }
    let mut out = parts.join(";");
    out.push_str(&format!(";received={}", src.ip()));
    out
}
