//! What happens inside calls: CANCEL while ringing, re-INVITE and BYE from either side, a
//! config reload during a call, topology hiding, and the call detail records.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use trunkgate_tests::sip::param;
use trunkgate_tests::sipp::scenario;
use trunkgate_tests::*;

const CALLER: &str = "+6421555123";
const NUMBER: &str = "+6498879333";
const BYOC: &str = "+6498879301";

/// `acme/pacific`: the carrier at 127.0.0.10 calls `platform`; outbound calls go to `carrier`.
fn config(lab: &Lab, platform: SocketAddr, carrier: Option<SocketAddr>) -> Trunk {
    let mut trunk = Trunk::new("acme", "pacific", "127.0.0.10/32", platform);
    if let Some(c) = carrier {
        trunk = trunk.target(c);
    }
    lab.write_config("acme-trunk.yaml", &trunk.yaml());
    lab.write_config(
        "acme-numbers.yaml",
        &Numbers::byoc("acme", "numbers", "pacific", &["+6498879300-+6498879399"]).yaml(),
    );
    trunk
}

fn carrier_call(lab: &Lab, edge: &Edge, name: &str, template: &str, vars: &[(&str, &str)]) -> Sipp {
    let ruri = edge.public_uri(NUMBER);
    let mut all = vec![("RURI", ruri.as_str()), ("FROM_USER", CALLER)];
    all.extend_from_slice(vars);
    Sipp::uac(
        lab,
        name,
        scenario(lab, template, &all),
        CARRIER,
        edge.public,
    )
    .start()
}

fn platform_call(
    lab: &Lab,
    edge: &Edge,
    name: &str,
    template: &str,
    vars: &[(&str, &str)],
) -> Sipp {
    let ruri = edge.internal_uri(CALLER);
    let mut all = vec![("RURI", ruri.as_str()), ("FROM_USER", BYOC)];
    all.extend_from_slice(vars);
    Sipp::uac(
        lab,
        name,
        scenario(lab, template, &all),
        PLATFORM,
        edge.internal,
    )
    .start()
}

#[test]
fn cancel_while_ringing_reaches_the_platform_and_ends_with_487() {
    let lab = Lab::new("cancel");
    let platform = Sipp::reserve(PLATFORM);
    config(&lab, platform, None);
    let edge = Edge::start(&lab, EdgeOptions::default());
    let uas = Sipp::uas_at(
        &lab,
        "platform",
        scenario(&lab, "uas_ring_cancel.xml", &[]),
        platform,
    )
    .start();
    let carrier = carrier_call(&lab, &edge, "carrier", "uac_cancel.xml", &[]).wait();
    carrier.assert_ok();
    carrier.response(200, "CANCEL");
    carrier.response(487, "INVITE");
    let uas = uas.wait();
    uas.assert_ok();
    let cancel = uas.request("CANCEL");
    let invite = uas.request("INVITE");
    assert_eq!(
        cancel.header("Call-ID"),
        invite.header("Call-ID"),
        "the CANCEL is for the platform's INVITE"
    );
    assert_eq!(
        cancel.header("Via").and_then(|v| param(v, "branch")),
        invite.header("Via").and_then(|v| param(v, "branch")),
        "CANCEL has the INVITE's branch (RFC 3261 §9.1)"
    );
    let cdr = edge.wait_cdr("the cancelled call", |c| c["callee"] == NUMBER);
    assert_eq!(cdr["finalStatus"], 487);
    assert_eq!(cdr["endedBy"], "carrier");
    assert!(cdr["answer"].is_null(), "never answered: {cdr}");
}

/// The carrier gives up before the platform even rings (only the edge's 100 came back): the
/// edge answers the CANCEL at once and cancels the platform's INVITE as soon as it may
/// (RFC 3261 §9.1: after a provisional response).
#[test]
fn cancel_before_the_platform_rings_still_reaches_the_platform() {
    let lab = Lab::new("cancel_early");
    let platform = Sipp::reserve(PLATFORM);
    config(&lab, platform, None);
    let edge = Edge::start(&lab, EdgeOptions::default());
    let uas = Sipp::uas_at(
        &lab,
        "platform",
        scenario(&lab, "uas_ring_cancel.xml", &[("RING_MS", "700")]),
        platform,
    )
    .start();
    let carrier = carrier_call(
        &lab,
        &edge,
        "carrier",
        "uac_cancel.xml",
        &[
            ("WAIT_BEFORE_CANCEL", "<recv response=\"100\"/>"),
            ("CANCEL_AFTER_MS", "100"),
        ],
    )
    .wait();
    carrier.assert_ok();
    carrier.response(487, "INVITE");
    let uas = uas.wait();
    uas.assert_ok();
    uas.request("CANCEL");
    let cdr = edge.wait_cdr("the cancelled call", |c| c["callee"] == NUMBER);
    assert_eq!(cdr["finalStatus"], 487);
    assert_eq!(cdr["endedBy"], "carrier");
}

