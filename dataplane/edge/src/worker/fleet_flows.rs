//! A worker whose fleet shares a store, without sockets or Redis: the call waits for the
//! store's verdict on its claim, and each answer the store may give is followed.

use trunkgate_crds::Secrets;

use crate::call::Side;
use crate::fleet::{Cmd, FleetRefusal, Hold, Release, Tx, Verdict};
use crate::worker::harness::*;

fn fleet_harness() -> Harness {
    Harness::with_flags(
        &[pacific()],
        &[numbers("pacific")],
        &Secrets::new(),
        // Nothing listens there: the harness answers claims itself.
        &["--state-store", "redis://127.0.0.1:1"],
    )
}

/// The places a granted claim holds, and where their releases arrive.
pub(super) fn hold() -> (Hold, Tx) {
    let tx: Tx = Default::default();
    let rx = tx.clone();
    let place = |key: &str| Release::test(key, "edge-0:1:0", &tx);
    (
        Hold {
            concurrent: place("calls"),
            setup: place("setup"),
        },
        rx,
    )
}

fn released(rx: &mut Tx) -> Vec<String> {
    rx.take()
        .into_iter()
        .filter_map(|cmd| match cmd {
            Cmd::Release { key, .. } => Some(key.to_string()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_call_waits_for_the_fleets_verdict_then_holds_its_places_until_it_ends() {
    let mut h = fleet_harness();
    let sent = h.carrier_sends(&carrier_invite("f1", NUMBER, ""));
    assert_eq!(summary(&sent, Side::Public), ["100"]);
    assert!(
        summary(&sent, Side::Internal).is_empty(),
        "nothing goes on before the fleet said yes"
    );
    assert_eq!(h.claims.len(), 1);
    let req = &h.claims[0].1;
    assert_eq!(req.trunk, "acme/pacific");
    let (places, mut rx) = hold();
    let sent = h.answer_claim(Verdict::Granted(places));
    assert_eq!(summary(&sent, Side::Internal), ["INVITE"]);
    let invite = on(&sent, Side::Internal)[0];
    let ok = h
        .platform_sends(&invite.answer(200, "p1", PLATFORM, ""))
        .remove(0);
    assert!(released(&mut rx).is_empty(), "set-up until the ACK");
    h.carrier_sends(&carrier_in_dialog("f1", "ACK", 1, &ok, "ack1"));
    assert_eq!(
        released(&mut rx),
        ["setup"],
        "set up: the set-up place goes back"
    );
    h.carrier_sends(&carrier_in_dialog("f1", "BYE", 2, &ok, "bye1"));
    assert_eq!(
        released(&mut rx),
        ["calls"],
        "ended: the call's place goes back"
    );
}

#[test]
fn the_fleets_limit_refuses_the_call_503_with_retry_after() {
    let mut h = fleet_harness();
    h.carrier_sends(&carrier_invite("f2", NUMBER, ""));
    let sent = h.answer_claim(Verdict::Refused(FleetRefusal::Concurrent(5)));
    assert_eq!(summary(&sent, Side::Public), ["503"]);
    assert!(summary(&sent, Side::Internal).is_empty());
    let refusal = on(&sent, Side::Public)[0];
    assert_eq!(refusal.header("Retry-After"), Some("5"));
    assert_eq!(
        h.metric(
            "trunkgate_edge_refusals_total",
            &[("reason", "max_concurrent_calls")]
        ),
        1.0
    );
    assert_eq!(
        h.metric("trunkgate_edge_calls_total", &[("code_class", "5xx")]),
        1.0
    );
}

#[test]
fn a_call_cancelled_while_it_waits_for_the_fleet_gives_its_places_back() {
    let mut h = fleet_harness();
    h.carrier_sends(&carrier_invite("f3", NUMBER, ""));
    let cancel = format!(
        "CANCEL sip:{NUMBER}@{PUBLIC} SIP/2.0\r\nVia: SIP/2.0/UDP {CARRIER};branch=z9hG4bK-f3;rport\r\nMax-Forwards: 70\r\nFrom: <sip:{CALLER}@carrier.example>;tag=c-f3\r\nTo: <sip:{NUMBER}@{PUBLIC}>\r\nCall-ID: f3@carrier.example\r\nCSeq: 1 CANCEL\r\nContent-Length: 0\r\n\r\n"
    );
    let sent = h.carrier_sends(&cancel);
    assert_eq!(summary(&sent, Side::Public), ["200", "487"]);
    let (places, mut rx) = hold();
    let sent = h.answer_claim(Verdict::Granted(places));
    assert!(sent.is_empty(), "a late yes starts nothing: {:?}", h.others);
    let mut keys = released(&mut rx);
    keys.sort();
    assert_eq!(keys, ["calls", "setup"]);
}

#[test]
fn without_the_store_the_call_goes_on_within_the_edges_share() {
    let mut h = fleet_harness();
    h.carrier_sends(&carrier_invite("f4", NUMBER, ""));
    let (places, mut rx) = hold();
    let sent = h.answer_claim(Verdict::Unavailable(places));
    assert_eq!(summary(&sent, Side::Internal), ["INVITE"]);
    assert!(released(&mut rx).is_empty(), "held, to be written back");
}
