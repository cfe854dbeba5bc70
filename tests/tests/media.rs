//! Media through the edge: the test is the carrier and the platform at once, with a raw SIP
//! agent for each (`ua`) and its own RTP sockets (`rtp`) named in the SDP each one sends, so it
//! sees exactly which packets arrive where and which SDP each side was given.
//!
//! Covered: RTP and RTCP relayed both ways with payloads untouched and the call record's
//! quality figures; symmetric latching (another port of the SDP's IP, strangers, a carrier
//! behind NAT); codec filtering and 488; hold and resume by re-INVITE from either side;
//! the media timeout; port exhaustion (503) and the quarantine of freed ports; malformed SDP
//! (400); `media.relay: false`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use serde_json::Value;
use trunkgate_tests::rtp::*;
use trunkgate_tests::ua::{Dialog, Incoming, Ua, reinvite_through};
use trunkgate_tests::*;

const CALLER: &str = "+6421555123";
const NUMBER: &str = "+6498879333";
const TRUNK: &str = "acme/pacific";
/// A second address of the carrier's (its NAT's outside address, or another host).
const CARRIER_2: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 11));
/// The carrier's private media address behind its NAT (loopback, so nothing leaves the box).
const CARRIER_PRIVATE: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 12));
/// A packet is relayed within this on loopback.
const WAIT: Duration = Duration::from_secs(2);
/// How long a test listens to show that nothing arrives.
const QUIET: Duration = Duration::from_millis(300);

/// Writes `acme/pacific` (the carrier at 127.0.0.10, calls to `platform`, changed by `tweak`)
/// with its numbers, and starts an edge with `args`.
fn edge_with(
    lab: &Lab,
    platform: SocketAddr,
    tweak: impl FnOnce(Trunk) -> Trunk,
    workers: usize,
    args: &[&str],
) -> Edge {
    let trunk = tweak(Trunk::new("acme", "pacific", "127.0.0.10/32", platform));
    lab.write_config("acme-trunk.yaml", &trunk.yaml());
    lab.write_config(
        "acme-numbers.yaml",
        &Numbers::byoc("acme", "numbers", "pacific", &["+6498879300-+6498879399"]).yaml(),
    );
    Edge::start(
        lab,
        EdgeOptions {
            workers,
            extra_args: args.iter().map(|a| a.to_string()).collect(),
            ..EdgeOptions::default()
        },
    )
}

fn agents() -> (Ua, Ua) {
    (
        Ua::bind("carrier", CARRIER, CALLER),
        Ua::bind("platform", PLATFORM, "platform"),
    )
}

/// An answered call as each side saw it.
struct Call {
    carrier: Dialog,
    platform: Dialog,
    /// The INVITE the platform received.
    invite: Incoming,
    /// The 200 the carrier received.
    answer: SipMsg,
    /// The edge's media addresses, from the SDP each side was given.
    edge_public: SocketAddr,
    edge_internal: SocketAddr,
}

/// The carrier calls NUMBER with `offer`; the platform answers with `answer`.
fn answered_call(
    edge: &Edge,
    carrier: &mut Ua,
    platform: &mut Ua,
    offer: &str,
    answer: &str,
) -> Call {
    let (mut cd, tx) = carrier.invite(edge.public, &edge.public_uri(NUMBER), CALLER, offer);
    let invite = platform.expect_request("INVITE", WAIT);
    let pd = platform.accept(&invite, answer);
    let resp = carrier.final_response(&mut cd, &tx, WAIT);
    assert_eq!(
        resp.code(),
        Some(200),
        "the call is answered\n{}",
        carrier.report()
    );
    platform.expect_request("ACK", WAIT);
    let edge_internal = sdp_rtp_addr(&invite.msg.body)
        .unwrap_or_else(|| panic!("an SDP offer reaches the platform:\n{}", invite.msg.text()));
    let edge_public = sdp_rtp_addr(&resp.body)
        .unwrap_or_else(|| panic!("an SDP answer reaches the carrier:\n{}", resp.text()));
    Call {
        carrier: cd,
        platform: pd,
        invite,
        answer: resp,
        edge_public,
        edge_internal,
    }
}

/// Sends `n` G.711 packets (sequence numbers from `first`) from `from` to `to`, 20 ms apart
/// when `paced`; returns them.
fn send_g711(
    from: &UdpSocket,
    to: SocketAddr,
    first: u16,
    n: u16,
    ssrc: u32,
    paced: bool,
) -> Vec<Vec<u8>> {
    (first..first + n)
        .map(|seq| {
            let p = g711(seq, ssrc, 0);
            send(from, to, &p);
            if paced {
                std::thread::sleep(Duration::from_millis(20));
            }
            p
        })
        .collect()
}

/// How many datagrams arrive on `sock`: `want` expected (waits up to WAIT, then a moment more
/// for extras); 0 expected: listens for QUIET.
fn arrivals(sock: &UdpSocket, want: usize) -> Vec<(Vec<u8>, SocketAddr)> {
    if want == 0 {
        drain(sock, QUIET)
    } else {
        collect(sock, want, WAIT, Duration::from_millis(100))
    }
}

fn in_range(port: u16, (lo, hi): (u16, u16)) -> bool {
    (lo..=hi).contains(&port)
}

/// The SDP the other side was given names only the edge: `ip` in every `c=` and in `o=`, a
/// port of the edge's range; none of `hidden` (the far side's addresses) anywhere.
fn assert_sdp_names_edge(body: &str, ip: IpAddr, edge: &Edge, hidden: &[String], who: &str) {
    let conns = sdp_connections(body);
    assert!(
        !conns.is_empty() && conns.iter().all(|c| *c == ip.to_string()),
        "{who} was given c= {conns:?}, not the edge's {ip}:\n{body}"
    );
    assert_eq!(
        sdp_origin(body).as_deref(),
        Some(ip.to_string().as_str()),
        "{who}: o= names the edge:\n{body}"
    );
    let (port, _) = sdp_audio(body).unwrap_or_default();
    assert!(
        in_range(port, edge.rtp_ports) && port % 2 == 0,
        "{who} was given m=audio {port}, not an even port of the edge's {:?}:\n{body}",
        edge.rtp_ports
    );
    for h in hidden {
        assert!(
            !body.contains(h.as_str()),
            "{who} was given the other side's `{h}`:\n{body}"
        );
    }
}

fn media_of<'a>(cdr: &'a Value, from: &str) -> &'a Value {
    cdr["media"]
        .as_array()
        .and_then(|m| m.iter().find(|e| e["from"] == from))
        .unwrap_or_else(|| panic!("no media entry from the {from} in the call record: {cdr}"))
}

// ---- 1. RTP both ways ----------------------------------------------------------------------

