//! A call as a plain record, written when it is answered and after each in-dialog change, and
//! the call rebuilt from it by a restarted edge: its two dialogs (peers, tags, Contacts, route
//! sets, CSeqs), its trunk and numbers, its start and answer times, and its relay ports with
//! the addresses media went to. No socket or channel inside: a connection becomes an address
//! and a transport, dialled again when the call needs it.

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::call::b2bua::session_timer::SessionTimer;
use crate::call::{Call, Direction, Leg, Side};

/// Checkpoints as the store or the journal keeps them (JSON), parsed; one that does not parse
/// is logged and skipped.
pub fn read_all(checkpoints: impl IntoIterator<Item = String>) -> Vec<CallRecord> {
    checkpoints
        .into_iter()
        .filter_map(|json| match serde_json::from_str(&json) {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::warn!(error = %e, "a call checkpoint that cannot be read: skipped");
                None
            }
        })
        .collect()
}

/// A call's checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CallRecord {
    /// Leg A's tag (ours): unique, and it names the worker that owns the call.
    pub key: String,
    pub trunk: String,
    pub inbound: bool,
    pub a: LegRecord,
    pub b: LegRecord,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caller: Option<String>,
    pub callee: String,
    pub started_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answered_ms: Option<u64>,
    /// Its place in the fleet's concurrent calls (the store's member), kept by the restored
    /// call so that it counts once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub place: Option<String>,
    /// The relay's streams: `[public, internal]` ports and where each side's media went.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub media: Vec<StreamRecord>,
    /// Leg B's INVITE attempts, for the call's record.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attempts: Vec<crate::call::account::Tried>,
}

/// One dialog of the call.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LegRecord {
    pub public: bool,
    pub peer: SocketAddr,
    /// `UDP`, `TCP` or `TLS`.
    pub transport: String,
    pub call_id: String,
    pub local_tag: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_tag: Option<String>,
    pub local: String,
    pub remote: String,
    pub remote_target: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub route_set: Vec<String>,
    pub local_cseq: u32,
    pub invite_cseq: u32,
    /// Its RFC 4028 session timer, when one was negotiated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<SessionRecord>,
}

/// A leg's RFC 4028 session timer: its interval, who refreshes, and when (wall clock, so a
/// restarted edge refreshes or gives up on time).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionRecord {
    pub interval: u32,
    pub edge_refreshes: bool,
    pub due_ms: u64,
}

/// The two clocks at one moment: timers are `Instant`s in the process, wall-clock times in a
/// checkpoint.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    pub now: Instant,
    pub wall: SystemTime,
}

impl Clock {
    pub fn at(now: Instant) -> Self {
        Clock {
            now,
            wall: SystemTime::now(),
        }
    }

    fn wall_ms(&self, at: Instant) -> u64 {
        let wall = match at.checked_duration_since(self.now) {
            Some(ahead) => self.wall + ahead,
            None => self
                .wall
                .checked_sub(self.now.saturating_duration_since(at))
                .unwrap_or(UNIX_EPOCH),
        };
        ms(wall)
    }

    fn instant(&self, wall_ms: u64) -> Instant {
        let now_ms = ms(self.wall);
        if wall_ms >= now_ms {
            self.now + Duration::from_millis(wall_ms - now_ms)
        } else {
            // Already past: due now (a timer that fell due while no edge ran fires at once).
            self.now
        }
    }
}

/// One relayed stream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StreamRecord {
    /// The relay's RTP ports, `[carrier side, platform side]`.
    pub ports: [u16; 2],
    /// Where each side's media comes from (latched) or was offered, `[carrier, platform]`.
    pub remotes: [Option<SocketAddr>; 2],
    /// SRTP on the carrier leg: the keys and how far each direction's context has gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub srtp: Option<SrtpRecord>,
}

/// A stream's SRTP on the carrier leg. The keys are written as `a=crypto` values (RFC 4568
/// §9.1): a store that holds checkpoints holds the calls' media keys, so it must be as private
/// as the edge (password, TLS; the journal file is the edge's own).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SrtpRecord {
    pub peer: String,
    pub ours: String,
    /// How far each direction went (SSRC, rollover counter, highest sequence number).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub received: Option<trunkgate_media::srtp::Progress>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent: Option<trunkgate_media::srtp::Progress>,
    #[serde(default)]
    pub srtcp_sent: u64,
}

