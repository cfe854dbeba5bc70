//! Inbound calls (carrier → edge → platform): the carrier ACL, tenants behind one carrier,
//! E.164 normalisation, number ownership, limits, and what the edge answers itself.

use std::net::SocketAddr;
use std::time::Duration;

use trunkgate_tests::config::documents;
use trunkgate_tests::sip::uri_user;
use trunkgate_tests::sipp::scenario;
use trunkgate_tests::*;

const CALLER: &str = "+6421555123";
const NUMBER: &str = "+6498879333";

/// One trunk `acme/pacific` for the carrier at 127.0.0.10 delivering to `platform`, owning
/// +6498879300-+6498879399.
fn one_trunk(lab: &Lab, platform: SocketAddr, edit: impl FnOnce(Trunk) -> Trunk) -> Trunk {
    let trunk = edit(Trunk::new("acme", "pacific", "127.0.0.10/32", platform));
    lab.write_config(
        "acme.yaml",
        &documents(&[
            trunk.yaml(),
            Numbers::byoc("acme", "numbers", "pacific", &["+6498879300-+6498879399"]).yaml(),
        ]),
    );
    trunk
}

/// The user part of a header's URI, or a panic that shows the message.
fn user(m: &SipMsg, header: &str) -> String {
    m.header(header)
        .and_then(uri_user)
        .unwrap_or_else(|| panic!("no {header} user in:\n{}", m.text()))
}

#[test]
fn inbound_call_from_allowed_carrier_reaches_platform() {
    let lab = Lab::new("inbound_allowed");
    let platform = Sipp::reserve(PLATFORM);
    one_trunk(&lab, platform, |t| t);
    let edge = Edge::start(&lab, EdgeOptions::default());
    let uas = Sipp::answering(&lab, "platform", platform).start();
    let ruri = edge.public_uri(NUMBER);
    let carrier = Sipp::uac(
        &lab,
        "carrier",
        scenario(
            &lab,
            "uac_call.xml",
            &[("RURI", &ruri), ("FROM_USER", CALLER)],
        ),
        CARRIER,
        edge.public,
    )
    .run();
    carrier.assert_ok();
    let uas = uas.wait();
    uas.assert_ok();

    let invite = uas.request("INVITE");
    assert_eq!(
        invite.uri().and_then(uri_user).as_deref(),
        Some(NUMBER),
        "Request-URI in E.164:\n{}",
        invite.text()
    );
    assert_eq!(user(invite, "To"), NUMBER);
    assert_eq!(user(invite, "P-Asserted-Identity"), CALLER);
    assert_eq!(
        invite.header("X-Trunkgate-Trunk"),
        Some("acme/pacific"),
        "{}",
        invite.text()
    );
    assert_eq!(
        invite.header("Content-Type"),
        Some("application/sdp"),
        "the offer reaches the platform"
    );
    assert!(invite.body.contains("m=audio"), "{}", invite.text());
    let hops: Option<u32> = invite.header("Max-Forwards").and_then(|v| v.parse().ok());
    assert!(
        hops.is_some_and(|h| h < 70),
        "Max-Forwards goes down through the edge:\n{}",
        invite.text()
    );
    assert!(
        !uas.requests("BYE").is_empty(),
        "the carrier's BYE reaches the platform"
    );

    let cdr = edge.wait_cdr("the call", |c| c["callee"] == NUMBER);
    assert_eq!(cdr["trunk"], "acme/pacific");
    assert_eq!(cdr["direction"], "inbound");
    assert_eq!(cdr["caller"], CALLER);
    assert_eq!(cdr["finalStatus"], 200);
    assert_eq!(cdr["endedBy"], "carrier");
    assert_eq!(
        edge.metric(
            "trunkgate_edge_calls_total",
            &[
                ("trunk", "acme/pacific"),
                ("direction", "inbound"),
                ("code_class", "2xx")
            ]
        ),
        1.0
    );
}

