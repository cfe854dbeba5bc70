//! SRTP on the carrier leg with real peers: baresip 1.0 with its `srtp` module (SDES keys,
//! RFC 4568) as the carrier, a plain-RTP baresip as the platform, real audio checked by
//! frequency as in the interop tests:
//! - inbound over SIP/TLS: the carrier offers RTP/SAVP, the edge answers with its own key, the
//!   platform sees plain RTP/AVP without keys; each phone hears the other's tone;
//! - outbound: the platform offers plain RTP, the edge offers the carrier RTP/SAVP with a key
//!   per suite, the carrier picks one; each phone hears the other's tone;
//! - a trunk that requires SRTP refuses sipp's plain offer with 488 and a Warning, counted,
//!   and the platform never hears of it.

use std::net::SocketAddr;

use serde_json::Value;
use trunkgate_tests::baresip::{
    Baresip, assert_bye_crossed, assert_heard, assert_media_scored, talk_then_callee_hangs_up,
};
use trunkgate_tests::config::documents;
use trunkgate_tests::pki::Pki;
use trunkgate_tests::sipp::{Sipp, scenario};
use trunkgate_tests::*;

const SUBSCRIBER: &str = "+6421555123";
const NUMBER: &str = "+6498879333";
const CARRIER_TONE_HZ: u32 = 1000;
const PLATFORM_TONE_HZ: u32 = 600;