#[test]
fn rtp_and_rtcp_cross_the_edge_both_ways_untouched_and_the_record_has_their_quality() {
    let lab = Lab::new("media_both_ways");
    let (mut carrier, mut platform) = agents();
    let edge = edge_with(&lab, platform.local, |t| t, 2, &[]);
    let c_rtp = RtpEnd::bind(CARRIER);
    let p_rtp = RtpEnd::bind(PLATFORM);
    let offer = sdp(
        CARRIER,
        c_rtp.addr.port(),
        &[PCMU, EVENTS],
        "a=sendrecv\r\n",
    );
    let answer = sdp(
        PLATFORM,
        p_rtp.addr.port(),
        &[PCMU, EVENTS],
        "a=sendrecv\r\n",
    );
    let mut call = answered_call(&edge, &mut carrier, &mut platform, &offer, &answer);

    // Each side was given the edge's media address, never the other side's.
    let to_platform = &call.invite.msg.body;
    assert_sdp_names_edge(
        to_platform,
        EDGE_INTERNAL_IP,
        &edge,
        &[CARRIER.to_string(), format!(" {} ", c_rtp.addr.port())],
        "the platform",
    );
    assert_eq!(
        sdp_audio(to_platform).map(|(_, f)| f),
        Some(vec!["0".to_string(), "101".to_string()]),
        "the codecs pass unfiltered:\n{to_platform}"
    );
    let to_carrier = &call.answer.body;
    assert_sdp_names_edge(
        to_carrier,
        EDGE_PUBLIC_IP,
        &edge,
        &[PLATFORM.to_string(), format!(" {} ", p_rtp.addr.port())],
        "the carrier",
    );
    assert!(sdp_has(to_carrier, "a=sendrecv"), "{to_carrier}");

    // 50 packets of 20 ms G.711 each way, then three RFC 4733 events from the carrier.
    let (up_ssrc, down_ssrc) = (0x0ca1_1e55, 0x0091_a7f0);
    let mut up = Vec::new();
    let mut down = Vec::new();
    for seq in 0..50u16 {
        let p = g711(seq, up_ssrc, 0);
        send(&c_rtp.rtp, call.edge_public, &p);
        up.push(p);
        let p = g711(seq, down_ssrc, 0);
        send(&p_rtp.rtp, call.edge_internal, &p);
        down.push(p);
        std::thread::sleep(Duration::from_millis(20));
    }
    for (i, end) in [(0u16, false), (1, false), (2, true)] {
        // Digit 5, volume 10, growing duration; the last one ends the event.
        let dur = 160 * (i + 1);
        let payload = [
            5,
            if end { 0x80 | 10 } else { 10 },
            (dur >> 8) as u8,
            dur as u8,
        ];
        let p = rtp_packet(50 + i, 50 * 160, up_ssrc, 101, i == 0, &payload);
        send(&c_rtp.rtp, call.edge_public, &p);
        up.push(p);
    }
    let got_up = arrivals(&p_rtp.rtp, up.len());
    let got_down = arrivals(&c_rtp.rtp, down.len());
    let bytes = |v: &[(Vec<u8>, SocketAddr)]| v.iter().map(|(b, _)| b.clone()).collect::<Vec<_>>();
    assert_eq!(
        got_up.len(),
        up.len(),
        "the platform got {} of the carrier's {} packets",
        got_up.len(),
        up.len()
    );
    assert!(
        bytes(&got_up) == up,
        "the platform got the carrier's packets byte for byte, in order"
    );
    assert!(
        got_up.iter().all(|(_, src)| *src == call.edge_internal),
        "they come from the edge's address in the platform's SDP ({})",
        call.edge_internal
    );
    assert_eq!(
        got_down.len(),
        down.len(),
        "the carrier got {} of the platform's {} packets",
        got_down.len(),
        down.len()
    );
    assert!(bytes(&got_down) == down, "byte for byte, in order");
    assert!(
        got_down.iter().all(|(_, src)| *src == call.edge_public),
        "they come from the edge's address in the carrier's SDP ({})",
        call.edge_public
    );

    // RTCP on the odd ports, both ways.
    let odd = |a: SocketAddr| SocketAddr::new(a.ip(), a.port() + 1);
    let rr_up = rtcp_rr(up_ssrc);
    send(&c_rtp.rtcp, odd(call.edge_public), &rr_up);
    let got = arrivals(&p_rtp.rtcp, 1);
    assert_eq!(
        bytes(&got),
        vec![rr_up],
        "the carrier's RTCP reaches the platform's RTCP port"
    );
    let rr_down = rtcp_rr(down_ssrc);
    send(&p_rtp.rtcp, odd(call.edge_internal), &rr_down);
    let got = arrivals(&c_rtp.rtcp, 1);
    assert_eq!(
        bytes(&got),
        vec![rr_down],
        "the platform's RTCP reaches the carrier's RTCP port"
    );

    carrier.bye(&mut call.carrier);
    platform.answer_bye(WAIT);
    let cdr = edge.wait_cdr("the call", |c| c["callee"] == NUMBER);
    assert_eq!(cdr["finalStatus"], 200, "{cdr}");
    let from_carrier = media_of(&cdr, "carrier");
    assert_eq!(from_carrier["packets"], 53, "{cdr}");
    assert_eq!(from_carrier["bytes"], 50 * 172 + 3 * 16, "{cdr}");
    assert_eq!(from_carrier["lost"], 0, "{cdr}");
    let from_platform = media_of(&cdr, "platform");
    assert_eq!(from_platform["packets"], 50, "{cdr}");
    assert_eq!(from_platform["bytes"], 50 * 172, "{cdr}");
    assert_eq!(from_platform["lost"], 0, "{cdr}");
    if trunkgate_tests::edge::kernel_fast_path().is_some() {
        // The same figures, most of the packets forwarded by the kernel.
        let kernel = || {
            edge.metric(
                "trunkgate_edge_media_kernel_packets_total",
                &[("what", "forwarded")],
            )
        };
        assert_eventually!(
            kernel() >= 60.0,
            Duration::from_secs(3),
            "the kernel forwarded {} of the 100 RTP packets",
            kernel()
        );
        assert_eq!(
            edge.metric("trunkgate_edge_kernel_fast_path", &[("state", "on")]),
            1.0
        );
    }
    for m in [from_carrier, from_platform] {
        let mos = m["mos"].as_f64().unwrap_or(0.0);
        assert!(
            (3.5..=4.5).contains(&mos),
            "a clean G.711 stream scores a good MOS: {m}"
        );
    }
    assert_eq!(
        edge.metric("trunkgate_edge_media_mos_count", &[("trunk", TRUNK)]),
        2.0,
        "one MOS per direction in the trunk's histogram"
    );
}