#[test]
fn inbound_from_denied_source_gets_no_reply_and_is_counted() {
    let lab = Lab::new("inbound_denied");
    let platform = Sipp::reserve(PLATFORM);
    one_trunk(&lab, platform, |t| t);
    let edge = Edge::start(&lab, EdgeOptions::default());
    let uas = Sipp::answering(&lab, "platform", platform)
        .timeout_secs(10)
        .start();
    let drops_before = edge.denied_count();

    let ruri = edge.public_uri(NUMBER);
    let scanner = Sipp::uac(
        &lab,
        "scanner",
        scenario(
            &lab,
            "uac_call.xml",
            &[("RURI", &ruri), ("FROM_USER", CALLER)],
        ),
        DENIED,
        edge.public,
    )
    .timeout_secs(3)
    .run();
    assert!(
        !scanner.ok(),
        "a call from a denied address must fail:\n{}",
        scanner.report()
    );
    assert_eq!(
        scanner.received().count(),
        0,
        "the edge answered a denied address:\n{}",
        scanner.report()
    );
    let invites = scanner
        .sent()
        .filter(|m| m.method() == Some("INVITE"))
        .count();
    assert!(invites >= 1, "{}", scanner.report());

    // Not even OPTIONS (what scanners send first) gets an answer.
    let raw = RawUdp::bind(DENIED);
    raw.send(
        edge.public,
        format!(
            "OPTIONS sip:{} SIP/2.0\r\nVia: SIP/2.0/UDP {};branch=z9hG4bK-scan1\r\nFrom: <sip:scan@{}>;tag=s1\r\nTo: <sip:{}>\r\nCall-ID: scan-1\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
            edge.public, raw.local, raw.local.ip(), edge.public
        )
        .as_bytes(),
    );
    let replies = raw.drain(Duration::from_millis(800));
    assert!(
        replies.is_empty(),
        "the edge answered OPTIONS from a denied address"
    );

    assert_eventually!(
        edge.denied_count() - drops_before >= invites as f64 + 1.0,
        trunkgate_tests::edge::DENIED_COUNT_DELAY,
        "each dropped message is counted, in userspace or by the kernel prefilter ({} INVITEs + 1 OPTIONS)",
        invites
    );
    let uas = uas.stop();
    assert_eq!(
        uas.received().count(),
        0,
        "the platform saw traffic from a denied address:\n{}",
        uas.report()
    );
    assert!(edge.cdrs().is_empty(), "no call was set up");
}

/// Two tenants' trunks accept the same carrier address; `acme` owns +6498879300-399 and
/// delivers to `p1`, `globex` owns +6495550100-199 and delivers to `p2`.
#[test]
fn tenants_behind_one_carrier_address_are_told_apart_by_number() {
    let lab = Lab::new("tenants_by_number");
    let (p1, p2) = (Sipp::reserve(PLATFORM), Sipp::reserve(PLATFORM_2));
    let acme = Trunk::new("acme", "pacific", "127.0.0.10/32", p1);
    let globex = Trunk::new("globex", "pacific", "127.0.0.0/24", p2);
    lab.write_config(
        "tenants.yaml",
        &documents(&[
            acme.yaml(),
            Numbers::byoc("acme", "numbers", "pacific", &["+6498879300-+6498879399"]).yaml(),
            globex.yaml(),
            Numbers::byoc("globex", "numbers", "pacific", &["+6495550100-+6495550199"]).yaml(),
        ]),
    );
    let edge = Edge::start(&lab, EdgeOptions::default());
    let uas1 = Sipp::answering(&lab, "acme-platform", p1).start();
    let uas2 = Sipp::answering(&lab, "globex-platform", p2).start();
    for (n, number) in [NUMBER, "+6495550142"].into_iter().enumerate() {
        let ruri = edge.public_uri(number);
        Sipp::uac(
            &lab,
            &format!("carrier-{n}"),
            scenario(&lab, "uac_call.xml", &[("RURI", &ruri)]),
            CARRIER,
            edge.public,
        )
        .run()
        .assert_ok();
    }
    let (uas1, uas2) = (uas1.wait(), uas2.wait());
    uas1.assert_ok();
    uas2.assert_ok();
    let (i1, i2) = (uas1.request("INVITE"), uas2.request("INVITE"));
    assert_eq!(user(i1, "To"), NUMBER, "acme's platform got acme's number");
    assert_eq!(i1.header("X-Trunkgate-Trunk"), Some("acme/pacific"));
    assert_eq!(
        user(i2, "To"),
        "+6495550142",
        "globex's platform got globex's number"
    );
    assert_eq!(i2.header("X-Trunkgate-Trunk"), Some("globex/pacific"));
    assert_eq!(uas1.requests("INVITE").len(), 1);
    assert_eq!(uas2.requests("INVITE").len(), 1);
}

