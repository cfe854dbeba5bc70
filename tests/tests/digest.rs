//! Digest authentication of carriers on top of the address check (RFC 3261 §22, RFC 8760).
//!
//! The carrier here is a raw UDP socket, so that a test can answer exactly as it likes (a
//! replay, a forged nonce, an algorithm the trunk does not offer). The edge offers the trunk's
//! `inbound.auth.algorithms` (default MD5 only; `[SHA-256, MD5]` sends two challenges, SHA-256
//! first as RFC 8760 §2.4 orders them). The MD5 answers are computed here, independently of the
//! edge's digest code. Real peers answering the challenge (sipp, Kamailio) are in interop tests.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use trunkgate_tests::config::documents;
use trunkgate_tests::sip::{RawInvite, digest_md5_authorization, digest_params};
use trunkgate_tests::*;

const REALM: &str = "sip.example.net";
const USER: &str = "pacific-telco";
const PASSWORD: &str = "change-me-inbound";
const NUMBER: &str = "+6498879333";
const WAIT: Duration = Duration::from_secs(5);

fn config(lab: &Lab, platform: SocketAddr) {
    config_with(lab, platform, &[]);
}

/// The trunk with `inbound.auth.algorithms` (empty: the default).
fn config_with(lab: &Lab, platform: SocketAddr, algorithms: &[&str]) {
    config_range(lab, platform, algorithms, "127.0.0.10/32");
}

/// The same, the carrier's `allowedCidrs` being `cidr`.
fn config_range(lab: &Lab, platform: SocketAddr, algorithms: &[&str], cidr: &str) {
    let trunk = Trunk::new("acme", "pacific", cidr, platform)
        .inbound_auth(REALM, "pacific-inbound")
        .digest_algorithms(algorithms);
    lab.write_config(
        "acme.yaml",
        &documents(&[
            trunk.yaml(),
            secret("acme", "pacific-inbound", USER, PASSWORD),
            Numbers::byoc("acme", "numbers", "pacific", &["+6498879300-+6498879399"]).yaml(),
        ]),
    );
}

/// Sends `inv` without credentials, expects 401, ACKs it and returns the MD5 challenge's
/// parameters (and the whole 401).
fn challenge(edge: &Edge, sock: &RawUdp, inv: &RawInvite) -> (HashMap<String, String>, SipMsg) {
    sock.send(edge.public, &inv.invite(sock.local));
    let resp = sock
        .recv_final("INVITE", WAIT)
        .expect("an answer to an INVITE without credentials");
    assert_eq!(resp.code(), Some(401), "{}", resp.text());
    sock.send(edge.public, &inv.ack_non_2xx(sock.local, &resp));
    let md5 = resp
        .header_all("WWW-Authenticate")
        .into_iter()
        .map(digest_params)
        .find(|p| {
            p.get("algorithm")
                .is_none_or(|a| a.eq_ignore_ascii_case("MD5"))
        })
        .unwrap_or_else(|| panic!("no MD5 challenge (RFC 8760 §2 keeps MD5):\n{}", resp.text()));
    (md5, resp)
}

/// `inv` again (next CSeq, new branch) with an `Authorization` line.
fn with_credentials(inv: &RawInvite, password: &str, nonce: &str) -> RawInvite {
    let mut next = inv.next();
    next.extra = format!(
        "Authorization: {}\r\n",
        digest_md5_authorization(USER, REALM, password, &inv.ruri, nonce)
    );
    next
}

