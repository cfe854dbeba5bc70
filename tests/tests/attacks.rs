//! The edge under attack, each attack reproduced on loopback and shown to do no harm: a forged
//! To tag or a looped Via from outside the allow-lists gets nothing back (no reflection, no
//! amplification), a CANCEL or BYE carrying another caller's identifiers changes nothing, and
//! only the dialog's own carrier, from its own address, continues it.

use std::net::SocketAddr;
use std::time::Duration;

use trunkgate_tests::sip::RawInvite;
use trunkgate_tests::sipp::scenario;
use trunkgate_tests::*;

const CALLER: &str = "+6421555123";
const NUMBER: &str = "+6498879333";
const WAIT: Duration = Duration::from_secs(5);
/// Long enough for any reply (and its first retransmissions) to arrive on loopback.
const SILENCE: Duration = Duration::from_millis(1500);
/// The carrier of another tenant's trunk: allowed, but not a party to the first tenant's calls.
const OTHER_CARRIER: std::net::IpAddr =
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 11));

/// `acme/pacific` (carrier 127.0.0.10) delivers to `platform`; `beta/other` allows 127.0.0.11.
fn config(lab: &Lab, platform: SocketAddr) {
    lab.write_config(
        "acme.yaml",
        &config::documents(&[
            Trunk::new("acme", "pacific", "127.0.0.10/32", platform).yaml(),
            Numbers::byoc("acme", "numbers", "pacific", &["+6498879300-+6498879399"]).yaml(),
        ]),
    );
    lab.write_config(
        "beta.yaml",
        &config::documents(&[
            Trunk::new("beta", "other", "127.0.0.11/32", platform).yaml(),
            Numbers::byoc("beta", "numbers", "other", &["+6498870000"]).yaml(),
        ]),
    );
}

fn acl_drops(edge: &Edge) -> f64 {
    edge.metric("trunkgate_edge_acl_drops_total", &[("side", "public")])
}

/// `req` (an INVITE's bytes) with one header line replaced or added.
fn with_line(req: &[u8], name: &str, line: &str) -> Vec<u8> {
    let text = String::from_utf8_lossy(req);
    let mut out = String::new();
    let mut done = false;
    for l in text.split_inclusive("\r\n") {
        if !done
            && l.to_ascii_lowercase()
                .starts_with(&format!("{}:", name.to_ascii_lowercase()))
        {
            out.push_str(line);
            out.push_str("\r\n");
            done = true;
        } else if !done && l == "\r\n" {
            out.push_str(line);
            out.push_str("\r\n");
            out.push_str(l);
            done = true;
        } else {
            out.push_str(l);
        }
    }
    out.into_bytes()
}

#[test]
fn a_forged_to_tag_from_outside_the_allow_lists_gets_no_reply_at_all() {
    let lab = Lab::new("attack_forged_tag");
    let platform = Sipp::reserve(PLATFORM);
    config(&lab, platform);
    let edge = Edge::start(&lab, EdgeOptions::default());
    let attacker = RawUdp::bind(DENIED);
    let before = acl_drops(&edge);
    // Before the fix each drew 483/482 with a Warning, retransmitted for 32 s (13x amplification
    // towards whatever address the attacker spoofs).
    let inv = RawInvite::new(&edge.public_uri(NUMBER), CALLER, "forged-tag");
    let forged_to = format!("To: <{}>;tag=tg00aaaaaaaaaaaaaaaa", inv.ruri);
    let max_forwards_0 = with_line(
        &with_line(&inv.invite(attacker.local), "To", &forged_to),
        "Max-Forwards",
        "Max-Forwards: 0",
    );
    let looped = with_line(
        &with_line(&inv.next().invite(attacker.local), "To", &forged_to),
        "Via",
        &format!(
            "Via: SIP/2.0/UDP {};branch=z9hG4bKtg00bbbbbbbbbbbbbbbb;rport\r\nVia: SIP/2.0/UDP {};branch=z9hG4bK-x",
            edge.public, attacker.local
        ),
    );
    let bye = with_line(
        &inv.next().in_dialog(
            "BYE",
            2,
            attacker.local,
            &SipMsg::parse(
                "SIP/2.0 200 OK\r\nTo: <sip:x@y>;tag=tg01cccccccccccccccc\r\n\r\n",
                false,
            )
            .expect("a response"),
        ),
        "Max-Forwards",
        "Max-Forwards: 70",
    );
    for msg in [&max_forwards_0, &looped, &bye] {
        attacker.send(edge.public, msg);
    }
    let replies = attacker.drain(SILENCE);
    assert!(
        replies.is_empty(),
        "no byte goes back to a source outside the allow-lists: {:?}",
        replies
            .iter()
            .map(|r| String::from_utf8_lossy(r).into_owned())
            .collect::<Vec<_>>()
    );
    assert_eventually!(
        acl_drops(&edge) >= before + 3.0,
        WAIT,
        "each is counted as an ACL drop"
    );
}

