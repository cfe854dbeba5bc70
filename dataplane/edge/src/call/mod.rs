//! A call as the B2BUA holds it: two legs, each a dialog of its own (RFC 3261 §12), and what is
//! needed to finish the call and write its record.

pub mod account;
pub mod b2bua;
pub mod cdr;
pub mod challenge;
pub mod checkpoint;
pub mod machine;
#[cfg(test)]
mod machine_tests;
pub mod media;

use std::sync::Arc;
use std::time::SystemTime;

use trunkgate_crds::e164::E164;

use crate::config::{CallSlot, Runtime};

pub use crate::route::{Direction, Hop};
pub use trunkgate_media::Side;

/// Which leg of a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LegId {
    /// The leg the call came in on (we are its UAS).
    A,
    /// The leg we placed (we are its UAC).
    B,
}

impl LegId {
    pub fn other(self) -> LegId {
        match self {
            LegId::A => LegId::B,
            LegId::B => LegId::A,
        }
    }
}

/// One dialog of the call.
#[derive(Debug, Clone)]
pub struct Leg {
    pub side: Side,
    /// Where requests and responses for this leg go (symmetric signalling: the address the peer
    /// sent from, or the target we chose).
    pub peer: crate::transport::Link,
    pub call_id: String,
    pub local_tag: String,
    pub remote_tag: Option<String>,
    /// Our From/To value in this dialog, without tag.
    pub local: String,
    /// The peer's From/To value in this dialog, without tag.
    pub remote: String,
    /// Request-URI of in-dialog requests: the peer's Contact (RFC 3261 §12.1).
    pub remote_target: String,
    /// Route set, in the order to put in Route headers.
    pub route_set: Vec<String>,
    /// Our next CSeq in this dialog (we are UAC of in-dialog requests we send).
    pub local_cseq: u32,
    /// CSeq of the INVITE that created this leg.
    pub invite_cseq: u32,
    /// An INVITE we answered 2xx on this leg and whose ACK has not come (server key).
    pub awaiting_ack: Option<crate::sip::transaction::TransactionKey>,
    /// CSeq of the re-INVITE we relayed onto this leg and answered 2xx, for the ACK to follow.
    pub reinvite_cseq: Option<u32>,
    /// This leg's RFC 4028 session timer, once a 2xx negotiated one.
    pub session: Option<crate::call::b2bua::session_timer::SessionTimer>,
}

impl Leg {
    /// Whether an in-dialog request from `ip` comes from this leg's peer (RFC 3261 §12.2.2):
    /// the address the dialog's signalling uses, and on the platform side (whose pods may send
    /// from their own address while the edge reaches them through a Service) also the host of
    /// its Contact or of its first Record-Route. Nobody else may move or end the call.
    pub fn sent_by(&self, ip: std::net::IpAddr) -> bool {
        if self.peer.addr().ip() == ip {
            return true;
        }
        if self.side != Side::Internal {
            return false;
        }
        let first_route = self.route_set.first().map(|r| crate::sip::msg::uri_of(r));
        [Some(self.remote_target.as_str()), first_route]
            .into_iter()
            .flatten()
            .filter_map(crate::sip::msg::host_of)
            .any(|h| h.parse::<std::net::IpAddr>().is_ok_and(|h| h == ip))
    }
}

/// Call progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallState {
    /// INVITE sent on leg B, no final answer yet.
    Proceeding(Attempt),
    /// Answered on both legs.
    Confirmed,
    /// Leg A was cancelled (by the caller, or after ringing too long) before leg B answered:
    /// leg B's INVITE is CANCELed once it has rung (RFC 3261 §9.1), and its final answer ends
    /// the call (a 2xx that crosses the CANCEL is acknowledged and hung up).
    Cancelling(Attempt),
    /// A BYE or a final error is ending it.
    Ending,
    /// Over; kept a while to absorb retransmissions.
    Ended,
}

/// Where leg B's current INVITE stands before its final answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attempt {
    /// No provisional answer yet: a CANCEL must wait for one (RFC 3261 §9.1).
    Calling,
    /// A provisional answer came: it rings, and a CANCEL may be sent.
    Ringing,
}

impl CallState {
    /// Whether leg A was cancelled while leg B was being set up.
    pub fn cancelled(&self) -> bool {
        matches!(self, CallState::Cancelling(_))
    }
}

