//! What one leg of a stream knows about its peer, and the rules that decide which sources may
//! latch and where the relay may send, without sockets (the relay owns those).
//!
//! - **Latching** (RFC 4961 symmetric RTP): the first packet from an acceptable source fixes
//!   where that side's media goes. Without `behindNat` only the SDP's IP is acceptable and the
//!   latch holds until a new SDP. With it, a source inside the side's allow-list, the IP the
//!   leg's signalling came from, or the SDP's IP; and it moves (relatches) only once the
//!   latched source has been quiet for [`RELATCH_QUIET`] and one new acceptable source sent
//!   [`RELATCH_PACKETS`] packets in a row (rtpengine's rule): a source spraying the port can
//!   neither take an unlatched stream nor steal a live one (RFC 7362 §3).
//! - **No reflection**: before the peer sent anything, media goes to its SDP address only when
//!   that address is inside the allow-list (or is the signalling source), and at most
//!   [`DEFAULT_UNHEARD_LIMIT`] datagrams; otherwise it is held until a first packet comes from
//!   there (comedia). An SDP can thus not aim the relay's 50 pps at a victim that never asked.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipnet::IpNet;

use crate::sdp::Remote;

/// How long the latched source must have sent nothing before another may take its place.
pub const RELATCH_QUIET: Duration = Duration::from_secs(1);
/// Packets in a row a new source must send (while the latched one is quiet) to take over.
pub const RELATCH_PACKETS: u32 = 3;
/// Datagrams (RTP and RTCP together) sent to a peer that has not sent a single packet back:
/// 10 s of 20 ms audio, longer than any answer takes to start media, too short to make the
/// relay a useful reflector. Then the relay holds that direction until the peer is heard.
pub const DEFAULT_UNHEARD_LIMIT: u64 = 500;

/// Who may be one side's peer: what the edge knows of that side apart from its SDP.
#[derive(Clone, Debug)]
pub struct PeerPolicy {
    /// That side's allow-list: the trunk's `inbound.allowedCidrs` for the carrier leg, the
    /// platform networks (`--platform-cidrs`) for the platform leg.
    pub networks: Arc<[IpNet]>,
    /// `media.behindNat`: the peer's RTP may come from another address than its SDP's.
    pub behind_nat: bool,
    /// Where the call's signalling on this leg came from (or goes to).
    pub signalling: Option<IpAddr>,
}

impl Default for PeerPolicy {
    fn default() -> Self {
        Self {
            networks: Arc::from(Vec::new()),
            behind_nat: false,
            signalling: None,
        }
    }
}

impl PeerPolicy {
    /// Whether `ip` is in the allow-list or is the signalling source.
    pub fn trusts(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.signalling.map(|s| s.to_canonical()) == Some(ip)
            || self.networks.iter().any(|n| n.contains(&ip))
    }
}

/// Where a datagram for this side goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dest {
    /// Nowhere: no SDP yet, or the side is on hold or disabled the stream.
    Nowhere,
    /// To the SDP's address, which may not be sent to yet: outside the allow-list and not
    /// heard from, or the unheard budget is spent, or a peer behind NAT not yet latched.
    Held(SocketAddr),
    /// There, from our RTP socket (`true`) or our RTCP one.
    To(SocketAddr, bool),
}

/// What [`Peer::admit`] made of a datagram's source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Admit {
    /// Not from the peer: dropped and counted.
    Refused,
    /// From the peer (it may just have latched).
    Taken,
    /// From a new source that took over a quiet latch: what the kernel forwards must change.
    Relatched,
}

/// One latch (RTP or RTCP): the source, when it last sent, and a source waiting to take over.
#[derive(Clone, Copy, Debug, Default)]
struct Track {
    peer: Option<SocketAddr>,
    last: Option<Instant>,
    candidate: Option<(SocketAddr, u32)>,
}

/// One side of one stream as far as its peer goes.
#[derive(Debug, Default)]
pub(crate) struct Peer {
    /// What its SDP says.
    pub(crate) remote: Option<Remote>,
    /// The SDP's IP, kept through a `c=0.0.0.0` hold: it may always latch.
    expect: Option<IpAddr>,
    policy: PeerPolicy,
    /// The SDP's RTP and RTCP addresses are in the policy (worked out once per SDP).
    rtp_trusted: bool,
    rtcp_trusted: bool,
    rtp: Track,
    rtcp: Track,
    /// RTCP to this side leaves from our RTP port (rtcp-mux, or its RTCP came there).
    rtcp_on_rtp: bool,
    /// Datagrams sent to it since its SDP named it, while it had sent nothing.
    unheard_sent: u64,
}

