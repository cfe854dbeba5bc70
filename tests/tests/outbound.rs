//! Outbound calls (platform → edge → carrier): the caller-ID policy for BYOC, verified and
//! unverified platform numbers, failover across carrier targets, and the carrier's digest
//! challenge.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use trunkgate_tests::config::documents;
use trunkgate_tests::sip::{digest_md5_response, digest_params, uri_user};
use trunkgate_tests::sipp::{SippBuilder, scenario};
use trunkgate_tests::*;

const CALLEE: &str = "+6421555123";
const BYOC: &str = "+6498879301";
const VERIFIED: &str = "+6498870001";
const UNVERIFIED: &str = "+6498870051";

/// The trunk `lab/carrier` with the given targets, plus BYOC numbers, verified platform
/// numbers and platform numbers still waiting for the carrier's verification.
fn config(lab: &Lab, trunk: Trunk, extra: &[String]) -> Trunk {
    let mut docs = vec![
        trunk.yaml(),
        Numbers::byoc("lab", "byoc", "carrier", &["+6498879300-+6498879399"]).yaml(),
        Numbers::platform(
            "lab",
            "verified",
            "carrier",
            &["+6498870000-+6498870049"],
            true,
        )
        .yaml(),
        Numbers::platform(
            "lab",
            "pending",
            "carrier",
            &["+6498870050-+6498870099"],
            false,
        )
        .yaml(),
    ];
    docs.extend_from_slice(extra);
    lab.write_config("lab.yaml", &documents(&docs));
    trunk
}

fn trunk(targets: &[SocketAddr]) -> Trunk {
    // The platform destination is not used by outbound calls.
    let mut t = Trunk::new(
        "lab",
        "carrier",
        "127.0.0.10/32",
        SocketAddr::from(([127, 0, 0, 20], 5999)),
    );
    for a in targets {
        t = t.target(*a);
    }
    t
}

fn user(m: &SipMsg, header: &str) -> Option<String> {
    m.header(header).and_then(uri_user)
}

/// The platform calls `CALLEE` presenting `caller`. BYOC calls name the trunk with
/// `X-Trunkgate-Trunk`; the others leave it to the edge (owner of the number, then routes).
fn platform_call(
    lab: &Lab,
    edge: &Edge,
    name: &str,
    caller: &str,
    template: &str,
    code: &str,
) -> SippRun {
    let ruri = edge.internal_uri(CALLEE);
    let selector = if caller == BYOC {
        "X-Trunkgate-Trunk: lab/carrier"
    } else {
        ""
    };
    Sipp::uac(
        lab,
        name,
        scenario(
            lab,
            template,
            &[
                ("RURI", &ruri),
                ("FROM_USER", caller),
                ("CODE", code),
                ("HEADERS", selector),
            ],
        ),
        PLATFORM,
        edge.internal,
    )
    .run()
}

/// Runs the three callers under `policy`; returns the carrier's INVITEs (in call order) and
/// the platform's run for the unverified number.
fn three_callers(policy: &str, unverified_code: &str) -> (Vec<SipMsg>, SippRun, Edge, Lab) {
    let lab = Lab::new(&format!("policy_{policy}"));
    let target = Sipp::reserve(CARRIER_TARGET);
    config(&lab, trunk(&[target]).policy(policy), &[]);
    let edge = Edge::start(&lab, EdgeOptions::default());
    let answered = if unverified_code == "200" { 3 } else { 2 };
    let carrier = Sipp::answering(&lab, "carrier", target)
        .calls(answered)
        .start();
    for caller in [BYOC, VERIFIED] {
        platform_call(
            &lab,
            &edge,
            &format!("platform-{caller}"),
            caller,
            "uac_call.xml",
            "",
        )
        .assert_ok();
    }
    let template = if unverified_code == "200" {
        "uac_call.xml"
    } else {
        "uac_refused.xml"
    };
    let unverified = platform_call(
        &lab,
        &edge,
        "platform-unverified",
        UNVERIFIED,
        template,
        unverified_code,
    );
    let carrier = carrier.wait();
    carrier.assert_ok();
    let invites: Vec<SipMsg> = carrier.requests("INVITE").into_iter().cloned().collect();
    (invites, unverified, edge, lab)
}

