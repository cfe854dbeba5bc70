//! The call machine driven alone: a `Call` built by hand, a context with a test [`Env`], and
//! the effects each input records. No worker, transaction table or socket is involved.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use trunkgate_crds::{CarrierTrunk, Secrets, compile};
use trunkgate_sip::{Method, Request, Response, SipMessage};

use super::machine::{Again, CallPurpose, CallTimer, Ctx, Effect, Env};
use super::{Attempt, Call, CallState, Direction, Leg, LegId, Side};
use crate::call::b2bua::session_timer::SessionTimer;
use crate::sip::ids::IdMint;
use crate::sip::transaction::TransactionKey;
use crate::transport::Link;

const CARRIER: &str = "203.0.113.5:5060";
const PLATFORM: &str = "192.0.2.50:5060";

struct TestEnv {
    settings: crate::config::settings::Settings,
    metrics: crate::metrics::Metrics,
    platform: crate::guard::platform::PlatformAcl,
    /// Addresses let through the kernel filter.
    allowed: std::sync::Mutex<Vec<std::net::IpAddr>>,
}

impl Env for TestEnv {
    fn hostport_on(&self, side: Side, _: &Link) -> &str {
        match side {
            Side::Public => "198.51.100.1:5060",
            Side::Internal => "10.0.0.1:5080",
        }
    }
    fn allow_source(&self, ip: std::net::IpAddr) {
        self.allowed.lock().expect("not poisoned").push(ip);
    }
    fn platform(&self) -> &crate::guard::platform::PlatformAcl {
        &self.platform
    }
    fn settings(&self) -> &crate::config::settings::Settings {
        &self.settings
    }
    fn metrics(&self) -> &crate::metrics::Metrics {
        &self.metrics
    }
    fn fleet_shared(&self) -> bool {
        false
    }
    fn share_quality(&self, _: &str, _: &str, _: &crate::quality::Counts) {}
}

/// A call, its environment and a clock: what every test drives.
struct Bench {
    call: Call,
    env: TestEnv,
    mint: IdMint,
    now: Instant,
}

fn leg(side: Side, peer: &str, tag: &str, remote_tag: &str, cseq: u32) -> Leg {
    let peer: std::net::SocketAddr = peer.parse().expect("an address");
    Leg {
        side,
        peer: Link::Udp(peer),
        call_id: format!("call-{tag}"),
        local_tag: tag.into(),
        remote_tag: Some(remote_tag.into()),
        local: format!("<sip:edge@{tag}.example>"),
        remote: format!("<sip:peer@{peer}>;tag={remote_tag}"),
        remote_target: format!("sip:peer@{peer}"),
        route_set: Vec::new(),
        local_cseq: cseq,
        invite_cseq: cseq,
        awaiting_ack: None,
        reinvite_cseq: None,
        session: None,
    }
}

impl Bench {
    /// An inbound call, answered on both legs: leg A to the carrier, leg B to the platform.
    fn confirmed() -> Self {
        let trunk =
            CarrierTrunk::test("acme", "pacific").with_destination(&format!("sip:{PLATFORM}"));
        let c = compile(&[trunk], &[], &Secrets::default(), None);
        let metrics = crate::metrics::Metrics::new();
        let rt = Arc::new(crate::config::Runtime::build(c.config, None, &metrics));
        let settings = <crate::config::settings::Settings as clap::Parser>::try_parse_from([
            "trunkgate-edge",
            "--ringing-seconds",
            "90",
        ])
        .expect("flags");
        let call = Call {
            rt,
            trunk: 0,
            media_trunk: 0,
            selection: trunkgate_crds::Selection::Priority,
            carriers: Vec::new(),
            identity_at: (0, 0),
            direction: Direction::Inbound,
            a: leg(Side::Public, CARRIER, "ta", "ra", 1),
            b: leg(Side::Internal, PLATFORM, "tb", "rb", 1),
            state: CallState::Confirmed,
            a_invite: TransactionKey::client("z9hG4bK-a-invite", Method::Invite),
            b_invite: None,
            hops: Vec::new(),
            next_hop: 0,
            b_user: "+6498879333".into(),
            b_lines: String::new(),
            b_body: Vec::new(),
            auth_line: None,
            auth_tries: 0,
            b_ack: None,
            caller: None,
            callee: trunkgate_crds::e164::E164::parse("+6498879333").expect("E.164"),
            started: SystemTime::now(),
            answered: Some(SystemTime::now()),
            final_code: Some(200),
            ended_by: None,
            last_failure: None,
            slot: None,
            setup: None,
            setup_source: None,
            media: None,
            media_stats: Vec::new(),
            bye_lines: String::new(),
            forks_ended: Vec::new(),
            redirects: 0,
            recovered: false,
            checkpointed: false,
            tried: Vec::new(),
            ended: None,
            charge: None,
        };
        Bench {
            call,
            env: TestEnv {
                settings,
                metrics,
                platform: crate::guard::platform::PlatformAcl::new(&[]),
                allowed: Default::default(),
            },
            mint: IdMint::new(0),
            now: Instant::now(),
        }
    }

    /// An outbound call in set-up: leg A from the platform, leg B to the carrier, whose
    /// INVITE is pending at the first of two targets.
    fn outbound(attempt: Attempt) -> Self {
        let mut b = Self::proceeding(attempt, true);
        b.call.direction = Direction::Outbound;
        std::mem::swap(&mut b.call.a, &mut b.call.b);
        std::mem::swap(&mut b.call.a.local_tag, &mut b.call.b.local_tag);
        b.call.a.remote_tag = Some("ra".into());
        b.call.b.remote_tag = None;
        let targets = ["sip:203.0.113.5:5060", "sip:203.0.113.6:5060"];
        b.call.hops = targets
            .iter()
            .map(|u| {
                let t = trunkgate_crds::compile::parse_target(u, None, 1, 1).expect("a target");
                crate::route::admission::hop_of(&t)
            })
            .collect();
        b.call.next_hop = 1;
        b
    }

    /// A call whose leg B INVITE `key` has had `attempt` so far.
    fn proceeding(attempt: Attempt, pending: bool) -> Self {
        let mut b = Self::confirmed();
        b.call.state = CallState::Proceeding(attempt);
        b.call.answered = None;
        b.call.final_code = None;
        b.call.b.remote_tag = None;
        b.call.b_invite =
            pending.then(|| TransactionKey::client("z9hG4bK-b-invite", Method::Invite));
        b
    }

    /// Runs one transition and returns what it recorded.
    fn run(&mut self, f: impl FnOnce(&mut Call, &mut Ctx)) -> Vec<Effect> {
        let mut out = Vec::new();
        let mut ctx = Ctx {
            now: self.now,
            mint: &mut self.mint,
            env: &self.env,
            media: None,
            out: &mut out,
        };
        f(&mut self.call, &mut ctx);
        out
    }
}

fn request(text: &str) -> Request {
    match trunkgate_sip::parse(text.as_bytes()) {
        Ok(SipMessage::Request(r)) => r,
        other => panic!("a request: {other:?}"),
    }
}

fn response(text: &str) -> Response {
    match trunkgate_sip::parse(text.as_bytes()) {
        Ok(SipMessage::Response(r)) => r,
        other => panic!("a response: {other:?}"),
    }
}

/// An in-dialog request from leg A's carrier.
fn from_carrier(method: &str, cseq: u32, extra: &str) -> Request {
    request(&format!(
        "{method} sip:edge@198.51.100.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP {CARRIER};branch=z9hG4bK-c{cseq}\r\nFrom: <sip:peer@{CARRIER}>;tag=ra\r\nTo: <sip:edge@ta.example>;tag=ta\r\nCall-ID: call-ta\r\nCSeq: {cseq} {method}\r\nMax-Forwards: 70\r\n{extra}Content-Length: 0\r\n\r\n"
    ))
}

/// An in-dialog request from leg B's platform.
fn from_platform(method: &str, cseq: u32, extra: &str) -> Request {
    request(&format!(
        "{method} sip:edge@10.0.0.1:5080 SIP/2.0\r\nVia: SIP/2.0/UDP {PLATFORM};branch=z9hG4bK-p{cseq}\r\nFrom: <sip:peer@{PLATFORM}>;tag=rb\r\nTo: <sip:edge@tb.example>;tag=tb\r\nCall-ID: call-tb\r\nCSeq: {cseq} {method}\r\nMax-Forwards: 70\r\n{extra}Content-Length: 0\r\n\r\n"
    ))
}

/// An answer from the carrier to a request of ours on leg A.
fn carrier_answer(code: u16, method: &str, cseq: u32, extra: &str) -> Response {
    response(&format!(
        "SIP/2.0 {code} Whatever\r\nVia: SIP/2.0/UDP 198.51.100.1:5060;branch=z9hG4bK-y\r\nFrom: <sip:edge@ta.example>;tag=ta\r\nTo: <sip:peer@{CARRIER}>;tag=ra\r\nCall-ID: call-ta\r\nCSeq: {cseq} {method}\r\n{extra}Content-Length: 0\r\n\r\n"
    ))
}

/// An answer from the platform to a request of ours on leg B.
fn platform_answer(code: u16, method: &str, cseq: u32, extra: &str) -> Response {
    response(&format!(
        "SIP/2.0 {code} Whatever\r\nVia: SIP/2.0/UDP 10.0.0.1:5080;branch=z9hG4bK-x\r\nFrom: <sip:edge@tb.example>;tag=tb\r\nTo: <sip:peer@{PLATFORM}>;tag=rb\r\nCall-ID: call-tb\r\nCSeq: {cseq} {method}\r\n{extra}Content-Length: 0\r\n\r\n"
    ))
}