/// When a call ends its media ports close: a late packet of it reaches nobody.
#[test]
fn media_of_an_ended_call_is_no_longer_relayed() {
    let lab = Lab::new("media_after_bye");
    let (mut carrier, mut platform) = agents();
    let edge = edge_with(&lab, platform.local, |t| t, 2, &[]);
    let c_rtp = RtpEnd::bind(CARRIER);
    let p_rtp = RtpEnd::bind(PLATFORM);
    let offer = sdp(CARRIER, c_rtp.addr.port(), &[PCMU], "");
    let answer = sdp(PLATFORM, p_rtp.addr.port(), &[PCMU], "");
    let mut call = answered_call(&edge, &mut carrier, &mut platform, &offer, &answer);
    send_g711(&c_rtp.rtp, call.edge_public, 0, 3, 1, false);
    assert_eq!(
        arrivals(&p_rtp.rtp, 3).len(),
        3,
        "media flows during the call"
    );
    carrier.bye(&mut call.carrier);
    platform.answer_bye(WAIT);
    edge.wait_cdr("the call", |c| c["callee"] == NUMBER);

    send_g711(&c_rtp.rtp, call.edge_public, 3, 3, 1, false);
    send_g711(&p_rtp.rtp, call.edge_internal, 0, 3, 2, false);
    let late_up = arrivals(&p_rtp.rtp, 0);
    let late_down = arrivals(&c_rtp.rtp, 0);
    assert!(
        late_up.is_empty() && late_down.is_empty(),
        "after the BYE the edge still relayed {} packets to the platform and {} to the \
         carrier (its ports of the call stay open)",
        late_up.len(),
        late_down.len()
    );
}

// ---- 2. latching ---------------------------------------------------------------------------

/// RFC 4961 symmetric RTP: the carrier sends from another port of the IP in its SDP (a port
/// changed on the way); the edge follows it and sends there, not to the SDP's port.
#[test]
fn the_edge_latches_onto_the_port_the_carrier_really_sends_from() {
    let lab = Lab::new("media_latch_port");
    let (mut carrier, mut platform) = agents();
    let edge = edge_with(&lab, platform.local, |t| t, 2, &[]);
    let c_sdp = RtpEnd::bind(CARRIER);
    let c_real = RtpEnd::socket(CARRIER);
    let p_rtp = RtpEnd::bind(PLATFORM);
    let offer = sdp(CARRIER, c_sdp.addr.port(), &[PCMU], "");
    let answer = sdp(PLATFORM, p_rtp.addr.port(), &[PCMU], "");
    let call = answered_call(&edge, &mut carrier, &mut platform, &offer, &answer);

    let sent = send_g711(&c_real, call.edge_public, 0, 5, 7, false);
    let got = arrivals(&p_rtp.rtp, 5);
    assert_eq!(
        got.len(),
        5,
        "the carrier's packets from another port are relayed"
    );
    assert_eq!(got[0].0, sent[0]);
    send_g711(&p_rtp.rtp, call.edge_internal, 0, 5, 8, false);
    assert_eq!(
        arrivals(&c_real, 5).len(),
        5,
        "the platform's packets go where the carrier's come from"
    );
    assert!(
        arrivals(&c_sdp.rtp, 0).is_empty(),
        "and not to the port in the carrier's SDP"
    );
}

/// Without `behindNat`, only the IP in the carrier's SDP may latch: RTP from anywhere else
/// is not relayed and does not divert the platform's media.
#[test]
fn rtp_from_another_address_is_not_relayed_and_does_not_divert_the_stream() {
    let lab = Lab::new("media_stranger");
    let (mut carrier, mut platform) = agents();
    let edge = edge_with(&lab, platform.local, |t| t, 2, &[]);
    let c_rtp = RtpEnd::bind(CARRIER);
    let stranger = RtpEnd::socket(DENIED);
    let p_rtp = RtpEnd::bind(PLATFORM);
    let offer = sdp(CARRIER, c_rtp.addr.port(), &[PCMU], "");
    let answer = sdp(PLATFORM, p_rtp.addr.port(), &[PCMU], "");
    let call = answered_call(&edge, &mut carrier, &mut platform, &offer, &answer);

    send_g711(&stranger, call.edge_public, 0, 5, 0x66, false);
    assert!(
        arrivals(&p_rtp.rtp, 0).is_empty(),
        "a stranger's RTP does not reach the platform"
    );
    send_g711(&p_rtp.rtp, call.edge_internal, 0, 5, 8, false);
    assert_eq!(
        arrivals(&c_rtp.rtp, 5).len(),
        5,
        "the platform's RTP goes to the carrier's SDP address"
    );
    assert!(arrivals(&stranger, 0).is_empty(), "not to the stranger");
    send_g711(&c_rtp.rtp, call.edge_public, 0, 5, 7, false);
    assert_eq!(
        arrivals(&p_rtp.rtp, 5).len(),
        5,
        "the carrier's own RTP is relayed"
    );
    send_g711(&stranger, call.edge_public, 5, 5, 0x66, false);
    assert!(
        arrivals(&p_rtp.rtp, 0).is_empty(),
        "nor after the carrier latched"
    );
}

/// A carrier whose RTP comes from another address than its SDP's (a NAT the trunk does not
/// declare with `behindNat`): nothing is relayed, but the operator is told — the drops are
/// counted, logged once, and the call record says why it has no quality figures.
#[test]
fn rtp_only_from_an_unexpected_address_is_counted_logged_once_and_explained_in_the_record() {
    let lab = Lab::new("media_unexpected");
    let (mut carrier, mut platform) = agents();
    let edge = edge_with(&lab, platform.local, |t| t, 2, &[]);
    let c_rtp = RtpEnd::bind(CARRIER);
    let nat = RtpEnd::socket(DENIED);
    let p_rtp = RtpEnd::bind(PLATFORM);
    let offer = sdp(CARRIER, c_rtp.addr.port(), &[PCMU], "");
    let answer = sdp(PLATFORM, p_rtp.addr.port(), &[PCMU], "");
    let mut call = answered_call(&edge, &mut carrier, &mut platform, &offer, &answer);
    send_g711(&nat, call.edge_public, 0, 7, 0x66, false);
    assert!(arrivals(&p_rtp.rtp, 0).is_empty(), "nothing relayed");
    let dropped = || {
        edge.metric(
            "trunkgate_edge_media_packets_dropped_total",
            &[("reason", "unexpected_source")],
        )
    };
    assert_eventually!(dropped() == 7.0, WAIT, "got {}", dropped());
    carrier.bye(&mut call.carrier);
    platform.answer_bye(WAIT);
    let cdr = edge.wait_cdr("the call", |c| c["callee"] == NUMBER);
    let from_carrier = media_of(&cdr, "carrier");
    assert_eq!(from_carrier["packets"], 0, "{cdr}");
    assert_eq!(from_carrier["unexpectedSourcePackets"], 7, "{cdr}");
    let nat_addr = nat.local_addr().expect("bound").to_string();
    assert_eq!(from_carrier["unexpectedSource"], nat_addr.as_str(), "{cdr}");
    let why = from_carrier["noMediaReason"].as_str().unwrap_or_default();
    assert!(
        why.contains(&nat_addr) && why.contains(&c_rtp.addr.to_string()),
        "the record names where RTP came from and where it was expected: {cdr}"
    );
    let log = edge.log_tail(200);
    assert_eq!(
        log.matches("media from an unexpected address").count(),
        1,
        "logged once per stream direction, not per packet:\n{log}"
    );
}