fn assert_presented(invite: &SipMsg, number: &str) {
    assert_eq!(
        user(invite, "From").as_deref(),
        Some(number),
        "{}",
        invite.text()
    );
    assert_eq!(
        user(invite, "P-Asserted-Identity").as_deref(),
        Some(number),
        "{}",
        invite.text()
    );
    assert_eq!(
        invite.uri().and_then(uri_user).as_deref(),
        Some(CALLEE),
        "{}",
        invite.text()
    );
    assert!(
        invite.header("X-Trunkgate-Trunk").is_none(),
        "the trunk selector is stripped before the carrier:\n{}",
        invite.text()
    );
}

#[test]
fn strict_policy_passes_byoc_and_verified_numbers_and_refuses_unverified_with_403() {
    let (invites, unverified, edge, _lab) = three_callers("Strict", "403");
    assert_eq!(
        invites.len(),
        2,
        "only the allowed callers reached the carrier"
    );
    assert_presented(&invites[0], BYOC);
    assert_presented(&invites[1], VERIFIED);
    unverified.assert_ok();
    let refusal = unverified.response(403, "INVITE");
    assert!(refusal.header("Warning").is_some(), "{}", refusal.text());
    assert_eq!(
        edge.metric(
            "trunkgate_edge_refusals_total",
            &[
                ("trunk", "lab/carrier"),
                ("direction", "outbound"),
                ("reason", "caller_id_not_allowed")
            ]
        ),
        1.0
    );
    let cdr = edge.wait_cdr("the BYOC call", |c| c["caller"] == BYOC);
    assert_eq!(cdr["direction"], "outbound");
    assert_eq!(cdr["callee"], CALLEE);
    assert_eq!(cdr["trunk"], "lab/carrier");
    assert_eq!(cdr["endedBy"], "platform");
}

#[test]
fn anonymize_policy_hides_unverified_numbers() {
    let (invites, unverified, _edge, _lab) = three_callers("Anonymize", "200");
    unverified.assert_ok();
    assert_eq!(invites.len(), 3);
    assert_presented(&invites[0], BYOC);
    assert_presented(&invites[1], VERIFIED);
    let anon = &invites[2];
    assert_eq!(
        user(anon, "From").as_deref(),
        Some("anonymous"),
        "From is anonymous:\n{}",
        anon.text()
    );
    assert!(
        anon.header("Privacy").is_some_and(|p| p.contains("id")),
        "Privacy: id (RFC 3323):\n{}",
        anon.text()
    );
    assert!(
        !anon.header_text().contains(&UNVERIFIED[1..]),
        "the unverified number appears nowhere in the carrier's INVITE:\n{}",
        anon.text()
    );
}

#[test]
fn passthrough_policy_sends_unverified_numbers_unchanged() {
    let (invites, unverified, _edge, _lab) = three_callers("PassThrough", "200");
    unverified.assert_ok();
    assert_eq!(invites.len(), 3);
    assert_presented(&invites[0], BYOC);
    assert_presented(&invites[1], VERIFIED);
    assert_presented(&invites[2], UNVERIFIED);
}

/// The first carrier target, answering every INVITE with `code` `reason` (sipp).
fn rejecting<'l>(lab: &'l Lab, at: SocketAddr, code: &str, reason: &str) -> SippBuilder<'l> {
    Sipp::uas_at(
        lab,
        "carrier-sbc1",
        scenario(lab, "uas_reject.xml", &[("CODE", code), ("REASON", reason)]),
        at,
    )
}

fn failover_edge(lab: &Lab) -> Edge {
    Edge::start(
        lab,
        EdgeOptions {
            failover_seconds: 1.0,
            ..EdgeOptions::default()
        },
    )
}

#[test]
fn failover_to_the_second_target_on_503() {
    let lab = Lab::new("failover_503");
    let (t1, t2) = (
        Sipp::reserve(CARRIER_TARGET),
        Sipp::reserve(CARRIER_TARGET_2),
    );
    config(&lab, trunk(&[t1, t2]), &[]);
    let edge = failover_edge(&lab);
    let first = rejecting(&lab, t1, "503", "Service Unavailable").start();
    let second = Sipp::answering(&lab, "carrier-sbc2", t2).start();
    let platform = platform_call(&lab, &edge, "platform", BYOC, "uac_call.xml", "");
    platform.assert_ok();
    first.wait().assert_ok();
    let second = second.wait();
    second.assert_ok();
    assert_presented(second.request("INVITE"), BYOC);
    assert_eq!(
        edge.metric(
            "trunkgate_edge_failovers_total",
            &[("trunk", "lab/carrier"), ("cause", "5xx")]
        ),
        1.0
    );
    let cdr = edge.wait_cdr("the call", |c| c["caller"] == BYOC);
    assert_eq!(cdr["finalStatus"], 200);
}