fn server_key(name: &str) -> TransactionKey {
    TransactionKey::client(&format!("z9hG4bK-{name}"), Method::Invite)
}

/// The requests among `effects`, as (leg, method, CSeq, text).
fn requests(effects: &[Effect]) -> Vec<(LegId, Method, u32, String)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Request(s) => Some((
                s.leg,
                s.method,
                s.cseq,
                String::from_utf8_lossy(&s.bytes).into_owned(),
            )),
            _ => None,
        })
        .collect()
}

fn kinds(effects: &[Effect]) -> Vec<&'static str> {
    effects
        .iter()
        .map(|e| match e {
            Effect::Request(_) => "request",
            Effect::Respond { .. } => "respond",
            Effect::Refuse { .. } => "refuse",
            Effect::Timer { .. } => "timer",
            Effect::Send { .. } => "send",
            Effect::CancelB => "cancel",
            Effect::Acked(_) => "acked",
            Effect::NextHop => "next_hop",
            Effect::Claim(_) => "claim",
            Effect::InviteTo(_) => "invite_to",
            Effect::Resolve(_) => "resolve",
            Effect::AwaitAck => "await_ack",
            Effect::Checkpoint => "checkpoint",
            Effect::ForgetCheckpoint => "forget_checkpoint",
            Effect::Record => "record",
            Effect::Finish => "finish",
        })
        .collect()
}

#[test]
fn a_bye_from_the_carrier_is_answered_and_hangs_up_the_platform() {
    let mut b = Bench::confirmed();
    let bye = from_carrier("BYE", 2, "");
    let fx = b.run(|c, ctx| c.on_in_dialog(ctx, LegId::A, server_key("bye"), &bye));
    assert_eq!(kinds(&fx), ["respond", "request", "finish"]);
    assert!(matches!(&fx[0], Effect::Respond { code: 200, .. }));
    let reqs = requests(&fx);
    assert_eq!(
        (reqs[0].0, reqs[0].1, reqs[0].2),
        (LegId::B, Method::Bye, 2)
    );
    assert!(
        reqs[0]
            .3
            .starts_with(&format!("BYE sip:peer@{PLATFORM} SIP/2.0\r\n")),
        "{}",
        reqs[0].3
    );
    assert!(reqs[0].3.contains("Call-ID: call-tb\r\n"));
    assert_eq!(b.call.state, CallState::Ending);
    assert_eq!(b.call.ended_by, Some("carrier"));
}

#[test]
fn a_bye_from_the_platform_hangs_up_the_carrier() {
    let mut b = Bench::confirmed();
    let bye = request(&format!(
        "BYE sip:edge@10.0.0.1:5080 SIP/2.0\r\nVia: SIP/2.0/UDP {PLATFORM};branch=z9hG4bK-p1\r\nFrom: <sip:peer@{PLATFORM}>;tag=rb\r\nTo: <sip:edge@tb.example>;tag=tb\r\nCall-ID: call-tb\r\nCSeq: 5 BYE\r\nContent-Length: 0\r\n\r\n"
    ));
    let fx = b.run(|c, ctx| c.on_in_dialog(ctx, LegId::B, server_key("bye"), &bye));
    let reqs = requests(&fx);
    assert_eq!(reqs.len(), 1);
    assert_eq!((reqs[0].0, reqs[0].1), (LegId::A, Method::Bye));
    assert!(
        reqs[0]
            .3
            .contains(&format!("BYE sip:peer@{CARRIER} SIP/2.0"))
    );
    assert!(
        reqs[0]
            .3
            .contains("Via: SIP/2.0/UDP 198.51.100.1:5060;branch="),
        "{}",
        reqs[0].3
    );
    assert_eq!(b.call.ended_by, Some("platform"));
}

#[test]
fn the_edge_ending_an_answered_call_sends_bye_on_both_legs_once() {
    let mut b = Bench::confirmed();
    b.call.bye_lines = "Reason: SIP;cause=503;text=\"edge shutting down\"\r\n".into();
    let fx = b.run(|c, ctx| c.end(ctx, None, "shutdown"));
    let reqs = requests(&fx);
    assert_eq!(
        reqs.iter().map(|r| (r.0, r.1)).collect::<Vec<_>>(),
        [(LegId::A, Method::Bye), (LegId::B, Method::Bye)]
    );
    assert!(reqs.iter().all(|r| r.3.contains("Reason: SIP;cause=503")));
    assert_eq!(kinds(&fx).last(), Some(&"finish"));
    assert_eq!(b.call.ended_by, Some("edge"));
    // Ending twice (a BYE crossing ours) changes nothing.
    assert!(b.run(|c, ctx| c.end(ctx, Some(LegId::A), "BYE")).is_empty());
}

#[test]
fn ending_a_call_in_set_up_cancels_leg_b_only_while_its_invite_is_pending() {
    let mut b = Bench::proceeding(Attempt::Ringing, true);
    let fx = b.run(|c, ctx| c.end(ctx, None, "shutdown"));
    assert_eq!(kinds(&fx), ["cancel", "finish"]);
    let mut b = Bench::proceeding(Attempt::Ringing, false);
    let fx = b.run(|c, ctx| c.end(ctx, None, "shutdown"));
    assert_eq!(kinds(&fx), ["finish"]);
    let mut b = Bench::proceeding(Attempt::Calling, true);
    b.call.state = CallState::Cancelling(Attempt::Calling);
    assert!(
        b.run(|c, ctx| c.end(ctx, None, "again")).is_empty(),
        "a cancel is under way"
    );
}

#[test]
fn each_bye_takes_the_next_cseq_of_its_leg() {
    let mut b = Bench::confirmed();
    b.call.b.local_cseq = 7;
    let fx = b.run(|c, ctx| c.send_bye(ctx, LegId::B));
    assert_eq!(requests(&fx)[0].2, 8);
    assert!(requests(&fx)[0].3.contains("CSeq: 8 BYE\r\n"));
    assert_eq!(b.call.b.local_cseq, 8);
}

#[test]
fn a_refer_is_refused_405_with_allow_and_the_call_stays() {
    let mut b = Bench::confirmed();
    let refer = from_carrier("REFER", 2, "Refer-To: <sip:x@203.0.113.9>\r\n");
    let fx = b.run(|c, ctx| c.on_in_dialog(ctx, LegId::A, server_key("refer"), &refer));
    match &fx[..] {
        [
            Effect::Refuse {
                code: 405, extra, ..
            },
        ] => assert!(extra.starts_with("Allow: INVITE")),
        other => panic!("{other:?}"),
    }
    assert_eq!(b.call.state, CallState::Confirmed);
}

#[test]
fn a_reinvite_is_relayed_with_the_other_legs_dialog_next_cseq_and_our_contact() {
    let mut b = Bench::confirmed();
    let reinvite = from_carrier("INVITE", 2, "Contact: <sip:moved@203.0.113.6:5060>\r\n");
    let key = server_key("reinvite");
    let fx = b.run(|c, ctx| c.on_in_dialog(ctx, LegId::A, key.clone(), &reinvite));
    assert_eq!(
        b.call.a.remote_target, "sip:moved@203.0.113.6:5060",
        "target refresh (RFC 3261 §12.2.2)"
    );
    let Effect::Request(sent) = &fx[0] else {
        panic!("{fx:?}")
    };
    assert_eq!(sent.purpose, CallPurpose::Relay(key));
    assert_eq!(
        (sent.leg, sent.method, sent.cseq),
        (LegId::B, Method::Invite, 2)
    );
    let text = String::from_utf8_lossy(&sent.bytes);
    assert!(text.contains("Contact: <sip:10.0.0.1:5080>\r\n"), "{text}");
    assert!(
        text.contains("From: <sip:edge@tb.example>;tag=tb\r\n"),
        "{text}"
    );
    assert!(
        !text.contains("203.0.113"),
        "nothing of the carrier's side passes: {text}"
    );
}

#[test]
fn a_request_to_a_leg_without_a_dialog_yet_is_refused_491() {
    let mut b = Bench::proceeding(Attempt::Ringing, true);
    let update = from_carrier("UPDATE", 2, "");
    let fx = b.run(|c, ctx| c.on_in_dialog(ctx, LegId::A, server_key("update"), &update));
    assert!(
        matches!(&fx[..], [Effect::Refuse { code: 491, .. }]),
        "{fx:?}"
    );
}

#[test]
fn a_prack_names_the_invite_of_the_leg_it_is_sent_on() {
    let mut b = Bench::confirmed();
    b.call.b.invite_cseq = 41;
    let prack = from_carrier("PRACK", 2, "RAck: 1 1 INVITE\r\n");
    let fx = b.run(|c, ctx| c.on_in_dialog(ctx, LegId::A, server_key("prack"), &prack));
    let text = &requests(&fx)[0].3;
    assert!(
        text.contains("RAck: 1 41 INVITE\r\n"),
        "RFC 3262 §7.2: {text}"
    );
    assert!(
        !text.contains("Contact:"),
        "only INVITE and UPDATE carry our Contact"
    );
}

