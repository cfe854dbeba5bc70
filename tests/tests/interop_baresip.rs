//! Interop with a real SIP phone: baresip 1.0 calls baresip through the edge, in both
//! directions, with real audio. Each phone sends its own sine tone and records what it hears;
//! the test checks that each heard the other's tone (a Goertzel scan of the recording), that
//! the callee's hang-up crossed the edge as a BYE answered 200 on both legs, and that the
//! edge's call detail record has a quality score (MOS) for both media directions.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde_json::Value;
use trunkgate_tests::baresip::{Baresip, dominant_frequency};
use trunkgate_tests::config::documents;
use trunkgate_tests::rtp::sdp_rtp_addr;
use trunkgate_tests::*;

/// The carrier's subscriber (caller of inbound calls, callee of outbound ones).
const SUBSCRIBER: &str = "+6421555123";
/// A BYOC number of the trunk: called inbound, presented outbound.
const NUMBER: &str = "+6498879333";
/// The tones: not harmonics of each other, so one cannot pass for the other.
const CARRIER_TONE_HZ: u32 = 1000;
const PLATFORM_TONE_HZ: u32 = 600;
/// Audio each phone must have heard before the call is hung up.
const LISTEN_SECONDS: f64 = 2.0;
/// SIP over loopback and baresip's auto-answer take well under this.
const SETUP: Duration = Duration::from_secs(10);

/// One trunk `lab/carrier` for the carrier at 127.0.0.10, delivering inbound calls to
/// `platform` and placing outbound calls at `target` (when given), owning +6498879300-99.
fn config(lab: &Lab, platform: SocketAddr, target: Option<SocketAddr>) {
    let mut trunk = Trunk::new("lab", "carrier", "127.0.0.10/32", platform);
    if let Some(t) = target {
        trunk = trunk.target(t);
    }
    lab.write_config(
        "lab.yaml",
        &documents(&[
            trunk.yaml(),
            Numbers::byoc("lab", "byoc", "carrier", &["+6498879300-+6498879399"]).yaml(),
        ]),
    );
}

/// `caller` dials `uri`; once both talk and each heard LISTEN_SECONDS of the other, the callee
/// hangs up. Returns when both saw the call close.
fn talk_then_callee_hangs_up(caller: &mut Baresip, callee: &mut Baresip, uri: &str) {
    caller.dial(uri);
    caller.wait_event("CALL_ESTABLISHED", SETUP);
    callee.wait_event("CALL_ESTABLISHED", SETUP);
    // RTP from the other side reached each phone (through the edge's relay).
    caller.wait_event("CALL_RTPESTAB", SETUP);
    callee.wait_event("CALL_RTPESTAB", SETUP);
    assert_eventually!(
        caller.heard_seconds() >= LISTEN_SECONDS && callee.heard_seconds() >= LISTEN_SECONDS,
        Duration::from_secs(15),
        "each phone hears {LISTEN_SECONDS} s of the other; the caller heard {:.2} s, the callee \
         {:.2} s",
        caller.heard_seconds(),
        callee.heard_seconds()
    );
    callee.hangup();
    let closed = caller.wait_event("CALL_CLOSED", SETUP);
    // baresip's words for "the peer sent BYE" (ECONNRESET), as opposed to a timeout or error.
    assert_eq!(
        closed["param"],
        "Connection reset by peer",
        "the caller's call ends by the callee's BYE: {closed}\n{}",
        caller.trace_summary()
    );
    callee.wait_event("CALL_CLOSED", SETUP);
}

/// `by` sent a BYE that `to` received, and each got or sent its 200.
fn assert_bye_crossed(by: &Baresip, to: &Baresip) {
    let sent = by.sip_trace();
    let answered = sent
        .iter()
        .any(|m| !m.sent && m.code() == Some(200) && m.cseq_method() == Some("BYE"));
    assert!(
        sent.iter().any(|m| m.sent && m.method() == Some("BYE")) && answered,
        "{} sent BYE and got 200 from the edge:\n{}",
        by.name,
        by.trace_summary()
    );
    let got = to.sip_trace();
    let answered = got
        .iter()
        .any(|m| m.sent && m.code() == Some(200) && m.cseq_method() == Some("BYE"));
    assert!(
        got.iter().any(|m| !m.sent && m.method() == Some("BYE")) && answered,
        "{} received the BYE from the edge and answered 200:\n{}",
        to.name,
        to.trace_summary()
    );
}

/// The SDP `who` received (the offer or the answer) names the edge's `ip` and a port of its
/// relay: the audio went through the edge, not phone to phone.
fn assert_given_edge_media(who: &Baresip, edge: &Edge, ip: IpAddr) {
    let trace = who.sip_trace();
    let addr = trace
        .iter()
        .filter(|m| !m.sent && m.body.contains("m=audio"))
        .find_map(|m| sdp_rtp_addr(&m.body))
        .unwrap_or_else(|| panic!("{} received no SDP:\n{}", who.name, who.trace_summary()));
    let (lo, hi) = edge.rtp_ports;
    assert!(
        addr.ip() == ip && (lo..=hi).contains(&addr.port()),
        "{} was given {addr}, not the edge's {ip} with a port of {lo}-{hi}",
        who.name
    );
}

