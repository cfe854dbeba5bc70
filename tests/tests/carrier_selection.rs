//! Dynamic carrier selection (platform → edge → carrier): a tenant with two carriers reaching
//! the same prefix, one cheaper. `LeastCost` sends calls to the cheaper one and fails over to
//! the other; a BYOC caller ID still leaves only through its own carrier; a carrier whose
//! calls go bad is demoted and gets calls back once it recovers; and an edge that never called
//! the bad carrier learns it from another edge through the fleet's store. Real edge binaries,
//! sipp carriers, a real `redis-server`, loopback only.

use std::net::SocketAddr;
use std::time::Duration;

use trunkgate_tests::config::documents;
use trunkgate_tests::redis::Redis;
use trunkgate_tests::sip::uri_user;
use trunkgate_tests::sipp::{SippBuilder, scenario};
use trunkgate_tests::*;

const CALLEE: &str = "+6421555123";
/// BYOC numbers of the dearer carrier.
const BYOC: &str = "+6498879301";
/// A platform number both carriers verified.
const VERIFIED: &str = "+6498870001";

/// The tenant `lab`: `cheap` (0.01 NZD/min for +64) and `dear` (0.02), both selecting by
/// `LeastCost`, with `quality` thresholds when given; `dear` owns the BYOC numbers; both
/// verified the platform numbers. Returns the two carriers' target addresses (cheap, dear).
fn two_carriers(lab: &Lab, quality: Option<&str>) -> (SocketAddr, SocketAddr) {
    let (cheap_at, dear_at) = (
        Sipp::reserve(CARRIER_TARGET),
        Sipp::reserve(CARRIER_TARGET_2),
    );
    let platform = SocketAddr::from(([127, 0, 0, 20], 5999));
    let carrier = |name: &str, cidr: &str, at: SocketAddr, price: &str| {
        let mut t = Trunk::new("lab", name, cidr, platform)
            .target(at)
            .rate("+64", price, "NZD", "60/60")
            .selection("LeastCost");
        if let Some(q) = quality {
            t = t.quality(q);
        }
        t.yaml()
    };
    let docs = [
        carrier("cheap", "127.0.0.10/32", cheap_at, "0.01"),
        carrier("dear", "127.0.0.11/32", dear_at, "0.02"),
        Numbers::byoc("lab", "byoc", "dear", &["+6498879300-+6498879399"]).yaml(),
        Numbers::platform(
            "lab",
            "verified-cheap",
            "cheap",
            &["+6498870000-+6498870049"],
            true,
        )
        .yaml(),
        Numbers::platform(
            "lab",
            "verified-dear",
            "dear",
            &["+6498870000-+6498870049"],
            true,
        )
        .yaml(),
    ];
    lab.write_config("lab.yaml", &documents(&docs));
    (cheap_at, dear_at)
}

/// `calls` calls from the platform to `CALLEE` presenting `caller`, one at a time (each knows
/// what the ones before it did).
fn platform_calls(lab: &Lab, edge: &Edge, name: &str, caller: &str, calls: u32) -> SippRun {
    let ruri = edge.internal_uri(CALLEE);
    Sipp::uac(
        lab,
        name,
        scenario(
            lab,
            "uac_call.xml",
            &[("RURI", &ruri), ("FROM_USER", caller)],
        ),
        PLATFORM,
        edge.internal,
    )
    .calls(calls)
    .args(&["-l", "1"])
    .timeout_secs(40)
    .run()
}

/// A carrier target that refuses `calls` INVITEs with 503.
fn refusing<'l>(lab: &'l Lab, name: &str, at: SocketAddr, calls: u32) -> SippBuilder<'l> {
    Sipp::uas_at(
        lab,
        name,
        scenario(
            lab,
            "uas_reject.xml",
            &[("CODE", "503"), ("REASON", "Service Unavailable")],
        ),
        at,
    )
    .calls(calls)
    .timeout_secs(40)
}