/// One call from `sock`: challenged, then sent again with `password`'s answer; the final
/// answer (the call is ACKed and hung up when it is 200).
fn attempt(edge: &Edge, sock: &RawUdp, label: &str, password: &str) -> SipMsg {
    let inv = RawInvite::new(&edge.public_uri(NUMBER), "+6421555123", label);
    let (md5, _) = challenge(edge, sock, &inv);
    let authed = with_credentials(&inv, password, &md5["nonce"]);
    sock.send(edge.public, &authed.invite(sock.local));
    let resp = sock.recv_final("INVITE", WAIT).expect("an answer");
    if resp.code() == Some(200) {
        let ack = authed.in_dialog("ACK", authed.cseq, sock.local, &resp);
        sock.send(edge.public, &ack);
        let bye = authed.in_dialog("BYE", authed.cseq + 1, sock.local, &resp);
        sock.send(edge.public, &bye);
    } else {
        sock.send(edge.public, &authed.ack_non_2xx(sock.local, &resp));
    }
    resp
}

fn auth_failures(edge: &Edge, reason: &str) -> f64 {
    edge.metric(
        "trunkgate_edge_auth_failures_total",
        &[("trunk", "acme/pacific"), ("reason", reason)],
    )
}

#[test]
fn digest_right_credentials_pass_and_cannot_be_replayed() {
    let lab = Lab::new("digest_good");
    let platform = Sipp::reserve(PLATFORM);
    config(&lab, platform);
    let edge = Edge::start(&lab, EdgeOptions::default());
    let uas = Sipp::answering(&lab, "platform", platform).start();
    let sock = RawUdp::bind(CARRIER);
    let inv = RawInvite::new(&edge.public_uri(NUMBER), "+6421555123", "digest-good");

    let (md5, resp) = challenge(&edge, &sock, &inv);
    assert_eq!(
        md5.get("realm").map(String::as_str),
        Some(REALM),
        "{}",
        resp.text()
    );
    assert!(
        md5.get("qop")
            .is_some_and(|q| q.split(',').any(|q| q.trim() == "auth")),
        "qop=auth offered: {md5:?}"
    );
    let nonce = md5["nonce"].clone();
    let authed = with_credentials(&inv, PASSWORD, &nonce);
    sock.send(edge.public, &authed.invite(sock.local));
    let answer = sock
        .recv_final("INVITE", WAIT)
        .expect("a final answer to the authenticated INVITE");
    assert_eq!(answer.code(), Some(200), "{}", answer.text());
    sock.send(
        edge.public,
        &authed.in_dialog("ACK", authed.cseq, sock.local, &answer),
    );
    sock.send(
        edge.public,
        &authed.in_dialog("BYE", authed.cseq + 1, sock.local, &answer),
    );
    let bye = sock.recv_final("BYE", WAIT).expect("an answer to BYE");
    assert_eq!(bye.code(), Some(200), "{}", bye.text());
    let uas = uas.wait();
    uas.assert_ok();
    assert_eq!(
        uas.request("INVITE").header("X-Trunkgate-Trunk"),
        Some("acme/pacific")
    );
    assert!(
        uas.request("INVITE").header("Authorization").is_none(),
        "the carrier's credentials do not reach the platform"
    );

    // The same credentials again on a new call: a replay (RFC 7616 §3.4: a nonce count seen
    // before), refused with a new challenge or 403, never let through.
    let mut replay = RawInvite::new(&edge.public_uri(NUMBER), "+6421555123", "digest-replay");
    replay.extra = authed.extra.clone();
    sock.send(edge.public, &replay.invite(sock.local));
    let refused = sock
        .recv_final("INVITE", WAIT)
        .expect("an answer to the replayed INVITE");
    assert!(
        matches!(refused.code(), Some(401 | 403)),
        "replayed credentials must not be accepted:\n{}",
        refused.text()
    );
    sock.send(edge.public, &replay.ack_non_2xx(sock.local, &refused));
    for reason in [
        "unknown_user",
        "bad_response",
        "wrong_realm",
        "stale",
        "bad_nonce",
    ] {
        assert_eq!(
            auth_failures(&edge, reason),
            0.0,
            "no {reason} failure counted"
        );
    }
}

