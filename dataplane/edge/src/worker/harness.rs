//! A worker without sockets, for unit tests of the call path: datagrams go in through
//! `on_datagram`, time moves by hand, and what the worker asks its runtime to send comes back
//! parsed. No socket, thread or clock is involved.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use trunkgate_crds::{CarrierTrunk, NumberOwnership, Secrets, compile};
use trunkgate_sip::SipMessage;

use super::{Output, Shared, Worker};
use crate::call::Side;
use crate::config::Runtime;
use crate::config::settings::Settings;
use crate::metrics::Metrics;

/// The carrier (inside acme/pacific's 203.0.113.0/28).
pub const CARRIER: &str = "203.0.113.5:5060";
/// The platform, where inbound calls go.
pub const PLATFORM: &str = "192.0.2.50:5060";
/// The edge's two addresses.
pub const PUBLIC: &str = "198.51.100.1:5060";
pub const INTERNAL: &str = "10.0.0.1:5080";
/// The number acme owns, and a caller.
pub const NUMBER: &str = "+6498879333";
pub const CALLER: &str = "+6421555123";

/// One message the worker sent.
pub struct Sent {
    pub side: Side,
    pub to: SocketAddr,
    pub text: String,
    pub msg: SipMessage,
}

impl Sent {
    pub fn code(&self) -> Option<u16> {
        match &self.msg {
            SipMessage::Response(r) => Some(r.status_code.code()),
            _ => None,
        }
    }
    pub fn method(&self) -> Option<String> {
        match &self.msg {
            SipMessage::Request(r) => Some(r.method.to_string()),
            _ => None,
        }
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        match &self.msg {
            SipMessage::Request(r) => crate::sip::msg::header(r, name),
            SipMessage::Response(r) => crate::sip::msg::header(r, name),
            SipMessage::Extension(_) => None,
        }
    }
    /// The text of a response to this request: its Via, From, To (with `to_tag`), Call-ID and
    /// CSeq, and a Contact at `contact`.
    pub fn answer(&self, code: u16, to_tag: &str, contact: &str, extra: &str) -> String {
        let SipMessage::Request(r) = &self.msg else {
            panic!("answer to a response: {}", self.text);
        };
        let mut s = format!(
            "SIP/2.0 {code} {}\r\n",
            crate::sip::message::reason_phrase(code)
        );
        for v in crate::sip::msg::headers(r, "Via") {
            s.push_str(&format!("Via: {v}\r\n"));
        }
        let to = crate::sip::msg::header(r, "To").unwrap_or_default();
        let to = if crate::sip::msg::header_param(to, "tag").is_some() {
            to.to_string()
        } else {
            format!("{to};tag={to_tag}")
        };
        for (name, value) in [
            (
                "From",
                crate::sip::msg::header(r, "From").unwrap_or_default(),
            ),
            ("To", to.as_str()),
            (
                "Call-ID",
                crate::sip::msg::header(r, "Call-ID").unwrap_or_default(),
            ),
            (
                "CSeq",
                crate::sip::msg::header(r, "CSeq").unwrap_or_default(),
            ),
        ] {
            s.push_str(&format!("{name}: {value}\r\n"));
        }
        s.push_str(&format!(
            "Contact: <sip:{contact}>\r\n{extra}Content-Length: 0\r\n\r\n"
        ));
        s
    }
}

/// A worker on a snapshot of the given objects.
pub struct Harness {
    pub w: Worker,
    /// Outputs other than sends (lookups, dials, hand-offs), described.
    pub others: Vec<String>,
    /// Claims on the fleet's limits the worker asked for, not yet answered (`answer_claim`).
    pub claims: Vec<(u64, crate::fleet::ClaimRequest)>,
}

/// acme/pacific: carrier 203.0.113.0/28, delivering to [`PLATFORM`], no RTP relay; it owns
/// [`NUMBER`].
pub fn pacific() -> CarrierTrunk {
    no_relay(CarrierTrunk::test("acme", "pacific").with_destination(&format!("sip:{PLATFORM}")))
}

