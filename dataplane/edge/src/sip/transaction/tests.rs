//! The §17 state machines and keys, input by input, the RFC's races among them.

use super::*;

fn request(text: &str) -> Request {
    let bytes = text.replace('\n', "\r\n");
    match trunkgate_sip::parse(bytes.as_bytes()) {
        Ok(trunkgate_sip::SipMessage::Request(r)) => r,
        other => panic!("not a request: {other:?}"),
    }
}

fn with(method: &str, cseq_method: &str, branch: &str, sent_by: &str) -> Request {
    request(&format!(
        "{method} sip:+6498879333@edge.example SIP/2.0
Via: SIP/2.0/UDP {sent_by};branch={branch}
Max-Forwards: 70
From: <sip:+6421555123@carrier.example>;tag=f1
To: <sip:+6498879333@edge.example>
Call-ID: k1@carrier.example
CSeq: 1 {cseq_method}
Content-Length: 0

"
    ))
}

fn timers(a: &Actions) -> Vec<(Timer, Duration)> {
    a.arm.iter().flatten().copied().collect()
}

#[test]
fn server_keys_hold_branch_sent_by_and_method_and_ack_joins_its_invite() {
    let invite = TransactionKey::from_request(
        &with("INVITE", "INVITE", "z9hG4bK1", "192.0.2.1:5060"),
        Role::Server,
    );
    let ack = TransactionKey::from_request(
        &with("ACK", "ACK", "z9hG4bK1", "192.0.2.1:5060"),
        Role::Server,
    );
    assert_eq!(
        ack, invite,
        "§17.2.3: the ACK of a non-2xx matches the INVITE"
    );
    let other_host = TransactionKey::from_request(
        &with("INVITE", "INVITE", "z9hG4bK1", "198.51.100.7:5060"),
        Role::Server,
    );
    assert_ne!(other_host, invite, "same branch from another sent-by");
    let cancel = TransactionKey::from_request(
        &with("CANCEL", "CANCEL", "z9hG4bK1", "192.0.2.1:5060"),
        Role::Server,
    );
    assert_ne!(cancel, invite, "a CANCEL is a transaction of its own");
    assert_eq!(cancel.cancelled(), invite, "§9.2: and names the INVITE");
    let forged = TransactionKey::from_request(
        &with("CANCEL", "CANCEL", "z9hG4bK1", "203.0.113.9:5060"),
        Role::Server,
    );
    assert_ne!(
        forged.cancelled(),
        invite,
        "a CANCEL by branch alone matches nothing"
    );
}

#[test]
fn a_response_finds_its_client_transaction_by_branch_and_cseq_method() {
    let sent = TransactionKey::client("z9hG4bKedge1", Method::Invite);
    let req = with("INVITE", "INVITE", "z9hG4bKedge1", "edge.example:5060");
    assert_eq!(TransactionKey::from_request(&req, Role::Client), sent);
    let resp = trunkgate_sip::response_to(&req, 180, None, None);
    assert_eq!(TransactionKey::of_response(&resp), Some(sent.clone()));
    let cancel = TransactionKey::client("z9hG4bKedge1", Method::Cancel);
    assert_ne!(cancel, sent, "the CANCEL's 200 does not answer the INVITE");
    let text = "SIP/2.0 200 OK
Via: SIP/2.0/UDP edge.example:5060;branch=z9hG4bKedge1
From: <sip:+6421555123@carrier.example>;tag=f1
To: <sip:+6498879333@edge.example>;tag=t1
Call-ID: k1@carrier.example
CSeq: 1 invite
Content-Length: 0

"
    .replace('\n', "\r\n");
    match trunkgate_sip::parse(text.as_bytes()) {
        Ok(trunkgate_sip::SipMessage::Response(lower)) => assert_eq!(
            TransactionKey::of_response(&lower),
            None,
            "methods are case-sensitive"
        ),
        other => panic!("not a response: {other:?}"),
    }
}

#[test]
fn invite_client_retransmits_with_timer_a_until_a_provisional() {
    let (mut tx, start) = ClientTransaction::start(true, false);
    assert_eq!(timers(&start), [(Timer::B, TIMEOUT), (Timer::A, T1)]);
    let a = tx.on_timer(Timer::A);
    assert!(a.resend);
    assert_eq!(timers(&a), [(Timer::A, 2 * T1)]);
    let a = tx.on_timer(Timer::A);
    assert_eq!(
        timers(&a),
        [(Timer::A, 4 * T1)],
        "Timer A doubles without cap"
    );
    assert_eq!(tx.on_response(180).deliver, Delivery::Response);
    assert_eq!(tx.state(), ClientState::Proceeding);
    assert_eq!(
        tx.on_timer(Timer::A),
        Actions::default(),
        "a 1xx stops Timer A"
    );
    assert_eq!(
        tx.on_timer(Timer::B),
        Actions::default(),
        "Timer B runs in Calling only (§17.1.1.2)"
    );
}

