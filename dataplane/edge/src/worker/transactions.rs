//! The worker's side of RFC 3261 §17: it keeps the transactions and their timers, and does
//! what their state machines (crate::sip::transaction) ask: send, resend, ACK, hand up, forget.

use std::time::Duration;

use trunkgate_sip::{Request, Response};

use super::*;
use crate::call::{LegId, Side};
use crate::sip::message::{Builder, reason_phrase, warning};
use crate::sip::msg;
use crate::sip::transaction::{
    self, Actions, ClientState, ClientTransaction, Delivery, Role, ServerTransaction,
    TransactionKey,
};

/// Carrier refusals written to the log per second and worker; the rest are only counted.
const REFUSAL_LOG_PER_SECOND: u32 = 20;
/// Refusal records written per second per worker (the rest are counted).
const REFUSAL_RECORDS_PER_SECOND: u32 = 50;

/// Refusals about the carrier's own message, whose detail tells it nothing about our set-up:
/// 400, 415, 420, 422, 482, 483, 484, 488, 505, 513.
fn about_their_message(code: u16) -> bool {
    matches!(
        code,
        400 | 415 | 420 | 422 | 482 | 483 | 484 | 488 | 505 | 513
    )
}

impl Worker {
    /// How to reach `addr` with `transport` from `side` ([`Connections::link_to`]); a new
    /// connection is dialled by the runtime.
    ///
    /// [`Connections::link_to`]: crate::transport::tcp::Connections::link_to
    pub fn link_to(
        &mut self,
        side: Side,
        addr: std::net::SocketAddr,
        transport: trunkgate_crds::Transport,
        host: &str,
        carrier: Option<&crate::transport::tls_peer::TrunkTls>,
    ) -> Result<Link, crate::transport::tcp::LinkError> {
        let (link, dial) = self.tcp.link_to(side, addr, transport, host, carrier)?;
        if let Some(d) = dial {
            self.out.push(Output::Dial(Box::new(d)));
        }
        Ok(link)
    }

    /// A connection we opened failed: its pending requests fail over (RFC 3263 §4.3).
    pub fn on_link_failed(&mut self, addr: std::net::SocketAddr) {
        self.tcp.forget(addr);
        let keys: Vec<_> = self
            .clients
            .iter()
            .filter(|(_, tx)| tx.machine.pending() && tx.dest.reliable() && tx.dest.addr() == addr)
            .map(|(k, _)| k.clone())
            .collect();
        for k in keys {
            self.client_failed(
                k,
                503,
                "connect_failed",
                format!("connection to {addr} failed (TCP connect or TLS handshake)"),
            );
        }
    }

    /// Starts the timers a transaction asked for.
    pub(super) fn arm(&mut self, role: Role, key: &TransactionKey, actions: &Actions) {
        for &(t, after) in actions.arm.iter().flatten() {
            let timer = match role {
                Role::Client => Timer::Client(key.clone(), t),
                Role::Server => Timer::Server(key.clone(), t),
            };
            self.schedule(after, timer);
        }
    }

    pub(super) fn client_timer(&mut self, key: TransactionKey, t: transaction::Timer) {
        let Some(tx) = self.clients.get_mut(&key) else {
            return;
        };
        let actions = tx.machine.on_timer(t);
        if actions.resend {
            self.out.send(tx.side, &tx.dest, &tx.bytes);
            self.hot.retransmissions[tx.side.index()].inc();
        }
        let side = tx.side;
        self.arm(Role::Client, &key, &actions);
        if actions.timed_out {
            self.metrics()
                .timeouts
                .with_label_values(&[side.label()])
                .inc();
            // Kept a while by client_failed, to absorb late answers.
            return self.client_failed(
                key,
                408,
                "timeout",
                "no answer within 32 s (RFC 3261 timer B/F)".into(),
            );
        }
        if actions.terminated {
            self.clients.remove(&key);
        }
    }

