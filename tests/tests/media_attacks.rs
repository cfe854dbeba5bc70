//! Attacks on the media relay through the real edge, on loopback: the test is the carrier, the
//! platform and the attackers at once, with raw SIP agents (`ua`) and its own RTP sockets.
//!
//! - **RTP bleed**: sources spray the relay's carrier-side port from before the carrier's first
//!   packet — a stranger outside every trunk's allowedCidrs (127.0.0.66) and another tenant's
//!   allowed carrier (127.0.0.11, `beta/other`'s). With or without `media.behindNat` the real
//!   carrier gets the platform's audio and the sprayers get nothing (RFC 7362 §3).
//! - **Media reflection**: a carrier SDP whose `c=` names a silent victim outside the trunk's
//!   allowedCidrs: the victim gets nothing while the platform talks; the call record and the
//!   metrics show the held packets.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde_json::Value;
use trunkgate_tests::rtp::*;
use trunkgate_tests::ua::{Dialog, Ua};
use trunkgate_tests::*;

const CALLER: &str = "+6421555123";
const NUMBER: &str = "+6498879333";
/// Another tenant's carrier: allowed on `beta/other`, not on `acme/pacific`.
const OTHER_CARRIER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 11));
/// A host that never asked for media (outside `acme/pacific`'s allowedCidrs).
const VICTIM: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 77));
const WAIT: Duration = Duration::from_secs(2);
const QUIET: Duration = Duration::from_millis(300);

/// `acme/pacific` (the carrier at 127.0.0.10/32, `behindNat` as given) with its numbers, and
/// `beta/other` (127.0.0.11/32), another tenant's trunk; then an edge.
fn edge_with(lab: &Lab, platform: SocketAddr, behind_nat: bool) -> Edge {
    let mut trunk = Trunk::new("acme", "pacific", "127.0.0.10/32", platform);
    if behind_nat {
        trunk = trunk.behind_nat();
    }
    lab.write_config("acme-trunk.yaml", &trunk.yaml());
    lab.write_config(
        "acme-numbers.yaml",
        &Numbers::byoc("acme", "numbers", "pacific", &["+6498879300-+6498879399"]).yaml(),
    );
    lab.write_config(
        "beta-trunk.yaml",
        &Trunk::new("beta", "other", &format!("{OTHER_CARRIER}/32"), platform).yaml(),
    );
    Edge::start(lab, EdgeOptions::default())
}

/// The carrier calls NUMBER with `offer`, the platform answers with `answer`; returns both
/// dialogs and the edge's media addresses on each side.
fn answered_call(
    edge: &Edge,
    carrier: &mut Ua,
    platform: &mut Ua,
    offer: &str,
    answer: &str,
) -> (Dialog, SocketAddr, SocketAddr) {
    let (mut cd, tx) = carrier.invite(edge.public, &edge.public_uri(NUMBER), CALLER, offer);
    let invite = platform.expect_request("INVITE", WAIT);
    platform.accept(&invite, answer);
    let resp = carrier.final_response(&mut cd, &tx, WAIT);
    assert_eq!(resp.code(), Some(200), "answered\n{}", carrier.report());
    platform.expect_request("ACK", WAIT);
    let internal = sdp_rtp_addr(&invite.msg.body).expect("an SDP offer reaches the platform");
    let public = sdp_rtp_addr(&resp.body).expect("an SDP answer reaches the carrier");
    (cd, public, internal)
}

fn hang_up(carrier: &mut Ua, platform: &mut Ua, cd: &mut Dialog, edge: &Edge) -> Value {
    carrier.bye(cd);
    platform.answer_bye(WAIT);
    edge.wait_cdr("the call", |c| c["callee"] == NUMBER)
}

fn media_of<'a>(cdr: &'a Value, from: &str) -> &'a Value {
    cdr["media"]
        .as_array()
        .and_then(|m| m.iter().find(|e| e["from"] == from))
        .unwrap_or_else(|| panic!("no media entry from the {from} in the call record: {cdr}"))
}

