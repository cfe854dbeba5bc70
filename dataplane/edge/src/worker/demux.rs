//! The worker: the demultiplexer between its inputs (datagrams, TCP messages, hand-offs,
//! events, timers) and what each concerns — a transaction ([`Transactions`]), a call (the call
//! machine, [`crate::call::machine`]), a probe, a registration, a call of a previous run — and
//! the one place that holds them all. Its fields are its module's alone; every concern gets
//! from it only the context its step needs ([`Ctx`] for a call, [`Io`] for the rest).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use trunkgate_sip::{Request, Response, SipMessage};

use super::calls::Calls;
use super::io::io;
use super::media::Relay;
use super::register::Registrar;
use super::transactions::{Answered, NewClient, Transactions};
use super::{
    ALLOW, Event, Handoff, Link, Lookup, Output, Purpose, Shared, Timer, challenges, gate,
    home_worker, invite, probes, restore,
};
use crate::call::b2bua::reason_of;
use crate::call::b2bua::session_timer::{MIN_SE, session_expires};
use crate::call::challenge::{MAX_TRIES, Unanswered, Unusable};
use crate::call::checkpoint::CallRecord;
use crate::call::machine::{Again, CallPurpose, CallTimer, Ctx, Effect, NewCall, SetupAnswer};
use crate::call::{Call, CallState, LegId, Side};
use crate::config::Runtime;
use crate::guard::auth::AuthState;
use crate::guard::source_limit::{Class, Verdict};
use crate::route::health::Prober;
use crate::sip::ids::{IdMint, owner};
use crate::sip::message::Builder;
use crate::sip::msg::method_name;
use crate::sip::transaction::{Role, TransactionKey};
use crate::transport::tcp::Connections;

/// One worker's state.
pub struct Worker {
    pub(super) index: usize,
    pub(super) shared: Arc<Shared>,
    /// The time of the input being handled: the runtime sets it, tests move it.
    pub(super) now: Instant,
    pub(super) mint: IdMint,
    /// Its transactions, timers and the outbox of the input being handled.
    pub(super) sip: Transactions,
    pub(super) calls: Calls,
    /// Its media relay.
    pub(super) relay: Relay,
    pub(super) auth: AuthState,
    /// The OPTIONS probes of the carrier targets this worker watches.
    pub(super) prober: Prober,
    /// The TCP and TLS connections this worker opened.
    pub(super) tcp: Connections,
    /// The trunk registrations this worker holds.
    pub(super) registrar: Registrar,
    /// Calls of the previous run still to restore (`restore.rs`).
    pub(super) restoring: Vec<CallRecord>,
    /// When the worker started.
    pub(super) started: Instant,
    /// The call machine's effects, a buffer reused from one transition to the next.
    pub(super) effects: Vec<Effect>,
}

impl Worker {
    /// Worker `index` with no calls yet, on `media` (None: relayed calls get 503).
    pub fn new(
        index: usize,
        shared: Arc<Shared>,
        media: Option<trunkgate_media::MediaEngine>,
    ) -> Self {
        let auth = AuthState::new(
            shared.nonce_key,
            index,
            shared.lockout.clone(),
            shared.metrics.auth_blocks.clone(),
            shared.metrics.auth_uri_differs.clone(),
        );
        let now = Instant::now();
        let restoring = shared
            .restore
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(index)
            .map(std::mem::take)
            .unwrap_or_default();
        let tcp = Connections::new(
            shared.tcp.clone(),
            shared.tcp_timeouts(),
            shared.tls_handshake(),
            shared.tls.clone(),
        );
        Worker {
            index,
            sip: Transactions::new(shared.clone(), now),
            relay: Relay::new(media, shared.metrics.clone()),
            prober: Prober::new(index, shared.handoff.len()),
            shared,
            now,
            mint: IdMint::new(index),
            calls: Calls::default(),
            auth,
            tcp,
            registrar: Registrar::default(),
            restoring,
            started: now,
            effects: Vec::new(),
        }
    }

    /// The first input at `now`: calls of a previous run restored, the probe tick started.
    pub fn start(&mut self, now: Instant) {
        self.now = now;
        self.restore_pending();
        self.schedule(crate::route::health::TICK, Timer::ProbeTick);
    }

    fn draining(&self) -> bool {
        self.shared.draining.load(Ordering::Acquire)
    }

    fn schedule(&mut self, after: Duration, t: Timer) {
        self.sip.schedule(self.now, after, t);
    }

    // ---- timers ----------------------------------------------------------------------------

    /// Runs every timer due at `self.now`.
    pub fn fire_timers(&mut self) {
        while let Some(t) = self.sip.due(self.now) {
            self.on_timer(t);
        }
    }

