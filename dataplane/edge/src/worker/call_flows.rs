//! The call paths end to end through one worker, without sockets (`worker::harness`): each
//! test feeds the carrier's and the platform's messages and checks what the edge sends.

use std::time::Duration;

use trunkgate_crds::Secrets;

use super::harness::*;
use crate::call::Side;
use trunkgate_crds::{CarrierTrunk, NumberOwnership};

fn pacific_harness() -> Harness {
    Harness::new(&[pacific()], &[numbers("pacific")], &Secrets::new())
}

/// An inbound call up to the platform's 200 and the carrier's ACK: (harness, the 200 the
/// carrier got, the INVITE the platform got).
fn answered(id: &str) -> (Harness, Sent, Sent) {
    let mut h = pacific_harness();
    let mut sent = h.carrier_sends(&carrier_invite(id, NUMBER, ""));
    let invite = sent.pop().expect("an INVITE to the platform");
    let ok = h
        .platform_sends(&invite.answer(200, "p1", PLATFORM, ""))
        .remove(0);
    assert_eq!(ok.code(), Some(200));
    (h, ok, invite)
}

#[test]
fn an_inbound_call_is_set_up_relayed_and_ended_by_either_side() {
    let mut h = pacific_harness();
    let sent = h.carrier_sends(&carrier_invite("c1", NUMBER, ""));
    assert_eq!(summary(&sent, Side::Public), ["100"]);
    assert_eq!(summary(&sent, Side::Internal), ["INVITE"]);
    let invite = &on(&sent, Side::Internal)[0];
    assert_eq!(invite.to.to_string(), PLATFORM);
    assert!(
        invite
            .text
            .contains(&format!("INVITE sip:{NUMBER}@{PLATFORM}")),
        "{}",
        invite.text
    );
    assert!(invite.text.contains("X-Trunkgate-Trunk: acme/pacific"));
    // The B leg is a new dialog: its own Call-ID, our tag, our Via only.
    assert_ne!(invite.header("Call-ID"), Some("c1@carrier.example"));
    assert!(
        !invite.text.contains(CARRIER),
        "nothing of the carrier's addresses leaks"
    );

    let ringing = h.platform_sends(&invite.answer(180, "p1", PLATFORM, ""));
    assert_eq!(summary(&ringing, Side::Public), ["180"]);
    let ok = h.platform_sends(&invite.answer(200, "p1", PLATFORM, ""));
    assert_eq!(summary(&ok, Side::Public), ["200"]);
    let ok = &ok[0];
    assert_eq!(ok.header("Call-ID"), Some("c1@carrier.example"));
    assert!(ok.header("Contact").unwrap_or_default().contains(PUBLIC));

    let ack = h.carrier_sends(&carrier_in_dialog("c1", "ACK", 1, ok, "ack1"));
    assert_eq!(summary(&ack, Side::Internal), ["ACK"]);
    // A BYE is answered at once on its own leg and sent on the other (each leg is a dialog
    // of its own); the platform's 200 then ends that transaction and nothing more goes out.
    let bye = h.carrier_sends(&carrier_in_dialog("c1", "BYE", 2, ok, "bye1"));
    assert_eq!(summary(&bye, Side::Public), ["200"]);
    assert_eq!(summary(&bye, Side::Internal), ["BYE"]);
    let done = h.platform_sends(&on(&bye, Side::Internal)[0].answer(200, "p1", PLATFORM, ""));
    assert!(done.is_empty());
    assert_eq!(
        h.metric("trunkgate_edge_calls_total", &[("trunk", "acme/pacific")]),
        1.0
    );
}

#[test]
fn a_source_outside_the_allow_lists_gets_nothing_back() {
    let mut h = pacific_harness();
    let sent = h.input(
        Side::Public,
        "198.18.0.9:5060",
        &carrier_invite("x1", NUMBER, ""),
    );
    assert!(
        sent.is_empty(),
        "{:?}",
        sent.iter().map(|s| &s.text).collect::<Vec<_>>()
    );
}

#[test]
fn no_ack_for_the_2xx_ends_both_legs_with_bye() {
    // RFC 3261 §13.3.1.4: the 2xx is sent again until 64*T1; then the call ends, on both legs.
    let (mut h, _ok, _invite) = answered("c2");
    let later = h.advance(Duration::from_secs(33));
    let to_carrier = summary(&later, Side::Public);
    assert!(
        to_carrier.iter().filter(|s| *s == "200").count() >= 5,
        "{to_carrier:?}"
    );
    assert!(to_carrier.contains(&"BYE".to_string()), "{to_carrier:?}");
    assert!(summary(&later, Side::Internal).contains(&"BYE".to_string()));
}