    pub(super) fn server_timer(&mut self, key: TransactionKey, t: transaction::Timer) {
        let Some(tx) = self.servers.get_mut(&key) else {
            return;
        };
        let actions = tx.machine.on_timer(t);
        // Only unreliable transports run the retransmission timers.
        if actions.resend
            && let Some(bytes) = &tx.last
        {
            self.out.send(tx.side, &tx.peer, bytes);
            self.hot.retransmissions[tx.side.index()].inc();
        }
        let (side, call) = (tx.side, tx.call);
        self.arm(Role::Server, &key, &actions);
        if actions.terminated {
            self.servers.remove(&key);
        }
        if actions.timed_out {
            // Timer H (non-2xx) or L (2xx): no ACK ever came.
            self.metrics()
                .timeouts
                .with_label_values(&[side.label()])
                .inc();
            if let (Some((id, leg)), transaction::Timer::L) = (call, t) {
                // RFC 3261 §13.3.1.4: the dialog is confirmed but the session SHOULD end, with
                // a BYE on this leg too (its peer may well think the call is up).
                tracing::info!(call = id, ?leg, "no ACK for 2xx; ending the call");
                self.end_call(id, None, "no ACK");
            }
        }
    }

    // ---- server transactions ---------------------------------------------------------------

    /// Opens a server transaction for `req` from `src`; `tag` is the To tag our responses carry.
    pub fn open_server(
        &mut self,
        side: Side,
        src: &Link,
        req: &Request,
        tag: Option<&str>,
    ) -> TransactionKey {
        let key = TransactionKey::from_request(req, Role::Server);
        let prefix = response_prefix(req, src.addr(), tag);
        let invite = req.method == trunkgate_sip::Method::Invite;
        let record_route = if invite {
            header_lines(req, "Record-Route")
        } else {
            String::new()
        };
        self.hot.transactions[side.index()][0].inc();
        self.servers.insert(
            key.clone(),
            ServerTxn {
                side,
                peer: src.clone(),
                call: None,
                prefix,
                record_route,
                last: None,
                machine: ServerTransaction::new(invite, src.reliable()),
            },
        );
        key
    }

    /// Sends a response on a server transaction; a final one starts its RFC 3261 §17.2 timers
    /// (G/H or the §13.3.1.4 2xx retransmission and L for an INVITE, J for others).
    pub fn respond(
        &mut self,
        key: &TransactionKey,
        code: u16,
        reason: &str,
        lines: &str,
        body: &[u8],
    ) {
        let Some(tx) = self.servers.get_mut(key) else {
            return;
        };
        let Some(actions) = tx.machine.respond(code) else {
            return;
        };
        let mut b = Builder::response(code, reason).raw(&tx.prefix);
        if (101..300).contains(&code) {
            b = b.raw(&tx.record_route);
        }
        if !lines.is_empty() {
            b = b.raw(lines);
        }
        let bytes = b.body(body);
        self.out.send(tx.side, &tx.peer, &bytes);
        tx.last = Some(bytes);
        self.arm(Role::Server, key, &actions);
        if actions.terminated {
            self.servers.remove(key);
        }
    }

    /// A refusal with a Warning (RFC 3261 §20.43). The platform always learns why; a carrier
    /// learns why only when the problem is in its own message (syntax, SDP, number format, hop
    /// count), else just the reason phrase — whether a number is served, which trunk, why its
    /// credentials failed stay in the log and the metrics (`--detailed-warnings` for labs).
    pub fn refuse(&mut self, key: &TransactionKey, code: u16, text: &str, extra: &str) {
        self.refuse_for(key, None, code, text, extra);
    }

    /// [`Worker::refuse`] of a call attempt whose trunk is known (named in its record).
    pub fn refuse_for(
        &mut self,
        key: &TransactionKey,
        trunk: Option<&str>,
        code: u16,
        text: &str,
        extra: &str,
    ) {
        self.record_refusal(key, trunk, code, text);
        let terse = !self.shared.settings.detailed_warnings
            && !about_their_message(code)
            && self
                .servers
                .get(key)
                .is_some_and(|tx| tx.side == Side::Public);
        let shown = if terse {
            self.log_refusal(key, code, text);
            reason_phrase(code)
        } else {
            text
        };
        let mut lines = format!(
            "Warning: {}\r\n",
            warning(&self.shared.public_hostport, shown)
        );
        lines.push_str(extra);
        self.respond(key, code, reason_phrase(code), &lines, &[]);
    }