#[test]
fn reinvite_from_the_carrier_reaches_the_platform_and_its_answer_comes_back() {
    let lab = Lab::new("reinvite_carrier");
    let platform = Sipp::reserve(PLATFORM);
    config(&lab, platform, None);
    let edge = Edge::start(&lab, EdgeOptions::default());
    let uas = Sipp::uas_at(
        &lab,
        "platform",
        scenario(&lab, "uas_reinvite.xml", &[]),
        platform,
    )
    .start();
    let carrier = carrier_call(&lab, &edge, "carrier", "uac_reinvite.xml", &[]).wait();
    let uas = uas.wait();
    carrier.assert_ok();
    uas.assert_ok();
    let invites = uas.requests("INVITE");
    assert_eq!(invites.len(), 2, "{}", uas.report());
    let reinvite = invites[1];
    assert!(
        reinvite.header("Content-Type") == Some("application/sdp")
            && reinvite.body.contains("a=sendonly"),
        "the new offer reaches the platform:\n{}",
        reinvite.text()
    );
    assert_eq!(
        reinvite.header("Call-ID"),
        invites[0].header("Call-ID"),
        "in the same dialog"
    );
    let answer = carrier
        .received()
        .find(|m| m.code() == Some(200) && m.cseq_number() == Some(2))
        .unwrap_or_else(|| panic!("no 200 for the re-INVITE:\n{}", carrier.report()));
    assert!(
        answer.body.contains("a=recvonly"),
        "the platform's answer reaches the carrier:\n{}",
        answer.text()
    );
    assert_eq!(uas.requests("ACK").len(), 2, "both ACKs reach the platform");
}

#[test]
fn reinvite_from_the_platform_reaches_the_carrier_and_its_answer_comes_back() {
    let lab = Lab::new("reinvite_platform");
    let platform = Sipp::reserve(PLATFORM);
    config(&lab, platform, None);
    let edge = Edge::start(&lab, EdgeOptions::default());
    let uas = Sipp::uas_at(
        &lab,
        "platform",
        scenario(&lab, "uas_send_reinvite.xml", &[("HOLD_MS", "300")]),
        platform,
    )
    .start();
    let carrier = carrier_call(&lab, &edge, "carrier", "uac_answer_reinvite.xml", &[]).wait();
    let uas = uas.wait();
    carrier.assert_ok();
    uas.assert_ok();
    let reinvite = carrier.request("INVITE");
    assert!(
        reinvite.header("Content-Type") == Some("application/sdp")
            && reinvite.body.contains("a=sendonly"),
        "the new offer reaches the carrier:\n{}",
        reinvite.text()
    );
    let answer = uas
        .received()
        .find(|m| m.code() == Some(200) && m.cseq_method() == Some("INVITE"))
        .unwrap_or_else(|| panic!("no 200 for the re-INVITE:\n{}", uas.report()));
    assert!(
        answer.body.contains("a=recvonly"),
        "the carrier's answer reaches the platform:\n{}",
        answer.text()
    );
    assert_eq!(
        carrier.requests("ACK").len(),
        1,
        "the ACK reaches the carrier"
    );
}

#[test]
fn bye_from_the_platform_ends_an_inbound_call() {
    let lab = Lab::new("bye_platform");
    let platform = Sipp::reserve(PLATFORM);
    config(&lab, platform, None);
    let edge = Edge::start(&lab, EdgeOptions::default());
    let uas = Sipp::uas_at(
        &lab,
        "platform",
        scenario(&lab, "uas_answer_bye.xml", &[]),
        platform,
    )
    .start();
    let carrier = carrier_call(&lab, &edge, "carrier", "uac_call_wait_bye.xml", &[]).wait();
    let uas = uas.wait();
    carrier.assert_ok();
    uas.assert_ok();
    uas.response(200, "BYE");
    let cdr = edge.wait_cdr("the call", |c| c["callee"] == NUMBER);
    assert_eq!(cdr["endedBy"], "platform");
    assert_eq!(cdr["finalStatus"], 200);
}

#[test]
fn bye_from_the_carrier_ends_an_outbound_call() {
    let lab = Lab::new("bye_carrier");
    let carrier_sbc = Sipp::reserve(CARRIER_TARGET);
    config(
        &lab,
        SocketAddr::from(([127, 0, 0, 20], 5999)),
        Some(carrier_sbc),
    );
    let edge = Edge::start(&lab, EdgeOptions::default());
    let sbc = Sipp::uas_at(
        &lab,
        "carrier",
        scenario(&lab, "uas_answer_bye.xml", &[]),
        carrier_sbc,
    )
    .start();
    let platform = platform_call(&lab, &edge, "platform", "uac_call_wait_bye.xml", &[]).wait();
    let sbc = sbc.wait();
    platform.assert_ok();
    sbc.assert_ok();
    sbc.response(200, "BYE");
    let cdr = edge.wait_cdr("the call", |c| c["caller"] == BYOC);
    assert_eq!(cdr["direction"], "outbound");
    assert_eq!(cdr["endedBy"], "carrier");
}