/// `media: {behindNat: true}`: the carrier's SDP names its private address; its RTP comes from
/// its NAT's outside address, which the trunk's allowedCidrs name (a source outside them may
/// not latch: `media_attacks.rs`). The edge latches onto that and never sends to the private
/// one.
#[test]
fn a_carrier_behind_nat_is_latched_wherever_its_rtp_comes_from() {
    let lab = Lab::new("media_nat");
    let (mut carrier, mut platform) = agents();
    let nat_outside = |mut t: Trunk| {
        t.cidrs.push(format!("{CARRIER_2}/32"));
        t.behind_nat()
    };
    let edge = edge_with(&lab, platform.local, nat_outside, 2, &[]);
    let private = RtpEnd::bind(CARRIER_PRIVATE);
    let outside = RtpEnd::socket(CARRIER_2);
    let p_rtp = RtpEnd::bind(PLATFORM);
    let offer = sdp(CARRIER_PRIVATE, private.addr.port(), &[PCMU], "");
    let answer = sdp(PLATFORM, p_rtp.addr.port(), &[PCMU], "");
    let call = answered_call(&edge, &mut carrier, &mut platform, &offer, &answer);

    let sent = send_g711(&outside, call.edge_public, 0, 5, 7, false);
    let got = arrivals(&p_rtp.rtp, 5);
    assert_eq!(got.len(), 5, "the carrier's RTP from its NAT is relayed");
    assert_eq!(got[4].0, sent[4]);
    send_g711(&p_rtp.rtp, call.edge_internal, 0, 5, 8, false);
    assert_eq!(
        arrivals(&outside, 5).len(),
        5,
        "the platform's RTP goes back through the carrier's NAT"
    );
    assert!(
        arrivals(&private.rtp, 0).is_empty(),
        "nothing goes to the private address in the carrier's SDP"
    );
}

// ---- 3. codecs -----------------------------------------------------------------------------

#[test]
fn the_trunks_codec_list_filters_the_offer_and_nothing_left_is_488() {
    let lab = Lab::new("media_codecs");
    let (mut carrier, mut platform) = agents();
    let edge = edge_with(&lab, platform.local, |t| t.codecs(&["PCMA"]), 2, &[]);
    let c_rtp = RtpEnd::bind(CARRIER);
    let p_rtp = RtpEnd::bind(PLATFORM);

    // Only PCMU: nothing the trunk allows.
    let pcmu_only = sdp(CARRIER, c_rtp.addr.port(), &[PCMU], "");
    let (_, refused) = carrier.call(edge.public, &edge.public_uri(NUMBER), CALLER, &pcmu_only);
    assert_eq!(refused.code(), Some(488), "{}", carrier.report());
    let warning = refused.header("Warning").unwrap_or_default();
    assert!(
        warning.starts_with("399 "),
        "488 says why in a Warning: {}",
        refused.text()
    );
    assert!(
        platform.gets_request("INVITE", QUIET).is_none(),
        "the platform never hears of the refused call"
    );
    assert_eq!(
        edge.metric(
            "trunkgate_edge_refusals_total",
            &[("trunk", TRUNK), ("reason", "no_common_codec")]
        ),
        1.0
    );

    // PCMU, PCMA and telephone-event: the platform is offered PCMA and the events only.
    let offer = sdp(
        CARRIER,
        c_rtp.addr.port(),
        &[PCMU, PCMA, EVENTS],
        "a=fmtp:101 0-16\r\na=ptime:20\r\n",
    );
    let answer = sdp(PLATFORM, p_rtp.addr.port(), &[PCMA, EVENTS], "");
    let mut call = answered_call(&edge, &mut carrier, &mut platform, &offer, &answer);
    let body = &call.invite.msg.body;
    assert_eq!(
        sdp_audio(body).map(|(_, f)| f),
        Some(vec!["8".to_string(), "101".to_string()]),
        "the platform is offered PCMA and telephone-event:\n{body}"
    );
    let attrs = sdp_attributes(body);
    assert!(
        attrs.contains(&"a=rtpmap:8 PCMA/8000".to_string())
            && attrs.contains(&"a=rtpmap:101 telephone-event/8000".to_string())
            && attrs.contains(&"a=fmtp:101 0-16".to_string())
            && attrs.contains(&"a=ptime:20".to_string()),
        "their attributes stay:\n{body}"
    );
    assert!(
        !body.contains("PCMU") && !attrs.iter().any(|a| a.starts_with("a=rtpmap:0 ")),
        "PCMU is gone:\n{body}"
    );
    carrier.bye(&mut call.carrier);
    platform.answer_bye(WAIT);
}

// ---- 4. hold and resume --------------------------------------------------------------------

/// Sends 5 packets each way and returns how many arrived (at the platform, at the carrier).
/// `edge` is the edge's (public, internal) media address of the call.
fn exchange(
    edge: (SocketAddr, SocketAddr),
    c_rtp: &RtpEnd,
    p_rtp: &RtpEnd,
    seq: &mut u16,
    want: (usize, usize),
) -> (usize, usize) {
    send_g711(&c_rtp.rtp, edge.0, *seq, 5, 1, false);
    send_g711(&p_rtp.rtp, edge.1, *seq, 5, 2, false);
    *seq += 5;
    (
        arrivals(&p_rtp.rtp, want.0).len(),
        arrivals(&c_rtp.rtp, want.1).len(),
    )
}

