//! SIP over TCP (RFC 3261 §18): each worker accepts on its own SO_REUSEPORT listeners and opens
//! connections to carrier targets that ask for TCP. A connection's reader feeds the worker that
//! owns it; any worker may write to it through its channel, so a handed-over call answers on
//! the connection its request came in on.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use trunkgate_crds::Transport;
use trunkgate_sip::StreamFrame;

use crate::metrics::Metrics;
use crate::table::Table;
use crate::transport::Link;
use trunkgate_media::Side;

/// Largest buffered, unframed input per connection before it is closed.
const MAX_BUFFER: usize = 256 * 1024;

/// A TCP listener that shares its port with the other workers' (SO_REUSEPORT).
pub fn reuseport_tcp(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    s.listen(1024)?;
    Ok(s.into())
}

/// File descriptors kept out of the TCP budget for everything else: UDP SIP sockets, epoll
/// instances, DNS, config reloads, the admin endpoint, log files.
const FD_RESERVE: u64 = 512;

/// How many TCP connections the edge may hold: what was asked, but never so many that the RTP
/// ports (one socket each) and [`FD_RESERVE`] would no longer fit under the open-file limit.
pub fn connection_budget(requested: usize, nofile: u64, rtp_ports: (u16, u16)) -> usize {
    let rtp = u64::from(rtp_ports.1.saturating_sub(rtp_ports.0)) + 1;
    let room = nofile.saturating_sub(rtp + FD_RESERVE);
    requested.min(usize::try_from(room).unwrap_or(usize::MAX))
}

/// How long a connection may be quiet, and how long a message may take to arrive whole.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    pub idle: Duration,
    pub message: Duration,
}

/// Closes a refused connection at once with a reset (no FIN handshake, no TIME_WAIT to hold).
fn reset(stream: TcpStream) {
    let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
    drop(stream);
}

/// What a connection hands its worker: a message read whole, or the news that a connection we
/// opened could not be used.
pub enum TcpEvent {
    Message {
        side: Side,
        src: Link,
        msg: Box<trunkgate_sip::SipMessage>,
    },
    LinkFailed {
        addr: SocketAddr,
    },
}

/// Hands a [`TcpEvent`] to the worker; false when the worker is gone.
pub type Deliver = Arc<dyn Fn(TcpEvent) -> bool + Send + Sync>;

/// Who may open a connection to the edge: the ACL of `side` (a trunk's `allowedCidrs` on the
/// carrier side, `--platform-cidrs` on the platform side), and the TLS handshake rate per
/// source.
pub trait Doorman: Send + Sync + 'static {
    fn allows(&self, side: Side, ip: std::net::IpAddr) -> bool;
    /// Whether `ip` may start one more TLS handshake now (`--tls-handshake-rate`).
    fn handshake_allowed(&self, ip: std::net::IpAddr) -> bool;
}

/// What the listeners of one worker need: the door, the caps, the TLS server configuration.
pub struct Listening {
    pub door: Arc<dyn Doorman>,
    pub census: Arc<crate::guard::census::Census>,
    pub tls: Arc<crate::transport::tls::Tls>,
    pub timeouts: Timeouts,
    /// How long a TLS handshake may take.
    pub handshake: Duration,
    pub metrics: Metrics,
}