#[test]
fn invite_client_without_any_answer_times_out_with_timer_b() {
    let (mut tx, _) = ClientTransaction::start(true, false);
    let b = tx.on_timer(Timer::B);
    assert!(b.timed_out && b.terminated);
    assert_eq!(tx.on_timer(Timer::A), Actions::default());
}

#[test]
fn invite_client_acks_a_non_2xx_and_again_for_its_retransmission() {
    let (mut tx, _) = ClientTransaction::start(true, false);
    let first = tx.on_response(486);
    assert!(first.ack);
    assert_eq!(first.deliver, Delivery::Response);
    assert_eq!(timers(&first), [(Timer::D, TIMEOUT)]);
    let again = tx.on_response(486);
    assert!(again.ack, "§17.1.1.3: a retransmitted final is ACKed again");
    assert_eq!(again.deliver, Delivery::None, "and not handed up twice");
    assert!(tx.on_timer(Timer::D).terminated);
}

#[test]
fn over_a_reliable_transport_nothing_is_retransmitted_and_nothing_lingers() {
    let (mut tx, start) = ClientTransaction::start(true, true);
    assert_eq!(timers(&start), [(Timer::B, TIMEOUT)]);
    let done = tx.on_response(503);
    assert!(done.ack && done.terminated, "Timer D is zero over TCP");
    let (mut tx, start) = ClientTransaction::start(false, true);
    assert_eq!(timers(&start), [(Timer::F, TIMEOUT)]);
    assert!(tx.on_response(200).terminated, "Timer K is zero over TCP");
    let mut srv = ServerTransaction::new(false, true);
    assert!(
        srv.respond(200).is_some_and(|a| a.terminated),
        "Timer J too"
    );
    let mut srv = ServerTransaction::new(true, true);
    let sent = srv.respond(200).expect("a final may go out");
    assert_eq!(
        timers(&sent),
        [(Timer::L, TIMEOUT)],
        "the wait for the ACK stays"
    );
}

#[test]
fn a_retransmitted_2xx_goes_up_for_the_ack_to_be_repeated() {
    let (mut tx, _) = ClientTransaction::start(true, false);
    tx.on_response(100);
    let ok = tx.on_response(200);
    assert_eq!(ok.deliver, Delivery::Response);
    assert!(!ok.ack, "the ACK of a 2xx is the user's (§13.2.2.4)");
    assert_eq!(timers(&ok), [(Timer::M, TIMEOUT)]);
    assert_eq!(tx.on_response(200).deliver, Delivery::Retransmitted2xx);
    assert_eq!(tx.on_response(180), Actions::default(), "late 1xx absorbed");
    assert!(tx.on_timer(Timer::M).terminated);
}

#[test]
fn non_invite_client_caps_timer_e_at_t2_and_keeps_it_at_t2_once_proceeding() {
    let (mut tx, start) = ClientTransaction::start(false, false);
    assert_eq!(timers(&start), [(Timer::F, TIMEOUT), (Timer::E, T1)]);
    let mut last = T1;
    for _ in 0..6 {
        let e = tx.on_timer(Timer::E);
        assert!(e.resend);
        last = timers(&e)[0].1;
    }
    assert_eq!(last, T2);
    tx.on_response(100);
    let e = tx.on_timer(Timer::E);
    assert!(e.resend, "§17.1.2.2: Proceeding still retransmits");
    assert_eq!(timers(&e), [(Timer::E, T2)]);
    let f = tx.on_timer(Timer::F);
    assert!(f.timed_out, "Timer F bounds Proceeding too");
}

#[test]
fn non_invite_client_absorbs_retransmitted_finals_for_timer_k() {
    let (mut tx, _) = ClientTransaction::start(false, false);
    let ok = tx.on_response(200);
    assert_eq!(ok.deliver, Delivery::Response);
    assert_eq!(timers(&ok), [(Timer::K, T4)]);
    assert_eq!(tx.on_response(200), Actions::default());
    assert_eq!(
        tx.on_timer(Timer::E),
        Actions::default(),
        "no retransmission after"
    );
    assert!(tx.on_timer(Timer::K).terminated);
}