/// The record of an outbound call that failed over once (503 from the first target) and
/// talked 61 s on a 60/60 rate: both attempts in order with their outcome and post-dial
/// delay, two minutes billed, the cost, and the spend counted per trunk and currency.
#[test]
fn a_call_record_lists_every_attempt_and_what_the_call_cost() {
    let lab = Lab::new("cost_attempts");
    let (t1, t2) = (
        Sipp::reserve(CARRIER_TARGET),
        Sipp::reserve(CARRIER_TARGET_2),
    );
    config(
        &lab,
        trunk(&[t1, t2]).rate("+64", "0.0125", "NZD", "60/60"),
        &[],
    );
    // sipp sends no RTP: the relay's media timeout (60 s) must not end a 61-second call.
    let edge = Edge::start(
        &lab,
        EdgeOptions {
            failover_seconds: 1.0,
            ..EdgeOptions::with_args(&["--media-timeout", "120"])
        },
    );
    let first = rejecting(&lab, t1, "503", "Service Unavailable").start();
    let second = Sipp::answering(&lab, "carrier-sbc2", t2)
        .timeout_secs(90)
        .start();
    let ruri = edge.internal_uri(CALLEE);
    let platform = Sipp::uac(
        &lab,
        "platform",
        scenario(
            &lab,
            "uac_call.xml",
            &[
                ("RURI", &ruri),
                ("FROM_USER", BYOC),
                ("HEADERS", "X-Trunkgate-Trunk: lab/carrier"),
                ("HOLD_MS", "61000"),
            ],
        ),
        PLATFORM,
        edge.internal,
    )
    .timeout_secs(90)
    .run();
    platform.assert_ok();
    first.wait().assert_ok();
    second.wait().assert_ok();
    let cdr = edge.wait_cdr("the call", |c| c["caller"] == BYOC);
    let attempts = cdr["attempts"].as_array().expect("attempts");
    assert_eq!(attempts.len(), 2, "{cdr}");
    assert_eq!(attempts[0]["target"], t1.to_string());
    assert_eq!(attempts[0]["status"], 503);
    assert_eq!(attempts[1]["target"], t2.to_string());
    assert_eq!(attempts[1]["status"], 200);
    for a in attempts {
        assert_eq!(a["trunk"], "lab/carrier");
        assert_eq!(a["chosenBy"], "priority");
        assert_eq!(a["rate"], "0.0125 NZD/min 60/60");
        assert!(a["pddMs"].as_u64().is_some(), "{a}");
    }
    assert_eq!(cdr["billedSeconds"], 120, "{cdr}");
    assert_eq!(cdr["cost"], "0.025");
    assert_eq!(cdr["currency"], "NZD");
    assert_eq!(
        edge.metric(
            "trunkgate_edge_call_cost_total",
            &[("trunk", "lab/carrier"), ("currency", "NZD")]
        ),
        0.025
    );
}

