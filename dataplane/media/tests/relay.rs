//! The relay on loopback against fake peers: a carrier on 127.0.0.20, the platform on
//! 127.0.0.21, a stranger on 127.0.0.66. Every wait is bounded (`eventually`), and each test
//! owns its own port slice.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use trunkgate_media::{MediaConfig, MediaEngine, MediaError, MediaEvent, Sdp, SessionId, Side};

mod common;
use common::{
    CARRIER, PLATFORM, WAIT, carrier_policy, collect, engine, from, ip, peer, platform_policy,
};

const STRANGER: &str = "127.0.0.66";

fn sdp_for(addr: SocketAddr, extra: &str) -> Sdp {
    let body = format!(
        "v=0\r\no=peer 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n\
         a=rtpmap:101 telephone-event/8000\r\n{extra}",
        ip = addr.ip(),
        port = addr.port()
    );
    Sdp::parse(body.as_bytes()).expect("test SDP parses")
}

fn rtp(seq: u16, pt: u8, marker: bool, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x80, pt | if marker { 0x80 } else { 0 }];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    p.extend_from_slice(&0x1234_5678u32.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

/// RFC 4733 §2.3 event payload: event, E/R/volume, duration.
fn dtmf(seq: u16, digit: u8, end: bool) -> Vec<u8> {
    rtp(
        seq,
        101,
        !end,
        &[digit, if end { 0x8a } else { 0x0a }, 0x03, 0x20],
    )
}

/// A call set up as the B2BUA would: offer from the carrier, answer from the platform.
struct Call {
    s: SessionId,
    carrier_rtp: UdpSocket,
    platform_rtp: UdpSocket,
    /// The relay's address on each side.
    public: SocketAddr,
    internal: SocketAddr,
}

fn call(m: &mut MediaEngine, carrier_extra: &str, platform_extra: &str, nat: bool) -> Call {
    call_id(m, 7, carrier_extra, platform_extra, nat)
}

fn call_id(
    m: &mut MediaEngine,
    id: u64,
    carrier_extra: &str,
    platform_extra: &str,
    nat: bool,
) -> Call {
    let carrier_rtp = peer(CARRIER);
    let platform_rtp = peer(PLATFORM);
    let s = m.open(id, 1).expect("open");
    let mut offer = sdp_for(carrier_rtp.local_addr().expect("addr"), carrier_extra);
    m.relay_sdp(s, Side::Public, &mut offer, &carrier_policy(nat))
        .expect("offer");
    let internal = m.local(s, Side::Internal, 0).expect("internal local");
    assert_eq!(offer.remote(0).expect("rewritten offer").rtp, internal);
    let mut answer = sdp_for(platform_rtp.local_addr().expect("addr"), platform_extra);
    m.relay_sdp(s, Side::Internal, &mut answer, &platform_policy())
        .expect("answer");
    let public = m.local(s, Side::Public, 0).expect("public local");
    assert_eq!(answer.remote(0).expect("rewritten answer").rtp, public);
    Call {
        s,
        carrier_rtp,
        platform_rtp,
        public,
        internal,
    }
}

#[test]
fn relays_rtp_both_ways_unchanged_with_latching_dtmf_and_counters() {
    let mut m = engine((31000, 31099));
    let c = call(&mut m, "", "", false);
    // The carrier sends from a port other than the one in its SDP: symmetric latching must
    // send the platform's media back to where the carrier's media came from.
    let carrier_src = peer(CARRIER);
    let to_platform: Vec<Vec<u8>> = (0..50u16)
        .map(|i| match i {
            20 => dtmf(i, 5, false),
            21 => dtmf(i, 5, true),
            _ => rtp(i, 0, false, &[i as u8; 160]),
        })
        .collect();
    for p in &to_platform {
        carrier_src.send_to(p, c.public).expect("send");
    }
    let got = collect(&mut m, &c.platform_rtp, 50, WAIT);
    assert_eq!(got, to_platform, "carrier → platform, byte for byte");

    // The platform drops five sequence numbers on purpose: 50 sent, 55 expected.
    let to_carrier: Vec<Vec<u8>> = (0..55u16)
        .filter(|i| i % 11 != 3)
        .map(|i| rtp(1000 + i, 0, false, &[0xd5; 160]))
        .collect();
    assert_eq!(to_carrier.len(), 50);
    for p in &to_carrier {
        c.platform_rtp.send_to(p, c.internal).expect("send");
    }
    let got = collect(&mut m, &carrier_src, 50, WAIT);
    assert_eq!(got, to_carrier, "platform → carrier's latched port");
    assert!(
        c.carrier_rtp.recv(&mut [0u8; 64]).is_err(),
        "nothing to the SDP port"
    );

    let stats = m.stats(c.s);
    let up = from(&stats, Side::Public);
    assert_eq!(
        (up.packets, up.forwarded, up.lost, up.expected),
        (50, 50, 0, 50)
    );
    assert_eq!(up.bytes, 48 * 172 + 2 * 16);
    assert_eq!(up.latched, carrier_src.local_addr().ok());
    let down = from(&stats, Side::Internal);
    assert_eq!(
        (down.packets, down.forwarded, down.lost, down.expected),
        (50, 50, 5, 55)
    );
    assert_eq!(down.latched, c.platform_rtp.local_addr().ok());
    assert!(down.mos.is_some_and(|mos| mos < up.mos.unwrap_or(0.0)));
    assert_eq!(m.counters().forwarded, 100);
}

#[test]
fn strangers_are_not_relayed_even_when_the_carrier_is_behind_nat() {
    let mut m = engine((31100, 31199));
    let c = call(&mut m, "", "", false);
    let stranger = peer(STRANGER);
    stranger
        .send_to(&rtp(1, 0, false, b"spoofed"), c.public)
        .expect("send");
    assert!(collect(&mut m, &c.platform_rtp, 1, Duration::from_millis(200)).is_empty());
    // Once the carrier latched, another port of the carrier's own IP is refused too.
    c.carrier_rtp
        .send_to(&rtp(2, 0, false, b"real"), c.public)
        .expect("send");
    assert_eq!(collect(&mut m, &c.platform_rtp, 1, WAIT).len(), 1);
    peer(CARRIER)
        .send_to(&rtp(3, 0, false, b"other port"), c.public)
        .expect("send");
    assert!(collect(&mut m, &c.platform_rtp, 1, Duration::from_millis(200)).is_empty());
    assert_eq!(from(&m.stats(c.s), Side::Public).foreign, 2);

    // behindNat: a source outside the carrier's allow-list never latches (RFC 7362 §3)...
    let c = call(&mut m, "", "", true);
    for i in 0..5 {
        stranger
            .send_to(&rtp(i, 0, false, b"spray"), c.public)
            .expect("send");
    }
    assert!(collect(&mut m, &c.platform_rtp, 1, Duration::from_millis(200)).is_empty());
    // ...while another port of the carrier's (its NAT's outside port) does.
    let natted = peer(CARRIER);
    natted
        .send_to(&rtp(1, 0, false, b"natted"), c.public)
        .expect("send");
    assert_eq!(collect(&mut m, &c.platform_rtp, 1, WAIT).len(), 1);
    c.platform_rtp
        .send_to(&rtp(1, 0, false, b"back"), c.internal)
        .expect("send");
    assert_eq!(collect(&mut m, &natted, 1, WAIT).len(), 1);
    assert!(collect(&mut m, &stranger, 1, Duration::from_millis(200)).is_empty());
    let up = from(&m.stats(c.s), Side::Public);
    assert_eq!(
        (up.foreign, up.first_foreign),
        (5, stranger.local_addr().ok())
    );
}

/// behindNat: the latch moves to a new port of the carrier's only once the latched one has been
/// quiet for a second and the new one sent three packets in a row.
#[test]
fn behind_nat_the_latch_moves_only_after_the_latched_source_went_quiet() {
    let mut m = engine((33000, 33099));
    let c = call(&mut m, "", "", true);
    let first = peer(CARRIER);
    let rebound = peer(CARRIER);
    first
        .send_to(&rtp(1, 0, false, b"a"), c.public)
        .expect("send");
    assert_eq!(collect(&mut m, &c.platform_rtp, 1, WAIT).len(), 1);
    // While the first one is alive, the other is refused.
    for i in 0..3 {
        rebound
            .send_to(&rtp(10 + i, 0, false, b"b"), c.public)
            .expect("send");
    }
    assert!(collect(&mut m, &c.platform_rtp, 1, Duration::from_millis(200)).is_empty());
    std::thread::sleep(Duration::from_millis(1100));
    for i in 0..3 {
        rebound
            .send_to(&rtp(20 + i, 0, false, b"b"), c.public)
            .expect("send");
    }
    // The third packet relatches and is relayed; the two before it were refused.
    assert_eq!(
        collect(&mut m, &c.platform_rtp, 2, Duration::from_millis(500)).len(),
        1
    );
    c.platform_rtp
        .send_to(&rtp(1, 0, false, b"back"), c.internal)
        .expect("send");
    assert_eq!(collect(&mut m, &rebound, 1, WAIT).len(), 1);
    assert!(collect(&mut m, &first, 1, Duration::from_millis(100)).is_empty());
    let up = from(&m.stats(c.s), Side::Public);
    assert_eq!(up.latched, rebound.local_addr().ok());
    assert_eq!(up.foreign, 5);
}

/// An SDP naming an address outside its side's allow-list gets nothing until that address
/// sends (comedia); the held packets are counted with the address.
#[test]
fn an_sdp_address_outside_the_allow_list_is_held_until_it_sends() {
    let mut m = engine((33100, 33199));
    let victim = peer(STRANGER);
    let platform_rtp = peer(PLATFORM);
    let s = m.open(1, 1).expect("open");
    let mut offer = sdp_for(victim.local_addr().expect("addr"), "");
    m.relay_sdp(s, Side::Public, &mut offer, &carrier_policy(false))
        .expect("offer");
    let mut answer = sdp_for(platform_rtp.local_addr().expect("addr"), "");
    m.relay_sdp(s, Side::Internal, &mut answer, &platform_policy())
        .expect("answer");
    let internal = m.local(s, Side::Internal, 0).expect("local");
    let public = m.local(s, Side::Public, 0).expect("local");
    for i in 0..20 {
        platform_rtp
            .send_to(&rtp(i, 0, false, b"p"), internal)
            .expect("send");
    }
    assert!(collect(&mut m, &victim, 1, Duration::from_millis(300)).is_empty());
    let down = from(&m.stats(s), Side::Internal);
    assert_eq!(
        (
            down.packets,
            down.forwarded,
            down.held,
            down.held_destination
        ),
        (20, 0, 20, victim.local_addr().ok())
    );
    assert_eq!(m.counters().held, 20);
    // The address itself speaks: the SDP's IP may latch, and from then on it gets media.
    victim
        .send_to(&rtp(1, 0, false, b"hello"), public)
        .expect("send");
    assert_eq!(collect(&mut m, &platform_rtp, 1, WAIT).len(), 1);
    platform_rtp
        .send_to(&rtp(21, 0, false, b"p"), internal)
        .expect("send");
    assert_eq!(collect(&mut m, &victim, 1, WAIT).len(), 1);
}

/// Even an allowed SDP address gets at most `unheard_limit` datagrams until it sends one back.
#[test]
fn a_silent_allowed_peer_gets_at_most_the_unheard_limit() {
    let lo = ip("127.0.0.1");
    let mut cfg = MediaConfig::new(lo, lo, (33200, 33299));
    cfg.unheard_limit = 10;
    let mut m = MediaEngine::new(cfg).expect("engine");
    let c = call(&mut m, "", "", false);
    for i in 0..15 {
        c.platform_rtp
            .send_to(&rtp(i, 0, false, b"p"), c.internal)
            .expect("send");
    }
    assert_eq!(
        collect(&mut m, &c.carrier_rtp, 15, Duration::from_millis(300)).len(),
        10
    );
    let down = from(&m.stats(c.s), Side::Internal);
    assert_eq!((down.forwarded, down.held), (10, 5));
    // One packet back and the direction flows again, without a bound.
    c.carrier_rtp
        .send_to(&rtp(1, 0, false, b"c"), c.public)
        .expect("send");
    assert_eq!(collect(&mut m, &c.platform_rtp, 1, WAIT).len(), 1);
    for i in 15..35 {
        c.platform_rtp
            .send_to(&rtp(i, 0, false, b"p"), c.internal)
            .expect("send");
    }
    assert_eq!(collect(&mut m, &c.carrier_rtp, 20, WAIT).len(), 20);
}

#[test]
fn rtcp_is_relayed_on_the_odd_port_and_under_rtcp_mux() {
    let mut m = engine((31200, 31299));
    let platform_rtcp = UdpSocket::bind((ip(PLATFORM), 0)).expect("bind");
    platform_rtcp.set_nonblocking(true).expect("nonblocking");
    let rtcp_line = format!(
        "a=rtcp:{}\r\n",
        platform_rtcp.local_addr().expect("addr").port()
    );
    // The carrier multiplexes RTCP on its RTP port; the platform uses a separate port.
    let c = call(&mut m, "a=rtcp-mux\r\n", &rtcp_line, false);
    let sr = [
        0x80u8, 200, 0, 6, 1, 2, 3, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    c.carrier_rtp.send_to(&sr, c.public).expect("send");
    assert_eq!(collect(&mut m, &platform_rtcp, 1, WAIT), vec![sr.to_vec()]);
    let rr = [0x80u8, 201, 0, 1, 9, 9, 9, 9];
    let odd = SocketAddr::new(c.internal.ip(), c.internal.port() + 1);
    platform_rtcp.send_to(&rr, odd).expect("send");
    // Back to the carrier on its RTP port (rtcp-mux).
    assert_eq!(collect(&mut m, &c.carrier_rtp, 1, WAIT), vec![rr.to_vec()]);
    let up = from(&m.stats(c.s), Side::Public);
    assert_eq!((up.rtcp_packets, up.packets), (1, 0));
}

#[test]
fn hold_stops_media_to_the_held_side_and_resume_restores_it() {
    let mut m = engine((31300, 31399));
    let c = call(&mut m, "", "", false);
    let send_both = |n: u16| {
        c.carrier_rtp
            .send_to(&rtp(n, 0, false, b"c"), c.public)
            .expect("send");
        c.platform_rtp
            .send_to(&rtp(n, 0, false, b"p"), c.internal)
            .expect("send");
    };
    send_both(1);
    assert_eq!(collect(&mut m, &c.platform_rtp, 1, WAIT).len(), 1);
    assert_eq!(collect(&mut m, &c.carrier_rtp, 1, WAIT).len(), 1);

    // re-INVITE from the carrier: a=sendonly (it plays music on hold, takes nothing).
    let carrier = c.carrier_rtp.local_addr().expect("addr");
    let mut hold = sdp_for(carrier, "a=sendonly\r\n");
    m.relay_sdp(c.s, Side::Public, &mut hold, &carrier_policy(false))
        .expect("hold");
    assert!(hold.to_string().contains("a=sendonly\r\n"));
    send_both(2);
    assert_eq!(
        collect(&mut m, &c.platform_rtp, 1, WAIT).len(),
        1,
        "MOH still flows"
    );
    assert!(collect(&mut m, &c.carrier_rtp, 1, Duration::from_millis(200)).is_empty());
    assert_eq!(from(&m.stats(c.s), Side::Internal).dropped, 1);

    // The RFC 2543 way: c=0.0.0.0.
    let zero = sdp_for(carrier, "")
        .to_string()
        .replace("c=IN IP4 127.0.0.20", "c=IN IP4 0.0.0.0");
    let mut zero = Sdp::parse(zero.as_bytes()).expect("parses");
    m.relay_sdp(c.s, Side::Public, &mut zero, &carrier_policy(false))
        .expect("hold");
    assert!(
        zero.to_string().contains("c=IN IP4 0.0.0.0\r\n"),
        "hold passes on"
    );
    send_both(3);
    assert_eq!(
        collect(&mut m, &c.platform_rtp, 1, WAIT).len(),
        1,
        "latch kept"
    );
    assert!(collect(&mut m, &c.carrier_rtp, 1, Duration::from_millis(200)).is_empty());

    // Resume.
    let mut resume = sdp_for(carrier, "a=sendrecv\r\n");
    m.relay_sdp(c.s, Side::Public, &mut resume, &carrier_policy(false))
        .expect("resume");
    send_both(4);
    assert_eq!(collect(&mut m, &c.platform_rtp, 1, WAIT).len(), 1);
    assert_eq!(collect(&mut m, &c.carrier_rtp, 1, WAIT).len(), 1);
}

#[test]
fn reinvite_moves_a_stream_to_a_new_address() {
    let mut m = engine((31400, 31499));
    let c = call(&mut m, "", "", false);
    c.platform_rtp
        .send_to(&rtp(1, 0, false, b"x"), c.internal)
        .expect("send");
    assert_eq!(collect(&mut m, &c.carrier_rtp, 1, WAIT).len(), 1);
    // The platform moves to another socket (re-INVITE answer with a new port).
    let moved = peer(PLATFORM);
    let mut answer = sdp_for(moved.local_addr().expect("addr"), "");
    m.relay_sdp(c.s, Side::Internal, &mut answer, &platform_policy())
        .expect("re-answer");
    c.carrier_rtp
        .send_to(&rtp(2, 0, false, b"y"), c.public)
        .expect("send");
    assert_eq!(collect(&mut m, &moved, 1, WAIT).len(), 1);
    // The old source is no longer the platform; the new one latches.
    c.platform_rtp
        .send_to(&rtp(2, 0, false, b"old"), c.internal)
        .expect("send");
    moved
        .send_to(&rtp(3, 0, false, b"new"), c.internal)
        .expect("send");
    let got = collect(&mut m, &c.carrier_rtp, 2, Duration::from_millis(300));
    assert_eq!(got.len(), 1);
}

#[test]
fn closed_ports_are_quarantined_and_exhaustion_is_503() {
    // Two pairs: one call with one stream.
    let mut m = engine((31500, 31503));
    let c = call(&mut m, "", "", false);
    let err = m.open(8, 1).expect_err("no ports left");
    assert!(matches!(err, MediaError::Ports(_)));
    assert_eq!((err.status(), err.metric_label()), (503, "ports_exhausted"));
    let stats = m.close(c.s);
    assert_eq!(stats.len(), 2);
    assert_eq!(m.sessions(), 0);
    // Still resting (30 s default quarantine): not reusable yet.
    assert_eq!(m.ports_available(), 0);
    assert!(m.open(9, 1).is_err());
    // The closed id is stale: refused, not mistaken for another call.
    assert!(m.stats(c.s).is_empty());
    assert!(m.local(c.s, Side::Public, 0).is_none());
    // Late packets to the closed ports reach nobody.
    c.carrier_rtp
        .send_to(&rtp(1, 0, false, b"late"), c.public)
        .expect("send");
    assert!(collect(&mut m, &c.platform_rtp, 1, Duration::from_millis(100)).is_empty());

    // With no quarantine the pairs come back at once.
    let lo = ip("127.0.0.1");
    let mut cfg = MediaConfig::new(lo, lo, (31504, 31507));
    cfg.quarantine = Duration::ZERO;
    let mut m = MediaEngine::new(cfg).expect("engine");
    let s = m.open(1, 1).expect("open");
    m.close(s);
    assert!(m.open(2, 1).is_ok());
}

#[test]
fn more_m_lines_than_streams_grow_the_session() {
    let mut m = engine((31600, 31699));
    let s = m.open(1, 0).expect("open without SDP (late offer)");
    let body = "v=0\r\no=- 1 1 IN IP4 127.0.0.20\r\ns=-\r\nc=IN IP4 127.0.0.20\r\nt=0 0\r\n\
                m=audio 4000 RTP/AVP 0\r\nm=image 4002 udptl t38\r\n";
    let mut sdp = Sdp::parse(body.as_bytes()).expect("parses");
    m.relay_sdp(s, Side::Public, &mut sdp, &carrier_policy(false))
        .expect("relayed");
    let out = sdp.to_string();
    for i in 0..2 {
        let port = m.local(s, Side::Internal, i).expect("stream").port();
        assert!(out.contains(&format!(" {port} ")), "{out}");
    }
    assert_eq!(m.stats(s).len(), 4);
}

#[tokio::test(flavor = "current_thread")]
async fn no_rtp_for_the_timeout_ends_the_call_on_the_worker_loop() {
    let lo = ip("127.0.0.1");
    let mut cfg = MediaConfig::new(lo, lo, (31700, 31799));
    cfg.timeout = Duration::from_millis(300);
    let mut m = MediaEngine::new(cfg).expect("engine");
    let silent = call_id(&mut m, 1, "", "", false);
    let talking = call_id(&mut m, 2, "", "", false);
    // Not armed before both sides gave an address: a third call only offered.
    let ringing = m.open(99, 1).expect("open");
    let mut offer = sdp_for(peer(CARRIER).local_addr().expect("addr"), "");
    m.relay_sdp(ringing, Side::Public, &mut offer, &carrier_policy(false))
        .expect("offer");

    let started = Instant::now();
    let mut events = Vec::new();
    let mut seq = 0u16;
    let mut tick = tokio::time::interval(Duration::from_millis(40));
    while started.elapsed() < Duration::from_millis(900) {
        tokio::select! {
            _ = m.wait() => events.extend(m.relay()),
            _ = tick.tick() => {
                seq += 1;
                let _ = talking.carrier_rtp.send_to(&rtp(seq, 0, false, b"hi"), talking.public);
            }
        }
    }
    // 300 ms timeout over ~900 ms: reported for the silent call (again while it stays
    // silent), never for the talking one or the one still ringing.
    assert!(!events.is_empty());
    assert!(
        events.iter().all(|e| *e
            == MediaEvent::Timeout {
                call: 1,
                session: silent.s
            }),
        "{events:?}"
    );
    assert!(events.len() <= 3, "{events:?}");
    assert!(from(&m.stats(talking.s), Side::Public).forwarded > 5);
}