/// Accepts connections for one side until the runtime stops. Only sources some trunk allows
/// (carrier side) or `--platform-cidrs` holds (platform side) are kept; every connection is counted against the caps; errors (EMFILE
/// among them) back off from 10 ms to 1 s instead of spinning.
pub async fn accept(
    listener: TcpListener,
    side: Side,
    tls: bool,
    events: Deliver,
    l: Arc<Listening>,
) {
    let (metrics, timeouts) = (l.metrics.clone(), l.timeouts);
    let mut backoff = Duration::ZERO;
    let mut last_warning: Option<Instant> = None;
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                backoff = Duration::ZERO;
                let refused = |reason: &str| {
                    metrics
                        .tcp_refused
                        .with_label_values(&[side.label(), reason])
                        .inc();
                };
                if !l.door.allows(side, peer.ip()) {
                    refused("acl");
                    reset(stream);
                    continue;
                }
                // A handshake costs a signature: a source opening TLS connections faster
                // than --tls-handshake-rate has the excess closed before one starts.
                if tls && !l.door.handshake_allowed(peer.ip()) {
                    refused("tls_handshake_rate");
                    reset(stream);
                    continue;
                }
                let admitted = match l.census.admit(Some(peer.ip())) {
                    Ok(a) => a,
                    Err(reason) => {
                        refused(reason);
                        reset(stream);
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let (tx, rx) = mpsc::unbounded_channel();
                let ends = Ends {
                    peer,
                    side,
                    tx,
                    rx,
                    events: events.clone(),
                    metrics: metrics.clone(),
                    timeouts,
                    admitted,
                };
                if tls {
                    let Some(config) = l.tls.server.load_full().as_ref().clone() else {
                        continue;
                    };
                    let limit = l.handshake;
                    tokio::spawn(accept_tls(stream, config, limit, ends));
                } else {
                    tokio::spawn(connection(stream, Secure::No, ends));
                }
            }
            Err(e) => {
                backoff = (backoff * 2).clamp(Duration::from_millis(10), Duration::from_secs(1));
                metrics
                    .tcp_refused
                    .with_label_values(&[side.label(), "accept_error"])
                    .inc();
                if last_warning.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                    last_warning = Some(Instant::now());
                    tracing::warn!(error = %e, side = side.label(), "TCP accept failed; backing off (logged once per 10 s)");
                }
                tokio::time::sleep(backoff).await;
            }
        }
    }
}

/// A connection's place in the worker: who it is, its two channels, its limits.
pub struct Ends {
    pub peer: SocketAddr,
    pub side: Side,
    pub tx: mpsc::UnboundedSender<Vec<u8>>,
    pub rx: mpsc::UnboundedReceiver<Vec<u8>>,
    pub events: Deliver,
    pub metrics: Metrics,
    pub timeouts: Timeouts,
    pub admitted: crate::guard::census::Admitted,
}

/// The server side of a TLS handshake (RFC 3261 §26.2.1), then the connection as any other.
/// A handshake that fails or takes longer than `limit` closes it, counted by reason.
async fn accept_tls(
    stream: TcpStream,
    config: Arc<rustls::ServerConfig>,
    limit: Duration,
    ends: Ends,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    match handshake(limit, acceptor.accept(stream), &ends, "accepted").await {
        Ok(tls) => {
            let chain = tls
                .get_ref()
                .1
                .peer_certificates()
                .filter(|c| !c.is_empty())
                .map(crate::transport::tls_peer::PeerChain::from);
            connection(tls, Secure::Tls(chain), ends).await
        }
        Err(e) => tracing::debug!(peer = %ends.peer, error = %e, "TLS handshake failed"),
    }
}

/// A TLS handshake (`direction`: accepted or opened) that must finish within `limit`; a
/// failure is counted in `trunkgate_edge_tls_handshake_failures_total` by its reason.
async fn handshake<S>(
    limit: Duration,
    tls: impl std::future::Future<Output = std::io::Result<S>>,
    ends: &Ends,
    direction: &'static str,
) -> std::io::Result<S> {
    let result = tokio::time::timeout(limit, tls).await.unwrap_or_else(|_| {
        Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "TLS handshake",
        ))
    });
    if let Err(e) = &result {
        ends.metrics
            .tls_handshake_failures
            .with_label_values(&[
                ends.side.label(),
                direction,
                crate::transport::tls::failure_label(e),
            ])
            .inc();
    }
    result
}

/// Whether a connection is TLS, and the client certificate chain the peer presented.
enum Secure {
    No,
    Tls(Option<crate::transport::tls_peer::PeerChain>),
}

