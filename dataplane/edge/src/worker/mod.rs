//! One worker: a single-threaded event loop that owns its sockets (SO_REUSEPORT), its
//! transactions (RFC 3261 §17), its dialogs and its calls. No locks on the call path; the
//! snapshot is read through ArcSwap. A message for a call another worker owns is handed over.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio::sync::mpsc;
use trunkgate_sip::SipMessage;

use crate::call::{LegId, Side};
use crate::config::Runtime;
use crate::config::settings::Settings;
use crate::metrics::Metrics;
use crate::sip::transaction::{self, ClientTransaction, ServerTransaction, TransactionKey};

pub use crate::table::Table;

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
    /// host:port in Via/Contact on TLS connections, per side (None: no TLS listener there).
    pub public_tls_hostport: Option<String>,
    pub internal_tls_hostport: Option<String>,
    /// The edge's certificate and the roots it checks TLS peers against.
    pub tls: Arc<crate::transport::tls::Tls>,
    pub nonce_key: [u8; 32],
    /// RFC 3263 resolver for targets given by name (None when /etc/resolv.conf is unusable).
    pub resolver: Option<trunkgate_resolve::Resolver>,
    /// TCP connections held, against `--tcp-max-connections` and `--tcp-max-per-source`.
    pub tcp: Arc<crate::guard::census::Census>,
    /// Digest failures per source and username, shared by every worker.
    pub lockout: Arc<crate::guard::lockout::Lockout>,
    /// Calls in set-up per carrier-side source (`--max-calls-in-setup-per-source`).
    pub setup_sources: Arc<crate::guard::census::Census>,
    /// The RTP fast path in the kernel (`--kernel-fast-path`), when it loaded.
    pub fast_path: Option<Arc<trunkgate_media::fastpath::FastPath>>,
    /// The kernel-side filter of the carrier-side UDP sockets (`--kernel-prefilter`).
    pub prefilter: crate::guard::prefilter::Prefilter,
    /// Datagrams per carrier-side source (`--source-rate`), shared by every worker.
    pub source_limit: crate::guard::source_limit::SourceLimiter,
    /// New TLS connections per source (`--tls-handshake-rate`), shared by every listener.
    pub tls_handshakes: crate::guard::source_limit::SourceLimiter,
    /// The platform's allow-list (`--platform-cidrs`) and the tenants its sources call for.
    pub platform: crate::guard::platform::PlatformAcl,
    /// The fleet's shared limits (`--state-store`), or this process alone.
    pub fleet: crate::fleet::Fleet,
    /// This process's name in the fleet (`--state-identity`, the pod's name).
    pub identity: String,
    /// The registrations this process holds, for `/snapshot`.
    pub registrations: crate::register::Statuses,
    /// The previous run's calls, per worker, until each worker takes its own.
    pub restore: std::sync::Mutex<Vec<Vec<crate::call::checkpoint::CallRecord>>>,
    /// Calls of the previous run not restored yet: the edge is not ready until none is left.
    pub restoring: std::sync::atomic::AtomicUsize,
    /// The store task, until the edge starts it on the control thread.
    pub fleet_task: std::sync::Mutex<Option<crate::fleet::StoreTask>>,
}

pub use crate::transport::Link;

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
    /// The fleet's answer to a new call's claim on the trunk's limits.
    Claimed {
        call: u64,
        verdict: crate::fleet::Verdict,
    },
    /// The answer to an RFC 3263 lookup that [`Worker::resolve`] started.
    Resolved {
        lookup: Lookup,
        result: Result<Vec<trunkgate_resolve::Destination>, trunkgate_resolve::Error>,
    },
}

impl From<crate::transport::tcp::TcpEvent> for Event {
    fn from(e: crate::transport::tcp::TcpEvent) -> Self {
        use crate::transport::tcp::TcpEvent;
        match e {
            TcpEvent::Message { side, src, msg } => Event::Message { side, src, msg },
            TcpEvent::LinkFailed { addr } => Event::LinkFailed { addr },
        }
    }
}

