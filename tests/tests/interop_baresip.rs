//! Interop with a real SIP phone: baresip 1.0 calls baresip through the edge, in both
//! directions, with real audio. Each phone sends its own sine tone and records what it hears;
//! the test checks that each heard the other's tone (a Goertzel scan of the recording), that
//! the callee's hang-up crossed the edge as a BYE answered 200 on both legs, and that the
//! edge's call detail record has a quality score (MOS) for both media directions.

use std::net::SocketAddr;

use trunkgate_tests::baresip::{
    Baresip, assert_bye_crossed, assert_given_edge_media, assert_heard, assert_media_scored,
    talk_then_callee_hangs_up,
};
use trunkgate_tests::config::documents;
use trunkgate_tests::*;

/// The carrier's subscriber (caller of inbound calls, callee of outbound ones).
const SUBSCRIBER: &str = "+6421555123";
/// A BYOC number of the trunk: called inbound, presented outbound.
const NUMBER: &str = "+6498879333";
/// The tones: not harmonics of each other, so one cannot pass for the other.
const CARRIER_TONE_HZ: u32 = 1000;
const PLATFORM_TONE_HZ: u32 = 600;

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