impl SrtpRecord {
    pub fn of(s: &trunkgate_media::SrtpState) -> Self {
        use trunkgate_media::srtp::Crypto;
        let value = |key: &trunkgate_media::srtp::Key| {
            Crypto {
                tag: 1,
                key: key.clone(),
            }
            .to_value()
        };
        SrtpRecord {
            peer: value(&s.peer),
            ours: value(&s.ours),
            received: s.received,
            sent: s.sent,
            srtcp_sent: s.srtcp_sent,
        }
    }

    /// The state again; an error names what in the record is unusable.
    pub fn state(&self) -> Result<trunkgate_media::SrtpState, String> {
        use trunkgate_media::srtp::Crypto;
        let key = |v: &str| {
            Crypto::parse(v)
                .map(|c| c.key)
                .map_err(|e| format!("SRTP key in the checkpoint: {e}"))
        };
        Ok(trunkgate_media::SrtpState {
            peer: key(&self.peer)?,
            ours: key(&self.ours)?,
            received: self.received,
            sent: self.sent,
            srtcp_sent: self.srtcp_sent,
        })
    }
}

/// CSeqs a restored leg skips: requests it sent after its last checkpoint used some.
pub const CSEQ_GAP: u32 = 100;

fn ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

pub fn time_of(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

impl LegRecord {
    pub fn of(l: &Leg, clock: Clock) -> Self {
        LegRecord {
            public: l.side == Side::Public,
            peer: l.peer.addr(),
            transport: l.peer.transport().to_string(),
            call_id: l.call_id.clone(),
            local_tag: l.local_tag.clone(),
            remote_tag: l.remote_tag.clone(),
            local: l.local.clone(),
            remote: l.remote.clone(),
            remote_target: l.remote_target.clone(),
            route_set: l.route_set.clone(),
            local_cseq: l.local_cseq,
            invite_cseq: l.invite_cseq,
            session: l.session.map(|t| SessionRecord {
                interval: t.interval,
                edge_refreshes: t.edge_refreshes,
                due_ms: clock.wall_ms(t.due),
            }),
        }
    }

    pub fn side(&self) -> Side {
        if self.public {
            Side::Public
        } else {
            Side::Internal
        }
    }

    pub fn transport(&self) -> trunkgate_crds::Transport {
        match self.transport.as_str() {
            "TCP" => trunkgate_crds::Transport::Tcp,
            "TLS" => trunkgate_crds::Transport::Tls,
            _ => trunkgate_crds::Transport::Udp,
        }
    }

    /// The leg again, on `peer` (its link re-made), its CSeq moved past what it may have used,
    /// its session timer due when it was.
    pub fn leg(&self, peer: crate::transport::Link, clock: Clock) -> Leg {
        Leg {
            side: self.side(),
            peer,
            call_id: self.call_id.clone(),
            local_tag: self.local_tag.clone(),
            remote_tag: self.remote_tag.clone(),
            local: self.local.clone(),
            remote: self.remote.clone(),
            remote_target: self.remote_target.clone(),
            route_set: self.route_set.clone(),
            local_cseq: self.local_cseq.saturating_add(CSEQ_GAP),
            invite_cseq: self.invite_cseq,
            awaiting_ack: None,
            reinvite_cseq: None,
            session: self.session.map(|t| SessionTimer {
                interval: t.interval,
                edge_refreshes: t.edge_refreshes,
                due: clock.instant(t.due_ms),
            }),
        }
    }
}

impl CallRecord {
    /// The checkpoint of `c`, with its relay's `media` streams.
    pub fn of(c: &Call, media: Vec<StreamRecord>, clock: Clock) -> Self {
        CallRecord {
            key: c.a.local_tag.clone(),
            trunk: c.trunk_id().to_string(),
            inbound: c.direction == Direction::Inbound,
            a: LegRecord::of(&c.a, clock),
            b: LegRecord::of(&c.b, clock),
            caller: c.caller.map(|n| n.to_string()),
            callee: c.callee.to_string(),
            started_ms: ms(c.started),
            answered_ms: c.answered.map(ms),
            place: c
                .slot
                .as_ref()
                .and_then(|s| s.fleet_member())
                .map(str::to_string),
            media,
            attempts: c.tried.clone(),
        }
    }

    pub fn direction(&self) -> Direction {
        if self.inbound {
            Direction::Inbound
        } else {
            Direction::Outbound
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leg() -> LegRecord {
        LegRecord {
            public: true,
            peer: "203.0.113.5:5060".parse().expect("addr"),
            transport: "UDP".into(),
            call_id: "c1@carrier".into(),
            local_tag: "tg00aa".into(),
            remote_tag: Some("c-1".into()),
            local: "<sip:+6498879333@198.51.100.1>".into(),
            remote: "<sip:+6421555123@carrier>".into(),
            remote_target: "sip:+6421555123@203.0.113.5:5060".into(),
            route_set: vec!["<sip:203.0.113.9;lr>".into()],
            local_cseq: 3,
            invite_cseq: 1,
            session: Some(SessionRecord {
                interval: 1800,
                edge_refreshes: true,
                due_ms: 1_800_000_900_000,
            }),
        }
    }

    #[test]
    fn a_record_survives_json_and_a_restored_leg_skips_cseqs() {
        let r = CallRecord {
            key: "tg00aa".into(),
            trunk: "acme/pacific".into(),
            inbound: true,
            a: leg(),
            b: LegRecord {
                public: false,
                transport: "TCP".into(),
                ..leg()
            },
            caller: Some("+6421555123".into()),
            callee: "+6498879333".into(),
            started_ms: 1_800_000_000_000,
            answered_ms: Some(1_800_000_001_000),
            place: Some("edge-0:1a2b3c4d:7".into()),
            attempts: vec![crate::call::account::Tried {
                trunk: "acme/pacific".into(),
                target: "sbc1.pacific.example".into(),
                address: Some("203.0.113.5:5060".parse().expect("addr")),
                chosen_by: crate::call::account::ChosenBy::Priority,
                rate: None,
                score: None,
                status: Some(200),
                failure: None,
                pdd_ms: Some(1800),
                since: None,
                target_index: None,
            }],
            media: vec![StreamRecord {
                ports: [20000, 21000],
                remotes: [Some("203.0.113.5:40000".parse().expect("addr")), None],
                srtp: Some(SrtpRecord::of(&trunkgate_media::SrtpState {
                    peer: trunkgate_media::srtp::Key::random(
                        trunkgate_media::Suite::AesCm128HmacSha1_80,
                    ),
                    ours: trunkgate_media::srtp::Key::random(
                        trunkgate_media::Suite::AesCm128HmacSha1_80,
                    ),
                    received: Some(trunkgate_media::srtp::Progress {
                        ssrc: 7,
                        roc: 1,
                        seq: 300,
                    }),
                    sent: None,
                    srtcp_sent: 4,
                })),
            }],
        };
        let text = serde_json::to_string(&r).expect("json");
        let back: CallRecord = serde_json::from_str(&text).expect("parsed");
        assert_eq!(back, r);
        let srtp = back.media[0].srtp.as_ref().expect("srtp");
        assert_eq!(SrtpRecord::of(&srtp.state().expect("usable")), *srtp);
        assert_eq!(back.b.transport(), trunkgate_crds::Transport::Tcp);
        // 100 s after the answer: the refresh is due 800 s from now.
        let now = Instant::now();
        let clock = Clock {
            now,
            wall: time_of(1_800_000_100_000),
        };
        let restored = back.a.leg(crate::transport::Link::Udp(back.a.peer), clock);
        assert_eq!(restored.local_cseq, 3 + CSEQ_GAP);
        let timer = restored.session.expect("the session timer");
        assert_eq!(timer.due - now, Duration::from_secs(800));
        assert!(timer.edge_refreshes);
        assert_eq!(LegRecord::of(&restored, clock).session, back.a.session);
        // Fallen due while no edge ran: due at once.
        let late = Clock {
            now,
            wall: time_of(1_800_001_000_000),
        };
        let timer = back
            .a
            .leg(crate::transport::Link::Udp(back.a.peer), late)
            .session;
        assert_eq!(timer.map(|t| t.due), Some(now));
        assert_eq!(restored.side, Side::Public);
        assert_eq!(time_of(back.started_ms), time_of(1_800_000_000_000));
    }
}