pub fn numbers(trunk: &str) -> NumberOwnership {
    NumberOwnership::test("acme", "numbers", trunk, &[NUMBER])
}

/// The trunk with its SDP passed through (the harness has no relay).
pub fn no_relay(mut t: CarrierTrunk) -> CarrierTrunk {
    t.spec.media =
        Some(serde_json::from_value(serde_json::json!({"relay": false})).expect("media"));
    t
}

impl Harness {
    pub fn new(trunks: &[CarrierTrunk], numbers: &[NumberOwnership], secrets: &Secrets) -> Self {
        Self::with_flags(trunks, numbers, secrets, &[])
    }

    /// With extra edge flags (`--failover-seconds 2`, ...).
    pub fn with_flags(
        trunks: &[CarrierTrunk],
        numbers: &[NumberOwnership],
        secrets: &Secrets,
        flags: &[&str],
    ) -> Self {
        let mut args = vec![
            "trunkgate-edge",
            "--public-sip",
            PUBLIC,
            "--internal-sip",
            INTERNAL,
            "--cdr",
            "false",
            // The platform's network ([`PLATFORM`]).
            "--platform-cidrs",
            "192.0.2.0/24",
        ];
        args.extend_from_slice(flags);
        let settings = <Settings as clap::Parser>::try_parse_from(args).expect("flags");
        let metrics = Metrics::new();
        let tls = crate::transport::tls::Tls::load(None, None, None).expect("no TLS files to read");
        let shared = Shared::new(
            settings,
            metrics.clone(),
            Vec::new(),
            100,
            None,
            Arc::new(tls),
        );
        let c = compile(trunks, numbers, secrets, None);
        let problems: Vec<_> = c.problems().collect();
        assert!(problems.is_empty(), "the fixture compiles: {problems:?}");
        shared
            .runtime
            .store(Arc::new(Runtime::build(c.config, None, &metrics)));
        Harness {
            w: Worker::new(0, Arc::new(shared), None),
            others: Vec::new(),
            claims: Vec::new(),
        }
    }

    /// A datagram from `from` on `side`; what the worker sent in answer.
    pub fn input(&mut self, side: Side, from: &str, text: &str) -> Vec<Sent> {
        let src = from.parse().expect("an address");
        self.w.on_datagram(side, src, text.as_bytes());
        self.take()
    }

    pub fn carrier_sends(&mut self, text: &str) -> Vec<Sent> {
        self.input(Side::Public, CARRIER, text)
    }

    pub fn platform_sends(&mut self, text: &str) -> Vec<Sent> {
        self.input(Side::Internal, PLATFORM, text)
    }

    /// Moves the clock by `d` in steps of 100 ms, firing timers; everything sent meanwhile.
    pub fn advance(&mut self, d: Duration) -> Vec<Sent> {
        let end = self.w.now + d;
        let mut sent = Vec::new();
        while self.w.now < end {
            self.w.now = (self.w.now + Duration::from_millis(100)).min(end);
            self.w.fire_timers();
            sent.extend(self.take());
        }
        sent
    }

    /// The outputs so far: sends parsed, the rest described in `others`.
    pub fn take(&mut self) -> Vec<Sent> {
        let mut sent = Vec::new();
        for o in self.w.sip.outputs() {
            match o {
                Output::Send { side, dest, bytes } => {
                    let msg = trunkgate_sip::parse(&bytes).expect("the worker sends valid SIP");
                    sent.push(Sent {
                        side,
                        to: dest.addr(),
                        text: String::from_utf8_lossy(&bytes).into_owned(),
                        msg,
                    });
                }
                Output::Resolve { hop, .. } => self.others.push(format!("resolve {}", hop.host)),
                Output::Dial(d) => self.others.push(format!("dial {}", d.addr)),
                Output::HandOff { to, .. } => self.others.push(format!("hand off to {to}")),
                Output::Claim { call, req } => {
                    self.others.push(format!("claim {}", req.trunk));
                    self.claims.push((call, req));
                }
            }
        }
        sent
    }

