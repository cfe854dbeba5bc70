//! One worker: a single-threaded event loop that owns its sockets (SO_REUSEPORT), its
//! transactions (RFC 3261 §17), its dialogs and its calls. No locks on the call path; the
//! snapshot is read through ArcSwap. A message for a call another worker owns is handed over.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use trunkgate_sip::{HasHeaders, Request, Response, SipMessage};

use crate::auth::AuthState;
use crate::call::{Call, CallState, LegId, Side};
use crate::config::Runtime;
use crate::ids::{IdMint, owner};
use crate::message::{Builder, reason_phrase, warning};
use crate::metrics::Metrics;
use crate::msg;
use crate::settings::Settings;
use crate::transaction::{
    self, Actions, ClientState, ClientTransaction, Delivery, Role, ServerTransaction, T4,
    TransactionKey,
};

/// A worker's tables: keys come from the network, so the hasher is seeded per process
/// (foldhash's RandomState), and faster than SipHash.
pub type Table<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// What every worker shares, read-only but for atomics and the snapshot swap.
pub struct Shared {
    pub settings: Settings,
    pub runtime: ArcSwap<Runtime>,
    pub metrics: Metrics,
    pub handoff: Vec<mpsc::Sender<Handoff>>,
    pub draining: AtomicBool,
    /// host:port in carrier-side Via/Contact.
    pub public_hostport: String,
    /// host:port in platform-side Via/Contact.
    pub internal_hostport: String,
    pub nonce_key: [u8; 32],
    /// RFC 3263 resolver for targets given by name (None when /etc/resolv.conf is unusable).
    pub resolver: Option<trunkgate_resolve::Resolver>,
    /// TCP connections held, against `--tcp-max-connections` and `--tcp-max-per-source`.
    pub tcp: Arc<crate::census::Census>,
    /// Digest failures per source and username, shared by every worker.
    pub lockout: Arc<crate::lockout::Lockout>,
    /// Calls in set-up per carrier-side source (`--max-calls-in-setup-per-source`).
    pub setup_sources: Arc<crate::census::Census>,
    /// The kernel-side filter of the carrier-side UDP sockets (`--kernel-prefilter`).
    pub prefilter: crate::prefilter::Prefilter,
    /// Datagrams per carrier-side source (`--source-rate`), shared by every worker.
    pub source_limit: crate::source_limit::SourceLimiter,
}

/// How to reach a peer: a UDP address, or a TCP connection's writer (any worker may write to
/// it; the connection's own worker owns the socket).
#[derive(Clone, Debug)]
pub enum Link {
    Udp(SocketAddr),
    Tcp(SocketAddr, mpsc::UnboundedSender<Vec<u8>>),
}

impl Link {
    pub fn addr(&self) -> SocketAddr {
        match self {
            Link::Udp(a) | Link::Tcp(a, _) => *a,
        }
    }
    /// The Via transport token (RFC 3261 §18.1.1: also decides whether we retransmit).
    pub fn transport(&self) -> &'static str {
        match self {
            Link::Udp(_) => "UDP",
            Link::Tcp(..) => "TCP",
        }
    }
    pub fn reliable(&self) -> bool {
        matches!(self, Link::Tcp(..))
    }
}

/// A parsed message for another worker's call.
pub struct Handoff {
    pub side: Side,
    pub src: Link,
    pub msg: Box<SipMessage>,
}

/// Work that comes back to the worker from its own tasks.
pub enum Event {
    /// A message read from one of this worker's TCP connections.
    Message {
        side: Side,
        src: Link,
        msg: Box<SipMessage>,
    },
    /// A TCP connection we opened could not be used.
    LinkFailed { addr: SocketAddr },
    /// The answer to an RFC 3263 lookup that [`Worker::resolve`] started.
    Resolved {
        lookup: Lookup,
        result: Result<Vec<trunkgate_resolve::Destination>, trunkgate_resolve::Error>,
    },
}

