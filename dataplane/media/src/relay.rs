//! The RTP/RTCP relay of one worker. Each stream of a call has a port pair on each side; a
//! packet read on one side's socket goes out of the other side's socket to the address that
//! side latched (RFC 4961 symmetric RTP). Payloads are never touched, so RFC 4733 events and
//! anything else pass byte for byte, except on a carrier leg whose trunk has SRTP on
//! (`media.srtp`, see [`crate::sdes`]): there what the carrier sends is authenticated, checked
//! for replay and decrypted, and what goes to it is encrypted ([`crate::srtp`]).
//!
//! The sockets sit in one level-triggered epoll set owned by the engine. The worker's event loop
//! awaits [`MediaEngine::wait`] (the epoll fd registered with the worker's tokio reactor) and then
//! calls [`MediaEngine::relay`], which reads one datagram per ready socket per epoll round and
//! forwards it at once: no lock, no allocation and no extra "would block" read per packet.

use std::cell::Cell;
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use crate::fastpath::{self, FastPath};
use crate::latch::{Admit, DEFAULT_UNHEARD_LIMIT, Dest, Peer, PeerPolicy};
use crate::ports::{self, DEFAULT_QUARANTINE, PortPool};
use crate::quality::{DEFAULT_CLOCK_RATE, Receiver};
use crate::sdes::{self, Exchange, Keying, Outcome, Policy, Role};
use crate::sdp::{self, Remote, Sdp};
use crate::srtp::{LegSrtp, Reject, Suite};

/// Default time without RTP in either direction before a call is ended.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// Epoll events taken per `epoll_wait`.
const EVENTS: usize = 256;
/// Datagrams handled per [`MediaEngine::relay`] call before the worker gets to its SIP again.
const BUDGET: usize = 1024;
/// Ports tried when a pair turns out to be bound by another process.
const BIND_ATTEMPTS: usize = 8;
/// Largest datagram relayed whole (larger ones arrive truncated and are dropped).
const MAX_DATAGRAM: usize = 4096;
/// RTP packets a direction relays in userspace before it is handed to the kernel fast path
/// (once the other side is latched too).
const FAST_PATH_AFTER: u64 = 8;

/// Which network a leg of the call, a socket or a stream faces: the one `Side` of the edge's
/// signalling and media.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    /// The carriers.
    Public,
    /// The platform.
    Internal,
}

impl Side {
    pub fn other(self) -> Side {
        match self {
            Side::Public => Side::Internal,
            Side::Internal => Side::Public,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Side::Public => "public",
            Side::Internal => "internal",
        }
    }

    /// 0 for the carriers' side, 1 for the platform's.
    pub fn index(self) -> usize {
        match self {
            Side::Public => 0,
            Side::Internal => 1,
        }
    }

    /// Who is on this side, for call records.
    pub fn party(self) -> &'static str {
        match self {
            Side::Public => "carrier",
            Side::Internal => "platform",
        }
    }
}

/// What one worker's relay needs to know.
#[derive(Debug, Clone)]
pub struct MediaConfig {
    /// Written into carrier-side SDP.
    pub public_ip: IpAddr,
    /// Written into platform-side SDP.
    pub internal_ip: IpAddr,
    /// Where carrier-side sockets bind (the public IP, or 0.0.0.0 when that IP is NATed onto
    /// the pod).
    pub public_bind: IpAddr,
    /// Where platform-side sockets bind.
    pub internal_bind: IpAddr,
    /// This worker's slice of the RTP port range, `[lo, hi]`.
    pub ports: (u16, u16),
    /// How long a freed port pair waits before reuse.
    pub quarantine: Duration,
    /// No RTP in either direction for this long ends the call ([`MediaEvent::Timeout`]).
    pub timeout: Duration,
    /// Datagrams sent to a peer that has sent nothing back before the relay holds that
    /// direction ([`crate::latch::DEFAULT_UNHEARD_LIMIT`]).
    pub unheard_limit: u64,
}

impl MediaConfig {
    /// Sockets bound on the advertised IPs, 30 s quarantine, 60 s media timeout.
    pub fn new(public_ip: IpAddr, internal_ip: IpAddr, ports: (u16, u16)) -> Self {
        Self {
            public_ip,
            internal_ip,
            public_bind: public_ip,
            internal_bind: internal_ip,
            ports,
            quarantine: DEFAULT_QUARANTINE,
            timeout: DEFAULT_TIMEOUT,
            unheard_limit: DEFAULT_UNHEARD_LIMIT,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error(transparent)]
    Ports(#[from] ports::Error),
    #[error("could not bind an RTP socket on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("at most {max} media streams per call")]
    TooManyStreams { max: usize },
    #[error("no such media session or stream")]
    Unknown,
    #[error(transparent)]
    Sdp(#[from] sdp::Error),
    #[error("media poller: {0}")]
    Poller(#[source] io::Error),
    /// The SDP names an address of a family the relay has no socket for on that side (an
    /// `c=IN IP6` offer to an edge whose media addresses are IPv4): answering with the other
    /// family would set up a call without media.
    #[error("{family} media is not available on this edge's {side} side")]
    AddressFamily {
        family: &'static str,
        side: &'static str,
    },
}

impl MediaError {
    /// The SIP status the edge answers when this stops a call from being set up.
    pub fn status(&self) -> u16 {
        match self {
            MediaError::Ports(_) | MediaError::Bind { .. } => 503,
            MediaError::TooManyStreams { .. } | MediaError::AddressFamily { .. } => 488,
            MediaError::Sdp(e) => e.status(),
            MediaError::Unknown | MediaError::Poller(_) => 500,
        }
    }

    pub fn metric_label(&self) -> &'static str {
        match self {
            MediaError::Ports(e) => e.metric_label(),
            MediaError::Bind { .. } => "bind",
            MediaError::TooManyStreams { .. } => "too_many_streams",
            MediaError::Unknown => "unknown_session",
            MediaError::Sdp(e) => e.metric_label(),
            MediaError::Poller(_) => "poller",
            MediaError::AddressFamily { .. } => "address_family",
        }
    }
}

fn srtp_key(_: Reject) -> MediaError {
    MediaError::Sdp(sdp::Error::Malformed("a=crypto key"))
}

fn poller(e: nix::Error) -> MediaError {
    MediaError::Poller(io::Error::from(e))
}

/// A call's media in one engine. Stale ids (of closed sessions) are refused, not confused
/// with the session that took the slot next.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SessionId {
    slot: u32,
    generation: u32,
}

/// What the relay tells the worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MediaEvent {
    /// No RTP in either direction for the configured timeout: end the call (BYE on both legs
    /// with a Reason header). Reported again each further timeout while the silence lasts, so
    /// a worker that ignores it for a call not yet answered hears of it again later.
    Timeout { call: u64, session: SessionId },
    /// The first datagram of a stream direction that came from a source that may not latch
    /// (or take over the latch), reported once per stream direction so the worker can log it;
    /// every such datagram is counted in [`Counters::foreign`] and [`StreamStats::foreign`].
    UnexpectedSource {
        call: u64,
        stream: usize,
        from: Side,
        src: SocketAddr,
        /// The address the packet was expected from (latched or SDP), if any.
        expected: Option<SocketAddr>,
    },
    /// An SRTP stream direction went another quarter of the sequence space (16,384 packets)
    /// since the last report: where its contexts stand ([`MediaEngine::srtp`]) has moved, and
    /// a restarted edge resumes them only within half the sequence space of what it was told.
    SrtpProgress { call: u64 },
}

/// One SRTP leg as a restarted edge needs it ([`MediaEngine::srtp`],
/// [`MediaEngine::resume_srtp`]): both keys and how far each direction has gone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SrtpState {
    /// The key the carrier sends with, and the edge's.
    pub peer: crate::srtp::Key,
    pub ours: crate::srtp::Key,
    /// The carrier's stream, as the edge last unprotected it.
    pub received: Option<crate::srtp::Progress>,
    /// The edge's stream to the carrier (the platform's, protected).
    pub sent: Option<crate::srtp::Progress>,
    /// SRTCP packets the edge sent to the carrier (at most).
    pub srtcp_sent: u64,
}