/// Rewriting the config folder mid-call: the call in progress keeps going and ends normally,
/// the next call already sees the new config.
#[test]
fn hot_reload_mid_call_keeps_the_call_and_applies_to_the_next() {
    let lab = Lab::new("hot_reload");
    let platform = Sipp::reserve(PLATFORM);
    config(&lab, platform, None);
    let edge = Edge::start(&lab, EdgeOptions::default());
    let version = edge.snapshot_version();
    let uas = Sipp::answering(&lab, "platform", platform).start();
    let long = carrier_call(
        &lab,
        &edge,
        "carrier-long",
        "uac_call.xml",
        &[("HOLD_MS", "2500")],
    );
    assert_eventually!(
        uas.has_received("ACK"),
        Duration::from_secs(5),
        "the call is up"
    );

    // The number leaves the trunk.
    lab.write_config(
        "acme-numbers.yaml",
        &Numbers::byoc("acme", "numbers", "pacific", &["+6498879400-+6498879499"]).yaml(),
    );
    assert_eventually!(
        edge.snapshot_version() != version,
        Duration::from_secs(5),
        "the edge loads the new folder"
    );
    let next = carrier_call(
        &lab,
        &edge,
        "carrier-next",
        "uac_refused.xml",
        &[("CODE", "404")],
    )
    .wait();
    next.assert_ok();
    assert!(
        uas.has_received("ACK")
            && uas
                .messages()
                .iter()
                .filter(|m| m.method() == Some("INVITE"))
                .count()
                == 1,
        "the next call did not reach the platform"
    );

    let long = long.wait();
    long.assert_ok();
    let uas = uas.wait();
    uas.assert_ok();
    uas.request("BYE");
    let cdr = edge.wait_cdr("the long call", |c| c["finalStatus"] == 200);
    assert_eq!(cdr["endedBy"], "carrier");
    assert!(
        edge.metric("trunkgate_edge_snapshot_reloads_total", &[("result", "ok")]) >= 2.0,
        "the first load and the reload"
    );
}

/// Moving the trunk's platform destination mid-call: new calls go to the new destination, the
/// call in progress keeps its platform leg (its BYE goes where its INVITE went).
#[test]
fn hot_reload_of_the_destination_moves_new_calls_only() {
    let lab = Lab::new("hot_reload_destination");
    let (p1, p2) = (Sipp::reserve(PLATFORM), Sipp::reserve(PLATFORM_2));
    let trunk = config(&lab, p1, None);
    let edge = Edge::start(&lab, EdgeOptions::default());
    let version = edge.snapshot_version();
    let old = Sipp::answering(&lab, "platform-old", p1).start();
    let new = Sipp::answering(&lab, "platform-new", p2).start();
    let long = carrier_call(
        &lab,
        &edge,
        "carrier-long",
        "uac_call.xml",
        &[("HOLD_MS", "2500")],
    );
    assert_eventually!(
        old.has_received("ACK"),
        Duration::from_secs(5),
        "the call is up"
    );

    let moved = Trunk {
        destination: format!("sip:{p2}"),
        ..trunk
    };
    lab.write_config("acme-trunk.yaml", &moved.yaml());
    assert_eventually!(
        edge.snapshot_version() != version,
        Duration::from_secs(5),
        "the edge loads the new folder"
    );
    carrier_call(&lab, &edge, "carrier-next", "uac_call.xml", &[])
        .wait()
        .assert_ok();
    long.wait().assert_ok();
    let (old, new) = (old.wait(), new.wait());
    old.assert_ok();
    new.assert_ok();
    assert_eq!(old.requests("INVITE").len(), 1, "{}", old.report());
    assert_eq!(new.requests("INVITE").len(), 1, "{}", new.report());
    old.request("BYE");
}

/// The carrier's address leaves the trunk mid-call: its call in progress still ends normally
/// (its BYE is not dropped by the new ACL), while its next INVITE gets no answer at all.
#[test]
fn hot_reload_that_drops_the_carrier_address_keeps_its_call_in_progress() {
    let lab = Lab::new("hot_reload_acl");
    let platform = Sipp::reserve(PLATFORM);
    let trunk = config(&lab, platform, None);
    let edge = Edge::start(&lab, EdgeOptions::default());
    let version = edge.snapshot_version();
    let uas = Sipp::answering(&lab, "platform", platform).start();
    let long = carrier_call(
        &lab,
        &edge,
        "carrier-long",
        "uac_call.xml",
        &[("HOLD_MS", "2500")],
    );
    assert_eventually!(
        uas.has_received("ACK"),
        Duration::from_secs(5),
        "the call is up"
    );

    let moved = Trunk {
        cidrs: vec!["127.0.0.99/32".into()],
        ..trunk
    };
    lab.write_config("acme-trunk.yaml", &moved.yaml());
    assert_eventually!(
        edge.snapshot_version() != version,
        Duration::from_secs(5),
        "the edge loads the new folder"
    );
    let next = Sipp::uac(
        &lab,
        "carrier-next",
        scenario(
            &lab,
            "uac_call.xml",
            &[("RURI", &edge.public_uri(NUMBER)), ("FROM_USER", CALLER)],
        ),
        CARRIER,
        edge.public,
    )
    .timeout_secs(2)
    .run();
    assert_eq!(
        next.received().count(),
        0,
        "a new call from the removed address is dropped:\n{}",
        next.report()
    );
    let long = long.wait();
    long.assert_ok();
    let uas = uas.wait();
    uas.assert_ok();
    uas.request("BYE");
}