/// Who waits for an RFC 3263 lookup.
pub enum Lookup {
    /// A call's B-leg hop.
    Call(u64),
    /// The carrier target a health probe is for (its first address is probed).
    Probe {
        probe: Arc<crate::health::Probe>,
        uri_host: String,
    },
}

/// A request we received and the responses we gave it.
pub struct ServerTxn {
    pub side: Side,
    pub peer: Link,
    pub call: Option<(u64, LegId)>,
    /// Via…CSeq lines every response to this request repeats (RFC 3261 §8.2.6.2).
    pub prefix: String,
    /// The request's Record-Route lines, repeated in every response that creates or confirms a
    /// dialog (RFC 3261 §12.1.1): 101–299 to an INVITE. Empty for other requests.
    pub record_route: String,
    /// The last response sent, repeated to retransmissions and by Timer G.
    pub last: Option<Vec<u8>>,
    pub machine: ServerTransaction,
}

/// Why we sent a request.
#[derive(Clone, Debug)]
pub enum Purpose {
    /// The INVITE that sets up leg B.
    Setup,
    /// A request relayed from the other leg; its answer goes back to that server transaction.
    Relay(TransactionKey),
    /// A BYE ending this leg.
    Bye,
    /// A CANCEL of leg B's INVITE.
    Cancel,
    /// An OPTIONS health probe of a carrier target (no call).
    Probe(Arc<crate::health::Probe>),
}

/// A request we sent and its state.
pub struct ClientTxn {
    pub call: u64,
    pub leg: LegId,
    pub purpose: Purpose,
    pub side: Side,
    pub dest: Link,
    /// The request as sent, for retransmissions (dropped at its final response).
    pub bytes: Vec<u8>,
    pub machine: ClientTransaction,
    /// Request-URI, From, To and Call-ID lines, for an ACK or CANCEL of this INVITE.
    pub ruri: String,
    pub ident: String,
    pub cseq: u32,
    /// How many times this request was already sent again with credentials.
    pub auth_tries: u8,
}

#[derive(Clone, Debug)]
pub enum Timer {
    /// A named timer of a request we sent (RFC 3261 §17.1).
    Client(TransactionKey, transaction::Timer),
    /// A named timer of a request we received (RFC 3261 §17.2).
    Server(TransactionKey, transaction::Timer),
    /// An outbound target that has not answered within `--failover-seconds`.
    Failover(TransactionKey),
    /// A request we gave up on (timeout, failover) stops absorbing late answers.
    ClientForget(TransactionKey),
    CallForget(u64),
    /// Look for carrier targets whose OPTIONS probe is due.
    ProbeTick,
}

/// A worker's sockets: sending borrows only these, not the worker's tables.
pub struct Net {
    pub public: Arc<UdpSocket>,
    pub internal: Arc<UdpSocket>,
    pub metrics: Metrics,
}

impl Net {
    pub fn send(&self, side: Side, dest: &Link, bytes: &[u8]) {
        let ok = match dest {
            Link::Udp(addr) => {
                let sock = match side {
                    Side::Public => &self.public,
                    Side::Internal => &self.internal,
                };
                sock.try_send_to(bytes, *addr).is_ok()
            }
            Link::Tcp(_, tx) => tx.send(bytes.to_vec()).is_ok(),
        };
        if !ok {
            self.metrics
                .send_errors
                .with_label_values(&[side.label()])
                .inc();
            tracing::debug!(dest = %dest.addr(), "send failed");
        }
    }
}

impl Shared {
    pub fn hostport(&self, side: Side) -> &str {
        match side {
            Side::Public => &self.public_hostport,
            Side::Internal => &self.internal_hostport,
        }
    }
}