/// The TCP side's way into the worker whose events go to `tx`.
pub fn deliver(tx: mpsc::UnboundedSender<Event>) -> crate::transport::tcp::Deliver {
    Arc::new(move |e| tx.send(e.into()).is_ok())
}

impl crate::transport::tcp::Doorman for Shared {
    fn allows(&self, side: Side, ip: std::net::IpAddr) -> bool {
        match side {
            Side::Public => self.runtime.load().source_allowed(ip),
            Side::Internal => self.platform.allows(ip),
        }
    }

    fn handshake_allowed(&self, ip: std::net::IpAddr) -> bool {
        use crate::guard::source_limit::{Class, Verdict};
        !matches!(
            self.tls_handshakes.check(ip, Class::New, Instant::now()),
            Verdict::Shed { .. }
        )
    }
}

/// Who waits for an RFC 3263 lookup.
pub enum Lookup {
    /// A call's B-leg hop.
    Call(u64),
    /// The carrier target a health probe is for (its first address is probed).
    Probe {
        probe: Arc<crate::route::health::Probe>,
        uri_host: String,
    },
    /// The registrar of a trunk's registration; the REGISTER waiting is `cseq`, asking `expires`.
    Register {
        trunk: Arc<str>,
        cseq: u32,
        expires: u32,
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

impl ServerTxn {
    /// The request's Call-ID, as its responses repeat it.
    pub fn call_id(&self) -> &str {
        self.prefix
            .split("\r\n")
            .find_map(|l| l.strip_prefix("Call-ID: "))
            .unwrap_or_default()
    }
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
    /// An UPDATE of ours refreshing this leg's session (RFC 4028).
    Refresh,
    /// An OPTIONS health probe of a carrier target (no call).
    Probe(Arc<crate::route::health::Probe>),
    /// A REGISTER of the trunk's registration (no call).
    Register(Arc<str>),
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
    /// A call that rings too long (`--ringing-seconds`): leg B's INVITE is CANCELed.
    Ringing(u64, TransactionKey),
    /// Leg B's INVITE was CANCELed this long ago (64·T1) without a final answer: RFC 3261 §9.1
    /// considers its transaction destroyed, and the call ends.
    CancelGuard(TransactionKey),
    /// A leg's RFC 4028 session timer: refresh it, or give up on the peer's refresh.
    Session(u64, LegId),
    /// A request we gave up on (timeout, failover) stops absorbing late answers.
    ClientForget(TransactionKey),
    CallForget(u64),
    /// Look for carrier targets whose OPTIONS probe is due.
    ProbeTick,
}

/// Loads the RTP fast path on `interfaces` (none: off); a failure is said once and counted,
/// and the relay runs in userspace.
fn load_fast_path(
    interfaces: &[String],
    pin: Option<std::path::PathBuf>,
    metrics: &Metrics,
) -> Option<Arc<trunkgate_media::fastpath::FastPath>> {
    let interfaces: Vec<String> = interfaces
        .iter()
        .map(|i| i.trim().to_string())
        .filter(|i| !i.is_empty())
        .collect();
    if interfaces.is_empty() {
        metrics.kernel_fast_path.with_label_values(&["off"]).set(1);
        return None;
    }
    match trunkgate_media::fastpath::FastPath::load(&interfaces, pin.as_deref()) {
        Ok(f) => {
            tracing::info!(
                ?interfaces,
                "RTP fast path loaded: established streams are forwarded in the kernel"
            );
            match (f.pinned(), pin) {
                (Some(dir), _) => {
                    metrics
                        .kernel_fast_path
                        .with_label_values(&["pinned"])
                        .set(1);
                    tracing::info!(
                        dir = %dir.display(),
                        streams = f.entries(),
                        "RTP fast path pinned: streams keep forwarding while this edge restarts"
                    )
                }
                (None, Some(dir)) => tracing::warn!(
                    dir = %dir.display(),
                    "RTP fast path not pinned: no bpffs there (mount -t bpf bpf /sys/fs/bpf); streams pause while this edge restarts"
                ),
                (None, None) => {}
            }
            metrics.kernel_fast_path.with_label_values(&["on"]).set(1);
            Some(Arc::new(f))
        }
        Err(e) => {
            tracing::warn!(error = %e, "RTP fast path not in use; the relay runs in userspace");
            metrics
                .kernel_fast_path
                .with_label_values(&[e.label()])
                .set(1);
            None
        }
    }
}

impl Shared {
    /// What the TCP and TLS listeners need of the edge.
    pub fn listening(self: &Arc<Self>) -> Arc<crate::transport::tcp::Listening> {
        Arc::new(crate::transport::tcp::Listening {
            door: self.clone(),
            census: self.tcp.clone(),
            tls: self.tls.clone(),
            timeouts: self.tcp_timeouts(),
            handshake: self.tls_handshake(),
            metrics: self.metrics.clone(),
        })
    }

    /// `--tcp-idle-seconds` and `--tcp-message-seconds`.
    pub fn tcp_timeouts(&self) -> crate::transport::tcp::Timeouts {
        crate::transport::tcp::Timeouts {
            idle: Duration::from_secs(self.settings.tcp_idle_seconds.max(1)),
            message: Duration::from_secs(self.settings.tcp_message_seconds.max(1)),
        }
    }

    /// `--tls-handshake-seconds`.
    pub fn tls_handshake(&self) -> Duration {
        Duration::from_secs(self.settings.tls_handshake_seconds.max(1))
    }

    /// What `settings` make of the workers' common state: `handoff` holds one sender per
    /// worker, `tcp_cap` the TCP connections the open-file limit leaves, `resolver` None when
    /// targets must be IP addresses. The snapshot starts empty.
    pub fn new(
        settings: Settings,
        metrics: Metrics,
        handoff: Vec<mpsc::Sender<Handoff>>,
        tcp_cap: usize,
        resolver: Option<trunkgate_resolve::Resolver>,
        tls: Arc<crate::transport::tls::Tls>,
    ) -> Self {
        use crate::config::settings::host_port;
        let public_hostport = match (&settings.advertise_host, settings.advertised_pool_ip()) {
            (Some(h), _) => format!("{h}:{}", settings.public_sip.port()),
            (None, Some(ip)) => host_port(SocketAddr::new(ip, settings.public_sip.port())),
            (None, None) => host_port(settings.public_sip),
        };
        let (fleet, fleet_task) = match settings.store() {
            Some(store) => {
                let orphan_after = Duration::from_secs(settings.orphan_seconds);
                let (fleet, task) = crate::fleet::Fleet::shared(store, orphan_after);
                (fleet, Some(task))
            }
            None => (crate::fleet::Fleet::embedded(), None),
        };
        let lockout = Arc::new(crate::guard::lockout::Lockout::new(
            settings.auth_max_failures,
            Duration::from_secs(settings.auth_block_seconds),
        ));
        if let Some(tx) = fleet.sender() {
            // A digest failure counts for the fleet; the store tells every pod the count.
            lockout.share_with(Box::new(move |ip, failed| {
                tx.push(if failed {
                    crate::fleet::Cmd::AuthFailed(ip)
                } else {
                    crate::fleet::Cmd::AuthSucceeded(ip)
                });
            }));
        }
        let mut runtime = Runtime::build(
            trunkgate_crds::snapshot::EdgeConfig::default().stamped(),
            None,
            &metrics,
        );
        runtime.share = fleet.share().clone();
        Shared {
            identity: settings.identity(),
            registrations: Default::default(),
            restore: Default::default(),
            restoring: Default::default(),
            fleet,
            fleet_task: std::sync::Mutex::new(fleet_task),
            tcp: Arc::new(crate::guard::census::Census::new(
                tcp_cap,
                settings.tcp_max_per_source.max(1),
                Some(metrics.tcp_connections.clone()),
            )),
            prefilter: crate::guard::prefilter::Prefilter::new(settings.kernel_prefilter),
            fast_path: load_fast_path(
                &settings.kernel_fast_path,
                settings.fast_path_pin(),
                &metrics,
            ),
            setup_sources: Arc::new(crate::guard::census::Census::new(
                usize::MAX,
                settings.max_calls_in_setup_per_source.max(1) as usize,
                None,
            )),
            source_limit: crate::guard::source_limit::SourceLimiter::new(settings.source_rate),
            platform: crate::guard::platform::PlatformAcl::new(&settings.platform_cidrs),
            tls_handshakes: crate::guard::source_limit::SourceLimiter::new(
                settings.tls_handshake_rate,
            ),
            lockout,
            runtime: ArcSwap::from_pointee(runtime),
            metrics,
            handoff,
            draining: AtomicBool::new(false),
            public_hostport,
            internal_hostport: host_port(settings.internal_sip),
            public_tls_hostport: settings
                .public_sips
                .map(|a| match &settings.advertise_host {
                    Some(h) => format!("{h}:{}", a.port()),
                    None => host_port(a),
                }),
            internal_tls_hostport: settings.internal_sips.map(host_port),
            tls,
            nonce_key: random_key(),
            resolver,
            settings,
        }
    }

    pub fn hostport(&self, side: Side) -> &str {
        match side {
            Side::Public => &self.public_hostport,
            Side::Internal => &self.internal_hostport,
        }
    }

    /// host:port in Via and Contact of a message on `link`: the TLS listener's on a TLS
    /// connection, so the peer's next connection reaches TLS again.
    pub fn hostport_on(&self, side: Side, link: &Link) -> &str {
        let tls = match side {
            Side::Public => &self.public_tls_hostport,
            Side::Internal => &self.internal_tls_hostport,
        };
        match (link, tls) {
            (Link::Tls(..), Some(hp)) => hp,
            _ => self.hostport(side),
        }
    }

    /// Whether `src` may speak on `side`: a carrier some trunk allows, or the platform
    /// (`--platform-cidrs`). Default deny on both sides.
    pub fn side_allows(&self, side: Side, src: SocketAddr) -> bool {
        match side {
            Side::Public => self.runtime.load().source_allowed(src.ip()),
            Side::Internal => self.platform.allows(src.ip()),
        }
    }

    pub fn count_acl_drop(&self, side: Side) {
        self.metrics
            .acl_drops
            .with_label_values(&[side.label()])
            .inc();
    }
}

#[cfg(test)]
mod call_flows;
mod calls;
mod challenges;
mod demux;
#[cfg(test)]
mod fleet_flows;
mod gate;
#[cfg(test)]
pub mod harness;
mod invite;
mod io;
mod media;
mod output;
mod probes;
mod receive;
mod recycle;
mod register;
mod restore;
pub mod runtime;
mod transactions;

pub use demux::Worker;
pub use output::{Outbox, Output};

impl crate::call::machine::Env for Shared {
    fn hostport_on(&self, side: Side, link: &Link) -> &str {
        Shared::hostport_on(self, side, link)
    }
    fn allow_source(&self, ip: std::net::IpAddr) {
        self.prefilter.allow_ip(ip);
    }
    fn platform(&self) -> &crate::guard::platform::PlatformAcl {
        &self.platform
    }
    fn settings(&self) -> &crate::config::settings::Settings {
        &self.settings
    }
    fn metrics(&self) -> &crate::metrics::Metrics {
        &self.metrics
    }
    fn fleet_shared(&self) -> bool {
        self.fleet.is_shared()
    }
    fn share_quality(&self, trunk: &str, target: &str, delta: &crate::quality::Counts) {
        self.fleet.share_quality(trunk, target, delta);
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

fn random_key() -> [u8; 32] {
    use rand::RngCore;
    let mut k = [0u8; 32];
    rand::rng().fill_bytes(&mut k);
    k
}

pub use crate::sip::message::ALLOW;

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
