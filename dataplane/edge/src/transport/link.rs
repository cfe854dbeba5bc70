//! How to reach a peer: the address and, for a connection, the writer of its socket.

use std::net::SocketAddr;

use tokio::sync::mpsc;

/// How to reach a peer: a UDP address, or a TCP connection's writer (any worker may write to
/// it; the connection's own worker owns the socket).
#[derive(Clone, Debug)]
pub enum Link {
    Udp(SocketAddr),
    Tcp(SocketAddr, mpsc::UnboundedSender<Vec<u8>>),
    /// A TLS connection's writer (RFC 3261 §26.2), and the certificate chain the peer
    /// presented when it connected to us (checked per trunk: [`super::tls_peer`]).
    Tls(
        SocketAddr,
        mpsc::UnboundedSender<Vec<u8>>,
        Option<super::tls_peer::PeerChain>,
    ),
}

impl Link {
    pub fn addr(&self) -> SocketAddr {
        match self {
            Link::Udp(a) | Link::Tcp(a, _) | Link::Tls(a, _, _) => *a,
        }
    }
    /// The Via transport token (RFC 3261 §18.1.1: also decides whether we retransmit).
    pub fn transport(&self) -> &'static str {
        match self {
            Link::Udp(_) => "UDP",
            Link::Tcp(..) => "TCP",
            Link::Tls(..) => "TLS",
        }
    }
    pub fn reliable(&self) -> bool {
        matches!(self, Link::Tcp(..) | Link::Tls(..))
    }
    /// The client certificate chain the peer presented on this connection, if any.
    pub fn peer_chain(&self) -> Option<&[rustls_pki_types::CertificateDer<'static>]> {
        match self {
            Link::Tls(_, _, Some(chain)) => Some(chain),
            _ => None,
        }
    }
}
