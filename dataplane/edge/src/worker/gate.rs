//! Who may reach a transaction or dialog of ours (RFC 3261 §9.2, §12.2.2, §17.2.3). A source
//! outside every trunk's `allowedCidrs` never gets a byte back; all it can do is continue a
//! transaction or dialog of its own, from the address that one already uses. A tag or branch
//! that looks like ours proves nothing: both are in every message the edge sends.

use trunkgate_sip::{Method, Request};

use super::ServerTxn;
use super::calls::Calls;
use super::transactions::Transactions;
use crate::call::{CallState, LegId, Side};
use crate::sip::transaction::{Role, TransactionKey};
use crate::transport::Link;

/// Whether a request from a source outside the allow-lists belongs to something of ours that
/// this very address is part of: a retransmission of its request, the ACK or CANCEL of its
/// INVITE, or a request inside a dialog whose peer it is. Anything else is dropped.
pub fn expected(sip: &Transactions, calls: &Calls, side: Side, src: &Link, req: &Request) -> bool {
    let ip = src.addr().ip();
    let key = TransactionKey::from_request(req, Role::Server);
    if sip.server(&key).is_some_and(|tx| tx.peer.addr().ip() == ip) {
        return true;
    }
    if req.method == Method::Cancel {
        return calls.cancel_matches(sip.server(&key.cancelled()), src, req);
    }
    calls.dialog_of(side, src, req).is_some()
}

impl Calls {
    /// The live call leg a request with our To tag belongs to, when its Call-ID and tag name
    /// one of our dialogs on `side` and it comes from that leg's peer address (§12.2.2).
    pub fn dialog_of(&self, side: Side, src: &Link, req: &Request) -> Option<(u64, LegId)> {
        let tag = trunkgate_sip::to_tag(req)?;
        let call_id = trunkgate_sip::call_id(req)?;
        let (id, leg) = self.dialog(call_id, tag)?;
        let c = self.get(id)?;
        let l = c.leg(leg);
        let live = c.state != CallState::Ended || req.method == Method::Ack;
        (live && l.side == side && l.sent_by(src.addr().ip())).then_some((id, leg))
    }

    /// RFC 3261 §9.2: a CANCEL matches the INVITE server transaction `invite` with its branch
    /// and sent-by ([`TransactionKey::cancelled`]), from the same address, with the INVITE's
    /// Call-ID, From tag and CSeq number.
    pub fn cancel_matches(&self, invite: Option<&ServerTxn>, src: &Link, req: &Request) -> bool {
        let Some(tx) = invite else {
            return false;
        };
        if tx.peer.addr().ip() != src.addr().ip() {
            return false;
        }
        let Some((id, _)) = tx.call else {
            // An INVITE refused without a call: the CANCEL changes nothing.
            return true;
        };
        let Some(c) = self.get(id) else {
            return true;
        };
        trunkgate_sip::call_id(req) == Some(c.a.call_id.as_str())
            && trunkgate_sip::from_tag(req) == c.a.remote_tag.as_deref()
            && trunkgate_sip::cseq(req).map(|(n, _)| n) == Some(c.a.invite_cseq)
    }
}
