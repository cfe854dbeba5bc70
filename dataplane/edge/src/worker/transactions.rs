//! The worker's transaction layer (RFC 3261 §17): the transactions it keeps, their timers and
//! the outbox of the input being handled. It does what their state machines
//! (crate::sip::transaction) ask — send, resend, ACK a non-2xx, arm a timer, forget — and tells
//! the worker what an answer or a timer means; which call it concerns is the worker's business.

use std::sync::Arc;
use std::time::{Duration, Instant};

use trunkgate_sip::{Request, Response};

use super::{ClientTxn, Outbox, Output, Purpose, ServerTxn, Shared, Table, Timer};
use crate::call::{LegId, Side};
use crate::sip::ids::IdMint;
use crate::sip::message::{Builder, reason_phrase, via, warning};
use crate::sip::msg;
use crate::sip::timers::Timers;
use crate::sip::transaction::{
    self, Actions, ClientState, ClientTransaction, Delivery, Role, ServerTransaction,
    TransactionKey,
};
use crate::transport::Link;

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

/// One worker's transactions, timers and outbox.
pub struct Transactions {
    shared: Arc<Shared>,
    out: Outbox,
    servers: Table<TransactionKey, ServerTxn>,
    clients: Table<TransactionKey, ClientTxn>,
    timers: Timers<Timer>,
    /// Counters every message touches, resolved once.
    hot: crate::metrics::Hot,
    /// (start of the current second, carrier refusals logged in it).
    refusal_log: (Instant, u32),
    /// (start of the current second, refusal records written in it).
    refusal_records: (Instant, u32),
}

/// A request we send: where, why, and what an ACK or CANCEL of it repeats.
pub struct NewClient {
    pub call: u64,
    pub leg: LegId,
    pub purpose: Purpose,
    pub side: Side,
    pub dest: Link,
    pub method: trunkgate_sip::Method,
    pub branch: String,
    pub bytes: Vec<u8>,
    /// Request-URI, From, To and Call-ID lines, for an ACK or CANCEL of this INVITE.
    pub ruri: String,
    pub ident: String,
    pub cseq: u32,
}

/// What an answer to one of our requests asks of the worker ([`Transactions::on_response`]).
pub enum Answered {
    /// Nothing (a provisional absorbed, a late answer to a request given up, …).
    Nothing,
    /// A retransmitted 2xx of the INVITE of `call`'s `leg` (§13.2.2.4).
    Retransmitted2xx { call: u64, leg: LegId },
    /// A carrier's 401/407 to a request other than a call's set-up INVITE; `sent` is the
    /// request as sent, to send again with credentials.
    Challenge { sent: Vec<u8> },
    /// An answer for whoever sent the request.
    Response,
}

impl Transactions {
    pub fn new(shared: Arc<Shared>, now: Instant) -> Self {
        Transactions {
            hot: shared.metrics.hot(),
            shared,
            out: Outbox::default(),
            servers: Default::default(),
            clients: Default::default(),
            timers: Default::default(),
            refusal_log: (now, 0),
            refusal_records: (now, 0),
        }
    }

    // ---- the outbox and the timers ---------------------------------------------------------

    pub fn send(&mut self, side: Side, dest: &Link, bytes: &[u8]) {
        self.out.send(side, dest, bytes);
    }

    pub fn push(&mut self, o: Output) {
        self.out.push(o);
    }