impl Flow {
    fn progress(&self) -> Option<crate::srtp::Progress> {
        let (ssrc, roc, seq) = self.rx.progress()?;
        Some(crate::srtp::Progress { ssrc, roc, seq })
    }

    /// Whether this flow entered another quarter of the sequence space since the last call.
    fn srtp_moved(&mut self) -> bool {
        let Some(mark) = self.progress().map(crate::srtp::Progress::quarter) else {
            return false;
        };
        let moved = mark != self.srtp_mark;
        self.srtp_mark = mark;
        moved
    }
}

/// One direction of one stream, as the relay saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamStats {
    /// Index of the `m=` line.
    pub stream: usize,
    /// The side that sent these packets.
    pub from: Side,
    /// RTP packets and bytes received from that side.
    pub packets: u64,
    pub bytes: u64,
    pub rtcp_packets: u64,
    /// Datagrams (RTP and RTCP) sent on to the other side.
    pub forwarded: u64,
    /// Datagrams not sent on: the other side is on hold or has no address yet, or the send
    /// failed.
    pub dropped: u64,
    /// Datagrams from a source that may not latch or take over the latch
    /// ([`crate::latch`]).
    pub foreign: u64,
    /// The first such unexpected source.
    pub first_foreign: Option<SocketAddr>,
    /// Datagrams held back because the other side's SDP address may not be sent to yet (outside
    /// its allow-list and not heard from, or its unheard budget spent), and that address.
    pub held: u64,
    pub held_destination: Option<SocketAddr>,
    /// RFC 3550 A.3 expected and lost packets, summed over the SSRCs seen.
    pub expected: u64,
    pub lost: u64,
    /// RFC 3550 A.8 interarrival jitter.
    pub jitter_ms: f64,
    /// Estimated MOS (simplified G.107 E-model); None when no RTP arrived.
    pub mos: Option<f64>,
    /// That side's RTP address: the latched source, or the SDP's before latching.
    pub latched: Option<SocketAddr>,
    /// The SRTP suite of this side's packets when the relay decrypted them (the carrier leg of
    /// a trunk with `media.srtp` on); None for plain RTP.
    pub srtp: Option<Suite>,
    /// SRTP or SRTCP packets from this side refused (authentication, replay, SSRC cap).
    pub srtp_rejected: u64,
}

/// Totals of one engine since it started, for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub received: u64,
    pub forwarded: u64,
    pub dropped: u64,
    pub foreign: u64,
    /// Datagrams held for an unconfirmed destination ([`StreamStats::held`]).
    pub held: u64,
    pub sessions_opened: u64,
    /// SRTP and SRTCP packets refused, by [`Reject::index`].
    pub srtp_rejected: [u64; 4],
    /// RTP packets the kernel fast path forwarded (also in `received` and `forwarded`), as of
    /// the stream directions taken back from it.
    pub kernel_forwarded: u64,
    /// Stream directions handed to the kernel fast path.
    pub kernel_installs: u64,
}

/// Counters of the packets one side sent.
#[derive(Debug, Clone)]
struct Flow {
    packets: u64,
    bytes: u64,
    rtcp: u64,
    forwarded: u64,
    dropped: u64,
    foreign: u64,
    first_foreign: Option<SocketAddr>,
    held: u64,
    held_to: Option<SocketAddr>,
    srtp_rejected: u64,
    rx: Receiver,
    /// On an SRTP stream, the quarter of the sequence space last reported
    /// ([`MediaEvent::SrtpProgress`]).
    srtp_mark: u64,
}

/// One side of one stream: our port pair there and what we know of the peer.
#[derive(Debug)]
struct Leg {
    port: u16,
    rtp: UdpSocket,
    rtcp: UdpSocket,
    /// Its SDP, its latches and where it may be sent to.
    peer: Peer,
    /// SRTP keys of this leg (only ever the carrier's).
    srtp: Option<Box<LegSrtp>>,
    /// Its peer's RTP is forwarded by the kernel fast path under this key.
    kernel: Option<fastpath::Key>,
    from: Flow,
}

impl Leg {
    /// Where this side's RTP comes from: the latched source, or the SDP's before latching.
    fn peer_addr(&self) -> Option<SocketAddr> {
        self.peer.rtp_peer().or(self.peer.remote.map(|r| r.rtp))
    }

    fn set_remote(&mut self, remote: Remote, policy: &PeerPolicy) {
        self.peer.set_remote(remote, policy);
        self.from.rx.set_clock_rate(remote.clock_rate);
    }

    /// Adds what the kernel counted for this direction (`v`) to its flow.
    fn absorb(&mut self, v: &fastpath::Value) {
        self.from.packets += v.packets;
        self.from.bytes += v.bytes;
        self.from.forwarded += v.forwarded;
        v.restore(&mut self.from.rx);
    }