/// Reads framed messages from a connection and writes what the channel brings. Closed when
/// quiet for `timeouts.idle`, or when a message begun does not complete within
/// `timeouts.message` (a slow-loris holds nothing for long).
async fn connection<S>(stream: S, secure: Secure, ends: Ends)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    let Ends {
        peer,
        side,
        tx,
        mut rx,
        events,
        metrics,
        timeouts,
        admitted: _admitted,
    } = ends;
    let (mut rd, mut wr) = tokio::io::split(stream);
    let writer = tokio::spawn(async move {
        while let Some(bytes) = rx.recv().await {
            if wr.write_all(&bytes).await.is_err() {
                break;
            }
        }
    });
    let mut buf: Vec<u8> = Vec::with_capacity(8192);
    let mut chunk = vec![0u8; 16 * 1024];
    // When the unfinished message in `buf` began.
    let mut begun: Option<Instant> = None;
    let closed = |reason: &str| {
        metrics
            .tcp_closed
            .with_label_values(&[side.label(), reason])
            .inc();
    };
    'read: loop {
        let deadline = match begun {
            Some(t) => t + timeouts.message,
            None => Instant::now() + timeouts.idle,
        };
        let n = match tokio::time::timeout_at(deadline.into(), rd.read(&mut chunk)).await {
            Err(_) => {
                closed(if begun.is_some() {
                    "incomplete"
                } else {
                    "idle"
                });
                break;
            }
            Ok(Ok(0) | Err(_)) => {
                closed("peer");
                break;
            }
            Ok(Ok(n)) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        loop {
            match trunkgate_sip::frame_stream(&buf) {
                Ok(None) => break,
                Ok(Some(StreamFrame::KeepAlive { len })) => {
                    if (StreamFrame::KeepAlive { len }).is_ping() {
                        let _ = tx.send(b"\r\n".to_vec());
                    }
                    buf.drain(..len);
                }
                Ok(Some(StreamFrame::Message { len })) => {
                    match trunkgate_sip::parse(&buf[..len]) {
                        Ok(msg) => {
                            let src = match &secure {
                                Secure::Tls(chain) => Link::Tls(peer, tx.clone(), chain.clone()),
                                Secure::No => Link::Tcp(peer, tx.clone()),
                            };
                            if !events(TcpEvent::Message {
                                side,
                                src,
                                msg: Box::new(msg),
                            }) {
                                break 'read;
                            }
                        }
                        Err(e) => {
                            metrics
                                .malformed
                                .with_label_values(&[side.label(), e.metric_label()])
                                .inc();
                        }
                    }
                    buf.drain(..len);
                }
                Err(e) => {
                    // A stream cannot be re-synchronised after a framing error (RFC 3261 §18.3).
                    metrics
                        .malformed
                        .with_label_values(&[side.label(), e.metric_label()])
                        .inc();
                    closed("framing");
                    break 'read;
                }
            }
        }
        begun = match (buf.is_empty(), begun) {
            (true, _) => None,
            (false, Some(t)) => Some(t),
            (false, None) => Some(Instant::now()),
        };
        if buf.len() > MAX_BUFFER {
            closed("oversize");
            break;
        }
    }
    drop(tx);
    writer.abort();
}

/// Why a next hop cannot be reached over the transport it asks for.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("{0}: not a name a TLS certificate can carry")]
    TlsName(String),
    #[error("{0}: the edge holds its most TCP connections (--tcp-max-connections)")]
    TcpFull(SocketAddr),
}

impl LinkError {
    /// Low-cardinality label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            LinkError::TlsName(_) => "tls_bad_name",
            LinkError::TcpFull(_) => "tcp_connections_full",
        }
    }
}

/// The connections one worker opened, keyed by side, address and, for TLS, the name the
/// peer's certificate was checked for; each counted against `--tcp-max-connections`.
pub struct Connections {
    open: Table<(Side, SocketAddr, Option<String>), mpsc::UnboundedSender<Vec<u8>>>,
    census: Arc<crate::guard::census::Census>,
    timeouts: Timeouts,
    /// How long a TLS handshake may take.
    handshake: Duration,
    /// The edge's TLS client configuration, for targets whose trunk brings none.
    tls: Arc<crate::transport::tls::Tls>,
}

impl Connections {
    pub fn new(
        census: Arc<crate::guard::census::Census>,
        timeouts: Timeouts,
        handshake: Duration,
        tls: Arc<crate::transport::tls::Tls>,
    ) -> Self {
        Connections {
            open: Table::default(),
            census,
            timeouts,
            handshake,
            tls,
        }
    }