#[test]
fn a_cancel_before_the_answer_cancels_leg_b_and_gets_487() {
    let mut h = pacific_harness();
    let sent = h.carrier_sends(&carrier_invite("c3", NUMBER, ""));
    let invite = on(&sent, Side::Internal)[0].text.clone();
    let invite = sent
        .into_iter()
        .find(|s| s.text == invite)
        .expect("the INVITE");
    h.platform_sends(&invite.answer(180, "p1", PLATFORM, ""));
    let cancel = format!(
        "CANCEL sip:{NUMBER}@{PUBLIC} SIP/2.0\r\nVia: SIP/2.0/UDP {CARRIER};branch=z9hG4bK-c3;rport\r\nMax-Forwards: 70\r\nFrom: <sip:{CALLER}@carrier.example>;tag=c-c3\r\nTo: <sip:{NUMBER}@{PUBLIC}>\r\nCall-ID: c3@carrier.example\r\nCSeq: 1 CANCEL\r\nContent-Length: 0\r\n\r\n"
    );
    // RFC 3261 §9.2: 200 to the CANCEL, 487 to the INVITE; leg B is CANCELed in turn.
    let sent = h.carrier_sends(&cancel);
    assert_eq!(summary(&sent, Side::Public), ["200", "487"]);
    assert_eq!(summary(&sent, Side::Internal), ["CANCEL"]);
    let terminated = h.platform_sends(&invite.answer(487, "p1", PLATFORM, ""));
    assert!(summary(&terminated, Side::Public).is_empty());
    assert_eq!(
        summary(&terminated, Side::Internal),
        ["ACK"],
        "the 487 is ACKed hop by hop"
    );
}

#[test]
fn a_cancel_from_another_address_with_the_callers_branch_is_not_matched() {
    // The CANCEL hijack: the branch alone must not find the INVITE (RFC 3261 §9.2 matches the
    // transaction, and a transaction is also where its request came from).
    let mut h = pacific_harness();
    let sent = h.carrier_sends(&carrier_invite("c4", NUMBER, ""));
    assert_eq!(summary(&sent, Side::Internal), ["INVITE"]);
    let cancel = format!(
        "CANCEL sip:{NUMBER}@{PUBLIC} SIP/2.0\r\nVia: SIP/2.0/UDP 203.0.113.6:5060;branch=z9hG4bK-c4;rport\r\nMax-Forwards: 70\r\nFrom: <sip:{CALLER}@carrier.example>;tag=c-c4\r\nTo: <sip:{NUMBER}@{PUBLIC}>\r\nCall-ID: c4@carrier.example\r\nCSeq: 1 CANCEL\r\nContent-Length: 0\r\n\r\n"
    );
    let sent = h.input(Side::Public, "203.0.113.6:5060", &cancel);
    assert_eq!(summary(&sent, Side::Public), ["481"]);
    assert!(
        summary(&sent, Side::Internal).is_empty(),
        "the platform gets no CANCEL"
    );
}

#[test]
fn a_retransmitted_invite_is_absorbed_and_the_platform_gets_one() {
    let mut h = pacific_harness();
    let invite = carrier_invite("c5", NUMBER, "");
    let first = h.carrier_sends(&invite);
    assert_eq!(summary(&first, Side::Internal), ["INVITE"]);
    let again = h.carrier_sends(&invite);
    assert_eq!(
        summary(&again, Side::Public),
        ["100"],
        "the last response again (§17.2.1)"
    );
    assert!(summary(&again, Side::Internal).is_empty());
}

#[test]
fn record_route_is_echoed_in_the_answers_and_used_in_dialog() {
    // RFC 3261 §12.1.1: the UAS copies Record-Route into every 101–299 answer to the INVITE.
    let mut h = pacific_harness();
    let rr = "Record-Route: <sip:203.0.113.7;lr;ftag=x>\r\n";
    let sent = h.carrier_sends(&carrier_invite("c6", NUMBER, rr));
    let invite = on(&sent, Side::Internal)[0];
    let invite_text = invite.answer(180, "p1", PLATFORM, "");
    let ringing = h.platform_sends(&invite_text);
    assert_eq!(
        ringing[0].header("Record-Route"),
        Some("<sip:203.0.113.7;lr;ftag=x>")
    );
    let ok = sent
        .iter()
        .find(|s| s.side == Side::Internal)
        .map(|i| i.answer(200, "p1", PLATFORM, ""))
        .expect("the INVITE");
    let ok = h.platform_sends(&ok).remove(0);
    assert_eq!(
        ok.header("Record-Route"),
        Some("<sip:203.0.113.7;lr;ftag=x>")
    );
    // The platform hangs up: the BYE to the carrier follows the route set (first hop: the
    // proxy, addressed by Route; Request-URI the caller's Contact).
    h.carrier_sends(&carrier_in_dialog("c6", "ACK", 1, &ok, "ack6"));
    let b_ok = sent
        .into_iter()
        .find(|s| s.side == Side::Internal)
        .expect("the INVITE");
    let bye = format!(
        "BYE sip:{}@{INTERNAL} SIP/2.0\r\nVia: SIP/2.0/UDP {PLATFORM};branch=z9hG4bK-pbye\r\nMax-Forwards: 70\r\nFrom: {};tag=p1\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n",
        NUMBER,
        b_ok.header("To").unwrap_or_default(),
        b_ok.header("From").unwrap_or_default(),
        b_ok.header("Call-ID").unwrap_or_default(),
    );
    let sent = h.platform_sends(&bye);
    let bye = on(&sent, Side::Public)
        .into_iter()
        .find(|s| s.method().as_deref() == Some("BYE"))
        .expect("a BYE to the carrier");
    assert!(
        bye.text
            .starts_with(&format!("BYE sip:{CALLER}@{CARRIER} ")),
        "{}",
        bye.text
    );
    assert_eq!(bye.header("Route"), Some("<sip:203.0.113.7;lr;ftag=x>"));
}