    fn stats(&self, stream: usize, from: Side, fast: Option<&FastPath>) -> StreamStats {
        let merged;
        let f = match (self.kernel.as_ref(), fast) {
            (Some(k), Some(fp)) => match fp.peek(k) {
                Some(v) => {
                    let mut copy = self.from.clone();
                    copy.packets += v.packets;
                    copy.bytes += v.bytes;
                    copy.forwarded += v.forwarded;
                    v.restore(&mut copy.rx);
                    merged = copy;
                    &merged
                }
                None => &self.from,
            },
            _ => &self.from,
        };
        StreamStats {
            stream,
            from,
            packets: f.packets,
            bytes: f.bytes,
            rtcp_packets: f.rtcp,
            forwarded: f.forwarded,
            dropped: f.dropped,
            foreign: f.foreign,
            first_foreign: f.first_foreign,
            held: f.held,
            held_destination: f.held_to,
            expected: f.rx.expected(),
            lost: f.rx.lost(),
            jitter_ms: f.rx.jitter_ms(),
            mos: f.rx.mos(),
            latched: self.peer_addr(),
            srtp: self.srtp.as_ref().map(|s| s.suite()),
            srtp_rejected: f.srtp_rejected,
        }
    }
}

#[derive(Debug)]
struct Stream {
    /// Indexed by [`Side::index`].
    legs: [Leg; 2],
    /// SDES state of the carrier leg.
    keying: Keying,
}

#[derive(Debug)]
struct Session {
    call: u64,
    streams: Vec<Stream>,
    /// Both sides have given an address and neither expects silence: the timeout runs.
    armed: bool,
    /// The last RTP packet, SDP exchange, or timeout report.
    last_media: Instant,
    /// The trunk's `media.srtp`.
    srtp: Policy,
    /// The side whose answer the last offer waits for.
    awaiting: Option<Side>,
    /// The side that gave the last answer (a 183 and its 200 both answer).
    answered_by: Option<Side>,
}

impl Session {
    /// Whether an SDP from `from` is an offer or an answer, and the exchange's new state.
    fn role(&mut self, from: Side, exchange: Exchange) -> Role {
        let role = match exchange {
            Exchange::Offer => Role::Offer,
            Exchange::Answer => Role::Answer,
            Exchange::Response
                if self.awaiting == Some(from)
                    || (self.awaiting.is_none() && self.answered_by == Some(from)) =>
            {
                Role::Answer
            }
            Exchange::Response => Role::Offer,
        };
        match role {
            Role::Offer => {
                self.awaiting = Some(from.other());
                self.answered_by = None;
            }
            Role::Answer => {
                self.awaiting = None;
                self.answered_by = Some(from);
            }
        }
        role
    }

    fn rearm(&mut self, now: Instant) {
        let mut pairs = false;
        let mut paused = false;
        for st in &self.streams {
            if let (Some(a), Some(b)) = (&st.legs[0].peer.remote, &st.legs[1].peer.remote)
                && !a.disabled()
                && !b.disabled()
            {
                pairs = true;
                paused |= a.paused() || b.paused();
            }
        }
        let armed = pairs && !paused;
        if armed && !self.armed {
            self.last_media = now;
        }
        self.armed = armed;
    }
}

#[derive(Debug, Default)]
struct Slot {
    generation: u32,
    session: Option<Session>,
}

/// Epoll data of a socket: slot, low bits of its generation, stream, side, RTP or RTCP port.
fn token(slot: u32, generation: u32, stream: usize, side: Side, rtcp: bool) -> u64 {
    u64::from(slot)
        | (u64::from(generation & 0xffff) << 32)
        | (((stream & 0xff) as u64) << 48)
        | ((side.index() as u64) << 56)
        | (u64::from(rtcp) << 57)
}

struct Token {
    slot: usize,
    generation: u32,
    stream: usize,
    side: Side,
    rtcp: bool,
}

fn untoken(t: u64) -> Token {
    Token {
        slot: (t & 0xffff_ffff) as usize,
        generation: ((t >> 32) & 0xffff) as u32,
        stream: ((t >> 48) & 0xff) as usize,
        side: if (t >> 56) & 1 == 0 {
            Side::Public
        } else {
            Side::Internal
        },
        rtcp: (t >> 57) & 1 == 1,
    }
}

/// RFC 5761 §4: on a shared port, packet types 192–223 in the second byte are RTCP.
fn is_rtcp(p: &[u8]) -> bool {
    p.len() >= 8 && p[0] >> 6 == 2 && (192..=223).contains(&p[1])
}

/// (sequence, timestamp, SSRC, payload type) of an RTP version 2 header.
fn rtp_header(p: &[u8]) -> Option<(u16, u32, u32, u8)> {
    let h: &[u8; 12] = p.get(..12)?.try_into().ok()?;
    if h[0] >> 6 != 2 {
        return None;
    }
    Some((
        u16::from_be_bytes([h[2], h[3]]),
        u32::from_be_bytes([h[4], h[5], h[6], h[7]]),
        u32::from_be_bytes([h[8], h[9], h[10], h[11]]),
        h[1] & 0x7f,
    ))
}

/// The epoll set of the relay's sockets, owned so that `AsyncFd` can own it.
struct EpollFd(Epoll);

impl AsRawFd for EpollFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.0.as_raw_fd()
    }
}

/// The epoll set, registered with the worker's tokio reactor when the engine is made inside a
/// runtime (then the worker awaits it), plain otherwise (a thread of its own blocks on it).
enum Poller {
    Plain(Epoll),
    Reactor(AsyncFd<EpollFd>),
}

impl Poller {
    fn new(epoll: Epoll) -> Poller {
        if tokio::runtime::Handle::try_current().is_err() {
            return Poller::Plain(epoll);
        }
        // SAFETY: the AsyncFd owns the EpollFd, which owns its fd (an OwnedFd): the fd stays
        // open and unchanged for the AsyncFd's whole life and `as_raw_fd` always returns it,
        // which is what `register_with_interest` asks for.
        #[allow(unsafe_code)]
        let registered =
            unsafe { AsyncFd::register_with_interest(EpollFd(epoll), Interest::READABLE) };
        match registered {
            Ok(fd) => Poller::Reactor(fd),
            Err(e) => {
                let (fd, error) = e.into_parts();
                tracing::error!(%error, "media epoll cannot join the worker's reactor");
                Poller::Plain(fd.0)
            }
        }
    }