    /// How to reach `addr` with `transport` from `side`: UDP as is, TCP over a connection of
    /// this table's (opened on first use: the [`Dial`] returned is for the runtime to open, and
    /// messages queue until it is up).
    /// `carrier`: the trunk's TLS expectations when the peer is its carrier (its CA bundle and
    /// the name its certificate carries, `spec.tls`).
    pub fn link_to(
        &mut self,
        side: Side,
        addr: SocketAddr,
        transport: Transport,
        host: &str,
        carrier: Option<&crate::transport::tls_peer::TrunkTls>,
    ) -> Result<(Link, Option<Dial>), LinkError> {
        let tls = match transport {
            Transport::Udp => return Ok((Link::Udp(addr), None)),
            Transport::Tcp => None,
            Transport::Tls => Some(match carrier.and_then(|c| c.server_name.clone()) {
                Some(name) => name,
                None => rustls_pki_types::ServerName::try_from(host.to_string())
                    .map_err(|_| LinkError::TlsName(host.to_string()))?,
            }),
        };
        let link = |tx: mpsc::UnboundedSender<Vec<u8>>| match transport {
            Transport::Tls => Link::Tls(addr, tx, None),
            _ => Link::Tcp(addr, tx),
        };
        let key = (side, addr, tls.as_ref().map(|n| n.to_str().into_owned()));
        if let Some(tx) = self.open.get(&key)
            && !tx.is_closed()
        {
            return Ok((link(tx.clone()), None));
        }
        let admitted = self
            .census
            .admit(None)
            .map_err(|_| LinkError::TcpFull(addr))?;
        let (tx, queue) = mpsc::unbounded_channel();
        self.open.insert(key, tx.clone());
        let tls = tls.map(|name| {
            (
                name,
                carrier.map_or_else(|| self.tls.client.load_full(), |c| c.client.clone()),
                self.handshake,
            )
        });
        let dial = Dial {
            side,
            addr,
            tls,
            queue,
            writer: tx.clone(),
            timeouts: self.timeouts,
            admitted,
        };
        Ok((link(tx), Some(dial)))
    }

    /// A connection to `addr` could not be used: the next message there opens a new one.
    pub fn forget(&mut self, addr: SocketAddr) {
        self.open.retain(|(_, a, _), _| *a != addr);
    }
}

/// A TCP connection a worker wants: the sending half of `queue` is already in its table, so
/// messages queue until the connection is up.
pub struct Dial {
    pub side: Side,
    pub addr: SocketAddr,
    /// TLS: the name the target's certificate must carry, the client configuration and the
    /// handshake's time limit. None: plain TCP.
    pub tls: Option<(
        rustls_pki_types::ServerName<'static>,
        Arc<rustls::ClientConfig>,
        Duration,
    )>,
    pub queue: mpsc::UnboundedReceiver<Vec<u8>>,
    pub writer: mpsc::UnboundedSender<Vec<u8>>,
    pub timeouts: Timeouts,
    /// The connection's place in `--tcp-max-connections`, held while it lives.
    pub admitted: crate::guard::census::Admitted,
}