fn edge_with(lab: &Lab, name: &str, args: Vec<String>) -> Edge {
    Edge::start_named(
        lab,
        name,
        EdgeOptions {
            failover_seconds: 1.0,
            extra_args: args,
            ..EdgeOptions::default()
        },
    )
}

/// `LeastCost`: calls whose caller ID does not pin a carrier, and calls from a platform number
/// both carriers verified, go to the cheaper carrier; a BYOC caller ID goes only to the carrier
/// that owns it, though it costs more. Each record says which policy chose the carrier, and
/// its rate.
#[test]
fn least_cost_sends_calls_to_the_cheaper_carrier_but_a_byoc_caller_id_to_its_own() {
    let lab = Lab::new("selection_least_cost");
    let (cheap_at, dear_at) = two_carriers(&lab, None);
    let edge = edge_with(&lab, "edge", Vec::new());
    let cheap = Sipp::answering(&lab, "cheap", cheap_at)
        .calls(3)
        .timeout_secs(40)
        .start();
    let dear = Sipp::answering(&lab, "dear", dear_at)
        .calls(1)
        .timeout_secs(40)
        .start();
    platform_calls(&lab, &edge, "anonymous", "anonymous", 2).assert_ok();
    platform_calls(&lab, &edge, "verified", VERIFIED, 1).assert_ok();
    platform_calls(&lab, &edge, "byoc", BYOC, 1).assert_ok();
    let cheap = cheap.wait();
    cheap.assert_ok();
    let dear = dear.wait();
    dear.assert_ok();
    assert_eq!(cheap.requests("INVITE").len(), 3);
    let byoc = dear.request("INVITE");
    assert_eq!(
        byoc.header("P-Asserted-Identity")
            .and_then(uri_user)
            .as_deref(),
        Some(BYOC),
        "{}",
        byoc.text()
    );
    let verified = cheap.requests("INVITE").into_iter().find(|i| {
        i.header("P-Asserted-Identity")
            .and_then(uri_user)
            .as_deref()
            == Some(VERIFIED)
    });
    assert!(
        verified.is_some(),
        "the verified number presented by the cheaper carrier"
    );
    let cdr = edge.wait_cdr("the verified caller's call", |c| c["caller"] == VERIFIED);
    let attempts = cdr["attempts"].as_array().expect("attempts");
    assert_eq!(attempts.len(), 1, "{cdr}");
    assert_eq!(attempts[0]["trunk"], "lab/cheap");
    assert_eq!(attempts[0]["chosenBy"], "leastCost");
    assert_eq!(attempts[0]["rate"], "0.01 NZD/min 60/60");
    let byoc = edge.wait_cdr("the BYOC call", |c| c["caller"] == BYOC);
    assert_eq!(byoc["attempts"][0]["trunk"], "lab/dear");
}