    fn epoll(&self) -> &Epoll {
        match self {
            Poller::Plain(e) => e,
            Poller::Reactor(fd) => &fd.get_ref().0,
        }
    }
}

/// One worker's media: its port slice, its calls' sockets, their counters.
pub struct MediaEngine {
    poller: Poller,
    cfg: MediaConfig,
    pool: PortPool,
    slots: Vec<Slot>,
    free_slots: Vec<u32>,
    sessions: usize,
    events: Vec<EpollEvent>,
    buf: Box<[u8]>,
    /// The last `relay` stopped at its budget with datagrams still waiting.
    more: Cell<bool>,
    next_check: Instant,
    check_every: Duration,
    counters: Counters,
    /// Events found while forwarding, returned by the next `relay`.
    found: Vec<MediaEvent>,
    /// The kernel fast path, when the edge loaded it.
    fast: Option<std::sync::Arc<FastPath>>,
}

impl MediaEngine {
    /// An engine with no calls; it binds nothing until [`MediaEngine::open`]. Made inside the
    /// worker's tokio runtime (with I/O enabled) it is driven by [`MediaEngine::wait`] and
    /// [`MediaEngine::relay`]; made outside one, by [`MediaEngine::relay_blocking`].
    pub fn new(cfg: MediaConfig) -> Result<Self, MediaError> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(poller)?;
        let poller = Poller::new(epoll);
        let check_every =
            (cfg.timeout / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
        Ok(Self {
            poller,
            pool: PortPool::new(cfg.ports, cfg.quarantine),
            cfg,
            slots: Vec::new(),
            free_slots: Vec::new(),
            sessions: 0,
            events: vec![EpollEvent::empty(); EVENTS],
            buf: vec![0u8; MAX_DATAGRAM].into_boxed_slice(),
            more: Cell::new(false),
            next_check: Instant::now() + check_every,
            check_every,
            counters: Counters::default(),
            found: Vec::new(),
            fast: None,
        })
    }

    /// Hands established streams to the kernel fast path from now on.
    pub fn set_fast_path(&mut self, fast: std::sync::Arc<FastPath>) {
        self.fast = Some(fast);
    }

    /// Sessions open.
    pub fn sessions(&self) -> usize {
        self.sessions
    }

    /// Port pairs in this engine's slice, free, in use or resting.
    pub fn port_pairs(&self) -> usize {
        self.pool.capacity()
    }

    /// Port pairs that could be handed out now (for a readiness or capacity gauge).
    pub fn ports_available(&self) -> usize {
        self.pool.available(Instant::now())
    }

    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// The IP written into `side`'s SDP.
    pub fn advertised_ip(&self, side: Side) -> IpAddr {
        match side {
            Side::Public => self.cfg.public_ip,
            Side::Internal => self.cfg.internal_ip,
        }
    }

    /// Opens a call's media with `streams` streams (more are added when an SDP has more
    /// `m=` lines): a port pair per stream on each side, bound and polled.
    pub fn open(&mut self, call: u64, streams: usize) -> Result<SessionId, MediaError> {
        if streams > sdp::MAX_MEDIA {
            return Err(MediaError::TooManyStreams {
                max: sdp::MAX_MEDIA,
            });
        }
        let slot = match self.free_slots.pop() {
            Some(s) => s,
            None => {
                self.slots.push(Slot::default());
                u32::try_from(self.slots.len() - 1).map_err(|_| MediaError::Unknown)?
            }
        };
        let id = SessionId {
            slot,
            generation: self.slots[slot as usize].generation,
        };
        self.slots[slot as usize].session = Some(Session {
            call,
            streams: Vec::with_capacity(streams),
            armed: false,
            last_media: Instant::now(),
            srtp: Policy::Disabled,
            awaiting: None,
            answered_by: None,
        });
        self.sessions += 1;
        self.counters.sessions_opened += 1;
        if let Err(e) = self.ensure_streams(id, streams) {
            // Nothing was sent on these ports: they go straight back.
            if let Some(s) = self.take(id) {
                for st in s.streams {
                    for leg in st.legs {
                        self.pool.restore(leg.port);
                    }
                }
            }
            return Err(e);
        }
        Ok(id)
    }

    fn ensure_streams(&mut self, id: SessionId, streams: usize) -> Result<(), MediaError> {
        if streams > sdp::MAX_MEDIA {
            return Err(MediaError::TooManyStreams {
                max: sdp::MAX_MEDIA,
            });
        }
        loop {
            let have = self.session(id)?.streams.len();
            if have >= streams {
                return Ok(());
            }
            let public = self.new_leg(id, have, Side::Public)?;
            let internal = match self.new_leg(id, have, Side::Internal) {
                Ok(l) => l,
                Err(e) => {
                    self.pool.restore(public.port);
                    return Err(e);
                }
            };
            self.session_mut(id)?.streams.push(Stream {
                legs: [public, internal],
                keying: Keying::default(),
            });
        }
    }

    /// Opens a session for `call` on exactly the port pairs it had before the process
    /// restarted (a restored call), one `[public, internal]` pair per stream; the remotes are
    /// set afterwards with [`MediaEngine::set_remote`].
    pub fn reopen(&mut self, call: u64, ports: &[[u16; 2]]) -> Result<SessionId, MediaError> {
        let id = self.open(call, 0)?;
        for (i, pair) in ports.iter().enumerate() {
            let legs = (
                self.new_leg_at(id, i, Side::Public, Some(pair[0])),
                self.new_leg_at(id, i, Side::Internal, Some(pair[1])),
            );
            match legs {
                (Ok(public), Ok(internal)) => self.session_mut(id)?.streams.push(Stream {
                    legs: [public, internal],
                    keying: Keying::default(),
                }),
                (public, internal) => {
                    for l in [public, internal].into_iter().flatten() {
                        self.pool.restore(l.port);
                    }
                    self.close(id);
                    return Err(MediaError::Ports(ports::Error::Exhausted));
                }
            }
        }
        Ok(id)
    }

    /// Each stream's SRTP state on the carrier leg (None: plain RTP there), for a checkpoint.
    pub fn srtp(&self, id: SessionId) -> Vec<Option<SrtpState>> {
        let Ok(s) = self.session(id) else {
            return Vec::new();
        };
        s.streams
            .iter()
            .map(|st| {
                let [public, internal] = &st.legs;
                let (peer, ours) = public.srtp.as_ref()?.keys();
                Some(SrtpState {
                    peer: peer.clone(),
                    ours: ours.clone(),
                    received: public.from.progress(),
                    sent: internal.from.progress(),
                    srtcp_sent: internal.from.rtcp,
                })
            })
            .collect()
    }