/// Everything one side could learn about the other from header fields: addresses, ports,
/// Call-IDs, tags, branches, and what it put in its own headers.
fn secrets_of(run: &SippRun, addr: SocketAddr, own: &[&str]) -> BTreeSet<String> {
    let mut s: BTreeSet<String> = own.iter().map(|x| x.to_string()).collect();
    s.insert(addr.ip().to_string());
    s.insert(format!(":{}", addr.port()));
    for m in run.sent() {
        if let Some(v) = m.header("Call-ID") {
            s.insert(v.to_string());
        }
        for h in ["From", "To"] {
            if let Some(tag) = m.header(h).and_then(|v| param(v, "tag")) {
                s.insert(tag);
            }
        }
        for via in m.header_all("Via") {
            if let Some(b) = param(via, "branch") {
                s.insert(b);
            }
        }
    }
    s
}

/// Fails when a header field of a message `seen_by` received mentions one of `secrets`.
fn assert_no_leak(seen_by: &SippRun, secrets: &BTreeSet<String>, whose: &str) {
    for m in seen_by.received() {
        let text = m.header_text();
        for secret in secrets {
            assert!(
                !text.contains(secret.as_str()),
                "{} saw {whose}'s `{secret}` in:\n{}",
                seen_by.name,
                text
            );
        }
    }
}

const CARRIER_HEADERS: &str = "Record-Route: <sip:10.66.0.1:5060;lr>\nUser-Agent: CarrierSBC/7.1\nX-Carrier-Node: sbc-7.core.carrier.example\nP-Charging-Vector: icid-value=carrier-icid-42";
const PLATFORM_HEADERS: &str = "Record-Route: <sip:10.77.0.1;lr>\nServer: PlatformPBX/3.2\nX-Platform-Pod: voice-platform-5f7c9-abcde";
const CARRIER_OWN: &[&str] = &["10.66.0.1", "CarrierSBC", "sbc-7", "carrier-icid"];
const PLATFORM_OWN: &[&str] = &["10.77.0.1", "PlatformPBX", "voice-platform-5f7c9"];

#[test]
fn topology_is_hidden_on_inbound_calls() {
    let lab = Lab::new("topology_inbound");
    let platform = Sipp::reserve(PLATFORM);
    config(&lab, platform, None);
    let edge = Edge::start(&lab, EdgeOptions::default());
    let uas = Sipp::uas_at(
        &lab,
        "platform",
        scenario(&lab, "uas_answer_bye.xml", &[("HEADERS", PLATFORM_HEADERS)]),
        platform,
    )
    .start();
    let carrier = carrier_call(
        &lab,
        &edge,
        "carrier",
        "uac_call_wait_bye.xml",
        &[("HEADERS", CARRIER_HEADERS)],
    )
    .wait();
    let uas = uas.wait();
    carrier.assert_ok();
    uas.assert_ok();
    let mut platform_secrets = secrets_of(&uas, platform, PLATFORM_OWN);
    platform_secrets.insert(edge.internal.to_string());
    assert_no_leak(&carrier, &platform_secrets, "the platform");
    let carrier_secrets = secrets_of(&carrier, sent_from(&carrier), CARRIER_OWN);
    assert_no_leak(&uas, &carrier_secrets, "the carrier");
    // The carrier's only contact is the edge's public address.
    for m in carrier.received() {
        if let Some(c) = m.header("Contact") {
            assert!(
                c.contains(&edge.public.to_string()),
                "Contact {c} is not the edge's public address"
            );
        }
    }
}