/// `outbound.quality`: a target whose calls keep failing (503) is demoted once its window holds
/// `minSamples` attempts, and the next calls go to the other target first (no wait, no 503 on
/// the way); the standing shows in `trunkgate_edge_target_demoted`.
#[test]
fn a_target_whose_calls_keep_failing_is_demoted_and_skipped() {
    let lab = Lab::new("quality_demotion");
    let (t1, t2) = (
        Sipp::reserve(CARRIER_TARGET),
        Sipp::reserve(CARRIER_TARGET_2),
    );
    config(
        &lab,
        trunk(&[t1, t2])
            .quality("{minSamples: 3, critical: {maxFailurePercent: 50}, probePercent: 0}"),
        &[],
    );
    let edge = failover_edge(&lab);
    let first = rejecting(&lab, t1, "503", "Service Unavailable")
        .calls(3)
        .timeout_secs(30)
        .start();
    let second = Sipp::answering(&lab, "carrier-sbc2", t2)
        .calls(6)
        .timeout_secs(30)
        .start();
    let ruri = edge.internal_uri(CALLEE);
    // One call at a time, so each knows what the ones before it did.
    Sipp::uac(
        &lab,
        "platform",
        scenario(
            &lab,
            "uac_call.xml",
            &[
                ("RURI", &ruri),
                ("FROM_USER", BYOC),
                ("HEADERS", "X-Trunkgate-Trunk: lab/carrier"),
            ],
        ),
        PLATFORM,
        edge.internal,
    )
    .calls(6)
    .args(&["-l", "1"])
    .timeout_secs(30)
    .run()
    .assert_ok();
    first.wait().assert_ok();
    let second = second.wait();
    second.assert_ok();
    assert_eq!(second.requests("INVITE").len(), 6);
    let failovers = |cause: &str| {
        edge.metric(
            "trunkgate_edge_failovers_total",
            &[("trunk", "lab/carrier"), ("cause", cause)],
        )
    };
    assert_eq!(
        failovers("5xx"),
        3.0,
        "only the first three calls tried sbc1"
    );
    assert_eq!(
        failovers("timeout"),
        0.0,
        "no call waited for the demoted target"
    );
    assert_eq!(
        edge.metric(
            "trunkgate_edge_target_demoted",
            &[("trunk", "lab/carrier"), ("target", &format!("sip:{t1}"))]
        ),
        2.0
    );
    let cdrs = edge.cdrs();
    let tried: Vec<usize> = cdrs
        .iter()
        .filter_map(|c| c["attempts"].as_array().map(Vec::len))
        .collect();
    assert_eq!(tried, [2, 2, 2, 1, 1, 1], "{cdrs:?}");
}

/// A `sips:` target where nothing listens (connection refused) is left at once for the next
/// one, without waiting for --failover-seconds, counted by cause; the call goes through the
/// second target.
#[test]
fn a_tls_target_that_cannot_be_reached_fails_over_at_once_counted_by_cause() {
    let lab = Lab::new("failover_tls");
    let t2 = Sipp::reserve(CARRIER_TARGET_2);
    let mut t = trunk(&[t2]);
    t.targets
        .insert(0, (format!("sips:{CARRIER_TARGET}"), 1, 1));
    t.targets[1].1 = 2;
    config(&lab, t, &[]);
    let edge = failover_edge(&lab);
    let second = Sipp::answering(&lab, "carrier-sbc2", t2).start();
    let platform = platform_call(&lab, &edge, "platform", BYOC, "uac_call.xml", "");
    platform.assert_ok();
    second.wait().assert_ok();
    assert_eq!(
        edge.metric(
            "trunkgate_edge_failovers_total",
            &[("trunk", "lab/carrier"), ("cause", "connect_failed")]
        ),
        1.0
    );
}

#[test]
fn failover_to_the_second_target_on_timeout() {
    let lab = Lab::new("failover_timeout");
    // The first target swallows everything: a carrier SBC that is down.
    let black_hole = RawUdp::bind(CARRIER_TARGET);
    let t2 = Sipp::reserve(CARRIER_TARGET_2);
    config(&lab, trunk(&[black_hole.local, t2]), &[]);
    let edge = failover_edge(&lab);
    let second = Sipp::answering(&lab, "carrier-sbc2", t2).start();
    let started = Instant::now();
    let platform = platform_call(&lab, &edge, "platform", BYOC, "uac_call.xml", "");
    platform.assert_ok();
    let second = second.wait();
    second.assert_ok();
    assert_presented(second.request("INVITE"), BYOC);
    let swallowed = black_hole.drain(Duration::from_millis(10));
    assert!(
        swallowed.iter().any(|d| d.starts_with(b"INVITE ")),
        "the first target was tried first"
    );
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "failover after --failover-seconds 1, not after timer B (32 s)"
    );
    assert!(
        edge.metric(
            "trunkgate_edge_failovers_total",
            &[("trunk", "lab/carrier"), ("cause", "timeout")]
        ) >= 1.0
    );
}