#[test]
fn digest_wrong_password_gets_403_and_is_counted() {
    let lab = Lab::new("digest_bad");
    let platform = Sipp::reserve(PLATFORM);
    config(&lab, platform);
    let edge = Edge::start(&lab, EdgeOptions::default());
    let sock = RawUdp::bind(CARRIER);
    let inv = RawInvite::new(&edge.public_uri(NUMBER), "+6421555123", "digest-bad");
    let (md5, _) = challenge(&edge, &sock, &inv);
    let wrong = with_credentials(&inv, "not-the-password", &md5["nonce"]);
    sock.send(edge.public, &wrong.invite(sock.local));
    let resp = sock
        .recv_final("INVITE", WAIT)
        .expect("an answer to wrong credentials");
    assert_eq!(resp.code(), Some(403), "{}", resp.text());
    assert!(resp.header("Warning").is_some(), "{}", resp.text());
    sock.send(edge.public, &wrong.ack_non_2xx(sock.local, &resp));
    assert_eq!(auth_failures(&edge, "bad_response"), 1.0);
    assert!(edge.cdrs().is_empty(), "no call was set up");
}

/// Guessing is slow and then futile: after --auth-max-failures wrong answers the guessing
/// address is blocked, and the right password is refused from it too until the block ends. Only
/// that address pays: the guesser here sits beside the carrier in the trunk's allowed range
/// (before the fix the trunk's username was blocked too, and the carrier's own right-password
/// calls were refused for the whole block: 20 of 20 in the attack report).
#[test]
fn digest_guessing_is_blocked_and_the_right_password_is_refused_during_the_block() {
    let lab = Lab::new("digest_lockout");
    let platform = Sipp::reserve(PLATFORM);
    config_range(&lab, platform, &[], "127.0.0.8/29");
    let edge = Edge::start(
        &lab,
        EdgeOptions::with_args(&["--auth-max-failures", "3", "--auth-block-seconds", "60"]),
    );
    let _uas = Sipp::answering(&lab, "platform", platform).calls(5).start();
    let neighbour: std::net::IpAddr = [127, 0, 0, 13].into();
    let sock = RawUdp::bind(neighbour);
    for i in 0..3 {
        let resp = attempt(&edge, &sock, &format!("guess-{i}"), &format!("guess-{i}"));
        assert_eq!(resp.code(), Some(403), "{}", resp.text());
    }
    assert_eq!(
        edge.metric("trunkgate_edge_auth_blocks_total", &[("scope", "source")]),
        1.0
    );
    let right = attempt(&edge, &sock, "right-during-block", PASSWORD);
    assert_eq!(right.code(), Some(403), "{}", right.text());
    assert!(
        right
            .header("Warning")
            .is_some_and(|w| !w.contains("later")),
        "the carrier is not told it is blocked (an attacker would learn when to resume):\n{}",
        right.text()
    );
    assert_eq!(auth_failures(&edge, "blocked"), 1.0);
    assert!(
        edge.log_tail(100)
            .contains("blocked after repeated authentication failures"),
        "one log line per block"
    );
    assert!(
        edge.cdrs().is_empty(),
        "no call got through from the guesser"
    );
    // The carrier's own SBC, which never failed, calls with the right password meanwhile.
    let carrier = RawUdp::bind(CARRIER);
    for i in 0..5 {
        let ok = attempt(&edge, &carrier, &format!("carrier-{i}"), PASSWORD);
        assert_eq!(ok.code(), Some(200), "call {i}: {}", ok.text());
    }
}

/// The algorithms each 401 offers, in order.
fn offered(edge: &Edge, sock: &RawUdp, call: &str) -> Vec<String> {
    let inv = RawInvite::new(&edge.public_uri(NUMBER), "+6421555123", call);
    let (_, resp) = challenge(edge, sock, &inv);
    resp.header_all("WWW-Authenticate")
        .into_iter()
        .map(digest_params)
        .map(|p| p.get("algorithm").cloned().unwrap_or_else(|| "MD5".into()))
        .collect()
}