impl Peer {
    /// Takes a new SDP of this side. A new address means learning the peer again (RFC 4961);
    /// a `c=0.0.0.0` hold says "send nothing here", not "I moved": the latch stays.
    pub(crate) fn set_remote(&mut self, remote: Remote, policy: &PeerPolicy) {
        if !remote.rtp.ip().is_unspecified() {
            let moved = self
                .remote
                .is_none_or(|old| old.rtp != remote.rtp || old.rtcp != remote.rtcp)
                || self.policy.behind_nat != policy.behind_nat;
            if moved {
                self.rtp = Track::default();
                self.rtcp = Track::default();
                self.expect = Some(remote.rtp.ip());
                self.rtcp_on_rtp = remote.rtcp_mux;
                self.unheard_sent = 0;
            }
            self.rtp_trusted = policy.trusts(remote.rtp.ip());
            self.rtcp_trusted = policy.trusts(remote.rtcp.ip());
        }
        self.policy = policy.clone();
        self.remote = Some(remote);
    }

    pub(crate) fn rtp_peer(&self) -> Option<SocketAddr> {
        self.rtp.peer
    }

    /// Anything (RTP or RTCP) came from the peer since its SDP named it.
    fn heard(&self) -> bool {
        self.rtp.peer.is_some() || self.rtcp.peer.is_some()
    }

    /// Whether the relay may send to `to`, an SDP address of this side's.
    fn may_send(&self, to: SocketAddr, trusted: bool, limit: u64) -> bool {
        // Comedia: the address spoke to us first, so it wants our media.
        let spoke = [self.rtp.peer, self.rtcp.peer]
            .into_iter()
            .flatten()
            .any(|p| p.ip() == to.ip());
        spoke || (trusted && (self.heard() || self.unheard_sent < limit))
    }

    /// Where RTP to this side goes: the latched source, else the SDP address if it may be sent
    /// to (`limit`: the unheard budget).
    pub(crate) fn rtp_dest(&self, limit: u64) -> Dest {
        let Some(r) = self.remote.filter(|r| r.receives()) else {
            return Dest::Nowhere;
        };
        if let Some(p) = self.rtp.peer {
            return Dest::To(p, true);
        }
        // Behind NAT the SDP's address is not where the peer can be reached: wait for it.
        if !self.policy.behind_nat && self.may_send(r.rtp, self.rtp_trusted, limit) {
            Dest::To(r.rtp, true)
        } else {
            Dest::Held(r.rtp)
        }
    }

    /// Where RTCP to this side goes, and whether it leaves from our RTP port.
    pub(crate) fn rtcp_dest(&self, limit: u64) -> Dest {
        let Some(r) = self.remote.filter(|r| r.receives()) else {
            return Dest::Nowhere;
        };
        if let Some(p) = self.rtcp.peer {
            return Dest::To(p, self.rtcp_on_rtp);
        }
        if self.policy.behind_nat {
            return match self.rtp.peer.filter(|_| r.rtcp_mux) {
                Some(p) => Dest::To(p, true),
                None => Dest::Held(r.rtcp),
            };
        }
        if self.may_send(r.rtcp, self.rtcp_trusted, limit) {
            Dest::To(r.rtcp, r.rtcp_mux)
        } else {
            Dest::Held(r.rtcp)
        }
    }

    /// Counts a datagram sent to this side (only the unheard ones count against the budget).
    pub(crate) fn sent(&mut self) {
        if !self.heard() {
            self.unheard_sent += 1;
        }
    }

    /// Whether a datagram from `src` could be taken: from the latched source, or one that may
    /// latch (or, behind NAT, take over a quiet latch). [`Peer::admit`] decides.
    pub(crate) fn acceptable(&self, src: SocketAddr, rtcp: bool) -> bool {
        let t = if rtcp { &self.rtcp } else { &self.rtp };
        if t.peer == Some(src) {
            return true;
        }
        let Some(r) = &self.remote else {
            return false;
        };
        let named = Some(src.ip()) == self.expect || (rtcp && src.ip() == r.rtcp.ip());
        match t.peer {
            None => named || (self.policy.behind_nat && self.policy.trusts(src.ip())),
            Some(_) => self.policy.behind_nat && (named || self.policy.trusts(src.ip())),
        }
    }