#[test]
fn a_2xx_to_a_relayed_reinvite_goes_back_confirms_targets_and_is_checkpointed() {
    let mut b = Bench::confirmed();
    let key = server_key("reinvite");
    let ok = platform_answer(200, "INVITE", 2, "Contact: <sip:pod2@192.0.2.51:5060>\r\n");
    let fx = b.run(|c, ctx| c.relay_response(ctx, LegId::B, key.clone(), Method::Invite, 2, &ok));
    assert_eq!(kinds(&fx), ["respond", "checkpoint"]);
    let Effect::Respond { code, lines, .. } = &fx[0] else {
        panic!()
    };
    assert_eq!(*code, 200);
    assert!(
        lines.starts_with("Contact: <sip:198.51.100.1:5060>\r\n"),
        "{lines}"
    );
    assert_eq!(b.call.b.remote_target, "sip:pod2@192.0.2.51:5060");
    assert_eq!(b.call.b.reinvite_cseq, Some(2), "for the ACK to follow");
    assert_eq!(b.call.a.awaiting_ack, Some(key));
}

#[test]
fn a_refusal_of_a_relayed_request_goes_back_and_changes_nothing() {
    let mut b = Bench::confirmed();
    let busy = platform_answer(488, "INVITE", 2, "Contact: <sip:pod2@192.0.2.51:5060>\r\n");
    let fx =
        b.run(|c, ctx| c.relay_response(ctx, LegId::B, server_key("r"), Method::Invite, 2, &busy));
    assert_eq!(kinds(&fx), ["respond"]);
    assert!(matches!(&fx[0], Effect::Respond { code: 488, .. }));
    assert_eq!(b.call.b.remote_target, format!("sip:peer@{PLATFORM}"));
    assert_eq!(b.call.b.reinvite_cseq, None);
    let trying = platform_answer(100, "INVITE", 2, "");
    assert!(
        b.run(|c, ctx| c.relay_response(
            ctx,
            LegId::B,
            server_key("r"),
            Method::Invite,
            2,
            &trying
        ))
        .is_empty()
    );
}