/// Two tenants share the carrier's address and even a number (a platform number verified on
/// both trunks); only the Request-URI host tells their calls apart.
#[test]
fn tenants_behind_one_carrier_address_are_told_apart_by_hostname() {
    let lab = Lab::new("tenants_by_host");
    let (p1, p2) = (Sipp::reserve(PLATFORM), Sipp::reserve(PLATFORM_2));
    let acme =
        Trunk::new("acme", "pacific", "127.0.0.10/32", p1).hostnames(&["acme.sip.example.net"]);
    let globex =
        Trunk::new("globex", "pacific", "127.0.0.10/32", p2).hostnames(&["globex.sip.example.net"]);
    let shared = ["+6498870000-+6498870049"];
    lab.write_config(
        "tenants.yaml",
        &documents(&[
            acme.yaml(),
            Numbers::platform("acme", "numbers", "pacific", &shared, true).yaml(),
            globex.yaml(),
            Numbers::platform("globex", "numbers", "pacific", &shared, true).yaml(),
        ]),
    );
    let edge = Edge::start(&lab, EdgeOptions::default());
    let uas1 = Sipp::answering(&lab, "acme-platform", p1).start();
    let uas2 = Sipp::answering(&lab, "globex-platform", p2).start();
    for host in ["globex.sip.example.net", "acme.sip.example.net"] {
        let ruri = format!("sip:+6498870001@{host}");
        Sipp::uac(
            &lab,
            &format!("carrier-{host}"),
            scenario(&lab, "uac_call.xml", &[("RURI", &ruri)]),
            CARRIER,
            edge.public,
        )
        .run()
        .assert_ok();
    }
    // A host neither tenant has is refused, saying why.
    let unknown = Sipp::uac(
        &lab,
        "carrier-unknown-host",
        scenario(
            &lab,
            "uac_refused.xml",
            &[
                ("RURI", "sip:+6498870001@initech.sip.example.net"),
                ("CODE", "404"),
            ],
        ),
        CARRIER,
        edge.public,
    )
    .run();
    unknown.assert_ok();
    assert!(unknown.response(404, "INVITE").header("Warning").is_some());

    let (uas1, uas2) = (uas1.wait(), uas2.wait());
    uas1.assert_ok();
    uas2.assert_ok();
    assert_eq!(
        uas1.request("INVITE").header("X-Trunkgate-Trunk"),
        Some("acme/pacific")
    );
    assert_eq!(
        uas2.request("INVITE").header("X-Trunkgate-Trunk"),
        Some("globex/pacific")
    );
    assert_eq!(uas1.requests("INVITE").len(), 1, "{}", uas1.report());
    assert_eq!(uas2.requests("INVITE").len(), 1, "{}", uas2.report());
}