    /// A restored session's SRTP on the carrier leg of `stream`, under `policy` (the trunk's
    /// `media.srtp`): the same keys, its contexts walked on to where `state` says (see
    /// [`LegSrtp::resume`]).
    pub fn resume_srtp(
        &mut self,
        id: SessionId,
        stream: usize,
        policy: Policy,
        state: SrtpState,
    ) -> Result<(), MediaError> {
        let s = self.session_mut(id)?;
        s.srtp = policy;
        let st = s.streams.get_mut(stream).ok_or(MediaError::Unknown)?;
        let leg = LegSrtp::resume(
            state.peer,
            state.ours.clone(),
            state.received,
            state.sent,
            state.srtcp_sent,
        )
        .map_err(srtp_key)?;
        let public = &mut st.legs[Side::Public.index()];
        // The marks start where the contexts are: the next quarter is reported again.
        public.from.srtp_mark = state.received.map_or(0, crate::srtp::Progress::quarter);
        public.srtp = Some(Box::new(leg));
        st.legs[Side::Internal.index()].from.srtp_mark =
            state.sent.map_or(0, crate::srtp::Progress::quarter);
        st.keying = Keying::resumed(state.ours);
        Ok(())
    }

    /// A restored session (see [`MediaEngine::reopen`]) takes over the kernel fast path's
    /// entries the last run installed for it (they kept forwarding while no process did):
    /// each direction whose recorded source and relay port has an entry is latched to that
    /// source and counted from the kernel again. The number of directions taken over.
    pub fn adopt_kernel(&mut self, id: SessionId) -> usize {
        let Some(fp) = self.fast.clone() else {
            return 0;
        };
        let binds = [self.cfg.public_bind, self.cfg.internal_bind];
        let Ok(s) = self.session_mut(id) else {
            return 0;
        };
        let mut adopted = 0;
        for st in &mut s.streams {
            for (leg, bind) in st.legs.iter_mut().zip(binds) {
                let Some(src) = leg.peer_addr() else { continue };
                let Some(key) = fastpath::Key::new(src, SocketAddr::new(bind, leg.port)) else {
                    continue;
                };
                let Some(v) = fp.adopt(key) else { continue };
                let heard = if v.last_ns > 0 {
                    fastpath::ns_instant(v.last_ns)
                } else {
                    Instant::now()
                };
                leg.peer.latch_restored(src, heard);
                // The receiver starts where the kernel is: loss, jitter and MOS go on.
                v.resume(&mut leg.from.rx);
                leg.kernel = Some(key);
                adopted += 1;
            }
        }
        adopted
    }

    fn new_leg(&mut self, id: SessionId, stream: usize, side: Side) -> Result<Leg, MediaError> {
        self.new_leg_at(id, stream, side, None)
    }

    /// A leg on `port` (taken from the pool; a restored call's), or on the next free pair.
    fn new_leg_at(
        &mut self,
        id: SessionId,
        stream: usize,
        side: Side,
        wanted: Option<u16>,
    ) -> Result<Leg, MediaError> {
        let ip = match side {
            Side::Public => self.cfg.public_bind,
            Side::Internal => self.cfg.internal_bind,
        };
        if let Some(p) = wanted
            && !self.pool.take(p)
        {
            return Err(MediaError::Ports(ports::Error::Exhausted));
        }
        let mut failure = None;
        for _ in 0..BIND_ATTEMPTS {
            let port = match wanted {
                Some(p) => p,
                None => self.pool.allocate(Instant::now())?,
            };
            match bind_pair(ip, port) {
                Ok((rtp, rtcp)) => {
                    for (sock, is_rtcp) in [(&rtp, false), (&rtcp, true)] {
                        let data = token(id.slot, id.generation, stream, side, is_rtcp);
                        if let Err(e) = self
                            .poller
                            .epoll()
                            .add(sock, EpollEvent::new(EpollFlags::EPOLLIN, data))
                        {
                            self.pool.restore(port);
                            return Err(poller(e));
                        }
                    }
                    return Ok(Leg {
                        port,
                        rtp,
                        rtcp,
                        peer: Peer::default(),
                        srtp: None,
                        kernel: None,
                        from: Flow {
                            packets: 0,
                            bytes: 0,
                            rtcp: 0,
                            forwarded: 0,
                            dropped: 0,
                            foreign: 0,
                            first_foreign: None,
                            held: 0,
                            held_to: None,
                            srtp_rejected: 0,
                            rx: Receiver::new(DEFAULT_CLOCK_RATE),
                            srtp_mark: 0,
                        },
                    });
                }
                Err((addr, source)) => {
                    // Another process holds it: leave the pair resting and try the next one.
                    tracing::warn!(%addr, error = %source, "RTP port taken outside the edge");
                    self.pool.release(port, Instant::now());
                    failure = Some(MediaError::Bind { addr, source });
                    if wanted.is_some() {
                        break;
                    }
                }
            }
        }
        Err(failure.unwrap_or(MediaError::Ports(ports::Error::Exhausted)))
    }

    fn session(&self, id: SessionId) -> Result<&Session, MediaError> {
        self.slots
            .get(id.slot as usize)
            .filter(|s| s.generation == id.generation)
            .and_then(|s| s.session.as_ref())
            .ok_or(MediaError::Unknown)
    }

    fn session_mut(&mut self, id: SessionId) -> Result<&mut Session, MediaError> {
        self.slots
            .get_mut(id.slot as usize)
            .filter(|s| s.generation == id.generation)
            .and_then(|s| s.session.as_mut())
            .ok_or(MediaError::Unknown)
    }

    fn take(&mut self, id: SessionId) -> Option<Session> {
        let slot = self
            .slots
            .get_mut(id.slot as usize)
            .filter(|s| s.generation == id.generation)?;
        let s = slot.session.take()?;
        slot.generation = slot.generation.wrapping_add(1);
        self.free_slots.push(id.slot);
        self.sessions -= 1;
        Some(s)
    }