#[test]
fn a_refresh_that_crosses_the_edge_restarts_both_legs_session_timers() {
    let mut b = Bench::confirmed();
    let ok = platform_answer(
        200,
        "UPDATE",
        3,
        "Session-Expires: 1800;refresher=uas\r\nRequire: timer\r\n",
    );
    let fx =
        b.run(|c, ctx| c.relay_response(ctx, LegId::B, server_key("u"), Method::Update, 3, &ok));
    assert_eq!(kinds(&fx), ["timer", "timer", "respond", "checkpoint"]);
    let timers: Vec<_> = fx
        .iter()
        .filter_map(|e| match e {
            Effect::Timer { timer, .. } => Some(timer.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        timers,
        [CallTimer::Session(LegId::B), CallTimer::Session(LegId::A)]
    );
    assert!(b.call.a.session.is_some() && b.call.b.session.is_some());
    assert_eq!(b.call.b.awaiting_ack, None, "an UPDATE has no ACK");
}

#[test]
fn a_session_the_edge_refreshes_gets_an_update_at_its_half_time() {
    let mut b = Bench::confirmed();
    b.call.b.session = Some(SessionTimer::new(1800, true, b.now));
    b.now += Duration::from_secs(900);
    let fx = b.run(|c, ctx| c.session_due(ctx, LegId::B));
    assert_eq!(kinds(&fx), ["timer", "request"]);
    let r = &requests(&fx)[0];
    assert_eq!((r.0, r.1, r.2), (LegId::B, Method::Update, 2));
    assert!(
        r.3.contains("Session-Expires: 1800;refresher=uac\r\n"),
        "{}",
        r.3
    );
    assert!(
        !b.call.b.session.is_some_and(|s| s.edge_refreshes),
        "waiting for the answer"
    );
    let sent = b
        .env
        .metrics
        .session_refreshes
        .with_label_values(&["acme/pacific", "sent"])
        .get();
    assert_eq!(sent, 1);
}

#[test]
fn a_session_the_peer_did_not_refresh_ends_the_call_with_reason_408() {
    let mut b = Bench::confirmed();
    b.call.a.session = Some(SessionTimer::new(90, false, b.now));
    b.now += Duration::from_secs(60);
    let fx = b.run(|c, ctx| c.session_due(ctx, LegId::A));
    let reqs = requests(&fx);
    assert_eq!(reqs.len(), 2, "BYE on both legs");
    assert!(
        reqs.iter()
            .all(|r| r.1 == Method::Bye && r.3.contains("Reason: SIP;cause=408"))
    );
    assert_eq!(b.call.state, CallState::Ending);
}

#[test]
fn a_session_timer_that_fires_early_or_after_the_end_does_nothing() {
    let mut b = Bench::confirmed();
    b.call.a.session = Some(SessionTimer::new(1800, true, b.now));
    b.now += Duration::from_secs(100);
    assert!(
        b.run(|c, ctx| c.session_due(ctx, LegId::A)).is_empty(),
        "a refresh moved it"
    );
    b.now += Duration::from_secs(900);
    b.call.state = CallState::Ended;
    assert!(b.run(|c, ctx| c.session_due(ctx, LegId::A)).is_empty());
    assert!(
        b.run(|c, ctx| c.session_due(ctx, LegId::B)).is_empty(),
        "no timer on leg B"
    );
}

#[test]
fn a_2xx_to_our_refresh_without_session_expires_keeps_the_edge_refreshing() {
    let mut b = Bench::confirmed();
    b.call.b.session = Some(SessionTimer::new(600, false, b.now));
    let ok = platform_answer(200, "UPDATE", 2, "");
    let fx = b.run(|c, ctx| c.refresh_answered(ctx, LegId::B, &ok));
    match &fx[..] {
        [
            Effect::Timer {
                after,
                timer: CallTimer::Session(LegId::B),
            },
        ] => {
            assert_eq!(*after, Duration::from_secs(300));
        }
        other => panic!("{other:?}"),
    }
    assert!(
        b.call
            .b
            .session
            .is_some_and(|s| s.edge_refreshes && s.interval == 600)
    );
}

#[test]
fn a_refresh_answered_481_ends_the_call_and_one_refused_stops_refreshing() {
    let mut b = Bench::confirmed();
    let gone = platform_answer(481, "UPDATE", 2, "");
    let fx = b.run(|c, ctx| c.refresh_answered(ctx, LegId::B, &gone));
    assert!(
        requests(&fx)
            .iter()
            .all(|r| r.3.contains("Reason: SIP;cause=481"))
    );
    assert_eq!(kinds(&fx).last(), Some(&"finish"));
    let mut b = Bench::confirmed();
    b.call.b.session = Some(SessionTimer::new(600, true, b.now));
    let no = platform_answer(501, "UPDATE", 2, "");
    assert!(
        b.run(|c, ctx| c.refresh_answered(ctx, LegId::B, &no))
            .is_empty()
    );
    assert_eq!(b.call.b.session, None, "the edge stops refreshing this leg");
    assert_eq!(b.call.state, CallState::Confirmed);
    let ringing = platform_answer(180, "UPDATE", 2, "");
    assert!(
        b.run(|c, ctx| c.refresh_answered(ctx, LegId::B, &ringing))
            .is_empty()
    );
}

#[test]
fn ringing_too_long_answers_the_caller_408_and_cancels_leg_b() {
    let mut b = Bench::proceeding(Attempt::Ringing, true);
    let key = TransactionKey::client("z9hG4bK-b-invite", Method::Invite);
    let fx = b.run(|c, ctx| c.ringing_too_long(ctx, &key));
    assert_eq!(kinds(&fx), ["refuse", "cancel"]);
    assert!(matches!(&fx[0], Effect::Refuse { code: 408, text, .. } if text.contains("90 s")));
    assert_eq!(b.call.state, CallState::Cancelling(Attempt::Ringing));
    assert_eq!(
        (b.call.final_code, b.call.ended_by),
        (Some(408), Some("edge"))
    );
    // The timer of an attempt given up (failover) does nothing.
    let mut b = Bench::proceeding(Attempt::Ringing, true);
    let old = TransactionKey::client("z9hG4bK-older", Method::Invite);
    assert!(b.run(|c, ctx| c.ringing_too_long(ctx, &old)).is_empty());
    let mut b = Bench::confirmed();
    assert!(
        b.run(|c, ctx| c.ringing_too_long(ctx, &key)).is_empty(),
        "answered meanwhile"
    );
}

#[test]
fn a_body_of_a_call_without_relay_passes_unchanged() {
    let mut b = Bench::confirmed();
    let sdp = b"v=0\r\no=- 1 1 IN IP4 203.0.113.5\r\ns=-\r\nc=IN IP4 203.0.113.5\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";
    let mut out = Vec::new();
    let mut ctx = Ctx {
        now: b.now,
        mint: &mut b.mint,
        env: &b.env,
        media: None,
        out: &mut out,
    };
    let body = b.call.relay_body(
        &mut ctx,
        LegId::A,
        sdp,
        Some(trunkgate_media::Exchange::Offer),
    );
    assert_eq!(body.ok().as_deref(), Some(&sdp[..]));
    assert!(out.is_empty());
}

#[test]
fn the_callers_ack_of_the_answer_goes_to_leg_b_with_the_invites_cseq_and_credentials() {
    let mut b = Bench::confirmed();
    b.call.b.invite_cseq = 3;
    b.call.auth_line = Some("Proxy-Authorization: Digest username=\"acme\"\r\n".into());
    b.call.a.awaiting_ack = Some(server_key("a-invite"));
    let ack = from_carrier("ACK", 1, "");
    let fx = b.run(|c, ctx| c.on_ack(ctx, LegId::A, &ack));
    let [Effect::Acked(acked), Effect::Send { side, dest, bytes }] = &fx[..] else {
        panic!("{fx:?}")
    };
    assert_eq!(acked, &server_key("a-invite"), "our 2xx stops");
    assert_eq!(
        (*side, dest.addr().to_string()),
        (Side::Internal, PLATFORM.to_string())
    );
    let text = String::from_utf8_lossy(bytes);
    assert!(
        text.starts_with(&format!("ACK sip:peer@{PLATFORM} SIP/2.0")),
        "{text}"
    );
    assert!(text.contains("CSeq: 3 ACK\r\n"), "{text}");
    assert!(
        text.contains("Proxy-Authorization: Digest"),
        "RFC 3261 §13.2.2.4: {text}"
    );
    assert_eq!(
        b.call.b_ack.as_deref(),
        Some(&bytes[..]),
        "kept for a retransmitted 2xx"
    );
    assert!(b.call.auth_line.is_none());
    // The same ACK again (a retransmission of ours) relays nothing more.
    assert!(b.run(|c, ctx| c.on_ack(ctx, LegId::A, &ack)).is_empty());
}

#[test]
fn the_ack_of_a_relayed_reinvites_2xx_takes_that_reinvites_cseq_once() {
    let mut b = Bench::confirmed();
    b.call.b_ack = Some(b"ACK of the set-up".to_vec());
    b.call.b.reinvite_cseq = Some(5);
    b.call.a.awaiting_ack = Some(server_key("reinvite"));
    let ack = from_carrier("ACK", 2, "");
    let fx = b.run(|c, ctx| c.on_ack(ctx, LegId::A, &ack));
    let [Effect::Acked(_), Effect::Send { bytes, .. }] = &fx[..] else {
        panic!("{fx:?}")
    };
    assert!(String::from_utf8_lossy(bytes).contains("CSeq: 5 ACK\r\n"));
    assert_eq!(b.call.b_ack.as_deref(), Some(&b"ACK of the set-up"[..]));
    assert!(b.run(|c, ctx| c.on_ack(ctx, LegId::A, &ack)).is_empty());
}

#[test]
fn a_cancel_before_leg_b_rang_waits_for_its_provisional_answer() {
    let mut b = Bench::proceeding(Attempt::Calling, true);
    let a_invite = b.call.a_invite.clone();
    let fx = b.run(|c, ctx| c.on_cancel(ctx, Side::Public, a_invite.clone()));
    match &fx[..] {
        [Effect::Respond { key, code: 487, .. }] => assert_eq!(*key, a_invite),
        other => panic!("{other:?}"),
    }
    assert_eq!(b.call.state, CallState::Cancelling(Attempt::Calling));
    assert_eq!(
        (b.call.final_code, b.call.ended_by),
        (Some(487), Some("carrier"))
    );
}

#[test]
fn a_cancel_after_leg_b_rang_cancels_it_and_one_before_any_invite_ends_the_call() {
    let mut b = Bench::proceeding(Attempt::Ringing, true);
    let a_invite = b.call.a_invite.clone();
    let fx = b.run(|c, ctx| c.on_cancel(ctx, Side::Public, a_invite.clone()));
    assert_eq!(kinds(&fx), ["respond", "cancel"]);
    // Leg B's target still being looked up: nothing to CANCEL, the call ends.
    let mut b = Bench::proceeding(Attempt::Calling, false);
    let fx = b.run(|c, ctx| c.on_cancel(ctx, Side::Internal, a_invite));
    assert_eq!(kinds(&fx), ["respond", "finish"]);
    assert_eq!(b.call.ended_by, Some("platform"));
}

fn b_key() -> TransactionKey {
    TransactionKey::client("z9hG4bK-b-invite", Method::Invite)
}

/// An answer to leg B's INVITE from the platform (inbound) with a To tag.
fn answer(code: u16, extra: &str) -> Response {
    platform_answer(code, "INVITE", 1, extra)
}

#[test]
fn the_first_ringing_is_relayed_with_our_contact_and_starts_the_ringing_timer() {
    let mut b = Bench::proceeding(Attempt::Calling, true);
    let ringing = answer(180, "Contact: <sip:pod@192.0.2.50:5060>\r\n");
    let fx = b.run(|c, ctx| {
        let step = c.on_setup_answer(ctx, &b_key(), &ringing);
        assert_eq!(step, super::machine::SetupAnswer::Done);
    });
    assert_eq!(kinds(&fx), ["timer", "respond"]);
    assert!(
        matches!(&fx[0], Effect::Timer { after, timer: CallTimer::Ringing(k) } if *k == b_key() && *after == Duration::from_secs(90))
    );
    let Effect::Respond {
        key,
        code: 180,
        lines,
        ..
    } = &fx[1]
    else {
        panic!("{fx:?}")
    };
    assert_eq!(*key, b.call.a_invite);
    assert!(
        lines.starts_with("Contact: <sip:198.51.100.1:5060>\r\n"),
        "{lines}"
    );
    assert_eq!(b.call.state, CallState::Proceeding(Attempt::Ringing));
    assert_eq!(
        b.call.b.remote_tag.as_deref(),
        Some("rb"),
        "the early dialog is learnt"
    );
    // A 183 after it starts no second ringing timer; a 100 does nothing at all.
    let progress = answer(183, "");
    assert_eq!(
        kinds(&b.run(|c, ctx| {
            c.on_setup_answer(ctx, &b_key(), &progress);
        })),
        ["respond"]
    );
    let trying = answer(100, "");
    assert!(
        b.run(|c, ctx| {
            c.on_setup_answer(ctx, &b_key(), &trying);
        })
        .is_empty()
    );
}

#[test]
fn a_cancelled_call_sends_its_cancel_at_the_first_ringing_and_relays_nothing() {
    let mut b = Bench::proceeding(Attempt::Calling, true);
    b.call.state = CallState::Cancelling(Attempt::Calling);
    let ringing = answer(180, "");
    let fx = b.run(|c, ctx| {
        c.on_setup_answer(ctx, &b_key(), &ringing);
    });
    assert_eq!(kinds(&fx), ["cancel"]);
    assert!(
        b.run(|c, ctx| {
            c.on_setup_answer(ctx, &b_key(), &ringing);
        })
        .is_empty(),
        "once"
    );
    // Its final answer ends the call.
    let terminated = answer(487, "");
    assert_eq!(
        kinds(&b.run(|c, ctx| {
            c.on_setup_answer(ctx, &b_key(), &terminated);
        })),
        ["finish"]
    );
}

#[test]
fn a_2xx_confirms_the_call_relays_the_answer_and_checkpoints_it() {
    let mut b = Bench::proceeding(Attempt::Ringing, true);
    b.call.b_lines = "X-Kept: for failover\r\n".into();
    let ok = answer(
        200,
        "Contact: <sip:pod@192.0.2.50:5060>\r\nSession-Expires: 1800;refresher=uac\r\n",
    );
    let fx = b.run(|c, ctx| {
        c.on_setup_answer(ctx, &b_key(), &ok);
    });
    assert_eq!(
        kinds(&fx),
        ["await_ack", "timer", "timer", "respond", "checkpoint"]
    );
    assert_eq!(b.call.state, CallState::Confirmed);
    assert_eq!(b.call.b_invite, None);
    assert_eq!(b.call.final_code, Some(200));
    assert!(b.call.answered.is_some());
    assert!(
        b.call.b_lines.is_empty(),
        "an answered call keeps only its dialogs"
    );
    assert_eq!(b.call.a.awaiting_ack, Some(b.call.a_invite.clone()));
    assert_eq!(b.call.b.remote_target, "sip:pod@192.0.2.50:5060");
}

#[test]
fn a_2xx_that_crosses_the_callers_cancel_is_acknowledged_and_hung_up() {
    let mut b = Bench::proceeding(Attempt::Ringing, true);
    b.call.state = CallState::Cancelling(Attempt::Ringing);
    let ok = answer(200, "Contact: <sip:pod@192.0.2.50:5060>\r\n");
    let fx = b.run(|c, ctx| {
        c.on_setup_answer(ctx, &b_key(), &ok);
    });
    assert_eq!(kinds(&fx), ["send", "request", "finish"]);
    let Effect::Send { bytes, .. } = &fx[0] else {
        panic!()
    };
    let ack = String::from_utf8_lossy(bytes);
    assert!(
        ack.starts_with("ACK sip:pod@192.0.2.50:5060 SIP/2.0"),
        "{ack}"
    );
    assert!(
        ack.contains("CSeq: 1 ACK\r\n") && ack.contains(";tag=rb"),
        "{ack}"
    );
    assert_eq!(requests(&fx)[0].1, Method::Bye);
    assert_eq!(b.call.b_ack.as_deref(), Some(&bytes[..]));
}

#[test]
fn an_outbound_503_fails_over_to_the_next_target_and_the_last_one_is_relayed() {
    let mut b = Bench::outbound(Attempt::Calling);
    let busy = response(
        "SIP/2.0 503 Service Unavailable\r\nVia: SIP/2.0/UDP 198.51.100.1:5060;branch=z9hG4bK-b-invite\r\nFrom: <sip:edge@tb.example>;tag=tb\r\nTo: <sip:x@203.0.113.5>;tag=c1\r\nCall-ID: call-ta\r\nCSeq: 1 INVITE\r\nRetry-After: 30\r\nContent-Length: 0\r\n\r\n",
    );
    let fx = b.run(|c, ctx| {
        c.on_setup_answer(ctx, &b_key(), &busy);
    });
    assert_eq!(kinds(&fx), ["next_hop"]);
    assert_eq!(
        b.call.last_failure,
        Some((503, "Service Unavailable".into()))
    );
    let failovers = b
        .env
        .metrics
        .failovers
        .with_label_values(&["acme/pacific", "5xx"])
        .get();
    assert_eq!(failovers, 1);
    // The last target's 503 goes to the platform with its Retry-After.
    b.call.next_hop = 2;
    b.call.b_invite = Some(b_key());
    let fx = b.run(|c, ctx| {
        c.on_setup_answer(ctx, &b_key(), &busy);
    });
    assert_eq!(kinds(&fx), ["respond", "finish"]);
    let Effect::Respond {
        code: 503, lines, ..
    } = &fx[0]
    else {
        panic!("{fx:?}")
    };
    assert!(lines.contains("Retry-After: 30\r\n"), "{lines}");
    assert_eq!(b.call.final_code, Some(503));
}

#[test]
fn an_inbound_call_does_not_fail_over_and_a_busy_callee_is_relayed() {
    let mut b = Bench::proceeding(Attempt::Ringing, true);
    let fx = b.run(|c, ctx| {
        c.on_setup_answer(ctx, &b_key(), &answer(503, ""));
    });
    assert_eq!(kinds(&fx), ["respond", "finish"]);
    let mut b = Bench::outbound(Attempt::Ringing);
    let busy = response(
        "SIP/2.0 486 Busy Here\r\nVia: SIP/2.0/UDP 198.51.100.1:5060;branch=z9hG4bK-b-invite\r\nFrom: <sip:edge@tb.example>;tag=tb\r\nTo: <sip:x@203.0.113.5>;tag=c1\r\nCall-ID: call-ta\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n",
    );
    let fx = b.run(|c, ctx| {
        c.on_setup_answer(ctx, &b_key(), &busy);
    });
    assert_eq!(
        kinds(&fx),
        ["respond", "finish"],
        "the callee's own refusal is not a carrier failure"
    );
}

#[test]
fn a_carriers_challenge_to_the_invite_goes_to_the_worker_with_the_trunks_credentials() {
    let mut b = Bench::outbound(Attempt::Calling);
    let challenge = response(
        "SIP/2.0 407 Proxy Authentication Required\r\nVia: SIP/2.0/UDP 198.51.100.1:5060;branch=z9hG4bK-b-invite\r\nFrom: <sip:edge@tb.example>;tag=tb\r\nTo: <sip:x@203.0.113.5>;tag=c1\r\nCall-ID: call-ta\r\nCSeq: 1 INVITE\r\nProxy-Authenticate: Digest realm=\"carrier\", nonce=\"n1\"\r\nContent-Length: 0\r\n\r\n",
    );
    let mut step = None;
    let fx = b.run(|c, ctx| step = Some(c.on_setup_answer(ctx, &b_key(), &challenge)));
    assert_eq!(step, Some(super::machine::SetupAnswer::Challenged));
    assert!(fx.is_empty());
}

#[test]
fn a_redirect_within_the_trunk_is_followed_and_one_elsewhere_is_relayed() {
    let moved = |contact: &str| {
        response(&format!(
            "SIP/2.0 302 Moved Temporarily\r\nVia: SIP/2.0/UDP 198.51.100.1:5060;branch=z9hG4bK-b-invite\r\nFrom: <sip:edge@tb.example>;tag=tb\r\nTo: <sip:x@203.0.113.5>;tag=c1\r\nCall-ID: call-ta\r\nCSeq: 1 INVITE\r\nContact: <{contact}>\r\nContent-Length: 0\r\n\r\n"
        ))
    };
    let mut b = Bench::outbound(Attempt::Ringing);
    let fx = b.run(|c, ctx| {
        c.on_setup_answer(ctx, &b_key(), &moved("sip:+6498879333@203.0.113.9:5070"));
    });
    assert_eq!(kinds(&fx), ["next_hop"]);
    assert_eq!(
        b.call.hops[1].uri_host, "203.0.113.9:5070",
        "tried next, before the remaining target"
    );
    assert_eq!(b.call.redirects, 1);
    // A Contact outside the trunk's targets and allow-list, after the last target: the
    // platform gets the 302 with it and decides.
    let mut b = Bench::outbound(Attempt::Ringing);
    b.call.next_hop = 2;
    let fx = b.run(|c, ctx| {
        c.on_setup_answer(ctx, &b_key(), &moved("sip:elsewhere@198.18.0.1"));
    });
    assert_eq!(kinds(&fx), ["respond", "finish"]);
    let Effect::Respond {
        code: 302, lines, ..
    } = &fx[0]
    else {
        panic!("{fx:?}")
    };
    assert!(
        lines.contains("Contact: <sip:elsewhere@198.18.0.1>\r\n"),
        "{lines}"
    );
}

#[test]
fn failing_the_caller_refuses_its_invite_and_ends_the_call() {
    let mut b = Bench::proceeding(Attempt::Calling, false);
    let fx = b.run(|c, ctx| c.fail_a(ctx, 503, "no carrier target answered"));
    match &fx[..] {
        [
            Effect::Refuse {
                key,
                code: 503,
                text,
                ..
            },
            Effect::Finish,
        ] => {
            assert_eq!(*key, b.call.a_invite);
            assert_eq!(text, "no carrier target answered");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(b.call.final_code, Some(503));
}

#[test]
fn the_next_hop_is_dialled_by_address_or_looked_up_by_name() {
    let mut b = Bench::outbound(Attempt::Calling);
    b.call.next_hop = 0;
    let fx = b.run(|c, ctx| c.next_hop(ctx));
    assert!(
        matches!(&fx[..], [Effect::InviteTo(a)] if a.to_string() == "203.0.113.5:5060"),
        "{fx:?}"
    );
    assert_eq!(b.call.next_hop, 1);
    let named = trunkgate_crds::compile::parse_target("sip:sbc.carrier.example", None, 1, 1)
        .expect("target");
    b.call.hops[1] = crate::route::admission::hop_of(&named);
    let fx = b.run(|c, ctx| c.next_hop(ctx));
    assert!(
        matches!(&fx[..], [Effect::Resolve(h)] if h.host == "sbc.carrier.example"),
        "{fx:?}"
    );
}

#[test]
fn after_the_last_hop_the_caller_gets_the_last_failure_and_a_cancelled_call_just_ends() {
    let mut b = Bench::outbound(Attempt::Calling);
    b.call.next_hop = 2;
    b.call.last_failure = Some((408, "timeout".into()));
    let fx = b.run(|c, ctx| c.next_hop(ctx));
    assert!(
        matches!(&fx[..], [Effect::Refuse { code: 408, text, .. }, Effect::Finish] if text == "timeout"),
        "{fx:?}"
    );
    let mut b = Bench::outbound(Attempt::Calling);
    b.call.last_failure = None;
    b.call.next_hop = 2;
    let fx = b.run(|c, ctx| c.next_hop(ctx));
    assert!(
        matches!(&fx[..], [Effect::Refuse { code: 503, .. }, Effect::Finish]),
        "{fx:?}"
    );
    let mut b = Bench::outbound(Attempt::Calling);
    b.call.state = CallState::Cancelling(Attempt::Calling);
    assert_eq!(kinds(&b.run(|c, ctx| c.next_hop(ctx))), ["finish"]);
}

#[test]
fn a_looked_up_hop_becomes_its_addresses_in_order_and_each_passes_the_filter() {
    use trunkgate_resolve::{Destination, Transport};
    let mut b = Bench::outbound(Attempt::Calling);
    let dests = vec![
        Destination {
            addr: "203.0.113.11:5060".parse().expect("addr"),
            transport: Transport::Udp,
        },
        Destination {
            addr: "203.0.113.12:5061".parse().expect("addr"),
            transport: Transport::Tls,
        },
    ];
    let fx = b.run(|c, ctx| c.on_resolved(ctx, Ok(dests)));
    assert!(
        matches!(&fx[..], [Effect::InviteTo(a)] if a.to_string() == "203.0.113.11:5060"),
        "{fx:?}"
    );
    assert_eq!(b.call.hops.len(), 3);
    assert_eq!(b.call.hops[1].transport, trunkgate_crds::Transport::Tls);
    let allowed = b.env.allowed.lock().expect("not poisoned").clone();
    assert_eq!(
        allowed.len(),
        2,
        "answers from both addresses pass the kernel filter"
    );
}

#[test]
fn a_failed_lookup_moves_on_with_its_reason() {
    let mut b = Bench::outbound(Attempt::Calling);
    let fx = b.run(|c, ctx| c.on_resolved(ctx, Ok(Vec::new())));
    assert_eq!(kinds(&fx), ["invite_to"], "the second target");
    assert_eq!(b.call.last_failure.as_ref().map(|f| f.0), Some(503));
    assert!(
        b.call
            .last_failure
            .as_ref()
            .is_some_and(|f| f.1.contains("no address"))
    );
}

#[test]
fn the_invite_goes_to_the_hop_with_a_new_cseq_and_the_failover_timer_while_targets_remain() {
    let mut b = Bench::outbound(Attempt::Ringing);
    b.call.b.local_cseq = 1;
    b.call.auth_line = Some("Proxy-Authorization: Digest username=\"acme\"\r\n".into());
    b.call.b_lines = "Max-Forwards: 69\r\n".into();
    let dest = Link::Udp("203.0.113.5:5060".parse().expect("addr"));
    let fx = b.run(|c, ctx| c.send_invite(ctx, dest.clone()));
    assert_eq!(kinds(&fx), ["request", "timer"]);
    let Effect::Request(sent) = &fx[0] else {
        panic!()
    };
    let text = String::from_utf8_lossy(&sent.bytes);
    assert!(
        text.starts_with("INVITE sip:+6498879333@203.0.113.5:5060 SIP/2.0\r\n"),
        "{text}"
    );
    assert!(
        text.contains("CSeq: 1 INVITE\r\n") && text.contains("Max-Forwards: 69\r\n"),
        "{text}"
    );
    assert!(text.contains("Proxy-Authorization: Digest"), "{text}");
    assert!(
        text.contains("Contact: <sip:198.51.100.1:5060>\r\n"),
        "{text}"
    );
    assert_eq!(sent.purpose, CallPurpose::Setup);
    assert_eq!(
        b.call.b_invite,
        Some(TransactionKey::client(&sent.branch, Method::Invite))
    );
    assert!(
        matches!(&fx[1], Effect::Timer { timer: CallTimer::Failover(k), .. } if Some(k) == b.call.b_invite.as_ref())
    );
    assert_eq!((b.call.b.local_cseq, b.call.b.invite_cseq), (2, 1));
    assert_eq!(
        b.call.state,
        CallState::Proceeding(Attempt::Calling),
        "a new attempt rings anew"
    );
    // The last target gets no failover timer: its own transaction timeout decides.
    b.call.next_hop = 2;
    let fx = b.run(|c, ctx| c.send_invite(ctx, dest));
    assert_eq!(kinds(&fx), ["request"]);
}

#[test]
fn a_target_that_cannot_be_connected_to_is_counted_and_the_next_one_tried() {
    let mut b = Bench::outbound(Attempt::Calling);
    let fx = b.run(|c, ctx| c.link_failed(ctx, "tcp_connections_full", "no room".into()));
    assert_eq!(kinds(&fx), ["invite_to"]);
    let n = b
        .env
        .metrics
        .failovers
        .with_label_values(&["acme/pacific", "tcp_connections_full"])
        .get();
    assert_eq!(n, 1);
    assert_eq!(b.call.last_failure, Some((503, "no room".into())));
}

/// What admission makes of an inbound INVITE to `+6498879333`, with the trunk's slots.
fn new_call(b: &mut Bench, req: &Request) -> Call {
    let rt = b.call.rt.clone();
    let state = rt.state[0].clone();
    let slot = state.admit(rt.trunk(0), 0, 1).expect("under the limits");
    let setup = state.begin_setup(10).expect("room in set-up");
    let hop = crate::route::admission::hop_of(
        &trunkgate_crds::compile::parse_target(&format!("sip:{PLATFORM}"), None, 1, 1)
            .expect("target"),
    );
    let n = super::machine::NewCall {
        rt,
        admission: crate::route::admission::Admission {
            trunk: 0,
            direction: Direction::Inbound,
            caller: trunkgate_crds::e164::E164::parse("+6421555123"),
            callee: trunkgate_crds::e164::E164::parse("+6498879333").expect("E.164"),
            callee_user: "+6498879333".into(),
            from: "<sip:+6421555123@10.0.0.1>".into(),
            identity_lines: "P-Asserted-Identity: <sip:+6421555123@10.0.0.1>\r\n".into(),
            hops: vec![hop],
            slot,
            selection: trunkgate_crds::Selection::Priority,
            carriers: Vec::new(),
        },
        invite: server_key("a-invite"),
        side: Side::Public,
        src: Link::Udp(CARRIER.parse().expect("addr")),
        tag: "our-a-tag".into(),
        b_body: Vec::new(),
        media: None,
        setup,
        setup_source: None,
    };
    let mut out = Vec::new();
    let mut ctx = Ctx {
        now: b.now,
        mint: &mut b.mint,
        env: &b.env,
        media: None,
        out: &mut out,
    };
    let call = Call::new(&mut ctx, n, req);
    assert!(out.is_empty(), "making a call sends nothing");
    call
}

#[test]
fn a_new_call_takes_leg_a_as_the_caller_made_it_and_mints_leg_b() {
    let mut b = Bench::confirmed();
    let invite = request(&format!(
        "INVITE sip:+6498879333@198.51.100.1 SIP/2.0\r\nVia: SIP/2.0/UDP {CARRIER};branch=z9hG4bK-i1\r\nRecord-Route: <sip:p1.carrier.example;lr>\r\nFrom: \"Alice\" <sip:+6421555123@carrier.example>;tag=alice\r\nTo: <sip:+6498879333@198.51.100.1>\r\nCall-ID: carrier-call-1\r\nCSeq: 7 INVITE\r\nMax-Forwards: 12\r\nContact: <sip:alice@203.0.113.5:5060>\r\nContent-Length: 0\r\n\r\n"
    ));
    let c = new_call(&mut b, &invite);
    assert_eq!(c.state, CallState::Proceeding(Attempt::Calling));
    assert_eq!(
        (c.a.call_id.as_str(), c.a.local_tag.as_str()),
        ("carrier-call-1", "our-a-tag")
    );
    assert_eq!(c.a.remote_tag.as_deref(), Some("alice"));
    assert_eq!(c.a.local, "<sip:+6498879333@198.51.100.1>");
    assert_eq!(c.a.remote_target, "sip:alice@203.0.113.5:5060");
    assert_eq!(
        c.a.route_set,
        ["<sip:p1.carrier.example;lr>"],
        "RFC 3261 §12.1.1"
    );
    assert_eq!(c.a.invite_cseq, 7);
    assert_eq!(c.b.side, Side::Internal);
    assert_ne!(c.b.call_id, c.a.call_id, "leg B is a dialog of our own");
    assert_eq!(
        crate::sip::ids::owner(&c.b.local_tag),
        Some(0),
        "its tag names the worker"
    );
    assert!(
        c.b_lines
            .starts_with("Max-Forwards: 11\r\nP-Asserted-Identity:"),
        "{}",
        c.b_lines
    );
    assert!(c.setup.is_some() && c.slot.is_some());
}

#[test]
fn the_fleets_grant_sets_up_leg_b_and_its_refusal_answers_503_across_the_fleet() {
    use crate::fleet::{FleetRefusal, Hold, Release, Verdict};
    let tx: crate::fleet::Tx = Default::default();
    let hold = || Hold {
        concurrent: Release::test("calls", "m1", &tx),
        setup: Release::test("setup", "m1", &tx),
    };
    let mut b = Bench::outbound(Attempt::Calling);
    b.call.b_invite = None;
    b.call.next_hop = 0;
    let fx = b.run(|c, ctx| c.on_claimed(ctx, Verdict::Granted(hold())));
    assert_eq!(kinds(&fx), ["invite_to"]);
    let mut b = Bench::outbound(Attempt::Calling);
    b.call.b_invite = None;
    let fx = b.run(|c, ctx| c.on_claimed(ctx, Verdict::Refused(FleetRefusal::Concurrent(5))));
    match &fx[..] {
        [
            Effect::Refuse {
                code: 503,
                text,
                extra,
                ..
            },
            Effect::Finish,
        ] => {
            assert!(text.ends_with("across the fleet"), "{text}");
            assert!(extra.starts_with("Retry-After: "), "{extra}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(b.call.ended_by, Some("edge"));
    // A call CANCELed while it waited drops the verdict (and with it its places).
    let mut b = Bench::outbound(Attempt::Calling);
    b.call.b_invite = None;
    b.call.state = CallState::Cancelling(Attempt::Calling);
    assert!(
        b.run(|c, ctx| c.on_claimed(ctx, Verdict::Granted(hold())))
            .is_empty()
    );
}

#[test]
fn an_unanswered_invite_fails_over_outbound_and_fails_the_caller_otherwise() {
    let mut b = Bench::outbound(Attempt::Calling);
    let fx = b.run(|c, ctx| c.setup_failed(ctx, &b_key(), 408, "timeout", "no answer".into()));
    assert_eq!(kinds(&fx), ["invite_to"]);
    assert_eq!(b.call.failovers_seen(&b.env, "timeout"), 1);
    let mut b = Bench::proceeding(Attempt::Calling, true);
    let fx = b.run(|c, ctx| c.setup_failed(ctx, &b_key(), 408, "timeout", "no answer".into()));
    assert!(
        matches!(&fx[..], [Effect::Refuse { code: 408, .. }, Effect::Finish]),
        "{fx:?}"
    );
    // Another attempt's timeout (one abandoned already) changes nothing; a cancelled call ends.
    let mut b = Bench::proceeding(Attempt::Calling, true);
    let old = TransactionKey::client("z9hG4bK-older", Method::Invite);
    assert!(
        b.run(|c, ctx| c.setup_failed(ctx, &old, 408, "timeout", String::new()))
            .is_empty()
    );
    b.call.state = CallState::Cancelling(Attempt::Calling);
    let fx = b.run(|c, ctx| c.setup_failed(ctx, &b_key(), 408, "timeout", String::new()));
    assert_eq!(kinds(&fx), ["finish"]);
}

impl Call {
    fn failovers_seen(&self, env: &TestEnv, cause: &str) -> u64 {
        env.metrics
            .failovers
            .with_label_values(&[self.trunk_id(), cause])
            .get()
    }
}

#[test]
fn an_answered_challenge_sends_the_invite_again_to_the_same_hop_with_credentials() {
    let mut b = Bench::outbound(Attempt::Calling);
    b.call.b.peer = Link::Udp("203.0.113.5:5060".parse().expect("addr"));
    let line = "Proxy-Authorization: Digest username=\"acme\"\r\n".to_string();
    let fx = b.run(|c, ctx| c.challenge_answered(ctx, Ok(line.clone())));
    assert!(
        matches!(&fx[..], [Effect::InviteTo(a)] if a.to_string() == "203.0.113.5:5060"),
        "{fx:?}"
    );
    assert_eq!(
        (b.call.auth_tries, b.call.auth_line.as_deref()),
        (1, Some(line.as_str()))
    );
    let answered = b
        .env
        .metrics
        .carrier_challenges
        .with_label_values(&["acme/pacific", "INVITE", "answered"])
        .get();
    assert_eq!(answered, 1);
}

#[test]
fn a_challenge_the_trunk_cannot_answer_refuses_the_caller_403_naming_the_cause() {
    use crate::call::challenge::Unanswered;
    let mut b = Bench::outbound(Attempt::Calling);
    let fx = b.run(|c, ctx| {
        c.challenge_answered(
            ctx,
            Err(Unanswered::Refused {
                username: "acme".into(),
                realm: "carrier".into(),
            }),
        )
    });
    match &fx[..] {
        [
            Effect::Refuse {
                code: 403, text, ..
            },
            Effect::Finish,
        ] => {
            assert!(
                text.contains("refused trunk acme/pacific's credentials"),
                "{text}"
            );
        }
        other => panic!("{other:?}"),
    }
    let refused = b
        .env
        .metrics
        .carrier_challenges
        .with_label_values(&["acme/pacific", "INVITE", "refused"])
        .get();
    assert_eq!(refused, 1);
    let mut b = Bench::outbound(Attempt::Calling);
    let fx = b.run(|c, ctx| c.challenge_answered(ctx, Err(Unanswered::NoCredentials)));
    assert!(
        matches!(&fx[..], [Effect::Refuse { code: 403, text, .. }, Effect::Finish] if text.contains("no outbound.auth")),
        "{fx:?}"
    );
}

#[test]
fn shutting_down_refuses_calls_in_set_up_and_hangs_up_answered_ones_with_a_reason() {
    let mut b = Bench::proceeding(Attempt::Ringing, true);
    let fx = b.run(|c, ctx| c.shut_down(ctx));
    assert_eq!(kinds(&fx), ["refuse", "cancel", "finish"]);
    assert!(
        matches!(&fx[0], Effect::Refuse { code: 503, extra, .. } if extra == "Retry-After: 5\r\n")
    );
    let mut b = Bench::confirmed();
    let fx = b.run(|c, ctx| c.shut_down(ctx));
    let reqs = requests(&fx);
    assert_eq!(reqs.len(), 2);
    assert!(reqs.iter().all(|r| {
        r.1 == Method::Bye
            && r.3
                .contains("Reason: SIP;cause=503;text=\"edge shutting down\"")
    }));
    // A call already ending is left to end.
    b.call.state = CallState::Ending;
    assert!(b.run(|c, ctx| c.shut_down(ctx)).is_empty());
}

#[test]
fn a_finished_call_gives_its_places_back_is_counted_recorded_and_forgotten_later() {
    let mut b = Bench::confirmed();
    b.call.checkpointed = true;
    let state = b.call.rt.state[0].clone();
    b.call.slot = Some(state.admit(b.call.rt.trunk(0), 0, 1).expect("a slot"));
    assert_eq!(state.active(), 1);
    let fx = b.run(|c, ctx| c.finish(ctx, Vec::new()));
    assert_eq!(kinds(&fx), ["record", "forget_checkpoint", "timer"]);
    assert!(matches!(
        &fx[2],
        Effect::Timer {
            timer: CallTimer::Forget,
            ..
        }
    ));
    assert_eq!(b.call.state, CallState::Ended);
    assert_eq!(
        state.active(),
        0,
        "its place among the trunk's calls is free"
    );
    let counted = b
        .env
        .metrics
        .calls
        .with_label_values(&["acme/pacific", "inbound", "2xx"])
        .get();
    assert_eq!(counted, 1);
    // Finishing twice (a BYE crossing ours) changes nothing.
    assert!(b.run(|c, ctx| c.finish(ctx, Vec::new())).is_empty());
    assert_eq!(
        b.env
            .metrics
            .calls
            .with_label_values(&["acme/pacific", "inbound", "2xx"])
            .get(),
        1
    );
}

#[test]
fn a_call_refused_before_its_answer_is_counted_by_its_code_and_never_checkpointed() {
    let mut b = Bench::proceeding(Attempt::Calling, false);
    b.call.final_code = Some(486);
    let fx = b.run(|c, ctx| c.finish(ctx, Vec::new()));
    assert_eq!(kinds(&fx), ["record", "timer"]);
    let counted = b
        .env
        .metrics
        .calls
        .with_label_values(&["acme/pacific", "inbound", "4xx"])
        .get();
    assert_eq!(counted, 1);
}

/// RFC 3261 §14.1 glare: both sides send a re-INVITE at once. Each is relayed; each far end,
/// with its own re-INVITE pending, answers 491, and the 491 goes back to whoever sent that
/// re-INVITE. Neither dialog changes, and the retry that follows takes the next CSeq.
#[test]
fn crossing_reinvites_get_each_others_491_back_and_change_neither_dialog() {
    let mut b = Bench::confirmed();
    let from_a = from_carrier("INVITE", 2, "");
    let fx = b.run(|c, ctx| c.on_in_dialog(ctx, LegId::A, server_key("ra2"), &from_a));
    assert_eq!(requests(&fx)[0].0, LegId::B);
    let from_b = from_platform("INVITE", 7, "");
    let fx = b.run(|c, ctx| c.on_in_dialog(ctx, LegId::B, server_key("rb7"), &from_b));
    let reqs = requests(&fx);
    assert_eq!(
        (reqs[0].0, reqs[0].1, reqs[0].2),
        (LegId::A, Method::Invite, 2)
    );
    // The platform answers the carrier's re-INVITE 491, the carrier the platform's.
    let glare_b = platform_answer(491, "INVITE", 2, "");
    let fx = b.run(|c, ctx| {
        c.relay_response(
            ctx,
            LegId::B,
            server_key("ra2"),
            Method::Invite,
            2,
            &glare_b,
        )
    });
    assert!(
        matches!(&fx[..], [Effect::Respond { key, code: 491, .. }] if *key == server_key("ra2")),
        "{fx:?}"
    );
    let glare_a = carrier_answer(491, "INVITE", 2, "");
    let fx = b.run(|c, ctx| {
        c.relay_response(
            ctx,
            LegId::A,
            server_key("rb7"),
            Method::Invite,
            2,
            &glare_a,
        )
    });
    assert!(
        matches!(&fx[..], [Effect::Respond { key, code: 491, .. }] if *key == server_key("rb7")),
        "{fx:?}"
    );
    for l in [&b.call.a, &b.call.b] {
        assert_eq!(l.reinvite_cseq, None);
        assert_eq!(l.awaiting_ack, None);
    }
    assert_eq!(b.call.state, CallState::Confirmed);
    // The carrier tries again later: the platform's leg takes its next CSeq.
    let retry = from_carrier("INVITE", 3, "");
    let fx = b.run(|c, ctx| c.on_in_dialog(ctx, LegId::A, server_key("ra3"), &retry));
    assert_eq!(requests(&fx)[0].2, 3);
}

#[test]
fn a_media_timeout_ends_an_answered_call_with_a_reason_and_leaves_one_in_set_up() {
    let mut b = Bench::confirmed();
    let fx = b.run(|c, ctx| c.media_timeout(ctx));
    let reqs = requests(&fx);
    assert_eq!(reqs.len(), 2, "{fx:?}");
    assert!(
        reqs.iter()
            .all(|r| r.1 == Method::Bye && r.3.contains("text=\"media timeout\""))
    );
    let counted = b
        .env
        .metrics
        .media_timeouts
        .with_label_values(&["acme/pacific"])
        .get();
    assert_eq!(counted, 1);
    let mut b = Bench::proceeding(Attempt::Ringing, true);
    assert!(b.run(|c, ctx| c.media_timeout(ctx)).is_empty());
    assert_eq!(b.call.state, CallState::Proceeding(Attempt::Ringing));
}

#[test]
fn a_call_making_room_ends_as_408_and_an_orphan_as_edge_lost() {
    let mut b = Bench::confirmed();
    let fx = b.run(|c, ctx| c.make_room(ctx));
    assert_eq!(kinds(&fx), ["request", "request", "finish"]);
    assert_eq!(b.call.final_code, Some(408));
    assert!(
        requests(&fx)[0]
            .3
            .contains("no ACK; place given to a new call")
    );
    let recycled = b
        .env
        .metrics
        .setup_recycled
        .with_label_values(&["acme/pacific"])
        .get();
    assert_eq!(recycled, 1);

    let mut b = Bench::confirmed();
    let fx = b.run(|c, ctx| c.orphaned(ctx));
    assert_eq!(kinds(&fx), ["request", "request", "finish"]);
    assert_eq!(b.call.ended_by, Some("edge_lost"));
    assert!(requests(&fx)[1].3.contains("the edge of this call is gone"));
    assert_eq!(b.env.metrics.orphans_ended.get(), 1);
}

#[test]
fn a_2xx_again_gets_our_ack_again_and_another_forks_is_hung_up_once() {
    let mut b = Bench::confirmed();
    b.call.b_ack = Some(b"ACK sip:peer SIP/2.0\r\n\r\n".to_vec());
    let fx = b.run(|c, ctx| assert_eq!(c.answered_again(ctx, Some("rb")), Again::Same));
    assert!(matches!(&fx[..], [Effect::Send { bytes, .. }] if bytes.starts_with(b"ACK")));
    let fx = b.run(|c, ctx| {
        assert_eq!(
            c.answered_again(ctx, Some("fork2")),
            Again::Fork { first: true }
        )
    });
    assert!(fx.is_empty(), "the worker ACKs it from the transaction");
    b.run(|c, ctx| {
        assert_eq!(
            c.answered_again(ctx, Some("fork2")),
            Again::Fork { first: false }
        )
    });
}

#[test]
fn a_request_sent_again_with_credentials_moves_its_legs_cseq_on() {
    let mut b = Bench::confirmed();
    b.call.b.local_cseq = 4;
    assert_eq!(b.call.cseq_for_credentials(LegId::B, 4), 5);
    assert_eq!(b.call.b.local_cseq, 5);
    // A BYE sent with CSeq 5 before: the retry is 6, never reused.
    assert_eq!(b.call.cseq_for_credentials(LegId::B, 5), 6);
    assert_eq!(b.call.a.local_cseq, 1, "the other leg keeps its own");
}

/// A runtime whose trunk `acme/pacific` has targets and a rate for `+64` (60/60).
fn rated_runtime(metrics: &crate::metrics::Metrics) -> Arc<crate::config::Runtime> {
    let trunk = CarrierTrunk::test("acme", "pacific")
        .with_destination(&format!("sip:{PLATFORM}"))
        .with_targets(&["sip:203.0.113.5:5060", "sip:203.0.113.6:5060"])
        .with_rate("+64", "0.0125", "USD", "60/60");
    let c = compile(&[trunk], &[], &Secrets::default(), None);
    assert!(c.problems().next().is_none());
    Arc::new(crate::config::Runtime::build(c.config, None, metrics))
}

fn answer_to_b(code: u16, tag: &str) -> Response {
    response(&format!(
        "SIP/2.0 {code} Whatever\r\nVia: SIP/2.0/UDP 198.51.100.1:5060;branch=z9hG4bK-x\r\nFrom: <sip:edge@tb.example>;tag=tb\r\nTo: <sip:x@203.0.113.5>;tag={tag}\r\nCall-ID: call-ta\r\nCSeq: 1 INVITE\r\nContact: <sip:x@203.0.113.6:5060>\r\nContent-Length: 0\r\n\r\n"
    ))
}

/// Each INVITE attempt is recorded in order with its outcome and post-dial delay; a challenge
/// answered with credentials is the same attempt; the call is charged by its trunk's rate.
#[test]
fn each_attempt_is_recorded_with_its_outcome_and_delay_and_the_call_charged_by_its_rate() {
    let mut b = Bench::outbound(Attempt::Calling);
    b.call.rt = rated_runtime(&b.env.metrics);
    b.call.b_invite = None;
    let hop = |i: usize| Link::Udp(format!("203.0.113.{}:5060", 5 + i).parse().expect("addr"));
    b.run(|c, ctx| c.send_invite(ctx, hop(0)));
    let key = b.call.b_invite.clone().expect("the INVITE");
    b.now += Duration::from_millis(2500);
    b.run(|c, ctx| {
        c.on_setup_answer(ctx, &key, &answer_to_b(180, "c1"));
    });
    b.now += Duration::from_millis(5500);
    let fx = b.run(|c, ctx| {
        c.on_setup_answer(ctx, &key, &answer_to_b(503, "c1"));
    });
    assert_eq!(kinds(&fx), ["next_hop"]);
    b.run(|c, ctx| c.next_hop(ctx));
    b.run(|c, ctx| c.send_invite(ctx, hop(1)));
    let key = b.call.b_invite.clone().expect("the second INVITE");
    // Challenged, answered with credentials: still the second attempt.
    b.now += Duration::from_millis(300);
    let step = b.run(|c, ctx| {
        assert_eq!(
            c.on_setup_answer(ctx, &key, &answer_to_b(407, "c2")),
            super::machine::SetupAnswer::Challenged
        );
    });
    assert!(step.is_empty());
    b.run(|c, ctx| c.challenge_answered(ctx, Ok("Proxy-Authorization: Digest x\r\n".into())));
    b.run(|c, ctx| c.send_invite(ctx, hop(1)));
    let key = b
        .call
        .b_invite
        .clone()
        .expect("the INVITE with credentials");
    b.now += Duration::from_millis(700);
    b.run(|c, ctx| {
        c.on_setup_answer(ctx, &key, &answer_to_b(200, "c2"));
    });
    assert_eq!(b.call.state, CallState::Confirmed);
    let outcomes: Vec<_> = b
        .call
        .tried
        .iter()
        .map(|t| (t.target.as_str(), t.status, t.pdd_ms))
        .collect();
    assert_eq!(
        outcomes,
        [
            ("203.0.113.5:5060", Some(503), Some(2500)),
            ("203.0.113.6:5060", Some(200), Some(1000)),
        ]
    );
    assert!(
        b.call
            .tried
            .iter()
            .all(|t| t.rate.as_deref() == Some("0.0125 USD/min 60/60"))
    );

    // 61 s of talk on 60/60: two minutes.
    b.call.answered = Some(SystemTime::now() - Duration::from_secs(61));
    b.run(|c, ctx| c.finish(ctx, Vec::new()));
    let charge = b.call.charge.clone().expect("charged");
    assert_eq!(charge.billed_seconds, 120);
    assert_eq!(charge.cost, Some((25_000, "USD".into())));
    let spent = b
        .env
        .metrics
        .call_cost
        .with_label_values(&["acme/pacific", "USD"])
        .get();
    assert!((spent - 0.025).abs() < 1e-9, "{spent}");
}

/// A connection that cannot be had is an attempt too; an inbound call is never rated (routes
/// are where a trunk takes calls).
#[test]
fn a_target_that_cannot_be_reached_is_an_attempt_and_inbound_calls_have_no_rate() {
    let mut b = Bench::outbound(Attempt::Calling);
    b.call.rt = rated_runtime(&b.env.metrics);
    b.run(|c, ctx| c.link_failed(ctx, "connect_failed", "refused".into()));
    assert_eq!(b.call.tried.len(), 1);
    assert_eq!(b.call.tried[0].failure.as_deref(), Some("connect_failed"));

    let mut b = Bench::confirmed();
    b.call.rt = rated_runtime(&b.env.metrics);
    assert!(b.call.rate().is_none());
    b.call.answered = Some(SystemTime::now() - Duration::from_millis(4200));
    b.run(|c, ctx| c.finish(ctx, Vec::new()));
    let charge = b.call.charge.clone().expect("charged");
    assert_eq!((charge.billed_seconds, charge.cost), (5, None));
}

/// Each ended attempt counts in its target's quality window; once ten are in, the target's
/// gauges show its ratios and delay. A challenge and an abandoned attempt do not count.
#[test]
fn attempts_count_in_their_targets_quality_window_and_show_in_its_gauges() {
    let metrics = crate::metrics::Metrics::new();
    let rt = rated_runtime(&metrics);
    let failure = |b: &Bench| {
        b.env
            .metrics
            .target_failures
            .with_label_values(&["acme/pacific", "sip:203.0.113.5:5060"])
            .get()
    };
    for i in 0..10u64 {
        let mut b = Bench::outbound(Attempt::Calling);
        b.call.rt = rt.clone();
        b.env.metrics = metrics.clone();
        for (n, h) in b.call.hops.iter_mut().enumerate() {
            h.target = Some(n as u16);
        }
        b.call.b_invite = None;
        b.run(|c, ctx| c.send_invite(ctx, Link::Udp(CARRIER.parse().expect("addr"))));
        let key = b.call.b_invite.clone().expect("the INVITE");
        b.now += Duration::from_millis(4000);
        // Every other one answered 503, the rest 486 (the callee's own refusal).
        let code = if i % 2 == 0 { 503 } else { 486 };
        b.run(|c, ctx| {
            c.on_setup_answer(ctx, &key, &answer_to_b(code, "c1"));
        });
        if i < 9 {
            assert_eq!(failure(&b), 0.0, "not before ten attempts");
        } else {
            assert_eq!(failure(&b), 0.5);
        }
    }
    let m = &metrics;
    let labels = ["acme/pacific", "sip:203.0.113.5:5060"];
    assert_eq!(m.target_asr.with_label_values(&labels).get(), 0.0);
    assert_eq!(m.target_ccr.with_label_values(&labels).get(), 0.5);
    assert_eq!(m.target_pdd.with_label_values(&labels).get(), 4.0);
    assert_eq!(m.target_attempts.with_label_values(&labels).get(), 10);
    // A cancelled attempt says nothing of the carrier.
    let mut b = Bench::outbound(Attempt::Calling);
    b.call.rt = rt.clone();
    b.env.metrics = metrics.clone();
    b.call.hops[0].target = Some(0);
    b.call.b_invite = None;
    b.run(|c, ctx| c.send_invite(ctx, Link::Udp(CARRIER.parse().expect("addr"))));
    let key = b.call.b_invite.clone().expect("the INVITE");
    b.call.state = CallState::Cancelling(Attempt::Ringing);
    b.run(|c, ctx| {
        c.on_setup_answer(ctx, &key, &answer_to_b(487, "c1"));
    });
    assert_eq!(m.target_attempts.with_label_values(&labels).get(), 10);
}