#[test]
fn national_and_international_numbers_are_normalised_to_e164() {
    let lab = Lab::new("normalise");
    let platform = Sipp::reserve(PLATFORM);
    one_trunk(&lab, platform, |t| t);
    let edge = Edge::start(&lab, EdgeOptions::default());
    let uas = Sipp::answering(&lab, "platform", platform).calls(2).start();

    // National format both ways: 09 8879333 from 021 555123.
    let ruri = edge.public_uri("098879333");
    Sipp::uac(
        &lab,
        "carrier-national",
        scenario(
            &lab,
            "uac_call.xml",
            &[("RURI", &ruri), ("FROM_USER", "021555123")],
        ),
        CARRIER,
        edge.public,
    )
    .run()
    .assert_ok();
    // International prefix 00, and the caller in P-Asserted-Identity (it wins over From).
    let ruri = edge.public_uri("006498879334");
    Sipp::uac(
        &lab,
        "carrier-international",
        scenario(
            &lab,
            "uac_call.xml",
            &[
                ("RURI", &ruri),
                ("FROM_USER", "021555123"),
                (
                    "HEADERS",
                    "P-Asserted-Identity: <sip:0061290001000@carrier.example>",
                ),
            ],
        ),
        CARRIER,
        edge.public,
    )
    .run()
    .assert_ok();

    let uas = uas.wait();
    uas.assert_ok();
    let invites = uas.requests("INVITE");
    assert_eq!(invites.len(), 2, "{}", uas.report());
    let national = invites[0];
    assert_eq!(
        national.uri().and_then(uri_user).as_deref(),
        Some("+6498879333"),
        "{}",
        national.text()
    );
    assert_eq!(user(national, "To"), "+6498879333");
    assert_eq!(user(national, "P-Asserted-Identity"), "+6421555123");
    assert_eq!(user(national, "From"), "+6421555123");
    let international = invites[1];
    assert_eq!(
        international.uri().and_then(uri_user).as_deref(),
        Some("+6498879334"),
        "{}",
        international.text()
    );
    assert_eq!(user(international, "To"), "+6498879334");
    assert_eq!(user(international, "P-Asserted-Identity"), "+61290001000");

    let cdr = edge.wait_cdr("the national call", |c| c["callee"] == "+6498879333");
    assert_eq!(cdr["caller"], "+6421555123");
    let cdr = edge.wait_cdr("the international call", |c| c["callee"] == "+6498879334");
    assert_eq!(cdr["caller"], "+61290001000");
}

#[test]
fn number_that_cannot_be_normalised_gets_484() {
    let lab = Lab::new("not_normalisable");
    let platform = Sipp::reserve(PLATFORM);
    one_trunk(&lab, platform, |t| t);
    let edge = Edge::start(&lab, EdgeOptions::default());
    let ruri = edge.public_uri("98x79333");
    let carrier = Sipp::uac(
        &lab,
        "carrier",
        scenario(&lab, "uac_refused.xml", &[("RURI", &ruri), ("CODE", "484")]),
        CARRIER,
        edge.public,
    )
    .run();
    carrier.assert_ok();
    assert!(carrier.response(484, "INVITE").header("Warning").is_some());
    assert_eq!(
        edge.metric(
            "trunkgate_edge_refusals_total",
            &[("trunk", "acme/pacific"), ("reason", "number_format")]
        ),
        1.0
    );
}

#[test]
fn unknown_number_gets_404_with_warning() {
    let lab = Lab::new("unknown_number");
    let platform = Sipp::reserve(PLATFORM);
    one_trunk(&lab, platform, |t| t);
    // The detail is for labs; by default carriers get less (tests/attacks.rs).
    let edge = Edge::start(
        &lab,
        EdgeOptions {
            extra_args: vec!["--detailed-warnings".into()],
            ..EdgeOptions::default()
        },
    );
    let ruri = edge.public_uri("+6498000001");
    let carrier = Sipp::uac(
        &lab,
        "carrier",
        scenario(&lab, "uac_refused.xml", &[("RURI", &ruri), ("CODE", "404")]),
        CARRIER,
        edge.public,
    )
    .run();
    carrier.assert_ok();
    let resp = carrier.response(404, "INVITE");
    let warning = resp.header("Warning").unwrap_or_else(|| {
        panic!("404 without Warning:\n{}", resp.text());
    });
    assert!(
        warning.starts_with("399 ") && warning.contains("+6498000001"),
        "the Warning names the number for the carrier's NOC: {warning}"
    );
    assert_eq!(
        edge.metric(
            "trunkgate_edge_refusals_total",
            &[
                ("trunk", "acme/pacific"),
                ("direction", "inbound"),
                ("reason", "number_not_owned")
            ]
        ),
        1.0
    );
}