/// One worker's state.
pub struct Worker {
    pub index: usize,
    pub shared: Arc<Shared>,
    pub net: Net,
    pub mint: IdMint,
    pub calls: Table<u64, Call>,
    pub next_call: u64,
    pub dialogs: Table<(String, String), (u64, LegId)>,
    pub servers: Table<TransactionKey, ServerTxn>,
    pub clients: Table<TransactionKey, ClientTxn>,
    pub timers: crate::timers::Timers<Timer>,
    pub events: mpsc::UnboundedSender<Event>,
    pub auth: AuthState,
    /// Counters every message touches, resolved once.
    pub hot: crate::metrics::Hot,
    pub tcp_out: crate::tcp::Outgoing,
    /// This worker's media relay (None when it could not start: relayed calls get 503).
    pub media: Option<trunkgate_media::MediaEngine>,
    /// The relay's totals already added to the metrics.
    pub media_counted: trunkgate_media::Counters,
    /// (start of the current second, carrier refusals logged in it).
    pub refusal_log: (Instant, u32),
    /// Relay sessions open on this worker, per trunk id (for the RTP port fair share).
    pub rtp_by_trunk: Table<String, u32>,
}

/// Carrier refusals written to the log per second and worker; the rest are only counted.
const REFUSAL_LOG_PER_SECOND: u32 = 20;

/// Refusals about the carrier's own message, whose detail tells it nothing about our set-up:
/// 400, 415, 420, 482, 483, 484, 488, 505, 513.
fn about_their_message(code: u16) -> bool {
    matches!(code, 400 | 415 | 420 | 482 | 483 | 484 | 488 | 505 | 513)
}

impl Worker {
    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    pub fn hostport(&self, side: Side) -> &str {
        self.shared.hostport(side)
    }