    /// What the inputs handled so far asked the runtime to do, oldest first.
    pub fn outputs(&mut self) -> std::vec::Drain<'_, Output> {
        self.out.drain()
    }

    pub fn schedule(&mut self, now: Instant, after: Duration, t: Timer) {
        self.timers.set(now, after, t);
    }

    /// The next timer due at or before `now`.
    pub fn due(&mut self, now: Instant) -> Option<Timer> {
        self.timers.pop_due(now)
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.timers.next_deadline()
    }

    /// `--failover-seconds`: how long a carrier target may stay silent.
    pub fn failover_timeout(&self) -> Duration {
        self.shared.settings.failover_timeout()
    }

    /// Starts the timers a transaction asked for.
    fn arm(&mut self, now: Instant, role: Role, key: &TransactionKey, actions: &Actions) {
        for &(t, after) in actions.arm.iter().flatten() {
            let timer = match role {
                Role::Client => Timer::Client(key.clone(), t),
                Role::Server => Timer::Server(key.clone(), t),
            };
            self.timers.set(now, after, timer);
        }
    }

    fn count_timeout(&self, side: Side) {
        self.shared
            .metrics
            .timeouts
            .with_label_values(&[side.label()])
            .inc();
    }

    // ---- server transactions ---------------------------------------------------------------

    pub fn server(&self, key: &TransactionKey) -> Option<&ServerTxn> {
        self.servers.get(key)
    }

    pub fn server_mut(&mut self, key: &TransactionKey) -> Option<&mut ServerTxn> {
        self.servers.get_mut(key)
    }

    /// Opens a server transaction for `req` from `src`; `tag` is the To tag our responses carry.
    pub fn open_server(
        &mut self,
        side: Side,
        src: &Link,
        req: &Request,
        tag: Option<&str>,
    ) -> TransactionKey {
        let key = TransactionKey::from_request(req, Role::Server);
        let prefix = super::receive::response_prefix(req, src.addr(), tag);
        let invite = req.method == trunkgate_sip::Method::Invite;
        let record_route = if invite {
            msg::header_lines(req, "Record-Route")
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

    /// A retransmission of a request whose transaction `key` we hold: its last answer again
    /// (§17.2.1, §17.2.2). False when `key` is no transaction of ours.
    pub fn repeat(&mut self, side: Side, key: &TransactionKey) -> bool {
        let Some(tx) = self.servers.get(key) else {
            return false;
        };
        if tx.machine.on_retransmission().resend
            && let Some(bytes) = &tx.last
        {
            self.out.send(tx.side, &tx.peer, bytes);
        }
        self.hot.retransmissions[side.index()].inc();
        true
    }

    /// Sends a response on a server transaction; a final one starts its RFC 3261 §17.2 timers
    /// (G/H or the §13.3.1.4 2xx retransmission and L for an INVITE, J for others).
    pub fn respond(
        &mut self,
        now: Instant,
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
        self.arm(now, Role::Server, key, &actions);
        if actions.terminated {
            self.servers.remove(key);
        }
    }

    /// A refusal with a Warning (RFC 3261 §20.43). The platform always learns why; a carrier
    /// learns why only when the problem is in its own message (syntax, SDP, number format, hop
    /// count), else just the reason phrase — whether a number is served, which trunk, why its
    /// credentials failed stay in the log and the metrics (`--detailed-warnings` for labs).
    pub fn refuse(
        &mut self,
        now: Instant,
        key: &TransactionKey,
        code: u16,
        text: &str,
        extra: &str,
    ) {
        self.refuse_for(now, key, None, code, text, extra);
    }

    /// [`Transactions::refuse`] of a call attempt whose trunk is known (named in its record).
    pub fn refuse_for(
        &mut self,
        now: Instant,
        key: &TransactionKey,
        trunk: Option<&str>,
        code: u16,
        text: &str,
        extra: &str,
    ) {
        self.record_refusal(now, key, trunk, code, text);
        let terse = !self.shared.settings.detailed_warnings
            && !about_their_message(code)
            && self
                .servers
                .get(key)
                .is_some_and(|tx| tx.side == Side::Public);
        let shown = if terse {
            self.log_refusal(now, key, code, text);
            reason_phrase(code)
        } else {
            text
        };
        let mut lines = format!(
            "Warning: {}\r\n",
            warning(&self.shared.public_hostport, shown)
        );
        lines.push_str(extra);
        self.respond(now, key, code, reason_phrase(code), &lines, &[]);
    }

    /// Opens a server transaction for `req` and refuses it at once.
    #[allow(clippy::too_many_arguments)]
    pub fn open_and_refuse(
        &mut self,
        now: Instant,
        side: Side,
        src: &Link,
        req: &Request,
        code: u16,
        text: &str,
        extra: &str,
    ) {
        let key = self.open_server(side, src, req, None);
        self.refuse(now, &key, code, text, extra);
    }

    /// A refused INVITE that never became a call gets a record of its own on stdout (the
    /// source, Call-ID, status and why), at most [`REFUSAL_RECORDS_PER_SECOND`] a second per
    /// worker: a flood is counted in the metrics, it cannot fill the disk.
    fn record_refusal(
        &mut self,
        now: Instant,
        key: &TransactionKey,
        trunk: Option<&str>,
        code: u16,
        text: &str,
    ) {
        if key.method() != trunkgate_sip::Method::Invite || !self.shared.settings.cdr {
            return;
        }
        let Some(tx) = self.servers.get(key) else {
            return;
        };
        if tx.call.is_some() {
            return; // a call: its own record says how it ended
        }
        if !per_second(&mut self.refusal_records, now, REFUSAL_RECORDS_PER_SECOND).0 {
            self.shared.metrics.refusal_records_suppressed.inc();
            return;
        }
        crate::call::cdr::write_refusal(crate::call::cdr::RefusalRecord {
            from: tx.side.party(),
            source: tx.peer.addr(),
            method: "INVITE",
            call_id: tx.call_id(),
            trunk,
            status: code,
            reason: text,
        });
    }

    /// Logs why a carrier was refused, at most [`REFUSAL_LOG_PER_SECOND`] lines a second per
    /// worker (a flood is counted in the metrics, not written out line by line).
    fn log_refusal(&mut self, now: Instant, key: &TransactionKey, code: u16, text: &str) {
        let (write, suppressed) = per_second(&mut self.refusal_log, now, REFUSAL_LOG_PER_SECOND);
        if suppressed > 0 {
            tracing::info!(suppressed, "more carrier refusals not logged");
        }
        if write {
            // What a carrier's ticket is matched against: its address, the method, the Call-ID.
            let (source, call_id) = self.servers.get(key).map_or_else(Default::default, |tx| {
                (tx.peer.addr().to_string(), tx.call_id().to_string())
            });
            let method = trunkgate_sip::values::method_name(&key.method());
            tracing::info!(code, why = text, %source, method, call_id, "refused a carrier's request");
        }
    }

    /// The hop-by-hop ACK of our non-2xx final answer to the INVITE of `key`, from `src`
    /// (§17.2.1): stops Timers G and H and lingers (Timer I). False when it is not one.
    pub fn ack_of_non_2xx(&mut self, now: Instant, key: &TransactionKey, src: &Link) -> bool {
        let Some(tx) = self.servers.get_mut(key) else {
            return false;
        };
        if tx.machine.state() != transaction::ServerState::Completed
            || tx.peer.addr().ip() != src.addr().ip()
        {
            return false;
        }
        if let Some(actions) = tx.machine.on_ack() {
            self.settle_server(now, key, &actions);
        }
        true
    }

    /// The end-to-end ACK of our 2xx on the server transaction `key` came: stop resending it.
    pub fn ack_of_2xx(&mut self, now: Instant, key: &TransactionKey) {
        if let Some(actions) = self.servers.get_mut(key).and_then(|tx| tx.machine.on_ack()) {
            self.settle_server(now, key, &actions);
        }
    }

    fn settle_server(&mut self, now: Instant, key: &TransactionKey, actions: &Actions) {
        self.arm(now, Role::Server, key, actions);
        if actions.terminated {
            self.servers.remove(key);
        }
    }

    /// A timer of a server transaction. Some(call): Timer L ran out on call's 2xx without an
    /// ACK (RFC 3261 §13.3.1.4: the session SHOULD end, with a BYE on this leg too).
    pub fn server_timer(
        &mut self,
        now: Instant,
        key: TransactionKey,
        t: transaction::Timer,
    ) -> Option<u64> {
        let tx = self.servers.get_mut(&key)?;
        let actions = tx.machine.on_timer(t);
        // Only unreliable transports run the retransmission timers.
        if actions.resend
            && let Some(bytes) = &tx.last
        {
            self.out.send(tx.side, &tx.peer, bytes);
            self.hot.retransmissions[tx.side.index()].inc();
        }
        let (side, call) = (tx.side, tx.call);
        self.settle_server(now, &key, &actions);
        if !actions.timed_out {
            return None;
        }
        // Timer H (non-2xx) or L (2xx): no ACK ever came.
        self.count_timeout(side);
        match (call, t) {
            (Some((id, _)), transaction::Timer::L) => Some(id),
            _ => None,
        }
    }

    // ---- client transactions ---------------------------------------------------------------

    pub fn client(&self, key: &TransactionKey) -> Option<&ClientTxn> {
        self.clients.get(key)
    }

    pub fn client_mut(&mut self, key: &TransactionKey) -> Option<&mut ClientTxn> {
        self.clients.get_mut(key)
    }

    pub fn forget_client(&mut self, key: &TransactionKey) {
        self.clients.remove(key);
    }

    /// Sends a request and keeps it for retransmission (RFC 3261 §17.1).
    pub fn open_client(&mut self, now: Instant, r: NewClient) -> TransactionKey {
        let key = TransactionKey::client(&r.branch, r.method);
        let (machine, actions) =
            ClientTransaction::start(r.method == trunkgate_sip::Method::Invite, r.dest.reliable());
        self.out.send(r.side, &r.dest, &r.bytes);
        self.hot.transactions[r.side.index()][1].inc();
        self.clients.insert(
            key.clone(),
            ClientTxn {
                call: r.call,
                leg: r.leg,
                purpose: r.purpose,
                side: r.side,
                dest: r.dest,
                bytes: r.bytes,
                machine,
                ruri: r.ruri,
                ident: r.ident,
                cseq: r.cseq,
                auth_tries: 0,
            },
        );
        self.arm(now, Role::Client, &key, &actions);
        key
    }

    /// A timer of a client transaction; true when the request timed out (Timer B/F): the
    /// worker gives it up (and keeps it a while to absorb late answers).
    pub fn client_timer(
        &mut self,
        now: Instant,
        key: TransactionKey,
        t: transaction::Timer,
    ) -> bool {
        let Some(tx) = self.clients.get_mut(&key) else {
            return false;
        };
        let actions = tx.machine.on_timer(t);
        if actions.resend {
            self.out.send(tx.side, &tx.dest, &tx.bytes);
            self.hot.retransmissions[tx.side.index()].inc();
        }
        let side = tx.side;
        self.arm(now, Role::Client, &key, &actions);
        if actions.timed_out {
            self.count_timeout(side);
            return true;
        }
        if actions.terminated {
            self.clients.remove(&key);
        }
        false
    }

    /// Whether the request of `key` is still unanswered when its `--failover-seconds` ran
    /// out (counted as a timeout).
    pub fn failover_due(&self, key: &TransactionKey) -> bool {
        let Some(tx) = self.clients.get(key) else {
            return false;
        };
        if tx.machine.answered() {
            return false;
        }
        self.count_timeout(tx.side);
        true
    }

    /// Whether the INVITE of `key` still waits for a final answer (a CANCELed one, 64·T1 on).
    pub fn still_pending(&self, key: &TransactionKey) -> bool {
        self.clients.get(key).is_some_and(|tx| {
            matches!(
                tx.machine.state(),
                ClientState::Calling | ClientState::Proceeding
            )
        })
    }

    /// Gives the request of `key` up: late answers are absorbed for T4, then it is forgotten.
    /// What it was for.
    pub fn give_up(&mut self, now: Instant, key: &TransactionKey) -> Option<(u64, LegId, Purpose)> {
        let tx = self.clients.get_mut(key)?;
        tx.machine.give_up();
        let what = (tx.call, tx.leg, tx.purpose.clone());
        self.timers
            .set(now, transaction::T4, Timer::ClientForget(key.clone()));
        Some(what)
    }

    /// The requests still pending over the connection to `addr`.
    pub fn pending_over(&self, addr: std::net::SocketAddr) -> Vec<TransactionKey> {
        self.clients
            .iter()
            .filter(|(_, tx)| tx.machine.pending() && tx.dest.reliable() && tx.dest.addr() == addr)
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// An answer from `src` on `side` to a request of ours: its transaction's key and what it
    /// asks of the worker. Once the worker has done it, [`Transactions::settle_client`].
    pub fn on_response(
        &mut self,
        now: Instant,
        side: Side,
        src: &Link,
        resp: &Response,
        allowed: bool,
    ) -> Option<(TransactionKey, Answered, bool)> {
        let key = TransactionKey::of_response(resp)?;
        let code = resp.status_code.code();
        let Some(tx) = self.clients.get_mut(&key) else {
            tracing::debug!(src = %src.addr(), code, "response matches no transaction");
            return None;
        };
        if tx.side != side {
            return None;
        }
        // A carrier's answer comes from the address we sent to: a guessed branch from anywhere
        // else must not answer or end our requests (from outside the allow-lists: silently).
        if side == Side::Public && tx.dest.addr().ip() != src.addr().ip() {
            if !allowed {
                self.shared.count_acl_drop(side);
            }
            tracing::debug!(src = %src.addr(), code, "response from another address than the request went to");
            return None;
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
        let setup = matches!(tx.purpose, Purpose::Setup);
        let carrier = tx.side == Side::Public && !setup;
        let (call, leg) = (tx.call, tx.leg);
        self.arm(now, Role::Client, &key, &actions);
        let answered = match actions.deliver {
            Delivery::None => Answered::Nothing,
            Delivery::Retransmitted2xx => Answered::Retransmitted2xx { call, leg },
            // After a give-up only the set-up cares (to hang up a late answer).
            Delivery::Response if given_up && !setup => Answered::Nothing,
            // A carrier's challenge to anything but the initial INVITE (which has its own path
            // with failover) is answered by the worker.
            Delivery::Response if (code == 401 || code == 407) && carrier => {
                Answered::Challenge { sent }
            }
            Delivery::Response => Answered::Response,
        };
        Some((key, answered, actions.terminated))
    }

    /// The request of `key` is over (`terminated` by its last answer): forgotten.
    pub fn settle_client(&mut self, key: &TransactionKey, terminated: bool) {
        if terminated {
            self.clients.remove(key);
        }
    }

    /// CANCEL of the pending INVITE of `inv` (RFC 3261 §9.1: same branch, Request-URI,
    /// Call-ID, From, To and CSeq number), `to` its To header; a peer that answers neither
    /// must not hold the call for ever, so 64·T1 later it is given up (Timer::CancelGuard).
    pub fn cancel(&mut self, now: Instant, inv: &TransactionKey, to: &str) {
        let Some(tx) = self.clients.get(inv) else {
            return;
        };
        let hostport = self.shared.hostport_on(tx.side, &tx.dest);
        let bytes = Builder::request_via(
            "CANCEL",
            &tx.ruri,
            &via(tx.dest.transport(), hostport, inv.branch()),
        )
        .ids(&tx.ident, to, tx.cseq, "CANCEL")
        .finish();
        let r = NewClient {
            call: tx.call,
            leg: LegId::B,
            purpose: Purpose::Cancel,
            side: tx.side,
            dest: tx.dest.clone(),
            method: trunkgate_sip::Method::Cancel,
            branch: inv.branch().to_string(),
            bytes,
            ruri: tx.ruri.clone(),
            ident: tx.ident.clone(),
            cseq: tx.cseq,
        };
        self.open_client(now, r);
        self.timers
            .set(now, transaction::TIMEOUT, Timer::CancelGuard(inv.clone()));
    }

    /// ACKs a 2xx to the INVITE of `key` that no call wants (a late answer of an abandoned
    /// attempt, another fork's answer) and, with `bye`, hangs its dialog up. No transaction:
    /// an ACK of a 2xx has none (§13.2.2.4); this BYE is sent once.
    pub fn ack_and_bye_stray(
        &mut self,
        mint: &mut IdMint,
        key: &TransactionKey,
        resp: &Response,
        bye: bool,
    ) {
        let Some(tx) = self.clients.get(key) else {
            return;
        };
        let to = msg::header(resp, "To").unwrap_or_default();
        let target = msg::header(resp, "Contact")
            .map(msg::uri_of)
            .unwrap_or(&tx.ruri);
        let hostport = self.shared.hostport_on(tx.side, &tx.dest);
        let requests: &[(&str, u32)] = if bye {
            &[("ACK", tx.cseq), ("BYE", tx.cseq + 1)]
        } else {
            &[("ACK", tx.cseq)]
        };
        for &(method, n) in requests {
            let branch = mint.branch();
            let bytes =
                Builder::request_via(method, target, &via(tx.dest.transport(), hostport, &branch))
                    .ids(&tx.ident, to, n, method)
                    .finish();
            self.out.send(tx.side, &tx.dest, &bytes);
        }
    }
}

/// Counts one more event in the second of `window` at `now`: (whether it is within `cap` this
/// second, how many went over the cap in the second that just ended).
fn per_second(window: &mut (Instant, u32), now: Instant, cap: u32) -> (bool, u32) {
    let (since, n) = window;
    let mut over = 0;
    if now.saturating_duration_since(*since) >= Duration::from_secs(1) {
        over = n.saturating_sub(cap);
        *since = now;
        *n = 0;
    }
    *n += 1;
    (*n <= cap, over)
}

/// The ACK for a non-2xx final response: same branch, Request-URI, From, Call-ID and CSeq
/// number as the INVITE, To from the response (RFC 3261 §17.1.1.3).
fn ack_for_non_2xx(tx: &ClientTxn, resp: &Response) -> Vec<u8> {
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
