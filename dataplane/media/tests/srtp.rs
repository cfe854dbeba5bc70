//! SRTP on the carrier leg through the relay on loopback: the carrier (127.0.0.20) speaks
//! SDES-keyed SRTP, the platform (127.0.0.21) plain RTP. The carrier's end of the crypto is
//! `trunkgate_media::srtp` itself (the interop tests put baresip there). Every wait is bounded.

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use trunkgate_media::srtp::{Crypto, Key, LegSrtp, SUITES, Suite};
use trunkgate_media::{Exchange, MediaEngine, Sdp, SessionId, Side, SrtpPolicy};

mod common;
use common::{CARRIER, PLATFORM, WAIT, carrier_policy, engine, from, ip, peer, platform_policy};

fn sdp(addr: SocketAddr, proto: &str, crypto: &[String]) -> Sdp {
    let mut body = format!(
        "v=0\r\no=peer 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n\
         m=audio {port} {proto} 0 101\r\na=rtpmap:0 PCMU/8000\r\n\
         a=rtpmap:101 telephone-event/8000\r\n",
        ip = addr.ip(),
        port = addr.port()
    );
    for c in crypto {
        body.push_str(&format!("a=crypto:{c}\r\n"));
    }
    Sdp::parse(body.as_bytes()).expect("test SDP parses")
}

fn rtp(seq: u16) -> Vec<u8> {
    let mut p = vec![0x80, 0];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    p.extend_from_slice(&0x1234_5678u32.to_be_bytes());
    p.extend_from_slice(&[seq as u8; 160]);
    p
}

fn sender_report() -> Vec<u8> {
    let mut p = vec![0x80, 200, 0, 6];
    p.extend_from_slice(&0x1234_5678u32.to_be_bytes());
    p.extend_from_slice(&[7u8; 20]);
    p
}

fn collect(m: &mut MediaEngine, sock: &UdpSocket, n: usize) -> Vec<Vec<u8>> {
    common::collect(m, sock, n, WAIT)
}