    /// Per stream, the relay's `[carrier, platform]` ports and where each side's media comes
    /// from (latched, or the SDP's): what a checkpoint keeps. No counters are read (with the
    /// kernel fast path those are map lookups).
    pub fn endpoints(&self, id: SessionId) -> Vec<([u16; 2], [Option<SocketAddr>; 2])> {
        let Ok(s) = self.session(id) else {
            return Vec::new();
        };
        s.streams
            .iter()
            .map(|st| {
                (
                    [st.legs[0].port, st.legs[1].port],
                    [st.legs[0].peer_addr(), st.legs[1].peer_addr()],
                )
            })
            .collect()
    }

    /// The address to write into `side`'s SDP for `stream` (RTCP is the port + 1).
    pub fn local(&self, id: SessionId, side: Side, stream: usize) -> Option<SocketAddr> {
        let leg = &self.session(id).ok()?.streams.get(stream)?.legs[side.index()];
        Some(SocketAddr::new(self.advertised_ip(side), leg.port))
    }

    /// What `side`'s SDP says about `stream`. A new address (re-INVITE, UPDATE) drops the
    /// latch so the peer is learned again; `policy` says which sources may latch and which
    /// SDP addresses may be sent to before the peer is heard ([`crate::latch`]).
    pub fn set_remote(
        &mut self,
        id: SessionId,
        side: Side,
        stream: usize,
        remote: Remote,
        policy: &PeerPolicy,
    ) -> Result<(), MediaError> {
        let now = Instant::now();
        let fast = self.fast.clone();
        let s = self
            .slots
            .get_mut(id.slot as usize)
            .filter(|s| s.generation == id.generation)
            .and_then(|s| s.session.as_mut())
            .ok_or(MediaError::Unknown)?;
        let st = s.streams.get_mut(stream).ok_or(MediaError::Unknown)?;
        // A new SDP may move either end: the kernel gives both directions back first.
        if let Some(fp) = fast.as_deref() {
            for leg in &mut st.legs {
                reclaim(leg, fp, &mut self.counters);
            }
        }
        st.legs[side.index()].set_remote(remote, policy);
        s.rearm(now);
        Ok(())
    }

    /// Sets the session's SRTP policy for the carrier leg (the trunk's `media.srtp`); before
    /// the first SDP passes.
    pub fn set_srtp(&mut self, id: SessionId, policy: Policy) -> Result<(), MediaError> {
        self.session_mut(id)?.srtp = policy;
        Ok(())
    }

    /// [`MediaEngine::relay_sdp_as`] for an SDP in a response.
    pub fn relay_sdp(
        &mut self,
        id: SessionId,
        from: Side,
        sdp: &mut Sdp,
        policy: &PeerPolicy,
    ) -> Result<(), MediaError> {
        self.relay_sdp_as(id, from, sdp, policy, Exchange::Response)
    }

    /// Takes an SDP body that `from` sent (offer or answer, in any request or response) through
    /// the relay: its streams become `from`'s remotes, and the body is rewritten in place for
    /// the other side, with that side's relay address and ports. Streams are added when the
    /// SDP has more `m=` lines than the session. An SDP exchange restarts the media timeout
    /// (a 200 after a silent 183 starts afresh). With SRTP on for the carrier leg, the
    /// exchange also keys it ([`crate::sdes`]); an SDP the policy refuses changes nothing.
    pub fn relay_sdp_as(
        &mut self,
        id: SessionId,
        from: Side,
        sdp: &mut Sdp,
        policy: &PeerPolicy,
        exchange: Exchange,
    ) -> Result<(), MediaError> {
        let n = sdp.media().len();
        self.ensure_streams(id, n)?;
        self.key_streams(id, from, sdp, exchange)?;
        let bind = match from {
            Side::Public => self.cfg.public_bind,
            Side::Internal => self.cfg.internal_bind,
        };
        let mut remotes = Vec::with_capacity(n);
        for i in 0..n {
            let remote = sdp.remote(i)?;
            let ip = remote.rtp.ip();
            // RFC 4566 §5.7: the address type the peer can be reached at; ours must match.
            if !ip.is_unspecified() && ip.is_ipv4() != bind.is_ipv4() {
                return Err(MediaError::AddressFamily {
                    family: if ip.is_ipv4() { "IPv4" } else { "IPv6" },
                    side: from.label(),
                });
            }
            remotes.push(remote);
        }
        for (i, remote) in remotes.into_iter().enumerate() {
            self.set_remote(id, from, i, remote, policy)?;
        }
        self.session_mut(id)?.last_media = Instant::now();
        let to = from.other();
        let ports: Vec<u16> = (0..n)
            .map(|i| self.local(id, to, i).map_or(0, |a| a.port()))
            .collect();
        sdp.rewrite(self.advertised_ip(to), &ports);
        Ok(())
    }

    /// Runs the SDES exchange of each stream; keys change only when every stream's succeeds.
    fn key_streams(
        &mut self,
        id: SessionId,
        from: Side,
        sdp: &mut Sdp,
        exchange: Exchange,
    ) -> Result<(), MediaError> {
        let s = self.session_mut(id)?;
        let role = s.role(from, exchange);
        if s.srtp == Policy::Disabled {
            return Ok(());
        }
        let mut settled = Vec::with_capacity(sdp.media().len());
        for (i, m) in sdp.media_mut().iter_mut().enumerate() {
            let st = s.streams.get(i).ok_or(MediaError::Unknown)?;
            let mut keying = st.keying.clone();
            let outcome = match from {
                Side::Public => sdes::from_carrier(s.srtp, role, m, &mut keying)?,
                Side::Internal => sdes::to_carrier(s.srtp, role, m, &mut keying)?,
            };
            settled.push((keying, outcome));
        }
        for (st, (keying, outcome)) in s.streams.iter_mut().zip(settled) {
            let leg = &mut st.legs[Side::Public.index()];
            match &outcome {
                Outcome::Plain => leg.srtp = None,
                Outcome::Srtp { peer, ours } => match leg.srtp.as_mut() {
                    Some(k) => k.rekey(peer.clone(), ours.clone()).map_err(srtp_key)?,
                    None => {
                        leg.srtp = Some(Box::new(
                            LegSrtp::new(peer.clone(), ours.clone()).map_err(srtp_key)?,
                        ));
                    }
                },
                Outcome::Unchanged => {}
            }
            st.keying = keying;
            st.keying.settled(&outcome);
        }
        Ok(())
    }

    /// Per stream and direction: packets, bytes, loss, jitter, MOS.
    pub fn stats(&self, id: SessionId) -> Vec<StreamStats> {
        let Ok(s) = self.session(id) else {
            return Vec::new();
        };
        s.streams
            .iter()
            .enumerate()
            .flat_map(|(i, st)| {
                [
                    st.legs[0].stats(i, Side::Public, self.fast.as_deref()),
                    st.legs[1].stats(i, Side::Internal, self.fast.as_deref()),
                ]
            })
            .collect()
    }