#[test]
fn topology_is_hidden_on_outbound_calls() {
    let lab = Lab::new("topology_outbound");
    let carrier_sbc = Sipp::reserve(CARRIER_TARGET);
    config(
        &lab,
        SocketAddr::from(([127, 0, 0, 20], 5999)),
        Some(carrier_sbc),
    );
    let edge = Edge::start(&lab, EdgeOptions::default());
    let sbc = Sipp::uas_at(
        &lab,
        "carrier",
        scenario(&lab, "uas_answer_bye.xml", &[("HEADERS", CARRIER_HEADERS)]),
        carrier_sbc,
    )
    .start();
    let platform = platform_call(
        &lab,
        &edge,
        "platform",
        "uac_call_wait_bye.xml",
        &[("HEADERS", PLATFORM_HEADERS)],
    )
    .wait();
    let sbc = sbc.wait();
    platform.assert_ok();
    sbc.assert_ok();
    let mut platform_secrets = secrets_of(&platform, sent_from(&platform), PLATFORM_OWN);
    platform_secrets.insert(edge.internal.to_string());
    assert_no_leak(&sbc, &platform_secrets, "the platform");
    let carrier_secrets = secrets_of(&sbc, carrier_sbc, CARRIER_OWN);
    assert_no_leak(&platform, &carrier_secrets, "the carrier");
    for m in sbc.received() {
        if let Some(c) = m.header("Contact") {
            assert!(
                c.contains(&edge.public.to_string()),
                "Contact {c} is not the edge's public address"
            );
        }
    }
}

/// Where a UAC sent from: the sent-by of its first Via.
fn sent_from(run: &SippRun) -> SocketAddr {
    let via = run
        .sent()
        .find_map(|m| m.header("Via"))
        .expect("a sent request");
    let sent_by = via
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.split(';').next())
        .expect("Via sent-by");
    sent_by.parse().expect("an IP:port sent-by")
}

#[test]
fn call_detail_records_describe_each_call() {
    let lab = Lab::new("cdr");
    let platform = Sipp::reserve(PLATFORM);
    let carrier_sbc = Sipp::reserve(CARRIER_TARGET);
    config(&lab, platform, Some(carrier_sbc));
    let edge = Edge::start(&lab, EdgeOptions::default());

    // 1. Inbound, national numbers, answered, the carrier hangs up after about 0.5 s.
    let uas = Sipp::answering(&lab, "platform", platform).start();
    let ruri = edge.public_uri("098879333");
    Sipp::uac(
        &lab,
        "carrier",
        scenario(
            &lab,
            "uac_call.xml",
            &[
                ("RURI", &ruri),
                ("FROM_USER", "021555123"),
                ("HOLD_MS", "500"),
            ],
        ),
        CARRIER,
        edge.public,
    )
    .run()
    .assert_ok();
    uas.wait().assert_ok();
    // 2. Outbound, answered, the platform hangs up.
    let sbc = Sipp::answering(&lab, "carrier-sbc", carrier_sbc).start();
    platform_call(&lab, &edge, "platform-out", "uac_call.xml", &[])
        .wait()
        .assert_ok();
    sbc.wait().assert_ok();
    // 3. Inbound, the platform is busy.
    let busy = Sipp::uas_at(
        &lab,
        "platform-busy",
        scenario(
            &lab,
            "uas_reject.xml",
            &[("CODE", "486"), ("REASON", "Busy Here")],
        ),
        platform,
    )
    .start();
    let ruri = edge.public_uri("+6498879334");
    Sipp::uac(
        &lab,
        "carrier-busy",
        scenario(&lab, "uac_refused.xml", &[("RURI", &ruri), ("CODE", "486")]),
        CARRIER,
        edge.public,
    )
    .run()
    .assert_ok();
    busy.wait().assert_ok();

    let inbound = edge.wait_cdr("the inbound call", |c| c["callee"] == NUMBER);
    assert_eq!(inbound["type"], "cdr");
    assert_eq!(inbound["trunk"], "acme/pacific");
    assert_eq!(inbound["direction"], "inbound");
    assert_eq!(
        inbound["caller"], CALLER,
        "E.164, not the carrier's 021555123"
    );
    assert_eq!(inbound["finalStatus"], 200);
    assert_eq!(inbound["endedBy"], "carrier");
    assert!(
        inbound["start"].is_string() && inbound["answer"].is_string() && inbound["end"].is_string(),
        "{inbound}"
    );
    let secs = inbound["durationSeconds"].as_f64().unwrap_or(-1.0);
    assert!(
        (0.4..5.0).contains(&secs),
        "about half a second of talk: {inbound}"
    );

    let outbound = edge.wait_cdr("the outbound call", |c| c["direction"] == "outbound");
    assert_eq!(outbound["trunk"], "acme/pacific");
    assert_eq!(outbound["caller"], BYOC);
    assert_eq!(outbound["callee"], CALLER);
    assert_eq!(outbound["finalStatus"], 200);
    assert_eq!(outbound["endedBy"], "platform");

    let failed = edge.wait_cdr("the busy call", |c| c["callee"] == "+6498879334");
    assert_eq!(failed["finalStatus"], 486);
    assert!(failed["answer"].is_null(), "{failed}");
    assert_eq!(failed["durationSeconds"].as_f64(), Some(0.0), "{failed}");
    assert_eq!(edge.cdrs().len(), 3, "one record per call");
}