#[test]
fn no_failover_on_486_busy_goes_back_to_the_platform() {
    let lab = Lab::new("no_failover_486");
    let (t1, t2) = (
        Sipp::reserve(CARRIER_TARGET),
        Sipp::reserve(CARRIER_TARGET_2),
    );
    config(&lab, trunk(&[t1, t2]), &[]);
    let edge = failover_edge(&lab);
    let first = rejecting(&lab, t1, "486", "Busy Here").start();
    let second = Sipp::answering(&lab, "carrier-sbc2", t2)
        .timeout_secs(8)
        .start();
    let platform = platform_call(&lab, &edge, "platform", BYOC, "uac_refused.xml", "486");
    platform.assert_ok();
    first.wait().assert_ok();
    // Give a wrong failover (after --failover-seconds 1) the time to happen.
    std::thread::sleep(Duration::from_millis(1500));
    let second = second.stop();
    assert_eq!(
        second.received().count(),
        0,
        "the second target must see nothing after a 486:\n{}",
        second.report()
    );
    assert_eq!(edge.metric("trunkgate_edge_failovers_total", &[]), 0.0);
    let cdr = edge.wait_cdr("the busy call", |c| c["caller"] == BYOC);
    assert_eq!(cdr["finalStatus"], 486);
}

/// A challenge the trunk's credentials cannot answer (another realm: only HA1 hashes for the
/// configured realm reach the edge) ends the call with 403 for the platform, saying why.
#[test]
fn carrier_challenge_for_another_realm_gets_403() {
    let lab = Lab::new("carrier_challenge_realm");
    let target = Sipp::reserve(CARRIER_TARGET);
    config(
        &lab,
        trunk(&[target]).outbound_auth("pacific-outbound", "pacific-telco.example"),
        &[secret("lab", "pacific-outbound", "acme-trunk-0412", "pw")],
    );
    let edge = Edge::start(&lab, EdgeOptions::default());
    let carrier = Sipp::uas_at(
        &lab,
        "carrier",
        scenario(
            &lab,
            "uas_reject.xml",
            &[
                ("CODE", "401"),
                ("REASON", "Unauthorized"),
                (
                    "HEADERS",
                    "WWW-Authenticate: Digest realm=\"other.example\", nonce=\"abc123\", algorithm=MD5, qop=\"auth\"",
                ),
            ],
        ),
        target,
    )
    .start();
    let platform = platform_call(&lab, &edge, "platform", BYOC, "uac_refused.xml", "403");
    platform.assert_ok();
    carrier.wait().assert_ok();
    assert!(
        platform.response(403, "INVITE").header("Warning").is_some(),
        "{}",
        platform.report()
    );
}

#[test]
fn carrier_digest_challenge_is_answered_with_the_trunk_credentials() {
    const USER: &str = "acme-trunk-0412";
    const PASSWORD: &str = "change-me-outbound";
    const REALM: &str = "pacific-telco.example";
    let lab = Lab::new("carrier_challenge");
    let target = Sipp::reserve(CARRIER_TARGET);
    config(
        &lab,
        trunk(&[target]).outbound_auth("pacific-outbound", REALM),
        &[secret("lab", "pacific-outbound", USER, PASSWORD)],
    );
    let edge = Edge::start(&lab, EdgeOptions::default());
    let carrier = Sipp::uas_at(
        &lab,
        "carrier",
        scenario(
            &lab,
            "uas_challenge.xml",
            &[("REALM", REALM), ("USER", USER), ("PASSWORD", PASSWORD)],
        ),
        target,
    )
    .timeout_secs(8)
    .start();
    let platform = platform_call(&lab, &edge, "platform", BYOC, "uac_call.xml", "");
    let carrier = carrier.wait();
    platform.assert_ok();
    carrier.assert_ok();

    let invites = carrier.requests("INVITE");
    assert_eq!(invites.len(), 2, "{}", carrier.report());
    let (first, retry) = (invites[0], invites[1]);
    assert_eq!(
        first.header("Call-ID"),
        retry.header("Call-ID"),
        "same call (RFC 3261 §22.2)"
    );
    assert!(
        retry.cseq_number() > first.cseq_number(),
        "CSeq goes up on the retry:\n{}\n{}",
        first.text(),
        retry.text()
    );
    let auth = retry
        .header("Authorization")
        .unwrap_or_else(|| panic!("the retry carries Authorization:\n{}", retry.text()));
    let p = digest_params(auth);
    assert_eq!(p.get("username").map(String::as_str), Some(USER), "{auth}");
    assert_eq!(p.get("realm").map(String::as_str), Some(REALM), "{auth}");
    assert_eq!(p.get("uri").map(String::as_str), retry.uri(), "{auth}");
    // The answer is right (computed here, not by the edge's code).
    let nc_cnonce = match (p.get("qop"), p.get("nc"), p.get("cnonce")) {
        (Some(_), Some(nc), Some(cnonce)) => Some((nc.as_str(), cnonce.as_str())),
        _ => None,
    };
    let want = digest_md5_response(
        USER,
        REALM,
        PASSWORD,
        "INVITE",
        &p["uri"],
        &p["nonce"],
        nc_cnonce,
    );
    assert_eq!(p.get("response"), Some(&want), "{auth}");
}