    /// A refused INVITE that never became a call gets a record of its own on stdout (the
    /// source, Call-ID, status and why), at most [`REFUSAL_RECORDS_PER_SECOND`] a second per
    /// worker: a flood is counted in the metrics, it cannot fill the disk.
    fn record_refusal(&mut self, key: &TransactionKey, trunk: Option<&str>, code: u16, text: &str) {
        if key.method() != trunkgate_sip::Method::Invite || !self.shared.settings.cdr {
            return;
        }
        let Some(tx) = self.servers.get(key) else {
            return;
        };
        if tx.call.is_some() {
            return; // a call: its own record says how it ended
        }
        let now = self.now;
        let (since, n) = &mut self.refusal_records;
        if now.saturating_duration_since(*since) >= Duration::from_secs(1) {
            *since = now;
            *n = 0;
        }
        *n += 1;
        if *n > REFUSAL_RECORDS_PER_SECOND {
            self.shared.metrics.refusal_records_suppressed.inc();
            return;
        }
        let call_id = tx.call_id();
        crate::call::cdr::write_refusal(crate::call::cdr::RefusalRecord {
            from: tx.side.party(),
            source: tx.peer.addr(),
            method: "INVITE",
            call_id,
            trunk,
            status: code,
            reason: text,
        });
    }

    /// Logs why a carrier was refused, at most [`REFUSAL_LOG_PER_SECOND`] lines a second per
    /// worker (a flood is counted in the metrics, not written out line by line).
    pub(super) fn log_refusal(&mut self, key: &TransactionKey, code: u16, text: &str) {
        let now = self.now;
        let (since, n) = &mut self.refusal_log;
        if now.saturating_duration_since(*since) >= Duration::from_secs(1) {
            if *n > REFUSAL_LOG_PER_SECOND {
                tracing::info!(
                    suppressed = *n - REFUSAL_LOG_PER_SECOND,
                    "more carrier refusals not logged"
                );
            }
            *since = now;
            *n = 0;
        }
        *n += 1;
        if *n <= REFUSAL_LOG_PER_SECOND {
            // What a carrier's ticket is matched against: its address, the method, the Call-ID.
            let (source, call_id) = self.servers.get(key).map_or_else(Default::default, |tx| {
                (tx.peer.addr().to_string(), tx.call_id().to_string())
            });
            let method = trunkgate_sip::values::method_name(&key.method());
            tracing::info!(code, why = text, %source, method, call_id, "refused a carrier's request");
        }
    }

    /// The ACK our final response waited for came: Timer I, or the end over TCP.
    pub(crate) fn server_acked(&mut self, key: &TransactionKey, actions: &Actions) {
        self.arm(Role::Server, key, actions);
        if actions.terminated {
            self.servers.remove(key);
        }
    }

    // ---- client transactions ---------------------------------------------------------------

    /// Sends a request and keeps it for retransmission (RFC 3261 §17.1).
    #[allow(clippy::too_many_arguments)]
    pub fn open_client(
        &mut self,
        call: u64,
        leg: LegId,
        purpose: Purpose,
        side: Side,
        dest: Link,
        method: trunkgate_sip::Method,
        branch: String,
        bytes: Vec<u8>,
        ruri: String,
        ident: String,
        cseq: u32,
    ) -> TransactionKey {
        let key = TransactionKey::client(&branch, method);
        let (machine, actions) =
            ClientTransaction::start(method == trunkgate_sip::Method::Invite, dest.reliable());
        self.send(side, &dest, &bytes);
        self.hot.transactions[side.index()][1].inc();
        self.clients.insert(
            key.clone(),
            ClientTxn {
                call,
                leg,
                purpose,
                side,
                dest,
                bytes,
                machine,
                ruri,
                ident,
                cseq,
                auth_tries: 0,
            },
        );
        self.arm(Role::Client, &key, &actions);
        key
    }