/// Runs the relay briefly so nothing queued is left unread.
fn drain(m: &mut MediaEngine) {
    for _ in 0..20 {
        let _ = m.relay();
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The one `a=crypto` of the rewritten SDP's first stream.
fn only_crypto(s: &Sdp) -> Crypto {
    let lines: Vec<&str> = s.media()[0].crypto().collect();
    assert_eq!(lines.len(), 1, "{s}");
    Crypto::parse(lines[0]).expect("the edge's a=crypto parses")
}

struct Call {
    s: SessionId,
    carrier: UdpSocket,
    platform: UdpSocket,
    public: SocketAddr,
    internal: SocketAddr,
    /// The carrier's crypto: opens what the edge sends, seals what the carrier sends.
    crypto: LegSrtp,
}

/// An inbound call: the carrier offers SRTP with `suite`, the platform answers plain.
fn inbound(m: &mut MediaEngine, id: u64, suite: Suite) -> Call {
    let carrier = peer(CARRIER);
    let platform = peer(PLATFORM);
    let s = m.open(id, 1).expect("open");
    m.set_srtp(s, SrtpPolicy::Optional).expect("policy");
    let theirs = Key::random(suite);
    let mut offer = sdp(
        carrier.local_addr().expect("addr"),
        "RTP/SAVP",
        &[Crypto {
            tag: 5,
            key: theirs.clone(),
        }
        .to_value()],
    );
    m.relay_sdp_as(
        s,
        Side::Public,
        &mut offer,
        &carrier_policy(false),
        Exchange::Offer,
    )
    .expect("offer");
    assert_eq!(offer.media()[0].proto(), "RTP/AVP", "plain to the platform");
    assert_eq!(offer.media()[0].crypto().count(), 0);
    let mut answer = sdp(platform.local_addr().expect("addr"), "RTP/AVP", &[]);
    m.relay_sdp_as(
        s,
        Side::Internal,
        &mut answer,
        &platform_policy(),
        Exchange::Response,
    )
    .expect("answer");
    assert_eq!(answer.media()[0].proto(), "RTP/SAVP");
    let ours = only_crypto(&answer);
    assert_eq!((ours.tag, ours.key.suite()), (5, suite));
    Call {
        s,
        public: m.local(s, Side::Public, 0).expect("public"),
        internal: m.local(s, Side::Internal, 0).expect("internal"),
        carrier,
        platform,
        crypto: LegSrtp::new(ours.key, theirs).expect("carrier crypto"),
    }
}

#[test]
fn srtp_from_the_carrier_reaches_the_platform_as_rtp_and_back_for_every_suite() {
    let mut m = engine((31700, 31799));
    for (n, suite) in SUITES.into_iter().enumerate() {
        let mut c = inbound(&mut m, n as u64, suite);
        let sent: Vec<Vec<u8>> = (1..=20).map(rtp).collect();
        for p in &sent {
            let sealed = c.crypto.protect(p, false).expect("seal");
            c.carrier.send_to(&sealed, c.public).expect("send");
        }
        let got = collect(&mut m, &c.platform, sent.len());
        assert_eq!(got, sent, "{suite}: the platform gets the plain packets");
        // And back: plain from the platform, SRTP to the carrier.
        for p in &sent {
            c.platform.send_to(p, c.internal).expect("send");
        }
        let back = collect(&mut m, &c.carrier, sent.len());
        assert_eq!(back.len(), sent.len(), "{suite}");
        for (b, p) in back.iter().zip(&sent) {
            assert_ne!(b, p, "{suite}: encrypted on the carrier leg");
            assert_eq!(c.crypto.unprotect(b, false).expect("opens").to_vec(), *p);
        }
        // SRTCP on the RTCP port.
        let carrier_rtcp = peer(CARRIER);
        let rtcp_port = SocketAddr::new(c.public.ip(), c.public.port() + 1);
        let sr = sender_report();
        carrier_rtcp
            .send_to(&c.crypto.protect(&sr, true).expect("seal"), rtcp_port)
            .expect("send");
        let platform_rtcp =
            UdpSocket::bind((ip(PLATFORM), c.platform.local_addr().expect("a").port() + 1));
        if let Ok(platform_rtcp) = platform_rtcp {
            platform_rtcp.set_nonblocking(true).expect("nonblocking");
            assert_eq!(
                collect(&mut m, &platform_rtcp, 1),
                vec![sr],
                "{suite}: SRTCP opened"
            );
        }
        let stats = m.close(c.s);
        let carrier = from(&stats, Side::Public);
        assert_eq!(
            (carrier.packets, carrier.srtp, carrier.srtp_rejected),
            (20, Some(suite), 0)
        );
        assert_eq!(carrier.lost, 0);
        assert_eq!(from(&stats, Side::Internal).srtp, None);
    }
}

#[test]
fn forged_replayed_and_plain_packets_are_dropped_counted_and_latch_nothing() {
    let mut m = engine((31800, 31899));
    let mut c = inbound(&mut m, 1, Suite::AesCm128HmacSha1_80);
    // Before anything latched: a forgery from another port of the carrier's IP.
    let impostor = peer(CARRIER);
    let mut forged = c.crypto.protect(&rtp(1), false).expect("seal").to_vec();
    forged[20] ^= 0xff;
    impostor.send_to(&forged, c.public).expect("send");
    impostor.send_to(&rtp(2), c.public).expect("send plain");
    drain(&mut m);
    // The real carrier then gets through: the forgery did not latch the impostor's port.
    let good = c.crypto.protect(&rtp(3), false).expect("seal");
    c.carrier.send_to(&good, c.public).expect("send");
    assert_eq!(collect(&mut m, &c.platform, 1), vec![rtp(3)]);
    // The same packet again is a replay.
    c.carrier.send_to(&good, c.public).expect("send");
    drain(&mut m);
    let mut buf = [0u8; 2048];
    assert!(
        c.platform.recv(&mut buf).is_err(),
        "the replay was not relayed"
    );
    let carrier = from(&m.stats(c.s), Side::Public);
    assert_eq!(carrier.srtp_rejected, 3, "forgery, plain RTP, replay");
    assert_eq!(carrier.packets, 1);
    let counters = m.counters();
    assert_eq!(
        counters.srtp_rejected,
        [2, 1, 0, 0],
        "auth (the forgery, plain RTP whose last bytes are no tag), replay"
    );
}

#[test]
fn the_edge_offers_srtp_to_the_carrier_and_rekeys_on_a_reinvite() {
    let mut m = engine((31900, 31999));
    let carrier = peer(CARRIER);
    let platform = peer(PLATFORM);
    let s = m.open(1, 1).expect("open");
    m.set_srtp(s, SrtpPolicy::Required).expect("policy");
    let mut offer = sdp(platform.local_addr().expect("addr"), "RTP/AVP", &[]);
    m.relay_sdp_as(
        s,
        Side::Internal,
        &mut offer,
        &platform_policy(),
        Exchange::Offer,
    )
    .expect("offer");
    assert_eq!(offer.media()[0].proto(), "RTP/SAVP");
    let offered: Vec<Crypto> = offer.media()[0]
        .crypto()
        .map(|v| Crypto::parse(v).expect("ours"))
        .collect();
    assert_eq!(offered.len(), 3);
    // The carrier takes tag 3 (GCM) and answers with its key.
    let gcm = &offered[2];
    assert_eq!(gcm.key.suite(), Suite::AeadAes128Gcm);
    let theirs = Key::random(Suite::AeadAes128Gcm);
    let mut answer = sdp(
        carrier.local_addr().expect("addr"),
        "RTP/SAVP",
        &[Crypto {
            tag: 3,
            key: theirs.clone(),
        }
        .to_value()],
    );
    m.relay_sdp_as(
        s,
        Side::Public,
        &mut answer,
        &carrier_policy(false),
        Exchange::Response,
    )
    .expect("answer");
    assert_eq!(
        answer.media()[0].crypto().count(),
        0,
        "plain to the platform"
    );
    let public = m.local(s, Side::Public, 0).expect("public");
    let mut old = LegSrtp::new(gcm.key.clone(), theirs.clone()).expect("carrier");
    carrier
        .send_to(&old.protect(&rtp(1), false).expect("seal"), public)
        .expect("send");
    assert_eq!(collect(&mut m, &platform, 1), vec![rtp(1)]);
    // The carrier re-INVITEs with a new key; a packet under the old one still in flight.
    let rekeyed = Key::random(Suite::AeadAes128Gcm);
    let mut reoffer = sdp(
        carrier.local_addr().expect("addr"),
        "RTP/SAVP",
        &[Crypto {
            tag: 1,
            key: rekeyed.clone(),
        }
        .to_value()],
    );
    m.relay_sdp_as(
        s,
        Side::Public,
        &mut reoffer,
        &carrier_policy(false),
        Exchange::Offer,
    )
    .expect("re-offer");
    let mut reanswer = sdp(platform.local_addr().expect("addr"), "RTP/AVP", &[]);
    m.relay_sdp_as(
        s,
        Side::Internal,
        &mut reanswer,
        &platform_policy(),
        Exchange::Response,
    )
    .expect("re-answer");
    let ours = only_crypto(&reanswer);
    assert_eq!(
        (ours.tag, &ours.key),
        (1, &gcm.key),
        "the edge keeps its key for the same suite"
    );
    carrier
        .send_to(&old.protect(&rtp(2), false).expect("seal"), public)
        .expect("send");
    let mut new = LegSrtp::new(ours.key, rekeyed).expect("carrier");
    carrier
        .send_to(&new.protect(&rtp(3), false).expect("seal"), public)
        .expect("send");
    assert_eq!(collect(&mut m, &platform, 2), vec![rtp(2), rtp(3)]);
    carrier
        .send_to(&old.protect(&rtp(4), false).expect("seal"), public)
        .expect("send");
    drain(&mut m);
    assert_eq!(
        from(&m.stats(s), Side::Public).srtp_rejected,
        1,
        "the old key is retired"
    );
}

#[test]
fn required_srtp_refuses_a_plain_offer_with_488_and_changes_nothing() {
    let mut m = engine((32000, 32099));
    let s = m.open(1, 1).expect("open");
    m.set_srtp(s, SrtpPolicy::Required).expect("policy");
    let mut offer = sdp(peer(CARRIER).local_addr().expect("addr"), "RTP/AVP", &[]);
    let e = m
        .relay_sdp_as(
            s,
            Side::Public,
            &mut offer,
            &carrier_policy(false),
            Exchange::Offer,
        )
        .expect_err("plain offer");
    assert_eq!(e.status(), 488);
    assert!(e.to_string().contains("requires SRTP"), "{e}");
}

/// Relays until `sock` has `n` datagrams; what it got and the events the relay reported.
fn collect_with_events(
    m: &mut MediaEngine,
    sock: &UdpSocket,
    n: usize,
) -> (Vec<Vec<u8>>, Vec<trunkgate_media::MediaEvent>) {
    let until = std::time::Instant::now() + WAIT;
    let (mut got, mut events) = (Vec::new(), Vec::new());
    let mut buf = [0u8; 2048];
    while got.len() < n && std::time::Instant::now() < until {
        events.extend(m.relay());
        while let Ok(k) = sock.recv(&mut buf) {
            got.push(buf[..k].to_vec());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    (got, events)
}

/// What a restarted edge needs of an SRTP leg: the relay reports each quarter of the sequence
/// space a direction enters (the call is checkpointed again then), `srtp` gives the keys and
/// how far each direction went, and another engine (the next run, on the same ports) resumed
/// from that opens the carrier's stream and seals the platform's where they were.
#[test]
fn an_srtp_leg_reports_its_progress_and_resumes_in_another_engine() {
    use trunkgate_media::srtp::Progress;
    let ports = (31800, 31899);
    let mut m = engine(ports);
    let mut c = inbound(&mut m, 1, Suite::AesCm128HmacSha1_80);
    // The carrier's stream enters the second quarter of the sequence space at 16,384.
    let sent: Vec<Vec<u8>> = (16_382..16_387).map(rtp).collect();
    for p in &sent {
        let sealed = c.crypto.protect(p, false).expect("seal");
        c.carrier.send_to(&sealed, c.public).expect("send");
    }
    let (got, events) = collect_with_events(&mut m, &c.platform, sent.len());
    assert_eq!(got, sent);
    let progress = events
        .iter()
        .filter(|e| matches!(e, trunkgate_media::MediaEvent::SrtpProgress { call: 1 }))
        .count();
    assert_eq!(progress, 1, "one report, at 16,384: {events:?}");
    for p in (100..105).map(rtp) {
        c.platform.send_to(&p, c.internal).expect("send");
    }
    assert_eq!(collect(&mut m, &c.carrier, 5).len(), 5);
    let state = m.srtp(c.s).remove(0).expect("SRTP on the carrier leg");
    let ssrc = 0x1234_5678;
    assert_eq!(
        state.received,
        Some(Progress {
            ssrc,
            roc: 0,
            seq: 16_386
        })
    );
    assert_eq!(
        state.sent,
        Some(Progress {
            ssrc,
            roc: 0,
            seq: 104
        })
    );
    let (public, internal) = (c.public.port(), c.internal.port());
    drop(m);

    // The next run: the same ports, the peers where they were, the SRTP state resumed.
    let mut m = engine(ports);
    let s = m.reopen(1, &[[public, internal]]).expect("reopen");
    for (side, sock, policy) in [
        (Side::Public, &c.carrier, carrier_policy(false)),
        (Side::Internal, &c.platform, platform_policy()),
    ] {
        let at = sock.local_addr().expect("addr");
        let remote = trunkgate_media::Remote {
            rtp: at,
            rtcp: SocketAddr::new(at.ip(), at.port() + 1),
            rtcp_mux: false,
            direction: Default::default(),
            clock_rate: 8000,
        };
        m.set_remote(s, side, 0, remote, &policy).expect("remote");
    }
    m.resume_srtp(s, 0, SrtpPolicy::Optional, state)
        .expect("resumed");
    let p = rtp(16_390);
    let sealed = c.crypto.protect(&p, false).expect("seal");
    c.carrier.send_to(&sealed, c.public).expect("send");
    assert_eq!(
        collect(&mut m, &c.platform, 1),
        vec![p],
        "the carrier's SRTP opens"
    );
    let p = rtp(110);
    c.platform.send_to(&p, c.internal).expect("send");
    let back = collect(&mut m, &c.carrier, 1);
    assert_eq!(back.len(), 1);
    assert_eq!(
        c.crypto
            .unprotect(&back[0], false)
            .expect("the carrier opens it")
            .to_vec(),
        p
    );
    let stats = m.close(s);
    assert_eq!(from(&stats, Side::Public).srtp_rejected, 0);
}