#[test]
fn max_forwards_zero_gets_483_and_an_unknown_number_404() {
    let mut h = pacific_harness();
    let sent = h.carrier_sends(
        &carrier_invite("c7", NUMBER, "").replace("Max-Forwards: 70", "Max-Forwards: 0"),
    );
    assert_eq!(summary(&sent, Side::Public), ["483"]);
    let sent = h.carrier_sends(&carrier_invite("c8", "+6498870000", ""));
    assert_eq!(summary(&sent, Side::Public), ["404"]);
    assert!(sent[0].header("Warning").is_some(), "the refusal says why");
}

#[test]
fn a_platform_that_never_answers_times_out_with_408_sent_until_acked() {
    // Timer B (64*T1 = 32 s, RFC 3261 §17.1.1.2) without an answer from the platform: 408.
    // Meanwhile the INVITE went again on Timer A, doubling from 0.5 s.
    let mut h = pacific_harness();
    h.carrier_sends(&carrier_invite("c9", NUMBER, ""));
    let before = h.advance(Duration::from_millis(31_900));
    assert!(summary(&before, Side::Public).is_empty());
    assert_eq!(summary(&before, Side::Internal), ["INVITE"; 6]);
    let later = h.advance(Duration::from_millis(200));
    assert_eq!(summary(&later, Side::Public), ["408"]);
    // The 408 goes again on Timer G until the carrier's ACK (§17.2.1).
    let again = h.advance(Duration::from_millis(600));
    assert_eq!(summary(&again, Side::Public), ["408"]);
    let ack = format!(
        "ACK sip:{NUMBER}@{PUBLIC} SIP/2.0\r\nVia: SIP/2.0/UDP {CARRIER};branch=z9hG4bK-c9;rport\r\nMax-Forwards: 70\r\nFrom: <sip:{CALLER}@carrier.example>;tag=c-c9\r\nTo: {}\r\nCall-ID: c9@carrier.example\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n",
        again[0].header("To").unwrap_or_default()
    );
    assert!(
        h.carrier_sends(&ack).is_empty(),
        "the ACK of a non-2xx stays on its hop"
    );
    assert!(summary(&h.advance(Duration::from_secs(10)), Side::Public).is_empty());
}

// ---- outbound: platform → carrier ------------------------------------------------------------

const TARGET_1: &str = "203.0.113.5:5060";
const TARGET_2: &str = "203.0.113.6:5060";

/// acme/pacific with two outbound targets (priority 1 then 2) and a route for +64.
fn outbound_harness(flags: &[&str], auth: bool) -> Harness {
    let mut t = pacific()
        .with_targets(&[&format!("sip:{TARGET_1}"), &format!("sip:{TARGET_2}")])
        .with_route("+64", 1);
    let mut secrets = Secrets::new();
    if auth {
        t = t.with_outbound_auth("pacific-out", Some("carrier.example"));
        secrets = trunkgate_crds::fixtures::secret("acme", "pacific-out", "acme", "s3cret");
    }
    Harness::with_flags(&[no_relay(t)], &[numbers("pacific")], &secrets, flags)
}

/// The platform's INVITE from our number to a New Zealand mobile.
fn platform_invite(id: &str) -> String {
    format!(
        "INVITE sip:{CALLER}@{INTERNAL} SIP/2.0\r\nVia: SIP/2.0/UDP {PLATFORM};branch=z9hG4bK-{id}\r\nMax-Forwards: 70\r\nFrom: <sip:{NUMBER}@platform.example>;tag=p-{id}\r\nTo: <sip:{CALLER}@{INTERNAL}>\r\nCall-ID: {id}@platform.example\r\nCSeq: 1 INVITE\r\nContact: <sip:app@{PLATFORM}>\r\nContent-Length: 0\r\n\r\n"
    )
}

fn invite_to(sent: &[Sent], target: &str) -> Option<usize> {
    sent.iter().position(|s| {
        s.side == Side::Public
            && s.method().as_deref() == Some("INVITE")
            && s.to.to_string() == target
    })
}

#[test]
fn an_outbound_call_fails_over_on_silence_and_on_503() {
    let mut h = outbound_harness(&["--failover-seconds", "2"], false);
    let sent = h.platform_sends(&platform_invite("o1"));
    assert_eq!(summary(&sent, Side::Internal), ["100"]);
    assert!(
        invite_to(&sent, TARGET_1).is_some(),
        "the first target first"
    );
    // The first target stays silent for --failover-seconds: the next one gets the call.
    let later = h.advance(Duration::from_millis(2_100));
    let mut later = later;
    let second = later.remove(invite_to(&later, TARGET_2).expect("failover to the second target"));
    assert!(
        summary(&later, Side::Internal).is_empty(),
        "the platform hears nothing yet"
    );
    // The last target refuses: its 503 is ACKed on its hop and the platform gets the refusal.
    let sent = h.input(
        Side::Public,
        TARGET_2,
        &second.answer(503, "t2", TARGET_2, ""),
    );
    assert_eq!(summary(&sent, Side::Public), ["ACK"]);
    assert_eq!(summary(&sent, Side::Internal), ["503"]);
    assert!(
        h.metric("trunkgate_edge_failovers_total", &[]) >= 1.0,
        "failover counted"
    );
}