    /// Decides on a datagram from `src` at `now`: the first from an acceptable source latches;
    /// later ones must come from it, unless (behind NAT) it went quiet and a new acceptable
    /// source keeps sending.
    pub(crate) fn admit(
        &mut self,
        src: SocketAddr,
        rtcp: bool,
        on_rtcp_socket: bool,
        now: Instant,
    ) -> Admit {
        let ok = self.acceptable(src, rtcp);
        let t = if rtcp { &mut self.rtcp } else { &mut self.rtp };
        let outcome = match t.peer {
            Some(p) if p == src => {
                t.last = Some(now);
                t.candidate = None;
                return Admit::Taken;
            }
            _ if !ok => return Admit::Refused,
            None => Admit::Taken,
            Some(_) => {
                let quiet = t
                    .last
                    .is_none_or(|l| now.saturating_duration_since(l) >= RELATCH_QUIET);
                if !quiet {
                    // The latched source is alive: nobody takes its place.
                    t.candidate = None;
                    return Admit::Refused;
                }
                let n = match t.candidate {
                    Some((c, n)) if c == src => n + 1,
                    _ => 1,
                };
                if n < RELATCH_PACKETS {
                    t.candidate = Some((src, n));
                    return Admit::Refused;
                }
                Admit::Relatched
            }
        };
        *t = Track {
            peer: Some(src),
            last: Some(now),
            candidate: None,
        };
        if rtcp {
            self.rtcp_on_rtp = !on_rtcp_socket;
        }
        outcome
    }

    /// A restored call's source, latched in the last run and still forwarded by the kernel
    /// fast path (last heard `at`): latched again without waiting for a packet to reach us.
    pub(crate) fn latch_restored(&mut self, src: SocketAddr, at: Instant) {
        self.rtp = Track {
            peer: Some(src),
            last: Some(at),
            candidate: None,
        };
    }