/// The carrier holds (a=sendonly), resumes (a=sendrecv), holds the old way (c=0.0.0.0) and
/// resumes: each re-INVITE reaches the platform rewritten with its direction kept, and RTP
/// toward the carrier stops while it does not take media.
#[test]
fn hold_and_resume_from_the_carrier_by_reinvite() {
    let lab = Lab::new("media_hold_carrier");
    let (mut carrier, mut platform) = agents();
    let edge = edge_with(&lab, platform.local, |t| t, 2, &[]);
    let c_rtp = RtpEnd::bind(CARRIER);
    let p_rtp = RtpEnd::bind(PLATFORM);
    let (cp, pp) = (c_rtp.addr.port(), p_rtp.addr.port());
    let mut call = answered_call(
        &edge,
        &mut carrier,
        &mut platform,
        &sdp(CARRIER, cp, &[PCMU], ""),
        &sdp(PLATFORM, pp, &[PCMU], ""),
    );
    let media = (call.edge_public, call.edge_internal);
    let mut seq = 0;
    assert_eq!(
        exchange(media, &c_rtp, &p_rtp, &mut seq, (5, 5)),
        (5, 5),
        "media before the hold"
    );
    let hidden = [CARRIER.to_string()];

    // Hold: the carrier only sends (music on hold); the platform answers recvonly.
    let cd = &mut call.carrier;
    let (reinvite, ok) = reinvite_through(
        &mut carrier,
        cd,
        &mut platform,
        &sdp(CARRIER, cp, &[PCMU], "a=sendonly\r\n"),
        &sdp(PLATFORM, pp, &[PCMU], "a=recvonly\r\n"),
    );
    let body = &reinvite.msg.body;
    assert!(
        sdp_has(body, "a=sendonly"),
        "the hold reaches the platform:\n{body}"
    );
    assert_sdp_names_edge(body, EDGE_INTERNAL_IP, &edge, &hidden, "the platform");
    assert_eq!(
        sdp_rtp_addr(body),
        Some(call.edge_internal),
        "the stream stays on the same edge port:\n{body}"
    );
    assert!(
        sdp_has(&ok.body, "a=recvonly"),
        "the platform's answer reaches the carrier:\n{}",
        ok.body
    );
    assert_sdp_names_edge(
        &ok.body,
        EDGE_PUBLIC_IP,
        &edge,
        &[PLATFORM.to_string()],
        "the carrier",
    );
    assert_eq!(
        exchange(media, &c_rtp, &p_rtp, &mut seq, (5, 0)),
        (5, 0),
        "on hold: the carrier's music reaches the platform, nothing goes to the carrier"
    );

    // Resume.
    let (reinvite, _) = reinvite_through(
        &mut carrier,
        cd,
        &mut platform,
        &sdp(CARRIER, cp, &[PCMU], "a=sendrecv\r\n"),
        &sdp(PLATFORM, pp, &[PCMU], "a=sendrecv\r\n"),
    );
    assert!(
        sdp_has(&reinvite.msg.body, "a=sendrecv"),
        "{}",
        reinvite.msg.body
    );
    assert_eq!(
        exchange(media, &c_rtp, &p_rtp, &mut seq, (5, 5)),
        (5, 5),
        "media after the resume"
    );

    // Old-style hold: c=0.0.0.0.
    let zero = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
    let (reinvite, _) = reinvite_through(
        &mut carrier,
        cd,
        &mut platform,
        &sdp(zero, cp, &[PCMU], ""),
        &sdp(PLATFORM, pp, &[PCMU], ""),
    );
    let body = &reinvite.msg.body;
    assert_eq!(
        sdp_connections(body),
        vec!["0.0.0.0".to_string()],
        "the c=0.0.0.0 hold reaches the platform as such:\n{body}"
    );
    let (_, to_carrier) = exchange(media, &c_rtp, &p_rtp, &mut seq, (0, 0));
    assert_eq!(
        to_carrier, 0,
        "nothing goes to a carrier that said c=0.0.0.0"
    );

    reinvite_through(
        &mut carrier,
        cd,
        &mut platform,
        &sdp(CARRIER, cp, &[PCMU], ""),
        &sdp(PLATFORM, pp, &[PCMU], ""),
    );
    assert_eq!(
        exchange(media, &c_rtp, &p_rtp, &mut seq, (5, 5)),
        (5, 5),
        "media after the second resume"
    );

    carrier.bye(cd);
    platform.answer_bye(WAIT);
}

/// The platform holds with a=inactive: the re-INVITE reaches the carrier rewritten with
/// a=inactive, no RTP flows either way; its resume brings both directions back.
#[test]
fn hold_and_resume_from_the_platform_by_reinvite() {
    let lab = Lab::new("media_hold_platform");
    let (mut carrier, mut platform) = agents();
    let edge = edge_with(&lab, platform.local, |t| t, 2, &[]);
    let c_rtp = RtpEnd::bind(CARRIER);
    let p_rtp = RtpEnd::bind(PLATFORM);
    let (cp, pp) = (c_rtp.addr.port(), p_rtp.addr.port());
    let mut call = answered_call(
        &edge,
        &mut carrier,
        &mut platform,
        &sdp(CARRIER, cp, &[PCMU], ""),
        &sdp(PLATFORM, pp, &[PCMU], ""),
    );
    let media = (call.edge_public, call.edge_internal);
    let mut seq = 0;
    assert_eq!(
        exchange(media, &c_rtp, &p_rtp, &mut seq, (5, 5)),
        (5, 5),
        "media before the hold"
    );

    let pd = &mut call.platform;
    let (reinvite, ok) = reinvite_through(
        &mut platform,
        pd,
        &mut carrier,
        &sdp(PLATFORM, pp, &[PCMU], "a=inactive\r\n"),
        &sdp(CARRIER, cp, &[PCMU], "a=inactive\r\n"),
    );
    let body = &reinvite.msg.body;
    assert!(
        sdp_has(body, "a=inactive"),
        "the hold reaches the carrier:\n{body}"
    );
    assert_sdp_names_edge(
        body,
        EDGE_PUBLIC_IP,
        &edge,
        &[PLATFORM.to_string()],
        "the carrier",
    );
    assert_eq!(
        sdp_rtp_addr(body),
        Some(call.edge_public),
        "same edge port:\n{body}"
    );
    assert!(
        sdp_has(&ok.body, "a=inactive"),
        "the carrier's answer reaches the platform:\n{}",
        ok.body
    );
    assert_sdp_names_edge(
        &ok.body,
        EDGE_INTERNAL_IP,
        &edge,
        &[CARRIER.to_string()],
        "the platform",
    );
    assert_eq!(
        exchange(media, &c_rtp, &p_rtp, &mut seq, (0, 0)),
        (0, 0),
        "inactive: no RTP either way"
    );

    let (reinvite, _) = reinvite_through(
        &mut platform,
        pd,
        &mut carrier,
        &sdp(PLATFORM, pp, &[PCMU], "a=sendrecv\r\n"),
        &sdp(CARRIER, cp, &[PCMU], "a=sendrecv\r\n"),
    );
    assert!(
        sdp_has(&reinvite.msg.body, "a=sendrecv"),
        "{}",
        reinvite.msg.body
    );
    assert_eq!(
        exchange(media, &c_rtp, &p_rtp, &mut seq, (5, 5)),
        (5, 5),
        "media after the resume"
    );

    carrier.bye(&mut call.carrier);
    platform.answer_bye(WAIT);
}

// ---- 5. media timeout ----------------------------------------------------------------------

/// `--media-timeout 1`: a call with RTP (one way suffices) stays up; once the RTP stops, the
/// edge ends it after about a second with a BYE to each side carrying a Reason.
#[test]
fn a_call_without_rtp_is_ended_by_the_edge_after_the_media_timeout() {
    let lab = Lab::new("media_timeout");
    let (mut carrier, mut platform) = agents();
    let edge = edge_with(&lab, platform.local, |t| t, 2, &["--media-timeout", "1"]);
    let c_rtp = RtpEnd::bind(CARRIER);
    let p_rtp = RtpEnd::bind(PLATFORM);
    let call = answered_call(
        &edge,
        &mut carrier,
        &mut platform,
        &sdp(CARRIER, c_rtp.addr.port(), &[PCMU], ""),
        &sdp(PLATFORM, p_rtp.addr.port(), &[PCMU], ""),
    );
    // Two seconds of the carrier talking keep the call up.
    send_g711(&c_rtp.rtp, call.edge_public, 0, 100, 1, true);
    let silence = Instant::now();
    assert!(
        carrier.gets_request("BYE", Duration::ZERO).is_none()
            && platform.gets_request("BYE", Duration::ZERO).is_none(),
        "a call with RTP is not ended:\n{}{}",
        carrier.report(),
        platform.report()
    );

    let bye_c = carrier.answer_bye(Duration::from_secs(4));
    let after = silence.elapsed();
    let bye_p = platform.answer_bye(WAIT);
    assert!(
        after >= Duration::from_millis(900),
        "the BYE came {after:?} after the last RTP, before the 1 s timeout"
    );
    for (who, bye) in [("carrier", &bye_c), ("platform", &bye_p)] {
        let reason = bye.msg.header("Reason").unwrap_or_default();
        assert!(
            reason.starts_with("SIP") && reason.contains("cause="),
            "the {who}'s BYE says why in a Reason header:\n{}",
            bye.msg.text()
        );
    }
    assert_eq!(
        bye_c.msg.header("Call-ID"),
        Some(call.carrier.call_id.as_str())
    );
    assert_eq!(
        bye_p.msg.header("Call-ID"),
        Some(call.platform.call_id.as_str())
    );
    let cdr = edge.wait_cdr("the call", |c| c["callee"] == NUMBER);
    assert_eq!(cdr["endedBy"], "edge", "{cdr}");
    assert_eq!(cdr["finalStatus"], 200, "{cdr}");
    assert_eq!(
        edge.metric("trunkgate_edge_media_timeouts_total", &[("trunk", TRUNK)]),
        1.0
    );
}