    fn on_timer(&mut self, t: Timer) {
        let now = self.now;
        match t {
            Timer::Client(key, t) => {
                if self.sip.client_timer(now, key.clone(), t) {
                    // Kept a while by client_failed, to absorb late answers.
                    let text = "no answer within 32 s (RFC 3261 timer B/F)".into();
                    self.client_failed(key, 408, "timeout", text);
                }
            }
            Timer::Server(key, t) => {
                if let Some(id) = self.sip.server_timer(now, key, t) {
                    // RFC 3261 §13.3.1.4: the dialog is confirmed but the session SHOULD end,
                    // with a BYE on this leg too (its peer may well think the call is up).
                    tracing::info!(call = id, "no ACK for 2xx; ending the call");
                    self.drive(id, |c, ctx| c.end(ctx, None, "no ACK"));
                }
            }
            Timer::Failover(key) => {
                if self.sip.failover_due(&key) {
                    let secs = self.shared.settings.failover_seconds;
                    let text = format!("carrier target did not answer within {secs} s");
                    self.client_failed(key, 408, "timeout", text);
                }
            }
            Timer::ClientForget(key) => self.sip.forget_client(&key),
            Timer::CallForget(id) => self.calls.forget(id),
            Timer::Ringing(id, key) => {
                self.drive(id, |c, ctx| c.ringing_too_long(ctx, &key));
            }
            Timer::Session(id, leg) => {
                self.drive(id, |c, ctx| c.session_due(ctx, leg));
            }
            Timer::CancelGuard(key) => {
                if self.sip.still_pending(&key) {
                    tracing::warn!(
                        "a CANCELed INVITE got no final answer within 64*T1: the call ends (RFC 3261 §9.1)"
                    );
                    let text = "no final answer 64*T1 after the CANCEL".into();
                    self.client_failed(key, 408, "timeout", text);
                }
            }
            Timer::ProbeTick => self.probe_tick(),
        }
    }

    // ---- receiving -------------------------------------------------------------------------