    /// The kernel fast path forwarded the latched source's RTP up to `at`: it is not quiet.
    pub(crate) fn rtp_heard_at(&mut self, at: Instant) {
        if self.rtp.last.is_none_or(|l| l < at) {
            self.rtp.last = Some(at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sdp::Direction;

    const CARRIER: &str = "203.0.113.10";
    const NAT: &str = "203.0.113.11";
    const STRANGER: &str = "198.51.100.66";
    const VICTIM: &str = "192.0.2.99";

    fn addr(ip: &str, port: u16) -> SocketAddr {
        SocketAddr::new(ip.parse().expect("ip literal"), port)
    }

    fn remote(ip: &str, port: u16) -> Remote {
        Remote {
            rtp: addr(ip, port),
            rtcp: addr(ip, port + 1),
            rtcp_mux: false,
            direction: Direction::SendRecv,
            clock_rate: 8000,
        }
    }

    /// The carrier's policy: its trunk allows 203.0.113.0/28, signalling from CARRIER.
    fn policy(behind_nat: bool) -> PeerPolicy {
        PeerPolicy {
            networks: Arc::from(vec!["203.0.113.0/28".parse::<IpNet>().expect("cidr")]),
            behind_nat,
            signalling: Some(CARRIER.parse().expect("ip")),
        }
    }

    fn peer(sdp: Remote, behind_nat: bool) -> Peer {
        let mut p = Peer::default();
        p.set_remote(sdp, &policy(behind_nat));
        p
    }

    #[test]
    fn without_nat_only_the_sdps_ip_latches_and_the_latch_never_moves() {
        let mut p = peer(remote(CARRIER, 4000), false);
        let t0 = Instant::now();
        // Inside the allow-list but not the SDP's IP: refused without behindNat.
        assert_eq!(p.admit(addr(NAT, 5000), false, false, t0), Admit::Refused);
        assert_eq!(
            p.admit(addr(STRANGER, 5000), false, false, t0),
            Admit::Refused
        );
        assert_eq!(p.admit(addr(CARRIER, 4002), false, false, t0), Admit::Taken);
        // Long quiet, many packets: still no relatch.
        let later = t0 + Duration::from_secs(30);
        for _ in 0..10 {
            assert_eq!(
                p.admit(addr(CARRIER, 4004), false, false, later),
                Admit::Refused
            );
        }
        assert_eq!(
            p.rtp_dest(DEFAULT_UNHEARD_LIMIT),
            Dest::To(addr(CARRIER, 4002), true)
        );
    }

    #[test]
    fn behind_nat_a_source_outside_the_allow_list_never_latches() {
        let mut p = peer(remote("10.0.0.5", 4000), true);
        let t0 = Instant::now();
        for i in 0..100 {
            let at = t0 + Duration::from_millis(20 * i);
            assert_eq!(
                p.admit(addr(STRANGER, 5000), false, false, at),
                Admit::Refused
            );
        }
        assert_eq!(p.rtp_peer(), None);
        // The carrier's NAT (inside its allowedCidrs) latches; so would its SDP IP.
        assert_eq!(p.admit(addr(NAT, 6000), false, false, t0), Admit::Taken);
        assert_eq!(p.rtp_peer(), Some(addr(NAT, 6000)));
        let mut q = peer(remote("10.0.0.5", 4000), true);
        assert_eq!(
            q.admit(addr("10.0.0.5", 4000), false, false, t0),
            Admit::Taken,
            "the SDP's own IP latches"
        );
        // The signalling source latches even outside the networks.
        let mut r = Peer::default();
        let pol = PeerPolicy {
            networks: Arc::from(Vec::new()),
            behind_nat: true,
            signalling: Some(STRANGER.parse().expect("ip")),
        };
        r.set_remote(remote("10.0.0.5", 4000), &pol);
        assert_eq!(
            r.admit(addr(STRANGER, 7000), false, false, t0),
            Admit::Taken
        );
    }

    #[test]
    fn behind_nat_a_latch_moves_only_after_quiet_and_three_packets_in_a_row() {
        let mut p = peer(remote("10.0.0.5", 4000), true);
        let t0 = Instant::now();
        let first = addr(NAT, 6000);
        let moved = addr(NAT, 6002);
        assert_eq!(p.admit(first, false, false, t0), Admit::Taken);
        // While the latched source talks, another allowed one is refused however much it sends.
        for i in 1..=20u64 {
            let at = t0 + Duration::from_millis(20 * i);
            assert_eq!(p.admit(first, false, false, at), Admit::Taken);
            assert_eq!(p.admit(moved, false, false, at), Admit::Refused);
        }
        let last = t0 + Duration::from_millis(400);
        // Quiet for less than RELATCH_QUIET: still refused.
        let soon = last + Duration::from_millis(900);
        for _ in 0..5 {
            assert_eq!(p.admit(moved, false, false, soon), Admit::Refused);
        }
        // A stranger never takes over, even after quiet.
        let quiet = last + RELATCH_QUIET;
        for _ in 0..5 {
            assert_eq!(
                p.admit(addr(STRANGER, 1), false, false, quiet),
                Admit::Refused
            );
        }
        // Quiet long enough: two packets are not enough, the third relatches.
        assert_eq!(p.admit(moved, false, false, quiet), Admit::Refused);
        assert_eq!(p.admit(moved, false, false, quiet), Admit::Refused);
        assert_eq!(p.admit(moved, false, false, quiet), Admit::Relatched);
        assert_eq!(p.rtp_peer(), Some(moved));
        assert_eq!(p.rtp_dest(DEFAULT_UNHEARD_LIMIT), Dest::To(moved, true));
        // The old source is now the foreign one.
        assert_eq!(p.admit(first, false, false, quiet), Admit::Refused);
    }

    #[test]
    fn the_latched_source_sending_again_resets_a_would_be_successor() {
        let mut p = peer(remote("10.0.0.5", 4000), true);
        let t0 = Instant::now();
        let first = addr(NAT, 6000);
        let other = addr(NAT, 6002);
        assert_eq!(p.admit(first, false, false, t0), Admit::Taken);
        let quiet = t0 + RELATCH_QUIET;
        assert_eq!(p.admit(other, false, false, quiet), Admit::Refused);
        assert_eq!(p.admit(other, false, false, quiet), Admit::Refused);
        // The latched source is back: the count starts again and it is no longer quiet.
        assert_eq!(p.admit(first, false, false, quiet), Admit::Taken);
        assert_eq!(p.admit(other, false, false, quiet), Admit::Refused);
        // The kernel saw it later still: no takeover before another second of quiet.
        p.rtp_heard_at(quiet + Duration::from_millis(500));
        let t = quiet + Duration::from_millis(1200);
        for _ in 0..5 {
            assert_eq!(p.admit(other, false, false, t), Admit::Refused);
        }
        assert_eq!(p.rtp_peer(), Some(first));
    }

    #[test]
    fn an_sdp_address_outside_the_allow_list_is_held_until_it_speaks() {
        let mut p = peer(remote(VICTIM, 4000), false);
        assert_eq!(p.rtp_dest(u64::MAX), Dest::Held(addr(VICTIM, 4000)));
        assert_eq!(p.rtcp_dest(u64::MAX), Dest::Held(addr(VICTIM, 4001)));
        // The first packet from that address (the SDP's IP may latch) releases it.
        let from = addr(VICTIM, 4000);
        assert_eq!(p.admit(from, false, false, Instant::now()), Admit::Taken);
        assert_eq!(p.rtp_dest(0), Dest::To(from, true));
        // RTCP goes to the SDP's RTCP port on the IP that spoke.
        assert_eq!(p.rtcp_dest(0), Dest::To(addr(VICTIM, 4001), false));
        // A new SDP naming another unknown address holds again.
        p.set_remote(remote(VICTIM, 4100), &policy(false));
        assert_eq!(p.rtp_dest(u64::MAX), Dest::Held(addr(VICTIM, 4100)));
    }

    #[test]
    fn a_trusted_address_gets_at_most_the_unheard_budget_until_it_answers() {
        let mut p = peer(remote(CARRIER, 4000), false);
        let to = Dest::To(addr(CARRIER, 4000), true);
        for _ in 0..DEFAULT_UNHEARD_LIMIT {
            assert_eq!(p.rtp_dest(DEFAULT_UNHEARD_LIMIT), to);
            p.sent();
        }
        assert_eq!(
            p.rtp_dest(DEFAULT_UNHEARD_LIMIT),
            Dest::Held(addr(CARRIER, 4000))
        );
        assert_eq!(
            p.rtcp_dest(DEFAULT_UNHEARD_LIMIT),
            Dest::Held(addr(CARRIER, 4001))
        );
        // One RTCP packet from the peer is enough: it is heard, the budget no longer applies.
        let rr_from = addr(CARRIER, 4001);
        assert_eq!(p.admit(rr_from, true, true, Instant::now()), Admit::Taken);
        assert_eq!(p.rtp_dest(DEFAULT_UNHEARD_LIMIT), to);
        for _ in 0..1000 {
            p.sent();
        }
        assert_eq!(p.rtp_dest(DEFAULT_UNHEARD_LIMIT), to);
        assert_eq!(p.rtcp_dest(DEFAULT_UNHEARD_LIMIT), Dest::To(rr_from, false));
    }

    #[test]
    fn behind_nat_nothing_goes_to_the_sdp_address_before_the_peer_latched() {
        let mut p = peer(remote(CARRIER, 4000), true);
        assert_eq!(p.rtp_dest(u64::MAX), Dest::Held(addr(CARRIER, 4000)));
        let nat = addr(NAT, 6000);
        assert_eq!(p.admit(nat, false, false, Instant::now()), Admit::Taken);
        assert_eq!(p.rtp_dest(0), Dest::To(nat, true));
    }

    #[test]
    fn hold_sends_nowhere_and_keeps_the_latch() {
        let mut p = peer(remote(CARRIER, 4000), false);
        let src = addr(CARRIER, 4000);
        assert_eq!(p.admit(src, false, false, Instant::now()), Admit::Taken);
        let mut held = remote("0.0.0.0", 4000);
        held.rtcp = addr("0.0.0.0", 4001);
        p.set_remote(held, &policy(false));
        assert_eq!(p.rtp_dest(u64::MAX), Dest::Nowhere);
        assert_eq!(p.rtp_peer(), Some(src));
    }
}