    /// Ends a call's media: its sockets close and its ports go into quarantine. Returns the
    /// final counters (for the call detail record).
    pub fn close(&mut self, id: SessionId) -> Vec<StreamStats> {
        // The kernel's entries go first, so nothing is forwarded into the ports' next call.
        if let Some(fp) = self.fast.clone()
            && let Some(s) = self
                .slots
                .get_mut(id.slot as usize)
                .filter(|s| s.generation == id.generation)
                .and_then(|s| s.session.as_mut())
        {
            for st in &mut s.streams {
                for leg in &mut st.legs {
                    reclaim(leg, &fp, &mut self.counters);
                }
            }
        }
        let stats = self.stats(id);
        if let Some(s) = self.take(id) {
            let now = Instant::now();
            for st in s.streams {
                for leg in st.legs {
                    self.pool.release(leg.port, now);
                }
            }
        }
        stats
    }

    /// Resolves when datagrams are waiting or a timeout check is due; then call
    /// [`MediaEngine::relay`]. Must run inside the worker's tokio runtime.
    pub async fn wait(&self) {
        if self.more.get() {
            // Ready at once, but through tokio's cooperative budget: an overloaded relay still
            // lets the worker's SIP sockets and timers run.
            tokio::task::consume_budget().await;
            return;
        }
        let deadline = tokio::time::Instant::from_std(self.next_check);
        let Poller::Reactor(fd) = &self.poller else {
            tokio::time::sleep_until(deadline).await;
            return;
        };
        tokio::select! {
            r = fd.readable() => {
                // Cleared before `relay` drains the set, so a datagram that lands after the
                // drain wakes us again.
                if let Ok(mut guard) = r {
                    guard.clear_ready();
                }
            }
            () = tokio::time::sleep_until(deadline) => {}
        }
    }

    /// Forwards every datagram waiting (up to a budget, so SIP is not starved) and reports
    /// media timeouts. Never blocks.
    pub fn relay(&mut self) -> Vec<MediaEvent> {
        self.turn(0)
    }

    /// Like [`MediaEngine::relay`] but first blocks up to `max_wait` for a datagram: for a
    /// thread that does nothing but media.
    pub fn relay_blocking(&mut self, max_wait: Duration) -> Vec<MediaEvent> {
        let ms = u16::try_from(max_wait.as_millis()).unwrap_or(u16::MAX);
        self.turn(ms)
    }

    fn turn(&mut self, first_wait_ms: u16) -> Vec<MediaEvent> {
        self.more.set(false);
        let mut wait = first_wait_ms;
        let mut budget = BUDGET;
        loop {
            let n = match self.poller.epoll().wait(&mut self.events, wait) {
                Ok(n) => n,
                Err(nix::Error::EINTR) => 0,
                Err(e) => {
                    tracing::warn!(error = %e, "media epoll_wait");
                    0
                }
            };
            wait = 0;
            if n == 0 {
                break;
            }
            for i in 0..n {
                let t = self.events[i].data();
                self.forward(untoken(t));
            }
            // Level-triggered: a socket with more queued is reported again next round.
            budget = budget.saturating_sub(n);
            if budget == 0 {
                self.more.set(true);
                break;
            }
        }
        let mut events = self.expire(Instant::now());
        events.append(&mut self.found);
        events
    }

    /// Reads one datagram from the socket `t` names and sends it on to the other side.
    fn forward(&mut self, t: Token) {
        let Some(slot) = self.slots.get_mut(t.slot) else {
            return;
        };
        if slot.generation & 0xffff != t.generation {
            return;
        }
        let Some(session) = slot.session.as_mut() else {
            return;
        };
        let Some(st) = session.streams.get_mut(t.stream) else {
            return;
        };
        let [public, internal] = &mut st.legs;
        let (x, y) = match t.side {
            Side::Public => (public, internal),
            Side::Internal => (internal, public),
        };
        let sock = if t.rtcp { &x.rtcp } else { &x.rtp };
        let Ok((n, src)) = sock.recv_from(&mut self.buf) else {
            return;
        };
        let rtcp = t.rtcp || is_rtcp(&self.buf[..n]);
        if let (Some(fp), false) = (self.fast.as_deref(), rtcp)
            && let Some(key) = x.kernel
        {
            if x.peer.rtp_peer() == Some(src) {
                // The kernel left this one to us (another SSRC, say): it gives the stream back.
                reclaim(x, fp, &mut self.counters);
            } else if let Some(v) = fp.peek(&key)
                && v.last_ns > 0
            {
                // Another source: whether the latched one is quiet counts what the kernel saw.
                x.peer.rtp_heard_at(fastpath::ns_instant(v.last_ns));
            }
        }
        let foreign_before = x.from.foreign;
        let admitted = pass(
            x,
            y,
            &mut session.last_media,
            &mut self.counters,
            &self.buf[..n],
            Arrival {
                src,
                on_rtcp_socket: t.rtcp,
                rtcp,
            },
            self.cfg.unheard_limit,
        );
        if admitted == Admit::Relatched
            && let Some(fp) = self.fast.as_deref()
        {
            // Like a new SDP: the kernel's entries name the old source, both go back.
            reclaim(x, fp, &mut self.counters);
            reclaim(y, fp, &mut self.counters);
        }
        if let Some(fp) = self.fast.as_deref()
            && !rtcp
            && x.kernel.is_none()
            && x.srtp.is_none()
            && y.srtp.is_none()
            && x.from.packets >= FAST_PATH_AFTER
            && x.peer.rtp_peer() == Some(src)
            // Both ends latched: the destination is where the other side really sends from
            // (RFC 4961), and it only changes with a new SDP or a relatch, which take the
            // entry back.
            && y.peer.rtp_peer().is_some()
        {
            let (x_ip, y_ip) = match t.side {
                Side::Public => (self.cfg.public_bind, self.cfg.internal_bind),
                Side::Internal => (self.cfg.internal_bind, self.cfg.public_bind),
            };
            let to = match y.peer.rtp_dest(self.cfg.unheard_limit) {
                Dest::To(to, _) => Some(to),
                Dest::Held(_) | Dest::Nowhere => None,
            };
            let entry = to.and_then(|to| {
                let key = fastpath::Key::new(src, SocketAddr::new(x_ip, x.port))?;
                let value = fastpath::Value::new(SocketAddr::new(y_ip, y.port), to, &x.from.rx)?;
                Some((key, value))
            });
            if let Some((key, value)) = entry
                && fp.install(key, value)
            {
                x.kernel = Some(key);
                self.counters.kernel_installs += 1;
            }
        }
        if !rtcp && (x.srtp.is_some() || y.srtp.is_some()) && x.from.srtp_moved() {
            self.found
                .push(MediaEvent::SrtpProgress { call: session.call });
        }
        if foreign_before == 0 && x.from.foreign == 1 {
            self.found.push(MediaEvent::UnexpectedSource {
                call: session.call,
                stream: t.stream,
                from: t.side,
                src,
                expected: x.peer.rtp_peer().or(x.peer.remote.map(|r| r.rtp)),
            });
        }
    }