/// Sends G.711 from each of `from` to `to` every 10 ms until stopped; counts what it sent.
struct Spray {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Spray {
    fn start(from: Vec<Arc<UdpSocket>>, to: SocketAddr) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let (s, n) = (stop.clone(), sent.clone());
        let thread = std::thread::spawn(move || {
            let mut seq = 0u16;
            // Bounded even if the test panics before `stop`: 30 s at most.
            while !s.load(Ordering::Relaxed) && seq < 3000 {
                for sock in &from {
                    if sock.send_to(&g711(seq, 0x66, 0), to).is_ok() {
                        n.fetch_add(1, Ordering::Relaxed);
                    }
                }
                seq += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        Self {
            stop,
            sent,
            thread: Some(thread),
        }
    }

    fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.sent.load(Ordering::Relaxed)
    }
}

impl Drop for Spray {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Sends `n` G.711 packets 20 ms apart.
fn talk(from: &UdpSocket, to: SocketAddr, first: u16, n: u16, ssrc: u32) {
    for seq in first..first + n {
        send(from, to, &g711(seq, ssrc, 0));
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn rtp_bleed(behind_nat: bool) {
    let lab = Lab::new(if behind_nat {
        "media_bleed_nat"
    } else {
        "media_bleed"
    });
    let mut carrier = Ua::bind("carrier", CARRIER, CALLER);
    let mut platform = Ua::bind("platform", PLATFORM, "platform");
    let edge = edge_with(&lab, platform.local, behind_nat);
    let c_rtp = RtpEnd::bind(CARRIER);
    let p_rtp = RtpEnd::bind(PLATFORM);
    let stranger = Arc::new(RtpEnd::socket(DENIED));
    let other = Arc::new(RtpEnd::socket(OTHER_CARRIER));
    let offer = sdp(CARRIER, c_rtp.addr.port(), &[PCMU], "");
    let answer = sdp(PLATFORM, p_rtp.addr.port(), &[PCMU], "");
    let (mut cd, public, internal) =
        answered_call(&edge, &mut carrier, &mut platform, &offer, &answer);

    // The sprayers start before the carrier's first packet and keep going throughout.
    let spray = Spray::start(vec![stranger.clone(), other.clone()], public);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        drain(&p_rtp.rtp, QUIET).is_empty(),
        "nothing of the sprayers' reaches the platform"
    );
    // The platform talks before the carrier has sent anything: the sprayers must not get it.
    talk(&p_rtp.rtp, internal, 0, 10, 8);
    // Then the carrier talks, and so does the platform again.
    talk(&c_rtp.rtp, public, 0, 10, 7);
    talk(&p_rtp.rtp, internal, 10, 25, 8);
    std::thread::sleep(Duration::from_millis(200));
    let sprayed = spray.stop();
    assert!(sprayed > 100, "the sprayers sent {sprayed}");

    let to_carrier = drain(&c_rtp.rtp, QUIET);
    let from_platform = to_carrier
        .iter()
        .filter(|(p, _)| p.len() == 172 && p[8..12] == 8u32.to_be_bytes())
        .count();
    // Without behindNat the platform's first 10 go to the carrier's (allowed) SDP address at
    // once; behind NAT they wait for the carrier's first packet.
    let want = if behind_nat { 25 } else { 35 };
    assert_eq!(
        from_platform, want,
        "the real carrier gets the platform's audio"
    );
    assert!(
        drain(&stranger, QUIET).is_empty(),
        "the stranger gets nothing"
    );
    assert!(
        drain(&other, QUIET).is_empty(),
        "another tenant's carrier gets nothing"
    );
    let to_platform = drain(&p_rtp.rtp, QUIET);
    assert!(
        to_platform
            .iter()
            .all(|(p, _)| p.len() >= 12 && p[8..12] == 7u32.to_be_bytes()),
        "the platform got only the carrier's RTP"
    );

    let cdr = hang_up(&mut carrier, &mut platform, &mut cd, &edge);
    let from_carrier = media_of(&cdr, "carrier");
    assert_eq!(from_carrier["packets"], 10, "{cdr}");
    let refused = from_carrier["unexpectedSourcePackets"]
        .as_u64()
        .unwrap_or(0);
    // Every sprayed packet that reached the edge was refused (loopback drops none, but a
    // packet still in flight when the call ended is not counted).
    assert!(
        refused + 10 >= sprayed && refused <= sprayed,
        "refused {refused} of {sprayed}: {cdr}"
    );
    let dropped = edge.metric(
        "trunkgate_edge_media_packets_dropped_total",
        &[("reason", "unexpected_source")],
    );
    assert!(dropped >= refused as f64, "metric {dropped} < {refused}");
    let log = edge.log_tail(300);
    assert_eq!(
        log.matches("media from an unexpected address").count(),
        1,
        "the first refused source is named once:\n{log}"
    );
}

/// Without `behindNat`: only the SDP's IP latches; the sprayers get nothing.
#[test]
fn sprayed_rtp_neither_latches_nor_gets_the_platforms_audio() {
    rtp_bleed(false);
}

/// With `behindNat`: a source outside the trunk's allowedCidrs (a stranger, another tenant's
/// carrier) cannot latch though it sent first; the real carrier gets the audio.
#[test]
fn behind_nat_sprayed_rtp_neither_latches_nor_gets_the_platforms_audio() {
    rtp_bleed(true);
}

/// A carrier SDP names a victim outside the trunk's allowedCidrs: while the platform talks for
/// three seconds the victim gets nothing; the record and the metrics count what was held.
#[test]
fn an_sdp_naming_a_silent_victim_reflects_nothing_at_it() {
    let lab = Lab::new("media_reflection");
    let mut carrier = Ua::bind("carrier", CARRIER, CALLER);
    let mut platform = Ua::bind("platform", PLATFORM, "platform");
    let edge = edge_with(&lab, platform.local, false);
    let victim = RtpEnd::bind(VICTIM);
    let p_rtp = RtpEnd::bind(PLATFORM);
    let offer = sdp(VICTIM, victim.addr.port(), &[PCMU], "");
    let answer = sdp(PLATFORM, p_rtp.addr.port(), &[PCMU], "");
    let (mut cd, _public, internal) =
        answered_call(&edge, &mut carrier, &mut platform, &offer, &answer);

    talk(&p_rtp.rtp, internal, 0, 150, 8);
    let rtcp = rtcp_rr(8);
    let odd = SocketAddr::new(internal.ip(), internal.port() + 1);
    send(&p_rtp.rtcp, odd, &rtcp);
    assert!(
        drain(&victim.rtp, QUIET).is_empty(),
        "the victim's RTP port gets nothing"
    );
    assert!(
        drain(&victim.rtcp, Duration::from_millis(50)).is_empty(),
        "nor its RTCP port"
    );
    let held = || {
        edge.metric(
            "trunkgate_edge_media_packets_dropped_total",
            &[("reason", "unconfirmed_destination")],
        )
    };
    assert_eventually!(held() == 151.0, WAIT, "got {}", held());

    let cdr = hang_up(&mut carrier, &mut platform, &mut cd, &edge);
    let from_platform = media_of(&cdr, "platform");
    assert_eq!(from_platform["packets"], 150, "{cdr}");
    assert_eq!(from_platform["heldPackets"], 151, "{cdr}");
    assert_eq!(
        from_platform["heldDestination"],
        victim.addr.to_string().as_str(),
        "{cdr}"
    );
    assert!(
        drain(&victim.rtp, Duration::from_millis(50)).is_empty(),
        "nothing arrived late either"
    );
}