#[test]
fn digest_challenges_follow_the_trunks_algorithms() {
    let lab = Lab::new("digest_algorithms");
    let platform = Sipp::reserve(PLATFORM);
    // Default: MD5 alone, the one every carrier UA answers (sipp, Kamailio uac_auth, baresip).
    config(&lab, platform);
    let edge = Edge::start(&lab, EdgeOptions::default());
    let sock = RawUdp::bind(CARRIER);
    assert_eq!(offered(&edge, &sock, "alg-default"), ["MD5"]);
    // Opt-in: both, SHA-256 first (RFC 8760 §2.4: most preferred first), one header each.
    let before = edge.snapshot_version();
    config_with(&lab, platform, &["SHA-256", "MD5"]);
    assert_eventually!(
        edge.snapshot_version() != before,
        Duration::from_secs(5),
        "the edge loads the changed trunk"
    );
    assert_eq!(offered(&edge, &sock, "alg-both"), ["SHA-256", "MD5"]);
}

#[test]
fn digest_answer_in_an_algorithm_the_trunk_does_not_offer_is_refused() {
    let lab = Lab::new("digest_downgrade");
    let platform = Sipp::reserve(PLATFORM);
    config_with(&lab, platform, &["SHA-256"]);
    let edge = Edge::start(&lab, EdgeOptions::default());
    let sock = RawUdp::bind(CARRIER);
    let inv = RawInvite::new(&edge.public_uri(NUMBER), "+6421555123", "digest-downgrade");
    sock.send(edge.public, &inv.invite(sock.local));
    let resp = sock.recv_final("INVITE", WAIT).expect("a challenge");
    assert_eq!(resp.code(), Some(401), "{}", resp.text());
    sock.send(edge.public, &inv.ack_non_2xx(sock.local, &resp));
    let sha = digest_params(resp.header("WWW-Authenticate").expect("a challenge"));
    assert_eq!(sha.get("algorithm").map(String::as_str), Some("SHA-256"));
    // Right password, but answered in MD5 to a trunk that offers only SHA-256: a downgrade.
    let md5 = with_credentials(&inv, PASSWORD, &sha["nonce"]);
    sock.send(edge.public, &md5.invite(sock.local));
    let refused = sock.recv_final("INVITE", WAIT).expect("an answer");
    assert_eq!(refused.code(), Some(403), "{}", refused.text());
    sock.send(edge.public, &md5.ack_non_2xx(sock.local, &refused));
    assert_eq!(auth_failures(&edge, "algorithm_not_offered"), 1.0);
}