/// One rule for bad edits in standalone mode too: a schema error (a bad CIDR) or a file that is
/// no longer YAML keeps the trunk and its numbers at their last good version, so calls go on.
#[test]
fn bad_edits_in_the_folder_keep_the_last_good_version() {
    let lab = Lab::new("bad_edits");
    let platform = Sipp::reserve(PLATFORM);
    let trunk = config(&lab, platform, None);
    let edge = Edge::start(&lab, EdgeOptions::default());
    let uas = Sipp::answering(&lab, "platform", platform).calls(2).start();
    let problems = || {
        edge.metric(
            "trunkgate_edge_snapshot_reloads_total",
            &[("result", "with_problems")],
        )
    };

    // 1. A bad CIDR (the schema refuses the document) beside a good one.
    let bad = Trunk {
        cidrs: vec!["127.0.0.10/32".into(), "10.0.0.300/8".into()],
        ..trunk
    };
    lab.write_config("acme-trunk.yaml", &bad.yaml());
    assert_eventually!(
        problems() >= 1.0,
        Duration::from_secs(5),
        "the edge reads the bad edit"
    );
    let log = edge.log_tail(400);
    assert!(
        log.contains("10.0.0.300/8") && log.contains("allowedCidrs[1]"),
        "the log names the bad entry and its index:\n{log}"
    );
    carrier_call(&lab, &edge, "after-bad-cidr", "uac_call.xml", &[])
        .wait()
        .assert_ok();

    // 2. The numbers file stops being YAML: its NumberOwnership keeps running.
    lab.write_config(
        "acme-numbers.yaml",
        "kind: NumberOwnership\n  numbers: [oops\n",
    );
    assert_eventually!(
        problems() >= 2.0,
        Duration::from_secs(5),
        "the edge reads the broken file"
    );
    carrier_call(&lab, &edge, "after-broken-yaml", "uac_call.xml", &[])
        .wait()
        .assert_ok();
    uas.wait().assert_ok();

    // 3. The user fixes the trunk: the log says it runs as written again.
    lab.write_config("acme-trunk.yaml", &config(&lab, platform, None).yaml());
    assert_eventually!(
        edge.log_tail(400).contains("object valid again"),
        Duration::from_secs(5),
        "fixing a file is said in the log:\n{}",
        edge.log_tail(20)
    );
}

/// A platform that rings and never answers cannot hold the call in set-up for ever: after
/// `--ringing-seconds` the edge CANCELs it and answers the carrier 408.
#[test]
fn a_call_that_rings_too_long_is_cancelled_with_408() {
    let lab = Lab::new("ringing_timeout");
    let platform = Sipp::reserve(PLATFORM);
    config(&lab, platform, None);
    let edge = Edge::start(
        &lab,
        EdgeOptions {
            extra_args: vec!["--ringing-seconds".into(), "2".into()],
            ..EdgeOptions::default()
        },
    );
    let uas = Sipp::uas_at(
        &lab,
        "platform",
        scenario(&lab, "uas_ring_cancel.xml", &[]),
        platform,
    )
    .start();
    let carrier = carrier_call(
        &lab,
        &edge,
        "carrier",
        "uac_refused.xml",
        &[("CODE", "408")],
    )
    .wait();
    carrier.assert_ok();
    let uas = uas.wait();
    uas.assert_ok();
    uas.request("CANCEL");
    let cdr = edge.wait_cdr("the call that rang too long", |c| c["callee"] == NUMBER);
    assert_eq!(cdr["finalStatus"], 408);
    assert_eq!(
        edge.metric(
            "trunkgate_edge_ringing_timeouts_total",
            &[("trunk", "acme/pacific")]
        ),
        1.0
    );
}

/// A platform that goes silent after its 180 (a platform pod restarting while a call rings):
/// the carrier gets 408 after --ringing-seconds, the platform a CANCEL it never answers, and
/// 64·T1 after that CANCEL (RFC 3261 §9.1) the call is over: its active-call and set-up slots
/// are free and its record is written. Before, it held both slots for good and wrote nothing.
#[test]
fn a_platform_silent_after_ringing_frees_the_call_and_writes_its_record() {
    use trunkgate_tests::sip::RawInvite;
    use trunkgate_tests::ua::Ua;
    let lab = Lab::new("dialog_silent_platform");
    let mut platform = Ua::bind("platform", PLATFORM, "platform");
    config(&lab, platform.local, None);
    let edge = Edge::start(
        &lab,
        EdgeOptions {
            extra_args: vec!["--ringing-seconds".into(), "1".into()],
            ..EdgeOptions::default()
        },
    );
    let wait = Duration::from_secs(5);
    let carrier = RawUdp::bind(CARRIER);
    let inv = RawInvite::new(&edge.public_uri(NUMBER), CALLER, "silent-platform");
    carrier.send(edge.public, &inv.invite(carrier.local));
    let invite = platform.expect_request("INVITE", wait);
    platform.respond(&invite, 180, "Ringing", "p-silent", "");
    let timeout = carrier.recv_final("INVITE", wait).expect("a final answer");
    assert_eq!(timeout.code(), Some(408), "{}", timeout.text());
    carrier.send(edge.public, &inv.ack_non_2xx(carrier.local, &timeout));
    assert!(
        platform.gets_request("CANCEL", wait).is_some(),
        "the platform is CANCELed: {}",
        platform.report()
    );
    assert_eq!(edge.metric("trunkgate_edge_active_calls", &[]), 1.0);
    let cdr = eventually(Duration::from_secs(45), || {
        edge.cdrs().into_iter().find(|c| c["callee"] == NUMBER)
    })
    .expect("a call record within 64·T1 of the CANCEL");
    assert_eq!(cdr["finalStatus"], 408, "{cdr}");
    assert_eq!(edge.metric("trunkgate_edge_active_calls", &[]), 0.0);
    assert_eq!(edge.metric("trunkgate_edge_calls_in_setup", &[]), 0.0);
}