/// What `who` heard is `tone_hz` (within the 10 Hz scan step), loud and clean.
fn assert_heard(who: &Baresip, tone_hz: u32) {
    let wav = who.recording();
    assert!(
        wav.seconds() >= LISTEN_SECONDS,
        "{} recorded {:.2} s",
        who.name,
        wav.seconds()
    );
    assert!(
        wav.rms() > 1000.0,
        "{} heard near silence (RMS {:.0})",
        who.name,
        wav.rms()
    );
    let (freq, share) = dominant_frequency(&wav.mono(), wav.rate, 100, wav.rate / 2 - 100, 10);
    assert!(
        freq.abs_diff(tone_hz) <= 10,
        "{} heard mostly {freq} Hz, not the {tone_hz} Hz the other phone sent ({:.2} s at {} Hz, \
         {:.0}% of the energy)",
        who.name,
        wav.seconds(),
        wav.rate,
        share * 100.0
    );
    eprintln!(
        "[{}] heard {freq} Hz for {:.2} s ({:.0}% of the energy, RMS {:.0})",
        who.name,
        wav.seconds(),
        share * 100.0,
        wav.rms()
    );
    // G.711 and jitter-buffer edges leave a little noise; a clean relay keeps the tone on top.
    assert!(
        share > 0.5,
        "{} heard {freq} Hz but only as {:.0}% of the energy",
        who.name,
        share * 100.0
    );
}

/// The record has both media directions with packets and a plausible MOS.
fn assert_media_scored(cdr: &Value) {
    for from in ["carrier", "platform"] {
        let m = cdr["media"]
            .as_array()
            .and_then(|m| m.iter().find(|e| e["from"] == from))
            .unwrap_or_else(|| panic!("no media entry from the {from} in the record: {cdr}"));
        // 50 packets a second for at least LISTEN_SECONDS.
        assert!(
            m["packets"].as_u64().unwrap_or(0) >= 100,
            "the {from}'s RTP was relayed: {m}"
        );
        let mos = m["mos"]
            .as_f64()
            .unwrap_or_else(|| panic!("the {from}'s direction has a MOS: {m}"));
        assert!(
            (3.0..=4.6).contains(&mos),
            "G.711 over loopback scores a good MOS: {m}"
        );
    }
}

#[test]
fn baresip_carrier_calls_baresip_platform_and_each_hears_the_others_tone() {
    let lab = Lab::new("baresip_inbound");
    let mut platform = Baresip::phone(&lab, "platform", PLATFORM, NUMBER)
        .tone(PLATFORM_TONE_HZ)
        .auto_answer()
        .start();
    config(&lab, platform.sip, None);
    let edge = Edge::start(&lab, EdgeOptions::default());
    let mut carrier = Baresip::phone(&lab, "carrier", CARRIER, SUBSCRIBER)
        .tone(CARRIER_TONE_HZ)
        .start();

    talk_then_callee_hangs_up(&mut carrier, &mut platform, &edge.public_uri(NUMBER));
    assert_given_edge_media(&carrier, &edge, EDGE_PUBLIC_IP);
    assert_given_edge_media(&platform, &edge, EDGE_INTERNAL_IP);
    assert_bye_crossed(&platform, &carrier);
    assert_heard(&platform, CARRIER_TONE_HZ);
    assert_heard(&carrier, PLATFORM_TONE_HZ);

    let cdr = edge.wait_cdr("the baresip call", |c| c["callee"] == NUMBER);
    assert_eq!(cdr["direction"], "inbound", "{cdr}");
    assert_eq!(cdr["caller"], SUBSCRIBER, "{cdr}");
    assert_eq!(cdr["trunk"], "lab/carrier", "{cdr}");
    assert_eq!(cdr["finalStatus"], 200, "{cdr}");
    assert_eq!(cdr["endedBy"], "platform", "{cdr}");
    assert_media_scored(&cdr);
}

#[test]
fn baresip_platform_calls_baresip_carrier_and_each_hears_the_others_tone() {
    let lab = Lab::new("baresip_outbound");
    let mut carrier = Baresip::phone(&lab, "carrier", CARRIER_TARGET, SUBSCRIBER)
        .tone(CARRIER_TONE_HZ)
        .auto_answer()
        .start();
    // Inbound calls are not placed here; the destination only has to be valid.
    config(&lab, SocketAddr::new(PLATFORM, 5999), Some(carrier.sip));
    let edge = Edge::start(&lab, EdgeOptions::default());
    // The platform presents a BYOC number of the trunk, which picks the trunk (its owner).
    let mut platform = Baresip::phone(&lab, "platform", PLATFORM, NUMBER)
        .tone(PLATFORM_TONE_HZ)
        .start();

    talk_then_callee_hangs_up(&mut platform, &mut carrier, &edge.internal_uri(SUBSCRIBER));
    assert_given_edge_media(&platform, &edge, EDGE_INTERNAL_IP);
    assert_given_edge_media(&carrier, &edge, EDGE_PUBLIC_IP);
    assert_bye_crossed(&carrier, &platform);
    assert_heard(&carrier, PLATFORM_TONE_HZ);
    assert_heard(&platform, CARRIER_TONE_HZ);

    let cdr = edge.wait_cdr("the baresip call", |c| c["callee"] == SUBSCRIBER);
    assert_eq!(cdr["direction"], "outbound", "{cdr}");
    assert_eq!(cdr["caller"], NUMBER, "{cdr}");
    assert_eq!(cdr["trunk"], "lab/carrier", "{cdr}");
    assert_eq!(cdr["finalStatus"], 200, "{cdr}");
    assert_eq!(cdr["endedBy"], "carrier", "{cdr}");
    assert_media_scored(&cdr);
}