#[test]
fn a_carriers_407_is_answered_with_the_trunks_credentials_on_the_invite_and_a_reinvite() {
    let mut h = outbound_harness(&[], true);
    let mut sent = h.platform_sends(&platform_invite("o2"));
    let first = sent.remove(invite_to(&sent, TARGET_1).expect("an INVITE"));
    let challenge = "Proxy-Authenticate: Digest realm=\"carrier.example\", nonce=\"n1\", algorithm=MD5, qop=\"auth\"\r\n";
    let sent = h.input(
        Side::Public,
        TARGET_1,
        &first.answer(407, "t1", TARGET_1, challenge),
    );
    let again = &sent[invite_to(&sent, TARGET_1).expect("the INVITE again")];
    let auth = again
        .header("Proxy-Authorization")
        .expect("with credentials");
    assert!(
        auth.contains("username=\"acme\"") && auth.contains("nonce=\"n1\""),
        "{auth}"
    );
    assert_eq!(
        again.header("CSeq"),
        Some("2 INVITE"),
        "a new CSeq (RFC 3261 §22.2)"
    );
    assert!(
        summary(&sent, Side::Internal).is_empty(),
        "the 407 stays between edge and carrier"
    );

    // Answered; the platform puts the call on hold and the carrier challenges that too.
    let ok = h.input(
        Side::Public,
        TARGET_1,
        &again.answer(200, "t1", TARGET_1, ""),
    );
    let ok_a = ok
        .iter()
        .find(|s| s.side == Side::Internal)
        .expect("200 to the platform");
    assert_eq!(ok_a.code(), Some(200));
    let a_to = ok_a.header("To").unwrap_or_default().to_string();
    let a_ack = format!(
        "ACK sip:{CALLER}@{INTERNAL} SIP/2.0\r\nVia: SIP/2.0/UDP {PLATFORM};branch=z9hG4bK-o2ack\r\nMax-Forwards: 70\r\nFrom: <sip:{NUMBER}@platform.example>;tag=p-o2\r\nTo: {a_to}\r\nCall-ID: o2@platform.example\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n"
    );
    let acked = h.platform_sends(&a_ack);
    assert_eq!(summary(&acked, Side::Public), ["ACK"]);
    let reinvite = a_ack
        .replace("ACK sip", "INVITE sip")
        .replace("z9hG4bK-o2ack", "z9hG4bK-o2re")
        .replace("CSeq: 1 ACK", "CSeq: 2 INVITE");
    let sent = h.platform_sends(&reinvite);
    let re = on(&sent, Side::Public)[0];
    assert_eq!(re.method().as_deref(), Some("INVITE"));
    let challenged = h.input(
        Side::Public,
        TARGET_1,
        &re.answer(407, "t1", TARGET_1, challenge),
    );
    let retried = on(&challenged, Side::Public)
        .into_iter()
        .find(|s| s.method().as_deref() == Some("INVITE"))
        .expect("the re-INVITE again, with credentials");
    assert!(retried.header("Proxy-Authorization").is_some());
    assert!(
        !summary(&challenged, Side::Internal).contains(&"407".to_string()),
        "the platform never sees the carrier's challenge"
    );
}

#[test]
fn a_call_that_rings_too_long_is_cancelled() {
    let mut h = outbound_harness(&["--ringing-seconds", "5"], false);
    let mut sent = h.platform_sends(&platform_invite("o3"));
    let first = sent.remove(invite_to(&sent, TARGET_1).expect("an INVITE"));
    let ringing = h.input(
        Side::Public,
        TARGET_1,
        &first.answer(180, "t1", TARGET_1, ""),
    );
    assert_eq!(summary(&ringing, Side::Internal), ["180"]);
    // --ringing-seconds: leg B is CANCELed and the platform told at once.
    let later = h.advance(Duration::from_millis(5_100));
    assert_eq!(summary(&later, Side::Public), ["CANCEL"]);
    assert_eq!(summary(&later, Side::Internal), ["408"]);
    let cancel = on(&later, Side::Public)[0];
    assert_eq!(
        cancel.header("CSeq"),
        Some("1 CANCEL"),
        "same CSeq number (§9.1)"
    );
    let done = h.input(
        Side::Public,
        TARGET_1,
        &first.answer(487, "t1", TARGET_1, ""),
    );
    assert_eq!(summary(&done, Side::Public), ["ACK"]);
    assert!(
        summary(&done, Side::Internal).is_empty(),
        "the platform had its answer"
    );
}

/// The silent peer: leg B rings, is CANCELed, and then answers nothing at all. RFC 3261
/// §9.1 gives its INVITE 64·T1 after the CANCEL; then the call ends and frees its slots
/// (before, it held its active-call and set-up slots for good and wrote no record).
#[test]
fn a_peer_silent_after_the_cancel_frees_the_call_after_64_t1() {
    let mut h = outbound_harness(&["--ringing-seconds", "5"], false);
    let mut sent = h.platform_sends(&platform_invite("o9"));
    let first = sent.remove(invite_to(&sent, TARGET_1).expect("an INVITE"));
    h.input(
        Side::Public,
        TARGET_1,
        &first.answer(180, "t1", TARGET_1, ""),
    );
    let later = h.advance(Duration::from_millis(5_100));
    assert_eq!(summary(&later, Side::Public), ["CANCEL"]);
    let setup = |h: &Harness| h.metric("trunkgate_edge_calls_in_setup", &[]);
    let active = |h: &Harness| h.metric("trunkgate_edge_active_calls", &[]);
    assert_eq!(
        (setup(&h), active(&h)),
        (1.0, 1.0),
        "held while the CANCEL is pending"
    );
    // Nothing comes back; the CANCEL is retransmitted, then gives up.
    h.advance(Duration::from_secs(31));
    assert_eq!(active(&h), 1.0, "not before 64·T1");
    h.advance(Duration::from_secs(2));
    assert_eq!(
        (setup(&h), active(&h)),
        (0.0, 0.0),
        "the call ended and freed its slots"
    );
}