    /// A datagram from `src` on `side`: the allow-list and the source's budget first, then
    /// parsed and demultiplexed.
    pub fn on_datagram(&mut self, side: Side, src: SocketAddr, data: &[u8]) {
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
            return self.shared.count_acl_drop(side);
        }
        match trunkgate_sip::parse(data) {
            Ok(m) => self.on_message(side, &Link::Udp(src), m, true),
            Err(trunkgate_sip::CodecError::KeepAlive) => {}
            Err(e) => {
                self.shared
                    .metrics
                    .malformed
                    .with_label_values(&[side.label(), e.metric_label()])
                    .inc();
                if !allowed {
                    return self.shared.count_acl_drop(side);
                }
                if let Some(mut reply) = e.reply() {
                    reply.headers.push(trunkgate_sip::warning(
                        &self.shared.public_hostport,
                        e.reason(),
                    ));
                    let bytes = trunkgate_sip::serialize(&reply);
                    self.sip.send(side, &Link::Udp(src), &bytes);
                }
            }
        }
    }

    /// Whether a datagram of `class` from `ip` (an allowed carrier-side source) is over its
    /// budget (`rt`'s trunks size it, `--source-rate` is the floor): then it is shed (counted;
    /// the first of an episode logged).
    fn over_rate(&self, rt: &Arc<Runtime>, ip: std::net::IpAddr, class: Class) -> bool {
        // The snapshot's identity: a source is sized again when a new one is loaded.
        let sized_by = Arc::as_ptr(rt) as usize;
        match self
            .shared
            .source_limit
            .check_sized(ip, class, self.now, sized_by, || rt.source_budget(ip))
        {
            Verdict::Pass => false,
            Verdict::Shed { first } => {
                let m = &self.shared.metrics;
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

    /// A parsed message: handed to the worker that owns what it belongs to, or handled here.
    /// `may_hand_off` is false for a message another worker handed over.
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
        // checks are in `Transactions::on_response` and `gate::expected`).
        let allowed = self.shared.side_allows(side, src.addr());
        if !allowed && minted.is_none() {
            self.shared.count_acl_drop(side);
            if self.shared.settings.acl_reply_403
                && let SipMessage::Request(r) = &m
                && r.method != trunkgate_sip::Method::Ack
            {
                let why = match side {
                    Side::Public => "source address not allowed by any CarrierTrunk",
                    Side::Internal => "source address not in --platform-cidrs",
                };
                self.sip
                    .open_and_refuse(self.now, side, src, r, 403, why, "");
            }
            return;
        }
        let hand_off = |to: usize, m: SipMessage| Output::HandOff {
            to,
            handoff: Handoff {
                side,
                src: src.clone(),
                msg: Box::new(m),
            },
        };
        match m {
            SipMessage::Response(r) => match minted {
                Some(w) if may_hand_off && w != self.index => {
                    self.sip.push(hand_off(w, SipMessage::Response(r)))
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
                        self.sip.push(hand_off(w, SipMessage::Request(r)))
                    }
                    _ => self.on_request(side, src, &r, allowed),
                }
            }
            SipMessage::Extension(r) => {
                // RFC 3261 §8.2.1: a method we do not know gets 501.
                let prefix = super::receive::response_prefix_of(&r, src.addr(), None);
                let bytes = Builder::response(501, "Not Implemented")
                    .raw(&prefix)
                    .header("Allow", ALLOW)
                    .finish();
                self.sip.send(side, src, &bytes);
            }
        }
    }

    fn on_request(&mut self, side: Side, src: &Link, req: &Request, allowed: bool) {
        use trunkgate_sip::Method as M;
        let now = self.now;
        if !allowed && !gate::expected(&self.sip, &self.calls, side, src, req) {
            // A forged tag or branch from outside the allow-lists: silence (default deny).
            return self.shared.count_acl_drop(side);
        }
        if req.method == M::Ack {
            return self.on_ack(side, src, req);
        }
        if req.method == M::Cancel {
            return self.on_cancel(side, src, req);
        }
        let key = TransactionKey::from_request(req, Role::Server);
        if self.sip.repeat(side, &key) {
            return;
        }
        let refuse = |sip: &mut Transactions, code, text, extra: &str| {
            sip.open_and_refuse(now, side, src, req, code, text, extra)
        };
        if trunkgate_sip::max_forwards(req) == Some(0) && req.method != M::Options {
            return refuse(&mut self.sip, 483, "Max-Forwards reached 0", "");
        }
        if super::receive::is_loop(&self.shared, req) {
            let text = "request already passed through this edge";
            return refuse(&mut self.sip, 482, text, "");
        }
        // RFC 4028 §6: a session interval below our Min-SE (90 s, §4's floor) is refused 422.
        if matches!(req.method, M::Invite | M::Update)
            && session_expires(req).is_some_and(|(s, _)| s < MIN_SE)
        {
            let lines = format!("Min-SE: {MIN_SE}\r\n");
            let text = "Session-Expires below 90 s (RFC 4028)";
            return refuse(&mut self.sip, 422, text, &lines);
        }
        if trunkgate_sip::to_tag(req).is_some() {
            return self.on_in_dialog(side, src, req);
        }
        match req.method {
            M::Invite => self.on_new_invite(side, src, req),
            M::Options => {
                let k = self.sip.open_server(side, src, req, None);
                self.shared.metrics.options_answered.inc();
                let lines = format!(
                    "Allow: {ALLOW}\r\nAccept: application/sdp\r\nSupported: 100rel, timer\r\n"
                );
                self.sip.respond(now, &k, 200, "OK", &lines, &[]);
            }
            M::Register | M::Subscribe | M::Publish | M::Message | M::Refer | M::Notify => {
                let lines = format!("Allow: {ALLOW}\r\n");
                refuse(&mut self.sip, 405, "the edge only carries calls", &lines);
            }
            _ => refuse(&mut self.sip, 481, "no such call", ""),
        }
    }

    pub fn on_event(&mut self, e: Event) {
        match e {
            Event::Resolved {
                lookup: Lookup::Call(id),
                result,
            } => {
                self.drive(id, |c, ctx| c.on_resolved(ctx, result));
            }
            Event::Resolved {
                lookup: Lookup::Probe { probe, uri_host },
                result,
            } => probes::on_resolved(&mut io!(self), probe, &uri_host, result),
            Event::Resolved {
                lookup:
                    Lookup::Register {
                        trunk,
                        cseq,
                        expires,
                    },
                result,
            } => self
                .registrar
                .on_resolved(&mut io!(self), trunk, cseq, expires, result),
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
            Event::Claimed { call, verdict } => {
                self.drive(call, |c, ctx| c.on_claimed(ctx, verdict));
            }
        }
    }

    /// A connection we opened failed: its pending requests fail over (RFC 3263 §4.3).
    fn on_link_failed(&mut self, addr: SocketAddr) {
        self.tcp.forget(addr);
        for k in self.sip.pending_over(addr) {
            let text = format!("connection to {addr} failed (TCP connect or TLS handshake)");
            self.client_failed(k, 503, "connect_failed", text);
        }
    }

    // ---- answers to our requests -----------------------------------------------------------

    fn on_response(&mut self, side: Side, src: &Link, resp: &Response, allowed: bool) {
        let Some((key, answered, terminated)) =
            self.sip.on_response(self.now, side, src, resp, allowed)
        else {
            return;
        };
        match answered {
            Answered::Nothing => {}
            // A retransmitted 2xx of leg B's INVITE: repeat our ACK (§13.2.2.4). A 2xx with
            // another To tag is another fork's answer: it gets its own ACK and, the first
            // time, a BYE, or that branch stays answered (and billed) at the carrier.
            Answered::Retransmitted2xx {
                call,
                leg: LegId::B,
            } => {
                let tag = trunkgate_sip::to_tag(resp);
                if let Some(Again::Fork { first }) =
                    self.drive(call, |c, ctx| c.answered_again(ctx, tag))
                {
                    self.sip
                        .ack_and_bye_stray(&mut self.mint, &key, resp, first);
                }
            }
            Answered::Retransmitted2xx { .. } => {}
            // A carrier's challenge to anything but the initial INVITE is answered here; only
            // an unanswerable one goes on.
            Answered::Challenge { sent } => {
                if let Err(why) = self.answer_challenge(&key, resp, &sent) {
                    self.challenge_unanswered(&key, resp, why);
                }
            }
            Answered::Response => self.client_response(&key, resp),
        }
        self.sip.settle_client(&key, terminated);
    }

    /// An answer for whoever sent the request of `key`.
    fn client_response(&mut self, key: &TransactionKey, resp: &Response) {
        let Some(tx) = self.sip.client(key) else {
            return;
        };
        let (id, leg, purpose, cseq) = (tx.call, tx.leg, tx.purpose.clone(), tx.cseq);
        match purpose {
            Purpose::Setup => self.setup_response(id, key, resp),
            Purpose::Relay(server) => {
                let method = key.method();
                self.drive(id, |c, ctx| {
                    c.relay_response(ctx, leg, server, method, cseq, resp)
                });
            }
            Purpose::Probe(probe) => probes::answered(
                &io!(self),
                &probe,
                resp.status_code.code(),
                &reason_of(resp),
            ),
            Purpose::Refresh => {
                self.drive(id, |c, ctx| c.refresh_answered(ctx, leg, resp));
            }
            Purpose::Register(trunk) => self.registrar.answered(&mut io!(self), &trunk, resp),
            Purpose::Bye | Purpose::Cancel => {}
        }
    }

    /// An answer to leg B's INVITE ([`Call::on_setup_answer`]).
    fn setup_response(&mut self, id: u64, key: &TransactionKey, resp: &Response) {
        let Some(c) = self.calls.get(id) else {
            return;
        };
        if c.b_invite.as_ref() != Some(key) {
            // An abandoned attempt (failover) answered late: accept and hang up at once.
            if (200..300).contains(&resp.status_code.code()) {
                self.sip.ack_and_bye_stray(&mut self.mint, key, resp, true);
            }
            return;
        }
        let step = self.drive(id, |c, ctx| c.on_setup_answer(ctx, key, resp));
        if step == Some(SetupAnswer::Challenged) {
            self.invite_challenged(id, resp);
        }
    }

    /// The carrier challenged leg B's INVITE (RFC 3261 §22.2): answer once, once more only
    /// after `stale=true`, then give up naming the real cause ([`Call::challenge_answered`]).
    fn invite_challenged(&mut self, id: u64, resp: &Response) {
        let Some(c) = self.calls.get(id) else {
            return;
        };
        let creds =
            c.rt.trunk(c.trunk)
                .outbound
                .as_ref()
                .and_then(|o| o.auth.clone());
        let outcome = match creds {
            None => Err(Unanswered::NoCredentials),
            Some(creds) => match self.auth.answer(resp, "INVITE", &c.b.remote_target, &creds) {
                Err(why) => Err(Unanswered::Unusable(why)),
                Ok((line, stale)) if c.auth_tries == 0 || (stale && c.auth_tries < 2) => Ok(line),
                Ok(_) => Err(Unanswered::Refused {
                    username: creds.username.clone(),
                    realm: creds.realm.clone(),
                }),
            },
        };
        self.drive(id, |c, ctx| c.challenge_answered(ctx, outcome));
    }

    /// A request we sent got no answer (`cause`: `timeout`, or `connect_failed` when its TCP
    /// or TLS connection could not be opened): a call's next hop is tried, counted by cause.
    fn client_failed(&mut self, key: TransactionKey, code: u16, cause: &'static str, text: String) {
        let Some((id, _, purpose)) = self.sip.give_up(self.now, &key) else {
            return;
        };
        match purpose {
            Purpose::Setup => {
                self.drive(id, |c, ctx| c.setup_failed(ctx, &key, code, cause, text));
            }
            Purpose::Relay(server) => self.sip.refuse(self.now, &server, code, &text, ""),
            Purpose::Probe(probe) => probes::done(&io!(self), &probe, false, &text),
            Purpose::Refresh => {
                self.drive(id, |c, ctx| c.refresh_failed(ctx, 408));
            }
            Purpose::Register(trunk) => self.registrar.failed(&mut io!(self), &trunk, &text),
            Purpose::Bye | Purpose::Cancel => {}
        }
    }

    /// Sends the challenged request of `key` (its bytes `sent`) again with the trunk's
    /// credentials. Err says why it was not, and is counted.
    fn answer_challenge(
        &mut self,
        key: &TransactionKey,
        resp: &Response,
        sent: &[u8],
    ) -> Result<(), Unanswered> {
        let (trunk, creds) = self.challenge_credentials(key);
        let result = self.send_with_credentials(key, resp, sent, creds);
        let label = match &result {
            Ok(()) => "answered",
            Err(e) => e.metric_label(),
        };
        self.shared
            .metrics
            .carrier_challenges
            .with_label_values(&[trunk.as_str(), method_name(&key.method()), label])
            .inc();
        result
    }

    fn challenge_credentials(
        &self,
        key: &TransactionKey,
    ) -> (String, Option<trunkgate_crds::digest::DigestCredentials>) {
        match self.sip.client(key) {
            Some(tx) => challenges::credentials(&self.shared, tx, self.calls.get(tx.call)),
            None => (String::new(), None),
        }
    }

    fn send_with_credentials(
        &mut self,
        key: &TransactionKey,
        resp: &Response,
        sent: &[u8],
        creds: Option<trunkgate_crds::digest::DigestCredentials>,
    ) -> Result<(), Unanswered> {
        let creds = creds.ok_or(Unanswered::NoCredentials)?;
        let Some(tx) = self.sip.client(key) else {
            return Err(Unanswered::Unusable(Unusable::Gone));
        };
        let tries = tx.auth_tries;
        let (line, stale) = self
            .auth
            .answer(resp, method_name(&key.method()), &tx.ruri, &creds)
            .map_err(Unanswered::Unusable)?;
        if tries >= MAX_TRIES || (tries > 0 && !stale) {
            return Err(Unanswered::Refused {
                username: creds.username.clone(),
                realm: creds.realm.clone(),
            });
        }
        // RFC 3261 §22.2: same request, CSeq one higher; inside a dialog the leg's CSeq moves on.
        let cseq = match self.calls.get_mut(tx.call) {
            Some(c) if !matches!(tx.purpose, Purpose::Probe(_) | Purpose::Register(_)) => {
                c.cseq_for_credentials(tx.leg, tx.cseq)
            }
            _ => tx.cseq + 1,
        };
        self.sip
            .send_with_credentials(self.now, &mut self.mint, key, sent, &line, cseq)
    }

    /// A challenge the edge does not answer: the platform gets 403 with the real cause for a
    /// relayed request (its own credentials mean nothing to the carrier); a probe counts the
    /// answer as usual (a challenge means the target is alive); a BYE is logged.
    fn challenge_unanswered(&mut self, key: &TransactionKey, resp: &Response, why: Unanswered) {
        let (trunk, _) = self.challenge_credentials(key);
        let Some(tx) = self.sip.client(key) else {
            return;
        };
        let method = method_name(&key.method());
        let text = why.text(&trunk, method);
        let code = resp.status_code.code();
        tracing::warn!(trunk, method, code, "{text}");
        match tx.purpose.clone() {
            Purpose::Relay(server) => self.sip.refuse(self.now, &server, 403, &text, ""),
            Purpose::Probe(probe) => probes::answered(&io!(self), &probe, code, "challenged"),
            Purpose::Register(trunk) => self.registrar.failed(&mut io!(self), &trunk, &text),
            Purpose::Bye | Purpose::Cancel | Purpose::Setup | Purpose::Refresh => {}
        }
    }

    // ---- a new call ------------------------------------------------------------------------

    fn on_new_invite(&mut self, side: Side, src: &Link, req: &Request) {
        let now = self.now;
        let tag = self.mint.tag();
        let key = self.sip.open_server(side, src, req, Some(&tag));
        if self.draining() {
            let text = "edge is draining for maintenance";
            return self.sip.refuse(now, &key, 503, text, "Retry-After: 30\r\n");
        }
        let rt = self.shared.runtime.load_full();
        let adm = match invite::admit(&self.shared, &rt, &mut self.auth, side, src, req) {
            Ok(a) => a,
            Err(r) => {
                let trunk = r.trunk.map(|t| rt.trunk(t).id.as_str());
                return self
                    .sip
                    .refuse_for(now, &key, trunk, r.code, &r.text, &r.extra);
            }
        };
        let dir = invite::direction_label(side);
        let trunk_cfg = rt.trunk(adm.trunk);
        let busy = |reason| invite::Busy {
            trunk: &trunk_cfg.id,
            direction: dir,
            reason,
            key: &key,
            now,
        };
        let max_setup = trunk_cfg
            .limits
            .max_calls_in_setup
            .unwrap_or(self.shared.settings.max_calls_in_setup);
        let trunk_state = &rt.state[adm.trunk as usize];
        // This process's own count: the whole limit, or its share while the fleet's store is
        // unreachable. With a reachable store the fleet's count decides (`on_claimed`).
        let own_max_setup = crate::fleet::share_of(max_setup, rt.share());
        let mut setup = trunk_state.begin_setup(own_max_setup);
        if setup.is_err() && self.recycle_unacked(|c| c.trunk_id() == trunk_cfg.id) {
            setup = trunk_state.begin_setup(own_max_setup);
        }
        let setup = match setup {
            Ok(s) => s,
            Err(n) => {
                let text = format!("trunk is at its limit of {n} calls in set-up");
                return busy("max_calls_in_setup").refuse(&self.shared, &mut self.sip, &text);
            }
        };
        let setup_source = if side == Side::Public {
            let ip = src.addr().ip();
            // The trunks that allow this source size its share (issue 26): an SBC carrying a
            // trunk's every call from one address gets the trunk's set-up limit, not only
            // the edge-wide --max-calls-in-setup-per-source.
            let cap = rt.source_setup_budget(ip);
            let census = self.shared.setup_sources.clone();
            let mut admitted = census.admit_up_to(Some(ip), cap);
            if admitted.is_err()
                && self.recycle_unacked(|c| c.setup_source.is_some() && c.a.peer.addr().ip() == ip)
            {
                admitted = census.admit_up_to(Some(ip), cap);
            }
            match admitted {
                Ok(a) => Some(a),
                Err(_) => {
                    let text = "this address has its most calls in set-up";
                    return busy("source_calls_in_setup").refuse(&self.shared, &mut self.sip, text);
                }
            }
        } else {
            None
        };
        // One trunk cannot take the ports every trunk needs: under pressure it gets its share.
        if trunk_cfg.media.relay && !self.relay.may_take_ports(&trunk_cfg.id, rt.relay_trunks) {
            let text = "trunk holds its share of this edge's RTP ports";
            return busy("rtp_share").refuse(&self.shared, &mut self.sip, text);
        }
        let id = self.calls.next_id();
        // Media: the offer goes through this worker's relay unless the trunk says otherwise.
        let (media, b_body) = if trunk_cfg.media.relay {
            let policy = crate::call::media::peer_policy(
                &self.shared.platform,
                trunk_cfg,
                side,
                src.addr().ip(),
            );
            match self.relay.open(id, trunk_cfg, side, &req.body, &policy) {
                Ok((session, body)) => (Some(session), body),
                Err(r) => {
                    self.shared
                        .metrics
                        .refusals
                        .with_label_values(&[trunk_cfg.id.as_str(), dir, r.label])
                        .inc();
                    let trunk = Some(trunk_cfg.id.as_str());
                    return self.sip.refuse_for(now, &key, trunk, r.code, &r.text, "");
                }
            }
        } else {
            (None, req.body.clone())
        };
        // RFC 3261 §17.2.1: the B2BUA will take more than 200 ms to answer.
        self.sip.respond(now, &key, 100, "Trying", "", &[]);
        let claim = self
            .shared
            .fleet
            .is_shared()
            .then(|| crate::fleet::ClaimRequest {
                trunk: trunk_cfg.id.clone(),
                max_concurrent: trunk_cfg.limits.max_concurrent_calls,
                max_per_second: trunk_cfg.limits.max_calls_per_second,
                max_in_setup: max_setup,
            });
        if let Some(tx) = self.sip.server_mut(&key) {
            tx.call = Some((id, LegId::A));
        }
        let new = NewCall {
            rt: rt.clone(),
            admission: adm,
            invite: key,
            side,
            src: src.clone(),
            tag,
            b_body,
            media,
            setup,
            setup_source,
        };
        // Call::new records no effect: the call starts with the fleet's claim or its first hop.
        let mut effects = Vec::new();
        let mut ctx = Ctx {
            now,
            mint: &mut self.mint,
            env: &*self.shared,
            media: None,
            out: &mut effects,
        };
        let call = Call::new(&mut ctx, new, req);
        self.calls.insert(id, call);
        match claim {
            // The fleet's count first: the call waits for the store as it would for DNS.
            Some(req) => self.sip.push(Output::Claim { call: id, req }),
            None => {
                self.drive(id, |c, ctx| c.next_hop(ctx));
            }
        }
    }

    /// Ends the oldest call `of_scope` admits whose 2xx has waited for its ACK long enough
    /// (`recycle.rs`); whether one was ended (its set-up places are free again).
    fn recycle_unacked(&mut self, of_scope: impl Fn(&Call) -> bool) -> bool {
        let Some(id) = self.calls.recycle(self.now, of_scope) else {
            return false;
        };
        self.drive(id, |c, ctx| c.make_room(ctx));
        true
    }

    // ---- the call machine ------------------------------------------------------------------

    /// Runs `f` on call `id` with its context, then carries out what it asked (None: no such
    /// call).
    fn drive<R>(&mut self, id: u64, f: impl FnOnce(&mut Call, &mut Ctx) -> R) -> Option<R> {
        // The buffer is reused: a transition costs no allocation for its effects. (A drive
        // nested in carrying out effects gets a fresh one.)
        let mut effects = std::mem::take(&mut self.effects);
        let r = {
            let Some(c) = self.calls.get_mut(id) else {
                self.effects = effects;
                return None;
            };
            let mut ctx = Ctx {
                now: self.now,
                mint: &mut self.mint,
                env: &*self.shared,
                media: self.relay.engine_mut(),
                out: &mut effects,
            };
            f(c, &mut ctx)
        };
        self.apply(id, &mut effects);
        self.effects = effects;
        Some(r)
    }

    /// Carries out call `id`'s effects, in order.
    fn apply(&mut self, id: u64, effects: &mut Vec<Effect>) {
        let now = self.now;
        for e in effects.drain(..) {
            match e {
                Effect::Request(s) => {
                    let s = *s;
                    let purpose = match s.purpose {
                        CallPurpose::Setup => Purpose::Setup,
                        CallPurpose::Relay(k) => Purpose::Relay(k),
                        CallPurpose::Bye => Purpose::Bye,
                        CallPurpose::Refresh => Purpose::Refresh,
                    };
                    self.sip.open_client(
                        now,
                        NewClient {
                            call: id,
                            leg: s.leg,
                            purpose,
                            side: s.side,
                            dest: s.dest,
                            method: s.method,
                            branch: s.branch,
                            bytes: s.bytes,
                            ruri: s.ruri,
                            ident: s.ident,
                            cseq: s.cseq,
                        },
                    );
                }
                Effect::Respond {
                    key,
                    code,
                    reason,
                    lines,
                    body,
                } => self.sip.respond(now, &key, code, &reason, &lines, &body),
                Effect::Refuse {
                    key,
                    code,
                    text,
                    extra,
                } => self.sip.refuse(now, &key, code, &text, &extra),
                Effect::Timer { after, timer } => {
                    let t = match timer {
                        CallTimer::Session(leg) => Timer::Session(id, leg),
                        CallTimer::Ringing(key) => Timer::Ringing(id, key),
                        CallTimer::Failover(key) => Timer::Failover(key),
                        CallTimer::Forget => Timer::CallForget(id),
                    };
                    self.schedule(after, t);
                }
                Effect::Send { side, dest, bytes } => self.sip.send(side, &dest, &bytes),
                Effect::CancelB => self.cancel_b(id),
                Effect::Acked(key) => self.sip.ack_of_2xx(now, &key),
                Effect::NextHop => {
                    self.drive(id, |c, ctx| c.next_hop(ctx));
                }
                Effect::Claim(req) => self.sip.push(Output::Claim { call: id, req }),
                Effect::InviteTo(addr) => self.invite_to(id, addr),
                Effect::Resolve(hop) => {
                    if let Err(e) = io!(self).resolve(&hop, Lookup::Call(id)) {
                        self.drive(id, |c, ctx| c.on_resolved(ctx, Err(e)));
                    }
                }
                Effect::AwaitAck => self.calls.await_ack(now, id),
                Effect::Checkpoint => self.checkpoint(id),
                Effect::ForgetCheckpoint => {
                    if let Some(c) = self.calls.get(id) {
                        self.shared.fleet.journal(c.a.local_tag.clone(), None);
                    }
                }
                Effect::Record => {
                    if let Some(c) = self.calls.get(id) {
                        crate::call::cdr::write(c);
                    }
                }
                Effect::Finish => self.finish_call(id),
            }
        }
    }

    /// CANCEL of leg B's pending INVITE.
    fn cancel_b(&mut self, id: u64) {
        let Some(c) = self.calls.get(id) else { return };
        let Some(inv) = c.b_invite.clone() else {
            return;
        };
        let to = format!(
            "<sip:{}@{}>",
            c.b_user,
            c.hops
                .get(c.next_hop.wrapping_sub(1))
                .map(|h| h.uri_host.as_str())
                .unwrap_or_default()
        );
        self.sip.cancel(self.now, &inv, &to);
    }

    /// Leg B's INVITE to `addr` of the hop being tried: over a connection of this worker's
    /// (found or opened), or the next hop when none can be had.
    fn invite_to(&mut self, id: u64, addr: SocketAddr) {
        let Some(c) = self.calls.get(id) else {
            return;
        };
        let Some((transport, host)) = c.current_hop().map(|h| (h.transport, h.host.clone())) else {
            self.drive(id, |c, ctx| {
                c.fail_a(ctx, 500, "no next hop to send the call to")
            });
            return;
        };
        let side = c.b.side;
        let carrier = (side == Side::Public)
            .then(|| self.shared.tls.trunk(c.trunk_id()))
            .flatten();
        match io!(self).link_to(side, addr, transport, &host, carrier.as_deref()) {
            Ok(dest) => self.drive(id, |c, ctx| c.send_invite(ctx, dest)),
            Err(e) => self.drive(id, |c, ctx| {
                c.link_failed(ctx, e.metric_label(), e.to_string())
            }),
        };
    }

    /// Marks a call over, writes its record and schedules its removal.
    fn finish_call(&mut self, id: u64) {
        let Some(c) = self.calls.get_mut(id) else {
            return;
        };
        if c.state == CallState::Ended {
            return;
        }
        // The relay session ends with the call: its ports go to quarantine, its figures to the
        // call record and the per-trunk histograms.
        let stats = match c.media.take() {
            Some(session) => self
                .relay
                .close(session, c.rt.trunk(c.media_trunk).id.as_str()),
            None => Vec::new(),
        };
        self.drive(id, |c, ctx| c.finish(ctx, stats));
    }

    // ---- in dialog -------------------------------------------------------------------------

    /// The edge is stopping: every call still up ends now, with a BYE on both legs once
    /// answered, with 503 to the caller (and CANCEL onward) while it is being set up.
    pub fn hang_up_all(&mut self) {
        for id in self.calls.ids() {
            self.drive(id, |c, ctx| c.shut_down(ctx));
        }
    }

    fn on_ack(&mut self, side: Side, src: &Link, req: &Request) {
        let key = TransactionKey::from_request(req, Role::Server);
        // Hop-by-hop ACK for our non-2xx (§17.2.1).
        if self.sip.ack_of_non_2xx(self.now, &key, src) {
            return;
        }
        if let Some((id, leg)) = self.calls.dialog_of(side, src, req) {
            self.drive(id, |c, ctx| c.on_ack(ctx, leg, req));
        }
    }

    fn on_cancel(&mut self, side: Side, src: &Link, req: &Request) {
        let now = self.now;
        // RFC 3261 §9.2: branch and sent-by (the key), source, Call-ID, From tag and CSeq number
        // all match the INVITE.
        let inv = TransactionKey::from_request(req, Role::Server).cancelled();
        let invite = self.sip.server(&inv);
        let Some(tx) = invite.filter(|_| self.calls.cancel_matches(invite, src, req)) else {
            let text = "no such transaction to cancel";
            return self.sip.open_and_refuse(now, side, src, req, 481, text, "");
        };
        let (call, finished) = (tx.call, tx.machine.finished());
        let tag = call
            .and_then(|(id, _)| self.calls.get(id))
            .map(|c| c.a.local_tag.clone());
        let k = self.sip.open_server(side, src, req, tag.as_deref());
        self.sip.respond(now, &k, 200, "OK", "", &[]);
        if finished {
            // The final answer crossed the CANCEL: it stands (§9.2).
            return;
        }
        let Some((id, _)) = call else { return };
        self.drive(id, |c, ctx| c.on_cancel(ctx, side, inv));
    }

    fn on_in_dialog(&mut self, side: Side, src: &Link, req: &Request) {
        // Only the dialog's own peer, from its address, continues it (RFC 3261 §12.2.2).
        let Some((id, leg)) = self.calls.dialog_of(side, src, req) else {
            return self
                .sip
                .open_and_refuse(self.now, side, src, req, 481, "no such call", "");
        };
        let k = self.sip.open_server(side, src, req, None);
        if let Some(tx) = self.sip.server_mut(&k) {
            tx.call = Some((id, leg));
        }
        self.drive(id, |c, ctx| c.on_in_dialog(ctx, leg, k, req));
    }

    // ---- media -----------------------------------------------------------------------------

    /// The relay's pass: packets moved, then its events (`relay.rs`).
    pub fn on_media(&mut self) {
        for e in self.relay.relay() {
            self.on_media_event(e);
        }
    }

    /// A relay event: a media timeout ends its call ([`Call::media_timeout`]), SRTP progress is
    /// checkpointed, media from an unexpected address is logged.
    fn on_media_event(&mut self, e: trunkgate_media::MediaEvent) {
        use trunkgate_media::MediaEvent as E;
        match e {
            E::Timeout { call, .. } => {
                self.drive(call, |c, ctx| c.media_timeout(ctx));
            }
            // Where its SRTP contexts stand moved on: a restarted edge resumes them from the
            // checkpoint (`restore.rs`).
            E::SrtpProgress { call } => self.checkpoint(call),
            E::UnexpectedSource {
                call,
                stream,
                from,
                src,
                expected,
            } => {
                // Once per stream direction: the packets themselves are counted.
                let trunk = self.calls.get(call).map_or("", |c| c.trunk_id());
                tracing::warn!(
                    call,
                    trunk,
                    stream,
                    from = from.label(),
                    %src,
                    expected = ?expected,
                    "media from an unexpected address dropped (not the latched one, nor one that may latch: the SDP's IP, or with media.behindNat the side's allow-list or signalling address)"
                );
            }
        }
    }

    // ---- probes, registrations, calls of a previous run ------------------------------------

    /// Once a second: calls still to restore, adopted orphans, registrations and probes due.
    fn probe_tick(&mut self) {
        self.schedule(crate::route::health::TICK, Timer::ProbeTick);
        if self.shared.draining.load(Ordering::Relaxed) {
            return;
        }
        self.restore_pending();
        self.end_orphans();
        let rt = self.shared.runtime.load_full();
        self.registrar.tick(&mut io!(self), &rt, self.index);
        probes::tick(&mut io!(self), &mut self.prober, &rt);
    }

    /// Writes call `id`'s checkpoint (an answered call; nothing before).
    fn checkpoint(&mut self, id: u64) {
        if let Some(c) = self.calls.get_mut(id) {
            restore::checkpoint(&self.shared, &self.relay, c, self.now);
        }
    }

    /// Rebuilds the calls this worker is given from the previous life's checkpoints, once
    /// their trunks are in the snapshot (or [`restore::RESTORE_WAIT`] has passed).
    pub fn restore_pending(&mut self) {
        if self.restoring.is_empty() {
            return;
        }
        let rt = self.shared.runtime.load_full();
        let waited = self.now.saturating_duration_since(self.started) >= restore::RESTORE_WAIT;
        for r in std::mem::take(&mut self.restoring) {
            if !waited && !rt.config.trunks.iter().any(|t| t.id == r.trunk) {
                self.restoring.push(r);
                continue;
            }
            let key = r.key.clone();
            let outcome = match self.restore_call(r) {
                Ok(_) => "ok",
                Err(why) => {
                    tracing::warn!(key, why, "a call of the previous run could not be restored");
                    self.shared.fleet.journal(key, None);
                    "failed"
                }
            };
            let m = &self.shared.metrics;
            m.calls_restored.with_label_values(&[outcome]).inc();
            self.shared.restoring.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Ends the calls of edges gone for good that this process adopted (worker 0 does it): each
    /// is rebuilt without media and hung up on both legs, its record saying `edge_lost`.
    fn end_orphans(&mut self) {
        if self.index != 0 {
            return;
        }
        for mut r in crate::call::checkpoint::read_all(self.shared.fleet.take_orphans()) {
            // Ended at once: no media, and its place in the fleet's count runs out with the
            // dead edge's lease.
            r.media.clear();
            r.place = None;
            let key = r.key.clone();
            match self.restore_call(r) {
                Ok(id) => {
                    self.drive(id, |c, ctx| c.orphaned(ctx));
                }
                Err(why) => tracing::warn!(key, why, "an adopted call could not be ended"),
            }
        }
    }

    /// The call of `r` rebuilt on this worker ([`restore::rebuild`]), its session timers
    /// running on and its checkpoint written again; its id.
    fn restore_call(&mut self, r: CallRecord) -> Result<u64, String> {
        let id = self.calls.next_id();
        let call = restore::rebuild(&mut io!(self), &mut self.relay, id, r)?;
        // RFC 4028: each leg's session timer runs on from where it was (one that fell due
        // while no edge ran fires now: a refresh sent, or the call ended for want of one).
        for (leg, l) in [(LegId::A, &call.a), (LegId::B, &call.b)] {
            if let Some(s) = &l.session {
                let after = s.due.saturating_duration_since(self.now);
                self.schedule(after, Timer::Session(id, leg));
            }
        }
        self.calls.insert(id, call);
        self.checkpoint(id);
        Ok(id)
    }
}
