//! SIP over TCP (RFC 3261 §18): each worker accepts on its own SO_REUSEPORT listeners and opens
//! connections to carrier targets that ask for TCP. A connection's reader feeds the worker that
//! owns it; any worker may write to it through its channel, so a handed-over call answers on
//! the connection its request came in on.

use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use trunkgate_crds::Transport;
use trunkgate_sip::StreamFrame;

use crate::call::Side;
use crate::metrics::Metrics;
use crate::worker::{Event, Link, Worker};

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

/// Accepts connections for one side until the runtime stops.
pub async fn accept(
    listener: TcpListener,
    side: Side,
    events: mpsc::UnboundedSender<Event>,
    metrics: Metrics,
) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                let (tx, rx) = mpsc::unbounded_channel();
                tokio::spawn(connection(
                    stream,
                    peer,
                    side,
                    tx,
                    rx,
                    events.clone(),
                    metrics.clone(),
                ));
            }
            Err(e) => {
                tracing::warn!(error = %e, "TCP accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

/// Reads framed messages from a connection and writes what the channel brings.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    side: Side,
    tx: mpsc::UnboundedSender<Vec<u8>>,
    mut rx: mpsc::UnboundedReceiver<Vec<u8>>,
    events: mpsc::UnboundedSender<Event>,
    metrics: Metrics,
) {
    let (mut rd, mut wr) = stream.into_split();
    let writer = tokio::spawn(async move {
        while let Some(bytes) = rx.recv().await {
            if wr.write_all(&bytes).await.is_err() {
                break;
            }
        }
    });
    let mut buf: Vec<u8> = Vec::with_capacity(8192);
    let mut chunk = vec![0u8; 16 * 1024];
    'read: loop {
        let n = match rd.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
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
                            let src = Link::Tcp(peer, tx.clone());
                            if events
                                .send(Event::Message {
                                    side,
                                    src,
                                    msg: Box::new(msg),
                                })
                                .is_err()
                            {
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
                    break 'read;
                }
            }
        }
        if buf.len() > MAX_BUFFER {
            break;
        }
    }
    drop(tx);
    writer.abort();
}

impl Worker {
    /// How to reach `addr` with `transport` from `side`: UDP as is, TCP over a connection of
    /// this worker's (opened on first use; messages queue until it is up).
    pub fn link_to(
        &mut self,
        side: Side,
        addr: SocketAddr,
        transport: Transport,
    ) -> Result<Link, String> {
        match transport {
            Transport::Udp => Ok(Link::Udp(addr)),
            Transport::Tls => Err(format!(
                "{addr}: TLS signalling is not supported by this edge yet"
            )),
            Transport::Tcp => {
                if let Some(tx) = self.tcp_out.get(&(side, addr))
                    && !tx.is_closed()
                {
                    return Ok(Link::Tcp(addr, tx.clone()));
                }
                let (tx, rx) = mpsc::unbounded_channel();
                self.tcp_out.insert((side, addr), tx.clone());
                let events = self.events.clone();
                let metrics = self.shared.metrics.clone();
                let writer_tx = tx.clone();
                tokio::spawn(async move {
                    let connect = tokio::time::timeout(
                        std::time::Duration::from_secs(3),
                        TcpStream::connect(addr),
                    )
                    .await;
                    match connect {
                        Ok(Ok(stream)) => {
                            let _ = stream.set_nodelay(true);
                            connection(stream, addr, side, writer_tx, rx, events, metrics).await;
                        }
                        _ => {
                            let _ = events.send(Event::LinkFailed { addr });
                        }
                    }
                });
                Ok(Link::Tcp(addr, tx))
            }
        }
    }

    /// A connection we opened failed: its pending requests fail over (RFC 3263 §4.3).
    pub fn on_link_failed(&mut self, addr: SocketAddr) {
        self.tcp_out.retain(|(_, a), _| *a != addr);
        let keys: Vec<_> = self
            .clients
            .iter()
            .filter(|(_, tx)| !tx.completed && tx.dest.reliable() && tx.dest.addr() == addr)
            .map(|(k, _)| k.clone())
            .collect();
        for k in keys {
            self.client_failed(k, 503, format!("TCP connection to {addr} failed"));
        }
    }
}

/// Per-worker table of connections we opened.
pub type Outgoing = crate::worker::Table<(Side, SocketAddr), mpsc::UnboundedSender<Vec<u8>>>;