/// A carrier's 2xx answers that are never acknowledged (INVITEs forged with its address) fill
/// its set-up cap only until they have waited a second: then a new INVITE from the address
/// takes the place of the oldest, which ends with a BYE on both legs.
#[test]
fn a_full_set_up_cap_gives_the_place_of_an_unacknowledged_call_to_a_new_one() {
    let mut h = Harness::with_flags(
        &[pacific()],
        &[numbers("pacific")],
        &Secrets::new(),
        &["--max-calls-in-setup-per-source", "2"],
    );
    for id in ["f1", "f2"] {
        let mut sent = h.carrier_sends(&carrier_invite(id, NUMBER, ""));
        let invite = sent.pop().expect("an INVITE to the platform");
        let ok = h.platform_sends(&invite.answer(200, "p1", PLATFORM, ""));
        assert_eq!(summary(&ok, Side::Public), ["200"], "never acknowledged");
    }
    // At once the cap refuses: the 2xx may still be acknowledged.
    let refused = h.carrier_sends(&carrier_invite("f3", NUMBER, ""));
    assert_eq!(summary(&refused, Side::Public), ["503"]);
    // A second on, the oldest unacknowledged call makes room for the next one.
    h.advance(Duration::from_millis(1_100));
    let next = h.carrier_sends(&carrier_invite("real", NUMBER, ""));
    assert!(
        summary(&next, Side::Internal).contains(&"INVITE".to_string()),
        "{:?}",
        summary(&next, Side::Internal)
    );
    assert_eq!(
        summary(&next, Side::Internal)
            .iter()
            .filter(|m| *m == "BYE")
            .count(),
        1,
        "the oldest unacknowledged call is hung up on the platform"
    );
    assert!(summary(&next, Side::Public).contains(&"BYE".to_string()));
    assert_eq!(
        h.metric(
            "trunkgate_edge_setup_recycled_total",
            &[("trunk", "acme/pacific")]
        ),
        1.0
    );
}

/// RFC 4028 §6: a session interval below the edge's floor of 90 s is refused 422 with Min-SE,
/// before anything is sent on; 90 s itself is taken.
#[test]
fn a_session_interval_below_90_s_is_refused_422_with_min_se() {
    let mut h = pacific_harness();
    let short = h.carrier_sends(&carrier_invite(
        "se1",
        NUMBER,
        "Session-Expires: 60;refresher=uac\r\n",
    ));
    assert_eq!(summary(&short, Side::Public), ["422"]);
    assert!(summary(&short, Side::Internal).is_empty());
    assert_eq!(on(&short, Side::Public)[0].header("Min-SE"), Some("90"));
    let compact = h.carrier_sends(&carrier_invite("se2", NUMBER, "x: 30\r\n"));
    assert_eq!(summary(&compact, Side::Public), ["422"]);
    let floor = h.carrier_sends(&carrier_invite("se3", NUMBER, "Session-Expires: 90\r\n"));
    assert_eq!(summary(&floor, Side::Internal), ["INVITE"]);
}

/// The transfer policy: an in-dialog REFER from either side is refused 405 with Allow (no
/// REFER in it) and goes nowhere; the call stays up for a re-INVITE transfer.
#[test]
fn an_in_dialog_refer_is_refused_405_and_the_call_goes_on() {
    let (mut h, ok, _) = answered("rf1");
    h.carrier_sends(&carrier_in_dialog("rf1", "ACK", 1, &ok, "rfack"));
    let refer = carrier_in_dialog("rf1", "REFER", 2, &ok, "refer1").replace(
        "Content-Length: 0",
        "Refer-To: <sip:+6421000000@carrier.example>\r\nContent-Length: 0",
    );
    let sent = h.carrier_sends(&refer);
    assert_eq!(summary(&sent, Side::Public), ["405"]);
    assert!(summary(&sent, Side::Internal).is_empty());
    let allow = on(&sent, Side::Public)[0]
        .header("Allow")
        .unwrap_or_default()
        .to_string();
    assert!(
        allow.contains("INVITE") && !allow.contains("REFER"),
        "{allow}"
    );
    let bye = h.carrier_sends(&carrier_in_dialog("rf1", "BYE", 3, &ok, "rfbye"));
    assert_eq!(
        summary(&bye, Side::Internal),
        ["BYE"],
        "the call was still up"
    );
}