    /// Runs until shutdown completes.
    pub async fn run(
        mut self,
        mut handoff_rx: mpsc::Receiver<Handoff>,
        mut events_rx: mpsc::UnboundedReceiver<Event>,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        let public = self.net.public.clone();
        let internal = self.net.internal.clone();
        let mut buf_pub = vec![0u8; 65_535];
        let mut buf_int = vec![0u8; 65_535];
        let mut stopping = false;
        self.schedule(crate::health::TICK, Timer::ProbeTick);
        loop {
            let next = self.timers.next_deadline();
            let sleep = async move {
                match next {
                    Some(t) => tokio::time::sleep_until(t.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                r = public.recv_from(&mut buf_pub) => match r {
                    Ok((n, src)) => self.on_datagram(Side::Public, src, &buf_pub[..n]),
                    Err(e) => tracing::debug!(error = %e, "public recv"),
                },
                r = internal.recv_from(&mut buf_int) => match r {
                    Ok((n, src)) => self.on_datagram(Side::Internal, src, &buf_int[..n]),
                    Err(e) => tracing::debug!(error = %e, "internal recv"),
                },
                Some(h) = handoff_rx.recv() => self.on_message(h.side, &h.src, *h.msg, false),
                Some(e) = events_rx.recv() => self.on_event(e),
                _ = wait_media(&self.media) => {
                    if let Some(m) = self.media.as_mut() {
                        let events = m.relay();
                        self.on_media_events(events);
                    }
                }
                _ = sleep => self.fire_timers(),
                r = shutdown.changed(), if !stopping => {
                    if r.is_err() || *shutdown.borrow() {
                        stopping = true;
                        self.hang_up_all();
                    }
                }
            }
            if stopping && self.calls.values().all(|c| c.state == CallState::Ended) {
                return;
            }
        }
    }

    // ---- sending -------------------------------------------------------------------------

    pub fn send(&self, side: Side, dest: &Link, bytes: &[u8]) {
        self.net.send(side, dest, bytes);
    }

    // ---- timers --------------------------------------------------------------------------

    pub fn schedule(&mut self, after: Duration, t: Timer) {
        self.timers.set(Instant::now(), after, t);
    }

    fn fire_timers(&mut self) {
        let now = Instant::now();
        while let Some(t) = self.timers.pop_due(now) {
            self.on_timer(t);
        }
    }

    fn on_timer(&mut self, t: Timer) {
        match t {
            Timer::Client(key, t) => self.client_timer(key, t),
            Timer::Server(key, t) => self.server_timer(key, t),
            Timer::Failover(key) => {
                let Some(tx) = self.clients.get(&key) else {
                    return;
                };
                if tx.machine.answered() {
                    return;
                }
                self.metrics()
                    .timeouts
                    .with_label_values(&[tx.side.label()])
                    .inc();
                let secs = self.shared.settings.failover_seconds;
                self.client_failed(
                    key,
                    408,
                    format!("carrier target did not answer within {secs} s"),
                );
            }
            Timer::ClientForget(key) => {
                self.clients.remove(&key);
            }
            Timer::CallForget(id) => self.forget_call(id),
            Timer::ProbeTick => self.probe_tick(),
        }
    }

    /// Starts the timers a transaction asked for.
    fn arm(&mut self, role: Role, key: &TransactionKey, actions: &Actions) {
        for &(t, after) in actions.arm.iter().flatten() {
            let timer = match role {
                Role::Client => Timer::Client(key.clone(), t),
                Role::Server => Timer::Server(key.clone(), t),
            };
            self.schedule(after, timer);
        }
    }

    fn client_timer(&mut self, key: TransactionKey, t: transaction::Timer) {
        let Some(tx) = self.clients.get_mut(&key) else {
            return;
        };
        let actions = tx.machine.on_timer(t);
        if actions.resend {
            self.net.send(tx.side, &tx.dest, &tx.bytes);
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
                "no answer within 32 s (RFC 3261 timer B/F)".into(),
            );
        }
        if actions.terminated {
            self.clients.remove(&key);
        }
    }

    fn server_timer(&mut self, key: TransactionKey, t: transaction::Timer) {
        let Some(tx) = self.servers.get_mut(&key) else {
            return;
        };
        let actions = tx.machine.on_timer(t);
        // Only unreliable transports run the retransmission timers.
        if actions.resend
            && let Some(bytes) = &tx.last
        {
            self.net.send(tx.side, &tx.peer, bytes);
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
        self.net.send(tx.side, &tx.peer, &bytes);
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
        let terse = !self.shared.settings.detailed_warnings
            && !about_their_message(code)
            && self
                .servers
                .get(key)
                .is_some_and(|tx| tx.side == Side::Public);
        let shown = if terse {
            self.log_refusal(code, text);
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

    /// Logs why a carrier was refused, at most [`REFUSAL_LOG_PER_SECOND`] lines a second per
    /// worker (a flood is counted in the metrics, not written out line by line).
    fn log_refusal(&mut self, code: u16, text: &str) {
        let now = Instant::now();
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
            tracing::info!(code, why = text, "refused a carrier's request");
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

    // ---- receiving -------------------------------------------------------------------------

    fn on_datagram(&mut self, side: Side, src: SocketAddr, data: &[u8]) {
        if side == Side::Public {
            if self.source_allowed(src) {
                if self.over_rate(src.ip()) {
                    return;
                }
            } else if !crate::ids::may_carry_ours(data) && !self.shared.settings.acl_reply_403 {
                // Outside the allow-lists only a message of ours may go on, and it carries one
                // of our tags or branches: anything else is dropped unparsed (a flood of them
                // then costs a look-up and a scan, not a parse).
                return self.count_acl_drop(side);
            }
        }
        match trunkgate_sip::parse(data) {
            Ok(m) => self.on_message(side, &Link::Udp(src), m, true),
            Err(trunkgate_sip::CodecError::KeepAlive) => {}
            Err(e) => {
                self.metrics()
                    .malformed
                    .with_label_values(&[side.label(), e.metric_label()])
                    .inc();
                if side == Side::Public && !self.source_allowed(src) {
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

    /// Whether `ip` (an allowed carrier-side source) is over `--source-rate` or blocked; counts
    /// the drop and logs a new block.
    pub(crate) fn over_rate(&self, ip: std::net::IpAddr) -> bool {
        match self.shared.source_limit.check(ip, Instant::now()) {
            crate::source_limit::Verdict::Pass => false,
            crate::source_limit::Verdict::Drop { newly } => {
                let m = self.metrics();
                m.source_dropped.inc();
                if newly {
                    m.source_blocks.with_label_values(&["public"]).inc();
                    tracing::warn!(
                        source = %ip,
                        rate = self.shared.settings.source_rate,
                        seconds = self.shared.settings.source_block_seconds,
                        "carrier-side source over --source-rate: blocked, its requests dropped unanswered"
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

    fn hand_off(&self, to: usize, side: Side, src: &Link, m: SipMessage) {
        let src = src.clone();
        match self.shared.handoff.get(to).map(|tx| {
            tx.try_send(Handoff {
                side,
                src,
                msg: Box::new(m),
            })
        }) {
            Some(Ok(())) => self.hot.handoffs_ok.inc(),
            _ => self
                .metrics()
                .handoffs
                .with_label_values(&["dropped"])
                .inc(),
        }
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
        let allowed = side == Side::Internal || self.source_allowed(src.addr());
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
                self.refuse(
                    &key,
                    403,
                    "source address not allowed by any CarrierTrunk",
                    "",
                );
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

    fn on_request(&mut self, side: Side, src: &Link, req: &Request, allowed: bool) {
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
                self.net.send(tx.side, &tx.peer, bytes);
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
    fn is_loop(&self, req: &Request) -> bool {
        msg::headers(req, "Via").any(|v| {
            msg::param(v, "branch").and_then(owner).is_some()
                && (v.contains(self.shared.public_hostport.as_str())
                    || v.contains(self.shared.internal_hostport.as_str()))
        })
    }

    fn on_response(&mut self, side: Side, src: &Link, resp: &Response, allowed: bool) {
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
            self.net.send(tx.side, &tx.dest, &ack);
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
            // A retransmitted 2xx of leg B's INVITE: repeat our ACK (§13.2.2.4).
            Delivery::Retransmitted2xx => {
                if let Some(c) = self.calls.get(&call)
                    && leg == LegId::B
                    && let Some(ack) = &c.b_ack
                {
                    self.net.send(c.b.side, &c.b.peer, ack);
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

    fn on_event(&mut self, e: Event) {
        match e {
            Event::Resolved {
                lookup: Lookup::Call(call),
                result,
            } => self.on_resolved(call, result),
            Event::Resolved {
                lookup: Lookup::Probe { probe, uri_host },
                result,
            } => self.on_probe_resolved(probe, &uri_host, result),
            Event::Message { side, src, msg } => {
                if side == Side::Public && self.over_rate(src.addr().ip()) {
                    return;
                }
                self.on_message(side, &src, *msg, true)
            }
            Event::LinkFailed { addr } => self.on_link_failed(addr),
        }
    }

    // ---- calls -------------------------------------------------------------------------

    /// Removes a call and everything that points to it.
    fn forget_call(&mut self, id: u64) {
        if let Some(c) = self.calls.remove(&id) {
            self.dialogs
                .remove(&(c.a.call_id.clone(), c.a.local_tag.clone()));
            self.dialogs
                .remove(&(c.b.call_id.clone(), c.b.local_tag.clone()));
        }
    }

    /// Marks a call over, writes its record and schedules its removal.
    pub fn finish_call(&mut self, id: u64) {
        if self
            .calls
            .get(&id)
            .is_none_or(|c| c.state == CallState::Ended)
        {
            return;
        }
        // The relay session ends with the call: its ports go to quarantine, its figures to the
        // call record and the per-trunk histograms.
        let stats = self.close_media(id);
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        for st in stats.iter().filter(|st| st.packets > 0) {
            let dir = match st.from {
                Side::Public => "from_carrier",
                Side::Internal => "from_platform",
            };
            let m = &self.shared.metrics;
            let labels = [c.rt.trunk(c.trunk).id.as_str(), dir];
            if let Some(mos) = st.mos {
                m.media_mos.with_label_values(&labels).observe(mos);
            }
            m.media_loss
                .with_label_values(&labels)
                .observe(st.lost as f64 / st.expected.max(1) as f64);
            m.media_jitter
                .with_label_values(&labels)
                .observe(st.jitter_ms / 1000.0);
        }
        c.media_stats = stats;
        c.state = CallState::Ended;
        c.slot = None;
        c.setup = None;
        c.setup_source = None;
        let code = c.final_code.unwrap_or(500);
        self.shared
            .metrics
            .calls
            .with_label_values(&[
                c.trunk_id(),
                c.direction.label(),
                crate::metrics::code_class(code),
            ])
            .inc();
        if self.shared.settings.cdr {
            crate::cdr::write(c);
        }
        // Transactions absorb retransmissions on their own; the call itself only has to outlive
        // stray in-dialog requests for a moment (they get 481 afterwards).
        self.schedule(T4, Timer::CallForget(id));
    }

    /// RFC 3263 location of `hop` (NAPTR, SRV, then A/AAAA) off the event loop; the answer comes
    /// back as [`Event::Resolved`] for `lookup`. Without a resolver it fails at once.
    pub fn resolve(&mut self, hop: &crate::call::Hop, lookup: Lookup) {
        let Some(resolver) = self.shared.resolver.clone() else {
            let result = Err(trunkgate_resolve::Error::Config {
                reason: format!("{}: no DNS resolver configured", hop.host),
            });
            return self.on_event(Event::Resolved { lookup, result });
        };
        let events = self.events.clone();
        let hop = hop.clone();
        tokio::spawn(async move {
            let result = resolver.resolve(&hop.resolve_target()).await;
            let _ = events.send(Event::Resolved { lookup, result });
        });
    }

    pub fn draining(&self) -> bool {
        self.shared.draining.load(Ordering::Acquire)
    }
}

/// The worker a Call-ID belongs to: the same answer on every worker (FNV-1a, no seed).
pub fn home_worker(call_id: &str, workers: usize) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in call_id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h % workers.max(1) as u64) as usize
}

/// Resolves when the relay has work; never when this worker has no relay.
async fn wait_media(media: &Option<trunkgate_media::MediaEngine>) {
    match media {
        Some(m) => m.wait().await,
        None => std::future::pending().await,
    }
}

/// Methods the edge accepts (RFC 3261 §20.5).
pub const ALLOW: &str = "INVITE, ACK, BYE, CANCEL, OPTIONS, PRACK, UPDATE, INFO";

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
                && msg::param(v, "tag").is_none()
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

/// Every `name` header of `m` as `Name: value` lines, values and order untouched.
fn header_lines(m: &impl HasHeaders, name: &str) -> String {
    let mut s = String::new();
    for v in msg::headers(m, name) {
        s.push_str(name);
        s.push_str(": ");
        s.push_str(v);
        s.push_str("\r\n");
    }
    s
}

/// RFC 3261 §18.2.1 `received` and RFC 3581 `rport` on the top Via.
fn with_received(via: &str, src: SocketAddr) -> String {
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

/// The ACK for a non-2xx final response: same branch, Request-URI, From, Call-ID and CSeq
/// number as the INVITE, To from the response (RFC 3261 §17.1.1.3).
fn ack_for_non_2xx(tx: &ClientTxn, resp: &Response) -> Vec<u8> {
    let to = msg::header(resp, "To").unwrap_or_default();
    let top_via = msg::header(resp, "Via").unwrap_or_default();
    Builder::request_via("ACK", &tx.ruri, &strip_received(top_via))
        .ids(&tx.ident, to, tx.cseq, "ACK")
        .finish()
}

fn strip_received(via: &str) -> String {
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

#[cfg(test)]
mod tests {
    use super::home_worker;

    #[test]
    fn call_ids_spread_over_workers_the_same_way_everywhere() {
        let mut seen = [0usize; 4];
        for i in 0..4000 {
            seen[home_worker(&format!("{i}-4987@127.0.0.1"), 4)] += 1;
        }
        assert!(seen.iter().all(|n| (800..1200).contains(n)), "{seen:?}");
        assert_eq!(home_worker("abc@host", 3), home_worker("abc@host", 3));
        assert_eq!(home_worker("abc@host", 1), 0);
    }
}