#[test]
fn max_forwards_zero_gets_483() {
    let lab = Lab::new("max_forwards");
    let platform = Sipp::reserve(PLATFORM);
    one_trunk(&lab, platform, |t| t);
    let edge = Edge::start(&lab, EdgeOptions::default());
    let ruri = edge.public_uri(NUMBER);
    let carrier = Sipp::uac(
        &lab,
        "carrier",
        scenario(
            &lab,
            "uac_refused.xml",
            &[("RURI", &ruri), ("CODE", "483"), ("MAX_FORWARDS", "0")],
        ),
        CARRIER,
        edge.public,
    )
    .run();
    carrier.assert_ok();
    assert!(carrier.response(483, "INVITE").header("Warning").is_some());
}

#[test]
fn options_to_the_edge_get_200_on_both_sides() {
    let lab = Lab::new("options");
    let platform = Sipp::reserve(PLATFORM);
    one_trunk(&lab, platform, |t| t);
    let edge = Edge::start(&lab, EdgeOptions::default());
    let uri = format!("sip:{}", edge.public);
    let carrier = Sipp::uac(
        &lab,
        "carrier",
        scenario(&lab, "uac_options.xml", &[("RURI", &uri)]),
        CARRIER,
        edge.public,
    )
    .run();
    carrier.assert_ok();
    let ok = carrier.response(200, "OPTIONS");
    let allow = ok.header("Allow").unwrap_or_default();
    assert!(
        allow.contains("INVITE") && allow.contains("BYE"),
        "200 for OPTIONS lists the methods: {}",
        ok.text()
    );
    let uri = format!("sip:{}", edge.internal);
    Sipp::uac(
        &lab,
        "platform",
        scenario(&lab, "uac_options.xml", &[("RURI", &uri)]),
        PLATFORM,
        edge.internal,
    )
    .run()
    .assert_ok();
    assert_eq!(
        edge.metric("trunkgate_edge_options_answered_total", &[]),
        2.0
    );
}

#[test]
fn concurrent_call_limit_gives_503_with_retry_after() {
    let lab = Lab::new("limit_concurrent");
    let platform = Sipp::reserve(PLATFORM);
    one_trunk(&lab, platform, |t| t.max_concurrent_calls(1));
    let edge = Edge::start(&lab, EdgeOptions::default());
    let uas = Sipp::answering(&lab, "platform", platform).calls(2).start();
    let ruri = edge.public_uri(NUMBER);
    let first = Sipp::uac(
        &lab,
        "carrier-first",
        scenario(
            &lab,
            "uac_call.xml",
            &[("RURI", &ruri), ("HOLD_MS", "2500")],
        ),
        CARRIER,
        edge.public,
    )
    .start();
    assert_eventually!(
        uas.has_received("ACK"),
        Duration::from_secs(5),
        "the first call is up"
    );
    let second = Sipp::uac(
        &lab,
        "carrier-second",
        scenario(&lab, "uac_refused.xml", &[("RURI", &ruri), ("CODE", "503")]),
        CARRIER,
        edge.public,
    )
    .run();
    second.assert_ok();
    let refusal = second.response(503, "INVITE");
    assert!(
        refusal.header("Retry-After").is_some(),
        "503 over the limit carries Retry-After:\n{}",
        refusal.text()
    );
    assert!(refusal.header("Warning").is_some(), "{}", refusal.text());
    first.wait().assert_ok();
    assert_eq!(
        edge.metric(
            "trunkgate_edge_refusals_total",
            &[
                ("trunk", "acme/pacific"),
                ("reason", "max_concurrent_calls")
            ]
        ),
        1.0
    );
    // The ended call gave its place back.
    Sipp::uac(
        &lab,
        "carrier-third",
        scenario(&lab, "uac_call.xml", &[("RURI", &ruri)]),
        CARRIER,
        edge.public,
    )
    .run()
    .assert_ok();
    uas.wait().assert_ok();
}