/// Answers every OPTIONS that reaches `ua` within `window` with 200; returns how many.
fn answer_options(ua: &mut trunkgate_tests::ua::Ua, window: Duration) -> usize {
    let deadline = Instant::now() + window;
    let mut n = 0;
    while let Some(probe) = ua.gets_request(
        "OPTIONS",
        deadline.saturating_duration_since(Instant::now()),
    ) {
        ua.respond(&probe, 200, "OK", "probe", "");
        n += 1;
    }
    n
}

/// `outbound.healthCheck`: OPTIONS probes find the first target dead, calls then go straight
/// to the second (no failover wait), and the first is back in rotation once it answers again.
#[test]
fn options_probes_take_a_dead_target_out_of_rotation_and_bring_it_back() {
    use trunkgate_tests::ua::Ua;
    let lab = Lab::new("target_probes");
    let mut first = Ua::bind("carrier-sbc1", CARRIER_TARGET, "sbc1");
    let mut second = Ua::bind("carrier-sbc2", CARRIER_TARGET_2, "sbc2");
    config(
        &lab,
        trunk(&[first.local, second.local]).health_check(1, 2),
        &[],
    );
    let edge = Edge::start(
        &lab,
        EdgeOptions {
            failover_seconds: 0.5,
            ..EdgeOptions::default()
        },
    );
    let healthy = |edge: &Edge| {
        edge.metric(
            "trunkgate_edge_trunk_targets_healthy",
            &[("trunk", "lab/carrier")],
        )
    };
    assert_eq!(
        healthy(&edge),
        2.0,
        "targets are up until probes say otherwise"
    );
    // sbc1 swallows its probes; sbc2 answers them.
    let mut answered = 0;
    let deadline = Instant::now() + Duration::from_secs(15);
    while healthy(&edge) != 1.0 && Instant::now() < deadline {
        answered += answer_options(&mut second, Duration::from_millis(200));
    }
    assert_eq!(
        healthy(&edge),
        1.0,
        "sbc1 is down after 2 unanswered probes\n{}",
        first.report()
    );
    assert!(answered >= 1, "sbc2 was probed too");
    assert!(
        edge.metric(
            "trunkgate_edge_target_probes_total",
            &[("trunk", "lab/carrier"), ("result", "failed")]
        ) >= 2.0
    );
    let probe = first.expect_request("OPTIONS", Duration::from_secs(3));
    assert_eq!(probe.msg.header("Max-Forwards"), Some("70"));
    assert!(
        probe
            .msg
            .uri()
            .is_some_and(|u| u.contains(&first.local.to_string())),
        "OPTIONS is addressed to the target: {}",
        probe.msg.text()
    );

    // The call skips sbc1 (priority 1) and goes straight to sbc2, which is busy.
    std::thread::scope(|s| {
        let platform =
            s.spawn(|| platform_call(&lab, &edge, "platform", BYOC, "uac_refused.xml", "486"));
        let invite = second.expect_request("INVITE", Duration::from_secs(5));
        second.respond(&invite, 486, "Busy Here", "busy", "");
        let platform = platform.join().expect("the platform's sipp ran");
        platform.assert_ok();
    });
    assert!(
        first
            .gets_request("INVITE", Duration::from_millis(300))
            .is_none(),
        "the dead target got no INVITE\n{}",
        first.report()
    );
    assert_eq!(edge.metric("trunkgate_edge_failovers_total", &[]), 0.0);

    // sbc1 answers again: back in rotation.
    let deadline = Instant::now() + Duration::from_secs(15);
    while healthy(&edge) != 2.0 && Instant::now() < deadline {
        answer_options(&mut first, Duration::from_millis(200));
        answer_options(&mut second, Duration::from_millis(10));
    }
    assert_eq!(healthy(&edge), 2.0, "sbc1 is back after one answer");
}