/// A forking carrier (RFC 3261 §13.2.2.4): 180 from two branches, 200 from the first (the
/// call), then 200 from the second. The second gets its own ACK (with its tag) and a BYE once;
/// its retransmissions get the ACK again and no more BYEs; the platform saw one 200.
#[test]
fn a_second_fork_answering_2xx_is_acknowledged_and_hung_up_on_its_own_dialog() {
    let mut h = outbound_harness(&[], false);
    let mut sent = h.platform_sends(&platform_invite("fk1"));
    let invite = sent.remove(invite_to(&sent, TARGET_1).expect("an INVITE"));
    h.input(
        Side::Public,
        TARGET_1,
        &invite.answer(180, "branchA", TARGET_1, ""),
    );
    h.input(
        Side::Public,
        TARGET_1,
        &invite.answer(180, "branchB", TARGET_1, ""),
    );
    let first = h.input(
        Side::Public,
        TARGET_1,
        &invite.answer(200, "branchA", TARGET_1, ""),
    );
    assert_eq!(summary(&first, Side::Internal), ["200"]);
    let a_to = on(&first, Side::Internal)[0]
        .header("To")
        .unwrap_or_default()
        .to_string();
    let acked = h.platform_sends(&format!(
        "ACK sip:{CALLER}@{INTERNAL} SIP/2.0\r\nVia: SIP/2.0/UDP {PLATFORM};branch=z9hG4bK-fk1ack\r\nMax-Forwards: 70\r\nFrom: <sip:{NUMBER}@platform.example>;tag=p-fk1\r\nTo: {a_to}\r\nCall-ID: fk1@platform.example\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n"
    ));
    assert_eq!(summary(&acked, Side::Public), ["ACK"]);
    assert!(
        on(&acked, Side::Public)[0]
            .header("To")
            .unwrap_or_default()
            .contains("tag=branchA")
    );

    let second = h.input(
        Side::Public,
        TARGET_1,
        &invite.answer(200, "branchB", TARGET_1, ""),
    );
    assert_eq!(summary(&second, Side::Public), ["ACK", "BYE"]);
    for m in on(&second, Side::Public) {
        assert!(
            m.header("To").unwrap_or_default().contains("tag=branchB"),
            "the second fork's own dialog: {}",
            m.text
        );
    }
    assert!(
        summary(&second, Side::Internal).is_empty(),
        "the platform has its call"
    );
    let again = h.input(
        Side::Public,
        TARGET_1,
        &invite.answer(200, "branchB", TARGET_1, ""),
    );
    assert_eq!(
        summary(&again, Side::Public),
        ["ACK"],
        "ACKed again, hung up once"
    );
    let a_again = h.input(
        Side::Public,
        TARGET_1,
        &invite.answer(200, "branchA", TARGET_1, ""),
    );
    assert_eq!(summary(&a_again, Side::Public), ["ACK"]);
    assert!(
        on(&a_again, Side::Public)[0]
            .header("To")
            .unwrap_or_default()
            .contains("tag=branchA")
    );
}

/// A carrier target's 302 (RFC 3261 §8.1.3.4): a Contact inside the trunk's own addresses is
/// followed next; one elsewhere is not (the next target is tried instead); after the last
/// target the platform gets the 302 with its Contact and a real reason phrase.
#[test]
fn a_carriers_302_is_followed_only_within_the_trunk_else_failed_over_then_relayed() {
    let mut h = outbound_harness(&[], false);
    let mut sent = h.platform_sends(&platform_invite("rd1"));
    let first = sent.remove(invite_to(&sent, TARGET_1).expect("an INVITE"));
    // Inside allowedCidrs (203.0.113.0/28): followed at once.
    let inside = "203.0.113.9:5060";
    let moved = h.input(
        Side::Public,
        TARGET_1,
        &first.answer(302, "t1", &format!("+6421555123@{inside}"), ""),
    );
    let followed = invite_to(&moved, inside).expect("the INVITE follows the Contact");
    assert!(
        moved[followed]
            .text
            .starts_with(&format!("INVITE sip:{CALLER}@{inside}"))
    );
    assert!(
        summary(&moved, Side::Internal).is_empty(),
        "nothing to the platform yet"
    );
    // Outside every address of the trunk: not followed; the next target is tried.
    let mut moved = moved;
    let at_inside = moved.swap_remove(followed);
    let elsewhere = h.input(
        Side::Public,
        inside,
        &at_inside.answer(302, "t2", "+19005550100@198.51.100.77:5060", ""),
    );
    assert!(
        invite_to(&elsewhere, "198.51.100.77:5060").is_none(),
        "not followed"
    );
    let second = invite_to(&elsewhere, TARGET_2).expect("the next target");
    let mut elsewhere = elsewhere;
    let at_second = elsewhere.swap_remove(second);
    // The last target's 302 goes to the platform, Contact included.
    let last = h.input(
        Side::Public,
        TARGET_2,
        &at_second.answer(302, "t3", "+6421555123@198.51.100.78", ""),
    );
    assert_eq!(summary(&last, Side::Internal), ["302"]);
    let to_platform = on(&last, Side::Internal)[0];
    assert!(
        to_platform
            .text
            .starts_with("SIP/2.0 302 Moved Temporarily"),
        "{}",
        to_platform.text
    );
    assert!(
        to_platform
            .header("Contact")
            .unwrap_or_default()
            .contains("198.51.100.78"),
        "{}",
        to_platform.text
    );
}