/// A nonce the edge did not sign (forged, or from an edge run before a restart) gets a new
/// challenge, never 200 and never 403: the carrier retries with the fresh nonce.
#[test]
fn digest_nonce_from_a_previous_run_or_forged_is_challenged_again() {
    let lab = Lab::new("digest_stale");
    let platform = Sipp::reserve(PLATFORM);
    config(&lab, platform);
    let sock = RawUdp::bind(CARRIER);
    let old_nonce = {
        let first = Edge::start_named(&lab, "edge-before-restart", EdgeOptions::default());
        let inv = RawInvite::new(&first.public_uri(NUMBER), "+6421555123", "digest-old");
        challenge(&first, &sock, &inv).0["nonce"].clone()
    };
    let edge = Edge::start(&lab, EdgeOptions::default());
    let uas = Sipp::answering(&lab, "platform", platform).start();

    for (what, nonce) in [
        ("a nonce from the previous run", old_nonce.clone()),
        (
            "a forged nonce",
            "bm90LWEtbm9uY2Utb2YtdGhpcy1lZGdl".to_string(),
        ),
    ] {
        let inv = RawInvite::new(&edge.public_uri(NUMBER), "+6421555123", "digest-renew");
        let authed = with_credentials(&inv, PASSWORD, &nonce);
        sock.send(edge.public, &authed.invite(sock.local));
        let resp = sock
            .recv_final("INVITE", WAIT)
            .unwrap_or_else(|| panic!("no answer to {what}"));
        assert_eq!(resp.code(), Some(401), "{what}:\n{}", resp.text());
        sock.send(edge.public, &authed.ack_non_2xx(sock.local, &resp));
        let fresh: Vec<String> = resp
            .header_all("WWW-Authenticate")
            .into_iter()
            .filter_map(|v| digest_params(v).get("nonce").cloned())
            .collect();
        assert!(
            !fresh.is_empty() && fresh.iter().all(|n| *n != nonce),
            "{what}: a fresh nonce is offered:\n{}",
            resp.text()
        );
        // Retrying with the fresh nonce succeeds: that is what the new challenge is for.
        if what.starts_with("a nonce from") {
            let retry = with_credentials(&authed, PASSWORD, &fresh[0]);
            sock.send(edge.public, &retry.invite(sock.local));
            let answer = sock
                .recv_final("INVITE", WAIT)
                .expect("an answer to the retry");
            assert_eq!(answer.code(), Some(200), "{}", answer.text());
            sock.send(
                edge.public,
                &retry.in_dialog("ACK", retry.cseq, sock.local, &answer),
            );
            sock.send(
                edge.public,
                &retry.in_dialog("BYE", retry.cseq + 1, sock.local, &answer),
            );
            let bye = sock.recv_final("BYE", WAIT).expect("an answer to BYE");
            assert_eq!(bye.code(), Some(200), "{}", bye.text());
        }
    }
    uas.wait().assert_ok();
    assert_eq!(auth_failures(&edge, "bad_response"), 0.0);
}

/// The guesser who spreads over the pods: two edges share one Redis, and the failures
/// made at either count for both, so the block starts at the fleet's count.
#[test]
fn a_guesser_spread_over_two_edges_meets_one_lockout() {
    let lab = Lab::new("digest_fleet_lockout");
    let redis = trunkgate_tests::redis::Redis::start(&lab);
    let platform = Sipp::reserve(PLATFORM);
    config_range(&lab, platform, &[], "127.0.0.8/29");
    let start = |name: &str| {
        Edge::start_named(
            &lab,
            name,
            EdgeOptions::with_args(&[
                "--auth-max-failures",
                "4",
                "--auth-block-seconds",
                "60",
                "--state-store",
                &redis.url(),
            ]),
        )
    };
    let (a, b) = (start("edge-a"), start("edge-b"));
    let _uas = Sipp::answering(&lab, "platform", platform).calls(2).start();
    let guesser = RawUdp::bind([127, 0, 0, 13].into());
    // Two wrong guesses at each edge: neither saw the four that block.
    for (i, edge) in [&a, &a, &b, &b].into_iter().enumerate() {
        if i == 3 {
            // The fourth try waits out the slow-down the first three earned (1 s).
            std::thread::sleep(Duration::from_millis(1100));
        }
        let resp = attempt(edge, &guesser, &format!("guess-{i}"), &format!("guess-{i}"));
        assert_eq!(resp.code(), Some(403), "{}", resp.text());
    }
    assert_eq!(
        auth_failures(&a, "bad_response") + auth_failures(&b, "bad_response"),
        4.0
    );
    // Edge A, which saw two, blocks the guesser's right password as well.
    assert_eventually!(
        {
            let right = attempt(&a, &guesser, "right-at-a", PASSWORD);
            right.code() == Some(403) && auth_failures(&a, "blocked") >= 1.0
        },
        Duration::from_secs(5),
        "the block reaches the edge that saw only half the guesses"
    );
    // The carrier's own SBC, which never failed, still gets through either edge.
    let carrier = RawUdp::bind(CARRIER);
    for (i, edge) in [&a, &b].into_iter().enumerate() {
        let ok = attempt(edge, &carrier, &format!("carrier-{i}"), PASSWORD);
        assert_eq!(ok.code(), Some(200), "{}", ok.text());
    }
}