    fn expire(&mut self, now: Instant) -> Vec<MediaEvent> {
        if now < self.next_check {
            return Vec::new();
        }
        self.next_check = now + self.check_every;
        let mut out = Vec::new();
        for (slot, entry) in self.slots.iter_mut().enumerate() {
            let Some(s) = entry.session.as_mut() else {
                continue;
            };
            if s.armed
                && now.saturating_duration_since(s.last_media) >= self.cfg.timeout
                && let Some(fp) = self.fast.as_deref()
            {
                // RTP the kernel forwarded counts as media too.
                for st in &s.streams {
                    for leg in &st.legs {
                        if let Some(v) = leg.kernel.as_ref().and_then(|k| fp.peek(k))
                            && v.last_ns > 0
                        {
                            let at = fastpath::ns_instant(v.last_ns);
                            if at > s.last_media {
                                s.last_media = at;
                            }
                        }
                    }
                }
            }
            if s.armed && now.saturating_duration_since(s.last_media) >= self.cfg.timeout {
                s.last_media = now;
                out.push(MediaEvent::Timeout {
                    call: s.call,
                    session: SessionId {
                        slot: slot as u32,
                        generation: entry.generation,
                    },
                });
            }
        }
        out
    }
}

/// Takes a stream direction back from the kernel: its entry goes, what it counted joins the
/// leg's flow.
fn reclaim(leg: &mut Leg, fp: &FastPath, counters: &mut Counters) {
    let Some(key) = leg.kernel.take() else {
        return;
    };
    if let Some(v) = fp.take(&key) {
        leg.absorb(&v);
        counters.received += v.packets;
        counters.forwarded += v.forwarded;
        counters.kernel_forwarded += v.forwarded;
    }
}

/// Counts one datagram from side `x` and sends it on to side `y`.
/// Where a datagram came from: its source, the socket it was read on, and whether it is RTCP
/// (read on the RTCP port, or RTCP by its packet type on a muxed one).
struct Arrival {
    src: SocketAddr,
    on_rtcp_socket: bool,
    rtcp: bool,
}

/// Returns what became of the source (a relatch must take the kernel's entries back).
fn pass(
    x: &mut Leg,
    y: &mut Leg,
    last_media: &mut Instant,
    counters: &mut Counters,
    packet: &[u8],
    arrival: Arrival,
    unheard_limit: u64,
) -> Admit {
    let Arrival {
        src,
        on_rtcp_socket,
        rtcp,
    } = arrival;
    let n = packet.len();
    counters.received += 1;
    if n == MAX_DATAGRAM {
        x.from.dropped += 1;
        counters.dropped += 1;
        return Admit::Refused;
    }
    // SRTP from the carrier latches only once it authenticates.
    let opened;
    let acceptable = x.srtp.is_some() && x.peer.acceptable(src, rtcp);
    let packet = match x.srtp.as_mut() {
        Some(k) if acceptable => match k.unprotect(packet, rtcp) {
            Ok(plain) => {
                opened = plain;
                &opened[..]
            }
            Err(r) => {
                x.from.srtp_rejected += 1;
                counters.srtp_rejected[r.index()] += 1;
                return Admit::Refused;
            }
        },
        _ => packet,
    };
    let now = Instant::now();
    let admitted = x.peer.admit(src, rtcp, on_rtcp_socket, now);
    if admitted == Admit::Refused {
        x.from.first_foreign.get_or_insert(src);
        x.from.foreign += 1;
        counters.foreign += 1;
        return admitted;
    }
    if rtcp {
        x.from.rtcp += 1;
    } else {
        x.from.packets += 1;
        x.from.bytes += n as u64;
        if let Some((seq, ts, ssrc, pt)) = rtp_header(packet) {
            x.from.rx.on_packet(seq, ts, ssrc, pt, now);
        }
        *last_media = now;
    }
    let dest = if rtcp {
        y.peer.rtcp_dest(unheard_limit)
    } else {
        y.peer.rtp_dest(unheard_limit)
    };
    let (to, via_rtp) = match dest {
        Dest::To(to, via_rtp) => (to, via_rtp),
        Dest::Held(to) => {
            // Not reflected at an address that never asked for it (RFC 7362 §3).
            x.from.held += 1;
            x.from.held_to.get_or_insert(to);
            counters.held += 1;
            return admitted;
        }
        Dest::Nowhere => {
            x.from.dropped += 1;
            counters.dropped += 1;
            return admitted;
        }
    };
    let sealed;
    let packet = match y.srtp.as_mut() {
        Some(k) => match k.protect(packet, rtcp) {
            Ok(p) => {
                sealed = p;
                &sealed[..]
            }
            Err(r) => {
                counters.srtp_rejected[r.index()] += 1;
                x.from.dropped += 1;
                counters.dropped += 1;
                return admitted;
            }
        },
        None => packet,
    };
    let out = if via_rtp { &y.rtp } else { &y.rtcp };
    if out.send_to(packet, to).is_ok() {
        y.peer.sent();
        x.from.forwarded += 1;
        counters.forwarded += 1;
    } else {
        x.from.dropped += 1;
        counters.dropped += 1;
    }
    admitted
}

fn bind_pair(ip: IpAddr, port: u16) -> Result<(UdpSocket, UdpSocket), (SocketAddr, io::Error)> {
    let bind = |port: u16| {
        let addr = SocketAddr::new(ip, port);
        UdpSocket::bind(addr)
            .and_then(|s| s.set_nonblocking(true).map(|()| s))
            .map_err(|e| (addr, e))
    };
    Ok((bind(port)?, bind(port + 1)?))
}