/// Everything about one call.
pub struct Call {
    pub rt: Arc<Runtime>,
    /// The trunk the call goes through now (an outbound call may fail over to another).
    pub trunk: u32,
    /// The trunk whose share of the relay's ports its media session holds.
    pub media_trunk: u32,
    /// The tenant's selection policy that ordered an outbound call's trunks.
    pub selection: trunkgate_crds::Selection,
    /// The trunks an outbound call may still fail over to (empty: only its own), dropped once
    /// it is answered.
    pub carriers: Vec<crate::route::admission::Carrier>,
    /// Where the identity lines (From's P-Asserted-Identity, Privacy, …) lie in `b_lines`:
    /// a failover to another trunk replaces them with how that trunk presents the caller.
    pub identity_at: (u32, u32),
    pub direction: Direction,
    pub a: Leg,
    pub b: Leg,
    pub state: CallState,
    /// Server transaction of the initial INVITE on leg A.
    pub a_invite: crate::sip::transaction::TransactionKey,
    /// Client transaction key of the current INVITE attempt on leg B.
    pub b_invite: Option<crate::sip::transaction::TransactionKey>,
    /// Next hops for the B-leg INVITE, tried in order; `next_hop` indexes the untried one.
    pub hops: Vec<Hop>,
    pub next_hop: usize,
    /// The user part of the B-leg Request-URI and To (the called number as sent on).
    pub b_user: String,
    /// The B-leg INVITE's header lines but Via, From, To, Call-ID, CSeq and Contact, and its
    /// body: kept to send the INVITE again on failover and to answer a challenge.
    pub b_lines: String,
    pub b_body: Vec<u8>,
    /// The Authorization or Proxy-Authorization line answering the carrier's challenge.
    pub auth_line: Option<String>,
    /// Times the current hop's INVITE was sent again with credentials.
    pub auth_tries: u8,
    /// The ACK we sent for leg B's 2xx, re-sent when the 2xx is retransmitted.
    pub b_ack: Option<Vec<u8>>,
    pub caller: Option<E164>,
    pub callee: E164,
    pub started: SystemTime,
    pub answered: Option<SystemTime>,
    pub final_code: Option<u16>,
    pub ended_by: Option<&'static str>,
    pub last_failure: Option<(u16, String)>,
    pub slot: Option<CallSlot>,
    /// Its place among the trunk's calls in set-up, until leg A's final answer is acknowledged.
    pub setup: Option<crate::config::SetupSlot>,
    /// Its place among its carrier-side source's calls in set-up (inbound calls only).
    pub setup_source: Option<crate::guard::census::Admitted>,
    /// The call's relay session (None when the trunk passes SDP untouched).
    pub media: Option<trunkgate_media::SessionId>,
    /// Relay statistics, filled when the call ends.
    pub media_stats: Vec<trunkgate_media::StreamStats>,
    /// Extra lines for the BYEs the edge sends (a Reason header).
    pub bye_lines: String,
    /// To tags of other forks of leg B's INVITE that answered 2xx after the first: each is
    /// ACKed and hung up once (RFC 3261 §13.2.2.4).
    pub forks_ended: Vec<String>,
    /// 3xx answers of carrier targets followed so far (at most [`crate::call::b2bua::MAX_REDIRECTS`]).
    pub redirects: u8,
    /// Rebuilt from a checkpoint by a restarted edge (its record says so).
    pub recovered: bool,
    /// A checkpoint of it was written (and must be forgotten when it ends).
    pub checkpointed: bool,
    /// An outbound call's INVITE attempts to carrier targets, in order, for the record.
    pub tried: Vec<account::Tried>,
    /// When the call finished, and what it is billed.
    pub ended: Option<SystemTime>,
    pub charge: Option<account::Charge>,
}

impl Call {
    pub fn leg(&self, id: LegId) -> &Leg {
        match id {
            LegId::A => &self.a,
            LegId::B => &self.b,
        }
    }
    pub fn leg_mut(&mut self, id: LegId) -> &mut Leg {
        match id {
            LegId::A => &mut self.a,
            LegId::B => &mut self.b,
        }
    }
    /// What the carrier charges for this call: the rate of the longest prefix of the called
    /// number among its trunk's routes (`spec.routes[].rate`). Routes are where the trunk
    /// takes calls, so only an outbound call has one.
    pub fn rate(&self) -> Option<&trunkgate_crds::rate::RateConfig> {
        if self.direction != Direction::Outbound {
            return None;
        }
        self.rt.rate(self.trunk, self.callee)
    }

    pub fn trunk_id(&self) -> &str {
        &self.rt.trunk(self.trunk).id
    }
}