    /// An inbound call `id` to [`NUMBER`] with `invite_extra` headers, answered 200 by the
    /// platform with `answer_extra` and ACKed by the carrier: (the 200 the carrier got, the
    /// INVITE the platform got).
    pub fn answered_with(
        &mut self,
        id: &str,
        invite_extra: &str,
        answer_extra: &str,
    ) -> (Sent, Sent) {
        let mut sent = self.carrier_sends(&carrier_invite(id, NUMBER, invite_extra));
        let invite = sent.pop().expect("an INVITE to the platform");
        let ok = self
            .platform_sends(&invite.answer(200, "p1", PLATFORM, answer_extra))
            .remove(0);
        self.carrier_sends(&carrier_in_dialog(id, "ACK", 1, &ok, &format!("{id}ack")));
        (ok, invite)
    }

    /// The store's answer to the oldest claim; what the worker sent then.
    pub fn answer_claim(&mut self, verdict: crate::fleet::Verdict) -> Vec<Sent> {
        assert!(!self.claims.is_empty(), "no claim to answer");
        let (call, _) = self.claims.remove(0);
        self.w.on_event(super::Event::Claimed { call, verdict });
        self.take()
    }

    /// The metric `name` with `labels`, summed over other labels.
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let mut buf = Vec::new();
        let families = self.w.shared.metrics.registry.gather();
        prometheus::Encoder::encode(&prometheus::TextEncoder::new(), &families, &mut buf)
            .expect("metrics encode");
        let text = String::from_utf8_lossy(&buf);
        text.lines()
            .filter(|l| {
                l.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
            })
            .filter(|l| {
                labels
                    .iter()
                    .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

/// A carrier's INVITE to `number` for call `id`, with a small SDP offer.
pub fn carrier_invite(id: &str, number: &str, extra: &str) -> String {
    let sdp = "v=0\r\no=- 1 1 IN IP4 203.0.113.5\r\ns=-\r\nc=IN IP4 203.0.113.5\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";
    format!(
        "INVITE sip:{number}@{PUBLIC} SIP/2.0\r\nVia: SIP/2.0/UDP {CARRIER};branch=z9hG4bK-{id};rport\r\nMax-Forwards: 70\r\nFrom: <sip:{CALLER}@carrier.example>;tag=c-{id}\r\nTo: <sip:{number}@{PUBLIC}>\r\nCall-ID: {id}@carrier.example\r\nCSeq: 1 INVITE\r\nContact: <sip:{CALLER}@{CARRIER}>\r\n{extra}Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    )
}

/// A request inside the dialog an INVITE from the carrier made, answered by `ok`.
pub fn carrier_in_dialog(id: &str, method: &str, cseq: u32, ok: &Sent, branch: &str) -> String {
    let to = ok.header("To").unwrap_or_default();
    let target = ok
        .header("Contact")
        .map(crate::sip::msg::uri_of)
        .unwrap_or_default()
        .to_string();
    format!(
        "{method} {target} SIP/2.0\r\nVia: SIP/2.0/UDP {CARRIER};branch=z9hG4bK-{branch};rport\r\nMax-Forwards: 70\r\nFrom: <sip:{CALLER}@carrier.example>;tag=c-{id}\r\nTo: {to}\r\nCall-ID: {id}@carrier.example\r\nCSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n"
    )
}

/// The sends to `side`.
pub fn on(sent: &[Sent], side: Side) -> Vec<&Sent> {
    sent.iter().filter(|s| s.side == side).collect()
}

/// Short descriptions ("INVITE", "180") of what went to `side`.
pub fn summary(sent: &[Sent], side: Side) -> Vec<String> {
    on(sent, side)
        .iter()
        .map(|s| {
            s.method()
                .unwrap_or_else(|| s.code().unwrap_or(0).to_string())
        })
        .collect()
}
