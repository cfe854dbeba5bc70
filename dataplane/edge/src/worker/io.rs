//! What the worker lends its side concerns (registrations, probes, calls being restored): the
//! time, the id mint, the shared state, its transactions and outbox, its connections. Never a
//! call or the call tables: those only the call machine's transitions change.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::transactions::{NewClient, Transactions};
use super::{Lookup, Output, Shared, Timer};
use crate::call::{Hop, Side};
use crate::sip::ids::IdMint;
use crate::sip::transaction::TransactionKey;
use crate::transport::Link;
use crate::transport::tcp::{Connections, LinkError};

pub struct Io<'a> {
    pub now: Instant,
    pub shared: &'a Shared,
    pub mint: &'a mut IdMint,
    pub sip: &'a mut Transactions,
    pub tcp: &'a mut Connections,
}

/// An [`Io`] of `$w`'s fields, leaving its other fields free to borrow beside it.
macro_rules! io {
    ($w:expr) => {
        $crate::worker::io::Io {
            now: $w.now,
            shared: &$w.shared,
            mint: &mut $w.mint,
            sip: &mut $w.sip,
            tcp: &mut $w.tcp,
        }
    };
}
pub(crate) use io;

impl Io<'_> {
    /// How to reach `addr` with `transport` from `side` ([`Connections::link_to`]); a new
    /// connection is dialled by the runtime.
    pub fn link_to(
        &mut self,
        side: Side,
        addr: SocketAddr,
        transport: trunkgate_crds::Transport,
        host: &str,
        carrier: Option<&crate::transport::tls_peer::TrunkTls>,
    ) -> Result<Link, LinkError> {
        let (link, dial) = self.tcp.link_to(side, addr, transport, host, carrier)?;
        if let Some(d) = dial {
            self.sip.push(Output::Dial(Box::new(d)));
        }
        Ok(link)
    }

    /// RFC 3263 location of `hop` (NAPTR, SRV, then A/AAAA) off the event loop; the answer
    /// comes back as [`super::Event::Resolved`] for `lookup`. Without a resolver: Err at once.
    pub fn resolve(&mut self, hop: &Hop, lookup: Lookup) -> Result<(), trunkgate_resolve::Error> {
        if self.shared.resolver.is_none() {
            return Err(trunkgate_resolve::Error::Config {
                reason: format!("{}: no DNS resolver configured", hop.host),
            });
        }
        self.sip.push(Output::Resolve {
            hop: hop.clone(),
            lookup,
        });
        Ok(())
    }

    /// Sends a request in a new client transaction.
    pub fn open_client(&mut self, r: NewClient) -> TransactionKey {
        self.sip.open_client(self.now, r)
    }

    pub fn schedule(&mut self, after: Duration, t: Timer) {
        self.sip.schedule(self.now, after, t);
    }
}