    pub(super) fn on_response(&mut self, side: Side, src: &Link, resp: &Response, allowed: bool) {
        let Some(key) = TransactionKey::of_response(resp) else {
            return;
        };
        let code = resp.status_code.code();
        let Some(tx) = self.clients.get_mut(&key) else {
            tracing::debug!(src = %src.addr(), code, "response matches no transaction");
            return;
        };
        if tx.side != side {
            return;
        }
        // A carrier's answer comes from the address we sent to: a guessed branch from anywhere
        // else must not answer or end our requests (from outside the allow-lists: silently).
        if side == Side::Public && tx.dest.addr().ip() != src.addr().ip() {
            if !allowed {
                self.count_acl_drop(side);
            }
            tracing::debug!(src = %src.addr(), code, "response from another address than the request went to");
            return;
        }
        let given_up = tx.machine.state() == ClientState::Terminated;
        let actions = tx.machine.on_response(code);
        if actions.ack {
            // §17.1.1.3: the ACK of a non-2xx final, again for each retransmission of it.
            let ack = ack_for_non_2xx(tx, resp);
            self.out.send(tx.side, &tx.dest, &ack);
        }
        // Nothing is retransmitted once a final came: keep only what an ACK or a challenge
        // answer needs.
        let sent = if code >= 200 && actions.deliver == Delivery::Response {
            std::mem::take(&mut tx.bytes)
        } else {
            Vec::new()
        };
        let (call, leg, purpose_setup) = (tx.call, tx.leg, matches!(tx.purpose, Purpose::Setup));
        let carrier = tx.side == Side::Public && !purpose_setup;
        self.arm(Role::Client, &key, &actions);
        match actions.deliver {
            Delivery::None => {}
            // A retransmitted 2xx of leg B's INVITE: repeat our ACK (§13.2.2.4). A 2xx with
            // another To tag is another fork's answer: it gets its own ACK and, the first
            // time, a BYE, or that branch stays answered (and billed) at the carrier.
            Delivery::Retransmitted2xx => {
                let tag = trunkgate_sip::to_tag(resp).map(str::to_string);
                if let Some(c) = self.calls.get_mut(&call)
                    && leg == LegId::B
                {
                    if tag.is_some() && tag.as_deref() != c.b.remote_tag.as_deref() {
                        let tag = tag.unwrap_or_default();
                        let first = !c.forks_ended.contains(&tag);
                        if first {
                            c.forks_ended.push(tag);
                        }
                        self.ack_and_bye_stray(call, &key, resp, first);
                    } else if let Some(ack) = &c.b_ack {
                        self.out.send(c.b.side, &c.b.peer, ack);
                    }
                }
            }
            // After a give-up only the set-up cares (to hang up a late answer).
            Delivery::Response if given_up && !purpose_setup => {}
            // A carrier's challenge to anything but the initial INVITE (which has its own path
            // with failover) is answered here; only an unanswerable one goes on.
            Delivery::Response if (code == 401 || code == 407) && carrier => {
                if let Err(why) = self.answer_challenge(&key, resp, &sent) {
                    self.challenge_unanswered(key.clone(), resp, why);
                }
            }
            Delivery::Response => self.client_response(key.clone(), resp),
        }
        if actions.terminated {
            self.clients.remove(&key);
        }
    }
}

/// The ACK for a non-2xx final response: same branch, Request-URI, From, Call-ID and CSeq
/// number as the INVITE, To from the response (RFC 3261 §17.1.1.3).
pub(super) fn ack_for_non_2xx(tx: &ClientTxn, resp: &Response) -> Vec<u8> {
    let to = msg::header(resp, "To").unwrap_or_default();
    let top_via = msg::header(resp, "Via").unwrap_or_default();
    Builder::request_via("ACK", &tx.ruri, &strip_received(top_via))
        .ids(&tx.ident, to, tx.cseq, "ACK")
        .finish()
}

pub(super) fn strip_received(via: &str) -> String {
    via.split(';')
        .filter(|p| {
            let n = p.split('=').next().unwrap_or("").trim();
            !n.eq_ignore_ascii_case("received")
        })
        .map(|p| {
            let n = p.split('=').next().unwrap_or("").trim();
            if n.eq_ignore_ascii_case("rport") {
                "rport"
            } else {
                p
            }
        })
        .collect::<Vec<_>>()
        .join(";")
}