#[test]
fn a_bye_with_a_real_calls_identifiers_from_elsewhere_does_not_end_it() {
    let lab = Lab::new("attack_bye");
    let platform = Sipp::reserve(PLATFORM);
    config(&lab, platform);
    let edge = Edge::start(&lab, EdgeOptions::default());
    let uas = Sipp::answering(&lab, "platform", platform).start();
    let carrier = RawUdp::bind(CARRIER);
    let inv = RawInvite::new(&edge.public_uri(NUMBER), CALLER, "attack-bye");
    carrier.send(edge.public, &inv.invite(carrier.local));
    let ok = carrier
        .recv_final("INVITE", WAIT)
        .expect("the call is answered");
    assert_eq!(ok.code(), Some(200), "{}", ok.text());
    carrier.send(
        edge.public,
        &inv.in_dialog("ACK", inv.cseq, carrier.local, &ok),
    );

    // Everything the attacker needs is in the carrier's messages: Call-ID, tags, the edge's Contact.
    let attacker = RawUdp::bind(DENIED);
    attacker.send(
        edge.public,
        &inv.in_dialog("BYE", inv.cseq + 1, attacker.local, &ok),
    );
    assert!(
        attacker.drain(SILENCE).is_empty(),
        "the spoofed BYE gets no reply"
    );
    // Another tenant's carrier is allowed to talk to the edge, but not inside this dialog.
    let other = RawUdp::bind(OTHER_CARRIER);
    other.send(
        edge.public,
        &inv.in_dialog("BYE", inv.cseq + 2, other.local, &ok),
    );
    let refused = other
        .recv_final("BYE", WAIT)
        .expect("an answer to an allowed source");
    assert_eq!(refused.code(), Some(481), "{}", refused.text());
    assert!(edge.cdrs().is_empty(), "the call is still up");

    carrier.send(
        edge.public,
        &inv.in_dialog("BYE", inv.cseq + 3, carrier.local, &ok),
    );
    let bye = carrier
        .recv_final("BYE", WAIT)
        .expect("the real BYE is answered");
    assert_eq!(bye.code(), Some(200), "{}", bye.text());
    let cdr = edge.wait_cdr("the call", |c| c["callee"] == NUMBER);
    assert_eq!(cdr["endedBy"], "carrier", "{cdr}");
    uas.wait().assert_ok();
}

#[test]
fn a_cancel_with_the_callers_branch_from_elsewhere_cancels_nothing() {
    let lab = Lab::new("attack_cancel");
    let platform = Sipp::reserve(PLATFORM);
    config(&lab, platform);
    let edge = Edge::start(&lab, EdgeOptions::default());
    let uas = Sipp::uas_at(
        &lab,
        "platform",
        scenario(&lab, "uas_ring_cancel.xml", &[("RING_MS", "100")]),
        platform,
    )
    .start();
    let carrier = RawUdp::bind(CARRIER);
    let inv = RawInvite::new(&edge.public_uri(NUMBER), CALLER, "attack-cancel");
    carrier.send(edge.public, &inv.invite(carrier.local));
    let ringing = eventually(WAIT, || {
        carrier.recv_msg(WAIT).filter(|m| m.code() == Some(180))
    })
    .expect("the platform rings");
    assert!(ringing.header("To").is_some_and(|t| t.contains("tag=")));

    // The caller's branch, Call-ID, From tag and CSeq are all the attacker needs under a
    // branch-only match.
    let attacker = RawUdp::bind(DENIED);
    attacker.send(edge.public, &inv.cancel(attacker.local));
    assert!(
        attacker.drain(SILENCE).is_empty(),
        "no reply to the spoofed CANCEL"
    );
    let other = RawUdp::bind(OTHER_CARRIER);
    other.send(edge.public, &inv.cancel(other.local));
    let refused = other
        .recv_final("CANCEL", WAIT)
        .expect("an answer to an allowed source");
    assert_eq!(refused.code(), Some(481), "{}", refused.text());
    assert!(
        carrier
            .drain(Duration::from_millis(300))
            .iter()
            .all(|m| !String::from_utf8_lossy(m).starts_with("SIP/2.0 487")),
        "the caller's INVITE is not terminated"
    );

    carrier.send(edge.public, &inv.cancel(carrier.local));
    let terminated = carrier.recv_final("INVITE", WAIT).expect("the INVITE ends");
    assert_eq!(terminated.code(), Some(487), "{}", terminated.text());
    carrier.send(edge.public, &inv.ack_non_2xx(carrier.local, &terminated));
    uas.wait().assert_ok();
}