/// A trunk for the carrier at 127.0.0.10. Its allow-list is 127.0.0.0/28: baresip opens its TLS
/// connections from 127.0.0.1 whatever its SIP address.
fn config(lab: &Lab, platform: SocketAddr, target: Option<SocketAddr>, srtp: &str) {
    let mut trunk = Trunk::new("lab", "carrier", "127.0.0.0/28", platform).srtp(srtp);
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

/// The first SDP body `who` received.
fn received_sdp(who: &Baresip) -> String {
    who.sip_trace()
        .into_iter()
        .find(|m| !m.sent && m.body.contains("m=audio"))
        .map(|m| m.body)
        .unwrap_or_else(|| panic!("{} received no SDP:\n{}", who.name, who.trace_summary()))
}

fn audio_line(sdp: &str) -> &str {
    sdp.lines()
        .find(|l| l.starts_with("m=audio"))
        .unwrap_or_default()
}

/// The carrier got RTP/SAVP with one of the edge's keys; the platform plain RTP/AVP.
fn assert_srtp_only_on_the_carrier_leg(carrier: &Baresip, platform: &Baresip) {
    let to_carrier = received_sdp(carrier);
    assert!(
        audio_line(&to_carrier).contains("RTP/SAVP") && to_carrier.contains("a=crypto:"),
        "the carrier is given SRTP with the edge's key:\n{to_carrier}"
    );
    let to_platform = received_sdp(platform);
    assert!(
        audio_line(&to_platform).contains("RTP/AVP ") && !to_platform.contains("a=crypto"),
        "the platform is given plain RTP and no keys:\n{to_platform}"
    );
    // baresip says it encrypts: "srtp: audio: SRTP is Enabled (cryptosuite=...)".
    let log = std::fs::read_to_string(&carrier.log).unwrap_or_default();
    assert!(
        log.contains("SRTP is Enabled"),
        "the carrier's baresip turned SRTP on; its log:\n{}",
        carrier.log_tail(40)
    );
}

/// The carrier's media direction was SRTP, and every packet under a key authenticated: no
/// authentication failure or replay. (baresip sends one plain 16-byte RTCP APP "PING" as a NAT
/// keep-alive when a stream starts; the edge drops it as too short for SRTCP, `srtp_malformed`.)
fn assert_srtp_relayed(edge: &Edge, cdr: &Value) {
    let media = cdr["media"].as_array().cloned().unwrap_or_default();
    let carrier = media.iter().find(|m| m["from"] == "carrier");
    let suite = carrier.and_then(|m| m["srtp"].as_str()).unwrap_or_default();
    assert!(
        [
            "AES_CM_128_HMAC_SHA1_80",
            "AES_CM_128_HMAC_SHA1_32",
            "AEAD_AES_128_GCM"
        ]
        .contains(&suite),
        "the record names the carrier's SRTP suite: {cdr}"
    );
    let platform = media.iter().find(|m| m["from"] == "platform");
    assert!(
        platform.is_some_and(|m| m.get("srtp").is_none()),
        "the platform's direction is plain RTP: {cdr}"
    );
    for reason in ["srtp_auth", "srtp_replay", "srtp_ssrc_limit"] {
        let n = edge.metric(
            "trunkgate_edge_media_packets_dropped_total",
            &[("reason", reason)],
        );
        assert_eq!(n, 0.0, "{reason}: {cdr}");
    }
    let rejected = carrier
        .and_then(|m| m["srtpRejectedPackets"].as_u64())
        .unwrap_or(0);
    assert!(
        rejected <= 2,
        "at most baresip's plain keep-alives refused: {cdr}"
    );
}

#[test]
fn baresip_over_tls_with_srtp_calls_a_plain_rtp_platform_and_each_hears_the_other() {
    let lab = Lab::new("srtp_inbound");
    let pki = Pki::new(&lab, "ca");
    let mut platform = Baresip::phone(&lab, "platform", PLATFORM, NUMBER)
        .tone(PLATFORM_TONE_HZ)
        .auto_answer()
        .start();
    config(&lab, platform.sip, None, "Required");
    let (edge, sips) = trunkgate_tests::pki::tls_edge(&lab, &pki, &[]);
    let mut carrier = Baresip::phone(&lab, "carrier", CARRIER, SUBSCRIBER)
        .tone(CARRIER_TONE_HZ)
        .srtp("srtp-mand")
        .tls_ca(&pki.ca.cert)
        .start();

    let uri = format!("sip:{NUMBER}@{sips};transport=tls");
    talk_then_callee_hangs_up(&mut carrier, &mut platform, &uri);
    assert_srtp_only_on_the_carrier_leg(&carrier, &platform);
    assert_bye_crossed(&platform, &carrier);
    assert_heard(&platform, CARRIER_TONE_HZ);
    assert_heard(&carrier, PLATFORM_TONE_HZ);

    let cdr = edge.wait_cdr("the SRTP call", |c| c["callee"] == NUMBER);
    assert_eq!(cdr["carrierTransport"], "tls", "{cdr}");
    assert_eq!(cdr["finalStatus"], 200, "{cdr}");
    assert_media_scored(&cdr);
    assert_srtp_relayed(&edge, &cdr);
}

#[test]
fn a_plain_rtp_platform_calls_an_srtp_carrier_and_each_hears_the_other() {
    let lab = Lab::new("srtp_outbound");
    let mut carrier = Baresip::phone(&lab, "carrier", CARRIER_TARGET, SUBSCRIBER)
        .tone(CARRIER_TONE_HZ)
        .srtp("srtp-mand")
        .auto_answer()
        .start();
    config(
        &lab,
        SocketAddr::new(PLATFORM, 5999),
        Some(carrier.sip),
        "Required",
    );
    let edge = Edge::start(&lab, EdgeOptions::default());
    let mut platform = Baresip::phone(&lab, "platform", PLATFORM, NUMBER)
        .tone(PLATFORM_TONE_HZ)
        .start();

    talk_then_callee_hangs_up(&mut platform, &mut carrier, &edge.internal_uri(SUBSCRIBER));
    assert_srtp_only_on_the_carrier_leg(&carrier, &platform);
    let offer = received_sdp(&carrier);
    assert_eq!(
        offer.matches("a=crypto:").count(),
        3,
        "the edge offers a key per suite:\n{offer}"
    );
    assert_bye_crossed(&carrier, &platform);
    assert_heard(&carrier, PLATFORM_TONE_HZ);
    assert_heard(&platform, CARRIER_TONE_HZ);

    let cdr = edge.wait_cdr("the SRTP call", |c| c["callee"] == SUBSCRIBER);
    assert_eq!(cdr["finalStatus"], 200, "{cdr}");
    assert_media_scored(&cdr);
    assert_srtp_relayed(&edge, &cdr);
}

#[test]
fn a_trunk_that_requires_srtp_refuses_a_plain_offer_with_488() {
    let lab = Lab::new("srtp_required");
    let platform = Sipp::reserve(PLATFORM);
    config(&lab, platform, None, "Required");
    let edge = Edge::start(&lab, EdgeOptions::default());
    let ruri = edge.public_uri(NUMBER);
    let caller = Sipp::uac(
        &lab,
        "carrier",
        scenario(&lab, "uac_refused.xml", &[("RURI", &ruri), ("CODE", "488")]),
        CARRIER,
        edge.public,
    )
    .run();
    caller.assert_ok();
    let refused = caller.response(488, "INVITE");
    let warning = refused.header("Warning").unwrap_or_default();
    assert!(
        warning.starts_with("399 "),
        "488 with a Warning: {}",
        refused.text()
    );
    assert_eq!(
        edge.metric(
            "trunkgate_edge_refusals_total",
            &[("trunk", "lab/carrier"), ("reason", "sdp_unsupported")]
        ),
        1.0
    );
}