#[test]
fn a_given_up_invite_still_acks_late_failures_and_hands_up_a_late_answer() {
    let (mut tx, _) = ClientTransaction::start(true, false);
    tx.give_up();
    assert_eq!(
        tx.on_timer(Timer::A),
        Actions::default(),
        "no more retransmissions"
    );
    assert_eq!(tx.on_timer(Timer::B), Actions::default(), "and no timeout");
    assert!(tx.on_response(503).ack);
    assert_eq!(tx.on_response(200).deliver, Delivery::Response);
}

#[test]
fn invite_server_retransmits_a_failure_with_timer_g_until_the_ack() {
    let mut tx = ServerTransaction::new(true, false);
    assert_eq!(tx.respond(100), Some(Actions::default()));
    let sent = tx.respond(486).expect("a final may go out");
    assert_eq!(timers(&sent), [(Timer::H, TIMEOUT), (Timer::G, T1)]);
    assert_eq!(tx.respond(200), None, "one final response only");
    let intervals: Vec<Duration> = (0..5)
        .map(|_| timers(&tx.on_timer(Timer::G))[0].1)
        .collect();
    assert_eq!(
        intervals,
        [2 * T1, 4 * T1, T2, T2, T2],
        "Timer G doubles up to T2"
    );
    let acked = tx.on_ack().expect("the ACK was awaited");
    assert_eq!(timers(&acked), [(Timer::I, T4)]);
    assert_eq!(
        tx.on_timer(Timer::G),
        Actions::default(),
        "the ACK stops Timer G"
    );
    assert_eq!(tx.on_timer(Timer::H), Actions::default(), "and Timer H");
    assert_eq!(
        tx.on_retransmission(),
        Actions::default(),
        "Confirmed absorbs"
    );
    assert!(tx.on_timer(Timer::I).terminated);
}

#[test]
fn invite_server_without_ack_times_out_with_timer_h_or_l() {
    let mut tx = ServerTransaction::new(true, false);
    tx.respond(503);
    let h = tx.on_timer(Timer::H);
    assert!(h.timed_out && h.terminated);
    let mut tx = ServerTransaction::new(true, false);
    tx.respond(200);
    let l = tx.on_timer(Timer::L);
    assert!(
        l.timed_out,
        "§13.3.1.4: no ACK for the 2xx; the user ends the call"
    );
}

#[test]
fn a_retransmitted_invite_after_the_2xx_gets_the_2xx_again() {
    let mut tx = ServerTransaction::new(true, false);
    tx.respond(100);
    assert!(tx.on_retransmission().resend, "the 100 again");
    tx.respond(200);
    assert_eq!(tx.state(), ServerState::Accepted);
    assert!(
        tx.on_retransmission().resend,
        "the 2xx again, no new transaction"
    );
    let r = tx.on_timer(Timer::Retransmit2xx);
    assert!(r.resend);
    assert_eq!(timers(&r), [(Timer::Retransmit2xx, 2 * T1)]);
}

#[test]
fn a_cancel_that_crosses_the_2xx_finds_the_invite_finished() {
    // §9.2: a CANCEL after the final response has no effect on the INVITE (it gets its
    // own 200); the caller then ACKs the 2xx and hangs up with BYE.
    let mut tx = ServerTransaction::new(true, false);
    tx.respond(180);
    assert!(!tx.finished(), "while ringing the CANCEL applies");
    tx.respond(200);
    assert!(tx.finished());
    assert_eq!(tx.respond(487), None, "no 487 after the 2xx");
    assert!(
        tx.on_ack().is_some(),
        "the ACK of the 2xx still confirms it"
    );
}

#[test]
fn non_invite_server_repeats_its_final_to_retransmissions_for_timer_j() {
    let mut tx = ServerTransaction::new(false, false);
    assert_eq!(
        tx.on_retransmission(),
        Actions::default(),
        "Trying: nothing to repeat"
    );
    let sent = tx.respond(200).expect("a final may go out");
    assert_eq!(timers(&sent), [(Timer::J, TIMEOUT)]);
    assert!(tx.on_retransmission().resend);
    assert_eq!(tx.on_ack(), None, "a non-INVITE waits for no ACK");
    assert!(tx.on_timer(Timer::J).terminated);
}