/// A forking carrier (RFC 3261 §13.2.2.4) on the real edge: 180 from two branches, 200 from
/// the first, then 200 from the second. The first becomes the call; the second gets an ACK and
/// a BYE in its own dialog (before, it was ACKed with the first branch's tag, never hung up,
/// and stayed answered at the carrier).
#[test]
fn a_second_forks_200_is_acknowledged_and_hung_up_in_its_own_dialog() {
    use trunkgate_tests::ua::Ua;
    let lab = Lab::new("dialog_forking_carrier");
    let mut carrier = Ua::bind("carrier", CARRIER_TARGET, "carrier");
    let mut platform = Ua::bind("platform", PLATFORM, "platform");
    let trunk = Trunk::new("acme", "pacific", "127.0.0.10/32", platform.local)
        .target(carrier.local)
        .policy("PassThrough")
        .relay(false);
    lab.write_config("acme-trunk.yaml", &trunk.yaml());
    let edge = Edge::start(&lab, EdgeOptions::default());
    let wait = Duration::from_secs(5);
    let (mut call, tx) = platform.invite(edge.internal, &edge.internal_uri(CALLER), BYOC, "");
    let invite = carrier.expect_request("INVITE", wait);
    carrier.respond(&invite, 180, "Ringing", "branchA", "");
    carrier.respond(&invite, 180, "Ringing", "branchB", "");
    carrier.respond(&invite, 200, "OK", "branchA", "");
    let ok = platform.final_response(&mut call, &tx, wait);
    assert_eq!(ok.code(), Some(200), "{}", ok.text());
    let ack = carrier.expect_request("ACK", wait);
    assert!(
        ack.msg
            .header("To")
            .is_some_and(|t| t.contains("tag=branchA"))
    );
    carrier.respond(&invite, 200, "OK", "branchB", "");
    let ack_b = carrier.expect_request("ACK", wait);
    assert!(
        ack_b
            .msg
            .header("To")
            .is_some_and(|t| t.contains("tag=branchB")),
        "the second fork's own ACK: {}",
        ack_b.msg.text()
    );
    let bye_b = carrier.expect_request("BYE", wait);
    assert!(
        bye_b
            .msg
            .header("To")
            .is_some_and(|t| t.contains("tag=branchB")),
        "{}",
        bye_b.msg.text()
    );
    carrier.respond(&bye_b, 200, "OK", "", "");
    // The call itself (branch A) is untouched: the platform ends it normally.
    let bye = platform.bye(&mut call);
    assert_eq!(bye.code(), Some(200), "{}", bye.text());
    let bye_a = carrier.expect_request("BYE", wait);
    assert!(
        bye_a
            .msg
            .header("To")
            .is_some_and(|t| t.contains("tag=branchA"))
    );
    carrier.respond(&bye_a, 200, "OK", "", "");
}

/// RFC 4028 on the real edge with sipp on both sides, the case: the carrier asks for a
/// 90 s session timer, the platform answers refresher=uas and then never refreshes. The edge,
/// the UAS of the carrier leg, refreshes it with an UPDATE at half the interval (before, the
/// carrier heard nothing and a real one would hang up at expiry); the platform's leg expires
/// and the edge ends the call on both legs with a Reason. sipp's scenario fails unless the
/// UPDATE and then the BYE come within its waits.
#[test]
fn the_edge_refreshes_the_carrier_leg_and_ends_a_call_the_platform_stopped_refreshing() {
    let lab = Lab::new("dialog_session_timer");
    let platform = Sipp::reserve(PLATFORM);
    config(&lab, platform, None);
    let edge = Edge::start(&lab, EdgeOptions::default());
    let uas = Sipp::uas_at(
        &lab,
        "platform",
        scenario(
            &lab,
            "uas_answer.xml",
            &[("HEADERS", "Session-Expires: 90;refresher=uas")],
        ),
        platform,
    )
    .timeout_secs(90)
    .start();
    let ruri = edge.public_uri(NUMBER);
    let carrier = Sipp::uac(
        &lab,
        "carrier",
        scenario(
            &lab,
            "uac_session_timer.xml",
            &[
                ("RURI", ruri.as_str()),
                ("FROM_USER", CALLER),
                ("SE", "90"),
                ("WAIT_MS", "70000"),
            ],
        ),
        CARRIER,
        edge.public,
    )
    .timeout_secs(90)
    .start()
    .wait();
    carrier.assert_ok();
    uas.wait().assert_ok();
    let update = carrier.request("UPDATE");
    assert!(
        update
            .header("Session-Expires")
            .is_some_and(|v| v.starts_with("90") && v.contains("refresher=uac")),
        "{}",
        update.text()
    );
    let bye = carrier.request("BYE");
    assert!(
        bye.header("Reason")
            .is_some_and(|r| r.contains("session timer expired")),
        "{}",
        bye.text()
    );
    let cdr = edge.wait_cdr("the call", |c| c["callee"] == NUMBER);
    assert_eq!(cdr["endedBy"], "edge", "{cdr}");
}