// ---- 6, 7. ports -----------------------------------------------------------------------------

/// An `--rtp-ports` range with exactly two pairs (one call: a pair on each side).
fn one_call_of_ports() -> String {
    let first = free_ports(5);
    let even = first + first % 2;
    format!("{even}-{}", even + 3)
}

#[test]
fn a_call_beyond_the_rtp_ports_is_refused_with_503_and_counted() {
    let lab = Lab::new("media_ports_exhausted");
    let (mut carrier, mut platform) = agents();
    let ports = one_call_of_ports();
    let edge = edge_with(&lab, platform.local, |t| t, 1, &["--rtp-ports", &ports]);
    let c_rtp = RtpEnd::bind(CARRIER);
    let p_rtp = RtpEnd::bind(PLATFORM);
    let offer = sdp(CARRIER, c_rtp.addr.port(), &[PCMU], "");
    let answer = sdp(PLATFORM, p_rtp.addr.port(), &[PCMU], "");
    let mut first = answered_call(&edge, &mut carrier, &mut platform, &offer, &answer);

    let mut second_carrier = Ua::bind("carrier-2", CARRIER, CALLER);
    let (_, refused) = second_carrier.call(edge.public, &edge.public_uri(NUMBER), CALLER, &offer);
    assert_eq!(refused.code(), Some(503), "{}", second_carrier.report());
    assert!(
        refused
            .header("Warning")
            .is_some_and(|w| w.starts_with("399 ")),
        "the 503 says why:\n{}",
        refused.text()
    );
    assert!(
        platform.gets_request("INVITE", QUIET).is_none(),
        "the refused call never reaches the platform"
    );
    assert_eq!(
        edge.metric(
            "trunkgate_edge_refusals_total",
            &[("trunk", TRUNK), ("reason", "ports_exhausted")]
        ),
        1.0
    );
    // The first call is not disturbed.
    send_g711(&c_rtp.rtp, first.edge_public, 0, 3, 1, false);
    assert_eq!(
        arrivals(&p_rtp.rtp, 3).len(),
        3,
        "the first call still carries media"
    );
    carrier.bye(&mut first.carrier);
    platform.answer_bye(WAIT);
}

#[test]
fn ports_of_an_ended_call_are_reused_only_after_the_quarantine() {
    let lab = Lab::new("media_quarantine");
    let (mut carrier, mut platform) = agents();
    let ports = one_call_of_ports();
    let edge = edge_with(
        &lab,
        platform.local,
        |t| t,
        1,
        &["--rtp-ports", &ports, "--rtp-quarantine-seconds", "1"],
    );
    let c_rtp = RtpEnd::bind(CARRIER);
    let p_rtp = RtpEnd::bind(PLATFORM);
    let offer = sdp(CARRIER, c_rtp.addr.port(), &[PCMU], "");
    let answer = sdp(PLATFORM, p_rtp.addr.port(), &[PCMU], "");
    let mut first = answered_call(&edge, &mut carrier, &mut platform, &offer, &answer);
    send_g711(&c_rtp.rtp, first.edge_public, 0, 3, 1, false);
    assert_eq!(arrivals(&p_rtp.rtp, 3).len(), 3);
    carrier.bye(&mut first.carrier);
    platform.answer_bye(WAIT);
    let ended = Instant::now();

    let (_, refused) = carrier.call(edge.public, &edge.public_uri(NUMBER), CALLER, &offer);
    assert_eq!(
        refused.code(),
        Some(503),
        "right after the call its ports rest in quarantine\n{}",
        carrier.report()
    );
    assert!(
        ended.elapsed() < Duration::from_secs(1),
        "the refused call came within the quarantine"
    );

    std::thread::sleep(Duration::from_millis(1300).saturating_sub(ended.elapsed()));
    let (mut cd, tx) = carrier.invite(edge.public, &edge.public_uri(NUMBER), CALLER, &offer);
    if let Some(invite) = platform.gets_request("INVITE", WAIT) {
        platform.accept(&invite, &answer);
    }
    let resp = carrier.final_response(&mut cd, &tx, WAIT);
    assert_eq!(
        resp.code(),
        Some(200),
        "after the quarantine the ports serve a new call (1 s quarantine, {:?} later)\n{}",
        ended.elapsed(),
        carrier.report(),
    );
    platform.expect_request("ACK", WAIT);
    let third = sdp_rtp_addr(&resp.body).expect("an SDP answer");
    assert_eq!(third, first.edge_public, "on the one pair there is");
    send_g711(&c_rtp.rtp, third, 0, 3, 3, false);
    assert_eq!(arrivals(&p_rtp.rtp, 3).len(), 3, "and media flows on it");
    carrier.bye(&mut cd);
    platform.answer_bye(WAIT);
}

// ---- 8. malformed SDP ----------------------------------------------------------------------

