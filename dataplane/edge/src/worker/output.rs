//! What a worker asks of its runtime. The worker itself touches no socket, spawns no task and
//! reads no clock: each input (a datagram, a message, an event, a timer) leaves its outputs
//! here, and the runtime (`runtime.rs`) carries them out in order. Unit tests read them instead.

use super::{Handoff, Link, Lookup};
use crate::call::{Hop, Side};

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

pub use crate::transport::tcp::Dial;

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