/// The cheaper carrier starts refusing every call 503: each call fails over to the other
/// carrier, and once its window holds `minSamples` attempts it is demoted, so new calls go to
/// the other carrier first; half of them (`probePercent: 50`) still try it first, and when it
/// answers again its figures recover and it gets the calls back.
#[test]
fn a_cheaper_carrier_that_turns_bad_is_passed_over_then_gets_calls_back_when_it_recovers() {
    let lab = Lab::new("selection_demotion");
    let (cheap_at, dear_at) = two_carriers(
        &lab,
        Some("{minSamples: 3, critical: {maxFailurePercent: 50}, probePercent: 50}"),
    );
    let edge = edge_with(&lab, "edge", Vec::new());
    let dear = Sipp::answering(&lab, "dear", dear_at)
        .calls(5)
        .timeout_secs(60)
        .start();
    // Turned bad: three calls, each refused by it and carried by the other.
    let bad = refusing(&lab, "cheap-bad", cheap_at, 3).start();
    platform_calls(&lab, &edge, "while-bad", "anonymous", 3).assert_ok();
    bad.wait().assert_ok();
    let cheap_target = format!("sip:{cheap_at}");
    let demoted = || {
        edge.metric(
            "trunkgate_edge_target_demoted",
            &[("trunk", "lab/cheap"), ("target", &cheap_target)],
        )
    };
    assert_eq!(
        demoted(),
        2.0,
        "demoted after three failures in three attempts"
    );
    // What the operator reads into CarrierTrunk.status.quality.
    let (code, body) = edge.get("/snapshot").expect("/snapshot answers");
    assert_eq!(code, 200);
    let snap: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let q = &snap["quality"]["lab/cheap"];
    assert_eq!(q["counts"][0], 3, "three attempts: {q}");
    assert_eq!(q["counts"][3], 3, "three failed: {q}");
    assert_eq!(q["demoted"], 1, "{q}");
    assert_eq!(
        snap["quality"]["lab/dear"]["counts"][1], 3,
        "three answered"
    );
    // Recovered: the probing share tries it first (calls 4, 6, 8), and after three answers
    // (3 failed of 6: no longer above 50 %) it is the cheaper carrier again (call 9).
    let good = Sipp::answering(&lab, "cheap-good", cheap_at)
        .calls(4)
        .timeout_secs(60)
        .start();
    platform_calls(&lab, &edge, "recovering", "anonymous", 6).assert_ok();
    let good = good.wait();
    good.assert_ok();
    let dear = dear.wait();
    dear.assert_ok();
    assert_eq!(good.requests("INVITE").len(), 4);
    assert_eq!(
        dear.requests("INVITE").len(),
        5,
        "3 failovers, then the 2 calls that did not probe"
    );
    assert_eq!(demoted(), 0.0, "back in its place");
    let firsts: Vec<String> = edge
        .cdrs()
        .iter()
        .filter_map(|c| c["attempts"][0]["trunk"].as_str().map(str::to_string))
        .collect();
    assert_eq!(
        firsts,
        [
            "lab/cheap",
            "lab/cheap",
            "lab/cheap",
            "lab/cheap",
            "lab/dear",
            "lab/cheap",
            "lab/dear",
            "lab/cheap",
            "lab/cheap"
        ],
        "the carrier each call tried first"
    );
    assert_eq!(
        edge.metric(
            "trunkgate_edge_failovers_total",
            &[("trunk", "lab/cheap"), ("cause", "5xx")]
        ),
        3.0
    );
}

/// The cheaper carrier answers every call, but only after a long post-dial delay (1.5 s before
/// its 180): once its window holds `minSamples` attempts its mean PDD misses the `warning`
/// threshold of 1 s, and the next calls go to the other carrier first, though it costs more.
#[test]
fn a_cheaper_carrier_with_a_long_post_dial_delay_is_passed_over() {
    let lab = Lab::new("selection_pdd");
    let (cheap_at, dear_at) = two_carriers(
        &lab,
        Some("{minSamples: 3, warning: {maxPddSeconds: 1}, probePercent: 0}"),
    );
    // Failover waits 4 s for any answer: the slow carrier is not left for its silence.
    let edge = Edge::start_named(
        &lab,
        "edge",
        EdgeOptions {
            failover_seconds: 4.0,
            ..EdgeOptions::default()
        },
    );
    let slow = Sipp::uas_at(
        &lab,
        "cheap-slow",
        scenario(&lab, "uas_answer.xml", &[("PDD_MS", "1500")]),
        cheap_at,
    )
    .calls(3)
    .timeout_secs(60)
    .start();
    let dear = Sipp::answering(&lab, "dear", dear_at)
        .calls(2)
        .timeout_secs(60)
        .start();
    platform_calls(&lab, &edge, "calls", "anonymous", 5).assert_ok();
    let slow = slow.wait();
    slow.assert_ok();
    dear.wait().assert_ok();
    let calls: std::collections::HashSet<&str> = slow
        .requests("INVITE")
        .into_iter()
        .filter_map(|i| i.header("Call-ID"))
        .collect();
    assert_eq!(
        calls.len(),
        3,
        "three calls (their INVITEs sent again while it waits)"
    );
    let cdrs = edge.cdrs();
    let firsts: Vec<(String, u64)> = cdrs
        .iter()
        .filter_map(|c| {
            let a = &c["attempts"][0];
            Some((a["trunk"].as_str()?.to_string(), a["pddMs"].as_u64()?))
        })
        .collect();
    assert_eq!(firsts.len(), 5, "{cdrs:?}");
    for (trunk, pdd) in &firsts[..3] {
        assert_eq!(trunk, "lab/cheap");
        assert!(*pdd >= 1500, "post-dial delay {pdd} ms");
    }
    for (trunk, _) in &firsts[3..] {
        assert_eq!(trunk, "lab/dear", "{firsts:?}");
    }
    assert_eq!(
        edge.metric(
            "trunkgate_edge_target_demoted",
            &[
                ("trunk", "lab/cheap"),
                ("target", &format!("sip:{cheap_at}"))
            ]
        ),
        1.0,
        "below warning"
    );
    assert!(
        edge.metric(
            "trunkgate_edge_target_pdd_seconds",
            &[("trunk", "lab/cheap")]
        ) >= 1.5
    );
}