/// Opens the connection a worker asked for ([`Output::Dial`]) and runs it; a connection that
/// cannot be opened within 3 s comes back as [`TcpEvent::LinkFailed`].
pub async fn dial(d: Dial, events: Deliver, metrics: crate::metrics::Metrics) {
    let Dial {
        side,
        addr,
        tls,
        queue,
        writer,
        timeouts,
        admitted,
    } = d;
    let stream = match tokio::time::timeout(Duration::from_secs(3), TcpStream::connect(addr)).await
    {
        Ok(Ok(stream)) => stream,
        _ => {
            let _ = events(TcpEvent::LinkFailed { addr });
            return;
        }
    };
    let _ = stream.set_nodelay(true);
    let ends = Ends {
        peer: addr,
        side,
        tx: writer,
        rx: queue,
        events,
        metrics,
        timeouts,
        admitted,
    };
    let Some((name, config, limit)) = tls else {
        return connection(stream, Secure::No, ends).await;
    };
    // RFC 3261 §26.2.1 / RFC 5922: the target's certificate must name the host we looked up.
    let connector = tokio_rustls::TlsConnector::from(config);
    match handshake(limit, connector.connect(name, stream), &ends, "opened").await {
        Ok(tls) => connection(tls, Secure::Tls(None), ends).await,
        Err(e) => {
            tracing::warn!(target = %addr, error = %e, "TLS handshake with a target failed");
            let _ = (ends.events)(TcpEvent::LinkFailed { addr });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(max: usize) -> Connections {
        let tls = crate::transport::tls::Tls::load(None, None, None).expect("no TLS files to read");
        Connections::new(
            Arc::new(crate::guard::census::Census::new(max, max, None)),
            Timeouts {
                idle: Duration::from_secs(60),
                message: Duration::from_secs(5),
            },
            Duration::from_secs(3),
            Arc::new(tls),
        )
    }

    const TARGET: &str = "127.0.0.5:5060";

    #[test]
    fn a_udp_target_needs_no_connection() {
        let mut c = table(1);
        let addr = TARGET.parse().expect("address");
        let (link, dial) = c
            .link_to(Side::Public, addr, Transport::Udp, "127.0.0.5", None)
            .expect("udp");
        assert!(matches!(link, Link::Udp(a) if a == addr));
        assert!(dial.is_none());
    }

    #[test]
    fn a_tcp_target_is_dialled_once_and_its_messages_share_the_connection() {
        let mut c = table(4);
        let addr = TARGET.parse().expect("address");
        let (first, dial) = c
            .link_to(Side::Public, addr, Transport::Tcp, "127.0.0.5", None)
            .expect("tcp");
        let dial = dial.expect("the first message dials");
        assert!(dial.tls.is_none());
        let (second, again) = c
            .link_to(Side::Public, addr, Transport::Tcp, "127.0.0.5", None)
            .expect("tcp");
        assert!(again.is_none(), "the open connection is reused");
        let (Link::Tcp(_, a), Link::Tcp(_, b)) = (&first, &second) else {
            panic!("TCP links")
        };
        assert!(a.same_channel(b));
        // The other side is another connection.
        let (_, other) = c
            .link_to(Side::Internal, addr, Transport::Tcp, "127.0.0.5", None)
            .expect("tcp");
        assert!(other.is_some());
        drop(dial);
    }

    #[test]
    fn a_closed_or_forgotten_connection_is_dialled_again() {
        let mut c = table(4);
        let addr = TARGET.parse().expect("address");
        let (_, dial) = c
            .link_to(Side::Public, addr, Transport::Tcp, "h", None)
            .expect("tcp");
        drop(dial); // the runtime's end went away: the connection is closed
        let (_, dial) = c
            .link_to(Side::Public, addr, Transport::Tcp, "h", None)
            .expect("tcp");
        assert!(dial.is_some(), "a closed connection is replaced");
        c.forget(addr);
        let (_, again) = c
            .link_to(Side::Public, addr, Transport::Tcp, "h", None)
            .expect("tcp");
        assert!(again.is_some(), "a failed connection is replaced");
        drop(dial);
    }

    #[test]
    fn connections_past_the_cap_are_refused_and_a_tls_target_needs_a_name() {
        let mut c = table(1);
        let a: SocketAddr = TARGET.parse().expect("address");
        let b: SocketAddr = "127.0.0.6:5060".parse().expect("address");
        let (_, held) = c
            .link_to(Side::Public, a, Transport::Tcp, "h", None)
            .expect("tcp");
        let err = c
            .link_to(Side::Public, b, Transport::Tcp, "h", None)
            .err()
            .expect("the cap is full");
        assert_eq!(err.metric_label(), "tcp_connections_full");
        drop(held); // its place goes back
        let (_, dial) = c
            .link_to(Side::Public, b, Transport::Tls, "carrier.example", None)
            .expect("tls");
        let (name, _, handshake) = dial.expect("dialled").tls.expect("TLS");
        assert_eq!(name.to_str(), "carrier.example");
        assert_eq!(handshake, Duration::from_secs(3));
        let err = c
            .link_to(Side::Public, a, Transport::Tls, "bad name!", None)
            .err()
            .expect("no name");
        assert_eq!(err.metric_label(), "tls_bad_name");
    }

    #[test]
    fn the_tcp_budget_leaves_room_for_rtp_and_the_rest() {
        // 10,000 RTP ports and the reserve under a 20,000-file limit leave 9,488.
        assert_eq!(connection_budget(50_000, 20_000, (20000, 29999)), 9_488);
        assert_eq!(connection_budget(4096, 1_048_576, (20000, 29999)), 4096);
        assert_eq!(connection_budget(4096, 1024, (20000, 29999)), 0);
    }
}