/// RFC 4028 with the edge a participant (the issue: refresher=uas and a platform that never
/// refreshes left the carrier without a refresh for the whole interval). The platform's 2xx
/// says refresher=uas: on the carrier leg the edge is that UAS and refreshes it with UPDATE at
/// half the interval; on the platform leg the platform should refresh, does not, and the edge
/// ends the call on both legs before the interval runs out.
#[test]
fn session_timers_the_edge_refreshes_its_leg_and_ends_a_call_whose_peer_does_not() {
    let mut h = pacific_harness();
    let (ok, invite) = h.answered_with(
        "st1",
        "Session-Expires: 180\r\nSupported: timer\r\n",
        "Session-Expires: 180;refresher=uas\r\n",
    );
    assert!(
        invite.text.contains("Session-Expires: 180"),
        "{}",
        invite.text
    );
    assert!(ok.text.contains("refresher=uas"), "{}", ok.text);

    // Half the interval: an UPDATE to the carrier, none to the platform.
    // (advanced in one step, so its retransmission half a second later is in it too)
    let half = h.advance(Duration::from_secs(91));
    assert_eq!(summary(&half, Side::Public)[..1], ["UPDATE"]);
    assert!(summary(&half, Side::Internal).is_empty());
    let update = on(&half, Side::Public)[0];
    assert!(
        update.text.contains("Session-Expires: 180;refresher=uac"),
        "{}",
        update.text
    );
    let answered =
        h.carrier_sends(&update.answer(200, "", CARRIER, "Session-Expires: 180;refresher=uac\r\n"));
    assert!(
        answered.is_empty(),
        "the edge's own refresh stays on its leg"
    );
    assert_eq!(
        h.metric(
            "trunkgate_edge_session_refreshes_total",
            &[("result", "sent")]
        ),
        1.0
    );
    // The platform never refreshed: 180 - 32 s after its 2xx the call ends on both legs.
    let end = h.advance(Duration::from_secs(58));
    assert_eq!(summary(&end, Side::Public)[..1], ["BYE"]);
    assert_eq!(summary(&end, Side::Internal)[..1], ["BYE"]);
    assert!(
        on(&end, Side::Public)[0]
            .text
            .contains("session timer expired")
    );
    assert_eq!(
        h.metric(
            "trunkgate_edge_session_refreshes_total",
            &[("result", "expired")]
        ),
        1.0
    );
}

/// A refresh that crosses the edge restarts both legs' timers: a platform that refreshes with
/// re-INVITE keeps the call up past the interval, and the edge sends nothing of its own.
#[test]
fn session_timers_a_refresh_from_the_platform_keeps_the_call_up() {
    let mut h = pacific_harness();
    let (ok, _) = h.answered_with(
        "st2",
        "Session-Expires: 120;refresher=uac\r\nSupported: timer\r\n",
        "Session-Expires: 120;refresher=uac\r\n",
    );
    // refresher=uac: the carrier refreshes leg A, and the edge (UAC of leg B) refreshes leg B.
    let half = h.advance(Duration::from_secs(61));
    assert_eq!(summary(&half, Side::Internal)[..1], ["UPDATE"]);
    assert!(summary(&half, Side::Public).is_empty());
    let update = on(&half, Side::Internal)[0];
    h.platform_sends(&update.answer(200, "", PLATFORM, "Session-Expires: 120;refresher=uac\r\n"));
    // The carrier refreshes with UPDATE at its half: it crosses to the platform and back.
    let refresh = carrier_in_dialog("st2", "UPDATE", 2, &ok, "st2upd").replace(
        "Content-Length: 0",
        "Session-Expires: 120;refresher=uac\r\nContent-Length: 0",
    );
    let relayed = h.carrier_sends(&refresh);
    assert_eq!(summary(&relayed, Side::Internal), ["UPDATE"]);
    let back = h.platform_sends(&on(&relayed, Side::Internal)[0].answer(
        200,
        "",
        PLATFORM,
        "Session-Expires: 120;refresher=uac\r\n",
    ));
    assert_eq!(summary(&back, Side::Public), ["200"]);
    // Past the first interval nothing ends the call.
    let later = h.advance(Duration::from_secs(70));
    assert!(
        !summary(&later, Side::Public).contains(&"BYE".to_string()),
        "{:?}",
        summary(&later, Side::Public)
    );
    assert_eq!(
        h.metric(
            "trunkgate_edge_session_refreshes_total",
            &[("result", "expired")]
        ),
        0.0
    );
}

/// A carrier's answer comes from the address its INVITE went to. A 503 with the INVITE's own
/// branch from elsewhere (another address of the trunk's carrier, or outside every allow-list)
/// gets nothing back, moves the call on to no other target, and is no attempt outcome: the
/// call record and the target's quality window only hear from the target itself.
#[test]
fn a_forged_answer_from_elsewhere_ends_no_attempt_and_counts_against_no_target() {
    let mut h = outbound_harness(&["--failover-seconds", "2"], false);
    let mut sent = h.platform_sends(&platform_invite("f1"));
    let invite = sent.remove(invite_to(&sent, TARGET_1).expect("the first target first"));
    for forger in ["203.0.113.9:5060", "192.0.2.99:5060"] {
        let got = h.input(Side::Public, forger, &invite.answer(503, "x1", forger, ""));
        let texts: Vec<&str> = got.iter().map(|s| s.text.as_str()).collect();
        assert!(got.is_empty(), "{forger} gets nothing: {texts:?}");
    }
    let c = h.w.calls.values().next().expect("the call");
    assert_eq!(c.tried.len(), 1);
    assert_eq!(
        (c.tried[0].status, c.tried[0].failure.as_deref()),
        (None, None)
    );
    assert_eq!(h.metric("trunkgate_edge_failovers_total", &[]), 0.0);
    // The target itself answers: that is the attempt's outcome.
    let got = h.input(
        Side::Public,
        TARGET_1,
        &invite.answer(200, "t1", TARGET_1, ""),
    );
    assert_eq!(summary(&got, Side::Internal), ["200"]);
    let c = h.w.calls.values().next().expect("the call");
    assert_eq!(c.tried[0].status, Some(200));
}

// ---- failover between carriers ---------------------------------------------------------------

const BACKUP: &str = "203.0.113.70:5060";