/// Two edges share a store: the calls that show the cheaper carrier failing all go through the
/// first edge, and the second edge, which never called it, demotes it too and sends its call to
/// the other carrier first.
#[test]
fn an_edge_that_never_called_a_bad_carrier_learns_it_from_the_fleet() {
    let lab = Lab::new("selection_fleet");
    let redis = Redis::start(&lab);
    let (cheap_at, dear_at) = two_carriers(
        &lab,
        Some("{minSamples: 3, critical: {maxFailurePercent: 50}, probePercent: 0}"),
    );
    let fleet_args = |name: &str| -> Vec<String> {
        let rtp = free_ports(64);
        vec![
            "--state-store".into(),
            redis.url(),
            "--state-lease-seconds".into(),
            "3".into(),
            "--state-identity".into(),
            name.into(),
            "--rtp-ports".into(),
            format!("{rtp}-{}", rtp + 63),
        ]
    };
    let a = edge_with(&lab, "edge-a", fleet_args("edge-a"));
    let b = edge_with(&lab, "edge-b", fleet_args("edge-b"));
    let dear = Sipp::answering(&lab, "dear", dear_at)
        .calls(4)
        .timeout_secs(60)
        .start();
    let bad = refusing(&lab, "cheap-bad", cheap_at, 3).start();
    platform_calls(&lab, &a, "through-a", "anonymous", 3).assert_ok();
    bad.wait().assert_ok();
    let cheap_target = format!("sip:{cheap_at}");
    let demoted_on_b = eventually(Duration::from_secs(15), || {
        let v = b.metric(
            "trunkgate_edge_target_demoted",
            &[("trunk", "lab/cheap"), ("target", &cheap_target)],
        );
        (v == 2.0).then_some(())
    });
    assert!(
        demoted_on_b.is_some(),
        "edge-b demotes the carrier from the fleet's figures"
    );
    assert!(
        redis
            .cli(&[
                "EXISTS",
                &format!("trunkgate:quality:lab/cheap {cheap_target}")
            ])
            .is_some_and(|n| n.trim() == "1"),
        "the window lives in the store"
    );
    // Nothing listens at the cheap carrier now: a call tried there first would wait
    // --failover-seconds and show it in the record.
    platform_calls(&lab, &b, "through-b", "anonymous", 1).assert_ok();
    dear.wait().assert_ok();
    let cdr = b.wait_cdr("edge-b's call", |c| c["finalStatus"] == 200);
    let attempts = cdr["attempts"].as_array().expect("attempts");
    assert_eq!(attempts.len(), 1, "straight to the other carrier: {cdr}");
    assert_eq!(attempts[0]["trunk"], "lab/dear");
    assert_eq!(
        b.metric("trunkgate_edge_failovers_total", &[("trunk", "lab/cheap")]),
        0.0
    );
}