#[test]
fn malformed_sdp_is_refused_with_400_and_the_edge_carries_on() {
    let lab = Lab::new("media_bad_sdp");
    let (mut carrier, mut platform) = agents();
    let mut edge = edge_with(&lab, platform.local, |t| t, 2, &[]);
    let c_rtp = RtpEnd::bind(CARRIER);
    let p_rtp = RtpEnd::bind(PLATFORM);
    let port = c_rtp.addr.port();
    let bad = [
        "this is not SDP at all\r\n".to_string(),
        // No o= line.
        "v=0\r\ns=-\r\nc=IN IP4 127.0.0.10\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n".to_string(),
        // A stream without any c= line.
        "v=0\r\no=- 1 1 IN IP4 127.0.0.10\r\ns=-\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
            .to_string(),
        // m= port not a number.
        format!(
            "v=0\r\no=- 1 1 IN IP4 127.0.0.10\r\ns=-\r\nc=IN IP4 127.0.0.10\r\nt=0 0\r\nm=audio {port}x RTP/AVP 0\r\n"
        ),
        // m= without formats.
        format!(
            "v=0\r\no=- 1 1 IN IP4 127.0.0.10\r\ns=-\r\nc=IN IP4 127.0.0.10\r\nt=0 0\r\nm=audio {port} RTP/AVP\r\n"
        ),
        // An IPv6 address in a c=IN IP4 line.
        format!(
            "v=0\r\no=- 1 1 IN IP4 127.0.0.10\r\ns=-\r\nc=IN IP4 ::1\r\nt=0 0\r\nm=audio {port} RTP/AVP 0\r\n"
        ),
        // A line that is not <letter>=<value>.
        format!(
            "v=0\r\no=- 1 1 IN IP4 127.0.0.10\r\ns=-\r\nc=IN IP4 127.0.0.10\r\nt=0 0\r\nm=audio {port} RTP/AVP 0\r\nnonsense\r\n"
        ),
    ];
    for body in &bad {
        let (_, resp) = carrier.call(edge.public, &edge.public_uri(NUMBER), CALLER, body);
        assert_eq!(
            resp.code(),
            Some(400),
            "an INVITE with this SDP gets 400:\n{body}\n{}",
            carrier.report()
        );
        assert!(
            resp.header("Warning")
                .is_some_and(|w| w.starts_with("399 ")),
            "the 400 says why in a Warning:\n{}",
            resp.text()
        );
        assert!(edge.running(), "the edge survives:\n{body}");
    }
    assert!(
        platform.gets_request("INVITE", QUIET).is_none(),
        "none of them reaches the platform"
    );
    assert_eq!(
        edge.metric(
            "trunkgate_edge_refusals_total",
            &[("trunk", TRUNK), ("reason", "sdp_malformed")]
        ),
        bad.len() as f64
    );
    // The next good call goes through.
    let mut call = answered_call(
        &edge,
        &mut carrier,
        &mut platform,
        &sdp(CARRIER, port, &[PCMU], ""),
        &sdp(PLATFORM, p_rtp.addr.port(), &[PCMU], ""),
    );
    carrier.bye(&mut call.carrier);
    platform.answer_bye(WAIT);
}

// ---- 9. no relay ---------------------------------------------------------------------------

#[test]
fn a_trunk_without_relay_passes_sdp_untouched() {
    let lab = Lab::new("media_no_relay");
    let (mut carrier, mut platform) = agents();
    let edge = edge_with(&lab, platform.local, |t| t.relay(false), 2, &[]);
    let c_rtp = RtpEnd::bind(CARRIER);
    let p_rtp = RtpEnd::bind(PLATFORM);
    let offer = sdp(
        CARRIER,
        c_rtp.addr.port(),
        &[PCMU, PCMA, EVENTS],
        "a=rtcp:9999\r\na=sendrecv\r\n",
    );
    let answer = sdp(
        PLATFORM,
        p_rtp.addr.port(),
        &[PCMA, EVENTS],
        "a=sendrecv\r\n",
    );
    let mut call = answered_call(&edge, &mut carrier, &mut platform, &offer, &answer);
    assert_eq!(
        call.invite.msg.body, offer,
        "the platform gets the carrier's SDP as it was"
    );
    assert_eq!(
        call.answer.body, answer,
        "the carrier gets the platform's SDP as it was"
    );
    assert_eq!(
        call.edge_internal, c_rtp.addr,
        "the platform is told to send its media straight to the carrier"
    );
    carrier.bye(&mut call.carrier);
    platform.answer_bye(WAIT);
    let cdr = edge.wait_cdr("the call", |c| c["callee"] == NUMBER);
    assert!(cdr["media"].is_null(), "no relay, no media figures: {cdr}");
}

// ---- sipp's own RTP ------------------------------------------------------------------------

/// sipp as the carrier plays a G.711 file with `rtp_stream` (real RTP from sipp's RTP stack,
/// from a port of its own choosing); the platform's media is the test's socket, which gets
/// every packet with the file's bytes, and sends them back to the edge for the carrier.
#[test]
fn a_sipp_call_playing_g711_reaches_the_platform_and_the_platforms_rtp_goes_back() {
    use trunkgate_tests::sipp::scenario;
    let lab = Lab::new("media_sipp_rtp_stream");
    let platform = Sipp::reserve(PLATFORM);
    let edge = edge_with(&lab, platform, |t| t, 2, &[]);
    let p_rtp = RtpEnd::bind(PLATFORM);
    // One second of mu-law: 50 packets of 160 bytes.
    let audio: Vec<u8> = (0..8000u32)
        .map(|i| (i * 7 + i / 160) as u8 | 0x01)
        .collect();
    let file = lab.path("tone.ulaw");
    std::fs::write(&file, &audio).expect("write the audio file");
    let port = p_rtp.addr.port().to_string();
    let uas = Sipp::uas_at(
        &lab,
        "platform",
        scenario(
            &lab,
            "uas_answer_media.xml",
            &[("MEDIA_IP", "127.0.0.20"), ("MEDIA_PORT", &port)],
        ),
        platform,
    )
    .start();
    let ruri = edge.public_uri(NUMBER);
    let file = file.to_string_lossy().into_owned();
    let uac = Sipp::uac(
        &lab,
        "carrier",
        scenario(
            &lab,
            "uac_rtp_stream.xml",
            &[
                ("RURI", &ruri),
                ("FROM_USER", CALLER),
                ("RTP_FILE", &file),
                ("HOLD_MS", "2500"),
            ],
        ),
        CARRIER,
        edge.public,
    )
    .start();

    let got = collect(
        &p_rtp.rtp,
        50,
        Duration::from_secs(5),
        Duration::from_millis(200),
    );
    // Back to the edge, for the carrier (its sipp does not count what it receives).
    for (p, src) in &got {
        send(&p_rtp.rtp, *src, p);
    }
    let uac = uac.wait();
    let uas = uas.wait();
    uac.assert_ok();
    uas.assert_ok();
    let edge_internal = sdp_rtp_addr(&uas.request("INVITE").body).expect("an SDP offer");
    assert_eq!(
        got.len(),
        50,
        "the platform got {} of sipp's 50 packets",
        got.len()
    );
    assert!(
        got.iter().all(|(_, src)| *src == edge_internal),
        "from the edge's address in the platform's SDP"
    );
    let payload: Vec<u8> = got.iter().flat_map(|(p, _)| p[12..].to_vec()).collect();
    assert!(
        payload == audio,
        "the payloads are the file's bytes, in order"
    );
    let seqs: Vec<u16> = got.iter().filter_map(|(p, _)| rtp_seq(p)).collect();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0].wrapping_add(1)),
        "consecutive sequence numbers: {seqs:?}"
    );
    assert!(got.iter().all(|(p, _)| p[1] & 0x7f == 0), "PCMU");

    let cdr = edge.wait_cdr("the call", |c| c["callee"] == NUMBER);
    assert_eq!(media_of(&cdr, "carrier")["packets"], 50, "{cdr}");
    assert_eq!(
        media_of(&cdr, "platform")["packets"],
        50,
        "the platform's packets reached the edge for the carrier: {cdr}"
    );
}