/// acme's two carriers both route +64 and both verified the platform number [`NUMBER`]:
/// `pacific` ([`TARGET_1`]) at 0.01 NZD/min, `backup` ([`BACKUP`]) at 0.02, chosen by
/// `LeastCost`.
fn two_carrier_harness(flags: &[&str]) -> Harness {
    let trunk = |name: &str, cidr: &str, target: &str, price: &str| {
        let mut t = no_relay(
            CarrierTrunk::test("acme", name)
                .with_cidrs(&[cidr])
                .with_destination(&format!("sip:{PLATFORM}"))
                .with_targets(&[&format!("sip:{target}")])
                .with_rate("+64", price, "NZD", "60/60"),
        );
        if let Some(o) = t.spec.outbound.as_mut() {
            o.selection = Some(trunkgate_crds::Selection::LeastCost);
        }
        t
    };
    let owned = |name: &str, trunk: &str| {
        NumberOwnership::test("acme", name, trunk, &[NUMBER]).platform(true)
    };
    Harness::with_flags(
        &[
            trunk("pacific", "203.0.113.0/28", TARGET_1, "0.01"),
            trunk("backup", "203.0.113.64/28", BACKUP, "0.02"),
        ],
        &[owned("on-pacific", "pacific"), owned("on-backup", "backup")],
        &Secrets::new(),
        flags,
    )
}

fn active(h: &Harness, trunk: &str) -> f64 {
    h.metric("trunkgate_edge_active_calls", &[("trunk", trunk)])
}

/// The cheaper carrier refuses 503: the call goes on through the other carrier, presenting the
/// caller as that trunk may, holding its place in that trunk's limits instead, and its record
/// lists both attempts with the policy that chose them.
#[test]
fn a_call_refused_by_one_carrier_fails_over_to_the_next_trunk_its_tenants_policy_listed() {
    let mut h = two_carrier_harness(&[]);
    let mut sent = h.platform_sends(&platform_invite("x1"));
    let first = sent.remove(invite_to(&sent, TARGET_1).expect("the cheaper carrier first"));
    assert!(
        first
            .header("P-Asserted-Identity")
            .is_some_and(|p| p.contains(NUMBER))
    );
    assert_eq!(
        (active(&h, "acme/pacific"), active(&h, "acme/backup")),
        (1.0, 0.0)
    );
    let mut sent = h.input(
        Side::Public,
        TARGET_1,
        &first.answer(503, "t1", TARGET_1, ""),
    );
    assert_eq!(summary(&sent, Side::Internal), Vec::<String>::new());
    let second = sent.remove(invite_to(&sent, BACKUP).expect("then the other carrier"));
    assert!(
        second
            .header("P-Asserted-Identity")
            .is_some_and(|p| p.contains(NUMBER)),
        "verified with it too: presented"
    );
    assert_eq!(
        (active(&h, "acme/pacific"), active(&h, "acme/backup")),
        (0.0, 1.0),
        "the call's place moved to the trunk it now goes through"
    );
    assert_eq!(
        h.metric("trunkgate_edge_failovers_total", &[("cause", "trunk")]),
        1.0
    );
    let sent = h.input(Side::Public, BACKUP, &second.answer(200, "t2", BACKUP, ""));
    assert_eq!(summary(&sent, Side::Internal), ["200"]);
    let c = h.w.calls.values().next().expect("the call");
    assert_eq!(c.trunk_id(), "acme/backup");
    let tried: Vec<(&str, Option<u16>)> = c
        .tried
        .iter()
        .map(|t| (t.trunk.as_str(), t.status))
        .collect();
    assert_eq!(
        tried,
        [("acme/pacific", Some(503)), ("acme/backup", Some(200))]
    );
    assert!(
        c.tried
            .iter()
            .all(|t| t.chosen_by == crate::call::account::ChosenBy::LeastCost)
    );
    assert_eq!(
        c.rate().map(|r| r.per_minute),
        Some(20_000),
        "billed at the rate of the trunk that carried it"
    );
}

/// With a shared store the next trunk's place is the fleet's to give: the call waits for its
/// verdict, and a refusal there moves on (here: to nothing left, so the platform hears 503).
#[test]
fn a_failover_to_another_trunk_claims_its_place_in_the_fleet() {
    use crate::fleet::{FleetRefusal, Verdict};
    let mut h = two_carrier_harness(&["--state-store", "redis://127.0.0.1:1"]);
    h.platform_sends(&platform_invite("x2"));
    assert_eq!(h.claims[0].1.trunk, "acme/pacific");
    let (places, _rx) = super::fleet_flows::hold();
    let mut sent = h.answer_claim(Verdict::Granted(places));
    let first = sent.remove(invite_to(&sent, TARGET_1).expect("the cheaper carrier"));
    let sent = h.input(
        Side::Public,
        TARGET_1,
        &first.answer(503, "t1", TARGET_1, ""),
    );
    assert!(
        invite_to(&sent, BACKUP).is_none(),
        "not before the fleet's yes"
    );
    assert_eq!(h.claims.len(), 1);
    assert_eq!(h.claims[0].1.trunk, "acme/backup");
    let sent = h.answer_claim(Verdict::Refused(FleetRefusal::Concurrent(5)));
    assert_eq!(summary(&sent, Side::Internal), ["503"]);
    assert_eq!(
        h.metric(
            "trunkgate_edge_refusals_total",
            &[("trunk", "acme/backup"), ("reason", "max_concurrent_calls")]
        ),
        1.0
    );
}
