//! What a worker asks of its runtime. The worker itself touches no socket, spawns no task and
//! reads no clock: each input (a datagram, a message, an event, a timer) leaves its outputs
//! here, and the runtime (`runtime.rs`) carries them out in order. Unit tests read them instead.

use std::net::SocketAddr;

use tokio::sync::mpsc;

use super::{Handoff, Link, Lookup};
use crate::call::{Hop, Side};
use crate::transport::tcp::Timeouts;

/// One thing for the runtime to do.
pub enum Output {
    /// A message to a peer: a datagram from `side`'s UDP socket, or bytes for a TCP
    /// connection's writer.
    Send {
        side: Side,
        dest: Link,
        bytes: Vec<u8>,
    },
    /// An RFC 3263 lookup of `hop`; its answer comes back as `Event::Resolved` for `lookup`.
    Resolve { hop: Hop, lookup: Lookup },
    /// Open a TCP connection to `addr` and write what `queue` receives to it; a failure comes
    /// back as `Event::LinkFailed`.
    Dial(Box<Dial>),
    /// A message of a call another worker owns.
    HandOff { to: usize, handoff: Handoff },
    /// Claim a new call's places in the fleet's limits; the answer comes back as
    /// `Event::Claimed`.
    Claim {
        call: u64,
        req: crate::fleet::ClaimRequest,
    },
}

/// A TCP connection the worker wants: the sending half of `queue` is already in its table, so
/// messages queue until the connection is up.
pub struct Dial {
    pub side: Side,
    pub addr: SocketAddr,
    /// TLS: the name the target's certificate must carry, the client configuration and the
    /// handshake's time limit. None: plain TCP.
    pub tls: Option<(
        rustls_pki_types::ServerName<'static>,
        std::sync::Arc<rustls::ClientConfig>,
        std::time::Duration,
    )>,
    pub queue: mpsc::UnboundedReceiver<Vec<u8>>,
    pub writer: mpsc::UnboundedSender<Vec<u8>>,
    pub timeouts: Timeouts,
    /// The connection's place in `--tcp-max-connections`, held while it lives.
    pub admitted: crate::guard::census::Admitted,
}

/// The outputs of the input being handled.
#[derive(Default)]
pub struct Outbox(Vec<Output>);

impl Outbox {
    /// Queues `bytes` for `dest`.
    pub fn send(&mut self, side: Side, dest: &Link, bytes: &[u8]) {
        self.0.push(Output::Send {
            side,
            dest: dest.clone(),
            bytes: bytes.to_vec(),
        });
    }

    pub fn push(&mut self, o: Output) {
        self.0.push(o);
    }

    /// Everything queued, oldest first; the outbox is left empty.
    pub fn drain(&mut self) -> std::vec::Drain<'_, Output> {
        self.0.drain(..)
    }
}