/// An edge asked for the kernel fast path but without CAP_BPF/CAP_NET_ADMIN says so once,
/// counts it, and relays in userspace.
#[test]
fn without_capabilities_the_fast_path_is_reported_once_and_media_is_relayed_in_userspace() {
    let lab = Lab::new("media_fast_path_no_caps");
    let (mut carrier, mut platform) = agents();
    let trunk = Trunk::new("acme", "pacific", "127.0.0.10/32", platform.local);
    lab.write_config("acme-trunk.yaml", &trunk.yaml());
    lab.write_config(
        "acme-numbers.yaml",
        &Numbers::byoc("acme", "numbers", "pacific", &["+6498879300-+6498879399"]).yaml(),
    );
    let edge = Edge::start(
        &lab,
        EdgeOptions {
            extra_args: vec!["--kernel-fast-path".into(), "lo".into()],
            no_capabilities: true,
            ..EdgeOptions::default()
        },
    );
    let c_rtp = RtpEnd::bind(CARRIER);
    let p_rtp = RtpEnd::bind(PLATFORM);
    let offer = sdp(CARRIER, c_rtp.addr.port(), &[PCMU], "");
    let answer = sdp(PLATFORM, p_rtp.addr.port(), &[PCMU], "");
    let call = answered_call(&edge, &mut carrier, &mut platform, &offer, &answer);
    let sent = send_g711(&c_rtp.rtp, call.edge_public, 0, 20, 9, false);
    assert_eq!(
        arrivals(&p_rtp.rtp, sent.len()).len(),
        sent.len(),
        "relayed in userspace"
    );
    assert_eq!(
        edge.metric("trunkgate_edge_kernel_fast_path", &[("state", "load")]),
        1.0,
        "the refusal is counted"
    );
    let log = edge.log_tail(2000);
    assert_eq!(
        log.matches("RTP fast path not in use").count(),
        1,
        "said once:\n{log}"
    );
    assert_eq!(
        edge.metric(
            "trunkgate_edge_media_kernel_packets_total",
            &[("what", "installs")]
        ),
        0.0
    );
}

/// A carrier on an SRTP trunk: its packets are opened by the edge, a forged one and a replayed
/// one are dropped, counted by reason, in the call record, and nothing of them reaches the
/// platform. The carrier's crypto is the media crate's (no peer here can forge on demand).
#[test]
fn a_forged_and_a_replayed_srtp_packet_are_dropped_counted_and_never_reach_the_platform() {
    use trunkgate_media::srtp::{Crypto, Key, LegSrtp, Suite};
    let lab = Lab::new("media_srtp_forged");
    let (mut carrier, mut platform) = agents();
    let edge = edge_with(&lab, platform.local, |t| t.srtp("Required"), 2, &[]);
    let c_rtp = RtpEnd::bind(CARRIER);
    let p_rtp = RtpEnd::bind(PLATFORM);
    let theirs = Key::random(Suite::AesCm128HmacSha1_80);
    let line = Crypto {
        tag: 1,
        key: theirs.clone(),
    }
    .to_value();
    let offer = sdp(
        CARRIER,
        c_rtp.addr.port(),
        &[PCMU],
        &format!("a=crypto:{line}\r\n"),
    )
    .replace("RTP/AVP", "RTP/SAVP");
    let answer = sdp(PLATFORM, p_rtp.addr.port(), &[PCMU], "");
    let mut call = answered_call(&edge, &mut carrier, &mut platform, &offer, &answer);
    assert!(
        !call.invite.msg.body.contains("a=crypto") && call.invite.msg.body.contains("RTP/AVP"),
        "the platform is offered plain RTP:\n{}",
        call.invite.msg.body
    );
    let ours = call
        .answer
        .body
        .lines()
        .find_map(|l| l.trim_end().strip_prefix("a=crypto:"))
        .map(|v| Crypto::parse(v).expect("the edge's a=crypto"))
        .unwrap_or_else(|| panic!("the answer carries the edge's key:\n{}", call.answer.body));
    let bytes = |v: &[(Vec<u8>, SocketAddr)]| v.iter().map(|(b, _)| b.clone()).collect::<Vec<_>>();
    let mut seal = LegSrtp::new(ours.key, theirs).expect("the carrier's crypto");
    let sealed: Vec<Vec<u8>> = (0..5u16)
        .map(|seq| {
            seal.protect(&g711(seq, 9, 0), false)
                .expect("seal")
                .to_vec()
        })
        .collect();
    for p in &sealed[..3] {
        send(&c_rtp.rtp, call.edge_public, p);
    }
    let got = arrivals(&p_rtp.rtp, 3);
    assert_eq!(
        bytes(&got),
        (0..3u16).map(|seq| g711(seq, 9, 0)).collect::<Vec<_>>(),
        "the platform gets the carrier's packets decrypted"
    );
    let mut forged = sealed[3].clone();
    forged[40] ^= 0x01;
    send(&c_rtp.rtp, call.edge_public, &forged);
    send(&c_rtp.rtp, call.edge_public, &sealed[0]);
    send(&c_rtp.rtp, call.edge_public, &sealed[4]);
    let got = arrivals(&p_rtp.rtp, 1);
    assert_eq!(
        bytes(&got),
        vec![g711(4, 9, 0)],
        "only the genuine new packet"
    );
    assert!(arrivals(&p_rtp.rtp, 0).is_empty(), "nothing more");
    for reason in ["srtp_auth", "srtp_replay"] {
        assert_eventually!(
            edge.metric(
                "trunkgate_edge_media_packets_dropped_total",
                &[("reason", reason)]
            ) == 1.0,
            Duration::from_secs(3),
            "{reason} counted once"
        );
    }
    carrier.bye(&mut call.carrier);
    platform.answer_bye(WAIT);
    let cdr = edge.wait_cdr("the call", |c| c["callee"] == NUMBER);
    let from_carrier = media_of(&cdr, "carrier");
    assert_eq!(from_carrier["srtp"], "AES_CM_128_HMAC_SHA1_80", "{cdr}");
    assert_eq!(from_carrier["srtpRejectedPackets"], 2, "{cdr}");
    assert_eq!(from_carrier["packets"], 4, "{cdr}");
}

/// An offer whose only address is IPv6 to an edge whose media is IPv4 (the issue: answered
/// with IPv4, the call then ran without media) is refused 488 with a Warning that says why, and
/// the platform never hears of it.
#[test]
fn an_ipv6_only_offer_to_an_ipv4_edge_is_refused_488() {
    let lab = Lab::new("media_ipv6_only");
    let (mut carrier, mut platform) = agents();
    let edge = edge_with(&lab, platform.local, |t| t, 2, &[]);
    let sdp =
        "v=0\r\no=- 1 1 IN IP6 ::1\r\ns=-\r\nc=IN IP6 ::1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\n";
    let (_, answer) = carrier.call(edge.public, &edge.public_uri(NUMBER), CALLER, sdp);
    assert_eq!(answer.code(), Some(488), "{}", answer.text());
    assert!(
        answer
            .header("Warning")
            .is_some_and(|w| w.contains("IPv6 media is not available")),
        "{}",
        answer.text()
    );
    assert!(
        platform.gets_request("INVITE", QUIET).is_none(),
        "the platform is not called"
    );
}