/// A carrier target's 302 on the real edge: a Contact inside the trunk's own addresses is
/// followed (the call reaches it), and its answer is what the platform gets.
#[test]
fn a_carriers_302_within_the_trunk_is_followed() {
    use trunkgate_tests::ua::Ua;
    let lab = Lab::new("dialog_redirect");
    let mut platform = Ua::bind("platform", PLATFORM, "platform");
    let mut first = Ua::bind("carrier-sbc", CARRIER_TARGET, "sbc");
    // The trunk's allowedCidrs hold 127.0.0.10: a redirect there stays within the trunk.
    let mut moved_to = Ua::bind("carrier-other", CARRIER, "other");
    let trunk = Trunk::new("acme", "pacific", "127.0.0.10/32", platform.local)
        .target(first.local)
        .policy("PassThrough")
        .relay(false);
    lab.write_config("acme-trunk.yaml", &trunk.yaml());
    let edge = Edge::start(&lab, EdgeOptions::default());
    let wait = Duration::from_secs(5);
    let (mut call, tx) = platform.invite(edge.internal, &edge.internal_uri(CALLER), BYOC, "");
    let invite = first.expect_request("INVITE", wait);
    let contact = format!("Contact: <sip:{CALLER}@{}>\r\n", moved_to.local);
    first.respond_with(&invite, 302, "Moved Temporarily", "rd1", &contact, "");
    let followed = moved_to.expect_request("INVITE", wait);
    assert!(
        followed
            .msg
            .uri()
            .is_some_and(|u| u.contains(&moved_to.local.to_string())),
        "{}",
        followed.msg.text()
    );
    moved_to.respond(&followed, 486, "Busy Here", "rd2", "");
    let answer = platform.final_response(&mut call, &tx, wait);
    assert_eq!(answer.code(), Some(486), "{}", answer.text());
}

/// The transfer policy on the real edge: the platform's in-dialog REFER is refused 405 with
/// Allow, the carrier hears nothing of it and the call goes on.
#[test]
fn an_in_dialog_refer_is_refused_405_and_the_call_goes_on() {
    use trunkgate_tests::ua::Ua;
    let lab = Lab::new("dialog_refer");
    let mut platform = Ua::bind("platform", PLATFORM, "platform");
    let trunk = Trunk::new("acme", "pacific", "127.0.0.10/32", platform.local).relay(false);
    lab.write_config("acme-trunk.yaml", &trunk.yaml());
    lab.write_config(
        "acme-numbers.yaml",
        &Numbers::byoc("acme", "numbers", "pacific", &["+6498879300-+6498879399"]).yaml(),
    );
    let edge = Edge::start(&lab, EdgeOptions::default());
    let wait = Duration::from_secs(5);
    let mut carrier = Ua::bind("carrier", CARRIER, CALLER);
    let (mut call, tx) = carrier.invite(edge.public, &edge.public_uri(NUMBER), CALLER, "");
    let invite = platform.expect_request("INVITE", wait);
    let mut platform_call = platform.accept(&invite, "");
    let ok = carrier.final_response(&mut call, &tx, wait);
    assert_eq!(ok.code(), Some(200), "{}", ok.text());
    platform.expect_request("ACK", wait);
    let refer = platform.request(
        &mut platform_call,
        "REFER",
        "Refer-To: <sip:+6421000000@127.0.0.20>\r\nReferred-By: <sip:agent@127.0.0.20>\r\n",
        "",
    );
    let refused = platform.final_response(&mut platform_call, &refer, wait);
    assert_eq!(refused.code(), Some(405), "{}", refused.text());
    assert!(
        refused
            .header("Allow")
            .is_some_and(|a| a.contains("INVITE") && !a.contains("REFER")),
        "{}",
        refused.text()
    );
    assert!(
        carrier
            .gets_request("REFER", Duration::from_millis(300))
            .is_none()
    );
    let bye = carrier.bye(&mut call);
    assert_eq!(
        bye.code(),
        Some(200),
        "the call was still up: {}",
        bye.text()
    );
    platform.answer_bye(wait);
}
